//! `GET /api/v1/nodes` and `GET /api/v1/nodes/{node}/shell/preflight`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::views::{node_view, preflight_view};
use super::{AppState, authenticate};
use crate::gateway::error::ApiError;

/// Every node with its eligibility for the caller.
pub(super) async fn list_nodes(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let auth = authenticate(&state, &headers).await?;
    let listings = state.access.node_listings(&auth).await?;
    let items: Vec<_> = listings.iter().map(node_view).collect();
    Ok(Json(json!({ "items": items })).into_response())
}

/// Every gate of an open on the node, each with pass, fail or skip and a hint.
pub(super) async fn preflight(
    State(state): State<AppState>,
    Path(node): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let auth = authenticate(&state, &headers).await?;
    let preflight = state.access.preflight(&auth, &node).await?;
    Ok(Json(preflight_view(node, preflight)).into_response())
}
