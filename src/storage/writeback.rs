//! Early writeback for restores. A restore writes through the page cache and, like restic and
//! borg, does not wait for the disk; left alone the kernel starts writing the data back only
//! some seconds later, so the disk idles while chunks are decoded and a following `sync` (or
//! the user's next step) waits for all of it. Every [`NUDGE_BYTES`] written, a restore asks a
//! background thread to `fdatasync` the file being written, so disk writes overlap decoding
//! and the restored data is on disk soon after the restore ends. Requests while a sync runs are
//! dropped (at most one waits). A sync error fails the restore: an error taken by this file
//! descriptor might not be reported to a later `fsync` of the user's.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Bytes written between two writeback requests.
pub(crate) const NUDGE_BYTES: u64 = 32 << 20;

/// What to sync: an open handle, or a path being written by someone else (the tar unpacker).
pub(crate) enum Target {
    File(File),
    Path(PathBuf),
}

/// The background syncing thread of one restore.
pub(crate) struct Writeback {
    tx: Option<SyncSender<Target>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Writeback {
    /// Starts the thread.
    pub(crate) fn start() -> Self {
        let (tx, rx) = sync_channel::<Target>(1);
        let thread = std::thread::spawn(move || -> io::Result<()> {
            for t in rx {
                let f = match t {
                    Target::File(f) => f,
                    // The file may be gone or not yet created: nothing to sync then.
                    Target::Path(p) => match File::open(&p) {
                        Ok(f) => f,
                        Err(_) => continue,
                    },
                };
                f.sync_data()?;
            }
            Ok(())
        });
        Writeback {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    /// Asks for a sync of `t` unless one is already waiting.
    pub(crate) fn nudge(&self, t: Target) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(t);
        }
    }

    /// Waits for the thread; returns the first sync error.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> io::Result<()> {
        self.tx = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(io::Error::other("writeback thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for Writeback {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A reader of a tar stream that nudges writeback of the file being unpacked (named in
/// `current` by the unpacking loop) every [`NUDGE_BYTES`] read.
pub(crate) struct NudgingReader<'a, R> {
    pub(crate) inner: R,
    pub(crate) current: Arc<Mutex<Option<PathBuf>>>,
    pub(crate) wb: &'a Writeback,
    pub(crate) since: u64,
}

impl<R: Read> Read for NudgingReader<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.since += n as u64;
        if self.since >= NUDGE_BYTES {
            self.since = 0;
            if let Some(p) = self.current.lock().ok().and_then(|c| c.clone()) {
                self.wb.nudge(Target::Path(p));
            }
        }
        Ok(n)
    }
}

/// Where the `tar` crate's `unpack_in(dst)` puts an entry (for syncing only; unpacking does its
/// own checks). `None` for entries it skips.
pub(crate) fn entry_path(dst: &Path, entry: &Path) -> Option<PathBuf> {
    let mut out = dst.to_path_buf();
    for c in entry.components() {
        match c {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return None,
            Component::Normal(p) => out.push(p),
        }
    }
    (out != dst).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writeback_syncs_files_and_paths_and_ignores_missing_paths() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"data").unwrap();
        let wb = Writeback::start();
        wb.nudge(Target::Path(d.path().join("missing")));
        wb.nudge(Target::Path(p.clone()));
        wb.nudge(Target::File(File::open(&p).unwrap()));
        wb.finish().unwrap();
    }

    #[test]
    fn writeback_entry_path_matches_tar_rules() {
        let d = Path::new("/t");
        assert_eq!(entry_path(d, Path::new("a/b")), Some(PathBuf::from("/t/a/b")));
        assert_eq!(entry_path(d, Path::new("/x/./y")), Some(PathBuf::from("/t/x/y")));
        assert_eq!(entry_path(d, Path::new("a/../../e")), None);
        assert_eq!(entry_path(d, Path::new(".")), None);
    }
}
