//! Prompt re-checks of a ProxmoxCluster when one of its dependents found it unreachable.
//!
//! A ProxmoxCluster is re-read every `resyncIntervalSeconds` (often minutes), but its Services
//! ask the cluster far more often: when one of them cannot connect, the cluster's `Connected`
//! condition, the `pve_cluster_connected` gauge and the chart's alert should follow at once, not
//! at the next resync. Dependents [`Rechecks::request`] a re-check; the ProxmoxCluster controller
//! subscribes and reconciles the cluster. At most one request per cluster per
//! [`MIN_INTERVAL`], so a thousand failing Services cause one re-check, not a storm.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use jiff::Timestamp;
use tokio::sync::broadcast;

use crate::controllers::kit::time::elapsed;

/// The shortest time between two re-checks of one cluster.
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);

/// `namespace` and `name` of a ProxmoxCluster to re-check.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClusterKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// The re-check requests of every cluster.
#[derive(Debug)]
pub struct Rechecks {
    tx: broadcast::Sender<ClusterKey>,
    last: Mutex<HashMap<ClusterKey, Timestamp>>,
}

impl Default for Rechecks {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(64).0,
            last: Mutex::default(),
        }
    }
}

impl Rechecks {
    /// Asks for a re-check of the cluster `namespace/name` at `now`; returns whether a request
    /// went out (not within [`MIN_INTERVAL`] of the previous one).
    pub fn request(&self, namespace: &str, name: &str, now: Timestamp) -> bool {
        let key = ClusterKey {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        {
            let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
            if last.get(&key).is_some_and(|t| elapsed(*t, now) < MIN_INTERVAL) {
                return false;
            }
            last.insert(key.clone(), now);
        }
        // No subscriber (the demo, tests): nothing to wake.
        let _ = self.tx.send(key);
        true
    }

    /// The requests from now on (the ProxmoxCluster controller's trigger).
    pub fn subscribe(&self) -> broadcast::Receiver<ClusterKey> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_bounded_per_cluster_and_reach_subscribers() {
        let r = Rechecks::default();
        let mut rx = r.subscribe();
        let t = |s| Timestamp::from_second(s).unwrap();
        assert!(r.request("lab", "homelab", t(100)));
        assert!(
            !r.request("lab", "homelab", t(105)),
            "a storm of failures is one re-check"
        );
        assert!(
            r.request("lab", "other", t(105)),
            "another cluster has its own budget"
        );
        assert!(r.request("lab", "homelab", t(110)));
        let got: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|k| k.name)
            .collect();
        assert_eq!(got, ["homelab", "other", "homelab"]);
    }
}
