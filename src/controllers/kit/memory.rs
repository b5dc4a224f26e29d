//! Per-process memory of the controllers, keyed by owner (an object's UID): what a core remembers
//! between passes without writing it to status, and the cache of clients built from credentials.
//! Lost on restart by design: nothing here may be needed to resume safely (that is in status).

use std::{
    collections::HashMap,
    future::Future,
    hash::Hash,
    sync::{Mutex, MutexGuard, PoisonError},
};

/// Per-object memory, keyed by object UID (or another owner key); also the storage of
/// [`ClientCache`].
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

    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<String, V>> {
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

/// Exclusive claims by (cluster UID, key), each held by one owner (an object's UID): what an
/// object is doing to a shared thing right now (a node it restores on, a VMID it reserved, a
/// guest it backs up), so that two objects take turns instead of colliding.
#[derive(Debug)]
pub struct Claims<K> {
    held: Mutex<HashMap<(String, K), String>>,
}

impl<K> Default for Claims<K> {
    fn default() -> Self {
        Self {
            held: Mutex::default(),
        }
    }
}

impl<K: Eq + Hash + Clone> Claims<K> {
    fn lock(&self) -> MutexGuard<'_, HashMap<(String, K), String>> {
        // Each operation is one map call: a panic elsewhere cannot leave the map half-updated.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Claims `key` of `cluster` for `owner`; false while another owner holds it.
    pub fn claim(&self, cluster: &str, key: K, owner: &str) -> bool {
        let mut held = self.lock();
        let holder = held
            .entry((cluster.to_owned(), key))
            .or_insert_with(|| owner.to_owned());
        holder == owner
    }

    /// Whether `owner` holds `key` of `cluster`.
    pub fn holds(&self, cluster: &str, key: K, owner: &str) -> bool {
        self.lock()
            .get(&(cluster.to_owned(), key))
            .is_some_and(|h| h == owner)
    }

    /// Releases `owner`'s claim of `key` (another owner's claim stays).
    pub fn release(&self, cluster: &str, key: K, owner: &str) {
        let mut held = self.lock();
        let key = (cluster.to_owned(), key);
        if held.get(&key).is_some_and(|h| h == owner) {
            held.remove(&key);
        }
    }

    /// Releases every claim of `owner` (deleted).
    pub fn release_all(&self, owner: &str) {
        self.lock().retain(|_, holder| holder != owner);
    }

    /// The keys of `cluster` that owners other than `owner` hold.
    pub fn held_by_others(&self, cluster: &str, owner: &str) -> Vec<K> {
        self.lock()
            .iter()
            .filter(|((c, _), holder)| c == cluster && *holder != owner)
            .map(|((_, key), _)| key.clone())
            .collect()
    }
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
    fn memory_map_defaults_stores_and_forgets_deleted_objects() {
        let m = MemoryMap::<Vec<u8>>::default();
        assert_eq!(m.get("a"), Vec::<u8>::new());
        m.set("a", vec![1]);
        m.set("b", vec![2]);
        assert_eq!(m.get("a"), vec![1]);
        m.retain(|uid| uid == "a");
        assert_eq!(m.len(), 1);
        assert!(!m.is_empty());
        m.remove("a");
        assert!(m.is_empty());
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

    #[test]
    fn claims_are_exclusive_per_cluster_and_released_only_by_their_holder() {
        let claims = Claims::<u32>::default();
        assert!(claims.claim("c1", 9900, "a"));
        assert!(
            claims.claim("c1", 9900, "a"),
            "a claim is taken again by its holder"
        );
        assert!(!claims.claim("c1", 9900, "b"));
        assert!(
            claims.claim("c2", 9900, "b"),
            "another cluster's 9900 is another thing"
        );
        claims.release("c1", 9900, "b");
        assert!(claims.holds("c1", 9900, "a"), "only the holder releases");
        assert!(claims.claim("c1", 9901, "b"));
        assert_eq!(claims.held_by_others("c1", "a"), vec![9901]);
        claims.release_all("a");
        assert!(!claims.holds("c1", 9900, "a"));
        assert!(claims.claim("c1", 9900, "b"));
    }
}
