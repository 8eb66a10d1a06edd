//! The gateway's HTTP API as the CLI calls it: JSON in and out, the session handle in
//! `Authorization: Nodeshell-Session <handle>`, every refusal as a [`CliError`] with its
//! `E_*` code.

use std::time::Duration;

use serde_json::Value;

use super::errors::{CliError, codes};

/// The `Authorization` scheme of a session handle (as the gateway's `cli_login` names it).
pub const HANDLE_SCHEME: &str = "Nodeshell-Session";

/// One gateway: its base URL and, once signed in, the handle.
#[derive(Clone)]
pub struct Gateway {
    base: String,
    handle: Option<String>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// The answer of a call: HTTP status and JSON body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body (`Null` when it is not JSON).
    pub body: Value,
    /// The raw body.
    pub raw: Vec<u8>,
}

impl Gateway {
    /// The gateway at `base` (see [`super::config::gateway_base`]), with `handle` if signed in.
    pub fn new(base: &str, handle: Option<&str>) -> Result<Self, CliError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| CliError::local(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            handle: handle.map(str::to_string),
            http,
        })
    }

    /// The base URL (also the `Origin` the CLI's WebSocket presents).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The handle, if signed in.
    pub fn handle(&self) -> Option<&str> {
        self.handle.as_deref()
    }

    fn signed_in(&self) -> Result<&str, CliError> {
        self.handle.as_deref().ok_or_else(|| {
            CliError::new(
                codes::NOT_SIGNED_IN,
                format!("not signed in to {}", self.base),
            )
        })
    }

    /// A call without the handle (sign-in routes).
    pub async fn call_anonymous(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, CliError> {
        self.send(method, path, body, None).await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        handle: Option<&str>,
    ) -> Result<Answer, CliError> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(handle) = handle {
            request = request.header(
                reqwest::header::AUTHORIZATION,
                format!("{HANDLE_SCHEME} {handle}"),
            );
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            CliError::new(
                codes::UNREACHABLE,
                format!("cannot reach the gateway at {}: {e}", self.base),
            )
        })?;
        let status = response.status().as_u16();
        let raw = response
            .bytes()
            .await
            .map_err(|e| {
                CliError::new(
                    codes::UNREACHABLE,
                    format!("the gateway's answer broke off: {e}"),
                )
            })?
            .to_vec();
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Ok(Answer { status, body, raw })
    }

    /// A call with the handle; a non-2xx answer is the gateway's error.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        let handle = self.signed_in()?.to_string();
        let answer = self.send(method, path, body, Some(&handle)).await?;
        if (200..300).contains(&answer.status) {
            Ok(answer.body)
        } else {
            Err(refusal(&answer))
        }
    }

    /// GET with the handle.
    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// POST with the handle.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// GET of raw bytes with the handle (the transcript).
    pub async fn get_bytes(&self, path: &str) -> Result<Vec<u8>, CliError> {
        let handle = self.signed_in()?.to_string();
        let answer = self
            .send(reqwest::Method::GET, path, None, Some(&handle))
            .await?;
        if (200..300).contains(&answer.status) {
            Ok(answer.raw)
        } else {
            Err(refusal(&answer))
        }
    }

    /// The WebSocket URL of a relative `attachUrl`.
    pub fn socket_url(&self, attach_url: &str) -> String {
        let base = if let Some(rest) = self.base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = self.base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            self.base.clone()
        };
        format!("{base}{attach_url}")
    }
}

/// The gateway's error in a non-2xx answer, or a description of an answer that is not one.
pub fn refusal(answer: &Answer) -> CliError {
    match (
        answer.body.get("code").and_then(Value::as_str),
        answer.body.get("message").and_then(Value::as_str),
    ) {
        (Some(code), Some(message)) => CliError::new(code, message),
        _ => CliError::new(
            "E_INTERNAL",
            format!(
                "the gateway answered HTTP {} without an error body: {}",
                answer.status,
                String::from_utf8_lossy(&answer.raw[..answer.raw.len().min(200)])
            ),
        ),
    }
}

/// A path segment, percent-encoded.
pub fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_keeps_the_gateways_code_and_message() {
        let answer = Answer {
            status: 429,
            body: serde_json::json!({"code": "E_CAP_USER", "message": "2 of 2", "limit": 2}),
            raw: Vec::new(),
        };
        assert_eq!(refusal(&answer), CliError::new("E_CAP_USER", "2 of 2"));
        let html = Answer {
            status: 502,
            body: Value::Null,
            raw: b"<html>bad gateway</html>".to_vec(),
        };
        let e = refusal(&html);
        assert_eq!(e.code, "E_INTERNAL");
        assert!(e.message.contains("HTTP 502"), "{}", e.message);
    }

    #[test]
    fn the_socket_url_follows_the_scheme() {
        let g = Gateway::new("https://ns.example", None).unwrap();
        assert_eq!(g.socket_url("/api/v1/x"), "wss://ns.example/api/v1/x");
        let g = Gateway::new("http://127.0.0.1:8080/", None).unwrap();
        assert_eq!(
            g.socket_url("/a?ticket=t"),
            "ws://127.0.0.1:8080/a?ticket=t"
        );
        assert_eq!(segment("a b/c.d"), "a%20b%2Fc.d");
    }
}
