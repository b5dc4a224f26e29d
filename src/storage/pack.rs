//! Pack files: many blobs in one object, so a large repository is not millions of files.
//!
//! ```text
//! "HAPACK\r\n" (8, never changes) | version u8 = 1 | 7 zero bytes
//! blob | blob | ...                              (see `blob`)
//! trailer blob (kind PackTrailer): per blob 44 bytes = id(32) offset(u32) len(u32) raw_len(u32)
//! trailer blob length u32 | "HAPKEND\n" (8)
//! ```
//! The trailer lets `reindex` learn a pack's contents from its tail alone; if it is damaged the
//! blob headers can be walked instead.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rand::RngCore;

use super::blob::{BLOB_HEADER_LEN, BlobHeader, BlobKind, ChunkId, Codec, Scratch};
use super::error::{Error, Result};

/// Pack magic.
pub const PACK_MAGIC: [u8; 8] = *b"HAPACK\r\n";
/// Pack format version written by this build.
pub const PACK_VERSION: u8 = 1;
/// Bytes before the first blob.
pub const PACK_HEADER_LEN: usize = 16;
/// End magic.
pub const PACK_END_MAGIC: [u8; 8] = *b"HAPKEND\n";
/// Bytes after the trailer blob.
pub const PACK_FOOTER_LEN: usize = 12;
const ENTRY_LEN: usize = 44;

/// One blob in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    /// Chunk id.
    pub id: ChunkId,
    /// Offset of the blob header in the pack.
    pub offset: u32,
    /// Blob length (header plus payload).
    pub len: u32,
    /// Plaintext length.
    pub raw_len: u32,
}

/// A random pack name (32 hex characters).
pub fn new_pack_name() -> String {
    let mut r = [0u8; 16];
    rand::rng().fill_bytes(&mut r);
    hex::encode(r)
}

/// Accumulates sealed blobs into one pack in memory.
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
}

impl PackBuilder {
    /// An empty pack with room for about `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity + (1 << 20));
        buf.extend_from_slice(&pack_header());
        PackBuilder {
            buf,
            entries: Vec::new(),
        }
    }

    /// Appends an already sealed blob.
    pub fn add(&mut self, id: ChunkId, raw_len: u32, blob: &[u8]) {
        let offset = self.buf.len() as u32;
        self.buf.extend_from_slice(blob);
        self.entries.push(PackEntry {
            id,
            offset,
            len: blob.len() as u32,
            raw_len,
        });
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends trailer and footer; returns the pack bytes and its entries.
    pub fn finish(mut self, codec: &Codec, s: &mut Scratch) -> Result<(Vec<u8>, Vec<PackEntry>)> {
        append_trailer(&self.entries, codec, s, &mut self.buf)?;
        Ok((self.buf, self.entries))
    }
}

fn pack_header() -> [u8; PACK_HEADER_LEN] {
    let mut h = [0u8; PACK_HEADER_LEN];
    h[..8].copy_from_slice(&PACK_MAGIC);
    h[8] = PACK_VERSION;
    h
}

/// Appends the trailer blob listing `entries` and the footer to `out`.
fn append_trailer(entries: &[PackEntry], codec: &Codec, s: &mut Scratch, out: &mut Vec<u8>) -> Result<()> {
    let mut toc = Vec::with_capacity(entries.len() * ENTRY_LEN);
    for e in entries {
        toc.extend_from_slice(&e.id.0);
        toc.extend_from_slice(&e.offset.to_le_bytes());
        toc.extend_from_slice(&e.len.to_le_bytes());
        toc.extend_from_slice(&e.raw_len.to_le_bytes());
    }
    let n = codec.seal(BlobKind::PackTrailer, &codec.id(&toc), &toc, s, out)?;
    out.extend_from_slice(&(n as u32).to_le_bytes());
    out.extend_from_slice(&PACK_END_MAGIC);
    Ok(())
}

