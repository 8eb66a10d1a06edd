//! A real kube-apiserver and etcd on loopback, for integration tests, `nodeshell dev` and
//! `make e2e-up`.
//!
//! [`LocalCluster::start`] generates a throw-away CA, serving and client certificates and
//! bearer tokens for every [`Identity`], starts etcd and kube-apiserver (RBAC on, ports
//! chosen by the OS) and, when asked, kube-controller-manager with only the garbage
//! collector so ownerReferences are honoured. Every child dies with this process, however
//! it ends (see [`processes`]). Tests share one cluster per test binary through
//! [`LocalCluster::shared`] and build their own clients with [`LocalCluster::client`].

pub mod apply;
pub mod binaries;
pub mod certs;
mod error;
pub mod identity;
pub mod kubeconfig;
pub mod processes;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng as _;
use serde_json::Value;

pub use self::binaries::{BIN_DIR_ENV, Binaries};
pub use self::error::Error;
pub use self::identity::{Identity, SYSTEM_NAMESPACE};
use self::kubeconfig::Credential;
use self::processes::{Output, ProcessSpec, SupervisedProcess};

/// The RBAC manifests of `e2e/manifests/rbac/` (namespace, service accounts, roles,
/// bindings), in apply order. The Helm chart carries the same rules.
pub const RBAC_YAML: &str = concat!(
    include_str!("../../e2e/manifests/rbac/00-namespace.yaml"),
    "\n---\n",
    include_str!("../../e2e/manifests/rbac/10-clusterroles.yaml"),
    "\n---\n",
    include_str!("../../e2e/manifests/rbac/20-roles.yaml"),
    "\n---\n",
    include_str!("../../e2e/manifests/rbac/30-bindings.yaml"),
);

/// Environment variable overriding how long to wait for readiness (seconds, default 120).
pub const READY_SECONDS_ENV: &str = "NODESHELL_LOCALCLUSTER_READY_SECONDS";

const DEFAULT_READY_SECONDS: u64 = 120;
// A port picked free can be taken by someone else before the server binds it.
const START_ATTEMPTS: usize = 3;

/// How to start a local control plane.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Also run kube-controller-manager with only the garbage collector.
    pub controller_manager: bool,
    /// Directory with the binaries (else `NODESHELL_CONTROLPLANE_BIN`, else `e2e/.bin`).
    pub bin_dir: Option<PathBuf>,
    /// Keep the working directory (certificates, logs, etcd data) after stopping.
    pub keep_work_dir: bool,
}

/// A running local control plane. Dropping it stops the processes and removes its
/// working directory.
pub struct LocalCluster {
    work_dir: PathBuf,
    server: String,
    ca_pem: String,
    kubeconfigs: BTreeMap<Identity, Value>,
    tokens: BTreeMap<Identity, String>,
    // Start order (etcd, kube-apiserver, kube-controller-manager); stopped in reverse.
    processes: Mutex<Vec<SupervisedProcess>>,
    janitor: Option<std::process::Child>,
    keep_work_dir: bool,
    crds_installed: tokio::sync::OnceCell<()>,
    rbac_installed: tokio::sync::OnceCell<()>,
}

// Hand-written: the derived form would print tokens and keys.
impl std::fmt::Debug for LocalCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCluster")
            .field("server", &self.server)
            .field("work_dir", &self.work_dir)
            .finish_non_exhaustive()
    }
}

static SHARED: tokio::sync::OnceCell<LocalCluster> = tokio::sync::OnceCell::const_new();

// === impl LocalCluster ===

