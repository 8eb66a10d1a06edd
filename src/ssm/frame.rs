//! The binary message frame: a fixed 120-byte big-endian header followed by the payload.
//!
//! Decoding is strict (exact lengths, digest checked for non-empty payloads) and never
//! panics; encoding always writes HeaderLength 116, a space-padded type and a fresh digest.

use bytes::{BufMut, Bytes, BytesMut};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::message::{FLAGS_CONTROL, MessageType, PayloadType, Role};

/// The HeaderLength value every frame carries (offset of the PayloadLength field).
pub const HEADER_LENGTH: u32 = 116;
/// Total header size including the PayloadLength field; the payload starts here.
pub const HEADER_SIZE: usize = 120;
/// Width of the MessageType field.
pub const MESSAGE_TYPE_WIDTH: usize = 32;
/// The only schema version in use.
pub const SCHEMA_VERSION: u32 = 1;

const OFF_MESSAGE_TYPE: usize = 4;
const OFF_SCHEMA: usize = 36;
const OFF_CREATED: usize = 40;
const OFF_SEQUENCE: usize = 48;
const OFF_FLAGS: usize = 56;
const OFF_MESSAGE_ID: usize = 64;
const OFF_DIGEST: usize = 80;
const OFF_PAYLOAD_TYPE: usize = 112;
const OFF_PAYLOAD_LENGTH: usize = 116;

/// Why a frame could not be encoded or decoded; such frames are dropped without an ack.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer bytes than a header.
    #[error(
        "frame of {len} bytes is shorter than the 120-byte header; the peer sent a truncated message"
    )]
    TooShort {
        /// Bytes received.
        len: usize,
    },
    /// HeaderLength is not 116.
    #[error("frame HeaderLength is {found}, expected 116; the peer speaks another framing")]
    HeaderLength {
        /// Value found at offset 0.
        found: u32,
    },
    /// PayloadLength disagrees with the bytes present.
    #[error("frame PayloadLength is {declared} but {actual} payload bytes follow the header")]
    PayloadLength {
        /// Value found at offset 116.
        declared: u32,
        /// Bytes after the header.
        actual: usize,
    },
    /// MessageType is empty after trimming.
    #[error("frame MessageType is empty")]
    MissingMessageType,
    /// MessageType is not printable ASCII.
    #[error("frame MessageType is not printable ASCII")]
    InvalidMessageType,
    /// CreatedDate is zero on a message that must carry one.
    #[error("frame CreatedDate is zero")]
    MissingCreatedDate,
    /// SHA-256 of the payload differs from PayloadDigest.
    #[error(
        "frame payload digest does not match its SHA-256; the message was corrupted in transit"
    )]
    DigestMismatch,
    /// A type string longer than 32 bytes or not printable ASCII was given to the encoder.
    #[error("message type {0:?} does not fit the 32-byte ASCII MessageType field")]
    MessageTypeTooLong(String),
    /// A payload longer than u32::MAX bytes was given to the encoder.
    #[error("payload of {0} bytes exceeds the u32 PayloadLength field")]
    PayloadTooLong(usize),
}

/// One data-channel message, header fields decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What kind of message this is.
    pub message_type: MessageType,
    /// Schema version, always 1 in practice.
    pub schema_version: u32,
    /// Creation time in Unix epoch milliseconds.
    pub created_date: u64,
    /// Per-direction stream sequence number (0 for acks and control messages).
    pub sequence_number: i64,
    /// SYN/FIN bits (receivers ignore them).
    pub flags: u64,
    /// Unique message id (halves swapped on the wire).
    pub message_id: Uuid,
    /// Meaning of the payload.
    pub payload_type: PayloadType,
    /// Payload bytes.
    pub payload: Bytes,
}

/// Current wall-clock time in Unix epoch milliseconds (0 only if the clock predates 1970).
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// SHA-256 of a payload, as carried in PayloadDigest.
pub fn payload_digest(payload: &[u8]) -> [u8; 32] {
    Sha256::digest(payload).into()
}

/// Writes a UUID in the wire order: bytes 8–15 first, then bytes 0–7.
pub fn uuid_to_wire(id: &Uuid) -> [u8; 16] {
    let b = id.as_bytes();
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&b[8..]);
    out[8..].copy_from_slice(&b[..8]);
    out
}

