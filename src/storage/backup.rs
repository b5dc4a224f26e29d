//! Backup: read -> chunk -> hash -> skip known ids -> compress/encrypt -> pack -> durable write.
//!
//! The calling thread reads and chunks; worker threads hash, probe the index and seal new chunks;
//! one packer thread keeps stream order, streams packs into staging files and writes the snapshot
//! object; one flusher thread makes each finished pack durable (fsync, rename into place) and only
//! then records its chunks in the index. Channels are bounded and packs never sit in memory, so
//! memory stays flat however large the input.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use super::backend::{pack_key, read_full, snapshot_key};
use super::blob::{BlobKind, ChunkId};
use super::chunker::is_zero;
use super::error::{Error, Param, Result};
use super::index::{SnapshotInfo, SnapshotTotals};
use super::lock::LockMode;
use super::pack::{PackFile, StagedPack, new_pack_name};
use super::snapfile::{Entry, SnapWriter, SnapshotMeta, SourceKind};
use super::store::ChunkStore;

/// Receives progress while a long operation runs.
pub trait Progress: Sync {
    /// `n` more input bytes were processed.
    fn add(&self, n: u64);
}

/// No progress reporting.
pub struct NoProgress;
impl Progress for NoProgress {
    fn add(&self, _: u64) {}
}

/// What a backup did.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotSummary {
    /// The new snapshot.
    pub snapshot: SnapshotInfo,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Plaintext bytes of chunks that were not in the repository yet.
    pub new_bytes: u64,
    /// Bytes written to packs for those chunks.
    pub stored_bytes: u64,
    /// Chunks in the snapshot.
    pub chunks: u64,
    /// Chunks that were new.
    pub new_chunks: u64,
    /// bytes_read / (stored_bytes + the snapshot object's size): how much this backup saved.
    pub dedup_ratio: f64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// bytes_read per second, in MB/s (10^6).
    pub throughput_mb_s: f64,
    /// Paths of a directory backup that could not be read and are not in the snapshot.
    pub skipped: Vec<SkippedPath>,
    /// Files of a directory backup that shrank while they were read (zero-padded in the snapshot).
    pub shrunk: Vec<ShrunkFile>,
    /// Warnings that do not make the snapshot incomplete (a clock behind the newest snapshot).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl SnapshotSummary {
    /// Whether the snapshot holds everything the source had: nothing skipped, nothing shrunk.
    pub fn is_complete(&self) -> bool {
        self.skipped.is_empty() && self.shrunk.is_empty()
    }
}

/// How far a snapshot may be dated after a backup's time before the clock counts as behind.
const CLOCK_SLACK_US: i64 = 60_000_000;

/// A warning when the newest complete snapshot is dated after `time_us` (this backup's time):
/// this machine's clock is behind, or the other snapshot came from a clock that was ahead.
fn clock_warning(index: &super::index::Index, time_us: i64) -> Result<Option<String>> {
    let newest = index
        .snapshots()?
        .into_iter()
        .filter(|s| s.complete)
        .max_by_key(|s| s.time_us);
    let Some(n) = newest.filter(|n| n.time_us > time_us + CLOCK_SLACK_US) else {
        return Ok(None);
    };
    let secs = (n.time_us - time_us) / 1_000_000;
    let ahead = match (secs / 86_400, secs / 3600 % 24, secs / 60 % 60) {
        (0, 0, m) => format!("{m} min"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, h, _) => format!("{d} days {h} h"),
    };
    let msg = format!(
        "the clock is behind the newest snapshot: {} ({}) is dated {}, {} after this backup; \
         check the clock (NTP). prune keeps snapshots dated in the future out of its rules until \
         their time has come, so they never take the place of real backups",
        n.id, n.name, n.time, ahead
    );
    tracing::warn!("{msg}");
    Ok(Some(msg))
}

/// A path a directory backup skipped because it could not be read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SkippedPath {
    /// The path on the source file system.
    pub path: String,
    /// Why it could not be read.
    pub reason: String,
}

