//! Expiry, backstops and retention on a short clock, against a real apiserver: AttachTimeout,
//! GatewayLost (a gateway Lease that runs out; a pre-Lease heartbeat that stops), the idle and max-duration backstops, a Closing nobody finishes, terminate,
//! deletion after retention (with the session's transcript Secret), the short retention of
//! Rejected sessions, policy status, events and metrics. The controller keeps transcripts in
//! a namespace of their own (`--transcript-namespace`, the chart's `transcripts.namespace`)
//! while the gateways' Leases stay in its `--namespace`.

mod support;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::SignedDuration;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use nodeshell::api::{
    LABEL_SESSION, NodeShellPolicy, NodeShellSession, SessionPhase, TRANSCRIPT_SECRET_TYPE,
};
use nodeshell::localcluster::{Identity, LocalCluster, SYSTEM_NAMESPACE};
use serde_json::json;
use std::time::{Duration, Instant};
use support::{
    ControllerProcess, apply_policy, cluster, create_gateway_session, ensure_session_node,
    gateway_session, gateway_status, http_get, time_from_now, wait_for, wait_phase,
};

const LEASE: &str = "controller-expiry";
const POLICY: &str = "expiry";
const WAIT: Duration = Duration::from_secs(30);
/// Where this controller keeps transcript Secrets: not its own namespace.
const TRANSCRIPTS: &str = "expiry-transcripts";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_and_are_cleaned_up_on_a_short_clock() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    apply_policy(
        cluster,
        POLICY,
        json!({ "retention": { "closedSessionSeconds": 3 } }),
    )
    .await?;
    // The chart's transcript namespace: the controller may only deletecollection there.
    cluster
        .apply_yaml(&format!(
            r#"
apiVersion: v1
kind: Namespace
metadata: {{ name: {TRANSCRIPTS} }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{ name: nodeshell-controller-transcripts, namespace: {TRANSCRIPTS} }}
rules:
  - apiGroups: [""]
    resources: ["secrets"]
    verbs: ["deletecollection"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{ name: nodeshell-controller-transcripts, namespace: {TRANSCRIPTS} }}
roleRef: {{ apiGroup: rbac.authorization.k8s.io, kind: Role, name: nodeshell-controller-transcripts }}
subjects:
  - {{ kind: ServiceAccount, name: nodeshell-controller, namespace: {SYSTEM_NAMESPACE} }}
"#
        ))
        .await?;
    let controller = ControllerProcess::start(
        cluster,
        "replica-expiry",
        LEASE,
        &[
            "--transcript-namespace",
            TRANSCRIPTS,
            "--attach-timeout",
            "3s",
            "--heartbeat-timeout",
            "4s",
            "--backstop-grace",
            "1s",
            "--closing-grace",
            "2s",
            "--default-retention",
            "2s",
        ],
    )?;

    let results = tokio::join!(
        attach_timeout_then_retention(cluster),
        gateway_lost(cluster),
        gateway_lease_runs_out(cluster),
        idle_backstop_then_closing_grace(cluster),
        max_duration_backstop(cluster),
        terminate(cluster),
        policy_status(cluster),
        spec_recheck(cluster),
        rejected_retention(cluster),
    );
    let failures: Vec<String> = [
        results.0, results.1, results.2, results.3, results.4, results.5, results.6, results.7,
        results.8,
    ]
    .into_iter()
    .filter_map(Result::err)
    .map(|e| format!("{e:#}"))
    .collect();
    assert!(
        failures.is_empty(),
        "{failures:#?}\ncontroller log:\n{}",
        controller.log_text()
    );

    // Every decision above was counted and announced.
    let addr = controller.admin_addr().await?;
    let (code, metrics) = http_get(&addr, "/metrics").await?;
    assert_eq!(code, 200);
    for needle in [
        "outcome=\"admitted\"",
        "reason=\"AttachTimeout\"",
        "reason=\"GatewayLost\"",
        "reason=\"IdleTimeout\"",
        "outcome=\"deleted\"",
    ] {
        assert!(
            metrics.contains(needle),
            "{needle} missing from:\n{metrics}"
        );
    }
    let events: Api<Event> = Api::namespaced(cluster.client(Identity::Admin).await?, "default");
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("nodeshell-controller"))
        .filter_map(|e| e.reason)
        .collect();
    for reason in [
        "Admitted",
        "AttachTimeout",
        "GatewayLost",
        "IdleTimeout",
        "MaxDuration",
        "AdminTerminated",
    ] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "no {reason} event in {reasons:?}"
        );
    }
    Ok(())
}

