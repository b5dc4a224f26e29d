//! Directories as deterministic tar streams: entries sorted by path, metadata from the file
//! system (mode, mtime, owner ids, extended attributes and so ACLs, see `xattrs.rs`), so an
//! unchanged tree gives the same bytes and dedups fully.
//! Restore reads the stream with the `tar` crate and keeps its path rules (nothing lands outside
//! the target); regular files are written in large positioned writes (see `unpack_file`).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use super::backend::read_full;
use super::backup::{Block, BlockStream, Progress, ShrunkFile, SkippedPath, SnapshotSummary};
use super::chunker::is_zero;
use super::error::{Error, Result};
use super::index::SnapshotInfo;
use super::pattern::PathFilter;
use super::restore::{RestoreSummary, Sink};
use super::snapfile::SourceKind;
use super::store::ChunkStore;
use super::writeback::{NUDGE_BYTES, Writeback};
use super::xattrs::{self, XattrReader, XattrWriter, Xattrs, pax_record, pax_records};

fn sorted_entries(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    v.sort();
    Ok(v)
}

/// What a directory backup could not save as it was: skipped and shrunk paths.
#[derive(Debug, Default)]
pub struct Incomplete {
    /// Paths that could not be read.
    pub skipped: Vec<SkippedPath>,
    /// Files that shrank while they were read.
    pub shrunk: Vec<ShrunkFile>,
}

impl Incomplete {
    fn skip(&mut self, path: &Path, e: &std::io::Error) {
        tracing::warn!(path = %path.display(), error = %e, "cannot read; not in the snapshot");
        self.skipped.push(SkippedPath {
            path: path.display().to_string(),
            reason: e.to_string(),
        });
    }
}

/// What a tree walk carries along: the exclude filter, the hard links seen so far (by device
/// and inode, to the first path archived), what could not be saved as it was, and the reader of
/// extended attributes.
struct Walk<'a> {
    filter: &'a PathFilter,
    links: HashMap<(u64, u64), PathBuf>,
    notes: Incomplete,
    xattrs: XattrReader,
}

/// Appends the tree under `root/rel`. What cannot be read below the root (a directory that
/// cannot be listed, a file that cannot be opened, an entry gone before it was looked at) is
/// skipped and noted, as restic does; errors writing the stream stop the backup. Excluded paths
/// (and everything below an excluded directory) are not looked at. A file with several links is
/// archived once; its other names become hard-link entries, as GNU tar does.
fn write_tree(
    b: &mut tar::Builder<impl Write>,
    root: &Path,
    rel: &Path,
    walk: &mut Walk<'_>,
) -> std::io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let dir = root.join(rel);
    let entries = match sorted_entries(&dir) {
        Ok(v) => v,
        Err(e) if !rel.as_os_str().is_empty() => {
            walk.notes.skip(&dir, &e);
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for path in entries {
        let name = rel.join(path.file_name().unwrap_or_default());
        if !walk.filter.exclude.is_empty() && walk.filter.excluded(&name.to_string_lossy()) {
            continue;
        }
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                walk.notes.skip(&path, &e);
                continue;
            }
        };
        let ft = meta.file_type();
        if meta.is_dir() {
            append_pax(b, &meta, &walk.xattrs.read(&path))?;
            b.append_dir(&name, &path)?;
            write_tree(b, root, &name, walk)?;
        } else if meta.is_file() {
            if meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = walk.links.get(&key) {
                    let mut h = tar::Header::new_gnu();
                    h.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    b.append_link(&mut h, &name, first)?;
                    continue;
                }
                let before = walk.notes.skipped.len();
                let x = walk.xattrs.read(&path);
                append_file(b, &path, &name, &mut walk.notes, &x)?;
                if walk.notes.skipped.len() == before {
                    walk.links.insert(key, name.clone());
                }
                continue;
            }
            let x = walk.xattrs.read(&path);
            append_file(b, &path, &name, &mut walk.notes, &x)?;
        } else if ft.is_symlink() {
            append_pax(b, &meta, &walk.xattrs.read(&path))?;
            b.append_path_with_name(&path, &name)?;
        } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
            append_pax(b, &meta, &walk.xattrs.read(&path))?;
            append_special(b, &meta, &name)?;
        }
        // Sockets are skipped: they carry no data and cannot be restored.
    }
    Ok(())
}

/// Writes a pax extended header right before an entry, with what its tar header cannot hold:
/// the sub-second part of its mtime (`mtime=SECONDS.NANOSECONDS`, as GNU tar `--format=posix`
/// writes it), then its extended attributes in name order (`SCHILY.xattr.NAME=VALUE`, as GNU tar
/// `--xattrs` and libarchive write them; ACLs are the `system.posix_acl_*` attributes; see
/// [`pax_records`] for values with a newline). Nothing
/// when there is neither, so entries with whole-second times and no attributes stay byte for
/// byte what they were, and the stream of an unchanged tree deduplicates against old snapshots.
/// Readers without pax support see the seconds and ignore the rest.
fn append_pax(b: &mut tar::Builder<impl Write>, meta: &fs::Metadata, xattrs: &Xattrs) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut records = Vec::new();
    let (secs, nsec) = (meta.mtime(), meta.mtime_nsec());
    if nsec > 0 && secs >= 0 {
        pax_record(&mut records, b"mtime", format!("{secs}.{nsec:09}").as_bytes());
    }
    pax_records(&mut records, xattrs);
    if records.is_empty() {
        return Ok(());
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_mode(0o644);
    h.set_size(records.len() as u64);
    b.append_data(&mut h, "././@PaxHeader", &records[..])
}

/// The mtime of an entry with its sub-second part from a pax `mtime` record, if it has one.
fn precise_mtime<R: Read>(e: &mut tar::Entry<R>) -> Option<filetime::FileTime> {
    let exts = e.pax_extensions().ok()??;
    for ext in exts.flatten() {
        if ext.key() != Ok("mtime") {
            continue;
        }
        let v = ext.value().ok()?;
        let (secs, frac) = v.split_once('.').unwrap_or((v, "0"));
        let secs: i64 = secs.parse().ok()?;
        let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
        let nsec: u32 = digits.parse().ok()?;
        return Some(filetime::FileTime::from_unix_time(secs, nsec));
    }
    None
}

