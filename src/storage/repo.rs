//! A borrowed view of an open repository (its objects, codec and index location) for the
//! maintenance primitives (`gc`, `reindex`, `sync`), which never see `ChunkStore`, and the
//! repository generation they all keep.
//!
//! The generation is a counter in the object `generation`. Every change to packs, snapshot files
//! or damage marks bumps it in the repository *before* touching them and records it in the index
//! *after*; so an index whose generation differs from the repository's (emptied, replaced by an
//! older copy, or left behind by a crash) is known not to describe the repository.

use std::path::Path;

use super::backend::{Backend, GENERATION_KEY};
use super::blob::Codec;
use super::error::{Error, Result};
use super::index::Index;
use super::snapfile::{Entry, SnapReader};

/// What the maintenance primitives need of an open repository.
pub(crate) struct Repo<'a> {
    pub(crate) backend: &'a dyn Backend,
    pub(crate) codec: &'a Codec,
    pub(crate) index_dir: &'a Path,
    pub(crate) pack_size: u32,
}

impl Repo<'_> {
    /// The repository's generation (0 before the first change, or in a repository from a
    /// version without generations).
    pub(crate) fn generation(&self) -> Result<u64> {
        let Some(bytes) = self.backend.get(GENERATION_KEY)? else {
            return Ok(0);
        };
        String::from_utf8_lossy(&bytes)
            .trim()
            .parse()
            .map_err(|_| Error::corrupt(GENERATION_KEY, "not a number"))
    }

    /// Bumps the repository generation past both its current value and the index's; returns
    /// the new value, which the caller records in the index once its change is committed.
    pub(crate) fn bump_generation(&self, index: &Index) -> Result<u64> {
        let next = self.generation()?.max(index.generation()?) + 1;
        self.backend.put(GENERATION_KEY, format!("{next}\n").as_bytes())?;
        Ok(next)
    }

    /// Calls `f` for every entry of a snapshot file.
    pub(crate) fn each_entry(&self, key: &str, f: impl FnMut(&Entry) -> Result<()>) -> Result<()> {
        let mut r = SnapReader::open(self.backend.open_reader(key)?, self.codec, key.to_string())?;
        r.for_each(f).map(|_| ())
    }
}

/// Bumps the generation once, before the first change a maintenance command makes to the
/// repository, and records it in the index when the command is done.
pub(crate) struct Change<'r, 'a> {
    repo: &'r Repo<'a>,
    generation: Option<u64>,
}

impl<'r, 'a> Change<'r, 'a> {
    pub(crate) fn new(repo: &'r Repo<'a>) -> Self {
        Change {
            repo,
            generation: None,
        }
    }

    /// Call before changing a pack, snapshot file or damage mark.
    pub(crate) fn before(&mut self, index: &Index) -> Result<()> {
        if self.generation.is_none() {
            self.generation = Some(self.repo.bump_generation(index)?);
        }
        Ok(())
    }

    /// Records the generation in the index (after the index reflects every change).
    pub(crate) fn finish(self, index: &Index) -> Result<()> {
        match self.generation {
            Some(g) => index.set_generation(g),
            None => Ok(()),
        }
    }
}
