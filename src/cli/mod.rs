//! `kubectl nodeshell`, the command-line client: the same executable as `nodeshell`, run
//! under the name `kubectl-nodeshell` (krew's plugin naming; see docs/cli.md for why one
//! binary). It talks only to the gateway's HTTP/WebSocket API, never to AWS or the
//! Kubernetes API, and holds a session handle, never a token.

pub mod api;
pub mod commands;
pub mod config;
pub mod errors;
pub mod escape;
pub mod login;
pub mod replay;
pub mod shell;
pub mod terminal;

use std::ffi::OsString;
use std::path::Path;

use clap::{Parser, Subcommand};

use self::api::Gateway;
use self::errors::CliError;

/// The executable name kubectl finds the plugin by.
pub const PLUGIN_NAME: &str = "kubectl-nodeshell";

/// Whether the process was started as the plugin (`argv[0]` is `kubectl-nodeshell`).
pub fn invoked_as_plugin(argv0: Option<&std::ffi::OsStr>) -> bool {
    argv0
        .and_then(|a| Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .is_some_and(|n| n == PLUGIN_NAME)
}

/// A shell on an EKS node's EC2 host, through the nodeshell gateway.
#[derive(Parser, Debug)]
#[command(
    name = "kubectl nodeshell",
    bin_name = "kubectl nodeshell",
    version,
    allow_external_subcommands = true,
    after_help = "Open a shell: kubectl nodeshell NODE [--reason TEXT]. In the shell, Enter ~. ends it and ~~ sends a ~."
)]
pub struct CliArgs {
    /// The gateway's address (else NODESHELL_GATEWAY, else `gateway:` in
    /// $XDG_CONFIG_HOME/nodeshell/config.yaml, else the one you signed in to).
    #[arg(long, env = "NODESHELL_GATEWAY", global = true)]
    pub gateway: Option<String>,
    #[command(subcommand)]
    command: Option<CliCommand>,
}

/// `kubectl nodeshell NODE [--reason TEXT]`: what follows a word that is no command.
#[derive(Parser, Debug)]
#[command(name = "kubectl nodeshell")]
struct OpenArgs {
    /// The node to open a shell on.
    node: String,
    /// Why you need the shell (recorded on the session and in the audit rows).
    #[arg(long)]
    reason: Option<String>,
    /// The gateway's address.
    #[arg(long, env = "NODESHELL_GATEWAY")]
    gateway: Option<String>,
}

#[derive(Subcommand, Debug)]
enum CliCommand {
    /// Sign in through the gateway in your browser.
    Login {
        /// Print the address only; do not start a browser.
        #[arg(long)]
        no_browser: bool,
    },
    /// End the sign-in at the gateway and forget it here.
    Logout,
    /// Who the gateway thinks you are.
    Whoami,
    /// Your sessions (everyone's for an admin tier).
    Ls,
    /// End a session.
    End {
        /// The session's name (see `ls`).
        session: String,
    },
    /// Play a session's recording.
    Replay {
        /// The session's name (see `ls`).
        session: String,
        /// Play this many times faster.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
    },
    /// Check every gate for a shell on a node, without opening one.
    Preflight {
        /// The node.
        node: String,
    },
    /// Search the commands run in sessions (needs a gateway with the command ledger).
    Grep {
        /// The text to look for.
        text: String,
        /// Only sessions since this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
    },
    /// Open a shell on a node (the same as `kubectl nodeshell NODE`, for a node named like
    /// a command).
    Shell {
        /// The node.
        node: String,
        /// Why you need the shell.
        #[arg(long)]
        reason: Option<String>,
    },
    /// `NODE [--reason TEXT]`: open a shell on NODE.
    #[command(external_subcommand)]
    Open(Vec<String>),
}

