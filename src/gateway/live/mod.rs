//! The live side of the gateway: running one admitted session for a browser (design §4–§5).
//!
//! [`LiveSessions::attach`] exchanges the person's id_token for AWS credentials, starts the
//! SSM session (`start`, as named steps), opens the data channel and bridges it to the
//! browser's WebSocket. Each running session is driven by one task (`driver`, its select
//! loop) that owns the channel, the output window, the idle and max-duration clocks, the
//! transcript and the status heartbeats, reports to its `records` and ends through
//! `finish`; a browser is only a bridge ([`bridge`]) that can come and go within the
//! reattach grace. The decisions are pure ([`idle`], [`output`], [`replay`], [`reasons`],
//! [`frames`], and [`status`]'s builders and retry policy).

pub mod bridge;
mod credentials;
mod driver;
mod events;
mod failed_start;
mod finish;
pub mod frames;
pub mod idle;
mod ledger;
pub mod metrics;
pub mod output;
mod pending_input;
pub mod reasons;
mod records;
pub mod replay;
mod sessions;
mod start;
pub mod status;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::WebSocket;
use kube::Client;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

pub use frames::{ClientFrame, ServerFrame};
pub use idle::{IdleClock, IdleEvent};
pub use metrics::LiveMetrics;
pub use reasons::{EndReason, StartFailure};
pub use replay::{ReplayRing, ReplayStart};

use crate::aws::{AwsClients, AwsEndpoints};
use crate::gateway::audit::AuditSink;
use crate::gateway::config::{GatewayConfig, LiveSettings};
use crate::gateway::error::ErrorCode;
use crate::gateway::handover::AttachGrant;
use crate::gateway::ledger::LedgerStore;
use crate::gateway::session_watch::SessionWatch;
use crate::gateway::transcript::TranscriptStore;
use crate::gateway::transcript::s3::S3Sink;

use bridge::Attachment;
use status::StatusApi;

/// Settings of the live side: the resolved [`LiveSettings`] (the one home of their
/// defaults), and where the live side writes.
#[derive(Clone)]
pub struct LiveConfig {
    /// Clocks, buffers and timeouts, as the gateway's configuration resolved them.
    pub settings: LiveSettings,
    /// Kubernetes API access (sessions, their status, transcript Secrets, Events).
    pub client: Client,
    /// Namespace of the transcript Secrets.
    pub namespace: String,
    /// This gateway's pod name (`status.gateway.pod`).
    pub pod_name: String,
    /// STS/SSM endpoint overrides (the simulator); the region comes from each session.
    pub endpoints: AwsEndpoints,
    /// The gateway's one HTTP client for STS and SSM, shared with the API side.
    pub aws: AwsClients,
    /// Cluster name for the SSM Reason and audit rows.
    pub cluster_name: String,
    /// Where audit rows go.
    pub audit: AuditSink,
    /// The live side's metrics.
    pub metrics: LiveMetrics,
    /// The gateway's one session watch (shared with the open path in a gateway).
    pub session_watch: SessionWatch,
}

impl LiveConfig {
    /// The live side of a gateway run with `config`, audit rows to `audit`.
    pub fn new(config: &GatewayConfig, client: Client, audit: AuditSink) -> Self {
        Self {
            settings: config.live.clone(),
            client: client.clone(),
            namespace: config.namespace.clone(),
            pod_name: config.pod_name.clone(),
            endpoints: config.aws.clone(),
            aws: AwsClients::new(),
            cluster_name: config.cluster_name.clone(),
            audit,
            metrics: LiveMetrics::default(),
            session_watch: SessionWatch::new(client.clone()),
        }
    }
}

/// Asks a running session to end. Boxed, as the attachments: tokio's mpsc reserves its first
/// block of 32 slots when a queue is made, and a slot is as large as the message, though a
/// session gets one of these in its life, or none.
#[derive(Debug)]
pub(crate) enum Control {
    End(Box<EndReason>),
}

