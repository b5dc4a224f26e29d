//! Backups: vzdump, storages and their content (list/delete), restore of VMs and containers,
//! reading a backup's config.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::proxmox::client::PveClient;
use crate::proxmox::decode;
use crate::proxmox::error::{Error, Result};
use crate::proxmox::ops;
use crate::proxmox::request::Call;
use crate::proxmox::task::TaskRef;
use crate::proxmox::types::{NodeName, Vmid};
use crate::proxmox::upid::Upid;

/// vzdump `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupMode {
    /// Live backup (default).
    Snapshot,
    /// Suspend the guest during the backup.
    Suspend,
    /// Stop the guest during the backup.
    Stop,
}

/// vzdump `compress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Uncompressed (`0`).
    None,
    /// gzip.
    Gzip,
    /// lzo.
    Lzo,
    /// zstd.
    Zstd,
}

/// A backup job to start (`POST /nodes/{node}/vzdump`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VzdumpRequest {
    /// Guests to back up (all must be on the node the call goes to). At least one.
    pub vmids: Vec<Vmid>,
    /// Target storage (mutually exclusive with `dumpdir`).
    pub storage: Option<String>,
    /// Target directory on the node (mutually exclusive with `storage`). Only `root@pam` with a
    /// ticket may set it: PVE refuses it from anyone else, root's API tokens included.
    pub dumpdir: Option<String>,
    /// Backup mode (PVE default: snapshot).
    pub mode: Option<BackupMode>,
    /// Compression (PVE default: from vzdump.conf).
    pub compress: Option<Compression>,
    /// Notes template for the backup (`{{guestname}}` etc.); put the ownership marker here.
    /// Needs `storage`.
    pub notes_template: Option<String>,
    /// Prune older backups per the storage's retention (PVE default: yes).
    pub remove: Option<bool>,
    /// Mark the backup protected. Needs `storage`.
    pub protected: Option<bool>,
    /// Bandwidth limit, KiB/s. Needs `Sys.Modify` on `/` (PVE 9.1: `bwlimit`, `ionice` and
    /// `performance`; HTTP 403 `Permission check failed (/, Sys.Modify)` without it), so a
    /// least-privilege backup token may have to rely on the storage's or datacenter's limit.
    pub bwlimit: Option<u64>,
}

/// What to change on a volume (`PUT /nodes/{node}/storage/{storage}/content/{volume}`); `None`
/// leaves an attribute as it is. PVE supports both on backups only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeUpdate {
    /// New notes; `Some("")` removes them. PVE keeps notes as text (a file beside the archive, or
    /// the PBS snapshot's comment); the first line is what content listings show.
    pub notes: Option<String>,
    /// Protect the backup from pruning and deletion (`true`) or lift the protection (`false`).
    pub protected: Option<bool>,
}

/// Content type filter for storage content listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentKind {
    /// vzdump backups.
    Backup,
    /// VM disk images.
    Images,
    /// Container root dirs.
    Rootdir,
    /// ISO images.
    Iso,
    /// Container templates.
    Vztmpl,
    /// Snippets.
    Snippets,
}

impl ContentKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Backup => "backup",
            Self::Images => "images",
            Self::Rootdir => "rootdir",
            Self::Iso => "iso",
            Self::Vztmpl => "vztmpl",
            Self::Snippets => "snippets",
        }
    }
}

/// One row of `GET /storage` (the cluster's storage configuration).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct StorageConfig {
    /// Storage id.
    pub storage: String,
    /// Plugin type (`dir`, `pbs`, `zfspool`, ...).
    #[serde(rename = "type", default)]
    pub storage_type: String,
    /// Allowed content, comma-separated.
    #[serde(default)]
    pub content: String,
    /// Directory, for file-based storages.
    #[serde(default)]
    pub path: Option<String>,
    /// Whether all nodes see the same content.
    #[serde(default, deserialize_with = "decode::bool_lenient")]
    pub shared: bool,
    /// Nodes the storage is limited to, comma-separated.
    #[serde(default)]
    pub nodes: Option<String>,
    /// Whether the storage is disabled.
    #[serde(default, deserialize_with = "decode::bool_lenient")]
    pub disable: bool,
}

