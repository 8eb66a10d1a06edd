//! A first attach that did not start a shell: the error frame for a session that is not
//! Admitted, and, for a start that failed part-way, the open row marked as a
//! failure, the Closed status with the failure's reason and a Warning Event.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use tracing::warn;

use super::Inner;
use super::frames::ServerFrame;
use super::reasons::StartFailure;
use super::start::{ACTIVE_WRITE_ATTEMPTS, Progress, open_row};
use super::status::{ApplyMode, RetryStep, StatusRetry, WriteFailure, start_failed_status};
use crate::api::{NodeShellSession, SessionPhase};
use crate::gateway::error::ErrorCode;
use crate::gateway::handover::AttachGrant;

/// The answer when the session the attach read is no longer Admitted: nothing was started.
pub(super) fn not_admitted(session: &NodeShellSession) -> ServerFrame {
    let reason = session
        .status
        .as_ref()
        .and_then(|s| s.reason.clone())
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    ServerFrame::error(
        ErrorCode::BadRequest,
        format!(
            "session {} is {}{reason}, not Admitted; open a new session",
            session.name_any(),
            session.phase()
        ),
        false,
    )
}

/// Closes a session that failed to start: audit row (outcome failure), status Closed with
/// the failure's reason (only while still Admitted), a Warning event.
pub(super) async fn record_failure(
    inner: &Arc<Inner>,
    grant: &AttachGrant,
    fresh: &NodeShellSession,
    failure: &StartFailure,
    progress: &Progress,
) {
    let name = fresh.name_any();
    let now = Timestamp::now();
    let row = open_row(
        inner,
        grant,
        now,
        progress.session_id.as_deref(),
        progress.assumed_role_arn.as_deref(),
    )
    .failed(failure.reason.as_str(), &failure.message);
    if let Err(e) = inner.config.audit.emit(&row) {
        warn!(session = %name, error = %e, "writing the audit row failed");
    }
    let status = start_failed_status(
        &inner.config.pod_name,
        failure.reason.as_str(),
        &failure.message,
        now,
        vec![row.record(now)],
    );
    let retry = StatusRetry {
        attempts: Some(ACTIVE_WRITE_ATTEMPTS),
        pause: inner.config.settings.status_throttle,
    };
    let mut current = fresh.clone();
    for attempt in 0..ACTIVE_WRITE_ATTEMPTS {
        let rv = current.metadata.resource_version.clone();
        let Err(e) = inner
            .status
            .apply(&name, &status, ApplyMode::Force, rv.as_deref())
            .await
        else {
            break;
        };
        let failure = WriteFailure::of(&e);
        if failure != WriteFailure::Conflict {
            warn!(session = %name, error = %e, "writing the failed start failed");
        }
        match retry.after(attempt, failure) {
            RetryStep::Reread => match inner.status.get(&name).await {
                Ok(again) if again.phase() == SessionPhase::Admitted => current = again,
                _ => break,
            },
            RetryStep::Wait(pause) => tokio::time::sleep(pause).await,
            RetryStep::GiveUp => break,
        }
    }
    inner.events.publish(
        fresh,
        true,
        failure.reason.as_str(),
        failure.message.clone(),
    );
    warn!(session = %name, reason = %failure.reason, message = %failure.message, "session failed to start");
}
