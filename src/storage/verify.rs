//! `verify`: every snapshot object decodes, every chunk it references is indexed and inside an
//! existing pack; with `read_data`, every such chunk is read, authenticated and hashed. Problems
//! name the affected snapshots. A damaged index is reported (with the snapshots that cannot be
//! checked) instead of failing outright.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::Serialize;

use super::backend::{pack_key, pack_sizes, snapshot_key};
use super::blob::{BlobKind, ChunkId};
use super::chunkset::ChunkSet;
use super::error::{Error, Result};
use super::index::{Index, SnapshotInfo};
use super::lock::LockMode;
use super::snapfile::SnapReader;
use super::store::ChunkStore;

/// The outcome of `verify`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Whether everything checked out.
    pub ok: bool,
    /// Whether chunk data was read.
    pub read_data: bool,
    /// Snapshots checked.
    pub snapshots_checked: u64,
    /// Distinct chunks checked.
    pub chunks_checked: u64,
    /// Bytes of chunk data read.
    pub bytes_read: u64,
    /// With a data subset: which (`25%`, `2/7`), and how many packs it read of how many a
    /// snapshot needs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_data_subset: Option<String>,
    /// Packs whose data was read.
    pub packs_read: u64,
    /// Packs the checked snapshots need.
    pub packs_needed: u64,
    /// One line per problem.
    pub problems: Vec<String>,
    /// Snapshots that cannot be restored intact: "ID NAME TIME".
    pub affected_snapshots: Vec<String>,
}

/// Which packs `verify` reads: all, or a subset (restic's `--read-data-subset`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DataSubset {
    /// Every pack.
    All,
    /// A random fraction (0 < f <= 1) of the packs, chosen anew on every run: `ceil(f * n)` of
    /// the `n` packs the checked snapshots need, at least one.
    Fraction(f64),
    /// Group `n` (1-based) of `t`: the packs whose name, read as a number, is `n - 1` modulo `t`.
    /// Running 1/t .. t/t reads every pack once.
    Part(u32, u32),
}

impl DataSubset {
    /// Parses `N%` (0 < N <= 100, decimals allowed) or `n/t` (1 <= n <= t).
    pub fn parse(s: &str) -> std::result::Result<DataSubset, String> {
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            return match p.trim().parse::<f64>() {
                Ok(v) if v > 0.0 && v <= 100.0 => Ok(DataSubset::Fraction(v / 100.0)),
                _ => Err(format!("{s:?}: a percentage must be above 0 and at most 100")),
            };
        }
        if let Some((n, tot)) = t.split_once('/') {
            return match (n.trim().parse::<u32>(), tot.trim().parse::<u32>()) {
                (Ok(n), Ok(tot)) if n >= 1 && n <= tot => Ok(DataSubset::Part(n, tot)),
                _ => Err(format!("{s:?}: n/t needs 1 <= n <= t")),
            };
        }
        Err(format!("{s:?} is neither N% nor n/t"))
    }

    fn describe(&self) -> Option<String> {
        match *self {
            DataSubset::All => None,
            DataSubset::Fraction(f) => Some(format!("{}%", f * 100.0)),
            DataSubset::Part(n, t) => Some(format!("{n}/{t}")),
        }
    }

    /// The names of the packs to read among `names` (the packs the snapshots need).
    fn select(&self, names: &[String]) -> HashSet<String> {
        match *self {
            DataSubset::All => names.iter().cloned().collect(),
            DataSubset::Fraction(f) => {
                let want = ((names.len() as f64 * f).ceil() as usize).clamp(1, names.len().max(1));
                let mut v: Vec<&String> = names.iter().collect();
                rand::seq::SliceRandom::shuffle(&mut v[..], &mut rand::rng());
                v.into_iter().take(want).cloned().collect()
            }
            DataSubset::Part(n, t) => names
                .iter()
                .filter(|name| {
                    let head = name.get(..16).unwrap_or(name);
                    u64::from_str_radix(head, 16).unwrap_or(0) % u64::from(t) == u64::from(n - 1)
                })
                .cloned()
                .collect(),
        }
    }
}

fn label(s: &SnapshotInfo) -> String {
    format!("{} {} {}", s.id, s.name, s.time)
}

