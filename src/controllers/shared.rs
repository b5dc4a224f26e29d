//! What the Kubernetes-free reconcile cores share with the code that drives them (the kube
//! controllers and `homelab-autopilot demo`): the Events a pass wants published, the Proxmox
//! client cache and per-object memory, and the timing knobs.
//!
//! Nothing here imports `kube`: a core takes plain CRD types plus a [`PveClient`] and returns a
//! status, [`PlannedEvent`]s and a requeue delay; its driver writes the status (server-side apply
//! or an in-memory object), publishes the Events (API or stdout) and schedules the next pass.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use jiff::Timestamp;

use super::context::ClientCache;
use super::service::health::HealthEnv;
use super::status::{DesiredCondition, set_condition};
use crate::crd::conditions::{Condition, ConditionStatus, find_condition};
use crate::proxmox::{ClientMetrics, PveClient};

/// An Event a reconcile pass wants published (on transitions only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedEvent {
    /// Warning (something is wrong) or Normal.
    pub warning: bool,
    /// PascalCase reason, stable API (`GuestMigrated`, `AuthenticationFailed`).
    pub reason: String,
    /// PascalCase action the controller took or observed (`Observe`, `Start`, `Connect`).
    pub action: &'static str,
    /// A sentence for a human; never contains secrets.
    pub note: String,
}

impl PlannedEvent {
    /// A Normal Event.
    pub fn normal(reason: impl Into<String>, action: &'static str, note: impl Into<String>) -> Self {
        Self {
            warning: false,
            reason: reason.into(),
            action,
            note: note.into(),
        }
    }

    /// A Warning Event.
    pub fn warning(reason: impl Into<String>, action: &'static str, note: impl Into<String>) -> Self {
        Self {
            warning: true,
            reason: reason.into(),
            action,
            note: note.into(),
        }
    }

    /// `Normal` or `Warning`, as `kubectl get events` prints the type.
    pub fn type_str(&self) -> &'static str {
        if self.warning { "Warning" } else { "Normal" }
    }
}

/// The result of one reconcile pass of a core: the complete status to write, the Events to
/// publish after it is written, and when to look again.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome<S> {
    /// The whole status (written with server-side apply, so omitted fields are removed).
    pub status: S,
    /// Events, in the order they happened.
    pub events: Vec<PlannedEvent>,
    /// Delay before the next pass (earlier if a watched object changes).
    pub requeue: Duration,
}

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

/// Sets a condition observed for `generation` at `now` in `conditions` (keeping its transition
/// time unless the status flips). Returns whether it is a transition worth an Event compared with
/// `previous` (new, or status or reason changed), and the previous condition of that type.
#[allow(clippy::too_many_arguments)]
pub fn update_condition(
    conditions: &mut Vec<Condition>,
    previous: &[Condition],
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> (bool, Option<Condition>) {
    let before = find_condition(previous, type_).cloned();
    set_condition(
        conditions,
        &DesiredCondition::new(type_, status, reason, message),
        generation,
        now,
    );
    let changed = before
        .as_ref()
        .is_none_or(|b| b.status != status || b.reason != reason);
    (changed, before)
}

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

/// Per-object memory, keyed by object UID (or another owner key); also the storage of
/// [`ClientCache`](super::context::ClientCache).
#[derive(Debug)]
pub struct MemoryMap<V> {
    entries: Mutex<HashMap<String, V>>,
}

impl<V> Default for MemoryMap<V> {
    fn default() -> Self {
        Self {
            entries: Mutex::default(),
        }
    }
}

impl<V> MemoryMap<V> {
    /// Forgets `uid` (its object was deleted).
    pub fn remove(&self, uid: &str) {
        self.lock().remove(uid);
    }

    /// Keeps only the entries whose UID passes `keep` (drops deleted objects).
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.lock().retain(|uid, _| keep(uid));
    }

    /// Number of objects remembered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<String, V>> {
        // Each operation is one map call: a panic elsewhere cannot leave the map half-updated.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<V: Clone + Default> MemoryMap<V> {
    /// The memory of `uid` (default when none).
    pub fn get(&self, uid: &str) -> V {
        self.lock().get(uid).cloned().unwrap_or_default()
    }

    /// Replaces the memory of `uid`.
    pub fn set(&self, uid: &str, value: V) {
        self.lock().insert(uid.to_owned(), value);
    }
}

/// What the Proxmox reconcile cores need beyond their inputs, shared by all passes: the client
/// cache (one [`PveClient`] per ProxmoxCluster, rebuilt when the cluster's spec or credentials
/// change), PVE request metrics, the health-check HTTP clients, per-Service memory and timing.
#[derive(Debug)]
pub struct ProxmoxDeps {
    /// One client per ProxmoxCluster UID, versioned by generation and Secret resourceVersion.
    pub clients: ClientCache<PveClient>,
    /// PVE request counters and latencies, registered once on the operator's registry.
    pub client_metrics: Option<ClientMetrics>,
    /// HTTP clients for `HTTP` health checks.
    pub health: HealthEnv,
    /// Per-Service memory (probe times, power retry).
    pub services: MemoryMap<ServiceMemory>,
    /// Timing.
    pub tuning: Tuning,
}

impl ProxmoxDeps {
    /// Dependencies with production timing; `client_metrics` records every PVE request.
    pub fn new(client_metrics: Option<ClientMetrics>) -> Self {
        Self {
            clients: ClientCache::default(),
            client_metrics,
            health: HealthEnv::new(),
            services: MemoryMap::default(),
            tuning: Tuning::default(),
        }
    }

    /// The same with other timing.
    pub fn with_tuning(mut self, tuning: Tuning) -> Self {
        self.tuning = tuning;
        self
    }
}

/// Duration between two timestamps, zero if `later` is not after `earlier`.
pub fn elapsed(earlier: Timestamp, later: Timestamp) -> Duration {
    Duration::try_from(later.duration_since(earlier)).unwrap_or(Duration::ZERO)
}

/// `now + d` (saturating at the maximum timestamp).
pub fn add(now: Timestamp, d: Duration) -> Timestamp {
    let span = jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX);
    now.checked_add(span).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_map_defaults_stores_and_forgets_deleted_objects() {
        let m = MemoryMap::<ServiceMemory>::default();
        assert_eq!(m.get("a"), ServiceMemory::default());
        let mut mem = ServiceMemory::default();
        mem.last_probe.insert("web".into(), Timestamp::UNIX_EPOCH);
        m.set("a", mem.clone());
        m.set("b", ServiceMemory::default());
        assert_eq!(m.get("a"), mem);
        m.retain(|uid| uid == "a");
        assert_eq!(m.len(), 1);
        assert!(!m.is_empty());
    }

    #[test]
    fn elapsed_and_add_saturate() {
        let t = Timestamp::from_second(100).unwrap();
        let later = add(t, Duration::from_secs(30));
        assert_eq!(elapsed(t, later), Duration::from_secs(30));
        assert_eq!(elapsed(later, t), Duration::ZERO);
        assert_eq!(add(Timestamp::MAX, Duration::from_secs(1)), Timestamp::MAX);
    }

    #[test]
    fn planned_event_types_print_like_kubectl() {
        assert_eq!(PlannedEvent::normal("A", "Observe", "x").type_str(), "Normal");
        assert_eq!(PlannedEvent::warning("A", "Observe", "x").type_str(), "Warning");
    }
}
