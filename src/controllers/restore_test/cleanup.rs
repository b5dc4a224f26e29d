//! Removing restored copies: `cleanup.afterSeconds` after the checks (or kept, stopped, after a
//! failure with `onFailure: Keep`), every pass's sweep of leftovers in `vmidRange`, and the
//! finalizer's removal of everything when the RestoreTest is deleted. Stop, then delete with
//! `purge` and `destroy-unreferenced-disks`, and only a guest that carries our tag and UID, or
//! the empty config our own failed restore task left at the VMID recorded for it.

use std::collections::BTreeSet;
use std::time::Duration;

use super::plan;
use super::steps::guest_of;
use super::{Pass, reasons};
use crate::controllers::kit::PlannedEvent;
use crate::controllers::kit::time::elapsed;
use crate::controllers::pve::restore::remove_staged;
use crate::controllers::pve::task::{TaskView, handle, poll_task};
use crate::crd::common::{GuestType, TaskHandle};
use crate::crd::restore_test::{
    FailedGuestPolicy, RestorePhase, RestoreResult, RestoreResultDetail, RestoreTest,
};
use crate::proxmox::api::{ClusterResource, DeleteGuestOptions, StopOptions};
use crate::proxmox::{self, GuestRef, PveClient, TaskRef};

/// Separates a restore's result message from the note about its removal in progress.
const NOTE: &str = " | cleanup: ";

/// The note about the removal in progress, if any.
fn note(r: &RestoreResultDetail) -> Option<&str> {
    r.message.split_once(NOTE).map(|(_, n)| n)
}

/// Keeps the result message and replaces (or, with `None`, drops) the removal note.
fn set_note(r: &mut RestoreResultDetail, note: Option<&str>) {
    let base = r.message.split(NOTE).next().unwrap_or_default().to_owned();
    r.message = match note {
        Some(n) => format!("{base}{NOTE}{n}"),
        None => base,
    };
}

/// What one removal step did.
#[derive(Debug)]
pub(super) enum Removal {
    /// The guest does not exist (any more).
    Gone,
    /// Stopped and kept (`keep`).
    Kept,
    /// Locked or busy; look again later.
    Busy(String),
    /// A stop or delete task was started.
    Started(TaskRef),
    /// The guest cannot be proven ours: it is left alone.
    NotOurs(String),
    /// PVE could not be asked.
    Failed(String),
}

fn is_gone(e: &proxmox::Error) -> bool {
    matches!(e, proxmox::Error::NotFound { .. })
}

/// Whether `upid` is a restore task (`qmrestore`, `vzrestore`).
fn is_restore_task(upid: Option<&TaskHandle>) -> bool {
    upid.and_then(|u| u.parse::<TaskRef>().ok())
        .is_some_and(|t| matches!(t.upid.worker_type(), "qmrestore" | "vzrestore"))
}

/// One step of removing (or, with `keep`, stopping) the copy `guest`: stop it if it runs, then
/// delete it. Only a guest with our marker, or with `allow_empty` one without any disk (what a
/// failed restore of ours leaves), is touched.
pub(super) async fn remove_copy(
    client: &PveClient,
    guest: &GuestRef,
    uid: &str,
    allow_empty: bool,
    keep: bool,
) -> Removal {
    let status = match client.guest_status(guest).await {
        Ok(s) => s,
        Err(e) if is_gone(&e) => return Removal::Gone,
        Err(e) => return Removal::Failed(e.to_string()),
    };
    if let Some(lock) = status.lock.as_deref().filter(|l| !l.is_empty()) {
        return Removal::Busy(format!("VMID {} is locked ({lock})", guest.vmid));
    }
    let config = match client.guest_config(guest).await {
        Ok(c) => c,
        Err(e) if is_gone(&e) => return Removal::Gone,
        Err(e) => return Removal::Failed(e.to_string()),
    };
    let values: std::collections::BTreeMap<String, String> = config
        .values
        .keys()
        .filter_map(|k| config.get(k).map(|v| (k.clone(), v)))
        .collect();
    let kind = match guest.guest_type {
        proxmox::GuestType::Qemu => GuestType::Vm,
        proxmox::GuestType::Lxc => GuestType::Lxc,
    };
    // The config a failed restore of ours leaves (qemu-server keeps the placeholder it wrote
    // before restoring: at most `memory`, no disk, no tag), stopped: nothing a user would build.
    let placeholder = allow_empty
        && status.status == "stopped"
        && plan::disk_storages(kind, &values).is_empty()
        && values
            .keys()
            .all(|k| matches!(k.as_str(), "memory" | "lock" | "digest"));
    let marked = plan::is_ours(&config.tags(), config.description().as_deref(), uid);
    let ours = marked || placeholder;
    if !ours {
        return Removal::NotOurs(format!(
            "VMID {} on {} does not carry this RestoreTest's marker; it is left alone",
            guest.vmid, guest.node
        ));
    }
    if status.status != "stopped" {
        return match client.stop_guest(guest, &StopOptions::default()).await {
            Ok(task) => Removal::Started(task),
            Err(e) => Removal::Failed(e.to_string()),
        };
    }
    // A failed restore's placeholder has nothing to look at (the task log stays in PVE): it goes.
    if keep && marked {
        return Removal::Kept;
    }
    let options = DeleteGuestOptions {
        purge: true,
        destroy_unreferenced_disks: true,
    };
    match client.delete_guest(guest, &options).await {
        Ok(task) => Removal::Started(task),
        Err(e) if is_gone(&e) => Removal::Gone,
        Err(e) => Removal::Failed(e.to_string()),
    }
}

