//! The pure part of a BackupPolicy pass: the ownership marker in backup notes, which items may
//! start, the locked-guest backoff, the run summary, the per-Service status, retention and sizes.
//! No IO; unit-tested on fixtures.

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::Timestamp;

use crate::controllers::kit::time::{add, elapsed};
use crate::crd::backup_policy::{
    BackupItemState, BackupResult, BackupRun, BackupRunItem, BackupRunSummary, ServiceBackupStatus,
};
use crate::crd::common::Retention;
use crate::storage::prune::{KeepOptions, PruneItem, PruneMark, compute_prune_at};

/// First word of the first line of a backup's notes: the backup is the operator's.
pub const MARKER: &str = "autopilot";
/// Shortest wait before a locked guest is tried again.
pub const LOCK_BACKOFF_MIN: Duration = Duration::from_secs(5);
/// Longest wait between two tries of a locked guest.
pub const LOCK_BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);

/// The vzdump `notes-template` of a backup of `policy_uid`'s run `run_id`. Its first line (the
/// one PVE lists in storage content) carries the marker and the policy UID: that note, never a
/// file name, proves the backup ours. `{{guestname}}` is expanded by vzdump.
pub fn notes_template(policy_uid: &str, run_id: &str) -> String {
    format!("{MARKER} policy={policy_uid} run={run_id} guest={{{{guestname}}}}")
}

/// Who made a backup, read from the first line of its notes: `(policy UID, run id)`, or `None`
/// for a backup without our marker (never ours to touch).
pub fn owner_of(notes: &str) -> Option<(&str, &str)> {
    let line = notes.lines().next()?;
    let mut words = line.split_whitespace();
    if words.next()? != MARKER {
        return None;
    }
    let mut policy = None;
    let mut run = None;
    for word in words {
        if let Some(v) = word.strip_prefix("policy=") {
            policy = Some(v);
        } else if let Some(v) = word.strip_prefix("run=") {
            run = Some(v);
        }
    }
    Some((policy?, run?))
}

/// Whether `notes` prove a backup made by the policy with UID `policy_uid`.
pub fn owned_by(notes: Option<&str>, policy_uid: &str) -> bool {
    notes
        .and_then(owner_of)
        .is_some_and(|(policy, _)| !policy_uid.is_empty() && policy == policy_uid)
}

/// Delay before the `attempts`-th retry of a locked guest: 5 s, doubling, at most 5 min.
pub fn lock_backoff(attempts: i32) -> Duration {
    let exp = u32::try_from(attempts.clamp(1, 16) - 1).unwrap_or(0);
    LOCK_BACKOFF_MIN
        .saturating_mul(2u32.saturating_pow(exp))
        .min(LOCK_BACKOFF_MAX)
}

/// Whether the item holds a slot (counts against `concurrency`).
pub fn is_active(item: &BackupRunItem) -> bool {
    matches!(
        item.state,
        BackupItemState::Running | BackupItemState::Ingesting | BackupItemState::Verifying
    )
}

/// Whether a pending item may start on `node` now: fewer than `concurrency` items active, and
/// no vzdump of this run already on that node.
pub fn may_start(items: &[BackupRunItem], concurrency: i32, node: &str) -> bool {
    let active = items.iter().filter(|i| is_active(i)).count();
    let limit = usize::try_from(concurrency.max(1)).unwrap_or(1);
    let node_busy = items
        .iter()
        .any(|i| i.state == BackupItemState::Running && i.guest.node.as_deref() == Some(node));
    active < limit && !node_busy
}

/// The outcome of a run from its items.
pub fn run_result(items: &[BackupRunItem]) -> BackupResult {
    let ok = items
        .iter()
        .filter(|i| i.state == BackupItemState::Succeeded)
        .count();
    if !items.is_empty() && ok == items.len() {
        BackupResult::Succeeded
    } else if ok > 0 {
        BackupResult::PartiallySucceeded
    } else {
        BackupResult::Failed
    }
}

/// Whole seconds from `start` to `end`.
pub fn seconds(start: Timestamp, end: Timestamp) -> i64 {
    i64::try_from(elapsed(start, end).as_secs()).unwrap_or(i64::MAX)
}

/// The summary of a finished run.
pub fn summarize(run: &BackupRun, now: Timestamp) -> BackupRunSummary {
    let ok = run
        .items
        .iter()
        .filter(|i| i.state == BackupItemState::Succeeded)
        .count();
    let sum = |f: fn(&BackupRunItem) -> Option<i64>| -> Option<i64> {
        let values: Vec<i64> = run.items.iter().filter_map(f).collect();
        (!values.is_empty()).then(|| values.iter().sum())
    };
    let failed: Vec<String> = run
        .items
        .iter()
        .filter(|i| i.state == BackupItemState::Failed)
        .map(|i| {
            format!(
                "{} ({})",
                i.guest.service,
                i.reason.as_deref().unwrap_or("Failed")
            )
        })
        .collect();
    let mut message = format!("{ok}/{} Services backed up", run.items.len());
    if !failed.is_empty() {
        message.push_str(&format!("; failed: {}", failed.join(", ")));
    }
    BackupRunSummary {
        run_id: run.run_id.clone(),
        start_time: run.start_time,
        completion_time: now,
        result: run_result(&run.items),
        logical_bytes: sum(|i| i.size_bytes),
        stored_bytes: sum(|i| i.stored_bytes),
        duration_seconds: Some(seconds(run.start_time, now)),
        message,
    }
}