/// Appends a fifo or device node as the `tar` crate's own `append_special` would, under `name`
/// (that one writes the source path instead of the name it was given).
fn append_special(b: &mut tar::Builder<impl Write>, meta: &fs::Metadata, name: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    let ft = meta.file_type();
    h.set_entry_type(if ft.is_fifo() {
        tar::EntryType::Fifo
    } else if ft.is_char_device() {
        tar::EntryType::Char
    } else {
        tar::EntryType::Block
    });
    h.set_size(0);
    // glibc's encoding of major and minor device numbers.
    let dev = meta.rdev();
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff);
    h.set_device_major(major as u32)?;
    h.set_device_minor(minor as u32)?;
    b.append_data(&mut h, name, std::io::empty())
}

/// Bytes per read when archiving a file: small enough to stay in cache between the read and
/// the copy into the stream, and to come from the heap rather than a fresh mapping per file.
const READ_BUF: usize = 64 << 10;

/// Appends a regular file, byte for byte what `Builder::append_file` writes. A file without holes
/// is read in pieces of up to [`READ_BUF`] (`append_file` uses 8 KiB) and exactly as many bytes
/// as its header says (see [`Exactly`]: `append_file` copies to EOF, so a file that grew while it
/// was read would corrupt the rest of the stream); a file that may have holes goes to
/// `append_file`, which records them as a GNU sparse entry.
fn append_file(
    b: &mut tar::Builder<impl Write>,
    path: &Path,
    name: &Path,
    notes: &mut Incomplete,
    xattrs: &Xattrs,
) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let opened = File::open(path).and_then(|f| Ok((f.metadata()?, f)));
    let (meta, mut f) = match opened {
        Ok(m) => m,
        Err(e) => {
            notes.skip(path, &e);
            return Ok(());
        }
    };
    append_pax(b, &meta, xattrs)?;
    if meta.blocks() * 512 < meta.len() {
        return append_sparse(b, path, name, &meta, &mut f, notes);
    }
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
    let data = Exactly {
        inner: f.take(meta.len()),
        size: meta.len(),
        left: meta.len(),
        path,
        notes,
    };
    let cap = usize::try_from(meta.len()).map_or(READ_BUF, |n| n.clamp(512, READ_BUF));
    b.append_data(&mut h, name, std::io::BufReader::with_capacity(cap, data))
}

/// Appends a file that may have holes through `Builder::append_file` (a GNU sparse entry), and
/// makes sure the entry is as long as its headers say: the `tar` crate copies each data region
/// with `take`, so a file that shrinks while it is read would leave the entry short and every
/// later entry misaligned. Missing bytes are written as zeros (as GNU tar pads a shrunk file) and
/// the file is reported as shrunk.
fn append_sparse(
    b: &mut tar::Builder<impl Write>,
    path: &Path,
    name: &Path,
    meta: &fs::Metadata,
    f: &mut File,
    notes: &mut Incomplete,
) -> std::io::Result<()> {
    let mut sub = tar::Builder::new(Counted {
        inner: b.get_mut(),
        written: 0,
        head: Vec::new(),
        closed: false,
    });
    sub.mode(tar::HeaderMode::Complete);
    sub.follow_symlinks(false);
    sub.append_file(name, f)?;
    // The sub-builder's end-of-archive blocks must not reach the stream.
    sub.get_mut().closed = true;
    let counted = sub.into_inner()?;
    let Some(expected) = entry_len(&counted.head) else {
        return Ok(());
    };
    if counted.written < expected {
        let missing = expected - counted.written;
        let now = f.metadata().map(|m| m.len()).unwrap_or(0);
        tracing::warn!(
            file = %path.display(),
            missing,
            "sparse file shrank while it was backed up; padding it with zeros"
        );
        notes.shrunk.push(ShrunkFile {
            path: path.display().to_string(),
            size: meta.len(),
            read: now.min(meta.len()),
        });
        let zeros = [0u8; 4096];
        let mut left = missing;
        while left > 0 {
            let k = left.min(zeros.len() as u64) as usize;
            counted.inner.write_all(&zeros[..k])?;
            left -= k as u64;
        }
    }
    Ok(())
}

/// Header bytes kept by [`Counted`] for [`entry_len`]: long-name entries, the sparse header and
/// its extension headers (21 regions each) come first.
const HEAD_KEEP: usize = 1 << 20;

/// A writer that counts what passes and keeps the first [`HEAD_KEEP`] bytes.
struct Counted<'w, W: Write> {
    inner: &'w mut W,
    written: u64,
    head: Vec<u8>,
    /// After the entry: swallow the end-of-archive blocks.
    closed: bool,
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.closed {
            return Ok(buf.len());
        }
        let n = self.inner.write(buf)?;
        if self.head.len() < HEAD_KEEP {
            let k = n.min(HEAD_KEEP - self.head.len());
            self.head.extend_from_slice(&buf[..k]);
        }
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The full length of the entry whose headers start `head`: long-name and pax entries, the main
/// header, GNU sparse extension headers, and the data rounded up to 512 bytes. `None` when the
/// headers are longer than `head` holds.
fn entry_len(head: &[u8]) -> Option<u64> {
    let round = |n: u64| n.div_ceil(512) * 512;
    let mut off = 0usize;
    loop {
        let h = tar::Header::from_byte_slice(head.get(off..off + 512)?);
        let size = h.entry_size().ok()?;
        let kind = h.entry_type();
        if kind.is_gnu_longname()
            || kind.is_gnu_longlink()
            || kind.is_pax_local_extensions()
            || kind.is_pax_global_extensions()
        {
            off += 512 + usize::try_from(round(size)).ok()?;
            continue;
        }
        let mut ext = kind.is_gnu_sparse() && h.as_gnu().is_some_and(|g| g.is_extended());
        off += 512;
        while ext {
            // `isextended` of a GNU extension sparse header: after 21 regions of 24 bytes.
            ext = *head.get(off + 504)? != 0;
            off += 512;
        }
        return Some(off as u64 + round(size));
    }
}

