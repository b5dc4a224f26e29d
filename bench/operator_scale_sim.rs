//! `cargo run --release --example operator-scale-sim -- [N]` (default N = 1000): the part of
//! issue 11's operator-scale cost that is ours, measured without a Kubernetes API server.
//!
//! It starts pvesim in this process (HTTPS on loopback) with N generated running VMs besides the
//! seed's own guests, and stores in the demo's in-memory [`World`] a ProxmoxCluster
//! (`resyncIntervalSeconds: 30`, trusting the simulator's CA), its token Secret and N Services
//! (one per generated VMID, type VM, no health checks). The World runs each kind's pass with the
//! generic driver's `run_pass`, the same reconcile core the operator runs. Then:
//!
//! - pass 1: one ProxmoxCluster pass, then one Service pass over all N Services; the wall-clock
//!   seconds until every Service status has `node` set (it checks that all of them do). The
//!   World reconciles one object after the other; the operator's controller runs reconciles
//!   concurrently, so on several cores it can be faster than this, and it waits on the API
//!   server, which this does not;
//! - three resync windows: the clock (the World's and the simulator's) moves 30 s, then one
//!   ProxmoxCluster pass and one Service pass; the PVE requests of each pass are counted by
//!   `METHOD template` from the simulator's request journal, so the cluster's health reads and
//!   the Services' reads are told apart;
//! - the peak RSS of this process (`VmHWM`).
//!
//! What it does NOT include: the Kubernetes API server, the watches and reflector caches that
//! hold N objects in the operator, the status patch round trips (here a changed status is written
//! to memory), Events sent to the API, leader election. The process also holds pvesim's state for
//! the N guests and the World's N objects as JSON, which the operator would not: the peak RSS is
//! an upper bound of the reconcile side's memory, not the operator's. `bench/operator-scale.sh`
//! measures the real operator against an API server.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use jiff::Timestamp;
use serde_json::json;

use homelab_autopilot::controllers::backup_policy::ingest::StoreSettings;
use homelab_autopilot::controllers::kit::time::add;
use homelab_autopilot::controllers::proxmox_cluster::controller::ClusterKind;
use homelab_autopilot::controllers::pve::ProxmoxDeps;
use homelab_autopilot::controllers::service::controller::ServiceKind;
use homelab_autopilot::crd::Service;
use homelab_autopilot::demo::world::World;
use homelab_autopilot::pvesim::{JOURNAL_CAPACITY, SimConfig, SimHandle, Simulator};

/// The ProxmoxCluster's `resyncIntervalSeconds`, as `bench/operator-scale.sh` sets it.
const RESYNC_SECONDS: u64 = 30;
/// Resync windows measured after convergence, as `bench/operator-scale.sh` does.
const WINDOWS: usize = 3;
const USAGE: &str = "usage: cargo run --release --example operator-scale-sim -- [N]   (default N = 1000)";

/// The reads of the ProxmoxCluster's health check (`proxmox_cluster::observe`): the version, the
/// cluster status, each online node's status and the storage configuration. Its other read,
/// `/cluster/resources`, is the per-cluster snapshot the Services share, so it counts against
/// issue 11's "at most 3 PVE calls per resync besides health checks".
const HEALTH_READS: &[&str] = &[
    "GET /version",
    "GET /cluster/status",
    "GET /nodes/{node}/status",
    "GET /storage",
];

/// PVE requests by `METHOD template`, and how many of them failed.
#[derive(Default)]
struct Calls {
    by_endpoint: BTreeMap<String, usize>,
    failed: usize,
}

impl Calls {
    fn total(&self) -> usize {
        self.by_endpoint.values().sum()
    }

    /// Requests of the ProxmoxCluster's health check ([`HEALTH_READS`]).
    fn health(&self) -> usize {
        self.by_endpoint
            .iter()
            .filter(|(endpoint, _)| HEALTH_READS.contains(&endpoint.as_str()))
            .map(|(_, n)| n)
            .sum()
    }

    fn describe(&self) -> String {
        if self.by_endpoint.is_empty() {
            return "none".into();
        }
        let mut text = self
            .by_endpoint
            .iter()
            .map(|(endpoint, n)| format!("`{endpoint}` {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        if self.failed > 0 {
            let _ = write!(text, " ({} failed)", self.failed);
        }
        text
    }
}

/// Counts the requests the simulator answered while `step` ran.
async fn counting<T>(
    sim: &SimHandle,
    step: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(T, Calls)> {
    let before = sim.requests().len();
    let out = step.await?;
    let records = sim.requests();
    if records.len() >= JOURNAL_CAPACITY {
        bail!(
            "pvesim's request journal is full ({JOURNAL_CAPACITY} entries): the requests of one pass \
             cannot be counted by position; lower N"
        );
    }
    let mut calls = Calls::default();
    for r in &records[before..] {
        *calls
            .by_endpoint
            .entry(format!("{} {}", r.method, r.template))
            .or_default() += 1;
        if !(200..300).contains(&r.status) {
            calls.failed += 1;
        }
    }
    Ok((out, calls))
}

/// `VmHWM` (peak resident set size) of this process, in MiB.
fn peak_rss_mib() -> anyhow::Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM line in /proc/self/status")?;
    Ok(kib / 1024.0)
}

/// `nproc` and the CPU model of /proc/cpuinfo.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("nproc {cpus}, {model}")
}