/// One row of `GET /nodes/{node}/storage`: a storage as one node sees it.
#[derive(Debug, Clone, Deserialize)]
pub struct StorageStatus {
    /// Storage id.
    pub storage: String,
    /// Plugin type.
    #[serde(rename = "type", default)]
    pub storage_type: String,
    /// Allowed content, comma-separated.
    #[serde(default)]
    pub content: String,
    /// Whether it is usable right now.
    #[serde(default, deserialize_with = "decode::bool_lenient")]
    pub active: bool,
    /// Whether it is enabled.
    #[serde(default, deserialize_with = "decode::bool_lenient")]
    pub enabled: bool,
    /// Whether it is shared.
    #[serde(default, deserialize_with = "decode::bool_lenient")]
    pub shared: bool,
    /// Size, bytes.
    #[serde(default, deserialize_with = "decode::opt_u64")]
    pub total: Option<u64>,
    /// Used, bytes.
    #[serde(default, deserialize_with = "decode::opt_u64")]
    pub used: Option<u64>,
    /// Available, bytes.
    #[serde(default, deserialize_with = "decode::opt_u64")]
    pub avail: Option<u64>,
}

/// PBS verification state of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Verification {
    /// `ok` or `failed`.
    #[serde(default)]
    pub state: String,
    /// The verify task (a PBS UPID).
    #[serde(default)]
    pub upid: Option<String>,
}

/// One row of `GET /nodes/{node}/storage/{storage}/content`.
#[derive(Debug, Clone, Deserialize)]
pub struct StorageContent {
    /// Volume id, e.g. `local:backup/vzdump-qemu-100-2024_06_01-02_00_00.vma.zst`.
    pub volid: String,
    /// Format (`vma.zst`, `tar.zst`, `pbs-vm`, `raw`, ...).
    #[serde(default)]
    pub format: String,
    /// Size, bytes.
    #[serde(default, deserialize_with = "decode::u64_or_zero")]
    pub size: u64,
    /// Creation time, Unix seconds.
    #[serde(default, deserialize_with = "decode::opt_u64")]
    pub ctime: Option<u64>,
    /// Owning guest.
    #[serde(default)]
    pub vmid: Option<Vmid>,
    /// First line of the notes.
    #[serde(default)]
    pub notes: Option<String>,
    /// Whether the backup is protected from pruning and deletion (`1` or absent).
    #[serde(default, deserialize_with = "decode::bool_lenient")]
    pub protected: bool,
    /// PBS: fingerprint of the encryption key, or `1`.
    #[serde(default, deserialize_with = "decode::opt_string")]
    pub encrypted: Option<String>,
    /// PBS: last verification.
    #[serde(default)]
    pub verification: Option<Verification>,
    /// Backups: `qemu`, `lxc` or `unknown`.
    #[serde(default)]
    pub subtype: Option<String>,
    /// Content type (`backup`, `images`, ...).
    #[serde(default)]
    pub content: Option<String>,
}

/// Restore a VM backup (`POST /nodes/{node}/qemu` with `archive`; task `qmrestore`).
/// There is deliberately no `force`: we never overwrite an existing guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreVm {
    /// The new guest's id (must be free).
    pub vmid: Vmid,
    /// Backup volid.
    pub archive: String,
    /// Storage for the restored disks.
    pub storage: Option<String>,
    /// New MAC addresses and SMBIOS UUID (use for restore tests next to the original).
    pub unique: bool,
    /// Start the VM when restored.
    pub start: bool,
    /// Live restore (PBS backups only).
    pub live_restore: bool,
    /// Add to this pool.
    pub pool: Option<String>,
    /// Bandwidth limit, KiB/s.
    pub bwlimit: Option<u64>,
    /// Config keys merged over the backed-up config (`net0`, `name`, `memory`...; no disks).
    pub overrides: BTreeMap<String, String>,
}

