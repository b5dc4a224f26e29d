//! One read of `/cluster/resources` per ProxmoxCluster and resync window, shared by every kind.
//!
//! On a real PVE cluster `/cluster/resources` is built from every node; asking it once per guest
//! per pass (what each Service reconcile did) costs a thousand large responses per resync at a
//! thousand guests. It already says what a Service needs of each guest: its node, its status
//! (`paused` for a paused VM: pvestatd records the QMP state as the status), uptime, lock and
//! tags. So a resync costs one request per cluster, however many guests and nodes there are.
//! The snapshot is:
//!
//! - refreshed at most once per `max_age` (the cluster's resync window);
//! - single-flight: concurrent reconciles wait for the one request in flight instead of sending
//!   their own;
//! - invalidated by our own actions (start, shutdown, migrate, restore, clone): a reconcile never
//!   acts on a view older than its own last act;
//! - a failed read is kept for a short time, so an outage costs one request per cluster, not one
//!   per waiting reconcile.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use jiff::Timestamp;

use crate::controllers::kit::time::elapsed;
use crate::proxmox::{self, PveClient, api::ClusterResource};

/// How long a failed read is answered from memory before the next request is sent.
pub const FAILURE_REUSE: Duration = Duration::from_secs(5);

/// The rows of `GET /cluster/resources` (all types), shared.
pub type Resources = Arc<Vec<ClusterResource>>;

/// A shared answer and the pass time it was read at: what it says about time (uptime) was true
/// then, not necessarily at the reader's `now`.
#[derive(Clone, Debug)]
pub struct Read<T> {
    /// The rows.
    pub rows: Arc<T>,
    /// When they were read (the clock of the pass that sent the request).
    pub at: Timestamp,
}

struct Taken<T> {
    result: Result<Arc<T>, proxmox::Error>,
    at: Timestamp,
    /// The slot's epoch when the request was sent: an invalidation after that makes it stale.
    epoch: u64,
}

impl<T> Taken<T> {
    fn read(&self) -> Result<Read<T>, proxmox::Error> {
        self.result.clone().map(|rows| Read { rows, at: self.at })
    }
}

/// One cached read: the last answer, behind an async lock that makes the read single-flight.
struct Cached<T> {
    current: tokio::sync::Mutex<Option<Taken<T>>>,
}

impl<T> Default for Cached<T> {
    fn default() -> Self {
        Self {
            current: tokio::sync::Mutex::new(None),
        }
    }
}

impl<T> Cached<T> {
    /// The cached answer if it is younger than `max_age` (failures: [`FAILURE_REUSE`]) and no
    /// invalidation of `slot` came after its request; else the answer of one new `fetch`.
    async fn read<F>(
        &self,
        slot: &Slot,
        max_age: Duration,
        now: Timestamp,
        fetch: F,
    ) -> Result<Read<T>, proxmox::Error>
    where
        F: std::future::Future<Output = Result<T, proxmox::Error>>,
    {
        let mut current = self.current.lock().await;
        let epoch = slot.epoch.load(Ordering::SeqCst);
        if let Some(taken) = current.as_ref().filter(|t| t.epoch == epoch) {
            let reuse = if taken.result.is_ok() {
                max_age
            } else {
                max_age.min(FAILURE_REUSE)
            };
            if elapsed(taken.at, now) < reuse {
                return taken.read();
            }
        }
        slot.requests.fetch_add(1, Ordering::SeqCst);
        let taken = Taken {
            result: fetch.await.map(Arc::new),
            at: now,
            epoch,
        };
        let read = taken.read();
        *current = Some(taken);
        read
    }
}

#[derive(Default)]
struct Slot {
    resources: Cached<Vec<ClusterResource>>,
    epoch: AtomicU64,
    requests: AtomicU64,
}

/// The snapshots of every cluster, keyed by the ProxmoxCluster's UID.
#[derive(Default)]
pub struct Snapshots {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl std::fmt::Debug for Snapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshots")
            .field("clusters", &self.lock().len())
            .finish()
    }
}

impl Snapshots {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        // Each operation is one map call: a panic elsewhere cannot leave the map half-updated.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn slot(&self, owner: &str) -> Arc<Slot> {
        Arc::clone(self.lock().entry(owner.to_owned()).or_default())
    }

    /// The resources of the cluster `owner` through `client` at `now` (the pass's clock): the
    /// snapshot if it is younger than `max_age` and no action of ours came after it, else one new
    /// request (others wait for it).
    pub async fn resources(
        &self,
        owner: &str,
        client: &PveClient,
        max_age: Duration,
        now: Timestamp,
    ) -> Result<Resources, proxmox::Error> {
        self.resources_read(owner, client, max_age, now)
            .await
            .map(|r| r.rows)
    }

    async fn resources_read(
        &self,
        owner: &str,
        client: &PveClient,
        max_age: Duration,
        now: Timestamp,
    ) -> Result<Read<Vec<ClusterResource>>, proxmox::Error> {
        let slot = self.slot(owner);
        slot.resources
            .read(&slot, max_age, now, client.cluster_resources(None))
            .await
    }

    /// The reads of cluster `owner` through `client` for one pass at `now`, each at most
    /// `max_age` old.
    pub fn view<'a>(
        &'a self,
        owner: &'a str,
        client: &'a PveClient,
        max_age: Duration,
        now: Timestamp,
    ) -> ClusterView<'a> {
        ClusterView {
            snapshots: self,
            owner,
            client,
            max_age,
            now,
        }
    }

    /// Marks the snapshot of `owner` stale after an action of ours changed the cluster: the next
    /// read sends a new request (also when a read is in flight now: it started before the act).
    pub fn invalidate(&self, owner: &str) {
        self.slot(owner).epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Drops the snapshot of a deleted cluster.
    pub fn forget(&self, owner: &str) {
        self.lock().remove(owner);
    }

    /// How many requests the snapshots of `owner` have sent (for tests and the scale benchmark).
    pub fn requests(&self, owner: &str) -> u64 {
        self.lock()
            .get(owner)
            .map_or(0, |s| s.requests.load(Ordering::SeqCst))
    }
}

/// One pass's access to a cluster's snapshots: which cluster, through which client, how old a
/// snapshot may be, and the pass's clock.
#[derive(Clone, Copy)]
pub struct ClusterView<'a> {
    snapshots: &'a Snapshots,
    owner: &'a str,
    client: &'a PveClient,
    max_age: Duration,
    now: Timestamp,
}

impl std::fmt::Debug for ClusterView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterView")
            .field("owner", &self.owner)
            .field("max_age", &self.max_age)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

impl ClusterView<'_> {
    /// `GET /cluster/resources`, shared ([`Snapshots::resources`]), with its read time.
    pub async fn resources(&self) -> Result<Read<Vec<ClusterResource>>, proxmox::Error> {
        self.snapshots
            .resources_read(self.owner, self.client, self.max_age, self.now)
            .await
    }

    /// Whole seconds from `at` (a read's time) to this pass's clock: what an uptime read at `at`
    /// has grown by since.
    pub fn age_secs(&self, at: Timestamp) -> u64 {
        elapsed(at, self.now).as_secs()
    }
}
