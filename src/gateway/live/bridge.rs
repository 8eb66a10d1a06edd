//! A browser's WebSocket as a bridge to a running session: the session's task sends frames
//! through a bounded queue (so a slow browser slows the session's reading, never grows a
//! buffer), and the browser's frames go back as [`ClientEvent`]s. Reading and writing run
//! side by side so heavy typing can never stall output, nor output stall typing.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tracing::debug;

use super::frames::{ClientFrame, ServerFrame};
use crate::gateway::error::ErrorCode;
use crate::ssm::{HeldBytes, HeldShare};

/// Frames queued towards one browser (besides those being written). Together with the
/// browser window they bound what a browser that stops reading holds in the gateway.
pub const OUTBOUND_QUEUE: usize = 2;
/// Most frames written to the browser's socket in one write (one flush): the one the writer
/// waited for and what else was queued by then. A frame counts as held until its write is
/// flushed, so at most `OUTBOUND_QUEUE + WRITE_BATCH` frames are held at once.
pub const WRITE_BATCH: usize = 2;
/// Browser events queued towards the session, boxed ([`QueuedEvent`]). Each holds at most
/// one WebSocket message, which the attach route bounds to `WEBSOCKET_MAX_MESSAGE_BYTES`
/// (64 KiB), so this queue holds at most 2 MiB per browser (docs/gateway.md, byte budgets).
pub const EVENT_QUEUE: usize = 32;
/// A browser event on its way to the session, boxed: tokio's mpsc reserves its first block
/// of 32 slots when a queue is made, and a slot is as large as the message (40 B unboxed),
/// though an idle shell's browser sends nothing.
pub type QueuedEvent = Box<ClientEvent>;
/// How long a reattaching browser has to send its `resume` frame.
pub const RESUME_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a bridge that sent its Close frame waits for the browser's. Closing the TCP
/// connection with the browser's frames still unread makes the kernel reset it, and a reset
/// discards whatever of our last frames has not left yet. A browser that is slow to read
/// may still have most of a browser window in the socket's buffers, so it gets seconds.
pub const CLOSE_LINGER: Duration = Duration::from_secs(10);

/// A frame for the browser.
#[derive(Debug)]
pub enum Outbound {
    /// Terminal output, counted as held until written to the socket.
    Binary(HeldFrame),
    /// A control frame, boxed: the session's outbound queue reserves 32 slots up front
    /// (tokio's first block), and a slot is as large as the largest message.
    Control(Box<ServerFrame>),
}

/// What the browser did.
#[derive(Debug)]
pub enum ClientEvent {
    /// Keystrokes (raw terminal bytes).
    Input(Bytes),
    /// A resize.
    Resize {
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
    /// The person closed the terminal.
    Close,
    /// The browser acknowledged this total of output bytes.
    Ack(u64),
    /// A text frame that could not be understood (answered with an `E_BAD_REQUEST` frame).
    BadFrame(String),
}

/// A browser handed to a running session.
#[derive(Debug)]
pub struct Attachment {
    /// Frames to the browser.
    pub out: mpsc::Sender<Outbound>,
    /// Events from the browser; closed when the browser leaves.
    pub events: mpsc::Receiver<QueuedEvent>,
    /// For a reattach, the output bytes the browser already holds.
    pub offset: Option<u64>,
}

impl Attachment {
    /// An attachment and the bridge's ends of its queues.
    pub fn new(offset: Option<u64>) -> (Self, mpsc::Receiver<Outbound>, mpsc::Sender<QueuedEvent>) {
        let (out_tx, out_rx) = mpsc::channel(OUTBOUND_QUEUE);
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        (
            Self {
                out: out_tx,
                events: events_rx,
                offset,
            },
            out_rx,
            events_tx,
        )
    }
}

/// A frame of output on its way to the browser: its bytes stay in the gateway's held-output
/// total until the socket took them (they are a copy of what the replay ring holds).
#[derive(Debug)]
pub struct HeldFrame {
    bytes: Bytes,
    _held: HeldShare,
}

impl HeldFrame {
    /// `bytes`, counted in `held` while this frame lives.
    pub fn new(bytes: Bytes, held: &HeldBytes) -> Self {
        let mut share = held.share();
        share.set(bytes.len());
        Self {
            bytes,
            _held: share,
        }
    }

