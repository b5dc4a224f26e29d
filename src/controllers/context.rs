//! What a reconcile receives: [`Context`], one per controller, sharing the kube client, metrics
//! and the operator's dependencies `D` (the Proxmox client cache, the chunk store handle).

use std::{
    fmt,
    future::Future,
    path::PathBuf,
    sync::{Arc, OnceLock},
    time::Duration,
};

use kube::{
    Client, Resource,
    core::DeserializeGuard,
    runtime::{
        events::{Event, EventType, Recorder, Reporter},
        reflector::Store,
    },
};

use super::{
    backoff::BackoffTracker,
    error::Error,
    shared::{MemoryMap, ProxmoxDeps},
};
use crate::crd::{ProxmoxCluster, Service};
use crate::metrics::Metrics;

/// The Event reporter (`reportingController`) of every Event we publish.
pub const REPORTER: &str = "homelab-autopilot";

/// The server-side apply field manager of a controller: `homelab-autopilot-<controller>`.
pub fn field_manager(controller: &str) -> String {
    format!("{REPORTER}-{controller}")
}

/// Default delay before retrying an object after a permanent error. The object is reconciled
/// earlier when it changes (the user fixed it) or when a watched dependency changes.
pub const PERMANENT_ERROR_REQUEUE: Duration = Duration::from_secs(15 * 60);

/// The product's dependencies beyond Kubernetes, shared by all controllers as `Context::deps`:
/// the Proxmox client cache and per-object memory ([`ProxmoxDeps`]), the reflector stores the
/// controllers' watches fill, and the chunk store settings (the BackupPolicy controller opens the
/// store from them).
#[derive(Debug)]
pub struct OperatorDeps {
    /// `--store-path`: directory of the chunk store.
    pub store_path: PathBuf,
    /// `--store-key-file`: the chunk store's encryption key file, if any.
    pub store_key_file: Option<PathBuf>,
    /// Proxmox clients, health-check clients, per-Service memory, timing.
    pub proxmox: Arc<ProxmoxDeps>,
    /// The stores of the watched kinds, set when the controllers start.
    pub stores: Arc<Stores>,
}

impl OperatorDeps {
    /// Dependencies with the given chunk store settings and Proxmox dependencies.
    pub fn new(store_path: PathBuf, store_key_file: Option<PathBuf>, proxmox: ProxmoxDeps) -> Self {
        Self {
            store_path,
            store_key_file,
            proxmox: Arc::new(proxmox),
            stores: Arc::default(),
        }
    }
}

/// Reflector stores of the controllers (what each controller's watch has seen): used to map a
/// changed Secret or ProxmoxCluster to its dependents, and to forget clients, memory and metric
/// series of deleted objects.
#[derive(Default)]
pub struct Stores {
    /// Every ProxmoxCluster in scope.
    pub clusters: OnceLock<Store<DeserializeGuard<ProxmoxCluster>>>,
    /// Every Service in scope.
    pub services: OnceLock<Store<DeserializeGuard<Service>>>,
}

impl fmt::Debug for Stores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stores")
            .field("clusters", &self.clusters.get().map(|s| s.state().len()))
            .field("services", &self.services.get().map(|s| s.state().len()))
            .finish()
    }
}

/// The UIDs of the objects in `store` (`None` until the controller started).
pub fn store_uids<K>(store: &OnceLock<Store<K>>) -> Option<std::collections::HashSet<String>>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let store = store.get()?;
    Some(
        store
            .state()
            .iter()
            .filter_map(|o| o.meta().uid.clone())
            .collect(),
    )
}

/// Everything a controller's reconcile needs. One per controller, shared by all its reconciles.
pub struct Context<D = ()> {
    /// Controller name (lowercase kind): metric label and field manager suffix.
    pub controller: &'static str,
    /// The kube client.
    pub client: Client,
    /// This controller's Event recorder (reporter `homelab-autopilot`, instance = pod name); one
    /// per controller so that repeated Events are merged into series.
    pub recorder: Recorder,
    /// Process metrics.
    pub metrics: Metrics,
    /// Consecutive transient failures per object.
    pub backoff: BackoffTracker,
    /// Requeue delay after a permanent error.
    pub permanent_requeue: Duration,
    /// Dependencies beyond Kubernetes, shared by all controllers of the operator.
    pub deps: Arc<D>,
    field_manager: String,
}

impl<D> fmt::Debug for Context<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("controller", &self.controller)
            .field("field_manager", &self.field_manager)
            .finish_non_exhaustive()
    }
}

