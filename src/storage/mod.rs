//! The content-addressed dedup chunk store: content-defined chunking (FastCDC), blake3 ids (keyed
//! when encrypted), zstd, XChaCha20-Poly1305, pack files, a SQLite index, a local-directory or S3
//! backend. Entry point: [`ChunkStore`]. CLI: `homelab-autopilot store` ([`cli`]).
//!
//! Never imports `kube` or `crate::controllers`.

pub mod backend;
pub mod backup;
pub mod blob;
pub mod browse;
pub mod chunker;
mod chunkset;
pub mod cli;
mod cli_output;
pub mod config;
pub mod crypto;
pub mod error;
pub mod gc;
pub mod index;
pub mod location;
pub mod lock;
pub mod pack;
pub mod pattern;
pub mod prune;
pub mod reindex;
pub mod repair;
mod repo;
pub mod restore;
pub mod snapfile;
pub mod store;
pub(crate) mod sync;
pub mod tarstream;
pub mod verify;
mod writeback;
mod xattrs;

pub use backup::{NoProgress, Progress, ShrunkFile, SkippedPath, SnapshotSummary};
pub use browse::{ChangedPath, TreeDiff, TreeEntry};
pub use config::{ChunkerParams, RepoConfig, RepoParams};
pub use crypto::Key;
pub use error::{Error, Param, Result};
pub use index::{SnapshotFilter, SnapshotInfo};
pub use location::StoreLocation;
pub use pattern::{PathFilter, Pattern};
pub use snapfile::SourceKind;
pub use store::{ChunkStore, OpenOptions, Stats};
