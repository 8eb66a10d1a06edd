//! The Helm chart in charts/nodeshell, checked with the real `helm` (built from the Go module
//! proxy by `make helm`) and a real kube-apiserver of this binary's own: lint, the values
//! schema, a server-side dry run, then a real install whose RBAC `kubectl auth can-i`
//! proves and whose admission policy refuses sessions from anyone but the gateway.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use nodeshell::api::{NodeShellPolicy, validate_policy};
use nodeshell::gateway::GatewayArgs;
use nodeshell::gateway::config::{GatewayConfig, parse_file};
use nodeshell::localcluster::apply::parse_documents;
use nodeshell::localcluster::{Identity, LocalCluster, Options};
use serde_json::{Value, json};
use support::{kubectl, kubectl_ok, session_json};
use tokio::sync::OnceCell;

/// Namespace and release the real install uses; not the shared cluster's `nodeshell-system`,
/// so every name in the chart has to come from the release.
const NAMESPACE: &str = "shell-ops";
const RELEASE: &str = "nodeshell";
const GATEWAY_SA: &str = "system:serviceaccount:shell-ops:nodeshell-gateway";
const CONTROLLER_SA: &str = "system:serviceaccount:shell-ops:nodeshell-controller";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    root().join("charts/nodeshell")
}

fn multi_account_values() -> PathBuf {
    root().join("config/helm-multi-account.yaml")
}

