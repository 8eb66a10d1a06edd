//! One pass of the controller: the admission pass, the expiry and retention pass and the
//! policy statuses, with the writes and Events they make. The decisions are the pure
//! functions of the sibling modules; this only lists, calls them and writes.
//!
//! Race-freedom of admission: only the lease holder writes; each admission pass decides from a
//! fresh, consistent LIST (not the watch cache), decides sessions one at a time in creation
//! order and writes each decision before deciding the next, with the session's
//! resourceVersion as a precondition. Any conflict ends the pass and a new one starts from a
//! new LIST, so no decision is ever based on a view that misses an earlier one.

use super::admission::{
    AdmissionDecision, NodeView, SessionAdmission, admission_order, awaits_admission,
};
use super::expiry::{Action, Timeouts, next_action};
use super::leader::Leadership;
use super::metrics::{Metrics, PolicyLabels};
use super::policy_status::{desired_policy_status, policy_status_changed};
use super::status::{action_status, admission_status};
use super::{Error, FIELD_MANAGER};
use crate::api::{
    LABEL_SESSION, NodeShellPolicy, NodeShellSession, NodeShellSessionStatus, holds_cap_slot,
};
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Field selector of transcript Secrets (their dedicated type).
fn transcript_type_field() -> String {
    format!("type={}", crate::api::TRANSCRIPT_SECRET_TYPE)
}

/// Label selector of one session's transcript Secrets.
fn transcript_selector(session_name: &str) -> String {
    format!("{LABEL_SESSION}={}", crate::api::label_value(session_name))
}

/// Pause before a pass that follows a conflict, so the watch cache can catch up.
const CONFLICT_RETRY: Duration = Duration::from_millis(200);
/// Sessions per page of the admission pass's LIST (bounds the memory a pass needs).
const LIST_PAGE: u32 = 500;
/// How long an admission pass trusts its last lease confirmation.
const RECONFIRM_AFTER: Duration = Duration::from_secs(1);
/// Labels of a node that has none.
static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// Pause after a first unexpected API error; it doubles with each failed pass in a row.
const ERROR_RETRY: Duration = Duration::from_secs(2);
/// The longest pause between failed passes (an apiserver that stays down is not hammered).
const MAX_ERROR_RETRY: Duration = Duration::from_secs(60);

/// The pauses after failed passes in a row: 2 s, 4 s, 8 s … at most 60 s, without end
/// (backon's exponential backoff; one leader retries, so no jitter is needed).
fn error_backoff() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(ERROR_RETRY)
        .with_max_delay(MAX_ERROR_RETRY)
        .with_factor(2.0)
        .without_max_times()
        .build()
}

/// Where the engine queues Kubernetes Events for publishing.
pub type EventSender = mpsc::Sender<(ObjectReference, Event)>;

/// The writer: one per process, used only while leading.
pub struct Engine {
    sessions_api: Api<NodeShellSession>,
    policies_api: Api<NodeShellPolicy>,
    nodes_api: Api<Node>,
    secrets_api: Api<Secret>,
    sessions: Store<NodeShellSession>,
    policies: Store<NodeShellPolicy>,
    leases: Store<Lease>,
    namespace: String,
    timeouts: Timeouts,
    identity: String,
    metrics: Arc<Metrics>,
    events: EventSender,
    decisions: u64,
    /// Pauses after failed passes; a pass that completes starts it again.
    failures: ExponentialBackoff,
}

/// Why a pass stopped early.
enum Stop {
    /// An object changed under us; start again from a fresh view shortly.
    Conflict,
    /// Leadership was lost mid-pass.
    NotLeader,
    /// Something else failed; retry later.
    Failed(Error),
}

impl From<kube::Error> for Stop {
    fn from(e: kube::Error) -> Self {
        match &e {
            kube::Error::Api(s) if s.code == 409 || s.code == 404 => Stop::Conflict,
            _ => Stop::Failed(Error::Kube(e)),
        }
    }
}

// === impl Engine ===

