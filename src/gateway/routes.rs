//! The HTTP and WebSocket routes of design §5. Handlers authenticate, fetch, call the pure
//! gates in [`crate::gateway::access::eligibility`] and write; they never log a token or a ticket.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{SecondsFormat, Utc};
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::api::{
    NodeShellPolicy, NodeShellSession, NodeShellSessionSpec, SessionPhase, SessionUser,
    session_labels,
};
use crate::aws::{self, AgentPing, AssumeRoleError, AwsEndpoints, SsmCallError, SsmSessions};
use crate::gateway::FIELD_MANAGER;
use crate::gateway::access::auth::{Authenticated, Authenticator};
use crate::gateway::access::eligibility::{
    Gate, GateStatus, ShellTarget, audience_error, caps_gate, node_gates, role_session_name,
};
use crate::gateway::access::tickets::{TicketBook, TicketGrant};
use crate::gateway::config::GatewayConfig;
use crate::gateway::error::{ApiError, ErrorCode};
use crate::gateway::handover::{AttachGrant, Caller};
use crate::gateway::handover::{LiveSide, TranscriptLoadError};
use crate::gateway::metrics::GatewayMetrics;

/// Every route the gateway serves (method, path), as docs/api.md and /openapi.json list them.
pub const ROUTES: [(&str, &str); 14] = [
    ("GET", "/api/v1/nodes"),
    ("GET", "/api/v1/nodes/{node}/shell/preflight"),
    ("POST", "/api/v1/nodes/{node}/shell"),
    ("GET", "/api/v1/sessions"),
    ("GET", "/api/v1/sessions/{name}"),
    ("DELETE", "/api/v1/sessions/{name}"),
    ("POST", "/api/v1/sessions/{name}/ticket"),
    ("GET", "/api/v1/sessions/{name}/attach"),
    ("GET", "/api/v1/sessions/{name}/transcript"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/api/v1/whoami"),
];

/// The OpenAPI 3 document of the API.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// Everything a handler needs.
#[derive(Clone)]
pub struct AppState {
    /// Resolved configuration.
    pub config: Arc<GatewayConfig>,
    /// Token verification.
    pub auth: Authenticator,
    /// This replica's attach tickets.
    pub tickets: TicketBook,
    /// The Kubernetes API.
    pub kube: kube::Client,
    /// The live side.
    pub live: LiveSide,
    /// Metrics.
    pub metrics: GatewayMetrics,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The router of every route, with state.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/nodes", get(list_nodes))
        .route("/api/v1/nodes/{node}/shell/preflight", get(preflight))
        .route("/api/v1/nodes/{node}/shell", post(open_shell))
        .route("/api/v1/sessions", get(list_sessions))
        .route(
            "/api/v1/sessions/{name}",
            get(get_session).delete(delete_session),
        )
        .route("/api/v1/sessions/{name}/ticket", post(new_ticket))
        .route("/api/v1/sessions/{name}/attach", get(attach))
        .route("/api/v1/sessions/{name}/transcript", get(transcript))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .merge(crate::gateway::console::router())
        .fallback(not_found)
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}

/// Logs method, path (never the query: it may hold a ticket), status and latency.
async fn log_request(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    tracing::debug!(
        %method,
        path,
        status = response.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
}

async fn not_found() -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        "no such route; see /openapi.json for the API",
    )
}

// === helpers ===

async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Authenticated, ApiError> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    state.auth.authenticate(header).await
}

/// A Kubernetes API failure as an API error: 404 stays 404, everything else fails closed.
fn kube_error(e: &kube::Error, what: &str) -> ApiError {
    match e {
        kube::Error::Api(s) if s.code == 404 => {
            ApiError::new(ErrorCode::NotFound, format!("{what} not found"))
        }
        other => {
            tracing::warn!(error = %other, what, "Kubernetes API call failed");
            ApiError::new(
                ErrorCode::Internal,
                "cannot reach the Kubernetes API; no session was opened or changed; try again shortly",
            )
        }
    }
}

