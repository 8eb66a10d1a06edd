//! Header vocabulary of the data channel: message types, payload types, flags, and which
//! side of the channel sends which stream type.

use std::fmt;

/// Flag bit set by the agent on its first stream message (sequence 0).
pub const FLAG_SYN: u64 = 1;
/// Flag bit that marks the end of a stream; acks and control messages carry `SYN|FIN`.
pub const FLAG_FIN: u64 = 2;
/// Flags carried by acknowledgements and unsequenced control messages.
pub const FLAGS_CONTROL: u64 = FLAG_SYN | FLAG_FIN;

/// The ASCII `MessageType` header field (32 bytes on the wire, space padded).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// Client → agent stream data (keystrokes, resize, handshake replies).
    InputStreamData,
    /// Agent → client stream data (terminal output, handshake requests, exit code).
    OutputStreamData,
    /// End-to-end acknowledgement of one stream message.
    Acknowledge,
    /// The service ended the channel; the payload carries the reason.
    ChannelClosed,
    /// The service says the peer is reachable again: resume sending.
    StartPublication,
    /// The service says the peer is gone for now: stop sending and resending.
    PausePublication,
    /// Agent → service session state report (`Connected`, `Terminating`).
    AgentSessionState,
    /// Any other type; kept verbatim (at most 32 ASCII bytes when encoded).
    Other(String),
}

impl MessageType {
    /// The wire spelling of this type.
    pub fn as_str(&self) -> &str {
        match self {
            Self::InputStreamData => "input_stream_data",
            Self::OutputStreamData => "output_stream_data",
            Self::Acknowledge => "acknowledge",
            Self::ChannelClosed => "channel_closed",
            Self::StartPublication => "start_publication",
            Self::PausePublication => "pause_publication",
            Self::AgentSessionState => "agent_session_state",
            Self::Other(other) => other,
        }
    }

    /// Maps a trimmed wire string to a type (unknown strings become [`MessageType::Other`]).
    pub fn from_wire(text: &str) -> Self {
        match text {
            "input_stream_data" => Self::InputStreamData,
            "output_stream_data" => Self::OutputStreamData,
            "acknowledge" => Self::Acknowledge,
            "channel_closed" => Self::ChannelClosed,
            "start_publication" => Self::StartPublication,
            "pause_publication" => Self::PausePublication,
            "agent_session_state" => Self::AgentSessionState,
            other => Self::Other(other.to_owned()),
        }
    }

    /// Whether this type is stream data, i.e. sequenced and acknowledged.
    pub fn is_stream_data(&self) -> bool {
        matches!(self, Self::InputStreamData | Self::OutputStreamData)
    }

    /// Whether this is a publication control message (exempt from header validation).
    pub fn is_publication(&self) -> bool {
        matches!(self, Self::StartPublication | Self::PausePublication)
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `PayloadType` header field: what the payload of a stream message means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadType {
    /// 0: acks and control messages.
    Undefined,
    /// 1: terminal bytes, in both directions.
    Output,
    /// 2: declared by the protocol, unused by shells.
    Error,
    /// 3: terminal size JSON, client → agent.
    Size,
    /// 4: declared by the protocol, unused.
    Parameter,
    /// 5: agent → client handshake request JSON.
    HandshakeRequest,
    /// 6: client → agent handshake response JSON.
    HandshakeResponse,
    /// 7: agent → client handshake completion JSON.
    HandshakeComplete,
    /// 8: agent → client KMS challenge (unsupported here).
    EncChallengeRequest,
    /// 9: client → agent KMS challenge answer (unsupported here).
    EncChallengeResponse,
    /// 10: 4-byte big-endian flag (port sessions).
    Flag,
    /// 11: agent → client standard error bytes.
    StdErr,
    /// 12: agent → client `EXIT_CODE: <n>` text.
    ExitCode,
    /// Any other value, kept verbatim.
    Unknown(u32),
}

impl From<u32> for PayloadType {
    fn from(value: u32) -> Self {
        match value {
            0 => Self::Undefined,
            1 => Self::Output,
            2 => Self::Error,
            3 => Self::Size,
            4 => Self::Parameter,
            5 => Self::HandshakeRequest,
            6 => Self::HandshakeResponse,
            7 => Self::HandshakeComplete,
            8 => Self::EncChallengeRequest,
            9 => Self::EncChallengeResponse,
            10 => Self::Flag,
            11 => Self::StdErr,
            12 => Self::ExitCode,
            other => Self::Unknown(other),
        }
    }
}

impl From<PayloadType> for u32 {
    fn from(value: PayloadType) -> Self {
        match value {
            PayloadType::Undefined => 0,
            PayloadType::Output => 1,
            PayloadType::Error => 2,
            PayloadType::Size => 3,
            PayloadType::Parameter => 4,
            PayloadType::HandshakeRequest => 5,
            PayloadType::HandshakeResponse => 6,
            PayloadType::HandshakeComplete => 7,
            PayloadType::EncChallengeRequest => 8,
            PayloadType::EncChallengeResponse => 9,
            PayloadType::Flag => 10,
            PayloadType::StdErr => 11,
            PayloadType::ExitCode => 12,
            PayloadType::Unknown(other) => other,
        }
    }
}

/// Which end of the data channel a piece of code plays; fixes the stream message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The session client (our gateway): sends `input_stream_data`.
    Client,
    /// The agent on the host (the simulator): sends `output_stream_data`.
    Agent,
}

impl Role {
    /// The stream message type this side sends.
    pub fn outgoing_stream_type(self) -> MessageType {
        match self {
            Self::Client => MessageType::InputStreamData,
            Self::Agent => MessageType::OutputStreamData,
        }
    }

    /// The stream message type this side receives (and acknowledges).
    pub fn incoming_stream_type(self) -> MessageType {
        match self {
            Self::Client => MessageType::OutputStreamData,
            Self::Agent => MessageType::InputStreamData,
        }
    }

    /// Flags for an outgoing stream message: the agent marks sequence 0 with SYN.
    pub fn stream_flags(self, sequence_number: i64) -> u64 {
        match self {
            Self::Agent if sequence_number == 0 => FLAG_SYN,
            _ => 0,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use super::*;

    #[test]
    fn message_types_round_trip_through_their_wire_names() {
        for t in [
            MessageType::InputStreamData,
            MessageType::OutputStreamData,
            MessageType::Acknowledge,
            MessageType::ChannelClosed,
            MessageType::StartPublication,
            MessageType::PausePublication,
            MessageType::AgentSessionState,
            MessageType::Other("interactive_shell".into()),
        ] {
            assert_eq!(MessageType::from_wire(t.as_str()), t);
        }
    }

    #[test]
    fn payload_types_round_trip_through_u32() {
        for n in 0..20u32 {
            assert_eq!(u32::from(PayloadType::from(n)), n);
        }
        assert_eq!(PayloadType::from(12), PayloadType::ExitCode);
    }

    #[test]
    fn roles_mirror_each_other() {
        assert_eq!(
            Role::Client.outgoing_stream_type(),
            Role::Agent.incoming_stream_type()
        );
        assert_eq!(Role::Agent.stream_flags(0), FLAG_SYN);
        assert_eq!(Role::Agent.stream_flags(1), 0);
        assert_eq!(Role::Client.stream_flags(0), 0);
    }
}
