//! (being written by its owner)

/// Errors of `nodeshell controller`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Placeholder until the subcommand is implemented.
    #[error("nodeshell controller is not implemented yet")]
    NotImplemented,
}

/// Flags of `nodeshell controller`.
#[derive(Debug, Clone, clap::Args)]
pub struct ControllerArgs {}

/// Runs `nodeshell controller` until it is told to stop.
pub async fn run(_args: ControllerArgs) -> Result<(), Error> {
    Err(Error::NotImplemented)
}