/// A file that shrank while a directory backup read it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ShrunkFile {
    /// The path on the source file system.
    pub path: String,
    /// Its size when the backup started reading it (the size in the snapshot).
    pub size: u64,
    /// The bytes it still had; the rest of the snapshot's copy is zeros.
    pub read: u64,
}

/// A backup command's standard output. At its end the command is waited for, and a failed
/// command is a read error, so the backup fails instead of committing what it got.
struct Producer {
    child: Child,
    stdout: ChildStdout,
    status: Option<ExitStatus>,
}

impl Read for Producer {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.stdout.read(buf)?;
        if n == 0 && !buf.is_empty() && self.status.is_none() {
            let status = self.child.wait()?;
            self.status = Some(status);
            if !status.success() {
                return Err(std::io::Error::other(format!("backup command failed ({status})")));
            }
        }
        Ok(n)
    }
}

impl Producer {
    /// Ends the command (killed if the backup stopped before its output ended); its status.
    fn finish(mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
        self.status
    }
}

/// Bytes read per batch (at least four maximum-size chunks).
const BLOCK: usize = 4 << 20;
/// Read buffers kept for reuse.
const POOL_MAX: usize = 8;

struct Batch {
    data: Arc<Vec<u8>>,
    cuts: Vec<(usize, usize)>,
}

struct Sealed {
    id: ChunkId,
    len: u32,
    zero: bool,
    /// Range in `BatchOut::blobs` when the chunk is new.
    blob: Option<(usize, usize)>,
}

struct BatchOut {
    chunks: Vec<Sealed>,
    blobs: Vec<u8>,
}

type Job = (Batch, SyncSender<Result<BatchOut>>);

/// One message of a [`BlockStream`].
pub(crate) enum Block {
    /// Stream bytes from offset `head` of the buffer on; the bytes before them are free room.
    Data(Vec<u8>),
    /// The stream ended.
    Done,
    /// The producer failed: the backup fails with this error.
    Failed(std::io::Error),
}

/// A stream produced by another thread straight into block buffers (a directory's tar stream),
/// so the backup chunks the producer's buffers in place instead of copying them into its own.
/// Each buffer keeps `head` bytes free at its front, where the previous block's tail (the bytes
/// after its last cut, always shorter than the maximum chunk) is copied before chunking.
pub(crate) struct BlockStream {
    pub(crate) rx: Receiver<Block>,
    /// Buffers the backup is done with, for the producer to fill again.
    pub(crate) recycle: SyncSender<Vec<u8>>,
    pub(crate) head: usize,
}

/// Where a backup's bytes come from.
enum Source<'a> {
    Reader(&'a mut dyn Read),
    Blocks(BlockStream),
}

/// The chunking side's ends of the backup pipeline.
struct Feed<'a> {
    job_tx: &'a SyncSender<Job>,
    order_tx: &'a SyncSender<Receiver<Result<BatchOut>>>,
    shared: &'a Shared,
    progress: &'a dyn Progress,
}

struct Shared {
    abort: AtomicBool,
    error: Mutex<Option<Error>>,
    pending: Mutex<HashSet<ChunkId>>,
    zero_ids: Mutex<HashMap<usize, ChunkId>>,
    pool: Mutex<Vec<Vec<u8>>>,
    new_bytes: AtomicU64,
    stored_bytes: AtomicU64,
    new_chunks: AtomicU64,
    packs: PackPresence,
    /// Chunks the index places in a lost pack that this backup stores again.
    relocate: Mutex<HashSet<ChunkId>>,
}

/// Whether the packs a backup dedups against are on storage with the size the index records:
/// listed once, on the first dedup hit, and a pack missing from that listing (written since by
/// another backup, or lost) asked about once. An index entry whose pack is lost is not trusted,
/// so a backup after a lost pack stores those chunks again.
#[derive(Default)]
struct PackPresence {
    listed: Mutex<Option<HashMap<String, u64>>>,
    asked: Mutex<HashMap<String, Option<u64>>>,
}

