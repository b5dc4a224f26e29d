//! The chunk store side of a BackupPolicy: reading a staged vzdump archive into the store (a
//! blocking job off the reconcile path: a pass only starts it or asks how it is doing), verifying
//! it chunk by chunk, retention and garbage collection.
//!
//! A job is idempotent across restarts: the snapshot carries the staged archive's volid as a
//! tag, so an operator that restarts after the ingest committed finds that snapshot instead of
//! storing the archive twice. A snapshot is only committed when the whole archive was read (the
//! store's own rule), so a crash mid-ingest leaves no half snapshot.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::storage::{ChunkStore, NoProgress, SnapshotFilter, SnapshotInfo, SourceKind};

use super::plan::keep_options;
use crate::crd::common::Retention;

/// Tag of every snapshot a policy stores: the policy's UID.
pub const TAG_POLICY: &str = "autopilot-policy-uid";
/// Tag: the staged archive's volid the snapshot was read from (restore reads its file name).
pub use crate::controllers::pve::restore::TAG_STAGED;
/// Tag: the run id.
pub const TAG_RUN: &str = "run";
/// Age below which `gc` leaves unreferenced files alone (a concurrent backup may still need
/// them).
pub const GC_GRACE: Duration = Duration::from_secs(60 * 60);

/// Where the operator's chunk store is (`--store-path`, the chart's PVC) and its key.
pub use crate::storage::StoreLocation as StoreSettings;

/// What to ingest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngestRequest {
    /// The staged archive on the operator's mount of the staging storage.
    pub path: PathBuf,
    /// Its PVE volid (tag, and the key that makes the job idempotent).
    pub staged_volid: String,
    /// Snapshot name, `<namespace>.<policy>.<vm|lxc>-<vmid>`.
    pub name: String,
    /// The policy's UID.
    pub policy_uid: String,
    /// The run id.
    pub run_id: String,
}

/// A committed and verified ingest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ingested {
    /// Snapshot id in the store.
    pub snapshot_id: String,
    /// Bytes read from the archive.
    pub logical_bytes: u64,
    /// New bytes stored (after deduplication and compression).
    pub stored_bytes: u64,
    /// Whether every chunk read back with its blake3 hash.
    pub verified: bool,
    /// What verification found, when it did not pass.
    pub problems: Vec<String>,
}

/// How a job is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IngestView {
    /// Still reading.
    Running,
    /// Finished: the result, or why it failed.
    Done(Result<Ingested, String>),
}

/// The tags every snapshot of policy `policy_uid` carries (and that select them).
pub fn policy_tags(policy_uid: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(TAG_POLICY.to_owned(), policy_uid.to_owned())])
}

/// A job's slot: `None` while it runs, then its result.
type Jobs = HashMap<String, Option<Result<Ingested, String>>>;

/// The running and finished ingest jobs of this process, by staged volid.
#[derive(Debug, Default)]
pub struct Ingests {
    jobs: Arc<Mutex<Jobs>>,
}

impl Ingests {
    /// Starts the job for `req` unless one runs; reports its state. A finished job's result is
    /// handed out once (the caller records it in status).
    pub fn poll_or_start(&self, store: &StoreSettings, req: &IngestRequest) -> IngestView {
        let mut jobs = lock(&self.jobs);
        match jobs.get(&req.staged_volid) {
            Some(None) => return IngestView::Running,
            Some(Some(_)) => {
                if let Some(Some(done)) = jobs.remove(&req.staged_volid) {
                    return IngestView::Done(done);
                }
            }
            None => {}
        }
        jobs.insert(req.staged_volid.clone(), None);
        drop(jobs);
        let store = store.clone();
        let req = req.clone();
        let registry = Arc::clone(&self.jobs);
        tokio::task::spawn_blocking(move || {
            let result = ingest(&store, &req);
            if let Some(slot) = lock(&registry).get_mut(&req.staged_volid) {
                *slot = Some(result);
            }
        });
        IngestView::Running
    }

