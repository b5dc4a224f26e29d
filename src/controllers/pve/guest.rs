//! Find a guest: where it really runs, its power state (paused included), uptime and lock, all
//! from `/cluster/resources` (never a node hint, never a request per guest). Every kind that
//! acts on guests finds them here, through the cluster's shared snapshot.

use super::snapshot::ClusterView;
use crate::crd::common::GuestType;
use crate::crd::service::PowerState;
use crate::proxmox::{self, GuestRef, Vmid, api::ClusterResource};

/// Why the cluster could not be asked about the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unavailable {
    /// PascalCase reason (`ClusterNotFound`, `Unreachable`, `AuthenticationFailed`...).
    pub reason: String,
    /// What is wrong, for a human.
    pub message: String,
}

/// What the guest looks like now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestFacts {
    /// Node, type and VMID, from `/cluster/resources`.
    pub guest: GuestRef,
    /// The guest's name in PVE.
    pub name: Option<String>,
    /// Observed power state (`Unknown` while its node is offline).
    pub power: PowerState,
    /// Seconds since it started, when running.
    pub uptime: Option<u64>,
    /// Config lock (`backup`, `migrate`, `snapshot`...).
    pub lock: Option<String>,
    /// Whether the guest is a template (never runs).
    pub template: bool,
}

/// The guest as one pass saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestView {
    /// The cluster could not be asked.
    Unavailable(Unavailable),
    /// No guest has the VMID.
    Missing,
    /// The VMID belongs to a guest of the other type.
    WrongType {
        /// What the guest really is.
        actual: GuestType,
        /// Where it is.
        node: String,
    },
    /// Found.
    Found(GuestFacts),
}

impl GuestView {
    /// Why the guest is known not to run (`the guest is stopped`, `... paused`, `... does not
    /// exist`, another type); `None` while it runs or while its state cannot be told (cluster
    /// unreachable, node offline).
    pub fn not_running(&self) -> Option<String> {
        match self {
            Self::Found(f) => match f.power {
                PowerState::Running | PowerState::Unknown => None,
                other => Some(format!("the guest is {other:?}").to_lowercase()),
            },
            Self::Missing => Some("the guest does not exist".into()),
            Self::WrongType { .. } => Some("the VMID belongs to a guest of another type".into()),
            Self::Unavailable(_) => None,
        }
    }
}

/// The PVE guest type of a CRD guest type.
pub fn pve_type(t: GuestType) -> proxmox::GuestType {
    match t {
        GuestType::Vm => proxmox::GuestType::Qemu,
        GuestType::Lxc => proxmox::GuestType::Lxc,
    }
}

fn crd_type(t: proxmox::GuestType) -> GuestType {
    match t {
        proxmox::GuestType::Qemu => GuestType::Vm,
        proxmox::GuestType::Lxc => GuestType::Lxc,
    }
}

/// The observed power state from `/cluster/resources`' `status` and, for a running QEMU guest,
/// its `qmpstatus`.
pub fn power_state(status: &str, qmpstatus: Option<&str>) -> PowerState {
    match (status, qmpstatus) {
        ("running", Some("paused" | "suspended" | "prelaunch")) => PowerState::Paused,
        ("running", _) => PowerState::Running,
        ("stopped", _) => PowerState::Stopped,
        ("paused" | "suspended" | "prelaunch", _) => PowerState::Paused,
        _ => PowerState::Unknown,
    }
}

/// Finds the guest `vmid` of type `expected` in the cluster's shared snapshot
/// ([`super::snapshot`]) of `/cluster/resources`: where it is, its power state (a paused VM shows
/// `paused` there), uptime (grown by the snapshot's age), lock and name. Never a request per
/// guest. A connection or API failure is `Err`, for the caller to describe.
pub async fn observe_guest(
    cluster: &ClusterView<'_>,
    vmid: i32,
    expected: GuestType,
) -> Result<GuestView, proxmox::Error> {
    let vmid = u32::try_from(vmid)
        .ok()
        .and_then(|v| Vmid::new(v).ok())
        .ok_or_else(|| proxmox::Error::InvalidRequest {
            message: format!("spec.vmid {vmid} is not a valid VMID (100-999999999)"),
        })?;
    let resources = cluster.resources().await?;
    let mut view = view_from(&resources.rows, vmid, expected);
    if let GuestView::Found(facts) = &mut view {
        // The snapshot may be up to a resync window old: its uptime is as of its read.
        facts.uptime = facts
            .uptime
            .map(|u| u.saturating_add(cluster.age_secs(resources.at)));
    }
    Ok(view)
}

/// The guest `vmid` in the rows of `GET /cluster/resources?type=vm`: where it is, of which
/// type, in which state (`unknown` while its node is offline).
pub fn view_from(rows: &[ClusterResource], vmid: Vmid, expected: GuestType) -> GuestView {
    let row = rows
        .iter()
        .find(|r| r.vmid == Some(vmid) && r.guest_type().is_some());
    let (Some(row), Some(node)) = (row, row.and_then(|r| r.node.clone())) else {
        return GuestView::Missing;
    };
    let Some(actual) = row.guest_type() else {
        return GuestView::Missing;
    };
    if actual != pve_type(expected) {
        return GuestView::WrongType {
            actual: crd_type(actual),
            node: node.to_string(),
        };
    }
    let power = power_state(row.status.as_deref().unwrap_or("unknown"), None);
    GuestView::Found(GuestFacts {
        guest: GuestRef::new(node, actual, vmid),
        name: row.name.clone(),
        power,
        uptime: row.uptime.filter(|_| power == PowerState::Running),
        lock: row.lock.clone(),
        template: row.template,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_state_reads_status_and_qmp_state() {
        assert_eq!(power_state("running", None), PowerState::Running);
        assert_eq!(power_state("running", Some("running")), PowerState::Running);
        assert_eq!(power_state("running", Some("paused")), PowerState::Paused);
        assert_eq!(power_state("stopped", None), PowerState::Stopped);
        assert_eq!(power_state("unknown", None), PowerState::Unknown);
    }

    #[test]
    fn guest_types_map_both_ways() {
        for t in [GuestType::Vm, GuestType::Lxc] {
            assert_eq!(crd_type(pve_type(t)), t);
        }
    }
}
