//! The Service controller: find where a guest really runs, report its power state, uptime and
//! node, run its health checks on their intervals, and (only when `spec.powerState` asks)
//! start or shut it down. Deleting a Service never touches the guest: there is no finalizer.
//!
//! The core here ([`reconcile_core`]: poll the recorded task -> find the guest -> [`health`] ->
//! [`plan`] -> one power action) imports no kube types; [`controller`] puts it on the generic
//! driver, which runs it against the API server and in `homelab-autopilot demo`.

pub mod controller;
pub mod health;
pub mod healthy;
pub mod plan;
pub mod power;

use std::collections::BTreeMap;

use jiff::Timestamp;

use self::plan::{PlanInput, PowerAction};
use super::kit::{MemoryMap, Outcome};
use super::pve::guest::{self as observe, GuestView, Unavailable};
use super::pve::task::{self, TaskView};
use super::pve::{ClusterAccess, ProxmoxDeps, reasons::failure_reason};
use crate::crd::Service;
use crate::crd::service::{ServiceSpec, ServiceStatus};
use crate::proxmox::api::ShutdownOptions;

/// What the Service core remembers about one Service between passes, in memory only (after a
/// restart every check is simply due at once and a failed power action may be retried once).
/// Kept out of status on purpose: per-probe timestamps in status would change on every pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceMemory {
    /// When each health check (by name) last ran.
    pub last_probe: BTreeMap<String, Timestamp>,
    /// After a power action failed: no new attempt before this time, and why it failed.
    pub power_failure: Option<(Timestamp, String)>,
}

/// The Service controller's own state: HTTP clients for `HTTP` health checks and per-Service
/// memory (probe times, power retry), keyed by Service UID.
#[derive(Debug, Default)]
pub struct ServiceDeps {
    /// HTTP clients for `HTTP` health checks.
    pub health: health::HealthEnv,
    /// Per-Service memory.
    pub memory: MemoryMap<ServiceMemory>,
}

/// Dependencies that hold the Service controller's [`ServiceDeps`]: the operator's, the demo's.
pub trait HasServiceDeps {
    /// The Service controller's state.
    fn service(&self) -> &ServiceDeps;
}

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
    own: &ServiceDeps,
    refs: ServiceRefs<'_>,
    now: Timestamp,
) -> Outcome<ServiceStatus> {
    let spec = refs.spec;
    let client = refs.cluster.client.as_ref().ok();
    let task = match (&refs.status.upid, client) {
        (Some(upid), Some(c)) => task::poll_task(c, upid).await,
        (Some(upid), None) => TaskView::Running(upid.clone()),
        (None, _) => TaskView::None,
    };
    let guest = match &refs.cluster.client {
        Ok(c) => {
            let cluster = deps
                .snapshots
                .view(&refs.cluster.uid, c, refs.cluster.resync, now);
            observe::observe_guest(&cluster, spec.vmid, spec.type_)
                .await
                .unwrap_or_else(|e| {
                    GuestView::Unavailable(Unavailable {
                        reason: failure_reason(&e).to_owned(),
                        message: e.to_string(),
                    })
                })
        }
        Err(u) => GuestView::Unavailable(u.clone()),
    };

    let mut memory = own.memory.get(refs.uid);
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
            health::probe(c, &guest, client, &own.health).await,
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
        // Whatever came of it, the cluster's snapshot predates this act.
        deps.snapshots.invalidate(&refs.cluster.uid);
        plan::record_action(&mut planned, input, started.map(|t| task::handle(&t)));
    }
    own.memory.set(refs.uid, planned.memory);
    planned.outcome
}
