//! `homelab-autopilot store --repo PATH_OR_URL <command>`: the chunk store as a command-line tool.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::cli_output as out;
use super::config::{ChunkerParams, RepoParams};
use super::crypto::{KEY_ENV, Key};
use super::error::{Error, Param};
use super::index::{SnapshotFilter, SnapshotInfo};
use super::pattern::{PathFilter, read_pattern_file};
use super::prune::KeepOptions;
use super::snapfile::SourceKind;
use super::store::{ChunkStore, OpenOptions};
use super::verify::DataSubset;

/// Exit statuses of `homelab-autopilot store`, as `--help` shows them.
const EXIT_HELP: &str = "\
Exit status:
   0  success
   1  fatal error
   2  invalid command line
   3  snapshot saved but incomplete (skipped or shrunk files, listed in the output)
   4  verify found damage, or repair left a snapshot marked damaged
  10  the repository does not exist
  11  the repository lock could not be taken in time (--lock-wait)
  12  wrong key: the key does not open the repository, is malformed, or is missing
 141  stdout was closed early (e.g. `store list | head -1`); nothing is printed

Environment (an empty value counts as unset):
  AUTOPILOT_STORE_REPO      the repository, when --repo is not given
  AUTOPILOT_STORE_KEY_FILE  the key file, when --key-file is not given
  AUTOPILOT_STORE_KEY       the key itself (64 hex characters)";

/// Environment variable naming the repository when `--repo` is not given.
pub const REPO_ENV: &str = "AUTOPILOT_STORE_REPO";
/// Environment variable naming the key file when `--key-file` is not given.
pub const KEY_FILE_ENV: &str = "AUTOPILOT_STORE_KEY_FILE";

/// Arguments of `homelab-autopilot store`.
#[derive(Args, Debug)]
#[command(after_help = EXIT_HELP)]
pub struct StoreArgs {
    /// Repository: a directory path, or s3://BUCKET[/PREFIX] (credentials and endpoint from
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL). Default:
    /// $AUTOPILOT_STORE_REPO. Accepted before or after the command.
    #[arg(long, global = true)]
    pub repo: Option<String>,
    /// File holding the repository key (64 hex characters). `init --encrypt` creates it if missing.
    /// Default: $AUTOPILOT_STORE_KEY_FILE; or set AUTOPILOT_STORE_KEY to the key itself.
    #[arg(long, global = true)]
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
    /// List snapshots (oldest first), optionally only some.
    List(ListArgs),
    /// Remove the given snapshots; run `gc` afterwards to free their space.
    Forget(ForgetArgs),
    /// List the entries of a directory snapshot (under PATH).
    Ls(LsArgs),
    /// Write one file of a directory snapshot to standard output.
    Dump(DumpArgs),
    /// Show the paths added, removed and changed from snapshot A to snapshot B.
    Diff(DiffArgs),
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
    /// Leave out paths matching PATTERN (repeatable; directory backups; see README for the
    /// pattern rules: `*.tmp`, `/cache`, `/home/**/node_modules`).
    #[arg(long = "exclude", value_name = "PATTERN")]
    pub excludes: Vec<String>,
    /// Read exclude patterns from FILE, one per line (`#` comments and blank lines ignored;
    /// repeatable).
    #[arg(long = "exclude-file", value_name = "FILE")]
    pub exclude_files: Vec<PathBuf>,
    /// Record this time (RFC 3339, e.g. 2026-01-31T02:00:00Z) instead of now, as restic's
    /// `backup --time` (importing backups made elsewhere).
    #[arg(long, value_parser = parse_time)]
    pub time: Option<jiff::Timestamp>,
    /// File, directory, or `-` for standard input.
    #[arg(
        required_unless_present = "stdin_from_command",
        conflicts_with = "stdin_from_command"
    )]
    pub path: Option<String>,
    /// Run CMD ARGS... and back up its standard output; nothing is saved unless it exits 0
    /// (e.g. `--stdin-from-command vzdump 100 --stdout`). Must come last.
    #[arg(long, num_args = 1.., allow_hyphen_values = true, value_name = "CMD ARGS")]
    pub stdin_from_command: Option<Vec<String>>,
}

