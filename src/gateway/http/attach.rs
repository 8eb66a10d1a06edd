//! `GET /api/v1/sessions/{name}/attach`: the WebSocket handed to the live side.

use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::client_info::RequestClient;
use crate::gateway::access::sessions::is_reattach;
use crate::gateway::config::{WEBSOCKET_MAX_MESSAGE_BYTES, WEBSOCKET_READ_BUFFER_BYTES};
use crate::gateway::error::{ApiError, ErrorCode};

/// Query of the attach URL.
#[derive(Debug, Deserialize)]
pub(super) struct AttachQuery {
    ticket: Option<String>,
}

/// Checks the origin and the ticket, then hands the socket to the live side.
pub(super) async fn attach(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<AttachQuery>,
    RequestClient(client): RequestClient,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let ticket = state.access.admit_attach(&name, origin, query.ticket)?;
    // A larger message closes the socket with 1009 and an E_PAYLOAD_TOO_LARGE frame, and
    // only this much of it is ever held in memory.
    let upgrade = upgrade
        .map_err(|e| {
            ApiError::new(
                ErrorCode::BadRequest,
                format!("attach is a WebSocket endpoint: {e}"),
            )
        })?
        .max_message_size(WEBSOCKET_MAX_MESSAGE_BYTES)
        .max_frame_size(WEBSOCKET_MAX_MESSAGE_BYTES)
        .read_buffer_size(WEBSOCKET_READ_BUFFER_BYTES);
    // Boxed: the upgrade's task keeps what its callback captured while the browser stays.
    let mut grant = Box::new(state.access.attach_grant(&name, ticket).await?);
    grant.client = client;
    let resume = is_reattach(state.live.shells.is_running(&name), grant.session.phase());
    let shells = state.live.shells.clone();
    tracing::info!(session = name, resume, "attaching");
    Ok(upgrade
        .on_upgrade(move |socket| shells.attach(grant, socket, resume))
        .into_response())
}
