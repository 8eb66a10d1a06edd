//! JSON and text payloads carried by data-channel messages, with the field names and order
//! the official client and agent emit.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::frame::Frame;
use super::message::{MessageType, PayloadType};

/// Why a payload could not be built or read.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The JSON did not have the expected shape.
    #[error(
        "malformed {what} payload: {source}; the peer sent JSON this client does not understand"
    )]
    Json {
        /// Which payload was being read.
        what: &'static str,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// The bytes were not the expected text.
    #[error("malformed {0} payload: expected UTF-8 text in the documented format")]
    Text(&'static str),
}

fn to_json<T: Serialize>(value: &T) -> Bytes {
    // Serialising these plain structs cannot fail (string keys, no maps with non-string keys).
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

fn from_json<'a, T: Deserialize<'a>>(
    what: &'static str,
    bytes: &'a [u8],
) -> Result<T, PayloadError> {
    serde_json::from_slice(bytes).map_err(|source| PayloadError::Json { what, source })
}

/// The first (text) websocket frame that authenticates a data-channel connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OpenDataChannel {
    /// Always `1.0`.
    pub message_schema_version: String,
    /// Fresh UUID per open.
    pub request_id: String,
    /// The token from StartSession/ResumeSession (client) or CreateDataChannel (agent).
    pub token_value: String,
    /// Agent variant only: the instance's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_instance_id: Option<String>,
    /// Client: one UUID per process, reused on reconnect.
    pub client_id: String,
    /// Client variant: the plugin version this client claims compatibility with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_version: Option<String>,
}

impl OpenDataChannel {
    /// The client's open frame: schema 1.0, a fresh RequestId.
    pub fn client(token: &str, client_id: &str, client_version: &str) -> Self {
        Self {
            message_schema_version: "1.0".into(),
            request_id: Uuid::new_v4().to_string(),
            token_value: token.into(),
            client_instance_id: None,
            client_id: client_id.into(),
            client_version: Some(client_version.into()),
        }
    }

    /// The JSON text sent as the first websocket frame.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses an open frame received by a server.
    pub fn from_json(text: &str) -> Result<Self, PayloadError> {
        from_json("open data channel", text.as_bytes())
    }
}

/// Payload of an `acknowledge` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Acknowledgement {
    /// The acknowledged message's type (`input_stream_data` or `output_stream_data`).
    pub acknowledged_message_type: String,
    /// The acknowledged message's id in hyphenated RFC order.
    pub acknowledged_message_id: String,
    /// The acknowledged message's sequence number: what receivers match on.
    pub acknowledged_message_sequence_number: i64,
    /// Always true from the official peers.
    pub is_sequential_message: bool,
}

impl Acknowledgement {
    /// The acknowledgement of `frame`.
    pub fn of(frame: &Frame) -> Self {
        Self {
            acknowledged_message_type: frame.message_type.as_str().to_owned(),
            acknowledged_message_id: frame.message_id.hyphenated().to_string(),
            acknowledged_message_sequence_number: frame.sequence_number,
            is_sequential_message: true,
        }
    }

    /// The `acknowledge` control frame carrying this payload (seq 0, flags SYN|FIN).
    pub fn to_frame(&self) -> Frame {
        Frame::control(MessageType::Acknowledge, to_json(self))
    }

    /// Reads an ack payload.
    pub fn from_payload(bytes: &[u8]) -> Result<Self, PayloadError> {
        from_json("acknowledge", bytes)
    }
}

/// Payload of `channel_closed`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ChannelClosed {
    /// Id of the closing message.
    pub message_id: String,
    /// Epoch milliseconds, as a string.
    pub created_date: String,
    /// Destination of the message.
    pub destination_id: String,
    /// The SSM session id.
    pub session_id: String,
    /// `channel_closed`.
    pub message_type: String,
    /// Schema version number.
    pub schema_version: u32,
    /// The reason text shown to the user (may be empty).
    pub output: String,
}

impl ChannelClosed {
    /// Reads a channel_closed payload; an empty payload means "no reason given".
    pub fn from_payload(bytes: &[u8]) -> Result<Self, PayloadError> {
        if bytes.is_empty() {
            return Ok(Self::default());
        }
        from_json("channel_closed", bytes)
    }

    /// The `channel_closed` control frame for a session with the given reason text.
    pub fn frame(session_id: &str, output: &str) -> Frame {
        let id = Uuid::new_v4();
        let body = Self {
            message_id: id.to_string(),
            created_date: super::frame::now_millis().to_string(),
            destination_id: String::new(),
            session_id: session_id.into(),
            message_type: MessageType::ChannelClosed.as_str().into(),
            schema_version: 1,
            output: output.into(),
        };
        Frame {
            message_id: id,
            ..Frame::control(MessageType::ChannelClosed, to_json(&body))
        }
    }
}

