//! Repository locks. Writers (backup) hold shared locks, prune/gc/reindex hold an exclusive one.
//!
//! On a local directory the lock is an advisory `flock` on the existing file `locks/.flock`
//! (created at `init`, or by the first command of a repository made before it existed): taking it
//! needs no free space, so `verify`, `prune` and `gc` work on a full file system. The kernel drops
//! it when a process dies. A lock object under `locks/` (who holds it, for messages, and for older
//! versions of this program that only know objects) is written besides it when there is room.
//!
//! On S3 the lock is only the object. A lock object of a process that died on this host, or one
//! not refreshed for `STALE_AFTER`, is ignored and removed.
//!
//! An exclusive lock on a local directory also releases the space reserve (`reserve`, a file of
//! [`RESERVE_BYTES`] written at `init`) while it is held and writes it back when it is dropped,
//! so prune and gc have room for the index, the generation and a repacked pack even when backups
//! filled the disk.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::backend::Backend;
use super::error::{Error, Result};

const REFRESH_EVERY: Duration = Duration::from_secs(300);
const STALE_AFTER_SECS: i64 = 1800;

/// The advisory lock file of a local repository.
pub const FLOCK_KEY: &str = "locks/.flock";
/// The space reserve of a local repository, released while an exclusive lock is held.
pub const RESERVE_KEY: &str = "reserve";
/// Size of the space reserve.
pub const RESERVE_BYTES: usize = 4 << 20;

/// Lock mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// Many at once (backups).
    Shared,
    /// Alone (prune, gc, reindex).
    Exclusive,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct LockInfo {
    mode: LockMode,
    op: String,
    host: String,
    pid: u32,
    start_ticks: u64,
    time: i64,
}

/// A held lock; released (its object deleted, the flock dropped, the reserve written back) on
/// drop.
pub struct RepoLock {
    backend: Arc<dyn Backend>,
    /// The lock object, when it could be written.
    key: Option<String>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    refresher: Option<JoinHandle<()>>,
    /// The advisory lock (local repositories); unlocked when the file is closed.
    flock: Option<File>,
    /// Where to write the space reserve back (an exclusive lock on a local repository).
    reserve: Option<PathBuf>,
}

/// Creates the advisory lock file and the space reserve of a new local repository.
pub fn init_local(root: &Path) -> Result<()> {
    let dir = root.join("locks");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating directory", dir.display(), e))?;
    let f = root.join(FLOCK_KEY);
    File::create(&f).map_err(|e| Error::io("creating", f.display(), e))?;
    write_reserve(&root.join(RESERVE_KEY))
}

/// Writes the space reserve (random bytes, so no compressing or deduplicating file system
/// stores it in less).
fn write_reserve(path: &Path) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let res = (|| {
        let mut f = File::create(&tmp)?;
        let mut buf = vec![0u8; 64 << 10];
        for _ in 0..RESERVE_BYTES / buf.len() {
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut buf);
            f.write_all(&buf)?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io("writing", path.display(), e));
    }
    Ok(())
}

/// Opens (creating if needed) the flock file; `None` when it cannot be (a read-only repository
/// made before the file existed): the caller then relies on lock objects alone.
fn open_flock(root: &Path) -> Option<File> {
    let p = root.join(FLOCK_KEY);
    match File::open(&p) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            std::fs::create_dir_all(root.join("locks")).ok()?;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .ok()
        }
        Err(_) => None,
    }
}

/// Tries the advisory lock once: `Ok(true)` when taken.
fn try_flock(f: &File, mode: LockMode) -> Result<bool> {
    let r = match mode {
        LockMode::Shared => f.try_lock_shared(),
        LockMode::Exclusive => f.try_lock(),
    };
    match r {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io("locking", FLOCK_KEY, e)),
    }
}

/// ENOSPC or EDQUOT.
fn is_no_space(e: &Error) -> bool {
    matches!(e, Error::Io { cause, .. } if matches!(cause.raw_os_error(), Some(28) | Some(122)))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat).
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

