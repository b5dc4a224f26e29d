//! Prune (drop snapshots by retention rules) and GC (reclaim space), both under the exclusive
//! lock, so no backup runs meanwhile. GC plans from the index and snapshot objects, then acts:
//! references are dropped in a transaction before a file is deleted, so a crash can leave a stray
//! file (swept on the next run after the grace period) but never a row whose bytes are gone.

use std::collections::{BTreeMap, HashSet};

use super::chunkset::ChunkSet;
use std::time::{Duration, SystemTime};

use rusqlite::params;
use serde::Serialize;

use super::backend::{pack_key, snapshot_key};
use super::blob::{BlobKind, ChunkId};
use super::error::{Error, Result};
use super::index::Index;
use super::lock::LockMode;
use super::pack::{PackBuilder, PackEntry, STAGED_PACK_PREFIX, new_pack_name};
use super::prune::{KeepOptions, PruneItem, PruneMark, compute_prune};
use super::store::ChunkStore;

/// A pack being rewritten: index row, key, size.
type OldPack = (i64, String, u64);

/// Packs with at least this fraction of dead bytes are rewritten.
const REPACK_DEAD_FRACTION: f64 = 0.2;

/// One prune decision.
#[derive(Clone, Debug, Serialize)]
pub struct PruneDecision {
    /// Snapshot id.
    pub id: String,
    /// Backup name.
    pub name: String,
    /// Time (RFC 3339).
    pub time: String,
    /// Decision.
    pub mark: PruneMark,
}

/// What prune did (or would do, with `dry_run`).
#[derive(Clone, Debug, Serialize)]
pub struct PruneReport {
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Every snapshot with its decision, per name, newest first.
    pub decisions: Vec<PruneDecision>,
    /// Snapshots removed (or to remove).
    pub removed: u64,
}

/// What gc did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GcReport {
    /// Unfinished snapshots of crashed backups that were dropped.
    pub incomplete_snapshots_removed: u64,
    /// Packs deleted because no snapshot uses them.
    pub packs_deleted: u64,
    /// Packs rewritten without their dead chunks.
    pub packs_repacked: u64,
    /// Chunks dropped from the index.
    pub chunks_removed: u64,
    /// Stray files (crash leftovers, older than the grace period) deleted.
    pub stray_files_deleted: u64,
    /// Bytes freed in the repository.
    pub bytes_freed: u64,
}

impl ChunkStore {
    /// Writes a pack of chunks copied out of `olds`: new pack durable first, then the index
    /// moves to it in one transaction, then the old files go.
    fn write_repacked(
        &self,
        index: &mut Index,
        pb: PackBuilder,
        olds: Vec<OldPack>,
        scratch: &mut super::blob::Scratch,
        report: &mut GcReport,
    ) -> Result<()> {
        let (bytes, entries) = pb.finish(&self.codec, scratch)?;
        let name = new_pack_name();
        self.backend.put(&pack_key(&name), &bytes)?;
        let rows: Vec<i64> = olds.iter().map(|(row, _, _)| *row).collect();
        replace_packs(index, &rows, Some((&name, bytes.len() as u64, &entries)))?;
        let mut old_bytes = 0;
        for (_, key, size) in &olds {
            self.backend.delete(key)?;
            old_bytes += size;
        }
        report.bytes_freed += old_bytes.saturating_sub(bytes.len() as u64);
        Ok(())
    }