/// `NODESHELL_HELM`, else `e2e/.bin/helm`; a missing binary names the make target.
fn helm() -> PathBuf {
    let path = std::env::var_os("NODESHELL_HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("e2e/.bin/helm"));
    assert!(
        path.is_file(),
        "helm not found at {}: run `make helm` (builds it from the Go module proxy) or set NODESHELL_HELM",
        path.display()
    );
    path
}

struct HelmRun {
    success: bool,
    stdout: String,
    stderr: String,
}

async fn run_helm(args: &[&str]) -> anyhow::Result<HelmRun> {
    let output = tokio::process::Command::new(helm())
        .args(args)
        // No cluster or repository of the user's: helm renders offline.
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("nodeshell-helm-cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("nodeshell-helm-config"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("nodeshell-helm-data"),
        )
        .output()
        .await?;
    Ok(HelmRun {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// `helm template` for the install release; `extra` adds `-f`/`--set` arguments.
async fn template(extra: &[&str]) -> anyhow::Result<String> {
    let chart = chart();
    let mut args = vec![
        "template",
        RELEASE,
        chart.to_str().unwrap(),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        "1.35.4",
    ];
    args.extend_from_slice(extra);
    let run = run_helm(&args).await?;
    anyhow::ensure!(run.success, "helm template failed: {}", run.stderr);
    Ok(run.stdout)
}

async fn rendered(extra: &[&str]) -> anyhow::Result<Vec<Value>> {
    Ok(parse_documents(&template(extra).await?)?)
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

fn names_of(docs: &[Value], kind: &str) -> Vec<String> {
    docs.iter()
        .filter(|d| d["kind"] == kind)
        .map(|d| d["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

fn gateway_file(docs: &[Value]) -> String {
    find(docs, "ConfigMap", "nodeshell-gateway")["data"]["gateway.yaml"]
        .as_str()
        .unwrap()
        .to_owned()
}

// === chart files ===

/// The CRD template renders charts/nodeshell/files/crds, which `make crds` copies from crds/.
#[test]
fn chart_crds_are_the_generated_crds_byte_for_byte() {
    let generated = root().join("crds");
    let mut names: Vec<_> = std::fs::read_dir(&generated)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let copies = chart().join("files/crds");
    let mut copied: Vec<_> = std::fs::read_dir(&copies)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    copied.sort();
    assert_eq!(
        names, copied,
        "charts/nodeshell/files/crds must hold exactly the files of crds/: run `make crds`"
    );
    for name in names {
        let want = std::fs::read(generated.join(&name)).unwrap();
        let have = std::fs::read(copies.join(&name)).unwrap();
        assert!(
            want == have,
            "charts/nodeshell/files/crds/{} differs from crds/: run `make crds`",
            name.to_string_lossy()
        );
    }
    // helm installs a crds/ folder once and never upgrades it: the CRDs are templates only.
    assert!(
        !chart().join("crds").exists(),
        "charts/nodeshell/crds would be installed once and never upgraded"
    );
}

/// Numbers as f64, so `43200.0` (the generator's) and `43200` (helm's toYaml) compare equal.
fn normalized(value: &Value) -> Value {
    match value {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(items) => Value::Array(items.iter().map(normalized).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), normalized(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[tokio::test]
async fn crds_render_as_templates_kept_on_uninstall() -> anyhow::Result<()> {
    let docs = rendered(&[]).await?;
    let mut rendered_crds: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .collect();
    rendered_crds.sort_by_key(|d| {
        d["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    });
    let generated = parse_documents(&nodeshell::api::crds_yaml()?)?;
    assert_eq!(rendered_crds.len(), generated.len());
    for (have, want) in rendered_crds.iter().zip(&generated) {
        assert_eq!(have["metadata"]["name"], want["metadata"]["name"]);
        assert_eq!(normalized(&have["spec"]), normalized(&want["spec"]));
        assert_eq!(
            have["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
            "{}",
            have["metadata"]["name"]
        );
        assert_eq!(
            have["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "Helm"
        );
    }
    let unkept = rendered(&["--set", "crds.keep=false"]).await?;
    let crd = unkept
        .iter()
        .find(|d| d["kind"] == "CustomResourceDefinition")
        .unwrap();
    assert!(crd["metadata"]["annotations"]["helm.sh/resource-policy"].is_null());
    let none = rendered(&["--set", "crds.enabled=false"]).await?;
    assert!(names_of(&none, "CustomResourceDefinition").is_empty());

    // A policy rendered with its CRD, before the API is served: a post-install hook owned by
    // the release; once the API is served, an ordinary object.
    let policy_values = [
        "--set",
        "nodeShell.awsRoleArn=arn:aws:iam::123456789012:role/x,nodeShell.tiers={admin}",
    ];
    let first = rendered(&policy_values).await?;
    let annotations = &find(&first, "NodeShellPolicy", "default")["metadata"]["annotations"];
    assert_eq!(annotations["helm.sh/hook"], "post-install");
    assert_eq!(annotations["meta.helm.sh/release-name"], RELEASE);
    assert_eq!(annotations["meta.helm.sh/release-namespace"], NAMESPACE);
    let mut served = policy_values.to_vec();
    served.extend([
        "--api-versions",
        "nodeshell.periscope.io/v1alpha1/NodeShellPolicy",
    ]);
    let later = rendered(&served).await?;
    assert!(find(&later, "NodeShellPolicy", "default")["metadata"]["annotations"].is_null());
    Ok(())
}

/// `make image` tags the image the chart runs by default: `<image.repository>:<appVersion>`.
#[test]
fn make_image_tags_the_charts_default_image() {
    let output = std::process::Command::new("make")
        .args(["-s", "-n", "image"])
        .current_dir(root())
        .env_remove("IMAGE")
        .env_remove("IMAGE_TAG")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let command = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let values: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart().join("values.yaml")).unwrap())
            .unwrap();
    let chart_yaml: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart().join("Chart.yaml")).unwrap())
            .unwrap();
    let default_image = format!(
        "{}:{}",
        values["image"]["repository"].as_str().unwrap(),
        chart_yaml["appVersion"].as_str().unwrap()
    );
    assert_eq!(command, format!("docker build -t {default_image} ."));
    // The production image leaves the simulator and `nodeshell dev` out.
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("cargo build --locked --release --no-default-features"),
        "the Dockerfile must build without the `dev` feature"
    );
}

#[tokio::test]
async fn helm_lint_passes_with_default_and_multi_account_values() -> anyhow::Result<()> {
    let chart = chart();
    let values = multi_account_values();
    for args in [
        vec!["lint", "--strict", chart.to_str().unwrap()],
        vec![
            "lint",
            "--strict",
            chart.to_str().unwrap(),
            "-f",
            values.to_str().unwrap(),
        ],
    ] {
        let run = run_helm(&args).await?;
        assert!(run.success, "helm {args:?}: {}{}", run.stdout, run.stderr);
        assert!(run.stdout.contains("0 chart(s) failed"), "{}", run.stdout);
    }
    Ok(())
}

#[tokio::test]
async fn values_schema_rejects_bad_values_with_helms_error() -> anyhow::Result<()> {
    let chart = chart();
    let cases = [
        (
            "nodeShell.idleSeconds=-1",
            "/nodeShell/idleSeconds",
            "minimum",
        ),
        (
            "nodeShell.maxSessionsPerUser=two",
            "/nodeShell/maxSessionsPerUser",
            "want integer",
        ),
        (
            "nodeShell.awsRoleArn=nodeshell-users",
            "/nodeShell/awsRoleArn",
            "does not match pattern",
        ),
        (
            "gateway.heartbeatIntervalSeconds=60",
            "/gateway/heartbeatIntervalSeconds",
            "maximum",
        ),
        (
            "gateway.replayBufferBytes=1024",
            "/gateway/replayBufferBytes",
            "minimum",
        ),
        (
            "gateway.oidc.clientID=typo",
            "/gateway/oidc",
            "'clientID' not allowed",
        ),
        (
            "gateway.oidc.jwksMinRefetchSeconds=1",
            "/gateway/oidc/jwksMinRefetchSeconds",
            "minimum",
        ),
        (
            "gateway.oidc.issuerUrl=http://login.example.com",
            "/gateway/oidc/issuerUrl",
            "does not match pattern",
        ),
    ];
    for (set, location, complaint) in cases {
        let run = run_helm(&[
            "template",
            "x",
            chart.to_str().unwrap(),
            "--kube-version",
            "1.35.4",
            "--set",
            set,
        ])
        .await?;
        assert!(!run.success, "--set {set} was accepted");
        assert!(
            run.stderr
                .contains("values don't meet the specifications of the schema")
                && run.stderr.contains(location)
                && run.stderr.contains(complaint),
            "--set {set}: {}",
            run.stderr
        );
    }
    // A name the default policy holds cannot be reused for an override.
    let run = run_helm(&[
        "template",
        "x",
        chart.to_str().unwrap(),
        "--kube-version",
        "1.35.4",
        "--set",
        "nodeShell.awsRoleArn=arn:aws:iam::123456789012:role/a",
        "--set",
        "nodeShell.clusters.default.awsRoleArn=arn:aws:iam::123456789012:role/b",
        "--set",
        "nodeShell.clusters.default.nodeSelector.matchLabels.a=b",
    ])
    .await?;
    assert!(!run.success);
    assert!(
        run.stderr
            .contains("nodeShell.clusters.default: the name is taken"),
        "{}",
        run.stderr
    );
    Ok(())
}

// === rendered objects ===

#[tokio::test]
async fn gateway_config_is_what_the_gateway_parses() -> anyhow::Result<()> {
    let docs = rendered(&[
        "-f",
        multi_account_values().to_str().unwrap(),
        "--set",
        "gateway.browserWindowBytes=131072",
    ])
    .await?;
    let file = parse_file(&gateway_file(&docs)).map_err(anyhow::Error::msg)?;
    let config = GatewayConfig::resolve(&GatewayArgs::default(), file)?;
    assert_eq!(
        config.oidc.issuer_url,
        "https://login.example.com/realms/ops"
    );
    assert_eq!(config.oidc.client_id, "nodeshell");
    assert_eq!(config.oidc.groups_claim, "groups");
    assert_eq!(config.namespace, NAMESPACE);
    assert_eq!(config.cluster_name, "platform-eu");
    assert_eq!(config.tiers.order, ["admin", "engineer", "viewer"]);
    assert_eq!(config.tiers.groups["sre"], "engineer");
    assert_eq!(config.tiers.admin, ["admin"]);
    // The Ingress host with TLS becomes an https origin on its own.
    assert_eq!(config.allowed_origins, ["https://nodeshell.example.com"]);
    assert_eq!(config.listen.port(), 8443);
    assert_eq!(config.admin_listen.port(), 9090);
    assert_eq!(
        config.http,
        nodeshell::gateway::config::HttpLimits::default()
    );
    assert_eq!(config.live.shutdown_timeout, Duration::from_secs(20));
    assert_eq!(config.live.browser_window_bytes, 128 * 1024);

    // With the defaults the file parses, and the gateway says what is missing.
    let defaults = rendered(&[]).await?;
    let file = parse_file(&gateway_file(&defaults)).map_err(anyhow::Error::msg)?;
    let error = GatewayConfig::resolve(&GatewayArgs::default(), file).unwrap_err();
    assert!(error.to_string().contains("oidc.issuerUrl"), "{error}");
    Ok(())
}

/// The console's sign-in: the client secret comes from an existing Secret mounted as a file
/// (never a value in the ConfigMap), the redirect URL from the value or the first Ingress host.
#[tokio::test]
async fn the_client_secret_is_a_mounted_secret_file() -> anyhow::Result<()> {
    let docs = rendered(&[
        "-f",
        multi_account_values().to_str().unwrap(),
        "--set",
        "gateway.oidc.clientSecret.existingSecret=nodeshell-oidc",
    ])
    .await?;
    let text = gateway_file(&docs);
    let file = parse_file(&text).map_err(anyhow::Error::msg)?;
    let path = file
        .oidc
        .client_secret_file
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no clientSecretFile in {text}"))?;
    assert_eq!(
        file.oidc.redirect_url.as_deref(),
        Some("https://nodeshell.example.com/auth/callback"),
        "from the Ingress host"
    );
    assert_eq!(file.identity_check_seconds, Some(300));
    let deployment = find(&docs, "Deployment", "nodeshell-gateway");
    let pod = &deployment["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .and_then(|v| {
            v.iter()
                .find(|v| v["secret"]["secretName"] == "nodeshell-oidc")
        })
        .ok_or_else(|| anyhow::anyhow!("no volume of the Secret: {pod}"))?;
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == volume["name"]))
        .ok_or_else(|| anyhow::anyhow!("the Secret is not mounted: {pod}"))?;
    assert_eq!(mount["readOnly"], true);
    let dir = mount["mountPath"].as_str().unwrap_or_default();
    assert_eq!(path, std::path::Path::new(dir).join("client-secret"));
    // Without the value, no sign-in and no mount.
    let plain = rendered(&["-f", multi_account_values().to_str().unwrap()]).await?;
    assert!(!gateway_file(&plain).contains("clientSecretFile"));
    Ok(())
}

/// An issuer with an internal CA: the CA comes from an existing ConfigMap mounted read-only,
/// and `oidc.caFile` names the mounted file; without the value, neither.
#[tokio::test]
async fn the_issuer_ca_is_a_mounted_config_map_file() -> anyhow::Result<()> {
    let docs = rendered(&[
        "-f",
        multi_account_values().to_str().unwrap(),
        "--set",
        "gateway.oidc.ca.existingConfigMap=corp-ca",
    ])
    .await?;
    let text = gateway_file(&docs);
    let file = parse_file(&text).map_err(anyhow::Error::msg)?;
    let path = file
        .oidc
        .ca_file
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no caFile in {text}"))?;
    let deployment = find(&docs, "Deployment", "nodeshell-gateway");
    let pod = &deployment["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["configMap"]["name"] == "corp-ca"))
        .ok_or_else(|| anyhow::anyhow!("no volume of the ConfigMap: {pod}"))?;
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == volume["name"]))
        .ok_or_else(|| anyhow::anyhow!("the ConfigMap is not mounted: {pod}"))?;
    assert_eq!(mount["readOnly"], true);
    let dir = mount["mountPath"].as_str().unwrap_or_default();
    assert_eq!(path, std::path::Path::new(dir).join("ca.crt"));
    let plain = rendered(&["-f", multi_account_values().to_str().unwrap()]).await?;
    assert!(!gateway_file(&plain).contains("caFile"));
    Ok(())
}

#[tokio::test]
async fn a_transcripts_namespace_moves_every_transcript_grant_there() -> anyhow::Result<()> {
    let docs = rendered(&[
        "--set",
        "transcripts.namespace=audit-vault",
        "--set",
        "rbac.transcriptReaders[0].kind=User,rbac.transcriptReaders[0].name=ian",
    ])
    .await?;
    // The gateway writes there and the controller's retention deletes there.
    let file = parse_file(&gateway_file(&docs)).map_err(anyhow::Error::msg)?;
    assert!(
        file.namespace.as_deref() == Some("audit-vault"),
        "{:?}",
        file.namespace
    );
    let controller = find(&docs, "Deployment", "nodeshell-controller");
    let env = &controller["spec"]["template"]["spec"]["containers"][0]["env"];
    let transcript_ns = env
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == "NODESHELL_TRANSCRIPT_NAMESPACE");
    assert_eq!(
        transcript_ns.map(|e| e["value"].clone()),
        Some(json!("audit-vault"))
    );
    // Every grant on Secrets is in that namespace, none in the release namespace.
    let mut secret_roles = Vec::new();
    for doc in docs.iter().filter(|d| d["kind"] == "Role") {
        let on_secrets = doc["rules"].as_array().into_iter().flatten().any(|r| {
            r["resources"]
                .as_array()
                .is_some_and(|rs| rs.contains(&json!("secrets")))
        });
        if on_secrets {
            assert_eq!(doc["metadata"]["namespace"], "audit-vault", "{doc}");
            secret_roles.push(
                doc["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
    }
    secret_roles.sort();
    assert_eq!(
        secret_roles,
        [
            "nodeshell-controller-transcripts",
            "nodeshell-gateway-transcripts",
            "nodeshell-transcript-reader"
        ]
    );
    let policy = find(
        &docs,
        "ValidatingAdmissionPolicy",
        "nodeshell-transcript-secrets",
    );
    assert_eq!(
        policy["spec"]["matchConstraints"]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "audit-vault"
    );
    Ok(())
}

#[tokio::test]
async fn deployments_are_hardened_probed_and_replicated() -> anyhow::Result<()> {
    let docs = rendered(&["--set", "gateway.shutdownTimeoutSeconds=45"]).await?;
    let chart_yaml: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart().join("Chart.yaml"))?)?;
    let app_version = chart_yaml["appVersion"].as_str().unwrap();
    assert_eq!(
        app_version,
        env!("CARGO_PKG_VERSION"),
        "the chart's appVersion is the crate's version"
    );
    for (name, probe_port, args) in [
        (
            "nodeshell-controller",
            "metrics",
            json!([
                "controller",
                "--metrics-addr=0.0.0.0:9090",
                "--lease-name=nodeshell-controller"
            ]),
        ),
        (
            "nodeshell-gateway",
            "admin",
            json!(["gateway", "--config", "/etc/nodeshell/gateway.yaml"]),
        ),
    ] {
        let deployment = find(&docs, "Deployment", name);
        assert_eq!(deployment["spec"]["replicas"], 2, "{name}");
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], name);
        let container = &pod["containers"][0];
        assert_eq!(
            container["image"],
            format!("ghcr.io/periscope/nodeshell:{app_version}")
        );
        assert_eq!(container["args"], args, "{name}");
        let security = &container["securityContext"];
        assert_eq!(security["runAsNonRoot"], true, "{name}");
        assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(security["capabilities"]["drop"], json!(["ALL"]), "{name}");
        assert_eq!(
            security["seccompProfile"]["type"], "RuntimeDefault",
            "{name}"
        );
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            assert_eq!(container[probe]["httpGet"]["path"], path, "{name} {probe}");
            assert_eq!(
                container[probe]["httpGet"]["port"], probe_port,
                "{name} {probe}"
            );
        }
        assert!(
            container["resources"]["requests"]["cpu"].is_string(),
            "{name}"
        );
        assert!(
            container["resources"]["limits"]["memory"].is_string(),
            "{name}"
        );
        // maxUnavailable, not minAvailable: a budget that never blocks a drain.
        let pdb = find(&docs, "PodDisruptionBudget", name);
        assert_eq!(pdb["spec"]["maxUnavailable"], 1);
        assert!(pdb["spec"]["minAvailable"].is_null());
        assert_eq!(
            pdb["spec"]["selector"]["matchLabels"],
            deployment["spec"]["selector"]["matchLabels"]
        );
    }
    let gateway = &find(&docs, "Deployment", "nodeshell-gateway")["spec"]["template"]["spec"];
    assert!(
        gateway["terminationGracePeriodSeconds"].as_u64().unwrap() > 45,
        "the pod must outlive the gateway's shutdownTimeoutSeconds"
    );
    let service = find(&docs, "Service", "nodeshell-gateway");
    assert_eq!(service["spec"]["sessionAffinity"], "ClientIP");
    // The Service the Ingress routes carries the API only; /metrics, /healthz and /readyz
    // are on the admin port, behind a Service of their own.
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}])
    );
    let ports = &gateway["containers"][0]["ports"];
    assert_eq!(ports[1]["name"], "admin");
    assert_eq!(ports[1]["containerPort"], 9090);
    let admin_service = find(&docs, "Service", "nodeshell-gateway-metrics");
    assert_eq!(
        admin_service["spec"]["ports"],
        json!([{"name": "metrics", "port": 9090, "targetPort": "admin", "protocol": "TCP"}])
    );

    // Nothing optional by default: no policy, no Ingress, no ServiceMonitor, no people bound.
    for kind in [
        "NodeShellPolicy",
        "Ingress",
        "HTTPRoute",
        "ServiceMonitor",
        "PodMonitor",
        "NetworkPolicy",
        "ClusterRoleBinding",
    ] {
        let names = names_of(&docs, kind);
        let components = ["nodeshell-controller", "nodeshell-gateway"];
        assert!(
            names.iter().all(|n| components.contains(&n.as_str())),
            "{kind}: {names:?}"
        );
    }
    assert!(names_of(&docs, "NodeShellPolicy").is_empty());
    assert!(!names_of(&docs, "Role").contains(&"nodeshell-transcript-reader".to_owned()));

    let monitored = rendered(&["--set", "serviceMonitor.enabled=true"]).await?;
    assert_eq!(
        names_of(&monitored, "ServiceMonitor"),
        ["nodeshell-controller", "nodeshell-gateway"]
    );
    // Each ServiceMonitor scrapes the `metrics` port, which only the metrics Services carry.
    for component in ["nodeshell-controller", "nodeshell-gateway"] {
        let monitor = find(&monitored, "ServiceMonitor", component);
        assert_eq!(
            monitor["spec"]["endpoints"][0]["port"], "metrics",
            "{component}"
        );
        let service = find(&monitored, "Service", &format!("{component}-metrics"));
        assert_eq!(
            service["spec"]["ports"][0]["name"], "metrics",
            "{component}"
        );
    }
    // The Ingress routes the API port only, never the admin port.
    let with_ingress = rendered(&["-f", multi_account_values().to_str().unwrap()]).await?;
    let ingress = find(&with_ingress, "Ingress", "nodeshell-gateway");
    let backends: Vec<&Value> = ingress["spec"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| rule["http"]["paths"].as_array().unwrap())
        .map(|path| &path["backend"]["service"])
        .collect();
    assert!(!backends.is_empty(), "{ingress}");
    for backend in backends {
        assert_eq!(
            *backend,
            json!({"name": "nodeshell-gateway", "port": {"name": "http"}})
        );
    }
    Ok(())
}

