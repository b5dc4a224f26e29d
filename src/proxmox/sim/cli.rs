//! `homelab-autopilot pvesim`.

use std::process::ExitCode;

/// Arguments of `homelab-autopilot pvesim`.
#[derive(clap::Args, Debug)]
pub struct PvesimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8006")]
    pub listen: String,
}

/// Runs the simulator until interrupted.
pub async fn run(_args: PvesimArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("pvesim: not implemented yet")
}
