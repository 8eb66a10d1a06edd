//! One pass of the controller: the admission pass, the expiry and retention pass and the
//! policy statuses, with the writes and Events they make. The decisions are the pure
//! functions of the sibling modules; this only reads the caches, calls them and writes.
//!
//! A pass admits first and looks only at what changed (`changes.rs`): expiry runs for the
//! sessions the watch reported and for those whose deadline has come, the live counts are
//! kept as sessions change, and a policy's status is written at most every
//! [`POLICY_STATUS_EVERY`]. A click that arrives mid-pass is admitted before the next
//! expiry or policy write.
//!
//! Race-freedom of admission: the pass decides from the watch cache, which may lag. What
//! keeps the caps is each policy's ledger (`ledger.rs`): every admission is recorded there
//! with a compare-and-swap before its status is written, and stays there until a cache has
//! seen the session hold its slot; the ledger's floor says how far a cache must have got
//! before it counts, and a cache behind it is waited for briefly, then replaced by a quorum
//! LIST. Two controllers deciding at once (a stale leader, a failover) serialise on that one
//! write; the loser decides again from the winner's ledger. Status writes carry the
//! resourceVersion the decision was made from.

use super::admission::{AdmissionDecision, NodeView, admission_order, pending_in_order};
use super::changes::{Changes, Dirty};
use super::expiry::{Action, Timeouts, next_action};
use super::leader::Leadership;
use super::ledger::{Ledger, caught_up, still_holds};
use super::ledgers::{Ledgers, ReadLedger};
use super::metrics::{Metrics, PolicyLabels};
use super::policy_status::{desired_policy_status, policy_status_changed};
use super::status::{action_status, admission_status};
use super::{Error, FIELD_MANAGER};
use crate::api::{
    LABEL_SESSION, NodeShellPolicy, NodeShellSession, NodeShellSessionStatus, SessionReason,
    holds_cap_slot,
};
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use futures::{StreamExt, stream};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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
/// Status writes of one admission pass in flight at once.
const STATUS_WRITES: usize = 16;
/// Compare-and-swap attempts on one policy's ledger within a pass.
const LEDGER_ATTEMPTS: usize = 5;
/// How long admission waits for the session cache to reach a ledger's floor before it
/// counts from a quorum LIST instead.
const CACHE_WAIT: Duration = Duration::from_millis(500);
/// A policy's status is written at most this often (its live count changes with every
/// admission and close; the count shown may lag by this much).
pub const POLICY_STATUS_EVERY: Duration = Duration::from_secs(2);
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
    ledgers: Ledgers,
    sessions: Store<NodeShellSession>,
    policies: Store<NodeShellPolicy>,
    leases: Store<Lease>,
    nodes: Store<Node>,
    /// Where the gateways' Leases live (the controller's `--namespace`), which `leases` holds.
    lease_namespace: String,
    timeouts: Timeouts,
    identity: String,
    metrics: Arc<Metrics>,
    events: EventSender,
    decisions: u64,
    /// Pauses after failed passes; a pass that completes starts it again.
    failures: ExponentialBackoff,
    /// What the watches report as changed; checked between writes for new clicks.
    changes: Arc<Changes>,
    /// When each session's next deadline falls (the earliest of them wakes the loop).
    deadlines: HashMap<String, Instant>,
    /// The sessions holding a cap slot, with their policy: the live counts, kept as
    /// sessions change instead of counted from every cached session on every pass.
    holders: HashMap<String, String>,
    /// Live sessions per policy (from `holders`).
    counts: HashMap<String, i64>,
    /// Policies whose status may need a write (their count changed).
    status_due: BTreeSet<String>,
    /// When each policy's status was last written (see [`POLICY_STATUS_EVERY`]).
    status_written: HashMap<String, Instant>,
    /// A pass stopped early: the next one walks everything.
    need_full: bool,
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
    /// gateways' Leases in `lease_namespace`), keeping the admission ledgers in `ledgers`
    /// and deleting ended sessions' transcript Secrets in `transcript_namespace`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        transcript_namespace: &str,
        lease_namespace: &str,
        ledgers: Ledgers,
        sessions: Store<NodeShellSession>,
        policies: Store<NodeShellPolicy>,
        leases: Store<Lease>,
        nodes: Store<Node>,
        timeouts: Timeouts,
        identity: &str,
        metrics: Arc<Metrics>,
        events: EventSender,
        changes: Arc<Changes>,
    ) -> Self {
        Self {
            sessions_api: Api::all(client.clone()),
            policies_api: Api::all(client.clone()),
            nodes_api: Api::all(client.clone()),
            secrets_api: Api::namespaced(client, transcript_namespace),
            ledgers,
            sessions,
            policies,
            leases,
            nodes,
            lease_namespace: lease_namespace.to_string(),
            timeouts,
            identity: identity.to_string(),
            metrics,
            events,
            decisions: 0,
            failures: error_backoff(),
            changes,
            deadlines: HashMap::new(),
            holders: HashMap::new(),
            counts: HashMap::new(),
            status_due: BTreeSet::new(),
            status_written: HashMap::new(),
            need_full: true,
        }
    }

    /// One pass: admission first, then expiry and retention of the sessions in `dirty` and
    /// of those whose deadline has come (of every session when `dirty.full`), then the
    /// statuses of the policies whose live count changed. Returns how long to wait before
    /// the next pass if nothing changes.
    pub async fn pass(&mut self, leader: &dyn Leadership, dirty: Dirty) -> Duration {
        let full = dirty.full || std::mem::take(&mut self.need_full);
        match self.pass_over(leader, full, dirty.sessions).await {
            Ok(wait) => {
                self.failures = error_backoff();
                wait
            }
            Err(stop) => {
                // What this pass did not get to is not remembered: look at everything.
                self.need_full = true;
                self.stopped(stop)
            }
        }
    }

    async fn pass_over(
        &mut self,
        leader: &dyn Leadership,
        full: bool,
        sessions: HashSet<String>,
    ) -> Result<Duration, Stop> {
        self.changes.take_admit();
        self.admit(leader).await?;
        let wait = self
            .expire(leader, if full { None } else { Some(sessions) })
            .await?;
        let status_wait = self.policy_statuses(leader, full).await?;
        if full {
            self.prune_ledgers().await?;
        }
        Ok(wait.min(status_wait))
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

    /// Admits or rejects every Pending session, from the watch cache: per policy, decides
    /// all its waiting sessions against the policy's ledger, records the admissions there
    /// with one compare-and-swap, then writes the statuses in parallel. Admitted sessions
    /// count towards their policy's live count at once.
    async fn admit(&mut self, leader: &dyn Leadership) -> Result<(), Stop> {
        // The version first: the snapshot taken after it holds at least everything up to it.
        let delivered = self.changes.delivered();
        let cached = self.sessions.state();
        let pending = pending_in_order(cached.iter().map(AsRef::as_ref));
        self.metrics
            .pending_sessions
            .set(i64::try_from(pending.len()).unwrap_or(i64::MAX));
        self.metrics
            .session_objects
            .set(i64::try_from(cached.len()).unwrap_or(i64::MAX));
        if pending.is_empty() {
            return Ok(());
        }
        if !leader.is_leader() {
            return Err(Stop::NotLeader);
        }
        let mut by_policy: BTreeMap<&str, Vec<&NodeShellSession>> = BTreeMap::new();
        for session in &pending {
            by_policy
                .entry(session.spec.policy_name.as_str())
                .or_default()
                .push(session);
        }
        let step = Instant::now();
        let nodes = self.read_nodes(&pending).await?;
        self.metrics.step("nodes", step);
        let step = Instant::now();
        let mut decided = Vec::with_capacity(pending.len());
        for (policy_name, group) in &by_policy {
            let policy = self.policy(policy_name).await?;
            let decisions = self
                .decide_policy(
                    policy_name,
                    policy.as_deref(),
                    group,
                    (delivered.as_deref(), &cached),
                    &nodes,
                )
                .await?;
            decided.extend(decisions);
        }
        self.metrics.step("ledger", step);
        let step = Instant::now();
        decided.sort_by(|a, b| admission_order(a.0, b.0));
        let now = Timestamp::now();
        let writes: Vec<_> = decided
            .into_iter()
            .map(|(session, decision)| {
                self.decisions += 1;
                let decided_by = format!(
                    "{FIELD_MANAGER} replica {} (decision {})",
                    self.identity, self.decisions
                );
                let status = admission_status(&decision, &decided_by, now);
                (session, decision, status)
            })
            .collect();
        let this = &*self;
        let results: Vec<_> = stream::iter(writes)
            .map(|(session, decision, status)| async move {
                let written = this.apply_status(session, &status).await;
                (written, decision)
            })
            .buffer_unordered(STATUS_WRITES)
            .collect()
            .await;
        self.metrics.step("status", step);
        let mut stop = None;
        for (written, decision) in results {
            match written {
                Ok(session) => {
                    self.note_holder(&session);
                    self.record_admission(&session, &decision, now);
                }
                // The session changed since the cache saw it: a later pass decides it again
                // (an admission stays in the ledger, so it is not counted twice).
                Err(Stop::Conflict) => {
                    stop.get_or_insert(Stop::Conflict);
                }
                Err(other) => stop = Some(other),
            }
        }
        match stop {
            Some(stop) => Err(stop),
            None => Ok(()),
        }
    }

    /// Keeps `session`'s place in the live counts up to date.
    fn note_holder(&mut self, session: &NodeShellSession) {
        let name = session.name_any();
        let policy = &session.spec.policy_name;
        let holds = holds_cap_slot(session);
        if holds && self.holders.get(&name) == Some(policy) {
            return;
        }
        self.forget_holder(&name);
        if holds {
            self.holders.insert(name, policy.clone());
            *self.counts.entry(policy.clone()).or_default() += 1;
            self.status_due.insert(policy.clone());
        }
    }

    /// Takes a session that no longer exists (or no longer holds a slot) out of the counts.
    fn forget_holder(&mut self, name: &str) {
        if let Some(policy) = self.holders.remove(name) {
            if let Some(count) = self.counts.get_mut(&policy) {
                *count -= 1;
            }
            self.status_due.insert(policy);
        }
    }

    /// The nodes of `pending`, from the node cache; a node the cache does not hold (it may
    /// be new, or the cache still syncing) is read from the apiserver before a session is
    /// refused for it, those reads concurrently.
    async fn read_nodes(
        &self,
        pending: &[&NodeShellSession],
    ) -> Result<HashMap<String, Option<Arc<Node>>>, Stop> {
        let names: BTreeSet<&str> = pending.iter().map(|s| s.spec.node_name.as_str()).collect();
        let mut nodes = HashMap::with_capacity(names.len());
        let mut missing = Vec::new();
        for name in names {
            match self.nodes.get(&ObjectRef::new(name)) {
                Some(node) => {
                    nodes.insert(name.to_string(), Some(node));
                }
                None => missing.push(name),
            }
        }
        let reads = missing.into_iter().map(|name| async move {
            let node = self.nodes_api.get_opt(name).await?;
            Ok::<_, kube::Error>((name.to_string(), node.map(Arc::new)))
        });
        nodes.extend(futures::future::try_join_all(reads).await?);
        Ok(nodes)
    }

    /// A policy from the cache; one the cache does not hold yet is read from the apiserver
    /// before a session is refused for naming it (it may have been created a moment before
    /// the click).
    async fn policy(&self, name: &str) -> Result<Option<Arc<NodeShellPolicy>>, Stop> {
        if let Some(policy) = self.policies.get(&ObjectRef::new(name)) {
            return Ok(Some(policy));
        }
        Ok(self.policies_api.get_opt(name).await?.map(Arc::new))
    }

    /// Decides one policy's waiting sessions (in admission order) against its ledger and the
    /// slot holders of a session view that has reached the ledger's floor (`cache`: the
    /// pass's snapshot and the version it had delivered), records the admissions there with a
    /// compare-and-swap that also drops the entries the view confirms, and decides again from
    /// a fresh ledger when another writer got there first.
    async fn decide_policy<'s>(
        &mut self,
        policy_name: &str,
        policy: Option<&NodeShellPolicy>,
        pending: &[&'s NodeShellSession],
        cache: (Option<&str>, &[Arc<NodeShellSession>]),
        nodes: &HashMap<String, Option<Arc<Node>>>,
    ) -> Result<Vec<(&'s NodeShellSession, AdmissionDecision)>, Stop> {
        for _ in 0..LEDGER_ATTEMPTS {
            let read = self.ledgers.read(policy_name).await?;
            let view = self.view_at(read.ledger.floor(), cache).await?;
            let mut ledger = self.reconciled(policy_name, &read, &view).await?;
            let decisions = ledger.decide(policy, pending, view.iter().map(AsRef::as_ref), |s| {
                node_view(nodes, s)
            });
            // A cap refusal is only right if the ledger it counted is current: the write
            // (a no-op when nothing changed) checks that too.
            let capped = decisions.iter().any(|(_, d)| {
                matches!(d, AdmissionDecision::Reject { reason, .. }
                    if matches!(reason, SessionReason::CapPerUser | SessionReason::CapTotal))
            });
            if ledger == read.ledger && !capped {
                return Ok(decisions);
            }
            let step = Instant::now();
            let written = self
                .ledgers
                .write(policy_name, policy, &read, &ledger)
                .await;
            self.metrics.step("ledger_write", step);
            match written {
                Ok(()) => return Ok(decisions),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    debug!(policy = %policy_name, "ledger changed under us; deciding again");
                    self.metrics.error("ledger_conflict");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Stop::Conflict)
    }

    /// The sessions to count from under a ledger whose floor is `floor`: the pass's snapshot
    /// when its watch had delivered the floor; else a fresh snapshot once the watch delivers
    /// it within [`CACHE_WAIT`]; else a quorum LIST. Never a cache older than the floor.
    async fn view_at<'c>(
        &self,
        floor: Option<&str>,
        (delivered, cached): (Option<&str>, &'c [Arc<NodeShellSession>]),
    ) -> Result<Cow<'c, [Arc<NodeShellSession>]>, Stop> {
        if caught_up(delivered, floor) {
            return Ok(Cow::Borrowed(cached));
        }
        let step = Instant::now();
        if self.changes.wait_for_version(floor, CACHE_WAIT).await {
            let delivered = self.changes.delivered();
            let fresh = self.sessions.state();
            if caught_up(delivered.as_deref(), floor) {
                self.metrics.step("cache_wait", step);
                return Ok(Cow::Owned(fresh));
            }
        }
        debug!(
            ?floor,
            "session cache behind the ledger's floor; counting from a LIST"
        );
        let listed = self.sessions_api.list(&ListParams::default()).await?;
        self.metrics.step("cache_list", step);
        Ok(Cow::Owned(listed.items.into_iter().map(Arc::new).collect()))
    }

    /// `read`'s ledger reconciled with `view` (caught up to its floor): entries the view shows
    /// holding their slot or ended dropped (the floor raised past them), and entries it does
    /// not show read from the apiserver and dropped when that session is gone, ended or
    /// replaced.
    async fn reconciled(
        &self,
        policy_name: &str,
        read: &ReadLedger,
        view: &[Arc<NodeShellSession>],
    ) -> Result<Ledger, Stop> {
        let mut ledger = read.ledger.clone();
        let unknown = ledger.reconcile(policy_name, view.iter().map(AsRef::as_ref));
        for name in unknown {
            let uid = ledger
                .slots()
                .find(|(n, _)| **n == name)
                .map(|(_, slot)| slot.uid.clone())
                .unwrap_or_default();
            let now = self.sessions_api.get_opt(&name).await?;
            if !still_holds(now.as_ref(), &uid) {
                ledger.remove(&name);
            }
        }
        Ok(ledger)
    }

    /// Drops from the ledgers this replica last wrote the entries its cache has confirmed
    /// since, so a ledger does not keep the last admissions until the next click. Only
    /// ledgers with entries, only from a cache that reached their floor; a conflict (another
    /// replica wrote) is left to the next admission.
    async fn prune_ledgers(&mut self) -> Result<(), Stop> {
        let delivered = self.changes.delivered();
        let cached = self.sessions.state();
        for policy_name in self.ledgers.with_entries() {
            let read = self.ledgers.read(&policy_name).await?;
            if !caught_up(delivered.as_deref(), read.ledger.floor()) {
                continue;
            }
            let ledger = self.reconciled(&policy_name, &read, &cached).await?;
            if ledger == read.ledger {
                continue;
            }
            let owner = self.policies.get(&ObjectRef::new(&policy_name));
            match self
                .ledgers
                .write(&policy_name, owner.as_deref(), &read, &ledger)
                .await
            {
                Ok(()) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    self.metrics.error("ledger_conflict");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
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

    /// Expiry and retention of the sessions named in `which` and of those whose deadline has
    /// come, or of every cached session (`None`). The resourceVersion precondition on every
    /// write turns a stale cache entry into a conflict instead of a wrong write. Sessions
    /// awaiting admission are decided between writes. Returns the time to the earliest
    /// deadline.
    async fn expire(
        &mut self,
        leader: &dyn Leadership,
        which: Option<HashSet<String>>,
    ) -> Result<Duration, Stop> {
        let policies: BTreeMap<String, Arc<NodeShellPolicy>> = self
            .policies
            .state()
            .into_iter()
            .map(|p| (p.name_any(), p))
            .collect();
        let now = Timestamp::now();
        let started = Instant::now();
        let targets = match which {
            None => {
                let all = self.sessions.state();
                let names: HashSet<String> = all.iter().map(|s| s.name_any()).collect();
                let gone: Vec<String> = self
                    .holders
                    .keys()
                    .filter(|n| !names.contains(*n))
                    .cloned()
                    .collect();
                for name in gone {
                    self.forget_holder(&name);
                }
                self.deadlines.clear();
                self.status_due.extend(policies.keys().cloned());
                all
            }
            Some(mut names) => {
                names.extend(
                    self.deadlines
                        .iter()
                        .filter(|(_, at)| **at <= started)
                        .map(|(name, _)| name.clone()),
                );
                let mut found = Vec::with_capacity(names.len());
                for name in names {
                    match self.sessions.get(&ObjectRef::new(&name)) {
                        Some(session) => found.push(session),
                        None => {
                            self.deadlines.remove(&name);
                            self.forget_holder(&name);
                        }
                    }
                }
                found
            }
        };
        // Confirmed from the apiserver once per pass, before the first write.
        let mut confirmed = false;
        for session in targets {
            let name = session.name_any();
            self.note_holder(&session);
            self.deadlines.remove(&name);
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
                        .get(&ObjectRef::new(&g.lease_name()).within(&self.lease_namespace))
                });
            let next = next_action(&session, policy, lease.as_deref(), now, &self.timeouts);
            if let Some(after) = next.requeue_after {
                self.deadlines.insert(name.clone(), started + after);
            }
            if next.action == Action::Nothing {
                continue;
            }
            // A click that came in meanwhile goes first.
            if self.changes.take_admit() {
                self.admit(leader).await?;
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
                // The write itself brings the session back through the watch.
                Ok(()) => {}
                Err(Stop::Conflict) => {
                    self.deadlines.insert(name, Instant::now() + CONFLICT_RETRY);
                }
                Err(other) => return Err(other),
            }
        }
        let now = Instant::now();
        Ok(self
            .deadlines
            .values()
            .min()
            .map_or(Duration::MAX, |at| at.saturating_duration_since(now)))
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

    /// Keeps the Ready condition and live session count of each policy whose count changed
    /// (of every policy when `all`), writing one policy's status at most every
    /// [`POLICY_STATUS_EVERY`]. Returns when a status held back is due.
    async fn policy_statuses(
        &mut self,
        leader: &dyn Leadership,
        all: bool,
    ) -> Result<Duration, Stop> {
        let policies: Vec<Arc<NodeShellPolicy>> = if all {
            self.policies.state()
        } else {
            self.status_due
                .iter()
                .filter_map(|name| self.policies.get(&ObjectRef::new(name)))
                .collect()
        };
        self.status_due.clear();
        let now = Timestamp::now();
        let started = Instant::now();
        let mut wait = Duration::MAX;
        let mut confirmed = false;
        for policy in policies {
            let name = policy.name_any();
            let count = self.counts.get(&name).copied().unwrap_or_default();
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
            if let Some(last) = self.status_written.get(&name) {
                let next = *last + POLICY_STATUS_EVERY;
                if next > started {
                    wait = wait.min(next - started);
                    self.status_due.insert(name);
                    continue;
                }
            }
            if self.changes.take_admit() {
                self.admit(leader).await?;
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
            self.status_written.insert(name.clone(), Instant::now());
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
                // The policy changed (its watch brings a full pass) or went.
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {
                    self.status_due.insert(name);
                    wait = wait.min(POLICY_STATUS_EVERY);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(wait)
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

/// A session's node as `nodes` holds it.
fn node_view<'n>(
    nodes: &'n HashMap<String, Option<Arc<Node>>>,
    session: &NodeShellSession,
) -> NodeView<'n> {
    match nodes.get(&session.spec.node_name) {
        Some(Some(node)) => NodeView::Found {
            labels: node.metadata.labels.as_ref().unwrap_or(&NO_LABELS),
            provider_id: node.spec.as_ref().and_then(|s| s.provider_id.as_deref()),
        },
        _ => NodeView::Missing,
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
    use k8s_openapi::api::core::v1::ConfigMap;
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
        /// The ledger ConfigMaps, by name.
        configmaps: BTreeMap<String, ConfigMap>,
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
            if let Some(rest) = path.strip_prefix("/api/v1/namespaces/nodeshell-system/configmaps")
            {
                return self.configmap(method, rest.trim_start_matches('/'), body);
            }
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
                ("PATCH", ["nodeshellpolicies", name, "status"]) => {
                    let patch: serde_json::Value =
                        serde_json::from_slice(body).expect("patch body");
                    let Some(stored) = self.policies.iter_mut().find(|p| p.name_any() == *name)
                    else {
                        return (StatusCode::NOT_FOUND, status_error(404, "NotFound"));
                    };
                    stored.status =
                        Some(serde_json::from_value(patch["status"].clone()).expect("status"));
                    (StatusCode::OK, serde_json::json!(stored))
                }
                ("GET", ["nodeshellsessions", name]) => {
                    match self.sessions.iter().find(|s| s.name_any() == *name) {
                        Some(s) => (StatusCode::OK, serde_json::json!(s)),
                        None => (StatusCode::NOT_FOUND, status_error(404, "NotFound")),
                    }
                }
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

    impl FakeApi {
        /// GET, POST (create) and PUT (replace, only from the current resourceVersion).
        fn configmap(
            &mut self,
            method: &str,
            name: &str,
            body: &[u8],
        ) -> (StatusCode, serde_json::Value) {
            self.next_rv += 1;
            let rv = self.next_rv.to_string();
            match method {
                "GET" => match self.configmaps.get(name) {
                    Some(cm) => (StatusCode::OK, serde_json::json!(cm)),
                    None => (StatusCode::NOT_FOUND, status_error(404, "NotFound")),
                },
                "POST" | "PUT" => {
                    let mut cm: ConfigMap = serde_json::from_slice(body).expect("configmap");
                    let name = cm.name_any();
                    let current = self.configmaps.get(&name);
                    let fits = match (method, current) {
                        ("POST", None) => true,
                        ("PUT", Some(current)) => {
                            current.metadata.resource_version == cm.metadata.resource_version
                        }
                        _ => false,
                    };
                    if !fits {
                        return (StatusCode::CONFLICT, status_error(409, "Conflict"));
                    }
                    cm.metadata.resource_version = Some(rv);
                    self.configmaps.insert(name, cm.clone());
                    (StatusCode::OK, serde_json::json!(cm))
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
        let engine = engine_over(&api, &sessions, &policies, tx);
        (api, engine, rx)
    }

    /// An apiserver holding `sessions` and `policies`, and an engine whose caches hold the
    /// same, with the receiver of its Events.
    fn api_and_engine(
        sessions: &[NodeShellSession],
        policies: &[NodeShellPolicy],
    ) -> (
        Arc<Mutex<FakeApi>>,
        Engine,
        mpsc::Receiver<(ObjectReference, Event)>,
    ) {
        let api = Arc::new(Mutex::new(FakeApi {
            sessions: sessions.to_vec(),
            policies: policies.to_vec(),
            next_rv: 10,
            ..FakeApi::default()
        }));
        let (tx, rx) = mpsc::channel(16);
        let engine = engine_over(&api, sessions, policies, tx);
        (api, engine, rx)
    }

    /// An engine whose caches hold `sessions` and `policies`, writing to `api`.
    fn engine_over(
        api: &Arc<Mutex<FakeApi>>,
        sessions: &[NodeShellSession],
        policies: &[NodeShellPolicy],
        tx: EventSender,
    ) -> Engine {
        // The watch delivered every session the cache holds.
        let changes = Arc::new(Changes::default());
        for s in sessions {
            if let Some(version) = &s.metadata.resource_version {
                changes.delivered_version(version);
            }
        }
        Engine::new(
            client(api.clone()),
            "nodeshell-system",
            "nodeshell-system",
            Ledgers::new(client(api.clone()), "nodeshell-system"),
            store(sessions),
            store(policies),
            store(&[]),
            store(&[]),
            Timeouts::default(),
            "test-replica",
            Arc::new(Metrics::new()),
            tx,
            changes,
        )
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

    fn calls(api: &Mutex<FakeApi>) -> Vec<String> {
        let mut calls: Vec<String> = api
            .lock()
            .expect("lock")
            .calls
            .drain(..)
            .map(|(m, p)| format!("{m} {p}"))
            .collect();
        // Status writes go out in parallel: their order is not part of the contract.
        let first_patch = calls
            .iter()
            .position(|c| c.starts_with("PATCH"))
            .unwrap_or(calls.len());
        calls[first_patch..].sort();
        calls
    }

    fn ledger_names(api: &Mutex<FakeApi>) -> Vec<String> {
        api.lock()
            .expect("lock")
            .configmaps
            .get("nodeshell-admission-p")
            .and_then(|cm| cm.data.clone())
            .unwrap_or_default()
            .into_keys()
            .collect()
    }

    fn ledger_floor(api: &Mutex<FakeApi>) -> Option<String> {
        api.lock()
            .expect("lock")
            .configmaps
            .get("nodeshell-admission-p")
            .and_then(|cm| cm.metadata.annotations.clone())
            .and_then(|a| a.get(super::super::ledger::FLOOR_ANNOTATION).cloned())
    }

    const BASE: &str = "/apis/nodeshell.periscope.io/v1alpha1";
    const LEDGER: &str = "/api/v1/namespaces/nodeshell-system/configmaps";

    #[tokio::test]
    async fn an_admission_pass_decides_from_the_cache_records_the_ledger_then_writes_statuses() {
        let (api, mut engine, mut events) = fixture(&[]);
        assert!(engine.admit(&AlwaysLeader).await.is_ok(), "decisions");
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
        assert_eq!(
            engine.counts.get("p"),
            Some(&2),
            "live count after the decisions"
        );
        assert_eq!(ledger_names(&api), ["s1", "s2"]);
        assert_eq!(
            calls(&api),
            [
                // No LIST of sessions or policies and no Lease read: the caches decide.
                // The sessions' node, read once for the whole pass.
                "GET /api/v1/nodes/node-1".to_string(),
                format!("GET {LEDGER}/nodeshell-admission-p"),
                // The admissions recorded with one write before any status.
                format!("POST {LEDGER}"),
                format!("PATCH {BASE}/nodeshellsessions/s1/status"),
                format!("PATCH {BASE}/nodeshellsessions/s2/status"),
                format!("PATCH {BASE}/nodeshellsessions/s3/status"),
            ]
        );
        let mut reasons = Vec::new();
        while let Ok((_, event)) = events.try_recv() {
            reasons.push(event.reason);
        }
        reasons.sort();
        assert_eq!(reasons, ["Admitted", "Admitted", "CapPerUser"]);
    }

    #[tokio::test]
    async fn a_failed_status_write_is_retried_from_the_ledger_without_counting_twice() {
        let (api, mut engine, _events) = fixture(&["s2"]);
        assert!(matches!(
            engine.admit(&AlwaysLeader).await,
            Err(Stop::Conflict)
        ));
        // s2's admission is in the ledger though its status write failed, so s3 (alice's
        // third) is refused: the ledger, not the written statuses, holds the count.
        assert_eq!(
            phases(&api),
            [
                ("s1".into(), SessionPhase::Admitted, None),
                ("s2".into(), SessionPhase::Pending, None),
                (
                    "s3".into(),
                    SessionPhase::Rejected,
                    Some("CapPerUser".into())
                ),
            ]
        );
        assert_eq!(ledger_names(&api), ["s1", "s2"]);

        // Another replica (its own cache, no ledger version seen yet) takes over.
        let sessions = {
            let mut api = api.lock().expect("lock");
            api.conflict_on.clear();
            api.calls.clear();
            api.sessions.clone()
        };
        let (tx, _rx) = mpsc::channel(16);
        let mut next = engine_over(&api, &sessions, &[policy("p", 2, 10)], tx);
        assert!(next.admit(&AlwaysLeader).await.is_ok(), "decisions");
        assert_eq!(phases(&api)[1], ("s2".into(), SessionPhase::Admitted, None));
        // Its cache shows s1 Admitted: s1 leaves the ledger (the cache counts it now) and
        // the floor rises to the version it was seen at; s2 stays until a cache shows it.
        assert_eq!(ledger_names(&api), ["s2"]);
        let s1_version = sessions[0].metadata.resource_version.clone();
        assert_eq!(ledger_floor(&api), s1_version);
        assert_eq!(
            calls(&api),
            [
                "GET /api/v1/nodes/node-1".to_string(),
                format!("GET {LEDGER}/nodeshell-admission-p"),
                // Nothing new to record (s2 already holds its slot), only s1 confirmed.
                format!("PUT {LEDGER}/nodeshell-admission-p"),
                format!("PATCH {BASE}/nodeshellsessions/s2/status"),
            ]
        );
    }

    #[tokio::test]
    async fn a_ledger_written_by_another_replica_is_read_again_and_counted() {
        let (api, _, _events) = fixture(&[]);
        // This replica wrote the ledger before (admitting s1); then another one recorded a
        // session of alice that this replica's cache has not seen.
        {
            let mut a = api.lock().expect("lock");
            a.sessions.truncate(1);
        }
        let sessions = api.lock().expect("lock").sessions.clone();
        let (tx, _rx) = mpsc::channel(16);
        let mut engine = engine_over(&api, &sessions, &[policy("p", 2, 10)], tx);
        assert!(engine.admit(&AlwaysLeader).await.is_ok(), "s1");
        {
            let mut a = api.lock().expect("lock");
            let cm = a
                .configmaps
                .get_mut("nodeshell-admission-p")
                .expect("ledger");
            let data = cm.data.get_or_insert_default();
            data.insert("other-1".into(), "uid-o1 alice".into());
            cm.metadata.resource_version = Some("999".into());
            let mut s = session("s4", "alice", "p", 4, None);
            s.metadata.resource_version = Some("4".into());
            a.sessions.push(s);
            a.calls.clear();
        }
        let sessions = api.lock().expect("lock").sessions.clone();
        // other-1 exists (the other replica admitted it) but this cache has not seen it.
        let mut other = session("other-1", "alice", "p", 3, Some(SessionPhase::Admitted));
        other.metadata.uid = Some("uid-o1".into());
        api.lock().expect("lock").sessions.push(other);
        // The same engine (it remembers the ledger version it wrote), a newer cache.
        engine.sessions = store(&sessions);
        assert!(engine.admit(&AlwaysLeader).await.is_ok(), "s4");
        assert_eq!(
            phases(&api)[1],
            (
                "s4".into(),
                SessionPhase::Rejected,
                Some("CapPerUser".into())
            ),
            "s1 and other-1 are alice's two slots"
        );
        let calls = calls(&api);
        assert_eq!(
            calls[1..],
            [
                // The write from the remembered version fails, the ledger is read again,
                // other-1 (not in the cache) is looked up, and the refusal is checked
                // against the current version.
                format!("PUT {LEDGER}/nodeshell-admission-p"),
                format!("GET {LEDGER}/nodeshell-admission-p"),
                format!("GET {BASE}/nodeshellsessions/other-1"),
                format!("PUT {LEDGER}/nodeshell-admission-p"),
                format!("PATCH {BASE}/nodeshellsessions/s4/status"),
            ]
        );
    }

    #[tokio::test]
    async fn a_cache_behind_the_ledger_floor_is_not_counted_from_but_a_quorum_list_is() {
        let (api, mut engine, _events) = fixture(&[]);
        {
            // Another controller admitted alice's x1 (rv 40, confirmed and pruned from the
            // ledger, floor 40); this cache has delivered only up to rv 3 and lacks x1.
            let mut a = api.lock().expect("lock");
            let mut x1 = session("x1", "alice", "p", 0, Some(SessionPhase::Active));
            x1.metadata.uid = Some("x1".into());
            x1.metadata.resource_version = Some("40".into());
            a.sessions.push(x1);
            let mut cm = ConfigMap::default();
            cm.metadata.name = Some("nodeshell-admission-p".into());
            cm.metadata.resource_version = Some("41".into());
            cm.metadata.annotations = Some(BTreeMap::from([(
                super::super::ledger::FLOOR_ANNOTATION.to_string(),
                "40".to_string(),
            )]));
            a.configmaps.insert("nodeshell-admission-p".into(), cm);
        }
        assert!(engine.admit(&AlwaysLeader).await.is_ok(), "decisions");
        // x1 and s1 are alice's two: s2 and s3 are refused. From the stale cache alone s2
        // would have been admitted too.
        let got: Vec<_> = phases(&api).into_iter().take(3).collect();
        assert_eq!(
            got,
            [
                ("s1".into(), SessionPhase::Admitted, None),
                (
                    "s2".into(),
                    SessionPhase::Rejected,
                    Some("CapPerUser".into())
                ),
                (
                    "s3".into(),
                    SessionPhase::Rejected,
                    Some("CapPerUser".into())
                ),
            ]
        );
        assert_eq!(
            calls(&api),
            [
                "GET /api/v1/nodes/node-1".to_string(),
                format!("GET {LEDGER}/nodeshell-admission-p"),
                // The cache did not reach rv 40 within the wait: one quorum LIST.
                format!("GET {BASE}/nodeshellsessions"),
                format!("PUT {LEDGER}/nodeshell-admission-p"),
                format!("PATCH {BASE}/nodeshellsessions/s1/status"),
                format!("PATCH {BASE}/nodeshellsessions/s2/status"),
                format!("PATCH {BASE}/nodeshellsessions/s3/status"),
            ]
        );
    }

    #[tokio::test]
    async fn a_pass_drops_the_admissions_its_cache_has_confirmed() {
        let (api, mut engine, _events) = fixture(&[]);
        assert!(engine.admit(&AlwaysLeader).await.is_ok(), "decisions");
        assert_eq!(ledger_names(&api), ["s1", "s2"]);
        // The watch delivers the written statuses.
        let sessions = api.lock().expect("lock").sessions.clone();
        engine.sessions = store(&sessions);
        for s in &sessions {
            let version = s.metadata.resource_version.as_deref().expect("a version");
            engine.changes.delivered_version(version);
        }
        api.lock().expect("lock").calls.clear();
        assert!(engine.prune_ledgers().await.is_ok());
        assert!(ledger_names(&api).is_empty(), "both confirmed");
        // Raised to the later of the two as seen (s3 was refused: never in the ledger).
        assert_eq!(ledger_floor(&api), sessions[1].metadata.resource_version);
        assert_eq!(calls(&api), [format!("PUT {LEDGER}/nodeshell-admission-p")]);
        // Nothing left to drop: no further write.
        assert!(engine.prune_ledgers().await.is_ok());
        assert!(calls(&api).is_empty());
    }

    fn node(name: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": { "name": name },
            "spec": { "providerID": crate::testing::NODE_PROVIDER_ID },
        }))
        .expect("a node")
    }

    #[tokio::test]
    async fn admission_reads_nodes_from_the_node_cache_and_a_node_it_lacks_from_the_apiserver() {
        let (api, mut engine, _events) = fixture(&[]);
        engine.nodes = store(&[node("node-1")]);
        let mut elsewhere = session("s4", "bob", "p", 4, None);
        elsewhere.spec.node_name = "node-2".into();
        elsewhere.metadata.resource_version = Some("4".into());
        let mut cached = api.lock().expect("lock").sessions.clone();
        cached.push(elsewhere.clone());
        {
            let mut a = api.lock().expect("lock");
            a.sessions.push(elsewhere);
            // node-2 is new: the apiserver has it, the cache not yet.
            a.nodes.push(node("node-2"));
        }
        engine.sessions = store(&cached);
        assert!(engine.admit(&AlwaysLeader).await.is_ok(), "decisions");
        let calls = calls(&api);
        assert_eq!(
            calls[..2],
            [
                // node-1 comes from the cache; only node-2 is read.
                "GET /api/v1/nodes/node-2".to_string(),
                format!("GET {LEDGER}/nodeshell-admission-p"),
            ]
        );
        assert!(
            !calls.iter().any(|c| c.ends_with("/nodes/node-1")),
            "{calls:?}"
        );
        assert_eq!(
            phases(&api)[3],
            ("s4".into(), SessionPhase::Admitted, None),
            "the node read from the apiserver counts as found"
        );
    }

    #[tokio::test]
    async fn a_pass_looks_only_at_the_sessions_that_changed() {
        // Two Closed sessions past their retention (no endedAt, created in 1970).
        let sessions: Vec<NodeShellSession> = ["old-1", "old-2"]
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mut s = session(name, "alice", "p", 1, Some(SessionPhase::Closed));
                s.metadata.resource_version = Some(format!("{i}"));
                s
            })
            .collect();
        let (api, mut engine, _rx) = api_and_engine(&sessions, &[policy("p", 2, 10)]);
        engine.need_full = false;
        let only = |name: &str| Dirty {
            full: false,
            sessions: HashSet::from([name.to_string()]),
        };
        let deleted = |api: &Mutex<FakeApi>| -> Vec<String> {
            calls(api)
                .into_iter()
                .filter(|c| c.starts_with("DELETE") && c.contains("nodeshellsessions"))
                .collect()
        };
        engine.pass(&AlwaysLeader, only("old-1")).await;
        assert_eq!(
            deleted(&api),
            [format!("DELETE {BASE}/nodeshellsessions/old-1")],
            "old-2 did not change, so this pass did not look at it"
        );
        engine.pass(&AlwaysLeader, only("old-2")).await;
        assert_eq!(
            deleted(&api),
            [format!("DELETE {BASE}/nodeshellsessions/old-2")]
        );
    }

    #[tokio::test]
    async fn a_policy_status_follows_the_live_count_but_is_written_at_most_every_interval() {
        let active = |name: &str, i: i64| {
            let mut s = session(name, "alice", "p", i, Some(SessionPhase::Active));
            s.metadata.resource_version = Some(format!("{i}"));
            // Started and active just now: no clock runs out during the test.
            let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now());
            let status = s.status.get_or_insert_default();
            status.started_at = Some(now.clone());
            status.last_activity_at = Some(now);
            s
        };
        let mut sessions = vec![active("a", 1)];
        let (api, mut engine, _rx) = api_and_engine(&sessions, &[policy("p", 5, 10)]);
        let policy_writes = |api: &Mutex<FakeApi>| -> Vec<Option<i32>> {
            let writes = calls(api)
                .into_iter()
                .filter(|c| c.starts_with("PATCH") && c.contains("nodeshellpolicies"))
                .count();
            let status = api.lock().expect("lock").policies[0]
                .status
                .as_ref()
                .and_then(|s| s.active_sessions);
            vec![status; writes]
        };
        let changed = |name: &str| Dirty {
            full: false,
            sessions: HashSet::from([name.to_string()]),
        };
        // The first pass (a full one) writes the count.
        engine.pass(&AlwaysLeader, Dirty::default()).await;
        assert_eq!(policy_writes(&api), [Some(1)]);
        let written = api.lock().expect("lock").policies.clone();
        engine.policies = store(&written);

        // Activity of a live session: the count did not change, nothing to write.
        engine.status_written.clear();
        engine.pass(&AlwaysLeader, changed("a")).await;
        assert_eq!(policy_writes(&api), []);

        // A second session goes live right after a write: held back until the interval ends.
        engine.pass(&AlwaysLeader, Dirty::default()).await;
        engine.status_written.insert("p".into(), Instant::now());
        sessions.push(active("b", 2));
        engine.sessions = store(&sessions);
        let wait = engine.pass(&AlwaysLeader, changed("b")).await;
        assert_eq!(policy_writes(&api), [], "held back");
        assert!(
            wait <= POLICY_STATUS_EVERY,
            "the loop wakes when it is due: {wait:?}"
        );
        let rewound = Instant::now()
            .checked_sub(POLICY_STATUS_EVERY)
            .expect("an instant two seconds ago");
        engine.status_written.insert("p".into(), rewound);
        engine.pass(&AlwaysLeader, Dirty::default()).await;
        assert_eq!(policy_writes(&api), [Some(2)], "written once it is due");
    }

    #[tokio::test]
    async fn a_gateways_lease_keeps_its_session_when_transcripts_live_in_another_namespace() {
        use k8s_openapi::api::coordination::v1::LeaseSpec;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
        // Active on gateway pod gw-0 for an hour, far past the no-Lease grace: only the
        // gateway's Lease keeps it.
        let hour_ago = Timestamp::now()
            .checked_sub(k8s_openapi::jiff::SignedDuration::from_hours(1))
            .expect("an hour ago");
        let mut s = session("held", "alice", "p", 1, Some(SessionPhase::Active));
        s.metadata.resource_version = Some("1".into());
        let status = s.status.get_or_insert_default();
        status.started_at = Some(Time(hour_ago));
        status.last_activity_at = Some(Time(Timestamp::now()));
        status.gateway = Some(crate::api::SessionGateway {
            pod: "gw-0".into(),
            heartbeat_at: None,
        });
        let mut lease = Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some("gw-0".into()),
                lease_duration_seconds: Some(600),
                renew_time: Some(MicroTime(Timestamp::now())),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        };
        lease.metadata.name = Some(crate::api::gateway_lease_name("gw-0"));
        // The gateways' Leases live in the controller's namespace, the transcripts elsewhere.
        lease.metadata.namespace = Some("nodeshell-system".into());
        let sessions = [s];
        let (api, _, _rx) = api_and_engine(&sessions, &[policy("p", 5, 10)]);
        let (tx, _rx) = mpsc::channel(16);
        let mut engine = Engine::new(
            client(api.clone()),
            "transcripts",
            "nodeshell-system",
            Ledgers::new(client(api.clone()), "nodeshell-system"),
            store(&sessions),
            store(&[policy("p", 5, 10)]),
            store(&[lease]),
            store(&[]),
            Timeouts::default(),
            "test-replica",
            Arc::new(Metrics::new()),
            tx,
            Arc::new(Changes::default()),
        );
        engine.pass(&AlwaysLeader, Dirty::default()).await;
        assert_eq!(
            phases(&api),
            [("held".into(), SessionPhase::Active, None)],
            "a valid Lease in the controller's namespace keeps the session Active"
        );
    }
}
