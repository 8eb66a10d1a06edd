//! Request bodies: a body declared larger than `http.maxBodyBytes` is refused unread; on the
//! API a request with a body is authenticated before a byte of it is read; then the body is
//! read whole within `http.bodyReadTimeoutSeconds` and up to the limit, so a body declared
//! but never sent, dribbled, or larger than the limit costs the gateway a bounded time and
//! memory.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::{AppState, authenticate};
use crate::gateway::error::{ApiError, ErrorCode};

/// Refuses, authenticates and reads a request body as the module says, then passes the
/// request on with the body in memory.
pub(super) async fn bounded_body(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if !carries_body(request.headers()) {
        return next.run(request).await;
    }
    let limits = &state.access.config.http;
    if declared_length(request.headers()).is_some_and(|n| n > limits.max_body_bytes as u64) {
        return too_large(limits.max_body_bytes).into_response();
    }
    if request.uri().path().starts_with("/api/")
        && let Err(e) = authenticate(&state, request.headers()).await
    {
        return e.into_response();
    }
    let (parts, body) = request.into_parts();
    let read = tokio::time::timeout(
        limits.body_read_timeout,
        read_at_most(body, limits.max_body_bytes),
    )
    .await;
    match read {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(e)) => e.into_response(),
        Err(_) => ApiError::new(
            ErrorCode::RequestTimeout,
            format!(
                "the request body did not arrive within {} s; send the whole body at once",
                limits.body_read_timeout.as_secs()
            ),
        )
        .into_response(),
    }
}

/// Whether the request announces a body (a non-zero length or a chunked one).
fn carries_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || (headers.contains_key(header::CONTENT_LENGTH) && declared_length(headers) != Some(0))
}

/// The `Content-Length`, when there is a readable one.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("the request body is larger than {limit} bytes; API requests are small JSON documents, send a shorter one"),
    )
    .with("limit", limit)
}

/// The whole body, or an error as soon as it passes `limit` bytes or breaks off.
async fn read_at_most(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                ErrorCode::BadRequest,
                format!("the request body could not be read: {e}"),
            )
        })?;
        if bytes.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(bytes))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn a_body_is_announced_by_a_length_or_chunking() {
        assert!(!carries_body(&headers(&[])));
        assert!(!carries_body(&headers(&[("content-length", "0")])));
        assert!(carries_body(&headers(&[("content-length", "12")])));
        assert!(carries_body(&headers(&[("transfer-encoding", "chunked")])));
        assert_eq!(
            declared_length(&headers(&[("content-length", "12")])),
            Some(12)
        );
    }

    #[tokio::test]
    async fn reading_stops_at_the_limit() {
        let ok = read_at_most(Body::from(vec![b'x'; 100]), 100)
            .await
            .unwrap();
        assert_eq!(ok.len(), 100);
        let err = read_at_most(Body::from(vec![b'x'; 101]), 100)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::PayloadTooLarge);
        assert_eq!(err.extra["limit"], 100);
    }
}
