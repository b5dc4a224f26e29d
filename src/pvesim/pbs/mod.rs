//! A simulated Proxmox Backup Server behind the simulated cluster's `pbs` storages.
//!
//! Its datastores hold the same snapshots PVE's `pbs`-type storages list (one list,
//! [`Cluster::pbs_backups`]): a vzdump to a `pbs` storage creates a snapshot in the storage's
//! `datastore`, and the PBS API ([`serve`], started with `--pbs-listen`) lists, verifies and
//! deletes them. Verification is what PBS keeps in a snapshot's manifest: absent until a verify
//! ran (or, with `verify-new` on, right after the backup), then `ok` or `failed` with the verify
//! task's UPID. Faults: `pbs-verify-failure` damages the next snapshots verified (they fail every
//! verification from then on), `pbs-verify-new` turns verification of new snapshots on or off,
//! `pbs-verification` sets a snapshot's state.

mod server;

use std::collections::BTreeMap;

use serde_json::{Value, json};

pub(crate) use server::serve;

use super::clock::format_epoch;
use super::state::{Cluster, GuestKind, PbsBackup, PbsVerification};

/// The PBS host name (in its UPIDs and certificate).
pub const PBS_NODE: &str = "pbs";

/// The simulated PBS's own state.
#[derive(Debug, Clone)]
pub struct PbsState {
    /// Verify new snapshots right after the backup (the datastore's `verify-new`). Default on,
    /// so a backup shows `verification.state: ok` at once, as the simulator always did.
    pub verify_new: bool,
    fail_rules: Vec<FailRule>,
    next_task: u32,
    pub(crate) tasks: BTreeMap<String, PbsTask>,
}

impl Default for PbsState {
    fn default() -> Self {
        Self {
            verify_new: true,
            fail_rules: Vec::new(),
            next_task: 1,
            tasks: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone)]
struct FailRule {
    vmid: Option<u32>,
    remaining: u32,
}

/// A PBS worker task.
#[derive(Debug, Clone)]
pub(crate) struct PbsTask {
    pub(crate) upid: String,
    pub(crate) worker_type: String,
    pub(crate) worker_id: String,
    pub(crate) authid: String,
    pub(crate) pid: u32,
    pub(crate) pstart: u64,
    pub(crate) starttime: i64,
    pub(crate) endtime: Option<i64>,
    pub(crate) exitstatus: Option<String>,
    pub(crate) log: Vec<String>,
}

impl PbsTask {
    /// `GET /nodes/{node}/tasks/{upid}/status`.
    pub(crate) fn status_json(&self) -> Value {
        let mut v = json!({
            "upid": self.upid, "node": PBS_NODE, "pid": self.pid, "pstart": self.pstart,
            "starttime": self.starttime, "type": self.worker_type, "id": self.worker_id,
            "status": if self.exitstatus.is_some() { "stopped" } else { "running" },
        });
        match self.authid.split_once('!') {
            Some((user, token)) => {
                v["user"] = json!(user);
                v["tokenid"] = json!(token);
            }
            None => v["user"] = json!(self.authid),
        }
        if let Some(exit) = &self.exitstatus {
            v["exitstatus"] = json!(exit);
            v["endtime"] = json!(self.endtime.unwrap_or(self.starttime));
        }
        v
    }

    fn finish(&mut self, now: i64, error: Option<String>) {
        self.log.push(match &error {
            None => "TASK OK".to_string(),
            Some(e) => format!("TASK ERROR: {e}"),
        });
        self.exitstatus = Some(error.unwrap_or_else(|| "OK".into()));
        self.endtime = Some(now);
    }
}

/// `vm` or `ct`.
pub(crate) fn backup_type(kind: GuestKind) -> &'static str {
    if kind == GuestKind::Qemu { "vm" } else { "ct" }
}

/// `vm/100/2024-06-01T00:00:00Z`.
pub(crate) fn snapshot_path(b: &PbsBackup) -> String {
    format!(
        "{}/{}/{}",
        backup_type(b.kind),
        b.vmid,
        format_epoch(b.backup_time, "%Y-%m-%dT%H:%M:%SZ")
    )
}

