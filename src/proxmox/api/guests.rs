//! Guests: list, status, power (start/stop/shutdown/reboot) and delete.

use serde::Deserialize;

use super::guest_call;
use crate::proxmox::client::PveClient;
use crate::proxmox::decode;
use crate::proxmox::error::{Error, Result};
use crate::proxmox::ops;
use crate::proxmox::request::Call;
use crate::proxmox::task::TaskRef;
use crate::proxmox::types::{GuestRef, GuestType, NodeName, Vmid};

/// One row of `GET /nodes/{node}/qemu` or `/lxc`.
#[derive(Debug, Clone, Deserialize)]
pub struct GuestListEntry {
    /// Guest id.
    pub vmid: Vmid,
    /// `running` or `stopped`.
    #[serde(default)]
    pub status: String,
    /// QEMU with `full=1` only: the QMP run state (`running`, `paused`, `prelaunch`...; `stopped`
    /// for a stopped VM), as in `status/current`.
    #[serde(default)]
    pub qmpstatus: Option<String>,
    /// Name (hostname for containers).
    #[serde(default)]
    pub name: Option<String>,
    /// Config lock, if any.
    #[serde(default)]
    pub lock: Option<String>,
    /// Tags, `;`-separated.
    #[serde(default)]
    pub tags: Option<String>,
    /// Whether it is a template.
    #[serde(default, deserialize_with = "decode::bool_lenient")]
    pub template: bool,
    /// Uptime, seconds.
    #[serde(default, deserialize_with = "decode::opt_u64")]
    pub uptime: Option<u64>,
    /// Memory size, bytes.
    #[serde(default, deserialize_with = "decode::opt_u64")]
    pub maxmem: Option<u64>,
    /// Disk size, bytes.
    #[serde(default, deserialize_with = "decode::opt_u64")]
    pub maxdisk: Option<u64>,
}

/// The `ha` object of a guest's status.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HaServiceStatus {
    /// Whether HA manages the guest (then power actions become `ha*` tasks).
    #[serde(default, deserialize_with = "decode::bool_lenient")]
    pub managed: bool,
    /// HA state (`started`, `stopped`, ...).
    #[serde(default)]
    pub state: Option<String>,
}

/// `GET /nodes/{node}/{qemu|lxc}/{vmid}/status/current`.
#[derive(Debug, Clone, Deserialize)]
pub struct GuestStatus {
    /// `running` or `stopped`.
    pub status: String,
    /// QEMU: the QMP status (`running`, `paused`, `prelaunch`...).
    #[serde(default)]
    pub qmpstatus: Option<String>,
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// Config lock, if any.
    #[serde(default)]
    pub lock: Option<String>,
    /// Tags, `;`-separated.
    #[serde(default)]
    pub tags: Option<String>,
    /// Whether it is a template.
    #[serde(default, deserialize_with = "decode::bool_lenient")]
    pub template: bool,
    /// Uptime, seconds.
    #[serde(default, deserialize_with = "decode::opt_u64")]
    pub uptime: Option<u64>,
    /// QEMU: whether the guest agent is enabled in the config.
    #[serde(default, deserialize_with = "decode::bool_lenient")]
    pub agent: bool,
    /// HA status.
    #[serde(default)]
    pub ha: HaServiceStatus,
}

impl GuestStatus {
    /// Whether the guest runs.
    pub fn is_running(&self) -> bool {
        self.status == "running"
    }
}

/// Options of a hard stop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopOptions {
    /// QEMU only: seconds to wait.
    pub timeout: Option<u32>,
    /// Abort a running shutdown task instead of failing on the lock.
    pub overrule_shutdown: Option<bool>,
}

/// Options of a clean shutdown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownOptions {
    /// Seconds to wait for the guest.
    pub timeout: Option<u32>,
    /// Hard-stop when the timeout passes.
    pub force_stop: Option<bool>,
}

/// Options of deleting a guest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteGuestOptions {
    /// Also remove the guest from backup jobs, replication and HA.
    pub purge: bool,
    /// Also destroy disks not referenced in the config but owned by the VMID.
    pub destroy_unreferenced_disks: bool,
}

