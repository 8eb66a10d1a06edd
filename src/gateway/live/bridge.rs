//! A browser's WebSocket as a bridge to a running session: the session's task sends frames
//! through a bounded queue (so a slow browser slows the session's reading, never grows a
//! buffer), and the browser's frames go back as [`ClientEvent`]s. Reading and writing run
//! side by side so heavy typing can never stall output, nor output stall typing.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tracing::debug;

use super::frames::{ClientFrame, ServerFrame};
use crate::ssm::{HeldBytes, HeldShare};

/// Frames queued towards one browser (besides the one being written). Together with the
/// browser window they bound what a browser that stops reading holds in the gateway.
pub const OUTBOUND_QUEUE: usize = 2;
/// Browser events queued towards the session.
pub const EVENT_QUEUE: usize = 32;
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
    /// A control frame.
    Control(ServerFrame),
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
    pub events: mpsc::Receiver<ClientEvent>,
    /// For a reattach, the output bytes the browser already holds.
    pub offset: Option<u64>,
}

impl Attachment {
    /// An attachment and the bridge's ends of its queues.
    pub fn new(offset: Option<u64>) -> (Self, mpsc::Receiver<Outbound>, mpsc::Sender<ClientEvent>) {
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

/// Runs the bridge until the browser leaves or the session drops its end of the queue
/// (after its final frame, which is then written, followed by a Close frame).
pub async fn run(
    socket: WebSocket,
    mut out_rx: mpsc::Receiver<Outbound>,
    events_tx: mpsc::Sender<ClientEvent>,
) {
    let (mut sink, mut stream) = socket.split();
    let writer = async {
        while let Some(frame) = out_rx.recv().await {
            // The frame (and its share of the held total) lives until the socket took it.
            if sink.send(to_message(&frame)).await.is_err() {
                return false;
            }
            drop(frame);
        }
        let _ = sink.send(Message::Close(None)).await;
        sink.close().await.is_ok()
    };
    let reader = async {
        let mut session_listens = true;
        while let Some(Ok(message)) = stream.next().await {
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
            if session_listens && events_tx.send(event).await.is_err() {
                session_listens = false;
            }
        }
        debug!("browser left");
    };
    let closed_by_us = tokio::select! {
        sent = writer => sent,
        () = reader => false,
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
pub async fn refuse(mut socket: WebSocket, frame: ServerFrame) {
    let _ = socket.send(Message::Text(frame.to_json().into())).await;
    let _ = socket.send(Message::Close(None)).await;
}
