//! `nodeshell gateway`: the HTTP/WebSocket API that opens node shells with the caller's own
//! AWS credentials and streams them to the browser (design §4–§5, §7).
//!
//! Control side (who may open what): [`config`], [`error`], [`auth`], [`tickets`],
//! [`nodes`], [`routes`], [`server`], [`metrics`]; the web console: [`console`]. Live side (a running shell): `live`,
//! `transcript`, `audit`. The two meet in [`handover`] (the types a route hands over and
//! what it asks of the live side).

/// The field manager of every write the gateway makes (session spec and status, transcript
/// Secrets), so server-side apply tells its fields from the controller's.
pub const FIELD_MANAGER: &str = "nodeshell-gateway";

pub mod access;
pub mod audit;
pub mod config;
pub mod console;
pub mod error;
pub mod handover;
pub mod live;
pub mod metrics;
pub mod routes;
#[cfg(test)]
mod routes_tests;
pub mod server;
pub mod transcript;

pub use config::{GatewayArgs, GatewayConfig};
pub use server::{GatewayError, run};
