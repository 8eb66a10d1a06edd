//! The `ssmmessages` service side of the data channel (MGS): accepts the client's websocket
//! without SigV4, checks the token of the first text frame, attaches the socket to the
//! session's agent, and applies the fault knobs to what flows towards the client.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::agent;
use super::agent_messages::{AgentEvent, Outbound};
use super::faults::{FaultDice, FaultKnobs, FrameFate};
use super::lifetimes::{recycle_due, token_usable};
use super::state::{SessionEntry, Shared, lock};
use crate::ssm::frame::Frame;
use crate::ssm::message::MessageType;
use crate::ssm::payload::{ChannelClosed, OpenDataChannel};
use crate::ssm::service_close::TERMINATED_TEXT;

/// Offset of PayloadDigest in a frame header (fact sheet §3).
const DIGEST_OFFSET: usize = 80;
/// How long a client has to send its open frame.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

static CONNECTIONS: AtomicU64 = AtomicU64::new(1);

/// Routes of the data-channel endpoint.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/data-channel/{session_id}", get(upgrade))
        .with_state(shared)
}

async fn upgrade(
    State(shared): State<Arc<Shared>>,
    Path(session_id): Path<String>,
    ws: WebSocketUpgrade,
) -> Response {
    ws.on_upgrade(move |socket| serve(shared, session_id, socket))
}

async fn refuse(mut socket: WebSocket, reason: &str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: 1008,
            reason: reason.into(),
        })))
        .await;
}

/// Reads the open frame and checks its token; returns the session on success.
async fn open(
    shared: &Shared,
    session_id: &str,
    socket: &mut WebSocket,
) -> Result<Arc<SessionEntry>, &'static str> {
    let first = tokio::time::timeout(OPEN_TIMEOUT, socket.next())
        .await
        .map_err(|_| "no open frame")?;
    let text = match first {
        Some(Ok(Message::Text(t))) => t.to_string(),
        Some(Ok(Message::Binary(b))) => String::from_utf8_lossy(&b).into_owned(),
        _ => return Err("no open frame"),
    };
    let open = OpenDataChannel::from_json(&text).map_err(|_| "malformed open frame")?;
    let session = shared.session(session_id).ok_or("session does not exist")?;
    let state = lock(&session.state);
    if state.terminated {
        return Err("session is terminated");
    }
    if open.token_value != state.token {
        return Err("invalid token");
    }
    // A token opens a connection only for a short while after StartSession or ResumeSession.
    let lifetime = shared.config.data_channel.stream_token();
    if !token_usable(state.token_issued, std::time::Instant::now(), lifetime) {
        return Err("token expired");
    }
    drop(state);
    Ok(session)
}

