//! `nodeshell gateway`: the HTTP/WebSocket API that opens node shells with the caller's own
//! AWS credentials and streams them to the browser (design §4–§5, §7).
//!
//! Control side (who may open what): [`config`], [`error`], [`auth`], [`tickets`],
//! [`nodes`], [`routes`]. Live side (a running shell): [`live`], [`transcript`], [`audit`].
//! The two meet in [`contract`]: the types a route hands to the live side.

pub mod contract;
pub mod error;