/// Longest wait for one Kubernetes API call made while answering a request: past it the
/// apiserver counts as unreachable and the request fails closed.
const KUBE_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs one Kubernetes API call with [`KUBE_CALL_TIMEOUT`].
async fn kube_call<T>(
    what: &str,
    call: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(KUBE_CALL_TIMEOUT, call).await {
        Ok(result) => result.map_err(|e| kube_error(&e, what)),
        Err(_) => {
            tracing::warn!(what, "Kubernetes API call timed out");
            Err(ApiError::new(
                ErrorCode::Internal,
                "cannot reach the Kubernetes API (no answer within 10 s); no session was opened or changed; try again shortly",
            ))
        }
    }
}

fn nodes_api(state: &AppState) -> Api<Node> {
    Api::all(state.kube.clone())
}

fn sessions_api(state: &AppState) -> Api<NodeShellSession> {
    Api::all(state.kube.clone())
}

async fn policies(state: &AppState) -> Result<Vec<NodeShellPolicy>, ApiError> {
    let api = Api::<NodeShellPolicy>::all(state.kube.clone());
    kube_call("policies", api.list(&ListParams::default()))
        .await
        .map(|l| l.items)
}

async fn sessions(state: &AppState) -> Result<Vec<NodeShellSession>, ApiError> {
    let api = sessions_api(state);
    kube_call("sessions", api.list(&ListParams::default()))
        .await
        .map(|l| l.items)
}

async fn node(state: &AppState, name: &str) -> Result<Node, ApiError> {
    let api = nodes_api(state);
    kube_call("node", api.get_opt(name)).await?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            format!("no node named {name:?}; list nodes with GET /api/v1/nodes"),
        )
    })
}

async fn session(state: &AppState, name: &str) -> Result<NodeShellSession, ApiError> {
    let api = sessions_api(state);
    kube_call("session", api.get_opt(name))
        .await?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!("no session named {name:?}; list yours with GET /api/v1/sessions"),
            )
        })
}

fn evaluate(
    state: &AppState,
    node: &Node,
    caller: &Caller,
    policies: &[NodeShellPolicy],
) -> crate::gateway::access::eligibility::NodeGates {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let provider_id = node.spec.as_ref().and_then(|s| s.provider_id.as_deref());
    node_gates(
        &node.name_any(),
        &labels,
        provider_id,
        caller,
        policies,
        &state.config.aws.region,
    )
}

fn endpoints(state: &AppState, region: &str) -> AwsEndpoints {
    AwsEndpoints {
        region: region.to_string(),
        sts_url: state.config.aws.sts_url.clone(),
        ssm_url: state.config.aws.ssm_url.clone(),
    }
}

/// Whether the caller owns the session or holds an admin tier.
/// The caller and session `name`, when the caller owns it or holds an admin tier.
async fn managed_session(
    state: &AppState,
    headers: &HeaderMap,
    name: &str,
) -> Result<(Authenticated, NodeShellSession), ApiError> {
    let auth = authenticate(state, headers).await?;
    let s = session(state, name).await?;
    if !may_manage(state, &auth.caller, &s) {
        return Err(not_yours(state, &auth.caller, name));
    }
    Ok((auth, s))
}

fn may_manage(state: &AppState, caller: &Caller, session: &NodeShellSession) -> bool {
    session.spec.user.sub == caller.sub || state.auth.tiers().is_admin(caller.tier.as_deref())
}

fn not_yours(state: &AppState, caller: &Caller, name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Forbidden,
        format!(
            "session {name} belongs to someone else; only its owner or an admin tier may do this"
        ),
    )
    .with(
        "tier",
        caller.tier.clone().map_or(Value::Null, Value::String),
    )
    .with("allowed_tiers", state.auth.tiers().admin.clone())
}

fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

// === AWS gates ===

/// AssumeRoleWithWebIdentity with the caller's token, as the attach will do it.
async fn assume_role(
    state: &AppState,
    auth: &Authenticated,
    target: &ShellTarget,
) -> Result<aws::TemporaryCredentials, ApiError> {
    if let Some(e) = audience_error(&target.policy, &auth.audiences) {
        return Err(e);
    }
    let request = aws::WebIdentityRequest {
        role_arn: target.role_arn.clone(),
        role_session_name: role_session_name(&state.config.role_session_prefix, &auth.caller.sub),
        web_identity_token: auth.id_token.expose().to_string(),
        duration_seconds: Some(target.policy.spec.aws.session_duration_seconds),
    };
    aws::assume_role_with_web_identity(&endpoints(state, &target.region), &request)
        .await
        .map_err(|e| assume_role_error(&e, target))
}

