//! Native client for the AWS SSM Session Manager data channel (`ssmmessages`).
//!
//! The protocol logic lives in pure, synchronous pieces usable by either end of the channel
//! (the gateway's client and the simulator's agent): [`frame`] (binary codec), [`message`]
//! (header vocabulary), [`payload`] (JSON/text payloads), [`receive`] (in-order delivery
//! window), [`retransmit`] and [`rto`] (unacked messages and their timeout), [`handshake`], [`crypto`] (the KMS payload cipher).
//! [`channel`] is the thin websocket task around them; [`held`] counts the output it holds
//! for its consumer; [`resume`] is the reconnect hook; [`service_close`] names the service's
//! own closes from their `channel_closed` text.
//! No Kubernetes or HTTP-server code.

pub mod channel;
pub mod crypto;
pub mod frame;
pub mod handshake;
pub mod held;
pub mod message;
pub mod payload;
pub mod receive;
pub mod resume;
pub mod retransmit;
pub mod rto;
pub mod service_close;

pub use channel::{
    ChannelError, ChannelInput, ChannelOutput, CloseCause, CloseReason, DataChannel,
    DataChannelOptions, InputRoom, ReconnectPolicy,
};
pub use frame::{Frame, FrameError};
pub use handshake::{ClientHandshake, HandshakeError};
pub use held::{HeldBytes, HeldShare};
pub use message::{MessageType, PayloadType, Role};
pub use receive::{Arrival, ReceiveConfig, ReceiveWindow};
pub use resume::{NoResume, ResumeError, ScriptedResumer, SessionResumer};
pub use retransmit::{AckOutcome, RetransmitConfig, RetransmitQueue};
pub use rto::{RtoConfig, RtoEstimator};

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod channel_tests;
#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod reliability_tests;
