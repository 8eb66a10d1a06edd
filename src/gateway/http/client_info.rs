//! The request facts an audit row names (peer address, `X-Forwarded-For`, user agent), as an
//! extractor, so every handler that writes a row takes them the same way.

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;

use crate::gateway::audit::ClientInfo;

/// The [`ClientInfo`] of the request being handled; never refuses a request (a fact that is
/// missing stays empty).
pub(super) struct RequestClient(pub ClientInfo);

impl<S: Send + Sync> FromRequestParts<S> for RequestClient {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let text = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        Ok(Self(ClientInfo::of_request(
            peer,
            text("x-forwarded-for"),
            text(header::USER_AGENT.as_str()),
        )))
    }
}
