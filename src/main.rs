//! The `nodeshell` binary: one executable, one subcommand per role.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use nodeshell::telemetry::{self, LogFormat};

/// Audited shells on the EC2 host behind a Kubernetes node, through AWS SSM Session Manager.
#[derive(Parser, Debug)]
#[command(name = "nodeshell", version, about)]
struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        env = "NODESHELL_LOG_FORMAT",
        value_enum,
        default_value = "auto",
        global = true
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of the gateway's flags does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller: admission, expiry, retention, policy status (leader-elected).
    Controller(nodeshell::controller::ControllerArgs),
    /// Run the gateway: the HTTP/WebSocket API that opens and streams node shells.
    Gateway(Box<nodeshell::gateway::GatewayArgs>),
    /// Print the CustomResourceDefinitions as YAML (what `crds/` holds).
    Crds,
    /// Run the AWS simulator (OIDC issuer, STS, SSM, ssmmessages) on loopback.
    #[cfg(feature = "dev")]
    Sim(nodeshell::sim::SimArgs),
    /// Run everything at once on this machine: control plane, simulator, controller.
    #[cfg(feature = "dev")]
    Dev(nodeshell::dev::DevArgs),
    /// Stored transcripts: `verify <session>` checks its chunks against the chain head.
    Transcript(nodeshell::verification::TranscriptArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // kube and the AWS SDK both use rustls; one process-wide provider, chosen before either.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // Run as `kubectl-nodeshell` (a link or a copy of this binary): the kubectl plugin.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if nodeshell::cli::invoked_as_plugin(argv.first().map(|a| a.as_os_str())) {
        let status = nodeshell::cli::run(argv).await;
        std::process::exit(i32::from(status));
    }
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match cli.command {
        Command::Controller(args) => nodeshell::controller::run(args).await?,
        Command::Gateway(args) => nodeshell::gateway::run(*args).await?,
        Command::Crds => print!("{}", nodeshell::api::crds_yaml()?),
        #[cfg(feature = "dev")]
        Command::Sim(args) => nodeshell::sim::run(args).await?,
        #[cfg(feature = "dev")]
        Command::Dev(args) => nodeshell::dev::run(args).await?,
        Command::Transcript(args) => {
            if !nodeshell::verification::run(args).await? {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
