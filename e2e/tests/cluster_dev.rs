//! `nodeshell dev` as a user runs it: it brings up the control plane with the sample objects
//! and the controller, writes kubeconfigs, and leaves nothing behind when stopped, even by
//! SIGKILL.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use nodeshell::api::NodeShellPolicy;

const READY_TIMEOUT: Duration = Duration::from_secs(120);

fn run_dir(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "nodeshell-dev-test-{tag}-{}",
        uuid::Uuid::new_v4().simple()
    ))
}

fn start_dev(run_dir: &Path, extra: &[&str]) -> anyhow::Result<Child> {
    Ok(Command::new(env!("CARGO_BIN_EXE_nodeshell"))
        .arg("dev")
        .arg("--run-dir")
        .arg(run_dir)
        .args(extra)
        .env(
            "NODESHELL_CONTROLPLANE_BIN",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/.bin"),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

/// Waits for the ready marker and returns the apiserver URL it holds.
fn wait_ready(child: &mut Child, run_dir: &Path) -> anyhow::Result<String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(server) = std::fs::read_to_string(run_dir.join(nodeshell::dev::READY_FILE)) {
            return Ok(server.trim().to_owned());
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("nodeshell dev exited before it was ready: {status}");
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "nodeshell dev not ready after {READY_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn signal(child: &Child, name: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()?;
    anyhow::ensure!(status.success(), "kill -{name} failed");
    Ok(())
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

async fn admin_client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

#[tokio::test]
async fn dev_creates_samples_and_cleans_up_on_sigterm() -> anyhow::Result<()> {
    let run_dir = run_dir("full");
    let mut child = start_dev(&run_dir, &[])?;
    let server = wait_ready(&mut child, &run_dir)?;

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
        (4, 3),
        "three EC2-like nodes and one other"
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

    signal(&child, "TERM")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait()? {
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
    let _ = std::fs::remove_dir_all(&run_dir);
    Ok(())
}

#[tokio::test]
async fn the_control_plane_dies_with_a_killed_dev() -> anyhow::Result<()> {
    let run_dir = run_dir("killed");
    let mut child = start_dev(&run_dir, &["--control-plane-only"])?;
    let server = wait_ready(&mut child, &run_dir)?;
    let port = port_of(&server);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());

    // No destructor runs after SIGKILL: only the lifeline pipes can stop the children.
    signal(&child, "KILL")?;
    child.wait()?;
    wait_until(
        "the apiserver stops listening",
        Duration::from_secs(30),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
    );
    let _ = std::fs::remove_dir_all(&run_dir);
    Ok(())
}