/// The objects as `kubectl apply` would read them: one JSON document each (JSON is YAML).
fn manifests(sim: &SimHandle, vmids: &[u32]) -> anyhow::Result<String> {
    let mut docs = vec![json!({
        "apiVersion": "autopilot.homelab.dev/v1alpha1",
        "kind": "ProxmoxCluster",
        "metadata": {"name": "homelab"},
        "spec": {
            "endpoints": [{"url": sim.url()}],
            "credentialsSecretRef": {"name": "pve-token"},
            "tls": {"caPem": sim.ca_pem()},
            "resyncIntervalSeconds": RESYNC_SECONDS,
        },
    })];
    docs.extend(vmids.iter().map(|vmid| {
        json!({
            "apiVersion": "autopilot.homelab.dev/v1alpha1",
            "kind": "Service",
            "metadata": {"name": format!("scale-{vmid}")},
            "spec": {"clusterRef": {"name": "homelab"}, "vmid": vmid, "type": "VM"},
        })
    }));
    let texts = docs
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(texts.join("\n---\n"))
}

/// The stored Service statuses as JSON, by name (to count the ones a pass changed).
fn service_statuses(world: &World) -> anyhow::Result<BTreeMap<String, serde_json::Value>> {
    world
        .list::<Service>()?
        .into_iter()
        .map(|s| {
            Ok((
                s.metadata.name.unwrap_or_default(),
                serde_json::to_value(&s.status)?,
            ))
        })
        .collect()
}

/// One resync window's figures.
struct Window {
    cluster: Calls,
    services: Calls,
    service_seconds: f64,
    statuses_changed: usize,
}

