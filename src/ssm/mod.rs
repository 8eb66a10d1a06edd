//! Native client for the AWS SSM Session Manager data channel (`ssmmessages`).
//!
//! The protocol logic lives in pure, synchronous pieces usable by either end of the channel
//! (the gateway's client and the simulator's agent): [`frame`] (binary codec), [`message`]
//! (header vocabulary), [`payload`] (JSON/text payloads). No Kubernetes or HTTP-server code.

pub mod frame;
pub mod message;
pub mod payload;

pub use frame::{Frame, FrameError};
pub use message::{MessageType, PayloadType, Role};