/// `store restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot: id prefix (4+ hex characters), NAME@latest, or NAME@TIME (RFC 3339 as listed).
    pub snapshot: String,
    /// New file or directory path (never overwritten), or `-` for standard output.
    #[arg(long)]
    pub to: String,
    /// Restore only paths matching PATTERN, with what is below them and the directories above
    /// them (repeatable; directory snapshots restored to a path).
    #[arg(long = "include", value_name = "PATTERN")]
    pub includes: Vec<String>,
    /// Do not restore paths matching PATTERN, nor what is below them (repeatable).
    #[arg(long = "exclude", value_name = "PATTERN")]
    pub excludes: Vec<String>,
}

/// Which snapshots `list` and `prune` see.
#[derive(Args, Debug)]
pub struct FilterArgs {
    /// Only snapshots of this backup name (repeatable: any of them).
    #[arg(long = "name")]
    pub names: Vec<String>,
    /// Only snapshots carrying tag KEY=VALUE (repeatable: all of them).
    #[arg(long = "tag", value_parser = parse_tag)]
    pub tags: Vec<(String, String)>,
}

impl FilterArgs {
    fn filter(&self) -> SnapshotFilter {
        SnapshotFilter {
            names: self.names.clone(),
            tags: self.tags.iter().cloned().collect(),
        }
    }
}

/// `store list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Which snapshots.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Only the N newest snapshots of each backup name.
    #[arg(long)]
    pub last: Option<usize>,
}

/// `store forget`.
#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Snapshots to remove: id prefixes, NAME@latest or NAME@TIME.
    #[arg(required = true)]
    pub snapshots: Vec<String>,
}

/// `store ls`.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// A directory snapshot.
    pub snapshot: String,
    /// Only this path and what is below it.
    pub path: Option<String>,
}

/// `store dump`.
#[derive(Args, Debug)]
pub struct DumpArgs {
    /// A directory snapshot.
    pub snapshot: String,
    /// The file inside it.
    pub path: String,
}

/// `store diff`.
#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The older directory snapshot.
    pub a: String,
    /// The newer one.
    pub b: String,
}

/// `store verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Only this snapshot (default: all).
    pub snapshot: Option<String>,
    /// Read, authenticate and hash every chunk (slow), not just check presence.
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Like --read-data, for a part of the packs: `N%` reads a random N percent of the packs the
    /// snapshots need (at least one; a new choice every run), `n/t` reads group n of t (run 1/t
    /// .. t/t to read each pack once). Every other pack is still checked for presence and size.
    #[arg(long, value_parser = DataSubset::parse, value_name = "N%|n/t")]
    pub read_data_subset: Option<DataSubset>,
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
    /// Only these snapshots are looked at (a policy's own); every other one is kept.
    #[command(flatten)]
    pub filter: FilterArgs,
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

fn parse_time(s: &str) -> Result<jiff::Timestamp, String> {
    s.trim()
        .parse()
        .map_err(|e| format!("{s:?} is not an RFC 3339 time like 2026-01-31T02:00:00Z: {e}"))
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// The value of an environment variable; empty (or not Unicode) counts as unset.
fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn load_key(args: &StoreArgs, create: bool) -> anyhow::Result<Option<Key>> {
    let key_file = args
        .key_file
        .clone()
        .or_else(|| env_nonempty(KEY_FILE_ENV).map(PathBuf::from));
    if let Some(path) = &key_file {
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
    match env_nonempty(KEY_ENV) {
        Some(v) => Ok(Some(Key::parse(&v, KEY_ENV)?)),
        None => Ok(None),
    }
}

fn write_new_secret(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// Exit status of a fatal error.
pub const EXIT_FATAL: u8 = 1;
/// Exit status when a snapshot was saved but is incomplete (skipped or shrunk files).
pub const EXIT_INCOMPLETE: u8 = 3;
/// Exit status of `verify` when it finds damage, and of `repair` while a snapshot stays damaged.
pub const EXIT_DAMAGE: u8 = 4;
/// Exit status when the repository does not exist.
pub const EXIT_NO_REPOSITORY: u8 = 10;
/// Exit status when the repository lock could not be taken in time.
pub const EXIT_LOCKED: u8 = 11;
/// Exit status when the key is wrong, malformed or missing.
pub const EXIT_WRONG_KEY: u8 = 12;

/// The exit status for an error: the first store error in the chain decides.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    match e.chain().find_map(|c| c.downcast_ref::<Error>()) {
        Some(Error::RepoNotFound { .. }) => EXIT_NO_REPOSITORY,
        Some(Error::Locked { .. }) => EXIT_LOCKED,
        Some(Error::WrongKey { .. } | Error::KeyRequired { .. } | Error::BadKey { .. }) => EXIT_WRONG_KEY,
        _ => EXIT_FATAL,
    }
}

/// Whether an error is only the reader of stdout going away (`store list | head -1`).
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        let io = match c.downcast_ref::<Error>() {
            Some(Error::Io { cause, .. }) => Some(cause),
            _ => c.downcast_ref::<std::io::Error>(),
        };
        io.is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

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
        Param::Pattern => "--include/--exclude/--exclude-file",
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
            format!("{e} (`homelab-autopilot store --repo {repo} init`)")
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

/// Standard output for data: fd 1 directly, since `Stdout` is line-buffered and would scan
/// binary data for newlines.
fn raw_stdout() -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsFd;
    let fd = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .context("cannot use stdout")?;
    Ok(std::fs::File::from(fd))
}

