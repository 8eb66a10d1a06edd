//! `nodeshell dev`: everything at once on this machine. It starts a real kube-apiserver and
//! etcd ([`crate::localcluster`]), installs the CRDs and RBAC, creates a sample policy and
//! EC2-like nodes, runs `nodeshell sim`, `nodeshell controller` and `nodeshell gateway` as
//! children, writes kubeconfigs under the run directory and prints the web console's URL,
//! until Ctrl-C (or SIGTERM from `e2e/scripts/e2e-down.sh`) stops it all.

use crate::shutdown::StopSignals;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde::Deserialize;
use serde_json::json;

use crate::localcluster::processes::{Output, ProcessSpec, SupervisedProcess, free_port};
use crate::localcluster::{self, Identity, LocalCluster, Options, SYSTEM_NAMESPACE};

/// The demo policies (`e2e/manifests/samples/policy.yaml`): `default`, and `ledger` for the
/// pool whose node runs nodeshell's own document.
pub const SAMPLE_POLICY_YAML: &str = include_str!("../e2e/manifests/samples/policy.yaml");
/// Four EC2-like nodes and one on-premises node (`e2e/manifests/samples/nodes.yaml`).
pub const SAMPLE_NODES_YAML: &str = include_str!("../e2e/manifests/samples/nodes.yaml");

/// The simulator's configuration: the sample policy's account, role, audience and region,
/// one instance per EC2-like sample node, and the demo users (`config/dev/sim.yaml`).
pub const DEV_SIM_CONFIG_YAML: &str = include_str!("../config/dev/sim.yaml");
/// The gateway's configuration: tiers and client id matching the simulator
/// (`config/dev/gateway.yaml`).
pub const DEV_GATEWAY_CONFIG_YAML: &str = include_str!("../config/dev/gateway.yaml");

/// Name of the marker file written once everything is up; scripts wait for it.
pub const READY_FILE: &str = "dev.ready";

/// Where the gateway and console listen unless `--listen` says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

// The simulator writes its URLs within a second; the gateway is ready once its caches sync.
const SIM_START_TIMEOUT: Duration = Duration::from_secs(30);
const GATEWAY_START_TIMEOUT: Duration = Duration::from_secs(60);
// The wrapper of each child sends SIGKILL 10 s after SIGTERM anyway.
const STOP_GRACE: Duration = Duration::from_secs(15);

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
    /// The console's address is taken by another program.
    #[error(
        "cannot listen on {addr} for the gateway and web console: {source}; stop what uses it, or pass --listen 127.0.0.1:0 to take any free port"
    )]
    ListenBusy {
        /// The address asked for.
        addr: SocketAddr,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
    /// An `--allowed-origins` entry is no `http(s)://host[:port]` origin.
    #[error(
        "--allowed-origins {origin:?} is not an origin: give scheme, host and port only, e.g. http://127.0.0.1:9000"
    )]
    BadOrigin {
        /// The entry as given.
        origin: String,
    },
    /// A child did not get ready in time.
    #[error("{component} was not ready within {timeout:?}; its log is {log}")]
    NotReady {
        /// `simulator` or `gateway`.
        component: &'static str,
        /// How long we waited.
        timeout: Duration,
        /// Its log file.
        log: String,
    },
    /// The simulator's URLs file is not what `nodeshell sim --urls-file` writes.
    #[error("cannot read the simulator's URLs from {path}: {message}")]
    SimUrls {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
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
    /// Address of the gateway, which serves the API and the web console (port 0 takes any
    /// free port).
    #[arg(long, env = "NODESHELL_DEV_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// More origins the gateway accepts besides the console's own, comma-separated: the
    /// local address of a tunnel or port-forward in front of it (`http://127.0.0.1:9000`),
    /// which the console and `kubectl nodeshell` present as their `Origin` there.
    #[arg(long, value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
}

/// The simulator's endpoints, as `nodeshell sim --urls-file` writes them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimEndpoints {
    /// OIDC issuer URL (the `iss` of its tokens).
    pub issuer: String,
    /// STS endpoint.
    pub sts: String,
    /// SSM endpoint.
    pub ssm: String,
    /// KMS endpoint (for KMS-encrypted sessions).
    #[serde(default)]
    pub kms: String,
    /// Region its SigV4 scopes name.
    pub region: String,
    /// The issuer's client id (the console's and the gateway's).
    pub client_id: String,
}

