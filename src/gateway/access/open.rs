//! Opening a shell: the node list with each node's eligibility, the preflight that runs every
//! gate, and `POST …/shell` (the person's open rate, gates, caps, STS and the agent's
//! PingStatus with the caller's own credentials, the session object, the controller's
//! decision, a ticket). The only AWS calls of the control side.
//!
//! A refused open creates no object: the rate and the caps are checked before `create`, and
//! one person's opens on a replica take turns up to their create, each counting its
//! predecessors' sessions: decided ones from the gateway's session watch (where each open
//! also learns its decision), undecided ones as holding a slot. The controller stays the
//! authority for races between replicas.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::ObjectMeta;
use serde::Deserialize;

use super::Access;
use super::auth::Authenticated;
use super::eligibility::{
    Gate, GateStatus, NodeGates, ShellTarget, audience_error, caps_gate_of, node_gates,
    role_session_name,
};
use super::open_rate::{OpenRate, retry_after_seconds};
use super::tickets::TicketOffer;
use crate::api::{
    CapCount, NodeShellPolicy, NodeShellSession, NodeShellSessionSpec, SessionPhase, SessionUser,
    session_labels,
};
use crate::aws::{self, AgentPing, AwsEndpoints, SsmSessions};
use crate::gateway::error::{ApiError, ErrorCode, RETRY_AFTER};
use crate::gateway::handover::{Caller, MintedCredentials};
use crate::gateway::refusals::{
    assume_role_error, decision_error, describe_error, ineligible, ping_error,
};
use crate::gateway::step_times::StepTimes;

/// Body of `POST …/shell` and `POST …/ticket`; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenRequest {
    /// Justification, recorded in `spec.reason`.
    #[serde(default)]
    pub reason: Option<String>,
    /// Terminal columns.
    #[serde(default)]
    pub cols: Option<u16>,
    /// Terminal rows.
    #[serde(default)]
    pub rows: Option<u16>,
}

/// Largest terminal dimension accepted.
const MAX_TERMINAL: u16 = 1000;
/// Longest `reason` (the CRD's limit).
const MAX_REASON: usize = 1024;

/// Parses and checks an open body (an empty body is every default).
pub fn parse_open_request(body: &[u8]) -> Result<OpenRequest, ApiError> {
    let request: OpenRequest = if body.iter().all(u8::is_ascii_whitespace) {
        OpenRequest::default()
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::new(
                ErrorCode::BadRequest,
                format!("the body must be JSON {{\"reason\"?: string, \"cols\"?: 1-{MAX_TERMINAL}, \"rows\"?: 1-{MAX_TERMINAL}}}: {e}"),
            )
        })?
    };
    for (what, value) in [("cols", request.cols), ("rows", request.rows)] {
        if let Some(v) = value
            && !(1..=MAX_TERMINAL).contains(&v)
        {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("{what} must be between 1 and {MAX_TERMINAL}, not {v}"),
            ));
        }
    }
    if request
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON)
    {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("reason is longer than {MAX_REASON} characters"),
        ));
    }
    Ok(request)
}

impl OpenRequest {
    /// The terminal size asked for (80×24 by default).
    pub fn size(&self) -> (u16, u16) {
        (self.cols.unwrap_or(80), self.rows.unwrap_or(24))
    }
}

