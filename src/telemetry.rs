//! Logging set-up shared by every subcommand: JSON lines in a cluster, readable text at a
//! terminal, filtered by `RUST_LOG` (default `info`).

use std::io::IsTerminal;
use tracing_subscriber::{EnvFilter, fmt};

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// JSON when stderr is not a terminal, text otherwise.
    Auto,
    /// One JSON object a line.
    Json,
    /// Human-readable text.
    Text,
}

/// Installs the global tracing subscriber. Logs go to stderr; stdout is kept for audit rows
/// and command output.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second init (tests) is harmless; the first subscriber stays.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
