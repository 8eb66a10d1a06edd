//! `kubectl nodeshell`'s commands against the e2e harness's gateway (sign-in through the
//! simulator's issuer as a console user): `preflight`, a shell fed from a pipe, `ls`,
//! `replay`, `end`, `grep`, a forged handle, a gateway without the console's sign-in, and
//! `logout`. The shell in a real terminal (tmux) is driven against `nodeshell dev` by
//! `cli_dev.rs`.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;

use support::*;

const STEP: Duration = Duration::from_secs(20);

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
    plugin_login(&bin, &config, &gw.base, Some(CONSOLE_USERS[1])).await?;
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
