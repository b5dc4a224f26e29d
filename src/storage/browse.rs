//! Looking into directory snapshots without restoring them: `ls` (entries), `dump` (one file's
//! bytes) and `diff` (added, removed and changed paths between two snapshots). Each streams the
//! snapshot's tar archive once, as a restore does.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use serde::Serialize;

use super::backup::NoProgress;
use super::error::{Error, Param, Result};
use super::index::{SnapshotInfo, kind_of};
use super::snapfile::SourceKind;
use super::store::ChunkStore;
use super::tarstream::read_tar;

/// One entry of a directory snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TreeEntry {
    /// Path inside the snapshot (relative, no trailing slash).
    pub path: String,
    /// `file`, `dir`, `symlink`, `hardlink` or `other`.
    pub kind: &'static str,
    /// Bytes of a file (its full size, holes included).
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, Unix seconds.
    pub mtime: u64,
    /// Target of a symlink or hard link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// A path whose entry differs between two snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChangedPath {
    /// Path inside the snapshots.
    pub path: String,
    /// Its size in the first snapshot.
    pub size_before: u64,
    /// Its size in the second.
    pub size_after: u64,
    /// What differs: `kind`, `content`, `mode`, `mtime`, `link`.
    pub what: Vec<&'static str>,
}

/// What changed from one directory snapshot to another.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TreeDiff {
    /// Paths only in the second snapshot.
    pub added: Vec<TreeEntry>,
    /// Paths only in the first.
    pub removed: Vec<TreeEntry>,
    /// Paths in both that differ.
    pub changed: Vec<ChangedPath>,
    /// Bytes of the added files.
    pub added_bytes: u64,
    /// Bytes of the removed files.
    pub removed_bytes: u64,
    /// Bytes of the changed files in the second snapshot.
    pub changed_bytes: u64,
}

/// Paths as `ls`, `dump` and `diff` take them: no leading `./` or `/`, no trailing `/`.
fn normalize(p: &str) -> &str {
    let p = p.trim_start_matches("./").trim_start_matches('/');
    p.trim_end_matches('/')
}

fn entry_of(e: &tar::Entry<'_, impl Read>) -> std::io::Result<TreeEntry> {
    let h = e.header();
    let t = h.entry_type();
    let kind = match t {
        tar::EntryType::Regular | tar::EntryType::GNUSparse => "file",
        tar::EntryType::Directory => "dir",
        tar::EntryType::Symlink => "symlink",
        tar::EntryType::Link => "hardlink",
        _ => "other",
    };
    let size = match h.as_gnu() {
        Some(g) if t.is_gnu_sparse() => g.real_size()?,
        _ => h.size()?,
    };
    Ok(TreeEntry {
        path: normalize(&e.path()?.to_string_lossy()).to_string(),
        kind,
        size: if kind == "file" { size } else { 0 },
        mode: h.mode()? & 0o7777,
        mtime: h.mtime()?,
        link: e.link_name()?.map(|l| l.to_string_lossy().into_owned()),
    })
}

impl ChunkStore {
    /// Streams a directory snapshot's entries into `visit` (with each entry's data).
    fn walk<T: Send>(
        &self,
        snap: &SnapshotInfo,
        init: T,
        mut visit: impl FnMut(&mut T, TreeEntry, &mut dyn Read) -> std::io::Result<()> + Send,
    ) -> Result<T> {
        if kind_of(snap) != SourceKind::Dir {
            return Err(Error::InvalidArgument {
                param: Param::Snapshot,
                reason: format!(
                    "{} is a {} snapshot; only directory snapshots have paths",
                    snap.id, snap.kind
                ),
            });
        }
        let read = move |mut a: super::tarstream::TarReader| -> std::io::Result<T> {
            let mut acc = init;
            for e in a.entries()? {
                let mut e = e?;
                let entry = entry_of(&e)?;
                if !entry.path.is_empty() {
                    visit(&mut acc, entry, &mut e)?;
                }
            }
            std::io::copy(&mut a.into_inner(), &mut std::io::sink())?;
            Ok(acc)
        };
        let (_, acc) = read_tar(self, snap, &NoProgress, ("reading snapshot", &snap.id), read)?;
        Ok(acc)
    }

    /// The entries of a directory snapshot, in stream (path) order; with `under`, only that path
    /// and what is below it.
    pub fn ls(&self, snap: &SnapshotInfo, under: Option<&str>) -> Result<Vec<TreeEntry>> {
        let under = under.map(normalize).filter(|u| !u.is_empty());
        let inside = |p: &str| match under {
            None => true,
            Some(u) => p == u || p.strip_prefix(u).is_some_and(|r| r.starts_with('/')),
        };
        let list = self.walk(snap, Vec::new(), |list, e, _| {
            if inside(&e.path) {
                list.push(e);
            }
            Ok(())
        })?;
        if let Some(u) = under
            && list.is_empty()
        {
            return Err(not_in(snap, u));
        }
        Ok(list)
    }

    /// Writes the bytes of the file `path` of a directory snapshot to `w`; returns their count.
    pub fn dump(&self, snap: &SnapshotInfo, path: &str, w: &mut (dyn Write + Send)) -> Result<u64> {
        let want = normalize(path);
        let found = self.walk(snap, None, |found, e, data| {
            if found.is_none() && e.path == want && e.kind == "file" {
                *found = Some(std::io::copy(data, w)?);
            }
            Ok(())
        })?;
        w.flush().map_err(|e| Error::io("writing", "output", e))?;
        found.ok_or_else(|| not_in(snap, want))
    }

    /// What changed from snapshot `a` to snapshot `b` (both directory snapshots).
    pub fn diff(&self, a: &SnapshotInfo, b: &SnapshotInfo) -> Result<TreeDiff> {
        let before = self.hashed(a)?;
        let mut after = self.hashed(b)?;
        let mut d = TreeDiff::default();
        for (path, (old, old_hash)) in before {
            let Some((new, new_hash)) = after.remove(&path) else {
                d.removed_bytes += old.size;
                d.removed.push(old);
                continue;
            };
            let mut what = Vec::new();
            if old.kind != new.kind {
                what.push("kind");
            }
            if old.size != new.size || old_hash != new_hash {
                what.push("content");
            }
            if old.mode != new.mode {
                what.push("mode");
            }
            if old.mtime != new.mtime {
                what.push("mtime");
            }
            if old.link != new.link {
                what.push("link");
            }
            if !what.is_empty() {
                d.changed_bytes += new.size;
                d.changed.push(ChangedPath {
                    path,
                    size_before: old.size,
                    size_after: new.size,
                    what,
                });
            }
        }
        for (new, _) in after.into_values() {
            d.added_bytes += new.size;
            d.added.push(new);
        }
        Ok(d)
    }

    /// Every entry of a directory snapshot by path, with a hash of its data.
    fn hashed(&self, snap: &SnapshotInfo) -> Result<BTreeMap<String, (TreeEntry, blake3::Hash)>> {
        self.walk(snap, BTreeMap::new(), |map, e, data| {
            let mut h = blake3::Hasher::new();
            std::io::copy(data, &mut h)?;
            map.insert(e.path.clone(), (e, h.finalize()));
            Ok(())
        })
    }
}

fn not_in(snap: &SnapshotInfo, path: &str) -> Error {
    Error::InvalidArgument {
        param: Param::SnapshotPath,
        reason: format!("snapshot {} has no file or directory {path:?}", snap.id),
    }
}