/// Where the gateway listens and the URL a browser opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleAddress {
    /// The gateway's `--listen` (a concrete port).
    pub listen: SocketAddr,
    /// `http://127.0.0.1:<port>`: the console's origin, as a browser names it.
    pub origin: String,
    /// The gateway's `--admin-listen` (`/readyz`, `/metrics`): a free loopback port, since
    /// the console's port no longer serves them.
    pub admin: SocketAddr,
    /// Origins of tunnels or port-forwards in front of the console (`--allowed-origins`).
    pub also_reached_at: Vec<String>,
}

impl ConsoleAddress {
    /// The address for `--listen`: port 0 becomes a free port now, because the gateway's
    /// allowed origins must name it; a taken port is refused before anything starts.
    pub fn choose(listen: SocketAddr) -> Result<Self, Error> {
        let listen = if listen.port() == 0 {
            let port = free_port()?;
            SocketAddr::new(listen.ip(), port)
        } else {
            // Binding and letting go tells a busy port apart before the gateway fails on it.
            std::net::TcpListener::bind(listen).map_err(|source| Error::ListenBusy {
                addr: listen,
                source,
            })?;
            listen
        };
        let host = match listen.ip() {
            ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            ip => ip,
        };
        let origin = match host {
            IpAddr::V4(v4) => format!("http://{v4}:{}", listen.port()),
            IpAddr::V6(v6) => format!("http://[{v6}]:{}", listen.port()),
        };
        let admin = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), free_port()?);
        Ok(Self {
            listen,
            origin,
            admin,
            also_reached_at: Vec::new(),
        })
    }

    /// Also accepts `origins` (`--allowed-origins`), each an `http(s)://host[:port]` origin.
    pub fn also_reached_at(mut self, origins: &[String]) -> Result<Self, Error> {
        for given in origins {
            let bad = || Error::BadOrigin {
                origin: given.clone(),
            };
            let url = url::Url::parse(given.trim()).map_err(|_| bad())?;
            let bare = url.path() == "/"
                && url.query().is_none()
                && url.fragment().is_none()
                && url.username().is_empty()
                && url.password().is_none();
            if !matches!(url.scheme(), "http" | "https") || !bare {
                return Err(bad());
            }
            // As a browser writes it: lower-case host, no default port.
            self.also_reached_at
                .push(url.origin().ascii_serialization());
        }
        Ok(self)
    }

    /// The origins the gateway accepts WebSockets from: the printed one, `localhost` for
    /// someone who types that instead, and those of `--allowed-origins`.
    pub fn allowed_origins(&self) -> Vec<String> {
        let mut origins = vec![self.origin.clone()];
        if self.listen.ip().is_loopback() || self.listen.ip().is_unspecified() {
            origins.push(format!("http://localhost:{}", self.listen.port()));
        }
        origins.extend(self.also_reached_at.iter().cloned());
        origins.dedup();
        origins
    }

    /// The URL to open.
    pub fn url(&self) -> String {
        format!("{}/", self.origin)
    }
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

    fn sim_config(&self) -> PathBuf {
        self.dir.join("sim.yaml")
    }

    fn gateway_config(&self) -> PathBuf {
        self.dir.join("gateway.yaml")
    }

    fn client_secret(&self) -> PathBuf {
        self.dir.join("oidc-client-secret")
    }

    fn sim_urls(&self) -> PathBuf {
        self.dir.join("sim-urls.json")
    }

    fn log(&self, component: &str) -> PathBuf {
        self.dir.join(format!("{component}.log"))
    }

    // The kubeconfigs and URLs point at servers that are gone once we stop; leave none behind.
    fn remove(&self) {
        let _ = std::fs::remove_file(self.ready());
        let _ = std::fs::remove_file(&self.admin_kubeconfig);
        let _ = std::fs::remove_dir_all(self.dir.join("kubeconfigs"));
        let _ = std::fs::remove_file(self.sim_urls());
        let _ = std::fs::remove_file(self.sim_config());
        let _ = std::fs::remove_file(self.gateway_config());
        let _ = std::fs::remove_file(self.client_secret());
    }
}