/// How to reach a running session.
#[derive(Clone)]
struct LiveHandle {
    control: mpsc::Sender<Control>,
    attach: mpsc::Sender<Box<Attachment>>,
    resume_token: String,
}

enum Slot {
    /// The start sequence runs; a second attach is refused meanwhile.
    Starting,
    Live(LiveHandle),
}

pub(crate) struct Inner {
    config: LiveConfig,
    status: StatusApi,
    /// The gateway's one session watch, fanned out to its live sessions.
    watch: SessionWatch,
    store: TranscriptStore,
    ledgers: LedgerStore,
    /// The S3 sink, started on first use (it spawns its upload task).
    sink: std::sync::OnceLock<S3Sink>,
    events: events::SessionEvents,
    sessions: Mutex<HashMap<String, Slot>>,
    shutting_down: AtomicBool,
    /// Bumped each time a slot is freed, so shutdown can wait for every session, including
    /// those still in their start when the signal came.
    released: watch::Sender<()>,
    /// Browser connections being served. Their tasks are spawned by axum's `on_upgrade`,
    /// which the server's graceful shutdown does not wait for: shutdown counts them itself.
    connections: watch::Sender<usize>,
}

impl Inner {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The gateway's S3 sink (one upload queue); call from the runtime.
    fn sink(&self) -> &S3Sink {
        self.sink.get_or_init(|| {
            S3Sink::start(
                &self.config.aws,
                self.config.endpoints.s3_url.clone(),
                self.config.metrics.s3_sink_failures.clone(),
            )
        })
    }

    /// Frees a session's slot (its start failed, or it ended) and wakes a waiting shutdown.
    fn release(&self, name: &str) {
        self.slots().remove(name);
        self.released.send_replace(());
    }
}

/// The running sessions of this gateway. Cheap to clone.
#[derive(Clone)]
pub struct LiveSessions {
    inner: Arc<Inner>,
}

