//! `/readyz`, `/metrics` and `/openapi.json`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{AppState, OPENAPI};

/// Ready when the issuer's keys are loaded and the apiserver answers.
pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    let problems = state.access.readiness_problems().await;
    if problems.is_empty() {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, problems.join("; ")).into_response()
    }
}

/// The OpenMetrics text of the gateway's registry.
pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.registry.encode(),
    )
        .into_response()
}

/// The OpenAPI document.
pub(super) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
