//! `ChunkStore`: opening and creating repositories, snapshot lookup, statistics, and the
//! maintenance commands (prune, gc, reindex), which take the lock here and run the primitives of
//! `sync`, `gc` and `reindex` on a [`Repo`] view. Backup, restore, verify and repair live in their
//! own modules as `impl ChunkStore` blocks.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::backend::{self, Backend};
use super::blob::Codec;
use super::chunker::Chunker;
use super::config::{FORMAT_VERSION, RepoConfig, RepoParams};
use super::crypto::{Key, Keys};
use super::error::{Error, Param, Result};
use super::gc::{GcReport, PruneReport};
use super::index::{Index, SnapshotFilter, SnapshotInfo};
use super::lock::{self, LockMode, RepoLock};
use super::prune::KeepOptions;
use super::reindex::{self, ReindexReport};
use super::repo::Repo;
use super::sync;

/// How to open a repository.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// The key of an encrypted repository.
    pub key: Option<Key>,
    /// Where the SQLite index lives (default: inside a local repository, XDG cache for S3).
    pub cache_dir: Option<PathBuf>,
    /// How long to wait for a conflicting lock.
    pub lock_wait: Duration,
    /// Worker threads for hashing, compression and decoding (0 = number of cores).
    pub threads: usize,
    /// Overrides of the repository's zstd level for new chunks.
    pub zstd_level: Option<i32>,
    /// The time new snapshots record instead of now (restic's `backup --time`: importing
    /// backups made elsewhere).
    pub backup_time: Option<jiff::Timestamp>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            key: None,
            cache_dir: None,
            lock_wait: Duration::from_secs(600),
            threads: 0,
            zstd_level: None,
            backup_time: None,
        }
    }
}

/// A content-addressed, deduplicating chunk store.
pub struct ChunkStore {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) config: RepoConfig,
    pub(crate) codec: Arc<Codec>,
    pub(crate) chunker: Chunker,
    pub(crate) index_dir: PathBuf,
    /// Whether every writer uses this same index (a local repository with its index inside);
    /// otherwise the index is a per-machine cache of the repository.
    pub(crate) index_shared: bool,
    pub(crate) opts: OpenOptions,
}

/// Repository statistics.
#[derive(Clone, Debug, Serialize)]
pub struct Stats {
    /// Repository location.
    pub repo: String,
    /// Format version.
    pub format_version: u32,
    /// Whether chunks are encrypted.
    pub encrypted: bool,
    /// Tunables.
    pub params: RepoParams,
    /// Complete snapshots.
    pub snapshots: u64,
    /// Logical bytes of all complete snapshots.
    pub logical_bytes: u64,
    /// Unique chunks.
    pub chunks: u64,
    /// Plaintext bytes of unique chunks.
    pub unique_bytes: u64,
    /// Bytes of all pack files.
    pub stored_bytes: u64,
    /// Pack files.
    pub packs: u64,
    /// logical_bytes / stored_bytes.
    pub dedup_ratio: f64,
}

