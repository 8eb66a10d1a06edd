//! `nodeshell transcript verify <session>`: checks a session's stored transcript against the
//! chain head its status records, from a workstation with read access to the session and
//! the transcript Secrets (the chart's `rbac.transcriptReaders`), and names the first chunk
//! that differs. Prints the report as JSON; exits 0 when every chunk matches, 1 when one
//! differs or the transcript cannot be verified.

use std::path::PathBuf;

use kube::Api;

use crate::api::NodeShellSession;
use crate::gateway::transcript::TranscriptStore;
use crate::gateway::transcript::chain::ChainReport;

/// `nodeshell transcript …`.
#[derive(clap::Args, Debug)]
pub struct TranscriptArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: TranscriptCommand,
}

/// The transcript subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum TranscriptCommand {
    /// Check a session's stored transcript chunks against the chain head in its status.
    Verify(VerifyArgs),
}

/// `nodeshell transcript verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The NodeShellSession's name.
    pub session: String,
    /// Namespace of the transcript Secrets (the gateway's `--namespace`).
    #[arg(long, env = "NODESHELL_NAMESPACE", default_value = "nodeshell-system")]
    pub namespace: String,
    /// Kubeconfig file (default: KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, env = "NODESHELL_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

/// Why verification could not run.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The kubeconfig could not be read.
    #[error("reading the kubeconfig: {0}; pass --kubeconfig or set KUBECONFIG")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// No configuration could be inferred.
    #[error("no Kubernetes configuration: {0}; pass --kubeconfig or set KUBECONFIG")]
    Infer(#[from] kube::config::InferConfigError),
    /// The apiserver refused or could not be reached.
    #[error("the Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The session does not exist.
    #[error("session {0} does not exist (check the name with kubectl get nss)")]
    NoSession(String),
    /// The transcript could not be read.
    #[error("{0}")]
    Load(String),
}

/// Runs the check; returns the report.
pub async fn verify(args: &VerifyArgs) -> Result<ChainReport, VerifyError> {
    let client = crate::kube_client::client::<VerifyError>(args.kubeconfig.as_deref()).await?;
    let sessions: Api<NodeShellSession> = Api::all(client.clone());
    let session = sessions
        .get_opt(&args.session)
        .await?
        .ok_or_else(|| VerifyError::NoSession(args.session.clone()))?;
    TranscriptStore::new(client, &args.namespace)
        .verify(&session)
        .await
        .map_err(|e| VerifyError::Load(e.to_string()))
}

/// `nodeshell transcript …`: prints the report; whether every chunk matched.
pub async fn run(args: TranscriptArgs) -> Result<bool, VerifyError> {
    match args.command {
        TranscriptCommand::Verify(v) => {
            let report = verify(&v).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "session": v.session,
                    "verification": report,
                }))
                .unwrap_or_default()
            );
            Ok(report.intact)
        }
    }
}
