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
    pub fn transcript_read(
        reader: &AuditActor,
        cluster: &str,
        session: &NodeShellSession,
        what: &str,
        now: Timestamp,
    ) -> Self {
        let actor = AuditActor::of(session);
        let subject = AuditSubject {
            actor: &actor,
            cluster,
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
            id: uuid::Uuid::new_v4().to_string(),
            event,
            time: time.to_string(),
            actor: subject.actor.clone(),
            cluster: subject.cluster.to_string(),
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
            sha256: Some("ab".into()),
        }
    }

    #[test]
    fn rows_have_the_contract_shape() {
        let value: serde_json::Value = serde_json::from_str(&row().to_json_line()).expect("json");
        for key in [
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
        assert_eq!(value["sha256"], "ab");
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
}
