//! The control side's Kubernetes calls: nodes, policies and sessions read, a session
//! created, terminated or waited on (on the gateway's one session watch, never a watch of
//! its own). Each call is bounded by [`KUBE_CALL_TIMEOUT`] and answers in the API's words
//! ([`crate::gateway::refusals`]).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::api::{CapCount, NodeShellPolicy, NodeShellSession, SessionPhase, trim_node};
use crate::gateway::FIELD_MANAGER;
use crate::gateway::error::{ApiError, ErrorCode};
use crate::gateway::refusals::{create_error, kube_error, kube_timeout, lists_busy};
use crate::gateway::session_watch::{SessionNews, SessionWatch, Subscription};

/// Longest wait for one Kubernetes API call made while answering a request: past it the
/// apiserver counts as unreachable and the request fails closed.
pub const KUBE_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Cluster-wide lists (every node, every session) that run at once on one gateway. Each
/// holds its whole answer in memory (on a large cluster, every Node object is tens of KB),
/// so this, not the number of requests, bounds what those lists cost: one person sending
/// many at once waits for a turn like everyone else.
pub const LISTS_AT_ONCE: usize = 4;

/// Nodes asked for per page of the node list.
pub const NODE_PAGE: u32 = 250;

/// Runs one Kubernetes API call with [`KUBE_CALL_TIMEOUT`].
async fn call<T>(
    what: &str,
    call: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(KUBE_CALL_TIMEOUT, call).await {
        Ok(result) => result.map_err(|e| kube_error(&e, what)),
        Err(_) => Err(kube_timeout(what)),
    }
}

/// The Kubernetes API as the control side uses it. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    /// The gateway's one session watch, where an open learns its decision.
    watch: SessionWatch,
    /// Turns for cluster-wide lists ([`LISTS_AT_ONCE`]).
    lists: Arc<tokio::sync::Semaphore>,
    /// The longest wait for such a turn before the request is refused.
    list_wait: Duration,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").finish_non_exhaustive()
    }
}

impl Cluster {
    /// The cluster behind `client`; opens wait for their decision on `watch`.
    pub fn new(client: Client, watch: SessionWatch) -> Self {
        Self::with_list_wait(client, watch, KUBE_CALL_TIMEOUT)
    }

    /// [`Self::new`] where a cluster-wide list waits at most `list_wait` for its turn.
    fn with_list_wait(client: Client, watch: SessionWatch, list_wait: Duration) -> Self {
        Self {
            client,
            watch,
            lists: Arc::new(tokio::sync::Semaphore::new(LISTS_AT_ONCE)),
            list_wait,
        }
    }

