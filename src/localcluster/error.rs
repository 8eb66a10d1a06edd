//! What can go wrong while running a local control plane, each with what to do about it.

use std::path::PathBuf;

/// Errors of the local control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The control-plane binaries are not built.
    #[error(
        "kube-apiserver/etcd{extra} not found in {searched}: build them once with \
         e2e/scripts/build-controlplane.sh (10-20 min cold, cached afterwards), or set \
         NODESHELL_CONTROLPLANE_BIN to a directory that holds them",
        extra = if *.needs_controller_manager { "/kube-controller-manager" } else { "" },
        searched = .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    BinariesMissing {
        /// Directories looked in, in order.
        searched: Vec<PathBuf>,
        /// Whether kube-controller-manager was asked for too.
        needs_controller_manager: bool,
    },
    /// A file-system or socket operation failed.
    #[error("could not {action}: {source}")]
    Io {
        /// What we were doing.
        action: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Certificate generation failed (a bug or a broken crypto backend).
    #[error("could not generate the local control plane's certificates: {0}")]
    Certificates(#[from] rcgen::Error),
    /// A child process could not be started.
    #[error("could not start {component} ({program}): {source}; is the binary executable?")]
    Spawn {
        /// Component name.
        component: String,
        /// The executable.
        program: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A child process exited while it should be running.
    #[error(
        "{component} exited ({status}); its log{at} ends with:\n{tail}",
        at = .log.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default()
    )]
    ExitedEarly {
        /// Component name.
        component: String,
        /// Exit status as text.
        status: String,
        /// Its log file, if any.
        log: Option<PathBuf>,
        /// The end of that log.
        tail: String,
    },
    /// A component did not become ready in time.
    #[error(
        "{component} was not ready after {seconds}s ({detail}); see {log} (the machine may be \
         overloaded: retry, or raise NODESHELL_LOCALCLUSTER_READY_SECONDS)",
        log = .log.display()
    )]
    NotReady {
        /// Component name.
        component: String,
        /// How long we waited.
        seconds: u64,
        /// The last failure seen.
        detail: String,
        /// Its log file.
        log: PathBuf,
    },
    /// A kubeconfig could not be written or loaded.
    #[error("kubeconfig of the local control plane is unusable: {0}")]
    Kubeconfig(String),
    /// Building a kube client failed.
    #[error("could not build a kube client for the local control plane: {0}")]
    Kube(#[source] kube::Error),
    /// A manifest is malformed.
    #[error("manifest rejected before sending: {message}")]
    Manifest {
        /// What is wrong.
        message: String,
    },
    /// The apiserver does not serve a kind used by a manifest.
    #[error("the apiserver does not serve {kind} (install its CRD first): {source}")]
    Discovery {
        /// group/version kind.
        kind: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// The apiserver refused an object.
    #[error("applying {object} failed: {source}")]
    Apply {
        /// kind/name.
        object: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },
    /// A CRD was accepted but never served.
    #[error("CRD {name} was not Established: {detail}")]
    CrdNotEstablished {
        /// CRD name.
        name: String,
        /// What was seen.
        detail: String,
    },
    /// nodeshell's own CRDs could not be generated.
    #[error("nodeshell::api::crds_yaml() failed ({0}); the CRD types in src/api must build first")]
    Crds(String),
}

impl Error {
    /// An [`Error::Io`] for `action`.
    pub fn io(action: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            action: action.into(),
            source,
        }
    }
}