/// Reads exactly `left` bytes of a file whose size was recorded in its tar header: a file that
/// grew while it was read is cut at that size, one that shrank is padded with zeros (as GNU tar
/// does, with a warning), so the stream stays a valid tar archive either way.
struct Exactly<'a> {
    inner: std::io::Take<File>,
    /// The size in the tar header.
    size: u64,
    left: u64,
    path: &'a Path,
    notes: &'a mut Incomplete,
}

impl Read for Exactly<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let mut n = self.inner.read(buf)?;
        if n == 0 {
            n = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
            if self.inner.limit() > 0 {
                tracing::warn!(
                    file = %self.path.display(),
                    missing = self.left,
                    "file shrank while it was backed up; padding it with zeros"
                );
                self.notes.shrunk.push(ShrunkFile {
                    path: self.path.display().to_string(),
                    size: self.size,
                    read: self.size - self.left,
                });
                self.inner.set_limit(0);
            }
            buf[..n].fill(0);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Streams `dir` as a tar archive into `w`; returns what it skipped or found shrunk.
pub fn write_tar(dir: &Path, w: impl Write) -> std::io::Result<Incomplete> {
    write_tar_filtered(dir, &PathFilter::default(), w)
}

/// [`write_tar`] leaving out what `filter` excludes.
pub fn write_tar_filtered(dir: &Path, filter: &PathFilter, w: impl Write) -> std::io::Result<Incomplete> {
    let mut b = tar::Builder::new(w);
    b.mode(tar::HeaderMode::Complete);
    b.follow_symlinks(false);
    let mut walk = Walk {
        filter,
        links: HashMap::new(),
        notes: Incomplete::default(),
        xattrs: XattrReader::default(),
    };
    write_tree(&mut b, dir, Path::new(""), &mut walk)?;
    b.into_inner()?.flush()?;
    Ok(walk.notes)
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
        self.backup_dir_filtered(dir, name, tags, &PathFilter::default(), progress)
    }

    /// [`ChunkStore::backup_dir`] leaving out the paths `filter` excludes (its include
    /// patterns are not used here).
    pub fn backup_dir_filtered(
        &self,
        dir: &Path,
        name: &str,
        tags: &BTreeMap<String, String>,
        filter: &PathFilter,
        progress: &dyn Progress,
    ) -> Result<SnapshotSummary> {
        // A channel instead of a pipe: a failing tar writer must fail the backup (a pipe would
        // just end, and a truncated tar would be saved as a complete snapshot).
        let (tx, rx) = sync_channel::<Block>(2);
        let (recycle, recycled) = sync_channel::<Vec<u8>>(4);
        let (head, block) = self.block_layout();
        std::thread::scope(|s| {
            let producer = s.spawn(move || {
                let mut w = BlockWriter {
                    tx,
                    recycled,
                    buf: Vec::new(),
                    head,
                    block,
                };
                let written = write_tar_filtered(dir, filter, &mut w);
                let (msg, notes) = match written.and_then(|n| w.send().map(|()| n)) {
                    Ok(n) => (Block::Done, n),
                    Err(e) => (Block::Failed(e), Incomplete::default()),
                };
                let _ = w.tx.send(msg);
                notes
            });
            let blocks = BlockStream { rx, recycle, head };
            let mut summary = self
                .backup_blocks(blocks, name, tags, SourceKind::Dir, progress)
                .map_err(|e| match e {
                    Error::Io {
                        op: "reading", cause, ..
                    } => Error::io("reading directory", dir.display(), cause),
                    e => e,
                })?;
            let notes = producer
                .join()
                .map_err(|_| Error::Internal("tar thread panicked".into()))?;
            summary.skipped = notes.skipped;
            summary.shrunk = notes.shrunk;
            Ok(summary)
        })
    }
}

/// Writes the tar stream into block buffers for [`ChunkStore::backup_blocks`]: `block` stream
/// bytes after `head` bytes of room in each, reusing the buffers the backup hands back.
struct BlockWriter {
    tx: SyncSender<Block>,
    recycled: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    head: usize,
    block: usize,
}

impl BlockWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.len() <= self.head {
            return Ok(());
        }
        let data = std::mem::take(&mut self.buf);
        self.tx
            .send(Block::Data(data))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "backup stopped"))
    }
}

impl Write for BlockWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() < self.head {
            // A buffer the backup is done with, or a new one; the room in front is left as is.
            let mut v = self
                .recycled
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(self.head + self.block));
            if v.len() >= self.head {
                v.truncate(self.head);
            } else {
                v.clear();
                v.resize(self.head, 0);
            }
            self.buf = v;
        }
        let k = b.len().min(self.head + self.block - self.buf.len());
        self.buf.extend_from_slice(&b[..k]);
        if self.buf.len() == self.head + self.block {
            self.send()?;
        }
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The restore side's stream messages.
enum Msg {
    Data(Vec<u8>),
    Zeros(u64),
    Done,
}

/// Yields the restored tar stream; a vanished sender (no `Done`) is a read error. Each read
/// fills `out` completely unless the stream ends.
pub(crate) struct ChanReader {
    rx: Receiver<Msg>,
    cur: Vec<u8>,
    pos: usize,
    zeros: u64,
    done: bool,
}

impl ChanReader {
    fn new(rx: Receiver<Msg>) -> Self {
        ChanReader {
            rx,
            cur: Vec::new(),
            pos: 0,
            zeros: 0,
            done: false,
        }
    }
}