async fn admitted(
    cluster: &LocalCluster,
    name: &str,
    user: &str,
) -> anyhow::Result<NodeShellSession> {
    create_gateway_session(cluster, name, user, POLICY).await?;
    wait_phase(cluster, name, SessionPhase::Admitted, None, WAIT).await
}

/// Never attached: Closed AttachTimeout; 3 s later (the policy's retention) the session and its
/// labelled, owned transcript Secret are gone.
async fn attach_timeout_then_retention(cluster: &LocalCluster) -> anyhow::Result<()> {
    let session = admitted(cluster, "x-attach", "attach").await?;
    let secrets: Api<Secret> = Api::namespaced(cluster.client(Identity::Admin).await?, TRANSCRIPTS);
    let mut secret = Secret::default();
    secret.metadata.name = Some("x-attach-transcript-0".into());
    secret.metadata.labels = Some([(LABEL_SESSION.to_string(), "x-attach".to_string())].into());
    secret.metadata.owner_references = Some(vec![OwnerReference {
        api_version: NodeShellSession::api_version(&()).to_string(),
        kind: NodeShellSession::kind(&()).to_string(),
        name: session.name_any(),
        uid: session.uid().unwrap_or_default(),
        ..OwnerReference::default()
    }]);
    // Real transcripts carry their own type, which retention selects on (before, this fixture
    // was an Opaque Secret, which the controller no longer may delete).
    secret.type_ = Some(TRANSCRIPT_SECRET_TYPE.to_string());
    secrets.create(&PostParams::default(), &secret).await?;
    // An Opaque Secret with the same label is not a transcript: retention leaves it alone.
    let mut other = Secret::default();
    other.metadata.name = Some("x-attach-not-a-transcript".into());
    other.metadata.labels = secret.metadata.labels.clone();
    secrets.create(&PostParams::default(), &other).await?;

    let closed = wait_phase(
        cluster,
        "x-attach",
        SessionPhase::Closed,
        Some("AttachTimeout"),
        WAIT,
    )
    .await?;
    assert!(
        closed
            .status
            .as_ref()
            .and_then(|s| s.ended_at.as_ref())
            .is_some()
    );
    let sessions: Api<NodeShellSession> = Api::all(cluster.client(Identity::Admin).await?);
    wait_for("x-attach deleted after retention", WAIT, || async {
        Ok(sessions.get_opt("x-attach").await?.is_none().then_some(()))
    })
    .await?;
    wait_for("its transcript secret deleted", WAIT, || async {
        Ok(secrets
            .get_opt("x-attach-transcript-0")
            .await?
            .is_none()
            .then_some(()))
    })
    .await?;
    assert!(
        secrets
            .get_opt("x-attach-not-a-transcript")
            .await?
            .is_some(),
        "retention deleted an Opaque Secret that only shares the session label"
    );
    Ok(())
}

/// A Lease's renewTime `offset` from now (MicroTime: the apiserver wants microseconds).
fn micro_time_from_now(offset: SignedDuration) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::to_value(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            k8s_openapi::jiff::Timestamp::now().checked_add(offset)?,
        ),
    )?)
}

