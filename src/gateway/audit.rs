//! Audit rows (design §7): one JSON line per event (`ssm_session_open`,
//! `ssm_session_close`) on stdout and optionally appended to a file. The same rows are listed
//! on the session (`status.audit[]`: id, verb, time) and mirrored as Kubernetes Events by the
//! live side. A row never holds a credential: it is built from the session, the assumed-role
//! ARN and counters only.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use kube::ResourceExt;

use crate::api::{NodeShellSession, SessionAuditRecord};

/// The version of the row's shape, the `schema` key of every row. Adding a key keeps the
/// version; renaming, removing or retyping one bumps it (docs/audit-row.schema.json).
pub const AUDIT_SCHEMA: &str = "nodeshell.periscope.io/audit/v1";

/// Longest text kept of a client-supplied header (user agent, X-Forwarded-For).
const MAX_CLIENT_TEXT: usize = 512;

/// Verb of the row written when an SSM session opens (or fails to).
pub const VERB_OPEN: &str = "ssm_session_open";
/// Verb of the row written when an SSM session ends.
pub const VERB_CLOSE: &str = "ssm_session_close";
/// Verb of the row written when someone reads a session's transcript or ledger (auditors are
/// audited too).
pub const VERB_TRANSCRIPT_READ: &str = "ssm_transcript_read";

/// Who acted, as their id_token said.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditActor {
    /// OIDC subject.
    pub sub: String,
    /// E-mail, when the token had one.
    pub email: Option<String>,
    /// Groups from the token.
    pub groups: Vec<String>,
    /// Tier the groups mapped to.
    pub tier: String,
}

/// Where the person connected from, as the gateway saw the terminal's WebSocket.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClientInfo {
    /// The TCP peer's IP address (behind an Ingress: the proxy's).
    pub source_address: Option<String>,
    /// The request's `X-Forwarded-For`, as sent: set by your proxy, but a client can forge
    /// what the proxy appends to.
    pub forwarded_for: Option<String>,
    /// The request's `User-Agent`.
    pub user_agent: Option<String>,
}

impl ClientInfo {
    /// The facts of one request; header texts are cut at 512 characters with control
    /// characters replaced, so a client cannot forge extra log lines.
    pub fn of_request(
        peer: Option<std::net::IpAddr>,
        forwarded_for: Option<&str>,
        user_agent: Option<&str>,
    ) -> Self {
        let clean = |text: &str| -> Option<String> {
            let text: String = text
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(MAX_CLIENT_TEXT)
                .collect();
            let text = text.trim().to_string();
            (!text.is_empty()).then_some(text)
        };
        Self {
            source_address: peer.map(|ip| ip.to_canonical().to_string()),
            forwarded_for: forwarded_for.and_then(clean),
            user_agent: user_agent.and_then(clean),
        }
    }
}

/// Where the transcript is and how to check it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditTranscript {
    /// `status.transcript.ref`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Terminal bytes recorded.
    pub bytes: u64,
    /// Hex SHA-256 of the uncompressed asciicast recording.
    pub sha256: String,
    /// Whether the recording stopped at `maxBytes`.
    pub truncated: bool,
}

