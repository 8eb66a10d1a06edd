//! `kubectl nodeshell login` and `logout`: the native-app sign-in of RFC 8252 through the
//! gateway. The CLI listens on `127.0.0.1:<random port>`, sends the browser to the gateway's
//! `/auth/cli/login` with its PKCE challenge, receives a one-time code on its listener, and
//! exchanges code and verifier at `/auth/cli/token` for a session handle. It never sees an
//! id_token or an AWS credential.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::api::Gateway;
use super::config::{StoredSession, remove_session, write_session};
use super::errors::{CliError, codes};

/// How long the CLI waits for the browser to come back.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(300);
/// The path of the CLI's loopback redirect.
const CALLBACK_PATH: &str = "/callback";
/// Largest request head the loopback listener reads.
const MAX_REQUEST_HEAD: usize = 8 * 1024;

fn random(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    URL_SAFE_NO_PAD.encode(buf)
}

/// The PKCE S256 challenge of `verifier`.
pub fn challenge_of(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The gateway address that starts the sign-in.
pub fn login_url(base: &str, redirect_uri: &str, challenge: &str, state: &str) -> String {
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", state)
        .finish();
    format!("{base}/auth/cli/login?{query}")
}

/// What the browser brought back to the loopback listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Callback {
    /// The one-time code.
    Code(String),
    /// The sign-in failed (the gateway's or the issuer's words).
    Failed(String),
    /// Not ours (wrong path or state): answered 400 and ignored.
    Ignored,
}