/// Runs the plugin with `args` (argv, the program name first); returns the exit status.
pub async fn run(args: Vec<OsString>) -> u8 {
    let args = match CliArgs::try_parse_from(args) {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match dispatch(args).await {
        Ok(status) => status,
        Err(e) => {
            eprintln!("{e}");
            e.exit_status()
        }
    }
}

async fn dispatch(mut args: CliArgs) -> Result<u8, CliError> {
    if args.command.is_none() {
        use clap::CommandFactory;
        let _ = CliArgs::command().print_help();
        return Ok(2);
    }
    if let Some(CliCommand::Open(words)) = &args.command {
        let open = OpenArgs::try_parse_from(
            std::iter::once("kubectl nodeshell".to_string()).chain(words.iter().cloned()),
        )
        .map_err(|e| CliError::new("E_BAD_REQUEST", e.to_string().trim().to_string()))?;
        args.gateway = args.gateway.or(open.gateway);
        args.command = Some(CliCommand::Shell {
            node: open.node,
            reason: open.reason,
        });
    }
    let dir = config::config_dir()?;
    let file = config::read_config(&dir)?;
    let stored = config::read_session(&dir)?;
    let base = config::choose_gateway(args.gateway.as_deref(), &file, stored.as_ref())?;
    let gateway = Gateway::new(&base, config::handle_for(&base, stored.as_ref()))?;
    let out = match args.command {
        Some(CliCommand::Login { no_browser }) => {
            let who = login::login(&Gateway::new(&base, None)?, &dir, !no_browser).await?;
            format!(
                "Signed in to {base} as {} (tier {}).\n",
                who["name"].as_str().unwrap_or("?"),
                who["tier"].as_str().unwrap_or("?")
            )
        }
        Some(CliCommand::Logout) => {
            login::logout(&gateway, &dir).await?;
            format!("Signed out of {base}.\n")
        }
        Some(CliCommand::Whoami) => {
            let who = gateway.get("/api/v1/whoami").await?;
            format!(
                "{} (tier {}) at {base}\n",
                who["name"].as_str().unwrap_or("?"),
                who["tier"].as_str().unwrap_or("?")
            )
        }
        Some(CliCommand::Ls) => commands::ls(&gateway).await?,
        Some(CliCommand::End { session }) => commands::end(&gateway, &session).await?,
        Some(CliCommand::Preflight { node }) => commands::preflight(&gateway, &node).await?,
        Some(CliCommand::Grep { text, since }) => {
            commands::grep(&gateway, &text, since.as_deref()).await?
        }
        Some(CliCommand::Replay { session, speed }) => {
            let bytes = gateway
                .get_bytes(&format!(
                    "/api/v1/sessions/{}/transcript",
                    api::segment(&session)
                ))
                .await?;
            let events = replay::output_events(&replay::gunzip(&bytes)?)?;
            replay::play(&events, speed).await?;
            String::new()
        }
        Some(CliCommand::Shell { node, reason }) => {
            return open_shell(&gateway, &node, reason.as_deref()).await;
        }
        Some(CliCommand::Open(_)) | None => {
            return Err(CliError::new(
                "E_BAD_REQUEST",
                "name a node (kubectl nodeshell NODE) or a command (see --help)",
            ));
        }
    };
    print!("{out}");
    Ok(0)
}

async fn open_shell(gateway: &Gateway, node: &str, reason: Option<&str>) -> Result<u8, CliError> {
    let ended = shell::open(gateway, node, reason).await?;
    let exit = ended
        .exit_code
        .map(|c| format!(", exit code {c}"))
        .unwrap_or_default();
    eprintln!(
        "\nnodeshell: session {} ended ({}{exit})",
        ended.session, ended.reason
    );
    Ok(ended.exit_status())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_plugin_is_recognised_by_its_file_name() {
        assert!(invoked_as_plugin(Some("kubectl-nodeshell".as_ref())));
        assert!(invoked_as_plugin(Some(
            "/usr/local/bin/kubectl-nodeshell".as_ref()
        )));
        assert!(!invoked_as_plugin(Some("/usr/bin/nodeshell".as_ref())));
        assert!(!invoked_as_plugin(None));
    }

    #[test]
    fn a_node_or_a_command_parses() {
        let a = CliArgs::try_parse_from(["kubectl-nodeshell", "ip-10-0-1-7", "--reason", "disk"])
            .unwrap();
        let Some(CliCommand::Open(words)) = a.command else {
            panic!("a node is no command")
        };
        let open = OpenArgs::try_parse_from(std::iter::once("x".to_string()).chain(words)).unwrap();
        assert_eq!(open.node, "ip-10-0-1-7");
        assert_eq!(open.reason.as_deref(), Some("disk"));
        let a = CliArgs::try_parse_from(["kubectl-nodeshell", "--gateway", "http://g:1", "ls"])
            .unwrap();
        assert!(matches!(a.command, Some(CliCommand::Ls)));
        assert_eq!(a.gateway.as_deref(), Some("http://g:1"));
        let a =
            CliArgs::try_parse_from(["kubectl-nodeshell", "replay", "s1", "--speed", "4"]).unwrap();
        assert!(matches!(a.command, Some(CliCommand::Replay { speed, .. }) if speed == 4.0));
        let a = CliArgs::try_parse_from(["kubectl-nodeshell", "shell", "ls"]).unwrap();
        assert!(matches!(a.command, Some(CliCommand::Shell { ref node, .. }) if node == "ls"));
    }
}
