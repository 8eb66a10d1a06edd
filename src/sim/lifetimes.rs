//! Pure: how long what the simulated services hand out lasts. A data-channel connection is
//! closed by the service with `1000 Bye` once it is `recycleSeconds` old (AWS does this about
//! once an hour: aws/session-manager-plugin#135); a stream token from StartSession or
//! ResumeSession opens a channel only for `streamTokenSeconds` after it was issued (the SSM
//! API reference: the token "is valid only long enough to ensure the connection succeeds");
//! temporary credentials last `DurationSeconds`, or less when a role's
//! `credentialLifetimeSeconds` knob caps them (so a test can cross an expiry in seconds).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The simulated account's data-channel service timings (`dataChannel` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DataChannelService {
    /// Seconds after which the service closes a data-channel connection with `1000 Bye`
    /// (default 3600: about once an hour, as AWS does). A live session's interval can be
    /// changed with `SimHandle::set_session_recycle`.
    pub recycle_seconds: u64,
    /// Seconds a `TokenValue` from StartSession or ResumeSession can open a connection
    /// (default 60, our choice: AWS documents only "long enough to ensure the connection
    /// succeeds"). An older token is refused like a wrong one (close 1008).
    pub stream_token_seconds: u64,
}

impl Default for DataChannelService {
    fn default() -> Self {
        Self {
            recycle_seconds: 3600,
            stream_token_seconds: 60,
        }
    }
}

impl DataChannelService {
    /// The recycle interval of a new session.
    pub fn recycle(&self) -> Duration {
        Duration::from_secs(self.recycle_seconds.max(1))
    }

    /// How long a stream token opens a connection.
    pub fn stream_token(&self) -> Duration {
        Duration::from_secs(self.stream_token_seconds)
    }
}

/// Whether a stream token issued at `issued` still opens a connection at `now`.
pub fn token_usable(issued: Instant, now: Instant, lifetime: Duration) -> bool {
    now.saturating_duration_since(issued) <= lifetime
}

/// Whether a connection opened at `opened` is due for the service's recycle at `now`.
pub fn recycle_due(opened: Instant, now: Instant, every: Duration) -> bool {
    now.saturating_duration_since(opened) >= every
}

/// When credentials issued at `now` for `duration_seconds` (already checked against
/// 900–43200) expire, under the role's optional `credentialLifetimeSeconds` cap.
pub fn credential_expiry(
    now: DateTime<Utc>,
    duration_seconds: u32,
    cap_seconds: Option<u32>,
) -> DateTime<Utc> {
    let seconds = cap_seconds.map_or(duration_seconds, |cap| cap.min(duration_seconds));
    let at = now + chrono::Duration::seconds(i64::from(seconds));
    // Whole seconds, as the answer's `Expiration` says it: the instant enforced is the one
    // the caller was told.
    DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_opens_a_connection_only_within_its_lifetime() {
        let t0 = Instant::now();
        let life = Duration::from_secs(60);
        assert!(token_usable(t0, t0, life));
        assert!(token_usable(t0, t0 + life, life));
        assert!(!token_usable(
            t0,
            t0 + life + Duration::from_millis(1),
            life
        ));
    }

    #[test]
    fn a_connection_is_recycled_once_it_is_as_old_as_the_interval() {
        let t0 = Instant::now();
        let hour = DataChannelService::default().recycle();
        assert_eq!(hour, Duration::from_secs(3600));
        assert!(!recycle_due(t0, t0 + hour - Duration::from_millis(1), hour));
        assert!(recycle_due(t0, t0 + hour, hour));
    }

    #[test]
    fn credentials_last_their_duration_unless_the_role_caps_them() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        assert_eq!(
            credential_expiry(now, 3600, None),
            now + chrono::Duration::seconds(3600)
        );
        assert_eq!(
            credential_expiry(now, 3600, Some(5)),
            now + chrono::Duration::seconds(5)
        );
        assert_eq!(
            credential_expiry(now, 900, Some(7200)),
            now + chrono::Duration::seconds(900)
        );
        // Never later than what the answer's whole-second `Expiration` says.
        let late = now + chrono::Duration::milliseconds(999);
        assert_eq!(
            credential_expiry(late, 5, None),
            now + chrono::Duration::seconds(5)
        );
    }
}
