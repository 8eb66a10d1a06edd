//! The data channel as a running connection: one task owns the websocket and the pure state
//! machines, the caller holds a small handle (input, resize, output, close).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{FutureExt, SinkExt, Stream, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

use super::frame::{Frame, FrameError};
use super::handshake::{
    ClientHandshake, DataKey, DataKeyError, HandshakeError, HandshakeReply, KmsOptions,
};
use super::held::{HeldBytes, HeldShare};
use super::message::{MessageType, PayloadType, Role};
use super::payload::{
    Acknowledgement, ChannelClosed, OpenDataChannel, TerminalSize, is_terminal_output,
    parse_exit_code,
};
use super::receive::{Arrival, ReceiveConfig, ReceiveWindow};
use super::resume::{ResumeError, SessionResumer};
use super::retransmit::{RetransmitConfig, RetransmitQueue};

/// Largest stdin payload per message, as the official client sends.
pub const INPUT_CHUNK_SIZE: usize = 1024;
/// The plugin version we claim compatibility with in the open frame and handshake.
pub const CLIENT_VERSION: &str = "1.2.707.0";

/// Largest chunk handed to the consumer: in-order payloads that are ready together are
/// joined up to this size, so a fast stream wakes the consumer once per batch instead of
/// once per ≤1 KiB message. The output queue holds at most `output_buffer` such chunks.
pub const OUTPUT_CHUNK_MAX: usize = 16 * 1024;
/// Most websocket messages handled in one turn of the channel task (those already read
/// from the socket), so their acks share one flush and their payloads one chunk.
const READ_BATCH: usize = 64;

/// Smallest websocket read buffer `dial` uses, whatever the options say.
const MIN_READ_BUFFER: usize = 4 * 1024;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Backoff for reconnecting through `ssm:ResumeSession`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// Attempts after the first one (official client: 5).
    pub retries: u32,
    /// Delay before the first retry (doubles each time).
    pub initial_delay: Duration,
    /// Cap on the delay between attempts.
    pub max_delay: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            retries: 5,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        }
    }
}

/// Tuning of a [`DataChannel`]; the defaults suit an interactive shell.
#[derive(Debug, Clone)]
pub struct DataChannelOptions {
    /// The SSM session id (passed to the resumer).
    pub session_id: String,
    /// Client id sent in every open frame; one per channel, kept across reconnects.
    pub client_id: String,
    /// Version string sent in the open frame and the handshake response.
    pub client_version: String,
    /// Bounds and timeout tuning of the outgoing stream.
    pub retransmit: RetransmitConfig,
    /// Bounds of the incoming stream.
    pub receive: ReceiveConfig,
    /// Output chunks buffered between the channel task and the consumer.
    pub output_buffer: usize,
    /// The total this channel adds the output it holds to: payloads in its receive window
    /// and chunks queued for the consumer. Share one total across channels to watch them
    /// together; the default is a counter of this channel's own.
    pub held: HeldBytes,
    /// Where this channel counts what it refused (frames whose payload digest did not
    /// match). Share one across channels to count them together; the default is this
    /// channel's own.
    pub stats: ChannelStats,
    /// Input chunks buffered between `send_input` and the channel task.
    pub input_buffer: usize,
    /// Interval of websocket pings.
    pub keepalive_interval: Duration,
    /// Silence (no frame, not even a pong) after which the connection counts as lost.
    pub peer_silence_timeout: Duration,
    /// Reconnect backoff.
    pub reconnect: ReconnectPolicy,
    /// Times the oldest unacked message is sent before the agent counts as unresponsive.
    pub max_head_transmissions: u32,
    /// How long `close()` waits for unacked input to be acknowledged.
    pub close_drain: Duration,
    /// How long the end of the channel waits for the consumer to take remaining output.
    pub final_flush: Duration,
    /// Largest websocket message accepted.
    pub max_message_size: usize,
    /// Websocket read buffer per connection (at least 4 KiB). tungstenite reserves it when
    /// the socket is made and keeps it for the connection's life, and a frame is about
    /// 1.2 KiB, so it is kept small (4 KiB; tungstenite's own default, 128 KiB, and then
    /// 16 KiB, made up much of an idle session's memory); a larger frame grows it while read.
    pub read_buffer_size: usize,
    /// Limit on opening the websocket (TCP, TLS and upgrade).
    pub connect_timeout: Duration,
    /// How to answer a `KMSEncryption` handshake action; without it such a session fails
    /// with [`HandshakeError::KmsUnavailable`].
    pub kms: Option<KmsOptions>,
}

