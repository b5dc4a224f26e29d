//! Clone and migrate.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::guest_call;
use crate::proxmox::client::PveClient;
use crate::proxmox::decode;
use crate::proxmox::error::{Error, Result};
use crate::proxmox::ops;
use crate::proxmox::task::TaskRef;
use crate::proxmox::types::{GuestRef, GuestType, NodeName, SnapshotName, Vmid};

/// A clone to make (`POST .../clone`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloneRequest {
    /// The new guest's id.
    pub newid: Vmid,
    /// Its name (sent as `name` for QEMU, `hostname` for LXC).
    pub name: Option<String>,
    /// Full copy; PVE's default is full for guests, linked for templates.
    pub full: Option<bool>,
    /// Node to put the clone on (all source disks must be on shared storage).
    pub target: Option<NodeName>,
    /// Target storage (full clones only).
    pub storage: Option<String>,
    /// QEMU, full clones only: `raw`, `qcow2` or `vmdk`.
    pub format: Option<String>,
    /// Clone from this snapshot.
    pub snapname: Option<SnapshotName>,
    /// Add the clone to this pool.
    pub pool: Option<String>,
    /// Description (put the ownership marker here).
    pub description: Option<String>,
    /// Bandwidth limit, KiB/s.
    pub bwlimit: Option<u64>,
}

impl CloneRequest {
    /// A clone to `newid` with PVE's defaults.
    pub fn new(newid: Vmid) -> Self {
        Self {
            newid,
            name: None,
            full: None,
            target: None,
            storage: None,
            format: None,
            snapname: None,
            pool: None,
            description: None,
            bwlimit: None,
        }
    }
}

/// `GET .../migrate`: what PVE says about migrating the guest. QEMU says `allowed_nodes`, LXC
/// `allowed-nodes`; both land here.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MigratePrecondition {
    /// Whether the guest runs (then `online` or, for LXC, `restart` is needed).
    #[serde(default, deserialize_with = "decode::bool_lenient")]
    pub running: bool,
    /// Nodes the guest may go to, when PVE computed them.
    #[serde(default, alias = "allowed-nodes")]
    pub allowed_nodes: Option<Vec<String>>,
    /// Nodes it may not go to, with PVE's reasons (e.g. `unavailable_storages`).
    #[serde(default, alias = "not-allowed-nodes")]
    pub not_allowed_nodes: BTreeMap<String, Value>,
    /// QEMU: local resources (PCI, USB...) that block migration.
    #[serde(default)]
    pub local_resources: Vec<String>,
    /// QEMU: local disks (need `with-local-disks`).
    #[serde(default)]
    pub local_disks: Vec<Value>,
}

impl MigratePrecondition {
    /// Why migrating to `target` would fail, if PVE's precondition already says so.
    pub fn refusal(&self, target: &NodeName) -> Option<String> {
        if let Some(reason) = self.not_allowed_nodes.get(target.as_str()) {
            return Some(format!("PVE does not allow node {target}: {reason}"));
        }
        if let Some(allowed) = &self.allowed_nodes
            && !allowed.iter().any(|n| n == target.as_str())
        {
            return Some(format!(
                "node {target} is not among the allowed targets {allowed:?}"
            ));
        }
        if !self.local_resources.is_empty() {
            return Some(format!(
                "the guest uses local resources {:?}",
                self.local_resources
            ));
        }
        None
    }
}

/// A migration to make (`POST .../migrate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateRequest {
    /// Destination node.
    pub target: NodeName,
    /// Live migration (required for a running QEMU guest; LXC: restart migration otherwise).
    pub online: bool,
    /// QEMU: also move local disks.
    pub with_local_disks: bool,
    /// Storage on the target (`targetstorage` / LXC `target-storage`).
    pub target_storage: Option<String>,
    /// LXC: stop, move and start again a running container.
    pub restart: bool,
    /// LXC: shutdown timeout for `restart`, seconds.
    pub timeout: Option<u32>,
    /// Bandwidth limit, KiB/s.
    pub bwlimit: Option<u64>,
}

impl MigrateRequest {
    /// An offline (or, with `online`, live) migration to `target`.
    pub fn new(target: NodeName, online: bool) -> Self {
        Self {
            target,
            online,
            with_local_disks: false,
            target_storage: None,
            restart: false,
            timeout: None,
            bwlimit: None,
        }
    }
}

fn invalid(message: String) -> Error {
    Error::InvalidRequest { message }
}

