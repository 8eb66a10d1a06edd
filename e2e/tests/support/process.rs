//! The one way to run a `nodeshell` child process ([`NodeshellProcess`]): the controller
//! ([`ControllerProcess`]), the gateway ([`GatewayProcess`], started by the world) and
//! `nodeshell dev` ([`start_dev`]); reading what they print and their memory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use nodeshell::localcluster::{Identity, LocalCluster, SYSTEM_NAMESPACE};
use serde_json::Value;

use super::http::GatewayClient;
use super::wait::wait_for;

// Like the control plane's supervisor: the program dies when our pipe closes (also when we
// are SIGKILLed), and the wrapper tells us the program's own pid for signals and /proc.
const WRAPPER: &str = r#"exec 3<&0
"$@" 3<&- &
p=$!
echo "$p" > "$NODESHELL_E2E_PIDFILE"
{ cat <&3 >/dev/null; kill -TERM "$p" 2>/dev/null; sleep 10; kill -KILL "$p" 2>/dev/null; } &
w=$!
exec 3<&-
wait "$p"
s=$?
kill "$w" 2>/dev/null
exit "$s"
"#;

/// A `nodeshell` child process with stdout and stderr captured in separate files (or stdout
/// piped, for [`NodeshellProcess::stdout_lines`]). Killed when dropped.
pub struct NodeshellProcess {
    /// Name used in file names.
    pub name: String,
    /// Captured stdout (absent when piped).
    pub stdout: PathBuf,
    /// Captured stderr.
    pub stderr: PathBuf,
    /// The program's pid (not the wrapper's).
    pub pid: u32,
    wrapper: Mutex<Child>,
    lifeline: Mutex<Option<ChildStdin>>,
    piped: Mutex<Option<ChildStdout>>,
    /// A directory of this process's own files, removed when it is dropped.
    scratch: Option<PathBuf>,
}

impl NodeshellProcess {
    /// Spawns `nodeshell <args>` under the lifeline wrapper, its output in `dir`.
    pub fn spawn(
        name: &str,
        dir: &Path,
        args: &[String],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::launch(name, dir, args, env, false)
    }

    /// Like [`NodeshellProcess::spawn`] with stdout piped (read it with
    /// [`NodeshellProcess::stdout_lines`]).
    pub fn spawn_piped(
        name: &str,
        dir: &Path,
        args: &[String],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::launch(name, dir, args, env, true)
    }

