//! The in-process SSM agent behind one session: a shell in a real PTY (or the firehose),
//! speaking the data channel as the official agent does (fact sheet §9): its sending half is
//! [`super::agent_outgoing`], its receiving half the pure window of `crate::ssm`.

use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

pub use super::agent_messages::{AgentEvent, Outbound};
use super::agent_outgoing::{AgentOutgoing, RESEND_TICK};
use super::handshake::{AgentHandshake, Inbound};
use super::output::{complete_utf8_prefix, fill_firehose};
use super::state::{SessionEntry, Shared, lock};
use crate::ssm::frame::Frame;
use crate::ssm::message::{MessageType, PayloadType};
use crate::ssm::payload::{Acknowledgement, ChannelClosed, TerminalSize};
use crate::ssm::receive::{ReceiveConfig, ReceiveWindow};
use crate::ssm::service_close::TERMINATED_TEXT;

/// Largest output payload the agent sends.
pub const CHUNK: usize = 1024;
/// How long the agent waits for its output to be acknowledged after the shell exits
/// (`PrepareToCloseChannel` in `agent/session/datachannel/datachannel.go`); what is still
/// unacknowledged then is lost.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// The send window of the `fastRecovery` knob (not AWS).
const FAST_RECOVERY_WINDOW: usize = 4096;

/// What goes into the shell's PTY, in arrival order.
enum PtyInput {
    Bytes(Bytes),
    Resize { rows: u16, cols: u16 },
}

async fn pty_writer(
    mut pty: pty_process::OwnedWritePty,
    mut rx: mpsc::UnboundedReceiver<PtyInput>,
) {
    while let Some(input) = rx.recv().await {
        match input {
            PtyInput::Bytes(bytes) => {
                if pty.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            PtyInput::Resize { rows, cols } => {
                let _ = pty.resize(pty_process::Size::new(rows, cols));
            }
        }
    }
}

enum SourceEvent {
    Data(Bytes),
    Exited(i32),
}

/// What the agent runs.
enum Program {
    Shell {
        /// Keystrokes and resizes, written by their own task so a shell that is not reading
        /// its input never blocks the agent's handling of acks.
        pty: mpsc::UnboundedSender<PtyInput>,
        /// Dropping or firing it kills the shell.
        _kill: tokio::sync::oneshot::Sender<()>,
    },
    Firehose,
    /// Terminated: nothing runs any more.
    Ended,
}

/// Starts the agent task of `session`; returns its event sender.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    session: Arc<SessionEntry>,
) -> std::io::Result<mpsc::Sender<AgentEvent>> {
    let (events_tx, events_rx) = mpsc::channel(1024);
    let (source_tx, source_rx) = mpsc::channel(1);
    let start_delay = Duration::from_millis(shared.config.agent_start_delay_ms);
    let slow = lock(&session.knobs).slow_agent_ms;
    let program = if session.document == super::ssm_api::FIREHOSE_DOCUMENT {
        let total = session
            .parameters
            .get("bytes")
            .and_then(|v| v.first())
            .and_then(|b| b.parse().ok())
            .unwrap_or(1024 * 1024);
        tokio::spawn(firehose(total, source_tx, Duration::from_millis(slow)));
        Program::Firehose
    } else {
        let env = lock(&shared.instances)
            .get(&session.target)
            .map(|i| i.env.clone())
            .unwrap_or_default();
        let (pty, pts) = pty_process::open().map_err(std::io::Error::other)?;
        pty.resize(pty_process::Size::new(24, 80))
            .map_err(std::io::Error::other)?;
        let shell = if std::path::Path::new("/bin/bash").exists() {
            "/bin/bash"
        } else {
            "/bin/sh"
        };
        // A shell on a node starts with Ctrl-C and Ctrl-\ at their default actions (the agent
        // runs as a service). A simulator started in the background of a shell without job
        // control inherits SIGINT and SIGQUIT ignored, and every shell it spawned would too:
        // Ctrl-C would never stop a program. GNU env resets them (`--default-signal`).
        let mut cmd = match default_signals_wrapper() {
            Some(env) => pty_process::Command::new(env)
                .arg("--default-signal=INT,QUIT")
                .arg(shell),
            None => pty_process::Command::new(shell),
        }
        .env("TERM", "xterm-256color")
        .env("PS1", "$ ")
        .kill_on_drop(true);
        if shell.ends_with("bash") {
            cmd = cmd.arg("--noprofile").arg("--norc");
        }
        if std::env::var_os("LANG").is_none() {
            cmd = cmd.env("LANG", "C.UTF-8");
        }
        cmd = cmd.envs(env);
        let child = cmd.spawn(pts).map_err(std::io::Error::other)?;
        let (read, write) = pty.into_split();
        let (kill_tx, kill_rx) = tokio::sync::oneshot::channel();
        let pace = Duration::from_millis(slow);
        tokio::spawn(shell_reader(
            read,
            child,
            kill_rx,
            source_tx,
            start_delay,
            pace,
        ));
        let (input_tx, input_rx) = mpsc::unbounded_channel();
        // The shell plugin types the document's shell profile into the new shell
        // (`runShellProfile`; see `super::documents`).
        if let Some(profile) = super::documents::known(&session.document)
            .and_then(|doc| super::documents::typed_profile(&doc, &session.parameters))
        {
            let _ = input_tx.send(PtyInput::Bytes(Bytes::from(profile)));
        }
        tokio::spawn(pty_writer(write, input_rx));
        Program::Shell {
            pty: input_tx,
            _kill: kill_tx,
        }
    };
    let fast_recovery = lock(&session.knobs).fast_recovery;
    let mut outgoing = AgentOutgoing::default();
    // With a KMS key in the account's preferences the agent handshakes before the shell runs;
    // its request waits in the outgoing buffer until publication starts (the resend loop).
    let kms_key = lock(&shared.preferences).kms_key_id.clone();
    let handshake = match &kms_key {
        Some(key) => {
            let (handshake, request) =
                AgentHandshake::start(key, &session.id, &session.target, Instant::now())
                    .map_err(std::io::Error::other)?;
            let _ = outgoing.push(PayloadType::HandshakeRequest, request, Instant::now());
            Some(handshake)
        }
        None => None,
    };
    let agent = Agent {
        shared,
        session,
        program,
        outgoing,
        paused: true,
        fast_recovery,
        handshake,
        window: ReceiveWindow::new(ReceiveConfig {
            max_messages: 10_000,
            max_bytes: 16 * 1024 * 1024,
            // `IncomingMessageBufferCapacity` of the agent.
            max_early_messages: 100_000,
            max_early_bytes: 16 * 1024 * 1024,
        }),
        out: None,
        exit: None,
        started: Instant::now(),
        last_input: Instant::now(),
    };
    tokio::spawn(agent.run(events_rx, source_rx));
    Ok(events_tx)
}