pub(crate) fn assume_role_error(e: &AssumeRoleError, target: &ShellTarget) -> ApiError {
    let role = &target.role_arn;
    match e {
        AssumeRoleError::AccessDenied(m) => ApiError::new(
            ErrorCode::TrustDenied,
            format!(
                "the trust policy of {role} refused your identity ({m}); ask a platform admin to check the role's conditions on sub and aud"
            ),
        ),
        AssumeRoleError::InvalidIdentityToken(m) if m.to_ascii_lowercase().contains("audience") => {
            let expected = target
                .policy
                .spec
                .aws
                .oidc_audience
                .clone()
                .unwrap_or_default();
            ApiError::new(
                ErrorCode::AudMismatch,
                format!("AWS does not accept your token's audience for {role} ({m}); the IAM OIDC provider must list the audience {expected:?}"),
            )
            .with("expected_aud", expected)
        }
        AssumeRoleError::InvalidIdentityToken(m) => ApiError::new(
            ErrorCode::TrustDenied,
            format!(
                "AWS refused your id_token for {role} ({m}); the account's IAM OIDC provider must trust this issuer"
            ),
        ),
        AssumeRoleError::ExpiredToken(_) => ApiError::new(
            ErrorCode::ReauthRequired,
            "your sign-in expired before AWS saw it; sign in again",
        ),
        other => ApiError::new(
            ErrorCode::StartFailed,
            format!("cannot assume {role}: {other}"),
        ),
    }
}

/// The agent's PingStatus, asked with the caller's credentials.
async fn agent_ping(
    state: &AppState,
    creds: &aws::TemporaryCredentials,
    target: &ShellTarget,
) -> Result<AgentPing, ApiError> {
    SsmSessions::new(&endpoints(state, &target.region), creds)
        .describe_instance_ping_status(&target.instance_id)
        .await
        .map_err(|e| ssm_error(&e, target))
}

fn ssm_error(e: &SsmCallError, target: &ShellTarget) -> ApiError {
    ApiError::new(
        ErrorCode::StartFailed,
        format!(
            "SSM refused DescribeInstanceInformation for {} with your credentials: {e}",
            target.instance_id
        ),
    )
}

