//! The web console in a real browser against `nodeshell dev`: Debian's Chromium, driven by
//! playwright-core from `web/e2e/console.test.mjs`, signs in as the demo user, opens a node
//! shell, types, reloads the page (the shell comes back), drops the connection (Reconnect),
//! resizes, exits and plays the recording (and its deep link); then, on the node whose policy
//! runs the NodeShell-Shell document, runs three commands (one failing), finds the failing one
//! by search and opens the player at it. This test starts dev, runs the
//! script, then checks the session through the apiserver. It builds nothing: `make browser`
//! (e2e/scripts/install-browser.sh) installs Chromium and the npm packages, `make web` the
//! console the binary embeds.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kube::api::Api;
use nodeshell::api::{EXIT_CODE_FROM_SHELL, NodeShellSession, SessionPhase};

mod support;
use support::{NodeshellProcess, admin_client, run_dir, start_dev, wait_console_url};

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `nodeshell dev` on a free port; stopped with SIGTERM on drop, even when an assert fails.
struct Dev {
    process: NodeshellProcess,
    run_dir: PathBuf,
    lines: mpsc::Receiver<String>,
}

impl Dev {
    fn start() -> anyhow::Result<Self> {
        let run_dir = run_dir("console-browser");
        let process = start_dev(&run_dir, &["--listen", "127.0.0.1:0"])?;
        let lines = process.stdout_lines()?;
        Ok(Self {
            process,
            run_dir,
            lines,
        })
    }

    /// The URL from the `open http://…/` line.
    fn console_url(&mut self) -> anyhow::Result<String> {
        Ok(wait_console_url(&self.process, &self.lines)?.0)
    }

    /// SIGTERM, then the exit status.
    fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        if let Some(status) = self.process.try_wait()? {
            return Ok(status);
        }
        self.process.send_signal("TERM")?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.process.try_wait()? {
                return Ok(status);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "nodeshell dev did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

/// Runs the playwright-core script; its whole output is in the error when it fails.
fn run_browser_script(console: &str) -> anyhow::Result<String> {
    let chromium =
        std::env::var("NODESHELL_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    anyhow::ensure!(
        Path::new(&chromium).is_file(),
        "no Chromium at {chromium}: run `make browser` (e2e/scripts/install-browser.sh)"
    );
    anyhow::ensure!(
        repo().join("web/node_modules/playwright-core").is_dir(),
        "web/node_modules/playwright-core is missing: run `make browser`"
    );
    let screenshots = std::env::var("NODESHELL_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("target/screenshots"));
    let mut script = Command::new("node")
        .arg(repo().join("web/e2e/console.test.mjs"))
        .current_dir(repo())
        .env("NODESHELL_CONSOLE_URL", console)
        .env("NODESHELL_SCREENSHOTS", &screenshots)
        .env("NODESHELL_CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Output is read on threads so a chatty browser cannot block the script on a full pipe.
    let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = read(
        script
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let stderr = read(
        script
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let status = loop {
        if let Some(status) = script.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = script.kill();
            let _ = script.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = format!(
        "{}{}",
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default()
    );
    match status {
        Some(status) if status.success() => Ok(output),
        Some(status) => anyhow::bail!(
            "the browser test failed ({status}); screenshots in {}:\n{output}",
            screenshots.display()
        ),
        None => anyhow::bail!("the browser test ran over {SCRIPT_TIMEOUT:?}:\n{output}"),
    }
}

#[tokio::test]
async fn a_person_opens_a_node_shell_in_the_console_and_replays_it() -> anyhow::Result<()> {
    let mut dev = Dev::start()?;
    let console = dev.console_url()?;
    let script_console = console.clone();
    let script = tokio::task::spawn_blocking(move || run_browser_script(&script_console)).await?;
    let output = script.map_err(|error| {
        // The run directory goes with `dev`; keep the end of the server logs in the failure.
        let tail = |name: &str| {
            let text = std::fs::read_to_string(dev.run_dir.join(name)).unwrap_or_default();
            let start = text.len().saturating_sub(4096);
            let start = (start..text.len())
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(text.len());
            format!("--- end of {name} ---\n{}", &text[start..])
        };
        anyhow::anyhow!(
            "{error:#}\n{}\n{}",
            tail("gateway.log"),
            tail("simulator.log")
        )
    })?;
    let session_name = output
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("SESSION "))
        .map(str::trim)
        .ok_or_else(|| anyhow::anyhow!("the script named no session:\n{output}"))?
        .to_owned();

    let ledger_session = output
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("LEDGER_SESSION "))
        .map(str::trim)
        .ok_or_else(|| anyhow::anyhow!("the script named no ledger session:\n{output}"))?
        .to_owned();

    // What the browser showed is what the cluster recorded.
    let admin = admin_client(&dev.run_dir.join("kubeconfig")).await?;
    let sessions: Api<NodeShellSession> = Api::all(admin);
    let session = sessions.get(&session_name).await?;
    assert_eq!(session.spec.user.sub, "demo", "{session:?}");
    let status = session.status.unwrap_or_default();
    assert_eq!(status.phase, Some(SessionPhase::Closed), "{status:?}");
    assert_eq!(status.reason.as_deref(), Some("UserExit"), "{status:?}");
    assert_eq!(
        status.exit_code, None,
        "Session Manager does not report the shell's exit status: {status:?}"
    );
    assert!(
        status.ssm_session_id.is_some_and(|id| !id.is_empty()),
        "no SSM session id"
    );
    assert!(
        status.transcript.is_some_and(|t| !t.reference.is_empty()),
        "no transcript ref"
    );

    // The session on the NodeShell-Shell document: its ledger counted the three commands and
    // the failing one, and the shell's own exit status is reported as coming from the shell.
    let ledger = sessions.get(&ledger_session).await?;
    let status = ledger.status.unwrap_or_default();
    assert_eq!(status.phase, Some(SessionPhase::Closed), "{status:?}");
    let summary = status
        .ledger
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no ledger summary: {status:?}"))?;
    assert_eq!(
        (summary.commands, summary.failed_commands),
        (4, 1),
        "true, false, echo and exit; false failed: {status:?}"
    );
    assert_eq!(status.exit_code, Some(0), "{status:?}");
    assert_eq!(
        status.exit_code_source.as_deref(),
        Some(EXIT_CODE_FROM_SHELL),
        "{status:?}"
    );

    let exit = dev.stop()?;
    assert!(exit.success(), "nodeshell dev exited with {exit}");
    assert!(
        std::net::TcpStream::connect(console.trim_start_matches("http://").trim_end_matches('/'))
            .is_err(),
        "the console still answers after dev stopped"
    );
    Ok(())
}