/// Restore a container backup (`POST /nodes/{node}/lxc` with `ostemplate` + `restore=1`; task
/// `vzrestore`). No `force`: we never overwrite an existing guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreCt {
    /// The new container's id (must be free).
    pub vmid: Vmid,
    /// Backup volid (sent as `ostemplate`).
    pub archive: String,
    /// Storage for the root filesystem (PVE default: `local`).
    pub storage: Option<String>,
    /// New MAC addresses (note: with `unique`, PVE reuses backed-up `netN` over `overrides`).
    pub unique: bool,
    /// Start the container when restored.
    pub start: bool,
    /// Ignore tar errors while unpacking.
    pub ignore_unpack_errors: bool,
    /// Add to this pool.
    pub pool: Option<String>,
    /// Bandwidth limit, KiB/s.
    pub bwlimit: Option<u64>,
    /// Config keys that take precedence over the backed-up ones (`net0`, `hostname`...).
    pub overrides: BTreeMap<String, String>,
}

fn on(b: bool) -> Option<bool> {
    b.then_some(true)
}

impl PveClient {
    /// `POST /nodes/{node}/vzdump` (task `vzdump`). Runs on `node`: its guests only.
    pub async fn vzdump(&self, node: &NodeName, req: &VzdumpRequest) -> Result<TaskRef> {
        if req.vmids.is_empty() {
            return Err(Error::InvalidRequest {
                message: "vzdump needs at least one VMID".into(),
            });
        }
        if req.storage.is_some() && req.dumpdir.is_some() {
            return Err(Error::InvalidRequest {
                message: "give vzdump either storage or dumpdir, not both".into(),
            });
        }
        // The schema says `requires => 'storage'`: notes and protection are kept by a storage.
        if req.storage.is_none() && (req.notes_template.is_some() || req.protected.is_some()) {
            return Err(Error::InvalidRequest {
                message: "vzdump notes-template and protected need a storage (not dumpdir)".into(),
            });
        }
        let vmids = req
            .vmids
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mode = req.mode.map(|m| match m {
            BackupMode::Snapshot => "snapshot",
            BackupMode::Suspend => "suspend",
            BackupMode::Stop => "stop",
        });
        let compress = req.compress.map(|c| match c {
            Compression::None => "0",
            Compression::Gzip => "gzip",
            Compression::Lzo => "lzo",
            Compression::Zstd => "zstd",
        });
        let call = Call::new(ops::VZDUMP, &[node.as_str()])
            .arg("vmid", vmids)
            .opt("storage", req.storage.as_deref())
            .opt("dumpdir", req.dumpdir.as_deref())
            .opt("mode", mode)
            .opt("compress", compress)
            .opt("notes-template", req.notes_template.as_deref())
            .opt_flag("remove", req.remove)
            .opt_flag("protected", req.protected)
            .opt("bwlimit", req.bwlimit);
        self.run_task(call).await
    }

    /// `GET /storage`: every storage in the cluster config.
    pub async fn storage_configs(&self) -> Result<Vec<StorageConfig>> {
        self.run(Call::new(ops::STORAGE_CONFIGS, &[])).await
    }

    /// `GET /nodes/{node}/storage`: storages as `node` sees them, optionally only those allowing
    /// `content`.
    pub async fn node_storages(
        &self,
        node: &NodeName,
        content: Option<ContentKind>,
    ) -> Result<Vec<StorageStatus>> {
        self.run(
            Call::new(ops::NODE_STORAGES, &[node.as_str()]).opt("content", content.map(ContentKind::as_str)),
        )
        .await
    }

    /// `GET /nodes/{node}/storage/{storage}/content`, newest first.
    pub async fn storage_content(
        &self,
        node: &NodeName,
        storage: &str,
        content: Option<ContentKind>,
        vmid: Option<Vmid>,
    ) -> Result<Vec<StorageContent>> {
        let call = Call::new(ops::STORAGE_CONTENT, &[node.as_str(), storage])
            .opt("content", content.map(ContentKind::as_str))
            .opt("vmid", vmid);
        let mut rows: Vec<StorageContent> = self.run(call).await?;
        rows.sort_by(|a, b| b.ctime.cmp(&a.ctime).then_with(|| a.volid.cmp(&b.volid)));
        Ok(rows)
    }

    /// `DELETE /nodes/{node}/storage/{storage}/content/{volume}`: a task (`imgdel`), or `None`
    /// when PVE finished within `delay` seconds (1-30). Callers must have proved the volume ours.
    pub async fn delete_volume(
        &self,
        node: &NodeName,
        storage: &str,
        volid: &str,
        delay: Option<u32>,
    ) -> Result<Option<TaskRef>> {
        let call =
            Call::new(ops::STORAGE_VOLUME_DELETE, &[node.as_str(), storage, volid]).opt("delay", delay);
        let upid: Option<Upid> = self.run(call).await?;
        Ok(upid.map(TaskRef::new))
    }

