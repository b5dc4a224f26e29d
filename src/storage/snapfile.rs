//! Snapshot objects (`snapshots/<uid>`): the source of truth for what a snapshot contains.
//!
//! ```text
//! "HASNAP\r\n" (8, never changes) | version u8 = 1 | 7 zero bytes
//! SnapshotMeta blob (JSON) | SnapshotEntries blob ... | SnapshotEnd blob (JSON totals)
//! ```
//! Each entries blob holds up to `FRAME_ENTRIES` entries of 37 bytes: id(32) len(u32) flags(u8,
//! bit 0 = all zeros). Frames keep memory flat for multi-terabyte snapshots.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::blob::{BLOB_HEADER_LEN, BlobHeader, BlobKind, ChunkId, Codec, Scratch};
use super::error::{Error, Result};

/// Snapshot object magic.
pub const SNAP_MAGIC: [u8; 8] = *b"HASNAP\r\n";
const SNAP_VERSION: u8 = 1;
const ENTRY_LEN: usize = 37;
/// Entries per frame.
pub const FRAME_ENTRIES: usize = 65536;

/// What a snapshot's stream is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// One regular file.
    File,
    /// A directory, stored as a deterministic tar stream.
    Dir,
    /// Standard input or a reader handed to the library.
    Stream,
}

impl SourceKind {
    /// Lowercase name.
    pub fn as_str(&self) -> &'static str {
        match self {
            SourceKind::File => "file",
            SourceKind::Dir => "dir",
            SourceKind::Stream => "stream",
        }
    }

    /// Parses `as_str` output.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "file" => SourceKind::File,
            "dir" => SourceKind::Dir,
            "stream" => SourceKind::Stream,
            _ => return None,
        })
    }
}

/// Snapshot metadata stored at the start of the object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Unique id (32 hex characters).
    pub uid: String,
    /// Backup name.
    pub name: String,
    /// Start time, Unix microseconds (orders backups taken within one second).
    pub time: i64,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Source kind.
    pub kind: SourceKind,
}

/// Totals stored at the end of the object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotEnd {
    /// Number of entries.
    pub entries: u64,
    /// Logical size in bytes.
    pub size: u64,
}

/// One chunk reference of a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Chunk id.
    pub id: ChunkId,
    /// Plaintext length.
    pub len: u32,
    /// Whether the chunk is all zeros (restore may seek instead of writing).
    pub zero: bool,
}

/// Streams a snapshot object into a staging file.
pub struct SnapWriter<'a> {
    out: BufWriter<File>,
    path: PathBuf,
    codec: &'a Codec,
    scratch: Scratch,
    frame: Vec<u8>,
    blob: Vec<u8>,
    end: SnapshotEnd,
}

impl<'a> SnapWriter<'a> {
    /// Starts a staging file in `dir` with the metadata.
    pub fn create(dir: &Path, codec: &'a Codec, meta: &SnapshotMeta) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io("creating staging directory", dir.display(), e))?;
        let path = dir.join(format!(".snap-{}", meta.uid));
        let f = File::create(&path).map_err(|e| Error::io("creating", path.display(), e))?;
        let mut w = SnapWriter {
            out: BufWriter::with_capacity(1 << 20, f),
            path,
            codec,
            scratch: codec.scratch()?,
            frame: Vec::new(),
            blob: Vec::new(),
            end: SnapshotEnd::default(),
        };
        let mut head = SNAP_MAGIC.to_vec();
        head.push(SNAP_VERSION);
        head.extend_from_slice(&[0u8; 7]);
        w.write(&head)?;
        let json = serde_json::to_vec(meta).map_err(|e| Error::Internal(e.to_string()))?;
        w.put_blob(BlobKind::SnapshotMeta, &json)?;
        Ok(w)
    }

    fn write(&mut self, b: &[u8]) -> Result<()> {
        self.out
            .write_all(b)
            .map_err(|e| Error::io("writing", self.path.display(), e))
    }

    fn put_blob(&mut self, kind: BlobKind, plain: &[u8]) -> Result<()> {
        self.blob.clear();
        let id = self.codec.id(plain);
        let mut blob = std::mem::take(&mut self.blob);
        self.codec.seal(kind, &id, plain, &mut self.scratch, &mut blob)?;
        let r = self.write(&blob);
        self.blob = blob;
        r
    }