impl LockInfo {
    fn is_stale(&self, host: &str) -> bool {
        if self.host == host && start_ticks(self.pid) != Some(self.start_ticks) {
            return true;
        }
        now() - self.time > STALE_AFTER_SECS
    }
}

/// Takes a lock, polling until `wait` runs out. When `optional` is set and the repository cannot
/// be written (read-only file system), returns `Ok(None)`: nobody can change it then either.
pub fn acquire(
    backend: &Arc<dyn Backend>,
    mode: LockMode,
    op: &'static str,
    wait: Duration,
    optional: bool,
) -> Result<Option<RepoLock>> {
    let host = hostname();
    let pid = std::process::id();
    let me = LockInfo {
        mode,
        op: op.to_string(),
        host: host.clone(),
        pid,
        start_ticks: start_ticks(pid).unwrap_or(0),
        time: now(),
    };
    let key = format!("locks/{}", super::pack::new_pack_name());
    let body = serde_json::to_vec(&me).map_err(|e| Error::Internal(e.to_string()))?;
    let deadline = Instant::now() + wait;
    let flock = backend.local_root().and_then(open_flock);
    loop {
        let mut holders = Vec::new();
        let mut wrote = false;
        let mut free = true;
        if let Some(f) = &flock
            && !try_flock(f, mode)?
        {
            free = false;
            holders = lock_holders(backend, &host, mode, None)?;
            if holders.is_empty() {
                holders.push("another process (advisory lock)".to_string());
            }
        }
        if free {
            match backend.put(&key, &body) {
                Ok(()) => wrote = true,
                // With the advisory lock held the object only names the holder: a full file
                // system does not stop a command (a backup then fails where it needs space).
                Err(e) if flock.is_some() && is_no_space(&e) => {
                    tracing::debug!(error = %e, "no lock object written (advisory lock held)");
                }
                // A reader of a repository that cannot be written: nobody can change it either.
                Err(Error::Io { cause, .. })
                    if optional && matches!(cause.raw_os_error(), Some(30) | Some(13)) =>
                {
                    if flock.is_none() {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(e),
            }
            // Objects of other holders: older versions of this program, or S3.
            holders = lock_holders(backend, &host, mode, wrote.then_some(key.as_str()))?;
        }
        if free && holders.is_empty() {
            let stop = Arc::new((Mutex::new(false), Condvar::new()));
            let refresher = if wrote {
                spawn_refresher(backend.clone(), key.clone(), me.clone(), stop.clone())
            } else {
                None
            };
            let reserve = match (mode, backend.local_root()) {
                (LockMode::Exclusive, Some(root)) => release_reserve(root),
                _ => None,
            };
            return Ok(Some(RepoLock {
                backend: backend.clone(),
                key: wrote.then_some(key),
                stop,
                refresher,
                flock,
                reserve,
            }));
        }
        if wrote {
            backend.delete(&key)?;
        }
        if let Some(f) = &flock
            && free
        {
            f.unlock().map_err(|e| Error::io("unlocking", FLOCK_KEY, e))?;
        }
        if Instant::now() >= deadline {
            let mode = if mode == LockMode::Exclusive {
                "exclusively"
            } else {
                "shared"
            };
            return Err(Error::Locked {
                op,
                mode,
                holders: holders.join(", "),
            });
        }
        // Random back-off so two contenders do not keep colliding.
        std::thread::sleep(Duration::from_millis(rand::rng().random_range(50..250)));
    }
}

/// The live lock objects that conflict with `mode` (removing stale ones), except `own`.
fn lock_holders(
    backend: &Arc<dyn Backend>,
    host: &str,
    mode: LockMode,
    own: Option<&str>,
) -> Result<Vec<String>> {
    let mut holders = Vec::new();
    for obj in backend.list("locks/")? {
        if Some(obj.key.as_str()) == own || obj.key.rsplit('/').next().is_some_and(|n| n.starts_with('.')) {
            continue;
        }
        let Some(bytes) = backend.get(&obj.key)? else {
            continue;
        };
        let Ok(other) = serde_json::from_slice::<LockInfo>(&bytes) else {
            continue;
        };
        if other.is_stale(host) {
            tracing::info!(lock = %obj.key, op = %other.op, pid = other.pid, "removing stale lock");
            backend.delete(&obj.key)?;
            continue;
        }
        if mode == LockMode::Exclusive || other.mode == LockMode::Exclusive {
            holders.push(format!("{} by pid {} on {}", other.op, other.pid, other.host));
        }
    }
    Ok(holders)
}

/// Deletes the space reserve for the time of an exclusive lock; returns where to write it back.
fn release_reserve(root: &Path) -> Option<PathBuf> {
    let p = root.join(RESERVE_KEY);
    match std::fs::remove_file(&p) {
        Ok(()) => Some(p),
        Err(e) if e.kind() == ErrorKind::NotFound => Some(p),
        // A read-only repository: nothing to release, nothing to write back.
        Err(_) => None,
    }
}

fn spawn_refresher(
    backend: Arc<dyn Backend>,
    key: String,
    mut info: LockInfo,
    stop: Arc<(Mutex<bool>, Condvar)>,
) -> Option<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("store-lock".into())
        .spawn(move || {
            let (m, cv) = &*stop;
            let Ok(mut stopped) = m.lock() else { return };
            // Check the flag before every wait: the lock may be dropped before this thread runs.
            while !*stopped {
                let Ok((g, timeout)) = cv.wait_timeout(stopped, REFRESH_EVERY) else {
                    return;
                };
                stopped = g;
                if *stopped || !timeout.timed_out() {
                    continue;
                }
                info.time = now();
                if let Ok(body) = serde_json::to_vec(&info)
                    && let Err(e) = backend.put(&key, &body)
                {
                    tracing::warn!(error = %e, "cannot refresh repository lock");
                }
            }
        })
        .ok()
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        if let Ok(mut s) = self.stop.0.lock() {
            *s = true;
            self.stop.1.notify_all();
        }
        if let Some(h) = self.refresher.take() {
            let _ = h.join();
        }
        if let Some(key) = &self.key
            && let Err(e) = self.backend.delete(key)
        {
            tracing::warn!(error = %e, "cannot remove repository lock");
        }
        // Still under the lock: no backup takes the space while the reserve is written back.
        if let Some(p) = self.reserve.take()
            && let Err(e) = write_reserve(&p)
        {
            tracing::warn!(
                error = %e,
                "the repository's file system is nearly full: cannot write back the space \
                 reserve that lets prune and gc run on a full disk (free space, then run gc)"
            );
        }
        // Closing the file releases the advisory lock, last.
        drop(self.flock.take());
    }
}

