//! Helpers shared by the tests that run `nodeshell dev` as a user would (included with
//! `mod dev_support;`): start it, read what it prints, reach its control plane.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long `nodeshell dev` may take to print its URL (a cold control plane is slow).
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// A fresh run directory under the system temp dir, named for the test.
pub fn run_dir(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "nodeshell-dev-test-{tag}-{}",
        uuid::Uuid::new_v4().simple()
    ))
}

/// `nodeshell dev --run-dir <run_dir> <extra…>` with stdout piped (read it with
/// [`stdout_lines`]).
pub fn start_dev(run_dir: &Path, extra: &[&str]) -> anyhow::Result<Child> {
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
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?)
}

/// Every line `nodeshell dev` prints on stdout, read on a thread so the pipe never fills.
pub fn stdout_lines(child: &mut Child) -> anyhow::Result<mpsc::Receiver<String>> {
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("stdout is not piped"))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// Waits for the `open http://…/` line and returns the URL, with the lines seen so far.
pub fn wait_for_url(
    child: &mut Child,
    lines: &mpsc::Receiver<String>,
) -> anyhow::Result<(String, Vec<String>)> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut seen = Vec::new();
    loop {
        match lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let url = line.trim().strip_prefix("open ").map(str::to_owned);
                seen.push(line);
                if let Some(url) = url {
                    return Ok((url, seen));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                anyhow::bail!("nodeshell dev closed stdout without a URL: {seen:#?}")
            }
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("nodeshell dev exited before printing its URL: {status}; {seen:#?}");
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "nodeshell dev printed no URL within {READY_TIMEOUT:?}: {seen:#?}"
        );
    }
}

/// A client of dev's control plane from the admin kubeconfig it wrote.
pub async fn admin_client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}
