//! `kubectl nodeshell` in a real terminal (tmux) against a gateway whose sign-in goes through
//! the simulator's issuer: log in through the loopback redirect (the issuer's sign-in form is
//! submitted over HTTP, since no person is there), open a shell, type and see the output,
//! Ctrl-C reaching the remote shell, resize (the remote `stty size`), a dropped connection
//! that comes back with every output line exactly once, and `~.` ending the shell with the
//! terminal restored as it was.

mod support;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use support::*;

const STEP: Duration = Duration::from_secs(20);

/// A directory with `kubectl-nodeshell` (a link to this build's `nodeshell`).
fn plugin_dir(dir: &Path) -> anyhow::Result<String> {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    let link = bin.join("kubectl-nodeshell");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_nodeshell"), &link)?;
    Ok(bin.display().to_string())
}

fn location(response: &reqwest::Response) -> anyhow::Result<String> {
    anyhow::ensure!(
        response.status() == 302,
        "expected 302, got {}",
        response.status()
    );
    Ok(response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| anyhow::anyhow!("302 without Location"))?
        .to_string())
}

/// Runs `kubectl-nodeshell login --no-browser` and plays the browser: the gateway's
/// `/auth/cli/login`, the issuer's sign-in form (as `user`), the gateway's callback, and the
/// redirect to the CLI's loopback listener.
async fn login(bin: &str, config: &Path, gateway: &str, user: &str) -> anyhow::Result<String> {
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
    let url = tokio::time::timeout(STEP, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(url) = line
                .trim()
                .strip_prefix(gateway)
                .map(|_| line.trim().to_string())
            {
                return Ok(url);
            }
        }
        anyhow::bail!("login printed no address")
    })
    .await??;
    assert!(
        url.starts_with(&format!("{gateway}/auth/cli/login?")),
        "{url}"
    );

    let http = no_redirects();
    let start = http.get(&url).send().await?;
    let (binding, _) = set_cookie(&start, "nodeshell-login")
        .ok_or_else(|| anyhow::anyhow!("no binding cookie"))?;
    // The issuer's sign-in form, submitted for `user`.
    let authorize = format!("{}&sim_user={user}", location(&start)?);
    let callback = location(&http.get(&authorize).send().await?)?;
    let back = http
        .get(&callback)
        .header("cookie", &binding)
        .send()
        .await?;
    assert!(
        set_cookie(&back, "nodeshell-session").is_none(),
        "a CLI sign-in leaves the browser no session cookie"
    );
    let loopback = location(&back)?;
    assert!(loopback.starts_with("http://127.0.0.1:"), "{loopback}");
    let page = reqwest::get(&loopback).await?;
    assert_eq!(page.status(), 200);

    let out = tokio::time::timeout(STEP, child.wait_with_output()).await??;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "login failed: {stdout}");
    Ok(stdout)
}

/// Lines of `screen` with the CLI's notices taken out (each is printed on its own line, so
/// taking it out joins an output line it split).
fn without_notices(screen: &str) -> String {
    let mut text = screen.to_string();
    for notice in [
        "[nodeshell] connection lost; reconnecting…",
        "[nodeshell] reconnected",
    ] {
        text = text.replace(&format!("\n{notice}\n"), "");
    }
    text
}

