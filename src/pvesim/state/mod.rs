//! The simulated cluster: nodes, storages, guests, HA resources and in-memory PBS backups.
//!
//! Everything lives behind one mutex in the simulator; tests read it through
//! [`SimHandle::state`](super::SimHandle::state). Disk contents are never stored, only the
//! lineage they are generated from ([`PseudoDisk`]).

mod config;
pub mod disk;
pub mod guest;
pub mod network;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use rand::rngs::StdRng;
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::http::{ApiError, pve_bool};
pub use disk::{DiskLayer, PseudoDisk};
pub use guest::{AgentState, ExecJob, Guest, GuestKind, Power, Snapshot};
pub use network::{NetInterface, Networks, Sdn, SdnVnet, SdnZone};

/// A package row of `/nodes/{node}/apt/update` or `/apt/versions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AptPackage {
    /// Package name.
    pub package: String,
    /// Candidate (update list) or installed (versions list) version.
    pub version: String,
    /// Installed version (update list only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_version: Option<String>,
    /// Short description.
    #[serde(default)]
    pub title: String,
    /// Origin (`Proxmox`, `Debian`).
    #[serde(default = "default_origin")]
    pub origin: String,
    /// Section (`admin`, `kernel`...).
    #[serde(default = "default_section")]
    pub section: String,
}

fn default_origin() -> String {
    "Proxmox".into()
}
fn default_section() -> String {
    "admin".into()
}

/// A cluster node.
#[derive(Debug, Clone)]
pub struct Node {
    /// Node name.
    pub name: String,
    /// Corosync node id.
    pub nodeid: u32,
    /// Cluster network address.
    pub ip: String,
    /// Whether the node is up and in the cluster.
    pub online: bool,
    /// Quorum votes.
    pub votes: u32,
    /// CPU threads.
    pub cpus: u32,
    /// RAM in bytes.
    pub memory: u64,
    /// Root filesystem size in bytes.
    pub rootfs: u64,
    /// Boot time (epoch seconds).
    pub boot_time: i64,
    /// `pve-manager/9.1.3/...` version string.
    pub pve_version: String,
    /// Running kernel release.
    pub kernel: String,
    /// Pending updates (filled by `apt update`).
    pub apt_updates: Vec<AptPackage>,
    /// Updates the next `apt update` will find.
    pub apt_available: Vec<AptPackage>,
    /// Installed packages.
    pub apt_installed: Vec<AptPackage>,
}

/// A storage from `storage.cfg`.
#[derive(Debug, Clone)]
pub struct Storage {
    /// Storage id.
    pub id: String,
    /// Plugin type (`dir`, `lvmthin`, `zfspool`, `rbd`, `nfs`, `pbs`...).
    pub kind: String,
    /// Content types (`images`, `rootdir`, `backup`, `iso`, `vztmpl`...).
    pub content: Vec<String>,
    /// Whether all nodes see the same data.
    pub shared: bool,
    /// Restriction to some nodes (`None`: all).
    pub nodes: Option<Vec<String>>,
    /// Mount path (file-based storages).
    pub path: Option<String>,
    /// Capacity in bytes.
    pub total: u64,
    /// `prune-backups` retention (`keep-last=3,...`).
    pub prune_backups: Option<String>,
    /// PBS datastore name.
    pub datastore: Option<String>,
    /// PBS server.
    pub server: Option<String>,
    /// Fault injection (`storage-full`): at most this many bytes are free, whatever is used.
    pub avail_limit: Option<u64>,
}

impl Storage {
    /// Whether the storage can be used on `node`.
    pub fn available_on(&self, node: &str) -> bool {
        self.nodes
            .as_ref()
            .is_none_or(|nodes| nodes.iter().any(|n| n == node))
    }

    /// Whether backups are files (dir-like) rather than PBS snapshots.
    pub fn is_file_based(&self) -> bool {
        matches!(self.kind.as_str(), "dir" | "nfs" | "cifs" | "cephfs" | "btrfs")
    }

    /// Whether the storage accepts `content`.
    pub fn has_content(&self, content: &str) -> bool {
        self.content.iter().any(|c| c == content)
    }

