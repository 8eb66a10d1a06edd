//! Our data-channel client (`nodeshell::ssm`), with the receive window the gateway ships,
//! against the simulator's relay and agent: a firehose arrives complete, in order and
//! exactly once under each misbehaviour knob (two dropped sockets included), and an
//! interactive shell echoes, resizes and exits without reporting its exit status (the
//! official agent's PTY path sends no EXIT_CODE); a KMS-encrypted session (the account's
//! preferences name a key) works, and a role the key policy denies gets a typed error. The
//! simulator's KMS endpoint answers AWS's own KMS client.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use nodeshell::aws::{SsmSessions, WebIdentityRequest, assume_role_with_web_identity};
use nodeshell::gateway::config::live::{
    SSM_RECEIVE_EARLY_BYTES, SSM_RECEIVE_EARLY_MESSAGES, SSM_RECEIVE_WINDOW_BYTES,
    SSM_RECEIVE_WINDOW_MESSAGES,
};
use nodeshell::sim::config::{KmsKeyConfig, RoleConfig, SessionManagerPreferences};
use nodeshell::sim::{
    CallRecord, FIREHOSE_DOCUMENT, FaultKnobs, SimConfig, SimHandle, Simulator, firehose_bytes,
};
use nodeshell::ssm::channel::CLIENT_VERSION;
use nodeshell::ssm::payload::{Acknowledgement, OpenDataChannel};
use nodeshell::ssm::{
    ChannelError, CloseCause, DataChannel, DataChannelOptions, Frame, HandshakeError, MessageType,
    PayloadType, ReceiveConfig, Role,
};
use sha2::{Digest, Sha256};

const INSTANCE: &str = "i-0123456789abcdef0";

async fn start() -> (SimHandle, SsmSessions) {
    start_with(SimConfig::for_tests()).await
}

async fn start_with(config: SimConfig) -> (SimHandle, SsmSessions) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let sim = Simulator::start(config).await.expect("simulator starts");
    let endpoints = sim.aws_endpoints();
    let request = WebIdentityRequest {
        role_arn: sim.default_role_arn(),
        role_session_name: "ns-alice".to_string(),
        web_identity_token: sim.mint_token("alice").expect("token"),
        duration_seconds: None,
    };
    let creds = assume_role_with_web_identity(&endpoints, &request)
        .await
        .expect("assume role");
    let ssm = SsmSessions::new(&endpoints, &creds);
    (sim, ssm)
}