    /// Appends one entry.
    pub fn push(&mut self, e: &Entry) -> Result<()> {
        self.frame.extend_from_slice(&e.id.0);
        self.frame.extend_from_slice(&e.len.to_le_bytes());
        self.frame.push(u8::from(e.zero));
        self.end.entries += 1;
        self.end.size += u64::from(e.len);
        if self.frame.len() >= FRAME_ENTRIES * ENTRY_LEN {
            self.flush_frame()?;
        }
        Ok(())
    }

    fn flush_frame(&mut self) -> Result<()> {
        if !self.frame.is_empty() {
            let frame = std::mem::take(&mut self.frame);
            self.put_blob(BlobKind::SnapshotEntries, &frame)?;
        }
        Ok(())
    }

    /// Writes the totals, fsyncs, and returns the staging path and totals.
    pub fn finish(mut self) -> Result<(PathBuf, SnapshotEnd)> {
        self.flush_frame()?;
        let json = serde_json::to_vec(&self.end).map_err(|e| Error::Internal(e.to_string()))?;
        self.put_blob(BlobKind::SnapshotEnd, &json)?;
        let f = self
            .out
            .into_inner()
            .map_err(|e| Error::io("writing", self.path.display(), e.into_error()))?;
        f.sync_all()
            .map_err(|e| Error::io("syncing", self.path.display(), e))?;
        Ok((self.path, self.end))
    }

    /// Path of the staging file (to remove it on failure).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads a snapshot object frame by frame.
pub struct SnapReader<'a> {
    r: Box<dyn Read + Send>,
    codec: &'a Codec,
    scratch: Scratch,
    what: String,
    /// The metadata.
    pub meta: SnapshotMeta,
    /// Totals, once the end was reached.
    pub end: Option<SnapshotEnd>,
    seen: SnapshotEnd,
}

impl<'a> SnapReader<'a> {
    /// Reads the header and metadata.
    pub fn open(mut r: Box<dyn Read + Send>, codec: &'a Codec, what: String) -> Result<Self> {
        let mut head = [0u8; 16];
        read_exact(&mut r, &mut head, &what)?;
        if head[..8] != SNAP_MAGIC {
            return Err(Error::corrupt(what, "not a snapshot object (bad magic)"));
        }
        if head[8] > SNAP_VERSION {
            return Err(Error::corrupt(
                what,
                "snapshot object version is newer than this program",
            ));
        }
        let mut scratch = codec.scratch()?;
        let (_, json) = read_blob(&mut r, codec, &mut scratch, BlobKind::SnapshotMeta, &what)?;
        let meta: SnapshotMeta = serde_json::from_slice(&json)
            .map_err(|e| Error::corrupt(what.clone(), format!("metadata: {e}")))?;
        Ok(SnapReader {
            r,
            codec,
            scratch,
            what,
            meta,
            end: None,
            seen: SnapshotEnd::default(),
        })
    }

    /// The next frame of entries, or `None` after the end blob (which is checked against the
    /// entries seen).
    pub fn next_frame(&mut self) -> Result<Option<Vec<Entry>>> {
        if self.end.is_some() {
            return Ok(None);
        }
        let mut header = [0u8; BLOB_HEADER_LEN];
        read_exact(&mut self.r, &mut header, &self.what)?;
        let h = BlobHeader::parse(&header, &|| self.what.clone())?;
        let mut blob = header.to_vec();
        blob.resize(h.total_len(), 0);
        read_exact(&mut self.r, &mut blob[BLOB_HEADER_LEN..], &self.what)?;
        let what = self.what.clone();
        match h.kind {
            BlobKind::SnapshotEntries => {
                let (_, frame) = self
                    .codec
                    .open(&blob, h.kind, &mut self.scratch, &|| what.clone())?;
                if !frame.len().is_multiple_of(ENTRY_LEN) {
                    return Err(Error::corrupt(what, "entry frame has a partial entry"));
                }
                let entries: Vec<Entry> = frame
                    .chunks_exact(ENTRY_LEN)
                    .map(|e| {
                        let mut id = [0u8; 32];
                        id.copy_from_slice(&e[..32]);
                        Entry {
                            id: ChunkId(id),
                            len: u32::from_le_bytes([e[32], e[33], e[34], e[35]]),
                            zero: e[36] & 1 != 0,
                        }
                    })
                    .collect();
                self.seen.entries += entries.len() as u64;
                self.seen.size += entries.iter().map(|e| u64::from(e.len)).sum::<u64>();
                Ok(Some(entries))
            }
            BlobKind::SnapshotEnd => {
                let (_, json) = self
                    .codec
                    .open(&blob, h.kind, &mut self.scratch, &|| what.clone())?;
                let end: SnapshotEnd = serde_json::from_slice(&json)
                    .map_err(|e| Error::corrupt(what.clone(), format!("end: {e}")))?;
                if end != self.seen {
                    return Err(Error::corrupt(
                        what,
                        "entry count or size does not match the end record",
                    ));
                }
                self.end = Some(end);
                Ok(None)
            }
            other => Err(Error::corrupt(what, format!("unexpected {other:?} blob"))),
        }
    }

