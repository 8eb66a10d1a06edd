//! The in-process SSM agent behind one session: a shell in a real PTY (or the firehose),
//! speaking the data channel as the official agent does (fact sheet §9) through the pure
//! machines of `crate::ssm`.

use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

pub use super::agent_messages::{AgentEvent, Outbound};
use super::handshake::{AgentHandshake, Inbound};
use super::output::{complete_utf8_prefix, fill_firehose};
use super::state::{SessionEntry, Shared, lock};
use crate::ssm::frame::Frame;
use crate::ssm::message::{MessageType, PayloadType, Role};
use crate::ssm::payload::{Acknowledgement, ChannelClosed, TerminalSize, exit_code_payload};
use crate::ssm::receive::{ReceiveConfig, ReceiveWindow};
use crate::ssm::retransmit::{RetransmitConfig, RetransmitQueue};
use crate::ssm::rto::RtoConfig;

/// Largest output payload the agent sends.
pub const CHUNK: usize = 1024;
/// How long the agent waits for its output to be acknowledged after the shell exits.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

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

fn agent_rto() -> RetransmitConfig {
    RetransmitConfig {
        max_messages: 4096,
        max_bytes: 8 * 1024 * 1024,
        rto: RtoConfig {
            max_rto: Duration::from_secs(1),
            ..RtoConfig::default()
        },
    }
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
        let mut cmd = pty_process::Command::new(shell)
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
        tokio::spawn(pty_writer(write, input_rx));
        Program::Shell {
            pty: input_tx,
            _kill: kill_tx,
        }
    };
    let mut queue = RetransmitQueue::new(Role::Agent, agent_rto());
    // With a KMS key in the account's preferences the agent handshakes before the shell runs.
    let kms_key = lock(&shared.preferences).kms_key_id.clone();
    let handshake = match &kms_key {
        Some(key) => {
            let (handshake, request) =
                AgentHandshake::start(key, &session.id, &session.target, Instant::now())
                    .map_err(std::io::Error::other)?;
            let _ = queue.enqueue(PayloadType::HandshakeRequest, request);
            Some(handshake)
        }
        None => None,
    };
    let agent = Agent {
        shared,
        session,
        program,
        handshake,
        queue,
        window: ReceiveWindow::new(ReceiveConfig {
            max_messages: 10_000,
            max_bytes: 16 * 1024 * 1024,
        }),
        out: None,
        exit: None,
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
    /// The KMS handshake and cipher, when the account's preferences name a key.
    handshake: Option<AgentHandshake>,
    queue: RetransmitQueue,
    window: ReceiveWindow,
    out: Option<(u64, mpsc::Sender<Outbound>)>,
    /// Set once the program ended: (exit code, when).
    exit: Option<(i32, Instant)>,
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
        self.queue.set_paused(true);
        let mut source_open = true;
        loop {
            let now = Instant::now();
            let deadline = self
                .queue
                .next_deadline(now)
                .map(tokio::time::Instant::from_std);
            let drain_deadline = self
                .exit
                .map(|(_, at)| tokio::time::Instant::from_std(at + DRAIN_LIMIT));
            let handshake_deadline = self
                .handshake
                .as_ref()
                .and_then(AgentHandshake::deadline)
                .map(tokio::time::Instant::from_std);
            let can_read = source_open
                && self
                    .handshake
                    .as_ref()
                    .is_none_or(AgentHandshake::is_complete)
                && self.exit.is_none()
                && !self.queue.is_paused()
                && self.queue.has_room(CHUNK);
            let step = tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => self.on_event(ev).await,
                    None => Step::Stop,
                },
                src = source.recv(), if can_read => match src {
                    Some(SourceEvent::Data(data)) => {
                        let data = self.seal(PayloadType::Output, data);
                        let _ = self.queue.enqueue(PayloadType::Output, data);
                        Step::Continue
                    }
                    Some(SourceEvent::Exited(code)) => {
                        lock(&self.session.state).exit_code = Some(code);
                        let payload = self.seal(PayloadType::ExitCode, exit_code_payload(code));
                        let _ = self.queue.enqueue(PayloadType::ExitCode, payload);
                        self.exit = Some((code, Instant::now()));
                        Step::Continue
                    }
                    None => { source_open = false; Step::Continue }
                },
                () = sleep_until_opt(deadline) => Step::Continue,
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
            self.transmit().await;
            if self.exit.is_some() && self.queue.is_empty() {
                self.finish("").await;
                break;
            }
        }
        lock(&self.session.state).agent = None;
    }

    async fn transmit(&mut self) {
        let Some((_, out)) = &self.out else { return };
        let out = out.clone();
        while let Some(wire) = self.queue.poll_transmit(Instant::now()) {
            if out.send(Outbound::Stream(wire)).await.is_err() {
                break;
            }
        }
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
                self.out = Some((conn, out));
                self.queue.set_paused(false);
                self.queue.rewind();
                Step::Continue
            }
            AgentEvent::Detached { conn } => {
                if self.out.as_ref().is_some_and(|(c, _)| *c == conn) {
                    self.out = None;
                    self.queue.set_paused(true);
                }
                Step::Continue
            }
            AgentEvent::Terminate => {
                // Replacing the program drops the shell's kill switch.
                self.program = Program::Ended;
                self.finish("").await
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
                let ack = Acknowledgement::of(&frame).to_frame();
                let arrival = self.window.offer(frame);
                if arrival.should_ack() {
                    while let Some(ready) = self.window.pop_ready() {
                        self.process_input(ready).await;
                    }
                    self.send_ack(ack).await;
                }
            }
            MessageType::Acknowledge => {
                if let Ok(ack) = Acknowledgement::from_payload(&frame.payload) {
                    self.queue
                        .acknowledge(ack.acknowledged_message_sequence_number, Instant::now());
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
                    let _ = self.queue.enqueue(payload_type, payload);
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

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