async fn firehose(total: u64, tx: mpsc::Sender<SourceEvent>, pace: Duration) {
    let mut offset = 0u64;
    while offset < total {
        let len = usize::try_from((total - offset).min(CHUNK as u64)).unwrap_or(CHUNK);
        let mut buf = vec![0u8; len];
        fill_firehose(offset, &mut buf);
        if tx.send(SourceEvent::Data(Bytes::from(buf))).await.is_err() {
            return;
        }
        offset += len as u64;
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
    }
    let _ = tx.send(SourceEvent::Exited(0)).await;
}

async fn shell_reader(
    mut pty: pty_process::OwnedReadPty,
    mut child: tokio::process::Child,
    mut kill: tokio::sync::oneshot::Receiver<()>,
    tx: mpsc::Sender<SourceEvent>,
    start_delay: Duration,
    slow: Duration,
) {
    // The official agent waits a second after starting the shell before reading output.
    tokio::time::sleep(start_delay).await;
    let mut held: Vec<u8> = Vec::with_capacity(4);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let room = CHUNK - held.len();
        let read = tokio::select! {
            r = pty.read(&mut buf[..room]) => r,
            _ = &mut kill => {
                let _ = child.start_kill();
                break;
            }
        };
        let n = match read {
            Ok(0) | Err(_) => break, // EOF, or EIO once the shell side closed
            Ok(n) => n,
        };
        let mut chunk = std::mem::take(&mut held);
        chunk.extend_from_slice(&buf[..n]);
        let cut = complete_utf8_prefix(&chunk);
        held = chunk.split_off(cut);
        if !chunk.is_empty()
            && tx
                .send(SourceEvent::Data(Bytes::from(chunk)))
                .await
                .is_err()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1) + slow).await;
    }
    if !held.is_empty() {
        let _ = tx.send(SourceEvent::Data(Bytes::from(held))).await;
    }
    let code = match child.wait().await {
        Ok(status) => status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(1),
        Err(_) => 1,
    };
    let _ = tx.send(SourceEvent::Exited(code)).await;
}

