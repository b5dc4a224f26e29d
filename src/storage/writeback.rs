//! Early writeback for restores. A restore writes through the page cache and, like restic and
//! borg, does not wait for the disk; left alone the kernel starts writing the data back only
//! some seconds later, so the disk idles while chunks are decoded and a following `sync` (or
//! the user's next step) waits for all of it. Every [`NUDGE_BYTES`] written to a file, a restore
//! asks a background thread to `fdatasync` it, so disk writes overlap decoding and the restored
//! data is on disk soon after the restore ends. Requests while a sync runs are dropped (at most
//! one waits). A sync error fails the restore: an error taken by this file descriptor might not
//! be reported to a later `fsync` of the user's.

use std::fs::File;
use std::io;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

/// Bytes written between two writeback requests.
pub(crate) const NUDGE_BYTES: u64 = 32 << 20;

/// The background syncing thread of one restore.
pub(crate) struct Writeback {
    tx: Option<SyncSender<File>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Writeback {
    /// Starts the thread.
    pub(crate) fn start() -> Self {
        let (tx, rx) = sync_channel::<File>(1);
        let thread = std::thread::spawn(move || -> io::Result<()> {
            for f in rx {
                f.sync_data()?;
            }
            Ok(())
        });
        Writeback {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    /// Asks for a sync of `f` (a handle to a file being written) unless one is already waiting.
    pub(crate) fn nudge(&self, f: File) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(f);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writeback_syncs_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"data").unwrap();
        let wb = Writeback::start();
        wb.nudge(File::open(&p).unwrap());
        wb.nudge(File::open(&p).unwrap());
        wb.finish().unwrap();
    }
}