/// Reads a UUID from the wire order (inverse of [`uuid_to_wire`]).
pub fn uuid_from_wire(wire: [u8; 16]) -> Uuid {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&wire[8..]);
    b[8..].copy_from_slice(&wire[..8]);
    Uuid::from_bytes(b)
}

fn read_array<const N: usize>(bytes: &[u8], offset: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = bytes.get(offset..offset + N) {
        out.copy_from_slice(src);
    }
    out
}

fn read_u32(bytes: &[u8], offset: usize) -> u32 {
    u32::from_be_bytes(read_array(bytes, offset))
}

fn read_u64(bytes: &[u8], offset: usize) -> u64 {
    u64::from_be_bytes(read_array(bytes, offset))
}

/// Trims a MessageType field as the official readers do: NULs at both ends, then whitespace.
fn parse_message_type(field: &[u8]) -> Result<MessageType, FrameError> {
    let start = field.iter().position(|&b| b != 0).unwrap_or(field.len());
    let end = field.iter().rposition(|&b| b != 0).map_or(start, |i| i + 1);
    let trimmed = field.get(start..end).unwrap_or_default();
    let text = std::str::from_utf8(trimmed).map_err(|_| FrameError::InvalidMessageType)?;
    let text = text.trim();
    if text.is_empty() {
        return Err(FrameError::MissingMessageType);
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(FrameError::InvalidMessageType);
    }
    Ok(MessageType::from_wire(text))
}

impl Frame {
    /// A new message of the given type: schema 1, created now, a random id, flags 0, seq 0.
    pub fn new(message_type: MessageType, payload_type: PayloadType, payload: Bytes) -> Self {
        Self {
            message_type,
            schema_version: SCHEMA_VERSION,
            created_date: now_millis(),
            sequence_number: 0,
            flags: 0,
            message_id: Uuid::new_v4(),
            payload_type,
            payload,
        }
    }

    /// A stream data message sent by `role` with the given sequence number.
    pub fn stream(
        role: Role,
        sequence_number: i64,
        payload_type: PayloadType,
        payload: Bytes,
    ) -> Self {
        Self {
            sequence_number,
            flags: role.stream_flags(sequence_number),
            ..Self::new(role.outgoing_stream_type(), payload_type, payload)
        }
    }

    /// An unsequenced control message (seq 0, flags SYN|FIN), e.g. `channel_closed`.
    pub fn control(message_type: MessageType, payload: Bytes) -> Self {
        Self {
            flags: FLAGS_CONTROL,
            ..Self::new(message_type, PayloadType::Undefined, payload)
        }
    }

