//! JSON: the one deep merge, and sample objects as the API would hold them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use nodeshell::api::NodeShellSession;
use serde_json::{Value, json};

/// Deep-merges `patch` into `target` (objects merge, everything else replaces).
pub fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(target.entry(key).or_insert(Value::Null), value);
            }
        }
        (target, patch) => *target = patch,
    }
}

/// A valid policy spec; tests override fields through `patch`.
pub fn policy_json(name: &str, patch: Value) -> Value {
    let mut policy = json!({
        "apiVersion": "nodeshell.periscope.io/v1alpha1",
        "kind": "NodeShellPolicy",
        "metadata": { "name": name },
        "spec": {
            "enabled": true,
            "tiers": ["engineer", "admin"],
            "aws": {
                "roleArn": "arn:aws:iam::123456789012:role/nodeshell-test",
                "oidcAudience": "nodeshell-test",
                "region": "us-east-1",
                "sessionDurationSeconds": 3600
            },
            "limits": { "maxDurationSeconds": 3600 }
        }
    });
    merge(&mut policy, patch);
    policy
}

/// A valid session spec as the gateway would write it.
pub fn session_json(name: &str, user: &str) -> Value {
    json!({
        "apiVersion": "nodeshell.periscope.io/v1alpha1",
        "kind": "NodeShellSession",
        "metadata": { "name": name },
        "spec": {
            "nodeName": SESSION_NODE,
            "instanceId": SESSION_INSTANCE,
            "region": "us-east-1",
            "policyName": "default",
            "user": {
                "sub": format!("{user}-sub"),
                "email": format!("{user}@example.com"),
                "name": user,
                "groups": ["engineers"],
                "tier": "engineer"
            },
            "roleArn": "arn:aws:iam::123456789012:role/nodeshell-test",
            "roleSessionName": format!("nodeshell-{user}"),
            "documentName": "SSM-SessionManagerRunShell",
            "reason": "investigating disk pressure"
        }
    })
}

/// The node every [`gateway_session`] runs on.
pub const SESSION_NODE: &str = "ip-10-0-1-17.ec2.internal";
/// The EC2 instance behind [`SESSION_NODE`].
pub const SESSION_INSTANCE: &str = "i-0123456789abcdef0";

/// A session governed by `policy` as the gateway would create it (the controller tests').
pub fn gateway_session(name: &str, user: &str, policy: &str) -> anyhow::Result<NodeShellSession> {
    let mut session = session_json(name, user);
    session["spec"]["policyName"] = json!(policy);
    Ok(serde_json::from_value(session)?)
}

/// A timestamp `offset` from now, as the API writes it.
pub fn time_from_now(offset: SignedDuration) -> anyhow::Result<Value> {
    Ok(serde_json::to_value(Time(
        Timestamp::now().checked_add(offset)?,
    ))?)
}
