//! Sets of chunk ids kept in SQLite temp tables (spilled to disk by SQLite), so gc's live set and
//! verify's wanted set stay small in memory however many chunks a repository holds.

use rusqlite::Connection;

use super::blob::ChunkId;
use super::error::{Error, Result};
use super::index::Index;

/// A named temp table of chunk ids on one index connection.
pub(crate) struct ChunkSet {
    table: &'static str,
}

/// Statements between `batch_begin` and `batch_commit` share one transaction.
const BATCH: usize = 50_000;

impl ChunkSet {
    /// Creates (or empties) the set `table` on `index`'s connection.
    pub(crate) fn new(index: &Index, table: &'static str) -> Result<Self> {
        let c = index.raw();
        c.execute_batch(&format!(
            "PRAGMA temp_store = FILE;
             CREATE TEMP TABLE IF NOT EXISTS {table} (id BLOB PRIMARY KEY) WITHOUT ROWID;
             DELETE FROM temp.{table};"
        ))
        .map_err(Error::index("creating temporary set"))?;
        Ok(ChunkSet { table })
    }

    /// Adds ids; returns how many were new. Runs in one transaction per `BATCH` ids.
    pub(crate) fn insert_all(
        &self,
        index: &Index,
        ids: &[ChunkId],
        mut on_new: impl FnMut(&ChunkId) -> Result<()>,
    ) -> Result<()> {
        let c: &Connection = index.raw();
        for part in ids.chunks(BATCH) {
            c.execute_batch("BEGIN")
                .map_err(Error::index("starting transaction"))?;
            let res = (|| {
                let mut st = c
                    .prepare_cached(&format!(
                        "INSERT OR IGNORE INTO temp.{} (id) VALUES (?1)",
                        self.table
                    ))
                    .map_err(Error::index("adding to temporary set"))?;
                for id in part {
                    if st
                        .execute([&id.0[..]])
                        .map_err(Error::index("adding to temporary set"))?
                        == 1
                    {
                        on_new(id)?;
                    }
                }
                Ok(())
            })();
            let end = if res.is_ok() { "COMMIT" } else { "ROLLBACK" };
            c.execute_batch(end).map_err(Error::index("ending transaction"))?;
            res?;
        }
        Ok(())
    }

    /// Whether `id` is in the set.
    pub(crate) fn contains(&self, index: &Index, id: &ChunkId) -> Result<bool> {
        let mut st = index
            .raw()
            .prepare_cached(&format!("SELECT 1 FROM temp.{} WHERE id = ?1", self.table))
            .map_err(Error::index("probing temporary set"))?;
        st.exists([&id.0[..]])
            .map_err(Error::index("probing temporary set"))
    }

    /// Number of ids.
    pub(crate) fn len(&self, index: &Index) -> Result<u64> {
        index
            .raw()
            .query_row(&format!("SELECT COUNT(*) FROM temp.{}", self.table), [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(Error::index("counting temporary set"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunkset_insert_reports_new_ids_and_contains() {
        let d = tempfile::tempdir().unwrap();
        let idx = Index::open(d.path()).unwrap();
        let set = ChunkSet::new(&idx, "live").unwrap();
        let ids: Vec<ChunkId> = (0..5u8).map(|i| ChunkId([i % 3; 32])).collect();
        let mut new = 0;
        set.insert_all(&idx, &ids, |_| {
            new += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(new, 3);
        assert_eq!(set.len(&idx).unwrap(), 3);
        assert!(set.contains(&idx, &ChunkId([2; 32])).unwrap());
        assert!(!set.contains(&idx, &ChunkId([9; 32])).unwrap());
        // A second set of the same name starts empty.
        let again = ChunkSet::new(&idx, "live").unwrap();
        assert_eq!(again.len(&idx).unwrap(), 0);
    }
}
