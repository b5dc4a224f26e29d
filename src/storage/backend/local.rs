//! The local directory backend: temp file in the target directory, fsync, rename, fsync dir.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rand::RngCore;

use super::{Backend, ObjectInfo};
use crate::storage::error::{Error, Result};

/// A repository in a local directory.
pub struct LocalBackend {
    location: String,
    root: PathBuf,
}

impl LocalBackend {
    /// A backend rooted at `path` (not created here).
    pub fn new(path: &str) -> Self {
        LocalBackend {
            location: path.to_string(),
            root: PathBuf::from(path),
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// Creates `dir` (and parents) and fsyncs each new directory's parent.
    fn ensure_dir(&self, dir: &Path) -> Result<()> {
        // `Path::new("repo").parent()` is `""`: the current directory, which exists.
        if dir.as_os_str().is_empty() || dir.is_dir() {
            return Ok(());
        }
        if let Some(parent) = dir.parent() {
            self.ensure_dir(parent)?;
        }
        match fs::create_dir(dir) {
            Ok(()) => {
                if let Some(parent) = dir.parent() {
                    sync_dir(parent)?;
                }
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(Error::io("creating directory", dir.display(), e)),
        }
    }

    fn write_temp(&self, dir: &Path, data: &[u8]) -> Result<PathBuf> {
        self.ensure_dir(dir)?;
        let tmp = dir.join(temp_name());
        let res = (|| {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()
        })();
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io("writing", tmp.display(), e));
        }
        Ok(tmp)
    }
}

fn temp_name() -> String {
    let mut r = [0u8; 8];
    rand::rng().fill_bytes(&mut r);
    format!(".tmp-{}", hex::encode(r))
}

/// fsyncs a directory so a rename or create in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("syncing directory", dir.display(), e))
}

impl Backend for LocalBackend {
    fn location(&self) -> &str {
        &self.location
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let p = self.path(key);
        match fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("reading", p.display(), e)),
        }
    }

    fn get_range(&self, key: &str, start: u64, len: usize) -> Result<Vec<u8>> {
        let p = self.path(key);
        let f = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(Error::Missing {
                    what: key.to_string(),
                });
            }
            Err(e) => return Err(Error::io("opening", p.display(), e)),
        };
        let mut buf = vec![0u8; len];
        match f.read_exact_at(&mut buf, start) {
            Ok(()) => Ok(buf),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Err(Error::corrupt(
                key,
                format!("object ends before byte {}", start + len as u64),
            )),
            Err(e) => Err(Error::io("reading", p.display(), e)),
        }
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        let p = self.path(key);
        match fs::metadata(&p) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("reading metadata of", p.display(), e)),
        }
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let dest = self.path(key);
        let dir = dest.parent().unwrap_or(&self.root).to_path_buf();
        let tmp = self.write_temp(&dir, data)?;
        if let Err(e) = fs::rename(&tmp, &dest) {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io("renaming into", dest.display(), e));
        }
        sync_dir(&dir)
    }

    fn put_new(&self, key: &str, data: &[u8]) -> Result<bool> {
        let dest = self.path(key);
        let dir = dest.parent().unwrap_or(&self.root).to_path_buf();
        let tmp = self.write_temp(&dir, data)?;
        // A hard link fails if the destination exists: an atomic create-if-absent.
        let res = fs::hard_link(&tmp, &dest);
        let _ = fs::remove_file(&tmp);
        match res {
            Ok(()) => {
                sync_dir(&dir)?;
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(Error::io("creating", dest.display(), e)),
        }
    }

    fn put_file(&self, key: &str, path: &Path) -> Result<()> {
        let dest = self.path(key);
        let dir = dest.parent().unwrap_or(&self.root).to_path_buf();
        self.ensure_dir(&dir)?;
        File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io("syncing", path.display(), e))?;
        fs::rename(path, &dest).map_err(|e| Error::io("renaming into", dest.display(), e))?;
        sync_dir(&dir)
    }

    fn open_reader(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        let p = self.path(key);
        match File::open(&p) {
            Ok(f) => Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, f))),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::Missing {
                what: key.to_string(),
            }),
            Err(e) => Err(Error::io("opening", p.display(), e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        let mut stack = vec![self.path(prefix.trim_end_matches('/'))];
        while let Some(dir) = stack.pop() {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("listing", dir.display(), e)),
            };
            for ent in rd {
                let ent = ent.map_err(|e| Error::io("listing", dir.display(), e))?;
                let p = ent.path();
                let meta = match ent.metadata() {
                    Ok(m) => m,
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io("reading metadata of", p.display(), e)),
                };
                if meta.is_dir() {
                    stack.push(p);
                } else if let Ok(rel) = p.strip_prefix(&self.root) {
                    let key = rel.to_string_lossy().replace('\\', "/");
                    let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                    out.push(ObjectInfo {
                        key,
                        size: meta.len(),
                        modified,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let p = self.path(key);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("deleting", p.display(), e)),
        }
    }

    fn staging_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn default_index_dir(&self) -> PathBuf {
        self.root.join("index")
    }

    fn local_root(&self) -> Option<&Path> {
        Some(&self.root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_put_is_atomic_and_put_new_refuses_existing() {
        let d = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(d.path().to_str().unwrap());
        b.put("packs/ab/abcd", b"hello").unwrap();
        assert_eq!(b.get("packs/ab/abcd").unwrap().unwrap(), b"hello");
        assert_eq!(b.get_range("packs/ab/abcd", 1, 3).unwrap(), b"ell");
        assert!(matches!(
            b.get_range("packs/ab/abcd", 3, 5),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            b.get_range("packs/ab/none", 0, 1),
            Err(Error::Missing { .. })
        ));
        assert!(b.put_new("config", b"1").unwrap());
        assert!(!b.put_new("config", b"2").unwrap());
        assert_eq!(b.get("config").unwrap().unwrap(), b"1");
        let keys: Vec<_> = b.list("packs/").unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(keys, vec!["packs/ab/abcd"]);
        b.delete("packs/ab/abcd").unwrap();
        b.delete("packs/ab/abcd").unwrap();
        assert!(b.get("packs/ab/abcd").unwrap().is_none());
    }
}
