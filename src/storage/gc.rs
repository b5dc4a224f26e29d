//! Prune (drop snapshots by retention rules) and GC (reclaim space): primitives over a [`Repo`]
//! and an index that `sync::current_index` proved current, run under the exclusive lock. GC plans
//! from the snapshot files on storage (never from the index alone), then acts: references are
//! dropped in a transaction before a file is deleted, so a crash can leave a stray file (swept
//! on the next run after the grace period) but never a row whose bytes are gone. A pack file is
//! deleted only after its own trailer shows that every chunk a snapshot file needs is also
//! stored elsewhere, whatever the index says.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::backend::{ObjectInfo, damage_key, pack_key, pack_name_of, snapshot_key, uid_of};
use super::blob::{BlobKind, ChunkId, Scratch};
use super::chunkset::ChunkSet;
use super::error::{Error, Result};
use super::index::{Index, SnapshotFilter};
use super::pack::{PackBuilder, STAGED_PACK_PREFIX, new_pack_name};
use super::prune::{KeepOptions, PruneItem, PruneMark, compute_prune};
use super::reindex::pack_entries;
use super::repo::{Change, Repo};

/// A pack being rewritten: index row, key, size.
pub(crate) type OldPack = (i64, String, u64);

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
    /// Pack files kept although the index calls them unused, because they hold chunks that a
    /// snapshot file needs and no other pack stores (the index was wrong), or cannot be read.
    pub packs_kept: Vec<String>,
}

/// Stores a pack of chunks copied out of the packs `olds` and moves the index to it: new pack
/// durable first, then one transaction. Returns the new pack's key and size; the caller (who
/// bumped the generation before) deletes the old files.
pub(crate) fn store_repacked(
    repo: &Repo<'_>,
    index: &mut Index,
    pb: PackBuilder,
    olds: &[OldPack],
    scratch: &mut Scratch,
) -> Result<(String, u64)> {
    let (bytes, entries) = pb.finish(repo.codec, scratch)?;
    let name = new_pack_name();
    let key = pack_key(&name);
    repo.backend.put(&key, &bytes)?;
    let rows: Vec<i64> = olds.iter().map(|(row, _, _)| *row).collect();
    index.replace_packs(&rows, Some((&name, bytes.len() as u64, &entries)))?;
    Ok((key, bytes.len() as u64))
}

/// `store_repacked`, then deletes each old file that holds nothing else needed. Returns the
/// bytes freed.
fn write_repacked(
    repo: &Repo<'_>,
    index: &mut Index,
    pb: PackBuilder,
    olds: Vec<OldPack>,
    sweep: &mut Sweep<'_>,
) -> Result<u64> {
    sweep.change.before(index)?;
    let (key, size) = store_repacked(repo, index, pb, &olds, &mut sweep.scratch)?;
    sweep.present.insert(key);
    let mut old_bytes = 0;
    for (_, key, old_size) in &olds {
        if sweep.delete_pack(index, key, *old_size)? {
            old_bytes += old_size;
        }
    }
    Ok(old_bytes.saturating_sub(size))
}

