//! A real terminal for tests: a private tmux server (its own socket and config) running
//! one shell in a window of a chosen size, driven with `send-keys` and read with
//! `capture-pane`. The server is killed when the [`Tmux`] is dropped.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::wait::wait_for;

/// The tmux binary (installed by `e2e/scripts/install-terminal.sh`).
pub const TMUX: &str = "tmux";

/// One tmux server with one session, `t`, running `bash --norc --noprofile`.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts a server on a socket in `dir` with a `cols`×`rows` window whose shell gets
    /// `env` (and a plain `$ ` prompt).
    pub fn start(dir: &Path, cols: u16, rows: u16, env: &[(&str, String)]) -> anyhow::Result<Self> {
        let socket = dir.join("tmux.sock").display().to_string();
        // Its own config (none of the user's): scrollback for the whole test, set before the
        // window exists since it applies to new panes only.
        let conf = dir.join("tmux.conf");
        std::fs::write(&conf, "set -g history-limit 10000\n")?;
        let conf = conf.display().to_string();
        let mut cmd = Command::new(TMUX);
        cmd.args(["-S", &socket, "-f", &conf, "new-session", "-d", "-s", "t"])
            .args(["-x", &cols.to_string(), "-y", &rows.to_string()]);
        // The shell's environment on its command line (tmux hands it to `sh -c`), so the
        // server's own environment cannot override it.
        let mut shell = String::from("env PS1='$ ' TERM=xterm-256color");
        for (k, v) in env {
            shell.push_str(&format!(" {k}='{}'", v.replace('\'', "'\\''")));
        }
        shell.push_str(" bash --norc --noprofile");
        cmd.arg(shell);
        let status = cmd.status()?;
        anyhow::ensure!(status.success(), "tmux new-session failed: {status}");
        Ok(Self { socket })
    }

    fn tmux(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(TMUX)
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Types `text` literally (no key names).
    pub fn type_text(&self, text: &str) -> anyhow::Result<()> {
        self.tmux(&["send-keys", "-t", "t", "-l", text]).map(|_| ())
    }

    /// Presses keys by tmux name (`Enter`, `C-c`).
    pub fn keys(&self, keys: &[&str]) -> anyhow::Result<()> {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        self.tmux(&args).map(|_| ())
    }

    /// Types a line and presses Enter.
    pub fn line(&self, text: &str) -> anyhow::Result<()> {
        self.type_text(text)?;
        self.keys(&["Enter"])
    }

    /// Resizes the window (the programs in it get SIGWINCH).
    pub fn resize(&self, cols: u16, rows: u16) -> anyhow::Result<()> {
        self.tmux(&[
            "resize-window",
            "-t",
            "t",
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
        ])
        .map(|_| ())
    }

    /// Everything the pane shows, its scrollback included, wrapped lines joined.
    pub fn screen(&self) -> anyhow::Result<String> {
        self.tmux(&["capture-pane", "-p", "-J", "-t", "t", "-S", "-", "-E", "-"])
    }

    /// Waits until the pane shows `needle` `times` times or more; returns the screen.
    pub async fn wait_for_text(
        &self,
        needle: &str,
        times: usize,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let mut last = String::new();
        let found = wait_for(&format!("{needle:?} on the terminal"), timeout, || {
            let screen = self.screen();
            let ok = screen
                .as_ref()
                .map(|s| s.matches(needle).count() >= times)
                .unwrap_or(false);
            if let Ok(s) = &screen {
                last = s.clone();
            }
            let result = if ok { screen.map(Some) } else { Ok(None) };
            async move { result }
        })
        .await;
        found.map_err(|e| anyhow::anyhow!("{e}\n--- terminal ---\n{last}"))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}
