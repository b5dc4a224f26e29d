//! Status of a ReplicationJob: every replica with its allocation (recorded before the clone
//! is requested) and origin, and the addresses held back after replicas were removed.

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::crd::conditions::Condition;

/// Condition type: replicas are being created or changed.
pub const CONDITION_PROGRESSING: &str = "Progressing";
/// Condition type: an allocation (VMID, IP or MAC) collided with something found in the cluster.
pub const CONDITION_ALLOCATION_CONFLICT: &str = "AllocationConflict";

/// Observed state of a ReplicationJob.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationJobStatus {
    /// The `metadata.generation` this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `AllocationConflict`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::crd::conditions::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Replicas the targets ask for.
    #[serde(default)]
    pub desired_replicas: i32,
    /// Replicas created, configured (and started, if asked).
    #[serde(default)]
    pub ready_replicas: i32,
    /// Strategy used for cross-node clones (`Direct`, `CloneThenMigrate`, `PerNodeTemplate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// Every replica this job created or is creating.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<Replica>,
    /// Addresses of removed replicas, held until their grace period ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub released_addresses: Vec<ReleasedAddress>,
}

/// Where a replica is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ReplicaPhase {
    /// VMID, name, MAC and address allocated; clone not requested yet.
    Pending,
    /// The clone task runs.
    Cloning,
    /// Moving to the target node (clone-then-migrate).
    Migrating,
    /// Setting MAC, address and notes.
    Configuring,
    /// Starting.
    Starting,
    /// Done.
    Ready,
    /// Failed; see `message`.
    Failed,
    /// Being removed (target shrank or job deleted with `deletionPolicy: Delete`).
    Deleting,
}

/// One replica.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Replica {
    /// Guest name from the naming pattern, e.g. `pve-pve2-vm-01`.
    pub name: String,
    /// Node it lives on.
    pub node: String,
    /// Its VMID.
    pub vmid: i32,
    /// MAC of its first NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// IPv4 address of its first NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,
    /// Where it is.
    pub phase: ReplicaPhase,
    /// UPID of the running PVE task (clone, migrate, start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upid: Option<crate::crd::common::TaskHandle>,
    /// What it was cloned from.
    pub origin: ReplicaOrigin,
    /// What went wrong, when `Failed`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Where a replica came from (also written into the guest's notes with this job's UID).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaOrigin {
    /// Source node.
    pub node: String,
    /// Source VMID.
    pub vmid: i32,
    /// Source snapshot, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapname: Option<String>,
    /// Strategy used for this replica.
    pub strategy: String,
}

/// An address held back after its replica was removed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleasedAddress {
    /// The IPv4 address.
    pub ipv4: String,
    /// Node whose range it belongs to.
    pub node: String,
    /// When the replica using it was removed.
    pub released_time: Timestamp,
}