/// Reads the request line `GET /callback?code=…&state=… HTTP/1.1` against `state`.
pub fn read_callback(request_line: &str, state: &str) -> Callback {
    let mut parts = request_line.split_whitespace();
    let (Some("GET"), Some(target)) = (parts.next(), parts.next()) else {
        return Callback::Ignored;
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != CALLBACK_PATH {
        return Callback::Ignored;
    }
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if get("state").as_deref() != Some(state) {
        return Callback::Ignored;
    }
    if let Some(error) = get("error") {
        return Callback::Failed(format!(
            "{error}: {}",
            get("error_description").unwrap_or_default()
        ));
    }
    match get("code").filter(|c| !c.is_empty()) {
        Some(code) => Callback::Code(code),
        None => Callback::Failed("the redirect carried no code".into()),
    }
}

/// Waits on `listener` for the browser's redirect carrying `state`.
async fn wait_for_code(listener: &TcpListener, state: &str) -> Result<String, CliError> {
    loop {
        let (mut stream, _) = listener.accept().await.map_err(|e| {
            CliError::new(
                codes::LOGIN_FAILED,
                format!("the loopback listener failed: {e}"),
            )
        })?;
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        let read = tokio::time::timeout(Duration::from_secs(10), async {
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            Ok::<(), std::io::Error>(())
        })
        .await;
        if !matches!(read, Ok(Ok(()))) {
            continue;
        }
        let text = String::from_utf8_lossy(&head);
        let line = text.lines().next().unwrap_or_default();
        let callback = read_callback(line, state);
        let (status, page) = match &callback {
            Callback::Code(_) => (
                "200 OK",
                "Signed in to nodeshell. You can close this tab and go back to the terminal.",
            ),
            Callback::Failed(_) => ("400 Bad Request", "The sign-in failed; see the terminal."),
            Callback::Ignored => ("400 Bad Request", "Not a nodeshell sign-in."),
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{page}",
            page.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
        match callback {
            Callback::Code(code) => return Ok(code),
            Callback::Failed(why) => {
                return Err(CliError::new(
                    codes::LOGIN_FAILED,
                    format!("the sign-in failed: {why}"),
                ));
            }
            Callback::Ignored => continue,
        }
    }
}

/// Tries to open `url` in the person's browser (`$BROWSER`, else xdg-open or open); the
/// address is printed either way.
fn open_browser(url: &str) {
    let candidates: Vec<String> = match std::env::var("BROWSER") {
        Ok(b) if !b.trim().is_empty() => vec![b],
        _ => vec!["xdg-open".into(), "open".into()],
    };
    for program in candidates {
        let spawned = std::process::Command::new(&program)
            .arg(url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        if spawned.is_ok() {
            return;
        }
    }
}

/// Signs in to `gateway` and stores the handle in `dir`. Returns what `whoami` says.
pub async fn login(
    gateway: &Gateway,
    dir: &std::path::Path,
    browser: bool,
) -> Result<Value, CliError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| CliError::local(format!("cannot listen on 127.0.0.1 for the sign-in: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| CliError::local(e.to_string()))?
        .port();
    let redirect_uri = format!("http://127.0.0.1:{port}{CALLBACK_PATH}");
    let verifier = random(48);
    let state = random(24);
    let url = login_url(
        gateway.base(),
        &redirect_uri,
        &challenge_of(&verifier),
        &state,
    );
    // Ask once before sending anyone to the browser: a gateway without the console's sign-in
    // (or that refuses this redirect) answers with its error instead of the issuer's address.
    let probe = gateway
        .call_anonymous(reqwest::Method::GET, &url[gateway.base().len()..], None)
        .await?;
    if probe.status != 302 {
        return Err(super::api::refusal(&probe));
    }
    eprintln!("Sign in to nodeshell in your browser:\n\n  {url}\n");
    if browser {
        open_browser(&url);
    }
    let code = tokio::time::timeout(LOGIN_TIMEOUT, wait_for_code(&listener, &state))
        .await
        .map_err(|_| {
            CliError::new(
                codes::LOGIN_FAILED,
                "the browser did not come back within 5 minutes",
            )
        })??;
    let answer = gateway
        .call_anonymous(
            reqwest::Method::POST,
            "/auth/cli/token",
            Some(&json!({"code": code, "code_verifier": verifier})),
        )
        .await?;
    if answer.status != 200 {
        return Err(super::api::refusal(&answer));
    }
    let session = answer
        .body
        .get("session")
        .and_then(Value::as_str)
        .ok_or_else(|| CliError::local("the gateway's answer has no session handle"))?;
    let stored = StoredSession {
        gateway: gateway.base().to_string(),
        session: session.to_string(),
    };
    write_session(dir, &stored)?;
    Gateway::new(gateway.base(), Some(session))?
        .get("/api/v1/whoami")
        .await
}

/// Ends the sign-in at the gateway (when it can be reached) and forgets it here.
pub async fn logout(gateway: &Gateway, dir: &std::path::Path) -> Result<(), CliError> {
    if gateway.handle().is_some() {
        match gateway
            .call(reqwest::Method::POST, "/auth/logout", None)
            .await
        {
            Ok(_) => {}
            // Already ended there: forgetting it here is all that is left.
            Err(e) if e.code == "E_REAUTH_REQUIRED" || e.code == "E_AUTH" => {}
            Err(e) => {
                remove_session(dir)?;
                return Err(e);
            }
        }
    }
    remove_session(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_callback_with_our_state_counts() {
        assert_eq!(
            read_callback("GET /callback?code=c1&state=s1 HTTP/1.1", "s1"),
            Callback::Code("c1".into())
        );
        assert_eq!(
            read_callback("GET /callback?code=c1&state=other HTTP/1.1", "s1"),
            Callback::Ignored
        );
        assert_eq!(
            read_callback("GET /favicon.ico HTTP/1.1", "s1"),
            Callback::Ignored
        );
        assert_eq!(
            read_callback("POST /callback?code=c1&state=s1 HTTP/1.1", "s1"),
            Callback::Ignored
        );
        assert!(matches!(
            read_callback("GET /callback?error=access_denied&state=s1 HTTP/1.1", "s1"),
            Callback::Failed(m) if m.starts_with("access_denied")
        ));
    }

    #[test]
    fn the_login_url_carries_a_loopback_redirect_and_an_s256_challenge() {
        let url = login_url(
            "https://ns.example",
            "http://127.0.0.1:5/callback",
            "ch",
            "st",
        );
        assert_eq!(
            url,
            "https://ns.example/auth/cli/login?redirect_uri=http%3A%2F%2F127.0.0.1%3A5%2Fcallback&code_challenge=ch&code_challenge_method=S256&state=st"
        );
        // RFC 7636 appendix B.
        assert_eq!(
            challenge_of("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
