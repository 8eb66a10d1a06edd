//! The gateway's limits against abusive clients (issue 10 §3), with raw TCP and WebSocket
//! clients against real `nodeshell gateway` processes: headers dribbled byte by byte and a
//! body announced but never sent are cut within 30 s; a request with a body is authenticated
//! before the body is read; a body over the limit is refused with `E_PAYLOAD_TOO_LARGE`; the
//! connection limit holds (counted on the admin listener's `/metrics`); a fragmented 20 MiB
//! WebSocket message closes that socket with 1009 and an `E_PAYLOAD_TOO_LARGE` frame while
//! the gateway's memory stays bounded.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

use crate::support::*;

/// What issue 10 promises: a slow client is cut within this.
const CUT_WITHIN: Duration = Duration::from_secs(30);
/// The default `http.maxBodyBytes`.
const MAX_BODY: usize = 64 * 1024;
/// The WebSocket message bound.
const MAX_MESSAGE: usize = 64 * 1024;

/// `127.0.0.1:PORT` of a gateway's API listener.
fn api_addr(gw: &GatewayProcess) -> String {
    gw.base.trim_start_matches("http://").to_string()
}

/// Reads one HTTP response from `stream` within `within`: status and JSON body (Null when
/// it is not JSON).
async fn read_response(stream: &mut TcpStream, within: Duration) -> anyhow::Result<(u16, Value)> {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    let status = head
                        .split_whitespace()
                        .nth(1)
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0);
                    let body = serde_json::from_slice(&buf[end + 4..end + 4 + length])
                        .unwrap_or(Value::Null);
                    return Ok((status, body));
                }
            }
            let n = stream.read(&mut chunk).await?;
            anyhow::ensure!(
                n > 0,
                "the connection closed before a whole response: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(within, read)
        .await
        .map_err(|_| anyhow::anyhow!("no response within {within:?}"))?
}

/// True once the server closed `stream` (end of stream or a reset), read within `within`.
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + within;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
    false
}

/// A POST of an open request's head (no body) to `gw`, with `token` when given.
fn open_head(token: Option<&str>, extra: &str) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!(
        "POST /api/v1/nodes/ip-10-0-0-1.ec2.internal/shell HTTP/1.1\r\nHost: gateway\r\n\
         Content-Type: application/json\r\n{auth}{extra}\r\n"
    )
}

#[tokio::test]
async fn headers_dribbled_byte_by_byte_are_cut_within_30_seconds() -> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let gw = world.gateway();
    let token = world.token(&engineer(55));
    let head = format!(
        "GET /api/v1/whoami HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {token}\r\nX-Slow: {}\r\n\r\n",
        "a".repeat(200)
    );
    let mut stream = TcpStream::connect(api_addr(gw)).await?;
    let started = Instant::now();
    let mut sent = 0;
    let mut chunk = [0u8; 1024];
    let cut = loop {
        anyhow::ensure!(
            started.elapsed() < CUT_WITHIN + Duration::from_secs(10),
            "still served after {:?} with {sent} of {} header bytes sent",
            started.elapsed(),
            head.len()
        );
        if stream
            .write_all(&head.as_bytes()[sent..=sent])
            .await
            .is_err()
        {
            break started.elapsed();
        }
        sent += 1;
        match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break started.elapsed(),
            // An error status before the close is fine; a request served is not.
            Ok(Ok(n)) => anyhow::ensure!(
                chunk[..n].starts_with(b"HTTP/1.1 4"),
                "answered a request whose headers never ended: {:?}",
                String::from_utf8_lossy(&chunk[..n])
            ),
            Err(_) => {}
        }
    };
    assert!(cut < CUT_WITHIN, "cut after {cut:?}");
    assert!(sent < head.len(), "the headers were never completed");
    Ok(())
}

#[tokio::test]
async fn a_body_announced_but_never_sent_is_cut_with_e_request_timeout() -> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let gw = world.gateway();
    let token = world.token(&engineer(56));
    let mut stream = TcpStream::connect(api_addr(gw)).await?;
    let started = Instant::now();
    stream
        .write_all(open_head(Some(&token), "Content-Length: 100\r\n").as_bytes())
        .await?;
    let (status, body) = read_response(&mut stream, CUT_WITHIN).await?;
    assert_eq!(
        (status, body["code"].as_str()),
        (408, Some("E_REQUEST_TIMEOUT")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("did not arrive"),
        "{body}"
    );
    assert!(
        closed_by_server(&mut stream, Duration::from_secs(5)).await,
        "the connection is closed after the answer"
    );
    assert!(started.elapsed() < CUT_WITHIN, "{:?}", started.elapsed());
    Ok(())
}

