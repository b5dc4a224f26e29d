//! The SQLite index (WAL, foreign keys, busy_timeout): packs, chunk locations, snapshots and
//! verification results. Chunk rows are written only after their pack is durable; a snapshot
//! turns `complete` in one transaction after its object is durable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;

use super::blob::ChunkId;
use super::error::{Error, Result};
use super::pack::PackEntry;
use super::snapfile::{SnapshotMeta, SourceKind};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS packs (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    id BLOB PRIMARY KEY,
    pack INTEGER NOT NULL REFERENCES packs(id),
    offset INTEGER NOT NULL,
    len INTEGER NOT NULL,
    raw_len INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chunks_by_pack ON chunks(pack);
CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY,
    uid TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    time INTEGER NOT NULL,
    tags TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'complete')),
    size INTEGER NOT NULL DEFAULT 0,
    chunks INTEGER NOT NULL DEFAULT 0,
    new_bytes INTEGER NOT NULL DEFAULT 0,
    stored_bytes INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS verifications (
    id INTEGER PRIMARY KEY,
    snapshot INTEGER NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,
    time INTEGER NOT NULL,
    read_data INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    problems TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS damaged (
    uid TEXT PRIMARY KEY,
    reason TEXT NOT NULL
);
";

/// Where a chunk is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// Pack name.
    pub pack: String,
    /// Blob offset in the pack.
    pub offset: u64,
    /// Blob length.
    pub len: u32,
    /// Plaintext length.
    pub raw_len: u32,
    /// Size of the pack as recorded when it was stored.
    pub pack_size: u64,
}

/// A snapshot as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SnapshotInfo {
    /// Short id users type (first 8 hex characters of `uid`).
    pub id: String,
    /// Full id.
    pub uid: String,
    /// Backup name.
    pub name: String,
    /// Start time, RFC 3339 UTC.
    pub time: String,
    /// Start time, Unix seconds.
    pub time_unix: i64,
    /// Start time, Unix microseconds (exact order).
    pub time_us: i64,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Source kind: file, dir or stream.
    pub kind: String,
    /// Whether the backup finished.
    pub complete: bool,
    /// Logical bytes.
    pub size: u64,
    /// Chunk references.
    pub chunks: u64,
    /// Bytes of chunks this backup added.
    pub new_bytes: u64,
    /// Bytes this backup added to packs (after compression and encryption).
    pub stored_bytes: u64,
    /// The latest `verify` of this snapshot, if any.
    pub last_verify: Option<VerifyResult>,
    /// Whether `repair` marked it as not fully restorable (chunks it needs are lost).
    pub damaged: bool,
    /// Why, when `damaged`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damage: Option<String>,
}

/// Which snapshots an operation may see: a BackupPolicy lists and prunes only its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotFilter {
    /// Backup names (a snapshot matches any of them); empty matches every name.
    pub names: Vec<String>,
    /// Tags a snapshot must all carry with these values.
    pub tags: BTreeMap<String, String>,
}

impl SnapshotFilter {
    /// Whether `s` is selected.
    pub fn matches(&self, s: &SnapshotInfo) -> bool {
        (self.names.is_empty() || self.names.contains(&s.name))
            && self.tags.iter().all(|(k, v)| s.tags.get(k) == Some(v))
    }
}

/// A recorded `verify` outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyResult {
    /// When (RFC 3339 UTC).
    pub time: String,
    /// Whether no problem was found.
    pub ok: bool,
    /// Whether chunk data was read.
    pub read_data: bool,
}

/// Totals this backup contributed.
#[derive(Clone, Copy, Debug, Default)]
pub struct SnapshotTotals {
    /// Logical bytes.
    pub size: u64,
    /// Entries.
    pub chunks: u64,
    /// New plaintext bytes.
    pub new_bytes: u64,
    /// New stored bytes.
    pub stored_bytes: u64,
}

/// An open index database.
pub struct Index {
    conn: Connection,
    path: PathBuf,
}

