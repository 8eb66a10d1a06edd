//! The gateway's part of a session's status, and how it is written: server-side apply on the
//! status subresource with field manager `nodeshell-gateway`. Every apply carries every field
//! the gateway owns (an omitted field would be removed), so the live session keeps one
//! snapshot and sends it whole. Builders and the one retry policy every status write
//! follows ([`StatusRetry`]) are pure; [`StatusApi`] does the writes, [`status_writer`] and
//! [`write_closed`] are a running session's write loops.
//!
//! A status is written when it means something: the phase changes (Active, Closed), and while
//! the session runs, for activity at most once every
//! [`ACTIVITY_WRITE_INTERVAL`](crate::api::ACTIVITY_WRITE_INTERVAL) ([`activity_write_due`]),
//! carrying `lastActivityAt`, the byte counters and the transcript reference. The gateway's
//! liveness is its pod's Lease ([`crate::gateway::lease`]), not a per-session heartbeat.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource};
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use super::Inner;
use crate::api::{
    NodeShellSession, NodeShellSessionStatus, SessionAuditRecord, SessionGateway, SessionPhase,
    SessionTranscript,
};
use crate::gateway::FIELD_MANAGER;

/// What the status says about a running session.
#[derive(Clone, Debug, PartialEq)]
pub struct ActiveFacts {
    /// This gateway's pod.
    pub pod: String,
    /// The SSM session.
    pub ssm_session_id: String,
    /// When it started.
    pub started_at: Timestamp,
    /// The node, for the message.
    pub node: String,
}

/// The status written when the session becomes Active.
pub fn active_status(
    facts: &ActiveFacts,
    now: Timestamp,
    audit: Vec<SessionAuditRecord>,
    transcript: Option<SessionTranscript>,
) -> NodeShellSessionStatus {
    NodeShellSessionStatus {
        phase: Some(SessionPhase::Active),
        message: Some(format!(
            "shell open on {} through gateway {}",
            facts.node, facts.pod
        )),
        ssm_session_id: Some(facts.ssm_session_id.clone()),
        started_at: Some(Time(facts.started_at)),
        last_activity_at: Some(Time(now)),
        bytes_in: Some(0),
        bytes_out: Some(0),
        gateway: Some(SessionGateway {
            pod: facts.pod.clone(),
            heartbeat_at: None,
        }),
        transcript,
        audit,
        ..NodeShellSessionStatus::default()
    }
}

/// Counters carried by activity writes and the close.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes typed.
    pub bytes_in: u64,
    /// Bytes printed.
    pub bytes_out: u64,
}

/// An activity write: the Active snapshot with the last activity, counters and transcript.
pub fn activity_update(
    snapshot: &mut NodeShellSessionStatus,
    last_activity: Timestamp,
    traffic: Traffic,
    transcript: Option<SessionTranscript>,
) {
    snapshot.last_activity_at = Some(Time(last_activity));
    snapshot.bytes_in = Some(to_i64(traffic.bytes_in));
    snapshot.bytes_out = Some(to_i64(traffic.bytes_out));
    if transcript.is_some() {
        snapshot.transcript = transcript;
    }
}

/// What the last status write of a running session carried.
#[derive(Clone, Debug, PartialEq)]
pub struct Written {
    /// When it was written.
    pub at: Timestamp,
    /// The `lastActivityAt` it carried.
    pub activity: Timestamp,
    /// The transcript reference it carried.
    pub transcript: Option<SessionTranscript>,
}

/// Whether a status tick at `now` writes the status of a running session: only when something
/// a reader cares about changed since the last write (newer activity, a new transcript
/// reference) and at least `every` has passed since that write. Counters alone never write:
/// they ride along, and are exact at the close.
pub fn activity_write_due(
    written: &Written,
    activity: Timestamp,
    transcript: Option<&SessionTranscript>,
    now: Timestamp,
    every: Duration,
) -> bool {
    let changed = activity > written.activity || transcript != written.transcript.as_ref();
    let every_ms = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
    changed && now.as_millisecond() - written.at.as_millisecond() >= every_ms
}