pub(crate) fn ping_error(ping: &AgentPing, target: &ShellTarget) -> Option<ApiError> {
    let status = match ping {
        AgentPing::Online => return None,
        AgentPing::ConnectionLost => "ConnectionLost".to_string(),
        AgentPing::Inactive => "Inactive".to_string(),
        AgentPing::NotManaged => "not managed by SSM".to_string(),
        AgentPing::Other(s) => s.clone(),
    };
    Some(ApiError::new(
        ErrorCode::AgentOffline,
        format!(
            "the SSM agent on {} ({}) is not online (PingStatus {status}); check that amazon-ssm-agent runs and reaches SSM, then try again",
            target.node_name, target.instance_id
        ),
    ))
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

// === whoami, nodes, preflight ===

async fn whoami(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let auth = authenticate(&state, &headers).await?;
    let c = &auth.caller;
    Ok(axum::Json(json!({
        "sub": c.sub,
        "email": c.email,
        "name": c.name,
        "groups": c.groups,
        "tier": c.tier,
        "admin": state.auth.tiers().is_admin(c.tier.as_deref()),
    }))
    .into_response())
}

async fn list_nodes(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let auth = authenticate(&state, &headers).await?;
    let api = nodes_api(&state);
    let nodes = kube_call("nodes", api.list(&ListParams::default()))
        .await?
        .items;
    let policies = policies(&state).await?;
    let sessions = sessions(&state).await?;
    let mut items = Vec::with_capacity(nodes.len());
    for node in &nodes {
        let mut gates = evaluate(&state, node, &auth.caller, &policies);
        let mut error = gates.error.clone();
        if let Some(target) = &gates.target {
            let (gate, caps) = caps_gate(&target.policy, &sessions, &auth.caller.sub);
            gates.gates.push(gate);
            error = error.or(caps);
        }
        let provider = node.spec.as_ref().and_then(|s| s.provider_id.clone());
        let instance = provider
            .as_deref()
            .and_then(crate::gateway::access::eligibility::parse_provider_id);
        items.push(json!({
            "name": node.name_any(),
            "providerID": provider,
            "instanceId": instance.as_ref().map(|i| i.instance_id.clone()),
            "zone": instance.as_ref().and_then(|i| i.zone.clone()),
            "region": gates.target.as_ref().map(|t| t.region.clone()),
            "policy": gates.target.as_ref().map(|t| t.policy.name_any()),
            "eligible": error.is_none(),
            "error": error.map(|e| e.body()),
            "gates": gates.gates,
        }));
    }
    Ok(axum::Json(json!({ "items": items })).into_response())
}

/// Preflight answer.
#[derive(Debug, Serialize)]
struct PreflightAnswer {
    node: String,
    eligible: bool,
    gates: Vec<Gate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Value>,
}

async fn preflight(
    State(state): State<AppState>,
    Path(node_name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let auth = authenticate(&state, &headers).await?;
    let node = node(&state, &node_name).await?;
    let policies = policies(&state).await?;
    let sessions = sessions(&state).await?;
    let node_gates = evaluate(&state, &node, &auth.caller, &policies);
    let mut gates = node_gates.gates;
    let mut error = node_gates.error;
    match &node_gates.target {
        None => {
            for name in ["assumeRole", "agent", "caps"] {
                gates.push(Gate::skip(name, "an earlier gate failed"));
            }
        }
        Some(target) => {
            match assume_role(&state, &auth, target).await {
                Err(e) => {
                    gates.push(gate_from("assumeRole", GateStatus::Fail, e.message.clone()));
                    gates.push(Gate::skip("agent", "needs AWS credentials from AssumeRole"));
                    error = error.or(Some(e));
                }
                Ok(creds) => {
                    gates.push(gate_from(
                        "assumeRole",
                        GateStatus::Pass,
                        format!("assumed {}", creds.assumed_role_arn),
                    ));
                    match agent_ping(&state, &creds, target).await {
                        Err(e) => {
                            gates.push(gate_from("agent", GateStatus::Fail, e.message.clone()));
                            error = error.or(Some(e));
                        }
                        Ok(ping) => match ping_error(&ping, target) {
                            Some(e) => {
                                gates.push(gate_from("agent", GateStatus::Fail, e.message.clone()));
                                error = error.or(Some(e));
                            }
                            None => gates.push(gate_from(
                                "agent",
                                GateStatus::Pass,
                                format!("PingStatus {}", ping_name(&ping)),
                            )),
                        },
                    }
                }
            }
            let (gate, caps) = caps_gate(&target.policy, &sessions, &auth.caller.sub);
            gates.push(gate);
            error = error.or(caps);
        }
    }
    Ok(axum::Json(PreflightAnswer {
        node: node_name,
        eligible: error.is_none(),
        gates,
        error: error.map(|e| e.body()),
    })
    .into_response())
}

fn gate_from(name: &'static str, status: GateStatus, hint: String) -> Gate {
    Gate { name, status, hint }
}

// === open ===

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

/// What `POST …/shell` and `POST …/ticket` answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TicketAnswer {
    session: String,
    attach_url: String,
    ticket: String,
    expires_at: String,
}

fn issue_ticket(
    state: &AppState,
    auth: &Authenticated,
    session: &str,
    cols: u16,
    rows: u16,
    reattach: bool,
) -> Result<TicketAnswer, ApiError> {
    let grant = TicketGrant {
        caller: auth.caller.clone(),
        id_token: auth.id_token.clone(),
        session: session.to_string(),
        cols,
        rows,
        reattach,
    };
    let ticket = state
        .tickets
        .issue(grant, Instant::now())
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    let ttl = chrono::Duration::from_std(state.tickets.ttl()).unwrap_or_default();
    Ok(TicketAnswer {
        session: session.to_string(),
        attach_url: format!("/api/v1/sessions/{session}/attach?ticket={ticket}"),
        ticket,
        expires_at: rfc3339(Utc::now() + ttl),
    })
}

async fn open_shell(
    State(state): State<AppState>,
    Path(node_name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let result = open_shell_inner(&state, &node_name, &headers, &body).await;
    state
        .metrics
        .open_latency
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok((session, answer)) => {
            state.metrics.open("admitted");
            tracing::info!(session, node = node_name, "shell admitted");
            (StatusCode::CREATED, axum::Json(answer)).into_response()
        }
        Err(e) => {
            state.metrics.open(e.code.as_str());
            tracing::info!(
                node = node_name,
                code = e.code.as_str(),
                message = e.message,
                "shell refused"
            );
            e.into_response()
        }
    }
}

async fn open_shell_inner(
    state: &AppState,
    node_name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(String, TicketAnswer), ApiError> {
    let auth = authenticate(state, headers).await?;
    let request = parse_open_request(body)?;
    let node = node(state, node_name).await?;
    let policies = policies(state).await?;
    let gates = evaluate(state, &node, &auth.caller, &policies);
    if let Some(e) = gates.error {
        return Err(e);
    }
    let target = gates
        .target
        .ok_or_else(|| ApiError::new(ErrorCode::Internal, "the gates passed without a target"))?;
    let creds = assume_role(state, &auth, &target).await?;
    let ping = agent_ping(state, &creds, &target).await?;
    drop(creds);
    if let Some(e) = ping_error(&ping, &target) {
        return Err(e);
    }
    let name = create_session(state, &auth.caller, &target, request.reason).await?;
    let decided = await_decision(state, &name).await?;
    match decided.phase() {
        SessionPhase::Admitted | SessionPhase::Active => {}
        _ => return Err(decision_error(&decided, &target.policy)),
    }
    let answer = issue_ticket(
        state,
        &auth,
        &name,
        request.cols.unwrap_or(80),
        request.rows.unwrap_or(24),
        false,
    )?;
    Ok((name, answer))
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
        reason: reason.filter(|r| !r.trim().is_empty()),
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

async fn create_session(
    state: &AppState,
    caller: &Caller,
    target: &ShellTarget,
    reason: Option<String>,
) -> Result<String, ApiError> {
    let rsn = role_session_name(&state.config.role_session_prefix, &caller.sub);
    let object = session_object(caller, target, rsn, reason);
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    };
    let api = sessions_api(state);
    let created = tokio::time::timeout(KUBE_CALL_TIMEOUT, api.create(&pp, &object))
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::Internal,
                "cannot reach the Kubernetes API (no answer within 10 s); no session was opened",
            )
        })?
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 422 || s.code == 400 => ApiError::new(
                ErrorCode::BadRequest,
                format!("the apiserver refused the session: {}", s.message),
            ),
            other => kube_error(&other, "session"),
        })?;
    Ok(created.name_any())
}

