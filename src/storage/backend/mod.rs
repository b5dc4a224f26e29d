//! Where repository objects live: one synchronous trait, a local directory (default) and an
//! S3-compatible bucket. Keys are `/`-separated (`config`, `packs/ab/<name>`, `snapshots/<id>`,
//! `locks/<id>`). Every `put` is durable and atomic when it returns.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::error::Result;

pub mod local;
pub mod s3;

/// One listed object.
#[derive(Clone, Debug)]
pub struct ObjectInfo {
    /// Key relative to the repository root.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time.
    pub modified: SystemTime,
}

/// Storage for repository objects.
pub trait Backend: Send + Sync + 'static {
    /// The repository location as the user typed it.
    fn location(&self) -> &str;
    /// The whole object, or `None` if it does not exist.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// `len` bytes at `start`; a missing object is `Error::Missing`, a short one `Error::Corrupt`.
    fn get_range(&self, key: &str, start: u64, len: usize) -> Result<Vec<u8>>;
    /// Size of the object, or `None`.
    fn size(&self, key: &str) -> Result<Option<u64>>;
    /// Writes an object durably and atomically (readers see all or nothing).
    fn put(&self, key: &str, data: &[u8]) -> Result<()>;
    /// Like `put` but only if the key does not exist yet; returns false if it did.
    fn put_new(&self, key: &str, data: &[u8]) -> Result<bool>;
    /// Stores a local staging file (made in `staging_dir`) under `key`, consuming the file.
    fn put_file(&self, key: &str, path: &Path) -> Result<()>;
    /// A sequential reader over an object.
    fn open_reader(&self, key: &str) -> Result<Box<dyn Read + Send>>;
    /// All objects under `prefix` (which ends with `/`).
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;
    /// Deletes an object; deleting a missing object is not an error.
    fn delete(&self, key: &str) -> Result<()>;
    /// Directory for staging files before `put_file` (same file system for the local backend).
    fn staging_dir(&self) -> PathBuf;
    /// Default directory of the SQLite index (inside a local repository; a cache dir for S3).
    fn default_index_dir(&self) -> PathBuf;
    /// The repository's directory when it is on a local file system (advisory locks and the
    /// space reserve live there), `None` for object stores.
    fn local_root(&self) -> Option<&Path> {
        None
    }
}

/// The key of a pack.
pub fn pack_key(name: &str) -> String {
    format!("packs/{}/{}", &name[..2.min(name.len())], name)
}

/// The key of a snapshot object.
pub fn snapshot_key(uid: &str) -> String {
    format!("snapshots/{uid}")
}

/// The key of the mark `repair` leaves for a snapshot that cannot be fully restored.
pub fn damage_key(uid: &str) -> String {
    format!("damaged/{uid}")
}

/// The key of the repository generation: a counter bumped by every change to packs, snapshot
/// files and damage marks, so an index that reflects an older state can be told apart.
pub const GENERATION_KEY: &str = "generation";

/// The pack name of a listed key, or `None` for temp files and foreign keys.
pub(crate) fn pack_name_of(key: &str) -> Option<String> {
    let name = key.rsplit('/').next()?;
    (!name.starts_with('.') && key == pack_key(name)).then(|| name.to_string())
}

/// The snapshot id of a listed key under `snapshots/` or `damaged/`, or `None` for temp files.
pub(crate) fn uid_of(key: &str) -> Option<&str> {
    let name = key.rsplit('/').next()?;
    (!name.is_empty() && !name.starts_with('.')).then_some(name)
}

/// The size of every pack file on storage, by key.
pub(crate) fn pack_sizes(backend: &dyn Backend) -> Result<std::collections::HashMap<String, u64>> {
    Ok(backend
        .list("packs/")?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect())
}

/// A modification time as Unix seconds.
pub(crate) fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Opens the backend for `repo` (`s3://bucket/prefix` or a directory path).
pub fn open(repo: &str, cache_dir: Option<&Path>) -> Result<Box<dyn Backend>> {
    if repo.starts_with("s3://") {
        Ok(Box::new(s3::S3Backend::open(repo, cache_dir)?))
    } else {
        Ok(Box::new(local::LocalBackend::new(repo)))
    }
}

/// A reader that fills `buf` completely unless the source ends.
pub(crate) fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
