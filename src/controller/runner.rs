//! The controller process: the admin server, the session and policy caches, leader
//! election, the pass loop and shutdown. Each pass is the [`Engine`]'s; every decision is made
//! by the pure functions of the sibling modules.

use super::changes::Changes;
use super::engine::{Engine, EventSender};
use super::leader::{AlwaysLeader, Leadership, LeaseLeadership};
use super::ledger::later_version;
use super::ledgers::Ledgers;
use super::metrics::{Metrics, admin_server};
use super::{ControllerArgs, Error, FIELD_MANAGER};
use crate::api::{GATEWAY_LEASE_LABEL, NodeShellPolicy, NodeShellSession, trim_node};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kube::api::Api;
use kube::runtime::events::{Event, Recorder, Reporter};
use kube::runtime::reflector::{self, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Events waiting to be published; beyond this, events are dropped rather than slowing decisions.
const EVENT_QUEUE: usize = 1024;

/// Runs the controller until SIGINT/SIGTERM.
pub async fn run(args: ControllerArgs) -> Result<(), Error> {
    let client = client(&args).await?;
    let identity = args.identity.clone().unwrap_or_else(|| {
        format!(
            "nodeshell-controller-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )
    });
    let metrics = Arc::new(Metrics::new());

    let (addr, serve) = admin_server(args.metrics_addr, metrics.clone())
        .await
        .map_err(|source| Error::Admin {
            addr: args.metrics_addr,
            source,
        })?;
    info!(%addr, "admin server listening (/metrics, /healthz, /readyz)");
    tokio::spawn(async move {
        if let Err(e) = serve.await {
            warn!(error = %e, "admin server stopped");
        }
    });

    let changes = Arc::new(Changes::default());
    let sessions = watch_sessions(client.clone(), changes.clone());
    let policies = watch_policies(client.clone(), changes.clone());
    let leases = watch_gateway_leases(client.clone(), &args.namespace);
    let nodes = watch_nodes(client.clone());

    let mut leadership: Box<dyn Leadership> = if args.no_leader_election {
        Box::new(AlwaysLeader)
    } else {
        Box::new(
            LeaseLeadership::start(
                client.clone(),
                &args.namespace,
                &args.lease_name,
                &identity,
                args.lease_duration.as_secs(),
                args.lease_renew_grace.as_secs(),
                FIELD_MANAGER,
            )
            .await?,
        )
    };
    info!(%identity, lease = %args.lease_name, namespace = %args.namespace, "joined leader election");

    sessions
        .wait_until_ready()
        .await
        .map_err(|_| Error::CacheStopped("NodeShellSession"))?;
    policies
        .wait_until_ready()
        .await
        .map_err(|_| Error::CacheStopped("NodeShellPolicy"))?;
    leases
        .wait_until_ready()
        .await
        .map_err(|_| Error::CacheStopped("Lease"))?;
    metrics.set_ready(true);
    info!("caches synced");

    let events = spawn_event_publisher(client.clone(), &identity);
    let mut engine = Engine::new(
        client.clone(),
        args.transcript_namespace_or_default(),
        &args.namespace,
        Ledgers::new(client.clone(), &args.namespace),
        sessions,
        policies,
        leases,
        nodes,
        args.timeouts(),
        &identity,
        metrics.clone(),
        events,
        changes.clone(),
    );

    let mut shutdown = std::pin::pin!(shutdown_signal());
    let mut next_pass = Instant::now();
    let mut next_full = Instant::now();
    let mut was_leader = false;
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            () = changes.changed() => {}
            _ = leadership.changed() => {}
            _ = tokio::time::sleep_until(next_pass.into()) => {}
        }
        let leader = leadership.is_leader();
        if leader != was_leader {
            info!(%identity, leader, "leadership changed");
            metrics.leader.set(i64::from(leader));
            was_leader = leader;
            // A new leader looks at everything; a replica that lost the lease forgets
            // what it had queued.
            changes.everything();
        }
        if !leader {
            changes.take_admit();
            changes.take();
            next_pass = Instant::now() + args.resync_interval;
            continue;
        }
        let started = Instant::now();
        let mut dirty = changes.take();
        if started >= next_full {
            dirty.full = true;
        }
        if dirty.full {
            next_full = started + args.resync_interval;
        }
        let wait = engine.pass(leadership.as_ref(), dirty).await;
        metrics
            .pass_duration
            .observe(started.elapsed().as_secs_f64());
        let now = Instant::now();
        next_pass = (now + wait.min(args.resync_interval)).min(next_full.max(now));
    }
    info!("shutting down: releasing the lease");
    leadership.release().await;
    Ok(())
}

async fn client(args: &ControllerArgs) -> Result<Client, Error> {
    crate::kube_client::client(args.kubeconfig.as_deref()).await
}