    /// Reads the rest of the object (frames then end) calling `f` per entry.
    pub fn for_each(&mut self, mut f: impl FnMut(&Entry) -> Result<()>) -> Result<SnapshotEnd> {
        while let Some(frame) = self.next_frame()? {
            for e in &frame {
                f(e)?;
            }
        }
        self.end
            .ok_or_else(|| Error::corrupt(self.what.clone(), "no end record"))
    }
}

fn read_exact(r: &mut Box<dyn Read + Send>, buf: &mut [u8], what: &str) -> Result<()> {
    let n = super::backend::read_full(r.as_mut(), buf).map_err(|e| Error::io("reading", what, e))?;
    if n < buf.len() {
        return Err(Error::corrupt(what, "snapshot object is truncated"));
    }
    Ok(())
}

fn read_blob(
    r: &mut Box<dyn Read + Send>,
    codec: &Codec,
    s: &mut Scratch,
    kind: BlobKind,
    what: &str,
) -> Result<(BlobHeader, Vec<u8>)> {
    let mut header = [0u8; BLOB_HEADER_LEN];
    read_exact(r, &mut header, what)?;
    let h = BlobHeader::parse(&header, &|| what.to_string())?;
    let mut blob = header.to_vec();
    blob.resize(h.total_len(), 0);
    read_exact(r, &mut blob[BLOB_HEADER_LEN..], what)?;
    codec.open(&blob, kind, s, &|| what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapfile_round_trip_over_several_frames_and_truncation_detected() {
        let d = tempfile::tempdir().unwrap();
        let codec = Codec::new(3, None);
        let meta = SnapshotMeta {
            uid: "ab".repeat(16),
            name: "vm-100".into(),
            time: 1_700_000_000_000_000,
            tags: BTreeMap::from([("k".to_string(), "v".to_string())]),
            kind: SourceKind::File,
        };
        let mut w = SnapWriter::create(d.path(), &codec, &meta).unwrap();
        let n = FRAME_ENTRIES + 10;
        for i in 0..n {
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&(i as u64).to_le_bytes());
            w.push(&Entry {
                id: ChunkId(id),
                len: i as u32,
                zero: i % 7 == 0,
            })
            .unwrap();
        }
        let (path, end) = w.finish().unwrap();
        assert_eq!(end.entries, n as u64);
        let bytes = std::fs::read(&path).unwrap();
        let mut r =
            SnapReader::open(Box::new(std::io::Cursor::new(bytes.clone())), &codec, "s".into()).unwrap();
        assert_eq!(r.meta, meta);
        let mut count = 0;
        let got = r
            .for_each(|e| {
                assert_eq!(e.len as usize, count);
                assert_eq!(e.zero, count % 7 == 0);
                count += 1;
                Ok(())
            })
            .unwrap();
        assert_eq!(got, end);
        let cut = bytes[..bytes.len() - 5].to_vec();
        let mut r = SnapReader::open(Box::new(std::io::Cursor::new(cut)), &codec, "s".into()).unwrap();
        assert!(r.for_each(|_| Ok(())).is_err());
    }
}
