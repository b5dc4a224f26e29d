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
    /// One line per problem.
    pub problems: Vec<String>,
    /// Snapshots that cannot be restored intact: "ID NAME TIME".
    pub affected_snapshots: Vec<String>,
}

fn label(s: &SnapshotInfo) -> String {
    format!("{} {} {}", s.id, s.name, s.time)
}

impl ChunkStore {
    /// Verifies one snapshot (or all complete ones).
    pub fn verify(&self, target: Option<&str>, read_data: bool) -> Result<VerifyReport> {
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
        let bad = self.check_packs(&index, &wanted, read_data, &mut report)?;
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
            let _ = index.record_verification(&s.uid, read_data, &problems);
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
        read_data: bool,
        report: &mut VerifyReport,
    ) -> Result<HashSet<ChunkId>> {
        let sizes = pack_sizes(&*self.backend)?;
        let mut bad = HashSet::new();
        let mut scratch = self.codec.scratch()?;
        for (pack_row, name, recorded) in index.packs()? {
            let mut chunks = Vec::new();
            for c in index.pack_chunks(pack_row)? {
                if wanted.contains(index, &c.id)? {
                    chunks.push(c);
                }
            }
            if chunks.is_empty() {
                continue;
            }
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
