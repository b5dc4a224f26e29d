//! `storage::Error`: the one error type of the chunk store layer.

use std::fmt;
use std::io;

/// A parameter of a store operation, named in the store's own terms. Messages never spell a
/// front end's flag: the CLI maps each parameter to its flag ([`crate::storage::cli`]), a
/// controller to its spec field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Param {
    /// Where the repository is (a directory or an S3 location).
    Repository,
    /// The smallest chunk.
    ChunkMin,
    /// The target average chunk.
    ChunkAvg,
    /// The largest chunk.
    ChunkMax,
    /// The three chunk sizes against each other.
    ChunkSizes,
    /// The zstd compression level.
    ZstdLevel,
    /// The target pack file size.
    PackSize,
    /// The name of a backup (its prune group).
    BackupName,
    /// A snapshot reference (id prefix, NAME@latest or NAME@TIME).
    Snapshot,
    /// Where a restore writes.
    RestoreTarget,
    /// The retention rules of a prune.
    Retention,
    /// A tag filter (KEY=VALUE).
    Tag,
    /// A path inside a directory snapshot.
    SnapshotPath,
    /// A path pattern (include or exclude).
    Pattern,
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Param::Repository => "repository location",
            Param::ChunkMin => "minimum chunk size",
            Param::ChunkAvg => "average chunk size",
            Param::ChunkMax => "maximum chunk size",
            Param::ChunkSizes => "chunk sizes",
            Param::ZstdLevel => "compression level",
            Param::PackSize => "pack size",
            Param::BackupName => "backup name",
            Param::Snapshot => "snapshot",
            Param::RestoreTarget => "restore target",
            Param::Retention => "retention rules",
            Param::Tag => "tag",
            Param::SnapshotPath => "path in the snapshot",
            Param::Pattern => "path pattern",
        })
    }
}