#[tokio::test]
async fn optional_scheduling_identity_and_routing_values_render() -> anyhow::Result<()> {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let digest_set = format!("image.digest={digest}");
    let docs = rendered(&[
        "--set",
        &digest_set,
        "--set",
        "gateway.replicas=1,controller.replicas=1",
        "--set",
        "gateway.priorityClassName=ops-critical,controller.priorityClassName=ops-high",
        "--set",
        "gateway.podLabels.team=platform,controller.podLabels.team=platform",
        "--set",
        "gateway.serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::123456789012:role/gw",
        "--set",
        "podMonitor.enabled=true,networkPolicy.enabled=true",
        "--set",
        "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.team=monitoring",
        "--set",
        "httpRoute.enabled=true,httpRoute.parentRefs[0].name=public,httpRoute.parentRefs[0].namespace=gw,httpRoute.hostnames[0]=shell.example.org",
    ])
    .await?;
    for (component, priority) in [("gateway", "ops-critical"), ("controller", "ops-high")] {
        let name = format!("nodeshell-{component}");
        let deployment = find(&docs, "Deployment", &name);
        let template = &deployment["spec"]["template"];
        assert_eq!(
            template["spec"]["containers"][0]["image"],
            format!("ghcr.io/periscope/nodeshell@{digest}")
        );
        assert_eq!(template["spec"]["priorityClassName"], priority);
        assert_eq!(template["metadata"]["labels"]["team"], "platform");
        // The extra label is on the pods, never in the (immutable) selector.
        assert!(deployment["spec"]["selector"]["matchLabels"]["team"].is_null());
        // At one replica the budget still lets a drain evict the pod.
        let pdb = find(&docs, "PodDisruptionBudget", &name);
        assert_eq!(pdb["spec"]["maxUnavailable"], 1, "{name}");
        let monitor = find(&docs, "PodMonitor", &name);
        let port = if component == "gateway" {
            "admin"
        } else {
            "metrics"
        };
        assert_eq!(monitor["spec"]["podMetricsEndpoints"][0]["port"], port);
        assert_eq!(
            monitor["spec"]["selector"]["matchLabels"],
            deployment["spec"]["selector"]["matchLabels"]
        );
        let policy = find(&docs, "NetworkPolicy", &name);
        assert_eq!(
            policy["spec"]["podSelector"]["matchLabels"],
            deployment["spec"]["selector"]["matchLabels"]
        );
    }
    let gateway = find(&docs, "Deployment", "nodeshell-gateway");
    let pod = &gateway["spec"]["template"]["spec"];
    let selector = &gateway["spec"]["selector"]["matchLabels"];
    let anti =
        &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(
        anti["podAffinityTerm"]["topologyKey"],
        "kubernetes.io/hostname"
    );
    assert_eq!(
        anti["podAffinityTerm"]["labelSelector"]["matchLabels"],
        *selector
    );
    let spread = &pod["topologySpreadConstraints"][0];
    assert_eq!(spread["topologyKey"], "topology.kubernetes.io/zone");
    assert_eq!(spread["whenUnsatisfiable"], "ScheduleAnyway");
    assert_eq!(spread["labelSelector"]["matchLabels"], *selector);
    let sa = find(&docs, "ServiceAccount", "nodeshell-gateway");
    assert_eq!(
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::123456789012:role/gw"
    );
    // The route and the API NetworkPolicy rule reach the API port only.
    let route = find(&docs, "HTTPRoute", "nodeshell-gateway");
    assert_eq!(
        route["spec"]["parentRefs"],
        json!([{"name": "public", "namespace": "gw"}])
    );
    assert_eq!(route["spec"]["hostnames"], json!(["shell.example.org"]));
    assert_eq!(
        route["spec"]["rules"][0]["backendRefs"],
        json!([{"name": "nodeshell-gateway", "port": 80}])
    );
    let policy = find(&docs, "NetworkPolicy", "nodeshell-gateway");
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
    assert_eq!(
        policy["spec"]["ingress"][0]["ports"],
        json!([{"port": "http", "protocol": "TCP"}])
    );
    assert!(
        policy["spec"]["ingress"][0]["from"].is_null(),
        "API open to every source by default"
    );
    assert_eq!(
        policy["spec"]["ingress"][1]["from"][0]["namespaceSelector"]["matchLabels"]["team"],
        "monitoring"
    );
    // "hard" anti-affinity is required; an explicit affinity replaces the chart's own.
    let hard = rendered(&["--set", "gateway.podAntiAffinity=hard"]).await?;
    let pod = &find(&hard, "Deployment", "nodeshell-gateway")["spec"]["template"]["spec"];
    assert_eq!(
        pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"],
        "kubernetes.io/hostname"
    );
    let own = rendered(&["--set", "gateway.affinity.nodeAffinity.x=y"]).await?;
    let pod = &find(&own, "Deployment", "nodeshell-gateway")["spec"]["template"]["spec"];
    assert_eq!(pod["affinity"], json!({"nodeAffinity": {"x": "y"}}));
    // An HTTPRoute without a Gateway to attach to is refused with what to set.
    let run = run_helm(&[
        "template",
        "x",
        chart().to_str().unwrap(),
        "--kube-version",
        "1.35.4",
        "--set",
        "httpRoute.enabled=true",
    ])
    .await?;
    assert!(
        !run.success && run.stderr.contains("httpRoute.parentRefs"),
        "{}",
        run.stderr
    );
    Ok(())
}