/// Waits for the controller to admit or reject; on timeout asks for termination so the
/// session never opens late, and fails closed.
async fn await_decision(state: &AppState, name: &str) -> Result<NodeShellSession, ApiError> {
    let api = sessions_api(state);
    let decided =
        |s: Option<&NodeShellSession>| s.is_none_or(|s| s.phase() != SessionPhase::Pending);
    let wait = kube::runtime::wait::await_condition(api.clone(), name, decided);
    match tokio::time::timeout(state.config.admission_timeout, wait).await {
        Ok(Ok(Some(session))) => Ok(session),
        Ok(Ok(None)) => Err(ApiError::new(
            ErrorCode::Internal,
            format!(
                "session {name} was deleted before the controller decided; no session was opened"
            ),
        )),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, session = name, "watching the session failed");
            let _ = kube_call("session", request_terminate(state, name)).await;
            Err(ApiError::new(
                ErrorCode::Internal,
                "cannot reach the Kubernetes API; no session was opened",
            ))
        }
        Err(_) => {
            let _ = kube_call("session", request_terminate(state, name)).await;
            Err(ApiError::new(
                ErrorCode::Internal,
                format!(
                    "the controller did not admit session {name} within {} s (is `nodeshell controller` running?); no session was opened",
                    state.config.admission_timeout.as_secs()
                ),
            ))
        }
    }
}