impl Read for ChanReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
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
            match self.rx.recv() {
                Ok(Msg::Data(v)) => {
                    self.cur = v;
                    self.pos = 0;
                }
                Ok(Msg::Zeros(z)) => self.zeros = z,
                Ok(Msg::Done) => self.done = true,
                // Bytes already copied are returned first; the error comes with the next read.
                Err(_) if n > 0 => break,
                Err(_) => {
                    return Err(std::io::Error::other("directory stream stopped unexpectedly"));
                }
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

/// Unpacks a directory snapshot into `path` (created; must not exist), only the entries
/// `filter` takes (see [`unpack_tree`]).
pub(crate) fn restore_dir(
    store: &ChunkStore,
    snap: &SnapshotInfo,
    path: &Path,
    filter: &PathFilter,
    progress: &dyn Progress,
) -> Result<RestoreSummary> {
    fs::create_dir_all(path).map_err(|e| Error::io("creating", path.display(), e))?;
    let unpack = |mut a: TarReader| -> std::io::Result<()> {
        let wb = Writeback::start();
        a.set_preserve_permissions(true);
        a.set_preserve_mtime(true);
        a.set_preserve_ownerships(is_root());
        a.set_overwrite(false);
        unpack_tree(&mut a, path, filter, &wb)?;
        // Consume the end-of-archive padding so the restore side sees its stream taken.
        std::io::copy(&mut a.into_inner(), &mut std::io::sink())?;
        wb.finish()
    };
    let (summary, ()) = read_tar(store, snap, progress, ("unpacking into", &path.display()), unpack)?;
    Ok(summary)
}

/// Whether this process may restore owners and create device nodes.
fn is_root() -> bool {
    // The second field of `Uid:` is the effective user id.
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            == Some("0")
    })
}

/// A directory snapshot's tar stream as [`read_tar`] hands it over.
pub(crate) type TarReader = tar::Archive<ChanReader>;

/// Restores a directory snapshot as a tar stream into `read`, which runs on its own thread: the
/// stream reaches it over a channel of chunk buffers (no pipe, no copy). An error of `read` is
/// reported as `what` (operation and path).
pub(crate) fn read_tar<T: Send>(
    store: &ChunkStore,
    snap: &SnapshotInfo,
    progress: &dyn Progress,
    what: (&'static str, &dyn std::fmt::Display),
    read: impl FnOnce(TarReader) -> std::io::Result<T> + Send,
) -> Result<(RestoreSummary, T)> {
    let (tx, rx) = sync_channel::<Msg>(64);
    std::thread::scope(|s| {
        let reader = s.spawn(move || read(tar::Archive::new(ChanReader::new(rx))));
        let res = store.restore_into(snap, &mut ChanSink { tx }, progress);
        let read = reader
            .join()
            .map_err(|_| Error::Internal("tar thread panicked".into()))?;
        match (res, read) {
            // The restore's own failure comes first; a reader failure then is a consequence.
            (Err(e), _) if !stopped_by_unpacker(&e) => Err(e),
            (_, Err(e)) => Err(Error::io(what.0, what.1, e)),
            (res, Ok(v)) => Ok((res?, v)),
        }
    })
}

/// The `tar` crate's `Archive::unpack` (directories last, deepest first), with regular files
/// written by [`unpack_file`], fifos and device nodes by [`unpack_special`], and only the
/// entries `filter` takes. Directories are created writable for their owner as files go into
/// them and get their own mode (and owner, and mtime) only at the end, deepest first, so a
/// directory saved with mode 000 or 0555 restores for a user who is not root. With include
/// patterns, the directories above a restored entry are restored too (with their metadata).
fn unpack_tree<R: Read>(
    a: &mut tar::Archive<R>,
    dst: &Path,
    filter: &PathFilter,
    wb: &Writeback,
) -> std::io::Result<()> {
    let dst = dst.canonicalize()?;
    let root = is_root();
    let mut xw = XattrWriter::new(root);
    let mut dirs = Vec::new();
    let mut buf = vec![0u8; COPY_BUF];
    for entry in a.entries()? {
        let mut e = entry?;
        let kind = e.header().entry_type();
        if kind == tar::EntryType::Directory {
            dirs.push(e);
            continue;
        }
        if !filter.is_empty() {
            let p = e.path()?.to_string_lossy().into_owned();
            if !filter.takes(&p) {
                continue;
            }
            // A hard link to a file that was left out has nothing to point at.
            if kind == tar::EntryType::Link
                && let Some(target) = e.link_name()?
                && !filter.takes(&target.to_string_lossy())
            {
                tracing::warn!(path = %p, target = %target.display(), "hard link to an entry that is not restored; skipped");
                continue;
            }
        }
        if kind == tar::EntryType::Regular || kind.is_gnu_sparse() {
            unpack_file(&mut e, &dst, root, wb, &mut buf, &mut xw)?;
        } else if kind == tar::EntryType::Fifo
            || kind == tar::EntryType::Char
            || kind == tar::EntryType::Block
        {
            unpack_special(&mut e, &dst, root, &mut xw)?;
        } else {
            let precise = precise_mtime(&mut e);
            let x = xattrs::from_entry(&mut e);
            let path = e.path()?.into_owned();
            if e.unpack_in(&dst)?
                && kind == tar::EntryType::Symlink
                && let Some(link) = entry_path(&dst, &path)
            {
                // `unpack_in` made sure the link's parent is inside the target.
                if !x.is_empty() {
                    xw.set_path(&link, &x);
                }
                if let Some(t) = precise {
                    filetime::set_symlink_file_times(&link, t, t)?;
                }
            }
        }
    }
    dirs.sort_by(|a, b| b.path_bytes().cmp(&a.path_bytes()));
    for mut d in dirs {
        let Some(dir) = entry_path(&dst, &d.path()?) else {
            continue;
        };
        // Left out, unless it holds something restored.
        if !filter.is_empty() && !filter.takes(&d.path()?.to_string_lossy()) && !dir.is_dir() {
            continue;
        }
        let x = xattrs::from_entry(&mut d);
        if !x.is_empty() {
            set_dir_xattrs(&dir, &dst, &x, &mut xw);
        }
        if !d.unpack_in(&dst)? {
            continue;
        }
        // The `tar` crate sets a directory's mode but not its mtime. Deepest first, so setting a
        // directory's mtime never changes its parent's, which comes later. By path
        // (utimensat), never through an opened handle: a directory whose restored mode denies
        // reading (000) cannot be opened by a user who is not root.
        let precise = precise_mtime(&mut d);
        if let Some(t) = precise.or_else(|| {
            let s = d.header().mtime().ok()?;
            Some(filetime::FileTime::from_unix_time(s as i64, 0))
        }) {
            filetime::set_symlink_file_times(&dir, t, t)?;
        }
    }
    Ok(())
}

/// Sets a directory's extended attributes before `unpack_in` gives it its saved mode (and
/// owner): a directory whose mode denies writing (0555) takes no `user.*` attributes from a user
/// who is not root. A directory that holds nothing restored does not exist yet: it is created
/// here, when its parent is inside the target (what `unpack_in` does next then keeps it).
/// Nothing is set through a path that resolves outside the target.
fn set_dir_xattrs(dir: &Path, dst: &Path, x: &Xattrs, xw: &mut XattrWriter) {
    let parent_inside = dir
        .parent()
        .and_then(|p| p.canonicalize().ok())
        .is_some_and(|p| p.starts_with(dst));
    if !parent_inside {
        return;
    }
    if fs::symlink_metadata(dir).is_err() && fs::create_dir(dir).is_err() {
        return;
    }
    if fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        xw.set_path(dir, x);
    }
}

