//! `homelab-autopilot demo`: the product on embedded defaults, with no cluster and no Proxmox.

use std::process::ExitCode;

/// Arguments of `homelab-autopilot demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {}

/// Runs the demo.
pub async fn run(_args: DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("demo: not implemented yet")
}

pub mod standin;