/// The API error for a session the controller did not admit.
pub fn decision_error(session: &NodeShellSession, policy: &NodeShellPolicy) -> ApiError {
    let status = session.status.clone().unwrap_or_default();
    let reason = status.reason.unwrap_or_default();
    let message = status
        .message
        .unwrap_or_else(|| format!("the session ended as {}", session.phase()));
    let limits = &policy.spec.limits;
    match reason.as_str() {
        "CapPerUser" => {
            ApiError::new(ErrorCode::CapUser, message).with("limit", limits.max_sessions_per_user)
        }
        "CapTotal" => {
            ApiError::new(ErrorCode::CapTotal, message).with("limit", limits.max_sessions_total)
        }
        "PolicyDenied" | "NodeNotEligible" => ApiError::new(ErrorCode::NodeShellDisabled, message),
        _ => ApiError::new(
            ErrorCode::Internal,
            format!(
                "session {} was not admitted ({reason}): {message}",
                session.name_any()
            ),
        ),
    }
}

// === sessions ===

/// A session as the API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    name: String,
    node: String,
    instance_id: String,
    region: String,
    policy: String,
    user: SessionUser,
    role_session_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    terminate: bool,
    phase: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<String>,
    status: Value,
}

/// The view of a session.
pub fn session_view(s: &NodeShellSession) -> SessionView {
    let status = s.status.clone().unwrap_or_default();
    SessionView {
        name: s.name_any(),
        node: s.spec.node_name.clone(),
        instance_id: s.spec.instance_id.clone(),
        region: s.spec.region.clone(),
        policy: s.spec.policy_name.clone(),
        user: s.spec.user.clone(),
        role_session_name: s.spec.role_session_name.clone(),
        reason: s.spec.reason.clone(),
        terminate: s.spec.terminate,
        phase: s.phase().to_string(),
        status_reason: status.reason.clone(),
        message: status.message.clone(),
        created_at: s
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string()),
        status: serde_json::to_value(&status).unwrap_or(Value::Null),
    }
}

async fn list_sessions(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let auth = authenticate(&state, &headers).await?;
    let admin = state.auth.tiers().is_admin(auth.caller.tier.as_deref());
    let mut all: Vec<NodeShellSession> = sessions(&state)
        .await?
        .into_iter()
        .filter(|s| admin || s.spec.user.sub == auth.caller.sub)
        .collect();
    all.sort_by(|a, b| {
        b.metadata
            .creation_timestamp
            .cmp(&a.metadata.creation_timestamp)
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
    let items: Vec<SessionView> = all.iter().map(session_view).collect();
    Ok(axum::Json(json!({ "items": items })).into_response())
}

async fn get_session(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (_, s) = managed_session(&state, &headers, &name).await?;
    Ok(axum::Json(session_view(&s)).into_response())
}

async fn request_terminate(state: &AppState, name: &str) -> Result<(), kube::Error> {
    let patch = json!({"spec": {"terminate": true}});
    sessions_api(state)
        .patch(
            name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await
        .map(|_| ())
}

async fn delete_session(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (auth, s) = managed_session(&state, &headers, &name).await?;
    if !s.phase().is_terminal() && !s.spec.terminate {
        kube_call("session", request_terminate(&state, &name)).await?;
    }
    state.live.shells.request_terminate(&name);
    tracing::info!(
        session = name,
        by = auth.caller.sub,
        "termination requested"
    );
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({
            "session": name,
            "terminate": true,
            "phase": s.phase().as_str(),
        })),
    )
        .into_response())
}

async fn new_ticket(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let auth = authenticate(&state, &headers).await?;
    let request = parse_open_request(&body)?;
    let s = session(&state, &name).await?;
    if s.spec.user.sub != auth.caller.sub {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("session {name} belongs to someone else; only its owner may attach"),
        )
        .with(
            "tier",
            auth.caller.tier.clone().map_or(Value::Null, Value::String),
        )
        .with("allowed_tiers", Vec::<String>::new()));
    }
    if !matches!(s.phase(), SessionPhase::Admitted | SessionPhase::Active) || s.spec.terminate {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!(
                "session {name} is {} and cannot be attached; open a new shell",
                s.phase()
            ),
        ));
    }
    let answer = issue_ticket(
        &state,
        &auth,
        &name,
        request.cols.unwrap_or(80),
        request.rows.unwrap_or(24),
        true,
    )?;
    Ok((StatusCode::CREATED, axum::Json(answer)).into_response())
}

