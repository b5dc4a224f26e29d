//! Content-defined chunking: a pure boundary finder over a byte slice (FastCDC v2020 gear hash from
//! the `fastcdc` crate, normalization level 1), plus an exact fast path for runs of zeros.
//!
//! The caller owns buffering: it passes the unconsumed bytes and whether the stream ended, and
//! gets back the length of the next chunk, or `None` when it must read more first.

use fastcdc::v2020::{Normalization, cut, select_masks};

use super::config::ChunkerParams;
use super::error::Result;

/// Largest chunk any repository may use (the `fastcdc` limit).
pub const MAX_CHUNK: usize = 16 << 20;

/// All zeros, compared against with `memcmp` to detect zero runs cheaply.
static ZEROS: [u8; MAX_CHUNK] = [0; MAX_CHUNK];

/// Whether `data` is all zero bytes (`data.len() <= MAX_CHUNK`).
pub fn is_zero(data: &[u8]) -> bool {
    data.len() <= MAX_CHUNK && data == &ZEROS[..data.len()]
}

/// A configured boundary finder.
#[derive(Clone, Debug)]
pub struct Chunker {
    min: usize,
    avg: usize,
    max: usize,
    mask_s: u64,
    mask_l: u64,
    /// Where the gear hash cuts a run of zeros starting at a chunk start.
    zero_cut: usize,
}

impl Chunker {
    /// Builds a chunker for validated parameters.
    pub fn new(p: ChunkerParams) -> Result<Self> {
        p.validate()?;
        let (mask_s, mask_l) = select_masks(p.avg as usize, Normalization::Level1);
        let mut c = Chunker {
            min: p.min as usize,
            avg: p.avg as usize,
            max: p.max as usize,
            mask_s,
            mask_l,
            zero_cut: 0,
        };
        c.zero_cut = c.scan(&ZEROS[..c.max]);
        Ok(c)
    }

    /// The maximum chunk length: callers must offer at least this many bytes unless at EOF.
    pub fn max_len(&self) -> usize {
        self.max
    }

    fn scan(&self, data: &[u8]) -> usize {
        let (_, n) = cut(
            data,
            self.min,
            self.avg,
            self.max,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
        );
        n
    }

    /// Length of the chunk that starts at `data[0]`. `eof` says no bytes follow `data`. Returns
    /// `None` if `data` is empty or more bytes are needed to decide (fewer than max and not EOF).
    pub fn next_boundary(&self, data: &[u8], eof: bool) -> Option<usize> {
        if data.is_empty() || (!eof && data.len() < self.max) {
            return None;
        }
        // The cut inside a zero run depends only on the zero bytes before it, so a run of
        // `zero_cut` zeros cuts exactly where the gear scan would, without scanning.
        if data.len() >= self.max && is_zero(&data[..self.zero_cut]) {
            return Some(self.zero_cut);
        }
        Some(self.scan(data).clamp(1, data.len()))
    }

    /// Splits a whole in-memory buffer (tests and small inputs).
    pub fn split_all(&self, data: &[u8]) -> Vec<usize> {
        let mut cuts = Vec::new();
        let mut pos = 0;
        while let Some(n) = self.next_boundary(&data[pos..], true) {
            pos += n;
            cuts.push(pos);
        }
        cuts
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic pseudo-random bytes (splitmix64), the same on every platform.
    pub(crate) fn seeded_bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut s = seed;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        out.truncate(len);
        out
    }

    fn small() -> Chunker {
        Chunker::new(ChunkerParams {
            min: 4096,
            avg: 16384,
            max: 65536,
        })
        .unwrap()
    }

    #[test]
    fn chunker_seeded_data_matches_golden_cut_points_and_ids() {
        let data = seeded_bytes(42, 256 * 1024);
        let cuts = small().split_all(&data);
        let mut ids = Vec::new();
        let mut start = 0;
        for &c in &cuts {
            ids.push(blake3::hash(&data[start..c]).to_hex()[..16].to_string());
            start = c;
        }
        assert_eq!(
            cuts, GOLDEN_CUTS,
            "cut points changed: this breaks dedup against old repos"
        );
        assert_eq!(ids, GOLDEN_IDS);
    }