/// The session object for a shell request.
pub fn session_object(
    caller: &Caller,
    target: &ShellTarget,
    role_session_name: String,
    reason: Option<String>,
) -> NodeShellSession {
    let spec = NodeShellSessionSpec {
        node_name: target.node_name.clone(),
        instance_id: target.instance_id.clone(),
        region: target.region.clone(),
        policy_name: target.policy.name_any(),
        user: SessionUser {
            sub: caller.sub.clone(),
            email: caller.email.clone(),
            name: caller.name.clone(),
            groups: caller.groups.clone(),
            tier: caller.tier.clone().unwrap_or_default(),
        },
        role_arn: target.role_arn.clone(),
        role_session_name,
        document_name: target.policy.spec.aws.document_name.clone(),
        // Shown by `kubectl describe`: no control character reaches an auditor's terminal.
        reason: reason
            .map(|r| crate::api::printable(&r))
            .filter(|r| !r.trim().is_empty()),
        terminate: false,
    };
    // generateName keeps the node's name readable; the apiserver shortens long bases.
    let base: String = target.node_name.chars().take(200).collect();
    NodeShellSession {
        metadata: ObjectMeta {
            generate_name: Some(format!("{base}-")),
            labels: Some(session_labels(&spec)),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    }
}

/// What bounds one person's opens on this replica: `opensPerMinute`, and one open at a time
/// up to its create (a second waits for the first's session object, then counts the caps
/// with the first's undecided session holding a slot). Cheap to clone.
#[derive(Clone, Debug)]
pub struct OpenLimits {
    per_minute: u32,
    rate: Arc<Mutex<OpenRate>>,
    turns: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// Sessions this replica created and whose decision has not come yet, per (person,
    /// policy).
    undecided: Arc<Mutex<HashMap<(String, String), i64>>>,
}

/// One created session awaiting its decision, counted as holding a slot until dropped.
#[derive(Debug)]
struct Undecided {
    key: (String, String),
    undecided: Arc<Mutex<HashMap<(String, String), i64>>>,
}

impl Drop for Undecided {
    fn drop(&mut self) {
        let mut undecided = self
            .undecided
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = undecided.get_mut(&self.key) {
            *n -= 1;
            if *n <= 0 {
                undecided.remove(&self.key);
            }
        }
    }
}

impl OpenLimits {
    /// Limits allowing `per_minute` opens per person.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            rate: Arc::new(Mutex::new(OpenRate::new(per_minute))),
            turns: Arc::new(Mutex::new(HashMap::new())),
            undecided: Arc::default(),
        }
    }

    /// `count` with `sub`'s undecided sessions under `policy` on this replica added, as if
    /// each already held its slot (a refusal never waits on a decision that may free one).
    fn with_undecided(&self, count: CapCount, sub: &str, policy: &str) -> CapCount {
        let undecided = self
            .undecided
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(sub.to_string(), policy.to_string()))
            .copied()
            .unwrap_or(0);
        CapCount {
            per_user: count.per_user + undecided,
            total: count.total + undecided,
        }
    }

    /// Counts a created session of `sub` under `policy` as holding a slot until the returned
    /// guard drops (its decision is known, or the open ended otherwise).
    fn undecided(&self, sub: &str, policy: &str) -> Undecided {
        let key = (sub.to_string(), policy.to_string());
        *self
            .undecided
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.clone())
            .or_default() += 1;
        Undecided {
            key,
            undecided: self.undecided.clone(),
        }
    }

    /// Takes one of `sub`'s opens, or refuses with `E_RATE_LIMITED`.
    pub fn take(&self, sub: &str) -> Result<(), ApiError> {
        let taken = self
            .rate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(sub, Instant::now());
        taken.map_err(|wait| {
            let seconds = retry_after_seconds(wait);
            ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "you opened {} shells in the last minute on this gateway (opensPerMinute); try again in {seconds} s",
                    self.per_minute
                ),
            )
            .with(RETRY_AFTER, seconds)
        })
    }

    /// Waits for `sub`'s turn: their earlier open on this replica has created its session
    /// (or ended).
    async fn turn(&self, sub: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut turns = self.turns.lock().unwrap_or_else(PoisonError::into_inner);
            // Nobody holds or waits for these any more.
            turns.retain(|_, l| Arc::strong_count(l) > 1);
            turns.entry(sub.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }
}

/// One node as the list shows it: its gates (caps included) and the first failure.
#[derive(Debug)]
pub struct NodeListing {
    /// The node.
    pub node: Node,
    /// The node-side gates, then caps.
    pub gates: NodeGates,
    /// The first failure, if any.
    pub error: Option<ApiError>,
}

