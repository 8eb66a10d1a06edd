//! HTTP: the gateway's API with one person's bearer token, and a plain GET for admin servers.

use std::time::Duration;

use serde_json::{Value, json};

/// The gateway's HTTP API with one person's bearer token.
#[derive(Clone, Debug)]
pub struct GatewayClient {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The id_token sent as bearer.
    pub token: String,
    http: reqwest::Client,
}

/// An HTTP answer: status and JSON body (Null when not JSON).
#[derive(Clone, Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Parsed body.
    pub body: Value,
    /// Raw body.
    pub raw: Vec<u8>,
}

impl Answer {
    /// The error code (`E_…`) of an error body.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
}

impl GatewayClient {
    /// A client for `base` with bearer `token`.
    pub fn new(base: &str, token: &str) -> Self {
        Self {
            base: base.to_string(),
            token: token.to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap_or_default(),
        }
    }

    /// Sends a request with the bearer token.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Answer> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let raw = resp.bytes().await?.to_vec();
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Ok(Answer { status, body, raw })
    }

    /// GET.
    pub async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.request(reqwest::Method::GET, path, None).await
    }

    /// POST with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Answer> {
        self.request(reqwest::Method::POST, path, Some(body)).await
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> anyhow::Result<Answer> {
        self.request(reqwest::Method::DELETE, path, None).await
    }

    /// `POST /api/v1/nodes/{node}/shell`.
    pub async fn open(&self, node: &str, body: Value) -> anyhow::Result<Answer> {
        self.post(&format!("/api/v1/nodes/{node}/shell"), body)
            .await
    }

    /// Opens a shell and expects 201: `(session, attach URL, ticket)`.
    pub async fn open_ok(&self, node: &str) -> anyhow::Result<Opened> {
        let answer = self.open(node, json!({"cols": 100, "rows": 30})).await?;
        anyhow::ensure!(
            answer.status == 201,
            "open shell on {node}: HTTP {} {}",
            answer.status,
            String::from_utf8_lossy(&answer.raw)
        );
        Opened::from_body(&self.base, &answer.body)
    }

    /// A new ticket for a session (`POST /api/v1/sessions/{name}/ticket`).
    pub async fn ticket(&self, session: &str) -> anyhow::Result<Opened> {
        let answer = self
            .post(&format!("/api/v1/sessions/{session}/ticket"), json!({}))
            .await?;
        anyhow::ensure!(
            answer.status == 200 || answer.status == 201,
            "ticket for {session}: HTTP {} {}",
            answer.status,
            String::from_utf8_lossy(&answer.raw)
        );
        let mut body = answer.body.clone();
        if body["session"].is_null() {
            body["session"] = json!(session);
        }
        Opened::from_body(&self.base, &body)
    }
}

/// What `POST …/shell` (or `…/ticket`) answered.
#[derive(Clone, Debug)]
pub struct Opened {
    /// Session name.
    pub session: String,
    /// Absolute ws:// URL with the ticket.
    pub attach_url: String,
    /// The ticket.
    pub ticket: String,
    /// The full body.
    pub body: Value,
}

impl Opened {
    /// Reads an open (or ticket) answer; relative attach URLs are resolved against `base`.
    pub fn from_body(base: &str, body: &Value) -> anyhow::Result<Self> {
        let session = body["session"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no session in {body}"))?
            .to_string();
        let ticket = body["ticket"].as_str().unwrap_or_default().to_string();
        let attach = body["attachUrl"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("/api/v1/sessions/{session}/attach?ticket={ticket}"));
        let ws_base = base.replacen("http://", "ws://", 1);
        let attach_url = if attach.starts_with("ws://") || attach.starts_with("wss://") {
            attach
        } else if attach.starts_with("http://") {
            attach.replacen("http://", "ws://", 1)
        } else {
            format!("{ws_base}{attach}")
        };
        Ok(Self {
            session,
            attach_url,
            ticket,
            body: body.clone(),
        })
    }
}

/// A plain HTTP/1.0 GET on loopback: (status code, body).
pub async fn http_get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}
