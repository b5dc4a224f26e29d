//! `storage::Error`: the one error type of the chunk store layer.

use std::io;

/// A store operation failed. Messages name what failed and, for user errors, the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--repo` points at nothing that holds a repository config.
    #[error("no repository at {repo}: run `homelab-autopilot store --repo {repo} init` first")]
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
    /// The repository config (or a flag that sets it) is not valid.
    #[error("invalid {field}: {reason}")]
    InvalidConfig {
        /// The config field or flag name.
        field: &'static str,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// An encrypted repository was opened without a key.
    #[error("repository {repo} is encrypted: pass --key-file PATH or set AUTOPILOT_STORE_KEY to its key")]
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
    #[error("{op} {path}: {cause}{}", io_hint(cause))]
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
    #[error("index database is damaged ({detail}): run `homelab-autopilot store reindex` to rebuild it")]
    IndexCorrupt {
        /// What SQLite reported.
        detail: String,
    },
    /// gc, prune or repair found the index out of step with the repository even after
    /// rebuilding it, so they delete nothing.
    #[error(
        "{op} stopped, nothing deleted: the index does not describe the repository even after \
         rebuilding it from the packs and snapshot files ({reason}){}; run `verify` to see which \
         snapshot files cannot be read, then restore or move them aside",
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
    #[error("no snapshot matches {spec:?}: run `store list` to see snapshot ids")]
    SnapshotNotFound {
        /// The snapshot argument.
        spec: String,
    },
    /// Several snapshots match an id prefix.
    #[error("snapshot id {spec:?} is ambiguous (matches {matches}): type more characters")]
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
    #[error("repository is in use ({holders}); {op} needs it {mode}: retry later or raise --lock-wait")]
    Locked {
        /// The command.
        op: &'static str,
        /// "exclusively" or "shared".
        mode: &'static str,
        /// Who holds it.
        holders: String,
    },
    /// A command-line argument is invalid.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// The flag or argument.
        field: &'static str,
        /// What is wrong and the fix.
        reason: String,
    },
    /// A worker thread panicked (a bug); the operation was abandoned.
    #[error("internal error: {0}")]
    Internal(String),
}

fn io_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
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
