//! Deterministic pseudo-disks: a guest's disk content is a pure function of its lineage and the
//! simulated day, generated block by block on demand (never held in memory).
//!
//! A disk is a list of layers `(seed, from_day, until_day)`. A block changes on day `d` of a layer
//! when `hash(seed, block, d)` falls under the drift rate (1 % of blocks per day by default), and
//! then holds bytes derived from `(seed, block, d)`; a block that never changed holds the base
//! content of the first layer. A quarter of the blocks are zero (sparse) and stay zero.
//! Backups, snapshots and clones freeze a lineage at a day; restores and rollbacks continue a
//! frozen lineage with a new layer, so a restored guest starts with exactly the backed-up bytes.

use std::io::{self, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Block size of the pseudo-disk.
pub const BLOCK_SIZE: usize = 4096;
/// Days searched backwards for a block's last change within one layer.
const MAX_SCAN_DAYS: i64 = 400;
/// Day number standing for "never changed" (base content).
const BASE_DAY: i64 = i64::MIN;

/// One segment of a disk's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskLayer {
    /// Seed of this segment's changes.
    pub seed: u64,
    /// Changes happen on days after this one.
    pub from_day: i64,
    /// Changes stop after this day (`None`: the disk is live).
    pub until_day: Option<i64>,
}

/// A guest disk whose bytes are generated on demand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PseudoDisk {
    /// Size in bytes (a multiple of [`BLOCK_SIZE`]).
    pub size: u64,
    /// Daily drift in basis points (100 = 1 % of blocks change per day).
    pub drift_bp: u32,
    /// History, oldest first (never empty).
    pub layers: Vec<DiskLayer>,
}

/// SplitMix64 finaliser: a stable, platform-independent 64-bit mix.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hash3(a: u64, b: u64, c: u64) -> u64 {
    mix(mix(mix(a) ^ b.rotate_left(17)) ^ c.rotate_left(41))
}

impl PseudoDisk {
    /// A new live disk of `size` bytes (rounded up to whole blocks) born on `day`.
    pub fn new(seed: u64, size: u64, day: i64) -> Self {
        let blocks = size.div_ceil(BLOCK_SIZE as u64).max(1);
        Self {
            size: blocks * BLOCK_SIZE as u64,
            drift_bp: 100,
            layers: vec![DiskLayer {
                seed,
                from_day: day,
                until_day: None,
            }],
        }
    }

    fn blocks(&self) -> u64 {
        self.size / BLOCK_SIZE as u64
    }

    fn base_seed(&self) -> u64 {
        self.layers.first().map(|l| l.seed).unwrap_or(0)
    }

    /// This lineage with its last layer stopped at `day` (content no longer drifts).
    pub fn frozen(&self, day: i64) -> Self {
        let mut copy = self.clone();
        if let Some(last) = copy.layers.last_mut() {
            let until = last.until_day.map_or(day, |u| u.min(day));
            last.until_day = Some(until.max(last.from_day));
        }
        copy
    }

    /// This lineage frozen at `day`, continued by a new live layer (restore, clone, rollback).
    pub fn fork(&self, day: i64, seed: u64) -> Self {
        let mut copy = self.frozen(day);
        copy.layers.push(DiskLayer {
            seed,
            from_day: day,
            until_day: None,
        });
        copy
    }

    fn is_zero_block(&self, block: u64) -> bool {
        hash3(self.base_seed(), block, 0x5A5A).is_multiple_of(4)
    }

    fn changes(&self, seed: u64, block: u64, day: i64) -> bool {
        hash3(seed, block, day as u64) % 10_000 < u64::from(self.drift_bp)
    }

    /// `(seed, day)` of the block's content as of `day`.
    fn block_version(&self, block: u64, day: i64) -> (u64, i64) {
        let mut end = day;
        for layer in self.layers.iter().rev() {
            let upto = layer.until_day.map_or(end, |u| u.min(end));
            if upto > layer.from_day {
                let lowest = (layer.from_day + 1).max(upto - MAX_SCAN_DAYS + 1);
                let mut d = upto;
                while d >= lowest {
                    if self.changes(layer.seed, block, d) {
                        return (layer.seed, d);
                    }
                    d -= 1;
                }
            }
            end = end.min(layer.from_day);
        }
        (self.base_seed(), BASE_DAY)
    }

    /// Fills `buf` (one block) with the block's content as of `day`.
    pub fn read_block(&self, block: u64, day: i64, buf: &mut [u8; BLOCK_SIZE]) {
        if self.is_zero_block(block) {
            buf.fill(0);
            return;
        }
        let (seed, version) = self.block_version(block, day);
        let mut state = hash3(seed, block, version as u64);
        for chunk in buf.chunks_exact_mut(8) {
            state = mix(state);
            chunk.copy_from_slice(&state.to_le_bytes());
        }
    }

    /// Streams the whole disk as of `day` into `out`; returns the byte count.
    pub fn write_to(&self, day: i64, out: &mut dyn Write) -> io::Result<u64> {
        let mut buf = [0u8; BLOCK_SIZE];
        for block in 0..self.blocks() {
            self.read_block(block, day, &mut buf);
            out.write_all(&buf)?;
        }
        Ok(self.size)
    }

    /// SHA-256 of the disk content as of `day`.
    pub fn digest(&self, day: i64) -> [u8; 32] {
        let mut hasher = Sha256::new();
        let mut buf = [0u8; BLOCK_SIZE];
        for block in 0..self.blocks() {
            self.read_block(block, day, &mut buf);
            hasher.update(buf);
        }
        hasher.finalize().into()
    }

    /// The disk content as of `day` (for tests and small disks).
    pub fn bytes(&self, day: i64) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size as usize);
        let _ = self.write_to(day, &mut out); // writing to a Vec cannot fail
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_is_deterministic_and_drifts_a_little_per_day() {
        let disk = PseudoDisk::new(42, 1 << 20, 100);
        assert_eq!(disk.bytes(120), PseudoDisk::new(42, 1 << 20, 100).bytes(120));
        let a = disk.bytes(120);
        let b = disk.bytes(121);
        let changed = a
            .chunks(BLOCK_SIZE)
            .zip(b.chunks(BLOCK_SIZE))
            .filter(|(x, y)| x != y)
            .count();
        assert!(changed > 0 && changed < 16, "changed {changed} of 256 blocks");
        assert!(a.chunks(BLOCK_SIZE).any(|c| c.iter().all(|&x| x == 0)));
        assert_ne!(disk.bytes(120), PseudoDisk::new(43, 1 << 20, 100).bytes(120));
    }

    #[test]
    fn frozen_disk_stops_drifting_and_fork_starts_from_frozen_content() {
        let disk = PseudoDisk::new(7, 256 * 1024, 0);
        let frozen = disk.frozen(50);
        assert_eq!(frozen.bytes(50), disk.bytes(50));
        assert_eq!(frozen.bytes(90), disk.bytes(50));
        let forked = disk.fork(50, 99);
        assert_eq!(forked.bytes(50), disk.bytes(50));
        let late = frozen.fork(80, 5);
        assert_eq!(
            late.bytes(80),
            disk.bytes(50),
            "a restore days later starts from the backup"
        );
        assert_ne!(forked.bytes(200), disk.bytes(200));
        assert_eq!(forked.digest(60), Sha256::digest(forked.bytes(60)).as_slice());
    }
}