/// Creates a fifo or device node (`mknod(1)`: the standard library has no call for it). Device
/// nodes need root; without it they are skipped with a warning, as a fifo that cannot be made.
fn unpack_special<R: Read>(
    e: &mut tar::Entry<R>,
    dst: &Path,
    root: bool,
    xw: &mut XattrWriter,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = entry_path(dst, &e.path()?) else {
        return Ok(());
    };
    let precise = precise_mtime(e);
    let x = xattrs::from_entry(e);
    let h = e.header();
    let kind = h.entry_type();
    if kind != tar::EntryType::Fifo && !root {
        tracing::warn!(path = %path.display(), "device node not restored: only root can create it");
        return Ok(());
    }
    let inside = path
        .parent()
        .and_then(|p| {
            fs::create_dir_all(p).ok()?;
            p.canonicalize().ok()
        })
        .is_some_and(|p| p.starts_with(dst));
    if !inside {
        tracing::warn!(path = %path.display(), "entry outside the restore target; skipped");
        return Ok(());
    }
    let mut cmd = std::process::Command::new("mknod");
    cmd.arg(&path);
    match kind {
        tar::EntryType::Fifo => cmd.arg("p"),
        tar::EntryType::Char => cmd.arg("c"),
        _ => cmd.arg("b"),
    };
    if kind != tar::EntryType::Fifo {
        let major = h.device_major()?.unwrap_or(0);
        let minor = h.device_minor()?.unwrap_or(0);
        cmd.arg(major.to_string()).arg(minor.to_string());
    }
    let made = cmd
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output();
    match made {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            tracing::warn!(path = %path.display(), error = %String::from_utf8_lossy(&out.stderr).trim(), "cannot create fifo or device node; skipped");
            return Ok(());
        }
        Err(err) => {
            tracing::warn!(path = %path.display(), error = %err, "cannot run mknod; fifo or device node skipped");
            return Ok(());
        }
    }
    if root && let (Ok(uid), Ok(gid)) = (h.uid(), h.gid()) {
        std::os::unix::fs::lchown(&path, Some(uid as u32), Some(gid as u32))?;
    }
    if !x.is_empty() {
        xw.set_path(&path, &x);
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(h.mode()?))?;
    if let Some(t) = precise.or_else(|| Some(filetime::FileTime::from_unix_time(h.mtime().ok()? as i64, 0))) {
        filetime::set_symlink_file_times(&path, t, t)?;
    }
    Ok(())
}

/// Bytes read from the tar stream and written per `pwrite` when unpacking a regular file. Large
/// writes matter: the kernel's cost per byte of a buffered write falls to about a third from
/// 8 KiB writes (what `tar`'s own unpacking issues) to 64 KiB and more (large page-cache folios).
const COPY_BUF: usize = 1 << 20;
/// Granularity of holes in restored sparse files (the file system block size).
const HOLE_BLOCK: usize = 4096;

/// Writes one regular file (`Regular` or GNU sparse entry) as `tar`'s `unpack_in` would, with the
/// same path rules, but in [`COPY_BUF`]-sized positioned writes. A file that was sparse when it
/// was backed up (a GNU sparse entry) gets holes wherever a block is all zeros, like
/// `cp --sparse=auto`; other files are written in full. Whatever this fast path does not handle
/// (a path with `..`, a missing parent directory, a parent that resolves outside the target)
/// goes to `unpack_in`, which skips or refuses it exactly as before.
fn unpack_file<R: Read>(
    e: &mut tar::Entry<R>,
    dst: &Path,
    root: bool,
    wb: &Writeback,
    buf: &mut [u8],
    xw: &mut XattrWriter,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let Some(file) = entry_path(dst, &e.path()?) else {
        return e.unpack_in(dst).map(drop);
    };
    let inside = match file.parent().map(Path::canonicalize) {
        Some(Ok(p)) => p.starts_with(dst),
        Some(Err(_)) => make_parents_inside(dst, &file),
        None => false,
    };
    let precise = precise_mtime(e);
    if !inside {
        // `tar` sets whole seconds; by path, as the file's mode may deny opening it.
        if e.unpack_in(dst)?
            && let Some(t) = precise
        {
            filetime::set_symlink_file_times(&file, t, t)?;
        }
        return Ok(());
    }
    let failed = |err: std::io::Error| {
        std::io::Error::new(
            err.kind(),
            format!("failed to unpack `{}`: {err}", file.display()),
        )
    };
    let f = File::options()
        .write(true)
        .create_new(true)
        .open(&file)
        .map_err(failed)?;
    let sparse = e.header().entry_type().is_gnu_sparse();
    let size = e.size();
    let (mut pos, mut since) = (0u64, 0u64);
    loop {
        let n = read_full(e, buf)?;
        if n == 0 {
            break;
        }
        write_at(&f, &buf[..n], pos, sparse).map_err(failed)?;
        pos += n as u64;
        since += n as u64;
        if since >= NUDGE_BYTES {
            since = 0;
            wb.nudge(f.try_clone().map_err(failed)?);
        }
    }
    if pos != size {
        return Err(failed(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("archive ended after {pos} of {size} bytes"),
        )));
    }
    if sparse {
        f.set_len(pos).map_err(failed)?;
    }
    // As `tar` does: the owner (root only, before the mode so set-id bits stay), mtime (0
    // becomes 1), then the mode with all its bits.
    if root && let (Ok(uid), Ok(gid)) = (e.header().uid(), e.header().gid()) {
        std::os::unix::fs::fchown(&f, Some(uid as u32), Some(gid as u32)).map_err(failed)?;
    }
    // Extended attributes after the data and the owner (writing and chown drop
    // `security.capability`), before the mode (an ACL's mask and the group bits are one).
    let x = xattrs::from_entry(e);
    if !x.is_empty() {
        xw.set_file(&f, &file, &x);
    }
    if let Some(t) = precise.or_else(|| {
        let s = e.header().mtime().ok()?;
        Some(filetime::FileTime::from_unix_time(s.max(1) as i64, 0))
    }) {
        filetime::set_file_handle_times(&f, Some(t), Some(t)).map_err(failed)?;
    }
    let mode = e.header().mode()?;
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(failed)?;
    Ok(())
}

