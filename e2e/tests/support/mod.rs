//! Helpers shared by every e2e test binary (`mod support; use support::*;`; Cargo finds this
//! directory next to the test file) and by the benches (which name this file once):
//!
//! * [`cluster`]: the shared local control plane, sample objects written through it, `kubectl`;
//! * [`process`]: the one way to start and stop a `nodeshell` child (controller, gateway, dev)
//!   and read its output and memory;
//! * [`world`]: a [`GatewayWorld`] per gateway test binary (control plane, simulator,
//!   controllers, gateways) and per-test [`Scope`]s;
//! * [`http`]: the gateway's HTTP API with id_tokens minted by the simulator, and a plain GET;
//! * [`login`]: the console's sign-in through the gateway as a browser does it, and the
//!   issuer's public flow anyone can run;
//! * [`terminal`]: a WebSocket [`Terminal`] that speaks the gateway's frame protocol;
//! * [`tmux`]: a real terminal ([`Tmux`]) for the kubectl plugin;
//! * [`plugin`]: `kubectl nodeshell` on a `PATH` of its own, its `login` with the test as
//!   the browser, and its reconnect notices;
//! * [`proxy`]: a TCP forwarder whose connections a test can sever;
//! * [`transcript`]: gunzip, asciicast and transcript Secret helpers;
//! * [`wait`]: polling until something holds;
//! * [`json`]: the JSON merge and sample-object builders.
//!
//! A test binary uses some of these helpers, never all of them.

#![allow(dead_code, unused_imports)]

pub mod cluster;
pub mod http;
pub mod json;
pub mod login;
pub mod plugin;
pub mod process;
pub mod proxy;
pub mod terminal;
pub mod tmux;
pub mod transcript;
pub mod wait;
pub mod world;

pub use cluster::*;
pub use http::*;
pub use json::*;
pub use login::*;
pub use plugin::*;
pub use process::*;
pub use proxy::*;
pub use terminal::*;
pub use tmux::*;
pub use transcript::*;
pub use wait::*;
pub use world::*;

/// Shared mutable value for tests (a small convenience around `Arc<Mutex<T>>`).
pub type Shared<T> = std::sync::Arc<std::sync::Mutex<T>>;