    /// Serialises the frame; the digest is computed from the payload.
    pub fn encode(&self) -> Result<Bytes, FrameError> {
        let type_str = self.message_type.as_str();
        if type_str.is_empty()
            || type_str.len() > MESSAGE_TYPE_WIDTH
            || !type_str.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(FrameError::MessageTypeTooLong(type_str.to_owned()));
        }
        let payload_len = u32::try_from(self.payload.len())
            .map_err(|_| FrameError::PayloadTooLong(self.payload.len()))?;
        let mut out = BytesMut::with_capacity(HEADER_SIZE + self.payload.len());
        out.put_u32(HEADER_LENGTH);
        out.put_slice(type_str.as_bytes());
        out.put_bytes(b' ', MESSAGE_TYPE_WIDTH - type_str.len());
        out.put_u32(self.schema_version);
        out.put_u64(self.created_date);
        out.put_i64(self.sequence_number);
        out.put_u64(self.flags);
        out.put_slice(&uuid_to_wire(&self.message_id));
        out.put_slice(&payload_digest(&self.payload));
        out.put_u32(u32::from(self.payload_type));
        out.put_u32(payload_len);
        out.put_slice(&self.payload);
        Ok(out.freeze())
    }

    /// Parses and validates a frame. Checks, in order: length ≥ 120, HeaderLength = 116,
    /// PayloadLength = len − 120, MessageType present, CreatedDate non-zero, digest.
    /// Publication messages skip the last two checks, as the official client does.
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        Self::decode_with(bytes, Bytes::copy_from_slice)
    }

    /// [`Self::decode`] of a frame received as one buffer: the payload is a view of it, not a
    /// copy (the data channel's receive path, once per agent message).
    pub fn decode_shared(bytes: &Bytes) -> Result<Self, FrameError> {
        Self::decode_with(bytes, |_| bytes.slice(HEADER_SIZE..))
    }

    fn decode_with(
        bytes: &[u8],
        payload_of: impl FnOnce(&[u8]) -> Bytes,
    ) -> Result<Self, FrameError> {
        if bytes.len() < HEADER_SIZE {
            return Err(FrameError::TooShort { len: bytes.len() });
        }
        let header_length = read_u32(bytes, 0);
        if header_length != HEADER_LENGTH {
            return Err(FrameError::HeaderLength {
                found: header_length,
            });
        }
        let declared = read_u32(bytes, OFF_PAYLOAD_LENGTH);
        let payload = bytes.get(HEADER_SIZE..).unwrap_or_default();
        if usize::try_from(declared).ok() != Some(payload.len()) {
            return Err(FrameError::PayloadLength {
                declared,
                actual: payload.len(),
            });
        }
        let message_type = parse_message_type(
            bytes
                .get(OFF_MESSAGE_TYPE..OFF_MESSAGE_TYPE + MESSAGE_TYPE_WIDTH)
                .unwrap_or_default(),
        )?;
        let created_date = read_u64(bytes, OFF_CREATED);
        let digest: [u8; 32] = read_array(bytes, OFF_DIGEST);
        if !message_type.is_publication() {
            if created_date == 0 {
                return Err(FrameError::MissingCreatedDate);
            }
            if !payload.is_empty() && payload_digest(payload) != digest {
                return Err(FrameError::DigestMismatch);
            }
        }
        Ok(Self {
            message_type,
            schema_version: read_u32(bytes, OFF_SCHEMA),
            created_date,
            sequence_number: i64::from_be_bytes(read_array(bytes, OFF_SEQUENCE)),
            flags: read_u64(bytes, OFF_FLAGS),
            message_id: uuid_from_wire(read_array(bytes, OFF_MESSAGE_ID)),
            payload_type: PayloadType::from(read_u32(bytes, OFF_PAYLOAD_TYPE)),
            payload: payload_of(payload),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        let clean: String = s.split_whitespace().collect();
        (0..clean.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&clean[i..i + 2], 16).unwrap())
            .collect()
    }

    fn fact_sheet_frame() -> Frame {
        Frame {
            message_type: MessageType::InputStreamData,
            schema_version: 1,
            created_date: 1_503_434_274_948,
            sequence_number: 1,
            flags: 2,
            message_id: Uuid::parse_str("dd01e56b-ff48-483e-a508-b5f073f31b16").unwrap(),
            payload_type: PayloadType::Undefined,
            payload: Bytes::from_static(b"payload"),
        }
    }

    const FACT_SHEET_BYTES: &str = "
        00 00 00 74 69 6e 70 75 74 5f 73 74 72 65 61 6d
        5f 64 61 74 61 20 20 20 20 20 20 20 20 20 20 20
        20 20 20 20 00 00 00 01 00 00 01 5e 0b aa 78 84
        00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 02
        a5 08 b5 f0 73 f3 1b 16 dd 01 e5 6b ff 48 48 3e
        23 9f 59 ed 55 e7 37 c7 71 47 cf 55 ad 0c 1b 03
        0b 6d 7e e7 48 a7 42 69 52 f9 b8 52 d5 a9 35 e5
        00 00 00 00 00 00 00 07 70 61 79 6c 6f 61 64";

    #[test]
    fn encodes_the_fact_sheet_frame_byte_for_byte() {
        let encoded = fact_sheet_frame().encode().unwrap();
        assert_eq!(encoded.len(), 127);
        assert_eq!(encoded.as_ref(), hex(FACT_SHEET_BYTES).as_slice());
    }

    #[test]
    fn decodes_the_fact_sheet_frame() {
        let decoded = Frame::decode(&hex(FACT_SHEET_BYTES)).unwrap();
        assert_eq!(decoded, fact_sheet_frame());
    }

    #[test]
    fn a_shared_decode_equals_a_copying_one_and_shares_the_buffer() {
        let wire = Bytes::from(hex(FACT_SHEET_BYTES));
        let shared = Frame::decode_shared(&wire).unwrap();
        assert_eq!(shared, Frame::decode(&wire).unwrap());
        assert_eq!(shared.payload.as_ptr(), wire[HEADER_SIZE..].as_ptr());
        let mut bad = wire.to_vec();
        bad[OFF_DIGEST] ^= 0xff;
        assert_eq!(
            Frame::decode_shared(&Bytes::from(bad)),
            Err(FrameError::DigestMismatch)
        );
    }

    #[test]
    fn digest_of_payload_matches_the_vector() {
        let d = payload_digest(b"payload");
        assert_eq!(
            d.to_vec(),
            hex("239f59ed55e737c77147cf55ad0c1b030b6d7ee748a7426952f9b852d5a935e5")
        );
        assert_eq!(
            payload_digest(b"").to_vec(),
            hex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
    }

    #[test]
    fn message_id_halves_are_swapped_on_the_wire() {
        let id = Uuid::parse_str("00010203-0405-0607-0809-0a0b0c0d0e0f").unwrap();
        let frame = Frame {
            message_id: id,
            ..Frame::stream(
                Role::Agent,
                7,
                PayloadType::Output,
                Bytes::from_static(b"abc"),
            )
        };
        let wire = frame.encode().unwrap();
        assert_eq!(&wire[64..72], &[8, 9, 10, 11, 12, 13, 14, 15]);
        assert_eq!(&wire[72..80], &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(&wire[0..4], &[0, 0, 0, 116]);
        assert_eq!(&wire[36..40], &[0, 0, 0, 1]);
        assert_eq!(&wire[48..56], &[0, 0, 0, 0, 0, 0, 0, 7]);
        assert_eq!(&wire[112..116], &[0, 0, 0, 1]);
        assert_eq!(&wire[116..120], &[0, 0, 0, 3]);
        assert_eq!(uuid_from_wire(uuid_to_wire(&id)), id);
    }

    #[test]
    fn nul_padded_message_type_parses() {
        let mut wire = fact_sheet_frame().encode().unwrap().to_vec();
        wire[4..36].fill(0);
        wire[4..15].copy_from_slice(b"acknowledge");
        let decoded = Frame::decode(&wire).unwrap();
        assert_eq!(decoded.message_type, MessageType::Acknowledge);
    }

    #[test]
    fn validation_reports_errors_in_the_official_order() {
        let good = fact_sheet_frame().encode().unwrap().to_vec();
        let mut wire = good.clone();
        wire[0..4].fill(0);
        wire[4..36].fill(b' ');
        wire[40..48].fill(0);
        wire[80..112].fill(0);
        assert_eq!(
            Frame::decode(&wire),
            Err(FrameError::HeaderLength { found: 0 })
        );
        wire[0..4].copy_from_slice(&good[0..4]);
        assert_eq!(Frame::decode(&wire), Err(FrameError::MissingMessageType));
        wire[4..36].copy_from_slice(&good[4..36]);
        assert_eq!(Frame::decode(&wire), Err(FrameError::MissingCreatedDate));
        wire[40..48].copy_from_slice(&good[40..48]);
        assert_eq!(Frame::decode(&wire), Err(FrameError::DigestMismatch));
        wire[80..112].copy_from_slice(&good[80..112]);
        assert!(Frame::decode(&wire).is_ok());
    }

    #[test]
    fn publication_messages_skip_date_and_digest_checks() {
        let mut frame = Frame::control(MessageType::StartPublication, Bytes::new());
        frame.created_date = 0;
        let mut wire = frame.encode().unwrap().to_vec();
        wire[80..112].fill(0xAB);
        assert_eq!(
            Frame::decode(&wire).unwrap().message_type,
            MessageType::StartPublication
        );
    }

    #[test]
    fn empty_payload_with_zero_digest_is_accepted() {
        let frame = Frame::control(MessageType::ChannelClosed, Bytes::new());
        let mut wire = frame.encode().unwrap().to_vec();
        wire[80..112].fill(0);
        assert!(Frame::decode(&wire).is_ok());
    }

    /// The bridge's publication messages: empty payload, all-zero digest (accepted), and
    /// the same messages with the digest of the empty payload (accepted).
    #[test]
    fn publication_messages_with_empty_payload_and_zero_or_correct_digest_are_accepted() {
        for message_type in [MessageType::StartPublication, MessageType::PausePublication] {
            let wire = Frame::control(message_type.clone(), Bytes::new())
                .encode()
                .unwrap()
                .to_vec();
            assert_eq!(&wire[80..112], payload_digest(b"").as_slice());
            assert_eq!(Frame::decode(&wire).unwrap().message_type, message_type);
            let mut zero = wire.clone();
            zero[80..112].fill(0);
            let decoded = Frame::decode(&zero).unwrap();
            assert_eq!(decoded.message_type, message_type);
            assert!(decoded.payload.is_empty());
        }
    }

    /// Stream data is strict: a digest that does not match its payload is refused (the
    /// channel drops it unacked and counts it), a zero digest included.
    #[test]
    fn output_stream_data_with_a_wrong_or_zero_digest_is_refused() {
        let good = Frame::stream(
            Role::Agent,
            3,
            PayloadType::Output,
            Bytes::from_static(b"ls\r\n"),
        );
        let wire = good.encode().unwrap().to_vec();
        assert_eq!(Frame::decode(&wire).unwrap(), good);
        let mut zero = wire.clone();
        zero[80..112].fill(0);
        assert_eq!(Frame::decode(&zero), Err(FrameError::DigestMismatch));
        let mut other = wire.clone();
        other[80..112].copy_from_slice(&payload_digest(b"ls\r"));
        assert_eq!(Frame::decode(&other), Err(FrameError::DigestMismatch));
    }

    #[test]
    fn length_checks_are_strict() {
        let good = fact_sheet_frame().encode().unwrap().to_vec();
        assert_eq!(
            Frame::decode(&good[..119]),
            Err(FrameError::TooShort { len: 119 })
        );
        assert_eq!(
            Frame::decode(&good[..126]),
            Err(FrameError::PayloadLength {
                declared: 7,
                actual: 6
            })
        );
        let mut longer = good.clone();
        longer.push(0);
        assert!(matches!(
            Frame::decode(&longer),
            Err(FrameError::PayloadLength { .. })
        ));
    }

    #[test]
    fn flipping_digest_or_payload_bytes_fails() {
        let good = fact_sheet_frame().encode().unwrap().to_vec();
        for i in (80..112).chain(120..127) {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            assert_eq!(
                Frame::decode(&bad),
                Err(FrameError::DigestMismatch),
                "byte {i}"
            );
        }
    }

    #[test]
    fn oversized_message_type_is_refused_by_the_encoder() {
        let frame = Frame::new(
            MessageType::Other("x".repeat(33)),
            PayloadType::Output,
            Bytes::new(),
        );
        assert!(matches!(
            frame.encode(),
            Err(FrameError::MessageTypeTooLong(_))
        ));
    }

    #[test]
    fn big_endian_helpers_match_the_vectors() {
        assert_eq!(read_u32(&[0, 0, 0, 0, 0xFF, 0], 1), 255);
        let mut b = BytesMut::new();
        b.put_u32(256);
        assert_eq!(b.as_ref(), &[0, 0, 1, 0]);
        let mut b = BytesMut::new();
        b.put_u64(4_294_967_296);
        assert_eq!(b.as_ref(), &[0, 0, 0, 1, 0, 0, 0, 0]);
    }

    fn arb_message_type() -> impl Strategy<Value = MessageType> {
        prop_oneof![
            Just(MessageType::InputStreamData),
            Just(MessageType::OutputStreamData),
            Just(MessageType::Acknowledge),
            Just(MessageType::ChannelClosed),
            Just(MessageType::StartPublication),
            Just(MessageType::PausePublication),
            Just(MessageType::AgentSessionState),
            "[a-z_]{1,32}".prop_map(|s| MessageType::from_wire(&s)),
        ]
    }

    proptest! {
        #[test]
        fn encode_decode_round_trips(
            message_type in arb_message_type(),
            schema_version in any::<u32>(),
            created_date in 1..u64::MAX,
            sequence_number in any::<i64>(),
            flags in any::<u64>(),
            id in any::<u128>(),
            payload_type in any::<u32>(),
            payload in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            let frame = Frame {
                message_type,
                schema_version,
                created_date,
                sequence_number,
                flags,
                message_id: Uuid::from_u128(id),
                payload_type: PayloadType::from(payload_type),
                payload: Bytes::from(payload),
            };
            let wire = frame.encode().unwrap();
            prop_assert_eq!(wire.len(), HEADER_SIZE + frame.payload.len());
            prop_assert_eq!(Frame::decode(&wire).unwrap(), frame);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Frame::decode(&bytes);
        }

        #[test]
        fn arbitrary_headers_with_valid_lengths_never_panic(
            mut header in proptest::collection::vec(any::<u8>(), HEADER_SIZE..=HEADER_SIZE),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            header[0..4].copy_from_slice(&HEADER_LENGTH.to_be_bytes());
            let len = u32::try_from(payload.len()).unwrap();
            header[116..120].copy_from_slice(&len.to_be_bytes());
            header.extend_from_slice(&payload);
            let _ = Frame::decode(&header);
        }
    }
}
