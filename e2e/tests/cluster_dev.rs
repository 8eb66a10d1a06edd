//! `nodeshell dev` as a user runs it: it brings up the control plane with the sample objects,
//! the controller, the simulator and the gateway, prints the web console's URL, lets the demo
//! user sign in through the gateway (the simulator's issuer signs them in at once), and leaves
//! nothing behind when stopped, even by SIGKILL.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use nodeshell::api::NodeShellPolicy;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

mod support;
use support::{
    NodeshellProcess, READY_TIMEOUT, admin_client, run_dir, start_dev, wait_console_url,
};

/// Waits for the ready marker and returns the apiserver URL it holds.
fn wait_ready(dev: &NodeshellProcess, run_dir: &Path) -> anyhow::Result<String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(server) = std::fs::read_to_string(run_dir.join(nodeshell::dev::READY_FILE)) {
            return Ok(server.trim().to_owned());
        }
        if let Some(status) = dev.try_wait()? {
            anyhow::bail!("nodeshell dev exited before it was ready: {status}");
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "nodeshell dev not ready after {READY_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn port_of(server: &str) -> u16 {
    server
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What the browser gets from the console's sign-in through the gateway, done by hand: the
/// session cookie (`name=value`), never a token.
struct Login {
    cookie: String,
}

/// The console's sign-in as the contract describes it: `/auth/login` sends the browser to
/// the issuer's `/authorize` (code, PKCE, state, nonce; the simulator's autoLogin answers at
/// once), which sends it back to `/auth/callback`; the gateway exchanges the code with its
/// client secret and answers with an HttpOnly session cookie.
async fn scripted_login(console: &str) -> anyhow::Result<Login> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()?;
    let location = |r: &reqwest::Response| {
        r.headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let cookie = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with(&format!("{name}=")))
            .map(str::to_owned)
    };
    let login = http.get(format!("{console}auth/login")).send().await?;
    anyhow::ensure!(
        login.status() == reqwest::StatusCode::FOUND,
        "/auth/login answered {}",
        login.status()
    );
    let binding = cookie(&login, "nodeshell-login")
        .and_then(|c| c.split(';').next().map(str::to_owned))
        .ok_or_else(|| anyhow::anyhow!("/auth/login set no binding cookie"))?;
    let authorize = url::Url::parse(&location(&login))?;
    let params: HashMap<String, String> = authorize.query_pairs().into_owned().collect();
    assert_eq!(
        params.get("client_id").map(String::as_str),
        Some("nodeshell-dev")
    );
    assert_eq!(
        params.get("code_challenge_method").map(String::as_str),
        Some("S256")
    );
    assert_eq!(
        params.get("redirect_uri").cloned(),
        Some(format!("{console}auth/callback"))
    );
    let back = http.get(authorize.as_str()).send().await?;
    anyhow::ensure!(
        back.status() == reqwest::StatusCode::FOUND,
        "/authorize answered {}",
        back.status()
    );
    let callback = location(&back);
    assert!(
        callback.starts_with(&format!("{console}auth/callback?")),
        "redirected to {callback}"
    );
    let done = http
        .get(&callback)
        .header(reqwest::header::COOKIE, &binding)
        .send()
        .await?;
    anyhow::ensure!(
        done.status() == reqwest::StatusCode::FOUND,
        "/auth/callback answered {}",
        done.status()
    );
    let session = cookie(&done, "nodeshell-session")
        .ok_or_else(|| anyhow::anyhow!("/auth/callback set no session cookie"))?;
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict"),
        "{session}"
    );
    let value = session.split(';').next().unwrap_or_default().to_owned();
    assert!(!value.contains("eyJ"), "no token in the cookie: {value}");
    Ok(Login { cookie: value })
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a shell on `node` as the cookie's owner, from the console's origin, and attaches.
async fn open_shell(console: &str, cookie: &str, node: &str) -> anyhow::Result<Socket> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let opened: Value = http
        .post(format!("{console}api/v1/nodes/{node}/shell"))
        .header(reqwest::header::COOKIE, cookie)
        .header(reqwest::header::ORIGIN, console.trim_end_matches('/'))
        .header("x-nodeshell-csrf", "1")
        .json(&serde_json::json!({"cols": 100, "rows": 30}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let attach = opened["attachUrl"].as_str().unwrap_or_default();
    let ws_url = format!(
        "ws://{}{attach}",
        console.trim_start_matches("http://").trim_end_matches('/')
    );
    let mut request = ws_url.into_client_request()?;
    request
        .headers_mut()
        .insert("origin", console.trim_end_matches('/').parse()?);
    let (socket, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(socket)
}

/// Takes a binary frame of terminal output: collects it and acknowledges it, as every
/// client does (`ack` with the total received; the gateway sends at most 256 KiB ahead).
async fn take_output(
    socket: &mut Socket,
    bytes: &[u8],
    output: &mut String,
    received: &mut u64,
) -> anyhow::Result<()> {
    output.push_str(&String::from_utf8_lossy(bytes));
    *received += bytes.len() as u64;
    let ack = serde_json::json!({"type": "ack", "bytes": *received});
    // A socket the gateway is closing may refuse it; the output still counts.
    let _ = socket.send(Message::Text(ack.to_string().into())).await;
    Ok(())
}

/// Reads frames until a text frame of `kind` arrives, collecting terminal output.
async fn next_control(
    socket: &mut Socket,
    kind: &str,
    output: &mut String,
    received: &mut u64,
) -> anyhow::Result<Value> {
    let read = async {
        while let Some(message) = socket.next().await {
            match message? {
                Message::Binary(bytes) => take_output(socket, &bytes, output, received).await?,
                Message::Text(text) => {
                    let frame: Value = serde_json::from_str(&text)?;
                    if frame["type"] == kind {
                        return Ok(frame);
                    }
                    anyhow::ensure!(frame["type"] != "error", "error frame: {frame}");
                }
                _ => {}
            }
        }
        anyhow::bail!("the socket closed before a {kind} frame; output: {output:?}")
    };
    tokio::time::timeout(Duration::from_secs(60), read).await?
}

#[tokio::test]
async fn dev_serves_the_console_signs_in_the_demo_user_and_cleans_up_on_sigterm()
-> anyhow::Result<()> {
    let run_dir = run_dir("full");
    let dev = start_dev(&run_dir, &["--listen", "127.0.0.1:0"])?;
    let lines = dev.stdout_lines()?;
    let (console, banner) = wait_console_url(&dev, &lines)?;
    let server = wait_ready(&dev, &run_dir)?;
    assert!(
        console.starts_with("http://127.0.0.1:") && console.ends_with('/'),
        "{console}"
    );
    let urls = banner.iter().filter(|l| l.contains("http://")).count();
    assert_eq!(urls, 1, "one URL in the banner: {banner:#?}");

    let http = reqwest::Client::builder().no_proxy().build()?;
    // Readiness and metrics are on the gateway's admin port only (`nodeshell dev` waited
    // for its /readyz before printing the URL); the console's port does not serve them.
    for path in ["readyz", "metrics", "healthz"] {
        let answer = http.get(format!("{console}{path}")).send().await?;
        assert_eq!(
            answer.status().as_u16(),
            404,
            "/{path} on the console's port"
        );
    }
    let index = http.get(&console).send().await?;
    assert!(index.status().is_success(), "/: {}", index.status());
    let content_type = index
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = index.text().await?;
    assert!(html.to_lowercase().contains("<!doctype html"), "{html}");

    let login = scripted_login(&console).await?;
    let whoami: Value = http
        .get(format!("{console}api/v1/whoami"))
        .header(reqwest::header::COOKIE, &login.cookie)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(whoami["sub"], "demo", "{whoami}");
    assert_eq!(whoami["tier"], "admin", "{whoami}");

    // The demo's nodes show each case the Nodes page can: a shell, a pool no policy covers,
    // and a node that is not an EC2 instance (refused for that, not for a missing policy).
    let nodes: Value = http
        .get(format!("{console}api/v1/nodes"))
        .header(reqwest::header::COOKIE, &login.cookie)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let code_of = |name: &str| {
        nodes["items"]
            .as_array()
            .and_then(|items| items.iter().find(|n| n["name"] == name))
            .map(|n| n["error"]["code"].clone())
    };
    assert_eq!(
        code_of("ip-10-0-1-17.ec2.internal"),
        Some(Value::Null),
        "{nodes}"
    );
    assert_eq!(
        code_of("ip-10-0-3-99.ec2.internal"),
        Some(Value::from("E_NODE_SHELL_DISABLED")),
        "{nodes}"
    );
    assert_eq!(
        code_of("onprem-rack7-node3"),
        Some(Value::from("E_NODE_NOT_EC2")),
        "{nodes}"
    );

    // A live shell on the sample node with an Online instance, attached from the console's
    // origin: stopping dev must close it as GatewayShutdown, not as a lost connection.
    let mut socket = open_shell(&console, &login.cookie, "ip-10-0-1-17.ec2.internal").await?;
    let mut output = String::new();
    let mut received = 0;
    let hello = next_control(&mut socket, "hello", &mut output, &mut received).await?;
    assert_eq!(hello["instanceId"], "i-0123456789abcdef0", "{hello}");
    socket
        .send(Message::Binary("echo dev-shell-$((6*7))\n".into()))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !output.contains("dev-shell-42") {
        anyhow::ensure!(Instant::now() < deadline, "no shell output: {output:?}");
        if let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_millis(500), socket.next()).await
            && let Message::Binary(bytes) = message?
        {
            take_output(&mut socket, &bytes, &mut output, &mut received).await?;
        }
    }

    let admin = admin_client(&run_dir.join("kubeconfig")).await?;
    let nodes: Api<Node> = Api::all(admin.clone());
    let nodes = nodes.list(&ListParams::default()).await?.items;
    let ec2 = nodes
        .iter()
        .filter(|n| {
            n.spec
                .as_ref()
                .and_then(|s| s.provider_id.as_deref())
                .is_some_and(|p| p.starts_with("aws:///"))
        })
        .count();
    assert_eq!(
        (nodes.len(), ec2),
        (5, 4),
        "four EC2-like nodes and one other"
    );
    let policies: Api<NodeShellPolicy> = Api::all(admin);
    // The controller child, running as its service account, reports the sample policy Ready.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let policy = policies.get_opt("default").await?;
        let ready = policy
            .as_ref()
            .and_then(|p| p.status.as_ref())
            .is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sample policy never became Ready: {policy:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for identity in [
        "admin",
        "auditor",
        "alice",
        "nodeshell-controller",
        "nodeshell-gateway",
    ] {
        assert!(
            run_dir
                .join(format!("kubeconfigs/{identity}.kubeconfig"))
                .is_file(),
            "{identity}"
        );
    }

    dev.send_signal("TERM")?;
    let closed = next_control(&mut socket, "closed", &mut output, &mut received).await?;
    assert_eq!(closed["reason"], "GatewayShutdown", "{closed}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = dev.try_wait()? {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "nodeshell dev did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(status.success(), "nodeshell dev exited with {status}");
    assert!(
        !run_dir.join("kubeconfig").exists(),
        "stale kubeconfig left behind"
    );
    assert!(!run_dir.join(nodeshell::dev::READY_FILE).exists());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port_of(&server))).is_err());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port_of(console.trim_end_matches('/'))))
            .is_err(),
        "the gateway still listens"
    );
    assert!(!run_dir.join("sim-urls.json").exists());
    // The gateway stopped while the apiserver still answered: its close row is in its log.
    let gateway_log = std::fs::read_to_string(run_dir.join("gateway.log"))?;
    assert!(
        gateway_log
            .lines()
            .any(|l| l.contains("GatewayShutdown") && l.contains("ssm_session_close")),
        "no GatewayShutdown close row in the gateway log:\n{gateway_log}"
    );
    let _ = std::fs::remove_dir_all(&run_dir);
    Ok(())
}