/// Runs `nodeshell dev` until Ctrl-C or SIGTERM.
pub async fn run(args: DevArgs) -> Result<(), Error> {
    let files = prepare_run_dir(&args)?;
    let mut signals = StopSignals::install().map_err(Error::Signals)?;
    // A taken port is reported before the control plane spends seconds starting.
    let console = if args.control_plane_only {
        None
    } else {
        Some(ConsoleAddress::choose(args.listen)?.also_reached_at(&args.allowed_origins)?)
    };

    tracing::info!("starting etcd and kube-apiserver (first start takes ~10 s)");
    let cluster = LocalCluster::start(Options {
        controller_manager: true,
        bin_dir: args.controlplane_bin.clone(),
        keep_work_dir: args.keep_work_dir,
    })
    .await?;
    let mut children = Vec::new();
    // Ctrl-C while the components start stops what has started so far.
    let started = tokio::select! {
        up = bring_up(console.as_ref(), &cluster, &files, &mut children) => Some(up),
        _ = signals.next() => None,
    };
    let outcome = match started {
        Some(Ok(())) => supervise(&cluster, &mut children, &mut signals).await,
        Some(Err(error)) => Err(error),
        None => Ok(()),
    };

    tracing::info!("stopping");
    // Last started, first stopped: the gateway closes its sessions (GatewayShutdown) while
    // the controller, the simulator and the apiserver still answer. Stopping waits on child
    // processes; keep that off the async workers.
    let _ = tokio::task::spawn_blocking(move || {
        while let Some(mut child) = children.pop() {
            child.stop(STOP_GRACE);
        }
        drop(cluster);
    })
    .await;
    files.remove();
    outcome
}

/// CRDs, RBAC, kubeconfigs, samples and components, then the ready marker and banner.
async fn bring_up(
    console: Option<&ConsoleAddress>,
    cluster: &LocalCluster,
    files: &RunFiles,
    children: &mut Vec<SupervisedProcess>,
) -> Result<(), Error> {
    cluster.install_crds().await?;
    cluster.install_rbac().await?;
    publish_kubeconfigs(cluster, files)?;
    if let Some(address) = console {
        create_samples(cluster).await?;
        let secret = crate::gateway::access::login::random_token(32);
        write_file(&files.sim_config(), &dev_sim_config(&secret))?;
        write_secret(&files.client_secret(), &secret)?;
        write_file(&files.gateway_config(), DEV_GATEWAY_CONFIG_YAML)?;
        let exe = std::env::current_exe().map_err(Error::CurrentExe)?;
        tracing::info!(component = "simulator", "starting");
        children.push(SupervisedProcess::spawn(simulator(&exe, files))?);
        let sim = wait_for_sim(files, children).await?;
        for spec in components(&exe, files, &sim, address) {
            tracing::info!(component = %spec.name, "starting");
            children.push(SupervisedProcess::spawn(spec)?);
        }
        wait_for_gateway(address, files, children).await?;
    }
    std::fs::write(files.ready(), format!("{}\n", cluster.server()))
        .map_err(|e| Error::io(format!("write {}", files.ready().display()), e))?;
    print_banner(cluster, files, console);
    Ok(())
}

/// The simulator's dev configuration with the gateway's client secret of this run.
pub fn dev_sim_config(client_secret: &str) -> String {
    DEV_SIM_CONFIG_YAML.replace(CLIENT_SECRET_PLACEHOLDER, client_secret)
}

/// Where `config/dev/sim.yaml` holds the gateway's client secret.
const CLIENT_SECRET_PLACEHOLDER: &str = "@CLIENT_SECRET@";

/// Writes the client secret readable by its owner only.
fn write_secret(path: &Path, secret: &str) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
    file.write_all(secret.as_bytes())
        .map_err(|e| Error::io(format!("write {}", path.display()), e))
}

fn write_file(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|e| Error::io(format!("write {}", path.display()), e))
}