#[cfg(test)]
mod tests {
    use super::super::backend::local::LocalBackend;
    use super::*;

    #[test]
    fn lock_shared_coexist_exclusive_waits_then_times_out() {
        let d = tempfile::tempdir().unwrap();
        let b: Arc<dyn Backend> = Arc::new(LocalBackend::new(d.path().to_str().unwrap()));
        let s1 = acquire(&b, LockMode::Shared, "backup", Duration::ZERO, false).unwrap();
        let s2 = acquire(&b, LockMode::Shared, "backup", Duration::ZERO, false).unwrap();
        let e = acquire(&b, LockMode::Exclusive, "gc", Duration::from_millis(300), false)
            .err()
            .unwrap();
        assert!(e.to_string().contains("backup by pid"), "{e}");
        drop((s1, s2));
        let x = acquire(&b, LockMode::Exclusive, "gc", Duration::ZERO, false).unwrap();
        assert!(acquire(&b, LockMode::Shared, "backup", Duration::ZERO, false).is_err());
        drop(x);
        // Only the advisory lock file stays.
        let left: Vec<String> = b.list("locks/").unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(left, [FLOCK_KEY]);
    }

    #[test]
    fn lock_of_dead_process_is_stale() {
        let info = LockInfo {
            mode: LockMode::Exclusive,
            op: "gc".into(),
            host: hostname(),
            pid: std::process::id(),
            start_ticks: 1,
            time: now(),
        };
        assert!(info.is_stale(&hostname()));
        let live = LockInfo {
            start_ticks: start_ticks(std::process::id()).unwrap(),
            ..info
        };
        assert!(!live.is_stale(&hostname()));
    }
}
