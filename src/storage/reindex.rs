//! `reindex`: rebuilds the SQLite index from the repository alone (pack trailers, or blob headers
//! when a trailer is damaged, snapshot files and damage marks). The packs and snapshot files are
//! the source of truth and the index a cache of them: this is how a new machine, a lost or stale
//! index, gets its index back. Primitives over a [`Repo`]; they never reach into `ChunkStore`.

use serde::Serialize;

use super::backend::{ObjectInfo, damage_key, pack_name_of, uid_of, unix_secs};
use super::blob::Scratch;
use super::error::{Error, Result};
use super::index::{Index, SnapshotTotals};
use super::pack::{PACK_FOOTER_LEN, PackEntry, check_header, footer_trailer_len, parse_trailer, scan_blobs};
use super::repo::Repo;
use super::snapfile::SnapReader;

/// What reindex found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReindexReport {
    /// Packs indexed.
    pub packs: u64,
    /// Chunks indexed.
    pub chunks: u64,
    /// Snapshots indexed.
    pub snapshots: u64,
    /// The repository generation the new index reflects.
    pub generation: u64,
    /// Objects that could not be read (skipped).
    pub problems: Vec<String>,
}

/// Rebuilds the index into a new file, then swaps it in. The caller holds the exclusive lock.
pub(crate) fn rebuild(repo: &Repo<'_>) -> Result<ReindexReport> {
    let build_dir = repo.index_dir.join("rebuild");
    let _ = std::fs::remove_dir_all(&build_dir);
    let mut idx = Index::open(&build_dir)?;
    let mut report = ReindexReport {
        generation: repo.generation()?,
        ..Default::default()
    };
    let mut scratch = repo.codec.scratch()?;
    for obj in repo.backend.list("packs/")? {
        let Some(name) = pack_name_of(&obj.key) else {
            continue;
        };
        let Some(entries) = pack_entries(repo, &obj, &mut scratch, &mut report.problems)? else {
            continue;
        };
        idx.add_pack(&name, obj.size, &entries, unix_secs(obj.modified))?;
        report.packs += 1;
        report.chunks += entries.len() as u64;
    }
    for obj in repo.backend.list("snapshots/")? {
        if uid_of(&obj.key).is_none() {
            continue;
        }
        match import_snapshot(repo, &idx, &obj.key) {
            Ok(()) => report.snapshots += 1,
            Err(e) => report.problems.push(format!("{}: {e}", obj.key)),
        }
    }
    import_damage_marks(repo, &idx)?;
    idx.set_generation(report.generation)?;
    drop(idx);
    // Swap: remove the old database (and its WAL), then move the new one in.
    for suffix in ["", "-wal", "-shm"] {
        let p = repo.index_dir.join(format!("index.sqlite{suffix}"));
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("removing old index", p.display(), e)),
        }
    }
    let src = build_dir.join("index.sqlite");
    let dst = repo.index_dir.join("index.sqlite");
    std::fs::rename(&src, &dst).map_err(|e| Error::io("installing rebuilt index", dst.display(), e))?;
    let _ = std::fs::remove_dir_all(&build_dir);
    super::backend::local::sync_dir(repo.index_dir)?;
    Ok(report)
}

/// The chunks a pack file holds: from its trailer, or from its blob headers when the trailer
/// is damaged (noted in `problems`); `None` when neither can be read.
pub(crate) fn pack_entries(
    repo: &Repo<'_>,
    obj: &ObjectInfo,
    scratch: &mut Scratch,
    problems: &mut Vec<String>,
) -> Result<Option<Vec<PackEntry>>> {
    match read_trailer(repo, &obj.key, obj.size, scratch) {
        Ok(e) => Ok(Some(e)),
        Err(e) => {
            problems.push(format!("{}: {e}; scanning blob headers instead", obj.key));
            let bytes = repo.backend.get_range(&obj.key, 0, obj.size as usize)?;
            if check_header(&bytes, &obj.key).is_err() {
                return Ok(None);
            }
            Ok(Some(scan_blobs(&bytes)))
        }
    }
}

/// Reads a snapshot file to its end record and records it as complete in `idx`.
pub(crate) fn import_snapshot(repo: &Repo<'_>, idx: &Index, key: &str) -> Result<()> {
    let mut r = SnapReader::open(repo.backend.open_reader(key)?, repo.codec, key.to_string())?;
    let end = r.for_each(|_| Ok(()))?;
    idx.complete_snapshot(
        &r.meta,
        &SnapshotTotals {
            size: end.size,
            chunks: end.entries,
            ..Default::default()
        },
    )
}

/// Makes the index's damage marks those the repository holds under `damaged/`.
pub(crate) fn import_damage_marks(repo: &Repo<'_>, idx: &Index) -> Result<()> {
    let mut on_storage = std::collections::HashSet::new();
    for obj in repo.backend.list("damaged/")? {
        let Some(uid) = uid_of(&obj.key) else {
            continue;
        };
        let reason = repo
            .backend
            .get(&damage_key(uid))?
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .unwrap_or_default();
        idx.set_damaged(uid, Some(&reason))?;
        on_storage.insert(uid.to_string());
    }
    for s in idx.snapshots()? {
        if s.damaged && !on_storage.contains(&s.uid) {
            idx.set_damaged(&s.uid, None)?;
        }
    }
    Ok(())
}

/// A pack's chunk list from its trailer.
pub(crate) fn read_trailer(repo: &Repo<'_>, key: &str, size: u64, s: &mut Scratch) -> Result<Vec<PackEntry>> {
    if size < (PACK_FOOTER_LEN + 16) as u64 {
        return Err(Error::corrupt(key, "too short to be a pack"));
    }
    let footer = repo
        .backend
        .get_range(key, size - PACK_FOOTER_LEN as u64, PACK_FOOTER_LEN)?;
    let tl = footer_trailer_len(&footer, key)? as u64;
    if tl + PACK_FOOTER_LEN as u64 > size {
        return Err(Error::corrupt(key, "trailer longer than the pack"));
    }
    let blob = repo
        .backend
        .get_range(key, size - PACK_FOOTER_LEN as u64 - tl, tl as usize)?;
    parse_trailer(repo.codec, &blob, s, key)
}