/// The alerts and the dashboard under files/monitoring ship as they are in the optional
/// PrometheusRule and dashboard ConfigMap (the monitoring test checks them with promtool).
#[tokio::test]
async fn alerts_and_dashboard_render_as_shipped() -> anyhow::Result<()> {
    let monitoring = chart().join("files/monitoring");
    let docs = rendered(&[
        "--set",
        "prometheusRule.enabled=true,prometheusRule.labels.release=kube-prometheus",
        "--set",
        "grafanaDashboard.enabled=true,grafanaDashboard.namespace=grafana",
    ])
    .await?;
    let rule = find(&docs, "PrometheusRule", "nodeshell");
    let alerts: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(monitoring.join("alerts.yaml"))?)?;
    assert_eq!(rule["spec"], alerts);
    assert_eq!(rule["metadata"]["labels"]["release"], "kube-prometheus");
    let dashboard = find(&docs, "ConfigMap", "nodeshell-dashboard");
    assert_eq!(dashboard["metadata"]["namespace"], "grafana");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: Value =
        serde_json::from_str(&std::fs::read_to_string(monitoring.join("dashboard.json"))?)?;
    let embedded: Value = serde_json::from_str(
        dashboard["data"]["nodeshell.json"]
            .as_str()
            .unwrap_or_default(),
    )?;
    assert_eq!(embedded, shipped);
    assert_eq!(shipped["uid"], "nodeshell");
    // Off by default.
    let plain = rendered(&[]).await?;
    assert!(names_of(&plain, "PrometheusRule").is_empty());
    assert!(!names_of(&plain, "ConfigMap").contains(&"nodeshell-dashboard".to_owned()));
    Ok(())
}

// === against a real apiserver ===

/// This binary's own control plane with the chart (multi-account values, one auditor group,
/// one session-admin user) installed for real. Not the shared cluster: the admission
/// policy would refuse the sessions other tests create.
struct Installed {
    cluster: LocalCluster,
    /// NOTES.txt of `helm install --dry-run` with the default values, taken before the install.
    notes_defaults: String,
    /// NOTES.txt with the multi-account values.
    notes_multi_account: String,
    /// NOTES.txt with a role but no tiers.
    notes_no_tiers: String,
}

