//! Where a BackupPolicy's backups go, and what that means on the PVE API: the vzdump request,
//! finding the backup a run made (by the marker in its notes, never by file name), checking it,
//! listing and deleting this policy's backups.

use crate::crd::backup_policy::{BackupMode, BackupPolicySpec, ChunkStoreDestination, Compression};
use crate::proxmox::api::{
    BackupMode as PveMode, Compression as PveCompression, ContentKind, StorageContent, VzdumpRequest,
};
use crate::proxmox::{self, NodeName, PveClient, Vmid};

use super::plan::{OwnedBackup, owned_by, owner_of};

/// The destination of a policy, as the controller acts on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination<'a> {
    /// A PBS datastore through its PVE storage.
    Pbs {
        /// The PVE storage of type `pbs`.
        storage: &'a str,
    },
    /// A PVE backup storage (plain vzdump archives).
    Storage {
        /// Its id.
        storage: &'a str,
        /// Archive compression.
        compression: Compression,
    },
    /// The operator's chunk store, staged through a PVE storage.
    ChunkStore(&'a ChunkStoreDestination),
}

impl<'a> Destination<'a> {
    /// The destination `spec` names (validation guarantees exactly one).
    pub fn of(spec: &'a BackupPolicySpec) -> Option<Self> {
        let d = &spec.destination;
        if let Some(pbs) = &d.pbs {
            return Some(Self::Pbs {
                storage: &pbs.storage,
            });
        }
        if let Some(s) = &d.storage {
            return Some(Self::Storage {
                storage: &s.storage,
                compression: s.compression.unwrap_or_default(),
            });
        }
        d.chunk_store.as_ref().map(Self::ChunkStore)
    }

    /// The PVE storage vzdump writes to.
    pub fn vzdump_storage(&self) -> &'a str {
        match self {
            Self::Pbs { storage } | Self::Storage { storage, .. } => storage,
            Self::ChunkStore(c) => &c.staging_storage,
        }
    }

    /// Whether the backups stay on the PVE storage (PBS or a backup storage), as opposed to
    /// being moved into the chunk store.
    pub fn on_pve(&self) -> bool {
        !matches!(self, Self::ChunkStore(_))
    }

    /// The vzdump request for guest `vmid` of run `run_id`.
    pub fn vzdump_request(
        &self,
        spec: &BackupPolicySpec,
        vmid: Vmid,
        policy_uid: &str,
        run_id: &str,
    ) -> VzdumpRequest {
        let compress = match self {
            Self::Pbs { .. } => None,
            Self::Storage { compression, .. } => Some(match compression {
                Compression::Zstd => PveCompression::Zstd,
                Compression::Lzo => PveCompression::Lzo,
                Compression::Gzip => PveCompression::Gzip,
                Compression::None => PveCompression::None,
            }),
            // The chunk store deduplicates: a compressed archive would defeat it.
            Self::ChunkStore(_) => Some(PveCompression::None),
        };
        VzdumpRequest {
            vmids: vec![vmid],
            storage: Some(self.vzdump_storage().to_owned()),
            dumpdir: None,
            mode: Some(match spec.mode {
                BackupMode::Snapshot => PveMode::Snapshot,
                BackupMode::Suspend => PveMode::Suspend,
                BackupMode::Stop => PveMode::Stop,
            }),
            compress,
            notes_template: Some(super::plan::notes_template(policy_uid, run_id)),
            // Retention is ours (per policy, after verification): PVE must never prune.
            remove: Some(false),
            protected: None,
            bwlimit: spec.bandwidth_limit_ki_bps.and_then(|v| u64::try_from(v).ok()),
        }
    }
}

/// The backup run `run_id` of policy `policy_uid` made of guest `vmid` on `storage`, as seen from
/// `node`, if any: found by the marker in its notes.
pub async fn find_backup(
    client: &PveClient,
    node: &NodeName,
    storage: &str,
    vmid: Vmid,
    policy_uid: &str,
    run_id: &str,
) -> Result<Option<StorageContent>, proxmox::Error> {
    let rows = client
        .storage_content(node, storage, Some(ContentKind::Backup), Some(vmid))
        .await?;
    Ok(rows.into_iter().find(|row| {
        row.notes
            .as_deref()
            .and_then(owner_of)
            .is_some_and(|(policy, run)| policy == policy_uid && run == run_id)
    }))
}

