//! Interop: AWS's official `session-manager-plugin` runs a shell session on the simulator
//! through pipes. The binary comes from `NODESHELL_SSM_PLUGIN`; without it the test says why
//! it skipped, unless `NODESHELL_REQUIRE_PEERS=1` (set by `make test`, which builds the
//! plugin first): then a missing plugin fails the test.
//!
//! Each run reports the simulated agent's resend counters. With no fault knob the plugin
//! acknowledges every output message at once, so the agent's resend loop (oldest unacked
//! message, once its RTO passes) has next to nothing to do: the count is asserted small (with
//! KMS, bounded by the handshake's 15 s, see [`MAX_RESENDS_WITH_KMS`]).
//!
//! With KMS encryption on, the plugin calls `kms:GenerateDataKey` itself. Its aws-sdk-go
//! (v1.54.10, vendored in `aws/session-manager-plugin`) has no endpoint override for KMS:
//! `src/encryption/kmsservice.go` builds the client from `sdkutil.GetDefaultSession()` with an
//! empty endpoint, and that SDK version reads neither `AWS_ENDPOINT_URL` nor
//! `AWS_ENDPOINT_URL_KMS` (`aws/session/env_config.go`), so it always dials
//! `https://kms.<region>.amazonaws.com`. It does honour `HTTPS_PROXY` (its transport uses
//! `http.ProxyFromEnvironment`, `aws/session/custom_transport.go`) and `AWS_CA_BUNDLE`, so the
//! test gives it a loopback CONNECT proxy that terminates TLS for that host name with a
//! test certificate and forwards the (SigV4-signed, unchanged) requests to the simulator's
//! KMS port.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use nodeshell::aws::{SsmSessions, WebIdentityRequest, assume_role_with_web_identity};
use nodeshell::sim::config::{KmsKeyConfig, SessionManagerPreferences};
use nodeshell::sim::{CallRecord, FaultKnobs, SimConfig, Simulator};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const INSTANCE: &str = "i-0123456789abcdef0";

#[tokio::test]
async fn session_manager_plugin_runs_a_shell_on_the_simulator() {
    run_plugin(FaultKnobs::default()).await;
}

/// The relay closes the socket after a few output frames: the plugin calls ResumeSession
/// (SigV4-signed by the Go SDK) and reconnects with the new token; the session goes on.
#[tokio::test]
async fn session_manager_plugin_resumes_after_the_socket_is_closed() {
    let knobs = FaultKnobs {
        close_after_frames: Some(2),
        ..FaultKnobs::default()
    };
    if let Some(calls) = run_plugin(knobs).await {
        let resumed = calls
            .iter()
            .find(|c| c.operation == "ResumeSession")
            .expect("the plugin called ResumeSession");
        assert_eq!(resumed.error_code, None, "{resumed:?}");
        assert_eq!(
            resumed.principal_arn.as_deref(),
            Some("arn:aws:sts::123456789012:assumed-role/nodeshell-user/ns-plugin")
        );
    }
}

/// With the account's Session Manager preferences naming a KMS key, the plugin runs the KMS
/// handshake against the simulated agent: it generates the data key (through the proxy
/// above), answers the challenge, and the encrypted shell works.
#[tokio::test]
async fn session_manager_plugin_runs_a_kms_encrypted_shell() {
    let config = SimConfig {
        session_manager_preferences: SessionManagerPreferences {
            kms_key_id: Some("alias/nodeshell-sessions".to_string()),
            ..SessionManagerPreferences::default()
        },
        kms_keys: vec![KmsKeyConfig::default()],
        ..SimConfig::for_tests()
    };
    if let Some((calls, stdout)) = run_plugin_with(config, FaultKnobs::default(), true).await {
        assert!(
            stdout.contains("This session is encrypted using AWS KMS."),
            "{stdout:?}"
        );
        let keys: Vec<&CallRecord> = calls
            .iter()
            .filter(|c| c.operation == "GenerateDataKey")
            .collect();
        assert_eq!(keys.len(), 1, "{calls:?}");
        assert_eq!(keys[0].error_code, None, "{keys:?}");
        assert_eq!(
            keys[0].principal_arn.as_deref(),
            Some("arn:aws:sts::123456789012:assumed-role/nodeshell-user/ns-plugin")
        );
    }
}

