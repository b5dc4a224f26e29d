//! Restore: the snapshot object is read frame by frame; runs of chunks stored next to each other
//! in one pack are fetched with one ranged read; worker threads decrypt, decompress and check
//! ids; the calling thread writes in order (seeking over zero chunks when writing a file).

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use super::backend::{pack_key, snapshot_key};
use super::backup::Progress;
use super::blob::{BlobKind, ChunkId};
use super::chunker::MAX_CHUNK;
use super::error::{Error, Param, Result};
use super::index::{SnapshotInfo, kind_of};
use super::pattern::PathFilter;
use super::snapfile::{SnapReader, SourceKind};
use super::store::ChunkStore;
use super::writeback::{NUDGE_BYTES, Writeback};

/// Largest single ranged read.
const MAX_READ: u64 = 4 << 20;
/// Most plaintext one read may decode to: bounds memory however well the data compressed
/// (a read waiting in the queue holds its decoded chunks).
const MAX_PLAIN: u64 = 4 << 20;

/// What a restore did.
#[derive(Clone, Debug, Serialize)]
pub struct RestoreSummary {
    /// Snapshot id.
    pub snapshot: String,
    /// Bytes written.
    pub bytes: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// MB/s (10^6).
    pub throughput_mb_s: f64,
}

/// One ranged read of consecutive blobs.
struct Read {
    pack: String,
    start: u64,
    len: u64,
    /// Plaintext bytes of `blobs`.
    plain: u64,
    blobs: Vec<(ChunkId, u64, u32)>,
}

enum Piece {
    Zero(u64),
    Data(Vec<Vec<u8>>),
}

enum Slot {
    Ready(Piece),
    Pending(Receiver<Result<Vec<Vec<u8>>>>),
}

type Job = (Read, SyncSender<Result<Vec<Vec<u8>>>>);

/// Where restored bytes go. Chunks arrive as owned buffers, so a sink may keep them.
pub(crate) trait Sink {
    fn data(&mut self, b: Vec<u8>) -> std::io::Result<()>;
    fn zeros(&mut self, n: u64) -> std::io::Result<()>;
    fn finish(&mut self) -> std::io::Result<()>;
}

struct WriterSink<W: Write>(W);

impl<W: Write> Sink for WriterSink<W> {
    fn data(&mut self, b: Vec<u8>) -> std::io::Result<()> {
        self.0.write_all(&b)
    }
    fn zeros(&mut self, mut n: u64) -> std::io::Result<()> {
        let z = [0u8; 64 << 10];
        while n > 0 {
            let k = n.min(z.len() as u64) as usize;
            self.0.write_all(&z[..k])?;
            n -= k as u64;
        }
        Ok(())
    }
    fn finish(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Writes a regular file, leaving holes where the data is zero.
struct SparseFile {
    f: std::io::BufWriter<File>,
    pos: u64,
    hole: u64,
    /// Starts writeback every NUDGE_BYTES of data (see `writeback`).
    wb: Option<Writeback>,
    since: u64,
}

impl Sink for SparseFile {
    fn data(&mut self, b: Vec<u8>) -> std::io::Result<()> {
        if self.hole > 0 {
            self.f.seek(SeekFrom::Current(self.hole as i64))?;
            self.hole = 0;
        }
        self.pos += b.len() as u64;
        self.f.write_all(&b)?;
        self.since += b.len() as u64;
        if self.since >= NUDGE_BYTES
            && let Some(wb) = &self.wb
        {
            self.since = 0;
            wb.nudge(self.f.get_ref().try_clone()?);
        }
        Ok(())
    }
    fn zeros(&mut self, n: u64) -> std::io::Result<()> {
        self.hole += n;
        self.pos += n;
        Ok(())
    }
    /// Like restic and borg, restore does not wait for the disk (writeback was started early).
    fn finish(&mut self) -> std::io::Result<()> {
        self.f.flush()?;
        self.f.get_mut().set_len(self.pos)?;
        self.wb.take().map_or(Ok(()), Writeback::finish)
    }
}

fn is_empty_dir(path: &Path) -> bool {
    path.symlink_metadata().is_ok_and(|m| m.is_dir())
        && std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_none())
}

impl ChunkStore {
    /// Writes the snapshot's stream (a tar stream for directory snapshots) to `w`.
    pub fn restore_to_writer<W: Write>(
        &self,
        snap: &SnapshotInfo,
        w: W,
        progress: &dyn Progress,
    ) -> Result<RestoreSummary> {
        self.restore_into(snap, &mut WriterSink(w), progress)
    }

