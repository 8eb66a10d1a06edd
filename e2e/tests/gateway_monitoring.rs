//! Monitoring that ships (issue 14 §4), against the shared world's real processes: the
//! `/metrics` of a running controller and gateway pass `promtool check metrics`; every metric
//! the Grafana dashboard and the alerts name is exported; the alerts pass `promtool check
//! rules`; the cluster-wide gauges come from the leader only.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use crate::support::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn monitoring(file: &str) -> PathBuf {
    root().join("charts/nodeshell/files/monitoring").join(file)
}

/// `NODESHELL_PROMTOOL`, else `e2e/.bin/promtool`; a missing binary names the make target.
fn promtool() -> PathBuf {
    let path = std::env::var_os("NODESHELL_PROMTOOL")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("e2e/.bin/promtool"));
    assert!(
        path.is_file(),
        "promtool not found at {}: run `make promtool` (builds it from the Go module proxy) or set NODESHELL_PROMTOOL",
        path.display()
    );
    path
}

/// An OpenMetrics exposition in the Prometheus text format promtool reads: the two differ in
/// a counter family's name (OpenMetrics `# TYPE x counter` with samples `x_total`, the text
/// format `# TYPE x_total counter`) and in the `# EOF` and `# UNIT` lines. Nothing else is
/// changed, so every metric name and help text is checked as served.
fn as_prometheus_text(openmetrics: &str) -> String {
    let counters: BTreeSet<String> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .map(str::to_owned)
        .collect();
    let mut out = String::new();
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// `promtool check metrics` on `text` (given on stdin, in the Prometheus text format):
/// success and what it printed.
async fn check_metrics(openmetrics: &str) -> anyhow::Result<(bool, String)> {
    let text = as_prometheus_text(openmetrics);
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(text.as_bytes()).await?;
    drop(stdin);
    let output = child.wait_with_output().await?;
    Ok((
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    ))
}

/// The metric families of an exposition: every `# TYPE` name.
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The family a series name in a query belongs to (`…_total`, `…_bucket` and the like are
/// samples of the family without the suffix).
fn family_of(series: &str) -> String {
    for suffix in ["_total", "_bucket", "_count", "_sum"] {
        if let Some(family) = series.strip_suffix(suffix) {
            return family.to_owned();
        }
    }
    series.to_owned()
}

/// Every `nodeshell_*` and `process_*` series a query text names.
fn series_named(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let start_ok = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == '_');
        if start_ok {
            let rest: String = bytes[i..].iter().collect();
            if rest.starts_with("nodeshell_") || rest.starts_with("process_") {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                i += name.len();
                names.insert(name);
                continue;
            }
        }
        i += 1;
    }
    names
}

async fn controller_metrics(controller: &ControllerProcess) -> anyhow::Result<String> {
    let addr = controller.admin_addr().await?;
    let (status, text) = http_get(&addr, "/metrics").await?;
    anyhow::ensure!(status == 200, "/metrics answered {status}: {text}");
    Ok(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_metrics_pass_promtool_and_cover_the_dashboard_and_alerts() -> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    // One real session (open, shell, exit): labelled counters such as opens, decisions and
    // ends have a series only once something happened.
    let scope = world.scope("monitoring", 1, json!({})).await?;
    let api = world.client(&engineer(1));
    let opened = api
        .open(&scope.nodes[0], json!({"cols": 80, "rows": 24}))
        .await?;
    anyhow::ensure!(opened.status == 201, "{}", opened.body);
    let opened = Opened::from_body(&api.base, &opened.body)?;
    let mut term = Terminal::connect(&opened.attach_url).await?;
    term.hello().await?;
    term.expect_output("$ ", Duration::from_secs(60)).await?;
    term.send_input(b"exit\n").await?;
    let session = opened.session.clone();
    wait_for("the session's close row", Duration::from_secs(60), || {
        let closed = world.gateway().audit_rows().into_iter().any(|r| {
            r["session"] == session.as_str() && audit_verb(&r) == Some("ssm_session_close")
        });
        async move { Ok(closed.then_some(())) }
    })
    .await?;
    let leader = &world.controllers[0];
    // The leader writes its cluster-wide gauges after its first pass.
    let leader_text = wait_for(
        "the leader's cluster-wide gauges",
        Duration::from_secs(30),
        || async {
            let text = controller_metrics(leader).await?;
            Ok(text
                .contains("nodeshell_controller_leader 1")
                .then_some(text)
                .filter(|t| t.contains("# TYPE nodeshell_controller_session_objects gauge")))
        },
    )
    .await?;
    let gateway_text = world.gateway().metrics_text().await?;

    for (who, text) in [("controller", &leader_text), ("gateway", &gateway_text)] {
        let (ok, said) = check_metrics(text).await?;
        assert!(
            ok && said.trim().is_empty(),
            "promtool check metrics on the {who}: {said}\n{text}"
        );
        assert!(
            text.contains(&format!(
                "nodeshell_{who}_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{who}: {text}"
        );
        for family in [
            "process_cpu_seconds",
            "process_resident_memory_bytes",
            "process_open_fds",
        ] {
            assert!(
                families(text).contains(family),
                "{who} lacks {family}: {text}"
            );
        }
    }

    // Every series the dashboard and the alerts query exists.
    let mut exported = families(&leader_text);
    exported.extend(families(&gateway_text));
    let dashboard = std::fs::read_to_string(monitoring("dashboard.json"))?;
    let dashboard_json: serde_json::Value = serde_json::from_str(&dashboard)?;
    let alerts = std::fs::read_to_string(monitoring("alerts.yaml"))?;
    let mut queried = series_named(&dashboard_json.to_string());
    let alert_count = alerts.matches("- alert: ").count();
    queried.extend(series_named(&alerts));
    assert!(queried.len() > 10, "{queried:?}");
    let missing: Vec<&String> = queried
        .iter()
        .filter(|s| !exported.contains(&family_of(s)))
        .collect();
    assert!(
        missing.is_empty(),
        "named but not exported: {missing:?}\nexported: {exported:?}"
    );
    for alert in [
        "NodeshellNoLeader",
        "NodeshellGatewayLost",
        "NodeshellTranscriptStorageFailing",
        "NodeshellCapRejectionsSpiking",
        "NodeshellAdmissionSlow",
    ] {
        assert!(alerts.contains(&format!("- alert: {alert}\n")), "{alert}");
    }

    let output = tokio::process::Command::new(promtool())
        .args(["check", "rules"])
        .arg(monitoring("alerts.yaml"))
        .output()
        .await?;
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && said.contains(&format!("SUCCESS: {alert_count} rules found")),
        "promtool check rules: {said}{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // A standby exports no cluster-wide gauge: a sum over replicas counts each session once.
    let standby = world.start_controller("monitoring-standby")?;
    let standby_text = wait_for(
        "the standby's /metrics",
        Duration::from_secs(30),
        || async {
            let text = controller_metrics(&standby).await.ok();
            Ok(text.filter(|t| t.contains("nodeshell_controller_leader 0")))
        },
    )
    .await?;
    for family in ["pending_sessions", "live_sessions", "session_objects"] {
        assert!(
            !standby_text.contains(&format!("nodeshell_controller_{family}")),
            "{family} on the standby:\n{standby_text}"
        );
        assert!(leader_text.contains(&format!("# TYPE nodeshell_controller_{family} gauge")));
    }
    let (ok, said) = check_metrics(&standby_text).await?;
    assert!(ok, "{said}");
    world.cleanup(&scope).await?;
    Ok(())
}