/// Formats Unix microseconds as RFC 3339 UTC, to the second.
pub fn rfc3339(t_us: i64) -> String {
    let t = t_us.div_euclid(1_000_000);
    jiff::Timestamp::from_second(t)
        .map(|ts| ts.to_string())
        .unwrap_or_else(|_| t.to_string())
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

impl Index {
    /// Opens (creating if needed) the index at `dir/index.sqlite`.
    pub fn open(dir: &Path) -> Result<Index> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating index directory", dir.display(), e))?;
        let path = dir.join("index.sqlite");
        let conn = Connection::open(&path).map_err(Error::index("opening"))?;
        let idx = Index { conn, path };
        idx.setup(true)?;
        Ok(idx)
    }

    /// Opens an existing index read-only (for read-only repositories).
    pub fn open_read_only(dir: &Path) -> Result<Index> {
        let path = dir.join("index.sqlite");
        // `immutable=1`: on a read-only file system SQLite cannot create the WAL's shared-memory
        // file, and nothing can change the database there anyway.
        let escaped = path
            .display()
            .to_string()
            .replace('%', "%25")
            .replace('?', "%3f")
            .replace('#', "%23");
        let flags =
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(format!("file:{escaped}?immutable=1"), flags)
            .map_err(Error::index("opening read-only"))?;
        let idx = Index { conn, path };
        idx.setup(false)?;
        Ok(idx)
    }

    fn setup(&self, write: bool) -> Result<()> {
        let c = &self.conn;
        c.busy_timeout(Duration::from_secs(60))
            .map_err(Error::index("setting busy_timeout"))?;
        if write {
            c.pragma_update(None, "journal_mode", "WAL")
                .map_err(Error::index("enabling WAL"))?;
            c.pragma_update(None, "synchronous", "FULL")
                .map_err(Error::index("setting synchronous"))?;
        }
        c.pragma_update(None, "foreign_keys", "ON")
            .map_err(Error::index("enabling foreign keys"))?;
        if write {
            c.execute_batch(SCHEMA).map_err(Error::index("creating schema"))?;
        }
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `PRAGMA quick_check`: `Err(IndexCorrupt)` unless it says ok.
    pub fn quick_check(&self) -> Result<()> {
        let r: String = self
            .conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| Error::IndexCorrupt {
                detail: e.to_string(),
            })?;
        if r != "ok" {
            return Err(Error::IndexCorrupt { detail: r });
        }
        Ok(())
    }

    /// Whether a chunk id is stored.
    pub fn has_chunk(&self, id: &ChunkId) -> Result<bool> {
        let mut st = self
            .conn
            .prepare_cached("SELECT 1 FROM chunks WHERE id = ?1")
            .map_err(Error::index("probing chunk"))?;
        st.exists([&id.0[..]]).map_err(Error::index("probing chunk"))
    }

    /// Where a chunk is stored.
    pub fn location(&self, id: &ChunkId) -> Result<Option<Location>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT p.name, c.offset, c.len, c.raw_len, p.size FROM chunks c JOIN packs p ON p.id = c.pack WHERE c.id = ?1",
            )
            .map_err(Error::index("looking up chunk"))?;
        st.query_row([&id.0[..]], |r| {
            Ok(Location {
                pack: r.get(0)?,
                offset: r.get::<_, i64>(1)? as u64,
                len: r.get(2)?,
                raw_len: r.get(3)?,
                pack_size: r.get::<_, i64>(4)? as u64,
            })
        })
        .optional()
        .map_err(Error::index("looking up chunk"))
    }

    /// Records a durable pack and its chunks in one transaction. Chunks already known elsewhere
    /// keep their first location.
    pub fn add_pack(&mut self, name: &str, size: u64, entries: &[PackEntry], created: i64) -> Result<()> {
        let tx = self
            .conn
            .transaction()
            .map_err(Error::index("starting transaction"))?;
        tx.execute(
            "INSERT OR IGNORE INTO packs (name, size, created) VALUES (?1, ?2, ?3)",
            params![name, size as i64, created],
        )
        .map_err(Error::index("recording pack"))?;
        let pack: i64 = tx
            .query_row("SELECT id FROM packs WHERE name = ?1", [name], |r| r.get(0))
            .map_err(Error::index("recording pack"))?;
        {
            let mut st = tx
                .prepare_cached("INSERT OR IGNORE INTO chunks (id, pack, offset, len, raw_len) VALUES (?1, ?2, ?3, ?4, ?5)")
                .map_err(Error::index("recording chunks"))?;
            for e in entries {
                st.execute(params![&e.id.0[..], pack, e.offset, e.len, e.raw_len])
                    .map_err(Error::index("recording chunks"))?;
            }
        }
        tx.commit().map_err(Error::index("committing pack"))
    }

    /// Inserts a pending snapshot row.
    pub fn begin_snapshot(&self, meta: &SnapshotMeta) -> Result<()> {
        let tags = serde_json::to_string(&meta.tags).map_err(|e| Error::Internal(e.to_string()))?;
        self.conn
            .execute(
                "INSERT INTO snapshots (uid, name, time, tags, kind, state) VALUES (?1, ?2, ?3, ?4, ?5, 'pending')",
                params![meta.uid, meta.name, meta.time, tags, meta.kind.as_str()],
            )
            .map_err(Error::index("recording snapshot"))?;
        Ok(())
    }

    /// Marks a snapshot complete with its totals (one statement, one transaction). Inserts the
    /// row if missing (reindex).
    pub fn complete_snapshot(&self, meta: &SnapshotMeta, t: &SnapshotTotals) -> Result<()> {
        let tags = serde_json::to_string(&meta.tags).map_err(|e| Error::Internal(e.to_string()))?;
        self.conn
            .execute(
                "INSERT INTO snapshots (uid, name, time, tags, kind, state, size, chunks, new_bytes, stored_bytes)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'complete', ?6, ?7, ?8, ?9)
                 ON CONFLICT(uid) DO UPDATE SET state = 'complete', size = ?6, chunks = ?7,
                     new_bytes = ?8, stored_bytes = ?9",
                params![
                    meta.uid,
                    meta.name,
                    meta.time,
                    tags,
                    meta.kind.as_str(),
                    t.size as i64,
                    t.chunks as i64,
                    t.new_bytes as i64,
                    t.stored_bytes as i64
                ],
            )
            .map_err(Error::index("completing snapshot"))?;
        Ok(())
    }

    /// All snapshots, oldest first.
    pub fn snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT s.uid, s.name, s.time, s.tags, s.kind, s.state, s.size, s.chunks, s.new_bytes,
                        s.stored_bytes, v.time, v.ok, v.read_data, d.reason
                 FROM snapshots s
                 LEFT JOIN verifications v ON v.id =
                     (SELECT MAX(id) FROM verifications WHERE snapshot = s.id)
                 LEFT JOIN damaged d ON d.uid = s.uid
                 ORDER BY s.time, s.id",
            )
            .map_err(Error::index("listing snapshots"))?;
        let rows = st
            .query_map([], |r| {
                let uid: String = r.get(0)?;
                let time: i64 = r.get(2)?;
                let tags: String = r.get(3)?;
                let state: String = r.get(5)?;
                Ok(SnapshotInfo {
                    id: uid.chars().take(8).collect(),
                    uid,
                    name: r.get(1)?,
                    time: rfc3339(time),
                    time_unix: time.div_euclid(1_000_000),
                    time_us: time,
                    tags: serde_json::from_str(&tags).unwrap_or_default(),
                    kind: r.get(4)?,
                    complete: state == "complete",
                    size: r.get::<_, i64>(6)? as u64,
                    chunks: r.get::<_, i64>(7)? as u64,
                    new_bytes: r.get::<_, i64>(8)? as u64,
                    stored_bytes: r.get::<_, i64>(9)? as u64,
                    last_verify: match r.get::<_, Option<i64>>(10)? {
                        Some(t) => Some(VerifyResult {
                            time: rfc3339(t * 1_000_000),
                            ok: r.get(11)?,
                            read_data: r.get(12)?,
                        }),
                        None => None,
                    },
                    damaged: r.get::<_, Option<String>>(13)?.is_some(),
                    damage: r.get(13)?,
                })
            })
            .map_err(Error::index("listing snapshots"))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(Error::index("listing snapshots"))
    }

    /// Deletes a snapshot row (and its verification results).
    pub fn delete_snapshot(&self, uid: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM snapshots WHERE uid = ?1", [uid])
            .map_err(Error::index("deleting snapshot"))?;
        Ok(())
    }

    /// Records a verification result.
    pub fn record_verification(&self, uid: &str, read_data: bool, problems: &[String]) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO verifications (snapshot, time, read_data, ok, problems)
                 SELECT id, ?2, ?3, ?4, ?5 FROM snapshots WHERE uid = ?1",
                params![
                    uid,
                    now(),
                    read_data,
                    problems.is_empty(),
                    serde_json::to_string(problems).unwrap_or_default()
                ],
            )
            .map_err(Error::index("recording verification"))?;
        Ok(())
    }

    /// All packs: (row id, name, size).
    pub fn packs(&self) -> Result<Vec<(i64, String, u64)>> {
        let mut st = self
            .conn
            .prepare("SELECT id, name, size FROM packs ORDER BY id")
            .map_err(Error::index("listing packs"))?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64)))
            .map_err(Error::index("listing packs"))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(Error::index("listing packs"))
    }

    /// Chunks of one pack, by offset.
    pub fn pack_chunks(&self, pack: i64) -> Result<Vec<PackEntry>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT id, offset, len, raw_len FROM chunks WHERE pack = ?1 ORDER BY offset")
            .map_err(Error::index("listing chunks"))?;
        let rows = st
            .query_map([pack], |r| {
                let v: Vec<u8> = r.get(0)?;
                let mut id = [0u8; 32];
                if v.len() == 32 {
                    id.copy_from_slice(&v);
                }
                Ok(PackEntry {
                    id: ChunkId(id),
                    offset: r.get(1)?,
                    len: r.get(2)?,
                    raw_len: r.get(3)?,
                })
            })
            .map_err(Error::index("listing chunks"))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(Error::index("listing chunks"))
    }

    /// Moves chunks that were already indexed at a lost location to pack `name` (recorded
    /// before), at the offsets `entries` give.
    pub fn move_chunks(&mut self, name: &str, entries: &[PackEntry]) -> Result<()> {
        let tx = self
            .conn
            .transaction()
            .map_err(Error::index("starting transaction"))?;
        {
            let mut st = tx
                .prepare_cached(
                    "UPDATE chunks SET pack = (SELECT id FROM packs WHERE name = ?1), offset = ?2,
                         len = ?3, raw_len = ?4 WHERE id = ?5",
                )
                .map_err(Error::index("moving chunks"))?;
            for e in entries {
                st.execute(params![name, e.offset, e.len, e.raw_len, &e.id.0[..]])
                    .map_err(Error::index("moving chunks"))?;
            }
        }
        tx.commit().map_err(Error::index("committing moved chunks"))
    }

    /// In one transaction: optionally records the `new` pack and moves its chunks there, then
    /// drops the old packs' remaining chunk rows and the old pack rows.
    pub fn replace_packs(&mut self, olds: &[i64], new: Option<(&str, u64, &[PackEntry])>) -> Result<()> {
        let tx = self
            .conn
            .transaction()
            .map_err(Error::index("starting transaction"))?;
        if let Some((name, size, entries)) = new {
            tx.execute(
                "INSERT INTO packs (name, size, created) VALUES (?1, ?2, ?3)",
                params![name, size as i64, now()],
            )
            .map_err(Error::index("recording pack"))?;
            let new_row = tx.last_insert_rowid();
            for e in entries {
                tx.execute(
                    "UPDATE chunks SET pack = ?1, offset = ?2 WHERE id = ?3",
                    params![new_row, e.offset, &e.id.0[..]],
                )
                .map_err(Error::index("moving chunk"))?;
            }
        }
        for old in olds {
            tx.execute("DELETE FROM chunks WHERE pack = ?1", [old])
                .map_err(Error::index("dropping chunks"))?;
            tx.execute("DELETE FROM packs WHERE id = ?1", [old])
                .map_err(Error::index("dropping pack"))?;
        }
        tx.commit().map_err(Error::index("committing"))
    }

    /// The repository generation this index reflects (0 for an index that never recorded one).
    pub fn generation(&self) -> Result<u64> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = 'generation'", [], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map(|g| g.unwrap_or(0) as u64)
            .map_err(Error::index("reading generation"))
    }

    /// Records that the index reflects repository generation `g` (never lowers it).
    pub fn set_generation(&self, g: u64) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES ('generation', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
                [g as i64],
            )
            .map_err(Error::index("recording generation"))?;
        Ok(())
    }

    /// Marks a snapshot as not fully restorable, or clears the mark (`reason` None).
    pub fn set_damaged(&self, uid: &str, reason: Option<&str>) -> Result<()> {
        match reason {
            Some(r) => self.conn.execute(
                "INSERT INTO damaged (uid, reason) VALUES (?1, ?2)
                 ON CONFLICT(uid) DO UPDATE SET reason = excluded.reason",
                params![uid, r],
            ),
            None => self.conn.execute("DELETE FROM damaged WHERE uid = ?1", [uid]),
        }
        .map_err(Error::index("recording damage mark"))?;
        Ok(())
    }

    /// The raw connection, shared.
    pub(crate) fn raw(&self) -> &Connection {
        &self.conn
    }

    /// Sums for `stats`: (packs, pack bytes, chunks, chunk plaintext bytes, chunk stored bytes).
    pub fn totals(&self) -> Result<(u64, u64, u64, u64, u64)> {
        self.conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM packs), (SELECT COALESCE(SUM(size),0) FROM packs),
                        COUNT(*), COALESCE(SUM(raw_len),0), COALESCE(SUM(len),0) FROM chunks",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        r.get::<_, i64>(1)? as u64,
                        r.get::<_, i64>(2)? as u64,
                        r.get::<_, i64>(3)? as u64,
                        r.get::<_, i64>(4)? as u64,
                    ))
                },
            )
            .map_err(Error::index("computing totals"))
    }
}

