//! The API listener's limits (header and body read timeouts, open connections, body size)
//! and the WebSocket message bound: the one home of their defaults and checks.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The `http:` part of the gateway file. Every key is optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFile {
    /// Seconds a client has to send a request's headers (also the idle time allowed between
    /// two requests on one connection).
    pub header_read_timeout_seconds: Option<u64>,
    /// Seconds a client has to send a whole request body.
    pub body_read_timeout_seconds: Option<u64>,
    /// Open connections (WebSockets included) the API listener serves at once; beyond it
    /// new connections are closed at once.
    pub max_connections: Option<u64>,
    /// Largest request body, in bytes.
    pub max_body_bytes: Option<u64>,
}

/// The API listener's limits after defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time to send a request's headers, and the idle time allowed between two requests.
    pub header_read_timeout: Duration,
    /// Time to send a whole request body.
    pub body_read_timeout: Duration,
    /// Connections served at once; the next one is closed on accept.
    pub max_connections: usize,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
}

/// Largest WebSocket message (and frame) a browser may send: keystrokes are a few bytes and
/// the console sends pastes in chunks, so a larger one is an abuse and closes the socket.
pub const WEBSOCKET_MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// The browser WebSocket's read buffer. tungstenite reserves it when the socket is made and
/// keeps it for the socket's life, so every attached shell pays for it while idle (its
/// default of 128 KiB, then 16 and 4 KiB, were much of an idle shell's memory). What a
/// browser sends is keystrokes, resizes and acknowledgements of a few dozen bytes (output
/// flows the other way); a larger message (a paste, at most 16 KiB a message from the
/// console) is read 1 KiB a system call, the buffer growing to the message for as long as
/// it takes.
pub const WEBSOCKET_READ_BUFFER_BYTES: usize = 1024;

/// The longest header or body read timeout accepted: issue 10 promises that a slowloris
/// client or a body that never comes is cut within 30 s.
pub const MAX_READ_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_body_bytes: 64 * 1024,
        }
    }
}

// === impl HttpLimits ===

impl HttpLimits {
    /// The file's values over the defaults, checked.
    pub(super) fn resolve(file: &HttpFile) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let timeout = |key: &str, value: Option<u64>, default: Duration| match value {
            None => Ok(default),
            Some(s) if (1..=MAX_READ_TIMEOUT.as_secs()).contains(&s) => Ok(Duration::from_secs(s)),
            Some(s) => Err(ConfigError::Invalid(format!(
                "http.{key} is {s}; set it between 1 and {} (a slow client must be cut within 30 s), or leave it unset for {}",
                MAX_READ_TIMEOUT.as_secs(),
                default.as_secs()
            ))),
        };
        let header_read_timeout = timeout(
            "headerReadTimeoutSeconds",
            file.header_read_timeout_seconds,
            defaults.header_read_timeout,
        )?;
        let body_read_timeout = timeout(
            "bodyReadTimeoutSeconds",
            file.body_read_timeout_seconds,
            defaults.body_read_timeout,
        )?;
        let max_connections = match file.max_connections {
            None => defaults.max_connections,
            Some(n) if (1..=1_000_000).contains(&n) => n as usize,
            Some(n) => {
                return Err(ConfigError::Invalid(format!(
                    "http.maxConnections is {n}; set it between 1 and 1000000 (each live shell holds one), or leave it unset for {}",
                    defaults.max_connections
                )));
            }
        };
        let max_body_bytes = match file.max_body_bytes {
            None => defaults.max_body_bytes,
            Some(n) if (1024..=16 * 1024 * 1024).contains(&n) => n as usize,
            Some(n) => {
                return Err(ConfigError::Invalid(format!(
                    "http.maxBodyBytes is {n}; set it between 1024 and 16777216 (API bodies are small JSON), or leave it unset for {}",
                    defaults.max_body_bytes
                )));
            }
        };
        Ok(Self {
            header_read_timeout,
            body_read_timeout,
            max_connections,
            max_body_bytes,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_cut_slow_clients_within_30_seconds() {
        let limits = HttpLimits::resolve(&HttpFile::default()).unwrap();
        assert_eq!(limits, HttpLimits::default());
        assert!(limits.header_read_timeout <= MAX_READ_TIMEOUT);
        assert!(limits.body_read_timeout <= MAX_READ_TIMEOUT);
        assert_eq!(limits.max_body_bytes, 65536);
        assert_eq!(limits.max_connections, 1024);
    }

    #[test]
    fn file_values_are_taken_and_checked() {
        let file = HttpFile {
            header_read_timeout_seconds: Some(5),
            body_read_timeout_seconds: Some(7),
            max_connections: Some(3),
            max_body_bytes: Some(2048),
        };
        let limits = HttpLimits::resolve(&file).unwrap();
        assert_eq!(limits.header_read_timeout, Duration::from_secs(5));
        assert_eq!(limits.body_read_timeout, Duration::from_secs(7));
        assert_eq!(limits.max_connections, 3);
        assert_eq!(limits.max_body_bytes, 2048);
        for (bad, key) in [
            (
                HttpFile {
                    header_read_timeout_seconds: Some(31),
                    ..HttpFile::default()
                },
                "headerReadTimeoutSeconds",
            ),
            (
                HttpFile {
                    body_read_timeout_seconds: Some(0),
                    ..HttpFile::default()
                },
                "bodyReadTimeoutSeconds",
            ),
            (
                HttpFile {
                    max_connections: Some(0),
                    ..HttpFile::default()
                },
                "maxConnections",
            ),
            (
                HttpFile {
                    max_body_bytes: Some(10),
                    ..HttpFile::default()
                },
                "maxBodyBytes",
            ),
        ] {
            let err = HttpLimits::resolve(&bad).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
    }
}