struct Agent {
    shared: Arc<Shared>,
    session: Arc<SessionEntry>,
    program: Program,
    outgoing: AgentOutgoing,
    /// Publication paused: no client socket is attached (the service sends
    /// `pause_publication`). Nothing is sent or resent and the shell is not read.
    paused: bool,
    /// The `fastRecovery` knob (not AWS): a 4096-message send window, a burst on reattach,
    /// and the next overdue message resent as soon as an ack arrives.
    fast_recovery: bool,
    /// The KMS handshake and cipher, when the account's preferences name a key.
    handshake: Option<AgentHandshake>,
    window: ReceiveWindow,
    out: Option<(u64, mpsc::Sender<Outbound>)>,
    /// When the program ended.
    exit: Option<Instant>,
    /// When the agent started (the service's maximum-duration clock).
    started: Instant,
    /// Last input from the client (the service's idle clock).
    last_input: Instant,
}

enum Step {
    Continue,
    Stop,
}

impl Agent {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<AgentEvent>,
        mut source: mpsc::Receiver<SourceEvent>,
    ) {
        let mut source_open = true;
        let mut resend_tick = tokio::time::interval(RESEND_TICK);
        resend_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let drain_deadline = self
                .exit
                .map(|at| tokio::time::Instant::from_std(at + DRAIN_LIMIT));
            let handshake_deadline = self
                .handshake
                .as_ref()
                .and_then(AgentHandshake::deadline)
                .map(tokio::time::Instant::from_std);
            // The agent reads the shell only while publication runs (`IsActive`), and keeps
            // reading however many messages await an ack: it has no send window.
            let can_read = source_open
                && self
                    .handshake
                    .as_ref()
                    .is_none_or(AgentHandshake::is_complete)
                && self.exit.is_none()
                && !self.paused
                && (!self.fast_recovery || self.outgoing.len() < FAST_RECOVERY_WINDOW);
            // The official agent reads the shell and writes the socket in one goroutine and
            // handles input in another (`InputStreamMessageHandler` in
            // `agent/session/shell/shell.go`, the incoming-message handler of
            // `agent/session/datachannel/datachannel.go`): a socket write that waits on a slow
            // client never holds up the person's input. So the shell is read only when the
            // socket's queue has room, and input is handled meanwhile.
            let wire_full = self
                .out
                .as_ref()
                .is_some_and(|(_, out)| out.capacity() == 0);
            let step = tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => self.on_event(ev).await,
                    None => Step::Stop,
                },
                () = wire_room(self.out.as_ref().map(|(_, out)| out)), if can_read && wire_full => Step::Continue,
                src = source.recv(), if can_read && !wire_full => match src {
                    Some(SourceEvent::Data(data)) => {
                        let data = self.seal(PayloadType::Output, data);
                        self.send_new(PayloadType::Output, data).await;
                        Step::Continue
                    }
                    Some(SourceEvent::Exited(code)) => {
                        // The PTY path never sends EXIT_CODE (`executeCommandsWithPty` in
                        // `agent/session/shell/shell.go`): the status stays in the simulator.
                        lock(&self.session.state).exit_code = Some(code);
                        self.exit = Some(Instant::now());
                        Step::Continue
                    }
                    None => { source_open = false; Step::Continue }
                },
                _ = resend_tick.tick() => {
                    self.resend_oldest().await;
                    self.service_limits().await
                }
                () = sleep_until_opt(drain_deadline) => self.finish("").await,
                () = sleep_until_opt(handshake_deadline) => {
                    if let Some(h) = self.handshake.as_mut() {
                        h.on_timeout();
                    }
                    Step::Continue
                }
                () = self.shared.shutdown.cancelled() => Step::Stop,
            };
            if matches!(step, Step::Stop) {
                break;
            }
            if let Some(reason) = self.handshake.as_ref().and_then(AgentHandshake::failure) {
                let reason = reason.to_string();
                self.program = Program::Ended;
                self.finish(&reason).await;
                break;
            }
            if self.exit.is_some() && self.outgoing.is_empty() {
                self.finish("").await;
                break;
            }
        }
        lock(&self.session.state).agent = None;
    }

    /// Numbers and keeps a new output message and puts it on the wire unless paused.
    async fn send_new(&mut self, payload_type: PayloadType, data: Bytes) {
        let Ok(wire) = self.outgoing.push(payload_type, data, Instant::now()) else {
            return;
        };
        self.counters();
        if !self.paused {
            self.put_on_wire(wire).await;
        }
    }

    /// One tick of the resend loop: the oldest unacknowledged message, if overdue.
    async fn resend_oldest(&mut self) {
        if self.paused {
            return;
        }
        if let Some(wire) = self.outgoing.resend_due(Instant::now()) {
            self.counters();
            self.put_on_wire(wire).await;
        }
    }

    /// Session Manager's own idle timeout and maximum duration (service-side; checked on the
    /// resend tick): `channel_closed` with AWS's text, and the shell is killed.
    async fn service_limits(&mut self) -> Step {
        let limits = *lock(&self.session.limits);
        match limits.due(Instant::now(), self.started, self.last_input) {
            Some(close) => {
                self.program = Program::Ended;
                self.finish(close.text()).await
            }
            None => Step::Continue,
        }
    }

    /// A send into a socket that is gone is lost, as on the wire; the message stays kept.
    async fn put_on_wire(&self, wire: Bytes) {
        if let Some((_, out)) = &self.out {
            let _ = out.send(Outbound::Stream(wire)).await;
        }
    }

    /// Publishes the resend counters for tests and benchmarks.
    fn counters(&self) {
        let mut state = lock(&self.session.state);
        state.agent_resends = self.outgoing.resends;
        state.agent_not_kept = self.outgoing.not_kept;
    }

    /// The program ended and its output drained (or the drain limit passed): the service
    /// closes the client's channel (the agent's `Terminating` state is swallowed here).
    async fn finish(&mut self, reason: &str) -> Step {
        lock(&self.session.state).terminated = true;
        if let Some((_, out)) = self.out.take()
            && let Ok(wire) = ChannelClosed::frame(&self.session.id, reason).encode()
        {
            let _ = out.send(Outbound::Control(wire)).await;
            let _ = out.send(Outbound::Close).await;
        }
        Step::Stop
    }

    async fn on_event(&mut self, ev: AgentEvent) -> Step {
        match ev {
            AgentEvent::Attached { conn, out } => {
                // Publication starts again; nothing is rewound: what was lost in the old
                // socket comes back only through the resend loop, oldest first.
                self.out = Some((conn, out));
                self.paused = false;
                if self.fast_recovery {
                    for wire in self.outgoing.rewind(Instant::now()) {
                        self.put_on_wire(wire).await;
                    }
                }
                Step::Continue
            }
            AgentEvent::Detached { conn } => {
                if self.out.as_ref().is_some_and(|(c, _)| *c == conn) {
                    self.out = None;
                    self.paused = true;
                }
                Step::Continue
            }
            AgentEvent::Terminate => {
                // Replacing the program drops the shell's kill switch.
                self.program = Program::Ended;
                self.finish(TERMINATED_TEXT).await
            }
            AgentEvent::Inbound(bytes) => {
                self.on_frame(&bytes).await;
                Step::Continue
            }
        }
    }

    async fn on_frame(&mut self, bytes: &[u8]) {
        // Undecodable frames are dropped without an ack; the client retransmits.
        let Ok(frame) = Frame::decode(bytes) else {
            return;
        };
        match frame.message_type {
            MessageType::InputStreamData => {
                self.last_input = Instant::now();
                // The agent processes the expected message before acking it; a size it cannot
                // parse fails processing, so it is neither acknowledged nor taken, and input
                // stays stuck behind it (`InputStreamMessageHandler` in shell_unix.go,
                // `handleStreamDataMessage` in datachannel.go).
                let expected_now = frame.sequence_number == self.window.next_expected()
                    && self.window.peek_ready().is_none();
                if expected_now && is_malformed_size(&frame) {
                    return;
                }
                let ack = Acknowledgement::of(&frame).to_frame();
                let arrival = self.window.offer(frame);
                if arrival.should_ack() {
                    // A malformed size that arrived early was acked like any early message,
                    // and delivery stops at it for good, as in the agent.
                    while self
                        .window
                        .peek_ready()
                        .is_some_and(|f| !is_malformed_size(f))
                    {
                        if let Some(ready) = self.window.pop_ready() {
                            self.process_input(ready).await;
                        }
                    }
                    self.send_ack(ack).await;
                }
            }
            MessageType::Acknowledge => {
                if let Ok(ack) = Acknowledgement::from_payload(&frame.payload) {
                    self.outgoing
                        .acknowledge(ack.acknowledged_message_sequence_number, Instant::now());
                    if self.fast_recovery {
                        // Not AWS: the next overdue message goes at once, not on the next tick.
                        self.resend_oldest().await;
                    }
                }
            }
            _ => {}
        }
    }

    /// Encrypts an outgoing payload once the KMS handshake set a cipher up.
    fn seal(&self, payload_type: PayloadType, payload: Bytes) -> Bytes {
        match &self.handshake {
            Some(h) => h.seal(payload_type, payload),
            None => payload,
        }
    }

    async fn process_input(&mut self, mut frame: Frame) {
        if let Some(h) = &mut self.handshake {
            let inbound = h.on_inbound(
                frame.payload_type,
                &frame.payload,
                &self.shared.kms,
                Instant::now(),
            );
            match inbound {
                Inbound::Deliver(payload) => frame.payload = payload,
                Inbound::Reply(payload_type, payload) => {
                    self.send_new(payload_type, payload).await;
                    return;
                }
                Inbound::Ignore => return,
            }
        }
        let Program::Shell { pty, .. } = &mut self.program else {
            return;
        };
        match frame.payload_type {
            PayloadType::Output => {
                let _ = pty.send(PtyInput::Bytes(frame.payload));
            }
            PayloadType::Size => {
                if let Ok(size) = TerminalSize::from_payload(&frame.payload) {
                    let rows = u16::try_from(size.rows).unwrap_or(u16::MAX);
                    let cols = u16::try_from(size.cols).unwrap_or(u16::MAX);
                    let _ = pty.send(PtyInput::Resize { rows, cols });
                }
            }
            _ => {}
        }
    }

    async fn send_ack(&self, ack: Frame) {
        let Some((_, out)) = &self.out else { return };
        let Ok(wire) = ack.encode() else { return };
        let delay = lock(&self.session.knobs).ack_delay_ms;
        if delay == 0 {
            let _ = out.send(Outbound::Control(wire)).await;
        } else {
            let out = out.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                let _ = out.send(Outbound::Control(wire)).await;
            });
        }
    }
}