/// A CONNECT proxy on loopback for the plugin's KMS calls: TLS for `host` with a fresh
/// self-signed certificate (returned as PEM for `AWS_CA_BUNDLE`), each request forwarded
/// byte for byte to `upstream` and its answer back.
fn kms_proxy(host: &str, upstream: std::net::SocketAddr) -> (std::net::SocketAddr, String) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let certified = rcgen::generate_simple_self_signed(vec![host.to_string()]).expect("cert");
    let pem = certified.cert.pem();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let config = std::sync::Arc::new(
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(certified.cert.der().to_vec())],
                key,
            )
            .expect("TLS config"),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let addr = listener.local_addr().expect("proxy address");
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let config = config.clone();
            std::thread::spawn(move || {
                if let Err(e) = proxy_connection(tcp, config, upstream) {
                    println!("KMS proxy connection ended: {e}");
                }
            });
        }
    });
    (addr, pem)
}

/// Reads an HTTP head (through the blank line); None at a clean end of stream.
fn read_head(stream: &mut impl std::io::Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        head.push(byte[0]);
    }
    Ok(Some(head))
}

fn content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0)
}

fn proxy_connection(
    mut tcp: std::net::TcpStream,
    config: std::sync::Arc<rustls::ServerConfig>,
    upstream: std::net::SocketAddr,
) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let connect = read_head(&mut tcp)?.unwrap_or_default();
    if !connect.starts_with(b"CONNECT ") {
        tcp.write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")?;
        return Ok(());
    }
    tcp.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")?;
    let conn = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while let Some(head) = read_head(&mut tls)? {
        let mut body = vec![0u8; content_length(&head)];
        tls.read_exact(&mut body)?;
        let mut up = std::net::TcpStream::connect(upstream)?;
        up.write_all(&head)?;
        up.write_all(&body)?;
        let answer = read_head(&mut up)?.unwrap_or_default();
        let mut answer_body = vec![0u8; content_length(&answer)];
        up.read_exact(&mut answer_body)?;
        tls.write_all(&answer)?;
        tls.write_all(&answer_body)?;
        tls.flush()?;
    }
    Ok(())
}

