//! `homelab-autopilot store --repo PATH_OR_URL <command>`: the chunk store as a command-line tool.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::cli_output as out;
use super::config::{ChunkerParams, RepoParams};
use super::crypto::{KEY_ENV, Key};
use super::error::{Error, Param};
use super::prune::KeepOptions;
use super::snapfile::SourceKind;
use super::store::{ChunkStore, OpenOptions};

/// Arguments of `homelab-autopilot store`.
#[derive(Args, Debug)]
pub struct StoreArgs {
    /// Repository: a directory path, or s3://BUCKET[/PREFIX] (credentials and endpoint from
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL).
    #[arg(long, env = "AUTOPILOT_STORE_REPO")]
    pub repo: String,
    /// File holding the repository key (64 hex characters). `init --encrypt` creates it if missing.
    /// Alternatively set AUTOPILOT_STORE_KEY to the key itself.
    #[arg(long, global = true, env = "AUTOPILOT_STORE_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Directory of the local SQLite index (default: inside a local repository; for S3,
    /// $XDG_CACHE_HOME/homelab-autopilot/store/<hash>).
    #[arg(long, global = true)]
    pub cache_dir: Option<PathBuf>,
    /// Print machine-readable JSON on stdout instead of human output.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to wait for a conflicting lock (backups wait for prune/gc and vice versa).
    #[arg(long, global = true, default_value_t = 600)]
    pub lock_wait: u64,
    /// Worker threads (0 = one per core).
    #[arg(long, global = true, default_value_t = 0)]
    pub threads: usize,
    /// The store command.
    #[command(subcommand)]
    pub command: StoreCommand,
}

/// Store commands.
#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Create a repository.
    Init(InitArgs),
    /// Back up a file, a directory (as a tar stream) or standard input (`-`).
    Backup(BackupArgs),
    /// Restore a snapshot to a new path, or to standard output (`-`).
    Restore(RestoreArgs),
    /// List snapshots.
    List,
    /// Check snapshots: every pack they need exists with the size recorded when it was stored,
    /// and (with --read-data) every stored byte they need. Exits 4 when it finds damage.
    Verify(VerifyArgs),
    /// After `verify` found damage: drop lost chunks from the index (the next backup of their
    /// data stores them again), salvage damaged packs, and mark (never delete) the snapshots that
    /// cannot be fully restored. Exits 4 while a snapshot stays damaged.
    Repair(RepairArgs),
    /// Remove snapshots by retention rules (per backup name), then run `gc` to free space.
    Prune(PruneArgs),
    /// Free space: delete unused packs, rewrite mostly-unused ones, sweep crash leftovers.
    Gc(GcArgs),
    /// Show repository size, chunk counts and dedup ratio.
    Stats,
    /// Rebuild the SQLite index from the repository's packs and snapshot objects.
    Reindex,
}

/// `store init`.
#[derive(Args, Debug)]
pub struct InitArgs {
    /// Encrypt chunks and snapshots (needs --key-file or AUTOPILOT_STORE_KEY).
    #[arg(long)]
    pub encrypt: bool,
    /// Smallest chunk (bytes; K/M suffixes allowed).
    #[arg(long, value_parser = parse_size)]
    pub chunk_min: Option<u32>,
    /// Average chunk size.
    #[arg(long, value_parser = parse_size)]
    pub chunk_avg: Option<u32>,
    /// Largest chunk.
    #[arg(long, value_parser = parse_size)]
    pub chunk_max: Option<u32>,
    /// zstd level (-7..=19).
    #[arg(long, allow_negative_numbers = true)]
    pub zstd_level: Option<i32>,
    /// Target pack file size.
    #[arg(long, value_parser = parse_size)]
    pub pack_size: Option<u32>,
}

/// `store backup`.
#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Backup name (A-Z a-z 0-9 . _ : -); snapshots of one name form a prune group.
    #[arg(long)]
    pub name: String,
    /// Tag as KEY=VALUE (repeatable).
    #[arg(long = "tag", value_parser = parse_tag)]
    pub tags: Vec<(String, String)>,
    /// zstd level for this backup's new chunks (default: the repository's).
    #[arg(long, allow_negative_numbers = true)]
    pub zstd_level: Option<i32>,
    /// File, directory, or `-` for standard input.
    pub path: String,
}

/// `store restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot: id prefix (4+ hex characters), NAME@latest, or NAME@TIME (RFC 3339 as listed).
    pub snapshot: String,
    /// New file or directory path (never overwritten), or `-` for standard output.
    #[arg(long)]
    pub to: String,
}

/// `store verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Only this snapshot (default: all).
    pub snapshot: Option<String>,
    /// Read, authenticate and hash every chunk (slow), not just check presence.
    #[arg(long)]
    pub read_data: bool,
}

/// `store repair`.
#[derive(Args, Debug)]
pub struct RepairArgs {
    /// Also read every pack and salvage those holding a chunk that fails its checks (slow).
    #[arg(long)]
    pub read_data: bool,
}

