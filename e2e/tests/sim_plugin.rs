//! Interop: AWS's official `session-manager-plugin` runs a shell session on the simulator
//! through pipes. The binary comes from `NODESHELL_SSM_PLUGIN`; without it the test says why
//! it skipped.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use nodeshell::aws::{SsmSessions, WebIdentityRequest, assume_role_with_web_identity};
use nodeshell::sim::{CallRecord, FaultKnobs, SimConfig, Simulator};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const INSTANCE: &str = "i-0123456789abcdef0";

#[tokio::test]
async fn session_manager_plugin_runs_a_shell_on_the_simulator() {
    run_plugin(FaultKnobs::default()).await;
}

/// The relay closes the socket after a few output frames: the plugin calls ResumeSession
/// (SigV4-signed by the Go SDK) and reconnects with the new token; the session goes on.
#[tokio::test]
async fn session_manager_plugin_resumes_after_the_socket_is_closed() {
    let knobs = FaultKnobs {
        close_after_frames: Some(2),
        ..FaultKnobs::default()
    };
    if let Some(calls) = run_plugin(knobs).await {
        let resumed = calls
            .iter()
            .find(|c| c.operation == "ResumeSession")
            .expect("the plugin called ResumeSession");
        assert_eq!(resumed.error_code, None, "{resumed:?}");
        assert_eq!(
            resumed.principal_arn.as_deref(),
            Some("arn:aws:sts::123456789012:assumed-role/nodeshell-user/ns-plugin")
        );
    }
}

/// Runs one plugin session with `knobs` on the instance; returns the call log, or None when
/// the plugin binary is not configured.
async fn run_plugin(knobs: FaultKnobs) -> Option<Vec<CallRecord>> {
    let Some(plugin) = std::env::var_os("NODESHELL_SSM_PLUGIN") else {
        println!(
            "skipped: NODESHELL_SSM_PLUGIN is not set (path to a session-manager-plugin binary)"
        );
        return None;
    };
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let sim = Simulator::start(SimConfig::for_tests())
        .await
        .expect("simulator starts");
    sim.set_instance_faults(INSTANCE, knobs)
        .expect("instance exists");
    let endpoints = sim.aws_endpoints();
    let request = WebIdentityRequest {
        role_arn: sim.default_role_arn(),
        role_session_name: "ns-plugin".to_string(),
        web_identity_token: sim.mint_token("alice").expect("token"),
        duration_seconds: None,
    };
    let creds = assume_role_with_web_identity(&endpoints, &request)
        .await
        .expect("assume role");
    let ssm = SsmSessions::new(&endpoints, &creds);
    let stream = ssm
        .start_session(INSTANCE, None, None, HashMap::new())
        .await
        .expect("start session");
    let response = json!({
        "SessionId": stream.session_id,
        "TokenValue": stream.token_value,
        "StreamUrl": stream.stream_url,
    })
    .to_string();
    let params = json!({"Target": INSTANCE}).to_string();
    let home = tempfile::tempdir().expect("temp home");
    let mut child = tokio::process::Command::new(&plugin)
        .arg(response)
        .arg(sim.region())
        .arg("StartSession")
        .arg("")
        .arg(params)
        .arg(&sim.urls().ssm)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("AWS_ACCESS_KEY_ID", &creds.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", creds.secret_access_key())
        .env("AWS_SESSION_TOKEN", creds.session_token())
        .env("AWS_REGION", sim.region())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("plugin starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let err_task = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });

    let mut seen = String::new();
    let mut buf = vec![0u8; 4096];
    let mut sent_command = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut wanted = "plugin-42";
    loop {
        if seen.contains(wanted) {
            if wanted == "plugin-42" {
                stdin.write_all(b"exit\n").await.expect("write exit");
                wanted = "Exiting session";
                continue;
            }
            break;
        }
        // The plugin forwards stdin only once the session type is known (first output).
        if !sent_command && seen.contains("Starting session") {
            tokio::time::sleep(Duration::from_millis(500)).await;
            stdin
                .write_all(b"echo plugin-$((6*7))\n")
                .await
                .expect("write command");
            sent_command = true;
        }
        match tokio::time::timeout_at(deadline, stdout.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Ok(Err(e)) => panic!("reading plugin output: {e}"),
            Err(_) => {
                let _ = child.start_kill();
                let err = err_task.await.unwrap_or_default();
                panic!("plugin did not show {wanted:?} in 30 s; stdout {seen:?}; stderr {err:?}");
            }
        }
    }
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("plugin exits after the shell does")
        .expect("wait");
    let err = err_task.await.unwrap_or_default();
    println!("plugin stdout: {seen:?}\nplugin stderr: {err:?}");
    assert!(seen.contains("plugin-42"), "{seen:?}");
    assert!(seen.contains("Exiting session"), "{seen:?}");
    assert!(status.success(), "plugin exit status {status:?}");
    assert_eq!(
        sim.session_status(&stream.session_id),
        Some((true, Some(0)))
    );
    let calls = sim.calls();
    sim.shutdown().await;
    Some(calls)
}