impl LiveSessions {
    /// The live side with `config`.
    pub fn new(config: LiveConfig) -> Self {
        let events = events::SessionEvents::new(
            config.client.clone(),
            crate::gateway::FIELD_MANAGER,
            &config.pod_name,
            config.metrics.event_failures.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                status: StatusApi::new(config.client.clone()),
                watch: config.session_watch.clone(),
                store: TranscriptStore::new(config.client.clone(), &config.namespace)
                    .counting(config.metrics.transcript_bytes_stored.clone()),
                ledgers: LedgerStore::new(config.client.clone(), &config.namespace),
                sink: std::sync::OnceLock::new(),
                events,
                config,
                sessions: Mutex::new(HashMap::new()),
                shutting_down: AtomicBool::new(false),
                released: watch::Sender::new(()),
                connections: watch::Sender::new(0),
            }),
        }
    }

    /// The metrics, to register in the gateway's registry.
    pub fn metrics(&self) -> &LiveMetrics {
        &self.inner.config.metrics
    }

    /// Whether a session runs on this gateway.
    pub fn is_live(&self, name: &str) -> bool {
        matches!(self.inner.slots().get(name), Some(Slot::Live(_)))
    }

    /// The resume token of a session running on this gateway.
    pub fn resume_token(&self, name: &str) -> Option<String> {
        match self.inner.slots().get(name) {
            Some(Slot::Live(handle)) => Some(handle.resume_token.clone()),
            _ => None,
        }
    }

    /// Names of the sessions running on this gateway.
    pub fn live_sessions(&self) -> Vec<String> {
        self.inner.slots().keys().cloned().collect()
    }

    /// Runs a browser's attachment. First attach (`resume == false`): starts the SSM session
    /// and bridges it. Reattach (`resume == true`): the browser's first text frame must be
    /// `{"type":"resume","resumeToken","offset"}` for a session running here. Returns when
    /// the browser leaves or the session ends.
    ///
    /// A plain function returning the connection's future: an `async fn` keeps its
    /// arguments for its whole run, and the grant (the session and policy objects as read at
    /// attach, 2.2 KB) would stay in every attached browser's task. A reattach needs only
    /// the session's name; a first attach hands the boxed grant to the start.
    pub fn attach(
        &self,
        grant: Box<AttachGrant>,
        socket: WebSocket,
        resume: bool,
    ) -> futures::future::BoxFuture<'static, ()> {
        let counted = Connection::new(self.inner.clone());
        let socket = Box::new(socket);
        if resume {
            let name = kube::ResourceExt::name_any(&grant.session);
            drop(grant);
            let live = self.clone();
            Box::pin(async move {
                let _counted = counted;
                live.reattach(name, socket).await;
            })
        } else {
            let inner = self.inner.clone();
            Box::pin(async move {
                let _counted = counted;
                start::first_attach(inner, grant, socket).await;
            })
        }
    }

    async fn reattach(&self, name: String, mut socket: bridge::BrowserSocket) {
        let Some((resume_token, offset)) = bridge::read_resume(&mut socket).await else {
            bridge::refuse(
                socket,
                ServerFrame::error(
                    ErrorCode::BadRequest,
                    "the first frame of a reattach must be {\"type\":\"resume\",\"resumeToken\":…,\"offset\":…}",
                    false,
                ),
            )
            .await;
            return;
        };
        let handle = match self.inner.slots().get(&name) {
            Some(Slot::Live(handle)) => Some(handle.clone()),
            _ => None,
        };
        let Some(handle) = handle else {
            bridge::refuse(
                socket,
                ServerFrame::error(
                    ErrorCode::NotFound,
                    format!("session {name} is not running on this gateway; open a new session"),
                    false,
                ),
            )
            .await;
            return;
        };
        if !constant_time_eq(handle.resume_token.as_bytes(), resume_token.as_bytes()) {
            bridge::refuse(
                socket,
                ServerFrame::error(
                    ErrorCode::Forbidden,
                    "the resume token does not match this session",
                    false,
                ),
            )
            .await;
            return;
        }
        let (attachment, out_rx, events_tx) = Attachment::new(Some(offset));
        if handle.attach.send(Box::new(attachment)).await.is_err() {
            bridge::refuse(
                socket,
                ServerFrame::error(
                    ErrorCode::NotFound,
                    format!("session {name} has ended"),
                    false,
                ),
            )
            .await;
            return;
        }
        self.inner.config.metrics.reattaches.inc();
        info!(session = %name, offset, "browser reattached");
        bridge::run(socket, out_rx, events_tx).await;
    }

    /// Ends a session running here (the local DELETE path) with reason AdminTerminated.
    /// Returns false when the session does not run on this gateway.
    pub async fn request_terminate(&self, name: &str) -> bool {
        self.end(name, EndReason::AdminTerminated).await
    }

    /// Ends a session running here with `reason`. Returns false when the session does not
    /// run on this gateway.
    pub async fn end(&self, name: &str, reason: EndReason) -> bool {
        let handle = match self.inner.slots().get(name) {
            Some(Slot::Live(handle)) => Some(handle.clone()),
            _ => None,
        };
        match handle {
            Some(h) => h.control.send(Control::End(Box::new(reason))).await.is_ok(),
            None => false,
        }
    }

    /// Closes every running session with reason GatewayShutdown (closed frame, TerminateSession,
    /// transcript, close row, status Closed), concurrently, and returns once each browser
    /// connection has written its last frames, waiting at most the configured shutdown
    /// timeout. New attaches are refused from now on.
    ///
    /// A session ending only queues its `closed` frame for the browser's bridge; the process
    /// exits when this returns, so returning before the bridges have written and closed their
    /// sockets would cut those frames off.
    pub async fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + self.inner.config.settings.shutdown_timeout;
        // Subscribed before the slots are read, so no release between the two is missed.
        let mut released = self.inner.released.subscribe();
        let (handles, starting) = {
            let slots = self.inner.slots();
            let handles: Vec<LiveHandle> = slots
                .values()
                .filter_map(|slot| match slot {
                    Slot::Live(h) => Some(h.clone()),
                    Slot::Starting => None,
                })
                .collect();
            let starting = slots.len() - handles.len();
            (handles, starting)
        };
        info!(
            sessions = handles.len(),
            starting, "closing live sessions for shutdown"
        );
        // A session still starting is asked to end by its start once it runs (the start
        // checks `shutting_down` after taking its slot), or frees its slot when it fails.
        let sessions = async {
            futures::future::join_all(handles.iter().map(|h| {
                h.control
                    .send(Control::End(Box::new(EndReason::GatewayShutdown)))
            }))
            .await;
            while !self.inner.slots().is_empty() {
                if released.changed().await.is_err() {
                    break;
                }
            }
        };
        if tokio::time::timeout_at(deadline, sessions).await.is_err() {
            warn!(
                sessions = self.inner.slots().len(),
                "some sessions did not close within the shutdown timeout"
            );
        }
        let mut connections = self.inner.connections.subscribe();
        if tokio::time::timeout_at(deadline, connections.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            warn!(
                connections = *connections.borrow(),
                "some browser connections had not written their last frames within the shutdown timeout"
            );
        }
        debug!("live sessions closed for shutdown");
    }
}