    /// The frame's bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
}

fn to_message(frame: &Outbound) -> Message {
    match frame {
        Outbound::Binary(frame) => Message::Binary(frame.bytes.clone()),
        Outbound::Control(frame) => Message::Text(frame.to_json().into()),
    }
}

/// How the browser's side of a bridge ended.
enum BrowserEnd {
    /// It closed the socket or the connection dropped.
    Left,
    /// It sent a message over the size limit: the socket is closed with 1009 and why.
    TooLarge(String),
}

/// A browser's socket, boxed as it is handed on: an `async fn` keeps a copy of its arguments
/// beside the locals it moves them into, and the socket goes through three of them (the
/// attach, the bridge, the split) for the browser's whole stay.
pub type BrowserSocket = Box<WebSocket>;

/// Runs the bridge until the browser leaves or the session drops its end of the queue
/// (after its final frame, which is then written, followed by a Close frame).
pub async fn run(
    socket: BrowserSocket,
    mut out_rx: mpsc::Receiver<Outbound>,
    events_tx: mpsc::Sender<QueuedEvent>,
) {
    let (mut sink, mut stream) = socket.split();
    let writer = async {
        // Frames fed since the last flush: each (and its share of the held total) lives until
        // the socket took it.
        let mut unflushed: Vec<Outbound> = Vec::with_capacity(WRITE_BATCH);
        while let Some(frame) = out_rx.recv().await {
            // What the session queued meanwhile goes out in the same write: one flush (one
            // syscall) for the batch instead of one per frame.
            let mut next = Some(frame);
            while let Some(frame) = next.take() {
                if sink.feed(to_message(&frame)).await.is_err() {
                    return false;
                }
                unflushed.push(frame);
                if unflushed.len() < WRITE_BATCH {
                    next = out_rx.try_recv().ok();
                }
            }
            if sink.flush().await.is_err() {
                return false;
            }
            unflushed.clear();
        }
        let _ = sink.send(Message::Close(None)).await;
        sink.close().await.is_ok()
    };
    let reader = async {
        let mut session_listens = true;
        loop {
            let message = match stream.next().await {
                Some(Ok(message)) => message,
                Some(Err(e)) => return browser_error(e),
                None => break,
            };
            let event = match message {
                Message::Binary(bytes) => ClientEvent::Input(bytes),
                Message::Text(text) => match ClientFrame::parse(text.as_str()) {
                    Ok(ClientFrame::Resize { cols, rows }) => ClientEvent::Resize { cols, rows },
                    Ok(ClientFrame::Close) => ClientEvent::Close,
                    Ok(ClientFrame::Ack { bytes }) => ClientEvent::Ack(bytes),
                    Ok(ClientFrame::Resume { .. }) => {
                        ClientEvent::BadFrame("resume is only valid as the first frame".into())
                    }
                    Err(e) => ClientEvent::BadFrame(e),
                },
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            // A session that stopped listening is ending: keep the socket open so the
            // writer can still deliver its last frames (the `closed` frame among them).
            if session_listens && events_tx.send(Box::new(event)).await.is_err() {
                session_listens = false;
            }
        }
        debug!("browser left");
        BrowserEnd::Left
    };
    let closed_by_us = tokio::select! {
        sent = writer => sent,
        end = reader => {
            if let BrowserEnd::TooLarge(message) = end {
                let frame = ServerFrame::error(ErrorCode::PayloadTooLarge, message, false);
                let _ = sink.send(Message::Text(frame.to_json().into())).await;
                let _ = sink
                    .send(Message::Close(Some(CloseFrame {
                        code: close_code::SIZE,
                        reason: "message too big".into(),
                    })))
                    .await;
                // The browser's surplus is unread: dropping the socket now would reset the
                // connection and could discard these two frames before they leave.
                tokio::time::sleep(CLOSE_LINGER).await;
            }
            false
        }
    };
    if closed_by_us {
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            while let Some(Ok(message)) = stream.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// A read error from the browser: a message over the size limit is named (the socket then
/// closes with 1009); anything else is a browser that left.
fn browser_error(error: axum::Error) -> BrowserEnd {
    use tokio_tungstenite::tungstenite::Error as WsError;
    use tokio_tungstenite::tungstenite::error::CapacityError;
    let inner = error.into_inner();
    match inner.downcast_ref::<WsError>() {
        Some(WsError::Capacity(CapacityError::MessageTooLong { max_size, .. })) => {
            tracing::info!(max_size, "browser sent a WebSocket message over the limit");
            BrowserEnd::TooLarge(format!(
                "a WebSocket message or frame was larger than {max_size} bytes, so this connection is closed; terminal input goes in smaller messages (the console sends pastes in chunks); reattach to go on"
            ))
        }
        _ => {
            debug!(error = %inner, "browser connection failed");
            BrowserEnd::Left
        }
    }
}

/// Reads the `resume` frame a reattaching browser sends first: `(token, offset)`.
pub async fn read_resume(socket: &mut WebSocket) -> Option<(String, u64)> {
    let first = tokio::time::timeout(RESUME_FRAME_TIMEOUT, async {
        while let Some(Ok(message)) = socket.recv().await {
            match message {
                Message::Text(text) => return Some(text),
                Message::Ping(_) | Message::Pong(_) => continue,
                _ => return None,
            }
        }
        None
    })
    .await
    .ok()
    .flatten()?;
    match ClientFrame::parse(first.as_str()) {
        Ok(ClientFrame::Resume {
            resume_token,
            offset,
        }) => Some((resume_token, offset)),
        _ => None,
    }
}

/// Sends one final frame and closes the socket.
pub async fn refuse(mut socket: BrowserSocket, frame: ServerFrame) {
    let _ = socket.send(Message::Text(frame.to_json().into())).await;
    let _ = socket.send(Message::Close(None)).await;
}
