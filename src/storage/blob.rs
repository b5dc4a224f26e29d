//! The blob format: every stored piece (a chunk, a snapshot part, a pack trailer) is one blob.
//!
//! ```text
//! offset size
//!   0     4   magic "hapb" (never changes once released)
//!   4     1   flags: bit 0 = zstd-compressed, bit 1 = encrypted
//!   5     1   kind (BlobKind)
//!   6     2   reserved, zero
//!   8     4   payload length (little endian)
//!  12     4   plaintext length
//!  16    32   id: blake3 of the plaintext (keyed blake3 when encrypted)
//!  48     -   payload: [zstd] data, or nonce(24) || ciphertext || tag(16) when encrypted
//! ```
//! Encrypted payloads authenticate the 48 header bytes, so a blob cannot be moved to another id.

use std::fmt;

use zstd::bulk::{Compressor, Decompressor};

use super::crypto::{Keys, SEAL_OVERHEAD};
use super::error::{Error, Result};

/// The blob magic.
pub const BLOB_MAGIC: [u8; 4] = *b"hapb";
/// Bytes before the payload.
pub const BLOB_HEADER_LEN: usize = 48;
const FLAG_ZSTD: u8 = 1;
const FLAG_ENCRYPTED: u8 = 2;

/// A content id: blake3 (keyed when encrypted) of the plaintext.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", &hex::encode(self.0)[..16])
    }
}

/// What a blob holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum BlobKind {
    /// A data chunk.
    Chunk = 0,
    /// Snapshot metadata (JSON).
    SnapshotMeta = 1,
    /// A run of snapshot entries.
    SnapshotEntries = 2,
    /// The end of a snapshot object (JSON totals).
    SnapshotEnd = 3,
    /// A pack's table of contents.
    PackTrailer = 4,
}

impl BlobKind {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => BlobKind::Chunk,
            1 => BlobKind::SnapshotMeta,
            2 => BlobKind::SnapshotEntries,
            3 => BlobKind::SnapshotEnd,
            4 => BlobKind::PackTrailer,
            _ => return None,
        })
    }
}

/// A parsed blob header.
#[derive(Clone, Copy, Debug)]
pub struct BlobHeader {
    /// Flag bits.
    pub flags: u8,
    /// Kind.
    pub kind: BlobKind,
    /// Payload length.
    pub payload_len: u32,
    /// Plaintext length.
    pub raw_len: u32,
    /// Content id.
    pub id: ChunkId,
}

impl BlobHeader {
    /// Header plus payload.
    pub fn total_len(&self) -> usize {
        BLOB_HEADER_LEN + self.payload_len as usize
    }

    /// Parses the first 48 bytes of `bytes`.
    pub fn parse(bytes: &[u8], what: &dyn Fn() -> String) -> Result<Self> {
        if bytes.len() < BLOB_HEADER_LEN {
            return Err(Error::corrupt(what(), "truncated blob header"));
        }
        if bytes[..4] != BLOB_MAGIC {
            return Err(Error::corrupt(what(), "bad blob magic"));
        }
        let kind = BlobKind::from_u8(bytes[5]).ok_or_else(|| Error::corrupt(what(), "unknown blob kind"))?;
        let u32_at = |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        let mut id = [0u8; 32];
        id.copy_from_slice(&bytes[16..48]);
        Ok(BlobHeader {
            flags: bytes[4],
            kind,
            payload_len: u32_at(8),
            raw_len: u32_at(12),
            id: ChunkId(id),
        })
    }
}

/// Hashing, compression and encryption settings of one repository.
pub struct Codec {
    level: i32,
    keys: Option<Keys>,
}

/// Per-thread scratch state for sealing and opening blobs.
pub struct Scratch {
    compressor: Compressor<'static>,
    decompressor: Decompressor<'static>,
    buf: Vec<u8>,
}

impl Codec {
    pub(crate) fn new(level: i32, keys: Option<Keys>) -> Self {
        Codec { level, keys }
    }

    /// Whether blobs are encrypted.
    pub fn encrypted(&self) -> bool {
        self.keys.is_some()
    }

    /// New scratch state for one worker thread.
    pub fn scratch(&self) -> Result<Scratch> {
        let z = |e: std::io::Error| Error::Internal(format!("zstd context: {e}"));
        Ok(Scratch {
            compressor: Compressor::new(self.level).map_err(z)?,
            decompressor: Decompressor::new().map_err(z)?,
            buf: Vec::new(),
        })
    }

    /// The content id of `data`.
    pub fn id(&self, data: &[u8]) -> ChunkId {
        match &self.keys {
            Some(k) => ChunkId(k.id(data)),
            None => ChunkId(*blake3::hash(data).as_bytes()),
        }
    }

