//! The channel task against an in-test agent double: a websocket server on loopback that
//! plays the agent with the same receive window and retransmit queue the library exports.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::channel::{CloseCause, DataChannel, DataChannelOptions, OUTPUT_CHUNK_MAX};
use super::frame::Frame;
use super::handshake::{ActionStatus, HandshakeError, HandshakeResponse};
use super::message::{MessageType, PayloadType, Role};
use super::payload::{
    Acknowledgement, ChannelClosed, OpenDataChannel, TerminalSize, exit_code_payload,
};
use super::receive::{ReceiveConfig, ReceiveWindow};
use super::resume::{NoResume, ResumeError, ScriptedResumer};
use super::retransmit::{RetransmitConfig, RetransmitQueue};
use super::{ChannelError, ReconnectPolicy};

const LIMIT: Duration = Duration::from_secs(10);

/// Accepts agent-side connections on 127.0.0.1 (port chosen by the OS).
struct AgentDouble {
    listener: TcpListener,
    url: String,
}

impl AgentDouble {
    async fn bind() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "ws://{}/v1/data-channel/sess-1?role=publish_subscribe",
            listener.local_addr().unwrap()
        );
        Self { listener, url }
    }

    async fn accept(&self) -> (WebSocketStream<TcpStream>, OpenDataChannel) {
        let (tcp, _) = timeout(LIMIT, self.listener.accept())
            .await
            .unwrap()
            .unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let first = timeout(LIMIT, ws.next()).await.unwrap().unwrap().unwrap();
        let Message::Text(text) = first else {
            panic!("first frame must be text, got {first:?}");
        };
        (ws, OpenDataChannel::from_json(text.as_str()).unwrap())
    }
}

/// The agent's stream state; survives the test's reconnects like the real agent's.
struct AgentSide {
    ws: WebSocketStream<TcpStream>,
    queue: RetransmitQueue,
    window: ReceiveWindow,
    /// Input messages delivered in order.
    input: Vec<Frame>,
    /// Sequence numbers the client acknowledged (with repeats).
    acked: Vec<i64>,
    /// Whether to acknowledge client input.
    ack_input: bool,
}

impl AgentSide {
    fn new(ws: WebSocketStream<TcpStream>) -> Self {
        Self {
            ws,
            queue: RetransmitQueue::new(Role::Agent, RetransmitConfig::default()),
            window: ReceiveWindow::new(ReceiveConfig::default()),
            input: Vec::new(),
            acked: Vec::new(),
            ack_input: true,
        }
    }

    /// Sends one frame; a client that already hung up is not an error for the double.
    async fn send_frame(&mut self, frame: &Frame) {
        let _ = self.ws.send(Message::Binary(frame.encode().unwrap())).await;
    }

    async fn send_stream(&mut self, payload_type: PayloadType, payload: &[u8]) {
        self.queue
            .enqueue(payload_type, Bytes::copy_from_slice(payload))
            .unwrap();
        self.transmit().await;
    }

    async fn transmit(&mut self) {
        while let Some(wire) = self.queue.poll_transmit(std::time::Instant::now()) {
            if self.ws.send(Message::Binary(wire)).await.is_err() {
                return;
            }
        }
    }

    /// Reads and handles one websocket message (or waits out `wait`); false once closed.
    async fn step(&mut self, wait: Duration) -> bool {
        let message = match timeout(wait, self.ws.next()).await {
            Err(_) => {
                self.transmit().await;
                return true;
            }
            Ok(Some(Ok(m))) => m,
            Ok(_) => return false,
        };
        let Message::Binary(data) = message else {
            return !matches!(message, Message::Close(_));
        };
        let frame = Frame::decode(&data).unwrap();
        match frame.message_type {
            MessageType::InputStreamData if self.ack_input => {
                let ack = Acknowledgement::of(&frame).to_frame();
                if self.window.offer(frame).should_ack() {
                    self.send_frame(&ack).await;
                }
                while let Some(f) = self.window.pop_ready() {
                    self.input.push(f);
                }
            }
            MessageType::Acknowledge => {
                let ack = Acknowledgement::from_payload(&frame.payload).unwrap();
                assert_eq!(ack.acknowledged_message_type, "output_stream_data");
                self.acked.push(ack.acknowledged_message_sequence_number);
                self.queue.acknowledge(
                    ack.acknowledged_message_sequence_number,
                    std::time::Instant::now(),
                );
            }
            _ => {}
        }
        self.transmit().await;
        true
    }

