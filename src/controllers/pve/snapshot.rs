//! One read of `/cluster/resources` per ProxmoxCluster and resync window, shared by every kind.
//!
//! On a real PVE cluster `/cluster/resources` is built from every node; asking it once per guest
//! per pass (what each Service reconcile did) costs a thousand large responses per resync at a
//! thousand guests. Here every reconcile of a cluster's objects reads one snapshot:
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

struct Taken {
    result: Result<Resources, proxmox::Error>,
    at: Timestamp,
    /// The slot's epoch when the request was sent: an invalidation after that makes it stale.
    epoch: u64,
}

#[derive(Default)]
struct Slot {
    current: tokio::sync::Mutex<Option<Taken>>,
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
        let slot = self.slot(owner);
        let mut current = slot.current.lock().await;
        let epoch = slot.epoch.load(Ordering::SeqCst);
        if let Some(taken) = current.as_ref().filter(|t| t.epoch == epoch) {
            let reuse = if taken.result.is_ok() {
                max_age
            } else {
                max_age.min(FAILURE_REUSE)
            };
            if elapsed(taken.at, now) < reuse {
                return taken.result.clone();
            }
        }
        slot.requests.fetch_add(1, Ordering::SeqCst);
        let result = client.cluster_resources(None).await.map(Arc::new);
        *current = Some(Taken {
            result: result.clone(),
            at: now,
            epoch,
        });
        result
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

    /// How many requests the snapshot of `owner` has sent (for tests and the scale benchmark).
    pub fn requests(&self, owner: &str) -> u64 {
        self.lock()
            .get(owner)
            .map_or(0, |s| s.requests.load(Ordering::SeqCst))
    }
}