/// One audit row. Every key is always present (null when unknown) so log pipelines see one
/// shape.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditRow {
    /// The shape's version: [`AUDIT_SCHEMA`].
    pub schema: &'static str,
    /// Unique id, also listed in `status.audit[].id`.
    pub id: String,
    /// `ssm_session_open` or `ssm_session_close`.
    pub event: &'static str,
    /// When the row was written (RFC 3339).
    pub time: String,
    /// Who.
    pub actor: AuditActor,
    /// The cluster's name (gateway configuration).
    pub cluster: String,
    /// The gateway pod that ran the session.
    pub gateway: String,
    /// The NodeShellPolicy that governed it.
    pub policy: String,
    /// The reason the person typed when opening (`spec.reason`); also in SSM's `Reason`.
    pub justification: Option<String>,
    /// Where the person connected from.
    pub client: ClientInfo,
    /// NodeShellSession name.
    pub session: String,
    /// Kubernetes node.
    pub node: String,
    /// EC2 instance.
    pub instance_id: String,
    /// SSM session id (absent when StartSession failed).
    pub session_id: Option<String>,
    /// Role session name CloudTrail shows.
    pub role_session_name: String,
    /// Assumed-role ARN (absent when AssumeRole failed).
    pub assumed_role_arn: Option<String>,
    /// AWS region.
    pub region: String,
    /// When the SSM session started.
    pub started_at: Option<String>,
    /// When it ended (close rows).
    pub ended_at: Option<String>,
    /// Milliseconds between start and end (close rows).
    pub duration_ms: Option<u64>,
    /// The shell's exit code, when it exited.
    pub exit_code: Option<i32>,
    /// `success`, `failure` (the session did not open) or `error` (it ended on a failure).
    pub outcome: &'static str,
    /// The session's `status.reason` (close rows and failures).
    pub reason: Option<String>,
    /// A sentence about the outcome.
    pub message: Option<String>,
    /// Bytes typed (close rows).
    pub bytes_in: Option<u64>,
    /// Bytes printed (close rows).
    pub bytes_out: Option<u64>,
    /// `status.transcript.ref` (close rows of recorded sessions).
    pub transcript_ref: Option<String>,
    /// Terminal bytes recorded in the transcript.
    pub transcript_bytes: Option<u64>,
    /// Whether the transcript stopped at `maxBytes`.
    pub transcript_truncated: Option<bool>,
    /// Hex SHA-256 of the uncompressed asciicast recording (= `status.transcript.sha256`).
    pub sha256: Option<String>,
}

/// The facts every row of one SSM session shares: who, where, and which AWS identities.
#[derive(Clone, Copy, Debug)]
pub struct AuditSubject<'a> {
    /// Who, as the session's spec records them.
    pub actor: &'a AuditActor,
    /// The cluster's name (gateway configuration).
    pub cluster: &'a str,
    /// The gateway pod's name.
    pub gateway: &'a str,
    /// Where the person connected from.
    pub client: &'a ClientInfo,
    /// The session the row is about.
    pub session: &'a NodeShellSession,
    /// The SSM session id, once StartSession answered.
    pub ssm_session_id: Option<&'a str>,
    /// The assumed-role ARN, once STS answered.
    pub assumed_role_arn: Option<&'a str>,
}

/// What a close row adds to the subject.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditClose {
    /// When the SSM session started.
    pub started_at: Timestamp,
    /// When it ended.
    pub ended_at: Timestamp,
    /// The shell's exit code, when known.
    pub exit_code: Option<i32>,
    /// `success` or `error`.
    pub outcome: &'static str,
    /// The session's `status.reason`.
    pub reason: String,
    /// A sentence about the outcome.
    pub message: String,
    /// Bytes typed.
    pub bytes_in: u64,
    /// Bytes printed.
    pub bytes_out: u64,
    /// The stored transcript, when one was stored.
    pub transcript: Option<AuditTranscript>,
}

impl AuditActor {
    /// The actor as the session's spec records the person.
    pub fn of(session: &NodeShellSession) -> Self {
        let user = &session.spec.user;
        Self {
            sub: user.sub.clone(),
            email: user.email.clone(),
            groups: user.groups.clone(),
            tier: user.tier.clone(),
        }
    }
}

impl AuditRow {
    /// The `ssm_session_open` row at `now`: a success unless the caller marks it a failure
    /// with [`AuditRow::failed`].
    pub fn opened(subject: AuditSubject<'_>, now: Timestamp) -> Self {
        let mut row = Self::blank(subject, VERB_OPEN, now);
        row.started_at = subject.ssm_session_id.map(|_| now.to_string());
        row
    }

