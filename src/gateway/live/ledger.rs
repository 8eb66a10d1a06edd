//! A running session's command ledger: fed from the output path (`Driver::record_output`),
//! its summary kept in `status.ledger`, its records written beside the transcript each time
//! the transcript flushes (one write at a time, off the session's path) and once more at the
//! close, before the Closed status. The shell's final mark gives `exitCode` when the agent
//! gave none.

use std::time::{Duration, Instant};

use tracing::warn;

use super::driver::Driver;
use crate::api::{EXIT_CODE_FROM_AGENT, EXIT_CODE_FROM_SHELL};
use crate::gateway::ledger::ledger_secret_name;

/// Attempts at the ledger's write at the close.
const FINAL_ATTEMPTS: usize = 3;
/// Longest wait for a ledger write still running at the close.
const RUNNING_WRITE_WAIT: Duration = Duration::from_secs(10);
/// A ledger of more records than this is rewritten at most once per
/// [`LARGE_LEDGER_EVERY`] (a smaller one at every flush that finds it changed).
pub(super) const LARGE_LEDGER_RECORDS: usize = 64;
/// How often a large ledger may be rewritten. Each write replaces the whole Secret (up to
/// 1 MiB at 800 records), a new revision etcd keeps until its next compaction; a shell that
/// runs a command every few seconds would otherwise rewrite it every flush interval. The
/// records between two writes are not lost: their marks are in the transcript, stored at
/// every interval, and the close writes the ledger whole.
pub(super) const LARGE_LEDGER_EVERY: Duration = Duration::from_secs(60);

/// Whether a changed ledger of `records` records, last written at `last` (if ever), is
/// written at `now`.
pub(super) fn ledger_write_due(records: usize, last: Option<Instant>, now: Instant) -> bool {
    records <= LARGE_LEDGER_RECORDS
        || last.is_none_or(|at| now.saturating_duration_since(at) >= LARGE_LEDGER_EVERY)
}

impl Driver {
    /// Output at `t` seconds into the ledger.
    pub(super) fn ledger_output(&mut self, t: f64, data: &[u8]) {
        if let Some(ledger) = self.ledger.as_mut() {
            ledger.output(t, data);
        }
    }

    /// Starts writing the ledger when it changed and no write is running; the status
    /// summary follows the ledger at once (the status write carries it).
    pub(super) fn write_ledger(&mut self) {
        let Some(ledger) = self.ledger.as_ref() else {
            return;
        };
        if self.ledger_write.as_ref().is_some_and(|w| !w.is_finished()) {
            return;
        }
        let marks = ledger.marks();
        let last = self.ledger_written;
        if last.is_some_and(|(written, _)| written == marks) {
            return;
        }
        let now = Instant::now();
        if !ledger_write_due(ledger.record_count(), last.map(|(_, at)| at), now) {
            return;
        }
        let document = ledger.document(&self.info.name);
        self.ledger_written = Some((marks, now));
        self.records.snapshot.ledger = Some(ledger.status(&ledger_secret_name(&self.info.name)));
        let store = self.inner.ledgers.clone();
        let session = self.info.session.clone();
        let name = self.info.name.clone();
        self.ledger_write = Some(tokio::spawn(async move {
            if let Err(e) = store.store(&session, &document).await {
                warn!(session = %name, error = %e, "storing the ledger failed");
            }
        }));
    }

    /// The close: waits for a running write, writes the ledger a last time and sets the
    /// summary; returns the exit code and where it came from.
    pub(super) async fn final_ledger(&mut self, agent_exit: Option<i32>) -> Option<i32> {
        if agent_exit.is_some() {
            self.records.snapshot.exit_code_source = Some(EXIT_CODE_FROM_AGENT.to_string());
        }
        let Some(ledger) = self.ledger.as_ref() else {
            return agent_exit;
        };
        if let Some(running) = self.ledger_write.take() {
            let _ = tokio::time::timeout(RUNNING_WRITE_WAIT, running).await;
        }
        let document = ledger.document(&self.info.name);
        self.records.snapshot.ledger = Some(ledger.status(&ledger_secret_name(&self.info.name)));
        let shell_exit = ledger.counts().shell_exit_status;
        for attempt in 0..FINAL_ATTEMPTS {
            match self
                .inner
                .ledgers
                .store(&self.info.session, &document)
                .await
            {
                Ok(()) => break,
                Err(e) => {
                    warn!(session = %self.info.name, attempt, error = %e, "final ledger write failed");
                    tokio::time::sleep(self.inner.config.settings.status_throttle).await;
                }
            }
        }
        if let Some(target) = &self.info.sink
            && let Err(e) = self.inner.sink().put_ledger(target, &document).await
        {
            // As for the last chunk: at the close the session keeps its own end; the
            // required sink's failure is said in the close message.
            self.ledger_sink_failure = Some(e);
        }
        match (agent_exit, shell_exit) {
            (Some(code), _) => Some(code),
            (None, Some(code)) => {
                self.records.snapshot.exit_code_source = Some(EXIT_CODE_FROM_SHELL.to_string());
                Some(code)
            }
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_ledger_is_rewritten_at_most_once_a_minute_a_small_one_at_every_flush() {
        let t0 = Instant::now();
        let later = |s: u64| t0 + Duration::from_secs(s);
        // Small: every flush that finds it changed.
        assert!(ledger_write_due(LARGE_LEDGER_RECORDS, Some(t0), later(5)));
        // Large: never written yet, then a minute after its last write.
        assert!(ledger_write_due(LARGE_LEDGER_RECORDS + 1, None, t0));
        assert!(!ledger_write_due(800, Some(t0), later(5)));
        assert!(!ledger_write_due(800, Some(t0), later(59)));
        assert!(ledger_write_due(800, Some(t0), later(60)));
    }
}
