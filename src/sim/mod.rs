//! (being written by its owner)

/// Errors of `nodeshell sim`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Placeholder until the subcommand is implemented.
    #[error("nodeshell sim is not implemented yet")]
    NotImplemented,
}

/// Flags of `nodeshell sim`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {}

/// Runs `nodeshell sim` until it is told to stop.
pub async fn run(_args: SimArgs) -> Result<(), Error> {
    Err(Error::NotImplemented)
}
