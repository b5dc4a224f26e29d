//! Typed PVE operations, one module per area, all as methods on [`PveClient`].
//!
//! Response structs decode leniently (see [`crate::proxmox::decode`]); request option structs are
//! plain data with `Default` where every field is optional.

mod access;
mod agent;
mod apt;
mod backup;
mod cluster;
mod config;
mod guests;
mod ha;
mod migrate;
mod network;
mod nodes;
mod snapshots;

pub use access::TicketResponse;
pub use agent::{AgentInterface, AgentIpAddress, ExecStatus};
pub use apt::{AptPackage, AptPackageVersion};
pub use backup::{
    BackupMode, Compression, ContentKind, RestoreCt, RestoreVm, StorageConfig, StorageContent, StorageStatus,
    Verification, VolumeUpdate, VzdumpRequest,
};
pub use cluster::{
    ClusterNodeStatus, ClusterResource, ClusterStatus, ClusterStatusEntry, ClusterSummary, GuestLocation,
    NodeListEntry, ResourceKind, VersionInfo,
};
pub use config::{ConfigUpdate, GuestConfig};
pub use guests::{
    DeleteGuestOptions, GuestListEntry, GuestStatus, HaServiceStatus, ShutdownOptions, StopOptions,
};
pub use ha::{HaBlockingResource, HaMigrateResult, HaResource};
pub use migrate::{CloneRequest, MigratePrecondition, MigrateRequest};
pub use network::{NetworkInterface, NetworkTypeFilter, SdnVnet, SdnZone};
pub use nodes::{BootInfo, KernelInfo, NodeStatus, UsageInfo};
pub use snapshots::{CreateSnapshot, Feature, FeatureSupport, SnapshotCurrent, SnapshotInfo, SnapshotList};

use super::client::PveClient;
use super::error::Result;
use super::ops::{self, Operation};
use super::request::Call;
use super::task::TaskRef;
use super::types::GuestRef;
use super::upid::Upid;

/// A call on one guest: picks the QEMU or LXC operation and fills `{node}`, `{vmid}` and any
/// further path segments.
fn guest_call(guest: &GuestRef, qemu: Operation, lxc: Operation, extra: &[&str]) -> Call {
    let vmid = guest.vmid.to_string();
    let mut segments = vec![guest.node.as_str(), vmid.as_str()];
    segments.extend_from_slice(extra);
    Call::new(ops::pick(guest.guest_type, qemu, lxc), &segments)
}

impl PveClient {
    /// Runs a call that starts a task and returns its handle.
    async fn run_task(&self, call: Call) -> Result<TaskRef> {
        let upid: Upid = self.run(call).await?;
        Ok(TaskRef::new(upid))
    }
}
