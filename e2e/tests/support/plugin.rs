//! `kubectl nodeshell` as a person runs it: the executable under its plugin name on a
//! `PATH` of its own, `login --no-browser` with the test playing the browser (the gateway's
//! `/auth/cli/login`, the issuer's sign-in, the gateway's callback and the redirect to the
//! CLI's loopback listener), and the CLI's own notices told apart from the shell's output.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use super::login::{location, no_redirects, set_cookie};

/// How long one step of the plugin may take.
pub const PLUGIN_STEP: Duration = Duration::from_secs(20);

/// A directory `DIR/bin` with `kubectl-nodeshell` (a link to this build's `nodeshell`);
/// returns its path.
pub fn plugin_dir(dir: &Path) -> anyhow::Result<String> {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    let link = bin.join("kubectl-nodeshell");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_nodeshell"), &link)?;
    Ok(bin.display().to_string())
}

/// Runs `kubectl-nodeshell --gateway GATEWAY login --no-browser` with its config under
/// `config` and plays the browser: the gateway's `/auth/cli/login`, the issuer's sign-in
/// (as `user` when the issuer offers a choice, else whoever it signs in at once), the
/// gateway's callback, and the redirect to the CLI's loopback listener. Returns what the
/// CLI printed.
pub async fn plugin_login(
    bin: &str,
    config: &Path,
    gateway: &str,
    user: Option<&str>,
) -> anyhow::Result<String> {
    let mut child = tokio::process::Command::new(format!("{bin}/kubectl-nodeshell"))
        .args(["--gateway", gateway, "login", "--no-browser"])
        .env("XDG_CONFIG_HOME", config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    let mut lines = BufReader::new(stderr).lines();
    let url = tokio::time::timeout(PLUGIN_STEP, async {
        while let Some(line) = lines.next_line().await? {
            if line.trim().starts_with(gateway) {
                return Ok(line.trim().to_string());
            }
        }
        anyhow::bail!("login printed no address")
    })
    .await??;
    anyhow::ensure!(
        url.starts_with(&format!("{gateway}/auth/cli/login?")),
        "login printed {url}"
    );

    let http = no_redirects();
    let start = http.get(&url).send().await?;
    let (binding, _) = set_cookie(&start, "nodeshell-login")
        .ok_or_else(|| anyhow::anyhow!("no binding cookie"))?;
    let mut authorize = location(&start)?;
    if let Some(user) = user {
        authorize.push_str(&format!("&sim_user={user}"));
    }
    let callback = location(&http.get(&authorize).send().await?)?;
    let back = http
        .get(&callback)
        .header("cookie", &binding)
        .send()
        .await?;
    anyhow::ensure!(
        set_cookie(&back, "nodeshell-session").is_none(),
        "a CLI sign-in leaves the browser no session cookie"
    );
    let loopback = location(&back)?;
    anyhow::ensure!(loopback.starts_with("http://127.0.0.1:"), "{loopback}");
    let page = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .get(&loopback)
        .send()
        .await?;
    anyhow::ensure!(page.status() == 200, "the loopback page: {}", page.status());

    let out = tokio::time::timeout(PLUGIN_STEP, child.wait_with_output()).await??;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(out.status.success(), "login failed: {stdout}");
    Ok(stdout)
}

/// The notices the CLI prints around a dropped connection, each on a line of its own.
pub const RECONNECT_NOTICES: [&str; 2] = [
    "[nodeshell] connection lost; reconnecting…",
    "[nodeshell] reconnected",
];

/// `screen` with the CLI's reconnect notices taken out (each is printed on its own line, so
/// taking it out joins an output line it split).
pub fn without_notices(screen: &str) -> String {
    let mut text = screen.to_string();
    for notice in RECONNECT_NOTICES {
        text = text.replace(&format!("\n{notice}\n"), "");
    }
    text
}

/// Output lines `line1`..=`lineN` that `screen` (notices taken out) does not show exactly
/// once.
pub fn lines_not_once(screen: &str, n: usize) -> Vec<String> {
    let text = without_notices(screen);
    let mut counts: std::collections::HashMap<&str, usize> = Default::default();
    for line in text.lines() {
        *counts.entry(line.trim_end()).or_default() += 1;
    }
    (1..=n)
        .map(|i| format!("line{i}"))
        .filter(|l| counts.get(l.as_str()).copied() != Some(1))
        .collect()
}

/// Whether a `kubectl` client is on `PATH` (then the test runs `kubectl nodeshell`, which
/// finds the plugin on `PATH`, else `kubectl-nodeshell` directly).
pub fn which_kubectl() -> bool {
    std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