    /// Appends one blob holding `plain` to `out`; returns the blob's length. Compression is kept
    /// only when it saves at least 1/32 of the size.
    pub fn seal(
        &self,
        kind: BlobKind,
        id: &ChunkId,
        plain: &[u8],
        s: &mut Scratch,
        out: &mut Vec<u8>,
    ) -> Result<usize> {
        let raw_len = u32::try_from(plain.len()).map_err(|_| Error::Internal("blob over 4 GiB".into()))?;
        s.buf.clear();
        s.buf.reserve(zstd::zstd_safe::compress_bound(plain.len()));
        let compressed = match s.compressor.compress_to_buffer(plain, &mut s.buf) {
            Ok(n) => n + n / 32 < plain.len(),
            Err(_) => false,
        };
        let body: &[u8] = if compressed { &s.buf } else { plain };
        let mut flags = if compressed { FLAG_ZSTD } else { 0 };
        let extra = if self.keys.is_some() { SEAL_OVERHEAD } else { 0 };
        if self.keys.is_some() {
            flags |= FLAG_ENCRYPTED;
        }
        let start = out.len();
        let payload_len = (body.len() + extra) as u32;
        out.reserve(BLOB_HEADER_LEN + body.len() + extra);
        out.extend_from_slice(&BLOB_MAGIC);
        out.extend_from_slice(&[flags, kind as u8, 0, 0]);
        out.extend_from_slice(&payload_len.to_le_bytes());
        out.extend_from_slice(&raw_len.to_le_bytes());
        out.extend_from_slice(&id.0);
        match &self.keys {
            Some(keys) => {
                let mut aad = [0u8; BLOB_HEADER_LEN];
                aad.copy_from_slice(&out[start..start + BLOB_HEADER_LEN]);
                out.extend_from_slice(&[0u8; 24]);
                let body_start = out.len();
                out.extend_from_slice(body);
                keys.seal(&aad, out, body_start)?;
            }
            None => out.extend_from_slice(body),
        }
        Ok(out.len() - start)
    }

    /// Opens the blob at the start of `bytes`: checks magic, kind, lengths, authentication and
    /// the id. Returns the header and plaintext.
    pub fn open(
        &self,
        bytes: &[u8],
        kind: BlobKind,
        s: &mut Scratch,
        what: &dyn Fn() -> String,
    ) -> Result<(BlobHeader, Vec<u8>)> {
        let h = BlobHeader::parse(bytes, what)?;
        if h.kind != kind {
            return Err(Error::corrupt(
                what(),
                format!("expected a {kind:?} blob, found {:?}", h.kind),
            ));
        }
        if bytes.len() < h.total_len() {
            return Err(Error::corrupt(what(), "blob is truncated"));
        }
        let payload = &bytes[BLOB_HEADER_LEN..h.total_len()];
        let decrypted;
        let body: &[u8] = match (&self.keys, h.flags & FLAG_ENCRYPTED != 0) {
            (Some(keys), true) => {
                decrypted = keys
                    .open(&bytes[..BLOB_HEADER_LEN], payload)
                    .ok_or_else(|| Error::corrupt(what(), "authentication failed (damaged or wrong key)"))?;
                &decrypted
            }
            (None, false) => payload,
            (Some(_), false) => {
                return Err(Error::corrupt(
                    what(),
                    "unencrypted blob in an encrypted repository",
                ));
            }
            (None, true) => {
                return Err(Error::corrupt(
                    what(),
                    "encrypted blob in an unencrypted repository",
                ));
            }
        };
        let plain = if h.flags & FLAG_ZSTD != 0 {
            let mut out = Vec::with_capacity(h.raw_len as usize);
            s.decompressor
                .decompress_to_buffer(body, &mut out)
                .map_err(|e| Error::corrupt(what(), format!("zstd: {e}")))?;
            out
        } else {
            body.to_vec()
        };
        if plain.len() != h.raw_len as usize {
            return Err(Error::corrupt(what(), "length does not match header"));
        }
        if self.id(&plain) != h.id {
            return Err(Error::corrupt(what(), "content does not match its id"));
        }
        Ok((h, plain))
    }
}

#[cfg(test)]
mod tests {
    use super::super::crypto::Key;
    use super::*;

    fn round_trip(codec: &Codec, data: &[u8]) {
        let mut s = codec.scratch().unwrap();
        let id = codec.id(data);
        let mut out = b"prefix".to_vec();
        let n = codec.seal(BlobKind::Chunk, &id, data, &mut s, &mut out).unwrap();
        assert_eq!(n, out.len() - 6);
        let (h, plain) = codec
            .open(&out[6..], BlobKind::Chunk, &mut s, &|| "t".into())
            .unwrap();
        assert_eq!(plain, data);
        assert_eq!(h.id, id);
        // Any single bit flip is caught.
        for pos in [6, 6 + 20, out.len() - 1] {
            let mut bad = out.clone();
            bad[pos] ^= 0x10;
            assert!(
                codec
                    .open(&bad[6..], BlobKind::Chunk, &mut s, &|| "t".into())
                    .is_err(),
                "pos {pos}"
            );
        }
    }

    #[test]
    fn blob_plain_and_encrypted_round_trip_detect_flips() {
        let compressible = vec![7u8; 10_000];
        let random = super::super::chunker::tests::seeded_bytes(1, 10_000);
        for codec in [
            Codec::new(3, None),
            Codec::new(1, Some(Keys::derive(&Key::generate()))),
        ] {
            round_trip(&codec, &compressible);
            round_trip(&codec, &random);
            round_trip(&codec, &[]);
        }
    }

    #[test]
    fn blob_incompressible_data_is_stored_raw() {
        let codec = Codec::new(3, None);
        let mut s = codec.scratch().unwrap();
        let random = super::super::chunker::tests::seeded_bytes(2, 4096);
        let mut out = Vec::new();
        codec
            .seal(BlobKind::Chunk, &codec.id(&random), &random, &mut s, &mut out)
            .unwrap();
        assert_eq!(out[4] & FLAG_ZSTD, 0);
        assert_eq!(out.len(), BLOB_HEADER_LEN + 4096);
    }
}
