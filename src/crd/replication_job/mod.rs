//! `ReplicationJob`: keep N clones of a template (or guest) on each target node, named by the
//! naming pattern, with addresses from the node's range and MACs under the cluster's prefix.
//! See `shared/proxmox/OPERATIONS.md` §5.3.

mod status;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use status::*;

use super::cel::{immutable, rule};
use super::common::{
    BRIDGE_PATTERN, DeletionPolicy, GuestType, NODE_PATTERN, STORAGE_PATTERN, VMID_MAX, VMID_MIN, VmidRange,
};
use super::naming::{
    NAMING_PATTERN_PATTERN, NAMING_PATTERN_UNIQUE_MESSAGE, NAMING_PATTERN_UNIQUE_RULE, check_pattern,
};
use super::refs::LocalObjectReference;
use super::validation::{Errors, InvalidSpec, Validate};

/// Default number of replicas per target node.
pub const DEFAULT_REPLICAS_PER_NODE: i32 = 1;

/// Clones of a template kept on a set of nodes.
// Every `printcolumn(...)` repeats `type_`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "autopilot.homelab.dev",
    version = "v1alpha1",
    kind = "ReplicationJob",
    plural = "replicationjobs",
    namespaced,
    status = "ReplicationJobStatus",
    shortname = "rj",
    category = "autopilot",
    derive = "PartialEq",
    doc = "Keeps clones of a template or guest on target nodes, named by the naming pattern, with addresses from each node's range and MACs under the cluster's prefix.",
    printcolumn(
        name = "Source",
        type_ = "integer",
        json_path = ".spec.source.vmid",
        description = "VMID cloned from"
    ),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".status.desiredReplicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(
        name = "Strategy",
        type_ = "string",
        json_path = ".status.strategy",
        priority = 1,
        description = "How clones reach other nodes"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rule(
    "!has(self.clone) || !has(self.clone.format) || self.source.type == 'VM'",
    "clone.format applies to VMs only; remove it for LXC"
))]
pub struct ReplicationJobSpec {
    /// The ProxmoxCluster (same namespace) to replicate in. Immutable.
    #[x_kube(validation = immutable("clusterRef"))]
    pub cluster_ref: LocalObjectReference,
    /// The template or guest to clone.
    pub source: ReplicationSource,
    /// Nodes to keep replicas on and how many on each (1-32 nodes).
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["node".into()]))]
    pub targets: Vec<ReplicationTarget>,
    /// Name pattern for replicas; default: the ProxmoxCluster's `network.namingPattern`
    /// (`pve-{node}-{type}-{seq:02d}`). Placeholders: `{node}`, `{type}`, `{source}`,
    /// `{vmid}`, `{seq}`, `{seq:0Nd}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = NAMING_PATTERN_PATTERN))]
    #[x_kube(validation = rule(NAMING_PATTERN_UNIQUE_RULE, NAMING_PATTERN_UNIQUE_MESSAGE))]
    pub naming_pattern: Option<String>,
    /// How to clone (default: full clones, cross-node strategy chosen automatically).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone: Option<CloneOptions>,
    /// Network setup of replicas (default: addresses from the cluster's per-node ranges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<ReplicaNetwork>,
    /// VMIDs replicas may use, e.g. `3000`-`3999`. Default: the next free VMIDs of the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmid_range: Option<VmidRange>,
    /// Seconds an address of a removed replica stays reserved before reuse (0-604800,
    /// default 600), so stale ARP/DNS entries expire first.
    #[serde(default = "default_ip_reuse_grace")]
    #[schemars(range(min = 0, max = 604800))]
    pub ip_reuse_grace_seconds: i32,
    /// Start each replica once it is created and configured (default false).
    #[serde(default)]
    pub start_after_create: bool,
    /// What happens to replicas when this job is deleted or a target shrinks: `Retain`
    /// (default: they stay, as ordinary guests) or `Delete` (remove guests this job created,
    /// proven by the `autopilot` tag and this job's UID in their notes).
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

fn default_ip_reuse_grace() -> i32 {
    600
}

/// The guest replicas are cloned from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationSource {
    /// VMID of the template or guest. Immutable.
    #[schemars(range(min = VMID_MIN, max = VMID_MAX))]
    #[x_kube(validation = immutable("vmid"))]
    pub vmid: i32,
    /// `VM` or `LXC`. Immutable.
    #[serde(rename = "type")]
    #[x_kube(validation = immutable("type"))]
    pub type_: GuestType,
    /// Node the source lives on, e.g. `pve1` (a hint: the cluster is asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63), regex(pattern = NODE_PATTERN))]
    pub node: Option<String>,
    /// Clone from this snapshot of the source (required to full-clone a running container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 40), regex(pattern = r"^[a-zA-Z][a-zA-Z0-9_-]+$"))]
    pub snapname: Option<String>,
}

/// Replicas on one node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationTarget {
    /// Node name, e.g. `pve2`.
    #[schemars(length(min = 1, max = 63), regex(pattern = NODE_PATTERN))]
    pub node: String,
    /// Replicas to keep on that node (0-50, default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 50))]
    pub count: Option<i32>,
}