/// `nodeshell sim` with the dev configuration, on ports the OS chooses, reporting them in
/// the URLs file.
fn simulator(exe: &Path, files: &RunFiles) -> ProcessSpec {
    ProcessSpec::new("simulator", exe, Output::LogFile(files.log("simulator")))
        .arg("sim")
        .arg("--config")
        .arg(files.sim_config())
        .arg("--urls-file")
        .arg(files.sim_urls())
}

/// The processes `nodeshell dev` runs beside the control plane and the simulator, in start
/// order, each tied to our lifetime: the controller, then the gateway pointed at the
/// simulator's issuer, STS and SSM and serving the console at `console`.
fn components(
    exe: &Path,
    files: &RunFiles,
    sim: &SimEndpoints,
    console: &ConsoleAddress,
) -> Vec<ProcessSpec> {
    let controller = ProcessSpec::new("controller", exe, Output::Inherit)
        .arg("controller")
        .arg("--kubeconfig")
        .arg(files.identity_kubeconfig(Identity::Controller))
        .arg("--namespace")
        .arg(SYSTEM_NAMESPACE)
        // Any free port: a second `nodeshell dev` or another local service may hold 9090.
        .arg("--metrics-addr")
        .arg("127.0.0.1:0");
    // Its audit rows and logs would bury the console URL; they go to a file.
    let gateway = ProcessSpec::new("gateway", exe, Output::LogFile(files.log("gateway")))
        .arg("gateway")
        .arg("--config")
        .arg(files.gateway_config())
        .arg("--kubeconfig")
        .arg(files.identity_kubeconfig(Identity::Gateway))
        .arg("--namespace")
        .arg(SYSTEM_NAMESPACE)
        .arg("--listen")
        .arg(console.listen.to_string())
        .arg("--admin-listen")
        .arg(console.admin.to_string())
        .arg("--oidc-issuer")
        .arg(&sim.issuer)
        .arg("--oidc-client-id")
        .arg(&sim.client_id)
        .arg("--oidc-client-secret-file")
        .arg(files.client_secret())
        .arg("--oidc-redirect-url")
        .arg(format!("{}/auth/callback", console.origin))
        .arg("--region")
        .arg(&sim.region)
        .arg("--sts-endpoint")
        .arg(&sim.sts)
        .arg("--ssm-endpoint")
        .arg(&sim.ssm)
        .arg("--kms-endpoint")
        .arg(&sim.kms)
        .arg("--allowed-origins")
        .arg(console.allowed_origins().join(","))
        .env("POD_NAME", "nodeshell-dev-gateway");
    vec![controller, gateway]
}