/// Terminal size, PayloadType 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    /// Columns.
    pub cols: u32,
    /// Rows.
    pub rows: u32,
}

impl TerminalSize {
    /// The JSON payload.
    pub fn to_payload(&self) -> Bytes {
        to_json(self)
    }

    /// Reads a size payload.
    pub fn from_payload(bytes: &[u8]) -> Result<Self, PayloadError> {
        from_json("size", bytes)
    }
}

/// Payload of `agent_session_state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentSessionState {
    /// Always 1.
    pub schema_version: u32,
    /// `Connected` or `Terminating`.
    pub session_state: String,
    /// The SSM session id.
    pub session_id: String,
}

impl AgentSessionState {
    /// The control frame carrying this state.
    pub fn to_frame(&self) -> Frame {
        Frame::control(MessageType::AgentSessionState, to_json(self))
    }

    /// Reads a state payload.
    pub fn from_payload(bytes: &[u8]) -> Result<Self, PayloadError> {
        from_json("agent_session_state", bytes)
    }
}

/// The PayloadType 12 text `EXIT_CODE: <n>`.
pub fn exit_code_payload(code: i32) -> Bytes {
    Bytes::from(format!("EXIT_CODE: {code}"))
}

/// Reads an `EXIT_CODE: <n>` payload.
pub fn parse_exit_code(bytes: &[u8]) -> Result<i32, PayloadError> {
    let text = std::str::from_utf8(bytes).map_err(|_| PayloadError::Text("exit code"))?;
    text.trim()
        .strip_prefix("EXIT_CODE:")
        .and_then(|n| n.trim().parse().ok())
        .ok_or(PayloadError::Text("exit code"))
}

/// PayloadType 10 values (4-byte big-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagMessage {
    /// 1: the local port peer disconnected.
    DisconnectToPort,
    /// 2: end the session.
    TerminateSession,
    /// 3: connecting to the remote port failed.
    ConnectToPortError,
}

impl FlagMessage {
    /// The 4-byte payload.
    pub fn to_payload(self) -> Bytes {
        let n: u32 = match self {
            Self::DisconnectToPort => 1,
            Self::TerminateSession => 2,
            Self::ConnectToPortError => 3,
        };
        Bytes::copy_from_slice(&n.to_be_bytes())
    }

    /// Reads a 4-byte flag payload (None for other lengths or values).
    pub fn from_payload(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 4] = bytes.try_into().ok()?;
        match u32::from_be_bytes(arr) {
            1 => Some(Self::DisconnectToPort),
            2 => Some(Self::TerminateSession),
            3 => Some(Self::ConnectToPortError),
            _ => None,
        }
    }
}