/// `store prune`.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Keep the N newest snapshots.
    #[arg(long)]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the N newest hours.
    #[arg(long)]
    pub keep_hourly: Option<u32>,
    /// ... days.
    #[arg(long)]
    pub keep_daily: Option<u32>,
    /// ... ISO weeks.
    #[arg(long)]
    pub keep_weekly: Option<u32>,
    /// ... months.
    #[arg(long)]
    pub keep_monthly: Option<u32>,
    /// ... years.
    #[arg(long)]
    pub keep_yearly: Option<u32>,
    /// Show what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `store gc`.
#[derive(Args, Debug)]
pub struct GcArgs {
    /// Stray files (crash leftovers) younger than this many seconds are kept.
    #[arg(long, default_value_t = 3600)]
    pub grace: u64,
}

fn parse_size(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (t, 1u64),
        Some((i, _)) => {
            let m = match t[i..].to_ascii_lowercase().as_str() {
                "k" | "kib" => 1 << 10,
                "m" | "mib" => 1 << 20,
                "g" | "gib" => 1 << 30,
                other => {
                    return Err(format!(
                        "unknown size suffix {other:?}: use a byte count or K/M/G"
                    ));
                }
            };
            (&t[..i], m)
        }
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 65536, 64K or 16M"))?;
    u32::try_from(n * mult).map_err(|_| format!("{s} is too large"))
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn load_key(args: &StoreArgs, create: bool) -> anyhow::Result<Option<Key>> {
    if let Some(path) = &args.key_file {
        if create && !path.exists() {
            let key = Key::generate();
            write_new_secret(path, &key.to_text())
                .with_context(|| format!("--key-file: cannot create {}", path.display()))?;
            eprintln!(
                "created key file {} (keep a copy: without it the backups cannot be read)",
                path.display()
            );
            return Ok(Some(key));
        }
        return Ok(Some(Key::from_file(path)?));
    }
    match std::env::var(KEY_ENV) {
        Ok(v) if !v.trim().is_empty() => Ok(Some(Key::parse(&v, KEY_ENV)?)),
        _ => Ok(None),
    }
}

fn write_new_secret(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// Exit status of `verify` when it finds damage, and of `repair` while a snapshot stays damaged.
pub const EXIT_DAMAGE: u8 = 4;

/// The flag (or argument) of this CLI that sets a store parameter.
pub fn flag(p: Param) -> &'static str {
    match p {
        Param::Repository => "--repo",
        Param::ChunkMin => "--chunk-min",
        Param::ChunkAvg => "--chunk-avg",
        Param::ChunkMax => "--chunk-max",
        Param::ChunkSizes => "--chunk-min/--chunk-avg/--chunk-max",
        Param::ZstdLevel => "--zstd-level",
        Param::PackSize => "--pack-size",
        Param::BackupName => "--name",
        Param::Snapshot => "SNAPSHOT",
        Param::RestoreTarget => "--to",
        Param::Retention => {
            "--keep-last/--keep-hourly/--keep-daily/--keep-weekly/--keep-monthly/--keep-yearly"
        }
        Param::Tag => "--tag",
        Param::SnapshotPath => "PATH",
    }
}

/// A store error as this CLI prints it: the store's message plus the flag or command that
/// fixes it.
pub fn message(e: &Error, repo: &str) -> String {
    match e {
        Error::InvalidConfig { param, .. } | Error::InvalidArgument { param, .. } => {
            format!("{e} ({})", flag(*param))
        }
        Error::RepoNotFound { .. } => {
            format!("{e}: `homelab-autopilot store --repo {repo} init` creates it")
        }
        Error::KeyRequired { .. } => format!(
            "{e}: pass --key-file PATH, or set AUTOPILOT_STORE_KEY_FILE to the key file or \
             {KEY_ENV} to the key"
        ),
        Error::IndexCorrupt { .. } => format!("{e}: run `homelab-autopilot store --repo {repo} reindex`"),
        Error::IndexStale { .. } => format!("{e} (`homelab-autopilot store --repo {repo} verify`)"),
        Error::SnapshotNotFound { .. } => {
            format!("{e}: `homelab-autopilot store --repo {repo} list` shows the ids")
        }
        Error::Locked { .. } => format!("{e} (raise --lock-wait)"),
        _ => e.to_string(),
    }
}

/// An error chain as this CLI prints it: store errors through [`message`], the rest as they are.
fn chain_message(e: &anyhow::Error, repo: &str) -> String {
    e.chain()
        .map(|c| match c.downcast_ref::<Error>() {
            Some(se) => message(se, repo),
            None => c.to_string(),
        })
        .collect::<Vec<_>>()
        .join(": ")
}

/// Runs one store command. Returns [`EXIT_DAMAGE`] when `verify` finds problems or `repair`
/// leaves a damaged snapshot.
pub fn run(args: StoreArgs) -> anyhow::Result<ExitCode> {
    let repo = args.repo.clone();
    run_command(args).map_err(|e| anyhow::anyhow!(chain_message(&e, &repo)))
}

fn run_command(args: StoreArgs) -> anyhow::Result<ExitCode> {
    let progress_ok = !args.json && std::io::stderr().is_terminal();
    if let StoreCommand::Init(init) = &args.command {
        let d = RepoParams::default();
        let params = RepoParams {
            chunker: ChunkerParams {
                min: init.chunk_min.unwrap_or(d.chunker.min),
                avg: init.chunk_avg.unwrap_or(d.chunker.avg),
                max: init.chunk_max.unwrap_or(d.chunker.max),
            },
            zstd_level: init.zstd_level.unwrap_or(d.zstd_level),
            pack_size: init.pack_size.unwrap_or(d.pack_size),
        };
        params.validate()?;
        let key = if init.encrypt {
            match load_key(&args, true)? {
                Some(k) => Some(k),
                None => bail!("init --encrypt needs --key-file PATH (created if missing) or {KEY_ENV}"),
            }
        } else {
            None
        };
        let cfg = ChunkStore::init(&args.repo, params, key.as_ref(), args.cache_dir.as_deref())?;
        out::init(&args.repo, &cfg, args.json);
        return Ok(ExitCode::SUCCESS);
    }
    let mut opts = OpenOptions {
        key: load_key(&args, false)?,
        cache_dir: args.cache_dir.clone(),
        lock_wait: Duration::from_secs(args.lock_wait),
        threads: args.threads,
        zstd_level: None,
    };
    if let StoreCommand::Backup(b) = &args.command {
        opts.zstd_level = b.zstd_level;
    }
    let store = ChunkStore::open(&args.repo, opts)?;
    match &args.command {
        StoreCommand::Init(_) => unreachable_init(),
        StoreCommand::Backup(b) => {
            let tags: BTreeMap<String, String> = b.tags.iter().cloned().collect();
            let summary = if b.path == "-" {
                let bar = out::bar(progress_ok, None);
                store.backup_reader(std::io::stdin().lock(), &b.name, &tags, SourceKind::Stream, &bar)?
            } else {
                let p = Path::new(&b.path);
                let meta = std::fs::metadata(p).with_context(|| format!("backup PATH {}", p.display()))?;
                if meta.is_dir() {
                    let bar = out::bar(progress_ok, None);
                    store.backup_dir(p, &b.name, &tags, &bar)?
                } else {
                    let f = std::fs::File::open(p).with_context(|| format!("backup PATH {}", p.display()))?;
                    let bar = out::bar(progress_ok, Some(meta.len()));
                    store.backup_reader(f, &b.name, &tags, SourceKind::File, &bar)?
                }
            };
            out::backup(&summary, args.json);
        }
        StoreCommand::Restore(r) => {
            let snap = store.resolve(&r.snapshot)?;
            let bar = out::bar(progress_ok && r.to != "-", Some(snap.size));
            let summary = if r.to == "-" {
                // Write to fd 1 directly: `Stdout` is line-buffered and would scan binary data
                // for newlines.
                use std::os::fd::AsFd;
                let fd = std::io::stdout()
                    .as_fd()
                    .try_clone_to_owned()
                    .context("--to -: cannot use stdout")?;
                let out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::from(fd));
                store.restore_to_writer(&snap, out, &bar)?
            } else {
                store.restore_to_path(&snap, Path::new(&r.to), &bar)?
            };
            out::restore(&summary, args.json, r.to == "-");
        }
        StoreCommand::List => out::list(&store.list()?, args.json),
        StoreCommand::Verify(v) => {
            let report = store.verify(v.snapshot.as_deref(), v.read_data)?;
            out::verify(&report, args.json);
            if !report.ok {
                return Ok(ExitCode::from(EXIT_DAMAGE));
            }
        }
        StoreCommand::Repair(r) => {
            let report = store.repair(r.read_data)?;
            out::repair(&report, args.json);
            if !report.all_restorable() {
                return Ok(ExitCode::from(EXIT_DAMAGE));
            }
        }
        StoreCommand::Prune(p) => {
            let keep = KeepOptions {
                last: p.keep_last,
                hourly: p.keep_hourly,
                daily: p.keep_daily,
                weekly: p.keep_weekly,
                monthly: p.keep_monthly,
                yearly: p.keep_yearly,
            };
            out::prune(&store.prune(&keep, p.dry_run)?, args.json);
        }
        StoreCommand::Gc(g) => out::gc(&store.gc(Duration::from_secs(g.grace))?, args.json),
        StoreCommand::Stats => out::stats(&store.stats()?, args.json),
        StoreCommand::Reindex => out::reindex(&store.reindex()?, args.json),
    }
    Ok(ExitCode::SUCCESS)
}

fn unreachable_init() {
    // `init` returned above; nothing to do here.
}
