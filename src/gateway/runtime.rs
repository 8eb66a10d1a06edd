//! The control side's view of the live side: what a route needs from whatever runs attached
//! shells (hand over a socket, ask for a termination, shut down, load a transcript). Routes
//! depend on these traits only, so they are tested without a live side.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use futures::future::BoxFuture;

use crate::api::NodeShellSession;
use crate::gateway::contract::AttachGrant;
use crate::gateway::error::ErrorCode;

/// Runs attached shells.
pub trait LiveRuntime: Send + Sync + 'static {
    /// Takes over an upgraded socket for an admitted session. `resume` is true when the
    /// session already ran on a socket (reattach): the browser's first text frame is then
    /// `{"type":"resume","resumeToken":…,"offset":N}`.
    fn attach(&self, grant: AttachGrant, socket: WebSocket, resume: bool)
    -> BoxFuture<'static, ()>;

    /// Whether this replica runs the session (an attach to it is then a reattach).
    fn is_running(&self, _session_name: &str) -> bool {
        false
    }

    /// Asks the live session (if this replica runs it) to end with reason AdminTerminated.
    fn request_terminate(&self, session_name: &str);

    /// Ends every live session (reason GatewayShutdown), writing close rows and transcripts.
    fn shutdown(&self) -> BoxFuture<'static, ()>;
}

/// Why a stored transcript could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranscriptLoadError {
    /// The session has no stored transcript (recording off, or not flushed yet).
    #[error("{0}")]
    Missing(String),
    /// Reading the storage failed.
    #[error("cannot read the transcript: {0}")]
    Storage(String),
}

/// Reads stored transcripts.
pub trait TranscriptSource: Send + Sync + 'static {
    /// The stored recording of `session` (gzip members of the asciicast text, in order).
    fn load(
        &self,
        session: &NodeShellSession,
    ) -> BoxFuture<'static, Result<Vec<u8>, TranscriptLoadError>>;
}

/// Stand-in used where no live side runs (route tests, a build without it): every attach is
/// answered with an `error` frame and closed, and nothing is stored.
#[derive(Debug, Default, Clone)]
pub struct NoLiveRuntime;

impl LiveRuntime for NoLiveRuntime {
    fn attach(
        &self,
        _grant: AttachGrant,
        mut socket: WebSocket,
        _resume: bool,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let frame = serde_json::json!({
                "type": "error",
                "code": ErrorCode::StartFailed.as_str(),
                "message": "this gateway runs no live sessions",
                "retryable": false,
            });
            let _ = socket.send(Message::Text(frame.to_string().into())).await;
            let _ = socket.send(Message::Close(None)).await;
        })
    }

    fn request_terminate(&self, _session_name: &str) {}

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

impl TranscriptSource for NoLiveRuntime {
    fn load(
        &self,
        session: &NodeShellSession,
    ) -> BoxFuture<'static, Result<Vec<u8>, TranscriptLoadError>> {
        let name = kube::ResourceExt::name_any(session);
        Box::pin(async move {
            Err(TranscriptLoadError::Missing(format!(
                "no transcript store is configured, so the transcript of {name} cannot be read"
            )))
        })
    }
}

/// The live side and transcript source a gateway runs with.
#[derive(Clone)]
pub struct Runtime {
    /// Attached shells.
    pub live: Arc<dyn LiveRuntime>,
    /// Stored transcripts.
    pub transcripts: Arc<dyn TranscriptSource>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl Runtime {
    /// No live side: attaches are refused, transcripts are missing.
    pub fn none() -> Self {
        Self {
            live: Arc::new(NoLiveRuntime),
            transcripts: Arc::new(NoLiveRuntime),
        }
    }
}
