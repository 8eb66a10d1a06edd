//! The WebSocket control frames of an attached shell (design §5). Binary frames are raw
//! terminal bytes both ways; text frames are these JSON objects, tagged by `type`.

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

/// The terminal size last applied, so a resize that changes nothing is dropped: it is
/// neither sent to the agent nor recorded in the transcript (a browser firing the same
/// size again and again would otherwise fill both).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LastSize(Option<(u16, u16)>);

impl LastSize {
    /// Whether `cols`×`rows` differs from the size last applied; remembers it when it does.
    pub fn changed(&mut self, cols: u16, rows: u16) -> bool {
        if self.0 == Some((cols, rows)) {
            return false;
        }
        self.0 = Some((cols, rows));
        true
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
        let mut last = LastSize::default();
        assert!(last.changed(120, 40), "the first size is applied");
        assert!(!last.changed(120, 40), "the same size again is dropped");
        assert!(last.changed(100, 40));
        assert!(
            last.changed(120, 40),
            "a size seen earlier but not last is applied"
        );
        assert!(!last.changed(120, 40));
    }
}