async fn serve(shared: Arc<Shared>, session_id: String, mut socket: WebSocket) {
    let session = match open(&shared, &session_id, &mut socket).await {
        Ok(s) => s,
        Err(reason) => return refuse(socket, reason).await,
    };
    let offline = lock(&session.knobs).agent_offline;
    let agent = {
        let mut state = lock(&session.state);
        match &state.agent {
            Some(a) => Some(a.clone()),
            None if offline => None,
            None => match agent::spawn(shared.clone(), session.clone()) {
                Ok(a) => {
                    state.agent = Some(a.clone());
                    Some(a)
                }
                Err(e) => {
                    tracing::warn!(session = %session.id, error = %e, "agent could not start its shell");
                    None
                }
            },
        }
    };
    let conn = CONNECTIONS.fetch_add(1, Ordering::Relaxed);
    let opened = std::time::Instant::now();
    let (mut sink, mut stream) = socket.split();
    // The service announces publication to the client after the open frame (observed by an
    // independent client; the official plugin ignores it).
    if let Ok(wire) = Frame::control(MessageType::StartPublication, Bytes::new()).encode() {
        let _ = sink.send(Message::Binary(wire)).await;
    }
    let (out_tx, out_rx) = mpsc::channel::<Outbound>(256);
    let writer = tokio::spawn(write_loop(
        session.clone(),
        shared.config.seed,
        sink,
        out_rx,
    ));
    if let Some(agent) = &agent {
        let _ = agent
            .send(AgentEvent::Attached {
                conn,
                out: out_tx.clone(),
            })
            .await;
    }
    // The service's own close of an old connection (the hourly recycle) goes through it.
    let mut recycle_out = Some(out_tx.clone());
    // Kept only when no agent holds the sender, so the relay can still close the channel.
    let mut orphan_out = agent.is_none().then_some(out_tx);
    let mut watch = tokio::time::interval(Duration::from_millis(200));
    let mut recycle_clock = tokio::time::interval(RECYCLE_CHECK);
    // Its own dice, so the client's traffic does not shift the output frames' fates.
    let mut inbound_dice = FaultDice::new(shared.config.seed ^ INBOUND_SEED, session.ordinal);
    loop {
        let msg = tokio::select! {
            m = stream.next() => m,
            () = shared.shutdown.cancelled() => None,
            _ = watch.tick(), if agent.is_none() => {
                // Without an agent, the service itself closes the channel on termination.
                if lock(&session.state).terminated {
                    if let Some(tx) = &orphan_out {
                        if let Ok(wire) = ChannelClosed::frame(&session.id, TERMINATED_TEXT).encode() {
                            let _ = tx.send(Outbound::Control(wire)).await;
                        }
                        let _ = tx.send(Outbound::Close).await;
                    }
                    orphan_out = None;
                }
                continue;
            }
            _ = recycle_clock.tick(), if recycle_out.is_some() => {
                let every = *lock(&session.recycle);
                if recycle_due(opened, std::time::Instant::now(), every)
                    && let Some(out) = recycle_out.take()
                {
                    recycle(&session, agent.as_ref(), conn, out).await;
                }
                continue;
            }
        };
        let bytes = match msg {
            Some(Ok(Message::Binary(b))) => b,
            Some(Ok(Message::Text(t))) => Bytes::copy_from_slice(t.as_bytes()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_)) | Err(_)) | None => break,
        };
        let Some(agent) = &agent else { continue };
        let (delay, input_drop, ack_drop) = {
            let knobs = lock(&session.knobs);
            (knobs.ack_delay_ms, knobs.input_drop, knobs.ack_drop)
        };
        if is_input(&bytes) && inbound_dice.chance(input_drop) {
            lock(&session.state).input_dropped += 1;
            continue;
        }
        if is_ack(&bytes) && inbound_dice.chance(ack_drop) {
            lock(&session.state).acks_dropped += 1;
            continue;
        }
        if delay > 0 && is_ack(&bytes) {
            let agent = agent.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                let _ = agent.send(AgentEvent::Inbound(bytes)).await;
            });
        } else if agent.send(AgentEvent::Inbound(bytes)).await.is_err() {
            break;
        }
    }
    if let Some(agent) = &agent {
        let _ = agent.send(AgentEvent::Detached { conn }).await;
    }
    writer.abort();
}

/// How often a connection's age is compared with the session's recycle interval.
const RECYCLE_CHECK: Duration = Duration::from_millis(100);

/// The service's periodic close of a connection: publication pauses first (the agent stops
/// sending into a socket about to go), then what is already queued is written and the socket
/// is closed with `1000 Bye`. The client resumes the session through ResumeSession.
async fn recycle(
    session: &SessionEntry,
    agent: Option<&mpsc::Sender<AgentEvent>>,
    conn: u64,
    out: mpsc::Sender<Outbound>,
) {
    tracing::info!(session = %session.id, conn, "recycling the data-channel connection (1000 Bye)");
    if let Some(agent) = agent {
        let _ = agent.send(AgentEvent::Detached { conn }).await;
    }
    let _ = out.send(Outbound::Close).await;
}

/// Mixed into the seed of the dice for frames from the client.
const INBOUND_SEED: u64 = 0x5EED_1A9F;

