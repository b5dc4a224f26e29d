//! Keeping the index in step with the repository. The packs and snapshot files are the source of
//! truth and the index is a cache of them, so nothing that deletes may trust an index it has not
//! proved current: [`current_index`] compares generations and snapshot sets, and rebuilds a
//! stale index (or refuses) before gc, prune or repair look at it. [`sync_index`] brings a
//! per-machine index (the S3 cache) up to date without a lock when a repository is opened.
//!
//! Dependencies point one way: `store` → `sync` → {`gc`, `reindex`} primitives over a [`Repo`].

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::backend::{pack_name_of, snapshot_key, uid_of, unix_secs};
use super::error::{Error, Result};
use super::gc::{self, GcReport, PruneReport};
use super::index::{Index, SnapshotFilter};
use super::prune::KeepOptions;
use super::reindex::{self, import_damage_marks, import_snapshot, read_trailer};
use super::repo::Repo;

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

/// Why the index does not describe the repository, or `None` when it does. Run under the
/// exclusive lock: no backup is running, so every snapshot file must be a complete row.
pub(crate) fn stale_reason(repo: &Repo<'_>, index: &Index) -> Result<Option<String>> {
    let (have, want) = (index.generation()?, repo.generation()?);
    if have != want {
        return Ok(Some(format!(
            "the index reflects repository generation {have}, the repository is at {want}"
        )));
    }
    let rows = index.snapshots()?;
    let complete: HashSet<&str> = rows
        .iter()
        .filter(|s| s.complete)
        .map(|s| s.uid.as_str())
        .collect();
    let mut files = HashSet::new();
    for obj in repo.backend.list("snapshots/")? {
        let Some(uid) = uid_of(&obj.key) else {
            continue;
        };
        if !complete.contains(uid) {
            return Ok(Some(format!("snapshot file {} is not in the index", obj.key)));
        }
        files.insert(uid.to_string());
    }
    if let Some(s) = rows.iter().find(|s| s.complete && !files.contains(&s.uid)) {
        return Ok(Some(format!(
            "the index lists snapshot {} whose file {} is not in the repository",
            s.id,
            snapshot_key(&s.uid)
        )));
    }
    Ok(None)
}

/// An index proved to describe the repository, for a caller holding the exclusive lock. A
/// per-machine index is always rebuilt (other machines change the repository); a shared one is
/// rebuilt when [`stale_reason`] finds it behind. When even a rebuilt index does not match (a
/// snapshot file cannot be read), nothing may be deleted: the error says why.
pub(crate) fn current_index(repo: &Repo<'_>, shared: bool, op: &'static str) -> Result<Index> {
    if shared {
        let index = Index::open(repo.index_dir)?;
        match stale_reason(repo, &index)? {
            None => return Ok(index),
            Some(why) => tracing::warn!(
                reason = %why,
                "the index does not describe the repository: rebuilding it from the packs and \
                 snapshot files before {op} deletes anything"
            ),
        }
    }
    let report = reindex::rebuild(repo)?;
    let index = Index::open(repo.index_dir)?;
    match stale_reason(repo, &index)? {
        None => Ok(index),
        Some(why) => Err(Error::IndexStale {
            op,
            reason: why,
            problems: report.problems.join("; "),
        }),
    }
}

/// `gc` on a proved-current index.
pub(crate) fn gc(repo: &Repo<'_>, shared: bool, grace: Duration) -> Result<GcReport> {
    let mut index = current_index(repo, shared, "gc")?;
    gc::gc(repo, &mut index, grace)
}

/// `prune` on a proved-current index (a dry run only reads the index as it is).
pub(crate) fn prune(
    repo: &Repo<'_>,
    shared: bool,
    keep: &KeepOptions,
    filter: &SnapshotFilter,
    dry_run: bool,
) -> Result<PruneReport> {
    let index = if dry_run {
        Index::open(repo.index_dir)?
    } else {
        current_index(repo, shared, "prune")?
    };
    gc::prune(repo, &index, keep, filter, dry_run)
}

/// Removes the given snapshots (full ids) on an index proved current.
pub(crate) fn forget(repo: &Repo<'_>, shared: bool, uids: &[String]) -> Result<PruneReport> {
    let index = current_index(repo, shared, "forget")?;
    gc::forget(repo, &index, uids)
}

/// Brings a per-machine index up to date with the repository's packs, snapshot files and damage
/// marks: what other machines added is imported, what their prune/gc removed is forgotten.
pub(crate) fn sync_index(repo: &Repo<'_>) -> Result<SyncReport> {
    let mut idx = Index::open(repo.index_dir)?;
    let mut report = SyncReport::default();
    let mut scratch = repo.codec.scratch()?;
    let known: HashMap<String, i64> = idx
        .packs()?
        .into_iter()
        .map(|(row, name, _)| (name, row))
        .collect();
    let mut present = HashSet::new();
    for obj in repo.backend.list("packs/")? {
        let Some(name) = pack_name_of(&obj.key) else {
            continue;
        };
        present.insert(name.clone());
        if known.contains_key(&name) {
            continue;
        }
        match read_trailer(repo, &obj.key, obj.size, &mut scratch) {
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
            idx.replace_packs(&[*row], None)?;
            report.packs_removed += 1;
        }
    }
    let rows = idx.snapshots()?;
    let known: HashSet<String> = rows.iter().map(|s| snapshot_key(&s.uid)).collect();
    let mut present = HashSet::new();
    for obj in repo.backend.list("snapshots/")? {
        if uid_of(&obj.key).is_none() {
            continue;
        }
        present.insert(obj.key.clone());
        if known.contains(&obj.key) {
            continue;
        }
        match import_snapshot(repo, &idx, &obj.key) {
            Ok(()) => report.snapshots_added += 1,
            Err(e) => tracing::warn!(snapshot = %obj.key, error = %e, "cannot read snapshot file"),
        }
    }
    // Pending rows are backups running on this machine: their files do not exist yet.
    for s in rows
        .iter()
        .filter(|s| s.complete && !present.contains(&snapshot_key(&s.uid)))
    {
        idx.delete_snapshot(&s.uid)?;
        report.snapshots_removed += 1;
    }
    import_damage_marks(repo, &idx)?;
    Ok(report)
}
