//! Directories as deterministic tar streams: entries sorted by path, metadata from the file
//! system (mode, mtime, owner ids), so an unchanged tree gives the same bytes and dedups fully.
//! Restore unpacks with the `tar` crate, which refuses paths that escape the target.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::backup::{Progress, SnapshotSummary};
use super::error::{Error, Result};
use super::index::SnapshotInfo;
use super::restore::RestoreSummary;
use super::snapfile::SourceKind;
use super::store::ChunkStore;

fn sorted_entries(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    v.sort();
    Ok(v)
}

fn write_tree(b: &mut tar::Builder<impl Write>, root: &Path, rel: &Path) -> std::io::Result<()> {
    for path in sorted_entries(&root.join(rel))? {
        let name = rel.join(path.file_name().unwrap_or_default());
        let meta = fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            b.append_dir(&name, &path)?;
            write_tree(b, root, &name)?;
        } else if meta.is_file() || meta.file_type().is_symlink() {
            b.append_path_with_name(&path, &name)?;
        }
        // Sockets, fifos and devices are skipped: they carry no data.
    }
    Ok(())
}

/// Streams `dir` as a tar archive into `w`.
pub fn write_tar(dir: &Path, w: impl Write) -> std::io::Result<()> {
    let mut b = tar::Builder::new(w);
    b.mode(tar::HeaderMode::Complete);
    b.follow_symlinks(false);
    write_tree(&mut b, dir, Path::new(""))?;
    b.into_inner()?.flush()
}

impl ChunkStore {
    /// Backs up a directory tree as a deterministic tar stream.
    pub fn backup_dir(
        &self,
        dir: &Path,
        name: &str,
        tags: &BTreeMap<String, String>,
        progress: &dyn Progress,
    ) -> Result<SnapshotSummary> {
        let (reader, writer) =
            std::io::pipe().map_err(|e| Error::io("creating pipe for", dir.display(), e))?;
        std::thread::scope(|s| {
            let producer = s.spawn(move || write_tar(dir, writer));
            let res = self.backup_reader(reader, name, tags, SourceKind::Dir, progress);
            let produced = producer
                .join()
                .map_err(|_| Error::Internal("tar thread panicked".into()))?;
            // A backup error usually causes the tar error (closed pipe): report the backup's.
            let summary = res?;
            produced.map_err(|e| Error::io("reading directory", dir.display(), e))?;
            Ok(summary)
        })
    }
}

/// Unpacks a directory snapshot into `path` (created; must not exist).
pub(crate) fn restore_dir(
    store: &ChunkStore,
    snap: &SnapshotInfo,
    path: &Path,
    progress: &dyn Progress,
) -> Result<RestoreSummary> {
    fs::create_dir_all(path).map_err(|e| Error::io("creating", path.display(), e))?;
    let (reader, writer) = std::io::pipe().map_err(|e| Error::io("creating pipe for", path.display(), e))?;
    std::thread::scope(|s| {
        let unpacker = s.spawn(move || {
            let mut a = tar::Archive::new(reader);
            a.set_preserve_permissions(true);
            a.set_preserve_mtime(true);
            a.set_overwrite(false);
            a.unpack(path)
        });
        let res = store.restore_to_writer(snap, writer, progress);
        let unpacked = unpacker
            .join()
            .map_err(|_| Error::Internal("tar thread panicked".into()))?;
        // An unpack failure closes the pipe, so the write error is only a consequence.
        unpacked.map_err(|e| Error::io("unpacking into", path.display(), e))?;
        res
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_of_same_tree_is_byte_identical() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("b/c")).unwrap();
        fs::write(d.path().join("b/c/x"), b"x").unwrap();
        fs::write(d.path().join("a"), b"aaa").unwrap();
        let mut one = Vec::new();
        write_tar(d.path(), &mut one).unwrap();
        let mut two = Vec::new();
        write_tar(d.path(), &mut two).unwrap();
        assert_eq!(one, two);
        let names: Vec<String> = tar::Archive::new(&one[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, vec!["a", "b", "b/c", "b/c/x"]);
    }
}