fn is_input(bytes: &[u8]) -> bool {
    bytes.get(4..21) == Some(b"input_stream_data".as_slice())
}

fn is_ack(bytes: &[u8]) -> bool {
    bytes.get(4..15) == Some(b"acknowledge".as_slice())
}

/// Most queued items written between two flushes (and two reads of the fault knobs), so a
/// knob change still takes effect within a bounded number of frames.
const WRITE_BATCH: usize = 64;

/// What the write loop does after writing one item.
enum Written {
    Continue,
    /// The socket was closed on purpose (or broke): stop.
    Stop,
}

async fn write_loop(
    session: Arc<SessionEntry>,
    seed: u64,
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Outbound>,
) {
    let mut writer = FrameWriter {
        dice: FaultDice::new(seed, session.ordinal),
        session,
        held: None,
        stream_frames: 0,
    };
    while let Some(first) = rx.recv().await {
        // One knob read and one flush (one write to the socket) per batch of queued frames,
        // instead of per 1 KiB frame.
        let knobs = lock(&writer.session.knobs).clone();
        let mut next = Some(first);
        let mut written = 0;
        while let Some(item) = next.take() {
            if matches!(writer.write(&mut sink, &knobs, item).await, Written::Stop) {
                return;
            }
            written += 1;
            if written < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

/// The relay's writing half towards one client socket: fault dice, the frame held back for
/// reordering, and the count behind `closeAfterFrames`.
struct FrameWriter {
    session: Arc<SessionEntry>,
    dice: FaultDice,
    held: Option<Bytes>,
    stream_frames: u64,
}

impl FrameWriter {
    /// Queues one item on the socket without flushing it (a close is flushed at once).
    async fn write(
        &mut self,
        sink: &mut futures::stream::SplitSink<WebSocket, Message>,
        knobs: &FaultKnobs,
        item: Outbound,
    ) -> Written {
        let mut batch: Vec<Bytes> = Vec::with_capacity(3);
        match item {
            Outbound::Control(wire) if is_ack(&wire) && self.dice.chance(knobs.ack_drop) => {
                lock(&self.session.state).acks_dropped += 1;
            }
            Outbound::Control(wire) => batch.push(wire),
            Outbound::Close => {
                let _ = sink.send(bye()).await;
                return Written::Stop;
            }
            Outbound::Stream(wire) => {
                self.stream_frames += 1;
                match self.dice.fate(knobs) {
                    FrameFate::Deliver => batch.push(wire),
                    FrameFate::Drop => {}
                    FrameFate::Duplicate => {
                        batch.push(wire.clone());
                        batch.push(wire);
                    }
                    FrameFate::Reorder if self.held.is_none() => self.held = Some(wire),
                    FrameFate::Reorder => batch.push(wire),
                    FrameFate::Corrupt => {
                        let mut bad = wire.to_vec();
                        if let Some(b) = bad.get_mut(DIGEST_OFFSET) {
                            *b ^= 0xff;
                        }
                        batch.push(Bytes::from(bad));
                    }
                }
            }
        }
        if !batch.is_empty()
            && let Some(late) = self.held.take()
        {
            batch.push(late);
        }
        for wire in batch {
            if sink.feed(Message::Binary(wire)).await.is_err() {
                return Written::Stop;
            }
        }
        if let Some(limit) = knobs.close_after_frames
            && self.stream_frames >= limit
        {
            let fire = {
                let mut state = lock(&self.session.state);
                let allowed = knobs.close_times.max(1);
                if state.closes_done < allowed {
                    state.closes_done += 1;
                    true
                } else {
                    false
                }
            };
            if fire {
                // `send` flushes the frames fed before the close.
                let _ = sink.send(bye()).await;
                return Written::Stop;
            }
        }
        Written::Continue
    }
}

fn bye() -> Message {
    Message::Close(Some(CloseFrame {
        code: 1000,
        reason: "Bye".into(),
    }))
}
