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
        buf.extend_from_slice(&PACK_MAGIC);
        buf.push(PACK_VERSION);
        buf.extend_from_slice(&[0u8; 7]);
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
        let mut toc = Vec::with_capacity(self.entries.len() * ENTRY_LEN);
        for e in &self.entries {
            toc.extend_from_slice(&e.id.0);
            toc.extend_from_slice(&e.offset.to_le_bytes());
            toc.extend_from_slice(&e.len.to_le_bytes());
            toc.extend_from_slice(&e.raw_len.to_le_bytes());
        }
        let n = codec.seal(BlobKind::PackTrailer, &codec.id(&toc), &toc, s, &mut self.buf)?;
        self.buf.extend_from_slice(&(n as u32).to_le_bytes());
        self.buf.extend_from_slice(&PACK_END_MAGIC);
        Ok((self.buf, self.entries))
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
}