impl ChunkStore {
    /// Verifies one snapshot (or all complete ones).
    pub fn verify(&self, target: Option<&str>, read_data: bool) -> Result<VerifyReport> {
        self.verify_subset(target, read_data.then_some(DataSubset::All))
    }

    /// [`ChunkStore::verify`], reading the data of the packs `subset` selects (none: only check
    /// that every pack exists with its recorded size).
    pub fn verify_subset(&self, target: Option<&str>, subset: Option<DataSubset>) -> Result<VerifyReport> {
        let read_data = subset.is_some();
        let _lock = self.lock(LockMode::Shared, "verify", true)?;
        let index = match self.index().and_then(|i| i.quick_check().map(|_| i)) {
            Ok(i) => i,
            Err(Error::IndexCorrupt { detail }) => return self.verify_without_index(detail),
            Err(e) => return Err(e),
        };
        let snaps: Vec<SnapshotInfo> = match target {
            Some(spec) => vec![self.resolve(spec)?],
            None => index.snapshots()?.into_iter().filter(|s| s.complete).collect(),
        };
        let mut report = VerifyReport {
            read_data,
            read_data_subset: subset.and_then(|s| s.describe()),
            ..Default::default()
        };
        let mut affected: BTreeSet<String> = BTreeSet::new();
        let mut per_snapshot: HashMap<String, Vec<String>> = HashMap::new();
        // Pass 1: snapshot objects and index rows.
        let wanted = ChunkSet::new(&index, "wanted")?;
        let mut missing: HashSet<ChunkId> = HashSet::new();
        for s in &snaps {
            report.snapshots_checked += 1;
            let mut buf: Vec<ChunkId> = Vec::new();
            let mut add = |buf: &mut Vec<ChunkId>| {
                let r = wanted.insert_all(&index, buf, |id| {
                    if !index.has_chunk(id)? {
                        missing.insert(*id);
                    }
                    Ok(())
                });
                buf.clear();
                r
            };
            let res = self
                .each_entry(&s.uid, |e| {
                    buf.push(e.id);
                    if buf.len() >= 65_536 {
                        add(&mut buf)
                    } else {
                        Ok(())
                    }
                })
                .and_then(|()| add(&mut buf));
            if let Err(e) = res {
                per_snapshot
                    .entry(s.uid.clone())
                    .or_default()
                    .push(format!("snapshot object: {e}"));
            }
        }
        report.chunks_checked = wanted.len(&index)?;
        // Pass 2: packs exist, are long enough, and (read_data) hold intact chunks.
        let bad = self.check_packs(&index, &wanted, subset, &mut report)?;
        // Pass 3: map bad chunks to snapshots.
        if !bad.is_empty() || !missing.is_empty() {
            for s in &snaps {
                let mut n_bad = 0u64;
                let _ = self.each_entry(&s.uid, |e| {
                    if bad.contains(&e.id) || missing.contains(&e.id) {
                        n_bad += 1;
                    }
                    Ok(())
                });
                if n_bad > 0 {
                    per_snapshot
                        .entry(s.uid.clone())
                        .or_default()
                        .push(format!("{n_bad} damaged or missing chunk references"));
                }
            }
        }
        for id in &missing {
            report
                .problems
                .push(format!("chunk {id} is referenced but not in the index"));
        }
        for s in &snaps {
            let problems = per_snapshot.remove(&s.uid).unwrap_or_default();
            for p in &problems {
                report.problems.push(format!("snapshot {}: {p}", label(s)));
            }
            if !problems.is_empty() {
                affected.insert(label(s));
            }
            // Results are kept when the index is writable; a read-only repository still verifies.
            // A subset did not read all of a snapshot's data.
            let all_read = read_data && report.packs_read == report.packs_needed;
            let _ = index.record_verification(&s.uid, all_read, &problems);
        }
        report.affected_snapshots = affected.into_iter().collect();
        report.ok = report.problems.is_empty();
        Ok(report)
    }

    pub(crate) fn each_entry(
        &self,
        uid: &str,
        f: impl FnMut(&super::snapfile::Entry) -> Result<()>,
    ) -> Result<()> {
        self.repo().each_entry(&snapshot_key(uid), f)
    }