    const GOLDEN_CUTS: &[usize] = &[
        6146, 28854, 45875, 67160, 97708, 106594, 125124, 136100, 155629, 173200, 181802, 196673, 203955,
        231513, 255790, 262144,
    ];
    const GOLDEN_IDS: &[&str] = &[
        "28bdec88509d4af2",
        "9ff185b732a84d86",
        "a967dd04cc32c305",
        "56cb89710787824f",
        "95f802019311dbad",
        "5340d8468943c4d4",
        "d0e42eee2e0a87c1",
        "05eece310d1c5a10",
        "134e7fe3fb4ed8e8",
        "aaf0c6d8a5f3be71",
        "e8b28f3674c389f0",
        "b2f898c67e655e88",
        "663a1b208fd1e656",
        "1ff76515556e37b4",
        "053ca5f51dc77c0e",
        "7935d508a74364ac",
    ];

    #[test]
    fn chunker_streaming_equals_whole_buffer() {
        let c = small();
        let data = seeded_bytes(7, 300_000);
        let whole = c.split_all(&data);
        // Feed in uneven pieces as a reader would.
        let mut buf = Vec::new();
        let mut pos = 0;
        let mut consumed = 0;
        let mut cuts = Vec::new();
        let mut feed = 1usize;
        loop {
            let take = feed.min(data.len() - pos);
            buf.extend_from_slice(&data[pos..pos + take]);
            pos += take;
            feed = feed * 3 + 1;
            let eof = pos == data.len();
            while let Some(n) = c.next_boundary(&buf, eof) {
                consumed += n;
                cuts.push(consumed);
                buf.drain(..n);
            }
            if eof {
                break;
            }
        }
        assert_eq!(cuts, whole);
    }

    #[test]
    fn chunker_zero_fast_path_equals_gear_scan() {
        for p in [
            ChunkerParams {
                min: 4096,
                avg: 16384,
                max: 65536,
            },
            ChunkerParams::default(),
            ChunkerParams {
                min: 256 << 10,
                avg: 1 << 20,
                max: 4 << 20,
            },
        ] {
            let c = Chunker::new(p).unwrap();
            let mut data = vec![0u8; c.max * 3 + 123];
            data[c.max * 2 + 5] = 1;
            let fast = c.split_all(&data);
            let mut slow = Vec::new();
            let mut pos = 0;
            while pos < data.len() {
                let rest = &data[pos..];
                let n = if rest.len() < c.max {
                    rest.len().min(c.scan(rest))
                } else {
                    c.scan(rest)
                };
                pos += n.max(1);
                slow.push(pos);
            }
            assert_eq!(fast, slow, "{p:?}");
        }
    }

    #[test]
    fn chunker_bounds_hold_for_min_and_max_edges() {
        let c = small();
        assert_eq!(c.split_all(&[]), Vec::<usize>::new());
        assert_eq!(c.split_all(&[9]), vec![1]);
        let data = seeded_bytes(3, 1 << 20);
        let cuts = c.split_all(&data);
        let mut prev = 0;
        for (i, &cut) in cuts.iter().enumerate() {
            let len = cut - prev;
            assert!(len <= 65536, "chunk {i} too long: {len}");
            if i + 1 < cuts.len() {
                assert!(len >= 4096, "chunk {i} too short: {len}");
            }
            prev = cut;
        }
        assert_eq!(prev, data.len());
        // Not enough bytes and not at EOF: ask for more.
        assert_eq!(c.next_boundary(&data[..65535], false), None);
        assert!(c.next_boundary(&data[..65536], false).is_some());
    }

    #[test]
    fn chunker_insertion_shifts_only_nearby_chunks() {
        let c = small();
        let data = seeded_bytes(11, 1 << 20);
        let mut shifted = data[..1000].to_vec();
        shifted.extend_from_slice(b"inserted bytes");
        shifted.extend_from_slice(&data[1000..]);
        let ids = |d: &[u8]| {
            let mut s = 0;
            c.split_all(d)
                .into_iter()
                .map(|e| {
                    let h = blake3::hash(&d[s..e]);
                    s = e;
                    h
                })
                .collect::<std::collections::HashSet<_>>()
        };
        let a = ids(&data);
        let b = ids(&shifted);
        let common = a.intersection(&b).count();
        assert!(
            common + 3 >= a.len(),
            "only {common} of {} chunks survive",
            a.len()
        );
    }
}