/// Whether `frame` is a size message the official agent fails to read: Go's `json.Unmarshal`
/// into `{Cols, Rows uint32}` (keys matched without regard to case, unknown keys and missing
/// ones allowed) refuses anything but an object or `null`, and a field that is not a whole
/// number from 0 to 2³²−1 (or `null`).
fn is_malformed_size(frame: &Frame) -> bool {
    if frame.payload_type != PayloadType::Size {
        return false;
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&frame.payload) else {
        return true;
    };
    let object = match value {
        serde_json::Value::Null => return false,
        serde_json::Value::Object(object) => object,
        _ => return true,
    };
    object.iter().any(|(key, v)| {
        let field = key.eq_ignore_ascii_case("cols") || key.eq_ignore_ascii_case("rows");
        field && !v.is_null() && v.as_u64().is_none_or(|n| n > u64::from(u32::MAX))
    })
}

/// `env`, when it can reset signal dispositions for the program it runs (GNU coreutils 8.31
/// or later); probed once.
fn default_signals_wrapper() -> Option<&'static str> {
    static PROBE: std::sync::OnceLock<Option<&'static str>> = std::sync::OnceLock::new();
    *PROBE.get_or_init(|| {
        const ENV: &str = "/usr/bin/env";
        std::process::Command::new(ENV)
            .args(["--default-signal=INT,QUIT", "true"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
            .then_some(ENV)
    })
}

/// Waits until the socket's queue has room for one more message (forever without a socket).
async fn wire_room(wire: Option<&mpsc::Sender<Outbound>>) {
    match wire {
        Some(out) => {
            // The permit is dropped at once: the room stays for the send that follows.
            let _ = out.reserve().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use super::*;
    use crate::ssm::message::Role;

    fn size(payload: &'static str) -> Frame {
        Frame::stream(
            Role::Client,
            0,
            PayloadType::Size,
            Bytes::from_static(payload.as_bytes()),
        )
    }

    #[test]
    fn size_messages_are_malformed_where_go_would_refuse_them() {
        for ok in [
            r#"{"cols":80,"rows":24}"#,
            r#"{"Cols":80,"ROWS":24,"extra":"x"}"#,
            r#"{"cols":80}"#,
            r#"{}"#,
            "null",
            r#"{"cols":null,"rows":4294967295}"#,
        ] {
            assert!(!is_malformed_size(&size(ok)), "{ok}");
        }
        for bad in [
            "",
            "not json",
            r#"[80,24]"#,
            r#"{"cols":-1,"rows":24}"#,
            r#"{"cols":80.5,"rows":24}"#,
            r#"{"cols":"80","rows":24}"#,
            r#"{"cols":80,"rows":4294967296}"#,
        ] {
            assert!(is_malformed_size(&size(bad)), "{bad}");
        }
        let output = Frame::stream(
            Role::Client,
            0,
            PayloadType::Output,
            Bytes::from_static(b"["),
        );
        assert!(!is_malformed_size(&output), "only size messages are parsed");
    }
}