    /// Applies retention rules per backup name (see `prune::compute_prune`).
    pub fn prune(&self, keep: &KeepOptions, dry_run: bool) -> Result<PruneReport> {
        if !keep.keeps_something() {
            return Err(Error::InvalidArgument {
                field: "--keep-*",
                reason: "no rule keeps anything: pass at least one --keep-last/--keep-hourly/--keep-daily/\
                         --keep-weekly/--keep-monthly/--keep-yearly above 0"
                    .into(),
            });
        }
        let _lock = if dry_run {
            None
        } else {
            self.lock(LockMode::Exclusive, "prune", false)?
        };
        if !self.index_shared && !dry_run {
            self.rebuild_index()?;
        }
        let index = self.index()?;
        let snaps = index.snapshots()?;
        let mut groups: BTreeMap<&str, Vec<PruneItem>> = BTreeMap::new();
        for s in &snaps {
            groups.entry(&s.name).or_default().push(PruneItem {
                id: s.uid.clone(),
                time: s.time_us,
                complete: s.complete,
            });
        }
        let mut report = PruneReport {
            dry_run,
            decisions: Vec::new(),
            removed: 0,
        };
        for items in groups.values() {
            for (uid, mark) in compute_prune(items, keep) {
                let Some(s) = snaps.iter().find(|s| s.uid == uid) else {
                    continue;
                };
                if mark == PruneMark::Remove {
                    report.removed += 1;
                    if !dry_run {
                        // Row first: a crash in between leaves an object that gc sweeps.
                        index.delete_snapshot(&uid)?;
                        self.backend.delete(&snapshot_key(&uid))?;
                    }
                }
                report.decisions.push(PruneDecision {
                    id: s.id.clone(),
                    name: s.name.clone(),
                    time: s.time.clone(),
                    mark,
                });
            }
        }
        Ok(report)
    }

    /// Reclaims space: drops unfinished snapshots of crashed backups, deletes packs no snapshot
    /// uses, rewrites mostly-dead packs, and sweeps stray files older than `grace`.
    pub fn gc(&self, grace: Duration) -> Result<GcReport> {
        let _lock = self.lock(LockMode::Exclusive, "gc", false)?;
        // A per-machine index (S3 cache) may miss other machines' packs and snapshots: gc must
        // never judge liveness from it, so it rebuilds it from the repository first.
        if !self.index_shared {
            self.rebuild_index()?;
        }
        let mut index = self.index()?;
        let mut report = GcReport::default();
        // Exclusive lock held: no backup runs, so every pending row is a crash leftover.
        for s in index.snapshots()?.into_iter().filter(|s| !s.complete) {
            index.delete_snapshot(&s.uid)?;
            self.backend.delete(&snapshot_key(&s.uid))?;
            report.incomplete_snapshots_removed += 1;
        }
        // Mark: every chunk a complete snapshot references. An unreadable snapshot object stops
        // gc: deleting while unsure could lose data.
        let live = ChunkSet::new(&index, "live")?;
        for s in index.snapshots()? {
            let mut buf: Vec<ChunkId> = Vec::new();
            self.each_entry(&s.uid, |e| {
                buf.push(e.id);
                if buf.len() >= 65_536 {
                    live.insert_all(&index, &buf, |_| Ok(()))?;
                    buf.clear();
                }
                Ok(())
            })
            .and_then(|()| live.insert_all(&index, &buf, |_| Ok(())))
            .map_err(|e| {
                Error::corrupt(
                    format!("snapshot {}", s.id),
                    format!("gc stopped, nothing deleted: {e}"),
                )
            })?;
        }
        // Sweep packs.
        let mut scratch = self.codec.scratch()?;
        let target = self.config.params.pack_size as usize;
        let mut repack: Option<(PackBuilder, Vec<OldPack>)> = None;
        for (row, name, size) in index.packs()? {
            let all = index.pack_chunks(row)?;
            let mut is_live = Vec::with_capacity(all.len());
            for c in &all {
                is_live.push(live.contains(&index, &c.id)?);
            }
            let dead: u64 = all
                .iter()
                .zip(&is_live)
                .filter(|(_, l)| !**l)
                .map(|(c, _)| u64::from(c.len))
                .sum();
            let n_dead = is_live.iter().filter(|l| !**l).count() as u64;
            let chunks: Vec<_> = all
                .iter()
                .zip(&is_live)
                .filter(|(_, l)| **l)
                .map(|(c, _)| *c)
                .collect();
            let key = pack_key(&name);
            if chunks.is_empty() {
                replace_packs(&mut index, &[row], None)?;
                self.backend.delete(&key)?;
                report.packs_deleted += 1;
                report.chunks_removed += n_dead;
                report.bytes_freed += size;
            } else if size > 0 && dead as f64 / size as f64 >= REPACK_DEAD_FRACTION {
                let bytes = self.backend.get_range(&key, 0, size as usize)?;
                let (pb, olds) = repack.get_or_insert_with(|| (PackBuilder::new(target), Vec::new()));
                for c in &chunks {
                    let blob = bytes
                        .get(c.offset as usize..(c.offset + c.len) as usize)
                        .ok_or_else(|| Error::corrupt(&key, "chunk beyond the end of the pack"))?;
                    // Never carry damage into a new pack.
                    self.codec.open(blob, BlobKind::Chunk, &mut scratch, &|| {
                        format!("chunk {} in {key}", c.id)
                    })?;
                    pb.add(c.id, c.raw_len, blob);
                }
                olds.push((row, key, size));
                report.packs_repacked += 1;
                report.chunks_removed += n_dead;
                // Live chunks of several packs share one new pack, so packs stay full-sized.
                if let Some((pb, olds)) = repack.take_if(|(pb, _)| pb.len() >= target) {
                    self.write_repacked(&mut index, pb, olds, &mut scratch, &mut report)?;
                }
            }
        }
        if let Some((pb, olds)) = repack.take() {
            self.write_repacked(&mut index, pb, olds, &mut scratch, &mut report)?;
        }
        self.sweep_strays(&index, grace, &mut report)?;
        Ok(report)
    }

