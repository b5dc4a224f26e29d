//! `reindex`: rebuilds the SQLite index from the repository alone (pack trailers, or blob headers
//! when a trailer is damaged, and snapshot objects). With S3 the bucket is the source of truth and
//! this is how a new machine, or a lost cache, gets its index back.

use serde::Serialize;

use super::backend::pack_key;
use super::error::{Error, Result};
use super::index::{Index, SnapshotTotals};
use super::lock::LockMode;
use super::pack::{PACK_FOOTER_LEN, check_header, footer_trailer_len, parse_trailer, scan_blobs};
use super::snapfile::SnapReader;
use super::store::ChunkStore;

/// What reindex found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReindexReport {
    /// Packs indexed.
    pub packs: u64,
    /// Chunks indexed.
    pub chunks: u64,
    /// Snapshots indexed.
    pub snapshots: u64,
    /// Objects that could not be read (skipped).
    pub problems: Vec<String>,
}

impl ChunkStore {
    /// Rebuilds the index into a new file, then swaps it in.
    pub fn reindex(&self) -> Result<ReindexReport> {
        let _lock = self.lock(LockMode::Exclusive, "reindex", false)?;
        self.rebuild_index()
    }

    /// `reindex` for a caller that already holds the exclusive lock.
    pub(crate) fn rebuild_index(&self) -> Result<ReindexReport> {
        let build_dir = self.index_dir.join("rebuild");
        let _ = std::fs::remove_dir_all(&build_dir);
        let mut idx = Index::open(&build_dir)?;
        let mut report = ReindexReport::default();
        let mut scratch = self.codec.scratch()?;
        for obj in self.backend.list("packs/")? {
            let Some(name) = pack_name_of(&obj.key) else {
                continue;
            };
            let entries = match self.read_trailer(&obj.key, obj.size, &mut scratch) {
                Ok(e) => e,
                Err(e) => {
                    report
                        .problems
                        .push(format!("{}: {e}; scanning blob headers instead", obj.key));
                    let bytes = self.backend.get_range(&obj.key, 0, obj.size as usize)?;
                    if check_header(&bytes, &obj.key).is_err() {
                        continue;
                    }
                    scan_blobs(&bytes)
                }
            };
            idx.add_pack(&name, obj.size, &entries, unix_secs(obj.modified))?;
            report.packs += 1;
            report.chunks += entries.len() as u64;
        }
        for obj in self.backend.list("snapshots/")? {
            if obj.key.rsplit('/').next().is_some_and(|n| n.starts_with('.')) {
                continue;
            }
            match self.import_snapshot(&idx, &obj.key) {
                Ok(()) => report.snapshots += 1,
                Err(e) => report.problems.push(format!("{}: {e}", obj.key)),
            }
        }
        drop(idx);
        // Swap: remove the old database (and its WAL), then move the new one in.
        for suffix in ["", "-wal", "-shm"] {
            let p = self.index_dir.join(format!("index.sqlite{suffix}"));
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("removing old index", p.display(), e)),
            }
        }
        let src = build_dir.join("index.sqlite");
        let dst = self.index_dir.join("index.sqlite");
        std::fs::rename(&src, &dst).map_err(|e| Error::io("installing rebuilt index", dst.display(), e))?;
        let _ = std::fs::remove_dir_all(&build_dir);
        super::backend::local::sync_dir(&self.index_dir)?;
        Ok(report)
    }

    /// Reads a snapshot object to its end record and records it as complete in `idx`.
    pub(crate) fn import_snapshot(&self, idx: &Index, key: &str) -> Result<()> {
        let mut r = SnapReader::open(self.backend.open_reader(key)?, &self.codec, key.to_string())?;
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

    pub(crate) fn read_trailer(
        &self,
        key: &str,
        size: u64,
        s: &mut super::blob::Scratch,
    ) -> Result<Vec<super::pack::PackEntry>> {
        if size < (PACK_FOOTER_LEN + 16) as u64 {
            return Err(Error::corrupt(key, "too short to be a pack"));
        }
        let footer = self
            .backend
            .get_range(key, size - PACK_FOOTER_LEN as u64, PACK_FOOTER_LEN)?;
        let tl = footer_trailer_len(&footer, key)? as u64;
        if tl + PACK_FOOTER_LEN as u64 > size {
            return Err(Error::corrupt(key, "trailer longer than the pack"));
        }
        let blob = self
            .backend
            .get_range(key, size - PACK_FOOTER_LEN as u64 - tl, tl as usize)?;
        parse_trailer(&self.codec, &blob, s, key)
    }
}

/// The pack name of a listed key, or `None` for temp files and foreign keys.
pub(crate) fn pack_name_of(key: &str) -> Option<String> {
    let name = key.rsplit('/').next()?;
    (!name.starts_with('.') && key == pack_key(name)).then(|| name.to_string())
}

/// A modification time as Unix seconds.
pub(crate) fn unix_secs(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