async fn installed() -> anyhow::Result<&'static Installed> {
    static INSTALLED: OnceCell<Installed> = OnceCell::const_new();
    INSTALLED
        .get_or_try_init(|| async {
            let cluster = LocalCluster::start(Options::default()).await?;
            cluster.apply_manifests(&chart().join("files/crds")).await?;
            kubectl_ok(
                &cluster,
                Identity::Admin,
                &["create", "namespace", NAMESPACE],
            )
            .await?;
            // Before the install: a dry run refuses objects another release owns.
            let notes_defaults = notes(&cluster, &[]).await?;
            let values = multi_account_values();
            let notes_multi_account = notes(&cluster, &["-f", values.to_str().unwrap()]).await?;
            let notes_no_tiers = notes(
                &cluster,
                &[
                    "--set",
                    "nodeShell.awsRoleArn=arn:aws:iam::123456789012:role/x",
                ],
            )
            .await?;
            let manifest = template(&as_strs(&install_values())).await?;
            let file = cluster.work_dir().join("chart.yaml");
            std::fs::write(&file, manifest)?;
            kubectl_ok(
                &cluster,
                Identity::Admin,
                &["apply", "--server-side", "-f", file.to_str().unwrap()],
            )
            .await?;
            Ok(Installed {
                cluster,
                notes_defaults,
                notes_multi_account,
                notes_no_tiers,
            })
        })
        .await
}

/// What `helm install --dry-run` prints after `NOTES:` (helm needs a cluster for it).
async fn notes(cluster: &LocalCluster, extra: &[&str]) -> anyhow::Result<String> {
    let chart = chart();
    let kubeconfig = cluster.kubeconfig_path(Identity::Admin);
    let mut args = vec![
        "install",
        RELEASE,
        chart.to_str().unwrap(),
        "--dry-run=client",
        "--namespace",
        NAMESPACE,
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        // This cluster's CRDs were applied before the chart (as GitOps would): not the
        // release's to create.
        "--set",
        "crds.enabled=false",
    ];
    args.extend_from_slice(extra);
    let run = run_helm(&args).await?;
    anyhow::ensure!(run.success, "helm install --dry-run: {}", run.stderr);
    let start = run.stdout.find("NOTES:").unwrap_or(0);
    Ok(run.stdout[start..].to_owned())
}

