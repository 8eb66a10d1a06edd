//! The admin listener's routes (`/healthz`, `/readyz`, `/metrics`; never routed by the
//! Ingress) and the API's `/openapi.json`.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{AppState, OPENAPI};

/// The admin listener's router, in the style of the controller's admin server.
pub fn admin_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Ready when the issuer's keys are loaded and the apiserver answers. The answer names each
/// failing check in a fixed phrase; what went wrong is in the log only.
async fn readyz(State(state): State<AppState>) -> Response {
    let problems = state.access.readiness_problems().await;
    if problems.is_empty() {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, problems.join("; ")).into_response()
    }
}

/// The OpenMetrics text of the gateway's registry.
async fn metrics(State(state): State<AppState>) -> Response {
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
