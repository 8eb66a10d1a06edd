//! One running session: the task that owns the data channel, the output window, the
//! clocks, the transcript and the heartbeats, and serves whichever browser is attached.
//! This is its select loop; what to keep and when to read output is [`super::output`], the
//! status and counters [`super::records`], the end [`super::finish`]. It never blocks on a
//! single party: output is read only when the window has room for it (so a slow or absent
//! browser holds the agent back through the channel's bounded window), input that does not
//! fit the channel's queue waits in order, bounded ([`super::pending_input`]), status
//! writes and transcript flushes run in their own tasks.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::sleep_until;
use tracing::{debug, info, warn};

use super::bridge::{Attachment, ClientEvent, HeldFrame, Outbound, QueuedEvent};
use super::frames::{LastSize, ServerFrame};
use super::idle::{DeadlineCause, IdleClock, IdleEvent, SessionDeadline, session_deadline};
use super::metrics::PausedMark;
use super::output::OutputWindow;
use super::pending_input::PendingInput;
use super::reasons::{EndReason, end_from_channel, takeover};
use super::records::{Records, SessionInfo};
use super::replay::ReplayStart;
use super::status::{Conflict, StatusSender, status_writer};
use super::{Control, Inner};
use crate::api::NodeShellSessionStatus;
use crate::aws::SsmSessions;
use crate::gateway::error::ErrorCode;
use crate::gateway::ledger::Ledger;
use crate::gateway::session_watch::{SessionNews, Subscription};
use crate::gateway::transcript::{
    Encoded, StorageFailure, Transcript, TranscriptError, encode, pending_bound, status_of,
    store_encoded, transcript_ref,
};
use crate::ssm::{ChannelInput, ChannelOutput, CloseReason, DataChannel, HeldShare};

/// A session the start sequence brought up.
pub(super) struct Started {
    pub info: Arc<SessionInfo>,
    pub channel: DataChannel,
    pub ssm: SsmSessions,
    pub transcript: Option<Transcript>,
    pub transcript_stored: bool,
    /// The command ledger, for a session on the ledger document with a transcript.
    pub ledger: Option<Ledger>,
    pub origin: Instant,
    pub started: Instant,
    pub snapshot: NodeShellSessionStatus,
    /// The terminal size the start sequence applied.
    pub size: (u16, u16),
    /// The session's news on the gateway's one watch, subscribed before the Active write.
    pub watch: Subscription,
}

/// What a transcript flush task hands back: the recording with the chunks it encoded, or
/// `None` when the encoding thread was lost (the recording with it).
pub(super) type FlushResult = Option<Encoded>;

/// What a transcript store task hands back: the store's answer for the chunks it took.
pub(super) type StoreResult = Result<(), TranscriptError>;

