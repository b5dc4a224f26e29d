//! The seed: a YAML description of the simulated cluster (`--seed cluster.yaml`), and the
//! built-in default (three nodes, a few VMs and containers, a `nextcloud` VM with the guest
//! agent). `examples/pvesim/cluster.yaml` documents every field.

mod build;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::SimError;
use super::state::{AptPackage, NetInterface, Sdn};

pub(crate) use build::{build_cluster, guest_ip};

/// Default API user (ticket login).
pub const DEFAULT_USERNAME: &str = "root@pam";
/// Default password of [`DEFAULT_USERNAME`].
pub const DEFAULT_PASSWORD: &str = "pvesim";
/// Default API token id.
pub const DEFAULT_TOKEN_ID: &str = "root@pam!pvesim";
/// Default API token secret.
pub const DEFAULT_TOKEN_SECRET: &str = "5ec0ffee-0000-4000-8000-00000000a11c";

/// The whole seed file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedSpec {
    /// Cluster name.
    #[serde(default = "default_cluster_name")]
    pub cluster: String,
    /// Users with passwords and API tokens (default: `root@pam` / `pvesim`, token `pvesim`).
    #[serde(default = "default_users")]
    pub users: Vec<UserSpec>,
    /// Nodes; the first one serves the main listener.
    pub nodes: Vec<NodeSpec>,
    /// Storages (`storage.cfg`).
    #[serde(default)]
    pub storages: Vec<StorageSpec>,
    /// VMs and containers.
    #[serde(default)]
    pub guests: Vec<GuestSpec>,
    /// HA resources.
    #[serde(default)]
    pub ha: Vec<HaSpec>,
    /// Resource pools (`create`, `restore` and `clone` refuse a pool that does not exist).
    #[serde(default)]
    pub pools: Vec<PoolSpec>,
    /// `/etc/vzdump.conf` defaults (`compress: zstd`, `mode: snapshot`...).
    #[serde(default)]
    pub vzdump_defaults: BTreeMap<String, String>,
    /// How guest-agent `exec` answers, by program name (besides the built-in commands).
    #[serde(default)]
    pub agent_commands: Vec<AgentCommand>,
    /// SDN zones and VNets (default: simple zone `isolated` with VNet `rtest`, VLAN zone
    /// `vlanzone` on `vmbr1` with VNet `vlan30`).
    #[serde(default)]
    pub sdn: Option<Sdn>,
}

/// A user of the simulated PVE.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserSpec {
    /// `user@realm`.
    pub userid: String,
    /// Password for `/access/ticket`.
    pub password: String,
    /// API tokens.
    #[serde(default)]
    pub tokens: Vec<TokenSpec>,
    /// Privileges (`user.cfg` ACL entries resolved to privileges). Absent: every privilege (the
    /// simulator's default); `root@pam` always has every privilege.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<Vec<AclSpec>>,
}

/// Privileges granted on a path (`/`, `/storage/<id>`, `/vms/<vmid>`), and on everything
/// below it unless `propagate: false`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AclSpec {
    /// ACL path.
    pub path: String,
    /// Privilege names (`Sys.Modify`, `VM.Backup`, `Datastore.Allocate`...).
    pub privs: Vec<String>,
    /// Whether the entry also applies below `path` (default true).
    #[serde(default = "yes")]
    pub propagate: bool,
}

impl std::fmt::Debug for UserSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserSpec")
            .field("userid", &self.userid)
            .field("password", &"***")
            .field("tokens", &self.tokens)
            .field("acl", &self.acl)
            .finish()
    }
}

/// An API token.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenSpec {
    /// Token name (the part after `!`).
    pub id: String,
    /// Secret (a UUID in real PVE).
    pub secret: String,
    /// A privilege-separated token's own ACL (`privsep=1`: it gets only what both its user
    /// and this list grant). Absent: the token has its user's privileges (`privsep=0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<Vec<AclSpec>>,
}