/// How a session ended, for the final status.
#[derive(Clone, Debug, PartialEq)]
pub struct ClosedFacts {
    /// `status.reason`.
    pub reason: String,
    /// `status.message`.
    pub message: String,
    /// When it ended.
    pub ended_at: Timestamp,
    /// The shell's exit code.
    pub exit_code: Option<i32>,
}

/// The final snapshot: Closed with the end facts. When someone else (the controller)
/// already closed the session, its phase, reason, message and end time are left to them.
pub fn closed_status(
    snapshot: &NodeShellSessionStatus,
    facts: &ClosedFacts,
    already_closed: bool,
) -> NodeShellSessionStatus {
    let mut status = snapshot.clone();
    status.exit_code = facts.exit_code;
    if already_closed {
        status.phase = None;
        status.reason = None;
        status.message = None;
        status.ended_at = None;
        status.duration_seconds = None;
    } else {
        status.phase = Some(SessionPhase::Closed);
        status.reason = Some(facts.reason.clone());
        status.message = Some(facts.message.clone());
        status.ended_at = Some(Time(facts.ended_at));
        status.duration_seconds = status
            .started_at
            .as_ref()
            .map(|s| (facts.ended_at.as_second() - s.0.as_second()).max(0));
    }
    status
}

/// The status of a session that failed to start: Closed with the failure's reason.
pub fn start_failed_status(
    pod: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
    audit: Vec<SessionAuditRecord>,
) -> NodeShellSessionStatus {
    NodeShellSessionStatus {
        phase: Some(SessionPhase::Closed),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        ended_at: Some(Time(now)),
        gateway: Some(SessionGateway {
            pod: pod.to_string(),
            heartbeat_at: None,
        }),
        audit,
        ..NodeShellSessionStatus::default()
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// How an apply is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyMode {
    /// Take fields from other managers, on the condition that the object is still at the
    /// given resourceVersion (when one is passed).
    Force,
    /// Fail with 409 when a field another manager owns (the controller's `phase` once it
    /// set Closing) would change: how an activity write learns of a takeover the session's
    /// watch has not reported yet.
    NoForce,
}

/// Status writes for sessions.
#[derive(Clone)]
pub struct StatusApi {
    api: Api<NodeShellSession>,
}

impl StatusApi {
    /// Writes through `client`.
    pub fn new(client: Client) -> Self {
        Self {
            api: Api::all(client),
        }
    }

    /// Reads a session.
    pub async fn get(&self, name: &str) -> Result<NodeShellSession, kube::Error> {
        self.api.get(name).await
    }

    /// Applies the gateway's status snapshot.
    pub async fn apply(
        &self,
        name: &str,
        status: &NodeShellSessionStatus,
        mode: ApplyMode,
        resource_version: Option<&str>,
    ) -> Result<NodeShellSession, kube::Error> {
        let mut metadata = serde_json::json!({ "name": name });
        if let Some(rv) = resource_version {
            metadata["resourceVersion"] = rv.into();
        }
        let patch = serde_json::json!({
            "apiVersion": NodeShellSession::api_version(&()),
            "kind": NodeShellSession::kind(&()),
            "metadata": metadata,
            "status": status,
        });
        let params = match mode {
            ApplyMode::Force => PatchParams::apply(FIELD_MANAGER).force(),
            ApplyMode::NoForce => PatchParams::apply(FIELD_MANAGER),
        };
        self.api
            .patch_status(name, &params, &Patch::Apply(&patch))
            .await
    }
}

/// Whether a kube error is an HTTP status with this code.
pub fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

// === retry policy ===

/// What went wrong with a status write (or with the read before it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteFailure {
    /// 409: a field another manager owns, or a stale resourceVersion: re-read and decide.
    Conflict,
    /// 404: the session is gone; there is nothing left to write.
    Gone,
    /// Anything else (the apiserver unreachable, a 5xx): wait and try again.
    Unavailable,
}