/// The running session's state, owned by its task.
pub(super) struct Driver {
    pub(super) inner: Arc<Inner>,
    pub(super) info: Arc<SessionInfo>,
    pub(super) ssm: SsmSessions,
    pub(super) input: ChannelInput,
    pub(super) output: ChannelOutput,
    /// The output held for the browser, and whether more may be read.
    pub(super) window: OutputWindow,
    idle: IdleClock,
    /// The policy's maximum duration, or the end of credentials nothing renews.
    deadline: SessionDeadline,
    origin: Instant,
    pub(super) transcript: Option<Transcript>,
    /// Some chunk was stored at least once.
    pub(super) transcript_stored: bool,
    /// The status snapshot, counters and last activity.
    pub(super) records: Records,
    /// Input the channel's queue had no room for yet.
    pending_input: PendingInput,
    pub(super) output_done: bool,
    /// How the channel ended, once it has; its remaining output is then read without
    /// back-pressure (there is no agent left to hold back).
    channel_end: Option<CloseReason>,
    /// The channel's connection is over and it hands over what it still holds: read it
    /// without back-pressure too, or its final flush gives up on it.
    channel_ending: bool,
    pub(super) out: Option<mpsc::Sender<Outbound>>,
    events: Option<mpsc::Receiver<QueuedEvent>>,
    detached_since: Option<Instant>,
    /// The browser has not been told of a standing idle warning yet: the warning came, or
    /// the browser attached during the warning period. It goes into the queue's next free
    /// slot, ahead of output, counted from the idle clock then (a full queue delays it,
    /// never drops it).
    warning_owed: bool,
    next_heartbeat: Instant,
    next_flush: Instant,
    /// The transcript's encoding, running on a blocking thread.
    pub(super) flush_task: Option<JoinHandle<FlushResult>>,
    /// The transcript's store, running behind the encoding (one at a time).
    pub(super) store_task: Option<JoinHandle<StoreResult>>,
    /// The last store failed: wait for the flush interval before trying again.
    store_failed: bool,
    pub(super) exit_code: Option<i32>,
    /// The command ledger ([`super::ledger`]), the write of it running, and what was last
    /// handed to a write.
    pub(super) ledger: Option<Ledger>,
    pub(super) ledger_write: Option<JoinHandle<()>>,
    /// The ledger's marks when it was last handed to a write ([`Ledger::marks`]), and when:
    /// a copy of the document (up to 1 MiB) is not kept to compare.
    pub(super) ledger_written: Option<(u64, Instant)>,
    /// The S3 sink refused the ledger at the close (said in the close message).
    pub(super) ledger_sink_failure: Option<crate::gateway::transcript::s3::SinkError>,
    /// The window's bytes, in the gateway's held-output total.
    held: HeldShare,
    /// Whether output reading waits for the browser, in the paused-sessions gauge.
    paused: PausedMark,
    /// The terminal size last sent to the agent and the one waiting for its slot: an
    /// unchanged resize is dropped, a burst coalesced.
    size: LastSize,
}

/// Runs a session to its end, then frees its slot. `started` comes boxed: an `async fn`
/// keeps its arguments for its whole run, and the driver takes everything out of it at once.
pub(super) async fn run(
    inner: Arc<Inner>,
    started: Box<Started>,
    first: Attachment,
    mut attach_rx: mpsc::Receiver<Box<Attachment>>,
    mut control_rx: mpsc::Receiver<Control>,
) {
    let name = started.info.name.clone();
    inner.config.metrics.live.inc();
    let (status_tx, status_rx) = watch::channel(None);
    let (conflict_tx, mut conflict_rx) = mpsc::channel(4);
    let writer = tokio::spawn(status_writer(
        inner.clone(),
        name.clone(),
        status_rx,
        conflict_tx,
    ));
    // Built by a plain function: `started` is borrowed while the driver is made, and a
    // local borrowed in an `async fn` keeps its room in the future for the whole run.
    let (mut driver, mut watch) = Driver::new(inner.clone(), started, status_tx);
    driver.attach(first);
    let reason = driver
        .serve(
            &mut attach_rx,
            &mut control_rx,
            &mut conflict_rx,
            &mut watch,
        )
        .await;
    drop(watch);
    info!(session = %name, reason = reason.as_str(), "session ending");
    // Boxed: the close's calls (TerminateSession, the last transcript flush, status writes)
    // make a large future, and inline it would be resident for the whole session.
    Box::pin(driver.finish(reason, writer)).await;
    inner.config.metrics.live.dec();
    inner.release(&name);
}