/// An error as `--json` prints it on stdout.
#[derive(serde::Serialize)]
struct JsonError<'a> {
    error: &'a str,
    category: &'static str,
    exit_code: u8,
}

/// Runs one store command and reports its error: on stderr, and with `--json` also as a JSON
/// object on stdout; the exit status tells the outcomes apart (see `EXIT_HELP`). A closed
/// stdout is returned as the error it is, for the caller to end quietly.
pub fn run(args: StoreArgs) -> anyhow::Result<ExitCode> {
    let repo = args.repo.clone().or_else(|| env_nonempty(REPO_ENV));
    let as_json = args.json;
    let result = match &repo {
        Some(repo) => run_command(args, repo),
        None => Err(anyhow::anyhow!(
            "no repository given: pass --repo PATH_OR_URL or set {REPO_ENV}"
        )),
    };
    let e = match result {
        Ok(code) => return Ok(code),
        Err(e) if is_broken_pipe(&e) => return Err(e),
        Err(e) => e,
    };
    let code = exit_code(&e);
    let text = chain_message(&e, repo.as_deref().unwrap_or("PATH_OR_URL"));
    eprintln!("error: {text}");
    if as_json {
        let category = e
            .chain()
            .find_map(|c| c.downcast_ref::<Error>())
            .map_or("Error", Error::category);
        let body = JsonError {
            error: &text,
            category,
            exit_code: code,
        };
        if let Ok(s) = serde_json::to_string_pretty(&body) {
            // stdout may be gone too; stderr already has the error.
            let _ = writeln!(std::io::stdout(), "{s}");
        }
    }
    Ok(ExitCode::from(code))
}