    /// Whether rollback is limited to the most recent snapshot (ZFS, LVM and file-based
    /// qcow2 storages refuse older ones: pve-storage `volume_rollback_is_possible`).
    pub fn rollback_only_latest(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "zfspool" | "zfs" | "lvm" | "dir" | "nfs" | "cifs" | "btrfs"
        )
    }

    /// The `storage.cfg` section as `/storage` returns it.
    pub fn config_json(&self) -> Value {
        let mut v = json!({
            "storage": self.id,
            "type": self.kind,
            "content": self.content.join(","),
            "digest": "5a7c8f0e3b6d9a1c2e4f6a8b0c1d3e5f7a9b1c2d",
        });
        if self.shared {
            v["shared"] = pve_bool(true);
        }
        if let Some(nodes) = &self.nodes {
            v["nodes"] = json!(nodes.join(","));
        }
        if let Some(path) = &self.path {
            v["path"] = json!(path);
        }
        if let Some(prune) = &self.prune_backups {
            v["prune-backups"] = json!(prune);
        }
        if let Some(ds) = &self.datastore {
            v["datastore"] = json!(ds);
        }
        if let Some(server) = &self.server {
            v["server"] = json!(server);
            v["username"] = json!("backup@pbs");
        }
        v
    }
}

/// An HA resource (`/cluster/ha/resources`).
#[derive(Debug, Clone, PartialEq)]
pub struct HaResource {
    /// `vm:100` / `ct:101`.
    pub sid: String,
    /// `started`, `stopped`, `enabled`, `disabled`, `ignored`.
    pub state: String,
    /// Other options (`group`, `max_restart`, `max_relocate`, `failback`, `comment`).
    pub options: BTreeMap<String, String>,
}

/// A resource pool (`pool:` lines of `user.cfg`): guests grouped for permissions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pool {
    /// Comment.
    pub comment: Option<String>,
    /// Member guests.
    pub members: BTreeSet<u32>,
}

/// A backup kept on a PBS-type storage (in memory only).
#[derive(Debug, Clone)]
pub struct PbsBackup {
    /// Storage id.
    pub storage: String,
    /// Backed-up guest.
    pub vmid: u32,
    /// Guest type.
    pub kind: GuestKind,
    /// Backup time (epoch seconds).
    pub backup_time: i64,
    /// Stored size in bytes.
    pub size: u64,
    /// Notes.
    pub notes: Option<String>,
    /// Protected flag.
    pub protected: bool,
    /// The guest config at backup time.
    pub config_text: String,
    /// Disk content at backup time.
    pub disk: PseudoDisk,
    /// The last verification (`None`: never verified).
    pub verification: Option<PbsVerification>,
    /// A chunk of it is damaged (`pbs-verify-failure` fault): every verification fails.
    pub corrupt: bool,
}

/// A PBS snapshot's last verification, as PBS keeps it in the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbsVerification {
    /// `ok` or `failed`.
    pub state: String,
    /// The verify task's UPID (PBS format).
    pub upid: String,
}

impl PbsBackup {
    /// `<storage>:backup/vm/100/2024-06-01T00:00:00Z`.
    pub fn volid(&self) -> String {
        let group = if self.kind == GuestKind::Qemu { "vm" } else { "ct" };
        let time = super::clock::format_epoch(self.backup_time, "%Y-%m-%dT%H:%M:%SZ");
        format!("{}:backup/{group}/{}/{time}", self.storage, self.vmid)
    }
}

/// The whole simulated cluster.
#[derive(Debug)]
pub struct Cluster {
    /// Cluster name.
    pub name: String,
    /// The node that serves the main API listener (`local: 1` in `/cluster/status`).
    pub local_node: String,
    /// Nodes by name.
    pub nodes: BTreeMap<String, Node>,
    /// Storages by id.
    pub storages: BTreeMap<String, Storage>,
    /// Guests by VMID.
    pub guests: BTreeMap<u32, Guest>,
    /// HA resources by sid.
    pub ha: BTreeMap<String, HaResource>,
    /// Resource pools by id.
    pub pools: BTreeMap<String, Pool>,
    /// Backups on PBS-type storages.
    pub pbs_backups: Vec<PbsBackup>,
    /// The simulated PBS: verification settings, injected failures, its tasks.
    pub pbs: crate::pvesim::pbs::PbsState,
    /// Quorum loss injected regardless of votes.
    pub quorum_lost: bool,
    /// Directory holding the backups of the first file-based backup storage.
    pub dump_root: PathBuf,
    /// `/etc/vzdump.conf` defaults (`compress`, `mode`...).
    pub vzdump_defaults: BTreeMap<String, String>,
    /// Node interfaces and the SDN configuration.
    pub network: Networks,
    pub(crate) rng: StdRng,
}

