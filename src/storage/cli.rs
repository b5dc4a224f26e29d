//! `homelab-autopilot store`.

use std::process::ExitCode;

/// Arguments of `homelab-autopilot store`.
#[derive(clap::Args, Debug)]
pub struct StoreArgs {
    /// Repository path or URL.
    #[arg(long, env = "AUTOPILOT_STORE_REPO")]
    pub repo: String,
}

/// Runs one store command.
pub fn run(_args: StoreArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("store: not implemented yet")
}