    /// A turn for one cluster-wide list of `what`, held until the returned permit drops, or
    /// `E_RATE_LIMITED` when none frees within the wait.
    async fn list_turn(&self, what: &str) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
        match tokio::time::timeout(self.list_wait, self.lists.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(lists_busy(what, LISTS_AT_ONCE, self.list_wait)),
        }
    }

    fn sessions_api(&self) -> Api<NodeShellSession> {
        Api::all(self.client.clone())
    }

    /// Every node, trimmed to what the node list shows and its gates read (one of the
    /// cluster-wide lists that take turns), read [`NODE_PAGE`] at a time: only one page of
    /// whole Nodes is held at once.
    pub async fn nodes(&self) -> Result<Vec<Node>, ApiError> {
        let _turn = self.list_turn("node").await?;
        let api = Api::<Node>::all(self.client.clone());
        let mut nodes = Vec::new();
        let mut params = ListParams::default().limit(NODE_PAGE);
        loop {
            let page = call("nodes", api.list(&params)).await?;
            nodes.extend(page.items.into_iter().map(|mut node| {
                trim_node(&mut node);
                node
            }));
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(next) => params = params.continue_token(&next),
                None => return Ok(nodes),
            }
        }
    }

    /// One node, or `E_NOT_FOUND`.
    pub async fn node(&self, name: &str) -> Result<Node, ApiError> {
        valid_name("node", name)?;
        let api = Api::<Node>::all(self.client.clone());
        call("node", api.get_opt(name)).await?.ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!("no node named {name:?}; list nodes with GET /api/v1/nodes"),
            )
        })
    }

    /// Every policy.
    pub async fn policies(&self) -> Result<Vec<NodeShellPolicy>, ApiError> {
        let api = Api::<NodeShellPolicy>::all(self.client.clone());
        call("policies", api.list(&ListParams::default()))
            .await
            .map(|l| l.items)
    }

    /// One policy, if it exists.
    pub async fn policy(&self, name: &str) -> Result<Option<NodeShellPolicy>, ApiError> {
        let api = Api::<NodeShellPolicy>::all(self.client.clone());
        call("policy", api.get_opt(name)).await
    }

    /// Every session (one of the cluster-wide lists that take turns).
    pub async fn sessions(&self) -> Result<Vec<NodeShellSession>, ApiError> {
        let _turn = self.list_turn("session").await?;
        call("sessions", self.sessions_api().list(&ListParams::default()))
            .await
            .map(|l| l.items)
    }

    /// One session, or `E_NOT_FOUND`.
    pub async fn session(&self, name: &str) -> Result<NodeShellSession, ApiError> {
        valid_name("session", name)?;
        call("session", self.sessions_api().get_opt(name))
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NotFound,
                    format!("no session named {name:?}; list yours with GET /api/v1/sessions"),
                )
            })
    }

    /// Creates a session object; returns the name the apiserver gave it.
    pub async fn create_session(&self, object: &NodeShellSession) -> Result<String, ApiError> {
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PostParams::default()
        };
        let created = tokio::time::timeout(
            KUBE_CALL_TIMEOUT,
            self.sessions_api().create(&pp, object),
        )
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::Internal,
                "cannot reach the Kubernetes API (no answer within 10 s); no session was opened",
            )
        })?
        .map_err(|e| create_error(&e))?;
        Ok(created.name_any())
    }

    /// Sets `spec.terminate` on a session.
    pub async fn request_terminate(&self, name: &str) -> Result<(), ApiError> {
        let patch = json!({"spec": {"terminate": true}});
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        let api = self.sessions_api();
        call("session", api.patch(name, &params, &Patch::Merge(&patch)))
            .await
            .map(|_| ())
    }

    /// The gateway's one session watch.
    pub fn watch(&self) -> &SessionWatch {
        &self.watch
    }

    /// The live sessions of `policy`, `sub`'s and everyone's: from the gateway's session
    /// watch once it has listed them, else from a list of every session.
    pub async fn cap_count(&self, policy: &str, sub: &str) -> Result<CapCount, ApiError> {
        match self.watch.cap_count(policy, sub) {
            Some(count) => Ok(count),
            None => Ok(CapCount::of(&self.sessions().await?, policy, sub)),
        }
    }

    /// Subscribes to the news of session `name`, just created, on the gateway's one watch
    /// (no apiserver watch of its own), before its decision is awaited.
    pub async fn subscribe(&self, name: &str) -> Result<Subscription, ApiError> {
        match tokio::time::timeout(KUBE_CALL_TIMEOUT, self.watch.subscribe_created(name)).await {
            Ok(Ok(subscription)) => Ok(subscription),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, session = name, "reading the new session failed");
                Err(self.abandon_unreachable(name).await)
            }
            Err(_) => {
                let _ = self.request_terminate(name).await;
                Err(kube_timeout("session"))
            }
        }
    }

    /// Asks for session `name`'s termination (so it never opens late) when the apiserver
    /// could not tell its decision; the open's answer.
    async fn abandon_unreachable(&self, name: &str) -> ApiError {
        let _ = self.request_terminate(name).await;
        ApiError::new(
            ErrorCode::Internal,
            "cannot reach the Kubernetes API; no session was opened",
        )
    }

    /// Waits up to `timeout` for the controller to admit or reject session `name`, on its
    /// `subscription`; on timeout asks for termination so the session never opens late, and
    /// fails closed.
    pub async fn await_decision(
        &self,
        name: &str,
        mut subscription: Subscription,
        timeout: Duration,
    ) -> Result<NodeShellSession, ApiError> {
        let decision = async {
            while let Some(news) = subscription.next().await {
                match news {
                    SessionNews::Changed(s) if s.phase() != SessionPhase::Pending => {
                        return Some(Some(*s));
                    }
                    SessionNews::Changed(_) => {}
                    SessionNews::Deleted => return Some(None),
                }
            }
            None
        };
        match tokio::time::timeout(timeout, decision).await {
            Ok(Some(Some(session))) => Ok(session),
            Ok(Some(None)) => Err(ApiError::new(
                ErrorCode::Internal,
                format!(
                    "session {name} was deleted before the controller decided; no session was opened"
                ),
            )),
            Ok(None) => {
                tracing::warn!(session = name, "the gateway's session watch ended");
                Err(self.abandon_unreachable(name).await)
            }
            Err(_) => {
                let _ = self.request_terminate(name).await;
                Err(ApiError::new(
                    ErrorCode::Internal,
                    format!(
                        "the controller did not admit session {name} within {} s (is `nodeshell controller` running?); no session was opened",
                        timeout.as_secs()
                    ),
                ))
            }
        }
    }

    /// Whether the apiserver answers within 3 s (for `/readyz`).
    pub async fn reachable(&self) -> bool {
        let probe = tokio::time::timeout(Duration::from_secs(3), self.client.apiserver_version());
        matches!(probe.await, Ok(Ok(_)))
    }
}