#[tokio::test]
async fn kubectl_nodeshell_logs_in_opens_resizes_survives_a_drop_and_escapes() -> anyhow::Result<()>
{
    let world = GatewayWorld::shared().await?;
    let scope = world.scope("cli", 1, json!({})).await?;
    let proxy = SeverableProxy::start().await?;
    let via = format!("http://{}", proxy.addr);
    // The CLI presents its gateway address as Origin: here that is the proxy's.
    let gw = world
        .start_console_gateway("gw-cli", json!({"allowedOrigins": [ORIGIN, via]}))
        .await?;
    proxy.forward_to(gw.base.trim_start_matches("http://"));

    let dir = tempfile::tempdir()?;
    let config = dir.path().join("config");
    let bin = plugin_dir(dir.path())?;
    let user = CONSOLE_USERS[0];

    // Login: the handle lands in a 0600 file, without any token.
    let said = login(&bin, &config, &via, user).await?;
    assert!(
        said.contains(&format!("as Test {user}")) || said.contains(user),
        "{said}"
    );
    let file = config.join("nodeshell/session.json");
    let mode = std::fs::metadata(&file)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the sign-in file is private");
    let stored = std::fs::read_to_string(&file)?;
    assert!(!holds_jwt(&stored), "no id_token on disk: {stored}");

    // A real terminal, with kubectl (if present) finding the plugin on PATH.
    let path = format!("{bin}:{}", std::env::var("PATH").unwrap_or_default());
    let tmux = Tmux::start(
        dir.path(),
        100,
        30,
        &[
            ("PATH", path),
            ("XDG_CONFIG_HOME", config.display().to_string()),
            ("NODESHELL_GATEWAY", via.clone()),
            // Set in the local shell only: `${NS_LOCAL:-remote}` tells which shell answered.
            ("NS_LOCAL", "local".to_string()),
        ],
    )?;
    let saved = dir.path().join("stty.before");
    tmux.line(&format!("stty -g > {}; echo SAVED", saved.display()))?;
    tmux.wait_for_text("\nSAVED", 1, STEP).await?;
    let plugin = if which_kubectl() {
        "kubectl nodeshell"
    } else {
        "kubectl-nodeshell"
    };
    let node = &scope.nodes[0];
    tmux.line(&format!("{plugin} {node} --reason 'cli e2e'"))?;
    tmux.wait_for_text("(end it with Enter ~.)", 1, STEP)
        .await?;

    // Type, see the output.
    tmux.line("echo CLI-${NS_LOCAL:-remote}-$((6*7))")?;
    tmux.wait_for_text("CLI-remote-42", 1, STEP).await?;

    // Ctrl-C goes to the remote shell, which goes on.
    tmux.line("sleep 30")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    tmux.keys(&["C-c"])?;
    tmux.line("echo AFTER-${NS_LOCAL:-remote}-$((2+3))")?;
    tmux.wait_for_text("AFTER-remote-5", 1, STEP).await?;

    // Resize: the remote terminal follows.
    tmux.resize(120, 40)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    tmux.line("echo SIZE-${NS_LOCAL:-remote} $(stty size)")?;
    tmux.wait_for_text("SIZE-remote 40 120", 1, STEP).await?;

    // Drop the connection mid-output: it comes back and every line shows exactly once.
    tmux.line(
        "for i in $(seq 1 300); do echo line$i; sleep 0.01; done; echo LOOP-${NS_LOCAL:-remote}",
    )?;
    tmux.wait_for_text("\nline40", 1, STEP).await?;
    proxy.sever();
    let screen = tmux
        .wait_for_text("LOOP-remote", 1, Duration::from_secs(40))
        .await?;
    assert!(screen.contains("[nodeshell] reconnected"), "{screen}");
    let text = without_notices(&screen);
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for line in text.lines() {
        *counts.entry(line.trim_end()).or_default() += 1;
    }
    let wrong: Vec<String> = (1..=300)
        .map(|i| format!("line{i}"))
        .filter(|l| counts.get(l.as_str()).copied() != Some(1))
        .collect();
    assert!(
        wrong.is_empty(),
        "lost or doubled after the drop: {wrong:?}\n{screen}"
    );

    // The shell still answers after the reattach, then `~.` ends it.
    tmux.line("echo BACK-${NS_LOCAL:-remote}-$((3+4))")?;
    tmux.wait_for_text("BACK-remote-7", 1, STEP).await?;
    tmux.keys(&["Enter"])?;
    tmux.type_text("~.")?;
    let ended = tmux.wait_for_text(" ended (", 1, STEP).await?;
    assert!(ended.contains("nodeshell: session "), "{ended}");

    // The terminal is as it was before.
    let after = dir.path().join("stty.after");
    tmux.line(&format!("stty -g > {}; echo RESTORED", after.display()))?;
    tmux.wait_for_text("\nRESTORED", 1, STEP).await?;
    assert_eq!(
        std::fs::read_to_string(&saved)?,
        std::fs::read_to_string(&after)?,
        "the terminal's mode is restored"
    );

    // The session closed as the person's own close, with the reason recorded.
    let session = world.sessions_of(&scope.policy).await?;
    let name = session
        .first()
        .and_then(|s| s["metadata"]["name"].as_str())
        .ok_or_else(|| anyhow::anyhow!("no session"))?
        .to_string();
    let closed = world.wait_closed(&name, STEP).await?;
    assert_eq!(closed["spec"]["reason"], "cli e2e");
    world.cleanup(&scope).await?;
    Ok(())
}