impl LocalCluster {
    /// Starts etcd and kube-apiserver (and kube-controller-manager when asked) and waits
    /// until the apiserver's `/readyz` answers `ok`.
    pub async fn start(options: Options) -> Result<LocalCluster, Error> {
        let binaries = binaries::locate(options.bin_dir.as_deref(), options.controller_manager)?;
        let mut attempt = 1;
        loop {
            match Self::start_once(&options, &binaries).await {
                Err(Error::ExitedEarly { tail, .. })
                    if attempt < START_ATTEMPTS && tail.contains("address already in use") =>
                {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// The cluster shared by every test of this test binary: started on first use (with
    /// the garbage collector), with the RBAC manifests applied. It lives until the process
    /// exits, and its processes and directory go with it.
    pub async fn shared() -> Result<&'static LocalCluster, Error> {
        SHARED
            .get_or_try_init(|| async {
                let cluster = LocalCluster::start(Options {
                    controller_manager: true,
                    ..Options::default()
                })
                .await?;
                cluster.install_rbac().await?;
                Ok(cluster)
            })
            .await
    }

    async fn start_once(options: &Options, binaries: &Binaries) -> Result<LocalCluster, Error> {
        let work_dir = std::env::temp_dir().join(format!(
            "nodeshell-localcluster-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
        for sub in ["pki", "etcd", "logs", "kubeconfigs"] {
            std::fs::create_dir_all(work_dir.join(sub))
                .map_err(|e| Error::io(format!("create {}", work_dir.join(sub).display()), e))?;
        }
        let janitor = if options.keep_work_dir {
            None
        } else {
            Some(spawn_janitor(&work_dir)?)
        };
        let mut cluster = LocalCluster {
            work_dir,
            server: String::new(),
            ca_pem: String::new(),
            kubeconfigs: BTreeMap::new(),
            tokens: BTreeMap::new(),
            processes: Mutex::new(Vec::new()),
            janitor,
            keep_work_dir: options.keep_work_dir,
            crds_installed: tokio::sync::OnceCell::new(),
            rbac_installed: tokio::sync::OnceCell::new(),
        };
        // From here on, a failure drops `cluster`, which stops whatever already runs.
        cluster.boot(options, binaries).await?;
        Ok(cluster)
    }

    async fn boot(&mut self, options: &Options, binaries: &Binaries) -> Result<(), Error> {
        let admin = Identity::Admin;
        let pki =
            certs::ClusterPki::generate(admin.user_name(), admin.groups().join(",").as_str())?;
        let pki_dir = self.work_dir.join("pki");
        write_private(&pki_dir.join("ca.crt"), &pki.ca.cert_pem)?;
        write_private(&pki_dir.join("serving.crt"), &pki.serving.cert_pem)?;
        write_private(&pki_dir.join("serving.key"), &pki.serving.key_pem)?;
        write_private(
            &pki_dir.join("service-account.key"),
            &pki.service_account_key_pem,
        )?;
        write_private(
            &pki_dir.join("service-account.pub"),
            &pki.service_account_public_pem,
        )?;

        let mut token_file = String::new();
        for identity in Identity::ALL {
            if identity == Identity::Admin {
                continue;
            }
            let token = hex::encode(rand::rng().random::<[u8; 24]>());
            // token,user,uid,"group1,group2"
            token_file.push_str(&format!(
                "{token},{user},{uid},\"{groups}\"\n",
                user = identity.user_name(),
                uid = identity.slug(),
                groups = identity.groups().join(","),
            ));
            self.tokens.insert(identity, token);
        }
        write_private(&pki_dir.join("tokens.csv"), &token_file)?;

        let etcd_client_port = processes::free_port()?;
        let etcd_peer_port = processes::free_port()?;
        let apiserver_port = processes::free_port()?;
        self.server = format!("https://127.0.0.1:{apiserver_port}");
        self.ca_pem = pki.ca.cert_pem.clone();

        for identity in Identity::ALL {
            let credential = match self.tokens.get(&identity) {
                Some(token) => Credential::Token(token),
                None => Credential::ClientCertificate {
                    cert_pem: &pki.admin.cert_pem,
                    key_pem: &pki.admin.key_pem,
                },
            };
            let document =
                kubeconfig::document(&self.server, &self.ca_pem, identity.slug(), &credential);
            write_private(
                &self.kubeconfig_path(identity),
                &kubeconfig::to_yaml(&document)?,
            )?;
            self.kubeconfigs.insert(identity, document);
        }

        let etcd_url = format!("http://127.0.0.1:{etcd_client_port}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer_port}");
        let etcd = ProcessSpec::new(
            "etcd",
            &binaries.etcd,
            Output::LogFile(self.log_path("etcd")),
        )
        .arg("--name=default")
        .arg(format!(
            "--data-dir={}",
            self.work_dir.join("etcd").display()
        ))
        .arg(format!("--listen-client-urls={etcd_url}"))
        .arg(format!("--advertise-client-urls={etcd_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=default={peer_url}"))
        .arg("--unsafe-no-fsync=true")
        .arg("--log-level=warn");
        self.spawn(etcd)?;
        self.wait_for_port("etcd", etcd_client_port).await?;

        let pki_arg = |name: &str| pki_dir.join(name).display().to_string();
        let apiserver = ProcessSpec::new(
            "kube-apiserver",
            &binaries.kube_apiserver,
            Output::LogFile(self.log_path("kube-apiserver")),
        )
        .arg(format!("--etcd-servers={etcd_url}"))
        .arg(format!("--cert-dir={}", pki_dir.display()))
        .arg(format!("--tls-cert-file={}", pki_arg("serving.crt")))
        .arg(format!("--tls-private-key-file={}", pki_arg("serving.key")))
        .arg(format!("--client-ca-file={}", pki_arg("ca.crt")))
        .arg(format!("--token-auth-file={}", pki_arg("tokens.csv")))
        .arg(format!("--secure-port={apiserver_port}"))
        .arg("--bind-address=127.0.0.1")
        .arg("--advertise-address=127.0.0.1")
        .arg("--service-cluster-ip-range=10.0.0.0/24")
        .arg("--allow-privileged=true")
        .arg("--disable-admission-plugins=ServiceAccount")
        .arg("--authorization-mode=RBAC")
        .arg(format!("--service-account-issuer={}", self.server))
        .arg(format!(
            "--service-account-key-file={}",
            pki_arg("service-account.pub")
        ))
        .arg(format!(
            "--service-account-signing-key-file={}",
            pki_arg("service-account.key")
        ))
        .arg("--v=0");
        self.spawn(apiserver)?;
        self.wait_for_readyz().await?;

        if options.controller_manager {
            let kcm = ProcessSpec::new(
                "kube-controller-manager",
                &binaries.kube_controller_manager,
                Output::LogFile(self.log_path("kube-controller-manager")),
            )
            .arg(format!(
                "--kubeconfig={}",
                self.kubeconfig_path(Identity::Admin).display()
            ))
            // Only ownerReference clean-up: no nodes, pods or service accounts to manage here.
            .arg("--controllers=garbagecollector")
            .arg("--leader-elect=false")
            .arg("--secure-port=0")
            .arg("--use-service-account-credentials=false")
            .arg("--v=1");
            self.spawn(kcm)?;
        }
        Ok(())
    }

    fn spawn(&self, spec: ProcessSpec) -> Result<(), Error> {
        let process = SupervisedProcess::spawn(spec)?;
        self.lock_processes().push(process);
        Ok(())
    }

    fn lock_processes(&self) -> std::sync::MutexGuard<'_, Vec<SupervisedProcess>> {
        // A panic while holding the lock leaves the list intact; keep using it.
        self.processes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Fails with the log tail of the first child that has exited.
    pub fn check_alive(&self) -> Result<(), Error> {
        let mut processes = self.lock_processes();
        for process in processes.iter_mut() {
            if let Some(error) = process.exited_error() {
                return Err(error);
            }
        }
        Ok(())
    }

    async fn wait_for_port(&self, component: &str, port: u16) -> Result<(), Error> {
        let deadline = Instant::now() + ready_timeout();
        loop {
            self.check_alive()?;
            match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(Error::NotReady {
                        component: component.to_owned(),
                        seconds: ready_timeout().as_secs(),
                        detail: e.to_string(),
                        log: self.log_path(component),
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    // Polled anonymously with plain reqwest: /readyz is public once RBAC is bootstrapped,
    // and kube's client would log every 500 of a starting apiserver as an error.
    async fn wait_for_readyz(&self) -> Result<(), Error> {
        let ca = reqwest::Certificate::from_pem(self.ca_pem.as_bytes())
            .map_err(|e| Error::Kubeconfig(format!("the generated CA does not load: {e}")))?;
        let http = reqwest::Client::builder()
            .add_root_certificate(ca)
            .tls_built_in_root_certs(false)
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| Error::Kubeconfig(format!("cannot build the readiness client: {e}")))?;
        let url = format!("{}/readyz", self.server);
        let deadline = Instant::now() + ready_timeout();
        loop {
            self.check_alive()?;
            let detail = match http.get(&url).send().await {
                Ok(response) => {
                    let status = response.status();
                    let body = response.text().await.unwrap_or_default();
                    if status.is_success() && body.trim() == "ok" {
                        return Ok(());
                    }
                    format!("{status}: {}", body.lines().last().unwrap_or_default())
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(Error::NotReady {
                    component: "kube-apiserver".to_owned(),
                    seconds: ready_timeout().as_secs(),
                    detail,
                    log: self.log_path("kube-apiserver"),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The apiserver's URL, `https://127.0.0.1:<port>`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The CA certificate (PEM) that signed the serving and client certificates.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The working directory (certificates, etcd data, logs, kubeconfigs).
    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    /// Log file of a component: `etcd`, `kube-apiserver` or `kube-controller-manager`.
    pub fn log_path(&self, component: &str) -> PathBuf {
        self.work_dir.join("logs").join(format!("{component}.log"))
    }

    /// Path of the kubeconfig file of `identity` (for `kubectl --kubeconfig` or a child's
    /// `KUBECONFIG`).
    pub fn kubeconfig_path(&self, identity: Identity) -> PathBuf {
        self.work_dir
            .join("kubeconfigs")
            .join(format!("{}.kubeconfig", identity.slug()))
    }

    /// The bearer token of `identity`; the admin authenticates by client certificate and
    /// has none.
    pub fn token(&self, identity: Identity) -> Option<&str> {
        self.tokens.get(&identity).map(String::as_str)
    }

    /// A kube client acting as `identity`, bound to the calling task's runtime.
    pub async fn client(&self, identity: Identity) -> Result<kube::Client, Error> {
        let document = self.kubeconfigs.get(&identity).ok_or_else(|| {
            Error::Kubeconfig(format!(
                "no kubeconfig for {identity} (the cluster did not finish starting)"
            ))
        })?;
        kubeconfig::client(document).await
    }

    /// Server-side applies multi-document YAML as the admin; returns `kind/name` of each
    /// object. CRDs are waited on until Established.
    pub async fn apply_yaml(&self, yaml: &str) -> Result<Vec<String>, Error> {
        let documents = apply::parse_documents(yaml)?;
        let client = self.client(Identity::Admin).await?;
        apply::apply_documents(&client, &documents).await
    }

    /// Applies every `*.yaml`/`*.yml` file of `dir` in file-name order (see [`Self::apply_yaml`]).
    pub async fn apply_manifests(&self, dir: &Path) -> Result<Vec<String>, Error> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| Error::io(format!("read manifest directory {}", dir.display()), e))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| {
                path.extension()
                    .is_some_and(|ext| ext == "yaml" || ext == "yml")
            })
            .collect();
        files.sort();
        let mut applied = Vec::new();
        for file in files {
            let yaml = std::fs::read_to_string(&file)
                .map_err(|e| Error::io(format!("read manifest {}", file.display()), e))?;
            applied.extend(self.apply_yaml(&yaml).await?);
        }
        Ok(applied)
    }

    /// Installs nodeshell's CRDs (from [`crate::api::crds_yaml`]) once per cluster and waits
    /// until they are served.
    pub async fn install_crds(&self) -> Result<(), Error> {
        self.crds_installed
            .get_or_try_init(|| async {
                let yaml = crate::api::crds_yaml().map_err(|e| Error::Crds(e.to_string()))?;
                self.apply_yaml(&yaml).await.map(|_| ())
            })
            .await
            .map(|_| ())
    }

    /// Applies [`RBAC_YAML`] once per cluster: namespace `nodeshell-system`, service accounts,
    /// roles and bindings for every [`Identity`].
    pub async fn install_rbac(&self) -> Result<(), Error> {
        self.rbac_installed
            .get_or_try_init(|| async { self.apply_yaml(RBAC_YAML).await.map(|_| ()) })
            .await
            .map(|_| ())
    }

    /// Stops every process (newest first) and removes the working directory unless it was
    /// asked to be kept. Called by `Drop`; calling it twice is harmless.
    pub fn stop(&mut self) {
        let mut processes = std::mem::take(&mut *self.lock_processes());
        // Ask all at once so their shutdowns overlap, etcd last so the apiserver can drain.
        let etcd = if processes.is_empty() {
            None
        } else {
            Some(processes.remove(0))
        };
        for process in processes.iter_mut() {
            process.request_stop();
        }
        for mut process in processes.into_iter().rev() {
            process.stop(Duration::from_secs(15));
        }
        if let Some(mut etcd) = etcd {
            etcd.stop(Duration::from_secs(15));
        }
        if !self.keep_work_dir {
            let _ = std::fs::remove_dir_all(&self.work_dir);
        }
        if let Some(mut janitor) = self.janitor.take() {
            // Closing its stdin lets it finish; it finds nothing left to remove.
            drop(janitor.stdin.take());
            let _ = janitor.wait();
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

// A process that removes the working directory once our end of its stdin closes, which
// also happens when we are killed without running destructors.
fn spawn_janitor(work_dir: &Path) -> Result<std::process::Child, Error> {
    use std::os::unix::process::CommandExt as _;
    std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg("cat >/dev/null; sleep 2; rm -rf -- \"$1\"")
        .arg("nodeshell-janitor")
        .arg(work_dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| Error::io("start the working-directory janitor", e))
}

fn ready_timeout() -> Duration {
    let seconds = std::env::var(READY_SECONDS_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_READY_SECONDS);
    Duration::from_secs(seconds)
}

// Keys, tokens and kubeconfigs are readable by the owner only.
fn write_private(path: &Path, contents: &str) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| Error::io(format!("write {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn janitor_removes_the_directory_once_its_pipe_closes() {
        let dir = std::env::temp_dir().join(format!("nodeshell-janitor-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("etcd")).expect("dir");
        let mut janitor = spawn_janitor(&dir).expect("janitor");
        std::thread::sleep(Duration::from_millis(300));
        assert!(dir.exists(), "removed while we were alive");
        // Closing our end is exactly what the kernel does when this process dies.
        drop(janitor.stdin.take());
        janitor.wait().expect("janitor exits");
        assert!(!dir.exists(), "{} survived", dir.display());
    }

    #[test]
    fn rbac_manifests_cover_every_role_and_binding() {
        let documents = apply::parse_documents(RBAC_YAML).expect("RBAC YAML parses");
        let names: Vec<String> = documents
            .iter()
            .map(|d| {
                format!(
                    "{}/{}",
                    d["kind"].as_str().unwrap_or(""),
                    d["metadata"]["name"].as_str().unwrap_or("")
                )
            })
            .collect();
        for role in [
            "nodeshell-controller",
            "nodeshell-gateway",
            "nodeshell-auditor",
            "nodeshell-session-admin",
        ] {
            assert!(
                names.contains(&format!("ClusterRole/{role}")),
                "{role}: {names:?}"
            );
            assert!(
                names.contains(&format!("ClusterRoleBinding/{role}")),
                "{role}: {names:?}"
            );
        }
        assert_eq!(
            names.first().map(String::as_str),
            Some("Namespace/nodeshell-system")
        );
    }
}