impl<D> Context<D> {
    /// Builds the context of controller `controller`; `instance` is the Event reporter instance
    /// (the pod name).
    pub fn new(
        controller: &'static str,
        client: Client,
        metrics: Metrics,
        instance: &str,
        backoff: BackoffTracker,
        deps: Arc<D>,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: REPORTER.into(),
                instance: Some(instance.into()),
            },
        );
        Self {
            controller,
            client,
            recorder,
            metrics,
            backoff,
            permanent_requeue: PERMANENT_ERROR_REQUEUE,
            deps,
            field_manager: field_manager(controller),
        }
    }

    /// The server-side apply field manager of this controller.
    pub fn field_manager(&self) -> &str {
        &self.field_manager
    }

    /// Publishes an Event about `obj`. `reason` and `action` are PascalCase API strings; `note`
    /// is a sentence for a human and must not contain secrets.
    pub async fn publish<K>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: impl Into<String>,
    ) -> Result<(), Error>
    where
        K: Resource<DynamicType = ()>,
    {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate_note(note.into())),
            action: action.into(),
            secondary: None,
        };
        self.recorder
            .publish(&event, &obj.object_ref(&()))
            .await
            .map_err(|source| Error::PublishEvent {
                reason: reason.into(),
                kind: K::kind(&()).into_owned(),
                namespace: obj.meta().namespace.clone().unwrap_or_default(),
                name: obj.meta().name.clone().unwrap_or_default(),
                source,
            })
    }
}

/// Event notes are limited to 1 kB by the API.
const MAX_NOTE_BYTES: usize = 1024;

/// Cuts `note` to at most 1 kB on a character boundary.
pub(crate) fn truncate_note(mut note: String) -> String {
    if note.len() > MAX_NOTE_BYTES {
        let mut end = MAX_NOTE_BYTES - '…'.len_utf8();
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push('…');
    }
    note
}

/// A cache of clients (or any handle built from credentials), one per owning object, rebuilt when
/// what it was built from changes. For Proxmox: owner = the ProxmoxCluster's UID, version = its
/// generation plus its credentials Secret's resourceVersion, so that editing the cluster or
/// rotating the token builds a new client and drops the old one.
#[derive(Debug)]
pub struct ClientCache<V> {
    /// Owner -> (version, value).
    entries: MemoryMap<(String, V)>,
}

impl<V> Default for ClientCache<V> {
    fn default() -> Self {
        Self {
            entries: MemoryMap::default(),
        }
    }
}

impl<V: Clone> ClientCache<V> {
    /// The cached value of `owner` if it was built from `version`.
    pub fn get(&self, owner: &str, version: &str) -> Option<V> {
        self.entries
            .lock()
            .get(owner)
            .filter(|(v, _)| v == version)
            .map(|(_, value)| value.clone())
    }

    /// The cached value of `owner` at `version`, or the result of `build` (cached on success,
    /// replacing a value built from another version). `build` runs without holding the lock.
    pub async fn get_or_try_insert<F, Fut, E>(&self, owner: &str, version: &str, build: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        if let Some(v) = self.get(owner, version) {
            return Ok(v);
        }
        let value = build().await?;
        self.entries
            .lock()
            .insert(owner.to_owned(), (version.to_owned(), value.clone()));
        Ok(value)
    }

    /// Drops the value of `owner` (its object was deleted).
    pub fn remove(&self, owner: &str) {
        self.entries.remove(owner);
    }

    /// Keeps only the values whose owner passes `keep` (drops those of deleted objects).
    pub fn retain(&self, keep: impl FnMut(&str) -> bool) {
        self.entries.retain(keep);
    }

    /// Number of cached values.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn field_manager_prefixes_controller_name() {
        assert_eq!(field_manager("service"), "homelab-autopilot-service");
    }

    #[test]
    fn truncate_note_keeps_short_notes_and_cuts_long_ones_on_char_boundary() {
        assert_eq!(truncate_note("short".into()), "short");
        let long = "é".repeat(1000);
        let cut = truncate_note(long);
        assert!(cut.len() <= MAX_NOTE_BYTES);
        assert!(cut.ends_with('…'));
    }

    #[tokio::test]
    async fn client_cache_builds_once_per_version_and_rebuilds_on_change() {
        let cache = ClientCache::<u32>::default();
        let builds = AtomicU32::new(0);
        let build = || async { Ok::<_, std::convert::Infallible>(builds.fetch_add(1, Ordering::SeqCst) + 1) };
        assert_eq!(cache.get_or_try_insert("uid-1", "7/100", build).await, Ok(1));
        assert_eq!(cache.get_or_try_insert("uid-1", "7/100", build).await, Ok(1));
        assert_eq!(cache.get("uid-1", "7/100"), Some(1));
        // The Secret was rotated: a new value replaces the old one.
        assert_eq!(cache.get_or_try_insert("uid-1", "7/101", build).await, Ok(2));
        assert_eq!(cache.get("uid-1", "7/100"), None);
        assert_eq!(cache.len(), 1);
        cache.remove("uid-1");
        assert!(cache.is_empty());
        cache.get_or_try_insert("uid-2", "1", build).await.unwrap();
        cache.get_or_try_insert("uid-3", "1", build).await.unwrap();
        cache.retain(|owner| owner == "uid-3");
        assert_eq!(
            (cache.get("uid-2", "1"), cache.get("uid-3", "1")),
            (None, Some(4))
        );
    }

    #[tokio::test]
    async fn client_cache_does_not_cache_failed_builds() {
        let cache = ClientCache::<u32>::default();
        let r = cache
            .get_or_try_insert("uid", "1", || async { Err::<u32, _>("unreachable") })
            .await;
        assert_eq!(r, Err("unreachable"));
        assert!(cache.is_empty());
    }
}
