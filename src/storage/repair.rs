//! `repair` (cf. restic `repair packs` / `repair snapshots`): makes the index tell the truth
//! about lost data so the next backup stores it again, and marks the snapshots that can no
//! longer be fully restored. A missing pack's chunks are dropped from the index; a damaged pack
//! (another size than recorded, or with `read_data` a chunk that fails its checks) has its intact
//! chunks copied into a new pack before it goes. Snapshots are never deleted: a snapshot that
//! needs a chunk no pack holds gets a damage mark (`damaged/<id>` in the repository, shown by
//! `list`); a marked snapshot whose chunks are all stored again (a later backup of the same data
//! stored them) is unmarked.

use serde::Serialize;

use super::backend::{damage_key, pack_key, pack_sizes, snapshot_key};
use super::blob::BlobKind;
use super::error::Result;
use super::gc::{OldPack, store_repacked};
use super::index::Index;
use super::lock::LockMode;
use super::pack::PackBuilder;
use super::repo::{Change, Repo};
use super::store::ChunkStore;
use super::sync;

/// What `repair` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairReport {
    /// Packs missing from the repository whose chunks were dropped from the index.
    pub packs_lost: Vec<String>,
    /// Damaged packs whose intact chunks were copied into a new pack before they were removed.
    pub packs_salvaged: Vec<String>,
    /// Chunks dropped from the index (the next backup of their data stores them again).
    pub chunks_dropped: u64,
    /// Snapshots marked damaged: "ID NAME TIME: reason".
    pub snapshots_marked: Vec<String>,
    /// Snapshots whose damage mark was removed because every chunk they need is stored again.
    pub snapshots_unmarked: Vec<String>,
    /// Snapshots marked damaged before and still damaged.
    pub snapshots_still_damaged: u64,
}

impl ChunkStore {
    /// Drops lost chunks from the index and marks the snapshots that need them (see module docs).
    pub fn repair(&self, read_data: bool) -> Result<RepairReport> {
        let _lock = self.lock(LockMode::Exclusive, "repair", false)?;
        let repo = self.repo();
        let mut index = sync::current_index(&repo, self.index_shared, "repair")?;
        let mut report = RepairReport::default();
        let mut change = Change::new(&repo);
        repair_packs(&repo, &mut index, read_data, &mut change, &mut report)?;
        mark_snapshots(&repo, &index, &mut change, &mut report)?;
        change.finish(&index)?;
        Ok(report)
    }
}

fn repair_packs(
    repo: &Repo<'_>,
    index: &mut Index,
    read_data: bool,
    change: &mut Change<'_, '_>,
    report: &mut RepairReport,
) -> Result<()> {
    let sizes = pack_sizes(repo.backend)?;
    let mut scratch = repo.codec.scratch()?;
    for (row, name, recorded) in index.packs()? {
        let key = pack_key(&name);
        let chunks = index.pack_chunks(row)?;
        let Some(&size) = sizes.get(&key) else {
            change.before(index)?;
            index.replace_packs(&[row], None)?;
            report.chunks_dropped += chunks.len() as u64;
            report.packs_lost.push(key);
            continue;
        };
        if size == recorded && !read_data {
            continue;
        }
        let bytes = repo.backend.get_range(&key, 0, size as usize)?;
        let mut pb = PackBuilder::new(repo.pack_size as usize);
        let mut dropped = 0u64;
        for c in &chunks {
            let (o, l) = (c.offset as usize, c.len as usize);
            let intact = bytes.get(o..o + l).filter(|blob| {
                repo.codec
                    .open(blob, BlobKind::Chunk, &mut scratch, &|| {
                        format!("chunk {} in {key}", c.id)
                    })
                    .is_ok_and(|(h, _)| h.id == c.id)
            });
            match intact {
                Some(blob) => pb.add(c.id, c.raw_len, blob),
                None => dropped += 1,
            }
        }
        if size == recorded && dropped == 0 {
            continue;
        }
        change.before(index)?;
        let old: OldPack = (row, key.clone(), size);
        if pb.is_empty() {
            index.replace_packs(&[row], None)?;
            repo.backend.delete(&key)?;
        } else {
            store_repacked(repo, index, pb, &[old], &mut scratch)?;
            repo.backend.delete(&key)?;
        }
        report.chunks_dropped += dropped;
        report.packs_salvaged.push(key);
    }
    Ok(())
}

fn mark_snapshots(
    repo: &Repo<'_>,
    index: &Index,
    change: &mut Change<'_, '_>,
    report: &mut RepairReport,
) -> Result<()> {
    for s in index.snapshots()?.into_iter().filter(|s| s.complete) {
        let mut missing = 0u64;
        let reason = match repo.each_entry(&snapshot_key(&s.uid), |e| {
            if !index.has_chunk(&e.id)? {
                missing += 1;
            }
            Ok(())
        }) {
            Ok(()) if missing == 0 => None,
            Ok(()) => Some(format!(
                "{missing} chunk references point to data no pack holds (lost packs)"
            )),
            Err(e) => Some(format!("the snapshot file cannot be read: {e}")),
        };
        let label = format!("{} {} {}", s.id, s.name, s.time);
        match (reason, s.damaged) {
            (Some(why), false) => {
                change.before(index)?;
                repo.backend.put(&damage_key(&s.uid), why.as_bytes())?;
                index.set_damaged(&s.uid, Some(&why))?;
                report.snapshots_marked.push(format!("{label}: {why}"));
            }
            (Some(_), true) => report.snapshots_still_damaged += 1,
            (None, true) => {
                change.before(index)?;
                repo.backend.delete(&damage_key(&s.uid))?;
                index.set_damaged(&s.uid, None)?;
                report.snapshots_unmarked.push(label);
            }
            (None, false) => {}
        }
    }
    Ok(())
}

impl RepairReport {
    /// Whether every snapshot can be fully restored after the repair.
    pub fn all_restorable(&self) -> bool {
        self.snapshots_marked.is_empty() && self.snapshots_still_damaged == 0
    }
}
