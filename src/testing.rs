//! Fixtures shared by the unit tests: a usable policy and a session under it, built the same
//! way in every test module that decides about them.

use crate::api::{
    NodeShellPolicy, NodeShellPolicySpec, NodeShellSession, NodeShellSessionSpec,
    NodeShellSessionStatus, PolicyAws, SessionPhase, SessionUser,
};
use crate::controller::admission::NodeView;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use std::collections::BTreeMap;

/// The providerID of `node-1`, the node every fixture session runs on.
pub(crate) const NODE_PROVIDER_ID: &str = "aws:///eu-west-1a/i-0123456789abcdef0";

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// `node-1` as the controller reads it: no labels, the EC2 instance the sessions name.
pub(crate) fn node_view() -> NodeView<'static> {
    NodeView::Found {
        labels: &NO_LABELS,
        provider_id: Some(NODE_PROVIDER_ID),
    }
}

/// A policy spec that passes validation: tier `admin`, a role, an audience and a region.
pub(crate) fn policy_spec() -> NodeShellPolicySpec {
    NodeShellPolicySpec {
        tiers: vec!["admin".into()],
        aws: PolicyAws {
            role_arn: Some("arn:aws:iam::123456789012:role/shell".into()),
            oidc_audience: Some("nodeshell".into()),
            region: Some("eu-west-1".into()),
            ..PolicyAws::default()
        },
        ..NodeShellPolicySpec::default()
    }
}

/// A valid policy `name` with caps of `per_user` live sessions per person and `total` in all.
pub(crate) fn policy(name: &str, per_user: i32, total: i32) -> NodeShellPolicy {
    let mut spec = policy_spec();
    spec.limits.max_sessions_per_user = per_user;
    spec.limits.max_sessions_total = total;
    NodeShellPolicy::new(name, spec)
}

/// A session `name` of `user` (sub and name, tier `admin`) under `policy`, created at
/// `created` (Unix seconds), with `phase` (no status at all for `None`, i.e. Pending).
pub(crate) fn session(
    name: &str,
    user: &str,
    policy: &str,
    created: i64,
    phase: Option<SessionPhase>,
) -> NodeShellSession {
    let mut s = NodeShellSession::new(
        name,
        NodeShellSessionSpec {
            node_name: "node-1".into(),
            instance_id: "i-0123456789abcdef0".into(),
            region: "eu-west-1".into(),
            policy_name: policy.into(),
            user: SessionUser {
                sub: user.into(),
                name: user.into(),
                tier: "admin".into(),
                ..SessionUser::default()
            },
            role_arn: "arn:aws:iam::123456789012:role/shell".into(),
            role_session_name: format!("ns-{user}"),
            document_name: "SSM-SessionManagerRunShell".into(),
            ..NodeShellSessionSpec::default()
        },
    );
    s.metadata.creation_timestamp = Timestamp::from_second(created).ok().map(Time);
    s.status = phase.map(|phase| NodeShellSessionStatus {
        phase: Some(phase),
        ..NodeShellSessionStatus::default()
    });
    s
}

/// A plain-HTTP server that answers each request with `200`, `content_type` and `body`, but
/// only once `burst` requests are waiting at once (so a burst of that many calls needs as
/// many connections), and counts the connections still open. Returns its URL and the count.
pub(crate) async fn server_answering_bursts(
    burst: usize,
    content_type: &'static str,
    body: &'static str,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let open = Arc::new(AtomicUsize::new(0));
    let count = open.clone();
    let waiting = Arc::new(tokio::sync::Barrier::new(burst));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let (count, waiting) = (count.clone(), waiting.clone());
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                'requests: loop {
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                            break 'requests;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut request_body = vec![0; length];
                    if stream.read_exact(&mut request_body).await.is_err() {
                        break;
                    }
                    waiting.wait().await;
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream
                        .get_mut()
                        .write_all(response.as_bytes())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                count.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (url, open)
}