impl WriteFailure {
    /// The failure a kube error stands for.
    pub fn of(e: &kube::Error) -> Self {
        if is_status(e, 409) {
            Self::Conflict
        } else if is_status(e, 404) {
            Self::Gone
        } else {
            Self::Unavailable
        }
    }
}

/// What a status write does after a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryStep {
    /// Re-read the session and decide from what it says now (at once).
    Reread,
    /// Wait this long, then write again.
    Wait(Duration),
    /// Stop writing.
    GiveUp,
}

/// The one retry policy of status writes: a vanished session ends the write, a conflict is
/// re-read at once (what the session says now decides), any other failure waits the status
/// throttle and writes again, for a number of attempts (or, for the activity writer, until
/// a newer snapshot replaces the one being written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusRetry {
    /// Attempts in all; None: no limit.
    pub attempts: Option<usize>,
    /// Wait after a failure that is not a conflict.
    pub pause: Duration,
}

impl StatusRetry {
    /// After attempt `attempt` (counted from 0) failed with `failure`.
    pub fn after(&self, attempt: usize, failure: WriteFailure) -> RetryStep {
        let last = self.attempts.is_some_and(|n| attempt + 1 >= n);
        match failure {
            WriteFailure::Gone => RetryStep::GiveUp,
            WriteFailure::Conflict => RetryStep::Reread,
            WriteFailure::Unavailable if last => RetryStep::GiveUp,
            WriteFailure::Unavailable => RetryStep::Wait(self.pause),
        }
    }
}

// === write loops ===

/// What the status writer tells the session task: the session as re-read after a field
/// conflict, or `None` when it is gone. Boxed: a tokio mpsc channel allocates room for 32
/// messages when it is made, and 32 unboxed sessions (about 1.2 KiB each) were 39 KB
/// resident for every live session, used or not.
pub(super) type Conflict = Option<Box<NodeShellSession>>;

/// The status a session hands its writer: boxed, because a watch channel keeps its latest
/// value inline for the session's life and the status is about 500 B.
pub(super) type PendingStatus = Option<Box<NodeShellSessionStatus>>;

/// Where a session hands its status to its writer.
pub(super) type StatusSender = watch::Sender<PendingStatus>;

/// Applies the latest status snapshot, throttled, retrying on errors. A field conflict (the
/// controller took `phase` for Closing) or a vanished session is reported to the driver.
pub(super) async fn status_writer(
    inner: Arc<Inner>,
    name: String,
    mut rx: watch::Receiver<PendingStatus>,
    conflicts: mpsc::Sender<Conflict>,
) {
    let throttle = inner.config.settings.status_throttle;
    let retry = StatusRetry {
        attempts: None,
        pause: throttle,
    };
    while rx.changed().await.is_ok() {
        // Boxed too: a future is as large as its largest state, and the status and the
        // re-read session are held across the retries' waits.
        let Some(status) = rx.borrow_and_update().clone() else {
            continue;
        };
        let mut mode = ApplyMode::NoForce;
        for attempt in 0.. {
            // Boxed, as the read below: the writer waits for most of the session's life,
            // and inline these calls' futures would be reserved for all of it.
            let Err(e) = Box::pin(inner.status.apply(&name, &status, mode, None)).await else {
                break;
            };
            match retry.after(attempt, WriteFailure::of(&e)) {
                RetryStep::Reread => match Box::pin(inner.status.get(&name)).await.map(Box::new) {
                    Ok(fresh) => {
                        let still_ours = fresh.phase() == SessionPhase::Active;
                        let _ = conflicts.send(Some(fresh)).await;
                        if still_ours && mode == ApplyMode::NoForce {
                            mode = ApplyMode::Force;
                            continue;
                        }
                        break;
                    }
                    Err(e) if is_status(&e, 404) => {
                        let _ = conflicts.send(None).await;
                        return;
                    }
                    Err(_) => break,
                },
                RetryStep::Wait(pause) => {
                    inner.config.metrics.status_failures.inc();
                    debug!(session = %name, error = %e, "status write failed; retrying");
                    tokio::time::sleep(pause).await;
                    if rx.has_changed().unwrap_or(false) {
                        break;
                    }
                }
                RetryStep::GiveUp => {
                    let _ = conflicts.send(None).await;
                    return;
                }
            }
        }
        tokio::time::sleep(throttle).await;
    }
}

