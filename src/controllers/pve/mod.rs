//! What every Proxmox-driving kind shares: reaching a cluster ([`access`], credential
//! resolution in [`resolve`], reading through the driver's source in [`read`]), one
//! `/cluster/resources` read per cluster and resync
//! window ([`snapshot`]), finding a guest
//! ([`guest`]), polling a task ([`task`]), which Services a policy selects ([`selector`]), the
//! shared condition reasons ([`reasons`]), and [`ProxmoxDeps`] (client cache, snapshots, timing).
//! No kind module is imported here; kinds import this.

pub mod access;
pub mod guest;
pub mod pbs;
pub mod probe;
pub mod read;
pub mod reasons;
pub mod recheck;
pub mod resolve;
pub mod restore;
pub mod selector;
pub mod snapshot;
pub mod task;

use std::time::Duration;

use crate::controllers::kit::ClientCache;
use crate::proxmox::{ClientMetrics, PveClient};

pub use access::{CaBundle, ClusterAccess, ClusterInputs, ClusterRefs, cluster_client};

/// Timing knobs of the Proxmox controllers. Production defaults; tests and the demo shorten them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// Delay between two polls of a running PVE task (start/shutdown).
    pub task_poll: Duration,
    /// Delay before looking again at a guest locked by another operation (backup, migration).
    pub locked_retry: Duration,
    /// How long after a failed power action the operator waits before trying again.
    pub power_retry_after: Duration,
    /// Shortest delay before reconnecting to an unreachable cluster (it grows with the outage).
    pub reconnect_min: Duration,
    /// Longest delay before reconnecting to an unreachable cluster.
    pub reconnect_max: Duration,
    /// Longest delay between two passes over an object that is fine (the drift check); a
    /// ProxmoxCluster's shorter `resyncIntervalSeconds` applies first.
    pub drift_check_max: Duration,
}

impl Tuning {
    /// The production timing.
    pub const DEFAULT: Tuning = Tuning {
        task_poll: Duration::from_secs(5),
        locked_retry: Duration::from_secs(30),
        power_retry_after: Duration::from_secs(5 * 60),
        reconnect_min: Duration::from_secs(5),
        reconnect_max: Duration::from_secs(5 * 60),
        drift_check_max: Duration::from_secs(15 * 60),
    };
}

impl Default for Tuning {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Dependencies that hold a [`ProxmoxDeps`]: the operator's, the demo's.
pub trait HasProxmox {
    /// The Proxmox dependencies.
    fn proxmox(&self) -> &ProxmoxDeps;
}

impl HasProxmox for ProxmoxDeps {
    fn proxmox(&self) -> &ProxmoxDeps {
        self
    }
}

/// What the Proxmox reconcile cores need beyond their inputs, shared by all passes and kinds: the
/// client cache (one [`PveClient`] per ProxmoxCluster, rebuilt when the cluster's spec or
/// credentials change), PVE request metrics and timing.
#[derive(Debug)]
pub struct ProxmoxDeps {
    /// One client per ProxmoxCluster UID, versioned by generation and Secret resourceVersion.
    pub clients: ClientCache<PveClient>,
    /// One `/cluster/resources` read per
    /// ProxmoxCluster and resync window, shared by all kinds.
    pub snapshots: snapshot::Snapshots,
    /// Prompt re-checks of clusters their dependents found unreachable.
    pub rechecks: recheck::Rechecks,
    /// PVE request counters and latencies, registered once on the operator's registry.
    pub client_metrics: Option<ClientMetrics>,
    /// Timing.
    pub tuning: Tuning,
}

impl ProxmoxDeps {
    /// Dependencies with production timing; `client_metrics` records every PVE request.
    pub fn new(client_metrics: Option<ClientMetrics>) -> Self {
        Self {
            clients: ClientCache::default(),
            snapshots: snapshot::Snapshots::default(),
            rechecks: recheck::Rechecks::default(),
            client_metrics,
            tuning: Tuning::default(),
        }
    }

    /// The same with other timing.
    pub fn with_tuning(mut self, tuning: Tuning) -> Self {
        self.tuning = tuning;
        self
    }
}
