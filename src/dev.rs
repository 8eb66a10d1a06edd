//! `nodeshell dev`: everything at once on this machine. It starts a real kube-apiserver and
//! etcd ([`crate::localcluster`]), installs the CRDs and RBAC, creates a sample policy and
//! EC2-like nodes, runs `nodeshell controller` as a child, and writes kubeconfigs under the
//! run directory until Ctrl-C (or SIGTERM from `e2e/scripts/e2e-down.sh`) stops it all.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::localcluster::processes::{Output, ProcessSpec, SupervisedProcess};
use crate::localcluster::{self, Identity, LocalCluster, Options, SYSTEM_NAMESPACE};

/// The demo policy (`e2e/manifests/samples/policy.yaml`).
pub const SAMPLE_POLICY_YAML: &str = include_str!("../e2e/manifests/samples/policy.yaml");
/// Three EC2-like nodes and one on-premises node (`e2e/manifests/samples/nodes.yaml`).
pub const SAMPLE_NODES_YAML: &str = include_str!("../e2e/manifests/samples/nodes.yaml");

/// Name of the marker file written once everything is up; scripts wait for it.
pub const READY_FILE: &str = "dev.ready";

// How often children are checked for an unexpected exit.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// Errors of `nodeshell dev`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The local control plane failed to start or died.
    #[error(transparent)]
    Cluster(#[from] localcluster::Error),
    /// A file under the run directory could not be written.
    #[error("could not {action}: {source}")]
    Io {
        /// What we were doing.
        action: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Our own executable could not be found to start the controller.
    #[error("cannot locate the nodeshell executable to start `nodeshell controller`: {0}")]
    CurrentExe(#[source] std::io::Error),
    /// A sample object was refused.
    #[error(
        "could not create the sample {what}: {source}; do the CRDs in src/api match e2e/manifests/samples?"
    )]
    Sample {
        /// What was being created.
        what: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },
    /// Signal handlers could not be installed.
    #[error("could not listen for Ctrl-C/SIGTERM: {0}")]
    Signals(#[source] std::io::Error),
}

impl Error {
    fn io(action: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            action: action.into(),
            source,
        }
    }
}

/// Flags of `nodeshell dev`.
#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {
    /// Directory for this run's files: kubeconfigs and the ready marker.
    #[arg(long, env = "NODESHELL_DEV_RUN_DIR", default_value = "e2e/.run")]
    pub run_dir: PathBuf,
    /// Where to write the admin kubeconfig (default: <run-dir>/kubeconfig).
    #[arg(long, env = "NODESHELL_DEV_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Start only the control plane with CRDs and RBAC: no sample objects, no controller
    /// (what `make e2e-up` uses).
    #[arg(long)]
    pub control_plane_only: bool,
    /// Directory holding etcd, kube-apiserver and kube-controller-manager
    /// (default: e2e/.bin, filled by e2e/scripts/build-controlplane.sh).
    #[arg(long, env = "NODESHELL_CONTROLPLANE_BIN")]
    pub controlplane_bin: Option<PathBuf>,
    /// Keep the control plane's working directory (etcd data, certificates, logs) on exit.
    #[arg(long)]
    pub keep_work_dir: bool,
}

/// Files of one run, all under the run directory except a relocated admin kubeconfig.
struct RunFiles {
    dir: PathBuf,
    admin_kubeconfig: PathBuf,
}

impl RunFiles {
    fn identity_kubeconfig(&self, identity: Identity) -> PathBuf {
        self.dir
            .join("kubeconfigs")
            .join(format!("{}.kubeconfig", identity.slug()))
    }

    fn ready(&self) -> PathBuf {
        self.dir.join(READY_FILE)
    }

    // The kubeconfigs point at a cluster that is gone once we stop; leave none behind.
    fn remove(&self) {
        let _ = std::fs::remove_file(self.ready());
        let _ = std::fs::remove_file(&self.admin_kubeconfig);
        let _ = std::fs::remove_dir_all(self.dir.join("kubeconfigs"));
    }
}

/// Runs `nodeshell dev` until Ctrl-C or SIGTERM.
pub async fn run(args: DevArgs) -> Result<(), Error> {
    let files = prepare_run_dir(&args)?;
    let mut signals = Signals::install()?;

    tracing::info!("starting etcd and kube-apiserver (first start takes ~10 s)");
    let cluster = LocalCluster::start(Options {
        controller_manager: true,
        bin_dir: args.controlplane_bin.clone(),
        keep_work_dir: args.keep_work_dir,
    })
    .await?;
    let mut children = Vec::new();
    let outcome = match bring_up(&args, &cluster, &files, &mut children).await {
        Ok(()) => supervise(&cluster, &mut children, &mut signals).await,
        Err(error) => Err(error),
    };

    tracing::info!("stopping");
    for child in children.iter_mut() {
        child.request_stop();
    }
    for mut child in children {
        child.stop(Duration::from_secs(15));
    }
    // Stopping waits on child processes; keep that off the async workers.
    let _ = tokio::task::spawn_blocking(move || drop(cluster)).await;
    files.remove();
    outcome
}

/// CRDs, RBAC, kubeconfigs, samples and components, then the ready marker and banner.
async fn bring_up(
    args: &DevArgs,
    cluster: &LocalCluster,
    files: &RunFiles,
    children: &mut Vec<SupervisedProcess>,
) -> Result<(), Error> {
    cluster.install_crds().await?;
    cluster.install_rbac().await?;
    publish_kubeconfigs(cluster, files)?;
    if !args.control_plane_only {
        create_samples(cluster).await?;
        let exe = std::env::current_exe().map_err(Error::CurrentExe)?;
        for spec in components(&exe, files) {
            tracing::info!(component = %spec.name, "starting");
            children.push(SupervisedProcess::spawn(spec)?);
        }
    }
    std::fs::write(files.ready(), format!("{}\n", cluster.server()))
        .map_err(|e| Error::io(format!("write {}", files.ready().display()), e))?;
    print_banner(cluster, files, args);
    Ok(())
}

