//! The ProxmoxCluster controller: connect to a Proxmox VE cluster (endpoint failover, API token
//! or password from a Secret, pinned fingerprint or CA), read its version, quorum, nodes and
//! storages, and report them as conditions `Connected`, `Quorate`, `Ready` and status fields.
//!
//! The core here ([`reconcile_core`] = `pve::resolve` -> [`observe`] -> [`plan`]) imports no kube
//! types: [`controller`] puts it on the generic driver, which runs it against the API server and
//! in `homelab-autopilot demo`. Every kind reaches a cluster through `pve::access` (the same
//! client cache).

pub mod controller;
pub mod observe;
pub mod plan;
pub mod reasons;

use std::time::Duration;

use jiff::Timestamp;

use self::plan::{ClusterPlan, Failure, PlanInput};
use super::pve::{ClusterRefs, ProxmoxDeps, cluster_client};
use crate::crd::proxmox_cluster::ProxmoxClusterStatus;

/// One pass over a ProxmoxCluster: resolve its client, observe the cluster, plan the status.
/// `previous` is the stored status.
pub async fn reconcile_core(
    deps: &ProxmoxDeps,
    refs: ClusterRefs<'_>,
    previous: &ProxmoxClusterStatus,
    now: Timestamp,
) -> ClusterPlan {
    let observed = match cluster_client(deps, refs).await {
        Ok(client) => {
            let resync = u64::try_from(refs.spec.resync_interval_seconds)
                .map_or(Duration::from_secs(300), Duration::from_secs);
            observe::observe(&client, &deps.snapshots, refs.uid, resync, now)
                .await
                .map_err(Failure::Pve)
        }
        Err(unresolved) => Err(Failure::Unresolved(unresolved)),
    };
    let input = PlanInput {
        spec: refs.spec,
        generation: refs.generation,
        previous,
        now,
        tuning: &deps.tuning,
    };
    plan::plan(input, observed.as_ref())
}
