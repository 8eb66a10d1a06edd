//! Feeds arbitrary bytes to the data-channel frame decoder and, when a frame decodes, to
//! the payload parsers and the receive window a client or agent would hand it to.
//! None of them may panic, whatever the peer sends.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The pure protocol modules of `src/ssm`, compiled from the very same files so the main
// crate's heavy dependencies stay out of the fuzz build. They sit at the crate root, where
// their `super::` paths resolve to each other.
#[allow(dead_code)]
#[path = "../../src/ssm/crypto.rs"]
mod crypto;
#[allow(dead_code)]
#[path = "../../src/ssm/frame.rs"]
mod frame;
#[allow(dead_code)]
#[path = "../../src/ssm/handshake.rs"]
mod handshake;
#[allow(dead_code)]
#[path = "../../src/ssm/message.rs"]
mod message;
#[allow(dead_code)]
#[path = "../../src/ssm/payload.rs"]
mod payload;
#[allow(dead_code)]
#[path = "../../src/ssm/receive.rs"]
mod receive;

use frame::Frame;
use handshake::ClientHandshake;
use message::PayloadType;
use payload::{Acknowledgement, ChannelClosed, TerminalSize, parse_exit_code};
use receive::{ReceiveConfig, ReceiveWindow};

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = Frame::decode(data) else {
        return;
    };
    // A decoded frame must encode back to the same bytes when its type is well formed.
    if let Ok(wire) = frame.encode() {
        if let Ok(again) = Frame::decode(&wire) {
            assert_eq!(again, frame);
        }
    }
    let payload = &frame.payload;
    let _ = Acknowledgement::from_payload(payload);
    let _ = ChannelClosed::from_payload(payload);
    let _ = TerminalSize::from_payload(payload);
    let _ = parse_exit_code(payload);
    let mut handshake = ClientHandshake::new("1.2.707.0");
    match frame.payload_type {
        PayloadType::HandshakeRequest => drop(handshake.on_request(payload)),
        PayloadType::HandshakeComplete => drop(handshake.on_complete(payload)),
        _ => handshake.on_output(),
    }
    let mut window = ReceiveWindow::new(ReceiveConfig {
        max_messages: 4,
        max_bytes: 64,
        max_early_messages: 4,
        max_early_bytes: 64,
    });
    let _ = window.offer(frame);
    while window.pop_ready().is_some() {}
});