    async fn until(&mut self, done: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + LIMIT;
        while !done(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "agent double timed out"
            );
            if !self.step(Duration::from_millis(20)).await {
                panic!("client closed the socket early");
            }
        }
    }

    fn input_bytes(&self, payload_type: PayloadType) -> Vec<u8> {
        self.input
            .iter()
            .filter(|f| f.payload_type == payload_type)
            .flat_map(|f| f.payload.to_vec())
            .collect()
    }
}

fn fast_options() -> DataChannelOptions {
    let mut options = DataChannelOptions::new("sess-1");
    options.reconnect = ReconnectPolicy {
        retries: 2,
        initial_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
    };
    options
}

async fn read_exactly(channel: &mut DataChannel, len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < len {
        let chunk = timeout(LIMIT, channel.output().recv())
            .await
            .unwrap()
            .unwrap();
        out.extend_from_slice(&chunk);
    }
    out
}

#[tokio::test]
async fn output_arrives_in_order_exactly_once_and_is_acked() {
    let agent = AgentDouble::bind().await;
    let client = tokio::spawn({
        let url = agent.url.clone();
        async move {
            DataChannel::connect(&url, "tok-1", fast_options(), NoResume)
                .await
                .unwrap()
        }
    });
    let (ws, open) = agent.accept().await;
    assert_eq!(open.token_value, "tok-1");
    assert_eq!(open.message_schema_version, "1.0");
    assert!(open.client_version.is_some());
    let mut channel = client.await.unwrap();
    let mut side = AgentSide::new(ws);
    let frames: Vec<Frame> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Frame::stream(
                Role::Agent,
                i64::try_from(i).unwrap(),
                PayloadType::Output,
                Bytes::copy_from_slice(s.as_bytes()),
            )
        })
        .collect();
    for i in [2usize, 0, 1, 0] {
        side.send_frame(&frames[i]).await;
    }
    assert_eq!(read_exactly(&mut channel, 3).await, b"abc");
    side.until(|s| s.acked.len() >= 4).await;
    let distinct: BTreeSet<i64> = side.acked.iter().copied().collect();
    assert_eq!(distinct, BTreeSet::from([0, 1, 2]));
    // the duplicate was re-acked, not delivered again
    side.send_frame(&frames[1]).await;
    side.until(|s| s.acked.len() >= 5).await;
    assert!(
        timeout(Duration::from_millis(100), channel.output().recv())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn input_is_chunked_and_acked_and_resize_is_delivered() {
    let (_agent, mut side, mut channel) = connected(fast_options()).await;
    channel.resize(100, 30).unwrap();
    // input waits until the session is known to be a shell (first output)
    side.send_stream(PayloadType::Output, b"$ ").await;
    assert_eq!(read_exactly(&mut channel, 2).await, b"$ ");
    let typed = vec![b'x'; 1500];
    timeout(LIMIT, channel.send_input(&typed))
        .await
        .unwrap()
        .unwrap();
    side.until(|s| s.input.len() >= 3).await;
    assert_eq!(side.input_bytes(PayloadType::Output), typed);
    let chunks: Vec<usize> = side
        .input
        .iter()
        .filter(|f| f.payload_type == PayloadType::Output)
        .map(|f| f.payload.len())
        .collect();
    assert_eq!(chunks, vec![1024, 476]);
    let size = side
        .input
        .iter()
        .find(|f| f.payload_type == PayloadType::Size)
        .unwrap();
    assert_eq!(
        TerminalSize::from_payload(&size.payload).unwrap(),
        TerminalSize {
            cols: 100,
            rows: 30
        }
    );
    let seqs: Vec<i64> = side.input.iter().map(|f| f.sequence_number).collect();
    assert_eq!(seqs, vec![0, 1, 2]);
    // acked input is not retransmitted
    side.step(Duration::from_millis(400)).await;
    assert_eq!(side.input.len(), 3);
}

#[tokio::test]
async fn exit_code_and_channel_closed_end_the_channel_with_the_reason() {
    let (_agent, mut side, mut channel) = connected(fast_options()).await;
    side.send_stream(PayloadType::Output, b"bye\n").await;
    side.send_stream(PayloadType::ExitCode, &exit_code_payload(7))
        .await;
    side.until(|s| s.acked.len() >= 2).await;
    side.send_frame(&ChannelClosed::frame("sess-1", "Exiting session"))
        .await;
    let reason = timeout(LIMIT, channel.closed()).await.unwrap();
    assert_eq!(reason.cause, CloseCause::ChannelClosed);
    assert_eq!(reason.exit_code, Some(7));
    assert_eq!(reason.message, "Exiting session");
    assert_eq!(read_exactly(&mut channel, 4).await, b"bye\n");
    assert_eq!(timeout(LIMIT, channel.output().recv()).await.unwrap(), None);
    assert!(matches!(
        channel.send_input(b"x").await,
        Err(ChannelError::Closed)
    ));
}

#[tokio::test]
async fn reconnects_through_the_resumer_and_retransmits_unacked_input() {
    let agent = AgentDouble::bind().await;
    let resumer = Arc::new(ScriptedResumer::new([
        Err(ResumeError::Transient("throttled".into())),
        Ok(Some("tok-2".into())),
    ]));
    let url = agent.url.clone();
    let r = Arc::clone(&resumer);
    let connect = tokio::spawn(async move {
        DataChannel::connect(&url, "tok-1", fast_options(), r)
            .await
            .unwrap()
    });
    let (ws, first_open) = agent.accept().await;
    let mut channel = connect.await.unwrap();
    let mut side = AgentSide::new(ws);
    side.send_stream(PayloadType::Output, b"one").await;
    assert_eq!(read_exactly(&mut channel, 3).await, b"one");
    side.until(|s| s.acked.len() == 1).await;
    // the input reaches this connection but is never acked here
    side.ack_input = false;
    channel.send_input(b"ls\r").await.unwrap();
    side.step(Duration::from_millis(100)).await;
    side.ws.close(None).await.unwrap();
    drop(timeout(LIMIT, side.ws.next()).await.unwrap());

    let (ws, second_open) = agent.accept().await;
    assert_eq!(second_open.token_value, "tok-2");
    assert_eq!(second_open.client_id, first_open.client_id);
    assert_ne!(second_open.request_id, first_open.request_id);
    side.ws = ws;
    side.ack_input = true;
    side.until(|s| !s.input.is_empty()).await;
    assert_eq!(side.input[0].sequence_number, 0);
    assert_eq!(side.input[0].payload.as_ref(), b"ls\r");
    // the agent's counters carried over too: its next message is seq 1
    side.send_stream(PayloadType::Output, b"two").await;
    assert_eq!(read_exactly(&mut channel, 3).await, b"two");
    assert_eq!(resumer.calls(), 2);
    assert!(channel.into_parts().0.close_reason().is_none());
}

#[tokio::test]
async fn resume_reporting_a_timed_out_session_ends_the_channel() {
    let agent = AgentDouble::bind().await;
    let url = agent.url.clone();
    let connect = tokio::spawn(async move {
        DataChannel::connect(&url, "tok", fast_options(), ScriptedResumer::new([]))
            .await
            .unwrap()
    });
    let (mut ws, _) = agent.accept().await;
    let channel = connect.await.unwrap();
    ws.close(None).await.unwrap();
    let reason = timeout(LIMIT, channel.closed()).await.unwrap();
    assert_eq!(reason.cause, CloseCause::SessionTimedOut);
    assert_eq!(reason.message, "Session: sess-1 timed out.");
}

#[tokio::test]
async fn kms_handshake_without_a_kms_client_is_answered_failed_and_surfaces_a_typed_error() {
    let (_agent, mut side, channel) = connected(fast_options()).await;
    let request = br#"{"AgentVersion":"3.3.0.0","RequestedClientActions":[{"ActionType":"SessionType","ActionParameters":{"SessionType":"Standard_Stream","Properties":null}},{"ActionType":"KMSEncryption","ActionParameters":{"KMSKeyId":"alias/ssm","Challenge":"AAAA"}}]}"#;
    side.send_stream(PayloadType::HandshakeRequest, request)
        .await;
    side.until(|s| !s.input.is_empty()).await;
    assert_eq!(side.input[0].payload_type, PayloadType::HandshakeResponse);
    let response = HandshakeResponse::from_payload(&side.input[0].payload).unwrap();
    assert_eq!(
        response.processed_client_actions[1].action_status,
        ActionStatus::Failed
    );
    let reason = timeout(LIMIT, channel.closed()).await.unwrap();
    assert_eq!(
        reason.cause,
        CloseCause::Failed(ChannelError::Handshake(HandshakeError::KmsUnavailable {
            key_id: "alias/ssm".into()
        }))
    );
}

#[tokio::test]
async fn a_slow_consumer_holds_the_agent_back_and_nothing_is_lost() {
    const BIG: usize = OUTPUT_CHUNK_MAX / 2 + 1;
    let mut options = fast_options();
    options.receive = ReceiveConfig {
        max_messages: 4,
        max_bytes: 1 << 20,
        max_early_messages: 4,
        max_early_bytes: 1 << 20,
    };
    options.output_buffer = 2;
    let (_agent, mut side, mut channel) = connected(options).await;
    let agent_task = tokio::spawn(async move {
        // Larger than half an output chunk, so each chunk carries exactly one message and
        // the bound below counts messages.
        for i in 0..30u8 {
            side.queue
                .enqueue(PayloadType::Output, Bytes::from(vec![b'a' + i % 26; BIG]))
                .unwrap();
        }
        side.transmit().await;
        let until = tokio::time::Instant::now() + Duration::from_millis(500);
        while tokio::time::Instant::now() < until {
            side.step(Duration::from_millis(20)).await;
        }
        let accepted_while_stalled: BTreeSet<i64> = side.acked.iter().copied().collect();
        side.until(|s| s.queue.is_empty()).await;
        accepted_while_stalled.len()
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    let received = read_exactly(&mut channel, 30 * BIG).await;
    let expected: Vec<u8> = (0..30u8).flat_map(|i| vec![b'a' + i % 26; BIG]).collect();
    assert_eq!(received, expected);
    let accepted_while_stalled = timeout(LIMIT, agent_task).await.unwrap().unwrap();
    // window (4) plus the output buffer (2): the rest waited at the agent
    assert!(
        accepted_while_stalled <= 6,
        "accepted {accepted_while_stalled}"
    );
}

/// The real agent has no send window and resends only its oldest unacked message, once per
/// timeout: a client that refuses what its consumer has no room for makes it crawl. So the
/// channel stops reading instead, and the agent's sends wait in TCP.
#[tokio::test]
async fn a_stalled_consumer_stops_the_reading_so_nothing_is_refused() {
    const BIG: usize = OUTPUT_CHUNK_MAX / 2 + 1;
    const COUNT: u8 = 30;
    let mut options = fast_options();
    options.receive = ReceiveConfig {
        max_messages: 4,
        max_bytes: 1 << 20,
        max_early_messages: 4,
        max_early_bytes: 1 << 20,
    };
    options.output_buffer = 2;
    let (_agent, mut side, mut channel) = connected(options).await;
    let agent_task = tokio::spawn(async move {
        for i in 0..COUNT {
            side.queue
                .enqueue(PayloadType::Output, Bytes::from(vec![b'a' + i % 26; BIG]))
                .unwrap();
        }
        // Every message once and never again: a refused one would be lost for good.
        while let Some(wire) = side.queue.poll_unsent(std::time::Instant::now()) {
            side.ws.send(Message::Binary(wire)).await.unwrap();
        }
        let mut acked = BTreeSet::new();
        while acked.len() < usize::from(COUNT) {
            let message = timeout(LIMIT, side.ws.next()).await;
            let Ok(Some(Ok(message))) = message else {
                panic!("no more acks after {acked:?}: {message:?}");
            };
            if let Message::Binary(data) = message {
                let frame = Frame::decode(&data).unwrap();
                if frame.message_type == MessageType::Acknowledge {
                    let ack = Acknowledgement::from_payload(&frame.payload).unwrap();
                    acked.insert(ack.acknowledged_message_sequence_number);
                }
            }
        }
        acked
    });
    // The consumer stalls well past the window and queue bounds, then reads everything.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let received = read_exactly(&mut channel, usize::from(COUNT) * BIG).await;
    let expected: Vec<u8> = (0..COUNT).flat_map(|i| vec![b'a' + i % 26; BIG]).collect();
    assert!(received == expected, "output lost or reordered");
    let acked = timeout(LIMIT, agent_task).await.unwrap().unwrap();
    assert_eq!(acked, (0..i64::from(COUNT)).collect::<BTreeSet<_>>());
}

#[tokio::test]
async fn output_ready_together_reaches_the_consumer_in_one_chunk() {
    let (_agent, mut side, mut channel) = connected(fast_options()).await;
    // Early messages wait in the window until the gap is filled; then all are ready at once.
    for seq in 1..20i64 {
        let body = Bytes::from(vec![b'a' + u8::try_from(seq).unwrap(); 100]);
        side.send_frame(&Frame::stream(Role::Agent, seq, PayloadType::Output, body))
            .await;
    }
    side.until(|s| s.acked.len() >= 19).await;
    side.send_frame(&Frame::stream(
        Role::Agent,
        0,
        PayloadType::Output,
        Bytes::from(vec![b'a'; 100]),
    ))
    .await;
    let chunk = timeout(LIMIT, channel.output().recv())
        .await
        .unwrap()
        .unwrap();
    let expected: Vec<u8> = (0..20u8).flat_map(|i| vec![b'a' + i; 100]).collect();
    assert_eq!(chunk.as_ref(), expected.as_slice());
}

async fn connected(options: DataChannelOptions) -> (AgentDouble, AgentSide, DataChannel) {
    let agent = AgentDouble::bind().await;
    let url = agent.url.clone();
    let connect = tokio::spawn(async move {
        DataChannel::connect(&url, "tok", options, NoResume)
            .await
            .unwrap()
    });
    let (ws, _) = agent.accept().await;
    let channel = connect.await.unwrap();
    (agent, AgentSide::new(ws), channel)
}

#[tokio::test]
async fn a_keepalive_ping_follows_the_open_frame() {
    let (_agent, mut side, _channel) = connected(fast_options()).await;
    let next = timeout(LIMIT, side.ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next, Message::Ping(Bytes::from_static(b"keepalive")));
}

#[tokio::test]
async fn pause_publication_holds_input_until_start_publication() {
    let (_agent, mut side, mut channel) = connected(fast_options()).await;
    side.send_stream(PayloadType::Output, b"$ ").await;
    assert_eq!(read_exactly(&mut channel, 2).await, b"$ ");
    side.send_frame(&Frame::control(MessageType::PausePublication, Bytes::new()))
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    channel.send_input(b"a").await.unwrap();
    for _ in 0..4 {
        side.step(Duration::from_millis(100)).await;
    }
    assert!(side.input.is_empty(), "input was sent while paused");
    side.send_frame(&Frame::control(MessageType::StartPublication, Bytes::new()))
        .await;
    side.until(|s| !s.input.is_empty()).await;
    assert_eq!(side.input[0].payload.as_ref(), b"a");
}

#[tokio::test]
async fn input_waits_for_handshake_complete() {
    let (_agent, mut side, channel) = connected(fast_options()).await;
    let request = super::handshake::HandshakeRequest::session_type("3.3.0.0", "Standard_Stream");
    side.send_stream(PayloadType::HandshakeRequest, &request.to_payload())
        .await;
    side.until(|s| !s.input.is_empty()).await;
    let response = HandshakeResponse::from_payload(&side.input[0].payload).unwrap();
    assert!(response.all_succeeded());
    channel.send_input(b"x").await.unwrap();
    channel.resize(80, 24).unwrap();
    for _ in 0..3 {
        side.step(Duration::from_millis(100)).await;
    }
    assert_eq!(
        side.input.len(),
        1,
        "input went out before HandshakeComplete"
    );
    let complete = super::handshake::HandshakeComplete {
        handshake_time_to_complete: 1_000_000,
        customer_message: String::new(),
    };
    side.send_stream(PayloadType::HandshakeComplete, &complete.to_payload())
        .await;
    side.until(|s| s.input.len() >= 3).await;
    assert_eq!(side.input_bytes(PayloadType::Output), b"x");
    assert!(
        side.input
            .iter()
            .any(|f| f.payload_type == PayloadType::Size)
    );
}

#[tokio::test]
async fn close_drains_input_and_reports_closed_by_client() {
    let (_agent, mut side, mut channel) = connected(fast_options()).await;
    side.send_stream(PayloadType::Output, b"$ ").await;
    assert_eq!(read_exactly(&mut channel, 2).await, b"$ ");
    channel.send_input(b"exit\r").await.unwrap();
    channel.close();
    side.until(|s| !s.input.is_empty()).await;
    let reason = timeout(LIMIT, channel.closed()).await.unwrap();
    assert_eq!(reason.cause, CloseCause::ClosedByClient);
    assert_eq!(side.input[0].payload.as_ref(), b"exit\r");
}

#[tokio::test]
async fn corrupted_frames_are_dropped_without_an_ack() {
    let (_agent, mut side, mut channel) = connected(fast_options()).await;
    let good = Frame::stream(
        Role::Agent,
        0,
        PayloadType::Output,
        Bytes::from_static(b"a"),
    );
    let mut bad = good.encode().unwrap().to_vec();
    bad[120] ^= 0xff;
    side.ws
        .send(Message::Binary(Bytes::from(bad)))
        .await
        .unwrap();
    for _ in 0..2 {
        side.step(Duration::from_millis(100)).await;
    }
    assert!(side.acked.is_empty());
    side.send_frame(&good).await;
    assert_eq!(read_exactly(&mut channel, 1).await, b"a");
    side.until(|s| s.acked == vec![0]).await;
}

/// Digest mismatches are counted and recovered, not fatal: a bad `output_stream_data` is
/// neither acked nor delivered, the count says so, and the agent's resend is delivered once.
#[tokio::test]
async fn a_digest_mismatch_is_dropped_unacked_counted_and_recovered_by_the_resend() {
    let options = fast_options();
    let stats = options.stats.clone();
    let (_agent, mut side, mut channel) = connected(options).await;
    let good = Frame::stream(
        Role::Agent,
        0,
        PayloadType::Output,
        Bytes::from_static(b"hello"),
    );
    let mut bad = good.encode().unwrap().to_vec();
    bad[122] ^= 0x20; // "heLlo": the digest no longer matches
    for _ in 0..2 {
        side.ws
            .send(Message::Binary(Bytes::from(bad.clone())))
            .await
            .unwrap();
    }
    for _ in 0..3 {
        side.step(Duration::from_millis(100)).await;
    }
    assert!(side.acked.is_empty(), "a corrupted frame was acked");
    assert!(
        timeout(Duration::from_millis(100), channel.output().recv())
            .await
            .is_err(),
        "a corrupted frame was delivered"
    );
    assert_eq!(stats.digest_mismatches(), 2);
    side.send_frame(&good).await;
    side.send_frame(&good).await; // a duplicate resend: re-acked, not delivered again
    side.until(|s| s.acked == vec![0, 0]).await;
    assert_eq!(read_exactly(&mut channel, 5).await, b"hello");
    assert!(
        timeout(Duration::from_millis(100), channel.output().recv())
            .await
            .is_err()
    );
    assert_eq!(stats.digest_mismatches(), 2);
    assert!(
        timeout(Duration::from_millis(100), channel.closed())
            .await
            .is_err(),
        "the channel ended"
    );
}

/// The bridge's publication messages (empty payload, all-zero digest) are accepted and
/// act: pause holds input back, start lets it go; nothing is counted as a mismatch.
#[tokio::test]
async fn publication_messages_with_a_zero_digest_pause_and_resume_input() {
    let options = fast_options();
    let stats = options.stats.clone();
    let (_agent, mut side, mut channel) = connected(options).await;
    side.send_stream(PayloadType::Output, b"$ ").await;
    assert_eq!(read_exactly(&mut channel, 2).await, b"$ ");
    let zero_digest = |message_type| {
        let mut wire = Frame::control(message_type, Bytes::new())
            .encode()
            .unwrap()
            .to_vec();
        wire[80..112].fill(0);
        Message::Binary(Bytes::from(wire))
    };
    side.ws
        .send(zero_digest(MessageType::PausePublication))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    channel.send_input(b"a").await.unwrap();
    for _ in 0..4 {
        side.step(Duration::from_millis(100)).await;
    }
    assert!(side.input.is_empty(), "input was sent while paused");
    side.ws
        .send(zero_digest(MessageType::StartPublication))
        .await
        .unwrap();
    side.until(|s| !s.input.is_empty()).await;
    assert_eq!(side.input[0].payload.as_ref(), b"a");
    assert_eq!(stats.digest_mismatches(), 0);
}