fn firehose_len() -> usize {
    std::env::var("NODESHELL_FIREHOSE_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50 * 1024 * 1024)
}

/// What one firehose run left to check beyond its bytes.
struct FirehoseRun {
    calls: Vec<CallRecord>,
    /// Messages our receive window refused (each resent only as the agent's oldest).
    refused: u64,
    /// Messages the agent's resend loop put on the wire again.
    agent_resends: u64,
}

/// Runs one firehose session with `knobs`, through the receive window the gateway ships,
/// and checks what arrived.
async fn firehose(name: &str, knobs: FaultKnobs, len: usize) -> FirehoseRun {
    firehose_with(SimConfig::for_tests(), name, knobs, len).await
}

/// Runs one firehose session with `knobs` on a simulator configured with `config`.
async fn firehose_with(
    config: SimConfig,
    name: &str,
    knobs: FaultKnobs,
    len: usize,
) -> FirehoseRun {
    let (sim, ssm) = start_with(config).await;
    sim.set_instance_faults(INSTANCE, knobs)
        .expect("instance exists");
    let params = HashMap::from([("bytes".to_string(), vec![len.to_string()])]);
    let stream = ssm
        .start_session(INSTANCE, Some(FIREHOSE_DOCUMENT), None, params)
        .await
        .expect("start firehose");
    let mut options = DataChannelOptions::new(stream.session_id.clone());
    options.reconnect.retries = 10;
    options.receive = ReceiveConfig {
        max_messages: SSM_RECEIVE_WINDOW_MESSAGES,
        max_bytes: SSM_RECEIVE_WINDOW_BYTES,
        max_early_messages: SSM_RECEIVE_EARLY_MESSAGES,
        max_early_bytes: SSM_RECEIVE_EARLY_BYTES,
    };
    let stats = options.stats.clone();
    let started = std::time::Instant::now();
    let mut channel = DataChannel::connect(
        &stream.stream_url,
        &stream.token_value,
        options,
        ssm.clone(),
    )
    .await
    .expect("connect");
    let mut hasher = Sha256::new();
    let mut received = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    loop {
        let chunk = tokio::time::timeout_at(deadline, channel.output().recv())
            .await
            .unwrap_or_else(|_| panic!("{name}: timed out after {received} bytes"));
        let Some(chunk) = chunk else { break };
        received += chunk.len();
        hasher.update(&chunk);
    }
    let reason = channel.closed().await;
    let elapsed = started.elapsed();
    let (agent_resends, _) = sim
        .agent_counters(&stream.session_id)
        .expect("the session is known");
    let refused = stats.refused_messages();
    println!(
        "{name}: {received} bytes in {:.2?} ({:.1} MB/s), close {:?}, {refused} refused, {agent_resends} agent resends",
        elapsed,
        received as f64 / 1e6 / elapsed.as_secs_f64().max(1e-9),
        reason.cause
    );
    assert_eq!(received, len, "{name}: byte count");
    let expected = Sha256::digest(firehose_bytes(len));
    assert_eq!(
        hasher.finalize(),
        expected,
        "{name}: content differs (lost, duplicated or reordered bytes)"
    );
    assert_eq!(
        reason.cause,
        CloseCause::ChannelClosed,
        "{name}: {reason:?}"
    );
    assert_eq!(
        reason.exit_code, None,
        "{name}: no EXIT_CODE is sent: {reason:?}"
    );
    let calls = sim.calls();
    sim.shutdown().await;
    FirehoseRun {
        calls,
        refused,
        agent_resends,
    }
}

#[tokio::test]
async fn firehose_clean() {
    firehose("clean", FaultKnobs::default(), firehose_len()).await;
}

#[tokio::test]
async fn firehose_drop() {
    let knobs = FaultKnobs {
        drop: 0.0005,
        ..FaultKnobs::default()
    };
    firehose("drop", knobs, firehose_len()).await;
}

#[tokio::test]
async fn firehose_duplicate() {
    let knobs = FaultKnobs {
        duplicate: 0.01,
        ..FaultKnobs::default()
    };
    firehose("duplicate", knobs, firehose_len()).await;
}

#[tokio::test]
async fn firehose_reorder() {
    let knobs = FaultKnobs {
        reorder: 0.01,
        ..FaultKnobs::default()
    };
    firehose("reorder", knobs, firehose_len()).await;
}

#[tokio::test]
async fn firehose_corrupt_digest() {
    let knobs = FaultKnobs {
        corrupt_digest: 0.0005,
        ..FaultKnobs::default()
    };
    firehose("corrupt", knobs, firehose_len()).await;
}

#[tokio::test]
async fn firehose_delayed_acks() {
    let knobs = FaultKnobs {
        ack_delay_ms: 150,
        ..FaultKnobs::default()
    };
    firehose("ack-delay", knobs, firehose_len()).await;
}

#[tokio::test]
async fn firehose_socket_closed_mid_stream() {
    // The default agent (only its oldest unacknowledged message resent, once per 100 ms tick,
    // nothing rewound) and the gateway's window. What died with each socket (the frames
    // queued towards it) comes back one per tick; meanwhile the agent sends on at full speed,
    // and the window keeps and acks all of it past the gap, so nothing else waits for a tick.
    // The stream has to outlast the recovery (about 100 ms per lost frame): the agent closes
    // 2 s after the program ends, losing whatever is unacknowledged, as the official one
    // does. So the program is paced (1 ms per 1 KiB message, as a shell printing a long log
    // is): at least 10 s of output still follow the second drop, however fast the machine,
    // where a full-speed stream on an idle machine ended before the recovery did.
    const FIRST_DROP: usize = 10_000;
    let knobs = FaultKnobs {
        close_after_frames: Some(FIRST_DROP as u64),
        close_times: 2,
        slow_agent_ms: 1,
        ..FaultKnobs::default()
    };
    let len = 30 * 1024 * 1024;
    let run = firehose("close-socket", knobs, len).await;
    let resumes = run
        .calls
        .iter()
        .filter(|c| c.operation == "ResumeSession" && c.error_code.is_none())
        .count();
    assert_eq!(resumes, 2, "one ResumeSession per dropped socket");
    // Everything the agent sends after the first drop (at most len/1 KiB - FIRST_DROP
    // messages) fits the early bound, so the window refuses nothing whatever the timing.
    assert!(
        (len / 1024).saturating_sub(FIRST_DROP) < SSM_RECEIVE_EARLY_MESSAGES,
        "the stream outgrew the test's premise"
    );
    assert_eq!(run.refused, 0, "messages refused by the receive window");
    // The agent's resends are printed, not bounded: besides what died with the sockets
    // (one per tick), it resends its oldest message on every tick the client does not read
    // because the consumer is behind, so their number follows the run's duration.
    println!("close-socket: {} agent resends", run.agent_resends);
}

#[tokio::test]
async fn firehose_across_two_hourly_recycles_arrives_whole() {
    // The service's hourly `1000 Bye`, every second here; a paced agent (2 ms between
    // messages) keeps the stream running across at least two of them, with the default
    // resend (nothing rewound).
    let mut config = SimConfig::for_tests();
    config.data_channel.recycle_seconds = 1;
    let knobs = FaultKnobs {
        slow_agent_ms: 2,
        ..FaultKnobs::default()
    };
    let calls = firehose_with(config, "recycle", knobs, 1024 * 1024)
        .await
        .calls;
    let resumes = calls
        .iter()
        .filter(|c| c.operation == "ResumeSession" && c.error_code.is_none())
        .count();
    assert!(resumes >= 2, "one ResumeSession per recycle: {resumes}");
}

#[tokio::test]
async fn the_service_recycles_a_connection_with_1000_bye_and_refuses_a_stale_token() {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let mut config = SimConfig::for_tests();
    config.data_channel.recycle_seconds = 1;
    config.data_channel.stream_token_seconds = 1;
    let (sim, ssm) = start_with(config).await;
    let stream = ssm
        .start_session(INSTANCE, None, None, HashMap::new())
        .await
        .expect("start");
    let mut wire = WireClient::open(&stream.stream_url, &stream.token_value).await;
    let opened = std::time::Instant::now();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), wire.socket.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => {}
            other => panic!("no close frame: {other:?}"),
        }
    };
    let close = close.expect("a close frame with a code");
    assert_eq!(close.code, CloseCode::Normal);
    assert_eq!(close.reason.as_str(), "Bye");
    assert!(opened.elapsed() >= Duration::from_millis(900));
    // The token is past its lifetime now (and ResumeSession has not been called).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut stale = WireClient::open(&stream.stream_url, &stream.token_value).await;
    let refused = loop {
        match tokio::time::timeout(Duration::from_secs(10), stale.socket.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => {}
            other => panic!("no close frame: {other:?}"),
        }
    };
    let refused = refused.expect("a close frame with a code");
    assert_eq!(refused.code, CloseCode::Policy);
    assert_eq!(refused.reason.as_str(), "token expired");
    // ResumeSession's fresh token opens it again.
    let token = ssm
        .resume_session(&stream.session_id)
        .await
        .expect("resume")
        .token_value;
    let mut fresh = WireClient::open(&stream.stream_url, &token).await;
    assert!(
        fresh.next_output().await.is_some(),
        "the shell's output flows"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn firehose_slow_agent() {
    // A slow agent pauses between chunks; a smaller stream keeps the test short.
    let knobs = FaultKnobs {
        slow_agent_ms: 2,
        ..FaultKnobs::default()
    };
    firehose("slow-agent", knobs, 512 * 1024).await;
}

#[tokio::test]
async fn agent_offline_stays_silent_until_terminated() {
    let (sim, ssm) = start().await;
    sim.set_instance_faults(
        INSTANCE,
        FaultKnobs {
            agent_offline: true,
            ..FaultKnobs::default()
        },
    )
    .expect("instance exists");
    let stream = ssm
        .start_session(INSTANCE, None, None, HashMap::new())
        .await
        .expect("start");
    let mut channel = DataChannel::connect(
        &stream.stream_url,
        &stream.token_value,
        DataChannelOptions::new(stream.session_id.clone()),
        ssm.clone(),
    )
    .await
    .expect("connect");
    let silent = tokio::time::timeout(Duration::from_secs(2), channel.output().recv()).await;
    assert!(silent.is_err(), "an offline agent sent output");
    ssm.terminate_session(&stream.session_id)
        .await
        .expect("terminate");
    let reason = tokio::time::timeout(Duration::from_secs(10), channel.closed())
        .await
        .expect("closed");
    assert_eq!(reason.cause, CloseCause::ChannelClosed, "{reason:?}");
    sim.shutdown().await;
}

/// Reads output until `needle` appears (or panics after 20 s); returns everything read.
async fn read_until(channel: &mut DataChannel, seen: &mut String, needle: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !seen.contains(needle) {
        match tokio::time::timeout_at(deadline, channel.output().recv()).await {
            Ok(Some(chunk)) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(None) => panic!("channel ended before {needle:?}; output so far: {seen:?}"),
            Err(_) => panic!("no {needle:?} within 20 s; output so far: {seen:?}"),
        }
    }
}

#[tokio::test]
async fn interactive_shell_echo_resize_and_an_exit_status_that_is_not_reported() {
    let (sim, ssm) = start().await;
    let stream = ssm
        .start_session(INSTANCE, None, Some("tests"), HashMap::new())
        .await
        .expect("start");
    let mut channel = DataChannel::connect(
        &stream.stream_url,
        &stream.token_value,
        DataChannelOptions::new(stream.session_id.clone()),
        ssm.clone(),
    )
    .await
    .expect("connect");
    let mut seen = String::new();
    channel
        .send_input(b"echo hello-$((40+2))\r")
        .await
        .expect("input");
    read_until(&mut channel, &mut seen, "hello-42").await;
    channel.resize(132, 43).expect("resize");
    // Give the resize a moment to land before asking the pty.
    tokio::time::sleep(Duration::from_millis(300)).await;
    channel.send_input(b"stty size\r").await.expect("input");
    read_until(&mut channel, &mut seen, "43 132").await;
    channel.send_input(b"exit 3\r").await.expect("input");
    let reason = tokio::time::timeout(Duration::from_secs(20), channel.closed())
        .await
        .expect("closed");
    assert_eq!(reason.cause, CloseCause::ChannelClosed, "{reason:?}");
    assert_eq!(
        reason.exit_code, None,
        "the shell document's agent sends no EXIT_CODE: {reason:?}"
    );
    assert_eq!(
        sim.session_status(&stream.session_id),
        Some((true, Some(3))),
        "the shell did exit with 3 on the node"
    );
    sim.shutdown().await;
}

/// A bare client on the wire: sends the open frame, then reads the agent's stream frames and
/// never acknowledges them, so every repeat it sees is the agent's own resend.
struct WireClient {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl WireClient {
    async fn open(stream_url: &str, token: &str) -> Self {
        use futures::SinkExt;
        let (mut socket, _) = tokio_tungstenite::connect_async(stream_url)
            .await
            .expect("websocket");
        let open = OpenDataChannel::client(token, "wire-client", CLIENT_VERSION).to_json();
        socket
            .send(tokio_tungstenite::tungstenite::Message::Text(open.into()))
            .await
            .expect("open frame");
        Self { socket }
    }

    /// The sequence number of the next `output_stream_data` frame (None: socket ended).
    async fn next_output(&mut self) -> Option<i64> {
        loop {
            let frame = self.next_frame().await?;
            if frame.message_type == MessageType::OutputStreamData {
                return Some(frame.sequence_number);
            }
        }
    }

    /// The next frame from the service (None: socket ended).
    async fn next_frame(&mut self) -> Option<Frame> {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let msg = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .expect("a frame within 30 s")?;
            match msg {
                Ok(Message::Binary(bytes)) => {
                    return Some(Frame::decode(&bytes).expect("decodable frame"));
                }
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                _ => return None,
            }
        }
    }

    /// Sends one input stream message as a client would.
    async fn send_input(&mut self, seq: i64, payload_type: PayloadType, payload: &'static [u8]) {
        use futures::SinkExt;
        let wire = Frame::stream(Role::Client, seq, payload_type, Bytes::from_static(payload))
            .encode()
            .expect("encode");
        self.socket
            .send(tokio_tungstenite::tungstenite::Message::Binary(wire))
            .await
            .expect("send");
    }

    /// The acknowledged sequence numbers, in arrival order, up to and including `last`.
    async fn acks_until(&mut self, last: i64) -> Vec<i64> {
        let mut acked = Vec::new();
        while acked.last() != Some(&last) {
            let frame = self.next_frame().await.expect("the socket stays open");
            if frame.message_type == MessageType::Acknowledge {
                let ack = Acknowledgement::from_payload(&frame.payload).expect("ack payload");
                acked.push(ack.acknowledged_message_sequence_number);
            }
        }
        acked
    }
}

/// The agent keeps reading and sending with no window (past the 4096 messages the simulator
/// used to stop at), resends only its oldest unacknowledged message, and rewinds nothing when
/// a client reattaches: after the reattach only message 0 comes again, never 1, 2, ….
#[tokio::test]
async fn the_agent_resends_only_its_oldest_message_and_rewinds_nothing() {
    let (sim, ssm) = start().await;
    let params = HashMap::from([("bytes".to_string(), vec![(200 * 1024 * 1024).to_string()])]);
    let stream = ssm
        .start_session(INSTANCE, Some(FIREHOSE_DOCUMENT), None, params)
        .await
        .expect("start firehose");
    let mut wire = WireClient::open(&stream.stream_url, &stream.token_value).await;
    let mut seen: HashMap<i64, u32> = HashMap::new();
    // Read until far past 4096 unacked messages and until message 0 came three times.
    let stall = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < 6000 || seen.get(&0).copied().unwrap_or(0) < 3 {
        assert!(
            tokio::time::Instant::now() < stall,
            "the agent stopped after {} unacknowledged messages",
            seen.len()
        );
        let seq = wire.next_output().await.expect("the stream goes on");
        *seen.entry(seq).or_default() += 1;
    }
    let repeated: Vec<_> = seen.iter().filter(|(s, n)| **s != 0 && **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "only the oldest is resent: {repeated:?}"
    );
    drop(wire);

    let resumed = ssm
        .resume_session(&stream.session_id)
        .await
        .expect("resume");
    let mut wire = WireClient::open(&stream.stream_url, &resumed.token_value).await;
    let mut zeros = 0;
    let mut rewound = Vec::new();
    while zeros < 2 {
        let seq = wire.next_output().await.expect("the stream goes on");
        if seq == 0 {
            zeros += 1;
        } else if seen.contains_key(&seq) {
            rewound.push(seq);
        }
        seen.insert(seq, 1);
    }
    assert!(
        rewound.is_empty(),
        "{} already-sent messages came again after the reattach, e.g. {:?}",
        rewound.len(),
        &rewound[..rewound.len().min(5)]
    );
    let (resends, not_kept) = sim
        .agent_counters(&stream.session_id)
        .expect("session exists");
    // At least two resends of message 0 before the reattach and two after it.
    assert!(resends >= 4, "{resends}");
    assert_eq!(not_kept, 0);
    sim.shutdown().await;
}

/// A size message the agent cannot parse is never acknowledged, and what follows it is
/// acknowledged (as an early message) but never reaches the shell, as with the official agent;
/// a well-formed one is acknowledged.
#[tokio::test]
async fn a_malformed_size_message_is_not_acknowledged() {
    let (sim, ssm) = start().await;
    for (size, acked_first) in [
        (&br#"{"cols":132,"rows":43}"#[..], vec![0, 1]),
        (&br#"{"cols":"wide","rows":43}"#[..], vec![1]),
    ] {
        let stream = ssm
            .start_session(INSTANCE, None, None, HashMap::new())
            .await
            .expect("start");
        let mut wire = WireClient::open(&stream.stream_url, &stream.token_value).await;
        wire.send_input(0, PayloadType::Size, size).await;
        wire.send_input(1, PayloadType::Output, b"echo after-$((40+2))\r")
            .await;
        // The agent handles one socket's frames in order: by the ack of 1, message 0 was
        // handled too.
        assert_eq!(
            wire.acks_until(1).await,
            acked_first,
            "{}",
            String::from_utf8_lossy(size)
        );
        if acked_first == [1] {
            // Sent again, it is refused again.
            wire.send_input(0, PayloadType::Size, size).await;
            wire.send_input(2, PayloadType::Output, b"\r").await;
            assert_eq!(wire.acks_until(2).await, vec![2]);
        }
        ssm.terminate_session(&stream.session_id)
            .await
            .expect("terminate");
    }
    sim.shutdown().await;
}

/// Input and acknowledgements lost by the knobs (not only output frames) are recovered by
/// retransmission: every input frame and every ack is lost for a while, then the command
/// still runs and its output arrives.
#[tokio::test]
async fn lost_input_and_lost_acks_are_recovered() {
    let (sim, ssm) = start().await;
    let stream = ssm
        .start_session(INSTANCE, None, None, HashMap::new())
        .await
        .expect("start");
    let mut channel = DataChannel::connect(
        &stream.stream_url,
        &stream.token_value,
        DataChannelOptions::new(stream.session_id.clone()),
        ssm.clone(),
    )
    .await
    .expect("connect");
    let mut seen = String::new();
    read_until(&mut channel, &mut seen, "$ ").await;
    // First every input frame is lost, then (input flowing) every ack in both directions; each
    // phase lasts until the knob has provably fired, then the link heals.
    let phases = [
        FaultKnobs {
            input_drop: 1.0,
            ..FaultKnobs::default()
        },
        FaultKnobs {
            ack_drop: 1.0,
            ..FaultKnobs::default()
        },
    ];
    for (phase, knobs) in phases.into_iter().enumerate() {
        sim.set_session_faults(&stream.session_id, knobs)
            .expect("session exists");
        if phase == 0 {
            channel
                .send_input(b"echo lost-$((40+2))\r")
                .await
                .expect("input");
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (input, acks) = sim
                .input_faults_fired(&stream.session_id)
                .expect("session exists");
            if (phase == 0 && input >= 2) || (phase == 1 && acks >= 2) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "phase {phase}: the knobs lost {input} input frames and {acks} acks"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    sim.set_session_faults(&stream.session_id, FaultKnobs::default())
        .expect("session exists");
    read_until(&mut channel, &mut seen, "lost-42").await;
    sim.shutdown().await;
}

const KMS_ALIAS: &str = "alias/nodeshell-sessions";

/// An account whose Session Manager preferences encrypt sessions with its one KMS key; the
/// key policy denies `deny_roles`.
fn kms_config(deny_roles: &[&str]) -> SimConfig {
    SimConfig {
        session_manager_preferences: SessionManagerPreferences {
            kms_key_id: Some(KMS_ALIAS.to_string()),
            ..SessionManagerPreferences::default()
        },
        kms_keys: vec![KmsKeyConfig {
            deny_roles: deny_roles.iter().map(|r| r.to_string()).collect(),
            ..KmsKeyConfig::default()
        }],
        ..SimConfig::for_tests()
    }
}

async fn connect_kms(ssm: &SsmSessions, kms: bool) -> (DataChannel, String) {
    let stream = ssm
        .start_session(INSTANCE, None, Some("tests"), HashMap::new())
        .await
        .expect("start");
    let mut options = DataChannelOptions::new(stream.session_id.clone());
    if kms {
        options.kms = Some(ssm.kms_options(INSTANCE));
    }
    let channel = DataChannel::connect(
        &stream.stream_url,
        &stream.token_value,
        options,
        ssm.clone(),
    )
    .await
    .expect("connect");
    (channel, stream.session_id)
}

#[tokio::test]
async fn kms_encrypted_shell_echoes_and_generates_its_key_as_the_person() {
    let (sim, ssm) = start_with(kms_config(&[])).await;
    let (mut channel, session_id) = connect_kms(&ssm, true).await;
    let mut seen = String::new();
    channel
        .send_input(b"echo sealed-$((40+2))\r")
        .await
        .expect("input");
    read_until(&mut channel, &mut seen, "sealed-42").await;
    channel.send_input(b"exit 0\r").await.expect("input");
    let reason = tokio::time::timeout(Duration::from_secs(20), channel.closed())
        .await
        .expect("closed");
    assert_eq!(reason.cause, CloseCause::ChannelClosed, "{reason:?}");
    let calls = sim.calls();
    let keys: Vec<&CallRecord> = calls
        .iter()
        .filter(|c| c.operation == "GenerateDataKey")
        .collect();
    assert_eq!(keys.len(), 1, "{calls:?}");
    assert_eq!(keys[0].error_code, None);
    assert_eq!(
        keys[0].principal_arn.as_deref(),
        Some("arn:aws:sts::123456789012:assumed-role/nodeshell-user/ns-alice")
    );
    assert!(
        sim.session_status(&session_id)
            .is_some_and(|(ended, _)| ended)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn kms_session_without_a_kms_client_fails_the_handshake() {
    let (sim, ssm) = start_with(kms_config(&[])).await;
    let (channel, _) = connect_kms(&ssm, false).await;
    let reason = tokio::time::timeout(Duration::from_secs(20), channel.closed())
        .await
        .expect("closed");
    assert_eq!(
        reason.cause,
        CloseCause::Failed(ChannelError::Handshake(HandshakeError::KmsUnavailable {
            key_id: KMS_ALIAS.to_string()
        })),
        "{reason:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn kms_key_policy_denying_the_role_ends_the_session_with_kms_denied() {
    let (sim, ssm) = start_with(kms_config(&["nodeshell-user"])).await;
    let (channel, _) = connect_kms(&ssm, true).await;
    let reason = tokio::time::timeout(Duration::from_secs(20), channel.closed())
        .await
        .expect("closed");
    let CloseCause::Failed(ChannelError::Handshake(HandshakeError::KmsDenied { key_id, message })) =
        &reason.cause
    else {
        panic!("not a KMS denial: {reason:?}");
    };
    assert_eq!(key_id, KMS_ALIAS);
    assert!(
        message.contains("is not authorized to perform: kms:GenerateDataKey"),
        "{message}"
    );
    let denied = sim
        .calls()
        .into_iter()
        .find(|c| c.operation == "GenerateDataKey")
        .expect("GenerateDataKey recorded");
    assert_eq!(denied.error_code.as_deref(), Some("AccessDeniedException"));
    sim.shutdown().await;
}

/// The simulator's KMS through AWS's own client: a data key round-trips only with its
/// context, and each refusal comes with KMS's code.
#[tokio::test]
async fn kms_endpoint_answers_the_aws_sdk_with_kms_shapes_and_codes() {
    let sim = Simulator::start(kms_config(&[]))
        .await
        .expect("simulator starts");
    let endpoints = sim.aws_endpoints();
    let request = WebIdentityRequest {
        role_arn: sim.default_role_arn(),
        role_session_name: "ns-alice".to_string(),
        web_identity_token: sim.mint_token("alice").expect("token"),
        duration_seconds: None,
    };
    let creds = assume_role_with_web_identity(&endpoints, &request)
        .await
        .expect("assume role");
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
        .region(aws_sdk_kms::config::Region::new(sim.region().to_string()))
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            creds.access_key_id.clone(),
            creds.secret_access_key().to_string(),
            Some(creds.session_token().to_string()),
            None,
            "test",
        ))
        .endpoint_url(sim.urls().kms.clone())
        .build();
    let kms = aws_sdk_kms::Client::from_conf(config);
    let context = HashMap::from([
        ("aws:ssm:SessionId".to_string(), "s-1".to_string()),
        ("aws:ssm:TargetId".to_string(), INSTANCE.to_string()),
    ]);
    let key = kms
        .generate_data_key()
        .key_id(KMS_ALIAS)
        .number_of_bytes(64)
        .set_encryption_context(Some(context.clone()))
        .send()
        .await
        .expect("GenerateDataKey");
    let plain = key.plaintext().expect("plaintext").as_ref().to_vec();
    assert_eq!(plain.len(), 64);
    assert_eq!(
        key.key_id(),
        Some("arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab")
    );
    let blob = key.ciphertext_blob().expect("blob").clone();
    let opened = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .set_encryption_context(Some(context.clone()))
        .send()
        .await
        .expect("Decrypt");
    assert_eq!(opened.plaintext().expect("plaintext").as_ref(), &plain[..]);
    let code = |e: &dyn aws_sdk_kms::error::ProvideErrorMetadata| e.code().map(str::to_string);
    let mut other = context.clone();
    other.insert("aws:ssm:SessionId".to_string(), "s-2".to_string());
    let wrong = kms
        .decrypt()
        .ciphertext_blob(blob)
        .set_encryption_context(Some(other))
        .send()
        .await
        .expect_err("another context");
    assert_eq!(code(&wrong).as_deref(), Some("InvalidCiphertextException"));
    let missing = kms
        .generate_data_key()
        .key_id("alias/none")
        .number_of_bytes(64)
        .send()
        .await
        .expect_err("unknown alias");
    assert_eq!(code(&missing).as_deref(), Some("NotFoundException"));
    let too_big = kms
        .generate_data_key()
        .key_id(KMS_ALIAS)
        .number_of_bytes(2000)
        .send()
        .await
        .expect_err("too many bytes");
    assert_eq!(code(&too_big).as_deref(), Some("ValidationException"));
    sim.set_kms_denied_roles(KMS_ALIAS, &["nodeshell-user"])
        .expect("key exists");
    let denied = kms
        .generate_data_key()
        .key_id(KMS_ALIAS)
        .number_of_bytes(64)
        .send()
        .await
        .expect_err("the key policy denies the role");
    assert_eq!(code(&denied).as_deref(), Some("AccessDeniedException"));
    sim.shutdown().await;
}

/// A role whose permission policy lacks the KMS statement (`denyActions:
/// [kms:GenerateDataKey]`), through AWS's own KMS client: GenerateDataKey is refused with
/// IAM's implicit deny on the key's ARN, and only that action.
#[tokio::test]
async fn kms_refuses_a_role_without_the_permission_with_iams_implicit_deny_through_the_sdk() {
    let mut config = kms_config(&[]);
    config.roles.push(RoleConfig {
        name: "no-kms".to_string(),
        deny_actions: vec!["kms:GenerateDataKey".to_string()],
        ..RoleConfig::default()
    });
    let sim = Simulator::start(config).await.expect("simulator starts");
    let request = WebIdentityRequest {
        role_arn: sim.role_arn("no-kms"),
        role_session_name: "ns-alice".to_string(),
        web_identity_token: sim.mint_token("alice").expect("token"),
        duration_seconds: None,
    };
    let creds = assume_role_with_web_identity(&sim.aws_endpoints(), &request)
        .await
        .expect("assume role");
    let kms = aws_sdk_kms::Client::from_conf(
        aws_sdk_kms::Config::builder()
            .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
            .region(aws_sdk_kms::config::Region::new(sim.region().to_string()))
            .credentials_provider(aws_sdk_kms::config::Credentials::new(
                creds.access_key_id.clone(),
                creds.secret_access_key().to_string(),
                Some(creds.session_token().to_string()),
                None,
                "test",
            ))
            .endpoint_url(sim.urls().kms.clone())
            .build(),
    );
    let denied = kms
        .generate_data_key()
        .key_id(KMS_ALIAS)
        .number_of_bytes(64)
        .send()
        .await
        .expect_err("no kms:GenerateDataKey in the role's policy");
    use aws_sdk_kms::error::ProvideErrorMetadata;
    assert_eq!(denied.code(), Some("AccessDeniedException"));
    assert_eq!(
        denied.message(),
        Some(
            "User: arn:aws:sts::123456789012:assumed-role/no-kms/ns-alice is not authorized to \
             perform: kms:GenerateDataKey on resource: \
             arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab \
             because no identity-based policy allows the kms:GenerateDataKey action"
        )
    );
    // Decrypt is another action: refused only on the blob, not on permission.
    let other = kms
        .decrypt()
        .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(b"not a blob".to_vec()))
        .send()
        .await
        .expect_err("not a blob");
    assert_eq!(other.code(), Some("InvalidCiphertextException"));
    sim.shutdown().await;
}

/// A client that opens the channel but never answers the handshake, as the agent's 15 s
/// timeout sees it: the first stream message is the HandshakeRequest (no shell output before
/// the handshake), and after 15 s the session ends with the agent's text.
#[tokio::test]
async fn a_client_that_never_answers_the_kms_handshake_is_closed_after_15_seconds() {
    use futures::{SinkExt, StreamExt};
    use nodeshell::ssm::frame::Frame;
    use nodeshell::ssm::payload::{Acknowledgement, ChannelClosed, OpenDataChannel};
    use nodeshell::ssm::{MessageType, PayloadType};
    use tokio_tungstenite::tungstenite::Message;

    let (sim, ssm) = start_with(kms_config(&[])).await;
    let stream = ssm
        .start_session(INSTANCE, None, None, HashMap::new())
        .await
        .expect("start");
    let (mut ws, _) = tokio_tungstenite::connect_async(stream.stream_url.as_str())
        .await
        .expect("websocket");
    let open = OpenDataChannel::client(&stream.token_value, "silent-client", "1.2.707.0");
    ws.send(Message::text(open.to_json())).await.expect("open");
    let started = std::time::Instant::now();
    let mut stream_types = Vec::new();
    let closed = loop {
        let message = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("the agent gives up within 30 s")
            .expect("socket open")
            .expect("frame");
        let Message::Binary(data) = message else {
            continue;
        };
        let frame = Frame::decode(&data).expect("valid frame");
        match frame.message_type {
            MessageType::OutputStreamData => {
                stream_types.push(frame.payload_type);
                let ack = Acknowledgement::of(&frame)
                    .to_frame()
                    .encode()
                    .expect("ack");
                ws.send(Message::Binary(ack)).await.expect("ack sent");
            }
            MessageType::ChannelClosed => {
                break ChannelClosed::from_payload(&frame.payload).expect("channel_closed");
            }
            _ => {}
        }
    };
    let waited = started.elapsed();
    assert_eq!(stream_types, vec![PayloadType::HandshakeRequest]);
    assert!(waited >= Duration::from_secs(15), "closed after {waited:?}");
    assert_eq!(
        closed.output,
        "Encountered error while initiating handshake. Handshake timed out. Please ensure that you have the latest version of the session manager plugin."
    );
    sim.shutdown().await;
}
