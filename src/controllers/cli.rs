//! `homelab-autopilot operator`.

use std::process::ExitCode;

/// Arguments of `homelab-autopilot operator`.
#[derive(clap::Args, Debug)]
pub struct OperatorArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "AUTOPILOT_NAMESPACE")]
    pub namespace: Option<String>,
}

/// Runs the operator until a shutdown signal.
pub async fn run(_args: OperatorArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("operator: not implemented yet")
}