/// The values of the real install: the multi-account example, a session-admin user, a
/// transcript reader and two limits changed on the command line.
fn install_values() -> Vec<String> {
    [
        "-f",
        multi_account_values().to_str().unwrap(),
        "--set",
        "rbac.sessionAdmins[0].kind=User,rbac.sessionAdmins[0].name=oncall-olga,rbac.sessionAdmins[0].apiGroup=rbac.authorization.k8s.io",
        "--set",
        "rbac.transcriptReaders[0].kind=User,rbac.transcriptReaders[0].name=investigator-ian,rbac.transcriptReaders[0].apiGroup=rbac.authorization.k8s.io",
        "--set",
        "nodeShell.transcriptMaxBytes=2097152,nodeShell.maxSessionsTotal=25",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// `kubectl auth can-i` as `user` (with `groups`) through the admin's impersonation.
async fn can_i(
    cluster: &LocalCluster,
    user: &str,
    groups: &[&str],
    ask: &str,
) -> anyhow::Result<bool> {
    let as_user = format!("--as={user}");
    let mut args = vec!["auth", "can-i", "-n", NAMESPACE, as_user.as_str()];
    let group_flags: Vec<String> = groups.iter().map(|g| format!("--as-group={g}")).collect();
    args.extend(group_flags.iter().map(String::as_str));
    // kubectl reads "resource/x" as a name, so a subresource goes through its own flag.
    for word in ask.split_whitespace() {
        match word.split_once('/') {
            Some((resource, subresource)) if !word.starts_with('-') => {
                args.push(resource);
                args.push("--subresource");
                args.push(subresource);
            }
            _ => args.push(word),
        }
    }
    let output = kubectl(cluster, Identity::Admin, &args).await?;
    let answer = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    anyhow::ensure!(
        answer == "yes" || answer == "no",
        "kubectl {args:?} said {answer:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(answer == "yes")
}

#[tokio::test]
async fn rendered_chart_passes_a_server_side_dry_run() -> anyhow::Result<()> {
    let cluster = &installed().await?.cluster;
    let policy_and_ingress = [
        "--set",
        "nodeShell.awsRoleArn=arn:aws:iam::123456789012:role/x,nodeShell.tiers={engineer}",
        "--set",
        "ingress.enabled=true,ingress.hosts[0].host=shell.example.org",
    ]
    .map(str::to_owned)
    .to_vec();
    for extra in [vec![], install_values(), policy_and_ingress] {
        let manifest = template(&as_strs(&extra)).await?;
        let file = cluster.work_dir().join("dry-run.yaml");
        std::fs::write(&file, &manifest)?;
        let out = kubectl_ok(
            cluster,
            Identity::Admin,
            &[
                "apply",
                "--dry-run=server",
                "--server-side",
                "--force-conflicts",
                "-f",
                file.to_str().unwrap(),
            ],
        )
        .await?;
        let applied = out.lines().count();
        let rendered = parse_documents(&manifest)?.len();
        assert_eq!(applied, rendered, "{extra:?}: {out}");
    }
    Ok(())
}

#[tokio::test]
async fn each_identity_has_its_grants_and_nothing_more() -> anyhow::Result<()> {
    let cluster = &installed().await?.cluster;
    let sa = &["system:serviceaccounts", "system:serviceaccounts:shell-ops"][..];
    let auditor = ("audrey", &["platform-auditors"][..]);
    let oncall = ("oncall-olga", &[][..]);
    let investigator = ("investigator-ian", &[][..]);
    let nobody = ("mallory", &[][..]);
    let cases: &[(&str, &[&str], &str, bool)] = &[
        (GATEWAY_SA, sa, "create nodeshellsessions", true),
        (GATEWAY_SA, sa, "patch nodeshellsessions/status", true),
        (GATEWAY_SA, sa, "update nodeshellsessions", false),
        (GATEWAY_SA, sa, "update nodeshellsessions/status", false),
        (GATEWAY_SA, sa, "delete nodeshellsessions", false),
        (GATEWAY_SA, sa, "list nodeshellpolicies", true),
        (GATEWAY_SA, sa, "update nodeshellpolicies", false),
        (GATEWAY_SA, sa, "create secrets", true),
        (GATEWAY_SA, sa, "get secrets", true),
        (GATEWAY_SA, sa, "patch secrets", true),
        (GATEWAY_SA, sa, "list secrets", false),
        (GATEWAY_SA, sa, "get secrets -n default", false),
        (GATEWAY_SA, sa, "list nodes", true),
        (GATEWAY_SA, sa, "create leases.coordination.k8s.io", true),
        (GATEWAY_SA, sa, "patch leases.coordination.k8s.io", true),
        (GATEWAY_SA, sa, "update leases.coordination.k8s.io", true),
        (GATEWAY_SA, sa, "delete leases.coordination.k8s.io", true),
        (
            GATEWAY_SA,
            sa,
            "create leases.coordination.k8s.io -n default",
            false,
        ),
        (GATEWAY_SA, sa, "list leases.coordination.k8s.io", false),
        (CONTROLLER_SA, sa, "update nodeshellsessions/status", true),
        (CONTROLLER_SA, sa, "patch nodeshellpolicies/status", true),
        (CONTROLLER_SA, sa, "create nodeshellsessions", false),
        (CONTROLLER_SA, sa, "update leases.coordination.k8s.io", true),
        (CONTROLLER_SA, sa, "get leases.coordination.k8s.io", true),
        (CONTROLLER_SA, sa, "list leases.coordination.k8s.io", true),
        (CONTROLLER_SA, sa, "watch leases.coordination.k8s.io", true),
        (
            CONTROLLER_SA,
            sa,
            "update leases.coordination.k8s.io -n default",
            false,
        ),
        (CONTROLLER_SA, sa, "update configmaps", true),
        (CONTROLLER_SA, sa, "create configmaps", true),
        (CONTROLLER_SA, sa, "delete configmaps", false),
        (CONTROLLER_SA, sa, "update configmaps -n default", false),
        (CONTROLLER_SA, sa, "deletecollection secrets", true),
        (CONTROLLER_SA, sa, "delete secrets", false),
        (CONTROLLER_SA, sa, "get secrets", false),
        (CONTROLLER_SA, sa, "list secrets", false),
        (
            CONTROLLER_SA,
            sa,
            "deletecollection secrets -n default",
            false,
        ),
        (GATEWAY_SA, sa, "delete secrets", false),
        (GATEWAY_SA, sa, "deletecollection secrets", false),
        (CONTROLLER_SA, sa, "update nodeshellpolicies", false),
        (auditor.0, auditor.1, "list nodeshellsessions", true),
        (auditor.0, auditor.1, "watch nodeshellsessions", true),
        (auditor.0, auditor.1, "get nodeshellpolicies", true),
        (auditor.0, auditor.1, "get secrets", false),
        (auditor.0, auditor.1, "patch nodeshellsessions", false),
        (auditor.0, auditor.1, "create nodeshellsessions", false),
        (oncall.0, oncall.1, "patch nodeshellsessions", true),
        (oncall.0, oncall.1, "update nodeshellsessions", false),
        (oncall.0, oncall.1, "patch nodeshellsessions/status", false),
        (oncall.0, oncall.1, "get secrets", false),
        (investigator.0, investigator.1, "get secrets", true),
        (investigator.0, investigator.1, "list secrets", false),
        (
            investigator.0,
            investigator.1,
            "get secrets -n default",
            false,
        ),
        (
            investigator.0,
            investigator.1,
            "list nodeshellsessions",
            false,
        ),
        (nobody.0, nobody.1, "list nodeshellsessions", false),
        (nobody.0, nobody.1, "get secrets", false),
    ];
    let mut wrong = Vec::new();
    for (user, groups, ask, want) in cases {
        if can_i(cluster, user, groups, ask).await? != *want {
            wrong.push(format!(
                "{user} {ask}: expected {}",
                if *want { "yes" } else { "no" }
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    Ok(())
}

/// Creates a session through `kubectl create` as `as_user` (impersonated by the admin, or
/// the admin itself when `None`).
async fn create_session(
    cluster: &LocalCluster,
    name: &str,
    as_args: &[&str],
) -> anyhow::Result<(bool, String)> {
    let file = cluster.work_dir().join(format!("{name}.json"));
    std::fs::write(&file, serde_json::to_vec(&session_json(name, "frank"))?)?;
    let mut args = vec!["create", "-f", file.to_str().unwrap()];
    args.extend_from_slice(as_args);
    let output = kubectl(cluster, Identity::Admin, &args).await?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn only_the_gateway_creates_sessions() -> anyhow::Result<()> {
    let cluster = &installed().await?.cluster;
    // The apiserver loads a new admission policy a moment after it is stored.
    let mut attempt = 0;
    let refusal = loop {
        attempt += 1;
        let name = format!("by-admin-{attempt}");
        let (created, stderr) = create_session(cluster, &name, &[]).await?;
        if !created {
            break stderr;
        }
        kubectl_ok(cluster, Identity::Admin, &["delete", "nss", &name]).await?;
        anyhow::ensure!(attempt < 60, "the admission policy never took effect");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        refusal.contains("denied request")
            && refusal.contains("may only be created by the nodeshell gateway")
            && refusal.contains(GATEWAY_SA),
        "{refusal}"
    );
    for (name, as_args) in [
        (
            "by-other-admin",
            vec!["--as=mallory", "--as-group=system:masters"],
        ),
        (
            "by-controller",
            vec!["--as", CONTROLLER_SA, "--as-group=system:masters"],
        ),
    ] {
        let (created, stderr) = create_session(cluster, name, &as_args).await?;
        assert!(!created, "{name} was created");
        assert!(stderr.contains(GATEWAY_SA), "{name}: {stderr}");
    }
    let (created, stderr) = create_session(cluster, "by-gateway", &["--as", GATEWAY_SA]).await?;
    assert!(created, "the gateway was refused: {stderr}");
    let user = kubectl_ok(
        cluster,
        Identity::Admin,
        &[
            "get",
            "nss",
            "by-gateway",
            "-o",
            "jsonpath={.spec.user.name}",
        ],
    )
    .await?;
    assert_eq!(user, "frank");
    Ok(())
}

/// Creates a Secret in the release namespace through `kubectl create` as `as_user` (the
/// admin itself when `None`).
async fn create_secret(
    cluster: &LocalCluster,
    name: &str,
    type_: Option<&str>,
    session_label: bool,
    as_user: Option<&str>,
) -> anyhow::Result<(bool, String)> {
    let mut secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "data": {"asciicast.gz": "H4sIAAAAAAAAAwMAAAAAAAAAAAA="},
    });
    if let Some(t) = type_ {
        secret["type"] = json!(t);
    }
    if session_label {
        secret["metadata"]["labels"] = json!({"nodeshell.periscope.io/session": "s1"});
    }
    let file = cluster.work_dir().join(format!("{name}.json"));
    std::fs::write(&file, serde_json::to_vec(&secret)?)?;
    let mut args = vec!["create", "-f", file.to_str().unwrap()];
    if let Some(user) = as_user {
        args.extend(["--as", user]);
    }
    let output = kubectl(cluster, Identity::Admin, &args).await?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// `DELETE` of the Secrets selected by `selector` (a deletecollection) as `as_user`: whether
/// it succeeded, and all it printed (the answer on stdout, then stderr).
async fn delete_secrets(
    cluster: &LocalCluster,
    selector: &str,
    as_user: &str,
) -> anyhow::Result<(bool, String)> {
    let url = format!("/api/v1/namespaces/{NAMESPACE}/secrets?{selector}");
    let output = kubectl(
        cluster,
        Identity::Admin,
        &["delete", "--raw", &url, "--as", as_user],
    )
    .await?;
    Ok((
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    ))
}

async fn secret_exists(cluster: &LocalCluster, name: &str) -> anyhow::Result<bool> {
    let output = kubectl(
        cluster,
        Identity::Admin,
        &["get", "secret", name, "-n", NAMESPACE, "-o", "name"],
    )
    .await?;
    Ok(output.status.success())
}

#[tokio::test]
async fn the_gateway_writes_and_the_controller_deletes_only_transcript_secrets()
-> anyhow::Result<()> {
    const TYPE: &str = "nodeshell.periscope.io/transcript";
    let cluster = &installed().await?.cluster;
    // The apiserver loads a new admission policy a moment after it is stored.
    let mut attempt = 0;
    let refusal = loop {
        attempt += 1;
        let name = format!("gw-opaque-{attempt}");
        let (created, stderr) = create_secret(cluster, &name, None, true, Some(GATEWAY_SA)).await?;
        if !created {
            break stderr;
        }
        kubectl_ok(
            cluster,
            Identity::Admin,
            &["delete", "secret", &name, "-n", NAMESPACE],
        )
        .await?;
        anyhow::ensure!(attempt < 60, "the transcript policy never took effect");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        refusal.contains("denied request") && refusal.contains("may only write transcript Secrets"),
        "{refusal}"
    );
    // A transcript-typed Secret without the session label is refused too.
    let (created, stderr) = create_secret(
        cluster,
        "gw-unlabelled",
        Some(TYPE),
        false,
        Some(GATEWAY_SA),
    )
    .await?;
    assert!(!created, "an unlabelled Secret was admitted");
    assert!(
        stderr.contains("may only write transcript Secrets"),
        "{stderr}"
    );
    // The transcript Secret the gateway writes is admitted.
    let (created, stderr) = create_secret(
        cluster,
        "s1-transcript-0",
        Some(TYPE),
        true,
        Some(GATEWAY_SA),
    )
    .await?;
    assert!(created, "the gateway's transcript was refused: {stderr}");
    // Patching an Opaque Secret someone else made is refused.
    let (created, stderr) = create_secret(cluster, "app-credentials", None, true, None).await?;
    assert!(created, "{stderr}");
    let output = kubectl(
        cluster,
        Identity::Admin,
        &[
            "patch",
            "secret",
            "app-credentials",
            "-n",
            NAMESPACE,
            "--type=merge",
            "-p",
            r#"{"data":{"password":"b3duZWQ="}}"#,
            "--as",
            GATEWAY_SA,
        ],
    )
    .await?;
    assert!(
        !output.status.success(),
        "the gateway patched an Opaque Secret"
    );

    // The controller's deletecollection that also selects the Opaque Secret (same label) is
    // refused, leaves it in place and answers with no object; of the transcript alone,
    // admitted.
    let (deleted, stderr) = delete_secrets(
        cluster,
        "labelSelector=nodeshell.periscope.io/session%3Ds1",
        CONTROLLER_SA,
    )
    .await?;
    assert!(!deleted, "the controller deleted an Opaque Secret");
    assert!(
        stderr.contains("may only delete transcript Secrets"),
        "{stderr}"
    );
    assert!(!stderr.contains("app-credentials"), "{stderr}");
    assert!(secret_exists(cluster, "app-credentials").await?);
    // Deletions are per object: the transcript it also selected may be gone already.
    if !secret_exists(cluster, "s1-transcript-0").await? {
        let (created, stderr) = create_secret(
            cluster,
            "s1-transcript-0",
            Some(TYPE),
            true,
            Some(GATEWAY_SA),
        )
        .await?;
        assert!(created, "{stderr}");
    }
    let (deleted, stderr) = delete_secrets(
        cluster,
        "labelSelector=nodeshell.periscope.io/session%3Ds1&fieldSelector=type%3Dnodeshell.periscope.io%2Ftranscript",
        CONTROLLER_SA,
    )
    .await?;
    assert!(deleted, "the controller's retention was refused: {stderr}");
    assert!(!secret_exists(cluster, "s1-transcript-0").await?);
    assert!(secret_exists(cluster, "app-credentials").await?);
    Ok(())
}

#[tokio::test]
async fn rendered_policies_pass_the_controllers_checks() -> anyhow::Result<()> {
    // What the controller reports as Ready=False would reject every session under it.
    let docs = rendered(&["-f", multi_account_values().to_str().unwrap()]).await?;
    let mut names = Vec::new();
    for doc in docs.iter().filter(|d| d["kind"] == "NodeShellPolicy") {
        let policy: NodeShellPolicy = serde_json::from_value(doc.clone())?;
        assert_eq!(
            validate_policy(&policy.spec),
            vec![],
            "{}",
            doc["metadata"]["name"]
        );
        names.push(doc["metadata"]["name"].as_str().unwrap().to_owned());
    }
    assert_eq!(names, ["default", "analytics", "payments"]);
    // Empty tiers (the chart's default) are rendered as given and reported by the controller.
    let bare = rendered(&["--set", "nodeShell.awsRoleArn=arn:aws:iam::123456789012:role/x,gateway.aws.region=us-east-1,gateway.oidc.clientId=c"]).await?;
    let policy: NodeShellPolicy =
        serde_json::from_value(find(&bare, "NodeShellPolicy", "default").clone())?;
    assert!(!validate_policy(&policy.spec).is_empty());
    Ok(())
}

#[tokio::test]
async fn policies_from_values_are_stored_with_those_values() -> anyhow::Result<()> {
    let cluster = &installed().await?.cluster;
    let get = |name: &'static str| async move {
        let text = kubectl_ok(
            cluster,
            Identity::Admin,
            &["get", "nsp", name, "-o", "json"],
        )
        .await?;
        anyhow::Ok(serde_json::from_str::<Value>(&text)?["spec"].clone())
    };
    let default = get("default").await?;
    assert_eq!(default["enabled"], true);
    assert_eq!(default["tiers"], json!(["admin", "engineer"]));
    assert_eq!(
        default["aws"]["roleArn"],
        "arn:aws:iam::111111111111:role/nodeshell-users"
    );
    // oidcAudience and region fall back to the gateway's client id and region.
    assert_eq!(default["aws"]["oidcAudience"], "nodeshell");
    assert_eq!(default["aws"]["region"], "eu-west-1");
    assert_eq!(default["limits"]["idleSeconds"], 900);
    assert_eq!(default["limits"]["maxSessionsPerUser"], 1);
    assert_eq!(default["limits"]["maxSessionsTotal"], 25);
    assert_eq!(default["transcript"]["maxBytes"], 2097152);
    assert_eq!(default["priority"], 0);
    assert_eq!(
        default["nodeSelector"]["matchExpressions"][0]["operator"],
        "DoesNotExist"
    );

    let payments = get("payments").await?;
    assert_eq!(
        payments["aws"]["roleArn"],
        "arn:aws:iam::222222222222:role/nodeshell-users"
    );
    assert_eq!(payments["aws"]["region"], "eu-central-1");
    assert_eq!(payments["aws"]["oidcAudience"], "nodeshell");
    assert_eq!(payments["tiers"], json!(["admin"]));
    assert_eq!(payments["priority"], 10);
    assert_eq!(
        payments["nodeSelector"]["matchLabels"]["nodeshell.periscope.io/account"],
        "222222222222"
    );
    assert_eq!(payments["limits"]["idleSeconds"], 900);
    let analytics = get("analytics").await?;
    assert_eq!(analytics["aws"]["oidcAudience"], "nodeshell-analytics");
    assert_eq!(analytics["aws"]["region"], "eu-west-1");
    assert_eq!(analytics["tiers"], json!(["admin", "engineer"]));
    Ok(())
}

#[tokio::test]
async fn notes_say_whether_a_policy_was_installed() -> anyhow::Result<()> {
    let installed = installed().await?;
    let bare = &installed.notes_defaults;
    assert!(bare.contains("No NodeShellPolicy was installed"), "{bare}");
    assert!(bare.contains("gateway.oidc.issuerUrl"), "{bare}");
    let full = &installed.notes_multi_account;
    assert!(
        full.contains("NodeShellPolicies installed: analytics, default, payments"),
        "{full}"
    );
    assert!(!full.contains("WARNING"), "{full}");
    assert!(full.contains(GATEWAY_SA), "{full}");
    let no_tiers = &installed.notes_no_tiers;
    assert!(
        no_tiers.contains("NodeShellPolicies installed: default")
            && no_tiers.contains("nodeShell.tiers is empty"),
        "{no_tiers}"
    );
    Ok(())
}

// === docs ===

/// Dotted paths of every value in values.yaml; free-form maps (resources) count as one.
fn value_paths(prefix: &str, value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) if !map.is_empty() && !prefix.ends_with(".resources") => {
            for (key, child) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                value_paths(&path, child, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

#[test]
fn setup_guide_documents_every_value_and_no_other() {
    let values: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart().join("values.yaml")).unwrap())
            .unwrap();
    let mut paths = Vec::new();
    value_paths("", &values, &mut paths);
    let guide = std::fs::read_to_string(root().join("docs/setup.md")).unwrap();
    let rows: Vec<&str> = guide
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|line| line.split_once('`').map(|(name, _)| name))
        .collect();
    let missing: Vec<_> = paths
        .iter()
        .filter(|p| !rows.contains(&p.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/setup.md has no row for {missing:?}"
    );
    let unknown: Vec<_> = rows
        .iter()
        .filter(|row| row.contains('.') || paths.iter().any(|p| p == *row))
        .filter(|row| !paths.iter().any(|p| p == *row))
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/setup.md documents values the chart lacks: {unknown:?}"
    );
}

// === the release's life: install, upgrade, uninstall ===

async fn helm_in(cluster: &LocalCluster, args: &[&str]) -> anyhow::Result<String> {
    let kubeconfig = cluster.kubeconfig_path(Identity::Admin);
    let mut all = args.to_vec();
    all.extend(["--kubeconfig", kubeconfig.to_str().unwrap()]);
    let run = run_helm(&all).await?;
    anyhow::ensure!(run.success, "helm {args:?}: {}{}", run.stdout, run.stderr);
    Ok(run.stdout)
}

/// `kubectl get -f` of the release's current manifest: the names of the objects that exist
/// (it fails when one is missing).
async fn release_objects(
    cluster: &LocalCluster,
    release: &str,
    ns: &str,
) -> anyhow::Result<(usize, String)> {
    let manifest = helm_in(cluster, &["get", "manifest", release, "-n", ns]).await?;
    let count = parse_documents(&manifest)?.len();
    let file = cluster.work_dir().join(format!("{release}-manifest.yaml"));
    std::fs::write(&file, &manifest)?;
    let names = kubectl_ok(
        cluster,
        Identity::Admin,
        &["get", "-f", file.to_str().unwrap(), "-o", "name"],
    )
    .await?;
    Ok((count, names))
}

async fn crd_names(cluster: &LocalCluster) -> anyhow::Result<String> {
    kubectl_ok(
        cluster,
        Identity::Admin,
        &[
            "get",
            "crd",
            "-o",
            "name",
            "-l",
            "app.kubernetes.io/name=nodeshell",
        ],
    )
    .await
}

/// A real `helm install`, `helm upgrade` (the CRD schema changed) and `helm uninstall` on a
/// control plane of its own, with the default values plus the two the gateway requires.
/// There is no kubelet here: Deployments are created but their pods never start, so nothing
/// waits for them to be ready (no `--wait`); what is checked is every object the apiserver
/// stores.
#[tokio::test]
async fn helm_install_upgrade_and_uninstall_on_a_real_apiserver() -> anyhow::Result<()> {
    const NS: &str = "nodeshell-system";
    let cluster = LocalCluster::start(Options::default()).await?;
    let chart_dir = chart();
    let required = [
        "--set",
        "gateway.oidc.issuerUrl=https://login.example.com/realms/ops,gateway.oidc.clientId=nodeshell",
    ];
    let mut install = vec![
        "install",
        "nodeshell",
        chart_dir.to_str().unwrap(),
        "-n",
        NS,
        "--create-namespace",
    ];
    install.extend(required);
    helm_in(&cluster, &install).await?;
    let (count, names) = release_objects(&cluster, "nodeshell", NS).await?;
    assert_eq!(
        names.lines().count(),
        count,
        "every object of the release exists: {names}"
    );
    for name in [
        "customresourcedefinition.apiextensions.k8s.io/nodeshellpolicies.nodeshell.periscope.io",
        "customresourcedefinition.apiextensions.k8s.io/nodeshellsessions.nodeshell.periscope.io",
        "deployment.apps/nodeshell-gateway",
        "deployment.apps/nodeshell-controller",
        "poddisruptionbudget.policy/nodeshell-gateway",
        "validatingadmissionpolicy.admissionregistration.k8s.io/nodeshell-sessions-by-gateway",
    ] {
        assert!(names.lines().any(|l| l == name), "{name} missing: {names}");
    }

    // The upgrade brings a CRD whose schema has a new field: the stored CRD gets it.
    let changed = cluster.work_dir().join("changed-chart");
    copy_dir(&chart_dir, &changed)?;
    let crd_file = changed.join("files/crds/nodeshell.periscope.io_nodeshellpolicies.yaml");
    let mut crd: Value = serde_saphyr::from_str(&std::fs::read_to_string(&crd_file)?)?;
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["upgradeMarker"] =
        json!({"type": "string", "description": "Added by the upgrade."});
    // JSON is YAML: the template reads it the same.
    std::fs::write(&crd_file, serde_json::to_string_pretty(&crd)?)?;
    let mut upgrade = vec!["upgrade", "nodeshell", changed.to_str().unwrap(), "-n", NS];
    upgrade.extend(required);
    upgrade.extend([
        "--set",
        "nodeShell.awsRoleArn=arn:aws:iam::123456789012:role/x,nodeShell.tiers={admin}",
    ]);
    helm_in(&cluster, &upgrade).await?;
    let marker = kubectl_ok(
        &cluster,
        Identity::Admin,
        &[
            "get", "crd", "nodeshellpolicies.nodeshell.periscope.io", "-o",
            "jsonpath={.spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.upgradeMarker.type}",
        ],
    )
    .await?;
    assert_eq!(
        marker.trim(),
        "string",
        "the upgrade did not update the CRD"
    );
    let (count, names) = release_objects(&cluster, "nodeshell", NS).await?;
    assert_eq!(names.lines().count(), count, "{names}");
    assert!(
        names
            .lines()
            .any(|l| l.ends_with("nodeshellpolicy.nodeshell.periscope.io/default")),
        "{names}"
    );

    // Uninstall removes the release's objects but keeps the CRDs (helm.sh/resource-policy).
    let out = helm_in(&cluster, &["uninstall", "nodeshell", "-n", NS]).await?;
    assert!(out.contains("kept due to the resource policy"), "{out}");
    assert_eq!(
        crd_names(&cluster).await?.lines().count(),
        2,
        "uninstall deleted the CRDs"
    );
    let left = kubectl_ok(
        &cluster,
        Identity::Admin,
        &["get", "deploy,sa", "-n", NS, "-o", "name"],
    )
    .await?;
    assert!(!left.contains("nodeshell-"), "{left}");

    // A first install that brings the CRDs and a policy together: the policy is created after
    // the CRDs (a post-install hook), and the next upgrade adopts it as an ordinary object.
    kubectl_ok(
        &cluster,
        Identity::Admin,
        &[
            "delete",
            "crd",
            "-l",
            "app.kubernetes.io/name=nodeshell",
            "--wait",
        ],
    )
    .await?;
    let mut install = vec![
        "install",
        "nodeshell",
        chart_dir.to_str().unwrap(),
        "-n",
        NS,
    ];
    install.extend(required);
    install.extend([
        "--set",
        "nodeShell.awsRoleArn=arn:aws:iam::123456789012:role/x,nodeShell.tiers={admin}",
    ]);
    helm_in(&cluster, &install).await?;
    kubectl_ok(&cluster, Identity::Admin, &["get", "nsp", "default"]).await?;
    let mut upgrade = install.clone();
    upgrade[0] = "upgrade";
    upgrade.retain(|a| *a != "--create-namespace");
    helm_in(&cluster, &upgrade).await?;
    let (count, names) = release_objects(&cluster, "nodeshell", NS).await?;
    assert_eq!(names.lines().count(), count, "{names}");
    assert!(
        names
            .lines()
            .any(|l| l.ends_with("nodeshellpolicy.nodeshell.periscope.io/default")),
        "{names}"
    );
    // The release owns it now: the uninstall deletes it (and keeps the CRDs).
    helm_in(&cluster, &["uninstall", "nodeshell", "-n", NS]).await?;
    let left = kubectl_ok(&cluster, Identity::Admin, &["get", "nsp", "-o", "name"]).await?;
    assert_eq!(left.trim(), "", "the policy outlived its release");
    assert_eq!(crd_names(&cluster).await?.lines().count(), 2);
    Ok(())
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
