//! The WebSocket control frames of an attached shell (design §5). Binary frames are raw
//! terminal bytes both ways; text frames are these JSON objects, tagged by `type`.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::gateway::error::ErrorCode;

/// Server → browser control frames.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum ServerFrame {
    /// The shell is attached (first attach and every reattach).
    Hello {
        /// NodeShellSession name.
        session: String,
        /// Kubernetes node.
        node: String,
        /// EC2 instance id.
        instance_id: String,
        /// SSM session id.
        ssm_session_id: String,
        /// The policy's idle cut, for the browser's own display.
        idle_seconds: u64,
        /// Secret the browser presents to reattach within the grace window.
        resume_token: String,
        /// The output offset the binary frames that follow start at: 0 on a first attach,
        /// the `resume` offset on a reattach (or, when those bytes are gone, the oldest
        /// held). The browser's count of received bytes, which its `ack` frames carry,
        /// continues from it.
        offset: u64,
    },
    /// The idle cut comes in this many seconds unless the person types.
    IdleWarn {
        /// Whole seconds until the cut.
        seconds_remaining: u64,
    },
    /// The session ended; the socket closes after this frame.
    Closed {
        /// The remote shell's exit code, when it exited.
        exit_code: Option<i32>,
        /// The session's `status.reason`.
        reason: String,
    },
    /// Something failed; when the failure is fatal the socket closes after this frame.
    Error {
        /// An `E_…` code of the API.
        code: String,
        /// What happened and what to do.
        message: String,
        /// Whether trying again later can work.
        retryable: bool,
    },
}

impl ServerFrame {
    /// An `error` frame.
    pub fn error(code: ErrorCode, message: impl Into<String>, retryable: bool) -> Self {
        Self::Error {
            code: code.as_str().to_string(),
            message: message.into(),
            retryable,
        }
    }

    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        // Serialising these plain structs cannot fail; fall back to a fixed error frame anyway.
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","code":"E_INTERNAL","message":"frame encoding failed","retryable":false}"#
                .to_string()
        })
    }
}

/// Browser → server control frames.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum ClientFrame {
    /// The terminal's new size.
    Resize {
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
    /// The person closed the terminal: end the session (reason `UserClosed`).
    Close,
    /// Credit: the browser has received (and consumed) this many output bytes in all, the
    /// same count as a `resume` offset. The gateway sends at most its browser window beyond
    /// the last acknowledged total.
    Ack {
        /// Total output bytes received on this session so far.
        bytes: u64,
    },
    /// First frame of a reattach: the token from `hello` and the output bytes already held.
    Resume {
        /// The `resumeToken` of the `hello` frame.
        resume_token: String,
        /// Bytes of output the browser received so far.
        #[serde(default)]
        offset: u64,
    },
}

impl ClientFrame {
    /// Parses a text frame; the error names what was wrong, for an `E_BAD_REQUEST` frame.
    pub fn parse(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("unreadable control frame: {e}"))
    }
}

/// Least time between two resizes that reach the agent and the transcript: at most ten a
/// second, however fast a browser fires them (dragging a window edge fires hundreds).
pub const RESIZE_INTERVAL: Duration = Duration::from_millis(100);

/// The terminal size: the one last applied (sent to the agent and recorded) and the one
/// waiting for the next slot. A resize to the size already applied is dropped; a burst is
/// coalesced to one resize per [`RESIZE_INTERVAL`], and the last size of a burst is always
/// applied when its slot comes, so no size is lost at the end. Pure: the clock is an argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastSize {
    applied: (u16, u16),
    waiting: Option<(u16, u16)>,
    next_slot: Option<Instant>,
}

impl LastSize {
    /// Starts at the size the session opened with (the start sequence applied it), so a
    /// browser repeating that size changes nothing.
    pub fn opened_at(cols: u16, rows: u16) -> Self {
        Self {
            applied: (cols, rows),
            waiting: None,
            next_slot: None,
        }
    }

    /// The size applied last.
    pub fn applied(&self) -> (u16, u16) {
        self.applied
    }

    /// A resize asked for at `now`: the size to apply now, or `None` when it changes nothing
    /// or waits for its slot (see [`LastSize::due_at`]).
    pub fn request(&mut self, cols: u16, rows: u16, now: Instant) -> Option<(u16, u16)> {
        if (cols, rows) == self.applied {
            // Back to the size applied: whatever waited is void.
            self.waiting = None;
            return None;
        }
        self.waiting = Some((cols, rows));
        self.take_due(now)
    }

    /// When the waiting size is to be applied, if one waits.
    pub fn due_at(&self) -> Option<Instant> {
        self.waiting.and(self.next_slot)
    }

