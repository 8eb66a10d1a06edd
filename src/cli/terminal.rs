//! The local terminal: raw mode while a shell runs (restored when the guard drops, on every
//! way out, a panic included) and its size.

use rustix::termios::{OptionalActions, Termios, isatty, tcgetattr, tcgetwinsize, tcsetattr};

use super::errors::CliError;

/// The size a shell starts with when the output is not a terminal.
pub const DEFAULT_SIZE: (u16, u16) = (80, 24);

/// Raw mode on stdin until dropped: keys (Ctrl-C included) go to the remote shell as bytes,
/// nothing is echoed locally, output is passed through untouched.
#[derive(Debug)]
pub struct RawMode {
    saved: Option<Termios>,
}

impl RawMode {
    /// Puts stdin in raw mode when it is a terminal (otherwise does nothing).
    pub fn enter() -> Result<Self, CliError> {
        let stdin = std::io::stdin();
        if !isatty(&stdin) {
            return Ok(Self { saved: None });
        }
        let saved = tcgetattr(&stdin)
            .map_err(|e| CliError::local(format!("cannot read the terminal's mode: {e}")))?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(&stdin, OptionalActions::Now, &raw)
            .map_err(|e| CliError::local(format!("cannot put the terminal in raw mode: {e}")))?;
        Ok(Self { saved: Some(saved) })
    }

    /// Restores the terminal now (also done on drop).
    pub fn restore(&mut self) {
        if let Some(saved) = self.saved.take() {
            let _ = tcsetattr(std::io::stdin(), OptionalActions::Now, &saved);
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        self.restore();
    }
}

/// The terminal's size as (cols, rows), from stdout, else stdin, else [`DEFAULT_SIZE`].
pub fn size() -> (u16, u16) {
    let from = |ws: rustix::termios::Winsize| {
        (ws.ws_col > 0 && ws.ws_row > 0).then_some((ws.ws_col, ws.ws_row))
    };
    tcgetwinsize(std::io::stdout())
        .ok()
        .and_then(from)
        .or_else(|| tcgetwinsize(std::io::stdin()).ok().and_then(from))
        .unwrap_or(DEFAULT_SIZE)
}