impl DataChannelOptions {
    /// Defaults for the given SSM session id.
    pub fn new(session_id: impl Into<String>) -> Self {
        Self {
            session_id: session_id.into(),
            client_id: Uuid::new_v4().to_string(),
            client_version: CLIENT_VERSION.into(),
            retransmit: RetransmitConfig::default(),
            receive: ReceiveConfig::default(),
            output_buffer: 64,
            held: HeldBytes::new(),
            stats: ChannelStats::default(),
            input_buffer: 8,
            keepalive_interval: Duration::from_secs(30),
            peer_silence_timeout: Duration::from_secs(90),
            reconnect: ReconnectPolicy::default(),
            max_head_transmissions: 300,
            close_drain: Duration::from_secs(2),
            final_flush: Duration::from_secs(5),
            max_message_size: 1024 * 1024,
            read_buffer_size: 4 * 1024,
            connect_timeout: Duration::from_secs(10),
            kms: None,
        }
    }
}

/// Counts of what channels refused, as cheap shared totals (clones add to the same counts).
///
/// A frame whose SHA-256 payload digest does not match is dropped without an ack, as the
/// official plugin does: the peer's retransmission recovers the message, so the session goes
/// on, and the count is how corruption on the path becomes visible (see
/// docs/ssm-data-channel.md, "Digest mismatches").
#[derive(Clone, Debug, Default)]
pub struct ChannelStats {
    digest_mismatches: Arc<AtomicU64>,
    refused_messages: Arc<AtomicU64>,
}

impl ChannelStats {
    /// Frames dropped (not acked, not delivered) because their payload digest did not match.
    pub fn digest_mismatches(&self) -> u64 {
        self.digest_mismatches.load(Ordering::Relaxed)
    }

    /// Stream messages the receive window refused (no room: not acked, so the agent resends
    /// each one, but only once it is its oldest unacknowledged message, one per 100 ms).
    pub fn refused_messages(&self) -> u64 {
        self.refused_messages.load(Ordering::Relaxed)
    }

    /// Counts a stream message the receive window refused.
    pub(crate) fn count_window_refusal(&self) {
        self.refused_messages.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refused frame by why it was refused; only digest mismatches are counted.
    pub(crate) fn count_refusal(&self, error: &FrameError) {
        if *error == FrameError::DigestMismatch {
            self.digest_mismatches.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Why the channel failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The websocket could not be opened.
    #[error(
        "could not open the SSM data channel at {url}: {message}; check the stream URL and network path to ssmmessages"
    )]
    Connect {
        /// The stream URL (no credentials in it).
        url: String,
        /// What failed.
        message: String,
    },
    /// The channel already ended; its [`CloseReason`] says why.
    #[error("the SSM data channel has ended; read its close reason")]
    Closed,
    /// The handshake failed (e.g. KMS encryption demanded).
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The agent stopped acknowledging.
    #[error(
        "the agent did not acknowledge input after {transmissions} transmissions; the host may be unreachable"
    )]
    AgentUnresponsive {
        /// Transmissions of the oldest unacked message.
        transmissions: u32,
    },
    /// Reconnecting failed.
    #[error(
        "the data channel dropped and could not be reconnected after {attempts} attempts: {last_error}"
    )]
    ReconnectFailed {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last_error: String,
    },
    /// ResumeSession was refused.
    #[error(transparent)]
    Resume(#[from] ResumeError),
}

/// How the channel ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseCause {
    /// The service sent `channel_closed` (shell exit, termination, idle timeout).
    ChannelClosed,
    /// Our side called `close()` (or dropped every handle).
    ClosedByClient,
    /// ResumeSession said the session timed out.
    SessionTimedOut,
    /// A failure ended the channel.
    Failed(ChannelError),
}

/// The final word on a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// Exit code from an `EXIT_CODE: <n>` payload, when the agent sent one.
    pub exit_code: Option<i32>,
    /// What ended it.
    pub cause: CloseCause,
    /// Human-readable text (the service's `channel_closed` output, or the error).
    pub message: String,
}

/// The sending side of a channel; cheap to clone.
#[derive(Debug, Clone)]
pub struct ChannelInput {
    input: mpsc::Sender<Bytes>,
    requests: Arc<watch::Sender<Requests>>,
    progress: watch::Receiver<Progress>,
}

/// What the channel's owner asks of its task: the latest terminal size (and how many were
/// asked for, so a size is applied once) and whether to close. One watch for both, and one
/// for [`Progress`]: each watch channel is a 344-byte allocation that every live channel
/// keeps.
#[derive(Clone, Copy, Debug, Default)]
struct Requests {
    size: Option<TerminalSize>,
    sizes_asked: u64,
    close: bool,
}

/// How far the channel's task got: its connection is over and only output already received
/// is left (`ending`), and why it ended (`closed`).
#[derive(Clone, Debug, Default)]
struct Progress {
    ending: bool,
    closed: Option<CloseReason>,
}

impl ChannelInput {
    /// Sends terminal input in ≤1024-byte messages; waits while the agent has too much
    /// unacknowledged input (never drops or evicts).
    pub async fn send_input(&self, data: &[u8]) -> Result<(), ChannelError> {
        for chunk in data.chunks(INPUT_CHUNK_SIZE) {
            self.input
                .send(Bytes::copy_from_slice(chunk))
                .await
                .map_err(|_| ChannelError::Closed)?;
        }
        Ok(())
    }

