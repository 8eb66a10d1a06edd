//! [`Recordings`]: what the API reads a session's recording through. The transcript's
//! chunks and the ledger's Secret, the bounded search over them, and the
//! `ssm_transcript_read` audit row each read writes (auditors are audited too).

use futures::future::BoxFuture;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use tracing::warn;

use super::search::{
    SearchAnswer, SearchBounds, SearchQuery, SessionRecording, asciicast_output, search_session,
    session_matches, sessions_to_read,
};
use super::{LedgerDocument, LedgerStore};
use crate::api::NodeShellSession;
use crate::gateway::audit::{AuditActor, AuditRow, AuditSink, ClientInfo};
use crate::gateway::handover::{Caller, TranscriptLoadError, TranscriptSource};
use crate::gateway::transcript::TranscriptStore;
use crate::gateway::transcript::chain::ChainReport;

/// Stored transcripts and ledgers, and the audit sink their reads are written to.
#[derive(Clone)]
pub struct Recordings {
    transcripts: TranscriptStore,
    ledgers: LedgerStore,
    audit: AuditSink,
    cluster: String,
    gateway: String,
}

impl Recordings {
    /// Reads Secrets in `namespace`; rows go to `audit` with the cluster's and this gateway
    /// pod's names.
    pub fn new(
        client: Client,
        namespace: &str,
        audit: AuditSink,
        cluster: &str,
        gateway: &str,
    ) -> Self {
        Self {
            transcripts: TranscriptStore::new(client.clone(), namespace),
            ledgers: LedgerStore::new(client, namespace),
            audit,
            cluster: cluster.to_string(),
            gateway: gateway.to_string(),
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

impl Recordings {
    fn read_row(
        &self,
        reader: &Caller,
        client: &ClientInfo,
        session: &NodeShellSession,
        what: &str,
    ) {
        let row = AuditRow::transcript_read(
            &reader_actor(reader),
            client,
            &self.cluster,
            &self.gateway,
            session,
            what,
            Timestamp::now(),
        );
        if let Err(e) = self.audit.emit(&row) {
            warn!(error = %e, "writing the transcript read audit row failed");
        }
    }

    /// The search: sessions with a ledger that pass the person and node filters, newest
    /// first, at most `bounds.max_sessions` ([`sessions_to_read`]); their recorded output read only when the query
    /// has text, within `bounds.max_transcript_bytes` in all. Each session with hits gets a
    /// read row.
    async fn run_search(
        &self,
        reader: &Caller,
        client: &ClientInfo,
        sessions: Vec<NodeShellSession>,
        query: SearchQuery,
        bounds: SearchBounds,
    ) -> SearchAnswer {
        let mut answer = SearchAnswer::default();
        let mut budget = bounds.max_transcript_bytes;
        let (candidates, cut) = sessions_to_read(sessions, &query, &bounds, |s, q| {
            let user = &s.spec.user;
            s.status.as_ref().is_some_and(|st| st.ledger.is_some())
                && session_matches(
                    q,
                    &user.sub,
                    &user.name,
                    user.email.as_deref(),
                    &s.spec.node_name,
                )
        });
        answer.truncated = cut;
        for session in candidates {
            let Ok(ledger) = self.ledgers.load(&session).await else {
                continue;
            };
            let output = if query.text.is_empty() {
                None
            } else {
                self.output_within(&session, &mut budget, &mut answer).await
            };
            let name = kube::ResourceExt::name_any(&session);
            let before = answer.hits.len();
            let more = search_session(
                &query,
                &SessionRecording {
                    session: &name,
                    user: &session.spec.user.name,
                    node: &session.spec.node_name,
                    ledger: &ledger,
                    output: output.as_deref(),
                },
                &mut answer,
            );
            if answer.hits.len() > before {
                self.read_row(reader, client, &session, "ledger (search)");
            }
            if !more {
                break;
            }
        }
        answer
    }

    /// The recorded output of `session` when the budget allows it (else `truncated`).
    async fn output_within(
        &self,
        session: &NodeShellSession,
        budget: &mut usize,
        answer: &mut SearchAnswer,
    ) -> Option<Vec<u8>> {
        let recorded = session
            .status
            .as_ref()
            .and_then(|s| s.transcript.as_ref())
            .and_then(|t| t.bytes)
            .and_then(|b| usize::try_from(b).ok())
            .unwrap_or(0);
        if recorded > *budget {
            answer.truncated = true;
            return None;
        }
        let gz = self.transcripts.load(session).await.ok()?;
        let cast = crate::gateway::transcript::gunzip_chunks([gz.as_slice()]).ok()?;
        *budget = budget.saturating_sub(cast.len());
        Some(asciicast_output(&cast))
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

    fn record_read(
        &self,
        reader: &Caller,
        client: &ClientInfo,
        session: &NodeShellSession,
        what: &str,
    ) {
        self.read_row(reader, client, session, what);
    }

    fn verify(
        &self,
        session: &NodeShellSession,
    ) -> BoxFuture<'static, Result<ChainReport, TranscriptLoadError>> {
        let transcripts = self.transcripts.clone();
        let session = session.clone();
        Box::pin(async move { transcripts.verify(&session).await })
    }

    fn search(
        &self,
        reader: &Caller,
        client: &ClientInfo,
        sessions: Vec<NodeShellSession>,
        query: SearchQuery,
    ) -> BoxFuture<'static, SearchAnswer> {
        let this = self.clone();
        let reader = reader.clone();
        let client = client.clone();
        Box::pin(async move {
            this.run_search(&reader, &client, sessions, query, SearchBounds::default())
                .await
        })
    }
}
