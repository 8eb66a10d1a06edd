//! Interop: the independent `aws-ssm-bridge` client opens a shell session on the simulator,
//! runs a command and reads its output. The bridge is a Rust dependency of this crate, so
//! this peer is always there (nothing to skip). The run reports the simulated agent's resend
//! counters and bounds them: with no fault knob the bridge acknowledges output as it comes.

use std::time::Duration;

use aws_ssm_bridge::{EndpointPolicy, SessionBuilder, SessionManager};
use futures::StreamExt;
use nodeshell::aws::{WebIdentityRequest, assume_role_with_web_identity};
use nodeshell::sim::{SimConfig, Simulator};

/// Most agent resends a fault-free bridge session may cause (an ack later than the agent's
/// RTO over loopback, e.g. while the bridge is still starting up).
const MAX_RESENDS_WITHOUT_FAULTS: u64 = 5;

#[tokio::test]
async fn aws_ssm_bridge_runs_a_command_on_the_simulator() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let sim = Simulator::start(SimConfig::for_tests())
        .await
        .expect("simulator starts");
    let endpoints = sim.aws_endpoints();
    let request = WebIdentityRequest {
        role_arn: sim.default_role_arn(),
        role_session_name: "ns-bridge".to_string(),
        web_identity_token: sim.mint_token("alice").expect("token"),
        duration_seconds: None,
    };
    let creds = assume_role_with_web_identity(&endpoints, &request)
        .await
        .expect("assume role");
    let sdk_creds = aws_credential_types::Credentials::new(
        creds.access_key_id.clone(),
        creds.secret_access_key().to_string(),
        Some(creds.session_token().to_string()),
        None,
        "test",
    );
    let sdk_config = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::v2026_01_12())
        .region(aws_config::Region::new(sim.region().to_string()))
        .endpoint_url(sim.urls().ssm.clone())
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(sdk_creds),
        )
        .build();
    let manager = SessionManager::from_conf(&sdk_config);
    let session = SessionBuilder::new("i-0123456789abcdef0")
        .reason("interop with aws-ssm-bridge")
        .endpoint_policy(EndpointPolicy::AllowAny)
        .ready_timeout(Duration::from_secs(20))
        .start_with(&manager)
        .await
        .expect("bridge starts a session");
    let mut output = session.output();
    session.wait_ready().await.expect("session ready");
    assert!(session.id().starts_with("ns-bridge-"));
    session
        .send(&b"echo bridge-$((6*7))\r"[..])
        .await
        .expect("send");
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !seen.contains("bridge-42") {
        match tokio::time::timeout_at(deadline, output.next()).await {
            Ok(Some(chunk)) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(None) => panic!("output ended early: {seen:?}"),
            Err(_) => panic!("no command output within 20 s: {seen:?}"),
        }
    }
    // The shell's exit ends the session from the agent's side.
    session.send(&b"exit 5\r"[..]).await.expect("send");
    tokio::time::timeout(Duration::from_secs(20), session.closed())
        .await
        .expect("session closes after exit");
    println!(
        "bridge close reason: {:?}, exit code {:?}",
        session.close_reason(),
        session.exit_code()
    );
    // The shell document's agent sends no EXIT_CODE message, so no peer can know the status.
    assert_eq!(session.exit_code(), None);
    let (resends, not_kept) = sim
        .agent_counters(session.id())
        .expect("the session is still known");
    println!("agent resends: {resends}, sent once without keeping: {not_kept}");
    assert_eq!(not_kept, 0, "the agent's outgoing buffer never filled");
    assert!(
        resends <= MAX_RESENDS_WITHOUT_FAULTS,
        "{resends} agent resends in a fault-free bridge session"
    );
    let calls = sim.calls();
    assert!(calls.iter().any(|c| c.operation == "StartSession"
        && c.principal_arn.as_deref()
            == Some("arn:aws:sts::123456789012:assumed-role/nodeshell-user/ns-bridge")));
    sim.shutdown().await;
}