#[tokio::test]
async fn the_control_plane_dies_with_a_killed_dev() -> anyhow::Result<()> {
    let run_dir = run_dir("killed");
    let dev = start_dev(&run_dir, &["--control-plane-only"])?;
    let server = wait_ready(&dev, &run_dir)?;
    let port = port_of(&server);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());

    // No destructor runs after SIGKILL: only the lifeline pipes can stop the children.
    dev.send_signal("KILL")?;
    dev.wait()?;
    wait_until(
        "the apiserver stops listening",
        Duration::from_secs(30),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
    );
    let _ = std::fs::remove_dir_all(&run_dir);
    Ok(())
}

#[test]
fn a_taken_console_port_is_refused_before_anything_starts() -> anyhow::Result<()> {
    let held = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = held.local_addr()?.to_string();
    let run_dir = run_dir("busy");
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_nodeshell"))
        .args(["dev", "--listen", &addr, "--run-dir"])
        .arg(&run_dir)
        .env(
            "NODESHELL_CONTROLPLANE_BIN",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/.bin"),
        )
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "dev started on a taken port");
    assert!(stderr.contains(&addr), "{stderr}");
    assert!(stderr.contains("--listen 127.0.0.1:0"), "{stderr}");
    // Refused up front: no control plane was started and stopped first.
    assert!(!stderr.contains("starting etcd"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(!run_dir.join("kubeconfig").exists());
    let _ = std::fs::remove_dir_all(&run_dir);
    Ok(())
}
