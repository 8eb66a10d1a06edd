//! Kubernetes Events about a session's lifecycle (`kubectl describe nodeshellsession`): one
//! create per step, off the session's path.
//!
//! Not kube-runtime's `Recorder`: it keeps every event it published for six minutes, to count
//! a repeat into a series, and on a gateway that opens shells steadily that cache held about
//! 3 KB for every shell opened in the last six minutes. A session's events never repeat (it
//! starts once and ends once), so there is nothing to count and nothing is kept.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, Resource};
use tracing::debug;

use crate::api::NodeShellSession;

/// Where the events of a cluster-scoped object go (sessions are cluster-scoped), as
/// Kubernetes' own recorders do.
const CLUSTER_SCOPED_EVENTS_NAMESPACE: &str = "default";
/// The longest `reason` the events API accepts.
const REASON_CHARS: usize = 128;
/// The longest `note` the events API accepts (1 kB; characters of a note are mostly ASCII).
const NOTE_CHARS: usize = 1000;

/// Publishes a gateway's session events, as `reportingController` `controller` and
/// `reportingInstance` its pod.
#[derive(Clone)]
pub(super) struct SessionEvents {
    client: Client,
    controller: String,
    instance: String,
}

impl SessionEvents {
    /// Events reported by `controller` from pod `instance`.
    pub(super) fn new(client: Client, controller: &str, instance: &str) -> Self {
        Self {
            client,
            controller: controller.to_string(),
            instance: instance.to_string(),
        }
    }

    /// Mirrors a lifecycle step of `session` as an Event, created in a task of its own, off
    /// the session's path; a failure is logged at debug (an event is a mirror of the audit
    /// row, which is written regardless).
    pub(super) fn publish(
        &self,
        session: &NodeShellSession,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let event = session_event(
            &self.controller,
            &self.instance,
            session.object_ref(&()),
            warning,
            reason,
            &note,
            Timestamp::now(),
        );
        let namespace = event
            .metadata
            .namespace
            .as_deref()
            .unwrap_or(CLUSTER_SCOPED_EVENTS_NAMESPACE);
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        tokio::spawn(async move {
            if let Err(e) = api.create(&PostParams::default(), &event).await {
                debug!(error = %e, "publishing a session event failed");
            }
        });
    }
}

/// The event about `regarding` at `now`: named after the session and the time, in its
/// namespace (`default` for a cluster-scoped object), the action `Open` for
/// `SessionStarted` and `Close` otherwise.
fn session_event(
    controller: &str,
    instance: &str,
    regarding: ObjectReference,
    warning: bool,
    reason: &str,
    note: &str,
    now: Timestamp,
) -> Event {
    let name = format!(
        "{}.{:x}",
        regarding.name.as_deref().unwrap_or(controller),
        now.as_nanosecond()
    );
    Event {
        action: Some(
            if reason == "SessionStarted" {
                "Open"
            } else {
                "Close"
            }
            .into(),
        ),
        reason: Some(reason.chars().take(REASON_CHARS).collect()),
        note: Some(note.chars().take(NOTE_CHARS).collect()),
        event_time: Some(MicroTime(now)),
        metadata: ObjectMeta {
            namespace: Some(
                regarding
                    .namespace
                    .clone()
                    .unwrap_or_else(|| CLUSTER_SCOPED_EVENTS_NAMESPACE.into()),
            ),
            name: Some(name),
            ..ObjectMeta::default()
        },
        regarding: Some(regarding),
        reporting_controller: Some(controller.to_string()),
        reporting_instance: Some(instance.to_string()),
        type_: Some(if warning { "Warning" } else { "Normal" }.into()),
        ..Event::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session's reference, as `object_ref` makes it: sessions are cluster-scoped.
    fn regarding() -> ObjectReference {
        ObjectReference {
            api_version: Some("nodeshell.periscope.io/v1alpha1".into()),
            kind: Some("NodeShellSession".into()),
            name: Some("shell-1".into()),
            uid: Some("u-1".into()),
            ..ObjectReference::default()
        }
    }

    #[test]
    fn an_event_is_about_its_session_in_the_default_namespace() {
        let now = Timestamp::from_second(1_800_000_000).expect("a time");
        let e = session_event(
            "gw",
            "gw-0",
            regarding(),
            false,
            "SessionStarted",
            "up",
            now,
        );
        assert_eq!(e.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(
            e.metadata.name,
            Some(format!("shell-1.{:x}", now.as_nanosecond()))
        );
        assert_eq!(e.regarding, Some(regarding()));
        assert_eq!(e.action.as_deref(), Some("Open"));
        assert_eq!(e.type_.as_deref(), Some("Normal"));
        assert_eq!(e.note.as_deref(), Some("up"));
        assert_eq!(e.event_time, Some(MicroTime(now)));
        assert_eq!(
            (
                e.reporting_controller.as_deref(),
                e.reporting_instance.as_deref()
            ),
            (Some("gw"), Some("gw-0"))
        );
        assert!(
            e.series.is_none(),
            "a session's events are never counted as a series"
        );
    }

    #[test]
    fn a_namespaced_objects_event_stays_in_its_namespace() {
        let mut namespaced = regarding();
        namespaced.namespace = Some("team-a".into());
        let e = session_event(
            "gw",
            "gw-0",
            namespaced,
            false,
            "X",
            "n",
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(e.metadata.namespace.as_deref(), Some("team-a"));
    }

    #[test]
    fn a_warning_closes_and_long_texts_are_cut_to_the_apis_limits() {
        let long = "x".repeat(5000);
        let e = session_event(
            "gw",
            "gw-0",
            regarding(),
            true,
            &long,
            &long,
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.action.as_deref(), Some("Close"));
        assert_eq!(e.reason.map(|r| r.len()), Some(REASON_CHARS));
        assert_eq!(e.note.map(|n| n.len()), Some(NOTE_CHARS));
    }
}