    /// The `ssm_transcript_read` row: `reader` (the row's actor) read `what` (`transcript`
    /// or `ledger`) of the session, at `now`. `message` names what was read and whose
    /// session it is; the transcript fields name the recording.
    /// `client` is the reader's request (address, forwarded-for, user agent).
    pub fn transcript_read(
        reader: &AuditActor,
        client: &ClientInfo,
        cluster: &str,
        gateway: &str,
        session: &NodeShellSession,
        what: &str,
        now: Timestamp,
    ) -> Self {
        let actor = AuditActor::of(session);
        let subject = AuditSubject {
            actor: &actor,
            cluster,
            gateway,
            client,
            session,
            ssm_session_id: session
                .status
                .as_ref()
                .and_then(|s| s.ssm_session_id.as_deref()),
            assumed_role_arn: None,
        };
        let mut row = Self::blank(subject, VERB_TRANSCRIPT_READ, now);
        row.actor = reader.clone();
        row.message = Some(format!(
            "{} read the {what} of session {} (opened by {})",
            reader.sub,
            session.name_any(),
            actor.sub
        ));
        if let Some(t) = session.status.as_ref().and_then(|s| s.transcript.as_ref()) {
            row.transcript_ref = Some(t.reference.clone());
            row.transcript_bytes = t.bytes.and_then(|b| u64::try_from(b).ok());
            row.transcript_truncated = t.truncated;
            row.sha256.clone_from(&t.sha256);
        }
        row
    }

    /// The open row turned into the record of a session that did not open.
    pub fn failed(mut self, reason: &str, message: &str) -> Self {
        self.outcome = "failure";
        self.reason = Some(reason.to_string());
        self.message = Some(message.to_string());
        self
    }

    /// The `ssm_session_close` row.
    pub fn closed(subject: AuditSubject<'_>, close: AuditClose) -> Self {
        let mut row = Self::blank(subject, VERB_CLOSE, close.ended_at);
        let duration_ms =
            u64::try_from(close.ended_at.as_millisecond() - close.started_at.as_millisecond())
                .unwrap_or(0);
        row.started_at = Some(close.started_at.to_string());
        row.ended_at = Some(close.ended_at.to_string());
        row.duration_ms = Some(duration_ms);
        row.exit_code = close.exit_code;
        row.outcome = close.outcome;
        row.reason = Some(close.reason);
        row.message = Some(close.message);
        row.bytes_in = Some(close.bytes_in);
        row.bytes_out = Some(close.bytes_out);
        if let Some(t) = close.transcript {
            row.transcript_ref = Some(t.reference);
            row.transcript_bytes = Some(t.bytes);
            row.transcript_truncated = Some(t.truncated);
            row.sha256 = Some(t.sha256);
        }
        row
    }

    fn blank(subject: AuditSubject<'_>, event: &'static str, time: Timestamp) -> Self {
        let spec = &subject.session.spec;
        Self {
            schema: AUDIT_SCHEMA,
            id: uuid::Uuid::new_v4().to_string(),
            event,
            time: time.to_string(),
            actor: subject.actor.clone(),
            cluster: subject.cluster.to_string(),
            gateway: subject.gateway.to_string(),
            policy: spec.policy_name.clone(),
            justification: spec.reason.clone(),
            client: subject.client.clone(),
            session: subject.session.name_any(),
            node: spec.node_name.clone(),
            instance_id: spec.instance_id.clone(),
            session_id: subject.ssm_session_id.map(str::to_string),
            role_session_name: spec.role_session_name.clone(),
            assumed_role_arn: subject.assumed_role_arn.map(str::to_string),
            region: spec.region.clone(),
            started_at: None,
            ended_at: None,
            duration_ms: None,
            exit_code: None,
            outcome: "success",
            reason: None,
            message: None,
            bytes_in: None,
            bytes_out: None,
            transcript_ref: None,
            transcript_bytes: None,
            transcript_truncated: None,
            sha256: None,
        }
    }

    /// The row's entry in `status.audit[]`.
    pub fn record(&self, time: Timestamp) -> SessionAuditRecord {
        SessionAuditRecord {
            id: self.id.clone(),
            verb: self.event.to_string(),
            time: Time(time),
        }
    }

