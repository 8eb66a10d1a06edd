//! The command ledger (issue 12 §2): which commands a session ran, with their exit status,
//! working directory, times and output offsets, from the shell-integration marks the
//! `NodeShell-Shell` document prints. Marks are cooperative: the shell prints them, so
//! anyone in the shell can print them too; the per-session nonce only keeps output that
//! merely contains a mark-like sequence (a file, a program) from becoming a command. The
//! transcript stays the authoritative record ([transcripts-and-audit.md]).
//!
//! [`marks`] finds the marks, [`commands`] turns them into records (both pure), [`store`]
//! keeps a session's ledger in a Secret beside its transcript chunks.
//!
//! [transcripts-and-audit.md]: ../../../docs/transcripts-and-audit.md

pub mod commands;
pub mod marks;
pub mod recordings;
pub mod search;
pub mod store;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use rand::Rng;
use serde::{Deserialize, Serialize};

pub use commands::{CommandLedger, CommandRecord, LedgerCounts, LedgerLimits};
pub use recordings::Recordings;
pub use store::{LEDGER_DATA_KEY, LedgerStore, ledger_secret_name};

use crate::api::SessionLedger;

/// The document whose profile prints the marks: a session on it gets a ledger.
pub const LEDGER_DOCUMENT: &str = crate::api::LEDGER_DOCUMENT_NAME;

/// The document parameter that carries the session's nonce to the profile.
pub const NONCE_PARAMETER: &str = "markNonce";

/// What `trust` says in every ledger: the marks are printed by the shell, cooperatively.
pub const TRUST_COOPERATIVE: &str = "cooperative";

/// A fresh nonce: 128 random bits as 32 hex characters.
pub fn new_nonce() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    hex::encode(bytes)
}

/// One command in the ledger's JSON (`GET /api/v1/sessions/{name}/ledger`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerCommand {
    /// Position in the session, from 0.
    pub index: u64,
    /// The command line (control characters removed, cut at 512 bytes).
    pub command: String,
    /// The command line was cut.
    #[serde(default)]
    pub truncated: bool,
    /// Working directory at the start, when reported.
    pub cwd: Option<String>,
    /// Exit status, when the command finished and reported it.
    pub exit_status: Option<i32>,
    /// Wall-clock start (RFC 3339).
    pub started_at: String,
    /// Wall-clock end (RFC 3339), once finished.
    pub ended_at: Option<String>,
    /// Start on the recording's time axis (seconds, the transcript's event times).
    pub start_seconds: f64,
    /// End on the recording's time axis.
    pub end_seconds: Option<f64>,
    /// Byte offset of the command's output in the session's output stream.
    pub output_start: u64,
    /// Byte offset where its output ends, once finished.
    pub output_end: Option<u64>,
    /// Always false: marks without the session's nonce never become commands (they are
    /// counted in `forgedMarks`).
    pub forged: bool,
}

/// A session's ledger as stored and served.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerDocument {
    /// The session's name.
    pub session: String,
    /// Always `cooperative`: see the module documentation.
    pub trust: String,
    /// The commands, in order.
    pub commands: Vec<LedgerCommand>,
    /// Mark-like sequences without the session's nonce.
    pub forged_marks: u64,
    /// Mark-like sequences longer than the bound (cut, ignored).
    #[serde(default)]
    pub oversize_marks: u64,
    /// Commands started (records beyond the bound are counted, not kept).
    #[serde(default)]
    pub commands_total: u64,
    /// Records were dropped at the per-session bound.
    #[serde(default)]
    pub records_truncated: bool,
    /// The shell's own exit status (its final mark).
    pub shell_exit_status: Option<i32>,
}

/// A session's ledger in progress: the pure [`CommandLedger`] and the wall-clock time of
/// the recording's second 0.
#[derive(Clone, Debug)]
pub struct Ledger {
    commands: CommandLedger,
    origin: Timestamp,
}

impl Ledger {
    /// A ledger for marks carrying `nonce`, whose time axis starts at `origin`.
    pub fn new(nonce: &str, origin: Timestamp) -> Self {
        Self {
            commands: CommandLedger::new(nonce, LedgerLimits::default()),
            origin,
        }
    }

    /// Output at `t` seconds on the recording's time axis.
    pub fn output(&mut self, t: f64, data: &[u8]) {
        self.commands.output(t, data);
    }

    /// The counts so far.
    pub fn counts(&self) -> &LedgerCounts {
        self.commands.counts()
    }

    /// How many command records are kept.
    pub fn record_count(&self) -> usize {
        self.commands.record_count()
    }

    /// Marks taken so far: the stored document changes only when this does.
    pub fn marks(&self) -> u64 {
        self.commands.marks()
    }

    /// The ledger as stored and served.
    pub fn document(&self, session: &str) -> LedgerDocument {
        let at = |s: f64| {
            self.origin
                .checked_add(SignedDuration::from_secs_f64(s.max(0.0)))
                .unwrap_or(self.origin)
                .to_string()
        };
        let counts = self.commands.counts();
        LedgerDocument {
            session: session.to_string(),
            trust: TRUST_COOPERATIVE.to_string(),
            commands: self
                .commands
                .records()
                .into_iter()
                .map(|r| LedgerCommand {
                    index: r.index,
                    started_at: at(r.start_seconds),
                    ended_at: r.end_seconds.map(at),
                    command: r.command,
                    truncated: r.truncated,
                    cwd: r.cwd,
                    exit_status: r.exit_status,
                    start_seconds: r.start_seconds,
                    end_seconds: r.end_seconds,
                    output_start: r.output_start,
                    output_end: r.output_end,
                    forged: false,
                })
                .collect(),
            forged_marks: counts.forged_marks,
            oversize_marks: counts.oversize_marks,
            commands_total: counts.commands,
            records_truncated: counts.records_truncated,
            shell_exit_status: counts.shell_exit_status,
        }
    }

    /// `status.ledger` for the ledger stored under `reference`.
    pub fn status(&self, reference: &str) -> SessionLedger {
        let c = self.commands.counts();
        SessionLedger {
            reference: reference.to_string(),
            commands: i64::try_from(c.commands).unwrap_or(i64::MAX),
            failed_commands: i64::try_from(c.failed_commands).unwrap_or(i64::MAX),
            last_exit_status: c.last_exit_status,
            forged_marks: i64::try_from(c.forged_marks).unwrap_or(i64::MAX),
            truncated: c.records_truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_puts_commands_on_both_time_axes() {
        let origin: Timestamp = "2026-01-02T03:04:05Z".parse().expect("ts");
        let mut l = Ledger::new("n", origin);
        l.output(
            1.5,
            b"\x1b]133;C;nonce=n;cmd=false\x07\x1b]133;D;1;nonce=n\x07\x1b]133;A\x07",
        );
        let doc = l.document("shell-1");
        assert_eq!(doc.trust, "cooperative");
        assert_eq!(doc.forged_marks, 1);
        assert_eq!(doc.commands[0].started_at, "2026-01-02T03:04:06.5Z");
        assert_eq!(doc.commands[0].exit_status, Some(1));
        let status = l.status("shell-1-ledger");
        assert_eq!((status.commands, status.failed_commands), (1, 1));
        assert_eq!(status.last_exit_status, Some(1));
    }

    #[test]
    fn nonces_are_fresh_and_long() {
        let (a, b) = (new_nonce(), new_nonce());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
