//! `homelab-autopilot crd`: print the CRDs, or write them into `crds/` and the chart.

use std::process::ExitCode;

/// Arguments of `homelab-autopilot crd`.
#[derive(clap::Args, Debug)]
pub struct CrdArgs {
    /// Write crds/*.yaml and charts/homelab-autopilot/templates/crds/*.yaml instead of printing.
    #[arg(long)]
    pub write: bool,
}

/// Runs `crd`.
pub fn run(_args: CrdArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("crd: not implemented yet")
}