    /// Forgets the jobs of these staged volids (their policy was deleted).
    pub fn forget(&self, staged_volids: &[String]) {
        let mut jobs = lock(&self.jobs);
        for v in staged_volids {
            jobs.remove(v);
        }
    }
}

fn lock(jobs: &Mutex<Jobs>) -> std::sync::MutexGuard<'_, Jobs> {
    jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reads the staged archive into the store (or finds the snapshot a previous run of this job
/// committed) and verifies it.
fn ingest(store: &StoreSettings, req: &IngestRequest) -> Result<Ingested, String> {
    let chunk_store = store
        .open_or_init()
        .map_err(|e| format!("cannot open the chunk store: {e}"))?;
    let mut tags = policy_tags(&req.policy_uid);
    tags.insert(TAG_STAGED.to_owned(), req.staged_volid.clone());
    let existing = chunk_store
        .list_matching(
            &SnapshotFilter {
                names: vec![req.name.clone()],
                tags: tags.clone(),
            },
            None,
        )
        .map_err(|e| format!("cannot list the chunk store: {e}"))?
        .into_iter()
        .find(|s| s.complete);
    let (id, logical, stored) = match existing {
        Some(snap) => (snap.id, snap.size, 0),
        None => {
            let file = std::fs::File::open(&req.path).map_err(|e| {
                format!(
                    "cannot read the staged archive {}: {e}; mount the staging storage's dump directory at \
                     spec.destination.chunkStore.stagingPath (chart value extraVolumes)",
                    req.path.display()
                )
            })?;
            tags.insert(TAG_RUN.to_owned(), req.run_id.clone());
            let summary = chunk_store
                .backup_reader(
                    std::io::BufReader::with_capacity(1 << 20, file),
                    &req.name,
                    &tags,
                    SourceKind::Stream,
                    &NoProgress,
                )
                .map_err(|e| format!("cannot store {}: {e}", req.path.display()))?;
            (summary.snapshot.id, summary.bytes_read, summary.new_bytes)
        }
    };
    let report = chunk_store
        .verify(Some(&id), true)
        .map_err(|e| format!("cannot verify snapshot {id}: {e}"))?;
    Ok(Ingested {
        snapshot_id: id,
        logical_bytes: logical,
        stored_bytes: stored,
        verified: report.ok,
        problems: report.problems,
    })
}

/// What retention in the chunk store did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StorePrune {
    /// Snapshots removed.
    pub removed: usize,
    /// This policy's snapshots left, and their logical size.
    pub kept: usize,
    /// Sum of the kept snapshots' sizes.
    pub logical_bytes: u64,
    /// Pack bytes of the whole store, when every snapshot in it is this policy's.
    pub stored_bytes: Option<u64>,
}

/// Applies `retention` to each of `names` (this policy's snapshots only: name and UID tag),
/// then collects garbage. Blocking.
pub fn prune_store(
    store: &StoreSettings,
    policy_uid: &str,
    names: &[String],
    retention: Option<&Retention>,
) -> Result<StorePrune, String> {
    let chunk_store = store
        .open_or_init()
        .map_err(|e| format!("cannot open the chunk store: {e}"))?;
    let tags = policy_tags(policy_uid);
    let mut removed = 0;
    if let Some(keep) = retention.map(keep_options).filter(|k| k.keeps_something()) {
        for name in names {
            let filter = SnapshotFilter {
                names: vec![name.clone()],
                tags: tags.clone(),
            };
            let report = chunk_store
                .prune_matching(&keep, &filter, false)
                .map_err(|e| format!("cannot prune {name}: {e}"))?;
            removed += usize::try_from(report.removed).unwrap_or(usize::MAX);
        }
        if removed > 0 {
            chunk_store
                .gc(GC_GRACE)
                .map_err(|e| format!("cannot collect garbage: {e}"))?;
        }
    }
    totals(&chunk_store, policy_uid, removed)
}