/// Waits for the simulator's URLs file; fails with its log if it exits first.
async fn wait_for_sim(
    files: &RunFiles,
    children: &mut [SupervisedProcess],
) -> Result<SimEndpoints, Error> {
    let path = files.sim_urls();
    let deadline = Instant::now() + SIM_START_TIMEOUT;
    loop {
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(endpoints) = serde_json::from_str::<SimEndpoints>(&text)
        {
            return Ok(endpoints);
        }
        check_children(children)?;
        if Instant::now() >= deadline {
            return Err(match std::fs::read_to_string(&path) {
                Ok(text) => Error::SimUrls {
                    path,
                    message: serde_json::from_str::<SimEndpoints>(&text)
                        .err()
                        .map(|e| e.to_string())
                        .unwrap_or_default(),
                },
                Err(_) => Error::NotReady {
                    component: "simulator",
                    timeout: SIM_START_TIMEOUT,
                    log: files.log("simulator").display().to_string(),
                },
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the gateway's `/readyz` (on its admin port) answers 200; fails with its log if
/// it exits first.
async fn wait_for_gateway(
    console: &ConsoleAddress,
    files: &RunFiles,
    children: &mut [SupervisedProcess],
) -> Result<(), Error> {
    let url = format!("http://{}/readyz", console.admin);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .map_err(|e| Error::io("build an HTTP client", std::io::Error::other(e)))?;
    let deadline = Instant::now() + GATEWAY_START_TIMEOUT;
    loop {
        if let Ok(response) = http.get(&url).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        check_children(children)?;
        if Instant::now() >= deadline {
            return Err(Error::NotReady {
                component: "gateway",
                timeout: GATEWAY_START_TIMEOUT,
                log: files.log("gateway").display().to_string(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The first child that exited, as an error with the end of its log.
fn check_children(children: &mut [SupervisedProcess]) -> Result<(), Error> {
    match children
        .iter_mut()
        .find_map(SupervisedProcess::exited_error)
    {
        Some(error) => Err(error.into()),
        None => Ok(()),
    }
}

async fn supervise(
    cluster: &LocalCluster,
    children: &mut [SupervisedProcess],
    signals: &mut StopSignals,
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
    // A marker or URLs from a run that was killed would tell us we are ready before we are.
    let _ = std::fs::remove_file(files.ready());
    let _ = std::fs::remove_file(files.sim_urls());
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

fn print_banner(cluster: &LocalCluster, files: &RunFiles, console: Option<&ConsoleAddress>) {
    let kubeconfig = files.admin_kubeconfig.display();
    let others = files.dir.join("kubeconfigs");
    match console {
        Some(console) => {
            println!("nodeshell dev is ready. The web console, signed in as the demo user:");
            println!();
            println!("  open {}", console.url());
            println!();
            println!(
                "  the simulator's issuer is plain http for this browser; its STS accepts it only through the knob issuer.allowHttpIssuer (AWS refuses an http issuer)"
            );
        }
        None => println!("nodeshell dev: control plane ready at {}", cluster.server()),
    }
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
    match console {
        None => println!("  control plane only: no sample objects, no controller"),
        Some(_) => {
            println!(
                "  simulator log: {}, gateway log: {}",
                files.log("simulator").display(),
                files.log("gateway").display()
            );
            println!(
                "  controller runs as {} (its log is this terminal)",
                Identity::Controller.user_name()
            );
        }
    }
    println!();
    println!("Ctrl-C stops everything.");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use super::*;
    use crate::api::NodeShellPolicy;
    use crate::gateway::config::GatewayFile;
    use crate::sim::{PingStatus, SimConfig};

    #[test]
    fn a_taken_port_is_refused_with_what_to_do() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let error = ConsoleAddress::choose(addr).unwrap_err();
        assert!(matches!(error, Error::ListenBusy { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains(&addr.to_string()), "{message}");
        assert!(message.contains("--listen 127.0.0.1:0"), "{message}");
    }

    #[test]
    fn port_zero_becomes_a_concrete_origin() {
        let console = ConsoleAddress::choose("0.0.0.0:0".parse().unwrap()).unwrap();
        let port = console.listen.port();
        assert_ne!(port, 0);
        assert_eq!(console.url(), format!("http://127.0.0.1:{port}/"));
        assert!(console.admin.ip().is_loopback());
        assert_ne!(console.admin.port(), 0);
        assert_ne!(
            console.admin.port(),
            port,
            "readiness is not on the console's port"
        );
        assert_eq!(
            console.allowed_origins(),
            vec![
                format!("http://127.0.0.1:{port}"),
                format!("http://localhost:{port}")
            ]
        );
    }

    #[test]
    fn a_tunnel_origin_is_accepted_and_a_url_with_a_path_is_refused() {
        let console = ConsoleAddress::choose("127.0.0.1:0".parse().unwrap())
            .unwrap()
            .also_reached_at(&[
                "http://127.0.0.1:9000/".into(),
                "http://Tunnel.example:80".into(),
            ])
            .unwrap();
        let port = console.listen.port();
        assert_eq!(
            console.allowed_origins(),
            vec![
                format!("http://127.0.0.1:{port}"),
                format!("http://localhost:{port}"),
                "http://127.0.0.1:9000".to_string(),
                "http://tunnel.example".to_string(),
            ]
        );
        for bad in [
            "http://127.0.0.1:9000/console",
            "http://127.0.0.1:9000/?x=1",
            "127.0.0.1:9000",
            "ftp://h:1",
        ] {
            let error = ConsoleAddress::choose("127.0.0.1:0".parse().unwrap())
                .unwrap()
                .also_reached_at(&[bad.into()])
                .unwrap_err();
            assert!(matches!(error, Error::BadOrigin { .. }), "{bad}: {error:?}");
            assert!(
                error.to_string().contains("http://127.0.0.1:9000"),
                "{error}"
            );
        }
    }

    fn sim_config() -> SimConfig {
        serde_saphyr::from_str(&dev_sim_config("s3cret")).unwrap()
    }

    #[test]
    fn the_dev_issuer_stays_http_through_the_named_knob() {
        let sim = sim_config();
        assert!(!sim.issuer.https);
        assert!(sim.issuer.allow_http_issuer);
    }

    #[test]
    fn the_gateway_is_the_only_client_with_the_secret_of_this_run() {
        let sim = sim_config();
        assert_eq!(sim.issuer.clients.len(), 1);
        let client = &sim.issuer.clients[0];
        assert_eq!(client.client_id, sim.issuer.client_id);
        assert_eq!(client.client_secret.as_deref(), Some("s3cret"));
        assert!(!DEV_SIM_CONFIG_YAML.contains("s3cret"));
    }

    #[test]
    fn the_simulator_matches_the_sample_policy_and_nodes() {
        let sim = sim_config();
        let policies: Vec<NodeShellPolicy> = SAMPLE_POLICY_YAML
            .split("\n---\n")
            .map(|doc| serde_saphyr::from_str(doc).unwrap())
            .collect();
        let names: Vec<_> = policies.iter().map(|p| p.metadata.name.clone()).collect();
        assert_eq!(names, [Some("default".into()), Some("ledger".into())]);
        let role = &sim.roles[0];
        for policy in &policies {
            let aws = &policy.spec.aws;
            assert_eq!(
                aws.role_arn.as_deref(),
                Some(format!("arn:aws:iam::{}:role/{}", sim.account_id, role.name).as_str())
            );
            assert_eq!(aws.oidc_audience.as_deref(), Some(role.audience.as_str()));
            assert_eq!(
                aws.oidc_audience.as_deref(),
                Some(sim.issuer.client_id.as_str())
            );
            assert_eq!(aws.region.as_deref(), Some(sim.region.as_str()));
        }
        // The ledger policy runs the document the simulator's agent knows.
        assert_eq!(policies[1].spec.aws.document_name, "NodeShell-Shell");
        // Every EC2-like sample node has an instance; the first one a live shell.
        let ids: Vec<&str> = SAMPLE_NODES_YAML
            .lines()
            .filter_map(|l| l.trim().strip_prefix("providerID: aws:///"))
            .filter_map(|p| p.rsplit('/').next())
            .collect();
        assert_eq!(ids.len(), 4);
        for id in &ids {
            assert!(sim.instances.iter().any(|i| i.id == *id), "{id}");
        }
        // The first (general pool) and the last (ledger pool) have a live shell.
        for id in [ids[0], ids[3]] {
            let instance = sim.instances.iter().find(|i| i.id == id).unwrap();
            assert_eq!(instance.ping_status, PingStatus::Online, "{id}");
        }
    }

    #[test]
    fn the_demo_user_is_an_admin_and_alice_and_bob_are_not() {
        let sim = sim_config();
        let gateway: GatewayFile = serde_saphyr::from_str(DEV_GATEWAY_CONFIG_YAML).unwrap();
        assert_eq!(
            gateway.oidc.client_id.as_deref(),
            Some(sim.issuer.client_id.as_str())
        );
        let tier_of = |sub: &str| {
            let user = sim.users.iter().find(|u| u.sub == sub).unwrap();
            // The first tier in tierOrder that one of the user's groups maps to.
            gateway
                .tier_order
                .iter()
                .find(|tier| {
                    user.groups
                        .iter()
                        .any(|g| gateway.group_tiers.get(g) == Some(*tier))
                })
                .cloned()
        };
        assert_eq!(sim.issuer.auto_login.as_deref(), Some("demo"));
        assert_eq!(tier_of("demo").as_deref(), Some("admin"));
        assert!(gateway.admin_tiers.contains(&"admin".to_string()));
        assert_eq!(tier_of("alice").as_deref(), Some("engineer"));
        assert_eq!(tier_of("bob").as_deref(), Some("viewer"));
    }
}