impl std::fmt::Debug for TokenSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSpec")
            .field("id", &self.id)
            .field("secret", &"***")
            .field("acl", &self.acl)
            .finish()
    }
}

/// A node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    /// Node name (`pve-node` format).
    pub name: String,
    /// Cluster address (default `192.168.100.1N`).
    #[serde(default)]
    pub ip: Option<String>,
    /// Quorum votes.
    #[serde(default = "one")]
    pub votes: u32,
    /// CPU threads.
    #[serde(default = "default_cpus")]
    pub cpus: u32,
    /// RAM in GiB.
    #[serde(default = "default_memory_gib")]
    pub memory_gib: u64,
    /// Whether the node starts online.
    #[serde(default = "yes")]
    pub online: bool,
    /// `pve-manager` version.
    #[serde(default = "default_pve_version")]
    pub pve_version: String,
    /// Running kernel release.
    #[serde(default = "default_kernel")]
    pub kernel: String,
    /// Updates `apt update` will find (default: a few Proxmox packages).
    #[serde(default)]
    pub apt_updates: Option<Vec<AptPackage>>,
    /// Interfaces (default: `eno1`, `eno2`, uplink bridge `vmbr0`, VLAN-aware `vmbr1`, and
    /// `vmbr99` without ports).
    #[serde(default)]
    pub network: Option<Vec<NetInterface>>,
}

/// A storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StorageSpec {
    /// Storage id.
    pub id: String,
    /// Plugin type: `dir`, `nfs`, `lvmthin`, `lvm`, `zfspool`, `rbd`, `cephfs`, `pbs`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Content types.
    pub content: Vec<String>,
    /// Shared between nodes (default: true for `nfs`, `rbd`, `cephfs`, `pbs`).
    #[serde(default)]
    pub shared: Option<bool>,
    /// Only on these nodes.
    #[serde(default)]
    pub nodes: Option<Vec<String>>,
    /// Mount path shown for file-based storages.
    #[serde(default)]
    pub path: Option<String>,
    /// Capacity in GiB.
    #[serde(default = "default_storage_gib")]
    pub total_gib: u64,
    /// `prune-backups` retention.
    #[serde(default)]
    pub prune_backups: Option<String>,
    /// PBS datastore.
    #[serde(default)]
    pub datastore: Option<String>,
    /// PBS server.
    #[serde(default)]
    pub server: Option<String>,
}

/// A VM or container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuestSpec {
    /// VMID.
    pub vmid: u32,
    /// `qemu` or `lxc`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Node holding the config.
    pub node: String,
    /// Name (qemu) / hostname (lxc).
    #[serde(default)]
    pub name: Option<String>,
    /// `running` or `stopped`.
    #[serde(default = "default_status")]
    pub status: String,
    /// A template (never runs).
    #[serde(default)]
    pub template: bool,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Guest agent (qemu): `none` (not configured), `disabled` (`agent: 0`), `not-running`
    /// (configured, qemu-ga does not answer) or `running`.
    #[serde(default = "default_agent")]
    pub agent: String,
    /// Memory in MiB.
    #[serde(default)]
    pub memory: Option<u64>,
    /// Cores.
    #[serde(default)]
    pub cores: Option<u32>,
    /// Root disk size in GiB (what the config says).
    #[serde(default)]
    pub disk_gib: Option<u64>,
    /// Storage of the root disk (default `local-lvm`).
    #[serde(default)]
    pub storage: Option<String>,
    /// IPv4 address reported by the agent / `interfaces` (default from the VMID).
    #[serde(default)]
    pub ip: Option<String>,
    /// Size of the generated pseudo-disk in KiB (what backups contain; default 1024).
    #[serde(default = "default_image_kib")]
    pub image_kib: u64,
    /// Extra raw config keys (`onboot: "1"`, `description: ...`); they win over defaults.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Existing snapshots, oldest first (each the parent of the next).
    #[serde(default)]
    pub snapshots: Vec<SnapshotSpec>,
}