impl Engine {
    /// An engine writing through `client`, deciding from these caches (`leases`: the
    /// gateways' Leases in `namespace`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        namespace: &str,
        sessions: Store<NodeShellSession>,
        policies: Store<NodeShellPolicy>,
        leases: Store<Lease>,
        timeouts: Timeouts,
        identity: &str,
        metrics: Arc<Metrics>,
        events: EventSender,
    ) -> Self {
        Self {
            sessions_api: Api::all(client.clone()),
            policies_api: Api::all(client.clone()),
            nodes_api: Api::all(client.clone()),
            secrets_api: Api::namespaced(client, namespace),
            sessions,
            policies,
            leases,
            namespace: namespace.to_string(),
            timeouts,
            identity: identity.to_string(),
            metrics,
            events,
            decisions: 0,
            failures: error_backoff(),
        }
    }

    /// One pass: admission, then expiry and retention, then policy status. Returns how long
    /// to wait before the next pass if nothing changes.
    pub async fn pass(&mut self, leader: &dyn Leadership) -> Duration {
        let mut wait = Duration::MAX;
        let fresh = match self.admit(leader).await {
            Ok(fresh) => fresh,
            Err(stop) => return self.stopped(stop),
        };
        match self.expire(leader).await {
            Ok(next) => wait = wait.min(next),
            Err(stop) => return self.stopped(stop),
        }
        if let Err(stop) = self.policy_statuses(leader, fresh.as_ref()).await {
            return self.stopped(stop);
        }
        self.failures = error_backoff();
        wait
    }

    fn stopped(&mut self, stop: Stop) -> Duration {
        match stop {
            Stop::Conflict => {
                self.metrics.error("conflict");
                CONFLICT_RETRY
            }
            // Look again soon: the lease may come back, or the check failed transiently.
            Stop::NotLeader => Duration::from_secs(1),
            Stop::Failed(e) => {
                let pause = self.failures.next().unwrap_or(MAX_ERROR_RETRY);
                warn!(error = %e, retry_in = ?pause, "pass failed; retrying");
                self.metrics.error(e.metric_label());
                pause
            }
        }
    }

    /// Admits or rejects every Pending session. Returns the live session count per policy
    /// after its decisions, if it made a fresh list.
    async fn admit(
        &mut self,
        leader: &dyn Leadership,
    ) -> Result<Option<HashMap<String, i64>>, Stop> {
        let cached = self.sessions.state();
        let pending_in_cache = cached.iter().filter(|s| awaits_admission(s)).count();
        self.metrics
            .pending_sessions
            .set(i64::try_from(pending_in_cache).unwrap_or(i64::MAX));
        self.metrics
            .session_objects
            .set(i64::try_from(cached.len()).unwrap_or(i64::MAX));
        if pending_in_cache == 0 {
            return Ok(None);
        }
        drop(cached);
        // A LIST without resourceVersion is a quorum read: it sees every decision written so
        // far, by this replica or a previous leader, which the watch cache may not yet. Its
        // pages all come from the snapshot of the first, so the counts are consistent; only
        // counts and the pending sessions are kept, not every object.
        let mut ledger = SessionAdmission::new(std::iter::empty(), std::iter::empty());
        let mut pending = Vec::new();
        let mut params = ListParams::default().limit(LIST_PAGE);
        loop {
            let page = self.sessions_api.list(&params).await?;
            for session in page.items {
                if holds_cap_slot(&session) {
                    ledger.record_live(&session);
                } else if awaits_admission(&session) {
                    pending.push(session);
                }
            }
            match page.metadata.continue_.as_deref() {
                Some(token) if !token.is_empty() => params = params.continue_token(token),
                _ => break,
            }
        }
        // Policies after sessions: every listed session was created against a policy that
        // existed then, so this LIST holds it unless it was really deleted since. Listed
        // first, a policy created just before a click could be missing and refuse the shell.
        let policies = self.policies_api.list(&ListParams::default()).await?.items;
        ledger.set_policies(policies.iter());
        pending.sort_by(admission_order);
        let mut confirmed_at = Instant::now();
        if !leader.confirm().await {
            return Err(Stop::NotLeader);
        }
        let mut nodes: HashMap<String, Option<Node>> = HashMap::new();
        for session in &pending {
            if !leader.is_leader() {
                return Err(Stop::NotLeader);
            }
            // A long pass re-checks the lease now and then; decisions are milliseconds apart.
            if confirmed_at.elapsed() > RECONFIRM_AFTER {
                if !leader.confirm().await {
                    return Err(Stop::NotLeader);
                }
                confirmed_at = Instant::now();
            }
            // The node as it is now, read once per pass for all its sessions.
            let node_name = &session.spec.node_name;
            if !nodes.contains_key(node_name) {
                let node = self.nodes_api.get_opt(node_name).await?;
                nodes.insert(node_name.clone(), node);
            }
            let node = match nodes.get(node_name) {
                Some(Some(node)) => NodeView::Found {
                    labels: node.metadata.labels.as_ref().unwrap_or(&NO_LABELS),
                    provider_id: node.spec.as_ref().and_then(|s| s.provider_id.as_deref()),
                },
                _ => NodeView::Missing,
            };
            let decision = ledger.decide(session, node);
            self.decisions += 1;
            let decided_by = format!(
                "{FIELD_MANAGER} replica {} (decision {})",
                self.identity, self.decisions
            );
            let now = Timestamp::now();
            let status = admission_status(&decision, &decided_by, now);
            let written = self.apply_status(session, &status).await?;
            self.record_admission(&written, &decision, now);
        }
        Ok(Some(ledger.live_totals().clone()))
    }

    fn record_admission(
        &self,
        session: &NodeShellSession,
        decision: &AdmissionDecision,
        now: Timestamp,
    ) {
        if let Some(created) = &session.metadata.creation_timestamp {
            let ms = now.as_millisecond() - created.0.as_millisecond();
            #[allow(clippy::cast_precision_loss)]
            self.metrics
                .admission_latency
                .observe(ms.max(0) as f64 / 1000.0);
        }
        let user = &session.spec.user.name;
        let policy = &session.spec.policy_name;
        match decision {
            AdmissionDecision::Admit => {
                info!(session = %session.name_any(), %user, %policy, "admitted");
                self.metrics.decision("admitted", "");
                self.event(
                    session,
                    EventType::Normal,
                    "Admitted",
                    "Admit",
                    format!("admitted for {user} under policy {policy}"),
                );
            }
            AdmissionDecision::Reject { reason, message } => {
                info!(session = %session.name_any(), %user, %policy, %reason, "rejected");
                self.metrics.decision("rejected", reason.as_str());
                self.event(
                    session,
                    EventType::Warning,
                    reason.as_str(),
                    "Reject",
                    message.clone(),
                );
            }
        }
    }

    /// Expiry and retention over the cache; the resourceVersion precondition on every write
    /// turns a stale cache entry into a conflict instead of a wrong write.
    async fn expire(&mut self, leader: &dyn Leadership) -> Result<Duration, Stop> {
        let policies: BTreeMap<String, Arc<NodeShellPolicy>> = self
            .policies
            .state()
            .into_iter()
            .map(|p| (p.name_any(), p))
            .collect();
        let now = Timestamp::now();
        let mut wait = Duration::MAX;
        let mut conflict = false;
        // Confirmed from the apiserver once per pass, before the first write.
        let mut confirmed = false;
        for session in self.sessions.state() {
            if session.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let policy = policies.get(&session.spec.policy_name).map(AsRef::as_ref);
            // The owning gateway's Lease, from the cache (never one GET per session).
            let lease = session
                .status
                .as_ref()
                .and_then(|s| s.gateway.as_ref())
                .and_then(|g| {
                    self.leases
                        .get(&ObjectRef::new(&g.lease_name()).within(&self.namespace))
                });
            let next = next_action(&session, policy, lease.as_deref(), now, &self.timeouts);
            if let Some(after) = next.requeue_after {
                wait = wait.min(after);
            }
            if next.action == Action::Nothing {
                continue;
            }
            if !leader.is_leader() || (!confirmed && !leader.confirm().await) {
                return Err(Stop::NotLeader);
            }
            confirmed = true;
            let result = match &next.action {
                Action::Delete => self.delete_session(&session).await,
                action => self.write_action(&session, action, now).await,
            };
            match result {
                Ok(()) => {}
                Err(Stop::Conflict) => conflict = true,
                Err(other) => return Err(other),
            }
        }
        Ok(if conflict { CONFLICT_RETRY } else { wait })
    }

    async fn write_action(
        &self,
        session: &NodeShellSession,
        action: &Action,
        now: Timestamp,
    ) -> Result<(), Stop> {
        let Some(status) = action_status(session, action, now) else {
            return Ok(());
        };
        let written = self.apply_status(session, &status).await?;
        let name = written.name_any();
        match action {
            Action::StartClosing { reason, message } => {
                info!(session = %name, %reason, "closing");
                self.metrics.decision("closing", reason.as_str());
                self.event(
                    &written,
                    EventType::Normal,
                    reason.as_str(),
                    "Expire",
                    message.clone(),
                );
            }
            Action::Close { reason, message } => {
                info!(session = %name, %reason, "closed");
                self.metrics.decision("closed", reason);
                self.event(
                    &written,
                    EventType::Normal,
                    reason,
                    "Close",
                    message.clone(),
                );
            }
            Action::Nothing | Action::Delete => {}
        }
        Ok(())
    }

    async fn delete_session(&self, session: &NodeShellSession) -> Result<(), Stop> {
        let name = session.name_any();
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: session.metadata.uid.clone(),
                resource_version: session.metadata.resource_version.clone(),
            }),
            ..DeleteParams::background()
        };
        match self.sessions_api.delete(&name, &params).await {
            Ok(_) => {}
            // Already gone: retention is done either way.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        info!(session = %name, "deleted after retention");
        self.metrics.decision("deleted", "");
        // ownerReferences let the garbage collector remove transcript Secrets; delete the
        // session's ones too, for clusters (or tests) without one. One `deletecollection`
        // selected by type and label: the controller may neither list nor get Secrets, and
        // the chart's admission policy refuses it the deletion of any other Secret.
        let params = ListParams::default()
            .labels(&transcript_selector(&name))
            .fields(&transcript_type_field());
        if let Err(e) = self
            .secrets_api
            .delete_collection(&DeleteParams::background(), &params)
            .await
        {
            debug!(session = %name, error = %e, "deleting transcript secrets failed");
        }
        Ok(())
    }

    /// Keeps each policy's Ready condition and live session count.
    async fn policy_statuses(
        &self,
        leader: &dyn Leadership,
        fresh: Option<&HashMap<String, i64>>,
    ) -> Result<(), Stop> {
        let live = match fresh {
            Some(counts) => counts.clone(),
            None => {
                let mut counts: HashMap<String, i64> = HashMap::new();
                for s in self.sessions.state().iter().filter(|s| holds_cap_slot(s)) {
                    *counts.entry(s.spec.policy_name.clone()).or_default() += 1;
                }
                counts
            }
        };
        let now = Timestamp::now();
        let mut confirmed = false;
        for policy in self.policies.state() {
            let name = policy.name_any();
            let count = live.get(&name).copied().unwrap_or_default();
            self.metrics
                .live_sessions
                .get_or_create(&PolicyLabels {
                    policy: name.clone(),
                })
                .set(count);
            let desired = desired_policy_status(&policy, count, now);
            if !policy_status_changed(&policy, &desired) {
                continue;
            }
            if !leader.is_leader() || (!confirmed && !leader.confirm().await) {
                return Err(Stop::NotLeader);
            }
            confirmed = true;
            let patch = serde_json::json!({
                "apiVersion": NodeShellPolicy::api_version(&()),
                "kind": NodeShellPolicy::kind(&()),
                "metadata": { "name": name, "resourceVersion": policy.metadata.resource_version },
                "status": desired,
            });
            match self
                .policies_api
                .patch_status(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&patch),
                )
                .await
            {
                Ok(_) => debug!(policy = %name, "policy status written"),
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Server-side applies the controller's part of a session's status, on the condition
    /// that the session is still the version the decision was made from.
    async fn apply_status(
        &self,
        session: &NodeShellSession,
        status: &NodeShellSessionStatus,
    ) -> Result<NodeShellSession, Stop> {
        let name = session.name_any();
        let patch = serde_json::json!({
            "apiVersion": NodeShellSession::api_version(&()),
            "kind": NodeShellSession::kind(&()),
            "metadata": { "name": name, "resourceVersion": session.metadata.resource_version },
            "status": status,
        });
        Ok(self
            .sessions_api
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?)
    }

    fn event(
        &self,
        session: &NodeShellSession,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note.chars().take(1000).collect()),
            action: action.to_string(),
            secondary: None,
        };
        if self
            .events
            .try_send((session.object_ref(&()), event))
            .is_err()
        {
            debug!("event queue full; event dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    //! One admission pass against a scripted apiserver: the engine LISTs, then writes each
    //! decision (with the resourceVersion it decided from) before the next, and stops at a
    //! conflict instead of deciding from a stale view.

    use super::*;

    #[test]
    fn failed_passes_back_off_exponentially_up_to_a_minute() {
        let pauses: Vec<u64> = error_backoff().take(8).map(|d| d.as_secs()).collect();
        assert_eq!(pauses, [2, 4, 8, 16, 32, 60, 60, 60]);
    }
    use crate::api::SessionPhase;
    use crate::controller::leader::AlwaysLeader;
    use crate::testing::{policy, session};
    use bytes::Bytes;
    use http::{Request, Response, StatusCode};
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event as WatchEvent;
    use std::sync::Mutex;

    /// A tiny in-memory apiserver for sessions and policies.
    #[derive(Default)]
    struct FakeApi {
        sessions: Vec<NodeShellSession>,
        policies: Vec<NodeShellPolicy>,
        nodes: Vec<Node>,
        /// (method, path) of every request.
        calls: Vec<(String, String)>,
        /// Patches to answer with 409 Conflict, by session name.
        conflict_on: Vec<String>,
        next_rv: u64,
    }

    fn list(kind: &str, items: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "nodeshell.periscope.io/v1alpha1",
            "kind": format!("{kind}List"),
            "metadata": { "resourceVersion": "100" },
            "items": items,
        })
    }

    fn status_error(code: u16, reason: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Status", "status": "Failure",
            "message": reason, "reason": reason, "code": code,
        })
    }

    impl FakeApi {
        fn handle(
            &mut self,
            method: &str,
            path: &str,
            body: &[u8],
        ) -> (StatusCode, serde_json::Value) {
            self.calls.push((method.to_string(), path.to_string()));
            if let Some(name) = path.strip_prefix("/api/v1/nodes/") {
                return match self.nodes.iter().find(|n| n.name_any() == name) {
                    Some(node) => (StatusCode::OK, serde_json::json!(node)),
                    None => (StatusCode::NOT_FOUND, status_error(404, "NotFound")),
                };
            }
            let base = "/apis/nodeshell.periscope.io/v1alpha1/";
            let rest = path.strip_prefix(base).unwrap_or(path);
            match (method, rest.split('/').collect::<Vec<_>>().as_slice()) {
                ("GET", ["nodeshellpolicies"]) => (
                    StatusCode::OK,
                    list("NodeShellPolicy", serde_json::json!(self.policies)),
                ),
                ("GET", ["nodeshellsessions"]) => (
                    StatusCode::OK,
                    list("NodeShellSession", serde_json::json!(self.sessions)),
                ),
                ("PATCH", ["nodeshellsessions", name, "status"]) => {
                    let patch: serde_json::Value =
                        serde_json::from_slice(body).expect("patch body");
                    if self.conflict_on.iter().any(|n| n == name) {
                        return (StatusCode::CONFLICT, status_error(409, "Conflict"));
                    }
                    self.next_rv += 1;
                    let rv = self.next_rv.to_string();
                    let Some(stored) = self.sessions.iter_mut().find(|s| s.name_any() == *name)
                    else {
                        return (StatusCode::NOT_FOUND, status_error(404, "NotFound"));
                    };
                    assert_eq!(
                        patch["metadata"]["resourceVersion"].as_str(),
                        stored.metadata.resource_version.as_deref(),
                        "every decision carries the resourceVersion it was made from"
                    );
                    stored.status =
                        Some(serde_json::from_value(patch["status"].clone()).expect("status"));
                    stored.metadata.resource_version = Some(rv);
                    (StatusCode::OK, serde_json::json!(stored))
                }
                _ => (StatusCode::NOT_FOUND, status_error(404, "NotFound")),
            }
        }
    }

    fn client(api: Arc<Mutex<FakeApi>>) -> Client {
        let service = tower::service_fn(move |req: Request<kube::client::Body>| {
            let api = api.clone();
            async move {
                let method = req.method().to_string();
                let path = req.uri().path().to_string();
                let body = req.into_body().collect_bytes().await.unwrap_or_default();
                let (status, json) = api.lock().expect("lock").handle(&method, &path, &body);
                let bytes = Bytes::from(serde_json::to_vec(&json).expect("json"));
                Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(bytes))
            }
        });
        Client::new(service, "default")
    }

    fn store<K>(items: &[K]) -> Store<K>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        let (reader, mut writer) = reflector::store::<K>();
        writer.apply_watcher_event(&WatchEvent::Init);
        for item in items {
            writer.apply_watcher_event(&WatchEvent::InitApply(item.clone()));
        }
        writer.apply_watcher_event(&WatchEvent::InitDone);
        reader
    }

    fn fixture(
        conflict_on: &[&str],
    ) -> (
        Arc<Mutex<FakeApi>>,
        Engine,
        mpsc::Receiver<(ObjectReference, Event)>,
    ) {
        let policies = vec![policy("p", 2, 10)];
        let sessions: Vec<NodeShellSession> = (1..=3)
            .map(|i| {
                let mut s = session(&format!("s{i}"), "alice", "p", i, None);
                s.metadata.resource_version = Some(format!("{i}"));
                s
            })
            .collect();
        let api = Arc::new(Mutex::new(FakeApi {
            sessions: sessions.clone(),
            policies: policies.clone(),
            nodes: vec![
                serde_json::from_value(serde_json::json!({
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": { "name": "node-1" },
                    "spec": { "providerID": crate::testing::NODE_PROVIDER_ID },
                }))
                .expect("a node"),
            ],
            conflict_on: conflict_on.iter().map(|s| s.to_string()).collect(),
            next_rv: 10,
            ..FakeApi::default()
        }));
        let (tx, rx) = mpsc::channel(16);
        let engine = Engine::new(
            client(api.clone()),
            "nodeshell-system",
            store(&sessions),
            store(&policies),
            store(&[]),
            Timeouts::default(),
            "test-replica",
            Arc::new(Metrics::new()),
            tx,
        );
        (api, engine, rx)
    }

    fn phases(api: &Mutex<FakeApi>) -> Vec<(String, SessionPhase, Option<String>)> {
        api.lock()
            .expect("lock")
            .sessions
            .iter()
            .map(|s| {
                (
                    s.name_any(),
                    s.phase(),
                    s.status.as_ref().and_then(|st| st.reason.clone()),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn an_admission_pass_lists_then_writes_each_decision_in_order() {
        let (api, mut engine, mut events) = fixture(&[]);
        let fresh = engine
            .admit(&AlwaysLeader)
            .await
            .ok()
            .flatten()
            .expect("a fresh list");
        assert_eq!(
            phases(&api),
            [
                ("s1".into(), SessionPhase::Admitted, None),
                ("s2".into(), SessionPhase::Admitted, None),
                (
                    "s3".into(),
                    SessionPhase::Rejected,
                    Some("CapPerUser".into())
                ),
            ]
        );
        assert_eq!(fresh.get("p"), Some(&2), "live count after the decisions");
        let calls: Vec<String> = api
            .lock()
            .expect("lock")
            .calls
            .iter()
            .map(|(m, p)| format!("{m} {p}"))
            .collect();
        let base = "/apis/nodeshell.periscope.io/v1alpha1";
        assert_eq!(
            calls,
            [
                format!("GET {base}/nodeshellsessions"),
                format!("GET {base}/nodeshellpolicies"),
                // The sessions' node, read once for the whole pass.
                "GET /api/v1/nodes/node-1".to_string(),
                format!("PATCH {base}/nodeshellsessions/s1/status"),
                format!("PATCH {base}/nodeshellsessions/s2/status"),
                format!("PATCH {base}/nodeshellsessions/s3/status"),
            ]
        );
        let mut reasons = Vec::new();
        while let Ok((_, event)) = events.try_recv() {
            reasons.push(event.reason);
        }
        assert_eq!(reasons, ["Admitted", "Admitted", "CapPerUser"]);
    }

    #[tokio::test]
    async fn a_conflict_ends_the_pass_before_any_later_decision() {
        let (api, mut engine, _events) = fixture(&["s2"]);
        assert!(matches!(
            engine.admit(&AlwaysLeader).await,
            Err(Stop::Conflict)
        ));
        assert_eq!(
            phases(&api),
            [
                ("s1".into(), SessionPhase::Admitted, None),
                ("s2".into(), SessionPhase::Pending, None),
                ("s3".into(), SessionPhase::Pending, None),
            ]
        );
    }
}