impl PveClient {
    /// `GET /nodes/{node}/qemu` or `/lxc`, sorted by VMID.
    pub async fn guests(&self, node: &NodeName, guest_type: GuestType) -> Result<Vec<GuestListEntry>> {
        let call = Call::new(
            ops::pick(guest_type, ops::QEMU_LIST, ops::LXC_LIST),
            &[node.as_str()],
        );
        let mut list: Vec<GuestListEntry> = self.run(call).await?;
        list.sort_by_key(|g| g.vmid);
        Ok(list)
    }

    /// `GET /nodes/{node}/qemu?full=1`, sorted by VMID: every VM of the node with its QMP state
    /// (`qmpstatus`), uptime and lock, as `status/current` reports them, in one request. PVE asks
    /// each running VM's QMP monitor for it, so this is the node's own view as of now.
    pub async fn qemu_guests_full(&self, node: &NodeName) -> Result<Vec<GuestListEntry>> {
        let call = Call::new(ops::QEMU_LIST, &[node.as_str()]).flag("full", true);
        let mut list: Vec<GuestListEntry> = self.run(call).await?;
        list.sort_by_key(|g| g.vmid);
        Ok(list)
    }

    /// `GET .../status/current`.
    pub async fn guest_status(&self, guest: &GuestRef) -> Result<GuestStatus> {
        self.run(guest_call(guest, ops::QEMU_STATUS, ops::LXC_STATUS, &[]))
            .await
    }

    /// `POST .../status/start` (task `qmstart`/`vzstart`, `hastart` when HA-managed).
    pub async fn start_guest(&self, guest: &GuestRef) -> Result<TaskRef> {
        self.run_task(guest_call(guest, ops::QEMU_START, ops::LXC_START, &[]))
            .await
    }

    /// `POST .../status/stop`: immediate stop, like pulling the plug.
    pub async fn stop_guest(&self, guest: &GuestRef, opts: &StopOptions) -> Result<TaskRef> {
        if guest.guest_type == GuestType::Lxc && opts.timeout.is_some() {
            return Err(Error::InvalidRequest {
                message: "stop timeout applies to QEMU guests only".into(),
            });
        }
        let call = guest_call(guest, ops::QEMU_STOP, ops::LXC_STOP, &[])
            .opt("timeout", opts.timeout)
            .opt_flag("overrule-shutdown", opts.overrule_shutdown);
        self.run_task(call).await
    }

    /// `POST .../status/shutdown`: ACPI shutdown (QEMU) or init shutdown (LXC).
    pub async fn shutdown_guest(&self, guest: &GuestRef, opts: &ShutdownOptions) -> Result<TaskRef> {
        let call = guest_call(guest, ops::QEMU_SHUTDOWN, ops::LXC_SHUTDOWN, &[])
            .opt("timeout", opts.timeout)
            .opt_flag("forceStop", opts.force_stop);
        self.run_task(call).await
    }

    /// `POST .../status/reboot`.
    pub async fn reboot_guest(&self, guest: &GuestRef, timeout: Option<u32>) -> Result<TaskRef> {
        self.run_task(guest_call(guest, ops::QEMU_REBOOT, ops::LXC_REBOOT, &[]).opt("timeout", timeout))
            .await
    }

    /// `DELETE /nodes/{node}/{qemu|lxc}/{vmid}` (task `qmdestroy`/`vzdestroy`). Callers must have
    /// proved the guest is theirs (ownership marker) before calling this.
    pub async fn delete_guest(&self, guest: &GuestRef, opts: &DeleteGuestOptions) -> Result<TaskRef> {
        let call = guest_call(guest, ops::QEMU_DELETE, ops::LXC_DELETE, &[])
            .opt_flag("purge", opts.purge.then_some(true))
            .opt_flag(
                "destroy-unreferenced-disks",
                opts.destroy_unreferenced_disks.then_some(true),
            );
        self.run_task(call).await
    }
}