/// A seeded snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotSpec {
    /// Snapshot name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// RAM included (qemu).
    #[serde(default)]
    pub vmstate: bool,
    /// Age in days (default: one day per later snapshot).
    #[serde(default)]
    pub age_days: Option<i64>,
}

/// An HA resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HaSpec {
    /// `vm:100` / `ct:101`.
    pub sid: String,
    /// Requested state.
    #[serde(default = "default_ha_state")]
    pub state: String,
    /// HA group.
    #[serde(default)]
    pub group: Option<String>,
}

/// A resource pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolSpec {
    /// Pool id.
    pub id: String,
    /// Comment.
    #[serde(default)]
    pub comment: Option<String>,
    /// VMIDs of seeded guests in the pool.
    #[serde(default)]
    pub members: Vec<u32>,
}

/// How the guest agent answers `exec` of a program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentCommand {
    /// Program (first element of `command`, matched with and without its directory).
    pub program: String,
    /// Exit code.
    #[serde(default)]
    pub exitcode: i32,
    /// Standard output.
    #[serde(default)]
    pub stdout: String,
    /// Standard error.
    #[serde(default)]
    pub stderr: String,
    /// Simulated run time in seconds.
    #[serde(default = "default_exec_secs")]
    pub seconds: f64,
    /// Only for guests with these names (qemu `name`; a restored copy keeps its backup's name);
    /// empty: every guest. Rules apply in order, so a guest-specific rule goes first.
    #[serde(default)]
    pub guests: Vec<String>,
}

fn default_cluster_name() -> String {
    "homelab".into()
}
fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}
fn default_cpus() -> u32 {
    8
}
fn default_memory_gib() -> u64 {
    32
}
fn default_storage_gib() -> u64 {
    500
}
fn default_pve_version() -> String {
    "9.1.3".into()
}
fn default_kernel() -> String {
    "6.14.11-4-pve".into()
}
fn default_status() -> String {
    "stopped".into()
}
fn default_agent() -> String {
    "none".into()
}
fn default_image_kib() -> u64 {
    1024
}
fn default_ha_state() -> String {
    "started".into()
}
fn default_exec_secs() -> f64 {
    1.0
}

/// The default credentials.
pub fn default_users() -> Vec<UserSpec> {
    vec![UserSpec {
        userid: DEFAULT_USERNAME.into(),
        password: DEFAULT_PASSWORD.into(),
        tokens: vec![TokenSpec {
            id: "pvesim".into(),
            secret: DEFAULT_TOKEN_SECRET.into(),
            acl: None,
        }],
        acl: None,
    }]
}

