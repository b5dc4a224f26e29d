//! Put a backup back on a node: any PVE backup volid (PBS or a backup storage) or a chunk-store
//! snapshot (`chunkstore/<id>`), as a new guest with a VMID that must be free. Never `force`:
//! an existing guest is never overwritten. A chunk-store backup is first reassembled into the
//! staging storage's directory (the operator mounts it) under a vzdump file name, so PVE can
//! restore it like any archive; the staged file is removed after the restore.
//!
//! Used by `homelab-autopilot restore` and by the RestoreTest controller.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::crd::common::GuestType;
use crate::proxmox::api::{RestoreCt, RestoreVm};
use crate::proxmox::{NodeName, PveClient, TaskRef, Vmid};
use crate::storage::{NoProgress, SnapshotFilter, StoreLocation};

/// Prefix of a chunk-store backup's id in status (`chunkstore/<snapshot id>`); PVE volids
/// always contain a `:`, so the two never collide.
pub const CHUNKSTORE_PREFIX: &str = "chunkstore/";
/// Snapshot tag holding the staged archive's volid it was read from (its vzdump file name).
pub const TAG_STAGED: &str = "staged-volid";

/// Which backup to restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backup {
    /// A PVE volid (`pbs-homelab:backup/vm/200/…`, `nfs:backup/vzdump-qemu-200-….vma.zst`).
    Volume(String),
    /// A chunk-store snapshot, reassembled through a staging storage.
    ChunkStore {
        /// Snapshot id.
        snapshot: String,
        /// The store.
        store: StoreLocation,
        /// PVE storage (content `backup`) the archive is staged on.
        staging_storage: String,
        /// That storage's `dump/` directory as mounted here.
        staging_path: PathBuf,
    },
}

impl Backup {
    /// Reads a backup id as shown in status: `chunkstore/<id>` (needs the store and staging
    /// settings) or a PVE volid.
    pub fn parse(id: &str, chunk_store: Option<(StoreLocation, String, PathBuf)>) -> Result<Self, String> {
        if let Some(snapshot) = id.strip_prefix(CHUNKSTORE_PREFIX) {
            let (store, staging_storage, staging_path) = chunk_store.ok_or_else(|| {
                format!(
                    "{id} is a chunk-store backup: give the store and the staging storage and path to restore it"
                )
            })?;
            return Ok(Self::ChunkStore {
                snapshot: snapshot.to_owned(),
                store,
                staging_storage,
                staging_path,
            });
        }
        if !id.contains(':') {
            return Err(format!(
                "{id:?} is neither a PVE volid (storage:backup/…) nor chunkstore/<snapshot id>"
            ));
        }
        Ok(Self::Volume(id.to_owned()))
    }
}

/// What to restore, where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreRequest {
    /// The backup.
    pub backup: Backup,
    /// VM or container.
    pub guest_type: GuestType,
    /// Node to restore on.
    pub node: NodeName,
    /// The new guest's VMID (must be free).
    pub vmid: Vmid,
    /// Storage for the disks (PVE default when absent).
    pub storage: Option<String>,
    /// New MAC addresses (and SMBIOS UUID for VMs).
    pub unique: bool,
    /// Start the guest when restored.
    pub start: bool,
    /// Live restore (PBS backups only, VMs only).
    pub live_restore: bool,
    /// Bandwidth limit, KiB/s.
    pub bwlimit: Option<u64>,
    /// Config keys over the backed-up ones (`net0`, `memory`, `description`...).
    pub overrides: BTreeMap<String, String>,
}

/// The chunk-store snapshot name of a guest's backups under a BackupPolicy
/// (`<namespace>.<policy>.<vm|ct>-<vmid>`): the BackupPolicy writes it, the RestoreTest lists it.
pub fn chunk_snapshot_name(
    namespace: &str,
    policy: &str,
    target: &crate::crd::common::GuestTarget,
) -> String {
    format!(
        "{namespace}.{policy}.{}-{}",
        target.type_.short_name(),
        target.vmid
    )
}

/// A staged archive (a reassembled chunk-store backup) to remove after the restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Staged {
    /// Its PVE volid.
    pub volid: String,
    /// The file as mounted here.
    pub path: PathBuf,
}

/// A restore that PVE accepted.
#[derive(Clone, Debug)]
pub struct Started {
    /// The restore task (`qmrestore` / `vzrestore`).
    pub task: TaskRef,
    /// The archive PVE restores.
    pub archive: String,
    /// The staged archive to remove when the task ended.
    pub staged: Option<Staged>,
}

/// The file name of a file-based backup volid (`staging:backup/vzdump-qemu-100-….vma` ->
/// `vzdump-qemu-100-….vma`), never a path.
pub fn backup_file_name(volid: &str) -> Option<&str> {
    let (_, path) = volid.split_once(':')?;
    let name = path.strip_prefix("backup/").unwrap_or(path);
    (!name.is_empty() && !name.contains('/') && name != "." && name != "..").then_some(name)
}