impl PveClient {
    /// `POST .../clone` (task `qmclone`/`vzclone`).
    pub async fn clone_guest(&self, guest: &GuestRef, req: &CloneRequest) -> Result<TaskRef> {
        let lxc = guest.guest_type == GuestType::Lxc;
        if lxc && req.format.is_some() {
            return Err(invalid("format applies to QEMU clones only".into()));
        }
        if req.full == Some(false) && (req.storage.is_some() || req.format.is_some()) {
            return Err(invalid(
                "storage and format apply to full clones only; set full".into(),
            ));
        }
        let call = guest_call(guest, ops::QEMU_CLONE, ops::LXC_CLONE, &[])
            .arg("newid", req.newid)
            .opt(if lxc { "hostname" } else { "name" }, req.name.as_deref())
            .opt_flag("full", req.full)
            .opt("target", req.target.as_ref())
            .opt("storage", req.storage.as_deref())
            .opt("format", req.format.as_deref())
            .opt("snapname", req.snapname.as_ref())
            .opt("pool", req.pool.as_deref())
            .opt("description", req.description.as_deref())
            .opt("bwlimit", req.bwlimit);
        self.run_task(call).await
    }

    /// `GET .../migrate[?target=]`: migration preconditions.
    pub async fn migrate_precondition(
        &self,
        guest: &GuestRef,
        target: Option<&NodeName>,
    ) -> Result<MigratePrecondition> {
        self.run(
            guest_call(guest, ops::QEMU_MIGRATE_CHECK, ops::LXC_MIGRATE_CHECK, &[]).opt("target", target),
        )
        .await
    }

    /// Checks the preconditions (`GET .../migrate`), then starts the migration (`POST .../migrate`,
    /// task `qmigrate`/`vzmigrate`, `hamigrate` when HA-managed). Refuses with
    /// [`Error::InvalidRequest`] when PVE's precondition or the guest's state rules it out.
    pub async fn migrate_guest(&self, guest: &GuestRef, req: &MigrateRequest) -> Result<TaskRef> {
        let lxc = guest.guest_type == GuestType::Lxc;
        if req.target == guest.node {
            return Err(invalid(format!("{guest} is already on node {}", req.target)));
        }
        if lxc && req.with_local_disks {
            return Err(invalid("with-local-disks applies to QEMU guests only".into()));
        }
        if !lxc && (req.restart || req.timeout.is_some()) {
            return Err(invalid("restart and timeout apply to LXC migrations only".into()));
        }
        let pre = self.migrate_precondition(guest, Some(&req.target)).await?;
        if let Some(why) = pre.refusal(&req.target) {
            return Err(invalid(format!("cannot migrate {guest}: {why}")));
        }
        if lxc && pre.running && req.online {
            return Err(invalid(format!(
                "{guest} is a running container, which PVE cannot live-migrate; set restart instead of online"
            )));
        }
        if pre.running && !req.online && !(lxc && req.restart) {
            let fix = if lxc {
                "set online or restart"
            } else {
                "set online"
            };
            return Err(invalid(format!("{guest} is running; {fix} to migrate it")));
        }
        let storage_key = if lxc { "target-storage" } else { "targetstorage" };
        let call = guest_call(guest, ops::QEMU_MIGRATE, ops::LXC_MIGRATE, &[])
            .arg("target", &req.target)
            .opt_flag("online", req.online.then_some(true))
            .opt_flag("with-local-disks", req.with_local_disks.then_some(true))
            .opt(storage_key, req.target_storage.as_deref())
            .opt_flag("restart", req.restart.then_some(true))
            .opt("timeout", req.timeout)
            .opt("bwlimit", req.bwlimit);
        self.run_task(call).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: &str) -> NodeName {
        NodeName::new(n).unwrap()
    }

    #[test]
    fn migrate_precondition_reads_both_key_spellings() {
        let qemu: MigratePrecondition = serde_json::from_str(
            r#"{"running":0,"allowed_nodes":["pve2"],"not_allowed_nodes":{"pve3":{"unavailable_storages":["local-zfs"]}},"local_disks":[],"local_resources":[]}"#,
        )
        .unwrap();
        let lxc: MigratePrecondition =
            serde_json::from_str(r#"{"running":true,"allowed-nodes":["pve2"],"not-allowed-nodes":{}}"#)
                .unwrap();
        assert_eq!(qemu.allowed_nodes, lxc.allowed_nodes);
        assert!(lxc.running && !qemu.running);
        assert_eq!(qemu.refusal(&node("pve2")), None);
        assert!(qemu.refusal(&node("pve3")).unwrap().contains("local-zfs"));
        assert!(qemu.refusal(&node("pve4")).unwrap().contains("allowed targets"));
        let blocked: MigratePrecondition =
            serde_json::from_str(r#"{"local_resources":["hostpci0"]}"#).unwrap();
        assert!(blocked.refusal(&node("pve2")).unwrap().contains("hostpci0"));
    }
}
