//! Where a chunk store is and how to open it: the operator's store (`--store-path`, the chart's
//! PVC or `s3://…`) and its optional key file. Opening creates the repository on first use (an
//! empty volume), so the operator needs no separate `init` step.

use std::path::PathBuf;

use super::{ChunkStore, Error, Key, OpenOptions, RepoParams, Result};

/// A chunk store's repository and key file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreLocation {
    /// The repository (a directory, or `s3://…`).
    pub repo: PathBuf,
    /// The encryption key file, if the store is encrypted.
    pub key_file: Option<PathBuf>,
}

impl StoreLocation {
    /// Opens the store, creating it when the location holds none yet.
    pub fn open_or_init(&self) -> Result<ChunkStore> {
        let repo = self.repo.to_string_lossy().into_owned();
        let key = self.key_file.as_deref().map(Key::from_file).transpose()?;
        let options = || OpenOptions {
            key: key.clone(),
            ..OpenOptions::default()
        };
        match ChunkStore::open(&repo, options()) {
            Err(Error::RepoNotFound { .. }) => {
                ChunkStore::init(&repo, RepoParams::default(), key.as_ref(), None)?;
                ChunkStore::open(&repo, options())
            }
            other => other,
        }
    }

    /// Whether this is a local directory that does not exist yet (nothing stored there).
    pub fn is_missing_dir(&self) -> bool {
        !self.repo.to_string_lossy().starts_with("s3://") && !self.repo.exists()
    }
}