    /// Restores into `path`: a file snapshot becomes a new (sparse) file, a directory snapshot a
    /// directory tree in a new or an existing empty directory (as `restic restore --target`
    /// users expect). Nothing that exists is ever overwritten.
    pub fn restore_to_path(
        &self,
        snap: &SnapshotInfo,
        path: &Path,
        progress: &dyn Progress,
    ) -> Result<RestoreSummary> {
        self.restore_to_path_filtered(snap, path, &PathFilter::default(), progress)
    }

    /// [`ChunkStore::restore_to_path`] restoring only the entries of a directory snapshot that
    /// `filter` takes (see [`super::pattern`]); a filter on a file snapshot is an error.
    pub fn restore_to_path_filtered(
        &self,
        snap: &SnapshotInfo,
        path: &Path,
        filter: &PathFilter,
        progress: &dyn Progress,
    ) -> Result<RestoreSummary> {
        let is_dir = kind_of(snap) == SourceKind::Dir;
        if !is_dir && !filter.is_empty() {
            return Err(Error::InvalidArgument {
                param: Param::Pattern,
                reason: format!(
                    "snapshot {} is a single file or stream: include and exclude patterns only \
                     apply to directory snapshots",
                    snap.id
                ),
            });
        }
        if path.symlink_metadata().is_ok() && !(is_dir && is_empty_dir(path)) {
            return Err(Error::InvalidArgument {
                param: Param::RestoreTarget,
                reason: format!(
                    "{} already exists: restore never overwrites; pick a new path{}",
                    path.display(),
                    if is_dir { " or an empty directory" } else { "" }
                ),
            });
        }
        if is_dir {
            return super::tarstream::restore_dir(self, snap, path, filter, progress);
        }
        let f = File::options()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| Error::io("creating", path.display(), e))?;
        let mut sink = SparseFile {
            f: std::io::BufWriter::with_capacity(1 << 20, f),
            pos: 0,
            hole: 0,
            wb: Some(Writeback::start()),
            since: 0,
        };
        self.restore_into(snap, &mut sink, progress)
    }

    pub(crate) fn restore_into(
        &self,
        snap: &SnapshotInfo,
        sink: &mut dyn Sink,
        progress: &dyn Progress,
    ) -> Result<RestoreSummary> {
        if !snap.complete {
            return Err(Error::SnapshotIncomplete { id: snap.id.clone() });
        }
        let started = Instant::now();
        let threads = self.threads();
        let first_err: Mutex<Option<Error>> = Mutex::new(None);
        let mut written = 0u64;
        let out: Result<()> = std::thread::scope(|s| {
            let (job_tx, job_rx) = sync_channel::<Job>(threads * 2);
            let job_rx = Arc::new(Mutex::new(job_rx));
            let (slot_tx, slot_rx) = sync_channel::<Slot>(threads * 4);
            for _ in 0..threads {
                let rx = job_rx.clone();
                s.spawn(move || self.decode_worker(&rx));
            }
            let first_err = &first_err;
            s.spawn(move || {
                if let Err(e) = self.plan_reads(snap, &job_tx, &slot_tx)
                    && let Ok(mut slot) = first_err.lock()
                {
                    *slot = Some(e);
                }
            });
            let wr = |e: std::io::Error| Error::io("writing", "restore target", e);
            for slot in slot_rx {
                let piece = match slot {
                    Slot::Ready(p) => p,
                    Slot::Pending(rx) => Piece::Data(
                        rx.recv()
                            .map_err(|_| Error::Internal("a restore worker stopped".into()))??,
                    ),
                };
                match piece {
                    Piece::Zero(n) => {
                        sink.zeros(n).map_err(wr)?;
                        written += n;
                        progress.add(n);
                    }
                    Piece::Data(chunks) => {
                        for c in chunks {
                            let n = c.len() as u64;
                            sink.data(c).map_err(wr)?;
                            written += n;
                            progress.add(n);
                        }
                    }
                }
            }
            Ok(())
        });
        if let Some(e) = first_err.lock().ok().and_then(|mut e| e.take()) {
            return Err(e);
        }
        out?;
        sink.finish()
            .map_err(|e| Error::io("finishing", "restore target", e))?;
        if written != snap.size {
            return Err(Error::corrupt(
                format!("snapshot {}", snap.id),
                "restored size differs from recorded size",
            ));
        }
        let seconds = started.elapsed().as_secs_f64();
        Ok(RestoreSummary {
            snapshot: snap.id.clone(),
            bytes: written,
            seconds,
            throughput_mb_s: if seconds > 0.0 {
                written as f64 / seconds / 1e6
            } else {
                0.0
            },
        })
    }