#[tokio::test]
async fn a_request_with_a_body_is_authenticated_before_the_body_is_read() -> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let gw = world.gateway();
    for token in [None, Some("not-a-token")] {
        let mut stream = TcpStream::connect(api_addr(gw)).await?;
        stream
            .write_all(open_head(token, "Content-Length: 100\r\n").as_bytes())
            .await?;
        // Well before the body read timeout (10 s): the body was never waited for.
        let (status, body) = read_response(&mut stream, Duration::from_secs(5)).await?;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("E_AUTH")),
            "{token:?}: {body}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_e_payload_too_large() -> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let gw = world.gateway();
    let token = world.token(&engineer(57));
    // Declared too large: refused before any of it is sent.
    let mut stream = TcpStream::connect(api_addr(gw)).await?;
    let declared = format!("Content-Length: {}\r\n", MAX_BODY + 1);
    stream
        .write_all(open_head(Some(&token), &declared).as_bytes())
        .await?;
    let (status, body) = read_response(&mut stream, Duration::from_secs(5)).await?;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("E_PAYLOAD_TOO_LARGE")),
        "{body}"
    );
    assert_eq!(body["limit"], MAX_BODY, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("larger than 65536 bytes"), "{message}");
    // Chunked (no length announced): cut once it passes the limit.
    let mut stream = TcpStream::connect(api_addr(gw)).await?;
    stream
        .write_all(open_head(Some(&token), "Transfer-Encoding: chunked\r\n").as_bytes())
        .await?;
    let chunk = format!("400\r\n{}\r\n", " ".repeat(1024));
    for _ in 0..(MAX_BODY / 1024 + 8) {
        // The gateway may answer and close as soon as the limit is passed.
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let answer = read_response(&mut stream, Duration::from_secs(5)).await;
    let (status, body) = answer?;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("E_PAYLOAD_TOO_LARGE")),
        "{body}"
    );
    Ok(())
}

#[tokio::test]
async fn the_connection_limit_holds_and_frees_a_slot_when_one_closes() -> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let limit = 4;
    let gw = world
        .start_gateway(GatewayOptions {
            patch: json!({"http": {"maxConnections": limit, "headerReadTimeoutSeconds": 30}}),
            ..GatewayOptions::named("gw-connlimit")
        })
        .await?;
    let get = "GET /openapi.json HTTP/1.1\r\nHost: gateway\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..limit {
        let mut stream = TcpStream::connect(api_addr(&gw)).await?;
        stream.write_all(get.as_bytes()).await?;
        let (status, _) = read_response(&mut stream, Duration::from_secs(10)).await?;
        assert_eq!(status, 200);
        held.push(stream);
    }
    let extra = 6;
    for _ in 0..extra {
        let mut stream = TcpStream::connect(api_addr(&gw)).await?;
        let _ = stream.write_all(get.as_bytes()).await;
        assert!(
            closed_by_server(&mut stream, Duration::from_secs(10)).await,
            "a connection beyond the limit is closed"
        );
    }
    let metrics = gw.metrics_text().await?;
    assert_eq!(
        sample(&metrics, "nodeshell_gateway_http_connections"),
        Some(limit as f64),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "nodeshell_gateway_http_connections_refused_total"),
        Some(extra as f64),
        "{metrics}"
    );
    // A closed connection gives its slot back.
    drop(held.pop());
    let gw_ref = &gw;
    wait_for(
        "a slot to come back",
        Duration::from_secs(10),
        || async move {
            let text = gw_ref.metrics_text().await?;
            let open = sample(&text, "nodeshell_gateway_http_connections");
            Ok((open == Some(limit as f64 - 1.0)).then_some(()))
        },
    )
    .await?;
    let mut stream = TcpStream::connect(api_addr(&gw)).await?;
    stream.write_all(get.as_bytes()).await?;
    let (status, _) = read_response(&mut stream, Duration::from_secs(10)).await?;
    assert_eq!(status, 200, "served again once a slot is free");
    Ok(())
}

/// The value of the unlabelled sample `name` in an OpenMetrics text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn the_admin_listener_serves_health_and_metrics_and_the_api_port_does_not()
-> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let gw = world.gateway();
    assert_ne!(gw.admin, gw.base);
    for path in ["/healthz", "/readyz", "/metrics"] {
        let api = gw.client("").get(path).await?;
        assert_eq!(
            (api.status, api.code()),
            (404, "E_NOT_FOUND"),
            "{path} on the API port"
        );
        let (status, text) = gw.admin_get(path).await?;
        assert_eq!(status, 200, "{path} on the admin port: {text}");
    }
    assert!(
        gw.metrics_text()
            .await?
            .contains("nodeshell_gateway_http_connections")
    );
    Ok(())
}