impl ReplicationTarget {
    /// `count` or its default 1.
    pub fn count(&self) -> i32 {
        self.count.unwrap_or(DEFAULT_REPLICAS_PER_NODE)
    }
}

/// Clone settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rule(
    "self.full || (!has(self.storage) && !has(self.format))",
    "storage and format need a full clone; set full: true or remove them"
))]
pub struct CloneOptions {
    /// Full clone (independent copy, default true) or linked clone (shares the template's
    /// base disks; needs a template and storage that supports it).
    #[serde(default = "super::common::default_true")]
    pub full: bool,
    /// Target storage for the clone's disks, e.g. `local-lvm` (full clones only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 64), regex(pattern = STORAGE_PATTERN))]
    pub storage: Option<String>,
    /// Disk format `Raw`, `Qcow2` or `Vmdk` (full VM clones on file storage only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = crate::crd::common::optional_enum)]
    pub format: Option<DiskFormat>,
    /// Resource pool to add replicas to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_.-]+$"))]
    pub pool: Option<String>,
    /// How replicas reach another node than the source's: `Auto` (default: direct when all
    /// disks are on shared storage, else clone-then-migrate), `Direct`, `CloneThenMigrate`
    /// or `PerNodeTemplate` (a copy of the template on each node).
    #[serde(default)]
    pub cross_node: CrossNodeStrategy,
}

/// Disk format of a full clone.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DiskFormat {
    /// raw.
    Raw,
    /// qcow2.
    Qcow2,
    /// vmdk.
    Vmdk,
}

/// Cross-node clone strategy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum CrossNodeStrategy {
    /// Decide per clone from the storages involved.
    #[default]
    Auto,
    /// Clone straight onto the target node (needs shared storage).
    Direct,
    /// Clone on the source node, then migrate offline with local disks.
    CloneThenMigrate,
    /// Keep a template copy on each node and clone locally.
    PerNodeTemplate,
}

/// Network setup of replicas.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaNetwork {
    /// `FromClusterRanges` (default: a static address from the target node's range in the
    /// ProxmoxCluster's network plan, set via cloud-init or the container config) or
    /// `Unmanaged` (keep the cloned network config; only the MAC is replaced).
    #[serde(default)]
    pub addressing: Addressing,
    /// Bridge for the first NIC; default: the node's bridge from the network plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 15), regex(pattern = BRIDGE_PATTERN))]
    pub bridge: Option<String>,
    /// VLAN tag for the first NIC (1-4094); default: the node's tag from the network plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4094))]
    pub vlan_tag: Option<i32>,
    /// MAC prefix for replicas (1-3 unicast octets); default: the network plan's `macPrefix`
    /// (`02:00:00`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8), regex(pattern = crate::crd::network::MAC_PREFIX_PATTERN))]
    pub mac_prefix: Option<String>,
}

/// How replicas get their addresses.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Addressing {
    /// Next free address of the node's range.
    #[default]
    FromClusterRanges,
    /// Leave addressing alone.
    Unmanaged,
}

impl ReplicationJobSpec {
    /// Replicas wanted across all targets.
    pub fn desired_replicas(&self) -> i64 {
        self.targets.iter().map(|t| i64::from(t.count())).sum()
    }
}

impl Validate for ReplicationJobSpec {
    fn validate(&self) -> Result<(), InvalidSpec> {
        let mut errors = Errors::new();
        if self.targets.is_empty() {
            errors.add("spec.targets", "list at least one target node");
        }
        for (i, t) in self.targets.iter().enumerate() {
            if self.targets[..i].iter().any(|o| o.node == t.node) {
                errors.add(
                    format!("spec.targets[{i}].node"),
                    format!("{:?} is listed twice; merge the counts", t.node),
                );
            }
        }
        if let Some(pattern) = &self.naming_pattern {
            let nodes: Vec<&str> = self.targets.iter().map(|t| t.node.as_str()).collect();
            errors.check("spec.namingPattern", check_pattern(pattern, &nodes));
        }
        if let Some(clone) = &self.clone {
            if !clone.full && (clone.storage.is_some() || clone.format.is_some()) {
                errors.add(
                    "spec.clone.full",
                    "storage and format need a full clone; set full: true or remove them",
                );
            }
            if clone.format.is_some() && self.source.type_ == GuestType::Lxc {
                errors.add("spec.clone.format", "applies to VMs only; remove it for LXC");
            }
        }
        if let Some(range) = &self.vmid_range {
            if range.is_empty() {
                errors.add("spec.vmidRange", "start must not be greater than end");
            } else if range.len() < self.desired_replicas() {
                errors.add(
                    "spec.vmidRange",
                    format!(
                        "holds {} VMIDs but the targets want {} replicas; widen the range",
                        range.len(),
                        self.desired_replicas()
                    ),
                );
            }
        }
        errors.finish()
    }
}

#[cfg(test)]
mod tests;