impl Cluster {
    /// Whether the cluster has quorum (more than half of the votes online, no injected loss).
    pub fn quorate(&self) -> bool {
        let total: u32 = self.nodes.values().map(|n| n.votes).sum();
        let online: u32 = self.nodes.values().filter(|n| n.online).map(|n| n.votes).sum();
        !self.quorum_lost && online * 2 > total
    }

    /// The guest, wherever it is.
    pub fn guest(&self, vmid: u32) -> Option<&Guest> {
        self.guests.get(&vmid)
    }

    /// The config-file-missing error PVE gives for a guest not on `node`.
    pub(crate) fn no_config(node: &str, kind: GuestKind, vmid: u32) -> ApiError {
        ApiError::internal(format!(
            "Configuration file 'nodes/{node}/{}/{vmid}.conf' does not exist",
            kind.config_dir()
        ))
    }

    /// The guest `vmid` of `kind` whose config lives on `node`.
    pub(crate) fn guest_at(&self, node: &str, kind: GuestKind, vmid: u32) -> Result<&Guest, ApiError> {
        self.guests
            .get(&vmid)
            .filter(|g| g.node == node && g.kind == kind)
            .ok_or_else(|| Self::no_config(node, kind, vmid))
    }

    /// `PVE::Cluster::check_node_exists`.
    pub(crate) fn check_node(&self, node: &str) -> Result<&Node, ApiError> {
        self.nodes
            .get(node)
            .ok_or_else(|| ApiError::internal(format!("no such cluster node '{node}'")))
    }

    /// `PVE::Storage::storage_config`.
    pub(crate) fn storage(&self, id: &str) -> Result<&Storage, ApiError> {
        self.storages
            .get(id)
            .ok_or_else(|| ApiError::internal(format!("storage '{id}' does not exist")))
    }

    /// `PVE::Cluster::check_vmid_unused`.
    pub(crate) fn check_vmid_unused(&self, vmid: u32) -> Result<(), ApiError> {
        match self.guests.get(&vmid) {
            Some(g) => Err(ApiError::internal(format!(
                "{} {vmid} already exists on node '{}'",
                g.kind.label(),
                g.node
            ))),
            None => Ok(()),
        }
    }

    /// `$rpcenv->check_pool_exist`: a missing pool is a permission error (HTTP 403).
    pub(crate) fn check_pool(&self, pool: &str) -> Result<(), ApiError> {
        if self.pools.contains_key(pool) {
            Ok(())
        } else {
            Err(ApiError::forbidden(&format!("pool '{pool}' does not exist")))
        }
    }

    /// `add_vm_to_pool` (a guest is in at most one pool).
    pub(crate) fn join_pool(&mut self, pool: &str, vmid: u32) {
        self.leave_pools(vmid);
        if let Some(p) = self.pools.get_mut(pool) {
            p.members.insert(vmid);
        }
    }

    /// `remove_vm_from_pool`, as destroying a guest does (`remove_vm_access`).
    pub(crate) fn leave_pools(&mut self, vmid: u32) {
        for p in self.pools.values_mut() {
            p.members.remove(&vmid);
        }
    }

    /// The pool a guest is in.
    pub fn pool_of(&self, vmid: u32) -> Option<&str> {
        self.pools
            .iter()
            .find(|(_, p)| p.members.contains(&vmid))
            .map(|(id, _)| id.as_str())
    }

    /// First free VMID of the default `next-id` range (100..1000000).
    pub fn next_free_vmid(&self) -> Option<u32> {
        (100..1_000_000).find(|id| !self.guests.contains_key(id))
    }

