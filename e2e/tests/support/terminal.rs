//! A browser-side WebSocket [`Terminal`] speaking the gateway's frame protocol: binary frames
//! are terminal bytes, text frames JSON control messages.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::world::{COUNTER, ORIGIN};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A browser-side terminal: binary frames are terminal bytes, text frames JSON control.
/// Frames are read only when a method asks, so a test can stop reading on purpose. Like the
/// console, it acknowledges every output frame it reads (`ack` with its total of output
/// bytes received, counted from the `hello` frame's `offset`), unless a test stops it.
pub struct Terminal {
    ws: Ws,
    /// Every terminal byte received, in order.
    pub output: Vec<u8>,
    /// The session's output offset reached: the total an `ack` carries.
    pub received: u64,
    /// Whether each output frame read is acknowledged.
    pub acking: bool,
    /// Every control message received, in order.
    pub controls: Vec<Value>,
    /// Set once the socket closed.
    pub closed: bool,
}

impl Terminal {
    /// Connects to an attach URL with the allowed Origin.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        Self::connect_with_origin(url, Some(ORIGIN)).await
    }

    /// Connects with a chosen Origin header (None: no header).
    pub async fn connect_with_origin(url: &str, origin: Option<&str>) -> anyhow::Result<Self> {
        Self::connect_with_headers(url, origin, &[]).await
    }

    /// Connects with a chosen Origin and more request headers (name, value).
    pub async fn connect_with_headers(
        url: &str,
        origin: Option<&str>,
        headers: &[(&'static str, &str)],
    ) -> anyhow::Result<Self> {
        let mut request = url.into_client_request()?;
        if let Some(origin) = origin {
            request.headers_mut().insert("Origin", origin.parse()?);
        }
        for (name, value) in headers {
            request.headers_mut().insert(*name, value.parse()?);
        }
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(30),
            // Browsers send without Nagle's delay; a test client that kept it would hold a
            // keystroke behind its own unacknowledged `ack` frame for a delayed ACK (~40 ms).
            tokio_tungstenite::connect_async_with_config(request, None, true),
        )
        .await
        .map_err(|_| anyhow::anyhow!("websocket connect timed out"))??;
        Ok(Self {
            ws,
            output: Vec::new(),
            received: 0,
            acking: true,
            controls: Vec::new(),
            closed: false,
        })
    }

    /// Reads one frame (or times out); returns false once the socket is closed.
    pub async fn pump(&mut self, timeout: Duration) -> anyhow::Result<bool> {
        if self.closed {
            return Ok(false);
        }
        match tokio::time::timeout(timeout, self.ws.next()).await {
            Err(_) => Ok(true),
            Ok(None) => {
                self.closed = true;
                Ok(false)
            }
            Ok(Some(Err(e))) => {
                self.closed = true;
                match e {
                    tokio_tungstenite::tungstenite::Error::ConnectionClosed
                    | tokio_tungstenite::tungstenite::Error::AlreadyClosed
                    | tokio_tungstenite::tungstenite::Error::Protocol(_)
                    | tokio_tungstenite::tungstenite::Error::Io(_) => Ok(false),
                    other => Err(other.into()),
                }
            }
            Ok(Some(Ok(message))) => {
                match message {
                    Message::Binary(bytes) => {
                        self.output.extend_from_slice(&bytes);
                        self.received += bytes.len() as u64;
                        // A socket the gateway is closing may refuse it; the read still counts.
                        if self.acking {
                            let _ = self.ack(self.received).await;
                        }
                    }
                    Message::Text(text) => {
                        let value: Value = serde_json::from_str(text.as_str()).unwrap_or_else(
                            |_| json!({"type": "<not json>", "text": text.as_str()}),
                        );
                        if value["type"] == "hello"
                            && let Some(offset) = value["offset"].as_u64()
                        {
                            self.received = offset;
                        }
                        self.controls.push(value);
                    }
                    Message::Close(_) => {
                        self.closed = true;
                        return Ok(false);
                    }
                    _ => {}
                }
                Ok(true)
            }
        }
    }

    /// Reads until `done` holds, the socket closes, or `timeout` passes.
    pub async fn read_until(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Terminal) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if done(self) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            anyhow::ensure!(
                !left.is_zero() && !self.closed,
                "{} waiting for {what}; controls: {:?}; output tail: {:?}",
                if self.closed {
                    "socket closed"
                } else {
                    "timed out"
                },
                self.controls,
                self.output_tail(400)
            );
            self.pump(left.min(Duration::from_millis(500))).await?;
        }
    }

    /// The first control message of `kind` (waits for it).
    pub async fn control(&mut self, kind: &str, timeout: Duration) -> anyhow::Result<Value> {
        self.read_until(&format!("a {kind:?} frame"), timeout, |t| {
            t.find_control(kind).is_some()
        })
        .await?;
        Ok(self.find_control(kind).cloned().unwrap_or_default())
    }

    /// A control message already received.
    pub fn find_control(&self, kind: &str) -> Option<&Value> {
        self.controls.iter().find(|c| c["type"] == kind)
    }

    /// Waits for the `hello` frame.
    pub async fn hello(&mut self) -> anyhow::Result<Value> {
        self.control("hello", Duration::from_secs(30)).await
    }

    /// Waits until the output contains `needle`.
    pub async fn expect_output(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let needle_bytes = needle.as_bytes().to_vec();
        self.read_until(&format!("output {needle:?}"), timeout, move |t| {
            t.output
                .windows(needle_bytes.len().max(1))
                .any(|w| w == needle_bytes.as_slice())
        })
        .await
    }

    /// Waits until the output after `from` contains `needle`; returns the text after `from`.
    pub async fn expect_output_after(
        &mut self,
        from: usize,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let needle_bytes = needle.as_bytes().to_vec();
        self.read_until(&format!("output {needle:?}"), timeout, move |t| {
            t.output
                .get(from..)
                .unwrap_or_default()
                .windows(needle_bytes.len().max(1))
                .any(|w| w == needle_bytes.as_slice())
        })
        .await?;
        Ok(String::from_utf8_lossy(&self.output[from..]).into_owned())
    }

    /// Types `text` (binary frame).
    pub async fn send_input(&mut self, text: &[u8]) -> anyhow::Result<()> {
        self.ws.send(Message::Binary(text.to_vec().into())).await?;
        Ok(())
    }

    /// Sends a JSON control frame.
    pub async fn send_control(&mut self, value: Value) -> anyhow::Result<()> {
        self.ws
            .send(Message::Text(value.to_string().into()))
            .await?;
        Ok(())
    }

    /// `ack {bytes}`: credit for the output received (any number, for tests of garbage).
    pub async fn ack(&mut self, bytes: u64) -> anyhow::Result<()> {
        self.send_control(json!({"type": "ack", "bytes": bytes}))
            .await
    }

    /// Stops acknowledging output (a browser that reads but never says so).
    pub fn stop_acking(&mut self) {
        self.acking = false;
    }

    /// Acknowledges everything received so far and every frame from now on.
    pub async fn resume_acking(&mut self) -> anyhow::Result<()> {
        self.acking = true;
        self.ack(self.received).await
    }

    /// `resize {cols, rows}`.
    pub async fn resize(&mut self, cols: u16, rows: u16) -> anyhow::Result<()> {
        self.send_control(json!({"type": "resize", "cols": cols, "rows": rows}))
            .await
    }

    /// Runs a command and waits for a marker printed after it; returns the output of the
    /// command (between the echo of the command line and the marker).
    pub async fn run(&mut self, command: &str, timeout: Duration) -> anyhow::Result<String> {
        let marker = format!("__done_{}__", COUNTER.fetch_add(1, Ordering::SeqCst));
        let from = self.output.len();
        // The marker is printed by `printf` with a split literal so its echo never matches.
        let split = marker.len() / 2;
        let line = format!(
            "{command}; printf '%s%s\\n' '{}' '{}'\r",
            &marker[..split],
            &marker[split..]
        );
        self.send_input(line.as_bytes()).await?;
        let text = self.expect_output_after(from, &marker, timeout).await?;
        let end = text.rfind(&marker).unwrap_or(text.len());
        Ok(text[..end].to_string())
    }

    /// Sends `close` and reads until the `closed` frame.
    pub async fn close(&mut self) -> anyhow::Result<Value> {
        self.send_control(json!({"type": "close"})).await?;
        self.control("closed", Duration::from_secs(30)).await
    }

    /// Drops the connection without a close handshake (a browser tab killed).
    pub fn drop_connection(self) {
        drop(self.ws);
    }

    /// The last `n` bytes of output, as text.
    pub fn output_tail(&self, n: usize) -> String {
        String::from_utf8_lossy(&self.output[self.output.len().saturating_sub(n)..]).into_owned()
    }
}
