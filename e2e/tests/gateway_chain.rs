//! Tamper evidence end to end (issue 12 §3): a recording of several chunks verifies intact
//! through the API and `nodeshell transcript verify`; after one byte of one stored chunk is
//! edited (recompressed, so the gzip is valid and only the chain can tell), both name that
//! chunk.

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};
use nodeshell::localcluster::{Identity, SYSTEM_NAMESPACE};
use serde_json::json;

use crate::support::*;

const T: Duration = Duration::from_secs(60);

/// `nodeshell transcript verify <session>` as the admin: (exit code, stdout).
async fn verify_cli(world: &GatewayWorld, session: &str) -> anyhow::Result<(i32, String)> {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_nodeshell"))
        .args([
            "transcript",
            "verify",
            session,
            "--namespace",
            SYSTEM_NAMESPACE,
        ])
        .arg("--kubeconfig")
        .arg(world.cluster.kubeconfig_path(Identity::Admin))
        .output()
        .await?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

#[tokio::test]
async fn an_edited_chunk_is_named_by_the_api_and_the_cli() -> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let scope = world
        .scope(
            "chain",
            1,
            json!({"transcript": {"maxBytes": 4 * 1024 * 1024}}),
        )
        .await?;
    let user = engineer(6);
    let api = world.client(&user);
    let opened = api.open_ok(&scope.nodes[0]).await?;
    let mut term = Terminal::connect(&opened.attach_url).await?;
    term.hello().await?;
    // About 700 KB of asciicast text: two chunks at least.
    term.send_input(b"seq -f 'tv-%07g' 1 50000; echo 'chain''-done'\r")
        .await?;
    term.expect_output("chain-done", T).await?;
    term.send_input(b"exit 0\r").await?;
    term.control("closed", T).await?;
    let cr = world
        .wait_session(&opened.session, "Closed with a chain head", T, |s| {
            s["status"]["phase"] == "Closed" && !s["status"]["transcript"]["chainHead"].is_null()
        })
        .await?;
    let head = cr["status"]["transcript"]["chainHead"].clone();

    let path = format!("/api/v1/sessions/{}/transcript/verify", opened.session);
    let intact = api.get(&path).await?;
    assert_eq!(intact.status, 200, "{}", intact.body);
    let v = &intact.body["verification"];
    assert_eq!(v["intact"], true, "{v}");
    assert!(v["chunks"].as_u64().unwrap_or(0) >= 2, "{v}");
    assert_eq!(v["computedHead"], head, "{v}");
    let (code, out) = verify_cli(world, &opened.session).await?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"intact\": true"), "{out}");

    // Edit one byte of chunk 0 (tv-0000001 becomes tv-0000009) and store it recompressed.
    let secrets: Api<Secret> = Api::namespaced(
        world.cluster.client(Identity::Admin).await?,
        SYSTEM_NAMESPACE,
    );
    let name = format!("{}-transcript-0", opened.session);
    let secret = secrets.get(&name).await?;
    let gz = secret
        .data
        .and_then(|d| d.get("asciicast.gz").cloned())
        .map(|b| b.0)
        .unwrap_or_default();
    let mut text = gunzip(&gz)?;
    let at = text
        .windows(10)
        .position(|w| w == b"tv-0000001")
        .ok_or_else(|| anyhow::anyhow!("tv-0000001 is not in chunk 0"))?;
    text[at + 9] = b'9';
    let edited = nodeshell::gateway::transcript::gzip(&text);
    let patch = json!({"data": {"asciicast.gz": ByteString(edited)}});
    secrets
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;

    let broken = api.get(&path).await?;
    assert_eq!(broken.status, 200, "{}", broken.body);
    let v = &broken.body["verification"];
    assert_eq!(v["intact"], false, "{v}");
    assert_eq!(v["differsAt"], 0, "{v}");
    assert_eq!(v["differsSecret"], name.as_str(), "{v}");
    let (code, out) = verify_cli(world, &opened.session).await?;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("\"differsSecret\": \"{name}\"")),
        "{out}"
    );
    Ok(())
}
