//! Snapshots: list, create, rollback, delete, and the `feature` capability check.

use serde::Deserialize;

use super::guest_call;
use crate::proxmox::client::PveClient;
use crate::proxmox::decode;
use crate::proxmox::error::{Error, Result};
use crate::proxmox::ops;
use crate::proxmox::task::TaskRef;
use crate::proxmox::types::{GuestRef, GuestType, SnapshotName};

/// Raw row of `GET .../snapshot` (real snapshots and the `current` pseudo-entry).
#[derive(Debug, Clone, Deserialize)]
struct SnapshotRow {
    name: String,
    #[serde(default, deserialize_with = "decode::string_lenient")]
    description: String,
    #[serde(default, deserialize_with = "decode::opt_u64")]
    snaptime: Option<u64>,
    #[serde(default)]
    parent: Option<String>,
    #[serde(default, deserialize_with = "decode::bool_lenient")]
    vmstate: bool,
    #[serde(default)]
    snapstate: Option<String>,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default, deserialize_with = "decode::bool_lenient")]
    running: bool,
}

/// One snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Its name (PVE accepts names we would not create, so this is a plain string).
    pub name: String,
    /// Description (where we put our ownership marker).
    pub description: String,
    /// Creation time (Unix seconds); `None` or 0 when unknown.
    pub snaptime: Option<u64>,
    /// The snapshot it was taken on top of.
    pub parent: Option<String>,
    /// QEMU: whether it includes RAM.
    pub vmstate: bool,
    /// Set while being created or deleted (`prepare`, `delete`).
    pub snapstate: Option<String>,
}

/// The `current` pseudo-entry: where the guest is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotCurrent {
    /// The snapshot the current state derives from.
    pub parent: Option<String>,
    /// Config digest.
    pub digest: Option<String>,
    /// Whether the guest runs.
    pub running: bool,
}

/// `GET .../snapshot`, with real snapshots sorted oldest first (PVE's order is random).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotList {
    /// Real snapshots, by `snaptime` then name.
    pub snapshots: Vec<SnapshotInfo>,
    /// The `current` entry, when present.
    pub current: Option<SnapshotCurrent>,
}

impl<'de> Deserialize<'de> for SnapshotList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let rows = Vec::<SnapshotRow>::deserialize(d)?;
        let mut snapshots = Vec::new();
        let mut current = None;
        for r in rows {
            if r.name == "current" {
                current = Some(SnapshotCurrent {
                    parent: r.parent,
                    digest: r.digest,
                    running: r.running,
                });
            } else {
                snapshots.push(SnapshotInfo {
                    name: r.name,
                    description: r.description,
                    snaptime: r.snaptime,
                    parent: r.parent,
                    vmstate: r.vmstate,
                    snapstate: r.snapstate,
                });
            }
        }
        snapshots.sort_by(|a, b| (a.snaptime, &a.name).cmp(&(b.snaptime, &b.name)));
        Ok(Self { snapshots, current })
    }
}

impl SnapshotList {
    /// The snapshot called `name`.
    pub fn get(&self, name: &str) -> Option<&SnapshotInfo> {
        self.snapshots.iter().find(|s| s.name == name)
    }
}

/// A snapshot to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSnapshot {
    /// Its name.
    pub name: SnapshotName,
    /// Description (put the ownership marker here).
    pub description: Option<String>,
    /// QEMU only: include RAM.
    pub vmstate: bool,
}

/// What `GET .../feature` can check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// Taking snapshots.
    Snapshot,
    /// Cloning.
    Clone,
    /// Full copy.
    Copy,
}

impl Feature {
    fn as_str(self) -> &'static str {
        match self {
            Self::Snapshot => "snapshot",
            Self::Clone => "clone",
            Self::Copy => "copy",
        }
    }
}

/// `GET .../feature`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct FeatureSupport {
    /// Whether every disk's storage supports the feature.
    #[serde(rename = "hasFeature", default, deserialize_with = "decode::bool_lenient")]
    pub has_feature: bool,
    /// QEMU: nodes where all the guest's storages are available (clone targets).
    #[serde(default)]
    pub nodes: Vec<String>,
}

impl PveClient {
    /// `GET .../snapshot`.
    pub async fn snapshots(&self, guest: &GuestRef) -> Result<SnapshotList> {
        self.run(guest_call(guest, ops::QEMU_SNAPSHOTS, ops::LXC_SNAPSHOTS, &[]))
            .await
    }

    /// `POST .../snapshot` (task `qmsnapshot`/`vzsnapshot`).
    pub async fn create_snapshot(&self, guest: &GuestRef, snap: &CreateSnapshot) -> Result<TaskRef> {
        let mut call = guest_call(guest, ops::QEMU_SNAPSHOT_CREATE, ops::LXC_SNAPSHOT_CREATE, &[])
            .arg("snapname", &snap.name)
            .opt("description", snap.description.as_deref());
        match (guest.guest_type, snap.vmstate) {
            (GuestType::Qemu, true) => call = call.flag("vmstate", true),
            (GuestType::Lxc, true) => {
                return Err(Error::InvalidRequest {
                    message: "vmstate (RAM in the snapshot) exists for QEMU guests only".into(),
                });
            }
            (_, false) => {}
        }
        self.run_task(call).await
    }

    /// `POST .../snapshot/{snapname}/rollback` (task `qmrollback`/`vzrollback`). A running guest is
    /// stopped first; `start` starts it again afterwards.
    pub async fn rollback_snapshot(
        &self,
        guest: &GuestRef,
        name: &SnapshotName,
        start: bool,
    ) -> Result<TaskRef> {
        let call = guest_call(
            guest,
            ops::QEMU_SNAPSHOT_ROLLBACK,
            ops::LXC_SNAPSHOT_ROLLBACK,
            &[name.as_str()],
        )
        .opt_flag("start", start.then_some(true));
        self.run_task(call).await
    }

    /// `DELETE .../snapshot/{snapname}` (task `qmdelsnapshot`/`vzdelsnapshot`). `force` removes it
    /// from the config even if removing the disk snapshots fails.
    pub async fn delete_snapshot(
        &self,
        guest: &GuestRef,
        name: &SnapshotName,
        force: bool,
    ) -> Result<TaskRef> {
        let call = guest_call(
            guest,
            ops::QEMU_SNAPSHOT_DELETE,
            ops::LXC_SNAPSHOT_DELETE,
            &[name.as_str()],
        )
        .opt_flag("force", force.then_some(true));
        self.run_task(call).await
    }

    /// `GET .../feature?feature=snapshot|clone|copy[&snapname=]`.
    pub async fn guest_feature(
        &self,
        guest: &GuestRef,
        feature: Feature,
        snapname: Option<&SnapshotName>,
    ) -> Result<FeatureSupport> {
        let call = guest_call(guest, ops::QEMU_FEATURE, ops::LXC_FEATURE, &[])
            .arg("feature", feature.as_str())
            .opt("snapname", snapname);
        self.run(call).await
    }
}
