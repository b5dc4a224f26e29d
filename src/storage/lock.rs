//! Repository locks as objects under `locks/` (works the same on a directory and on S3): writers
//! (backup) hold shared locks, prune/gc/reindex hold an exclusive one. A lock of a process that
//! died on this host, or one not refreshed for `STALE_AFTER`, is ignored and removed.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::backend::Backend;
use super::error::{Error, Result};

const REFRESH_EVERY: Duration = Duration::from_secs(300);
const STALE_AFTER_SECS: i64 = 1800;

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

/// A held lock; released (its object deleted) on drop.
pub struct RepoLock {
    backend: Arc<dyn Backend>,
    key: String,
    stop: Arc<(Mutex<bool>, Condvar)>,
    refresher: Option<JoinHandle<()>>,
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
    loop {
        match backend.put(&key, &body) {
            Ok(()) => {}
            Err(Error::Io { cause, .. })
                if optional && matches!(cause.raw_os_error(), Some(30) | Some(13)) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        let mut holders = Vec::new();
        for obj in backend.list("locks/")? {
            if obj.key == key || obj.key.rsplit('/').next().is_some_and(|n| n.starts_with('.')) {
                continue;
            }
            let Some(bytes) = backend.get(&obj.key)? else {
                continue;
            };
            let Ok(other) = serde_json::from_slice::<LockInfo>(&bytes) else {
                continue;
            };
            if other.is_stale(&host) {
                tracing::info!(lock = %obj.key, op = %other.op, pid = other.pid, "removing stale lock");
                backend.delete(&obj.key)?;
                continue;
            }
            if mode == LockMode::Exclusive || other.mode == LockMode::Exclusive {
                holders.push(format!("{} by pid {} on {}", other.op, other.pid, other.host));
            }
        }
        if holders.is_empty() {
            let stop = Arc::new((Mutex::new(false), Condvar::new()));
            let refresher = spawn_refresher(backend.clone(), key.clone(), me.clone(), stop.clone());
            return Ok(Some(RepoLock {
                backend: backend.clone(),
                key,
                stop,
                refresher,
            }));
        }
        backend.delete(&key)?;
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
        if let Err(e) = self.backend.delete(&self.key) {
            tracing::warn!(error = %e, "cannot remove repository lock");
        }
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
        assert!(b.list("locks/").unwrap().is_empty());
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