    /// The row as one JSON line (no trailing newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Why an audit row could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The audit file could not be opened or written.
    #[error("writing the audit log: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug)]
struct SinkInner {
    stdout: bool,
    file: Option<Mutex<File>>,
    capture: Option<Mutex<Vec<String>>>,
}

/// Where audit rows go: stdout, an optional append-only file, or memory (tests). Cheap to
/// clone.
#[derive(Clone, Debug)]
pub struct AuditSink {
    inner: Arc<SinkInner>,
}

impl AuditSink {
    /// Rows on stdout, and appended to `file` when given.
    pub fn new(stdout: bool, file: Option<&Path>) -> Result<Self, AuditError> {
        let file = match file {
            Some(path) => Some(Mutex::new(
                OpenOptions::new().create(true).append(true).open(path)?,
            )),
            None => None,
        };
        Ok(Self {
            inner: Arc::new(SinkInner {
                stdout,
                file,
                capture: None,
            }),
        })
    }

    /// Rows on stdout only.
    pub fn stdout() -> Self {
        Self {
            inner: Arc::new(SinkInner {
                stdout: true,
                file: None,
                capture: None,
            }),
        }
    }

    /// Rows kept in memory, read back with [`AuditSink::captured`].
    pub fn capture() -> Self {
        Self {
            inner: Arc::new(SinkInner {
                stdout: false,
                file: None,
                capture: Some(Mutex::new(Vec::new())),
            }),
        }
    }

    /// Lines captured so far (only for [`AuditSink::capture`]).
    pub fn captured(&self) -> Vec<String> {
        self.inner
            .capture
            .as_ref()
            .map(|c| match c.lock() {
                Ok(lines) => lines.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            })
            .unwrap_or_default()
    }

    /// Writes one row to every destination; a failing destination does not stop the others.
    pub fn emit(&self, row: &AuditRow) -> Result<(), AuditError> {
        let line = row.to_json_line();
        let mut result = Ok(());
        if self.inner.stdout {
            let mut out = std::io::stdout().lock();
            if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                result = Err(e.into());
            }
        }
        if let Some(file) = &self.inner.file {
            let mut f = match file.lock() {
                Ok(f) => f,
                Err(poisoned) => poisoned.into_inner(),
            };
            if let Err(e) = writeln!(f, "{line}").and_then(|()| f.flush()) {
                result = Err(e.into());
            }
        }
        if let Some(capture) = &self.inner.capture {
            match capture.lock() {
                Ok(mut lines) => lines.push(line),
                Err(poisoned) => poisoned.into_inner().push(line),
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> AuditRow {
        AuditRow {
            schema: AUDIT_SCHEMA,
            id: "7d1c".into(),
            event: VERB_CLOSE,
            time: "2026-11-23T07:00:00Z".into(),
            actor: AuditActor {
                sub: "alice".into(),
                email: Some("alice@example.com".into()),
                groups: vec!["sre".into()],
                tier: "engineer".into(),
            },
            cluster: "dev".into(),
            gateway: "nodeshell-gateway-7f9c-x2".into(),
            policy: "default".into(),
            justification: Some("INC-1234: disk full on the node".into()),
            client: ClientInfo::of_request(
                Some("10.0.0.7".parse().expect("ip")),
                Some("203.0.113.9"),
                Some("Mozilla/5.0"),
            ),
            session: "shell-1".into(),
            node: "n1".into(),
            instance_id: "i-0123456789abcdef0".into(),
            session_id: Some("ns-alice-abc".into()),
            role_session_name: "ns-alice".into(),
            assumed_role_arn: Some("arn:aws:sts::123456789012:assumed-role/r/ns-alice".into()),
            region: "eu-west-1".into(),
            started_at: Some("2026-11-23T06:59:00Z".into()),
            ended_at: Some("2026-11-23T07:00:00Z".into()),
            duration_ms: Some(60_000),
            exit_code: Some(0),
            outcome: "success",
            reason: Some("UserExit".into()),
            message: Some("the shell exited".into()),
            bytes_in: Some(10),
            bytes_out: Some(200),
            transcript_ref: Some("shell-1-transcript".into()),
            transcript_bytes: Some(200),
            transcript_truncated: Some(false),
            sha256: Some("9f2c".repeat(16)),
        }
    }

    #[test]
    fn rows_have_the_contract_shape() {
        let value: serde_json::Value = serde_json::from_str(&row().to_json_line()).expect("json");
        for key in [
            "schema",
            "gateway",
            "policy",
            "justification",
            "client",
            "id",
            "event",
            "time",
            "actor",
            "cluster",
            "session",
            "node",
            "instance_id",
            "session_id",
            "role_session_name",
            "assumed_role_arn",
            "region",
            "started_at",
            "ended_at",
            "duration_ms",
            "exit_code",
            "outcome",
            "reason",
            "bytes_in",
            "bytes_out",
            "transcript_ref",
            "transcript_bytes",
            "transcript_truncated",
            "sha256",
        ] {
            assert!(value.get(key).is_some(), "missing {key}");
        }
        assert_eq!(value["event"], "ssm_session_close");
        assert_eq!(
            value["actor"],
            serde_json::json!({"sub":"alice","email":"alice@example.com","groups":["sre"],"tier":"engineer"})
        );
        assert_eq!(value["transcript_ref"], "shell-1-transcript");
        assert_eq!(value["sha256"], "9f2c".repeat(16));
        assert_eq!(value["schema"], AUDIT_SCHEMA);
        assert_eq!(value["policy"], "default");
        assert_eq!(value["client"]["source_address"], "10.0.0.7");
        assert_eq!(value["duration_ms"], 60_000);
    }

    #[test]
    fn rows_never_carry_credentials() {
        let line = row().to_json_line().to_lowercase();
        for word in [
            "secret",
            "token",
            "accesskey",
            "access_key",
            "password",
            "asia",
        ] {
            assert!(!line.contains(word), "audit row mentions {word}: {line}");
        }
    }

    #[test]
    fn sinks_write_lines_to_memory_and_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let file_sink = AuditSink::new(false, Some(&path)).expect("sink");
        file_sink.emit(&row()).expect("emit");
        file_sink.emit(&row()).expect("emit");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 2);
        let mem = AuditSink::capture();
        mem.emit(&row()).expect("emit");
        assert_eq!(mem.captured(), vec![row().to_json_line()]);
        let record = row().record(Timestamp::from_second(1).expect("ts"));
        assert_eq!(record.verb, "ssm_session_close");
        assert_eq!(record.id, "7d1c");
    }