    /// Sends as much of `data` as the channel's input queue has room for now, in ≤1024-byte
    /// messages; what did not fit stays in `data`. For a caller that must
    /// not wait on the agent: it waits on [`Self::input_room`] before the rest.
    pub fn try_send_input(&self, data: &mut Bytes) -> Result<(), ChannelError> {
        while !data.is_empty() {
            match self.input.try_reserve() {
                Ok(permit) => permit.send(next_input(data)),
                Err(mpsc::error::TrySendError::Full(())) => break,
                Err(mpsc::error::TrySendError::Closed(())) => return Err(ChannelError::Closed),
            }
        }
        Ok(())
    }

    /// Waits for room for one input message in the channel's queue (while the agent has
    /// too much unacknowledged input, this waits). Cancel safe: dropped before it is ready,
    /// nothing was sent and nothing is lost.
    pub async fn input_room(&self) -> Result<InputRoom, ChannelError> {
        self.input
            .clone()
            .reserve_owned()
            .await
            .map(InputRoom)
            .map_err(|_| ChannelError::Closed)
    }

    /// Sets the remote terminal size; only the latest size is sent.
    pub fn resize(&self, cols: u32, rows: u32) -> Result<(), ChannelError> {
        if self.requests.is_closed() {
            return Err(ChannelError::Closed);
        }
        self.requests.send_modify(|r| {
            r.size = Some(TerminalSize { cols, rows });
            r.sizes_asked += 1;
        });
        Ok(())
    }

    /// Asks the channel to end after a short drain of unacked input.
    pub fn close(&self) {
        self.requests
            .send_if_modified(|r| !std::mem::replace(&mut r.close, true));
    }

    /// Waits for the channel to end and returns why.
    pub async fn closed(&self) -> CloseReason {
        let mut rx = self.progress.clone();
        let reason = rx
            .wait_for(|p| p.closed.is_some())
            .await
            .ok()
            .and_then(|p| p.closed.clone());
        reason.unwrap_or(CloseReason {
            exit_code: None,
            cause: CloseCause::Failed(ChannelError::Closed),
            message: "the channel task stopped without a reason".into(),
        })
    }

    /// Waits until the connection is over and only output already received is left for the
    /// consumer (the close reason follows once it was taken, or the final flush gave up).
    /// There is no agent left to hold back: a consumer that pauses for back-pressure should
    /// take the rest now, or it is lost after `final_flush`.
    pub async fn ending(&self) {
        let mut rx = self.progress.clone();
        let _ = rx.wait_for(|p| p.ending).await;
    }

    /// The close reason if the channel has already ended.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.progress.borrow().closed.clone()
    }
}

/// Room for one input message in a channel's queue ([`ChannelInput::input_room`]).
#[derive(Debug)]
pub struct InputRoom(mpsc::OwnedPermit<Bytes>);

impl InputRoom {
    /// Sends the first ≤1024 bytes of `data` and leaves the rest in it.
    pub fn send(self, data: &mut Bytes) {
        self.0.send(next_input(data));
    }
}

/// The next input message of `data`, its first ≤1024 bytes, copied (a browser's message
/// buffer is not kept until the agent acknowledges a piece of it) and taken out of it.
fn next_input(data: &mut Bytes) -> Bytes {
    let n = data.len().min(INPUT_CHUNK_SIZE);
    let message = Bytes::copy_from_slice(&data[..n]);
    bytes::Buf::advance(data, n);
    message
}

/// A chunk of output queued for the consumer, counted as held until it is taken (or
/// dropped with the queue).
#[derive(Debug)]
struct QueuedChunk {
    bytes: Bytes,
    _held: HeldShare,
}

impl QueuedChunk {
    fn new(bytes: Bytes, held: &HeldBytes) -> Self {
        let mut share = held.share();
        share.set(bytes.len());
        Self {
            bytes,
            _held: share,
        }
    }
}

/// Terminal output in order, exactly once; ends (`None`) when the channel ends.
#[derive(Debug)]
pub struct ChannelOutput {
    rx: mpsc::Receiver<QueuedChunk>,
}

impl ChannelOutput {
    /// The next chunk of output, or `None` once the channel ended and everything was read.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.rx.recv().await.map(|chunk| chunk.bytes)
    }
}

impl Stream for ChannelOutput {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        self.rx.poll_recv(cx).map(|c| c.map(|chunk| chunk.bytes))
    }
}

/// A connected SSM data channel (client side).
#[derive(Debug)]
pub struct DataChannel {
    input: ChannelInput,
    output: ChannelOutput,
}

