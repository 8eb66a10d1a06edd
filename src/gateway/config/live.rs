//! The live side's settings (clocks, buffers, timeouts, the audit file): the one home of
//! their defaults and of the checks that refuse a setting the live side cannot work with.

use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, GatewayArgs, GatewayFile};

/// The live side's settings after defaults, the one home of their defaults and checks;
/// [`LiveConfig`](crate::gateway::live::LiveConfig) carries them as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSettings {
    /// How long a session waits for its browser to reattach.
    pub reattach_grace: Duration,
    /// How often each session looks at whether its status needs a write (activity, at most
    /// once a minute; the transcript reference).
    pub heartbeat_interval: Duration,
    /// `leaseDurationSeconds` of this pod's Lease, renewed every third of it: the controller
    /// closes this pod's sessions as GatewayLost when the Lease is not renewed within it.
    pub lease_duration: Duration,
    /// Least time between two status writes of a session.
    pub status_throttle: Duration,
    /// How often the transcript's last chunk is stored.
    pub transcript_flush_interval: Duration,
    /// Output kept per session for reattaching browsers.
    pub replay_buffer_bytes: usize,
    /// Most output a browser may hold unacknowledged (sent but not yet confirmed by an `ack`
    /// frame); beyond it the session sends nothing more and, once its ring is full too,
    /// stops reading the data channel. At most the replay buffer.
    pub browser_window_bytes: usize,
    /// Longest wait on shutdown for the live sessions to close.
    pub shutdown_timeout: Duration,
    /// File audit rows are appended to, besides stdout.
    pub audit_file: Option<PathBuf>,
}

impl Default for LiveSettings {
    /// The defaults of design §4.
    fn default() -> Self {
        Self {
            reattach_grace: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
            lease_duration: Duration::from_secs(30),
            status_throttle: Duration::from_secs(1),
            transcript_flush_interval: Duration::from_secs(5),
            replay_buffer_bytes: 256 * 1024,
            browser_window_bytes: 256 * 1024,
            shutdown_timeout: Duration::from_secs(20),
            audit_file: None,
        }
    }
}

/// Longest session status tick: `lastActivityAt` may lag by two activity write intervals
/// plus two ticks, and the controller's idle backstop allows for
/// [`ACTIVITY_STATUS_LAG`](crate::api::ACTIVITY_STATUS_LAG) with ticks of at most this.
pub const MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);

/// Shortest Lease duration accepted: renewed every third of it, at least once a second.
pub const MIN_LEASE_DURATION: Duration = Duration::from_secs(3);

/// Below this Lease duration the gateway warns: one slow renewal (an apiserver hiccup)
/// would get every session of the pod closed as GatewayLost.
const LEASE_DURATION_WARN_BELOW: Duration = Duration::from_secs(15);

/// The data channel's receive window in the gateway: payload bytes it holds for a session
/// whose browser is behind before it stops reading the channel's websocket (so the agent's
/// output waits in TCP and at the agent, not here). Sized with the other per-session
/// buffers under [`HELD_BOUND_PER_SESSION`] (the sum is `gateway::live::output::held_bound`).
pub const SSM_RECEIVE_WINDOW_BYTES: usize = 128 * 1024;
/// The receive window's bound in messages (the agent sends at most 1 KiB each, so the bytes
/// bind first; this caps many small ones).
pub const SSM_RECEIVE_WINDOW_MESSAGES: usize = 256;
/// Messages the data channel holds past a missing one. After a reconnect the messages lost
/// with the old socket come back one per 100 ms tick (the agent resends only its oldest),
/// while the agent, which has no send window, goes on sending everything the shell prints;
/// those are kept and acked here so the agent retires them, since every one refused would
/// cost another tick once it is the oldest. Held only while such a gap is open, and only
/// what the agent sent meanwhile; sized for a firehose (docs/benchmarks.md, "Recovery under
/// the official agent's resend": a 50 MiB stream dropped after 20,000 messages needs the
/// ~31,000 that follow). The official agent's own incoming buffer holds 100,000.
pub const SSM_RECEIVE_EARLY_MESSAGES: usize = 32 * 1024;
/// Payload bytes held past a missing one (the agent's messages carry at most
/// [`AGENT_PAYLOAD_MAX`] each).
pub const SSM_RECEIVE_EARLY_BYTES: usize = 32 * 1024 * 1024;
/// Output chunks (each at most [`crate::ssm::channel::OUTPUT_CHUNK_MAX`]) queued between the
/// data channel and the session's task.
pub const SSM_OUTPUT_QUEUE_CHUNKS: usize = 2;
/// Largest payload the agent sends in one message (1 KiB read from the PTY plus a held-back
/// partial UTF-8 sequence of up to 3 bytes): how far the receive window may overshoot.
pub const AGENT_PAYLOAD_MAX: usize = 1027;
/// What a session whose browser stopped reading may hold with the default settings.
pub const HELD_BOUND_PER_SESSION: usize = 512 * 1024;