    fn launch(
        name: &str,
        dir: &Path,
        args: &[String],
        env: &[(&str, &str)],
        pipe_stdout: bool,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let stdout = dir.join(format!("{name}.stdout"));
        let stderr = dir.join(format!("{name}.stderr"));
        let pidfile = dir.join(format!("{name}.pid"));
        let _ = std::fs::remove_file(&pidfile);
        let out = if pipe_stdout {
            Stdio::piped()
        } else {
            Stdio::from(std::fs::File::create(&stdout)?)
        };
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg("nodeshell-e2e")
            .arg(env!("CARGO_BIN_EXE_nodeshell"))
            .args(args)
            .envs(env.iter().copied())
            .env("NODESHELL_E2E_PIDFILE", &pidfile)
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(std::fs::File::create(&stderr)?)
            .spawn()?;
        let lifeline = child.stdin.take();
        let piped = child.stdout.take();
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            if let Some(pid) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
            {
                break pid;
            }
            anyhow::ensure!(Instant::now() < deadline, "{name}: no pid from the wrapper");
            std::thread::sleep(Duration::from_millis(10));
        };
        Ok(Self {
            name: name.to_string(),
            stdout,
            stderr,
            pid,
            wrapper: Mutex::new(child),
            lifeline: Mutex::new(lifeline),
            piped: Mutex::new(piped),
            scratch: None,
        })
    }

    /// Sends a signal (`KILL`, `TERM`, `STOP`, `CONT`) to the program.
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .stderr(Stdio::null())
            .status();
    }

    /// Sends a signal to the program; an error when `kill` fails (e.g. it is gone).
    pub fn send_signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -{signal} failed");
        Ok(())
    }

    /// The exit status once the program has exited (through the wrapper, which exits with
    /// the program's status).
    pub fn try_wait(&self) -> std::io::Result<Option<ExitStatus>> {
        self.wrapper
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_wait()
    }

    /// Blocks until the program has exited.
    pub fn wait(&self) -> std::io::Result<ExitStatus> {
        self.wrapper
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .wait()
    }

    /// True once the program has exited.
    pub fn has_exited(&self) -> bool {
        !matches!(self.try_wait(), Ok(None))
    }

    /// Every line the program prints on a piped stdout, read on a thread so the pipe never
    /// fills (once: the pipe moves to the thread).
    pub fn stdout_lines(&self) -> anyhow::Result<mpsc::Receiver<String>> {
        let stdout = self
            .piped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
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
    /// Waits up to `timeout` for the program to exit; true if it did.
    pub async fn wait_exit(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.has_exited() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.has_exited()
    }

    /// Captured stdout so far.
    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Captured stderr so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Both, for failure messages (the end of each).
    pub fn logs(&self) -> String {
        let tail = |s: String| {
            let start = s.len().saturating_sub(6000);
            let start = (start..s.len())
                .find(|i| s.is_char_boundary(*i))
                .unwrap_or(s.len());
            s[start..].to_string()
        };
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr ---\n{}",
            self.name,
            tail(self.stdout_text()),
            self.name,
            tail(self.stderr_text())
        )
    }

    /// `http://127.0.0.1:PORT` from the `listening on` line, once printed.
    pub fn listening_url(&self) -> Option<String> {
        self.printed_url("listening on ")
    }

    /// `http://127.0.0.1:PORT` of a gateway's admin listener, from its `admin on` line.
    pub fn admin_url(&self) -> Option<String> {
        self.printed_url("admin on ")
    }

    /// The `http://127.0.0.1:PORT` printed after `prefix`, once printed.
    fn printed_url(&self, prefix: &str) -> Option<String> {
        let text = format!("{}\n{}", self.stdout_text(), self.stderr_text());
        let at = text.find(&format!("{prefix}http://127.0.0.1:"))?;
        let rest = &text[at + prefix.len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, ':' | '/' | '.')))
            .unwrap_or(rest.len());
        Some(rest[..end].trim_end_matches('/').to_string())
    }

    /// Resident memory of the program, bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    }

    /// Closes the lifeline (SIGTERM through the wrapper) and waits for the exit.
    pub fn stop(&self) {
        self.lifeline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.has_exited() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut child = self.wrapper.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NodeshellProcess {
    fn drop(&mut self) {
        self.signal("KILL");
        self.stop();
        if let Some(dir) = &self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A `nodeshell controller` child process, killed when dropped.
pub struct ControllerProcess {
    /// Its election identity.
    pub identity: String,
    /// Its log file (JSON lines on stderr).
    pub log: PathBuf,
    /// The process.
    pub process: NodeshellProcess,
}

impl ControllerProcess {
    /// Starts `nodeshell controller` as the controller's service account, with short lease
    /// timings and the given extra flags; its output goes to the cluster's `logs` directory.
    pub fn start(
        cluster: &LocalCluster,
        identity: &str,
        lease: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::start_in(
            &cluster.work_dir().join("logs"),
            cluster,
            identity,
            lease,
            extra,
        )
    }

    /// [`ControllerProcess::start`] with its output in `dir`.
    pub fn start_in(
        dir: &Path,
        cluster: &LocalCluster,
        identity: &str,
        lease: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let kubeconfig = cluster.kubeconfig_path(Identity::Controller);
        let mut args: Vec<String> = vec![
            "--log-format=json".into(),
            "controller".into(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
        ];
        args.extend(
            [
                "--namespace",
                SYSTEM_NAMESPACE,
                "--lease-name",
                lease,
                "--identity",
                identity,
                "--lease-duration",
                "3s",
                "--lease-renew-grace",
                "1s",
                "--metrics-addr",
                "127.0.0.1:0",
                "--resync-interval",
                "1s",
            ]
            .iter()
            .chain(extra)
            .map(|s| s.to_string()),
        );
        let process = NodeshellProcess::spawn(
            &format!("controller-{identity}"),
            dir,
            &args,
            &[("RUST_LOG", "info,kube_lease_manager=warn")],
        )?;
        Ok(Self {
            identity: identity.to_string(),
            log: process.stderr.clone(),
            process,
        })
    }

    /// Kills the process at once (SIGKILL: no lease release, as in a node failure).
    pub fn kill(&mut self) {
        self.process.signal("KILL");
        self.process.stop();
    }

    /// The process id (for resource measurements).
    pub fn pid(&self) -> u32 {
        self.process.pid
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        !self.process.has_exited()
    }

    /// Resident memory of the process, bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        self.process.rss_bytes()
    }

    /// The admin server's address, read from the log once it is listening.
    pub async fn admin_addr(&self) -> anyhow::Result<String> {
        let log = self.log.clone();
        wait_for(
            "admin server address in the log",
            Duration::from_secs(30),
            || {
                let log = log.clone();
                async move {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    Ok(text
                        .lines()
                        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                        .find_map(|v| v["fields"]["addr"].as_str().map(str::to_string)))
                }
            },
        )
        .await
    }

    /// The log so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A running `nodeshell gateway`.
pub struct GatewayProcess {
    /// Its name (pod name).
    pub name: String,
    /// `http://127.0.0.1:PORT`: the API and the console.
    pub base: String,
    /// `http://127.0.0.1:PORT`: the admin listener (`/metrics`, `/healthz`, `/readyz`).
    pub admin: String,
    /// The process.
    pub process: NodeshellProcess,
}

impl GatewayProcess {
    /// An API client of this gateway with `token`.
    pub fn client(&self, token: &str) -> GatewayClient {
        GatewayClient::new(&self.base, token)
    }

    /// Audit rows (JSON lines with an `event` or `verb` field) printed on stdout so far.
    pub fn audit_rows(&self) -> Vec<Value> {
        audit_rows(&self.process.stdout_text())
    }

    /// GET `path` on the admin listener: status and body text.
    pub async fn admin_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let answer = reqwest::get(format!("{}{path}", self.admin)).await?;
        let status = answer.status().as_u16();
        Ok((status, answer.text().await?))
    }

    /// The text of `/metrics` (on the admin listener).
    pub async fn metrics_text(&self) -> anyhow::Result<String> {
        let (status, text) = self.admin_get("/metrics").await?;
        anyhow::ensure!(status == 200, "/metrics answered {status}: {text}");
        Ok(text)
    }
}

/// Audit rows among JSON lines: objects whose `event`, `verb` or `type` is an
/// `ssm_session_*` name or `ssm_transcript_read`.
pub fn audit_rows(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| audit_verb(v).is_some())
        .collect()
}

/// The `ssm_session_*` (or `ssm_transcript_read`) verb of an audit row.
pub fn audit_verb(row: &Value) -> Option<&str> {
    ["event", "verb", "type", "action"]
        .iter()
        .find_map(|k| row[*k].as_str())
        .filter(|v| v.starts_with("ssm_session_") || *v == "ssm_transcript_read")
}

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
/// [`NodeshellProcess::stdout_lines`]); the wrapper's files go next to `run_dir` and are
/// removed when the process is dropped.
pub fn start_dev(run_dir: &Path, extra: &[&str]) -> anyhow::Result<NodeshellProcess> {
    let scratch = run_dir.with_extension("proc");
    let mut args = vec!["dev".to_string(), "--run-dir".into()];
    args.push(run_dir.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/.bin");
    let bin = bin.display().to_string();
    let mut process = NodeshellProcess::spawn_piped(
        "dev",
        &scratch,
        &args,
        &[("NODESHELL_CONTROLPLANE_BIN", bin.as_str())],
    )?;
    process.scratch = Some(scratch);
    Ok(process)
}