/// Writes the final Closed status built from `snapshot` and `facts`, re-reading the session
/// first each time (a session the controller already closed keeps its own reason).
pub(super) async fn write_closed(
    inner: &Inner,
    name: &str,
    snapshot: &NodeShellSessionStatus,
    facts: &ClosedFacts,
    attempts: usize,
) {
    let retry = StatusRetry {
        attempts: Some(attempts),
        pause: inner.config.settings.status_throttle,
    };
    for attempt in 0..attempts {
        let failure = match inner.status.get(name).await {
            Ok(current) => {
                let already = current.phase().is_terminal();
                let status = closed_status(snapshot, facts, already);
                match inner
                    .status
                    .apply(name, &status, ApplyMode::Force, None)
                    .await
                {
                    Ok(_) => return,
                    Err(e) => {
                        let failure = WriteFailure::of(&e);
                        if failure != WriteFailure::Gone {
                            inner.config.metrics.status_failures.inc();
                            warn!(session = %name, attempt, error = %e, "writing Closed failed");
                        }
                        failure
                    }
                }
            }
            Err(e) => {
                let failure = WriteFailure::of(&e);
                if failure != WriteFailure::Gone {
                    warn!(session = %name, attempt, error = %e, "reading the session before closing it failed");
                }
                failure
            }
        };
        match retry.after(attempt, failure) {
            RetryStep::GiveUp => return,
            RetryStep::Reread => {}
            RetryStep::Wait(pause) => tokio::time::sleep(pause).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).expect("ts")
    }

    fn facts() -> ActiveFacts {
        ActiveFacts {
            pod: "gw-0".into(),
            ssm_session_id: "ns-alice-abc".into(),
            started_at: ts(1000),
            node: "n1".into(),
        }
    }

    #[test]
    fn active_then_activity_then_closed() {
        let mut s = active_status(&facts(), ts(1000), vec![], None);
        assert_eq!(s.phase, Some(SessionPhase::Active));
        assert_eq!(s.gateway.as_ref().map(|g| g.pod.as_str()), Some("gw-0"));
        activity_update(
            &mut s,
            ts(1003),
            Traffic {
                bytes_in: 3,
                bytes_out: 40,
            },
            None,
        );
        assert_eq!(
            s.gateway.as_ref().and_then(|g| g.heartbeat_at.clone()),
            None,
            "liveness is the pod's Lease, not a per-session heartbeat"
        );
        assert_eq!(s.last_activity_at, Some(Time(ts(1003))));
        assert_eq!((s.bytes_in, s.bytes_out), (Some(3), Some(40)));
        let end = ClosedFacts {
            reason: "UserExit".into(),
            message: "the shell exited".into(),
            ended_at: ts(1090),
            exit_code: Some(0),
        };
        let closed = closed_status(&s, &end, false);
        assert_eq!(closed.phase, Some(SessionPhase::Closed));
        assert_eq!(closed.duration_seconds, Some(90));
        assert_eq!(closed.exit_code, Some(0));
        assert_eq!(closed.ssm_session_id.as_deref(), Some("ns-alice-abc"));
        // The controller already closed it: leave its phase and reason alone.
        let late = closed_status(&s, &end, true);
        assert_eq!(late.phase, None);
        assert_eq!(late.reason, None);
        assert_eq!(late.exit_code, Some(0));
        assert_eq!(late.bytes_out, Some(40));
    }

    #[test]
    fn activity_is_written_at_most_once_a_minute_and_only_when_it_changed() {
        let minute = Duration::from_secs(60);
        let transcript = SessionTranscript::default();
        let written = Written {
            at: ts(1000),
            activity: ts(1000),
            transcript: None,
        };
        // Nothing new: no write, however long it has been (an idle shell is silent).
        assert!(!activity_write_due(
            &written,
            ts(1000),
            None,
            ts(5000),
            minute
        ));
        // New activity waits for the minute since the last write.
        assert!(!activity_write_due(
            &written,
            ts(1001),
            None,
            ts(1059),
            minute
        ));
        assert!(activity_write_due(
            &written,
            ts(1001),
            None,
            ts(1060),
            minute
        ));
        // A new transcript reference likewise.
        assert!(!activity_write_due(
            &written,
            ts(1000),
            Some(&transcript),
            ts(1030),
            minute
        ));
        assert!(activity_write_due(
            &written,
            ts(1000),
            Some(&transcript),
            ts(1060),
            minute
        ));
        // Continuous activity ticked every 5 s for ten minutes: at most one write a minute.
        let mut last = written;
        let mut writes = 0;
        for tick in 1..=120 {
            let now = ts(1000 + tick * 5);
            if activity_write_due(&last, now, None, now, minute) {
                writes += 1;
                last = Written {
                    at: now,
                    activity: now,
                    transcript: None,
                };
            }
        }
        assert_eq!(writes, 10);
    }

    #[test]
    fn one_retry_policy_rereads_conflicts_waits_on_outages_and_stops_when_gone() {
        let pause = Duration::from_secs(1);
        let limited = StatusRetry {
            attempts: Some(3),
            pause,
        };
        assert_eq!(limited.after(0, WriteFailure::Conflict), RetryStep::Reread);
        assert_eq!(
            limited.after(1, WriteFailure::Unavailable),
            RetryStep::Wait(pause)
        );
        assert_eq!(limited.after(0, WriteFailure::Gone), RetryStep::GiveUp);
        // The last attempt does not wait for a next one.
        assert_eq!(
            limited.after(2, WriteFailure::Unavailable),
            RetryStep::GiveUp
        );
        assert_eq!(limited.after(2, WriteFailure::Conflict), RetryStep::Reread);
        let unbounded = StatusRetry {
            attempts: None,
            pause,
        };
        assert_eq!(
            unbounded.after(1_000_000, WriteFailure::Unavailable),
            RetryStep::Wait(pause)
        );
        assert_eq!(unbounded.after(3, WriteFailure::Gone), RetryStep::GiveUp);
    }

    #[test]
    fn status_json_holds_no_credentials() {
        let s = active_status(&facts(), ts(1000), vec![], None);
        let text = serde_json::to_string(&s).expect("json").to_lowercase();
        assert!(!text.contains("secret") && !text.contains("token"));
    }

    /// The status writer lives as long as the session and waits almost all of it: the
    /// apiserver calls it makes run boxed, so an idle writer does not reserve room for them.
    #[test]
    fn a_sessions_status_writer_reserves_little_while_it_waits() {
        fn future_size<A, B, C, D, F: std::future::Future>(
            _: &impl FnOnce(A, B, C, D) -> F,
        ) -> usize {
            std::mem::size_of::<F>()
        }
        let bytes = future_size(&status_writer);
        // Unoptimised build (this test): 3,688 B with the calls, the status and the re-read
        // session inline; 552 B boxed.
        println!("status writer: {bytes} B");
        assert!(bytes <= 1024, "the status writer reserves {bytes} B");
    }
}
