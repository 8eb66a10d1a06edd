//! What a running session reports to: its status snapshot (handed whole to the status
//! writer when an activity write is due, at most once a minute), the traffic counters and
//! last activity behind those writes and the metrics, and at the close the audit row and the
//! Kubernetes Event.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tracing::warn;

use super::Inner;
use super::metrics::LiveMetrics;
use super::reasons::EndReason;
use super::status::{StatusSender, Traffic, Written, activity_update, activity_write_due};
use crate::api::{ACTIVITY_WRITE_INTERVAL, NodeShellSession, NodeShellSessionStatus, PolicyLimits};
use crate::gateway::audit::{
    AuditActor, AuditClose, AuditRow, AuditSubject, AuditTranscript, ClientInfo,
};

/// What a running session knows about itself and never changes.
pub(super) struct SessionInfo {
    /// The NodeShellSession's name.
    pub name: String,
    /// The session object as it was marked Active.
    pub session: NodeShellSession,
    /// Who opened it, for audit rows.
    pub actor: AuditActor,
    /// The cluster name in audit rows.
    pub cluster: String,
    /// The gateway pod's name in audit rows.
    pub gateway: String,
    /// Where the person connected from, for audit rows.
    pub client: ClientInfo,
    /// The SSM session.
    pub ssm_session_id: String,
    /// The role session the person's credentials came from.
    pub assumed_role_arn: Option<String>,
    /// When it became Active.
    pub started_at: Timestamp,
    /// What a reattaching browser must present.
    pub resume_token: String,
    /// The governing policy's limits (idle, max duration).
    pub limits: PolicyLimits,
    /// Whether the policy requires a transcript.
    pub transcript_required: bool,
    /// Where the S3 sink copies the transcript, when the policy has one.
    pub sink: Option<std::sync::Arc<crate::gateway::transcript::s3::SinkTarget>>,
}

/// The close's facts for its audit row and Event.
pub(super) struct CloseFacts<'a> {
    /// Why the session ended.
    pub reason: &'a EndReason,
    /// `status.message`, with any transcript-loss note.
    pub message: &'a str,
    /// When it ended.
    pub ended_at: Timestamp,
    /// The shell's exit code, when known.
    pub exit_code: Option<i32>,
    /// The transcript part of the close row, when one was stored.
    pub transcript: Option<AuditTranscript>,
}

/// A running session's status snapshot and counters.
pub(super) struct Records {
    /// Every status field the gateway owns, as last written (or about to be).
    pub snapshot: NodeShellSessionStatus,
    status_tx: StatusSender,
    /// Bytes typed and printed so far.
    pub traffic: Traffic,
    /// Traffic already added to the metrics.
    reported: Traffic,
    /// Wall-clock time of the last activity, for `status.lastActivityAt`.
    pub last_activity_wall: Timestamp,
    /// What the last status write carried (the Active write to begin with).
    written: Written,
}

impl Records {
    /// Records starting from the Active `snapshot` (already written), sending later writes to
    /// `status_tx`.
    pub fn new(
        snapshot: NodeShellSessionStatus,
        status_tx: StatusSender,
        started_at: Timestamp,
    ) -> Self {
        let written = Written {
            at: started_at,
            activity: started_at,
            transcript: snapshot.transcript.clone(),
        };
        Self {
            snapshot,
            status_tx,
            traffic: Traffic::default(),
            reported: Traffic::default(),
            last_activity_wall: started_at,
            written,
        }
    }

    /// Counts typed bytes: always activity.
    pub fn input(&mut self, bytes: usize) {
        self.traffic.bytes_in += bytes as u64;
        self.last_activity_wall = Timestamp::now();
    }

    /// Counts printed bytes; `activity` when the idle clock counted them as activity.
    pub fn output(&mut self, bytes: usize, activity: bool) {
        self.traffic.bytes_out += bytes as u64;
        if activity {
            self.last_activity_wall = Timestamp::now();
        }
    }

    /// A status tick (every `--heartbeat-interval`): the new traffic goes to the metrics, and
    /// when an activity write is due ([`activity_write_due`]: something changed and a minute
    /// passed since the last write) the snapshot with the activity, counters and transcript
    /// reference goes to the status writer. An idle session writes nothing.
    pub fn heartbeat(&mut self, metrics: &LiveMetrics) {
        self.count_traffic(metrics);
        let now = Timestamp::now();
        if !activity_write_due(
            &self.written,
            self.last_activity_wall,
            self.snapshot.transcript.as_ref(),
            now,
            ACTIVITY_WRITE_INTERVAL,
        ) {
            return;
        }
        let transcript = self.snapshot.transcript.clone();
        activity_update(
            &mut self.snapshot,
            self.last_activity_wall,
            self.traffic,
            transcript.clone(),
        );
        self.written = Written {
            at: now,
            activity: self.last_activity_wall,
            transcript,
        };
        self.status_tx
            .send_replace(Some(Box::new(self.snapshot.clone())));
    }

    /// Adds the traffic not yet counted to the metrics.
    pub fn count_traffic(&mut self, metrics: &LiveMetrics) {
        metrics
            .bytes_in
            .inc_by(self.traffic.bytes_in - self.reported.bytes_in);
        metrics
            .bytes_out
            .inc_by(self.traffic.bytes_out - self.reported.bytes_out);
        self.reported = self.traffic;
    }

    /// The close: the audit row (emitted, and listed in the snapshot), the snapshot's final
    /// activity and counters, ready for the Closed write.
    pub fn close(&mut self, inner: &Inner, info: &SessionInfo, close: &CloseFacts<'_>) {
        let row = AuditRow::closed(
            AuditSubject {
                actor: &info.actor,
                cluster: &info.cluster,
                gateway: &info.gateway,
                client: &info.client,
                session: &info.session,
                ssm_session_id: Some(&info.ssm_session_id),
                assumed_role_arn: info.assumed_role_arn.as_deref(),
            },
            AuditClose {
                started_at: info.started_at,
                ended_at: close.ended_at,
                exit_code: close.exit_code,
                outcome: close.reason.outcome(),
                reason: close.reason.as_str().to_string(),
                message: close.message.to_string(),
                bytes_in: self.traffic.bytes_in,
                bytes_out: self.traffic.bytes_out,
                transcript: close.transcript.clone(),
            },
        );
        if let Err(e) = inner.config.audit.emit(&row) {
            warn!(session = %info.name, error = %e, "writing the close audit row failed");
        }
        self.snapshot.audit.push(row.record(close.ended_at));
        self.snapshot.last_activity_at = Some(Time(self.last_activity_wall));
        self.snapshot.bytes_in = Some(i64::try_from(self.traffic.bytes_in).unwrap_or(i64::MAX));
        self.snapshot.bytes_out = Some(i64::try_from(self.traffic.bytes_out).unwrap_or(i64::MAX));
    }

    /// The close's Kubernetes Event (a Warning unless the end was orderly).
    pub fn close_event(&self, inner: &Arc<Inner>, info: &SessionInfo, close: &CloseFacts<'_>) {
        inner.events.publish(
            &info.session,
            close.reason.outcome() != "success",
            close.reason.as_str(),
            format!(
                "SSM session {} ended: {} (exit code {}, {} bytes in, {} bytes out)",
                info.ssm_session_id,
                close.message,
                close
                    .exit_code
                    .map_or_else(|| "not reported".to_string(), |c| c.to_string()),
                self.traffic.bytes_in,
                self.traffic.bytes_out
            ),
        );
    }
}