/// Creates the missing directories above `file` one at a time, each only after the one above it
/// resolved inside `dst` (as `tar`'s `unpack_in` does), so a file whose directory has no entry
/// of its own yet (directories are unpacked last) still takes the fast path of
/// [`unpack_file`], extended attributes included. False when a component resolves outside
/// `dst` or cannot be made: `unpack_in` then refuses or reports it as before.
fn make_parents_inside(dst: &Path, file: &Path) -> bool {
    let Some(rel) = file.parent().and_then(|p| p.strip_prefix(dst).ok()) else {
        return false;
    };
    let mut cur = dst.to_path_buf();
    for c in rel.components() {
        let Component::Normal(c) = c else {
            return false;
        };
        cur.push(c);
        if fs::symlink_metadata(&cur).is_err() && fs::create_dir(&cur).is_err() {
            return false;
        }
        if !cur.canonicalize().is_ok_and(|p| p.starts_with(dst)) {
            return false;
        }
    }
    true
}

/// Writes `data` at `pos`; with `holes`, blocks of zeros are skipped (left as holes).
fn write_at(f: &File, data: &[u8], pos: u64, holes: bool) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    if !holes {
        return f.write_all_at(data, pos);
    }
    let mut blocks = data.chunks(HOLE_BLOCK).peekable();
    let mut off = 0usize;
    while let Some(b) = blocks.next() {
        let zero = is_zero(b);
        let mut len = b.len();
        while let Some(next) = blocks.next_if(|n| is_zero(n) == zero) {
            len += next.len();
        }
        if !zero {
            f.write_all_at(&data[off..off + len], pos + off as u64)?;
        }
        off += len;
    }
    Ok(())
}