/// Reassembles a chunk-store snapshot into `staging_path` under its original vzdump file name,
/// returning the staged volid. Blocking; refuses to overwrite an existing file.
pub fn reassemble(
    store: &StoreLocation,
    snapshot: &str,
    staging_storage: &str,
    staging_path: &Path,
) -> Result<Staged, String> {
    let chunk_store = store
        .open_or_init()
        .map_err(|e| format!("cannot open the chunk store: {e}"))?;
    let snap = chunk_store
        .list_matching(&SnapshotFilter::default(), None)
        .map_err(|e| format!("cannot list the chunk store: {e}"))?
        .into_iter()
        .find(|s| s.id == snapshot || s.id.starts_with(snapshot))
        .ok_or_else(|| format!("the chunk store has no snapshot {snapshot}"))?;
    let staged = snap.tags.get(TAG_STAGED).ok_or_else(|| {
        format!("snapshot {snapshot} was not made from a vzdump archive (no {TAG_STAGED} tag)")
    })?;
    let file = backup_file_name(staged)
        .filter(|f| f.starts_with("vzdump-"))
        .ok_or_else(|| format!("snapshot {snapshot}: tag {TAG_STAGED}={staged} is not a vzdump file"))?;
    let path = staging_path.join(file);
    let out = std::fs::File::options()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    if let Err(e) = chunk_store.restore_to_writer(&snap, std::io::BufWriter::new(out), &NoProgress) {
        let _ = std::fs::remove_file(&path);
        return Err(format!("cannot reassemble snapshot {snapshot}: {e}"));
    }
    Ok(Staged {
        volid: format!("{staging_storage}:backup/{file}"),
        path,
    })
}

/// Why a restore did not start.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RestoreError {
    /// What happened, for humans.
    pub message: String,
    /// The request may have reached PVE (it timed out, or the connection broke after it was
    /// sent): a restore may be running at the VMID, so nothing may be assumed gone.
    pub unanswered: bool,
}

impl From<String> for RestoreError {
    fn from(message: String) -> Self {
        Self {
            message,
            unanswered: false,
        }
    }
}

/// Starts the restore: checks the VMID is free, reassembles a chunk-store backup first, then
/// asks PVE (never with `force`).
pub async fn start_restore(client: &PveClient, req: &RestoreRequest) -> Result<Started, RestoreError> {
    match client.is_vmid_free(req.vmid).await {
        Ok(true) => {}
        Ok(false) => {
            return Err(format!(
                "VMID {} is in use: a restore never overwrites a guest; pick a free VMID",
                req.vmid
            )
            .into());
        }
        Err(e) => return Err(format!("cannot check VMID {}: {e}", req.vmid).into()),
    }
    let (archive, staged) = match &req.backup {
        Backup::Volume(volid) => (volid.clone(), None),
        Backup::ChunkStore {
            snapshot,
            store,
            staging_storage,
            staging_path,
        } => {
            if req.live_restore {
                return Err(String::from("live restore needs a Proxmox Backup Server backup").into());
            }
            let (store, snapshot, storage, path) = (
                store.clone(),
                snapshot.clone(),
                staging_storage.clone(),
                staging_path.clone(),
            );
            let staged = tokio::task::spawn_blocking(move || reassemble(&store, &snapshot, &storage, &path))
                .await
                .map_err(|e| format!("reassembly stopped: {e}"))??;
            (staged.volid.clone(), Some(staged))
        }
    };
    let result = match req.guest_type {
        GuestType::Vm => {
            client
                .restore_vm(
                    &req.node,
                    &RestoreVm {
                        vmid: req.vmid,
                        archive: archive.clone(),
                        storage: req.storage.clone(),
                        unique: req.unique,
                        start: req.start,
                        live_restore: req.live_restore,
                        pool: None,
                        bwlimit: req.bwlimit,
                        overrides: req.overrides.clone(),
                    },
                )
                .await
        }
        GuestType::Lxc => {
            if req.live_restore {
                return Err(String::from("live restore is for VMs only").into());
            }
            client
                .restore_ct(
                    &req.node,
                    &RestoreCt {
                        vmid: req.vmid,
                        archive: archive.clone(),
                        storage: req.storage.clone(),
                        unique: req.unique,
                        start: req.start,
                        ignore_unpack_errors: false,
                        pool: None,
                        bwlimit: req.bwlimit,
                        overrides: req.overrides.clone(),
                    },
                )
                .await
        }
    };
    match result {
        Ok(task) => Ok(Started {
            task,
            archive,
            staged,
        }),
        Err(e) => {
            // Without an answer PVE may be restoring from the archive: it stays.
            let unanswered = matches!(
                e,
                crate::proxmox::Error::Timeout { .. } | crate::proxmox::Error::Transport { .. }
            );
            if let Some(staged) = staged.as_ref().filter(|_| !unanswered) {
                let _ = std::fs::remove_file(&staged.path);
            }
            Err(RestoreError {
                message: if unanswered {
                    format!("PVE did not answer the restore request of {archive}: {e}")
                } else {
                    format!("PVE refused the restore of {archive}: {e}")
                },
                unanswered,
            })
        }
    }
}

/// Removes a staged archive once its restore ended (the file on the operator's mount; PVE lists
/// it no more).
pub fn remove_staged(path: &std::path::Path) -> Result<(), String> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot remove {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_ids_are_volids_or_chunkstore_ids() {
        assert_eq!(
            Backup::parse("nfs:backup/vzdump-qemu-200-x.vma.zst", None).unwrap(),
            Backup::Volume("nfs:backup/vzdump-qemu-200-x.vma.zst".into())
        );
        let err = Backup::parse("chunkstore/abc", None).unwrap_err();
        assert!(err.contains("store"), "{err}");
        let store = StoreLocation {
            repo: "/s".into(),
            key_file: None,
        };
        assert!(matches!(
            Backup::parse("chunkstore/abc", Some((store, "nfs".into(), "/mnt".into()))).unwrap(),
            Backup::ChunkStore { snapshot, .. } if snapshot == "abc"
        ));
        assert!(Backup::parse("vzdump-qemu-200.vma", None).is_err());
    }
}
