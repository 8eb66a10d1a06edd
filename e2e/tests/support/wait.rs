//! Waiting until something holds: the one polling loop, and the URL a `nodeshell dev` prints.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::process::{NodeshellProcess, READY_TIMEOUT};

/// Polls `check` every 100 ms until it returns Some, or fails after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for the `open http://…/` line a `nodeshell dev` prints on stdout (`lines`, from
/// [`NodeshellProcess::stdout_lines`]) and returns the URL, with the lines seen so far.
pub fn wait_console_url(
    dev: &NodeshellProcess,
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
        if let Some(status) = dev.try_wait()? {
            anyhow::bail!("nodeshell dev exited before printing its URL: {status}; {seen:#?}");
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "nodeshell dev printed no URL within {READY_TIMEOUT:?}: {seen:#?}"
        );
    }
}