fn run_command(args: StoreArgs, repo: &str) -> anyhow::Result<ExitCode> {
    let progress_ok = !args.json && std::io::stderr().is_terminal();
    let mut stdout = std::io::stdout().lock();
    let w: &mut dyn Write = &mut stdout;
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
                None => bail!(
                    "init --encrypt needs --key-file PATH (created if missing), {KEY_FILE_ENV} or {KEY_ENV}"
                ),
            }
        } else {
            None
        };
        let cfg = ChunkStore::init(repo, params, key.as_ref(), args.cache_dir.as_deref())?;
        out::init(w, repo, &cfg, args.json)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut opts = OpenOptions {
        key: load_key(&args, false)?,
        cache_dir: args.cache_dir.clone(),
        lock_wait: Duration::from_secs(args.lock_wait),
        threads: args.threads,
        zstd_level: None,
        backup_time: None,
    };
    if let StoreCommand::Backup(b) = &args.command {
        opts.zstd_level = b.zstd_level;
        opts.backup_time = b.time;
    }
    let store = ChunkStore::open(repo, opts)?;
    match &args.command {
        StoreCommand::Init(_) => {}
        StoreCommand::Backup(b) => {
            let tags: BTreeMap<String, String> = b.tags.iter().cloned().collect();
            let from_stdin = b.stdin_from_command.is_some() || b.path.as_deref() == Some("-");
            if from_stdin && !(b.excludes.is_empty() && b.exclude_files.is_empty()) {
                bail!("--exclude and --exclude-file apply to directory backups, not to standard input");
            }
            let summary = if let Some([program, cmd_args @ ..]) = b.stdin_from_command.as_deref() {
                let bar = out::bar(progress_ok, None);
                let mut cmd = std::process::Command::new(program);
                cmd.args(cmd_args);
                store.backup_command(&mut cmd, &b.name, &tags, &bar)?
            } else if b.path.as_deref() == Some("-") {
                let bar = out::bar(progress_ok, None);
                store.backup_reader(std::io::stdin().lock(), &b.name, &tags, SourceKind::Stream, &bar)?
            } else {
                let p = Path::new(b.path.as_deref().unwrap_or_default());
                let meta = std::fs::metadata(p).with_context(|| format!("backup PATH {}", p.display()))?;
                let mut excludes = b.excludes.clone();
                for f in &b.exclude_files {
                    excludes.extend(
                        read_pattern_file(f).with_context(|| format!("--exclude-file {}", f.display()))?,
                    );
                }
                if meta.is_dir() {
                    let filter = PathFilter::new(&[], &excludes)?;
                    let bar = out::bar(progress_ok, None);
                    store.backup_dir_filtered(p, &b.name, &tags, &filter, &bar)?
                } else if !excludes.is_empty() {
                    bail!(
                        "--exclude and --exclude-file apply to directory backups; {} is a file",
                        p.display()
                    );
                } else {
                    let f = std::fs::File::open(p).with_context(|| format!("backup PATH {}", p.display()))?;
                    let bar = out::bar(progress_ok, Some(meta.len()));
                    store.backup_reader(f, &b.name, &tags, SourceKind::File, &bar)?
                }
            };
            out::backup(w, &summary, args.json)?;
            if !summary.is_complete() {
                w.flush()?;
                return Ok(ExitCode::from(EXIT_INCOMPLETE));
            }
        }
        StoreCommand::Restore(r) => {
            let snap = store.resolve(&r.snapshot)?;
            let bar = out::bar(progress_ok && r.to != "-", Some(snap.size));
            let filter = PathFilter::new(&r.includes, &r.excludes)?;
            let summary = if r.to == "-" {
                if !filter.is_empty() {
                    bail!("--include and --exclude need --to PATH (a directory restore), not --to -");
                }
                let out = std::io::BufWriter::with_capacity(1 << 20, raw_stdout()?);
                store.restore_to_writer(&snap, out, &bar)?
            } else {
                store.restore_to_path_filtered(&snap, Path::new(&r.to), &filter, &bar)?
            };
            out::restore(w, &summary, args.json, r.to == "-")?;
        }
        StoreCommand::List(l) => out::list(w, &store.list_matching(&l.filter.filter(), l.last)?, args.json)?,
        StoreCommand::Ls(l) => {
            let snap = store.resolve(&l.snapshot)?;
            out::ls(w, &store.ls(&snap, l.path.as_deref())?, args.json)?;
        }
        StoreCommand::Dump(d) => {
            let snap = store.resolve(&d.snapshot)?;
            let mut raw = std::io::BufWriter::with_capacity(1 << 20, raw_stdout()?);
            store.dump(&snap, &d.path, &mut raw)?;
        }
        StoreCommand::Diff(d) => {
            let (a, b) = (store.resolve(&d.a)?, store.resolve(&d.b)?);
            out::diff(w, &store.diff(&a, &b)?, args.json)?;
        }
        StoreCommand::Forget(f) => {
            let mut snaps: Vec<SnapshotInfo> = Vec::new();
            for spec in &f.snapshots {
                let s = store.resolve(spec)?;
                if !snaps.iter().any(|k| k.uid == s.uid) {
                    snaps.push(s);
                }
            }
            out::prune(w, &store.forget(&snaps)?, args.json)?;
        }
        StoreCommand::Verify(v) => {
            let subset = v.read_data_subset.or(v.read_data.then_some(DataSubset::All));
            let report = store.verify_subset(v.snapshot.as_deref(), subset)?;
            out::verify(w, &report, args.json)?;
            if !report.ok {
                return Ok(ExitCode::from(EXIT_DAMAGE));
            }
        }
        StoreCommand::Repair(r) => {
            let report = store.repair(r.read_data)?;
            out::repair(w, &report, args.json)?;
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
            out::prune(
                w,
                &store.prune_matching(&keep, &p.filter.filter(), p.dry_run)?,
                args.json,
            )?;
        }
        StoreCommand::Gc(g) => out::gc(w, &store.gc(Duration::from_secs(g.grace))?, args.json)?,
        StoreCommand::Stats => out::stats(w, &store.stats()?, args.json)?,
        StoreCommand::Reindex => out::reindex(w, &store.reindex()?, args.json)?,
    }
    w.flush()?;
    Ok(ExitCode::SUCCESS)
}
