//! Keys: the 32-byte master key (hex text in a file or `AUTOPILOT_STORE_KEY`), the keys derived
//! from it, and the AEAD (XChaCha20-Poly1305 with random 192-bit nonces).

use std::fmt;
use std::path::Path;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use rand::RngCore;

use super::error::{Error, Result};

/// Environment variable that may hold the key (64 hex characters).
pub const KEY_ENV: &str = "AUTOPILOT_STORE_KEY";

/// Bytes an encrypted payload adds: nonce plus tag.
pub(crate) const SEAL_OVERHEAD: usize = 24 + 16;

/// A repository master key. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct Key([u8; 32]);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(***)")
    }
}

impl Key {
    /// A fresh random key from the OS-seeded CSPRNG.
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        rand::rng().fill_bytes(&mut k);
        Key(k)
    }

    /// Parses 64 hex characters (surrounding whitespace ignored). `source_name` names the file or
    /// variable in errors; the key text itself never appears in an error.
    pub fn parse(text: &str, source_name: &str) -> Result<Self> {
        let t = text.trim();
        let bad = |reason: &str| Error::BadKey {
            source_name: source_name.to_string(),
            reason: reason.into(),
        };
        if t.len() != 64 {
            return Err(bad("expected 64 hex characters (a 32-byte key)"));
        }
        let mut k = [0u8; 32];
        hex::decode_to_slice(t, &mut k).map_err(|_| bad("not hexadecimal"))?;
        Ok(Key(k))
    }

    /// Reads a key file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::io("reading key file", path.display(), e))?;
        Key::parse(&text, &path.display().to_string())
    }

    /// The key as stored in a key file (64 hex characters and a newline).
    pub fn to_text(&self) -> String {
        format!("{}\n", hex::encode(self.0))
    }

    /// A one-way value stored in the repository config to recognise the right key.
    pub(crate) fn check_value(&self) -> String {
        hex::encode(blake3::derive_key(
            "homelab-autopilot store v1 key check",
            &self.0,
        ))
    }
}

/// Keys derived from the master key.
pub(crate) struct Keys {
    id_key: [u8; 32],
    cipher: XChaCha20Poly1305,
}

impl Keys {
    pub(crate) fn derive(key: &Key) -> Self {
        let id_key = blake3::derive_key("homelab-autopilot store v1 chunk id", &key.0);
        let enc = blake3::derive_key("homelab-autopilot store v1 encryption", &key.0);
        Keys {
            id_key,
            cipher: XChaCha20Poly1305::new(&enc.into()),
        }
    }

    /// Keyed blake3 of the plaintext: ids do not reveal content to someone without the key.
    pub(crate) fn id(&self, data: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.id_key, data).as_bytes()
    }

    /// Encrypts `out[start..]` in place, authenticating `aad`; writes the nonce before it and the
    /// tag after it. `out[start - 24..start]` must be reserved for the nonce.
    pub(crate) fn seal(&self, aad: &[u8], out: &mut Vec<u8>, start: usize) -> Result<()> {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        out[start - 24..start].copy_from_slice(&nonce);
        let tag = self
            .cipher
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), aad, &mut out[start..])
            .map_err(|_| Error::Internal("encryption failed".into()))?;
        out.extend_from_slice(&tag);
        Ok(())
    }

    /// Decrypts `nonce || ciphertext || tag`, returning the plaintext.
    pub(crate) fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < SEAL_OVERHEAD {
            return None;
        }
        let (nonce, rest) = sealed.split_at(24);
        let (ct, tag) = rest.split_at(rest.len() - 16);
        let mut buf = ct.to_vec();
        self.cipher
            .decrypt_in_place_detached(XNonce::from_slice(nonce), aad, &mut buf, Tag::from_slice(tag))
            .ok()?;
        Some(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_debug_and_errors_never_show_key() {
        let k = Key::generate();
        let text = k.to_text();
        assert_eq!(format!("{k:?}"), "Key(***)");
        let bad = format!("{}zz", &text.trim()[..62]);
        let e = Key::parse(&bad, "AUTOPILOT_STORE_KEY").unwrap_err().to_string();
        assert!(
            !e.contains(&bad[..20]) && e.contains("AUTOPILOT_STORE_KEY"),
            "{e}"
        );
        assert_eq!(Key::parse(&text, "f").unwrap().0, k.0);
    }

    #[test]
    fn seal_open_round_trip_and_tamper_detected() {
        let keys = Keys::derive(&Key::generate());
        let mut out = vec![0u8; 24];
        out.extend_from_slice(b"secret data");
        keys.seal(b"aad", &mut out, 24).unwrap();
        assert_eq!(keys.open(b"aad", &out).unwrap(), b"secret data");
        assert!(keys.open(b"other", &out).is_none());
        out[30] ^= 1;
        assert!(keys.open(b"aad", &out).is_none());
    }
}