async fn run(n: u32) -> anyhow::Result<()> {
    let seed = homelab_autopilot::demo::sim_seed()?.with_generated_guests(n);
    let vmids: Vec<u32> = seed
        .guests
        .iter()
        .filter(|g| g.name.as_deref().is_some_and(|name| name.starts_with("scale-")))
        .map(|g| g.vmid)
        .collect();
    if vmids.len() != n as usize {
        bail!("the seed generated {} guests, not {n}", vmids.len());
    }
    let seed_guests = seed.guests.len() - vmids.len();
    let sim = Simulator::start(SimConfig {
        seed,
        ..SimConfig::default()
    })
    .await
    .context("cannot start the PVE simulator")?;

    let store = std::env::temp_dir().join(format!("operator-scale-sim-store-{}", std::process::id()));
    let mut world = World::empty(
        ProxmoxDeps::new(None),
        StoreSettings {
            repo: store.clone(),
            key_file: None,
        },
    );
    let mut now = Timestamp::from_second(sim.now()).context("simulator clock")?;
    let text = manifests(&sim, &vmids)?;
    world.apply_at(&[("operator-scale-sim", &text)], now)?;
    world.update_secret(
        "pve-token",
        &[("tokenId", sim.token_id()), ("tokenSecret", sim.token_secret())],
    )?;
    let rss_before = peak_rss_mib()?;

    // Pass 1: the cluster, then every Service once.
    let started = Instant::now();
    let ((), first_cluster) = counting(&sim, world.reconcile::<ClusterKind>(now)).await?;
    let cluster_seconds = started.elapsed().as_secs_f64();
    let ((), first_services) = counting(&sim, world.reconcile::<ServiceKind>(now)).await?;
    let converged_seconds = started.elapsed().as_secs_f64();
    let services = world.list::<Service>()?;
    let with_node = services
        .iter()
        .filter(|s| s.status.as_ref().is_some_and(|st| st.node.is_some()))
        .count();
    if with_node != vmids.len() {
        bail!(
            "after pass 1 only {with_node} of {} Services report their node",
            vmids.len()
        );
    }

    // Resync windows.
    let mut windows = Vec::new();
    for _ in 0..WINDOWS {
        let step = Duration::from_secs(RESYNC_SECONDS);
        now = add(now, step);
        sim.advance_clock(step);
        let ((), cluster) = counting(&sim, world.reconcile::<ClusterKind>(now)).await?;
        let before = service_statuses(&world)?;
        let timer = Instant::now();
        let ((), services) = counting(&sim, world.reconcile::<ServiceKind>(now)).await?;
        let service_seconds = timer.elapsed().as_secs_f64();
        let after = service_statuses(&world)?;
        let statuses_changed = after.iter().filter(|(k, v)| before.get(*k) != Some(*v)).count();
        windows.push(Window {
            cluster,
            services,
            service_seconds,
            statuses_changed,
        });
    }
    let peak = peak_rss_mib()?;
    sim.shutdown().await;
    if store.exists() {
        std::fs::remove_dir_all(&store).with_context(|| format!("removing {}", store.display()))?;
    }

    // Per window: everything but the health check's reads, whichever pass sent it.
    let besides_health =
        |w: &Window| w.cluster.total() + w.services.total() - w.cluster.health() - w.services.health();
    let budget_max = windows.iter().map(besides_health).max().unwrap_or(0);
    let service_max = windows.iter().map(|w| w.services.total()).max().unwrap_or(0);
    let health_max = windows
        .iter()
        .map(|w| w.cluster.health() + w.services.health())
        .max()
        .unwrap_or(0);
    let changed_max = windows.iter().map(|w| w.statuses_changed).max().unwrap_or(0);
    let failed: usize = windows
        .iter()
        .map(|w| w.cluster.failed + w.services.failed)
        .sum::<usize>()
        + first_cluster.failed
        + first_services.failed;
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };

    let mut out = String::new();
    let _ = writeln!(
        out,
        "operator-scale-sim: N = {n} Services on {n} generated running VMs (+{seed_guests} seed guests), \
         1 ProxmoxCluster, resync {RESYNC_SECONDS} s"
    );
    let _ = writeln!(out, "machine: {}", machine());
    let _ = writeln!(
        out,
        "in process: the operator's reconcile cores (generic driver run_pass) over the demo's in-memory \
         World, one object after the other, against pvesim over HTTPS on loopback."
    );
    let _ = writeln!(
        out,
        "NOT included: the Kubernetes API server, watches and reflector caches of N objects, status \
         patch round trips, Events, concurrency of the real controller."
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "| figure | measured | issue 11 target (N = 1,000) |");
    let _ = writeln!(out, "| --- | --- | --- |");
    let _ = writeln!(
        out,
        "| Services reporting their node after pass 1 | {with_node} of {} | every Service |",
        vmids.len()
    );
    let _ = writeln!(
        out,
        "| pass 1 until every node is set: ProxmoxCluster + {n} Service reconciles, sequential | {converged_seconds:.3} s \
         (cluster {cluster_seconds:.3} s) | within 10 s of the apply: {} for this part |",
        verdict(converged_seconds <= 10.0)
    );
    let _ = writeln!(
        out,
        "| PVE calls per resync besides health checks, both passes (most of {WINDOWS} windows) | {budget_max} | \
         at most 3 per cluster: {} |",
        verdict(budget_max <= 3)
    );
    let _ = writeln!(
        out,
        "| of which sent by the Service pass over {n} Services | {service_max} | - |"
    );
    let _ = writeln!(
        out,
        "| ProxmoxCluster health-check reads per resync (most of {WINDOWS} windows) | {health_max} | not limited |"
    );
    let _ = writeln!(
        out,
        "| Service statuses changed per resync (status patches the operator would send) | {changed_max} of {n} | \
         not a target |"
    );
    let _ = writeln!(
        out,
        "| peak RSS of this process (VmHWM), incl. pvesim and the World | {peak:.1} MiB ({rss_before:.1} MiB \
         before pass 1) | operator under 100 MiB: {} for this upper bound |",
        verdict(peak < 100.0)
    );
    let _ = writeln!(out, "| failed PVE requests (non-2xx) | {failed} | none |");
    let _ = writeln!(out);
    let _ = writeln!(out, "PVE requests by pass (`METHOD template` count):");
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| pass | ProxmoxCluster pass | Service pass | Service pass s | Service statuses changed |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
    let _ = writeln!(
        out,
        "| 1 (t+0 s) | {} | {} | {:.3} | {n} (first status) |",
        first_cluster.describe(),
        first_services.describe(),
        converged_seconds - cluster_seconds
    );
    for (i, w) in windows.iter().enumerate() {
        let _ = writeln!(
            out,
            "| resync {} (t+{} s) | {} | {} | {:.3} | {} |",
            i + 1,
            (i as u64 + 1) * RESYNC_SECONDS,
            w.cluster.describe(),
            w.services.describe(),
            w.service_seconds,
            w.statuses_changed
        );
    }
    print!("{out}");
    Ok(())
}

fn main() -> ExitCode {
    let n = match std::env::args().nth(1).as_deref() {
        None => 1000,
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(arg) => match arg.parse::<u32>() {
            Ok(n) if n >= 1 => n,
            _ => {
                eprintln!("operator-scale-sim: N must be a positive integer, got '{arg}'\n{USAGE}");
                return ExitCode::from(2);
            }
        },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("operator-scale-sim: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(n)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("operator-scale-sim: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