/// Active, held by a gateway pod whose Lease (in the controller's namespace, not the
/// transcripts') is renewed: it outlives the no-Lease grace (`--heartbeat-timeout`, 4 s) while
/// the Lease is valid, and is Closed GatewayLost once the Lease runs out unrenewed.
async fn gateway_lease_runs_out(cluster: &LocalCluster) -> anyhow::Result<()> {
    admitted(cluster, "x-leased", "leased").await?;
    let leases: Api<Lease> =
        Api::namespaced(cluster.client(Identity::Admin).await?, SYSTEM_NAMESPACE);
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": nodeshell::api::gateway_lease_name("gateway-leased"),
            "labels": { nodeshell::api::GATEWAY_LEASE_LABEL: "gateway" }
        },
        "spec": {
            "holderIdentity": "gateway-leased",
            "leaseDurationSeconds": 12,
            "renewTime": micro_time_from_now(SignedDuration::ZERO)?,
        }
    });
    leases
        .patch(
            &nodeshell::api::gateway_lease_name("gateway-leased"),
            &PatchParams::apply("e2e-gateway").force(),
            &Patch::Apply(&lease),
        )
        .await?;
    let renewed = Instant::now();
    gateway_status(
        cluster,
        "x-leased",
        json!({
            "phase": "Active",
            "startedAt": time_from_now(SignedDuration::ZERO)?,
            "lastActivityAt": time_from_now(SignedDuration::ZERO)?,
            "gateway": { "pod": "gateway-leased" }
        }),
    )
    .await?;
    // Past the no-Lease grace: the Lease, still valid, keeps it Active.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let sessions: Api<NodeShellSession> = Api::all(cluster.client(Identity::Admin).await?);
    let alive = sessions.get("x-leased").await?;
    assert_eq!(
        alive.phase(),
        SessionPhase::Active,
        "a renewed Lease keeps the session: {:?}",
        alive.status
    );
    let closed = wait_phase(
        cluster,
        "x-leased",
        SessionPhase::Closed,
        Some("GatewayLost"),
        WAIT,
    )
    .await?;
    assert!(
        renewed.elapsed() >= Duration::from_secs(11),
        "not before the Lease ran out"
    );
    let message = closed
        .status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains("nodeshell-gateway-gateway-leased"),
        "{message}"
    );
    Ok(())
}

/// Active with a gateway older than the Lease (a per-session heartbeat, no Lease) that stops
/// heartbeating: Closed GatewayLost after `--heartbeat-timeout`.
async fn gateway_lost(cluster: &LocalCluster) -> anyhow::Result<()> {
    admitted(cluster, "x-lost", "lost").await?;
    gateway_status(
        cluster,
        "x-lost",
        json!({
            "phase": "Active",
            "startedAt": time_from_now(SignedDuration::ZERO)?,
            "lastActivityAt": time_from_now(SignedDuration::ZERO)?,
            "gateway": { "pod": "gateway-0", "heartbeatAt": time_from_now(SignedDuration::ZERO)? }
        }),
    )
    .await?;
    let closed = wait_phase(
        cluster,
        "x-lost",
        SessionPhase::Closed,
        Some("GatewayLost"),
        WAIT,
    )
    .await?;
    assert!(
        closed
            .status
            .as_ref()
            .and_then(|s| s.message.as_deref())
            .is_some_and(|m| m.contains("gateway-0"))
    );
    // A gateway that comes back too late cannot revive the session: the CRD refuses it.
    let revived = gateway_status(cluster, "x-lost", json!({ "phase": "Active" })).await;
    let error = revived.expect_err("a Closed session stays Closed");
    assert!(error.to_string().contains("cannot change"), "{error}");
    Ok(())
}

/// Idle past `idleSeconds` + grace: Closing IdleTimeout for the gateway to act on; when no
/// gateway finishes within the closing grace, Closed (still IdleTimeout).
async fn idle_backstop_then_closing_grace(cluster: &LocalCluster) -> anyhow::Result<()> {
    admitted(cluster, "x-idle", "idle").await?;
    gateway_status(
        cluster,
        "x-idle",
        json!({
            "phase": "Active",
            "startedAt": time_from_now(SignedDuration::from_secs(-900))?,
            // idleSeconds (600) + grace (1 s) + the lag lastActivityAt may have (180 s).
            "lastActivityAt": time_from_now(SignedDuration::from_secs(-800))?,
            "gateway": { "pod": "gateway-0", "heartbeatAt": time_from_now(SignedDuration::ZERO)? }
        }),
    )
    .await?;
    wait_phase(
        cluster,
        "x-idle",
        SessionPhase::Closing,
        Some("IdleTimeout"),
        WAIT,
    )
    .await?;
    let closed = wait_phase(
        cluster,
        "x-idle",
        SessionPhase::Closed,
        Some("IdleTimeout"),
        WAIT,
    )
    .await?;
    let status = closed.status.unwrap_or_default();
    assert!(status.ended_at.is_some());
    assert!(
        status.duration_seconds.is_some_and(|d| d >= 900),
        "{:?}",
        status.duration_seconds
    );
    Ok(())
}

