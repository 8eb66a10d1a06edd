//! `kubectl nodeshell NODE`: a shell on the node in the local terminal. Raw mode, the size
//! sent on SIGWINCH, every key (Ctrl-C too) to the remote shell, `~.` after Enter to end it,
//! credit acks for every output frame written, and after a dropped connection an automatic
//! reattach (new ticket, `resume` with the byte offset received) so that no output byte is
//! lost or shown twice. The protocol is the web console's (docs/api.md).

use std::io::Write;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::api::{Gateway, segment};
use super::errors::{CliError, codes};
use super::escape::{EscapeReader, Escaped, HELP};
use super::terminal::{self, RawMode};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long after a drop the CLI keeps trying to reattach (the gateway's default grace).
pub const REATTACH_GRACE: Duration = Duration::from_secs(30);
/// Largest WebSocket message of input sent (the gateway refuses more than 64 KiB).
pub const MAX_INPUT_MESSAGE: usize = 16 * 1024;
/// How long `~.` waits for the gateway's `closed` frame.
const CLOSE_WAIT: Duration = Duration::from_secs(10);
/// Codes of a reattach refusal no retry can fix (as the console's).
const FINAL_REATTACH_CODES: [&str; 6] = [
    "E_AUTH",
    "E_REAUTH_REQUIRED",
    "E_FORBIDDEN",
    "E_NOT_FOUND",
    "E_BAD_REQUEST",
    "E_NODE_SHELL_DISABLED",
];

/// Reattach delay after `attempts` failed tries: 0.5 s, 1 s, 2 s, then 3 s.
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_millis((500u64 << attempts.min(3)).min(3000))
}

/// How a shell ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The session's name.
    pub session: String,
    /// The remote exit code, when the agent reported one.
    pub exit_code: Option<i64>,
    /// The session's `status.reason` (`UserExit`, `IdleTimeout`, …).
    pub reason: String,
}

impl Ended {
    /// The CLI's exit status: the remote one when known, else 0 for an ending the person
    /// chose and 1 for any other.
    pub fn exit_status(&self) -> u8 {
        match self.exit_code {
            Some(code) => u8::try_from(code.clamp(0, 255)).unwrap_or(1),
            None if matches!(self.reason.as_str(), "UserExit" | "UserClosed") => 0,
            None => 1,
        }
    }
}

/// What one connection came to.
#[derive(Debug, PartialEq, Eq)]
enum Link {
    Ended(Ended),
    Dropped,
}

/// Opens a shell on `node` and runs it in this terminal until it ends.
pub async fn open(gateway: &Gateway, node: &str, reason: Option<&str>) -> Result<Ended, CliError> {
    let (cols, rows) = terminal::size();
    let mut body = json!({"cols": cols, "rows": rows});
    if let Some(reason) = reason {
        body["reason"] = json!(reason);
    }
    let offer = gateway
        .post(&format!("/api/v1/nodes/{}/shell", segment(node)), &body)
        .await?;
    let session = offer["session"].as_str().unwrap_or_default().to_string();
    let attach = offer["attachUrl"]
        .as_str()
        .ok_or_else(|| CliError::local("the gateway's answer has no attachUrl"))?
        .to_string();
    eprintln!("nodeshell: session {session} on {node} (end it with Enter ~.)");
    // Watched from before raw mode on, so no signal finds the terminal raw and unhandled.
    let mut signals = Signals::new()?;
    let mut raw = RawMode::enter()?;
    let mut shell = Shell::new(gateway.clone(), session, (cols, rows));
    let result = shell.run(attach, &mut signals).await;
    raw.restore();
    result
}

/// The signals a running shell answers: SIGWINCH (resize) and those that end it (SIGTERM,
/// SIGHUP, and SIGINT sent from elsewhere: in raw mode Ctrl-C is a byte for the remote shell).
struct Signals {
    winch: tokio::signal::unix::Signal,
    stop: StopSignals,
}