/// A pack written straight into a staging file as blobs arrive (the same bytes as
/// [`PackBuilder`]), so a backup holds no pack in memory. The file is removed when this value
/// (or the [`StagedPack`] it becomes) is dropped before the backend took it.
pub struct PackFile {
    out: BufWriter<File>,
    staged: StagedPack,
    len: u64,
}

/// A finished pack in a staging file, ready for `Backend::put_file`.
pub struct StagedPack {
    /// Pack name (32 hex characters).
    pub name: String,
    /// The staging file.
    pub path: PathBuf,
    /// Its blobs.
    pub entries: Vec<PackEntry>,
}

impl Drop for StagedPack {
    fn drop(&mut self) {
        // After `put_file` the file was renamed away and this fails harmlessly.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Prefix of pack staging files (swept by `gc` when a crash left them).
pub const STAGED_PACK_PREFIX: &str = ".pack-";

impl PackFile {
    /// Starts a new pack in `dir` (created if needed).
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io("creating staging directory", dir.display(), e))?;
        let name = new_pack_name();
        let path = dir.join(format!("{STAGED_PACK_PREFIX}{name}"));
        let f = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io("creating", path.display(), e))?;
        let mut pf = PackFile {
            out: BufWriter::with_capacity(256 << 10, f),
            staged: StagedPack {
                name,
                path,
                entries: Vec::new(),
            },
            len: 0,
        };
        pf.write(&pack_header())?;
        Ok(pf)
    }

    fn write(&mut self, b: &[u8]) -> Result<()> {
        self.out
            .write_all(b)
            .map_err(|e| Error::io("writing", self.staged.path.display(), e))?;
        self.len += b.len() as u64;
        Ok(())
    }

    /// Appends an already sealed blob.
    pub fn add(&mut self, id: ChunkId, raw_len: u32, blob: &[u8]) -> Result<()> {
        let offset = u32::try_from(self.len).map_err(|_| Error::Internal("pack over 4 GiB".into()))?;
        self.write(blob)?;
        self.staged.entries.push(PackEntry {
            id,
            offset,
            len: blob.len() as u32,
            raw_len,
        });
        Ok(())
    }

    /// Bytes so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no blob was added.
    pub fn is_empty(&self) -> bool {
        self.staged.entries.is_empty()
    }

    /// Appends trailer and footer and flushes (not fsyncs: `put_file` does).
    pub fn finish(mut self, codec: &Codec, s: &mut Scratch) -> Result<StagedPack> {
        let mut tail = Vec::new();
        append_trailer(&self.staged.entries, codec, s, &mut tail)?;
        self.write(&tail)?;
        self.out
            .flush()
            .map_err(|e| Error::io("writing", self.staged.path.display(), e))?;
        let PackFile { out, staged, .. } = self;
        drop(out);
        Ok(staged)
    }
}

/// Reads the trailer length from a pack's last `PACK_FOOTER_LEN` bytes.
pub fn footer_trailer_len(footer: &[u8], what: &str) -> Result<usize> {
    if footer.len() != PACK_FOOTER_LEN || footer[4..] != PACK_END_MAGIC {
        return Err(Error::corrupt(what, "pack footer missing (truncated pack?)"));
    }
    Ok(u32::from_le_bytes([footer[0], footer[1], footer[2], footer[3]]) as usize)
}

/// Decodes a trailer blob into entries.
pub fn parse_trailer(codec: &Codec, blob: &[u8], s: &mut Scratch, what: &str) -> Result<Vec<PackEntry>> {
    let (_, toc) = codec.open(blob, BlobKind::PackTrailer, s, &|| format!("{what} trailer"))?;
    if !toc.len().is_multiple_of(ENTRY_LEN) {
        return Err(Error::corrupt(
            what,
            "trailer length is not a multiple of an entry",
        ));
    }
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    Ok(toc
        .chunks_exact(ENTRY_LEN)
        .map(|e| {
            let mut id = [0u8; 32];
            id.copy_from_slice(&e[..32]);
            PackEntry {
                id: ChunkId(id),
                offset: u32_at(e, 32),
                len: u32_at(e, 36),
                raw_len: u32_at(e, 40),
            }
        })
        .collect())
}