/// The preflight of one node: every gate, and the first failure.
#[derive(Debug)]
pub struct Preflight {
    /// Gates in display order.
    pub gates: Vec<Gate>,
    /// The first failure, if any.
    pub error: Option<ApiError>,
}

fn gate(name: &'static str, status: GateStatus, hint: String) -> Gate {
    Gate { name, status, hint }
}

fn ping_name(ping: &AgentPing) -> String {
    match ping {
        AgentPing::Online => "Online".into(),
        AgentPing::ConnectionLost => "ConnectionLost".into(),
        AgentPing::Inactive => "Inactive".into(),
        AgentPing::NotManaged => "NotManaged".into(),
        AgentPing::Other(s) => s.clone(),
    }
}

// === impl Access ===

impl Access {
    fn evaluate(&self, node: &Node, caller: &Caller, policies: &[NodeShellPolicy]) -> NodeGates {
        let labels = node.metadata.labels.clone().unwrap_or_default();
        let provider_id = node.spec.as_ref().and_then(|s| s.provider_id.as_deref());
        node_gates(
            &node.name_any(),
            &labels,
            provider_id,
            caller,
            policies,
            &self.config.aws.region,
        )
    }

    fn endpoints(&self, region: &str) -> AwsEndpoints {
        AwsEndpoints {
            region: region.to_string(),
            sts_url: self.config.aws.sts_url.clone(),
            ssm_url: self.config.aws.ssm_url.clone(),
            kms_url: self.config.aws.kms_url.clone(),
            s3_url: self.config.aws.s3_url.clone(),
        }
    }

    /// AssumeRoleWithWebIdentity with the caller's token, as the attach will do it.
    async fn assume_role(
        &self,
        auth: &Authenticated,
        target: &ShellTarget,
    ) -> Result<aws::TemporaryCredentials, ApiError> {
        if let Some(e) = audience_error(&target.policy, &auth.audiences) {
            return Err(ineligible(&e));
        }
        let request = aws::WebIdentityRequest {
            role_arn: target.role_arn.clone(),
            role_session_name: role_session_name(
                &self.config.role_session_prefix,
                &auth.caller.sub,
            ),
            web_identity_token: auth.id_token.expose().to_string(),
            duration_seconds: Some(target.policy.spec.aws.session_duration_seconds),
        };
        self.aws
            .assume_role_with_web_identity(&self.endpoints(&target.region), &request)
            .await
            .map_err(|e| assume_role_error(&e, target))
    }

    /// The agent's PingStatus, asked with the caller's credentials.
    async fn agent_ping(
        &self,
        creds: &aws::TemporaryCredentials,
        target: &ShellTarget,
    ) -> Result<AgentPing, ApiError> {
        SsmSessions::on(&self.aws, &self.endpoints(&target.region), creds)
            .describe_instance_ping_status(&target.instance_id)
            .await
            .map_err(|e| describe_error(&e, target))
    }

    /// Every node with its gates for the caller (no AWS call).
    pub async fn node_listings(&self, auth: &Authenticated) -> Result<Vec<NodeListing>, ApiError> {
        let (nodes, policies) = tokio::try_join!(self.cluster.nodes(), self.cluster.policies())?;
        let mut listings = Vec::with_capacity(nodes.len());
        for node in nodes {
            let mut gates = self.evaluate(&node, &auth.caller, &policies);
            let mut error = gates.error.as_ref().map(ineligible);
            if let Some(target) = &gates.target {
                let count = self
                    .cluster
                    .cap_count(&target.policy.name_any(), &auth.caller.sub)
                    .await?;
                let (gate, caps) = caps_gate_of(&target.policy, count);
                gates.gates.push(gate);
                error = error.or(caps.as_ref().map(ineligible));
            }
            listings.push(NodeListing { node, gates, error });
        }
        Ok(listings)
    }