impl SeedSpec {
    /// Parses a seed from YAML text.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self, SimError> {
        serde_yaml::from_str(text).map_err(|e| SimError::Seed {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// Reads a seed file.
    pub fn from_file(path: &Path) -> Result<Self, SimError> {
        let text = std::fs::read_to_string(path).map_err(|e| SimError::Seed {
            path: path.to_path_buf(),
            reason: format!("cannot read it: {e}"),
        })?;
        Self::from_yaml(&text, path)
    }

    /// VMID of the first generated guest ([`Self::with_generated_guests`]).
    pub const FIRST_GENERATED_VMID: u32 = 10_000;

    /// Adds `count` generated running VMs for scale tests and benchmarks: VMIDs from
    /// [`Self::FIRST_GENERATED_VMID`] on (skipping VMIDs the seed already uses), named
    /// `scale-<vmid>`, spread round-robin over the seed's nodes, 512 MiB each, with a tiny
    /// pseudo-disk on the first storage (available on every node) that holds VM images.
    pub fn with_generated_guests(mut self, count: u32) -> Self {
        let nodes: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        if nodes.is_empty() {
            return self;
        }
        let storage = self
            .storages
            .iter()
            .find(|s| s.nodes.is_none() && s.content.iter().any(|c| c == "images"))
            .map(|s| s.id.clone());
        let taken: std::collections::BTreeSet<u32> = self.guests.iter().map(|g| g.vmid).collect();
        let vmids = (Self::FIRST_GENERATED_VMID..)
            .filter(|v| !taken.contains(v))
            .take(count as usize);
        for (i, vmid) in vmids.enumerate() {
            self.guests.push(GuestSpec {
                vmid,
                kind: "qemu".into(),
                node: nodes[i % nodes.len()].clone(),
                name: Some(format!("scale-{vmid}")),
                status: "running".into(),
                template: false,
                tags: vec!["scale".into()],
                agent: default_agent(),
                memory: Some(512),
                cores: Some(1),
                disk_gib: Some(8),
                storage: storage.clone(),
                ip: None,
                image_kib: 4,
                config: BTreeMap::new(),
                snapshots: Vec::new(),
            });
        }
        self
    }

    /// The built-in cluster: nodes `pve1`..`pve3`; storages `local` (dir, backups), `local-lvm`,
    /// `ceph` (shared) and `pbs`; VMs `nextcloud` (100, agent), `homeassistant` (101, HA),
    /// `jellyfin` (103), template `debian-12-template` (9000); containers `pihole` (102) and
    /// `gitea` (104).
    pub fn default_cluster() -> Self {
        let text = include_str!("../../../examples/pvesim/cluster.yaml");
        // The embedded default is covered by a unit test; fall back to a minimal cluster anyway.
        Self::from_yaml(text, Path::new("<built-in>")).unwrap_or_else(|_| Self {
            cluster: default_cluster_name(),
            users: default_users(),
            nodes: vec![
                serde_yaml::from_str("name: pve1")
                    .unwrap_or_else(|_| unreachable!("literal node spec parses")),
            ],
            storages: Vec::new(),
            guests: Vec::new(),
            ha: Vec::new(),
            pools: Vec::new(),
            vzdump_defaults: BTreeMap::new(),
            agent_commands: Vec::new(),
            sdn: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_cluster_parses_and_has_nextcloud_with_agent() {
        let text = include_str!("../../../examples/pvesim/cluster.yaml");
        let spec = SeedSpec::from_yaml(text, Path::new("examples/pvesim/cluster.yaml"));
        let spec = match spec {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(spec.nodes.len(), 3);
        assert!(
            spec.guests
                .iter()
                .any(|g| g.name.as_deref() == Some("nextcloud") && g.agent == "running")
        );
        assert!(!format!("{:?}", spec.users).contains(DEFAULT_TOKEN_SECRET));
    }

    #[test]
    fn generated_guests_are_spread_over_the_nodes_and_skip_used_vmids() {
        let mut spec = SeedSpec::default_cluster();
        let first = SeedSpec::FIRST_GENERATED_VMID;
        spec.guests.push(GuestSpec {
            vmid: first + 1,
            ..spec.guests[0].clone()
        });
        let before = spec.guests.len();
        let spec = spec.with_generated_guests(4);
        let added: Vec<(u32, &str)> = spec.guests[before..]
            .iter()
            .map(|g| (g.vmid, g.node.as_str()))
            .collect();
        assert_eq!(
            added,
            [
                (first, "pve1"),
                (first + 2, "pve2"),
                (first + 3, "pve3"),
                (first + 4, "pve1")
            ]
        );
        assert!(spec.guests[before..].iter().all(|g| g.status == "running"));
    }

    #[test]
    fn unknown_seed_fields_are_rejected_with_the_field_name() {
        let err = SeedSpec::from_yaml("nodes: [{name: a, colour: red}]", Path::new("x.yaml"));
        assert!(err.is_err_and(|e| e.to_string().contains("colour")));
    }
}