/// The per-Service status after a finished run: each item updates its Service's entry (a
/// failure keeps the last successful backup's volid, time and size); Services no longer
/// selected (`selected`) are dropped.
pub fn merge_services(
    previous: &[ServiceBackupStatus],
    run: &BackupRun,
    selected: &BTreeSet<String>,
    now: Timestamp,
) -> Vec<ServiceBackupStatus> {
    let mut out: Vec<ServiceBackupStatus> = previous
        .iter()
        .filter(|s| selected.contains(&s.name))
        .cloned()
        .collect();
    for item in &run.items {
        let entry = match out.iter_mut().position(|s| s.name == item.guest.service) {
            Some(i) => &mut out[i],
            None => {
                out.push(ServiceBackupStatus {
                    name: item.guest.service.clone(),
                    vmid: item.guest.vmid,
                    result: BackupResult::Failed,
                    last_attempt_time: None,
                    last_success_time: None,
                    volid: None,
                    size_bytes: None,
                    verified: None,
                    duration_seconds: None,
                    stored_bytes: None,
                    message: String::new(),
                });
                out.last_mut().expect("just pushed")
            }
        };
        entry.vmid = item.guest.vmid;
        entry.last_attempt_time = Some(item.completion_time.unwrap_or(now));
        entry.duration_seconds = item
            .start_time
            .map(|s| seconds(s, item.completion_time.unwrap_or(now)));
        if item.state == BackupItemState::Succeeded {
            entry.result = BackupResult::Succeeded;
            entry.last_success_time = item.completion_time.or(Some(now));
            entry.volid = item.volid.clone();
            entry.size_bytes = item.size_bytes;
            entry.stored_bytes = item.stored_bytes;
            entry.verified = item.verified;
            entry.message = String::new();
        } else {
            entry.result = BackupResult::Failed;
            entry.message = item.message.clone();
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The retention rules as the chunk store's prune reads them.
pub fn keep_options(r: &Retention) -> KeepOptions {
    let n = |v: Option<i32>| v.and_then(|v| u32::try_from(v).ok()).filter(|v| *v > 0);
    KeepOptions {
        last: n(r.keep_last),
        hourly: n(r.keep_hourly),
        daily: n(r.keep_daily),
        weekly: n(r.keep_weekly),
        monthly: n(r.keep_monthly),
        yearly: n(r.keep_yearly),
    }
}

/// One of a guest's backups made by this policy, as retention sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedBackup {
    /// Volume id.
    pub volid: String,
    /// Creation time, Unix seconds.
    pub time: i64,
    /// Protected backups are never deleted.
    pub protected: bool,
    /// Whether it is known to have passed verification.
    pub verified: bool,
}

/// The backups of one guest to delete under `keep` (PBS semantics) at `now`: those no rule
/// keeps, except protected ones, the newest verified one, and any dated in the future (a node's
/// clock ahead: it must not take the place of real backups). Without a rule that keeps
/// anything, nothing is deleted.
pub fn prune_plan(backups: &[OwnedBackup], keep: &KeepOptions, now: Timestamp) -> Vec<String> {
    if !keep.keeps_something() {
        return Vec::new();
    }
    let items: Vec<PruneItem> = backups
        .iter()
        .map(|b| PruneItem {
            id: b.volid.clone(),
            time: b.time.saturating_mul(1_000_000),
            complete: true,
        })
        .collect();
    let newest_verified = backups
        .iter()
        .filter(|b| b.verified)
        .max_by_key(|b| (b.time, b.volid.clone()))
        .map(|b| b.volid.as_str());
    let mut out: Vec<String> = compute_prune_at(&items, keep, now.as_microsecond())
        .into_iter()
        .filter(|(_, mark)| *mark == PruneMark::Remove)
        .map(|(id, _)| id)
        .filter(|id| Some(id.as_str()) != newest_verified)
        .filter(|id| backups.iter().any(|b| &b.volid == id && !b.protected))
        .collect();
    out.sort();
    out
}

/// `bytes` for humans in binary units, e.g. `12.4 GiB`.
pub fn human_bytes(bytes: i64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes.max(0) as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// When a locked item is tried again after `attempts` tries at `now`.
pub fn next_attempt(now: Timestamp, attempts: i32) -> Timestamp {
    add(now, lock_backoff(attempts))
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