    /// `PUT /nodes/{node}/storage/{storage}/content/{volume}`: set a backup's notes and/or
    /// protection (synchronous). `volid` is the full volume id (`local:backup/...`). Retried
    /// after an ambiguous failure: setting the same attributes again is harmless.
    pub async fn update_volume(
        &self,
        node: &NodeName,
        storage: &str,
        volid: &str,
        update: &VolumeUpdate,
    ) -> Result<()> {
        if update.notes.is_none() && update.protected.is_none() {
            return Err(Error::InvalidRequest {
                message: "volume update sets neither notes nor protected".into(),
            });
        }
        if update.notes.as_deref().is_some_and(|n| n.contains('\0')) {
            return Err(Error::InvalidRequest {
                message: "volume notes must not contain NUL".into(),
            });
        }
        let call = Call::new(ops::STORAGE_VOLUME_UPDATE, &[node.as_str(), storage, volid])
            .opt("notes", update.notes.as_deref())
            .opt_flag("protected", update.protected);
        let _: Option<serde_json::Value> = self.run(call).await?;
        Ok(())
    }

    /// `POST /nodes/{node}/qemu` with `archive`: restore a VM backup (task `qmrestore`).
    pub async fn restore_vm(&self, node: &NodeName, req: &RestoreVm) -> Result<TaskRef> {
        let call = Call::new(ops::QEMU_CREATE, &[node.as_str()])
            .arg("vmid", req.vmid)
            .arg("archive", &req.archive)
            .opt("storage", req.storage.as_deref())
            .opt_flag("unique", on(req.unique))
            .opt_flag("start", on(req.start))
            .opt_flag("live-restore", on(req.live_restore))
            .opt("pool", req.pool.as_deref())
            .opt("bwlimit", req.bwlimit)
            .config_keys(&req.overrides);
        self.run_task(call).await
    }

    /// `POST /nodes/{node}/lxc` with `ostemplate` + `restore=1`: restore a container backup (task
    /// `vzrestore`).
    pub async fn restore_ct(&self, node: &NodeName, req: &RestoreCt) -> Result<TaskRef> {
        let call = Call::new(ops::LXC_CREATE, &[node.as_str()])
            .arg("vmid", req.vmid)
            .arg("ostemplate", &req.archive)
            .flag("restore", true)
            .opt("storage", req.storage.as_deref())
            .opt_flag("unique", on(req.unique))
            .opt_flag("start", on(req.start))
            .opt_flag("ignore-unpack-errors", on(req.ignore_unpack_errors))
            .opt("pool", req.pool.as_deref())
            .opt("bwlimit", req.bwlimit)
            .config_keys(&req.overrides);
        self.run_task(call).await
    }

    /// `GET /nodes/{node}/vzdump/extractconfig?volume=`: the guest config stored in a backup.
    pub async fn extract_backup_config(&self, node: &NodeName, volid: &str) -> Result<String> {
        self.run(Call::new(ops::VZDUMP_EXTRACTCONFIG, &[node.as_str()]).arg("volume", volid))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_content_row_decodes_backup_fields() {
        let row: StorageContent = serde_json::from_str(
            r#"{"volid":"local:backup/vzdump-qemu-100-2024_06_01-02_00_00.vma.zst","format":"vma.zst","size":"1234",
                "ctime":1717207200,"vmid":"100","notes":"autopilot.homelab.dev/owner-uid=abc","protected":1,
                "subtype":"qemu","content":"backup","verification":{"state":"ok","upid":"UPID:pbs:x"}}"#,
        )
        .unwrap();
        assert_eq!(row.size, 1234);
        assert_eq!(row.vmid.map(Vmid::get), Some(100));
        assert!(row.protected);
        assert_eq!(row.subtype.as_deref(), Some("qemu"));
        assert_eq!(row.verification.unwrap().state, "ok");
        let bare: StorageContent = serde_json::from_str(r#"{"volid":"local:iso/x.iso"}"#).unwrap();
        assert!(!bare.protected && bare.ctime.is_none());
    }
}