#[tokio::test]
async fn a_fragmented_20_mib_websocket_message_closes_that_socket_and_memory_stays_bounded()
-> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let gw = world
        .start_gateway(GatewayOptions {
            patch: json!({"reattachGraceSeconds": 2}),
            ..GatewayOptions::named("gw-wslimit")
        })
        .await?;
    let scope = world.scope("wslimit", 1, json!({})).await?;
    let opened = gw
        .client(&world.token(&engineer(58)))
        .open_ok(&scope.nodes[0])
        .await?;
    let mut request = opened.attach_url.as_str().into_client_request()?;
    request.headers_mut().insert("Origin", ORIGIN.parse()?);
    let (ws, _) = tokio_tungstenite::connect_async(request).await?;
    let (mut sink, mut stream) = ws.split();
    // The shell is up once its prompt arrives.
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(Ok(message)) = stream.next().await {
            if let Message::Binary(bytes) = message {
                seen.extend_from_slice(&bytes);
                if seen.windows(2).any(|w| w == b"$ ") {
                    return;
                }
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("no prompt: {:?}", String::from_utf8_lossy(&seen)))?;
    let baseline = gw.process.rss_bytes().unwrap_or(0);
    assert!(baseline > 0, "the gateway's RSS is readable");

    // 20 MiB in 16 KiB fragments: every frame is under the frame bound, the message is not.
    let fragment = vec![b'x'; 16 * 1024];
    let fragments = (20 << 20) / fragment.len();
    let sender = tokio::spawn(async move {
        let mut sent = 0usize;
        for i in 0..fragments {
            let opcode = if i == 0 {
                OpCode::Data(Data::Binary)
            } else {
                OpCode::Data(Data::Continue)
            };
            let frame = Frame::message(fragment.clone(), opcode, i + 1 == fragments);
            if sink.send(Message::Frame(frame)).await.is_err() {
                break;
            }
            sent += fragment.len();
        }
        sent
    });
    let pid_rss = {
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(baseline));
        let sampler_peak = peak.clone();
        let pid = gw.process.pid;
        let sampler = tokio::spawn(async move {
            loop {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                if let Some(kib) = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                {
                    sampler_peak.fetch_max(kib * 1024, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        (peak, sampler)
    };
    let mut error_frame = None;
    let mut close = None;
    tokio::time::timeout(CUT_WITHIN, async {
        while let Some(Ok(message)) = stream.next().await {
            match message {
                Message::Text(text) => {
                    let frame: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                    if frame["type"] == "error" {
                        error_frame = Some(frame);
                    }
                }
                Message::Close(frame) => {
                    close = frame;
                    break;
                }
                _ => {}
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("the socket was not closed within {CUT_WITHIN:?}"))?;
    let sent = tokio::time::timeout(Duration::from_secs(30), sender)
        .await
        .map_err(|_| anyhow::anyhow!("the sender still writes after the close"))??;
    let (peak, sampler) = pid_rss;
    sampler.abort();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);

    let close = close.ok_or_else(|| anyhow::anyhow!("closed without a Close frame"))?;
    assert_eq!(close.code, CloseCode::Size, "close code 1009: {close:?}");
    let error_frame =
        error_frame.ok_or_else(|| anyhow::anyhow!("no error frame before the close"))?;
    assert_eq!(error_frame["code"], "E_PAYLOAD_TOO_LARGE", "{error_frame}");
    let message = error_frame["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("larger than {MAX_MESSAGE} bytes")),
        "{message}"
    );
    assert!(
        sent < 20 << 20,
        "the gateway stopped taking the message ({sent} bytes sent)"
    );
    // The message was never assembled: well under its 20 MiB (the kernel's socket buffers
    // hold the rest, not the gateway).
    let grew = peak.saturating_sub(baseline);
    assert!(
        grew < 8 << 20,
        "the gateway's RSS grew by {} KiB while the message came in",
        grew >> 10
    );
    // The session outlives the socket and ends once the reattach grace passes.
    let cr = world
        .wait_closed(&opened.session, Duration::from_secs(30))
        .await?;
    assert_eq!(
        cr["status"]["reason"], "ClientDisconnected",
        "{}",
        cr["status"]
    );
    world.cleanup(&scope).await
}
