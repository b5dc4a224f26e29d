//! Directories as deterministic tar streams: entries sorted by path, metadata from the file
//! system (mode, mtime, owner ids), so an unchanged tree gives the same bytes and dedups fully.
//! Restore unpacks with the `tar` crate, which refuses paths that escape the target.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use super::backup::{Progress, SnapshotSummary};
use super::error::{Error, Result};
use super::index::SnapshotInfo;
use super::restore::{RestoreSummary, Sink};
use super::snapfile::SourceKind;
use super::store::ChunkStore;
use super::writeback::{NudgingReader, Writeback, entry_path};

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
        // A channel instead of a pipe: a failing tar writer must fail the backup (a pipe would
        // just end, and a truncated tar would be saved as a complete snapshot).
        let (tx, rx) = sync_channel::<Msg>(4);
        std::thread::scope(|s| {
            s.spawn(move || {
                let mut w = ChanWriter {
                    tx,
                    buf: Vec::with_capacity(MSG_LEN),
                };
                let msg = match write_tar(dir, &mut w).and_then(|()| w.send()) {
                    Ok(()) => Msg::Done,
                    Err(e) => Msg::Failed(e),
                };
                let _ = w.tx.send(msg);
            });
            let reader = ChanReader::new(rx);
            self.backup_reader(reader, name, tags, SourceKind::Dir, progress)
                .map_err(|e| match e {
                    Error::Io {
                        op: "reading", cause, ..
                    } => Error::io("reading directory", dir.display(), cause),
                    e => e,
                })
        })
    }
}

const MSG_LEN: usize = 1 << 20;

enum Msg {
    Data(Vec<u8>),
    Zeros(u64),
    Done,
    Failed(std::io::Error),
}

struct ChanWriter {
    tx: SyncSender<Msg>,
    buf: Vec<u8>,
}

impl ChanWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(MSG_LEN));
        self.tx
            .send(Msg::Data(data))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "backup stopped"))
    }
}

impl Write for ChanWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= MSG_LEN {
            self.send()?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Yields the tar stream; an error or a vanished writer (no `Done`) is a read error. Each read
/// fills `out` completely unless the stream ends, so a consumer that copies in fixed-size pieces
/// (the `tar` crate: 8 KiB) writes whole, aligned pieces.
struct ChanReader {
    rx: Receiver<Msg>,
    cur: Vec<u8>,
    pos: usize,
    zeros: u64,
    done: bool,
    /// A failure that arrived after some bytes of the current read: reported by the next read.
    failed: Option<std::io::Error>,
}

impl ChanReader {
    fn new(rx: Receiver<Msg>) -> Self {
        ChanReader {
            rx,
            cur: Vec::new(),
            pos: 0,
            zeros: 0,
            done: false,
            failed: None,
        }
    }
}

impl Read for ChanReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let mut n = 0;
        while n < out.len() {
            if self.zeros > 0 {
                let k = (out.len() - n).min(usize::try_from(self.zeros).unwrap_or(usize::MAX));
                out[n..n + k].fill(0);
                self.zeros -= k as u64;
                n += k;
                continue;
            }
            if self.pos < self.cur.len() {
                let k = (out.len() - n).min(self.cur.len() - self.pos);
                out[n..n + k].copy_from_slice(&self.cur[self.pos..self.pos + k]);
                self.pos += k;
                n += k;
                continue;
            }
            if self.done {
                break;
            }
            let msg = match self.rx.recv() {
                Ok(m) => m,
                Err(_) => Msg::Failed(std::io::Error::other("directory stream stopped unexpectedly")),
            };
            match msg {
                Msg::Data(v) => {
                    self.cur = v;
                    self.pos = 0;
                }
                Msg::Zeros(z) => self.zeros = z,
                Msg::Done => self.done = true,
                // Bytes already copied are returned first; the error comes with the next read.
                Msg::Failed(e) if n > 0 => {
                    self.failed = Some(e);
                    break;
                }
                Msg::Failed(e) => return Err(e),
            }
        }
        Ok(n)
    }
}

/// Feeds restored chunks to the unpacking thread without copying them.
struct ChanSink {
    tx: SyncSender<Msg>,
}

impl ChanSink {
    fn send(&self, m: Msg) -> std::io::Result<()> {
        self.tx
            .send(m)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "tar unpacker stopped"))
    }
}

impl Sink for ChanSink {
    fn data(&mut self, b: Vec<u8>) -> std::io::Result<()> {
        self.send(Msg::Data(b))
    }
    fn zeros(&mut self, n: u64) -> std::io::Result<()> {
        self.send(Msg::Zeros(n))
    }
    fn finish(&mut self) -> std::io::Result<()> {
        self.send(Msg::Done)
    }
}

