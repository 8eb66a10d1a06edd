//! The close sequence of a running session: TerminateSession, the channel's last output, the
//! final transcript flush, the close row, status Closed, the Event, the `closed` frame.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::bridge::{HeldFrame, Outbound};
use super::driver::Driver;
use super::frames::ServerFrame;
use super::reasons::{EndReason, retry_final_flush, transcript_loss_note};
use super::records::CloseFacts;
use super::status::{ClosedFacts, write_closed};
use crate::aws::SsmCallError;
use crate::gateway::audit::AuditTranscript;
use crate::gateway::transcript::{StorageFailure, encode, store_encoded, transcript_ref};

/// How long the end waits for the channel's remaining output after TerminateSession.
const DRAIN: Duration = Duration::from_secs(3);
/// Longest wait for TerminateSession at the end (the session's close must not hang on SSM).
const TERMINATE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the end forwards output the browser has not seen yet and waits to queue the
/// `closed` frame, together. After the records are written, so a browser that is slow to
/// read holds up nothing but its own frames: since the browser window keeps the output
/// sent ahead of it small, the rest of its output waits here (in the ring, bounded) for
/// the browser to read it.
const LAST_FRAMES: Duration = Duration::from_secs(10);
/// Attempts at the final transcript flush (while the store is only unavailable) and the
/// Closed status write.
const FINAL_ATTEMPTS: usize = 5;

impl Driver {
    /// The end: TerminateSession, the channel's last output, the final transcript flush, the
    /// close row, status Closed, the `closed` frame.
    pub(super) async fn finish(mut self, reason: EndReason, writer: JoinHandle<()>) {
        let name = self.info.name.clone();
        let ended_at = Timestamp::now();
        self.terminate(&name).await;
        self.drain_channel().await;
        self.input.close();
        let agent_exit = self
            .exit_code
            .or_else(|| self.input.close_reason().and_then(|r| r.exit_code));

        // No more heartbeats: the final write below is the last word.
        writer.abort();
        let _ = writer.await;

        let mut message = reason.message();
        let transcript = self.final_flush(&name, &reason, &mut message).await;
        let exit_code = self.final_ledger(agent_exit).await;
        if let Some(e) = self.ledger_sink_failure.take() {
            message.push_str(&format!("; the S3 copy of the ledger is incomplete: {e}"));
        }
        let close = CloseFacts {
            reason: &reason,
            message: &message,
            ended_at,
            exit_code,
            transcript,
        };
        self.records.close(&self.inner, &self.info, &close);
        let facts = ClosedFacts {
            reason: reason.as_str().to_string(),
            message: message.clone(),
            ended_at,
            exit_code,
        };
        write_closed(
            &self.inner,
            &name,
            &self.records.snapshot,
            &facts,
            FINAL_ATTEMPTS,
        )
        .await;
        self.records.close_event(&self.inner, &self.info, &close);
        let metrics = &self.inner.config.metrics;
        self.records.count_traffic(metrics);
        metrics.end(reason.as_str());
        if let Some(out) = self.out.take() {
            metrics.attached.dec();
            if let Some((code, message)) = reason.error() {
                let frame = ServerFrame::error(code, message, false);
                let _ =
                    tokio::time::timeout(LAST_FRAMES, out.send(Outbound::Control(Box::new(frame))))
                        .await;
            }
            let frame = ServerFrame::Closed {
                exit_code,
                reason: reason.as_str().to_string(),
            };
            let deadline = tokio::time::Instant::now() + LAST_FRAMES;
            self.forward_rest(&out, deadline).await;
            let _ = tokio::time::timeout_at(deadline, out.send(Outbound::Control(Box::new(frame))))
                .await;
        }
        info!(session = %name, reason = reason.as_str(), exit_code, "session closed");
    }

    /// TerminateSession with the person's own credentials; an already ended session is fine.
    async fn terminate(&self, name: &str) {
        let terminate = self.ssm.terminate_session(&self.info.ssm_session_id);
        match tokio::time::timeout(TERMINATE_TIMEOUT, terminate).await {
            Ok(Err(e)) if !matches!(e, SsmCallError::DoesNotExist(_)) => {
                warn!(session = %name, error = %e, "TerminateSession failed");
            }
            Err(_) => warn!(session = %name, "TerminateSession did not answer in time"),
            Ok(_) => {}
        }
    }

    /// Takes the channel's remaining output, without back-pressure, for [`DRAIN`] at most.
    async fn drain_channel(&mut self) {
        self.take_forced_pending();
        let drain_until = tokio::time::Instant::now() + DRAIN;
        while !self.output_done {
            tokio::select! {
                chunk = self.output.recv() => match chunk {
                    Some(chunk) => self.take_output(chunk, true),
                    None => self.output_done = true,
                },
                () = tokio::time::sleep_until(drain_until) => break,
            }
        }
        self.report_output();
    }

