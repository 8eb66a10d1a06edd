//! [`Recordings`]: what the API reads a session's recording through. The transcript's
//! chunks and the ledger's Secret, and the `ssm_transcript_read` audit row each read writes
//! (auditors are audited too).

use futures::future::BoxFuture;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use tracing::warn;

use super::{LedgerDocument, LedgerStore};
use crate::api::NodeShellSession;
use crate::gateway::audit::{AuditActor, AuditRow, AuditSink};
use crate::gateway::handover::{Caller, TranscriptLoadError, TranscriptSource};
use crate::gateway::transcript::TranscriptStore;

/// Stored transcripts and ledgers, and the audit sink their reads are written to.
#[derive(Clone)]
pub struct Recordings {
    transcripts: TranscriptStore,
    ledgers: LedgerStore,
    audit: AuditSink,
    cluster: String,
}

impl Recordings {
    /// Reads Secrets in `namespace`; rows go to `audit` with the cluster's name.
    pub fn new(client: Client, namespace: &str, audit: AuditSink, cluster: &str) -> Self {
        Self {
            transcripts: TranscriptStore::new(client.clone(), namespace),
            ledgers: LedgerStore::new(client, namespace),
            audit,
            cluster: cluster.to_string(),
        }
    }
}

/// The reader as an audit actor (no tier: `""`, as their token mapped to none).
pub fn reader_actor(reader: &Caller) -> AuditActor {
    AuditActor {
        sub: reader.sub.clone(),
        email: reader.email.clone(),
        groups: reader.groups.clone(),
        tier: reader.tier.clone().unwrap_or_default(),
    }
}

impl TranscriptSource for Recordings {
    fn load(
        &self,
        session: &NodeShellSession,
    ) -> BoxFuture<'static, Result<Vec<u8>, TranscriptLoadError>> {
        TranscriptSource::load(&self.transcripts, session)
    }

    fn load_ledger(
        &self,
        session: &NodeShellSession,
    ) -> BoxFuture<'static, Result<LedgerDocument, TranscriptLoadError>> {
        let ledgers = self.ledgers.clone();
        let session = session.clone();
        Box::pin(async move { ledgers.load(&session).await })
    }

    fn record_read(&self, reader: &Caller, session: &NodeShellSession, what: &str) {
        let row = AuditRow::transcript_read(
            &reader_actor(reader),
            &self.cluster,
            session,
            what,
            Timestamp::now(),
        );
        if let Err(e) = self.audit.emit(&row) {
            warn!(error = %e, "writing the transcript read audit row failed");
        }
    }
}
