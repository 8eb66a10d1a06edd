//! `POST /api/v1/nodes/{node}/shell` (open) and `POST /api/v1/sessions/{name}/ticket`
//! (a reattach ticket).

use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{AppState, authenticate_write};
use crate::gateway::access::open::parse_open_request;
use crate::gateway::access::tickets::TicketOffer;
use crate::gateway::error::ApiError;
use crate::gateway::step_times::StepTimes;

/// Opens a shell, counting the outcome and the latency.
pub(super) async fn open_shell(
    State(state): State<AppState>,
    Path(node): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    // Timed from here: the token check and the body are the open's first step ("auth").
    let steps = StepTimes::start();
    let result = open(&state, &node, &headers, &body, steps).await;
    state
        .metrics
        .open_latency
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(offer) => {
            state.metrics.open("admitted");
            tracing::info!(session = offer.session, node, "shell admitted");
            (StatusCode::CREATED, Json(offer)).into_response()
        }
        Err(e) => {
            state.metrics.open(e.code.as_str());
            tracing::info!(
                node,
                code = e.code.as_str(),
                message = e.message,
                "shell refused"
            );
            e.into_response()
        }
    }
}

async fn open(
    state: &AppState,
    node: &str,
    headers: &HeaderMap,
    body: &[u8],
    mut steps: StepTimes,
) -> Result<TicketOffer, ApiError> {
    let auth = authenticate_write(state, headers).await?;
    let request = parse_open_request(body)?;
    steps.lap("auth");
    state.access.open(&auth, node, request, steps).await
}

/// A new ticket to reattach the caller's own session.
pub(super) async fn new_ticket(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let auth = authenticate_write(&state, &headers).await?;
    let request = parse_open_request(&body)?;
    let mut offer = state.access.reticket(&auth, &name, &request).await?;
    if state.access.may_resume(&auth, &name) {
        offer.resume_token = state.live.shells.resume_token(&name);
    }
    Ok((StatusCode::CREATED, Json(offer)).into_response())
}