/// Checks the pack header.
pub fn check_header(bytes: &[u8], what: &str) -> Result<()> {
    if bytes.len() < PACK_HEADER_LEN || bytes[..8] != PACK_MAGIC {
        return Err(Error::corrupt(what, "not a pack (bad magic)"));
    }
    if bytes[8] > PACK_VERSION {
        return Err(Error::corrupt(
            what,
            format!("pack version {} is newer than this program", bytes[8]),
        ));
    }
    Ok(())
}

/// Walks the blob headers of a whole pack (when its trailer is damaged). Stops at the first
/// header that does not parse; returns the chunk entries found before it.
pub fn scan_blobs(bytes: &[u8]) -> Vec<PackEntry> {
    let mut out = Vec::new();
    let mut pos = PACK_HEADER_LEN;
    while pos + BLOB_HEADER_LEN <= bytes.len() {
        let Ok(h) = BlobHeader::parse(&bytes[pos..], &String::new) else {
            break;
        };
        if h.kind != BlobKind::Chunk || pos + h.total_len() > bytes.len() {
            break;
        }
        out.push(PackEntry {
            id: h.id,
            offset: pos as u32,
            len: h.total_len() as u32,
            raw_len: h.raw_len,
        });
        pos += h.total_len();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_trailer_round_trip_and_scan_agree() {
        let codec = Codec::new(3, None);
        let mut s = codec.scratch().unwrap();
        let mut pb = PackBuilder::new(1 << 20);
        for i in 0..5u8 {
            let data = vec![i; 1000 + i as usize];
            let id = codec.id(&data);
            let mut blob = Vec::new();
            codec
                .seal(BlobKind::Chunk, &id, &data, &mut s, &mut blob)
                .unwrap();
            pb.add(id, data.len() as u32, &blob);
        }
        let (bytes, entries) = pb.finish(&codec, &mut s).unwrap();
        check_header(&bytes, "p").unwrap();
        let tl = footer_trailer_len(&bytes[bytes.len() - PACK_FOOTER_LEN..], "p").unwrap();
        let start = bytes.len() - PACK_FOOTER_LEN - tl;
        let parsed =
            parse_trailer(&codec, &bytes[start..bytes.len() - PACK_FOOTER_LEN], &mut s, "p").unwrap();
        assert_eq!(parsed, entries);
        assert_eq!(scan_blobs(&bytes), entries);
        assert!(footer_trailer_len(&bytes[bytes.len() - 13..bytes.len() - 1], "p").is_err());
    }

    #[test]
    fn pack_file_writes_the_same_bytes_as_builder_and_cleans_up_when_dropped() {
        let codec = Codec::new(3, None);
        let mut s = codec.scratch().unwrap();
        let d = tempfile::tempdir().unwrap();
        let mut pb = PackBuilder::new(1 << 20);
        let mut pf = PackFile::create(d.path()).unwrap();
        for i in 0..5u8 {
            let data = vec![i; 3000 + i as usize];
            let id = codec.id(&data);
            let mut blob = Vec::new();
            codec
                .seal(BlobKind::Chunk, &id, &data, &mut s, &mut blob)
                .unwrap();
            pb.add(id, data.len() as u32, &blob);
            pf.add(id, data.len() as u32, &blob).unwrap();
        }
        assert_eq!(pf.len(), pb.len() as u64);
        let (bytes, entries) = pb.finish(&codec, &mut s).unwrap();
        let staged = pf.finish(&codec, &mut s).unwrap();
        assert_eq!(std::fs::read(&staged.path).unwrap(), bytes);
        assert_eq!(staged.entries, entries);
        let path = staged.path.clone();
        drop(staged);
        assert!(!path.exists(), "an unused staging pack is removed");
        let unfinished = PackFile::create(d.path()).unwrap();
        let path = unfinished.staged.path.clone();
        drop(unfinished);
        assert!(!path.exists());
    }
}