// === attach ===

/// Query of the attach URL.
#[derive(Debug, Deserialize)]
struct AttachQuery {
    ticket: Option<String>,
}

async fn attach(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<AttachQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if !state.config.origin_allowed(origin) {
        tracing::warn!(session = name, origin, "attach from an origin not allowed");
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "origin {} may not attach; the gateway's allowedOrigins must list it",
                origin.unwrap_or("(none)")
            ),
        ));
    }
    let ticket = query.ticket.filter(|t| !t.is_empty()).ok_or_else(|| {
        ApiError::new(
            ErrorCode::Auth,
            "attach needs ?ticket=<ticket> from POST /api/v1/nodes/{node}/shell or POST /api/v1/sessions/{name}/ticket",
        )
    })?;
    let grant = state
        .tickets
        .redeem(&ticket, &name, Instant::now())
        .map_err(|e| ApiError::new(ErrorCode::Auth, e.to_string()))?;
    let upgrade = upgrade.map_err(|e| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("attach is a WebSocket endpoint: {e}"),
        )
    })?;
    let session = session(&state, &name).await?;
    if session.spec.user.sub != grant.caller.sub {
        return Err(ApiError::new(
            ErrorCode::Auth,
            "the ticket was issued to someone else",
        ));
    }
    let phase = session.phase();
    if !matches!(phase, SessionPhase::Admitted | SessionPhase::Active) {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("session {name} is {phase} and cannot be attached; open a new shell"),
        ));
    }
    let policies_api = Api::<NodeShellPolicy>::all(state.kube.clone());
    let policy = kube_call("policy", policies_api.get_opt(&session.spec.policy_name))
        .await?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NodeShellDisabled,
                format!(
                    "policy {} that governs session {name} no longer exists",
                    session.spec.policy_name
                ),
            )
        })?;
    // A session that runs here, or already ran on a socket, is a reattach: the live side
    // then expects the browser's resume frame (and refuses when it does not run it).
    let resume = state.live.shells.is_running(&name) || phase == SessionPhase::Active;
    let attach_grant = AttachGrant {
        caller: grant.caller,
        id_token: grant.id_token,
        session,
        policy,
        cols: grant.cols,
        rows: grant.rows,
    };
    let live = state.live.shells.clone();
    tracing::info!(session = name, resume, "attaching");
    Ok(upgrade
        .on_upgrade(move |socket| live.attach(attach_grant, socket, resume))
        .into_response())
}

// === transcript ===

async fn transcript(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (_, s) = managed_session(&state, &headers, &name).await?;
    let bytes = state.live.transcripts.load(&s).await.map_err(|e| match e {
        TranscriptLoadError::Missing(m) => ApiError::new(ErrorCode::NotFound, m),
        TranscriptLoadError::Storage(m) => ApiError::new(
            ErrorCode::Internal,
            format!("cannot read the transcript of {name}: {m}"),
        ),
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/gzip".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}.cast.gz\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

// === health, metrics, openapi ===

async fn readyz(State(state): State<AppState>) -> Response {
    let mut problems = Vec::new();
    if !state.auth.keys().is_loaded() {
        problems.push(format!(
            "issuer keys not loaded ({})",
            state
                .auth
                .keys()
                .last_error()
                .unwrap_or_else(|| "not fetched yet".into())
        ));
    }
    let probe = tokio::time::timeout(Duration::from_secs(3), state.kube.apiserver_version()).await;
    if !matches!(probe, Ok(Ok(_))) {
        problems.push("Kubernetes API unreachable".to_string());
    }
    if problems.is_empty() {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, problems.join("; ")).into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.registry.encode(),
    )
        .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Counts session objects by phase (for the `sessions` gauge).
pub fn phase_counts(sessions: &[NodeShellSession]) -> Vec<(String, i64)> {
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for s in sessions {
        *counts.entry(s.phase().to_string()).or_default() += 1;
    }
    counts.into_iter().collect()
}
