//! How the API shows a session, a node and a preflight: the JSON bodies of the routes.

use kube::ResourceExt;
use serde::Serialize;
use serde_json::{Value, json};

use crate::api::parse_provider_id;
use crate::api::{NodeShellSession, SessionUser};
use crate::gateway::access::Access;
use crate::gateway::access::auth::Authenticated;
use crate::gateway::access::eligibility::Gate;
use crate::gateway::access::open::{NodeListing, Preflight};

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

/// A node in `GET /api/v1/nodes`.
pub fn node_view(listing: &NodeListing) -> Value {
    let node = &listing.node;
    let target = listing.gates.target.as_ref();
    let provider = node.spec.as_ref().and_then(|s| s.provider_id.clone());
    let instance = provider.as_deref().and_then(parse_provider_id);
    json!({
        "name": node.name_any(),
        "providerID": provider,
        "instanceId": instance.as_ref().map(|i| i.instance_id.clone()),
        "zone": instance.as_ref().and_then(|i| i.zone.clone()),
        "region": target.map(|t| t.region.clone()),
        "policy": target.map(|t| t.policy.name_any()),
        "eligible": listing.error.is_none(),
        "error": listing.error.as_ref().map(|e| e.body()),
        "gates": listing.gates.gates,
    })
}

/// Preflight answer.
#[derive(Debug, Serialize)]
pub struct PreflightView {
    node: String,
    eligible: bool,
    gates: Vec<Gate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Value>,
}

/// The view of a preflight of `node`.
pub fn preflight_view(node: String, preflight: Preflight) -> PreflightView {
    PreflightView {
        node,
        eligible: preflight.error.is_none(),
        gates: preflight.gates,
        error: preflight.error.map(|e| e.body()),
    }
}

/// The caller as `GET /api/v1/whoami` shows them.
pub fn whoami_view(access: &Access, auth: &Authenticated) -> Value {
    let c = &auth.caller;
    json!({
        "sub": c.sub,
        "email": c.email,
        "name": c.name,
        "groups": c.groups,
        "tier": c.tier,
        "admin": access.is_admin(auth),
    })
}