/// The VMIDs of `rows` inside the RestoreTest's range that carry our tag (the sweep's candidates).
fn tagged_in_range<'a>(
    rows: &'a [ClusterResource],
    test: &RestoreTest,
) -> impl Iterator<Item = GuestRef> + 'a {
    let range = test.spec.target.vmid_range;
    rows.iter().filter_map(move |row| {
        let vmid = row.vmid?;
        let kind = row.guest_type()?;
        let node = row.node.clone()?;
        let tagged = row
            .tags
            .as_deref()
            .unwrap_or_default()
            .split([';', ',', ' '])
            .any(|t| t == plan::TAG);
        (tagged && range.contains(i32::try_from(vmid.get()).unwrap_or(-1)))
            .then(|| GuestRef::new(node, kind, vmid))
    })
}

impl Pass<'_> {
    /// A restore whose checks ended: keep a failed copy (stopped) if asked, otherwise wait
    /// `cleanup.afterSeconds`, then remove it.
    pub(super) async fn cleaning_up(&mut self, r: &mut RestoreResultDetail, client: &PveClient) {
        let Some(guest) = guest_of(r) else {
            r.phase = RestorePhase::Done;
            return;
        };
        if let Some(upid) = r.upid.clone().filter(|u| !is_restore_task(Some(u))) {
            match poll_task(client, &upid).await {
                TaskView::Running(_) | TaskView::None => {
                    self.soon(self.proxmox.tuning.task_poll);
                    return;
                }
                TaskView::Done { .. } => {
                    self.proxmox.snapshots.invalidate(self.cluster_uid());
                    r.upid = None;
                }
            }
        }
        let failed = r.result == Some(RestoreResult::Failed);
        // A live-restored copy passed its checks while PVE still restored it: the restore time
        // is known when that task ends (the copy cannot be removed before anyway).
        if let Some(upid) = r
            .upid
            .clone()
            .filter(|u| !failed && is_restore_task(Some(u)) && r.restored_time.is_none())
        {
            match poll_task(client, &upid).await {
                TaskView::Running(_) | TaskView::None => {
                    self.soon(self.proxmox.tuning.task_poll);
                    return;
                }
                TaskView::Done { .. } => {
                    r.restored_time = Some(self.now);
                    r.restore_seconds = r
                        .restore_start_time
                        .map(|start| (self.now.as_second() - start.as_second()).max(0));
                    r.upid = None;
                }
            }
        }
        let cleanup = self.spec.cleanup.clone().unwrap_or_default();
        let keep = failed && cleanup.on_failure == FailedGuestPolicy::Keep;
        if !keep {
            let after = Duration::from_secs(u64::try_from(cleanup.after_seconds).unwrap_or(0));
            let since = r.finished_time.unwrap_or(self.now);
            let waited = elapsed(since, self.now);
            if waited < after {
                self.soon(after - waited);
                return;
            }
        }
        let allow_empty = failed && is_restore_task(r.upid.as_ref());
        let who = if r.service.is_empty() {
            format!("guest {}", r.source_vmid)
        } else {
            r.service.clone()
        };
        match remove_copy(client, &guest, self.input.uid, allow_empty, keep).await {
            Removal::Gone => {
                r.cleaned_up = true;
                set_note(r, None);
                r.phase = RestorePhase::Done;
                r.upid = None;
                if let Ok(vmid) = u32::try_from(r.restored_vmid) {
                    self.deps.release_vmid(self.cluster_uid(), vmid, self.input.uid);
                }
                self.events.push(PlannedEvent::normal(
                    reasons::CLEANED_UP,
                    reasons::ACTION_CLEANUP,
                    format!(
                        "{who}: removed the restored copy {} from {}",
                        guest.vmid, guest.node
                    ),
                ));
            }
            Removal::Kept => {
                r.phase = RestorePhase::Done;
                self.events.push(PlannedEvent::warning(
                    reasons::KEPT,
                    reasons::ACTION_CLEANUP,
                    format!(
                        "{who}: kept the failed copy {} on {} (stopped) for a look; it is removed at the next run or when this RestoreTest is deleted",
                        guest.vmid, guest.node
                    ),
                ));
            }
            Removal::Busy(why) => {
                set_note(r, Some(&why));
                self.soon(self.proxmox.tuning.task_poll);
            }
            Removal::Started(task) => {
                self.proxmox.snapshots.invalidate(self.cluster_uid());
                r.upid = Some(handle(&task));
                self.soon(self.proxmox.tuning.task_poll);
            }
            Removal::NotOurs(why) => {
                r.phase = RestorePhase::Done;
                r.message = why;
            }
            Removal::Failed(e) => {
                let message = format!("cannot remove the copy {} yet: {e}", guest.vmid);
                if note(r) != Some(message.as_str()) {
                    self.events.push(PlannedEvent::warning(
                        reasons::CLEANUP_FAILED,
                        reasons::ACTION_CLEANUP,
                        message.clone(),
                    ));
                }
                set_note(r, Some(&message));
                self.soon(Duration::from_secs(10));
            }
        }
    }

    /// Removes copies of ours in `vmidRange` that no restore in progress accounts for (left by
    /// a crash, or a failed copy kept until this next run), and marks kept copies that are gone.
    pub(super) async fn sweep(&mut self, client: &PveClient, resources: &[ClusterResource]) {
        let mut accounted: BTreeSet<i32> = BTreeSet::new();
        if let Some(run) = &self.status.current_run {
            accounted.extend(run.restores.iter().map(|r| r.restored_vmid));
        } else if let Some(run) = &self.status.last_run {
            accounted.extend(
                run.restores
                    .iter()
                    .filter(|r| !r.cleaned_up)
                    .map(|r| r.restored_vmid),
            );
        }
        let present: BTreeSet<i32> = resources
            .iter()
            .filter_map(|row| row.vmid.and_then(|v| i32::try_from(v.get()).ok()))
            .collect();
        if self.status.current_run.is_some()
            && let Some(last) = &mut self.status.last_run
        {
            for r in last
                .restores
                .iter_mut()
                .filter(|r| !r.cleaned_up && r.restored_vmid != 0)
            {
                if !present.contains(&r.restored_vmid) {
                    r.cleaned_up = true;
                }
            }
        }
        let leftovers: Vec<GuestRef> = tagged_in_range(resources, self.input.test)
            .filter(|g| !accounted.contains(&i32::try_from(g.vmid.get()).unwrap_or(0)))
            .collect();
        for guest in leftovers {
            match remove_copy(client, &guest, self.input.uid, false, false).await {
                Removal::Started(_) => {
                    tracing::info!(vmid = %guest.vmid, node = %guest.node, restoretest = %self.name, "removing a restored copy no run accounts for");
                    self.proxmox.snapshots.invalidate(self.cluster_uid());
                    self.soon(self.proxmox.tuning.task_poll);
                }
                Removal::Busy(_) => self.soon(self.proxmox.tuning.task_poll),
                Removal::Failed(e) => {
                    tracing::warn!(vmid = %guest.vmid, error = %e, "cannot remove a leftover restored copy yet");
                    self.soon(Duration::from_secs(30));
                }
                Removal::Gone | Removal::Kept | Removal::NotOurs(_) => {}
            }
        }
    }
}