fn which_kubectl() -> bool {
    std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One run of the plugin: exit status, stdout, stderr.
async fn plugin(
    bin: &str,
    config: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> anyhow::Result<(i32, String, String)> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(format!("{bin}/kubectl-nodeshell"))
        .args(args)
        .env("XDG_CONFIG_HOME", config)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let text = text.to_string();
        tokio::spawn(async move {
            // Typed after the shell is up: input waits for the hello frame anyway.
            let _ = pipe.write_all(text.as_bytes()).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
    }
    let out = tokio::time::timeout(STEP, child.wait_with_output()).await??;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn ls_replay_preflight_grep_end_and_the_sign_in_errors_say_what_to_do() -> anyhow::Result<()>
{
    let world = GatewayWorld::shared().await?;
    let scope = world.scope("cli-cmds", 1, json!({})).await?;
    let gw = world
        .start_console_gateway("gw-cli-cmds", json!({}))
        .await?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("config");
    let bin = plugin_dir(dir.path())?;
    login(&bin, &config, &gw.base, CONSOLE_USERS[1]).await?;
    let node = scope.nodes[0].as_str();

    // preflight: every gate passes for this node.
    let (status, out, err) = plugin(&bin, &config, &["preflight", node], None).await?;
    assert_eq!(status, 0, "{err}");
    assert!(
        out.starts_with("GATE") && out.contains("is ready for a shell"),
        "{out}"
    );

    // A shell fed from a pipe (not a terminal): runs a command and exits.
    let (status, out, err) = plugin(
        &bin,
        &config,
        &[node, "--reason", "cli commands"],
        Some("echo REPLAY-$((5*5))\nexit\n"),
    )
    .await?;
    assert_eq!(status, 0, "{out}\n{err}");
    assert!(out.contains("REPLAY-25"), "{out}");
    assert!(err.contains(" ended (UserExit"), "{err}");

    // ls lists it, closed; replay plays its recording.
    let (status, out, err) = plugin(&bin, &config, &["ls"], None).await?;
    assert_eq!(status, 0, "{err}");
    let row = out
        .lines()
        .find(|l| l.contains(node))
        .ok_or_else(|| anyhow::anyhow!("ls does not list the session: {out}"))?;
    assert!(row.contains("Closed") && row.contains("UserExit"), "{out}");
    let session = row
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let (status, out, err) =
        plugin(&bin, &config, &["replay", &session, "--speed", "100"], None).await?;
    assert_eq!(status, 0, "{err}");
    assert!(
        out.contains("REPLAY-25"),
        "the recording replays the output: {out}"
    );

    // end of an ended session is accepted and changes nothing.
    let (status, out, err) = plugin(&bin, &config, &["end", &session], None).await?;
    assert_eq!(status, 0, "{err}");
    assert!(out.contains("asked to end (phase Closed)"), "{out}");

    // grep: the ledger's search when the gateway has it, else a clear E_NO_SEARCH.
    let (status, out, err) = plugin(&bin, &config, &["grep", "REPLAY"], None).await?;
    assert!(
        (status == 0 && out.starts_with("SESSION"))
            || (status == 1 && err.contains("(E_NO_SEARCH)") && err.contains("hint: ")),
        "{status}\n{out}\n{err}"
    );

    // A handle the gateway does not know: the code, and what to do.
    let file = config.join("nodeshell/session.json");
    let good = std::fs::read_to_string(&file)?;
    std::fs::write(
        &file,
        json!({"gateway": gw.base, "session": "forged-handle"}).to_string(),
    )?;
    let (status, _, err) = plugin(&bin, &config, &["whoami"], None).await?;
    assert_eq!(status, 2, "{err}");
    assert!(
        err.contains("(E_REAUTH_REQUIRED)") && err.contains("kubectl nodeshell login"),
        "{err}"
    );
    std::fs::write(&file, good)?;

    // A gateway without the console's sign-in says so at once, before any browser.
    let plain = world.gateway().base.clone();
    let (status, _, err) = plugin(
        &bin,
        &dir.path().join("other"),
        &["--gateway", &plain, "login", "--no-browser"],
        None,
    )
    .await?;
    assert_eq!(status, 1, "{err}");
    assert!(
        err.contains("(E_INTERNAL)")
            && err.contains("clientSecretFile")
            && !err.contains("/auth/cli/login?"),
        "{err}"
    );

    // logout ends it at the gateway and forgets it here.
    let (status, out, err) = plugin(&bin, &config, &["logout"], None).await?;
    assert_eq!(status, 0, "{err}");
    assert!(out.contains("Signed out"), "{out}");
    assert!(!file.exists(), "the sign-in file is gone");
    let (status, _, err) = plugin(&bin, &config, &["--gateway", &gw.base, "whoami"], None).await?;
    assert_eq!(status, 2, "{err}");
    assert!(err.contains("(E_NOT_SIGNED_IN)"), "{err}");
    world.cleanup(&scope).await?;
    Ok(())
}
