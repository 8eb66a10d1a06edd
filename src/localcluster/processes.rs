//! Child processes that cannot outlive us.
//!
//! Each program runs under a small `sh` wrapper whose standard input is a pipe from this
//! process. When the pipe closes, because we stopped it or because we died in any way
//! (including `SIGKILL`, where no destructor runs), the wrapper sends the program `SIGTERM`
//! and, if it lingers, `SIGKILL`. Children get their own process group so a Ctrl-C at the
//! terminal reaches only us, and we shut them down in order.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::Error;

// $1.. is the program and its arguments. fd 3 keeps our pipe for the watcher only, so the
// program itself never holds it (a background job's stdin is /dev/null in sh).
const WRAPPER: &str = r#"exec 3<&0
"$@" 3<&- &
p=$!
{ cat <&3 >/dev/null; kill -TERM "$p" 2>/dev/null; sleep 10; kill -KILL "$p" 2>/dev/null; } &
w=$!
exec 3<&-
wait "$p"
s=$?
kill "$w" 2>/dev/null
exit "$s"
"#;

/// Where a child's stdout and stderr go.
#[derive(Debug, Clone)]
pub enum Output {
    /// Appended to this file (created if missing).
    LogFile(PathBuf),
    /// Shared with this process (for `nodeshell dev` at a terminal).
    Inherit,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// Name used in errors and logs ("etcd", "kube-apiserver", "controller").
    pub name: String,
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Extra environment variables.
    pub env: Vec<(OsString, OsString)>,
    /// Where its output goes.
    pub output: Output,
}

impl ProcessSpec {
    /// A spec with no arguments, no extra environment, output to `log`.
    pub fn new(name: impl Into<String>, program: impl Into<PathBuf>, output: Output) -> Self {
        ProcessSpec {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            output,
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Sets one environment variable.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// A running child tied to our lifetime.
#[derive(Debug)]
pub struct SupervisedProcess {
    name: String,
    log: Option<PathBuf>,
    wrapper: Child,
    lifeline: Option<ChildStdin>,
    exited: Option<ExitStatus>,
}

impl SupervisedProcess {
    /// Starts the program under its wrapper.
    pub fn spawn(spec: ProcessSpec) -> Result<Self, Error> {
        let (stdout, stderr, log) = match &spec.output {
            Output::LogFile(path) => {
                let file = File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| {
                        Error::io(format!("open log file {}", path.display()), source)
                    })?;
                let copy = file
                    .try_clone()
                    .map_err(|source| Error::io("duplicate a log file handle", source))?;
                (Stdio::from(file), Stdio::from(copy), Some(path.clone()))
            }
            Output::Inherit => (Stdio::inherit(), Stdio::inherit(), None),
        };
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(WRAPPER)
            .arg("nodeshell-supervise")
            .arg(&spec.program)
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        let mut wrapper = command.spawn().map_err(|source| Error::Spawn {
            component: spec.name.clone(),
            program: spec.program.clone(),
            source,
        })?;
        let lifeline = wrapper.stdin.take();
        Ok(SupervisedProcess {
            name: spec.name,
            log,
            wrapper,
            lifeline,
            exited: None,
        })
    }

    /// The component name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The log file, when output goes to one.
    pub fn log_path(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    /// `Some(status)` once the program has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.wrapper.try_wait().ok().flatten();
        }
        self.exited
    }

    /// An error describing an unexpected exit, with the end of the log.
    pub fn exited_error(&mut self) -> Option<Error> {
        let status = self.exit_status()?;
        Some(Error::ExitedEarly {
            component: self.name.clone(),
            status: status.to_string(),
            log: self.log.clone(),
            tail: self.log.as_deref().map(log_tail).unwrap_or_default(),
        })
    }

    /// Asks the program to stop (SIGTERM through the wrapper) without waiting.
    pub fn request_stop(&mut self) {
        self.lifeline = None;
    }

    /// Stops the program and waits up to `grace` for it, then kills the wrapper; the
    /// wrapper's watcher still escalates to SIGKILL on its own.
    pub fn stop(&mut self, grace: Duration) {
        self.request_stop();
        let deadline = Instant::now() + grace;
        while self.exit_status().is_none() {
            if Instant::now() >= deadline {
                let _ = self.wrapper.kill();
                let _ = self.wrapper.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SupervisedProcess {
    fn drop(&mut self) {
        if self.exited.is_none() {
            self.stop(Duration::from_secs(15));
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it).
pub fn free_port() -> Result<u16, Error> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|source| Error::io("reserve a loopback port", source))?;
    let port = listener
        .local_addr()
        .map_err(|source| Error::io("read a reserved port", source))?
        .port();
    Ok(port)
}

/// The last lines of a log file (at most 4 KiB), for error messages.
pub fn log_tail(path: &Path) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(4096)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_terminates_the_program() {
        let dir = std::env::temp_dir().join(format!("nodeshell-proc-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let log = dir.join("sleep.log");
        let spec = ProcessSpec::new("sleeper", "/bin/sleep", Output::LogFile(log)).arg("300");
        let mut process = SupervisedProcess::spawn(spec).expect("spawn");
        std::thread::sleep(Duration::from_millis(200));
        assert!(process.exit_status().is_none());
        let started = Instant::now();
        process.stop(Duration::from_secs(5));
        assert!(process.exit_status().is_some());
        assert!(started.elapsed() < Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn early_exit_is_reported_with_the_log() {
        let dir = std::env::temp_dir().join(format!("nodeshell-proc-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let log = dir.join("false.log");
        let spec = ProcessSpec::new("failing", "/bin/sh", Output::LogFile(log))
            .arg("-c")
            .arg("echo broken flag >&2; exit 3");
        let mut process = SupervisedProcess::spawn(spec).expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(5);
        while process.exit_status().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let message = process.exited_error().expect("exited").to_string();
        assert!(message.contains("broken flag"), "{message}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