impl DataChannel {
    /// Opens the websocket at `stream_url`, authenticates with `token`, and starts the
    /// channel task. `resumer` is asked for a new token when the connection drops.
    pub async fn connect<R: SessionResumer>(
        stream_url: &str,
        token: &str,
        options: DataChannelOptions,
        resumer: R,
    ) -> Result<Self, ChannelError> {
        let socket = dial(stream_url, token, &options).await?;
        let (input_tx, input_rx) = mpsc::channel(options.input_buffer.max(1));
        let (output_tx, output_rx) = mpsc::channel(options.output_buffer.max(1));
        let (requests_tx, requests_rx) = watch::channel(Requests::default());
        let (progress_tx, progress_rx) = watch::channel(Progress::default());
        let now = Instant::now();
        let task = ChannelTask {
            stream_url: stream_url.to_owned(),
            queue: RetransmitQueue::new(Role::Client, options.retransmit),
            window: ReceiveWindow::new(options.receive),
            window_held: options.held.share(),
            handshake: match &options.kms {
                Some(kms) => ClientHandshake::new(&options.client_version)
                    .with_kms(&options.session_id, &kms.target_id),
                None => ClientHandshake::new(&options.client_version),
            },
            data_key: None,
            options,
            resumer,
            exit_code: None,
            input_rx,
            input_open: true,
            requests_rx,
            requests_open: true,
            sizes_applied: 0,
            pending_size: None,
            closing_since: None,
            output_tx,
            progress_tx,
            last_inbound: now,
            next_ping: now,
            failure: None,
        };
        tokio::spawn(Box::new(task).run(Box::new(socket)));
        Ok(Self {
            input: ChannelInput {
                input: input_tx,
                requests: Arc::new(requests_tx),
                progress: progress_rx,
            },
            output: ChannelOutput { rx: output_rx },
        })
    }

    /// Sends terminal input (see [`ChannelInput::send_input`]).
    pub async fn send_input(&self, data: &[u8]) -> Result<(), ChannelError> {
        self.input.send_input(data).await
    }

    /// Sets the remote terminal size.
    pub fn resize(&self, cols: u32, rows: u32) -> Result<(), ChannelError> {
        self.input.resize(cols, rows)
    }

    /// The output stream.
    pub fn output(&mut self) -> &mut ChannelOutput {
        &mut self.output
    }

    /// Asks the channel to end.
    pub fn close(&self) {
        self.input.close();
    }

    /// Waits for the channel to end and returns why.
    pub async fn closed(&self) -> CloseReason {
        self.input.closed().await
    }

    /// Splits into a cloneable input side and the output stream. Dropping every
    /// [`ChannelInput`] closes the channel, as [`ChannelInput::close`] does.
    pub fn into_parts(self) -> (ChannelInput, ChannelOutput) {
        (self.input, self.output)
    }
}

async fn dial(
    url: &str,
    token: &str,
    options: &DataChannelOptions,
) -> Result<Socket, ChannelError> {
    let connect_error = |message: String| ChannelError::Connect {
        url: url.to_owned(),
        message,
    };
    // The write buffer needs no bound of ours: it grows only to what one flush holds, and
    // every message is sent with a flush.
    let config = WebSocketConfig::default()
        .max_message_size(Some(options.max_message_size))
        .read_buffer_size(options.read_buffer_size.max(MIN_READ_BUFFER));
    let connecting = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
    let (mut socket, _) = tokio::time::timeout(options.connect_timeout, connecting)
        .await
        .map_err(|_| connect_error("timed out".into()))?
        .map_err(|e| connect_error(e.to_string()))?;
    let open = OpenDataChannel::client(token, &options.client_id, &options.client_version);
    socket
        .send(Message::text(open.to_json()))
        .await
        .map_err(|e| connect_error(e.to_string()))?;
    Ok(socket)
}

/// Takes the consecutive in-order output payloads that are ready, joined into one chunk
/// of at most [`OUTPUT_CHUNK_MAX`] bytes (a single larger payload goes alone, uncopied).
fn take_output_run(window: &mut ReceiveWindow, handshake: &mut ClientHandshake) -> Bytes {
    let mut single: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    while let Some(next) = window.peek_ready() {
        if !is_terminal_output(next.payload_type) {
            break;
        }
        let held = single.as_ref().map_or(joined.len(), Bytes::len);
        if held > 0 && held + next.payload.len() > OUTPUT_CHUNK_MAX {
            break;
        }
        let Some(frame) = window.pop_ready() else {
            break;
        };
        handshake.on_output();
        if frame.payload.is_empty() {
            continue;
        }
        if held == 0 {
            single = Some(frame.payload);
        } else {
            if let Some(first) = single.take() {
                joined.extend_from_slice(&first);
            }
            joined.extend_from_slice(&frame.payload);
        }
    }
    single.unwrap_or_else(|| joined.freeze())
}

/// How one websocket connection ended.
enum ConnectionEnd {
    /// The channel is over.
    Finished(CloseCause, String),
    /// The socket dropped; reconnect.
    Lost(String),
}