    fn sweep_strays(
        &self,
        index: &super::index::Index,
        grace: Duration,
        report: &mut GcReport,
    ) -> Result<()> {
        let cutoff = SystemTime::now()
            .checked_sub(grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let packs: HashSet<String> = index.packs()?.into_iter().map(|(_, n, _)| pack_key(&n)).collect();
        let snaps: HashSet<String> = index
            .snapshots()?
            .into_iter()
            .map(|s| snapshot_key(&s.uid))
            .collect();
        let mut strays = Vec::new();
        for o in self.backend.list("packs/")? {
            if !packs.contains(&o.key) && o.modified <= cutoff {
                strays.push(o);
            }
        }
        for o in self.backend.list("snapshots/")? {
            if !snaps.contains(&o.key) && o.modified <= cutoff {
                strays.push(o);
            }
        }
        for o in strays {
            self.backend.delete(&o.key)?;
            report.stray_files_deleted += 1;
            report.bytes_freed += o.size;
        }
        // Staging leftovers of crashed backups (local files, never shared).
        let staging = self.backend.staging_dir();
        if let Ok(rd) = std::fs::read_dir(&staging) {
            for ent in rd.flatten() {
                let old = ent
                    .metadata()
                    .and_then(|m| m.modified())
                    .map(|m| m <= cutoff)
                    .unwrap_or(false);
                let name = ent.file_name().to_string_lossy().into_owned();
                let ours = name.starts_with(".snap-") || name.starts_with(STAGED_PACK_PREFIX);
                if old && ours {
                    let _ = std::fs::remove_file(ent.path());
                    report.stray_files_deleted += 1;
                }
            }
        }
        Ok(())
    }
}

/// In one transaction: optionally record the `new` pack and move its chunks there, then drop the
/// old packs' remaining (dead) chunk rows and the old pack rows.
pub(crate) fn replace_packs(
    index: &mut Index,
    olds: &[i64],
    new: Option<(&str, u64, &[PackEntry])>,
) -> Result<()> {
    let tx = index
        .conn()
        .transaction()
        .map_err(Error::index("starting transaction"))?;
    if let Some((name, size, entries)) = new {
        tx.execute(
            "INSERT INTO packs (name, size, created) VALUES (?1, ?2, ?3)",
            params![name, size as i64, jiff::Timestamp::now().as_second()],
        )
        .map_err(Error::index("recording pack"))?;
        let new_row = tx.last_insert_rowid();
        for e in entries {
            tx.execute(
                "UPDATE chunks SET pack = ?1, offset = ?2 WHERE id = ?3",
                params![new_row, e.offset, &e.id.0[..]],
            )
            .map_err(Error::index("moving chunk"))?;
        }
    }
    for old in olds {
        tx.execute("DELETE FROM chunks WHERE pack = ?1", [old])
            .map_err(Error::index("dropping chunks"))?;
        tx.execute("DELETE FROM packs WHERE id = ?1", [old])
            .map_err(Error::index("dropping pack"))?;
    }
    tx.commit().map_err(Error::index("committing"))
}
