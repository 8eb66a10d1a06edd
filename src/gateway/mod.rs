//! `nodeshell gateway`: the HTTP/WebSocket API that opens node shells with the caller's own
//! AWS credentials and streams them to the browser (design §4–§5, §7).
//!
//! The wings, and which may use which:
//!
//! * [`http`]: the routes and the web console, the only axum code; asks [`access`] and, through
//!   [`handover`], the live side.
//! * [`access`]: the control side (tokens, tiers, eligibility, session rules, the Kubernetes
//!   calls, the open use case, tickets); never uses `http` or `live`.
//! * [`live`], [`transcript`], [`audit`]: the live side (a running shell, its recording, its
//!   audit rows).
//! * [`handover`]: where the two sides meet (the types a route hands over, the traits it asks
//!   of the live side).
//! * [`refusals`]: AWS and Kubernetes failures in the API's words, for both sides;
//!   [`error`]: the `E_*` codes.
//! * [`config`]: flags and file; [`metrics`]; [`connections`]: the API listener's limits;
//!   [`lease`]: this pod's coordination Lease (its liveness for the controller);
//!   [`session_watch`]: the gateway's one watch on every session, which both `access` (an
//!   open's decision) and `live` (takeovers) subscribe to, with [`slot_holders`], the caps
//!   count it keeps; [`step_times`]: the log line
//!   of an open's and a start's step durations;
//!   [`server`]: the wiring.

/// The field manager of every write the gateway makes (session spec and status, transcript
/// Secrets, its Lease), so server-side apply tells its fields from the controller's.
pub const FIELD_MANAGER: &str = "nodeshell-gateway";

pub mod access;
pub mod audit;
pub mod config;
pub mod connections;
pub mod error;
pub mod handover;
pub mod heap;
pub mod http;
pub mod lease;
pub mod ledger;
pub mod live;
pub mod metrics;
pub mod refusals;
pub mod server;
pub mod session_watch;
pub mod slot_holders;
pub mod step_times;
pub mod transcript;
pub mod warn_gate;

pub use config::{GatewayArgs, GatewayConfig};
pub use server::{GatewayError, run};