impl Driver {
    /// The driver of `started`, and the session's subscription, which `serve` borrows beside
    /// it.
    fn new(
        inner: Arc<Inner>,
        started: Box<Started>,
        status_tx: StatusSender,
    ) -> (Self, Subscription) {
        let started = *started;
        let (input, output) = started.channel.into_parts();
        let now = Instant::now();
        let driver = Driver {
            idle: IdleClock::from_limits(&started.info.limits, now),
            deadline: session_deadline(
                &started.info.limits,
                started.started,
                credentials_end(&started.ssm),
            ),
            window: OutputWindow::new(
                inner.config.settings.replay_buffer_bytes,
                inner.config.settings.browser_window_bytes,
            ),
            next_heartbeat: now + inner.config.settings.heartbeat_interval,
            next_flush: now + inner.config.settings.transcript_flush_interval,
            inner: inner.clone(),
            ssm: started.ssm,
            input,
            output,
            origin: started.origin,
            transcript: started.transcript,
            transcript_stored: started.transcript_stored,
            records: Records::new(started.snapshot, status_tx, started.info.started_at),
            pending_input: PendingInput::default(),
            output_done: false,
            channel_end: None,
            channel_ending: false,
            out: None,
            events: None,
            detached_since: None,
            warning_owed: false,
            flush_task: None,
            store_task: None,
            store_failed: false,
            exit_code: None,
            ledger: started.ledger,
            ledger_write: None,
            ledger_written: None,
            ledger_sink_failure: None,
            held: inner.config.metrics.output_held.share(),
            paused: PausedMark::new(&inner.config.metrics.output_paused),
            size: LastSize::opened_at(started.size.0, started.size.1),
            info: started.info,
        };
        (driver, started.watch)
    }
}

/// When the session's AWS credentials expire, if nothing renews them (a bearer caller's),
/// as an instant of this process's clock.
fn credentials_end(ssm: &crate::aws::SsmSessions) -> Option<Instant> {
    let credentials = ssm.credentials().filter(|c| !c.is_renewable())?;
    let left = (credentials.expiration() - chrono::Utc::now())
        .to_std()
        .unwrap_or(std::time::Duration::ZERO);
    Some(Instant::now() + left)
}