/// Counts one browser connection in [`Inner::connections`] while its attach runs.
struct Connection(Arc<Inner>);

impl Connection {
    fn new(inner: Arc<Inner>) -> Self {
        inner.connections.send_modify(|n| *n += 1);
        Self(inner)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.connections.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Compares secrets without an early exit on the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tokio mpsc channel allocates its first block, room for 32 messages, when it is
    /// made, so every queue of a live session costs 32 × its message size whether or not a
    /// message ever goes through it. These are the session's own queues (the data channel's
    /// are in `ssm`).
    #[test]
    fn a_live_sessions_queues_reserve_little_up_front() {
        use std::mem::size_of;
        const SLOTS: usize = 32;
        let queues = [
            ("status conflicts", size_of::<status::Conflict>()),
            ("control", size_of::<Control>()),
            ("attachments", size_of::<Box<Attachment>>()),
            ("to the browser", size_of::<bridge::Outbound>()),
            ("from the browser", size_of::<bridge::QueuedEvent>()),
        ];
        let total: usize = queues.iter().map(|(_, size)| SLOTS * size).sum();
        for (name, size) in queues {
            println!("{name}: {size} B a message, {} B reserved", SLOTS * size);
        }
        // 2.5 KiB now (browser events boxed: 40 B a slot before); 3.5 KiB before that (the
        // input pump's queue, 1 KiB, went with the pump: the session hands input to the data
        // channel's queue itself); 4.5 KiB with it; 6.5 KiB while the end request and the
        // attachments went unboxed (48 and 32 B a slot); 9.3 KiB while control frames to the
        // browser went unboxed (136 B a slot); 47 KiB when the conflict queue carried whole
        // sessions.
        assert!(
            total <= 3 * 1024,
            "the session's queues reserve {total} B up front"
        );
    }

    /// A browser's attach runs as long as the browser stays, and an `async fn` keeps its
    /// arguments for its whole run: the grant (the session and policy objects, 2.2 KB) and
    /// the browser's socket reach the first attach boxed, so the connection's task carries
    /// neither.
    #[test]
    fn a_browsers_attach_does_not_keep_the_grant() {
        use std::mem::size_of;
        fn future_size<A, B, C, F: std::future::Future>(_: &impl FnOnce(A, B, C) -> F) -> usize {
            size_of::<F>()
        }
        let bytes = future_size(&start::first_attach);
        // Unoptimised build (this test): 6,608 B with the grant inline, 2,192 B boxed,
        // 1,144 B with the browser's socket boxed too (`bridge::BrowserSocket`).
        println!("first attach: {bytes} B");
        assert!(bytes <= 1536, "the first attach reserves {bytes} B");
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