/// A store operation failed. Messages name what failed and, for user errors, the fix, in the
/// store's terms (no command-line flags: they surface verbatim in resource conditions).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The location holds no repository config.
    #[error("no repository at {repo}: create (initialise) one there first")]
    RepoNotFound {
        /// The repository location as given.
        repo: String,
    },
    /// `init` found an existing repository (or foreign files) at the location.
    #[error("{repo} already holds a repository (or other files): refusing to overwrite it")]
    RepoExists {
        /// The repository location as given.
        repo: String,
    },
    /// The repository was written by a newer version of this program.
    #[error(
        "repository format version {found} is newer than the {supported} this program supports: \
         upgrade homelab-autopilot to open it"
    )]
    NewerFormat {
        /// Version found in the repository config.
        found: u32,
        /// Highest version this build understands.
        supported: u32,
    },
    /// The repository config (or a parameter that sets it) is not valid.
    #[error("invalid {param}: {reason}")]
    InvalidConfig {
        /// The parameter at fault.
        param: Param,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// An encrypted repository was opened without a key.
    #[error("repository {repo} is encrypted: its key is needed to open it")]
    KeyRequired {
        /// The repository location as given.
        repo: String,
    },
    /// The key does not match the repository's key check.
    #[error("wrong key for repository {repo}: the key does not match the one it was created with")]
    WrongKey {
        /// The repository location as given.
        repo: String,
    },
    /// The key text is malformed (never includes the key itself).
    #[error("invalid key from {source_name}: {reason}")]
    BadKey {
        /// Where the key came from (a file path or the variable name).
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// A file-system operation failed.
    // The cause is part of the message (and not also a `source`), so `{:#}` chains do not
    // print it twice; callers match on the fields.
    #[error("{op} {path}: {cause}{}", io_hint(op, cause))]
    Io {
        /// What we were doing ("writing pack", "reading source").
        op: &'static str,
        /// The path involved.
        path: String,
        /// The OS error.
        cause: io::Error,
    },
    /// An object-store (S3) operation failed.
    #[error("{op} {key}: {cause}")]
    Backend {
        /// What we were doing.
        op: &'static str,
        /// The object key.
        key: String,
        /// The client error.
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An object that must exist is missing from the backend.
    #[error("{what} is missing from the repository")]
    Missing {
        /// The object (e.g. "pack packs/ab/..." or "snapshot object snapshots/...").
        what: String,
    },
    /// The SQLite index failed.
    #[error("index database: {op}: {cause}")]
    Index {
        /// What we were doing.
        op: &'static str,
        /// The SQLite error.
        cause: rusqlite::Error,
    },
    /// The SQLite index is damaged.
    #[error(
        "index database is damaged ({detail}): rebuild it from the repository's packs and snapshot files (reindex)"
    )]
    IndexCorrupt {
        /// What SQLite reported.
        detail: String,
    },
    /// gc, prune or repair found the index out of step with the repository even after
    /// rebuilding it, so they delete nothing.
    #[error(
        "{op} stopped, nothing deleted: the index does not describe the repository even after \
         rebuilding it from the packs and snapshot files ({reason}){}; verify the repository to see \
         which snapshot files cannot be read, then restore or move them aside",
        if problems.is_empty() { String::new() } else { format!("; rebuild problems: {problems}") }
    )]
    IndexStale {
        /// The command that stopped.
        op: &'static str,
        /// What does not match.
        reason: String,
        /// What the rebuild could not read.
        problems: String,
    },
    /// Stored bytes failed a check (magic, length, authentication or hash).
    #[error("corrupt data in {what}: {reason}")]
    Corrupt {
        /// Which object or chunk.
        what: String,
        /// Which check failed.
        reason: String,
    },
    /// No snapshot matches what the user typed.
    #[error("no snapshot matches {spec:?}")]
    SnapshotNotFound {
        /// The snapshot argument.
        spec: String,
    },
    /// Several snapshots match an id prefix or a NAME@TIME.
    #[error("snapshot {spec:?} is ambiguous: it matches {matches}; name one by a longer id")]
    SnapshotAmbiguous {
        /// The snapshot argument.
        spec: String,
        /// Matching ids.
        matches: String,
    },
    /// The snapshot is not complete (its backup crashed or is still running).
    #[error("snapshot {id} is incomplete (its backup did not finish): it cannot be restored")]
    SnapshotIncomplete {
        /// The snapshot id.
        id: String,
    },
    /// The repository lock could not be taken in time.
    #[error(
        "repository is in use ({holders}); {op} needs it {mode}: retry later or wait longer for the lock"
    )]
    Locked {
        /// The command.
        op: &'static str,
        /// "exclusively" or "shared".
        mode: &'static str,
        /// Who holds it.
        holders: String,
    },
    /// An argument of an operation is invalid.
    #[error("invalid {param}: {reason}")]
    InvalidArgument {
        /// The parameter at fault.
        param: Param,
        /// What is wrong and the fix.
        reason: String,
    },
    /// The command producing a stream backup failed; nothing was saved.
    #[error("the backup command {command} failed ({status}): nothing was saved")]
    ProducerFailed {
        /// The program.
        command: String,
        /// How it ended.
        status: String,
    },
    /// A worker thread panicked (a bug); the operation was abandoned.
    #[error("internal error: {0}")]
    Internal(String),
}

fn io_hint(op: &str, e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(13) | Some(1) if op.starts_with("reading") => {
            " (permission denied: run as a user that may read it)"
        }
        Some(28) => " (the disk is full: free space and retry; nothing committed was changed)",
        Some(30) => " (the file system is read-only: this command needs write access)",
        Some(13) | Some(1) => " (permission denied: run as a user that may write there)",
        _ => "",
    }
}