    fn plan_reads(
        &self,
        snap: &SnapshotInfo,
        job_tx: &SyncSender<Job>,
        slot_tx: &SyncSender<Slot>,
    ) -> Result<()> {
        let index = self.index()?;
        let key = snapshot_key(&snap.uid);
        let mut reader = SnapReader::open(self.backend.open_reader(&key)?, &self.codec, key)?;
        let mut cur: Option<Read> = None;
        let send_read = |r: Read| -> bool {
            let (tx, rx) = sync_channel(1);
            slot_tx.send(Slot::Pending(rx)).is_ok() && job_tx.send((r, tx)).is_ok()
        };
        while let Some(frame) = reader.next_frame()? {
            for e in frame {
                if e.zero && (e.len as usize) <= MAX_CHUNK {
                    if let Some(r) = cur.take()
                        && !send_read(r)
                    {
                        return Ok(());
                    }
                    if slot_tx.send(Slot::Ready(Piece::Zero(u64::from(e.len)))).is_err() {
                        return Ok(());
                    }
                    continue;
                }
                let loc = index.location(&e.id)?.ok_or_else(|| Error::Missing {
                    what: format!("chunk {} of snapshot {}", e.id, snap.id),
                })?;
                let extend = cur.as_ref().is_some_and(|r| {
                    r.pack == loc.pack
                        && r.start + r.len == loc.offset
                        && r.len + u64::from(loc.len) <= MAX_READ
                        && r.plain + u64::from(loc.raw_len) <= MAX_PLAIN
                });
                if extend {
                    if let Some(r) = cur.as_mut() {
                        r.blobs.push((e.id, r.len, loc.len));
                        r.len += u64::from(loc.len);
                        r.plain += u64::from(loc.raw_len);
                    }
                } else {
                    if let Some(r) = cur.take()
                        && !send_read(r)
                    {
                        return Ok(());
                    }
                    cur = Some(Read {
                        pack: loc.pack,
                        start: loc.offset,
                        len: u64::from(loc.len),
                        plain: u64::from(loc.raw_len),
                        blobs: vec![(e.id, 0, loc.len)],
                    });
                }
            }
        }
        if let Some(r) = cur.take() {
            send_read(r);
        }
        Ok(())
    }

    fn decode_worker(&self, rx: &Mutex<Receiver<Job>>) {
        let Ok(mut scratch) = self.codec.scratch() else {
            return;
        };
        loop {
            let job = match rx.lock() {
                Ok(r) => r.recv(),
                Err(_) => return,
            };
            let Ok((read, reply)) = job else { return };
            let res = (|| {
                let key = pack_key(&read.pack);
                let bytes = self.backend.get_range(&key, read.start, read.len as usize)?;
                let mut out = Vec::with_capacity(read.blobs.len());
                for (id, off, len) in &read.blobs {
                    let blob = &bytes[*off as usize..*off as usize + *len as usize];
                    let what = || format!("chunk {id} in {key}");
                    let (h, plain) = self.codec.open(blob, BlobKind::Chunk, &mut scratch, &what)?;
                    if h.id != *id {
                        return Err(Error::corrupt(what(), "blob holds a different chunk"));
                    }
                    out.push(plain);
                }
                Ok(out)
            })();
            let _ = reply.send(res);
        }
    }
}
