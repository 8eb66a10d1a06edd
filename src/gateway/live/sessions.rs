//! [`LiveSessions`] as the [`LiveShells`] the routes ask of the live side.

use axum::extract::ws::WebSocket;
use futures::future::BoxFuture;

use super::LiveSessions;
use super::reasons::EndReason;
use crate::gateway::handover::{AttachGrant, LiveShells};

impl LiveShells for LiveSessions {
    fn attach(
        &self,
        grant: Box<AttachGrant>,
        socket: WebSocket,
        resume: bool,
    ) -> BoxFuture<'static, ()> {
        LiveSessions::attach(self, grant, socket, resume)
    }

    fn is_running(&self, session_name: &str) -> bool {
        self.is_live(session_name)
    }

    fn running(&self) -> usize {
        usize::try_from(self.metrics().live.get()).unwrap_or(0)
    }

    fn resume_token(&self, session_name: &str) -> Option<String> {
        LiveSessions::resume_token(self, session_name)
    }

    fn request_terminate(&self, session_name: &str) {
        let live = self.clone();
        let name = session_name.to_string();
        // The CR's spec.terminate is the durable request; this only makes the local cut
        // immediate, so it runs off the request's path.
        tokio::spawn(async move {
            live.request_terminate(&name).await;
        });
    }

    fn revoke_identity(&self, session_name: &str, why: String) {
        let live = self.clone();
        let name = session_name.to_string();
        tokio::spawn(async move {
            live.end(&name, EndReason::IdentityRevoked(why)).await;
        });
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        let live = self.clone();
        Box::pin(async move { live.shutdown().await })
    }
}