impl PackPresence {
    fn intact(&self, backend: &dyn super::backend::Backend, pack: &str, size: u64) -> Result<bool> {
        let key = pack_key(pack);
        let poisoned = || Error::Internal("pack listing lock poisoned".into());
        {
            let mut listed = self.listed.lock().map_err(|_| poisoned())?;
            if listed.is_none() {
                *listed = Some(super::backend::pack_sizes(backend)?);
            }
            if listed.as_ref().and_then(|l| l.get(&key)) == Some(&size) {
                return Ok(true);
            }
        }
        let mut asked = self.asked.lock().map_err(|_| poisoned())?;
        let found = match asked.get(&key) {
            Some(s) => *s,
            None => {
                let s = backend.size(&key)?;
                if s != Some(size) {
                    tracing::warn!(
                        pack = %key,
                        "the index names a pack that is lost or damaged: storing its chunks again \
                         (repairing the repository marks the snapshots that need it)"
                    );
                }
                asked.insert(key, s);
                s
            }
        };
        Ok(found == Some(size))
    }
}

impl Shared {
    fn fail(&self, e: Error) {
        // Keep the first real error: "stopped" errors of other stages are only consequences.
        if let Ok(mut slot) = self.error.lock()
            && (slot.is_none() || matches!(*slot, Some(Error::Internal(_))))
        {
            *slot = Some(e);
        }
        self.abort.store(true, Ordering::SeqCst);
    }
}

/// Checks a backup name: what users type after `NAME@` and in `prune`.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument {
            param: Param::BackupName,
            reason: format!("{name:?} must be 1-128 characters of A-Z a-z 0-9 . _ : -"),
        })
    }
}

impl ChunkStore {
    /// Backs up everything `reader` yields as snapshot `name`. Safe to run concurrently with other
    /// backups of the same repository (from any process); blocks only while prune/gc run.
    pub fn backup_reader<R: Read>(
        &self,
        mut reader: R,
        name: &str,
        tags: &BTreeMap<String, String>,
        kind: SourceKind,
        progress: &dyn Progress,
    ) -> Result<SnapshotSummary> {
        self.backup_source(Source::Reader(&mut reader), name, tags, kind, progress)
    }