/// Applies retention rules per backup name (see `prune::compute_prune`) to the snapshots
/// `filter` selects; no other snapshot is looked at.
pub(crate) fn prune(
    repo: &Repo<'_>,
    index: &Index,
    keep: &KeepOptions,
    filter: &SnapshotFilter,
    dry_run: bool,
) -> Result<PruneReport> {
    let snaps = index.snapshots()?;
    let mut groups: BTreeMap<&str, Vec<PruneItem>> = BTreeMap::new();
    for s in snaps.iter().filter(|s| filter.matches(s)) {
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
    let mut change = Change::new(repo);
    for items in groups.values() {
        for (uid, mark) in compute_prune(items, keep) {
            let Some(s) = snaps.iter().find(|s| s.uid == uid) else {
                continue;
            };
            if mark == PruneMark::Remove {
                report.removed += 1;
                if !dry_run {
                    remove_snapshot(repo, index, &mut change, &uid)?;
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
    change.finish(index)?;
    Ok(report)
}

/// Removes the given snapshots (full ids); ids the index does not know are left out of the
/// report.
pub(crate) fn forget(repo: &Repo<'_>, index: &Index, uids: &[String]) -> Result<PruneReport> {
    let snaps = index.snapshots()?;
    let mut report = PruneReport {
        dry_run: false,
        decisions: Vec::new(),
        removed: 0,
    };
    let mut change = Change::new(repo);
    for s in snaps.iter().filter(|s| uids.contains(&s.uid)) {
        remove_snapshot(repo, index, &mut change, &s.uid)?;
        report.removed += 1;
        report.decisions.push(PruneDecision {
            id: s.id.clone(),
            name: s.name.clone(),
            time: s.time.clone(),
            mark: PruneMark::Remove,
        });
    }
    change.finish(index)?;
    Ok(report)
}

/// Deletes one snapshot: file first, so a crash in between leaves a row without a file, which
/// makes the index stale and the next gc rebuild it (the removal stands).
fn remove_snapshot(repo: &Repo<'_>, index: &Index, change: &mut Change<'_, '_>, uid: &str) -> Result<()> {
    change.before(index)?;
    repo.backend.delete(&snapshot_key(uid))?;
    repo.backend.delete(&damage_key(uid))?;
    index.delete_snapshot(uid)
}

/// What deleting pack files needs: the live set, the packs on storage, the generation bump.
pub(crate) struct Sweep<'r> {
    repo: &'r Repo<'r>,
    live: ChunkSet,
    /// Keys of the pack files on storage (and of those written since the listing).
    present: HashSet<String>,
    change: Change<'r, 'r>,
    scratch: Scratch,
    kept: Vec<String>,
}

impl<'r> Sweep<'r> {
    /// Builds the live set from every snapshot file on storage. An unreadable snapshot file
    /// stops gc: deleting while unsure could lose data.
    fn new(repo: &'r Repo<'r>, index: &Index, packs: &[ObjectInfo]) -> Result<Self> {
        let live = ChunkSet::new(index, "live")?;
        for obj in repo.backend.list("snapshots/")? {
            if uid_of(&obj.key).is_none() {
                continue;
            }
            let mut buf: Vec<ChunkId> = Vec::new();
            repo.each_entry(&obj.key, |e| {
                buf.push(e.id);
                if buf.len() >= 65_536 {
                    live.insert_all(index, &buf, |_| Ok(()))?;
                    buf.clear();
                }
                Ok(())
            })
            .and_then(|()| live.insert_all(index, &buf, |_| Ok(())))
            .map_err(|e| {
                Error::corrupt(
                    format!("snapshot file {}", obj.key),
                    format!("gc stopped, nothing deleted: {e}"),
                )
            })?;
        }
        Ok(Sweep {
            repo,
            live,
            present: packs.iter().map(|o| o.key.clone()).collect(),
            change: Change::new(repo),
            scratch: repo.codec.scratch()?,
            kept: Vec::new(),
        })
    }

    /// Whether a pack file may go: no chunk its own chunk list shows is needed by a snapshot
    /// file and missing from every other pack on storage (whatever the index says about it).
    /// A pack that must stay is reported.
    fn may_delete(&mut self, index: &Index, key: &str, size: u64) -> Result<bool> {
        let obj = ObjectInfo {
            key: key.to_string(),
            size,
            modified: SystemTime::UNIX_EPOCH,
        };
        let mut problems = Vec::new();
        let keep_because = match pack_entries(self.repo, &obj, &mut self.scratch, &mut problems) {
            Ok(Some(entries)) => self.needed_chunk(index, key, &entries)?,
            Ok(None) => Some("its chunks cannot be read".to_string()),
            Err(e) => Some(format!("its chunks cannot be read: {e}")),
        };
        match keep_because {
            None => Ok(true),
            Some(why) => {
                tracing::warn!(pack = %key, reason = %why, "gc keeps a pack file the index calls unused");
                self.kept.push(format!("{key}: {why}"));
                Ok(false)
            }
        }
    }

    /// Deletes a pack file (after its index rows are gone).
    fn delete(&mut self, index: &Index, key: &str) -> Result<()> {
        self.change.before(index)?;
        self.repo.backend.delete(key)?;
        self.present.remove(key);
        Ok(())
    }

    /// `may_delete`, then `delete`.
    fn delete_pack(&mut self, index: &Index, key: &str, size: u64) -> Result<bool> {
        if !self.may_delete(index, key, size)? {
            return Ok(false);
        }
        self.delete(index, key)?;
        Ok(true)
    }

    fn needed_chunk(
        &self,
        index: &Index,
        key: &str,
        entries: &[super::pack::PackEntry],
    ) -> Result<Option<String>> {
        for e in entries {
            if !self.live.contains(index, &e.id)? {
                continue;
            }
            match index.location(&e.id)? {
                Some(loc) if pack_key(&loc.pack) != key && self.present.contains(&pack_key(&loc.pack)) => {}
                _ => {
                    return Ok(Some(format!(
                        "it holds chunk {} that a snapshot file needs and no other pack stores",
                        e.id
                    )));
                }
            }
        }
        Ok(None)
    }
}

/// Reclaims space: drops unfinished snapshot rows of crashed backups, deletes packs no snapshot
/// file needs, rewrites mostly-dead packs, and sweeps stray files older than `grace`.
pub(crate) fn gc(repo: &Repo<'_>, index: &mut Index, grace: Duration) -> Result<GcReport> {
    let mut report = GcReport::default();
    // The index was proved current under the exclusive lock: a pending row is a crashed backup
    // whose snapshot file was never written (a file would have made the index stale).
    for s in index.snapshots()?.into_iter().filter(|s| !s.complete) {
        index.delete_snapshot(&s.uid)?;
        report.incomplete_snapshots_removed += 1;
    }
    let listed = repo.backend.list("packs/")?;
    let mut sweep = Sweep::new(repo, index, &listed)?;
    let target = repo.pack_size as usize;
    let mut repack: Option<(PackBuilder, Vec<OldPack>)> = None;
    for (row, name, size) in index.packs()? {
        let all = index.pack_chunks(row)?;
        let mut is_live = Vec::with_capacity(all.len());
        for c in &all {
            is_live.push(sweep.live.contains(index, &c.id)?);
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
            let on_storage = sweep.present.contains(&key);
            if on_storage && !sweep.may_delete(index, &key, size)? {
                continue;
            }
            // Rows first: a crash leaves a stray file, never a row without its file.
            sweep.change.before(index)?;
            index.replace_packs(&[row], None)?;
            if on_storage {
                sweep.delete(index, &key)?;
            }
            report.packs_deleted += 1;
            report.chunks_removed += n_dead;
            report.bytes_freed += size;
        } else if size > 0 && dead as f64 / size as f64 >= REPACK_DEAD_FRACTION {
            let bytes = repo.backend.get_range(&key, 0, size as usize)?;
            let (pb, olds) = repack.get_or_insert_with(|| (PackBuilder::new(target), Vec::new()));
            for c in &chunks {
                let blob = bytes
                    .get(c.offset as usize..(c.offset + c.len) as usize)
                    .ok_or_else(|| Error::corrupt(&key, "chunk beyond the end of the pack"))?;
                // Never carry damage into a new pack.
                repo.codec.open(blob, BlobKind::Chunk, &mut sweep.scratch, &|| {
                    format!("chunk {} in {key}", c.id)
                })?;
                pb.add(c.id, c.raw_len, blob);
            }
            olds.push((row, key, size));
            report.packs_repacked += 1;
            report.chunks_removed += n_dead;
            // Live chunks of several packs share one new pack, so packs stay full-sized.
            if let Some((pb, olds)) = repack.take_if(|(pb, _)| pb.len() >= target) {
                report.bytes_freed += write_repacked(repo, index, pb, olds, &mut sweep)?;
            }
        }
    }
    if let Some((pb, olds)) = repack.take() {
        report.bytes_freed += write_repacked(repo, index, pb, olds, &mut sweep)?;
    }
    sweep_strays(repo, index, &listed, grace, &mut sweep, &mut report)?;
    report.packs_kept = std::mem::take(&mut sweep.kept);
    sweep.change.finish(index)?;
    Ok(report)
}

/// Sweeps what no index row names and is older than `grace`: pack files (each only if it holds
/// nothing a snapshot file needs), temp files, damage marks of removed snapshots and staging
/// leftovers. Snapshot files are never swept: the index was proved to list every one.
fn sweep_strays(
    repo: &Repo<'_>,
    index: &Index,
    listed: &[ObjectInfo],
    grace: Duration,
    sweep: &mut Sweep<'_>,
    report: &mut GcReport,
) -> Result<()> {
    let cutoff = SystemTime::now()
        .checked_sub(grace)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let packs: HashSet<String> = index.packs()?.into_iter().map(|(_, n, _)| pack_key(&n)).collect();
    let snaps: HashSet<String> = index.snapshots()?.into_iter().map(|s| s.uid).collect();
    for o in listed {
        if packs.contains(&o.key) || o.modified > cutoff || !sweep.present.contains(&o.key) {
            continue;
        }
        let deleted = if pack_name_of(&o.key).is_some() {
            sweep.delete_pack(index, &o.key, o.size)?
        } else {
            sweep.change.before(index)?;
            repo.backend.delete(&o.key)?;
            true
        };
        if deleted {
            report.stray_files_deleted += 1;
            report.bytes_freed += o.size;
        }
    }
    for o in repo.backend.list("snapshots/")? {
        if uid_of(&o.key).is_none() && o.modified <= cutoff {
            repo.backend.delete(&o.key)?;
            report.stray_files_deleted += 1;
            report.bytes_freed += o.size;
        }
    }
    for o in repo.backend.list("damaged/")? {
        if uid_of(&o.key).is_none_or(|uid| !snaps.contains(uid)) {
            sweep.change.before(index)?;
            repo.backend.delete(&o.key)?;
            report.stray_files_deleted += 1;
        }
    }
    // Staging leftovers of crashed backups (local files, never shared).
    let staging = repo.backend.staging_dir();
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