async fn recv_opt<T>(rx: Option<&mut mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn join_opt<T>(handle: Option<&mut JoinHandle<T>>) -> Option<T> {
    match handle {
        Some(h) => h.await.ok(),
        None => std::future::pending().await,
    }
}

impl Driver {
    fn seconds(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }

    fn send_control(&self, frame: ServerFrame) {
        if let Some(out) = &self.out {
            let _ = out.try_send(Outbound::Control(Box::new(frame)));
        }
    }

    /// A browser attaches (first attach, or a reattach replacing any other browser).
    fn attach(&mut self, attachment: Attachment) {
        if let Some(old) = self.out.take() {
            let _ = old.try_send(Outbound::Control(Box::new(ServerFrame::error(
                ErrorCode::BadRequest,
                "another browser attached to this session",
                false,
            ))));
            self.inner.config.metrics.attached.dec();
        }
        self.out = Some(attachment.out);
        self.events = Some(attachment.events);
        self.detached_since = None;
        self.inner.config.metrics.attached.inc();
        let start = self.window.attach(attachment.offset);
        self.send_control(ServerFrame::Hello {
            session: self.info.name.clone(),
            node: self.info.session.spec.node_name.clone(),
            instance_id: self.info.session.spec.instance_id.clone(),
            ssm_session_id: self.info.ssm_session_id.clone(),
            idle_seconds: u64::try_from(self.info.limits.idle_seconds).unwrap_or(0),
            resume_token: self.info.resume_token.clone(),
            offset: self.window.cursor(),
        });
        if let Some(ReplayStart::Gap { held_from, .. }) = start {
            self.send_control(ServerFrame::error(
                ErrorCode::BadRequest,
                format!(
                    "output before byte {held_from} is no longer held; the terminal continues from there"
                ),
                false,
            ));
        }
        // A browser that comes during the warning period is told too.
        self.warning_owed = self.idle.warning_at(Instant::now()).is_some();
        self.retry_pending_output();
    }

    /// Puts an owed idle warning into `permit`'s slot if it still stands; hands the permit
    /// back when nothing was owed or the warning no longer stands (activity came since).
    fn pay_warning<'a>(
        &mut self,
        permit: mpsc::Permit<'a, Outbound>,
    ) -> Option<mpsc::Permit<'a, Outbound>> {
        if !std::mem::take(&mut self.warning_owed) {
            return Some(permit);
        }
        match self.idle.warning_at(Instant::now()) {
            Some(seconds_remaining) => {
                permit.send(Outbound::Control(Box::new(ServerFrame::IdleWarn {
                    seconds_remaining,
                })));
                None
            }
            None => Some(permit),
        }
    }

    fn detach(&mut self) {
        if self.out.take().is_some() {
            self.inner.config.metrics.attached.dec();
        }
        self.events = None;
        self.detached_since = Some(Instant::now());
        debug!(session = %self.info.name, "browser detached; waiting for a reattach");
    }

    /// Takes an output chunk into the window (forced: whatever the room, once the channel
    /// ended), then into the transcript and the counters; a chunk without room waits.
    pub(super) fn take_output(&mut self, chunk: Bytes, force: bool) {
        let taken = if force {
            Some(self.window.force(chunk))
        } else {
            self.window.offer(chunk)
        };
        if let Some(chunk) = taken {
            self.record_output(&chunk);
        }
    }

    /// The waiting chunk, forced in (the channel ended).
    pub(super) fn take_forced_pending(&mut self) {
        if let Some(chunk) = self.window.force_pending() {
            self.record_output(&chunk);
        }
    }

    fn retry_pending_output(&mut self) {
        if let Some(chunk) = self.window.retry_pending() {
            self.record_output(&chunk);
        }
    }

    /// Output that went into the window: the transcript, the counters, the idle clock.
    fn record_output(&mut self, chunk: &Bytes) {
        let now = Instant::now();
        let t = self.seconds();
        if let Some(tr) = self.transcript.as_mut() {
            tr.output(t, chunk);
            if self.flush_due_now() {
                self.start_flush(false);
            }
        }
        self.ledger_output(t, chunk);
        self.idle.output(now);
        self.records
            .output(chunk.len(), self.idle.last_activity() == now);
    }

    /// Updates the held-output total and the paused mark from the window.
    pub(super) fn report_output(&mut self) {
        self.held.set(self.window.held_bytes());
        self.paused
            .set(self.window.is_waiting() && !self.channel_over());
    }

    fn on_input(&mut self, bytes: Bytes) {
        let now = Instant::now();
        self.idle.input(now);
        self.records.input(bytes.len());
        let t = self.seconds();
        if let Some(tr) = self.transcript.as_mut() {
            tr.input(t, &bytes);
        }
        self.send_input(bytes);
    }

    /// Queues `bytes` behind the input already waiting and sends what the channel's queue
    /// has room for (a channel that is gone takes nothing more: its end comes through
    /// `closed`).
    fn send_input(&mut self, bytes: Bytes) {
        self.pending_input.push(bytes);
        self.drain_input();
    }

    /// Sends the waiting input the channel's queue has room for now.
    fn drain_input(&mut self) {
        let input = &self.input;
        let _ = self.pending_input.drain(|b| input.try_send_input(b));
    }

    /// Sends a size to the agent and records it.
    fn apply_size(&mut self, (cols, rows): (u16, u16)) {
        let _ = self.input.resize(u32::from(cols), u32::from(rows));
        let t = self.seconds();
        if let Some(tr) = self.transcript.as_mut() {
            tr.resize(t, cols, rows);
        }
    }

    /// The sealed transcript bytes that may wait for the store before output reading pauses.
    fn pending_bound(&self) -> usize {
        pending_bound(self.info.transcript_required)
    }

    /// Whether the channel's connection is over (output is then taken whatever the room).
    fn channel_over(&self) -> bool {
        self.channel_ending || self.channel_end.is_some()
    }

    fn can_read_output(&self) -> bool {
        if self.channel_over() {
            return !self.output_done;
        }
        !self.output_done
            && !self.window.is_waiting()
            && self
                .transcript
                .as_ref()
                .is_none_or(|t| t.takes_output(self.pending_bound()))
    }

    /// Whether browser events wait: a recorded keystroke would grow a full transcript queue.
    fn input_held_by_transcript(&self) -> bool {
        self.transcript
            .as_ref()
            .is_some_and(|t| t.captures_input() && t.is_full())
    }

    /// Whether a flush should start now rather than at the interval: enough is queued and
    /// the store is not too far behind.
    fn flush_due_now(&self) -> bool {
        self.flush_task.is_none()
            && self
                .transcript
                .as_ref()
                .is_some_and(|t| t.flush_now(self.pending_bound()))
    }

    fn next_deadline(&self) -> Instant {
        let mut deadline = self
            .idle
            .next_deadline()
            .min(self.deadline.at)
            .min(self.next_heartbeat);
        if self.transcript.is_some() && self.flush_task.is_none() {
            // A full queue or a sealed chunk is taken at once: output reading waits on it.
            deadline = if self.flush_due_now() {
                Instant::now()
            } else {
                deadline.min(self.next_flush)
            };
        }
        if let Some(since) = self.detached_since {
            deadline = deadline.min(since + self.inner.config.settings.reattach_grace);
        }
        if let Some(due) = self.size.due_at() {
            deadline = deadline.min(due);
        }
        deadline
    }

    fn push_status(&mut self) {
        self.records.heartbeat(&self.inner.config.metrics);
    }

    /// Starts a flush: the queued events go to a blocking thread to be encoded and
    /// compressed; the recording comes back as soon as that is done, and the chunks (the
    /// sealed ones, and with `with_open` the open one) wait for a store.
    fn start_flush(&mut self, with_open: bool) {
        self.write_ledger();
        let Some(t) = self.transcript.as_mut() else {
            return;
        };
        let Some(job) = t.begin_flush(with_open) else {
            return;
        };
        self.flush_task = Some(tokio::spawn(encode(job)));
    }

    /// Starts a store of every chunk waiting, unless one runs or the last one failed (that
    /// waits for the flush interval).
    fn start_store(&mut self) {
        if self.store_task.is_some() || self.store_failed {
            return;
        }
        let Some(job) = self.transcript.as_mut().and_then(Transcript::begin_store) else {
            return;
        };
        let store = self.inner.store.clone();
        let session = self.info.session.clone();
        let sink = self
            .info
            .sink
            .clone()
            .map(|t| (self.inner.sink().clone(), t));
        self.store_task = Some(tokio::spawn(async move {
            let sink = sink.as_ref().map(|(sink, target)| (sink, target));
            store_encoded(&store, sink, &session, &job).await
        }));
    }

    /// Handles a finished encoding: the recording is back, its chunks go to a store.
    pub(super) fn flush_done(&mut self, result: Option<FlushResult>) -> Option<EndReason> {
        self.flush_task = None;
        let Some(Some(encoded)) = result else {
            return self.transcript_lost();
        };
        self.transcript.as_mut()?.end_encode(encoded);
        self.start_store();
        self.retry_pending_output();
        None
    }

    /// Handles a finished store (`None`: its task was lost, taken as a failure); returns an
    /// end reason when a required transcript failed.
    pub(super) fn store_done(&mut self, result: Option<StoreResult>) -> Option<EndReason> {
        self.store_task = None;
        let result = result.unwrap_or(Err(TranscriptError::TaskLost));
        let t = self.transcript.as_mut()?;
        let stored = t.end_store(result.is_ok());
        match result {
            Ok(()) => {
                if let Some(stored) = stored {
                    self.transcript_stored = true;
                    self.records.snapshot.transcript =
                        Some(status_of(&stored, &transcript_ref(&self.info.name)));
                }
                self.start_store();
                self.retry_pending_output();
                None
            }
            Err(e) => {
                self.next_flush =
                    Instant::now() + self.inner.config.settings.transcript_flush_interval;
                self.store_failed = true;
                self.inner.config.metrics.transcript_failures.inc();
                let failure = StorageFailure::classify(&e, self.inner.store.namespace());
                warn!(session = %self.info.name, error = %e, retryable = failure.retryable(), "transcript flush failed");
                self.info
                    .transcript_required
                    .then_some(EndReason::TranscriptFailed(failure))
            }
        }
    }

    /// A flush never came back (its thread was lost, and the recording with it): a required
    /// transcript ends the session as a failed store does; otherwise the session goes on
    /// unrecorded, logged and counted, rather than stalling on a queue nothing drains.
    fn transcript_lost(&mut self) -> Option<EndReason> {
        self.transcript.as_ref()?;
        self.inner.config.metrics.transcript_failures.inc();
        warn!(session = %self.info.name, "a transcript flush was lost; nothing more is recorded");
        if self.info.transcript_required {
            return Some(EndReason::TranscriptFailed(StorageFailure::Rejected {
                http_status: None,
            }));
        }
        self.transcript = None;
        self.retry_pending_output();
        None
    }

    async fn serve(
        &mut self,
        attach_rx: &mut mpsc::Receiver<Box<Attachment>>,
        control_rx: &mut mpsc::Receiver<Control>,
        conflict_rx: &mut mpsc::Receiver<Conflict>,
        watch: &mut Subscription,
    ) -> EndReason {
        loop {
            self.report_output();
            let deadline = self.next_deadline();
            let out = self.out.clone();
            let can_forward = out.is_some() && (self.window.can_send() || self.warning_owed);
            let can_read = self.can_read_output();
            let has_pending_input = !self.pending_input.is_empty();
            let events_wait = self.pending_input.is_full() || self.input_held_by_transcript();
            tokio::select! {
                biased;
                Some(Control::End(reason)) = control_rx.recv() => return *reason,
                Some(attachment) = attach_rx.recv() => self.attach(*attachment),
                reason = self.input.closed(), if self.channel_end.is_none() => {
                    self.exit_code = reason.exit_code;
                    if self.output_done {
                        return end_from_channel(&reason);
                    }
                    self.take_forced_pending();
                    self.channel_end = Some(reason);
                }
                () = self.input.ending(), if !self.channel_ending => {
                    self.channel_ending = true;
                    self.take_forced_pending();
                }
                ev = recv_opt(self.events.as_mut()), if !events_wait => match ev.map(|e| *e) {
                    Some(ClientEvent::Input(bytes)) => self.on_input(bytes),
                    Some(ClientEvent::Resize { cols, rows }) => {
                        if let Some(size) = self.size.request(cols, rows, Instant::now()) {
                            self.apply_size(size);
                        }
                    }
                    Some(ClientEvent::Close) => return EndReason::UserClosed,
                    Some(ClientEvent::Ack(bytes)) => match self.window.ack(bytes) {
                        Ok(()) => self.retry_pending_output(),
                        Err(e) => {
                            self.send_control(ServerFrame::error(ErrorCode::BadRequest, e.to_string(), false));
                        }
                    },
                    Some(ClientEvent::BadFrame(message)) => {
                        self.send_control(ServerFrame::error(ErrorCode::BadRequest, message, false));
                    }
                    None => self.detach(),
                },
                room = self.input.input_room(), if has_pending_input => match room {
                    Ok(room) => {
                        self.pending_input.send_front(|b| room.send(b));
                        self.drain_input();
                    }
                    Err(_) => self.pending_input.clear(),
                },
                permit = reserve_opt(out.as_ref()), if can_forward => match permit {
                    Some(permit) => {
                        if let Some(permit) = self.pay_warning(permit)
                            && self.window.can_send()
                        {
                            self.forward(permit);
                        }
                        // The queue's other slots in the same turn, as far as the browser's
                        // credit goes: the writer takes them in one socket write.
                        while self.window.can_send() {
                            let Some(Ok(permit)) =
                                out.as_ref().map(mpsc::Sender::try_reserve)
                            else {
                                break;
                            };
                            self.forward(permit);
                        }
                        self.retry_pending_output();
                    }
                    None => self.detach(),
                },
                chunk = self.output.recv(), if can_read => match chunk {
                    Some(chunk) => {
                        let ended = self.channel_over();
                        self.take_output(chunk, ended);
                    }
                    None => {
                        self.output_done = true;
                        if let Some(reason) = &self.channel_end {
                            return end_from_channel(reason);
                        }
                    }
                },
                Some(news) = watch.next() => match news {
                    SessionNews::Changed(s) => {
                        if let Some(reason) = takeover(&s) {
                            return reason;
                        }
                    }
                    SessionNews::Deleted => return EndReason::AdminTerminated,
                },
                Some(fresh) = conflict_rx.recv() => match fresh {
                    Some(s) => {
                        if let Some(reason) = takeover(&s) {
                            return reason;
                        }
                    }
                    None => return EndReason::AdminTerminated,
                },
                result = join_opt(self.flush_task.as_mut()) => {
                    if let Some(reason) = self.flush_done(result) {
                        return reason;
                    }
                }
                result = join_opt(self.store_task.as_mut()) => {
                    if let Some(reason) = self.store_done(result) {
                        return reason;
                    }
                }
                () = sleep_until(deadline.into()) => {
                    if let Some(reason) = self.on_timer() {
                        return reason;
                    }
                }
            }
        }
    }

    /// Sends the next frame of output into a slot of the browser's queue.
    fn forward(&mut self, permit: mpsc::Permit<'_, Outbound>) {
        let frame = self.window.next_frame();
        permit.send(Outbound::Binary(HeldFrame::new(
            frame,
            &self.inner.config.metrics.output_held,
        )));
    }

    fn on_timer(&mut self) -> Option<EndReason> {
        let now = Instant::now();
        if let Some(size) = self.size.take_due(now) {
            self.apply_size(size);
        }
        if now >= self.deadline.at {
            return Some(match self.deadline.cause {
                DeadlineCause::MaxDuration => EndReason::MaxDuration,
                DeadlineCause::CredentialsEnd => EndReason::CredentialsEnding,
            });
        }
        match self.idle.poll(now) {
            Some(IdleEvent::Cut) => return Some(EndReason::IdleTimeout),
            Some(IdleEvent::Warn { .. }) => self.warning_owed = true,
            None => {}
        }
        if let Some(since) = self.detached_since
            && now >= since + self.inner.config.settings.reattach_grace
        {
            return Some(EndReason::ClientDisconnected);
        }
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + self.inner.config.settings.heartbeat_interval;
            self.push_status();
        }
        if self.transcript.is_some() && self.flush_task.is_none() {
            if now >= self.next_flush {
                self.next_flush = now + self.inner.config.settings.transcript_flush_interval;
                // A failed store is tried again at the interval, with whatever came since.
                self.store_failed = false;
                if !self
                    .transcript
                    .as_ref()
                    .is_some_and(|t| t.store_behind(self.pending_bound()))
                {
                    self.start_flush(true);
                }
                self.start_store();
            } else if self.flush_due_now() {
                self.start_flush(false);
            }
        }
        None
    }
}

async fn reserve_opt(out: Option<&mpsc::Sender<Outbound>>) -> Option<mpsc::Permit<'_, Outbound>> {
    match out {
        Some(out) => out.reserve().await.ok(),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    /// The session's task lives as long as the session: besides the driver (2.3 KB) and its
    /// loop, it reserves no room for what runs only at its start (the started session, which
    /// is borrowed while the driver is made; the subscription to the session watch).
    #[test]
    fn a_sessions_task_reserves_little_beyond_its_driver() {
        fn future_size<A, B, C, D, E, F: std::future::Future>(
            _: &impl FnOnce(A, B, C, D, E) -> F,
        ) -> usize {
            std::mem::size_of::<F>()
        }
        let bytes = future_size(&super::run);
        // Unoptimised build (this test): 5,768 B with the driver made inside the task and
        // the subscription inline; 3,760 B now, of which the driver is 2,296 B.
        println!(
            "session task: {bytes} B, driver {} B",
            std::mem::size_of::<super::Driver>()
        );
        assert!(bytes <= 4 * 1024, "the session's task reserves {bytes} B");
    }
}