    #[test]
    fn client_facts_are_cut_and_cleaned() {
        let client = ClientInfo::of_request(
            Some("::ffff:10.1.2.3".parse().expect("ip")),
            Some("198.51.100.1,\n10.0.0.1"),
            Some(&"x".repeat(2000)),
        );
        assert_eq!(client.source_address.as_deref(), Some("10.1.2.3"));
        assert_eq!(
            client.forwarded_for.as_deref(),
            Some("198.51.100.1, 10.0.0.1")
        );
        assert_eq!(client.user_agent.map(|u| u.len()), Some(512));
        assert_eq!(
            ClientInfo::of_request(None, Some(" "), None),
            ClientInfo::default()
        );
    }

    /// The published schema (docs/audit-row.schema.json) accepts the rows this code writes,
    /// an open row with its nulls included, and refuses a row missing a key.
    #[test]
    fn rows_match_the_published_schema() {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/audit-row.schema.json"),
        )
        .expect("schema file");
        let schema: serde_json::Value = serde_json::from_str(&text).expect("schema json");
        let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
        let close: serde_json::Value = serde_json::from_str(&row().to_json_line()).expect("row");
        let errors: Vec<String> = validator
            .iter_errors(&close)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:#?}");
        let mut open = row();
        open.event = VERB_OPEN;
        open.justification = None;
        open.client = ClientInfo::default();
        open.ended_at = None;
        open.duration_ms = None;
        open.exit_code = None;
        open.reason = None;
        open.message = None;
        open.bytes_in = None;
        open.bytes_out = None;
        open.transcript_ref = None;
        open.transcript_bytes = None;
        open.transcript_truncated = None;
        open.sha256 = None;
        let open: serde_json::Value = serde_json::from_str(&open.to_json_line()).expect("row");
        assert!(validator.is_valid(&open), "{open}");
        let mut broken = close.clone();
        broken.as_object_mut().expect("object").remove("policy");
        assert!(!validator.is_valid(&broken));
        let mut wrong = close;
        wrong["schema"] = serde_json::json!("nodeshell.periscope.io/audit/v0");
        assert!(!validator.is_valid(&wrong));
    }
}