/// Where the `tar` crate's `unpack_in(dst)` puts an entry; `None` for entries it skips (a `..`
/// component, or nothing but `.` and `/`). Only the path: whether its parent resolves inside
/// `dst` is checked where it is used.
fn entry_path(dst: &Path, entry: &Path) -> Option<PathBuf> {
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

/// Whether a restore error only says that the unpacking thread stopped reading.
fn stopped_by_unpacker(e: &Error) -> bool {
    matches!(e, Error::Io { cause, .. } if cause.kind() == std::io::ErrorKind::BrokenPipe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::chunker::tests::seeded_bytes;

    #[test]
    fn tar_entry_path_matches_tar_rules() {
        let d = Path::new("/t");
        assert_eq!(entry_path(d, Path::new("a/b")), Some(PathBuf::from("/t/a/b")));
        assert_eq!(entry_path(d, Path::new("/x/./y")), Some(PathBuf::from("/t/x/y")));
        assert_eq!(entry_path(d, Path::new("a/../../e")), None);
        assert_eq!(entry_path(d, Path::new(".")), None);
    }

    #[test]
    fn tar_channel_reader_turns_vanished_sender_into_read_error() {
        let (tx, rx) = sync_channel(4);
        tx.send(Msg::Data(b"abc".to_vec())).unwrap();
        drop(tx);
        let mut r = ChanReader::new(rx);
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).unwrap_err();
        assert!(e.to_string().contains("stopped unexpectedly"), "{e}");
        assert_eq!(out, b"abc", "bytes before the failure still arrive");
    }

    fn small_store(dir: &Path) -> ChunkStore {
        use crate::storage::{ChunkerParams, OpenOptions, RepoParams};
        let repo = dir.join("repo").to_str().unwrap().to_string();
        let params = RepoParams {
            chunker: ChunkerParams {
                min: 4 << 10,
                avg: 16 << 10,
                max: 64 << 10,
            },
            ..RepoParams::default()
        };
        ChunkStore::init(&repo, params, None, None).unwrap();
        ChunkStore::open(&repo, OpenOptions::default()).unwrap()
    }

    #[test]
    fn tar_directory_backup_cuts_the_stream_exactly_as_a_reader_backup_does() {
        use crate::storage::NoProgress;
        let d = tempfile::tempdir().unwrap();
        let store = small_store(d.path());
        // Several 4 MiB blocks, files of odd sizes, so cuts fall across block boundaries.
        let src = d.path().join("tree");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("a.bin"), seeded_bytes(1, 5_000_123)).unwrap();
        fs::write(src.join("sub/b.bin"), seeded_bytes(2, 3_333_333)).unwrap();
        fs::write(src.join("sub/c.txt"), b"small").unwrap();
        fs::write(src.join("z.bin"), seeded_bytes(3, 4 << 20)).unwrap();
        let mut stream = Vec::new();
        write_tar(&src, &mut stream).unwrap();
        let tags = BTreeMap::new();
        let from_reader = store
            .backup_reader(&stream[..], "tree", &tags, SourceKind::Dir, &NoProgress)
            .unwrap();
        let from_dir = store.backup_dir(&src, "tree", &tags, &NoProgress).unwrap();
        assert_eq!(from_dir.bytes_read, stream.len() as u64);
        assert_eq!(from_dir.chunks, from_reader.chunks);
        assert_eq!(
            from_dir.new_chunks, 0,
            "the same stream must give the same chunks: {from_dir:?}"
        );
        let mut restored = Vec::new();
        store
            .restore_to_writer(&from_dir.snapshot, &mut restored, &NoProgress)
            .unwrap();
        assert!(restored == stream);
    }

    #[test]
    fn tar_block_stream_failure_or_vanished_producer_fails_the_backup() {
        use crate::storage::NoProgress;
        let d = tempfile::tempdir().unwrap();
        let store = small_store(d.path());
        let (head, block) = store.block_layout();
        let tags = BTreeMap::new();
        for fail in [true, false] {
            let (tx, rx) = sync_channel(4);
            let (recycle, _recycled) = sync_channel(4);
            let mut first = vec![0u8; head];
            first.extend_from_slice(&seeded_bytes(4, block));
            tx.send(Block::Data(first)).unwrap();
            if fail {
                tx.send(Block::Failed(std::io::Error::other("disk gone")))
                    .unwrap();
            }
            drop(tx);
            let blocks = BlockStream { rx, recycle, head };
            let e = store
                .backup_blocks(blocks, "broken", &tags, SourceKind::Dir, &NoProgress)
                .unwrap_err()
                .to_string();
            let want = if fail { "disk gone" } else { "stopped unexpectedly" };
            assert!(e.contains(want), "{e}");
        }
        assert!(store.list().unwrap().is_empty(), "no snapshot may be recorded");
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

    fn regular(size: usize) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(size as u64);
        h.set_mode(0o640);
        h.set_mtime(1_700_000_000);
        h
    }

    fn unpack_bytes(bytes: &[u8], dst: &Path) -> std::io::Result<()> {
        let wb = Writeback::start();
        unpack_tree(&mut tar::Archive::new(bytes), dst, &PathFilter::default(), &wb)?;
        wb.finish()
    }

    #[test]
    fn tar_unpack_of_regular_files_keeps_tar_path_rules() {
        let d = tempfile::tempdir().unwrap();
        let (outside, dst) = (d.path().join("outside"), d.path().join("dst"));
        fs::create_dir(&outside).unwrap();
        fs::create_dir(&dst).unwrap();

        // A symlink pointing out of the target, then a file through it: refused, nothing
        // written outside.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "link", &outside).unwrap();
        b.append_data(&mut regular(3), "link/escaped", &b"bad"[..])
            .unwrap();
        let e = unpack_bytes(&b.into_inner().unwrap(), &dst).unwrap_err();
        assert!(e.to_string().contains("outside of destination"), "{e}");
        assert!(!outside.join("escaped").exists());

        // A `..` path is skipped (as tar does); a file whose directories have no entries of
        // their own gets them created; the files around them are written with mode and mtime.
        let dst = d.path().join("dst2");
        fs::create_dir(&dst).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = regular(2);
        h.as_old_mut().name[..5].copy_from_slice(b"../up");
        h.set_cksum();
        b.append(&h, &b"up"[..]).unwrap();
        b.append_data(&mut regular(5), "new/sub/f", &b"hello"[..])
            .unwrap();
        b.append_data(&mut regular(0), "empty", &b""[..]).unwrap();
        unpack_bytes(&b.into_inner().unwrap(), &dst).unwrap();
        assert!(!d.path().join("up").exists());
        assert_eq!(fs::read(dst.join("new/sub/f")).unwrap(), b"hello");
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(dst.join("empty")).unwrap();
        assert_eq!((m.len(), m.mode() & 0o7777, m.mtime()), (0, 0o640, 1_700_000_000));

        // An existing file is never overwritten, and a truncated archive is an error.
        let mut b = tar::Builder::new(Vec::new());
        b.append_data(&mut regular(3), "empty", &b"new"[..]).unwrap();
        let e = unpack_bytes(&b.into_inner().unwrap(), &dst).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{e}");
        assert_eq!(fs::read(dst.join("empty")).unwrap(), b"");
        let mut b = tar::Builder::new(Vec::new());
        b.append_data(&mut regular(4000), "cut", &vec![7u8; 4000][..])
            .unwrap();
        let bytes = b.into_inner().unwrap();
        assert!(unpack_bytes(&bytes[..1024], &dst).is_err());
    }

    #[test]
    fn tar_unpack_writes_holes_only_for_zero_blocks() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let f = File::create(&p).unwrap();
        let mut data = vec![1u8; 5 * HOLE_BLOCK + 100];
        data[HOLE_BLOCK..3 * HOLE_BLOCK].fill(0);
        data[4 * HOLE_BLOCK + 1] = 0; // a zero byte inside a data block stays data
        write_at(&f, &data, 0, true).unwrap();
        let tail = vec![0u8; 2 * HOLE_BLOCK];
        write_at(&f, &tail, data.len() as u64, true).unwrap();
        f.set_len((data.len() + tail.len()) as u64).unwrap();
        let mut want = data.clone();
        want.extend_from_slice(&tail);
        assert_eq!(fs::read(&p).unwrap(), want);
        // Four blocks hold data (one of them partly); the other four of the eight are holes.
        use std::os::unix::fs::MetadataExt;
        let allocated = fs::metadata(&p).unwrap().blocks() * 512;
        assert!(allocated <= 5 * HOLE_BLOCK as u64, "{allocated} bytes allocated");
    }

    /// The pax `mtime` header as it was written before extended attributes were recorded (kept
    /// here verbatim: an entry without attributes must still get exactly these bytes).
    fn old_pax_mtime(b: &mut tar::Builder<impl Write>, meta: &fs::Metadata) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let (secs, nsec) = (meta.mtime(), meta.mtime_nsec());
        if nsec <= 0 || secs < 0 {
            return Ok(());
        }
        let body = format!(" mtime={secs}.{nsec:09}\n");
        let mut len = body.len() + 1;
        while len.to_string().len() + body.len() != len {
            len = len.to_string().len() + body.len();
        }
        let record = format!("{len}{body}");
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_mode(0o644);
        h.set_size(record.len() as u64);
        b.append_data(&mut h, "././@PaxHeader", record.as_bytes())
    }

    /// What `write_tar` wrote before files were read in large pieces and extended attributes
    /// were recorded: the `tar` crate alone.
    fn reference_tar(root: &Path, rel: &Path, b: &mut tar::Builder<Vec<u8>>) {
        for path in sorted_entries(&root.join(rel)).unwrap() {
            let name = rel.join(path.file_name().unwrap());
            old_pax_mtime(b, &fs::symlink_metadata(&path).unwrap()).unwrap();
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                b.append_dir(&name, &path).unwrap();
                reference_tar(root, &name, b);
            } else {
                b.append_path_with_name(&path, &name).unwrap();
            }
        }
    }

    #[test]
    fn tar_stream_is_byte_for_byte_the_tar_crates_archive() {
        use std::io::{Seek, SeekFrom};
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("tree");
        let deep = src.join("a-directory-with-a-rather-long-name/and-another-one-below-it-too");
        fs::create_dir_all(&deep).unwrap();
        fs::write(src.join("empty"), b"").unwrap();
        fs::write(src.join("one"), b"1").unwrap();
        fs::write(src.join("big.bin"), seeded_bytes(7, 3 * READ_BUF + 4321)).unwrap();
        // Over 100 bytes of path: a GNU long-name entry comes first.
        fs::write(
            deep.join("file-with-a-name-long-enough-for-a-gnu-long-name.conf"),
            b"x=1\n",
        )
        .unwrap();
        std::os::unix::fs::symlink("one", src.join("link")).unwrap();
        let mut sparse = File::create(src.join("sparse.raw")).unwrap();
        sparse.set_len(8 << 20).unwrap();
        sparse.seek(SeekFrom::Start(5 << 20)).unwrap();
        sparse.write_all(&seeded_bytes(8, 10_000)).unwrap();
        drop(sparse);
        let mut ours = Vec::new();
        write_tar(&src, &mut ours).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        b.mode(tar::HeaderMode::Complete);
        b.follow_symlinks(false);
        reference_tar(&src, Path::new(""), &mut b);
        let reference = b.into_inner().unwrap();
        assert_eq!(ours.len(), reference.len());
        assert!(
            ours == reference,
            "the stream changed: old snapshots would stop deduplicating"
        );
        let kinds: Vec<_> = tar::Archive::new(&ours[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().header().entry_type())
            .collect();
        assert!(kinds.contains(&tar::EntryType::GNUSparse), "{kinds:?}");
    }

    #[test]
    fn tar_reads_exactly_the_size_in_the_header_when_a_file_changes_size() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        fs::write(&p, b"0123456789").unwrap();
        let exactly = |left: u64| {
            let mut out = Vec::new();
            let mut notes = Incomplete::default();
            Exactly {
                inner: File::open(&p).unwrap().take(left),
                size: left,
                left,
                path: &p,
                notes: &mut notes,
            }
            .read_to_end(&mut out)
            .unwrap();
            (out, notes.shrunk)
        };
        let (grew, shrunk) = exactly(4);
        assert_eq!(grew, b"0123", "a file that grew is cut at its recorded size");
        assert!(shrunk.is_empty(), "{shrunk:?}");
        let (shrank, shrunk) = exactly(13);
        assert_eq!(shrank, b"0123456789\0\0\0", "a file that shrank is padded");
        assert_eq!(
            shrunk,
            [ShrunkFile {
                path: p.display().to_string(),
                size: 13,
                read: 10
            }],
            "and reported"
        );
    }

    /// Sets a `user.*` attribute, or says why the file system refuses it.
    fn set_user_xattr(p: &Path, name: &str, value: &[u8]) -> bool {
        match rustix::fs::lsetxattr(p, name, value, rustix::fs::XattrFlags::empty()) {
            Ok(()) => true,
            Err(e) => {
                println!("SKIP: the test file system refuses user xattrs ({e})");
                false
            }
        }
    }

    #[test]
    fn tar_records_xattrs_as_sorted_pax_records_and_restores_them() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("tree");
        fs::create_dir_all(src.join("dir")).unwrap();
        fs::write(src.join("dir/f"), b"data").unwrap();
        fs::write(src.join("plain"), b"no attributes").unwrap();
        if !set_user_xattr(&src.join("dir/f"), "user.zeta", b"last") {
            return;
        }
        set_user_xattr(&src.join("dir/f"), "user.alpha", &[0, 1, b'\n', 0xff]);
        set_user_xattr(&src.join("dir"), "user.empty", b"");
        // Whole seconds: only the attributes go into the pax header.
        let t = filetime::FileTime::from_unix_time(1_700_000_000, 0);
        for p in ["dir", "dir/f", "plain"] {
            filetime::set_symlink_file_times(src.join(p), t, t).unwrap();
        }
        let mut one = Vec::new();
        write_tar(&src, &mut one).unwrap();
        let mut two = Vec::new();
        write_tar(&src, &mut two).unwrap();
        assert!(one == two, "the stream must be deterministic");

        let mut a = tar::Archive::new(&one[..]);
        let mut seen = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let keys: Vec<String> = e
                .pax_extensions()
                .unwrap()
                .map(|x| {
                    x.flatten()
                        .map(|r| String::from_utf8_lossy(r.key_bytes()).into_owned())
                        .collect()
                })
                .unwrap_or_default();
            seen.push((e.path().unwrap().display().to_string(), keys));
        }
        assert_eq!(
            seen,
            [
                ("dir".to_string(), vec!["SCHILY.xattr.user.empty".to_string()]),
                (
                    "dir/f".to_string(),
                    vec![
                        // A newline in the value: base64, see `pax_records`.
                        "LIBARCHIVE.xattr.user.alpha".to_string(),
                        "SCHILY.xattr.user.zeta".to_string()
                    ]
                ),
                ("plain".to_string(), vec![]),
            ]
        );

        let dst = d.path().join("dst");
        fs::create_dir(&dst).unwrap();
        unpack_bytes(&one, &dst).unwrap();
        let get = |p: &str, n: &str| {
            let mut v = vec![0u8; 256];
            let len =
                rustix::fs::lgetxattr(dst.join(p), n, &mut v[..]).unwrap_or_else(|e| panic!("{p} {n}: {e}"));
            v.truncate(len);
            v
        };
        assert_eq!(get("dir/f", "user.zeta"), b"last");
        assert_eq!(get("dir/f", "user.alpha"), [0, 1, b'\n', 0xff]);
        assert_eq!(get("dir", "user.empty"), b"");
        assert_eq!(
            rustix::fs::llistxattr_query(dst.join("plain")).unwrap(),
            0,
            "no attributes invented"
        );
        assert_eq!(fs::metadata(dst.join("dir/f")).unwrap().mtime(), 1_700_000_000);
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