/// Under `make test` the interop peers must be there: a missing one fails instead of skipping.
fn peers_required() -> bool {
    std::env::var("NODESHELL_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

/// The plugin binary from `NODESHELL_SSM_PLUGIN`, or None (the test skips) when it is not
/// configured or not there; with `NODESHELL_REQUIRE_PEERS=1` that panics instead.
fn plugin_binary() -> Option<std::ffi::OsString> {
    let problem = match std::env::var_os("NODESHELL_SSM_PLUGIN") {
        None => {
            "NODESHELL_SSM_PLUGIN is not set (path to a session-manager-plugin binary)".to_string()
        }
        Some(path) if !std::path::Path::new(&path).is_file() => format!(
            "NODESHELL_SSM_PLUGIN names {}, which does not exist",
            std::path::Path::new(&path).display()
        ),
        Some(path) => return Some(path),
    };
    assert!(
        !peers_required(),
        "NODESHELL_REQUIRE_PEERS=1 but the official plugin is missing: {problem}; \
         build it with `make ssm-plugin` (or run the tests through `make test`)"
    );
    println!("skipped: {problem}");
    None
}

/// Most agent resends a fault-free plugin session may cause. The plugin acks each output
/// message on receipt over loopback; a resend happens only when an ack has not arrived
/// within the agent's RTO (e.g. a message sent while the plugin was still starting up).
const MAX_RESENDS_WITHOUT_FAULTS: u64 = 5;

/// Most agent resends a fault-free KMS session may cause. Observed: 2, the handshake request
/// (sequence 0) once and one output message near the end; the plain session has none. The
/// agent resends at most one message per 100 ms tick and gives the handshake 15 s, so the
/// request can be resent at most 150 times before the session fails; the rest gets the same
/// allowance as a plain session.
const MAX_RESENDS_WITH_KMS: u64 = 150 + MAX_RESENDS_WITHOUT_FAULTS;

/// Runs one plugin session with `knobs` on the instance; returns the call log, or None when
/// the plugin binary is not configured.
async fn run_plugin(knobs: FaultKnobs) -> Option<Vec<CallRecord>> {
    run_plugin_with(SimConfig::for_tests(), knobs, false)
        .await
        .map(|(calls, _)| calls)
}

/// As [`run_plugin`] with a simulator configuration; with `kms_proxy` the plugin reaches the
/// simulator's KMS through [`kms_proxy`]. Returns the call log and the plugin's stdout.
async fn run_plugin_with(
    config: SimConfig,
    knobs: FaultKnobs,
    with_kms_proxy: bool,
) -> Option<(Vec<CallRecord>, String)> {
    let plugin = plugin_binary()?;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let sim = Simulator::start(config).await.expect("simulator starts");
    sim.set_instance_faults(INSTANCE, knobs.clone())
        .expect("instance exists");
    let endpoints = sim.aws_endpoints();
    let request = WebIdentityRequest {
        role_arn: sim.default_role_arn(),
        role_session_name: "ns-plugin".to_string(),
        web_identity_token: sim.mint_token("alice").expect("token"),
        duration_seconds: None,
    };
    let creds = assume_role_with_web_identity(&endpoints, &request)
        .await
        .expect("assume role");
    let ssm = SsmSessions::new(&endpoints, &creds);
    let stream = ssm
        .start_session(INSTANCE, None, None, HashMap::new())
        .await
        .expect("start session");
    let response = json!({
        "SessionId": stream.session_id,
        "TokenValue": stream.token_value,
        "StreamUrl": stream.stream_url,
    })
    .to_string();
    let params = json!({"Target": INSTANCE}).to_string();
    let home = tempfile::tempdir().expect("temp home");
    let mut command = tokio::process::Command::new(&plugin);
    command
        .arg(response)
        .arg(sim.region())
        .arg("StartSession")
        .arg("")
        .arg(params)
        .arg(&sim.urls().ssm)
        .env_clear();
    if with_kms_proxy {
        let host = format!("kms.{}.amazonaws.com", sim.region());
        let upstream = sim
            .urls()
            .kms
            .trim_start_matches("http://")
            .parse()
            .expect("KMS address");
        let (proxy, pem) = kms_proxy(&host, upstream);
        let bundle = home.path().join("kms-ca.pem");
        std::fs::write(&bundle, pem).expect("write CA bundle");
        command
            .env("HTTPS_PROXY", format!("http://{proxy}"))
            .env("AWS_CA_BUNDLE", &bundle);
    }
    let mut child = command
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("AWS_ACCESS_KEY_ID", &creds.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", creds.secret_access_key())
        .env("AWS_SESSION_TOKEN", creds.session_token())
        .env("AWS_REGION", sim.region())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("plugin starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let err_task = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });

    let mut seen = String::new();
    let mut buf = vec![0u8; 4096];
    let mut sent_command = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut wanted = "plugin-42";
    loop {
        if seen.contains(wanted) {
            if wanted == "plugin-42" {
                stdin.write_all(b"exit\n").await.expect("write exit");
                wanted = "Exiting session";
                continue;
            }
            break;
        }
        // The plugin forwards stdin only once the session type is known (first output).
        if !sent_command && seen.contains("Starting session") {
            tokio::time::sleep(Duration::from_millis(500)).await;
            stdin
                .write_all(b"echo plugin-$((6*7))\n")
                .await
                .expect("write command");
            sent_command = true;
        }
        match tokio::time::timeout_at(deadline, stdout.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Ok(Err(e)) => panic!("reading plugin output: {e}"),
            Err(_) => {
                let _ = child.start_kill();
                let err = err_task.await.unwrap_or_default();
                panic!("plugin did not show {wanted:?} in 30 s; stdout {seen:?}; stderr {err:?}");
            }
        }
    }
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("plugin exits after the shell does")
        .expect("wait");
    let err = err_task.await.unwrap_or_default();
    println!("plugin stdout: {seen:?}\nplugin stderr: {err:?}");
    assert!(seen.contains("plugin-42"), "{seen:?}");
    assert!(seen.contains("Exiting session"), "{seen:?}");
    assert!(status.success(), "plugin exit status {status:?}");
    assert_eq!(
        sim.session_status(&stream.session_id),
        Some((true, Some(0)))
    );
    let (resends, not_kept) = sim
        .agent_counters(&stream.session_id)
        .expect("the session is still known");
    println!("agent resends: {resends}, sent once without keeping: {not_kept} (knobs {knobs:?})");
    assert_eq!(not_kept, 0, "the agent's outgoing buffer never filled");
    if knobs == FaultKnobs::default() {
        let bound = if with_kms_proxy {
            MAX_RESENDS_WITH_KMS
        } else {
            MAX_RESENDS_WITHOUT_FAULTS
        };
        assert!(
            resends <= bound,
            "{resends} agent resends in a fault-free plugin session (at most {bound})"
        );
    }
    let calls = sim.calls();
    sim.shutdown().await;
    Some((calls, seen))
}
