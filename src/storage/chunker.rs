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

/// Cut points one thread found from `start` on: chunks as (start, len), and where it stopped.
struct SegmentCuts {
    start: usize,
    cuts: Vec<(usize, usize)>,
    /// Start of the first chunk not in `cuts`.
    next: usize,
    /// Whether `next_boundary` returned `None` at `next` (no further cut in this buffer).
    ended: bool,
}

impl Chunker {
    /// Chunks `data[from..]` until a chunk would start at or after `until` (or no further cut
    /// can be decided).
    fn segment(&self, data: &[u8], eof: bool, from: usize, until: usize) -> SegmentCuts {
        let mut cuts = Vec::new();
        let mut pos = from;
        while pos < until {
            match self.next_boundary(&data[pos..], eof) {
                Some(n) => {
                    cuts.push((pos, n));
                    pos += n;
                }
                None => {
                    return SegmentCuts {
                        start: from,
                        cuts,
                        next: pos,
                        ended: true,
                    };
                }
            }
        }
        SegmentCuts {
            start: from,
            cuts,
            next: pos,
            ended: false,
        }
    }

    /// Every chunk of `data` that can be decided now, as (start, len), exactly as repeated
    /// [`Chunker::next_boundary`] calls from offset 0 would give them (`eof`: nothing follows
    /// `data`). With `parts > 1` and enough data, `parts` threads chunk equal slices of the buffer
    /// at once, each starting at its slice's first byte; the sequence from offset 0 is then followed
    /// into each next slice until it reaches a cut point that slice's thread also found. From
    /// there on both sequences are the same (a cut depends only on where its chunk starts and on
    /// the bytes after it), so the result equals a sequential scan, usually for the cost of one
    /// or two extra chunks per slice.
    pub fn cuts(&self, data: &[u8], eof: bool, parts: usize) -> Vec<(usize, usize)> {
        let parts = parts.clamp(1, 16);
        // Each slice must hold several maximum-size chunks for the threads to pay off.
        let parts = if data.len() / parts >= 4 * self.max {
            parts
        } else {
            1
        };
        let mut bounds: Vec<usize> = (0..parts).map(|i| data.len() / parts * i).collect();
        bounds.push(data.len());
        let segs: Vec<SegmentCuts> = std::thread::scope(|s| {
            let handles: Vec<_> = (1..parts)
                .map(|i| {
                    let (from, until) = (bounds[i], bounds[i + 1]);
                    s.spawn(move || self.segment(data, eof, from, until))
                })
                .collect();
            let mut segs = vec![self.segment(data, eof, 0, bounds[1])];
            for h in handles {
                // A chunking thread cannot panic (pure arithmetic on in-bounds slices); if it
                // did, its slice is simply chunked sequentially below.
                segs.push(h.join().unwrap_or(SegmentCuts {
                    start: data.len(),
                    cuts: Vec::new(),
                    next: data.len(),
                    ended: false,
                }));
            }
            segs
        });
        let mut out = Vec::new();
        let mut pos = 0;
        let mut seg = 0;
        loop {
            while seg < segs.len() && pos > segs[seg].next {
                seg += 1;
            }
            if let Some(sc) = segs.get(seg)
                && pos >= sc.start
            {
                let found = if pos == sc.next {
                    Some(sc.cuts.len())
                } else {
                    sc.cuts.binary_search_by_key(&pos, |c| c.0).ok()
                };
                if let Some(j) = found {
                    out.extend_from_slice(&sc.cuts[j..]);
                    pos = sc.next;
                    if sc.ended {
                        return out;
                    }
                    seg += 1;
                    continue;
                }
            }
            match self.next_boundary(&data[pos..], eof) {
                Some(n) => {
                    out.push((pos, n));
                    pos += n;
                }
                None => return out,
            }
        }
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
    fn chunker_parallel_cuts_equal_sequential_scan() {
        let seq = |c: &Chunker, d: &[u8], eof: bool| {
            let mut out = Vec::new();
            let mut pos = 0;
            while let Some(n) = c.next_boundary(&d[pos..], eof) {
                out.push((pos, n));
                pos += n;
            }
            out
        };
        // Random data; long zero runs across the slice borders; a short repeating pattern
        // (where two chunk sequences may never meet); a mix.
        let random = seeded_bytes(5, 3 << 20);
        let mut zeros = seeded_bytes(6, 3 << 20);
        for k in 1..6 {
            let at = k * zeros.len() / 6 - 100_000;
            zeros[at..at + 200_000].fill(0);
        }
        let periodic: Vec<u8> = (0..3u32 << 20).map(|i| (i % 4099) as u8).collect();
        let mut mixed = periodic.clone();
        mixed[..1 << 20].copy_from_slice(&random[..1 << 20]);
        for p in [
            ChunkerParams {
                min: 4096,
                avg: 16384,
                max: 65536,
            },
            ChunkerParams::default(),
        ] {
            let c = Chunker::new(p).unwrap();
            for data in [&random, &zeros, &periodic, &mixed] {
                for eof in [true, false] {
                    let want = seq(&c, data, eof);
                    for parts in [1, 2, 3, 4, 7] {
                        assert_eq!(c.cuts(data, eof, parts), want, "{p:?} parts {parts} eof {eof}");
                    }
                }
            }
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