    fn check_packs(
        &self,
        index: &Index,
        wanted: &ChunkSet,
        subset: Option<DataSubset>,
        report: &mut VerifyReport,
    ) -> Result<HashSet<ChunkId>> {
        let sizes = pack_sizes(&*self.backend)?;
        let mut bad = HashSet::new();
        let mut scratch = self.codec.scratch()?;
        let mut needed = Vec::new();
        for (pack_row, name, recorded) in index.packs()? {
            let mut chunks = Vec::new();
            for c in index.pack_chunks(pack_row)? {
                if wanted.contains(index, &c.id)? {
                    chunks.push(c);
                }
            }
            if !chunks.is_empty() {
                needed.push((name, recorded, chunks));
            }
        }
        report.packs_needed = needed.len() as u64;
        let names: Vec<String> = needed.iter().map(|(n, _, _)| n.clone()).collect();
        let to_read = subset.map(|s| s.select(&names)).unwrap_or_default();
        for (name, recorded, chunks) in needed {
            let read_data = to_read.contains(&name);
            let key = pack_key(&name);
            let Some(&size) = sizes.get(&key) else {
                report
                    .problems
                    .push(format!("pack {key} is missing ({} chunks lost)", chunks.len()));
                bad.extend(chunks.iter().map(|c| c.id));
                continue;
            };
            let end = chunks
                .iter()
                .map(|c| u64::from(c.offset) + u64::from(c.len))
                .max()
                .unwrap_or(0);
            if size != recorded {
                report.problems.push(format!(
                    "pack {key} is damaged: {size} bytes in the repository, {recorded} when it was \
                     stored{}",
                    if size < end {
                        format!(" (truncated: needs {end})")
                    } else {
                        String::new()
                    }
                ));
            }
            if !read_data {
                for c in chunks
                    .iter()
                    .filter(|c| u64::from(c.offset) + u64::from(c.len) > size)
                {
                    bad.insert(c.id);
                }
                continue;
            }
            let bytes = match self.backend.get_range(&key, 0, size as usize) {
                Ok(b) => b,
                Err(e) => {
                    report.problems.push(format!("pack {key}: {e}"));
                    bad.extend(chunks.iter().map(|c| c.id));
                    continue;
                }
            };
            report.bytes_read += bytes.len() as u64;
            report.packs_read += 1;
            for c in &chunks {
                let (o, l) = (c.offset as usize, c.len as usize);
                let what = || format!("chunk {} in {key}", c.id);
                let res = if o + l > bytes.len() {
                    Err(Error::corrupt(what(), "beyond the end of the pack"))
                } else {
                    self.codec
                        .open(&bytes[o..o + l], BlobKind::Chunk, &mut scratch, &what)
                        .and_then(|(h, _)| {
                            if h.id == c.id {
                                Ok(())
                            } else {
                                Err(Error::corrupt(what(), "holds a different chunk"))
                            }
                        })
                };
                if let Err(e) = res {
                    if size >= end {
                        report.problems.push(e.to_string());
                    }
                    bad.insert(c.id);
                }
            }
        }
        Ok(bad)
    }

    /// The index cannot be used: report it and name every snapshot the repository holds.
    fn verify_without_index(&self, detail: String) -> Result<VerifyReport> {
        let mut report = VerifyReport {
            read_data: false,
            ..Default::default()
        };
        report.problems.push(format!(
            "index database is damaged ({detail}); no snapshot can be checked or restored until \
             it is rebuilt (reindex) from the packs and snapshot objects"
        ));
        for obj in self.backend.list("snapshots/")? {
            let Some(uid) = obj.key.strip_prefix("snapshots/") else {
                continue;
            };
            if uid.starts_with('.') {
                continue;
            }
            let name = SnapReader::open(self.backend.open_reader(&obj.key)?, &self.codec, obj.key.clone())
                .map(|r| format!("{} {}", r.meta.name, super::index::rfc3339(r.meta.time)))
                .unwrap_or_else(|e| format!("(unreadable: {e})"));
            report
                .affected_snapshots
                .push(format!("{} {name}", &uid[..8.min(uid.len())]));
            report.snapshots_checked += 1;
        }
        Ok(report)
    }
}