/// The signals that end a shell.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self, CliError> {
        let watch =
            |kind| signal(kind).map_err(|e| CliError::local(format!("cannot watch signals: {e}")));
        Ok(Self {
            winch: watch(SignalKind::window_change())?,
            stop: StopSignals {
                term: watch(SignalKind::terminate())?,
                hangup: watch(SignalKind::hangup())?,
                interrupt: watch(SignalKind::interrupt())?,
            },
        })
    }
}

impl StopSignals {
    /// Waits for a signal that ends the shell.
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.hangup.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

fn interrupted() -> CliError {
    CliError::local(
        "interrupted by a signal while connecting; the shell ends when the gateway's reattach grace runs out",
    )
}

struct Shell {
    gateway: Gateway,
    session: String,
    size: (u16, u16),
    sent_size: (u16, u16),
    offset: u64,
    resume_token: Option<String>,
    escape: EscapeReader,
    input: mpsc::Receiver<Vec<u8>>,
    input_open: bool,
    stdout: std::io::Stdout,
}

/// Reads stdin on its own thread (a blocking read cannot be cancelled), in order, bounded:
/// while the shell reconnects, typed input waits here.
fn read_stdin() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 4096];
        loop {
            match std::io::Read::read(&mut stdin, &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

fn notice(text: &str) {
    eprint!("\r\n[nodeshell] {text}\r\n");
}

impl Shell {
    fn new(gateway: Gateway, session: String, size: (u16, u16)) -> Self {
        Self {
            gateway,
            session,
            size,
            sent_size: size,
            offset: 0,
            resume_token: None,
            escape: EscapeReader::default(),
            input: read_stdin(),
            input_open: true,
            stdout: std::io::stdout(),
        }
    }

    async fn connect(&self, attach_url: &str) -> Result<Ws, CliError> {
        let url = self.gateway.socket_url(attach_url);
        let mut request = url
            .into_client_request()
            .map_err(|e| CliError::local(format!("bad attach URL: {e}")))?;
        // The gateway's own origin: the CLI speaks for that gateway's user, as its console does.
        if let Ok(origin) = self.gateway.base().parse() {
            request.headers_mut().insert("Origin", origin);
        }
        let connected = tokio::time::timeout(
            Duration::from_secs(20),
            tokio_tungstenite::connect_async(request),
        )
        .await
        .map_err(|_| CliError::new(codes::UNREACHABLE, "the WebSocket did not open within 20 s"))?;
        match connected {
            Ok((ws, _)) => Ok(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let body = response.body().clone().unwrap_or_default();
                let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                Err(super::api::refusal(&super::api::Answer {
                    status: response.status().as_u16(),
                    body: value,
                    raw: body,
                }))
            }
            Err(e) => Err(CliError::new(
                codes::UNREACHABLE,
                format!("cannot open the WebSocket: {e}"),
            )),
        }
    }

    async fn run(
        &mut self,
        first_attach: String,
        signals: &mut Signals,
    ) -> Result<Ended, CliError> {
        let mut attach = first_attach;
        loop {
            let connected = tokio::select! {
                c = self.connect(&attach) => Some(c),
                () = signals.stop.recv() => None,
            };
            let Some(connected) = connected else {
                return Err(interrupted());
            };
            let link = match connected {
                Ok(ws) => self.pump(ws, signals).await?,
                // Before the first hello there is nothing to reattach to.
                Err(e) if self.resume_token.is_none() => return Err(e),
                Err(_) => Link::Dropped,
            };
            match link {
                Link::Ended(ended) => return Ok(ended),
                Link::Dropped => attach = self.reattach(signals).await?,
            }
        }
    }

    /// A fresh ticket after a drop, retried with [`backoff`] within [`REATTACH_GRACE`].
    async fn reattach(&mut self, signals: &mut Signals) -> Result<String, CliError> {
        notice("connection lost; reconnecting…");
        let dropped = Instant::now();
        let mut attempts = 0;
        loop {
            tokio::select! {
                () = tokio::time::sleep(backoff(attempts)) => {}
                () = signals.stop.recv() => return Err(interrupted()),
            }
            attempts += 1;
            let (cols, rows) = self.size;
            let ticket = self
                .gateway
                .post(
                    &format!("/api/v1/sessions/{}/ticket", segment(&self.session)),
                    &json!({"cols": cols, "rows": rows}),
                )
                .await;
            match ticket {
                Ok(offer) => {
                    if let Some(url) = offer["attachUrl"].as_str() {
                        return Ok(url.to_string());
                    }
                }
                Err(e) if FINAL_REATTACH_CODES.contains(&e.code.as_str()) => {
                    return Err(CliError::new(
                        &e.code,
                        format!(
                            "the connection to the shell was lost and cannot be restored: {}",
                            e.message
                        ),
                    ));
                }
                Err(_) => {}
            }
            if dropped.elapsed() >= REATTACH_GRACE {
                return Err(CliError::new(
                    codes::RECONNECT_GAVE_UP,
                    format!(
                        "the connection to the shell was lost and could not be restored within {} s",
                        REATTACH_GRACE.as_secs()
                    ),
                ));
            }
        }
    }

    async fn send_json(ws: &mut Ws, value: Value) -> bool {
        ws.send(Message::text(value.to_string())).await.is_ok()
    }

    /// Runs one connection until the shell ends or the connection drops.
    async fn pump(&mut self, mut ws: Ws, signals: &mut Signals) -> Result<Link, CliError> {
        if let Some(token) = &self.resume_token {
            let resume = json!({"type": "resume", "resumeToken": token, "offset": self.offset});
            if !Self::send_json(&mut ws, resume).await {
                return Ok(Link::Dropped);
            }
        }
        let mut live = false;
        let mut pending_error: Option<CliError> = None;
        let mut closing: Option<tokio::time::Instant> = None;
        loop {
            let deadline =
                closing.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86400));
            tokio::select! {
                frame = ws.next() => {
                    let message = match frame {
                        Some(Ok(m)) => m,
                        Some(Err(_)) | None => return self.socket_closed(closing.is_some(), pending_error),
                    };
                    match message {
                        Message::Binary(bytes) => {
                            if self.stdout.write_all(&bytes).and_then(|()| self.stdout.flush()).is_err() {
                                return Err(CliError::local("cannot write to the terminal"));
                            }
                            self.offset += bytes.len() as u64;
                            pending_error = None;
                            if live {
                                let _ = Self::send_json(&mut ws, json!({"type": "ack", "bytes": self.offset})).await;
                            }
                        }
                        Message::Text(text) => {
                            let frame: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                            match frame["type"].as_str() {
                                Some("hello") => {
                                    let reconnected = self.resume_token.is_some();
                                    self.resume_token = frame["resumeToken"].as_str().map(str::to_string);
                                    if let Some(offset) = frame["offset"].as_u64() {
                                        self.offset = offset;
                                    }
                                    live = true;
                                    pending_error = None;
                                    if reconnected {
                                        notice("reconnected");
                                        // The shell may have been told another size meanwhile.
                                        let (cols, rows) = self.size;
                                        let _ = Self::send_json(&mut ws, json!({"type": "resize", "cols": cols, "rows": rows})).await;
                                        self.sent_size = self.size;
                                    }
                                }
                                Some("idle_warn") => notice(&format!(
                                    "idle: the shell ends in {} s unless you type something",
                                    frame["secondsRemaining"].as_u64().unwrap_or_default()
                                )),
                                Some("closed") => {
                                    return Ok(Link::Ended(Ended {
                                        session: self.session.clone(),
                                        exit_code: frame["exitCode"].as_i64(),
                                        reason: frame["reason"].as_str().unwrap_or_default().to_string(),
                                    }));
                                }
                                Some("error") => {
                                    let e = CliError::new(
                                        frame["code"].as_str().unwrap_or("E_INTERNAL"),
                                        frame["message"].as_str().unwrap_or_default(),
                                    );
                                    notice(&format!("{} ({})", e.message, e.code));
                                    pending_error = Some(e);
                                }
                                _ => {}
                            }
                        }
                        Message::Close(_) => return self.socket_closed(closing.is_some(), pending_error),
                        _ => {}
                    }
                }
                typed = self.input.recv(), if self.input_open && live && closing.is_none() => {
                    let Some(bytes) = typed else {
                        self.input_open = false;
                        continue;
                    };
                    for action in self.escape.feed(&bytes) {
                        match action {
                            Escaped::Send(bytes) => {
                                for chunk in bytes.chunks(MAX_INPUT_MESSAGE) {
                                    if ws.send(Message::binary(chunk.to_vec())).await.is_err() {
                                        return self.socket_closed(false, pending_error);
                                    }
                                }
                            }
                            Escaped::Disconnect => {
                                closing = Some(tokio::time::Instant::now() + CLOSE_WAIT);
                                let _ = Self::send_json(&mut ws, json!({"type": "close"})).await;
                                break;
                            }
                            Escaped::Help => eprint!("\r\n{HELP}"),
                        }
                    }
                }
                _ = signals.winch.recv() => {
                    self.size = terminal::size();
                    if live && self.size != self.sent_size {
                        let (cols, rows) = self.size;
                        let _ = Self::send_json(&mut ws, json!({"type": "resize", "cols": cols, "rows": rows})).await;
                        self.sent_size = self.size;
                    }
                }
                () = signals.stop.recv(), if closing.is_none() => {
                    closing = Some(tokio::time::Instant::now() + CLOSE_WAIT);
                    let _ = Self::send_json(&mut ws, json!({"type": "close"})).await;
                }
                _ = tokio::time::sleep_until(deadline), if closing.is_some() => {
                    return Ok(Link::Ended(self.user_closed()));
                }
            }
        }
    }

    fn user_closed(&self) -> Ended {
        Ended {
            session: self.session.clone(),
            exit_code: None,
            reason: "UserClosed".into(),
        }
    }

    fn socket_closed(&self, closing: bool, pending: Option<CliError>) -> Result<Link, CliError> {
        after_close(closing, pending, self.resume_token.is_some(), || {
            self.user_closed()
        })
    }
}