    /// The waiting size, once its slot has come at `now`.
    pub fn take_due(&mut self, now: Instant) -> Option<(u16, u16)> {
        let size = self.waiting?;
        if self.next_slot.is_some_and(|slot| now < slot) {
            return None;
        }
        self.waiting = None;
        self.applied = size;
        self.next_slot = Some(now + RESIZE_INTERVAL);
        Some(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn value(frame: &ServerFrame) -> serde_json::Value {
        serde_json::from_str(&frame.to_json()).expect("json")
    }

    #[test]
    fn server_frames_use_the_contract_field_names() {
        let hello = ServerFrame::Hello {
            session: "shell-1".into(),
            node: "n1".into(),
            instance_id: "i-0".into(),
            ssm_session_id: "ns-alice-abc".into(),
            idle_seconds: 600,
            resume_token: "tok".into(),
            offset: 42,
        };
        assert_eq!(
            value(&hello),
            json!({"type":"hello","session":"shell-1","node":"n1","instanceId":"i-0",
                   "ssmSessionId":"ns-alice-abc","idleSeconds":600,"resumeToken":"tok",
                   "offset":42})
        );
        assert_eq!(
            value(&ServerFrame::IdleWarn {
                seconds_remaining: 30
            }),
            json!({"type":"idle_warn","secondsRemaining":30})
        );
        assert_eq!(
            value(&ServerFrame::Closed {
                exit_code: Some(3),
                reason: "UserExit".into()
            }),
            json!({"type":"closed","exitCode":3,"reason":"UserExit"})
        );
        assert_eq!(
            value(&ServerFrame::error(
                ErrorCode::AgentOffline,
                "offline",
                true
            )),
            json!({"type":"error","code":"E_AGENT_OFFLINE","message":"offline","retryable":true})
        );
    }

    #[test]
    fn client_frames_parse() {
        assert_eq!(
            ClientFrame::parse(r#"{"type":"resize","cols":120,"rows":40}"#),
            Ok(ClientFrame::Resize {
                cols: 120,
                rows: 40
            })
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"close"}"#),
            Ok(ClientFrame::Close)
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"resume","resumeToken":"t","offset":42}"#),
            Ok(ClientFrame::Resume {
                resume_token: "t".into(),
                offset: 42
            })
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"ack","bytes":65536}"#),
            Ok(ClientFrame::Ack { bytes: 65536 })
        );
        for garbage in [
            r#"{"type":"ack","bytes":-1}"#,
            r#"{"type":"ack","bytes":1.5}"#,
            r#"{"type":"ack","bytes":"12"}"#,
            r#"{"type":"ack"}"#,
        ] {
            assert!(ClientFrame::parse(garbage).is_err(), "{garbage}");
        }
        assert!(ClientFrame::parse(r#"{"type":"resize","cols":-1,"rows":2}"#).is_err());
        assert!(ClientFrame::parse("not json").is_err());
    }

    #[test]
    fn a_resize_to_the_size_already_applied_is_dropped() {
        let t0 = Instant::now();
        let at = |n: u32| t0 + RESIZE_INTERVAL * n;
        let mut last = LastSize::opened_at(80, 24);
        assert_eq!(
            last.request(120, 40, at(0)),
            Some((120, 40)),
            "a new size is applied"
        );
        assert_eq!(
            last.request(120, 40, at(1)),
            None,
            "the same size again is dropped"
        );
        assert_eq!(last.request(100, 40, at(2)), Some((100, 40)));
        assert_eq!(
            last.request(120, 40, at(3)),
            Some((120, 40)),
            "a size seen earlier but not last is applied"
        );
        assert_eq!(last.request(120, 40, at(4)), None);
        assert_eq!(last.due_at(), None, "nothing waits");
    }

    #[test]
    fn the_size_the_session_opened_with_is_already_applied() {
        let mut last = LastSize::opened_at(100, 30);
        assert_eq!(last.request(100, 30, Instant::now()), None);
        assert_eq!(last.applied(), (100, 30));
    }

    #[test]
    fn a_burst_is_coalesced_and_its_last_size_wins() {
        let t0 = Instant::now();
        let mut last = LastSize::opened_at(80, 24);
        let mut applied = Vec::new();
        // 1,000 resizes within one second, each a new size.
        for i in 0..1000u32 {
            let now = t0 + Duration::from_millis(u64::from(i));
            if let Some(due) = last.due_at()
                && due <= now
                && let Some(size) = last.take_due(now)
            {
                applied.push(size);
            }
            let cols = 81 + u16::try_from(i % 200).expect("small");
            if let Some(size) = last.request(cols, 24, now) {
                applied.push(size);
            }
        }
        let due = last.due_at().expect("the last size waits for its slot");
        applied.extend(last.take_due(due));
        assert!(
            applied.len() <= 11,
            "{} resizes applied in one second",
            applied.len()
        );
        assert_eq!(
            applied.last(),
            Some(&(81 + 999 % 200, 24)),
            "the last size sent is the last applied"
        );
        assert_eq!(last.applied(), (81 + 999 % 200, 24));
        assert_eq!(last.due_at(), None);
    }

    #[test]
    fn going_back_to_the_applied_size_voids_the_waiting_one() {
        let t0 = Instant::now();
        let mut last = LastSize::opened_at(80, 24);
        assert_eq!(last.request(100, 30, t0), Some((100, 30)));
        assert_eq!(last.request(90, 30, t0 + Duration::from_millis(10)), None);
        assert!(last.due_at().is_some());
        assert_eq!(last.request(100, 30, t0 + Duration::from_millis(20)), None);
        assert_eq!(
            last.due_at(),
            None,
            "the browser is back at the applied size"
        );
        assert_eq!(last.take_due(t0 + RESIZE_INTERVAL), None);
    }
}