/// The finalizer's cleanup: one removal step for every copy of this RestoreTest (recorded in
/// status or found by our tag and UID in its range). `Ok(true)` once none is left.
pub async fn delete_copies(client: &PveClient, test: &RestoreTest, uid: &str) -> Result<bool, String> {
    let status = test.status.clone().unwrap_or_default();
    let mut guests: Vec<(GuestRef, bool)> = Vec::new();
    for r in status
        .current_run
        .iter()
        .chain(status.last_run.iter())
        .flat_map(|run| run.restores.iter())
        .filter(|r| r.restored_vmid != 0 && !r.cleaned_up)
    {
        if let Some(g) = guest_of(r) {
            let allow_empty = is_restore_task(r.upid.as_ref());
            guests.push((g, allow_empty));
        }
    }
    let rows = client
        .cluster_resources(None)
        .await
        .map_err(|e| format!("cannot list the cluster's guests: {e}"))?;
    for g in tagged_in_range(&rows, test) {
        if !guests.iter().any(|(known, _)| known.vmid == g.vmid) {
            guests.push((g, false));
        }
    }
    let mut done = true;
    for (guest, allow_empty) in guests {
        match remove_copy(client, &guest, uid, allow_empty, false).await {
            Removal::Gone | Removal::NotOurs(_) | Removal::Kept => {}
            Removal::Busy(_) | Removal::Started(_) => done = false,
            Removal::Failed(e) => return Err(format!("cannot remove the restored copy {}: {e}", guest.vmid)),
        }
    }
    if done {
        // Archives reassembled from the chunk store for restores that never got to remove them
        // (deleted mid-restore, or an operator restart): no restore reads them once the copies
        // are gone.
        for path in status
            .current_run
            .iter()
            .chain(status.last_run.iter())
            .flat_map(|run| run.restores.iter())
            .filter_map(|r| r.staged_archive.as_deref())
        {
            remove_staged(std::path::Path::new(path))?;
        }
    }
    Ok(done)
}