/// What a socket that closed without a `closed` frame comes to: the person's own close when
/// they asked for one (`~.`, a signal), the error frame that came before it, a failed attach
/// when the shell never said hello, else a drop to reattach from.
fn after_close(
    closing: bool,
    pending: Option<CliError>,
    started: bool,
    user_closed: impl FnOnce() -> Ended,
) -> Result<Link, CliError> {
    if closing {
        return Ok(Link::Ended(user_closed()));
    }
    if let Some(e) = pending {
        return Err(e);
    }
    if !started {
        return Err(CliError::new(
            codes::ATTACH,
            "the terminal connection closed before the shell started",
        ));
    }
    Ok(Link::Dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_socket_is_a_close_an_error_a_failed_attach_or_a_drop() {
        let mine = || Ended {
            session: "s".into(),
            exit_code: None,
            reason: "UserClosed".into(),
        };
        let refused = CliError::new("E_REAUTH_REQUIRED", "sign in");
        assert!(matches!(
            after_close(true, Some(refused.clone()), true, mine),
            Ok(Link::Ended(e)) if e.reason == "UserClosed"
        ));
        assert_eq!(
            after_close(false, Some(refused.clone()), true, mine),
            Err(refused)
        );
        assert_eq!(
            after_close(false, None, false, mine).map_err(|e| e.code),
            Err(codes::ATTACH.to_string())
        );
        assert_eq!(after_close(false, None, true, mine), Ok(Link::Dropped));
    }

    #[test]
    fn reattach_backs_off_to_three_seconds() {
        let ms: Vec<u128> = (0..6).map(|a| backoff(a).as_millis()).collect();
        assert_eq!(ms, vec![500, 1000, 2000, 3000, 3000, 3000]);
    }

    #[test]
    fn the_exit_status_is_the_remote_one_or_says_whether_the_person_ended_it() {
        let ended = |exit_code, reason: &str| Ended {
            session: "s".into(),
            exit_code,
            reason: reason.into(),
        };
        assert_eq!(ended(Some(3), "UserExit").exit_status(), 3);
        assert_eq!(ended(None, "UserExit").exit_status(), 0);
        assert_eq!(ended(None, "UserClosed").exit_status(), 0);
        assert_eq!(ended(None, "IdleTimeout").exit_status(), 1);
        assert_eq!(ended(Some(300), "UserExit").exit_status(), 255);
    }
}