    /// Backs up what `cmd` writes to its standard output as a stream snapshot `name`. The
    /// snapshot is committed only when the command exits successfully: a producer that fails
    /// part-way (a vzdump that stops) must not leave a complete-looking snapshot.
    pub fn backup_command(
        &self,
        cmd: &mut Command,
        name: &str,
        tags: &BTreeMap<String, String>,
        progress: &dyn Progress,
    ) -> Result<SnapshotSummary> {
        validate_name(name)?;
        let shown = cmd.get_program().to_string_lossy().into_owned();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| Error::io("starting backup command", &shown, e))?;
        let Some(stdout) = child.stdout.take() else {
            return Err(Error::Internal("backup command has no stdout pipe".into()));
        };
        let mut producer = Producer {
            child,
            stdout,
            status: None,
        };
        let result = self.backup_reader(&mut producer, name, tags, SourceKind::Stream, progress);
        let status = producer.finish();
        match (result, status) {
            (Ok(summary), _) => Ok(summary),
            (Err(_), Some(status)) if !status.success() => Err(Error::ProducerFailed {
                command: shown,
                status: status.to_string(),
            }),
            (Err(e), _) => Err(e),
        }
    }

    /// Backs up a [`BlockStream`] (see there) as snapshot `name`.
    pub(crate) fn backup_blocks(
        &self,
        blocks: BlockStream,
        name: &str,
        tags: &BTreeMap<String, String>,
        kind: SourceKind,
        progress: &dyn Progress,
    ) -> Result<SnapshotSummary> {
        self.backup_source(Source::Blocks(blocks), name, tags, kind, progress)
    }

    /// Buffer layout for a [`BlockStream`]: free room at the front, and stream bytes per block.
    pub(crate) fn block_layout(&self) -> (usize, usize) {
        (self.chunker.max_len(), self.block_len())
    }

    fn block_len(&self) -> usize {
        BLOCK.max(self.chunker.max_len() * 4)
    }

    fn backup_source(
        &self,
        mut source: Source<'_>,
        name: &str,
        tags: &BTreeMap<String, String>,
        kind: SourceKind,
        progress: &dyn Progress,
    ) -> Result<SnapshotSummary> {
        validate_name(name)?;
        let _lock = self.lock(LockMode::Shared, "backup", false)?;
        let started = Instant::now();
        let meta = SnapshotMeta {
            uid: new_pack_name(),
            name: name.to_string(),
            time: self
                .opts
                .backup_time
                .unwrap_or_else(jiff::Timestamp::now)
                .as_microsecond(),
            tags: tags.clone(),
            kind,
        };
        let index = self.index()?;
        let warnings = clock_warning(&index, meta.time)?.into_iter().collect();
        index.begin_snapshot(&meta)?;
        let shared = Shared {
            abort: AtomicBool::new(false),
            error: Mutex::new(None),
            pending: Mutex::new(HashSet::new()),
            zero_ids: Mutex::new(HashMap::new()),
            pool: Mutex::new(Vec::new()),
            new_bytes: AtomicU64::new(0),
            stored_bytes: AtomicU64::new(0),
            new_chunks: AtomicU64::new(0),
            packs: PackPresence::default(),
            relocate: Mutex::new(HashSet::new()),
        };
        let staging = self.backend.staging_dir();
        let mut snap = SnapWriter::create(&staging, &self.codec, &meta)?;
        let staged_path = snap.path().to_path_buf();
        let mut bytes_read = 0u64;
        let result = std::thread::scope(|s| -> Result<Option<(std::path::PathBuf, _)>> {
            let (job_tx, job_rx) = sync_channel::<Job>(self.threads());
            let job_rx = Arc::new(Mutex::new(job_rx));
            let (order_tx, order_rx) = sync_channel::<Receiver<Result<BatchOut>>>(self.threads() + 2);
            let (flush_tx, flush_rx) = sync_channel::<StagedPack>(1);
            for _ in 0..self.threads() {
                let rx = job_rx.clone();
                let shared = &shared;
                s.spawn(move || self.hash_worker(&rx, shared));
            }
            let shared_ref = &shared;
            let packer = s.spawn(move || {
                let r = self.packer(order_rx, flush_tx, &mut snap, shared_ref);
                if let Err(e) = r {
                    shared_ref.fail(e);
                    return None;
                }
                match snap.finish() {
                    Ok(done) => Some(done),
                    Err(e) => {
                        shared_ref.fail(e);
                        None
                    }
                }
            });
            let flusher = s.spawn(move || {
                if let Err(e) = self.flusher(&flush_rx, shared_ref) {
                    shared_ref.fail(e);
                }
                drop(flush_rx);
            });
            let feed = Feed {
                job_tx: &job_tx,
                order_tx: &order_tx,
                shared: &shared,
                progress,
            };
            let fed = match &mut source {
                Source::Reader(r) => self.chunk_reader(&mut **r, &feed, &mut bytes_read),
                Source::Blocks(b) => self.chunk_blocks(b, &feed, &mut bytes_read),
            };
            if let Err(e) = fed {
                shared.fail(e);
            }
            drop(job_tx);
            drop(order_tx);
            let done = packer
                .join()
                .map_err(|_| Error::Internal("packer thread panicked".into()))?;
            flusher
                .join()
                .map_err(|_| Error::Internal("flusher thread panicked".into()))?;
            Ok(done)
        });
        let first_error = shared.error.lock().ok().and_then(|mut e| e.take());
        let finished = match (result, first_error) {
            (Ok(Some(done)), None) => Ok(done),
            (Err(e), _) | (_, Some(e)) => Err(e),
            (Ok(None), None) => Err(Error::Internal("backup pipeline stopped without an error".into())),
        };
        let (path, end) = match finished {
            Ok(d) => d,
            Err(e) => {
                let _ = std::fs::remove_file(&staged_path);
                let _ = index.delete_snapshot(&meta.uid);
                return Err(e);
            }
        };
        // The snapshot file is the source of truth: bump the repository generation, make the
        // file durable, then flip the row and record the generation (see `repo`).
        let generation = match self.repo().bump_generation(&index) {
            Ok(g) => g,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                let _ = index.delete_snapshot(&meta.uid);
                return Err(e);
            }
        };
        let snapshot_bytes = std::fs::metadata(&path)
            .map_err(|e| Error::io("reading metadata of", path.display(), e))?
            .len();
        self.backend.put_file(&snapshot_key(&meta.uid), &path)?;
        let totals = SnapshotTotals {
            size: end.size,
            chunks: end.entries,
            new_bytes: shared.new_bytes.load(Ordering::SeqCst),
            stored_bytes: shared.stored_bytes.load(Ordering::SeqCst),
        };
        index.complete_snapshot(&meta, &totals)?;
        index.set_generation(generation)?;
        let snapshot = index
            .snapshots()?
            .into_iter()
            .find(|s| s.uid == meta.uid)
            .ok_or_else(|| Error::Internal("completed snapshot row vanished".into()))?;
        let seconds = started.elapsed().as_secs_f64();
        Ok(SnapshotSummary {
            snapshot,
            bytes_read,
            new_bytes: totals.new_bytes,
            stored_bytes: totals.stored_bytes,
            chunks: end.entries,
            new_chunks: shared.new_chunks.load(Ordering::SeqCst),
            // What the backup added: new pack bytes plus its snapshot object, never zero, so a
            // fully deduplicated backup shows how much it saved.
            dedup_ratio: bytes_read as f64 / (totals.stored_bytes + snapshot_bytes).max(1) as f64,
            seconds,
            throughput_mb_s: if seconds > 0.0 {
                bytes_read as f64 / seconds / 1e6
            } else {
                0.0
            },
            skipped: Vec::new(),
            shrunk: Vec::new(),
            warnings,
        })
    }

    /// Reads blocks, finds chunk boundaries and hands batches to the workers in order.
    fn chunk_reader(&self, reader: &mut dyn Read, feed: &Feed<'_>, bytes_read: &mut u64) -> Result<()> {
        let block = self.block_len();
        let mut carry: Vec<u8> = Vec::new();
        loop {
            if feed.shared.abort.load(Ordering::SeqCst) {
                return Ok(());
            }
            // Recycled buffers avoid a fresh mmap and page faults per block. A new one is a
            // calloc (`resize` would be a byte loop in unoptimised test builds).
            let recycled = feed.shared.pool.lock().ok().and_then(|mut p| p.pop());
            let mut buf = recycled
                .filter(|b| b.len() == block)
                .unwrap_or_else(|| vec![0u8; block]);
            buf[..carry.len()].copy_from_slice(&carry);
            let filled = carry.len();
            let n = read_full(reader, &mut buf[filled..])
                .map_err(|e| Error::io("reading", "backup source", e))?;
            let len = filled + n;
            buf.truncate(len);
            *bytes_read += n as u64;
            feed.progress.add(n as u64);
            let eof = len < block;
            if !self.cut_and_send(buf, 0, eof, &mut carry, feed) || eof {
                return Ok(());
            }
        }
    }

    /// Chunks the producer's blocks in place: only the tail of the previous block is copied.
    fn chunk_blocks(&self, blocks: &BlockStream, feed: &Feed<'_>, bytes_read: &mut u64) -> Result<()> {
        let head = blocks.head;
        let mut carry: Vec<u8> = Vec::new();
        loop {
            if feed.shared.abort.load(Ordering::SeqCst) {
                return Ok(());
            }
            if let Ok(mut pool) = feed.shared.pool.lock() {
                while let Some(b) = pool.pop() {
                    if let Err(std::sync::mpsc::TrySendError::Full(b)) = blocks.recycle.try_send(b) {
                        pool.push(b);
                        break;
                    }
                }
            }
            let msg = blocks.rx.recv().unwrap_or_else(|_| {
                Block::Failed(std::io::Error::other(
                    "the stream's producer stopped unexpectedly",
                ))
            });
            match msg {
                Block::Data(mut buf) => {
                    if buf.len() < head {
                        return Err(Error::Internal("stream block shorter than its head room".into()));
                    }
                    let n = buf.len() - head;
                    *bytes_read += n as u64;
                    feed.progress.add(n as u64);
                    let start = if carry.len() <= head {
                        let start = head - carry.len();
                        buf[start..head].copy_from_slice(&carry);
                        start
                    } else {
                        // Not reached with blocks of at least the maximum chunk length; still correct.
                        carry.extend_from_slice(&buf[head..]);
                        buf = std::mem::take(&mut carry);
                        0
                    };
                    if !self.cut_and_send(buf, start, false, &mut carry, feed) {
                        return Ok(());
                    }
                }
                Block::Done => {
                    let last = std::mem::take(&mut carry);
                    self.cut_and_send(last, 0, true, &mut carry, feed);
                    return Ok(());
                }
                Block::Failed(e) => return Err(Error::io("reading", "backup source", e)),
            }
        }
    }

    /// Finds the cut points of `buf[start..]` (`eof`: nothing follows), sends them as one batch
    /// and leaves the undecided tail in `carry`. Returns false when the pipeline stopped.
    fn cut_and_send(
        &self,
        buf: Vec<u8>,
        start: usize,
        eof: bool,
        carry: &mut Vec<u8>,
        feed: &Feed<'_>,
    ) -> bool {
        // Both cores find cut points (the result equals a sequential scan).
        let cuts: Vec<(usize, usize)> = self
            .chunker
            .cuts(&buf[start..], eof, self.threads())
            .into_iter()
            .map(|(s, n)| (s + start, n))
            .collect();
        let pos = cuts.last().map_or(start, |&(s, n)| s + n);
        carry.clear();
        carry.extend_from_slice(&buf[pos..]);
        if cuts.is_empty() {
            return true;
        }
        let (tx, rx) = sync_channel(1);
        let batch = Batch {
            data: Arc::new(buf),
            cuts,
        };
        feed.order_tx.send(rx).is_ok() && feed.job_tx.send((batch, tx)).is_ok()
    }

    fn hash_worker(&self, rx: &Mutex<Receiver<Job>>, shared: &Shared) {
        // Keep answering jobs even after a failure, so the reader never blocks on a full queue.
        let mut setup = match self.index().and_then(|i| Ok((i, self.codec.scratch()?))) {
            Ok(s) => Some(s),
            Err(e) => {
                shared.fail(e);
                None
            }
        };
        loop {
            let job = match rx.lock() {
                Ok(r) => r.recv(),
                Err(_) => return,
            };
            let Ok((batch, reply)) = job else { return };
            let out = match setup.as_mut() {
                Some((index, scratch)) if !shared.abort.load(Ordering::SeqCst) => {
                    self.seal_batch(&batch, index, scratch, shared)
                }
                _ => Err(Error::Internal("backup aborted".into())),
            };
            let _ = reply.send(out);
            if let Ok(buf) = Arc::try_unwrap(batch.data)
                && let Ok(mut pool) = shared.pool.lock()
                && pool.len() < POOL_MAX
            {
                pool.push(buf);
            }
        }
    }

    fn seal_batch(
        &self,
        batch: &Batch,
        index: &super::index::Index,
        scratch: &mut super::blob::Scratch,
        shared: &Shared,
    ) -> Result<BatchOut> {
        let mut out = BatchOut {
            chunks: Vec::with_capacity(batch.cuts.len()),
            blobs: Vec::new(),
        };
        for &(start, len) in &batch.cuts {
            let data = &batch.data[start..start + len];
            let zero = is_zero(data);
            let id = if zero {
                let cached = shared.zero_ids.lock().ok().and_then(|m| m.get(&len).copied());
                match cached {
                    Some(id) => id,
                    None => {
                        let id = self.codec.id(data);
                        if let Ok(mut m) = shared.zero_ids.lock() {
                            m.insert(len, id);
                        }
                        id
                    }
                }
            } else {
                self.codec.id(data)
            };
            let lock_err = || Error::Internal("pending set lock poisoned".into());
            let known = shared.pending.lock().map_err(|_| lock_err())?.contains(&id)
                || self.stored_intact(index, &id, shared)?
                || !shared.pending.lock().map_err(|_| lock_err())?.insert(id);
            let blob = if known {
                None
            } else {
                let b = out.blobs.len();
                let n = self
                    .codec
                    .seal(BlobKind::Chunk, &id, data, scratch, &mut out.blobs)?;
                Some((b, n))
            };
            out.chunks.push(Sealed {
                id,
                len: len as u32,
                zero,
                blob,
            });
        }
        Ok(out)
    }

    /// Whether the index knows `id` in a pack that is on storage with its recorded size. A
    /// chunk the index places in a lost pack is noted, to be moved to the pack that stores it
    /// again.
    fn stored_intact(&self, index: &super::index::Index, id: &ChunkId, shared: &Shared) -> Result<bool> {
        let Some(loc) = index.location(id)? else {
            return Ok(false);
        };
        if shared.packs.intact(&*self.backend, &loc.pack, loc.pack_size)? {
            return Ok(true);
        }
        if let Ok(mut r) = shared.relocate.lock() {
            r.insert(*id);
        }
        Ok(false)
    }

    fn packer(
        &self,
        order_rx: Receiver<Receiver<Result<BatchOut>>>,
        flush_tx: SyncSender<StagedPack>,
        snap: &mut SnapWriter<'_>,
        shared: &Shared,
    ) -> Result<()> {
        let pack_size = u64::from(self.config.params.pack_size);
        let staging = self.backend.staging_dir();
        let mut scratch = self.codec.scratch()?;
        let mut pack: Option<PackFile> = None;
        for slot in order_rx {
            let Ok(res) = slot.recv() else {
                return Err(Error::Internal("a hashing worker stopped".into()));
            };
            let out = res?;
            for c in &out.chunks {
                if let Some((b, n)) = c.blob {
                    let p = match pack.as_mut() {
                        Some(p) => p,
                        None => pack.insert(PackFile::create(&staging)?),
                    };
                    p.add(c.id, c.len, &out.blobs[b..b + n])?;
                    shared.new_bytes.fetch_add(u64::from(c.len), Ordering::Relaxed);
                    shared.stored_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    shared.new_chunks.fetch_add(1, Ordering::Relaxed);
                    if p.len() >= pack_size
                        && let Some(full) = pack.take()
                        && flush_tx.send(full.finish(&self.codec, &mut scratch)?).is_err()
                    {
                        return Err(Error::Internal("pack writer stopped".into()));
                    }
                }
                snap.push(&Entry {
                    id: c.id,
                    len: c.len,
                    zero: c.zero,
                })?;
            }
            if shared.abort.load(Ordering::SeqCst) {
                return Err(Error::Internal("backup aborted".into()));
            }
        }
        if let Some(last) = pack.take()
            && !last.is_empty()
            && flush_tx.send(last.finish(&self.codec, &mut scratch)?).is_err()
        {
            return Err(Error::Internal("pack writer stopped".into()));
        }
        Ok(())
    }

    fn flusher(&self, rx: &Receiver<StagedPack>, shared: &Shared) -> Result<()> {
        let mut index = self.index()?;
        for staged in rx {
            // Durable first (fsync, rename, fsync dir), then visible in the index.
            let size = std::fs::metadata(&staged.path)
                .map_err(|e| Error::io("reading metadata of", staged.path.display(), e))?
                .len();
            self.backend.put_file(&pack_key(&staged.name), &staged.path)?;
            index.add_pack(
                &staged.name,
                size,
                &staged.entries,
                jiff::Timestamp::now().as_second(),
            )?;
            let moved: Vec<_> = match shared.relocate.lock() {
                Ok(r) if !r.is_empty() => staged
                    .entries
                    .iter()
                    .filter(|e| r.contains(&e.id))
                    .copied()
                    .collect(),
                _ => Vec::new(),
            };
            if !moved.is_empty() {
                index.move_chunks(&staged.name, &moved)?;
            }
            if let Ok(mut p) = shared.pending.lock() {
                for e in &staged.entries {
                    p.remove(&e.id);
                }
            }
        }
        Ok(())
    }
}
