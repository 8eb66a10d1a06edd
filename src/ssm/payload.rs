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
}