/// The processes `nodeshell dev` runs beside the control plane, each tied to our lifetime.
/// The AWS simulator (`nodeshell sim`) and the gateway join this list as they land: each is
/// one more spec whose environment points it at the others.
fn components(exe: &Path, files: &RunFiles) -> Vec<ProcessSpec> {
    let controller = ProcessSpec::new("controller", exe, Output::Inherit)
        .arg("controller")
        .arg("--kubeconfig")
        .arg(files.identity_kubeconfig(Identity::Controller))
        .arg("--namespace")
        .arg(SYSTEM_NAMESPACE)
        // Any free port: a second `nodeshell dev` or another local service may hold 9090.
        .arg("--metrics-addr")
        .arg("127.0.0.1:0");
    vec![controller]
}

async fn supervise(
    cluster: &LocalCluster,
    children: &mut [SupervisedProcess],
    signals: &mut Signals,
) -> Result<(), Error> {
    let mut reported = vec![false; children.len()];
    let mut ticker = tokio::time::interval(HEALTH_INTERVAL);
    loop {
        tokio::select! {
            _ = signals.next() => return Ok(()),
            _ = ticker.tick() => {
                cluster.check_alive()?;
                for (child, reported) in children.iter_mut().zip(reported.iter_mut()) {
                    if !*reported && let Some(status) = child.exit_status() {
                        // The control plane stays useful without it; say so once and go on.
                        tracing::error!(component = child.name(), %status, "exited; the control plane keeps running");
                        *reported = true;
                    }
                }
            }
        }
    }
}

fn prepare_run_dir(args: &DevArgs) -> Result<RunFiles, Error> {
    let kubeconfigs = args.run_dir.join("kubeconfigs");
    std::fs::create_dir_all(&kubeconfigs)
        .map_err(|e| Error::io(format!("create {}", kubeconfigs.display()), e))?;
    let dir = std::fs::canonicalize(&args.run_dir)
        .map_err(|e| Error::io(format!("resolve {}", args.run_dir.display()), e))?;
    let admin_kubeconfig = match &args.kubeconfig {
        Some(path) => absolute(path)?,
        None => dir.join("kubeconfig"),
    };
    let files = RunFiles {
        dir,
        admin_kubeconfig,
    };
    // A marker from a run that was killed would tell scripts we are ready before we are.
    let _ = std::fs::remove_file(files.ready());
    Ok(files)
}

fn absolute(path: &Path) -> Result<PathBuf, Error> {
    std::path::absolute(path).map_err(|e| Error::io(format!("resolve {}", path.display()), e))
}

fn publish_kubeconfigs(cluster: &LocalCluster, files: &RunFiles) -> Result<(), Error> {
    let copy = |from: PathBuf, to: &Path| {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("create {}", parent.display()), e))?;
        }
        std::fs::copy(&from, to)
            .map(|_| ())
            .map_err(|e| Error::io(format!("write {}", to.display()), e))
    };
    copy(
        cluster.kubeconfig_path(Identity::Admin),
        &files.admin_kubeconfig,
    )?;
    for identity in Identity::ALL {
        copy(
            cluster.kubeconfig_path(identity),
            &files.identity_kubeconfig(identity),
        )?;
    }
    Ok(())
}

async fn create_samples(cluster: &LocalCluster) -> Result<(), Error> {
    cluster.apply_yaml(SAMPLE_POLICY_YAML).await?;
    let applied = cluster.apply_yaml(SAMPLE_NODES_YAML).await?;
    let nodes: Api<Node> = Api::all(cluster.client(Identity::Admin).await?);
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    // No kubelet runs these nodes; their status says Ready so they look like a live pool.
    for (index, name) in applied
        .iter()
        .filter_map(|object| object.strip_prefix("Node/"))
        .enumerate()
    {
        let status = json!({ "status": {
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "simulated by nodeshell dev",
                "lastHeartbeatTime": now, "lastTransitionTime": now
            }],
            "addresses": [
                { "type": "InternalIP", "address": format!("10.0.{}.{}", index + 1, 10 + index) },
                { "type": "Hostname", "address": name }
            ]
        }});
        nodes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .map_err(|source| Error::Sample {
                what: format!("status of node {name}"),
                source,
            })?;
    }
    Ok(())
}

fn print_banner(cluster: &LocalCluster, files: &RunFiles, args: &DevArgs) {
    let kubeconfig = files.admin_kubeconfig.display();
    let others = files.dir.join("kubeconfigs");
    println!("nodeshell dev: control plane ready at {}", cluster.server());
    println!();
    println!("  export KUBECONFIG={kubeconfig}");
    println!("  kubectl get nodeshellpolicies,nodes");
    println!("  kubectl get nodeshellsessions        # short name: nss");
    println!();
    println!(
        "  other identities (auditor, alice, session-admin, ...): {}/<name>.kubeconfig",
        others.display()
    );
    println!(
        "  apiserver log: {}",
        cluster.log_path("kube-apiserver").display()
    );
    if args.control_plane_only {
        println!("  control plane only: no sample objects, no controller");
    } else {
        println!(
            "  controller runs as {} (its log is this terminal)",
            Identity::Controller.user_name()
        );
    }
    println!();
    println!("Ctrl-C stops everything.");
}

/// Ctrl-C and SIGTERM, whichever comes first.
struct Signals {
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self, Error> {
        let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(Error::Signals)?;
        Ok(Signals { terminate })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
