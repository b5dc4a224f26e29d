//! `homelab-autopilot pvesim`: run the simulator until interrupted.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::faults::parse_duration;
use super::{Fault, SeedSpec, SimConfig, Simulator};

/// Arguments of `homelab-autopilot pvesim`.
#[derive(clap::Args, Debug)]
pub struct PvesimArgs {
    /// Address to listen on (serves the seed's first node).
    #[arg(long, default_value = "127.0.0.1:8006")]
    pub listen: SocketAddr,
    /// YAML description of the cluster (see examples/pvesim/cluster.yaml); default: the cluster
    /// `examples/` describe (the demo's seed: pve1-pve3, nextcloud VM 200, gitea CT 201, token
    /// `autopilot@pve!operator`).
    #[arg(long)]
    pub seed: Option<PathBuf>,
    /// Add N generated running VMs to the seed (VMIDs from 10000, named `scale-<vmid>`, spread
    /// round-robin over its nodes), for scale tests such as `bench/operator-scale.sh`.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub scale_guests: u32,
    /// Directory for the backup files of the `dir` storage (default: a temporary directory
    /// removed on exit).
    #[arg(long)]
    pub dump_dir: Option<PathBuf>,
    /// Official PVE API schema (pve-apischema.json); every request is validated against it.
    #[arg(long)]
    pub schema: Option<PathBuf>,
    /// Serve plain HTTP instead of HTTPS.
    #[arg(long)]
    pub plain_http: bool,
    /// Real seconds per simulated second of task runs and delays (0.01 = 100x faster).
    #[arg(long, default_value_t = 1.0, value_parser = parse_time_scale)]
    pub time_scale: f64,
    /// Write URL, credentials and TLS fingerprint as JSON to this file (mode 0600).
    #[arg(long)]
    pub info_file: Option<PathBuf>,
    /// Seed of every random decision (MACs, fault rates).
    #[arg(long, default_value_t = 1)]
    pub rng_seed: u64,
    /// Fault active from the start, e.g. `error-rate=0.1@GET /cluster/resources`,
    /// `latency=200ms`, `node-offline=pve2`, `quorum-loss`, `task-failure=vzdump` (repeatable).
    #[arg(long = "fault", value_parser = parse_fault)]
    pub faults: Vec<Fault>,
    /// Simulated run time of a task type, e.g. `vzdump=10s` (repeatable).
    #[arg(long = "task-duration", value_parser = parse_task_duration)]
    pub task_durations: Vec<(String, Duration)>,
    /// Also listen once per other node, so a client can fail over between the nodes' endpoints:
    /// on the ports after `--listen`'s (8006: pve2 on 8007, pve3 on 8008), ephemeral with port
    /// 0; listed in the info file and printed. Each node serves its own
    /// certificate, signed by the one cluster CA, as on real PVE.
    #[arg(long)]
    pub node_listeners: bool,
    /// Keep the cluster CA (`pve-root-ca.pem`) and each node's certificate in this directory
    /// across restarts, as a real PVE keeps them when pveproxy restarts (created when missing).
    /// Default: new certificates on every start, which breaks a pinned fingerprint.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Also serve a Proxmox Backup Server API here (e.g. 127.0.0.1:8007), with its own
    /// self-signed certificate: its datastores hold the snapshots of the seed's `pbs` storages.
    /// Authenticate with a seed API token as `PBSAPIToken=user@realm!name:secret`.
    #[arg(long)]
    pub pbs_listen: Option<SocketAddr>,
}

fn parse_time_scale(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() && f >= 0.0 => Ok(f),
        _ => Err(format!(
            "--time-scale must be a number >= 0 (e.g. 0.01), got '{text}'"
        )),
    }
}

fn parse_fault(text: &str) -> Result<Fault, String> {
    text.parse()
}

fn parse_task_duration(text: &str) -> Result<(String, Duration), String> {
    let (kind, duration) = text
        .split_once('=')
        .ok_or_else(|| format!("--task-duration expects TYPE=DURATION like vzdump=10s, got '{text}'"))?;
    Ok((kind.to_string(), parse_duration(duration)?))
}

/// Writes `contents` to `path` readable by the owner only.
fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("--info-file: cannot create {}", tmp.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("--info-file: cannot write {}", path.display()))?;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Runs the simulator until interrupted; without `--seed` it serves `default_seed` (the binary
/// passes the cluster the examples describe).
pub async fn run(args: PvesimArgs, default_seed: SeedSpec) -> anyhow::Result<ExitCode> {
    let seed = match &args.seed {
        Some(path) => SeedSpec::from_file(path)?,
        None => default_seed,
    }
    .with_generated_guests(args.scale_guests);
    let config = SimConfig {
        listen: args.listen,
        seed,
        dump_dir: args.dump_dir.clone(),
        schema: args.schema.clone(),
        plain_http: args.plain_http,
        time_scale: args.time_scale,
        rng_seed: args.rng_seed,
        task_durations: args.task_durations.iter().cloned().collect(),
        node_listeners: args.node_listeners,
        faults: args.faults.clone(),
        pbs_listen: args.pbs_listen,
        state_dir: args.state_dir.clone(),
        clock_start: None,
    };
    let handle = Simulator::start(config).await?;
    if let Some(path) = &args.info_file {
        let mut info = handle.info_json();
        let nodes: serde_json::Map<String, serde_json::Value> = handle
            .state(|c| c.nodes.keys().cloned().collect::<Vec<_>>())
            .into_iter()
            .filter_map(|n| {
                handle
                    .node_url(&n)
                    .map(|u| (n, serde_json::Value::String(u.to_string())))
            })
            .collect();
        info["nodeUrls"] = serde_json::Value::Object(nodes);
        write_private(path, serde_json::to_string_pretty(&info)?.as_bytes())?;
    }
    let fingerprint = if handle.fingerprint().is_empty() {
        "none (plain HTTP)"
    } else {
        handle.fingerprint()
    };
    println!(
        "pvesim listening on {} token {} fingerprint {} dump-dir {}",
        handle.url(),
        handle.token_id(),
        fingerprint,
        handle.dump_dir().display()
    );
    let nodes = handle.state(|c| c.nodes.keys().cloned().collect::<Vec<_>>());
    for node in nodes.iter().filter(|n| handle.node_url(n) != Some(handle.url())) {
        if let Some(url) = handle.node_url(node) {
            println!(
                "pvesim node {node} listening on {url} fingerprint {}",
                handle.node_fingerprint(node).unwrap_or("none (plain HTTP)")
            );
        }
    }
    if let (Some(url), Some(fp)) = (handle.pbs_url(), handle.pbs_fingerprint()) {
        println!(
            "pvesim PBS listening on {url} fingerprint {}",
            if fp.is_empty() { "none (plain HTTP)" } else { fp }
        );
    }
    wait_for_signal().await;
    handle.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
