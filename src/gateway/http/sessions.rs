//! The caller (`GET /api/v1/whoami`) and their sessions: list, get, end, transcript, ledger, search.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::client_info::RequestClient;
use super::views::{SessionView, session_view, whoami_view};
use super::{AppState, authenticate, authenticate_write};
use crate::gateway::error::{ApiError, ErrorCode};
use crate::gateway::ledger::search::SearchQuery;
use crate::gateway::refusals::{ledger_error, transcript_error};

/// Who the caller is, as the gateway maps them.
pub(super) async fn whoami(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let auth = authenticate(&state, &headers).await?;
    let mut view = whoami_view(&state.access, &auth);
    let shells = &state.live.shells;
    view["shells"] = json!(
        state
            .access
            .resumable_shells(&auth, |name| shells.is_running(name))
    );
    Ok(Json(view).into_response())
}

/// The caller's sessions (everyone's for an admin), newest first.
pub(super) async fn list_sessions(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let auth = authenticate(&state, &headers).await?;
    let sessions = state.access.visible_sessions(&auth).await?;
    let items: Vec<SessionView> = sessions.iter().map(session_view).collect();
    Ok(Json(json!({ "items": items })).into_response())
}

/// One session the caller may manage.
pub(super) async fn get_session(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let auth = authenticate(&state, &headers).await?;
    let session = state.access.managed_session(&auth, &name).await?;
    Ok(Json(session_view(&session)).into_response())
}

/// Ends a session: `spec.terminate`, and at once if it runs here.
pub(super) async fn delete_session(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let auth = authenticate_write(&state, &headers).await?;
    let session = state.access.terminate(&auth, &name).await?;
    state.live.shells.request_terminate(&name);
    let body = json!({
        "session": name,
        "terminate": true,
        "phase": session.phase().as_str(),
    });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// The stored recording of a session, as a gzip download.
pub(super) async fn transcript(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    RequestClient(client): RequestClient,
) -> Result<Response, ApiError> {
    let auth = authenticate(&state, &headers).await?;
    let session = state.access.managed_session(&auth, &name).await?;
    let bytes = state
        .live
        .transcripts
        .load(&session)
        .await
        .map_err(|e| transcript_error(e, &name))?;
    state
        .live
        .transcripts
        .record_read(&auth.caller, &client, &session, "transcript");
    let headers = [
        (header::CONTENT_TYPE, "application/gzip".to_string()),
        (
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}.cast.gz\""),
        ),
    ];
    Ok((headers, bytes).into_response())
}

/// The command ledger of a session (`NodeShell-Shell`), as JSON; the read is audited.
pub(super) async fn ledger(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    RequestClient(client): RequestClient,
) -> Result<Response, ApiError> {
    let auth = authenticate(&state, &headers).await?;
    let session = state.access.managed_session(&auth, &name).await?;
    let ledger = state
        .live
        .transcripts
        .load_ledger(&session)
        .await
        .map_err(|e| ledger_error(e, &name))?;
    state
        .live
        .transcripts
        .record_read(&auth.caller, &client, &session, "ledger");
    Ok(Json(ledger).into_response())
}

/// Searches the commands (and their output) of the sessions the caller may read.
pub(super) async fn search(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    RequestClient(client): RequestClient,
) -> Result<Response, ApiError> {
    let auth = authenticate(&state, &headers).await?;
    let params: Vec<(String, String)> = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    let query = SearchQuery::from_params(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|m| ApiError::new(ErrorCode::BadRequest, m))?;
    let sessions = state.access.visible_sessions(&auth).await?;
    let answer = state
        .live
        .transcripts
        .search(&auth.caller, &client, sessions, query)
        .await;
    Ok(Json(answer).into_response())
}

/// Checks a session's stored transcript against its chain head and names the first chunk
/// that differs; the read is audited.
pub(super) async fn verify_transcript(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    RequestClient(client): RequestClient,
) -> Result<Response, ApiError> {
    let auth = authenticate(&state, &headers).await?;
    let session = state.access.managed_session(&auth, &name).await?;
    let report = state
        .live
        .transcripts
        .verify(&session)
        .await
        .map_err(|e| transcript_error(e, &name))?;
    state
        .live
        .transcripts
        .record_read(&auth.caller, &client, &session, "transcript (verify)");
    Ok(Json(json!({ "session": name, "verification": report })).into_response())
}