/// Open longer than `maxDurationSeconds` + grace: Closing MaxDuration.
async fn max_duration_backstop(cluster: &LocalCluster) -> anyhow::Result<()> {
    admitted(cluster, "x-max", "max").await?;
    gateway_status(
        cluster,
        "x-max",
        json!({
            "phase": "Active",
            "startedAt": time_from_now(SignedDuration::from_secs(-3700))?,
            "lastActivityAt": time_from_now(SignedDuration::ZERO)?,
            "gateway": { "pod": "gateway-0", "heartbeatAt": time_from_now(SignedDuration::ZERO)? }
        }),
    )
    .await?;
    wait_phase(
        cluster,
        "x-max",
        SessionPhase::Closing,
        Some("MaxDuration"),
        WAIT,
    )
    .await?;
    Ok(())
}

/// `spec.terminate` on an Admitted session nobody attached to: Closed AdminTerminated.
async fn terminate(cluster: &LocalCluster) -> anyhow::Result<()> {
    admitted(cluster, "x-term", "term").await?;
    let sessions: Api<NodeShellSession> = Api::all(cluster.client(Identity::SessionAdmin).await?);
    sessions
        .patch(
            "x-term",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "terminate": true } })),
        )
        .await?;
    wait_phase(
        cluster,
        "x-term",
        SessionPhase::Closed,
        Some("AdminTerminated"),
        WAIT,
    )
    .await?;
    Ok(())
}

/// Ready reflects validation; a policy without a region says what to fix; sessions under it
/// are refused with PolicyDenied.
async fn policy_status(cluster: &LocalCluster) -> anyhow::Result<()> {
    let policies: Api<NodeShellPolicy> = Api::all(cluster.client(Identity::Admin).await?);
    wait_for("policy expiry Ready", WAIT, || async {
        let p = policies.get(POLICY).await?;
        let ready = p.status.as_ref().is_some_and(|s| {
            s.observed_generation == p.metadata.generation
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
                && s.active_sessions.is_some()
        });
        Ok(ready.then_some(()))
    })
    .await?;
    // The example policies in config/ are accepted by the apiserver and come out Ready.
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut examples = Vec::new();
    for entry in std::fs::read_dir(&config)? {
        let path = entry?.path();
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if file.starts_with("policy-") && file.ends_with(".yaml") {
            let yaml = std::fs::read_to_string(&path)?;
            cluster.apply_yaml(&yaml).await?;
            let policy: NodeShellPolicy = serde_saphyr::from_str(&yaml)?;
            examples.push(policy.name_any());
        }
    }
    anyhow::ensure!(!examples.is_empty(), "no example policies in config/");
    for name in &examples {
        wait_for(&format!("example policy {name} Ready"), WAIT, || async {
            let p = policies.get(name).await?;
            let ready = p.status.is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
            Ok(ready.then_some(()))
        })
        .await?;
    }
    apply_policy(
        cluster,
        "expiry-no-region",
        json!({ "aws": { "region": null } }),
    )
    .await?;
    let bad = wait_for("policy expiry-no-region not Ready", WAIT, || async {
        let p = policies.get("expiry-no-region").await?;
        Ok(p.status.and_then(|s| {
            s.conditions
                .into_iter()
                .find(|c| c.type_ == "Ready" && c.status == "False")
        }))
    })
    .await?;
    assert_eq!(bad.reason, "MissingRegion");
    assert!(bad.message.contains("aws.region"), "{}", bad.message);
    create_gateway_session(cluster, "x-denied", "denied", "expiry-no-region").await?;
    let denied = wait_phase(
        cluster,
        "x-denied",
        SessionPhase::Rejected,
        Some("PolicyDenied"),
        WAIT,
    )
    .await?;
    assert!(
        denied
            .status
            .and_then(|s| s.message)
            .is_some_and(|m| m.contains("aws.region"))
    );
    Ok(())
}