/// `E_BAD_REQUEST` naming the rule when a name from a URL is no DNS-1123 subdomain, so it never
/// reaches the apiserver.
fn valid_name(kind: &str, name: &str) -> Result<(), ApiError> {
    match crate::api::subdomain_problem(name) {
        None => Ok(()),
        Some(problem) => Err(ApiError::new(
            ErrorCode::BadRequest,
            format!(
                "the {kind} name in the URL {problem}; {kind} names are DNS-1123 subdomains \
                 (lowercase letters, digits, '-' and '.', at most 253 characters)"
            ),
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::gateway::error::RETRY_AFTER;
    use crate::testing::session;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::Semaphore;

    /// A cluster whose apiserver is down (port 1 refuses), and its watch.
    fn cluster() -> (Cluster, SessionWatch) {
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        let client = Client::try_from(config).unwrap();
        let watch = SessionWatch::new(client.clone());
        (Cluster::new(client, watch.clone()), watch)
    }

    fn in_phase(phase: SessionPhase) -> SessionNews {
        SessionNews::Changed(Box::new(session("shell-1", "alice", "p", 1, Some(phase))))
    }

    #[tokio::test]
    async fn an_open_waits_past_pending_news_for_the_decision() {
        let (cluster, watch) = cluster();
        let subscription = watch.subscribe_detached("shell-1");
        watch.deliver("shell-1", in_phase(SessionPhase::Pending));
        let wait = tokio::spawn({
            let cluster = cluster.clone();
            async move {
                cluster
                    .await_decision("shell-1", subscription, Duration::from_secs(5))
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!wait.is_finished(), "Pending is no decision");
        watch.deliver("shell-1", in_phase(SessionPhase::Rejected));
        let decided = wait.await.unwrap().unwrap();
        assert_eq!(decided.phase(), SessionPhase::Rejected);
        assert_eq!(watch.subscribers(), 0, "the open's subscription is gone");
    }

    #[tokio::test]
    async fn no_decision_in_time_fails_closed_and_leaves_no_subscriber() {
        let (cluster, watch) = cluster();
        let subscription = watch.subscribe_detached("shell-1");
        let refused = cluster
            .await_decision("shell-1", subscription, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert_eq!(refused.code, ErrorCode::Internal);
        assert!(
            refused
                .message
                .contains("did not admit session shell-1 within"),
            "{}",
            refused.message
        );
        assert_eq!(watch.subscribers(), 0);
    }

    #[tokio::test]
    async fn a_session_deleted_before_its_decision_fails_closed() {
        let (cluster, watch) = cluster();
        let subscription = watch.subscribe_detached("shell-1");
        watch.deliver("shell-1", SessionNews::Deleted);
        let refused = cluster
            .await_decision("shell-1", subscription, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(refused.code, ErrorCode::Internal);
        assert!(
            refused.message.contains("was deleted"),
            "{}",
            refused.message
        );
    }

    /// A client whose apiserver holds every request until `gate` lets it go, counting how
    /// many it holds at once (`held`) and the most it ever held (`most`).
    fn held_lists(gate: Arc<Semaphore>, held: Arc<AtomicUsize>, most: Arc<AtomicUsize>) -> Client {
        let service = tower::service_fn(move |_: ::http::Request<kube::client::Body>| {
            let (gate, held, most) = (gate.clone(), held.clone(), most.clone());
            async move {
                let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                if let Ok(permit) = gate.acquire().await {
                    permit.forget();
                }
                held.fetch_sub(1, Ordering::SeqCst);
                let list =
                    json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": []});
                ::http::Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(serde_json::to_vec(&list).unwrap()))
            }
        });
        Client::new(service, "default")
    }

    /// However many node lists are asked for at once, the apiserver serves at most
    /// [`LISTS_AT_ONCE`] of them at a time; one that finds no turn within the wait is refused
    /// with `E_RATE_LIMITED` and a `Retry-After`, and a turn frees when its list ends.
    #[tokio::test]
    async fn cluster_wide_lists_take_turns_and_one_that_waits_too_long_is_refused() {
        let gate = Arc::new(Semaphore::new(0));
        let (held, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let client = held_lists(gate.clone(), held.clone(), most.clone());
        let watch = SessionWatch::new(client.clone());
        let cluster = Cluster::with_list_wait(client, watch, Duration::from_millis(200));
        let asked = LISTS_AT_ONCE + 3;
        let lists: Vec<_> = (0..asked)
            .map(|_| {
                let cluster = cluster.clone();
                tokio::spawn(async move { cluster.nodes().await })
            })
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while held.load(Ordering::SeqCst) < LISTS_AT_ONCE {
            assert!(
                std::time::Instant::now() < deadline,
                "the lists never reached the apiserver"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The others wait past their 200 ms while these are held.
        tokio::time::sleep(Duration::from_millis(400)).await;
        gate.add_permits(asked * 2);
        let mut served = 0;
        let mut refused = 0;
        for list in lists {
            match list.await.unwrap() {
                Ok(_) => served += 1,
                Err(e) => {
                    assert_eq!(e.code, ErrorCode::RateLimited, "{}", e.message);
                    assert!(e.extra.contains_key(RETRY_AFTER), "{:?}", e.extra);
                    assert!(e.message.contains("try again"), "{}", e.message);
                    refused += 1;
                }
            }
        }
        assert_eq!((served, refused), (LISTS_AT_ONCE, asked - LISTS_AT_ONCE));
        assert_eq!(
            most.load(Ordering::SeqCst),
            LISTS_AT_ONCE,
            "never more at once"
        );
        assert!(cluster.nodes().await.is_ok(), "the turns were given back");
    }

    /// The node list reads Nodes a page at a time and keeps each trimmed to what the list
    /// shows: the page size is asked for, each `continue` token is followed, and a Node's
    /// status (most of its size) is not kept.
    #[tokio::test]
    async fn the_node_list_reads_pages_and_keeps_nodes_trimmed() {
        let asked: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let seen = asked.clone();
        let service = tower::service_fn(move |req: ::http::Request<kube::client::Body>| {
            let query = req.uri().query().unwrap_or_default().to_string();
            seen.lock().unwrap().push(query.clone());
            async move {
                let page = ["continue=p2", "continue=p1"]
                    .iter()
                    .position(|c| query.contains(c))
                    .map_or(0, |i| 2 - i);
                let items: Vec<_> = (0..3)
                    .map(|i| {
                        json!({
                            "metadata": {"name": format!("n{page}-{i}"), "labels": {"team": "infra"}},
                            "spec": {"providerID": format!("aws:///eu-west-1a/i-0{page}{i}0000000000000")},
                            "status": {"phase": "Running", "capacity": {"cpu": "2"}},
                        })
                    })
                    .collect();
                let next = ["p1", "p2", ""][page];
                let list = json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {"continue": next}, "items": items});
                ::http::Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(serde_json::to_vec(&list).unwrap()))
            }
        });
        let client = Client::new(service, "default");
        let cluster = Cluster::new(client.clone(), SessionWatch::new(client));
        let nodes = cluster.nodes().await.unwrap();
        let names: Vec<String> = nodes.iter().map(ResourceExt::name_any).collect();
        assert_eq!(names.len(), 9, "{names:?}");
        assert_eq!((names[0].as_str(), names[8].as_str()), ("n0-0", "n2-2"));
        for node in &nodes {
            assert!(node.status.is_none(), "a status was kept");
            assert!(
                node.spec
                    .as_ref()
                    .and_then(|s| s.provider_id.as_ref())
                    .is_some()
            );
            assert!(
                node.metadata
                    .labels
                    .as_ref()
                    .is_some_and(|l| l["team"] == "infra")
            );
        }
        let asked = asked.lock().unwrap();
        assert_eq!(asked.len(), 3, "{asked:?}");
        assert!(
            asked
                .iter()
                .all(|q| q.contains(&format!("limit={NODE_PAGE}"))),
            "{asked:?}"
        );
        assert!(asked[1].contains("continue=p1") && asked[2].contains("continue=p2"));
    }

    #[tokio::test]
    async fn an_unreachable_apiserver_refuses_the_subscription() {
        let (cluster, watch) = cluster();
        // Seen decided before the open subscribed: its subscription reads the session.
        watch.see(kube::runtime::watcher::Event::Apply(session(
            "shell-1",
            "alice",
            "p",
            1,
            Some(SessionPhase::Admitted),
        )));
        let refused = cluster.subscribe("shell-1").await.unwrap_err();
        assert_eq!(refused.code, ErrorCode::Internal);
        assert!(
            refused.message.contains("cannot reach the Kubernetes API"),
            "{}",
            refused.message
        );
        assert_eq!(watch.subscribers(), 0, "a failed subscription is dropped");
    }
}