    /// Forwards what the browser has not seen yet, until `deadline` at most.
    async fn forward_rest(
        &mut self,
        out: &tokio::sync::mpsc::Sender<Outbound>,
        deadline: tokio::time::Instant,
    ) {
        let forward = async {
            while self.window.has_unsent() {
                let frame = HeldFrame::new(
                    self.window.last_frame(),
                    &self.inner.config.metrics.output_held,
                );
                if out.send(Outbound::Binary(frame)).await.is_err() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout_at(deadline, forward).await;
    }

    /// Stores what the transcript holds; returns the audit row's transcript part. Tries
    /// again only while the store is unavailable: a refusal (403, missing namespace) would
    /// fail identically and only hold back the close.
    async fn final_flush(
        &mut self,
        name: &str,
        reason: &EndReason,
        message: &mut String,
    ) -> Option<AuditTranscript> {
        if let Some(task) = self.flush_task.take() {
            // An encoding that does not come back in time keeps the recording: the loop
            // below then reports the end of the transcript as not stored.
            if let Ok(result) = tokio::time::timeout(Duration::from_secs(10), task).await {
                let _ = self.flush_done(result.ok());
            }
        }
        // The stores running behind: each one that answers starts the next, in order.
        while let Some(mut task) = self.store_task.take() {
            match tokio::time::timeout(Duration::from_secs(10), &mut task).await {
                Ok(result) => {
                    let _ = self.store_done(result.ok());
                }
                Err(_) => {
                    // Its chunks wait in the transcript: the loop below stores them again.
                    task.abort();
                    if let Some(t) = self.transcript.as_mut() {
                        t.end_store(false);
                    }
                    break;
                }
            }
        }
        let t = self.transcript.as_mut()?;
        let reference = transcript_ref(name);
        let mut failure = None;
        for attempt in 0..FINAL_ATTEMPTS {
            if t.flushing() {
                // An earlier flush never came back: the recording is not here to store.
                self.inner.config.metrics.transcript_failures.inc();
                warn!(session = %name, "the transcript's last flush did not come back; its end is not stored");
                failure = Some(StorageFailure::Unavailable);
                break;
            }
            if let Some(job) = t.begin_flush(true) {
                let Some(encoded) = encode(job).await else {
                    continue;
                };
                t.end_encode(encoded);
            }
            // Everything waiting, in order, one store after another.
            let mut stored = Ok(());
            while let Some(job) = t.begin_store() {
                let sink = self.info.sink.as_ref().map(|t| (self.inner.sink(), t));
                stored = store_encoded(&self.inner.store, sink, &self.info.session, &job).await;
                t.end_store(stored.is_ok());
                if stored.is_err() {
                    break;
                }
            }
            match stored {
                Ok(()) => {
                    failure = None;
                    break;
                }
                Err(e) => {
                    self.inner.config.metrics.transcript_failures.inc();
                    let classified = StorageFailure::classify(&e, self.inner.store.namespace());
                    warn!(session = %name, attempt, error = %e, retryable = classified.retryable(), "final transcript flush failed");
                    let again = retry_final_flush(&classified) && attempt + 1 < FINAL_ATTEMPTS;
                    failure = Some(classified);
                    if !again {
                        break;
                    }
                    tokio::time::sleep(self.inner.config.settings.status_throttle).await;
                }
            }
        }
        let mut sink_note = None;
        if failure.is_none()
            && let Some(target) = &self.info.sink
        {
            // The last chunk, now final, as one locked object (already compressed: the
            // flush above took all the text).
            let last: Vec<_> = t.current().into_iter().collect();
            let put = self.inner.sink().put_chunks(target, &last).await;
            sink_note = put.err().or_else(|| target.first_failure());
        }
        if let Some(e) = sink_note {
            message.push_str(&format!(
                "; the S3 copy of the transcript is incomplete: {e}"
            ));
        }
        match failure {
            None => {
                self.transcript_stored = true;
                self.records.snapshot.transcript = t.status(&reference);
            }
            // A TranscriptFailed end already says why in its message.
            Some(_) if matches!(reason, EndReason::TranscriptFailed(_)) => {}
            Some(failure) => {
                message.push_str(&transcript_loss_note(self.transcript_stored, &failure));
            }
        }
        let summary = t.summary();
        self.transcript_stored.then_some(AuditTranscript {
            reference,
            bytes: summary.terminal_bytes,
            sha256: summary.sha256,
            truncated: summary.truncated,
        })
    }
}