/// What woke the channel task.
enum Event {
    Socket(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
    OutputSpace,
    Input(Option<Bytes>),
    /// The owner asked something (`false`: its end is gone).
    Requests(bool),
    DataKey(Result<DataKey, DataKeyError>),
    Timer,
}

/// Waits for the data key being generated, if any.
async fn data_key_ready(
    pending: &mut Option<futures::future::BoxFuture<'static, Result<DataKey, DataKeyError>>>,
) -> Result<DataKey, DataKeyError> {
    match pending {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

struct ChannelTask<R> {
    stream_url: String,
    options: DataChannelOptions,
    resumer: R,
    queue: RetransmitQueue,
    window: ReceiveWindow,
    /// The window's payload bytes, in the options' held total.
    window_held: HeldShare,
    handshake: ClientHandshake,
    /// The KMS data key being generated for the handshake.
    data_key: Option<futures::future::BoxFuture<'static, Result<DataKey, DataKeyError>>>,
    exit_code: Option<i32>,
    input_rx: mpsc::Receiver<Bytes>,
    input_open: bool,
    requests_rx: watch::Receiver<Requests>,
    /// The owner still holds its end of the requests (dropping it closes the channel).
    requests_open: bool,
    /// `Requests::sizes_asked` when a size was last taken into `pending_size`.
    sizes_applied: u64,
    pending_size: Option<TerminalSize>,
    closing_since: Option<Instant>,
    output_tx: mpsc::Sender<QueuedChunk>,
    progress_tx: watch::Sender<Progress>,
    last_inbound: Instant,
    next_ping: Instant,
    failure: Option<ChannelError>,
}

// === impl ChannelTask ===

impl<R: SessionResumer> ChannelTask<R> {
    /// Both arguments come boxed: an `async fn` keeps a copy of its arguments beside the
    /// locals it moves them into, so the task's state and the socket inline would be
    /// reserved twice for the channel's life.
    async fn run(mut self: Box<Self>, mut socket: Box<Socket>) {
        let (cause, message) = loop {
            let end = self.drive(&mut socket).await;
            let _ = (*socket).close(None).await;
            // Release the old connection before dialling again: a relay may serve one at a time.
            drop(socket);
            match end {
                ConnectionEnd::Finished(cause, message) => break (cause, message),
                ConnectionEnd::Lost(why) => {
                    tracing::info!(session = %self.options.session_id, %why, "data channel connection lost; resuming");
                    // Boxed: the resume call and the new TLS connection make a large
                    // future, and inline it would be reserved in every channel's task for
                    // the channel's whole life, though it runs only after a lost connection.
                    match Box::pin(self.reconnect(&why)).await {
                        Ok(fresh) => socket = Box::new(fresh),
                        Err((cause, message)) => break (cause, message),
                    }
                }
            }
        };
        self.progress_tx.send_modify(|p| p.ending = true);
        Box::pin(self.flush_output()).await;
        let reason = CloseReason {
            exit_code: self.exit_code,
            cause,
            message,
        };
        tracing::info!(session = %self.options.session_id, ?reason, "data channel ended");
        self.progress_tx.send_modify(|p| p.closed = Some(reason));
    }

    /// Serves one websocket until it drops or the channel ends.
    async fn drive(&mut self, socket: &mut Socket) -> ConnectionEnd {
        // What was asked while the connection was being replaced.
        self.take_requests();
        loop {
            if let Err(why) = self.pump(socket).await {
                return ConnectionEnd::Lost(why);
            }
            if let Some(error) = self.failure.take() {
                return ConnectionEnd::Finished(
                    CloseCause::Failed(error.clone()),
                    error.to_string(),
                );
            }
            let now = Instant::now();
            // Reading stops while the consumer is behind and the window is full, so the
            // service's sends back up in TCP instead of being refused (and resent) here.
            let reading = self.window.wants_more();
            if !reading {
                // Silence we chose is not the peer's: its clock starts when reading resumes.
                self.last_inbound = now;
            }
            if let Some(end) = self.check_limits(now) {
                return end;
            }
            let deadline = self.next_deadline(now, reading);
            // Input already handed to send_input still goes out while closing. Not while
            // reading is stopped: a peer that blocks on sending to us may not read either,
            // and a write that cannot finish would keep this task from ever reading again.
            let want_input = reading
                && self.input_open
                && self.handshake.is_ready()
                && self.queue.has_room(INPUT_CHUNK_SIZE);
            let want_output = self.window.peek_ready().is_some() && !self.output_tx.is_closed();
            let event = tokio::select! {
                message = socket.next(), if reading => Event::Socket(message),
                _ = self.output_tx.reserve(), if want_output => Event::OutputSpace,
                chunk = self.input_rx.recv(), if want_input => Event::Input(chunk),
                changed = self.requests_rx.changed(), if self.requests_open => Event::Requests(changed.is_ok()),
                key = data_key_ready(&mut self.data_key), if self.data_key.is_some() => Event::DataKey(key),
                _ = tokio::time::sleep_until(deadline) => Event::Timer,
            };
            match event {
                Event::Socket(first) => {
                    self.last_inbound = Instant::now();
                    let mut next = Some(first);
                    let mut handled = 0;
                    while let Some(message) = next.take() {
                        let message = match message {
                            Some(Ok(message)) => message,
                            Some(Err(e)) => return ConnectionEnd::Lost(e.to_string()),
                            None => return ConnectionEnd::Lost("the websocket ended".into()),
                        };
                        if let Some(end) = self.on_message(message, socket).await {
                            return end;
                        }
                        handled += 1;
                        if handled < READ_BATCH && self.window.wants_more() {
                            // What the last socket read already brought, without waiting.
                            next = socket.next().now_or_never();
                        }
                    }
                    self.window_held.set(self.window.held_bytes());
                    // The batch's acks leave in one write.
                    if let Err(e) = socket.flush().await {
                        return ConnectionEnd::Lost(e.to_string());
                    }
                }
                Event::OutputSpace => {}
                Event::Input(Some(data)) => self.enqueue(PayloadType::Output, data),
                Event::Input(None) => {
                    self.input_open = false;
                    self.closing_since.get_or_insert(Instant::now());
                }
                Event::Requests(true) => self.take_requests(),
                Event::Requests(false) => {
                    // The owner is gone: nothing more will be asked, and the channel closes.
                    self.requests_open = false;
                    self.closing_since.get_or_insert(Instant::now());
                }
                Event::DataKey(key) => {
                    self.data_key = None;
                    let reply = self.handshake.on_data_key(key);
                    self.send_handshake_reply(reply);
                }
                Event::Timer => {
                    if Instant::now() >= self.next_ping {
                        self.next_ping = Instant::now() + self.options.keepalive_interval;
                        let ping = Message::Ping(Bytes::from_static(b"keepalive"));
                        if let Err(e) = socket.send(ping).await {
                            return ConnectionEnd::Lost(e.to_string());
                        }
                    }
                }
            }
        }
    }

    /// Takes the owner's latest requests: a size not applied yet, a close.
    fn take_requests(&mut self) {
        let requests = *self.requests_rx.borrow_and_update();
        if requests.sizes_asked != self.sizes_applied {
            self.sizes_applied = requests.sizes_asked;
            self.pending_size = requests.size;
        }
        if requests.close {
            self.closing_since.get_or_insert(Instant::now());
        }
    }

    /// Ends the channel when closing finished, the peer went silent or stopped acking.
    fn check_limits(&self, now: Instant) -> Option<ConnectionEnd> {
        if let Some(since) = self.closing_since
            && ((self.queue.is_empty() && self.input_rx.is_empty())
                || now >= since + self.options.close_drain)
        {
            return Some(ConnectionEnd::Finished(
                CloseCause::ClosedByClient,
                "closed by the client".into(),
            ));
        }
        if now >= self.last_inbound + self.options.peer_silence_timeout {
            return Some(ConnectionEnd::Lost("no frames from the service".into()));
        }
        let transmissions = self.queue.head_transmissions();
        if transmissions > self.options.max_head_transmissions {
            let error = ChannelError::AgentUnresponsive { transmissions };
            return Some(ConnectionEnd::Finished(
                CloseCause::Failed(error.clone()),
                error.to_string(),
            ));
        }
        None
    }

    fn next_deadline(&self, now: Instant, reading: bool) -> Instant {
        let mut deadline = self
            .next_ping
            .min(self.last_inbound + self.options.peer_silence_timeout);
        if !reading {
            // No resends while acks cannot be read; only never-sent input is due.
            if self.queue.has_unsent() && !self.queue.is_paused() {
                deadline = now;
            }
        } else if let Some(at) = self.queue.next_deadline(now.into_std()) {
            deadline = deadline.min(Instant::from_std(at));
        }
        if let Some(since) = self.closing_since {
            deadline = deadline.min(since + self.options.close_drain);
        }
        deadline
    }

    /// Processes deliverable messages, queues a pending resize, and transmits what is due.
    async fn pump(&mut self, socket: &mut Socket) -> Result<(), String> {
        while let Some(next) = self.window.peek_ready() {
            if is_terminal_output(next.payload_type) && !self.output_tx.is_closed() {
                let Ok(permit) = self.output_tx.try_reserve() else {
                    break;
                };
                let chunk = take_output_run(&mut self.window, &mut self.handshake);
                if !chunk.is_empty() {
                    permit.send(QueuedChunk::new(chunk, &self.options.held));
                }
            } else if let Some(frame) = self.window.pop_ready() {
                self.process(frame);
            }
        }
        if self.handshake.is_ready()
            && self.closing_since.is_none()
            && let Some(size) = self.pending_size.take()
        {
            if self.queue.has_room(64) {
                self.enqueue(PayloadType::Size, size.to_payload());
            } else {
                self.pending_size = Some(size);
            }
        }
        self.window_held.set(self.window.held_bytes());
        let mut fed = false;
        // Not reading (the consumer is behind): acks stay unread, so resending the head
        // would only add duplicates and count towards giving up; new input still goes out.
        let reading = self.window.wants_more();
        let now = Instant::now().into_std();
        while let Some(wire) = if reading {
            self.queue.poll_transmit(now)
        } else {
            self.queue.poll_unsent(now)
        } {
            socket
                .feed(Message::Binary(wire))
                .await
                .map_err(|e| e.to_string())?;
            fed = true;
        }
        if fed {
            socket.flush().await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Acts on one in-order, non-terminal stream message.
    fn process(&mut self, frame: Frame) {
        match frame.payload_type {
            PayloadType::Output | PayloadType::StdErr => self.handshake.on_output(),
            PayloadType::HandshakeRequest => {
                let reply = self.handshake.on_request(&frame.payload);
                match (reply.data_key, &self.options.kms) {
                    (Some(request), Some(kms)) => {
                        // The response goes once the data key is in (Event::DataKey).
                        self.data_key = Some(kms.source.generate_data_key(request));
                    }
                    _ => self.send_handshake_reply(HandshakeReply {
                        data_key: None,
                        ..reply
                    }),
                }
            }
            PayloadType::HandshakeComplete => {
                if let Err(error) = self.handshake.on_complete(&frame.payload) {
                    self.failure = Some(error.into());
                }
            }
            PayloadType::EncChallengeRequest => match self.handshake.on_challenge(&frame.payload) {
                Ok(answer) => self.enqueue(PayloadType::EncChallengeResponse, answer),
                Err(error) => self.failure = Some(error.into()),
            },
            PayloadType::ExitCode => match parse_exit_code(&frame.payload) {
                Ok(code) => self.exit_code = Some(code),
                Err(e) => tracing::debug!(error = %e, "ignoring malformed exit code payload"),
            },
            other => tracing::debug!(?other, "ignoring stream payload type"),
        }
    }

    fn send_handshake_reply(&mut self, reply: HandshakeReply) {
        self.enqueue(PayloadType::HandshakeResponse, reply.response.to_payload());
        if let Some(error) = reply.error {
            self.failure = Some(error.into());
        }
    }

    fn enqueue(&mut self, payload_type: PayloadType, payload: Bytes) {
        // A KMS-encrypted session seals terminal input (only PayloadType 1).
        let payload = match self.handshake.seal(payload_type, payload) {
            Ok(payload) => payload,
            Err(error) => {
                self.failure = Some(error.into());
                return;
            }
        };
        if let Err(e) = self.queue.enqueue(payload_type, payload) {
            // Callers check has_room first; reaching this means a logic error, not data loss.
            tracing::warn!(error = %e, "could not queue an outgoing message");
        }
    }

    async fn on_message(&mut self, message: Message, socket: &mut Socket) -> Option<ConnectionEnd> {
        let data = match message {
            Message::Binary(data) => data,
            Message::Text(text) => Bytes::from(text.as_str().to_owned()),
            Message::Close(frame) => {
                return Some(ConnectionEnd::Lost(format!(
                    "the service closed the websocket: {frame:?}"
                )));
            }
            _ => return None,
        };
        let mut frame = match Frame::decode_shared(&data) {
            Ok(frame) => frame,
            Err(e) => {
                // Not acked: the peer resends it, and the resend is what gets delivered.
                self.options.stats.count_refusal(&e);
                tracing::debug!(error = %e, "dropping an invalid frame without ack");
                return None;
            }
        };
        let now = Instant::now().into_std();
        match frame.message_type {
            MessageType::OutputStreamData => {
                self.queue.set_paused(false);
                // A KMS-encrypted session's output is opened here; what cannot be opened
                // ends the session (the digest already proved the bytes are the agent's).
                match self
                    .handshake
                    .open(frame.payload_type, frame.payload.clone())
                {
                    Ok(payload) => frame.payload = payload,
                    Err(error) => {
                        self.failure = Some(error.into());
                        return None;
                    }
                }
                let ack = Acknowledgement::of(&frame).to_frame();
                let arrival = self.window.offer(frame);
                if arrival == Arrival::Refused {
                    self.options.stats.count_window_refusal();
                }
                if arrival.should_ack() {
                    match ack.encode() {
                        Ok(wire) => {
                            // Flushed by the caller once the batch of messages is handled.
                            if let Err(e) = socket.feed(Message::Binary(wire)).await {
                                return Some(ConnectionEnd::Lost(e.to_string()));
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "could not encode an ack"),
                    }
                }
            }
            MessageType::Acknowledge => {
                self.queue.set_paused(false);
                match Acknowledgement::from_payload(&frame.payload) {
                    Ok(ack) => {
                        self.queue
                            .acknowledge(ack.acknowledged_message_sequence_number, now);
                    }
                    Err(e) => tracing::debug!(error = %e, "ignoring a malformed ack"),
                }
            }
            MessageType::ChannelClosed => {
                let closed = ChannelClosed::from_payload(&frame.payload).unwrap_or_default();
                return Some(ConnectionEnd::Finished(
                    CloseCause::ChannelClosed,
                    closed.output,
                ));
            }
            MessageType::StartPublication => self.queue.set_paused(false),
            MessageType::PausePublication => self.queue.set_paused(true),
            other => tracing::debug!(%other, "ignoring message type"),
        }
        None
    }

    /// Resumes the session and reopens the original stream URL with the new token.
    async fn reconnect(&mut self, lost: &str) -> Result<Socket, (CloseCause, String)> {
        let policy = self.options.reconnect;
        let mut delay = policy.initial_delay;
        let mut last_error = String::new();
        for attempt in 0..=policy.retries {
            if attempt > 0 {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = self.requests_rx.wait_for(|r| r.close) => {
                        return Err((CloseCause::ClosedByClient, "closed by the client".into()));
                    }
                }
                delay = (delay * 2).min(policy.max_delay);
            }
            if self.closing_since.is_some() {
                return Err((CloseCause::ClosedByClient, "closed by the client".into()));
            }
            match self.resumer.resume(&self.options.session_id).await {
                Ok(None) => {
                    return Err((
                        CloseCause::SessionTimedOut,
                        format!("Session: {} timed out.", self.options.session_id),
                    ));
                }
                Ok(Some(token)) => match dial(&self.stream_url, &token, &self.options).await {
                    Ok(socket) => {
                        // Counters, buffers and RTO carry over; everything unacked goes again.
                        self.queue.rewind();
                        self.queue.set_paused(false);
                        self.last_inbound = Instant::now();
                        self.next_ping = Instant::now();
                        return Ok(socket);
                    }
                    Err(e) => last_error = e.to_string(),
                },
                Err(e @ (ResumeError::Refused(_) | ResumeError::CredentialsExpired(_))) => {
                    let error = ChannelError::Resume(e);
                    let message = format!("connection lost ({lost}); {error}");
                    return Err((CloseCause::Failed(error), message));
                }
                Err(e) => last_error = e.to_string(),
            }
        }
        let error = ChannelError::ReconnectFailed {
            attempts: policy.retries + 1,
            last_error,
        };
        let message = format!("connection lost ({lost}); {error}");
        Err((CloseCause::Failed(error), message))
    }

    /// Hands remaining in-order output to the consumer, waiting at most `final_flush`;
    /// control payloads (the exit code) are processed even when output is abandoned.
    async fn flush_output(&mut self) {
        let deadline = Instant::now() + self.options.final_flush;
        let mut consumer_gone = false;
        while let Some(frame) = self.window.pop_ready() {
            if !is_terminal_output(frame.payload_type) {
                self.process(frame);
                continue;
            }
            if consumer_gone || frame.payload.is_empty() || self.output_tx.is_closed() {
                continue;
            }
            let chunk = QueuedChunk::new(frame.payload, &self.options.held);
            self.window_held.set(self.window.held_bytes());
            let sent = tokio::time::timeout_at(deadline, self.output_tx.send(chunk));
            consumer_gone = !matches!(sent.await, Ok(Ok(())));
        }
        self.window_held.set(self.window.held_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssm::resume::ScriptedResumer;

    /// The size of the future `f` returns, without making one.
    fn future_size<A, B, F: std::future::Future>(_: &impl FnOnce(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// The channel's task lives as long as the session, and an `async fn` reserves room
    /// for every future it awaits and keeps a copy of its arguments: the reconnect
    /// (ResumeSession, a new websocket with its TCP and TLS set-up) and the final flush run
    /// boxed, and the task's state and the socket come boxed, so an idle channel carries
    /// neither the rare calls nor two copies of itself.
    #[test]
    fn a_channels_task_does_not_reserve_room_for_a_reconnect() {
        let bytes = future_size(&ChannelTask::<ScriptedResumer>::run);
        let state = std::mem::size_of::<ChannelTask<ScriptedResumer>>();
        let socket = std::mem::size_of::<Socket>();
        // Unoptimised build (this test): 16,432 B with the reconnect and the final flush
        // inline, 6,544 B with them boxed, the task's state and the socket in it twice (an
        // `async fn` keeps its arguments beside the locals it moves them into). With both
        // boxed: 880 B, plus the state (1,456 B) and the socket (1,392 B) once each.
        println!("channel task: {bytes} B, its state {state} B, the socket {socket} B");
        assert!(
            bytes + state + socket <= 4 * 1024,
            "the channel's task reserves {bytes} B beside its state and socket"
        );
    }
}
