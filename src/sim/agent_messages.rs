//! The messages to and from an agent task: what the relay and the SSM API tell the agent, and
//! what the agent sends to the client socket. Apart from the agent so that the shared state,
//! the relay and the SSM API can name them without depending on the agent.

use bytes::Bytes;
use tokio::sync::mpsc;

/// What the relay tells the agent.
#[derive(Debug)]
pub enum AgentEvent {
    /// A client socket is attached: send through `out` (publication starts).
    Attached {
        /// Connection number.
        conn: u64,
        /// Where frames for the client go.
        out: mpsc::Sender<Outbound>,
    },
    /// The client socket `conn` went away (publication pauses).
    Detached {
        /// Connection number.
        conn: u64,
    },
    /// A frame from the client, as received.
    Inbound(Bytes),
    /// TerminateSession was called.
    Terminate,
}

/// What the agent (or the relay on its behalf) sends to the client socket.
#[derive(Debug)]
pub enum Outbound {
    /// A stream data frame (subject to the fault knobs).
    Stream(Bytes),
    /// An ack or service message (never tampered with).
    Control(Bytes),
    /// Close the socket after what was queued.
    Close,
}