    /// Runs every gate of an open on `node_name`, the AWS ones with the caller's own
    /// credentials, and reports each.
    pub async fn preflight(
        &self,
        auth: &Authenticated,
        node_name: &str,
    ) -> Result<Preflight, ApiError> {
        let (node, policies) =
            tokio::try_join!(self.cluster.node(node_name), self.cluster.policies())?;
        let node_gates = self.evaluate(&node, &auth.caller, &policies);
        let mut gates = node_gates.gates;
        let mut error = node_gates.error.as_ref().map(ineligible);
        let Some(target) = &node_gates.target else {
            for name in ["assumeRole", "agent", "caps"] {
                gates.push(Gate::skip(name, "an earlier gate failed"));
            }
            return Ok(Preflight { gates, error });
        };
        match self.assume_role(auth, target).await {
            Err(e) => {
                gates.push(gate("assumeRole", GateStatus::Fail, e.message.clone()));
                gates.push(Gate::skip("agent", "needs AWS credentials from AssumeRole"));
                error = error.or(Some(e));
            }
            Ok(creds) => {
                gates.push(gate(
                    "assumeRole",
                    GateStatus::Pass,
                    format!("assumed {}", creds.assumed_role_arn),
                ));
                let ping = self.agent_ping(&creds, target).await;
                match ping.and_then(|p| ping_error(&p, target).map_or(Ok(p), Err)) {
                    Err(e) => {
                        gates.push(gate("agent", GateStatus::Fail, e.message.clone()));
                        error = error.or(Some(e));
                    }
                    Ok(ping) => gates.push(gate(
                        "agent",
                        GateStatus::Pass,
                        format!("PingStatus {}", ping_name(&ping)),
                    )),
                }
            }
        }
        let count = self
            .cluster
            .cap_count(&target.policy.name_any(), &auth.caller.sub)
            .await?;
        let (caps_gate, caps) = caps_gate_of(&target.policy, count);
        gates.push(caps_gate);
        Ok(Preflight {
            gates,
            error: error.or(caps.as_ref().map(ineligible)),
        })
    }