impl ChunkStore {
    /// Creates a repository at `repo` (refusing an existing one or a non-empty directory).
    pub fn init(
        repo: &str,
        params: RepoParams,
        key: Option<&Key>,
        cache_dir: Option<&Path>,
    ) -> Result<RepoConfig> {
        params.validate()?;
        let b = backend::open(repo, cache_dir)?;
        if !repo.starts_with("s3://") {
            let p = Path::new(repo);
            if p.exists()
                && std::fs::read_dir(p)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(true)
            {
                return Err(Error::RepoExists {
                    repo: repo.to_string(),
                });
            }
        }
        let mut id = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut id);
        let config = RepoConfig {
            format_version: FORMAT_VERSION,
            repo_id: hex::encode(id),
            created: jiff::Timestamp::now().to_string(),
            params,
            key_check: key.map(Key::check_value),
        };
        if !b.put_new("config", &config.to_bytes())? {
            return Err(Error::RepoExists {
                repo: repo.to_string(),
            });
        }
        let dir = cache_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| b.default_index_dir());
        Index::open(&dir)?;
        if let Some(root) = b.local_root() {
            lock::init_local(root)?;
        }
        Ok(config)
    }

    /// Opens an existing repository.
    pub fn open(repo: &str, opts: OpenOptions) -> Result<ChunkStore> {
        let backend: Arc<dyn Backend> = Arc::from(backend::open(repo, opts.cache_dir.as_deref())?);
        let bytes = backend.get("config")?.ok_or_else(|| Error::RepoNotFound {
            repo: repo.to_string(),
        })?;
        let config = RepoConfig::parse(&bytes)?;
        let keys = match (&config.key_check, &opts.key) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(Error::KeyRequired {
                    repo: repo.to_string(),
                });
            }
            (Some(check), Some(k)) if *check != k.check_value() => {
                return Err(Error::WrongKey {
                    repo: repo.to_string(),
                });
            }
            (Some(_), Some(k)) => Some(Keys::derive(k)),
        };
        let level = opts.zstd_level.unwrap_or(config.params.zstd_level);
        let codec = Arc::new(Codec::new(level, keys));
        let chunker = Chunker::new(config.params.chunker)?;
        let index_dir = opts
            .cache_dir
            .clone()
            .unwrap_or_else(|| backend.default_index_dir());
        let index_shared = !repo.starts_with("s3://") && opts.cache_dir.is_none();
        let store = ChunkStore {
            backend,
            config,
            codec,
            chunker,
            index_dir,
            index_shared,
            opts,
        };
        if !store.index_dir.join("index.sqlite").exists() && !repo_is_read_only(&store) {
            tracing::info!(repo, "no local index: rebuilding it from the repository");
            store.reindex()?;
        } else if !store.index_shared && !repo_is_read_only(&store) {
            let r = sync::sync_index(&store.repo())?;
            if r != sync::SyncReport::default() {
                tracing::info!(repo, ?r, "index updated from the repository");
            }
        }
        Ok(store)
    }

    /// The view the maintenance primitives work on.
    pub(crate) fn repo(&self) -> Repo<'_> {
        Repo {
            backend: &*self.backend,
            codec: &self.codec,
            index_dir: &self.index_dir,
            pack_size: self.config.params.pack_size,
        }
    }

    /// Applies retention rules per backup name (see `prune::compute_prune`) on an index proved
    /// current (see `sync::current_index`).
    pub fn prune(&self, keep: &KeepOptions, dry_run: bool) -> Result<PruneReport> {
        self.prune_matching(keep, &SnapshotFilter::default(), dry_run)
    }

    /// [`ChunkStore::prune`] limited to the snapshots `filter` selects (a policy's own names and
    /// tags): every other snapshot is kept, whatever the rules say.
    pub fn prune_matching(
        &self,
        keep: &KeepOptions,
        filter: &SnapshotFilter,
        dry_run: bool,
    ) -> Result<PruneReport> {
        if !keep.keeps_something() {
            return Err(Error::InvalidArgument {
                param: Param::Retention,
                reason: "no rule keeps anything: set at least one keep count (last, hourly, daily, \
                         weekly, monthly or yearly) above 0"
                    .into(),
            });
        }
        let _lock = if dry_run {
            None
        } else {
            self.lock(LockMode::Exclusive, "prune", false)?
        };
        sync::prune(&self.repo(), self.index_shared, keep, filter, dry_run)
    }

    /// Removes the given snapshots (run `gc` afterwards to free their space).
    pub fn forget(&self, snaps: &[SnapshotInfo]) -> Result<PruneReport> {
        let _lock = self.lock(LockMode::Exclusive, "forget", false)?;
        let uids: Vec<String> = snaps.iter().map(|s| s.uid.clone()).collect();
        sync::forget(&self.repo(), self.index_shared, &uids)
    }

    /// Reclaims space: drops unfinished snapshots of crashed backups, deletes packs no snapshot
    /// file needs, rewrites mostly-dead packs, and sweeps stray files older than `grace`. Runs on
    /// an index proved current; an index that is behind is rebuilt first.
    pub fn gc(&self, grace: Duration) -> Result<GcReport> {
        let _lock = self.lock(LockMode::Exclusive, "gc", false)?;
        sync::gc(&self.repo(), self.index_shared, grace)
    }

    /// Rebuilds the index from the repository into a new file, then swaps it in.
    pub fn reindex(&self) -> Result<ReindexReport> {
        let _lock = self.lock(LockMode::Exclusive, "reindex", false)?;
        reindex::rebuild(&self.repo())
    }

    /// The repository config.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// A new connection to the index (read-write, or read-only if the repository cannot be
    /// written).
    pub fn index(&self) -> Result<Index> {
        match Index::open(&self.index_dir) {
            Ok(i) => Ok(i),
            Err(e @ Error::IndexCorrupt { .. }) => Err(e),
            Err(e) => Index::open_read_only(&self.index_dir).map_err(|_| e),
        }
    }

    pub(crate) fn lock(&self, mode: LockMode, op: &'static str, optional: bool) -> Result<Option<RepoLock>> {
        lock::acquire(&self.backend, mode, op, self.opts.lock_wait, optional)
    }

    pub(crate) fn threads(&self) -> usize {
        if self.opts.threads > 0 {
            self.opts.threads
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .max(2)
        }
    }

    /// All snapshots, oldest first.
    pub fn list(&self) -> Result<Vec<SnapshotInfo>> {
        self.index()?.snapshots()
    }

    /// The snapshots `filter` selects, oldest first; with `last`, only the newest `last` of
    /// each backup name.
    pub fn list_matching(&self, filter: &SnapshotFilter, last: Option<usize>) -> Result<Vec<SnapshotInfo>> {
        let mut snaps: Vec<SnapshotInfo> = self.list()?.into_iter().filter(|s| filter.matches(s)).collect();
        if let Some(n) = last {
            let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
            let mut keep = vec![false; snaps.len()];
            for (i, s) in snaps.iter().enumerate().rev() {
                let count = seen.entry(s.name.clone()).or_default();
                keep[i] = *count < n;
                *count += 1;
            }
            let mut flags = keep.into_iter();
            snaps.retain(|_| flags.next().unwrap_or(false));
        }
        Ok(snaps)
    }

    /// Finds a snapshot: an id prefix (at least 4 hex characters), `NAME@latest`, or
    /// `NAME@TIME` with an RFC 3339 time as `list` prints it.
    pub fn resolve(&self, spec: &str) -> Result<SnapshotInfo> {
        let all = self.list()?;
        let not_found = || Error::SnapshotNotFound {
            spec: spec.to_string(),
        };
        if let Some((name, when)) = spec.split_once('@') {
            let mut of_name: Vec<&SnapshotInfo> =
                all.iter().filter(|s| s.name == name && s.complete).collect();
            if when == "latest" {
                return of_name.pop().cloned().ok_or_else(not_found);
            }
            let t: jiff::Timestamp = when.parse().map_err(|_| Error::InvalidArgument {
                param: Param::Snapshot,
                reason: format!("{when:?} is not `latest` or an RFC 3339 time like 2026-01-31T02:00:00Z"),
            })?;
            return match of_name
                .into_iter()
                .filter(|s| s.time_unix == t.as_second())
                .collect::<Vec<_>>()
                .as_slice()
            {
                [one] => Ok((*one).clone()),
                [] => Err(not_found()),
                many => Err(ambiguous(spec, many)),
            };
        }
        if spec.len() < 4 || !spec.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::InvalidArgument {
                param: Param::Snapshot,
                reason: format!(
                    "{spec:?} is not an id (4+ hex characters), NAME@latest or NAME@RFC3339-TIME"
                ),
            });
        }
        let spec_l = spec.to_ascii_lowercase();
        let matches: Vec<&SnapshotInfo> = all.iter().filter(|s| s.uid.starts_with(&spec_l)).collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(not_found()),
            many => Err(ambiguous(spec, many)),
        }
    }

    /// Repository statistics.
    pub fn stats(&self) -> Result<Stats> {
        let idx = self.index()?;
        let snaps = idx.snapshots()?;
        let complete: Vec<_> = snaps.iter().filter(|s| s.complete).collect();
        let logical: u64 = complete.iter().map(|s| s.size).sum();
        let (packs, pack_bytes, chunks, unique, _) = idx.totals()?;
        Ok(Stats {
            repo: self.backend.location().to_string(),
            format_version: self.config.format_version,
            encrypted: self.codec.encrypted(),
            params: self.config.params,
            snapshots: complete.len() as u64,
            logical_bytes: logical,
            chunks,
            unique_bytes: unique,
            stored_bytes: pack_bytes,
            packs,
            dedup_ratio: if pack_bytes == 0 {
                0.0
            } else {
                logical as f64 / pack_bytes as f64
            },
        })
    }
}

/// Several snapshots match `spec`: name them all by id.
fn ambiguous(spec: &str, many: &[&SnapshotInfo]) -> Error {
    Error::SnapshotAmbiguous {
        spec: spec.to_string(),
        matches: many
            .iter()
            .map(|s| format!("{} ({}@{})", s.id, s.name, s.time))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn repo_is_read_only(store: &ChunkStore) -> bool {
    let dir = &store.index_dir;
    std::fs::create_dir_all(dir).is_err()
        || std::fs::metadata(dir)
            .map(|m| m.permissions().readonly())
            .unwrap_or(true)
        || tempfile_probe(dir).is_err()
}

fn tempfile_probe(dir: &Path) -> std::io::Result<()> {
    let p = dir.join(format!(".probe-{}", std::process::id()));
    std::fs::write(&p, b"")?;
    std::fs::remove_file(&p)
}