/// Whether a frame's payload type carries terminal bytes for the consumer.
pub fn is_terminal_output(payload_type: PayloadType) -> bool {
    matches!(payload_type, PayloadType::Output | PayloadType::StdErr)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn ack_payload_matches_the_fact_sheet_vector() {
        let ack = Acknowledgement {
            acknowledged_message_type: "input_stream_data".into(),
            acknowledged_message_id: "dd01e56b-ff48-483e-a508-b5f073f31b16".into(),
            acknowledged_message_sequence_number: 1,
            is_sequential_message: true,
        };
        let frame = ack.to_frame();
        assert_eq!(frame.payload.len(), 175);
        let sha: String = Sha256::digest(&frame.payload)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            sha,
            "6afd587c84530613330469528ae938c01508c3cdf40c01cadbed6e022ce19a90"
        );
        let wire = frame.encode().unwrap();
        assert_eq!(&wire[4..36], b"acknowledge                     ");
        assert_eq!(&wire[48..56], &[0; 8]);
        assert_eq!(&wire[56..64], &[0, 0, 0, 0, 0, 0, 0, 3]);
        assert_eq!(&wire[112..116], &[0; 4]);
        assert_eq!(&wire[116..120], &[0, 0, 0, 0xaf]);
        assert_eq!(Acknowledgement::from_payload(&frame.payload).unwrap(), ack);
    }

    #[test]
    fn open_frame_keeps_the_go_field_order() {
        let open = OpenDataChannel {
            message_schema_version: "1.0".into(),
            request_id: "r".into(),
            token_value: "t".into(),
            client_instance_id: None,
            client_id: "c".into(),
            client_version: Some("1.2.707.0".into()),
        };
        assert_eq!(
            open.to_json(),
            r#"{"MessageSchemaVersion":"1.0","RequestId":"r","TokenValue":"t","ClientId":"c","ClientVersion":"1.2.707.0"}"#
        );
        assert_eq!(OpenDataChannel::from_json(&open.to_json()).unwrap(), open);
    }

    #[test]
    fn channel_closed_fixture_parses() {
        let json = br#"{"MessageType":"channel_closed","MessageId":"m","CreatedDate":"1503434274948","SessionId":"s","SchemaVersion":1,"Output":"payload"}"#;
        let closed = ChannelClosed::from_payload(json).unwrap();
        assert_eq!(closed.output, "payload");
        assert_eq!(closed.created_date, "1503434274948");
        assert_eq!(ChannelClosed::from_payload(b"").unwrap().output, "");
        let frame = ChannelClosed::frame("s", "bye");
        assert_eq!(
            ChannelClosed::from_payload(&frame.payload).unwrap().output,
            "bye"
        );
    }

    #[test]
    fn size_and_exit_code_payloads() {
        let size = TerminalSize {
            cols: 120,
            rows: 40,
        };
        assert_eq!(size.to_payload().as_ref(), br#"{"cols":120,"rows":40}"#);
        assert_eq!(exit_code_payload(3).as_ref(), b"EXIT_CODE: 3");
        assert_eq!(parse_exit_code(b"EXIT_CODE: 3").unwrap(), 3);
        assert_eq!(parse_exit_code(b"EXIT_CODE: -1\n").unwrap(), -1);
        assert!(parse_exit_code(b"3").is_err());
    }

    #[test]
    fn flag_payloads_are_big_endian() {
        assert_eq!(
            FlagMessage::TerminateSession.to_payload().as_ref(),
            &[0, 0, 0, 2]
        );
        assert_eq!(
            FlagMessage::from_payload(&[0, 0, 0, 2]),
            Some(FlagMessage::TerminateSession)
        );
        assert_eq!(FlagMessage::from_payload(&[0, 2]), None);
    }

    /// The seed corpus of `fuzz/fuzz_targets/frame_decode.rs` (see `e2e/scripts/fuzz.sh`):
    /// one valid frame per shape the peers exchange, with fixed ids and times so the files are
    /// stable. Valid frames pass the digest check, so the fuzzer starts inside the payload
    /// parsers instead of spending its time guessing a SHA-256.
    fn fuzz_seed_frames() -> Vec<(&'static str, Frame, PayloadType)> {
        use crate::ssm::handshake::{HandshakeComplete, HandshakeRequest, RequestedClientAction};
        use crate::ssm::message::{FLAGS_CONTROL, Role};
        let fixed = |mut f: Frame, n: u128| {
            f.created_date = 1_764_950_400_000;
            f.message_id = Uuid::from_u128(0x6f1c_0d2e_4b7a_4c11_9a3e_0000_0000_0000 + n);
            f
        };
        let output = |seq: i64, payload_type: PayloadType, payload: &[u8], n: u128| {
            fixed(
                Frame::stream(
                    Role::Agent,
                    seq,
                    payload_type,
                    Bytes::copy_from_slice(payload),
                ),
                n,
            )
        };
        let input = |seq: i64, payload_type: PayloadType, payload: Bytes, n: u128| {
            fixed(Frame::stream(Role::Client, seq, payload_type, payload), n)
        };
        let handshake_request = HandshakeRequest::session_type("3.3.1142.0", "Standard_Stream");
        let mut kms_request = handshake_request.clone();
        kms_request.requested_client_actions.insert(
            0,
            RequestedClientAction {
                action_type: crate::ssm::handshake::ACTION_KMS_ENCRYPTION.into(),
                action_parameters: serde_json::json!({
                    "KMSKeyId": "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
                }),
            },
        );
        let complete = HandshakeComplete {
            handshake_time_to_complete: 41_000_000,
            customer_message: String::new(),
        };
        let first_output = output(0, PayloadType::Output, b"sh-5.2$ ", 1);
        let mut ack = Acknowledgement::of(&first_output).to_frame();
        ack = fixed(ack, 2);
        let mut closed = ChannelClosed::frame(
            "alice-0a1b2c3d4e5f67890",
            "Your session timed out due to inactivity and has been terminated.",
        );
        let closed_id = Uuid::from_u128(0x6f1c_0d2e_4b7a_4c11_9a3e_0000_0000_0003);
        closed = Frame {
            payload: to_json(&ChannelClosed {
                message_id: closed_id.to_string(),
                created_date: "1764950400000".into(),
                destination_id: String::new(),
                session_id: "alice-0a1b2c3d4e5f67890".into(),
                message_type: "channel_closed".into(),
                schema_version: 1,
                output: ChannelClosed::from_payload(&closed.payload).unwrap().output,
            }),
            ..fixed(closed, 3)
        };
        let control = |t: MessageType, n: u128| {
            let mut f = fixed(Frame::control(t, Bytes::new()), n);
            f.flags = FLAGS_CONTROL;
            f
        };
        vec![
            ("output_first", first_output, PayloadType::Output),
            (
                "output_utf8",
                output(
                    7,
                    PayloadType::Output,
                    "ls -l\r\n\u{1b}[1;34mdir\u{1b}[0m é\r\n".as_bytes(),
                    4,
                ),
                PayloadType::Output,
            ),
            (
                "stderr",
                output(
                    8,
                    PayloadType::StdErr,
                    b"bash: nope: command not found\n",
                    5,
                ),
                PayloadType::StdErr,
            ),
            (
                "exit_code",
                output(9, PayloadType::ExitCode, &exit_code_payload(3), 6),
                PayloadType::ExitCode,
            ),
            ("ack", ack, PayloadType::Undefined),
            (
                "input_keys",
                input(0, PayloadType::Output, Bytes::from_static(b"echo hi\r"), 7),
                PayloadType::Output,
            ),
            (
                "input_size",
                input(
                    1,
                    PayloadType::Size,
                    TerminalSize {
                        cols: 120,
                        rows: 40,
                    }
                    .to_payload(),
                    8,
                ),
                PayloadType::Size,
            ),
            (
                "handshake_request",
                output(
                    0,
                    PayloadType::HandshakeRequest,
                    &handshake_request.to_payload(),
                    9,
                ),
                PayloadType::HandshakeRequest,
            ),
            (
                "handshake_request_kms",
                output(
                    0,
                    PayloadType::HandshakeRequest,
                    &kms_request.to_payload(),
                    10,
                ),
                PayloadType::HandshakeRequest,
            ),
            (
                "handshake_complete",
                output(
                    1,
                    PayloadType::HandshakeComplete,
                    &complete.to_payload(),
                    11,
                ),
                PayloadType::HandshakeComplete,
            ),
            ("channel_closed", closed, PayloadType::Undefined),
            (
                "pause_publication",
                control(MessageType::PausePublication, 12),
                PayloadType::Undefined,
            ),
            (
                "start_publication",
                control(MessageType::StartPublication, 13),
                PayloadType::Undefined,
            ),
        ]
    }

    /// Checks the committed seeds against the frames above (and that each one decodes and
    /// parses); `NODESHELL_WRITE_FUZZ_SEEDS=1 cargo test --lib fuzz_seeds` rewrites them.
    #[test]
    fn fuzz_seeds_are_valid_frames_and_match_the_committed_corpus() {
        use crate::ssm::handshake::{HandshakeComplete, HandshakeRequest};
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/frame_decode");
        let write = std::env::var_os("NODESHELL_WRITE_FUZZ_SEEDS").is_some();
        if write {
            std::fs::create_dir_all(&dir).unwrap();
        }
        let seeds = fuzz_seed_frames();
        for (name, frame, payload_type) in &seeds {
            let wire = frame.encode().unwrap();
            let decoded = Frame::decode(&wire).unwrap();
            assert_eq!(&decoded, frame, "{name} round-trips");
            assert_eq!(&decoded.payload_type, payload_type, "{name}");
            // Each seed reaches its parser and is accepted there.
            let p = &decoded.payload;
            match (&decoded.message_type, payload_type) {
                (MessageType::Acknowledge, _) => drop(Acknowledgement::from_payload(p).unwrap()),
                (MessageType::ChannelClosed, _) => {
                    let c = ChannelClosed::from_payload(p).unwrap();
                    assert!(c.output.contains("inactivity"), "{name}");
                }
                (_, PayloadType::Size) => drop(TerminalSize::from_payload(p).unwrap()),
                (_, PayloadType::ExitCode) => assert_eq!(parse_exit_code(p).unwrap(), 3),
                (_, PayloadType::HandshakeRequest) => {
                    drop(HandshakeRequest::from_payload(p).unwrap())
                }
                (_, PayloadType::HandshakeComplete) => {
                    drop(HandshakeComplete::from_payload(p).unwrap())
                }
                _ => {}
            }
            let path = dir.join(name);
            if write {
                std::fs::write(&path, &wire).unwrap();
            } else {
                let committed = std::fs::read(&path).unwrap_or_else(|e| {
                    panic!(
                        "{}: {e}; run NODESHELL_WRITE_FUZZ_SEEDS=1 cargo test --lib fuzz_seeds",
                        path.display()
                    )
                });
                assert_eq!(
                    committed,
                    wire.to_vec(),
                    "{} is stale; run NODESHELL_WRITE_FUZZ_SEEDS=1 cargo test --lib fuzz_seeds",
                    path.display()
                );
            }
        }
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let mut expected: Vec<String> = seeds.iter().map(|(n, _, _)| (*n).to_string()).collect();
        expected.sort();
        assert_eq!(
            on_disk, expected,
            "fuzz/seeds/frame_decode holds exactly the seeds"
        );
    }
}