/// Unpacks a directory snapshot into `path` (created; must not exist). The restored stream
/// reaches the unpacking thread over a channel of chunk buffers (no pipe, no copy).
pub(crate) fn restore_dir(
    store: &ChunkStore,
    snap: &SnapshotInfo,
    path: &Path,
    progress: &dyn Progress,
) -> Result<RestoreSummary> {
    fs::create_dir_all(path).map_err(|e| Error::io("creating", path.display(), e))?;
    let (tx, rx) = sync_channel::<Msg>(64);
    std::thread::scope(|s| {
        let unpacker = s.spawn(move || -> std::io::Result<()> {
            let wb = Writeback::start();
            let current = Arc::new(Mutex::new(None));
            let reader = NudgingReader {
                inner: ChanReader::new(rx),
                current: current.clone(),
                wb: &wb,
                since: 0,
            };
            let mut a = tar::Archive::new(reader);
            a.set_preserve_permissions(true);
            a.set_preserve_mtime(true);
            a.set_overwrite(false);
            unpack_tree(&mut a, path, &current)?;
            // Consume the end-of-archive padding so the restore side sees its stream taken.
            std::io::copy(&mut a.into_inner(), &mut std::io::sink())?;
            wb.finish()
        });
        let res = store.restore_into(snap, &mut ChanSink { tx }, progress);
        let unpacked = unpacker
            .join()
            .map_err(|_| Error::Internal("tar thread panicked".into()))?;
        match (res, unpacked) {
            // The restore's own failure comes first; an unpack failure then is a consequence.
            (Err(e), _) if !stopped_by_unpacker(&e) => Err(e),
            (_, Err(e)) => Err(Error::io("unpacking into", path.display(), e)),
            (res, Ok(())) => res,
        }
    })
}

/// The `tar` crate's `Archive::unpack` (directories last, deepest first), telling the reader
/// which file is being written so it can start that file's writeback early.
fn unpack_tree<R: Read>(
    a: &mut tar::Archive<R>,
    dst: &Path,
    current: &Mutex<Option<PathBuf>>,
) -> std::io::Result<()> {
    let dst = dst.canonicalize()?;
    let mut dirs = Vec::new();
    for entry in a.entries()? {
        let mut e = entry?;
        if e.header().entry_type() == tar::EntryType::Directory {
            dirs.push(e);
            continue;
        }
        if let Ok(mut c) = current.lock() {
            *c = entry_path(&dst, &e.path()?);
        }
        e.unpack_in(&dst)?;
    }
    dirs.sort_by(|a, b| b.path_bytes().cmp(&a.path_bytes()));
    for mut d in dirs {
        if !d.unpack_in(&dst)? {
            continue;
        }
        // The `tar` crate sets a directory's mode but not its mtime. Deepest first, so setting a
        // directory's mtime never changes its parent's, which comes later.
        // By path (utimensat), not through an opened handle: a directory whose restored mode
        // denies reading could not be opened by a non-root user.
        if let (Some(dir), Ok(mtime)) = (entry_path(&dst, &d.path()?), d.header().mtime()) {
            let t = filetime::FileTime::from_unix_time(mtime as i64, 0);
            filetime::set_file_times(&dir, t, t)?;
        }
    }
    Ok(())
}

/// Whether a restore error only says that the unpacking thread stopped reading.
fn stopped_by_unpacker(e: &Error) -> bool {
    matches!(e, Error::Io { cause, .. } if cause.kind() == std::io::ErrorKind::BrokenPipe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_channel_reader_turns_writer_failure_into_read_error() {
        let (tx, rx) = sync_channel(4);
        tx.send(Msg::Data(b"abc".to_vec())).unwrap();
        tx.send(Msg::Failed(std::io::Error::other("disk gone"))).unwrap();
        let mut r = ChanReader::new(rx);
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(e.to_string(), "disk gone");
        assert_eq!(out, b"abc");
        let (tx, rx) = sync_channel::<Msg>(1);
        drop(tx);
        let mut r = ChanReader::new(rx);
        assert!(
            r.read_to_end(&mut Vec::new()).is_err(),
            "a vanished writer is not EOF"
        );
    }

    #[test]
    fn tar_channel_reader_fills_whole_reads_across_messages_and_zero_runs() {
        let (tx, rx) = sync_channel(8);
        let mut sink = ChanSink { tx };
        sink.data(b"ab".to_vec()).unwrap();
        sink.zeros(3).unwrap();
        sink.data(b"cdefgh".to_vec()).unwrap();
        sink.finish().unwrap();
        let mut r = ChanReader::new(rx);
        let mut buf = [9u8; 8];
        assert_eq!(r.read(&mut buf).unwrap(), 8);
        assert_eq!(&buf, b"ab\0\0\0cde");
        assert_eq!(r.read(&mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"fgh");
        assert_eq!(r.read(&mut buf).unwrap(), 0);
        drop(r);
        assert_eq!(
            sink.data(b"x".to_vec()).unwrap_err().kind(),
            std::io::ErrorKind::BrokenPipe
        );
    }

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