    /// A fresh seed from the cluster's deterministic RNG.
    pub(crate) fn fresh_seed(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// A random unicast MAC with Proxmox' prefix `BC:24:11`.
    pub(crate) fn random_mac(&mut self) -> String {
        let b: [u8; 3] = self.rng.random();
        format!("BC:24:11:{:02X}:{:02X}:{:02X}", b[0], b[1], b[2])
    }

    /// The directory holding the backup files of a file-based storage: the dump directory for
    /// the first one (`local`), `<dump dir>/<storage>` for others.
    pub fn backup_dir(&self, storage: &str) -> PathBuf {
        let first = self
            .storages
            .values()
            .find(|s| s.is_file_based() && s.has_content("backup"))
            .map(|s| s.id.as_str());
        if first == Some(storage) {
            self.dump_root.clone()
        } else {
            self.dump_root.join(storage)
        }
    }

    /// The directory holding `node`'s view of a file-based storage: a shared storage's
    /// [`Self::backup_dir`] on every node; a local one (`local`, a dir without `shared`) is per
    /// node as in PVE: the main node's is [`Self::backup_dir`], another node's
    /// `<that>/_nodes/<node>` (`_` cannot start a storage id or an archive name).
    pub fn backup_dir_on(&self, storage: &str, node: &str) -> PathBuf {
        let dir = self.backup_dir(storage);
        let shared = self.storages.get(storage).is_some_and(|s| s.shared);
        if shared || node == self.local_node {
            dir
        } else {
            dir.join("_nodes").join(node)
        }
    }

    /// Whether the HA stack manages `vmid`.
    pub(crate) fn ha_managed(&self, kind: GuestKind, vmid: u32) -> bool {
        self.ha.contains_key(&format!("{}:{vmid}", kind.ha_type()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn cluster() -> Cluster {
        let node = |name: &str, online| Node {
            name: name.into(),
            nodeid: 1,
            ip: "10.0.0.1".into(),
            online,
            votes: 1,
            cpus: 4,
            memory: 1 << 34,
            rootfs: 1 << 36,
            boot_time: 0,
            pve_version: "pve-manager/9.1.3".into(),
            kernel: "6.14.8-2-pve".into(),
            apt_updates: vec![],
            apt_available: vec![],
            apt_installed: vec![],
        };
        let mut nodes = BTreeMap::new();
        for (n, on) in [("a", true), ("b", true), ("c", false)] {
            nodes.insert(n.to_string(), node(n, on));
        }
        Cluster {
            name: "c".into(),
            local_node: "a".into(),
            nodes,
            storages: BTreeMap::new(),
            guests: BTreeMap::new(),
            ha: BTreeMap::new(),
            pools: BTreeMap::new(),
            pbs_backups: vec![],
            pbs: Default::default(),
            quorum_lost: false,
            dump_root: PathBuf::from("/tmp/x"),
            vzdump_defaults: BTreeMap::new(),
            network: Networks::default(),
            rng: StdRng::seed_from_u64(1),
        }
    }

    #[test]
    fn quorum_follows_votes_and_injected_loss() {
        let mut c = cluster();
        assert!(c.quorate());
        if let Some(n) = c.nodes.get_mut("b") {
            n.online = false;
        }
        assert!(!c.quorate());
        if let Some(n) = c.nodes.get_mut("b") {
            n.online = true;
        }
        c.quorum_lost = true;
        assert!(!c.quorate());
    }

    #[test]
    fn missing_guest_and_node_errors_match_pve() {
        let c = cluster();
        let err = c.guest_at("a", GuestKind::Qemu, 100).err().map(|e| e.reason());
        assert_eq!(
            err.as_deref(),
            Some("Configuration file 'nodes/a/qemu-server/100.conf' does not exist")
        );
        assert_eq!(
            c.check_node("zz").err().map(|e| e.reason()).as_deref(),
            Some("no such cluster node 'zz'")
        );
        assert_eq!(c.next_free_vmid(), Some(100));
    }

    #[test]
    fn missing_pool_is_a_permission_error_and_guests_join_one_pool() {
        let mut c = cluster();
        let err = c.check_pool("prod").err().map(|e| (e.status, e.reason()));
        assert_eq!(
            err,
            Some((403, "Permission check failed (pool 'prod' does not exist)".into()))
        );
        c.pools.insert("prod".into(), Pool::default());
        c.pools.insert("test".into(), Pool::default());
        assert!(c.check_pool("prod").is_ok());
        c.join_pool("prod", 100);
        c.join_pool("test", 100);
        assert_eq!(c.pool_of(100), Some("test"));
        c.leave_pools(100);
        assert_eq!(c.pool_of(100), None);
    }
}