    /// Opens a shell on `node_name`: takes one of the person's opens, repeats the gates and
    /// the caps, creates the session, waits for the controller's decision and issues the
    /// first attach ticket. `steps` holds what the request took before (its token check);
    /// the open's own steps are added to it and logged with the decision.
    pub async fn open(
        &self,
        auth: &Authenticated,
        node_name: &str,
        request: OpenRequest,
        mut steps: StepTimes,
    ) -> Result<TicketOffer, ApiError> {
        self.opens.take(&auth.caller.sub)?;
        let turn = self.opens.turn(&auth.caller.sub).await;
        steps.lap("turn");
        // Independent reads: one round trip instead of two.
        let (node, policies) =
            tokio::try_join!(self.cluster.node(node_name), self.cluster.policies())?;
        let gates = self.evaluate(&node, &auth.caller, &policies);
        if let Some(e) = &gates.error {
            return Err(ineligible(e));
        }
        let target = gates.target.ok_or_else(|| {
            ApiError::new(ErrorCode::Internal, "the gates passed without a target")
        })?;
        let policy = target.policy.name_any();
        let count = self.cluster.cap_count(&policy, &auth.caller.sub).await?;
        let count = self.opens.with_undecided(count, &auth.caller.sub, &policy);
        if let (_, Some(refused)) = caps_gate_of(&target.policy, count) {
            return Err(ineligible(&refused));
        }
        steps.lap("gates");
        let creds = self.assume_role(auth, &target).await?;
        steps.lap("sts");
        let ping = self.agent_ping(&creds, &target).await?;
        steps.lap("ping");
        if let Some(e) = ping_error(&ping, &target) {
            return Err(e);
        }
        let rsn = role_session_name(&self.config.role_session_prefix, &auth.caller.sub);
        // Kept for the first attach if the session is admitted (one STS call per session),
        // dropped on every other way out of here.
        let minted = MintedCredentials {
            credentials: creds,
            role_arn: target.role_arn.clone(),
            role_session_name: rsn.clone(),
            duration_seconds: Some(target.policy.spec.aws.session_duration_seconds),
            // The token's `exp`; unreadable, the credentials serve nothing (STS is asked).
            token_expires_at: i64::try_from(auth.expires_at)
                .ok()
                .and_then(|exp| chrono::DateTime::from_timestamp(exp, 0))
                .unwrap_or_default(),
        };
        let (cols, rows) = request.size();
        let object = session_object(&auth.caller, &target, rsn, request.reason);
        let name = self.cluster.create_session(&object).await?;
        // Counted as holding its slot until decided: the person's next open may go on.
        let _undecided = self.opens.undecided(&auth.caller.sub, &policy);
        drop(turn);
        steps.lap("create");
        // On the gateway's one watch; the subscription is dropped on every way out of here.
        let subscription = self.cluster.subscribe(&name).await?;
        steps.lap("subscribe");
        let decided = self
            .cluster
            .await_decision(&name, subscription, self.config.admission_timeout)
            .await?;
        steps.lap("decision");
        match decided.phase() {
            SessionPhase::Admitted | SessionPhase::Active => {}
            _ => return Err(decision_error(&decided, &target.policy)),
        }
        if let Some(uid) = decided.metadata.uid.as_deref() {
            self.minted.keep(uid, minted, Instant::now());
        }
        tracing::info!(session = name, steps_us = steps.render(), "open decided");
        self.tickets.offer(auth, &name, &policy, cols, rows, false)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn opens_beyond_the_rate_are_rate_limited_with_retry_after() {
        let limits = OpenLimits::new(2);
        assert!(limits.take("alice").is_ok());
        assert!(limits.take("alice").is_ok());
        let refused = limits.take("alice").unwrap_err();
        assert_eq!(refused.code, ErrorCode::RateLimited);
        let after = refused.extra[RETRY_AFTER].as_u64().unwrap();
        assert!((1..=30).contains(&after), "{after}");
        assert!(
            refused.message.contains("try again in"),
            "{}",
            refused.message
        );
        assert!(
            limits.take("bob").is_ok(),
            "another person has their own rate"
        );
    }

    #[test]
    fn undecided_sessions_count_as_holding_a_slot_until_decided() {
        let limits = OpenLimits::new(10);
        let live = CapCount {
            per_user: 1,
            total: 3,
        };
        let first = limits.undecided("alice", "p");
        let second = limits.undecided("alice", "p");
        let elsewhere = limits.undecided("alice", "other");
        assert_eq!(
            limits.with_undecided(live, "alice", "p"),
            CapCount {
                per_user: 3,
                total: 5
            }
        );
        assert_eq!(limits.with_undecided(live, "bob", "p"), live, "bob's own");
        drop(first);
        assert_eq!(limits.with_undecided(live, "alice", "p").per_user, 2);
        drop((second, elsewhere));
        assert_eq!(limits.with_undecided(live, "alice", "p"), live);
        assert!(limits.undecided.lock().unwrap().is_empty(), "nothing kept");
    }

    #[tokio::test]
    async fn one_persons_opens_take_turns_and_others_do_not_wait() {
        let limits = OpenLimits::new(10);
        let first = limits.turn("alice").await;
        let waiting = tokio::time::timeout(Duration::from_millis(50), limits.turn("alice")).await;
        assert!(
            waiting.is_err(),
            "a second open of alice waits for the first"
        );
        let bob = tokio::time::timeout(Duration::from_millis(50), limits.turn("bob")).await;
        assert!(bob.is_ok(), "bob does not wait for alice");
        drop(bob);
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(1), limits.turn("alice")).await;
        assert!(
            second.is_ok(),
            "alice's next open runs once the first is done"
        );
        drop(second);
        // Nobody holds a turn: the next call keeps only the caller's entry.
        let _carol = limits.turn("carol").await;
        assert_eq!(limits.turns.lock().unwrap().len(), 1);
    }
}