impl Error {
    /// A stable PascalCase label for metrics, Event and condition reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::RepoNotFound { .. } => "RepoNotFound",
            Error::RepoExists { .. } => "RepoExists",
            Error::NewerFormat { .. } => "NewerFormat",
            Error::InvalidConfig { .. } => "InvalidConfig",
            Error::KeyRequired { .. } => "KeyRequired",
            Error::WrongKey { .. } => "WrongKey",
            Error::BadKey { .. } => "BadKey",
            Error::Io { .. } => "StorageIo",
            Error::Backend { .. } => "BackendRequest",
            Error::Missing { .. } => "ObjectMissing",
            Error::Index { .. } => "IndexDatabase",
            Error::IndexCorrupt { .. } => "IndexCorrupt",
            Error::IndexStale { .. } => "IndexStale",
            Error::Corrupt { .. } => "CorruptData",
            Error::SnapshotNotFound { .. } => "SnapshotNotFound",
            Error::SnapshotAmbiguous { .. } => "SnapshotAmbiguous",
            Error::SnapshotIncomplete { .. } => "SnapshotIncomplete",
            Error::Locked { .. } => "RepositoryLocked",
            Error::InvalidArgument { .. } => "InvalidArgument",
            Error::ProducerFailed { .. } => "ProducerFailed",
            Error::Internal(_) => "Internal",
        }
    }

    /// Whether retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Locked { .. } | Error::Backend { .. } => true,
            Error::Io { cause, .. } => matches!(cause.raw_os_error(), Some(28) | Some(4) | Some(11)),
            Error::Index { cause, .. } => matches!(
                cause.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked)
            ),
            _ => false,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl std::fmt::Display, cause: io::Error) -> Self {
        Error::Io {
            op,
            path: path.to_string(),
            cause,
        }
    }

    pub(crate) fn index(op: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
        move |cause| {
            if let Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) =
                cause.sqlite_error_code()
            {
                Error::IndexCorrupt {
                    detail: format!("{op}: {cause}"),
                }
            } else {
                Error::Index { op, cause }
            }
        }
    }

    pub(crate) fn corrupt(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

/// Result alias of the storage layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Storage errors surface verbatim in resource conditions: no front end's flags or commands.
    #[test]
    fn user_errors_speak_store_terms_not_cli_flags() {
        let repo = || "/srv/backup".to_string();
        let errors = [
            Error::RepoNotFound { repo: repo() },
            Error::KeyRequired { repo: repo() },
            Error::WrongKey { repo: repo() },
            Error::InvalidConfig {
                param: Param::ChunkMin,
                reason: "100 must be an even number of bytes between 64 and 1048576".into(),
            },
            Error::InvalidArgument {
                param: Param::Retention,
                reason: "no rule keeps anything".into(),
            },
            Error::IndexCorrupt {
                detail: "file is not a database".into(),
            },
            Error::IndexStale {
                op: "gc",
                reason: "generation 3 != 5".into(),
                problems: String::new(),
            },
            Error::SnapshotNotFound { spec: "abcd".into() },
            Error::SnapshotAmbiguous {
                spec: "x@2026-01-01T00:00:00Z".into(),
                matches: "0123abcd, 4567ef01".into(),
            },
            Error::Locked {
                op: "gc",
                mode: "exclusively",
                holders: "backup pid 7".into(),
            },
        ];
        for e in errors {
            let s = e.to_string();
            for cli in ["--", "homelab-autopilot", "`store", "AUTOPILOT_"] {
                assert!(!s.contains(cli), "{:?} says {cli:?}: {s}", e.category());
            }
        }
        let e = Error::InvalidConfig {
            param: Param::PackSize,
            reason: "1 bytes is outside 1 MiB..=512 MiB".into(),
        };
        assert_eq!(
            e.to_string(),
            "invalid pack size: 1 bytes is outside 1 MiB..=512 MiB"
        );
    }

    #[test]
    fn io_error_disk_full_names_fix() {
        let e = Error::io("writing pack", "/r/packs/x", io::Error::from_raw_os_error(28));
        let s = e.to_string();
        assert!(
            s.contains("writing pack /r/packs/x") && s.contains("disk is full"),
            "{s}"
        );
        assert_eq!(e.category(), "StorageIo");
        assert!(e.is_transient());
    }
}
