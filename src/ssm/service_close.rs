//! Why the Session Manager service itself closed a channel, told by the `Output` text of its
//! `channel_closed` message. Pure; shared by the simulator (which sends the texts) and the
//! gateway (which names the close from them).
//!
//! A shell that exits gets `channel_closed` with an empty `Output` (the official plugin then
//! prints `Exiting session with sessionId: …`). The idle-timeout text was observed on real
//! sessions (aws/amazon-ssm-agent#261); the maximum-duration and TerminateSession texts are
//! not in any available source and are this project's choice (see docs/simulator.md).

/// `Output` of the service's idle-timeout close (observed).
pub const IDLE_TIMEOUT_TEXT: &str =
    "Your session timed out due to inactivity and has been terminated.";
/// `Output` of the service's maximum-session-duration close (not observed; chosen).
pub const MAX_DURATION_TEXT: &str =
    "Your session has reached its maximum session duration and has been terminated.";
/// `Output` of a close caused by `TerminateSession` from outside (not observed; chosen).
pub const TERMINATED_TEXT: &str = "Your session has been terminated.";

/// A close the service made on its own, not the shell's exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceClose {
    /// Session Manager's idle timeout (`idleSessionTimeout`).
    IdleTimeout,
    /// Session Manager's maximum session duration (`maxSessionDuration`).
    MaxDuration,
    /// `TerminateSession`, or any other close the service explains with a text.
    Terminated,
}

impl ServiceClose {
    /// The close a `channel_closed` `Output` names; None for an empty one (the shell exited).
    pub fn from_output(output: &str) -> Option<Self> {
        let text = output.trim();
        if text.is_empty() {
            None
        } else if text.contains("inactivity") {
            Some(Self::IdleTimeout)
        } else if text.contains("maximum session duration") {
            Some(Self::MaxDuration)
        } else {
            Some(Self::Terminated)
        }
    }

    /// The `Output` text the service sends for this close.
    pub fn text(self) -> &'static str {
        match self {
            Self::IdleTimeout => IDLE_TIMEOUT_TEXT,
            Self::MaxDuration => MAX_DURATION_TEXT,
            Self::Terminated => TERMINATED_TEXT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_text_names_its_close_and_an_empty_output_is_the_shell_exit() {
        for close in [
            ServiceClose::IdleTimeout,
            ServiceClose::MaxDuration,
            ServiceClose::Terminated,
        ] {
            assert_eq!(ServiceClose::from_output(close.text()), Some(close));
        }
        assert_eq!(ServiceClose::from_output(""), None);
        assert_eq!(ServiceClose::from_output("  "), None);
        assert_eq!(
            ServiceClose::from_output("Session ended by the service for maintenance."),
            Some(ServiceClose::Terminated),
            "an unknown explanation is still the service's close, never the shell's exit"
        );
    }
}