/// Keeps a cache of every session, trimmed, and tells `changes` which one changed: a
/// session that awaits admission wakes the loop for admission, others are only marked.
/// It also tells `changes` the latest resourceVersion the cache holds (the reflector has
/// applied an event before this task sees it; a relist's objects only once the cache has
/// switched to the new list, at `InitDone`). The (re)list is a quorum read, so a relist never
/// takes the cache back behind a version it had already delivered.
fn watch_sessions(client: Client, changes: Arc<Changes>) -> Store<NodeShellSession> {
    let (reader, writer) = reflector::store::<NodeShellSession>();
    let config = watcher::Config::default().list_semantic(watcher::ListSemantic::MostRecent);
    let events = watcher(Api::all(client), config)
        .default_backoff()
        .modify(trim_session);
    let stream = reflector(writer, events);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut relist: Option<String> = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(watcher::Event::Apply(s)) => {
                    if let Some(version) = &s.metadata.resource_version {
                        changes.delivered_version(version);
                    }
                    changes.session(&s, false);
                }
                Ok(watcher::Event::InitApply(s)) => {
                    if let Some(version) = &s.metadata.resource_version {
                        relist = later_version(relist.as_deref(), version);
                    }
                    changes.session(&s, false);
                }
                Ok(watcher::Event::Delete(s)) => {
                    if let Some(version) = &s.metadata.resource_version {
                        changes.delivered_version(version);
                    }
                    changes.session(&s, true);
                }
                // A relist may have missed deletions: look at everything.
                Ok(watcher::Event::InitDone) => {
                    if let Some(version) = relist.take() {
                        changes.delivered_version(&version);
                    }
                    changes.everything();
                }
                Ok(watcher::Event::Init) => relist = None,
                Err(e) => warn!(kind = "NodeShellSession", error = %e, "watch error (retrying)"),
            }
        }
    });
    reader
}

/// Keeps a cache of every policy, trimmed. A policy that comes, goes or changes its spec
/// (its generation) asks for a full pass; a status write (the controller's own) does not.
fn watch_policies(client: Client, changes: Arc<Changes>) -> Store<NodeShellPolicy> {
    let (reader, writer) = reflector::store::<NodeShellPolicy>();
    let events = watcher(Api::all(client), watcher::Config::default())
        .default_backoff()
        .modify(trim_policy);
    let stream = reflector(writer, events);
    tokio::spawn(async move {
        let mut generations: HashMap<String, Option<i64>> = HashMap::new();
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                    let generation = p.metadata.generation;
                    if generations.insert(p.name_any(), generation) != Some(generation) {
                        changes.everything();
                    }
                }
                Ok(watcher::Event::Delete(p)) => {
                    generations.remove(&p.name_any());
                    changes.everything();
                }
                Ok(watcher::Event::InitDone) => changes.everything(),
                Ok(watcher::Event::Init) => {}
                Err(e) => warn!(kind = "NodeShellPolicy", error = %e, "watch error (retrying)"),
            }
        }
    });
    reader
}

/// Drops what no controller decision reads from a cached session: managedFields (most of an
/// object's size), annotations, the audit references, the transcript reference, the
/// person's groups and email, and the reason they gave. Status writes are server-side applies
/// of the controller's own fields, so nothing dropped here is ever written back.
fn trim_session(session: &mut NodeShellSession) {
    let meta = &mut session.metadata;
    meta.managed_fields = None;
    meta.annotations = None;
    session.spec.reason = None;
    session.spec.user.groups = Vec::new();
    session.spec.user.email = None;
    if let Some(status) = session.status.as_mut() {
        status.audit = Vec::new();
        status.transcript = None;
    }
}

/// Drops managedFields and annotations from a cached policy.
fn trim_policy(policy: &mut NodeShellPolicy) {
    policy.metadata.managed_fields = None;
    policy.metadata.annotations = None;
}

/// Keeps a cache of the gateways' Leases in `namespace` (those labelled
/// [`GATEWAY_LEASE_LABEL`]). A renewal does not start a pass: each session's decision asks to
/// be looked at again when its gateway's Lease would expire.
fn watch_gateway_leases(client: Client, namespace: &str) -> Store<Lease> {
    let (reader, writer) = reflector::store::<Lease>();
    let config = watcher::Config::default().labels(&format!("{GATEWAY_LEASE_LABEL}=gateway"));
    let events = watcher(Api::<Lease>::namespaced(client, namespace), config)
        .default_backoff()
        .modify(|o| {
            o.meta_mut().managed_fields = None;
        });
    let stream = reflector(writer, events).touched_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            if let Err(e) = item {
                warn!(kind = "Lease", error = %e, "watch error (retrying)");
            }
        }
    });
    reader
}

/// Keeps a cache of every Node, trimmed to what admission reads: its name, labels and
/// providerID. Not waited for: a node missing from it (the cache is still syncing, or the
/// node is new) is read with one GET before a session is refused for it.
fn watch_nodes(client: Client) -> Store<Node> {
    let (reader, writer) = reflector::store::<Node>();
    let events = watcher(Api::<Node>::all(client), watcher::Config::default())
        .default_backoff()
        .modify(trim_node);
    let stream = reflector(writer, events).touched_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            if let Err(e) = item {
                warn!(kind = "Node", error = %e, "watch error (retrying)");
            }
        }
    });
    reader
}

async fn shutdown_signal() {
    if crate::shutdown::stop_requested().await.is_err() {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Publishes Kubernetes Events off the decision path.
fn spawn_event_publisher(client: Client, identity: &str) -> EventSender {
    let (tx, mut rx) = mpsc::channel::<(ObjectReference, Event)>(EVENT_QUEUE);
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(identity.to_string()),
        },
    );
    tokio::spawn(async move {
        while let Some((reference, event)) = rx.recv().await {
            if let Err(e) = recorder.publish(&event, &reference).await {
                debug!(error = %e, "publishing event failed");
            }
        }
    });
    tx
}
