//! The one `homelab-autopilot` binary: `operator`, `crd`, `store`, `pvesim` and `demo`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use homelab_autopilot::{controllers, crd, demo, pvesim, storage, telemetry};

/// Keeps a homelab's Proxmox VE estate backed up, updated, restore-tested and replicated.
#[derive(Parser, Debug)]
#[command(name = "homelab-autopilot", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    log: telemetry::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the Kubernetes controllers (with /metrics, /healthz and /readyz).
    Operator(controllers::cli::OperatorArgs),
    /// Print the CustomResourceDefinitions, or write them into crds/ and the Helm chart.
    Crd(crd::cli::CrdArgs),
    /// Inspect, back up to, restore from, verify and prune a dedup chunk store.
    Store(storage::cli::StoreArgs),
    /// Run a simulator of the Proxmox VE API (for tests, demos and trying things out).
    Pvesim(pvesim::cli::PvesimArgs),
    /// Run the whole product on embedded defaults: no cluster and no Proxmox needed.
    Demo(demo::DemoArgs),
    /// Restore a backup (a PVE volid or chunkstore/<id>) as a new guest; never overwrites one.
    Restore(controllers::restore_cli::RestoreArgs),
}

/// 128 + SIGPIPE: what a shell reports for a tool that SIGPIPE ended.
const EXIT_BROKEN_PIPE: u8 = 141;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_filter = match cli.command {
        Command::Demo(_) => telemetry::QUIET_FILTER,
        _ => telemetry::DEFAULT_FILTER,
    };
    if let Err(e) = telemetry::init(&cli.log, default_filter) {
        eprintln!("error: cannot set up logging: {e:#}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        // `crd` and `store` are synchronous: no runtime needed (the store spawns its own threads).
        Command::Crd(args) => crd::cli::run(args),
        Command::Store(args) => storage::cli::run(args),
        Command::Operator(args) => block_on(controllers::cli::run(args)),
        // Without --seed, pvesim serves the cluster examples/ describe, so the README's "apply
        // the examples against pvesim" works as written.
        Command::Pvesim(args) => demo::sim_seed().and_then(|seed| block_on(pvesim::cli::run(args, seed))),
        Command::Demo(args) => block_on(demo::run(args)),
        Command::Restore(args) => block_on(controllers::restore_cli::run(args)),
    };
    match result {
        Ok(code) => code,
        // The reader of stdout went away (`... | head`): end quietly, as a tool killed by
        // SIGPIPE would, with its status.
        Err(e) if storage::cli::is_broken_pipe(&e) => ExitCode::from(EXIT_BROKEN_PIPE),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn block_on<F: std::future::Future<Output = anyhow::Result<ExitCode>>>(fut: F) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(fut)
}