/// Parses a `kind` column.
pub fn kind_of(info: &SnapshotInfo) -> SourceKind {
    SourceKind::parse(&info.kind).unwrap_or(SourceKind::Stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_pack_then_snapshot_complete_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let mut idx = Index::open(d.path()).unwrap();
        let id = ChunkId([7; 32]);
        assert!(!idx.has_chunk(&id).unwrap());
        idx.add_pack(
            "ab12",
            100,
            &[PackEntry {
                id,
                offset: 16,
                len: 60,
                raw_len: 12,
            }],
            1,
        )
        .unwrap();
        assert!(idx.has_chunk(&id).unwrap());
        assert_eq!(idx.location(&id).unwrap().unwrap().pack, "ab12");
        let meta = SnapshotMeta {
            uid: "0123456789abcdef0123456789abcdef".into(),
            name: "n".into(),
            time: 1_700_000_000_000_000,
            tags: BTreeMap::new(),
            kind: SourceKind::Stream,
        };
        idx.begin_snapshot(&meta).unwrap();
        assert!(!idx.snapshots().unwrap()[0].complete);
        idx.complete_snapshot(
            &meta,
            &SnapshotTotals {
                size: 12,
                chunks: 1,
                ..Default::default()
            },
        )
        .unwrap();
        let s = &idx.snapshots().unwrap()[0];
        assert!(s.complete && s.size == 12 && s.id == "01234567");
        assert_eq!(s.time, "2023-11-14T22:13:20Z");
        idx.quick_check().unwrap();
    }
}