/// Smallest browser window accepted: one output frame to the browser (16 KiB), below which
/// not even one frame could be sent.
pub const MIN_BROWSER_WINDOW_BYTES: u64 = 16 * 1024;

/// Smallest replay buffer accepted: one output frame to the browser (16 KiB), below which a
/// reattach could not even be sent the frame it missed.
pub const MIN_REPLAY_BUFFER_BYTES: u64 = 16 * 1024;

/// Shortest shutdown timeout that does not warn: a session's close takes up to 3 s for the
/// channel's last output, then the transcript flush and the Closed write.
const SHUTDOWN_TIMEOUT_WARN_BELOW: Duration = Duration::from_secs(5);

// === impl LiveSettings ===

impl LiveSettings {
    /// Flags over the file over the defaults, then the checks that refuse a setting the live
    /// side cannot work with.
    pub(super) fn resolve(args: &GatewayArgs, file: &GatewayFile) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let pick = |flag: Option<Duration>, seconds: Option<u64>, default: Duration| {
            flag.or(seconds.map(Duration::from_secs)).unwrap_or(default)
        };
        let replay = args
            .replay_buffer_bytes
            .or(file.replay_buffer_bytes)
            .map_or(Ok(defaults.replay_buffer_bytes), |b| {
                if b < MIN_REPLAY_BUFFER_BYTES {
                    return Err(ConfigError::Invalid(format!(
                        "replay buffer of {b} bytes is smaller than one output frame ({MIN_REPLAY_BUFFER_BYTES} bytes): set --replay-buffer-bytes (NODESHELL_GATEWAY_REPLAY_BUFFER_BYTES) or replayBufferBytes to at least {MIN_REPLAY_BUFFER_BYTES}, or leave it unset for 262144"
                    )));
                }
                usize::try_from(b).map_err(|_| {
                    ConfigError::Invalid(format!(
                        "replay buffer of {b} bytes does not fit in memory; set --replay-buffer-bytes or replayBufferBytes lower (default 262144)"
                    ))
                })
            })?;
        let window = args
            .browser_window_bytes
            .or(file.browser_window_bytes)
            .map_or(Ok(defaults.browser_window_bytes.min(replay)), |b| {
                if b < MIN_BROWSER_WINDOW_BYTES {
                    return Err(ConfigError::Invalid(format!(
                        "browser window of {b} bytes is smaller than one output frame ({MIN_BROWSER_WINDOW_BYTES} bytes): set --browser-window-bytes (NODESHELL_GATEWAY_BROWSER_WINDOW_BYTES) or browserWindowBytes to at least {MIN_BROWSER_WINDOW_BYTES}, or leave it unset for 262144"
                    )));
                }
                if b > u64::try_from(replay).unwrap_or(u64::MAX) {
                    return Err(ConfigError::Invalid(format!(
                        "browser window of {b} bytes is larger than the replay buffer ({replay} bytes), which must hold every byte a browser has not acknowledged: lower --browser-window-bytes (browserWindowBytes) or raise --replay-buffer-bytes (replayBufferBytes)"
                    )));
                }
                Ok(usize::try_from(b).unwrap_or(replay))
            })?;
        let settings = Self {
            reattach_grace: pick(
                args.reattach_grace,
                file.reattach_grace_seconds,
                defaults.reattach_grace,
            ),
            heartbeat_interval: pick(
                args.heartbeat_interval,
                file.heartbeat_interval_seconds,
                defaults.heartbeat_interval,
            ),
            lease_duration: pick(
                args.lease_duration,
                file.lease_duration_seconds,
                defaults.lease_duration,
            ),
            status_throttle: pick(
                args.status_write_throttle,
                file.status_write_throttle_seconds,
                defaults.status_throttle,
            ),
            transcript_flush_interval: pick(
                args.transcript_flush_interval,
                file.transcript_flush_interval_seconds,
                defaults.transcript_flush_interval,
            ),
            replay_buffer_bytes: replay,
            browser_window_bytes: window,
            shutdown_timeout: pick(
                args.shutdown_timeout,
                file.shutdown_timeout_seconds,
                defaults.shutdown_timeout,
            ),
            audit_file: args
                .audit_file
                .clone()
                .or_else(|| file.audit_file.clone())
                .filter(|p| !p.as_os_str().is_empty()),
        };
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let durations = [
            (
                self.reattach_grace,
                "--reattach-grace (NODESHELL_GATEWAY_REATTACH_GRACE) or reattachGraceSeconds",
                "30s",
            ),
            (
                self.heartbeat_interval,
                "--heartbeat-interval (NODESHELL_GATEWAY_HEARTBEAT_INTERVAL) or heartbeatIntervalSeconds",
                "5s",
            ),
            (
                self.status_throttle,
                "--status-write-throttle (NODESHELL_GATEWAY_STATUS_WRITE_THROTTLE) or statusWriteThrottleSeconds",
                "1s",
            ),
            (
                self.transcript_flush_interval,
                "--transcript-flush-interval (NODESHELL_GATEWAY_TRANSCRIPT_FLUSH_INTERVAL) or transcriptFlushIntervalSeconds",
                "5s",
            ),
            (
                self.shutdown_timeout,
                "--shutdown-timeout (NODESHELL_GATEWAY_SHUTDOWN_TIMEOUT) or shutdownTimeoutSeconds",
                "20s",
            ),
        ];
        if let Some((_, setting, default)) = durations.iter().find(|(d, _, _)| d.is_zero()) {
            return Err(ConfigError::Invalid(format!(
                "{setting} is zero: set a positive duration, or leave it unset for the default {default}"
            )));
        }
        if self.heartbeat_interval > MAX_HEARTBEAT_INTERVAL {
            return Err(ConfigError::Invalid(format!(
                "heartbeat interval {:?} is longer than {:?}, so status.lastActivityAt could lag more than the controller's idle backstop allows and a busy session could be closed as IdleTimeout: set --heartbeat-interval (NODESHELL_GATEWAY_HEARTBEAT_INTERVAL) or heartbeatIntervalSeconds to at most {:?} (default 5s)",
                self.heartbeat_interval, MAX_HEARTBEAT_INTERVAL, MAX_HEARTBEAT_INTERVAL
            )));
        }
        if self.lease_duration < MIN_LEASE_DURATION {
            return Err(ConfigError::Invalid(format!(
                "lease duration {:?} is shorter than {:?}: the Lease is renewed every third of it; set --lease-duration (NODESHELL_GATEWAY_LEASE_DURATION) or leaseDurationSeconds to at least {:?} (default 30s)",
                self.lease_duration, MIN_LEASE_DURATION, MIN_LEASE_DURATION
            )));
        }
        if self.status_throttle > self.heartbeat_interval {
            return Err(ConfigError::Invalid(format!(
                "status write throttle {:?} is longer than the heartbeat interval {:?}, so heartbeats could not be written that often: lower --status-write-throttle (statusWriteThrottleSeconds) or raise --heartbeat-interval (heartbeatIntervalSeconds)",
                self.status_throttle, self.heartbeat_interval
            )));
        }
        Ok(())
    }

    /// How often this pod's Lease is renewed: a third of its duration.
    pub fn lease_renew_interval(&self) -> Duration {
        self.lease_duration / 3
    }

    /// Settings that work but risk losing sessions; the gateway logs each at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.lease_duration < LEASE_DURATION_WARN_BELOW {
            warnings.push(format!(
                "lease duration {:?} leaves little room for a slow renewal: one apiserver hiccup longer than two thirds of it gets every session of this gateway closed as GatewayLost; raise --lease-duration (leaseDurationSeconds) to at least {:?}",
                self.lease_duration, LEASE_DURATION_WARN_BELOW
            ));
        }
        if self.shutdown_timeout < SHUTDOWN_TIMEOUT_WARN_BELOW {
            warnings.push(format!(
                "shutdown timeout {:?} may cut sessions before their transcript and Closed status are written (the close waits up to 3 s for the last output); raise --shutdown-timeout to at least {:?}",
                self.shutdown_timeout, SHUTDOWN_TIMEOUT_WARN_BELOW
            ));
        }
        warnings
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::gateway::config::tests::{CHILD, run_child_test};
    use crate::gateway::config::{GatewayConfig, parse_file};

    fn args() -> GatewayArgs {
        GatewayArgs {
            oidc_issuer: Some("https://issuer.example".into()),
            oidc_client_id: Some("nodeshell".into()),
            ..GatewayArgs::default()
        }
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: GatewayArgs,
    }

    #[test]
    fn live_settings_default_to_the_design() {
        let config = GatewayConfig::resolve(&args(), GatewayFile::default()).unwrap();
        assert_eq!(
            config.live,
            LiveSettings {
                reattach_grace: Duration::from_secs(30),
                heartbeat_interval: Duration::from_secs(5),
                lease_duration: Duration::from_secs(30),
                status_throttle: Duration::from_secs(1),
                transcript_flush_interval: Duration::from_secs(5),
                replay_buffer_bytes: 256 * 1024,
                browser_window_bytes: 256 * 1024,
                shutdown_timeout: Duration::from_secs(20),
                audit_file: None,
            }
        );
        assert!(config.live.warnings().is_empty());
    }

    #[test]
    fn live_settings_from_the_file_and_flags_over_it() {
        use clap::Parser;
        let file = parse_file(
            "reattachGraceSeconds: 45\nheartbeatIntervalSeconds: 10\nleaseDurationSeconds: 45\n\
             statusWriteThrottleSeconds: 2\n\
             transcriptFlushIntervalSeconds: 15\nreplayBufferBytes: 1048576\nbrowserWindowBytes: 524288\n\
             shutdownTimeoutSeconds: 40\nauditFile: /var/log/nodeshell/audit.jsonl\n",
        )
        .unwrap();
        let config = GatewayConfig::resolve(&args(), file.clone()).unwrap();
        assert_eq!(
            config.live,
            LiveSettings {
                reattach_grace: Duration::from_secs(45),
                heartbeat_interval: Duration::from_secs(10),
                lease_duration: Duration::from_secs(45),
                status_throttle: Duration::from_secs(2),
                transcript_flush_interval: Duration::from_secs(15),
                replay_buffer_bytes: 1024 * 1024,
                browser_window_bytes: 512 * 1024,
                shutdown_timeout: Duration::from_secs(40),
                audit_file: Some("/var/log/nodeshell/audit.jsonl".into()),
            }
        );
        let cli = Cli::try_parse_from([
            "gateway",
            "--oidc-issuer",
            "https://issuer.example",
            "--oidc-client-id",
            "nodeshell",
            "--reattach-grace",
            "2m",
            "--heartbeat-interval",
            "3s",
            "--lease-duration",
            "20s",
            "--status-write-throttle",
            "500ms",
            "--transcript-flush-interval",
            "1s",
            "--replay-buffer-bytes",
            "65536",
            "--browser-window-bytes",
            "32768",
            "--shutdown-timeout",
            "25s",
            "--audit-file",
            "/tmp/audit.jsonl",
        ])
        .expect("parse");
        let config = GatewayConfig::resolve(&cli.args, file).unwrap();
        assert_eq!(
            config.live,
            LiveSettings {
                reattach_grace: Duration::from_secs(120),
                heartbeat_interval: Duration::from_secs(3),
                lease_duration: Duration::from_secs(20),
                status_throttle: Duration::from_millis(500),
                transcript_flush_interval: Duration::from_secs(1),
                replay_buffer_bytes: 64 * 1024,
                browser_window_bytes: 32 * 1024,
                shutdown_timeout: Duration::from_secs(25),
                audit_file: Some("/tmp/audit.jsonl".into()),
            },
            "flags win over the file"
        );
        assert!(
            Cli::try_parse_from(["gateway", "--heartbeat-interval", "5 parsecs"]).is_err(),
            "a duration flag takes 500ms, 30s, 5m…"
        );
    }

    /// The child half of [`live_settings_from_the_environment`].
    #[test]
    fn live_settings_env_child() {
        use clap::Parser;
        if std::env::var_os(CHILD).is_none() {
            return;
        }
        let cli = Cli::try_parse_from(["gateway"]).expect("parse");
        let config = GatewayConfig::resolve(&cli.args, GatewayFile::default()).unwrap();
        assert_eq!(
            config.live,
            LiveSettings {
                reattach_grace: Duration::from_secs(90),
                heartbeat_interval: Duration::from_secs(2),
                lease_duration: Duration::from_secs(12),
                status_throttle: Duration::from_millis(250),
                transcript_flush_interval: Duration::from_secs(3),
                replay_buffer_bytes: 32 * 1024,
                browser_window_bytes: 32 * 1024,
                shutdown_timeout: Duration::from_secs(30),
                audit_file: Some("/tmp/env-audit.jsonl".into()),
            }
        );
    }

    #[test]
    fn live_settings_from_the_environment() {
        run_child_test(
            "gateway::config::live::tests::live_settings_env_child",
            &[
                ("NODESHELL_OIDC_ISSUER", "https://issuer.example"),
                ("NODESHELL_OIDC_CLIENT_ID", "nodeshell"),
                ("NODESHELL_GATEWAY_REATTACH_GRACE", "90s"),
                ("NODESHELL_GATEWAY_HEARTBEAT_INTERVAL", "2s"),
                ("NODESHELL_GATEWAY_LEASE_DURATION", "12s"),
                ("NODESHELL_GATEWAY_STATUS_WRITE_THROTTLE", "250ms"),
                ("NODESHELL_GATEWAY_TRANSCRIPT_FLUSH_INTERVAL", "3"),
                ("NODESHELL_GATEWAY_REPLAY_BUFFER_BYTES", "32768"),
                ("NODESHELL_GATEWAY_SHUTDOWN_TIMEOUT", "30s"),
                ("NODESHELL_GATEWAY_AUDIT_FILE", "/tmp/env-audit.jsonl"),
            ],
        );
    }

    #[test]
    fn live_settings_that_cannot_work_are_refused() {
        let refused = |yaml: &str| {
            GatewayConfig::resolve(&args(), parse_file(yaml).unwrap())
                .unwrap_err()
                .to_string()
        };
        for (key, flag) in [
            ("reattachGraceSeconds", "--reattach-grace"),
            ("heartbeatIntervalSeconds", "--heartbeat-interval"),
            ("statusWriteThrottleSeconds", "--status-write-throttle"),
            (
                "transcriptFlushIntervalSeconds",
                "--transcript-flush-interval",
            ),
            ("shutdownTimeoutSeconds", "--shutdown-timeout"),
        ] {
            let err = refused(&format!("{key}: 0\n"));
            assert!(
                err.contains(key) && err.contains(flag) && err.contains("is zero"),
                "{err}"
            );
        }
        let err = refused("heartbeatIntervalSeconds: 31\n");
        assert!(
            err.contains("--heartbeat-interval") && err.contains("IdleTimeout"),
            "{err}"
        );
        let err = refused("leaseDurationSeconds: 2\n");
        assert!(
            err.contains("--lease-duration") && err.contains("leaseDurationSeconds"),
            "{err}"
        );
        let err = refused("heartbeatIntervalSeconds: 2\nstatusWriteThrottleSeconds: 3\n");
        assert!(err.contains("lower --status-write-throttle"), "{err}");
        let err = refused("replayBufferBytes: 1024\n");
        assert!(
            err.contains("--replay-buffer-bytes") && err.contains("16384"),
            "{err}"
        );
        let err = refused("browserWindowBytes: 1024\n");
        assert!(
            err.contains("--browser-window-bytes") && err.contains("16384"),
            "{err}"
        );
        let err = refused("replayBufferBytes: 65536\nbrowserWindowBytes: 131072\n");
        assert!(
            err.contains("larger than the replay buffer") && err.contains("browserWindowBytes"),
            "{err}"
        );
        let small_ring =
            GatewayConfig::resolve(&args(), parse_file("replayBufferBytes: 65536\n").unwrap())
                .unwrap();
        assert_eq!(
            small_ring.live.browser_window_bytes,
            64 * 1024,
            "the default window shrinks to a smaller replay buffer"
        );
        let zero_flag = GatewayArgs {
            reattach_grace: Some(Duration::ZERO),
            ..args()
        };
        let err = GatewayConfig::resolve(&zero_flag, GatewayFile::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("--reattach-grace"), "{err}");
        let empty_audit = GatewayArgs {
            audit_file: Some(PathBuf::new()),
            ..args()
        };
        let config = GatewayConfig::resolve(&empty_audit, GatewayFile::default()).unwrap();
        assert_eq!(config.live.audit_file, None, "an empty path means none");
    }

    #[test]
    fn risky_live_settings_warn() {
        let config = GatewayConfig::resolve(
            &args(),
            parse_file("leaseDurationSeconds: 10\nshutdownTimeoutSeconds: 2\n").unwrap(),
        )
        .unwrap();
        let warnings = config.live.warnings();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].contains("raise --lease-duration") && warnings[0].contains("GatewayLost"),
            "{warnings:?}"
        );
        assert!(
            warnings[1].contains("raise --shutdown-timeout"),
            "{warnings:?}"
        );
        let config = GatewayConfig::resolve(
            &args(),
            parse_file("heartbeatIntervalSeconds: 30\nleaseDurationSeconds: 15\n").unwrap(),
        )
        .unwrap();
        assert!(config.live.warnings().is_empty());
    }
}