/// `proxmox_sys::systemd::escape_unit` as PBS uses it for worker ids: `/` becomes `-`, other
/// characters outside `[A-Za-z0-9_.]` become `\xNN`.
fn escape_worker_id(text: &str) -> String {
    let mut out = String::new();
    for (i, b) in text.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' => out.push(char::from(b)),
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// The datastore a PVE `pbs` storage writes to.
pub(crate) fn datastore_of(cluster: &Cluster, storage: &str) -> Option<String> {
    cluster
        .storages
        .get(storage)
        .filter(|s| s.kind == "pbs")
        .map(|s| s.datastore.clone().unwrap_or_else(|| s.id.clone()))
}

/// The datastores of the simulated PBS (every `pbs` storage's `datastore`).
pub(crate) fn datastores(cluster: &Cluster) -> Vec<String> {
    let mut out: Vec<String> = cluster
        .storages
        .keys()
        .filter_map(|id| datastore_of(cluster, id))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Indices into [`Cluster::pbs_backups`] of a datastore's snapshots.
pub(crate) fn snapshots_of(cluster: &Cluster, store: &str) -> Vec<usize> {
    cluster
        .pbs_backups
        .iter()
        .enumerate()
        .filter(|(_, b)| datastore_of(cluster, &b.storage).as_deref() == Some(store))
        .map(|(i, _)| i)
        .collect()
}

impl PbsState {
    /// Registers a running worker task; returns its UPID
    /// (`UPID:node:pid:pstart:task_id:starttime:type:id:authid:`).
    pub(crate) fn new_task(&mut self, now: i64, worker_type: &str, worker_id: &str, authid: &str) -> String {
        let task_id = self.next_task;
        self.next_task += 1;
        let (pid, pstart) = (0x1000 + task_id, 0x2000_u64);
        let wid = escape_worker_id(worker_id);
        let upid = format!(
            "UPID:{PBS_NODE}:{pid:08X}:{pstart:08X}:{task_id:08X}:{:08X}:{worker_type}:{wid}:{authid}:",
            now.max(0)
        );
        self.tasks.insert(
            upid.clone(),
            PbsTask {
                upid: upid.clone(),
                worker_type: worker_type.into(),
                worker_id: wid,
                authid: authid.into(),
                pid,
                pstart,
                starttime: now,
                endtime: None,
                exitstatus: None,
                log: Vec::new(),
            },
        );
        upid
    }

    /// Ends a task.
    pub(crate) fn finish_task(&mut self, upid: &str, now: i64, error: Option<String>) {
        if let Some(t) = self.tasks.get_mut(upid) {
            t.finish(now, error);
        }
    }

    fn log(&mut self, upid: &str, line: impl Into<String>) {
        if let Some(t) = self.tasks.get_mut(upid) {
            t.log.push(line.into());
        }
    }

    /// Consumes an injected verification failure for `vmid`, if one is pending.
    fn take_failure(&mut self, vmid: u32) -> bool {
        let rule = self
            .fail_rules
            .iter_mut()
            .find(|r| r.remaining > 0 && r.vmid.is_none_or(|v| v == vmid));
        match rule {
            Some(r) => {
                r.remaining -= 1;
                true
            }
            None => false,
        }
    }

    /// `pbs-verify-failure`: the next `count` snapshots verified (of `vmid`, or any) turn out
    /// damaged.
    pub(crate) fn add_verify_failure(&mut self, vmid: Option<u32>, count: u32) {
        self.fail_rules.push(FailRule {
            vmid,
            remaining: count,
        });
    }

    /// Forgets injected verification failures (not the damage already found).
    pub(crate) fn clear_faults(&mut self) {
        self.fail_rules.clear();
    }
}

/// Verifies snapshot `i` inside task `upid` (`verify_backup_dir`): records the result in the
/// snapshot and logs like PBS; returns whether it is ok.
pub(crate) fn verify_snapshot(cluster: &mut Cluster, i: usize, upid: &str) -> bool {
    let Some(b) = cluster.pbs_backups.get(i) else {
        return false;
    };
    let (vmid, kind, path) = (b.vmid, b.kind, snapshot_path(b));
    let store = datastore_of(cluster, &b.storage).unwrap_or_default();
    if !cluster.pbs_backups[i].corrupt && cluster.pbs.take_failure(vmid) {
        cluster.pbs_backups[i].corrupt = true;
    }
    let ok = !cluster.pbs_backups[i].corrupt;
    let image = if kind == GuestKind::Qemu {
        "drive-scsi0.img.fidx"
    } else {
        "root.pxar.didx"
    };
    cluster.pbs.log(upid, format!("  verify {store}:{path}"));
    cluster.pbs.log(upid, "  check index.json.blob");
    cluster.pbs.log(upid, format!("  check {image}"));
    if !ok {
        cluster.pbs.log(
            upid,
            format!("can't verify chunk, load failed - store '{store}', unable to load chunk '5ad9c9b1d4f4f4c6e1e1f2b7d0d3c9a1f0e2b4c6d8e0f2a4b6c8d0e2f4a6b8c0' - blob too small (0 bytes)."),
        );
        cluster.pbs.log(
            upid,
            "  verified 0.00/1.00 MiB in 0.01 seconds, speed 0.00/100.00 MiB/s (1 errors)",
        );
        cluster.pbs.log(
            upid,
            format!("verify {store}:{path}/{image} failed: chunks could not be verified"),
        );
    }
    cluster.pbs_backups[i].verification = Some(PbsVerification {
        state: if ok { "ok" } else { "failed" }.into(),
        upid: upid.to_string(),
    });
    ok
}

/// After vzdump created snapshot `i`: with `verify-new`, PBS verifies it at once.
pub(crate) fn on_snapshot_created(cluster: &mut Cluster, i: usize, now: i64, authid: &str) {
    if !cluster.pbs.verify_new {
        return;
    }
    let Some(b) = cluster.pbs_backups.get(i) else {
        return;
    };
    let store = datastore_of(cluster, &b.storage).unwrap_or_default();
    let id = format!("{store}:{}", snapshot_path(b));
    let upid = cluster.pbs.new_task(now, "verify_snapshot", &id, authid);
    let ok = verify_snapshot(cluster, i, &upid);
    let error = (!ok).then(|| "verification failed - please check the log for details".to_string());
    cluster.pbs.finish_task(&upid, now, error);
}

/// Sets (or, with `None`, clears) the verification state of the snapshot behind a PVE volid
/// (`pbs:backup/vm/100/<time>`), as if a verify task had ended so.
pub(crate) fn set_verification(
    cluster: &mut Cluster,
    volid: &str,
    state: Option<&str>,
    now: i64,
) -> Result<(), String> {
    let i = cluster
        .pbs_backups
        .iter()
        .position(|b| b.volid() == volid)
        .ok_or_else(|| format!("no PBS snapshot '{volid}'"))?;
    let Some(state) = state else {
        cluster.pbs_backups[i].verification = None;
        return Ok(());
    };
    if state != "ok" && state != "failed" {
        return Err(format!(
            "verification state must be 'ok' or 'failed', not '{state}'"
        ));
    }
    let b = &cluster.pbs_backups[i];
    let store = datastore_of(cluster, &b.storage).unwrap_or_default();
    let id = format!("{store}:{}", snapshot_path(b));
    let upid = cluster.pbs.new_task(now, "verify_snapshot", &id, "root@pam");
    let error =
        (state == "failed").then(|| "verification failed - please check the log for details".to_string());
    cluster.pbs.finish_task(&upid, now, error);
    cluster.pbs_backups[i].corrupt = state == "failed";
    cluster.pbs_backups[i].verification = Some(PbsVerification {
        state: state.into(),
        upid,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_ids_are_escaped_like_systemd_units() {
        assert_eq!(
            escape_worker_id("homelab:vm/100/2024-06-01T00:00:00Z"),
            "homelab\\x3avm-100-2024\\x2d06\\x2d01T00\\x3a00\\x3a00Z"
        );
        let mut state = PbsState::default();
        let upid = state.new_task(0x6650_F1A0, "verify_snapshot", "s:vm/1", "root@pam!t");
        assert_eq!(
            upid,
            "UPID:pbs:00001001:00002000:00000001:6650F1A0:verify_snapshot:s\\x3avm-1:root@pam!t:"
        );
        let status = state.tasks[&upid].status_json();
        assert_eq!(
            (status["user"].as_str(), status["tokenid"].as_str()),
            (Some("root@pam"), Some("t"))
        );
        assert_eq!(status["status"], "running");
    }
}