/// Every backup of guest `vmid` (all guests when `None`) on `storage` seen from `node` that the
/// policy `policy_uid` made, newest first.
pub async fn owned_backups(
    client: &PveClient,
    node: &NodeName,
    storage: &str,
    vmid: Option<Vmid>,
    policy_uid: &str,
) -> Result<Vec<StorageContent>, proxmox::Error> {
    let rows = client
        .storage_content(node, storage, Some(ContentKind::Backup), vmid)
        .await?;
    Ok(rows
        .into_iter()
        .filter(|row| owned_by(row.notes.as_deref(), policy_uid))
        .collect())
}

/// A storage content row as retention sees it. `verified_volid` is a backup this policy
/// verified itself (file archives carry no verification state of their own).
pub fn as_owned(row: &StorageContent, verified_volid: Option<&str>) -> OwnedBackup {
    let pbs_ok = row.verification.as_ref().is_some_and(|v| v.state == "ok");
    OwnedBackup {
        volid: row.volid.clone(),
        time: row.ctime.and_then(|t| i64::try_from(t).ok()).unwrap_or_default(),
        protected: row.protected,
        verified: pbs_ok || Some(row.volid.as_str()) == verified_volid,
    }
}

/// What checking a new backup found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// It reads back.
    Verified,
    /// It does not: why.
    Failed(String),
    /// Not decided yet (PBS has not verified it): leave `verified` absent.
    Pending,
}

/// Checks the new backup `row` on `node`: a file archive must have a size and a readable
/// header (PVE reads the guest config out of it: the VMA header and config blob, or the tar
/// member list up to the config); a PBS snapshot must carry PBS's verification state `ok`.
pub async fn check_backup(client: &PveClient, node: &NodeName, row: &StorageContent, pbs: bool) -> Check {
    if pbs {
        return match row.verification.as_ref().map(|v| v.state.as_str()) {
            Some("ok") => Check::Verified,
            Some("failed") => Check::Failed(format!(
                "the Proxmox Backup Server's verification of {} failed",
                row.volid
            )),
            _ => Check::Pending,
        };
    }
    if row.size == 0 {
        return Check::Failed(format!("backup {} is empty (size 0)", row.volid));
    }
    match client.extract_backup_config(node, &row.volid).await {
        Ok(config) if !config.trim().is_empty() => Check::Verified,
        Ok(_) => Check::Failed(format!(
            "backup {} holds no guest configuration: the archive is damaged",
            row.volid
        )),
        // PVE reports an archive it cannot read as a 500 with its reason (every `die` of an API
        // handler is a 500); the client has already retried it. Connection trouble and the
        // gateway statuses mean "ask again later".
        Err(proxmox::Error::Api { status: 500, message }) => {
            Check::Failed(format!("PVE cannot read backup {}: {message}", row.volid))
        }
        Err(e) if e.is_transient() => Check::Pending,
        Err(e) => Check::Failed(format!("cannot read backup {}: {e}", row.volid)),
    }
}

/// The storage part of a volid (`nfs:backup/x` -> `nfs`).
pub fn storage_of(volid: &str) -> &str {
    volid.split_once(':').map_or("", |(s, _)| s)
}

/// The file name of a file-based backup volid (shared with restore).
pub use crate::controllers::pve::restore::backup_file_name as file_name;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_name_of_a_staged_volid_is_its_last_part_and_never_a_path() {
        assert_eq!(
            file_name("staging:backup/vzdump-qemu-100-2024_06_01-02_30_00.vma"),
            Some("vzdump-qemu-100-2024_06_01-02_30_00.vma")
        );
        assert_eq!(file_name("staging:backup/../etc/passwd"), None);
        assert_eq!(file_name("no-colon"), None);
        assert_eq!(storage_of("nfs:backup/x"), "nfs");
    }
}