/// A session whose spec is not what its node and policy say now is refused at admission,
/// whoever wrote it: another instance than the node's (NodeNotEligible), a node that does
/// not exist (NodeNotEligible), another role than the policy's (PolicyDenied).
async fn spec_recheck(cluster: &LocalCluster) -> anyhow::Result<()> {
    ensure_session_node(cluster).await?;
    let api: Api<NodeShellSession> = Api::all(cluster.client(Identity::Gateway).await?);
    let mut other_instance = gateway_session("x-spec-instance", "spec1", POLICY)?;
    other_instance.spec.instance_id = "i-0fffffffffffffff0".into();
    let mut no_node = gateway_session("x-spec-node", "spec2", POLICY)?;
    no_node.spec.node_name = "ip-10-9-9-9.ec2.internal".into();
    let mut other_role = gateway_session("x-spec-role", "spec3", POLICY)?;
    other_role.spec.role_arn = "arn:aws:iam::123456789012:role/cluster-admin".into();
    for s in [&other_instance, &no_node, &other_role] {
        api.create(&PostParams::default(), s).await?;
    }
    for (name, reason, words) in [
        ("x-spec-instance", "NodeNotEligible", "i-0fffffffffffffff0"),
        ("x-spec-node", "NodeNotEligible", "does not exist"),
        ("x-spec-role", "PolicyDenied", "cluster-admin"),
    ] {
        let s = wait_phase(cluster, name, SessionPhase::Rejected, Some(reason), WAIT).await?;
        let message = s.status.and_then(|st| st.message).unwrap_or_default();
        anyhow::ensure!(message.contains(words), "{name}: {message}");
    }
    // The same spec, as the gateway writes it, is admitted.
    create_gateway_session(cluster, "x-spec-good", "spec4", POLICY).await?;
    wait_phase(cluster, "x-spec-good", SessionPhase::Admitted, None, WAIT).await?;
    Ok(())
}

/// A Rejected session goes after the policy's `retention.rejectedSessionSeconds` (2 s here),
/// while a Closed one of the same policy keeps its `closedSessionSeconds` (an hour).
async fn rejected_retention(cluster: &LocalCluster) -> anyhow::Result<()> {
    const REJECTING: &str = "expiry-rejected";
    apply_policy(
        cluster,
        REJECTING,
        json!({
            "limits": { "maxSessionsPerUser": 1 },
            "retention": { "closedSessionSeconds": 3600, "rejectedSessionSeconds": 2 }
        }),
    )
    .await?;
    create_gateway_session(cluster, "x-rej-first", "rej", REJECTING).await?;
    wait_phase(cluster, "x-rej-first", SessionPhase::Admitted, None, WAIT).await?;
    create_gateway_session(cluster, "x-rej-second", "rej", REJECTING).await?;
    wait_phase(
        cluster,
        "x-rej-second",
        SessionPhase::Rejected,
        Some("CapPerUser"),
        WAIT,
    )
    .await?;
    wait_phase(
        cluster,
        "x-rej-first",
        SessionPhase::Closed,
        Some("AttachTimeout"),
        WAIT,
    )
    .await?;
    let sessions: Api<NodeShellSession> = Api::all(cluster.client(Identity::Admin).await?);
    wait_for("the Rejected session deleted after 2 s", WAIT, || async {
        Ok(sessions
            .get_opt("x-rej-second")
            .await?
            .is_none()
            .then_some(()))
    })
    .await?;
    // Longer than the rejected retention: the Closed one is still there.
    tokio::time::sleep(Duration::from_secs(3)).await;
    anyhow::ensure!(
        sessions.get_opt("x-rej-first").await?.is_some(),
        "the Closed session went with the Rejected one's retention"
    );
    Ok(())
}
