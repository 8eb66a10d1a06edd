//! Kubernetes Events about a session's lifecycle (`kubectl describe nodeshellsession`): one
//! create per step, off the session's path.
//!
//! Not kube-runtime's `Recorder`: it keeps every event it published for six minutes, to count
//! a repeat into a series, and on a gateway that opens shells steadily that cache held about
//! 3 KB for every shell opened in the last six minutes. A session's events never repeat (it
//! starts once and ends once), so there is nothing to count and nothing is kept.
//!
//! An event is a mirror of the session's audit row, which is written regardless, so a
//! create that fails is counted and the event dropped. What an apiserver that stops
//! answering can cost is bounded: a create waits at most [`EVENT_TIMEOUT`], at most
//! [`EVENTS_IN_FLIGHT`] wait at once (beyond them an event is dropped and counted), and the
//! failures are logged at warn at most once per [`WARN_EVERY`] (a gateway whose RBAC lacks
//! `create` on events says so without a line per session).

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, Resource};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::api::NodeShellSession;
use crate::gateway::warn_gate::WarnGate;

/// Where the events of a cluster-scoped object go (sessions are cluster-scoped), as
/// Kubernetes' own recorders do.
const CLUSTER_SCOPED_EVENTS_NAMESPACE: &str = "default";
/// The longest `reason` the events API accepts.
const REASON_CHARS: usize = 128;
/// The longest `note` the events API accepts (1 kB; characters of a note are mostly ASCII).
const NOTE_CHARS: usize = 1000;
/// Event creates waiting for the apiserver at once; beyond them an event is dropped.
pub(super) const EVENTS_IN_FLIGHT: usize = 32;
/// How long one create may wait for the apiserver.
pub(super) const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Failed creates are logged at warn at most this often, at debug otherwise.
pub(super) const WARN_EVERY: Duration = Duration::from_secs(60);

/// Publishes a gateway's session events, as `reportingController` `controller` and
/// `reportingInstance` its pod.
#[derive(Clone)]
pub(super) struct SessionEvents {
    client: Client,
    controller: String,
    instance: String,
    /// Room for creates in flight ([`EVENTS_IN_FLIGHT`]).
    in_flight: Arc<Semaphore>,
    /// Events dropped: refused, unanswered, or beyond the creates in flight.
    failures: Counter,
    /// Lets a failure through to the log at warn once per [`WARN_EVERY`].
    warn: Arc<WarnGate>,
    /// How long one create may wait ([`EVENT_TIMEOUT`]).
    timeout: Duration,
}

impl SessionEvents {
    /// Events reported by `controller` from pod `instance`; those dropped are counted in
    /// `failures`.
    pub(super) fn new(client: Client, controller: &str, instance: &str, failures: Counter) -> Self {
        Self {
            client,
            controller: controller.to_string(),
            instance: instance.to_string(),
            in_flight: Arc::new(Semaphore::new(EVENTS_IN_FLIGHT)),
            failures,
            warn: Arc::new(WarnGate::new(WARN_EVERY)),
            timeout: EVENT_TIMEOUT,
        }
    }

    /// Mirrors a lifecycle step of `session` as an Event, created in a task of its own, off
    /// the session's path; one that fails, or finds [`EVENTS_IN_FLIGHT`] creates waiting,
    /// is dropped and counted.
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
        let Ok(slot) = self.in_flight.clone().try_acquire_owned() else {
            self.failed(&format!(
                "{EVENTS_IN_FLIGHT} event creates are already waiting for the Kubernetes API"
            ));
            return;
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let this = self.clone();
        tokio::spawn(async move {
            let created =
                tokio::time::timeout(this.timeout, api.create(&PostParams::default(), &event))
                    .await;
            drop(slot);
            match created {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => this.failed(&e.to_string()),
                Err(_) => this.failed(&format!(
                    "the Kubernetes API did not answer within {:?}",
                    this.timeout
                )),
            }
        });
    }

    fn failed(&self, error: &str) {
        self.failures.inc();
        if self.warn.due(Instant::now()) {
            warn!(
                error,
                "a session event was dropped (the audit row has the same facts); check that the gateway's service account may create events (further failures this minute are logged at debug and counted in nodeshell_gateway_live_event_failures_total)"
            );
        } else {
            debug!(error, "a session event was dropped");
        }
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

    /// An apiserver that accepts connections and never answers: creates wait, and beyond
    /// [`EVENTS_IN_FLIGHT`] of them every event is dropped and counted at once.
    #[tokio::test]
    async fn creates_waiting_for_an_apiserver_that_never_answers_are_bounded() {
        let service = tower::service_fn(|_req: http::Request<kube::client::Body>| async {
            std::future::pending::<
                Result<http::Response<kube::client::Body>, std::convert::Infallible>,
            >()
            .await
        });
        let client = Client::new(service, "default");
        let failures = Counter::default();
        let mut events = SessionEvents::new(client, "gw", "gw-0", failures.clone());
        events.timeout = Duration::from_millis(200);
        let session = crate::testing::session("s1", "alice", "p", 1, None);
        for _ in 0..EVENTS_IN_FLIGHT + 5 {
            events.publish(&session, false, "SessionStarted", "up".into());
        }
        assert_eq!(
            failures.get(),
            5,
            "only those beyond the bound are dropped at once"
        );
        assert_eq!(events.in_flight.available_permits(), 0);
        // Each waiting create gives up at its timeout, freeing its room.
        let deadline = Instant::now() + Duration::from_secs(30);
        while failures.get() < 5 + EVENTS_IN_FLIGHT as u64 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(failures.get(), 5 + EVENTS_IN_FLIGHT as u64);
        assert_eq!(events.in_flight.available_permits(), EVENTS_IN_FLIGHT);
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
