//! `nodeshell dev`: everything at once on this machine (being written by its owner).

/// Errors of `nodeshell dev`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Placeholder until the subcommand is implemented.
    #[error("nodeshell dev is not implemented yet")]
    NotImplemented,
}

/// Flags of `nodeshell dev`.
#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {}

/// Runs `nodeshell dev` until Ctrl-C.
pub async fn run(_args: DevArgs) -> Result<(), Error> {
    Err(Error::NotImplemented)
}
