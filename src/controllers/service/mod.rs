//! The Service controller: find where a guest really runs, report its power state, uptime and
//! node, run its health checks on their intervals, and (only when `spec.powerState` asks)
//! start or shut it down. Deleting a Service never touches the guest: there is no finalizer.
//!
//! The core here ([`reconcile_core`]: poll the recorded task -> [`observe`] -> [`health`] ->
//! [`plan`] -> one power action) imports no kube types; [`controller`] drives it from the API
//! server and `homelab-autopilot demo` from in-memory objects.

pub mod controller;
pub mod health;
pub mod healthy;
pub mod observe;
pub mod plan;
pub mod power;

use std::{collections::BTreeMap, time::Duration};

use jiff::Timestamp;

use self::observe::{GuestView, TaskView, Unavailable};
use self::plan::{PlanInput, PowerAction};
use super::proxmox_cluster::plan::failure_reason;
use super::proxmox_cluster::{ClusterInputs, cluster_client};
use super::shared::{Outcome, ProxmoxDeps};
use crate::crd::service::{ServiceSpec, ServiceStatus};
use crate::crd::{ProxmoxCluster, Service};
use crate::proxmox::{PveClient, api::ShutdownOptions};

/// The ProxmoxCluster a Service belongs to, as its driver found it.
#[derive(Clone, Debug)]
pub struct ClusterAccess {
    /// Name of the ProxmoxCluster.
    pub name: String,
    /// Its resync interval (the Service's drift check interval).
    pub resync: Duration,
    /// Its client, or why there is none (cluster missing, Secret missing...).
    pub client: Result<PveClient, Unavailable>,
}

impl ClusterAccess {
    /// The access of a Service whose ProxmoxCluster `name` does not exist in `namespace`.
    pub fn missing(name: &str, namespace: &str) -> Self {
        Self {
            name: name.to_owned(),
            resync: DEFAULT_RESYNC,
            client: Err(Unavailable {
                reason: "ClusterNotFound".into(),
                message: format!(
                    "ProxmoxCluster {name:?} (spec.clusterRef) does not exist in namespace {namespace}; create it or fix \
                     the name"
                ),
            }),
        }
    }

    /// The access through `cluster`'s cached client, built from what the driver read.
    pub async fn through(
        deps: &ProxmoxDeps,
        cluster: &ProxmoxCluster,
        inputs: &ClusterInputs,
        namespace: &str,
    ) -> Self {
        let name = cluster.metadata.name.clone().unwrap_or_default();
        let uid = cluster
            .metadata
            .uid
            .clone()
            .unwrap_or_else(|| format!("{namespace}/{name}"));
        let client = cluster_client(deps, inputs.refs(cluster, &uid, namespace))
            .await
            .map_err(|u| Unavailable {
                reason: u.reason.to_owned(),
                message: format!("ProxmoxCluster {name}: {}", u.message),
            });
        let resync =
            u64::try_from(cluster.spec.resync_interval_seconds).map_or(DEFAULT_RESYNC, Duration::from_secs);
        Self { name, resync, client }
    }
}

/// Drift check interval while the cluster cannot be read (its own interval is unknown).
const DEFAULT_RESYNC: Duration = Duration::from_secs(300);

/// One Service as its driver read it.
#[derive(Clone, Copy, Debug)]
pub struct ServiceRefs<'a> {
    /// UID (key of the per-Service memory).
    pub uid: &'a str,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// The spec.
    pub spec: &'a ServiceSpec,
    /// The stored status.
    pub status: &'a ServiceStatus,
    /// Its cluster.
    pub cluster: &'a ClusterAccess,
}

impl<'a> ServiceRefs<'a> {
    /// The core's view of `service` (UID `uid`) with its stored `status` and its `cluster`.
    pub fn of(
        service: &'a Service,
        uid: &'a str,
        status: &'a ServiceStatus,
        cluster: &'a ClusterAccess,
    ) -> Self {
        Self {
            uid,
            generation: service.metadata.generation,
            spec: &service.spec,
            status,
            cluster,
        }
    }
}

/// One pass over a Service. Polls a recorded task (never waits for it), observes the guest,
/// runs the due health checks concurrently (each bounded by its timeout), plans, and starts at
/// most one power action, whose UPID lands in the returned status.
pub async fn reconcile_core(
    deps: &ProxmoxDeps,
    refs: ServiceRefs<'_>,
    now: Timestamp,
) -> Outcome<ServiceStatus> {
    let spec = refs.spec;
    let client = refs.cluster.client.as_ref().ok();
    let task = match (&refs.status.upid, client) {
        (Some(upid), Some(c)) => observe::poll_task(c, upid).await,
        (Some(upid), None) => TaskView::Running(upid.clone()),
        (None, _) => TaskView::None,
    };
    let guest = match &refs.cluster.client {
        Ok(c) => observe::observe_guest(c, spec.vmid, spec.type_)
            .await
            .unwrap_or_else(|e| {
                GuestView::Unavailable(Unavailable {
                    reason: failure_reason(&e).to_owned(),
                    message: e.to_string(),
                })
            }),
        Err(u) => GuestView::Unavailable(u.clone()),
    };

    let mut memory = deps.services.get(refs.uid);
    if guest.not_running().is_some() {
        // No check runs while the guest is down; the first pass that sees it run again runs
        // every check at once, so `Healthy` follows fresh results.
        memory.last_probe.clear();
    }
    let runnable: Vec<_> = health::due_checks(&spec.health_checks, &memory, now)
        .into_iter()
        .filter(|c| health::can_run(c, &guest))
        .collect();
    let probes: BTreeMap<String, health::Probe> = futures::future::join_all(runnable.iter().map(|c| async {
        (
            c.name.clone(),
            health::probe(c, &guest, client, &deps.health).await,
        )
    }))
    .await
    .into_iter()
    .collect();
    for check in &runnable {
        memory.last_probe.insert(check.name.clone(), now);
    }
    memory
        .last_probe
        .retain(|name, _| spec.health_checks.iter().any(|c| &c.name == name));
    let results = health::fold(&spec.health_checks, &refs.status.health, &probes, now);

    let input = PlanInput {
        spec,
        generation: refs.generation,
        previous: refs.status,
        now,
        cluster: &refs.cluster.name,
        resync: refs.cluster.resync,
        tuning: &deps.tuning,
        memory: &memory,
        // Only checks that can run set the pace: a skipped one would be due again at once.
        next_check: health::next_due(
            spec.health_checks.iter().filter(|c| health::can_run(c, &guest)),
            &memory,
            now,
        ),
    };
    let mut planned = plan::plan(input, &guest, &task, results);
    if let (Some((action, target)), Some(client)) = (planned.action.clone(), client) {
        let started = match action {
            PowerAction::Start => client.start_guest(&target).await,
            PowerAction::Shutdown => client.shutdown_guest(&target, &ShutdownOptions::default()).await,
        };
        if let Ok(task) = &started {
            tracing::info!(guest = %target, upid = %task.upid, ?action, "started power action");
        }
        plan::record_action(&mut planned, input, started.map(|t| t.upid.to_string()));
    }
    deps.services.set(refs.uid, planned.memory);
    planned.outcome
}