fn totals(chunk_store: &ChunkStore, policy_uid: &str, removed: usize) -> Result<StorePrune, String> {
    let all = chunk_store
        .list()
        .map_err(|e| format!("cannot list the chunk store: {e}"))?;
    let ours: Vec<_> = all
        .iter()
        .filter(|s| s.tags.get(TAG_POLICY).map(String::as_str) == Some(policy_uid))
        .collect();
    let stored_bytes = if ours.len() == all.len() {
        chunk_store.stats().ok().map(|s| s.stored_bytes)
    } else {
        None
    };
    Ok(StorePrune {
        removed,
        kept: ours.len(),
        logical_bytes: ours.iter().map(|s| s.size).sum(),
        stored_bytes,
    })
}

/// The chunk store and the snapshots of `policy_uid` in it; `None` when a local store was never
/// created (nothing to find, and nothing is created to find it).
fn open_with_snapshots_of(
    store: &StoreSettings,
    policy_uid: &str,
) -> Result<Option<(ChunkStore, Vec<SnapshotInfo>)>, String> {
    if store.is_missing_dir() {
        return Ok(None);
    }
    let chunk_store = store
        .open_or_init()
        .map_err(|e| format!("cannot open the chunk store: {e}"))?;
    let filter = SnapshotFilter {
        names: Vec::new(),
        tags: policy_tags(policy_uid),
    };
    let ours = chunk_store
        .list_matching(&filter, None)
        .map_err(|e| format!("cannot list the chunk store: {e}"))?;
    Ok(Some((chunk_store, ours)))
}

/// Removes every snapshot of `policy_uid` (deletionPolicy `Delete`), then collects garbage.
/// Returns how many were removed. Blocking.
pub fn delete_all(store: &StoreSettings, policy_uid: &str) -> Result<usize, String> {
    let Some((chunk_store, ours)) = open_with_snapshots_of(store, policy_uid)? else {
        return Ok(0);
    };
    if ours.is_empty() {
        return Ok(0);
    }
    chunk_store
        .forget(&ours)
        .map_err(|e| format!("cannot delete this policy's snapshots: {e}"))?;
    chunk_store
        .gc(GC_GRACE)
        .map_err(|e| format!("cannot collect garbage: {e}"))?;
    Ok(ours.len())
}

/// How full the file system holding a local chunk store is, in percent (`None` for S3 or when
/// it cannot be told).
pub fn volume_used_percent(store: &StoreSettings) -> Option<f64> {
    if store.repo.to_string_lossy().starts_with("s3://") {
        return None;
    }
    // The repository may not exist yet: look at the nearest existing parent.
    let dir = store.repo.ancestors().find(|p| p.exists())?;
    let st = rustix::fs::statvfs(dir).ok()?;
    let total = st.f_blocks.checked_mul(st.f_frsize)?;
    let avail = st.f_bavail.checked_mul(st.f_frsize)?;
    (total > 0).then(|| (total.saturating_sub(avail)) as f64 * 100.0 / total as f64)
}

/// Reads back every chunk of every snapshot of `policy_uid`: `(checked, problems)`. Blocking.
pub fn verify_all(store: &StoreSettings, policy_uid: &str) -> Result<(usize, Vec<String>), String> {
    let Some((chunk_store, ours)) = open_with_snapshots_of(store, policy_uid)? else {
        return Ok((0, Vec::new()));
    };
    let mut problems = Vec::new();
    for snap in ours.iter().filter(|s| s.complete) {
        match chunk_store.verify(Some(&snap.id), true) {
            Ok(report) if report.ok => {}
            Ok(report) => problems.push(format!(
                "{} ({}): {}",
                snap.id,
                snap.name,
                report.problems.join(", ")
            )),
            Err(e) => problems.push(format!("{} ({}): {e}", snap.id, snap.name)),
        }
    }
    Ok((ours.len(), problems))
}
