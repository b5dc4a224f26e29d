//! Keeping a per-machine index (the S3 cache) current without a lock: packs and complete
//! snapshots that other machines added are imported; those that other machines' prune/gc
//! removed are forgotten. Runs when a repository whose index is not shared is opened.

use std::collections::{HashMap, HashSet};

use super::backend::snapshot_key;
use super::error::Result;
use super::gc::replace_packs;
use super::reindex::{pack_name_of, unix_secs};
use super::store::ChunkStore;

/// What a sync changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Packs imported.
    pub packs_added: u64,
    /// Packs forgotten (gone from the repository).
    pub packs_removed: u64,
    /// Snapshots imported.
    pub snapshots_added: u64,
    /// Snapshots forgotten (gone from the repository).
    pub snapshots_removed: u64,
}

impl ChunkStore {
    /// Brings the index up to date with the repository's packs and snapshot objects.
    pub(crate) fn sync_index(&self) -> Result<SyncReport> {
        let mut idx = self.index()?;
        let mut report = SyncReport::default();
        let mut scratch = self.codec.scratch()?;
        let known: HashMap<String, i64> = idx
            .packs()?
            .into_iter()
            .map(|(row, name, _)| (name, row))
            .collect();
        let mut present = HashSet::new();
        for obj in self.backend.list("packs/")? {
            let Some(name) = pack_name_of(&obj.key) else {
                continue;
            };
            present.insert(name.clone());
            if known.contains_key(&name) {
                continue;
            }
            match self.read_trailer(&obj.key, obj.size, &mut scratch) {
                Ok(entries) => {
                    idx.add_pack(&name, obj.size, &entries, unix_secs(obj.modified))?;
                    report.packs_added += 1;
                }
                // Verify reports damage; a sync only skips what it cannot read.
                Err(e) => {
                    tracing::warn!(pack = %obj.key, error = %e, "cannot read pack trailer; run reindex")
                }
            }
        }
        for (name, row) in &known {
            if !present.contains(name) {
                replace_packs(&mut idx, &[*row], None)?;
                report.packs_removed += 1;
            }
        }
        let rows = idx.snapshots()?;
        let known: HashSet<String> = rows.iter().map(|s| snapshot_key(&s.uid)).collect();
        let mut present = HashSet::new();
        for obj in self.backend.list("snapshots/")? {
            if obj.key.rsplit('/').next().is_some_and(|n| n.starts_with('.')) {
                continue;
            }
            present.insert(obj.key.clone());
            if known.contains(&obj.key) {
                continue;
            }
            match self.import_snapshot(&idx, &obj.key) {
                Ok(()) => report.snapshots_added += 1,
                Err(e) => tracing::warn!(snapshot = %obj.key, error = %e, "cannot read snapshot object"),
            }
        }
        // Pending rows are backups running on this machine: their objects do not exist yet.
        for s in rows
            .iter()
            .filter(|s| s.complete && !present.contains(&snapshot_key(&s.uid)))
        {
            idx.delete_snapshot(&s.uid)?;
            report.snapshots_removed += 1;
        }
        Ok(report)
    }
}
