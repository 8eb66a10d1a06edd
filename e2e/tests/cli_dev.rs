//! `kubectl nodeshell` in a real terminal (tmux) against `nodeshell dev`, as a person tries
//! it on a laptop: `nodeshell dev` brings up the demo, the plugin signs in through its
//! gateway (the dev issuer signs the demo user in at once; the test plays the browser over
//! HTTP since no person is there), refuses unknown and non-EC2 nodes with the code and what
//! to do, opens a shell on a demo node, types, sends Ctrl-C, resizes (the remote
//! `stty size`), loses its connection and comes back with every output line exactly once,
//! and ends with `~.` (exit status 0) leaving the terminal as it was.
//!
//! The connection is dropped for real: the plugin reaches the dev gateway through a TCP
//! forwarder that the test cuts (as a tunnel or a VPN drops), which dev accepts as an
//! origin through its `--allowed-origins` flag, as it would an SSH tunnel's address.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use kube::api::{Api, ListParams};
use nodeshell::api::NodeShellSession;

use support::*;

/// The demo node whose simulated instance is online (`e2e/manifests/samples/nodes.yaml`).
const NODE: &str = "ip-10-0-1-17.ec2.internal";
/// The demo's node that is not an EC2 instance.
const NOT_EC2: &str = "onprem-rack7-node3";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_nodeshell_against_nodeshell_dev_logs_in_opens_resizes_survives_a_drop_and_escapes()
-> anyhow::Result<()> {
    let proxy = SeverableProxy::start().await?;
    let via = format!("http://{}", proxy.addr);
    let run_dir = run_dir("cli");
    let _remove = RemoveOnDrop(run_dir.clone());
    let dev = start_dev(
        &run_dir,
        &["--listen", "127.0.0.1:0", "--allowed-origins", &via],
    )?;
    let lines = dev.stdout_lines()?;
    let (console, _) = tokio::task::block_in_place(|| wait_console_url(&dev, &lines))?;
    proxy.forward_to(console.trim_start_matches("http://").trim_end_matches('/'));
    let started = Instant::now();

    let dir = tempfile::tempdir()?;
    let config = dir.path().join("config");
    let bin = plugin_dir(dir.path())?;

    // Login through dev's gateway: the handle lands in a 0600 file, without any token.
    let said = plugin_login(&bin, &config, &via, None).await?;
    assert!(
        said.contains(&format!("Signed in to {via} as demo (tier admin)")),
        "{said}"
    );
    let file = config.join("nodeshell/session.json");
    let mode = std::fs::metadata(&file)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the sign-in file is private");
    let stored = std::fs::read_to_string(&file)?;
    assert!(!holds_jwt(&stored), "no id_token on disk: {stored}");

    // A real terminal, with kubectl (if present) finding the plugin on PATH.
    let path = format!("{bin}:{}", std::env::var("PATH").unwrap_or_default());
    let tmux = Tmux::start(
        dir.path(),
        100,
        30,
        &[
            ("PATH", path),
            ("XDG_CONFIG_HOME", config.display().to_string()),
            ("NODESHELL_GATEWAY", via.clone()),
            // Set in the local shell only: `${NS_LOCAL:-remote}` tells which shell answered.
            ("NS_LOCAL", "local".to_string()),
        ],
    )?;
    let saved = dir.path().join("stty.before");
    tmux.line(&format!("stty -g > {}; echo SAVED", saved.display()))?;
    tmux.wait_for_text("\nSAVED", 1, PLUGIN_STEP).await?;
    let plugin = if which_kubectl() {
        "kubectl nodeshell"
    } else {
        "kubectl-nodeshell"
    };

    // Refusals say the code and what to do, and fail the command.
    let refusals = [
        (
            "no-such-node",
            "(E_NOT_FOUND)",
            "hint: check the name: `kubectl get nodes`",
        ),
        (
            NOT_EC2,
            "(E_NODE_NOT_EC2)",
            "hint: the node is not an EC2 instance",
        ),
    ];
    for (done, (node, code, hint)) in refusals.into_iter().enumerate() {
        tmux.line(&format!("{plugin} {node}; echo STATUS-$?"))?;
        let screen = tmux
            .wait_for_text("\nSTATUS-", done + 1, PLUGIN_STEP)
            .await?;
        assert!(
            screen.contains(code)
                && screen.contains(hint)
                && screen.matches("\nSTATUS-1").count() == done + 1,
            "{screen}"
        );
    }

    // Open a shell on the demo node.
    tmux.line(&format!("{plugin} {NODE} --reason 'cli dev e2e'"))?;
    tmux.wait_for_text("(end it with Enter ~.)", 1, PLUGIN_STEP)
        .await?;

    // Type, see the output.
    tmux.line("echo CLI-${NS_LOCAL:-remote}-$((6*7))")?;
    tmux.wait_for_text("CLI-remote-42", 1, PLUGIN_STEP).await?;

    // Ctrl-C goes to the remote shell, which goes on.
    tmux.line("sleep 30")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    tmux.keys(&["C-c"])?;
    tmux.line("echo AFTER-${NS_LOCAL:-remote}-$((2+3))")?;
    tmux.wait_for_text("AFTER-remote-5", 1, PLUGIN_STEP).await?;

    // Resize: the remote terminal follows.
    tmux.resize(120, 40)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    tmux.line("echo SIZE-${NS_LOCAL:-remote} $(stty size)")?;
    tmux.wait_for_text("SIZE-remote 40 120", 1, PLUGIN_STEP)
        .await?;

    // Drop the connection mid-output: it comes back and every line shows exactly once.
    tmux.line(
        "for i in $(seq 1 300); do echo line$i; sleep 0.01; done; echo LOOP-${NS_LOCAL:-remote}",
    )?;
    tmux.wait_for_text("\nline40", 1, PLUGIN_STEP).await?;
    proxy.sever();
    let screen = tmux
        .wait_for_text("LOOP-remote", 1, Duration::from_secs(40))
        .await?;
    for notice in RECONNECT_NOTICES {
        assert_eq!(screen.matches(notice).count(), 1, "{notice}\n{screen}");
    }
    let wrong = lines_not_once(&screen, 300);
    assert!(
        wrong.is_empty(),
        "lost or doubled after the drop: {wrong:?}\n{screen}"
    );

    // The shell still answers after the reattach, then `~.` ends it.
    tmux.line("echo BACK-${NS_LOCAL:-remote}-$((3+4))")?;
    tmux.wait_for_text("BACK-remote-7", 1, PLUGIN_STEP).await?;
    tmux.keys(&["Enter"])?;
    tmux.type_text("~.")?;
    let ended = tmux.wait_for_text(" ended (", 1, PLUGIN_STEP).await?;
    assert!(ended.contains("nodeshell: session "), "{ended}");
    // Ended by the person: exit status 0.
    tmux.line("echo EXIT-$?")?;
    let screen = tmux.wait_for_text("\nEXIT-", 1, PLUGIN_STEP).await?;
    assert!(screen.contains("\nEXIT-0"), "{screen}");

    // The terminal is as it was before.
    let after = dir.path().join("stty.after");
    tmux.line(&format!("stty -g > {}; echo RESTORED", after.display()))?;
    tmux.wait_for_text("\nRESTORED", 1, PLUGIN_STEP).await?;
    assert_eq!(
        std::fs::read_to_string(&saved)?,
        std::fs::read_to_string(&after)?,
        "the terminal's mode is restored"
    );

    // The session closed as the person's own close, with the reason recorded.
    let admin = admin_client(&run_dir.join("kubeconfig")).await?;
    let sessions: Api<NodeShellSession> = Api::all(admin);
    let closed = wait_for("the session closed", PLUGIN_STEP, || {
        let sessions = sessions.clone();
        async move {
            let all = sessions.list(&ListParams::default()).await?.items;
            Ok(all
                .iter()
                .filter(|s| s.spec.node_name == NODE)
                .map(serde_json::to_value)
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .find(|s| s["status"]["phase"] == "Closed"))
        }
    })
    .await?;
    assert_eq!(closed["spec"]["reason"], "cli dev e2e", "{closed}");
    assert_eq!(closed["status"]["reason"], "UserClosed", "{closed}");
    // Printed, not asserted: how long the plugin's part took once dev was up.
    eprintln!("the plugin's steps took {:?}", started.elapsed());

    dev.send_signal("TERM")?;
    anyhow::ensure!(
        dev.wait_exit(Duration::from_secs(60)).await,
        "nodeshell dev did not stop on SIGTERM"
    );
    Ok(())
}

/// Removes dev's run directory also when the test fails half-way (dev removes its files on
/// SIGTERM, not when killed).
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
