//! The RestoreTest controller's sources and selection, through the generic driver against the
//! simulator, with backups made by the BackupPolicy controller first: PBS backups (verified or
//! not, live restore), chunk-store backups reassembled into the staging path, `selection`
//! (`Volid`, `maxAgeSeconds`, `requireVerified`), `source.services` picks, a `source.vmid` whose
//! guest is gone, schedules and `suspend`, and one restore per node across RestoreTests.

use std::time::Duration;

use homelab_autopilot::controllers::restore_test::controller::RestoreTestKind;
use homelab_autopilot::crd::RestoreTest;
use homelab_autopilot::crd::conditions::find_condition;
use homelab_autopilot::crd::restore_test::{
    RestorePhase, RestoreResult, RestoreResultDetail, RestoreTestStatus,
};
use homelab_autopilot::pvesim::Fault;

use crate::controllers_restore::{NAME, RestoreLab};

/// Fast, agent-free checks: a copy with its NICs down, removed as soon as it passed.
const QUICK: &str = "  network: {mode: None}\n  cleanup: {afterSeconds: 0}\n";

/// `kubectl apply` of RestoreTest `name` with its own `target` (a YAML flow mapping).
fn apply_test(lab: &mut RestoreLab, name: &str, target: &str, spec: &str) {
    let yaml = format!(
        "apiVersion: autopilot.homelab.dev/v1alpha1\nkind: RestoreTest\nmetadata: {{name: {name}}}\n\
         spec:\n  clusterRef: {{name: homelab}}\n  target: {target}\n{spec}"
    );
    let now = lab.lab.now;
    lab.lab
        .world
        .apply_at(&[("restore-test.yaml", &yaml)], now)
        .unwrap();
}

fn status_of(lab: &RestoreLab, name: &str) -> RestoreTestStatus {
    lab.lab
        .world
        .get::<RestoreTest>(name)
        .unwrap()
        .status
        .unwrap_or_default()
}

/// The only restore of the last finished run.
fn last_restore(status: &RestoreTestStatus) -> RestoreResultDetail {
    let last = status.last_run.as_ref().expect("a finished run");
    assert_eq!(last.restores.len(), 1, "{last:#?}");
    last.restores[0].clone()
}

/// Drives passes until run `run_id` finished. (The lab's `apply` stores the RestoreTest afresh,
/// generation 1 and no status, so each apply's own run is `g1` again.)
async fn until_run(lab: &mut RestoreLab, run_id: &str) -> RestoreTestStatus {
    lab.until(&format!("the end of run {run_id}"), |s| {
        s.current_run.is_none() && s.last_run.as_ref().is_some_and(|r| r.run_id == run_id)
    })
    .await
}

/// The log lines of every restore task the simulator ran.
fn restore_task_logs(lab: &RestoreLab) -> Vec<Vec<String>> {
    lab.lab
        .sim
        .tasks()
        .iter()
        .filter(|t| t.upid.contains(":qmrestore:") || t.upid.contains(":vzrestore:"))
        .map(|t| t.log.clone())
        .collect()
}

#[tokio::test]
async fn a_pbs_backup_restores_and_a_live_restore_is_checked_while_it_restores() {
    let mut lab = RestoreLab::with_policy(true, "  destination: {pbs: {storage: pbs-homelab}}\n").await;
    let backups = lab.lab.run_now().await;
    let made = backups
        .services
        .iter()
        .find(|s| s.name == "nextcloud")
        .and_then(|s| s.volid.clone())
        .expect("a backup of nextcloud");
    assert!(made.starts_with("pbs-homelab:backup/vm/200/"), "{made}");

    lab.apply(&format!(
        "  source: {{serviceRef: {{name: nextcloud}}}}\n  rto: {{targetSeconds: 3600}}\n{QUICK}"
    ));
    let status = until_run(&mut lab, "g1").await;
    let r = last_restore(&status);
    assert_eq!(r.result, Some(RestoreResult::Passed), "{r:#?}");
    assert_eq!(r.backup_volid.as_deref(), Some(made.as_str()));
    assert!(r.cleaned_up, "{r:#?}");
    assert!(r.rto_seconds.is_some_and(|s| s > 0), "{r:#?}");
    assert!(r.restore_seconds.is_some(), "{r:#?}");
    assert_eq!(lab.restore_tasks(), 1);
    assert_eq!(lab.guests_in_range(), Vec::<u32>::new());

    // Live: PVE starts the VM at once and the checks run while the data still streams in.
    lab.apply(&format!(
        "  source: {{serviceRef: {{name: nextcloud}}}}\n  liveRestore: true\n  rto: {{targetSeconds: 3600}}\n{QUICK}"
    ));
    lab.pass().await;
    let live = lab.until_phase(RestorePhase::Checking).await;
    assert!(
        live.upid.as_deref().is_some_and(|u| u.contains(":qmrestore:")),
        "checked while its restore task runs: {live:#?}"
    );
    assert!(live.booted_time.is_some());
    assert_eq!(live.booted_time, live.restore_start_time, "{live:#?}");
    lab.lab.tick(Duration::from_secs(1)).await;
    let status = until_run(&mut lab, "g1").await;
    let r = last_restore(&status);
    assert_eq!(r.result, Some(RestoreResult::Passed), "{r:#?}");
    assert_eq!(r.booted_time, r.restore_start_time, "{r:#?}");
    let rto = r.rto_seconds.expect("the RTO is measured");
    assert!(rto > 0, "{r:#?}");
    assert_eq!(
        Some(rto),
        r.healthy_time
            .zip(r.restore_start_time)
            .map(|(h, s)| h.as_second() - s.as_second()),
        "from the POST to the first full pass: {r:#?}"
    );
    assert_eq!(status.last_run.as_ref().unwrap().rto_seconds, Some(rto));
    // The restore phase is measured too, also when it ended after the copy was healthy (the
    // copy served while PVE was still restoring it): it is known when the task ends.
    let done = r.restored_time.expect("the restore task's end is recorded");
    assert_eq!(
        r.restore_seconds,
        r.restore_start_time.map(|s| done.as_second() - s.as_second()),
        "{r:#?}"
    );
    assert!(r.cleaned_up, "{r:#?}");
    let logs = restore_task_logs(&lab);
    assert_eq!(logs.len(), 2);
    assert!(
        logs[1].iter().any(|l| l.contains("for live-restore")),
        "PVE was asked for a live restore: {:?}",
        logs[1]
    );
    assert_eq!(lab.guests_in_range(), Vec::<u32>::new());
}

#[tokio::test]
async fn a_pbs_snapshot_that_failed_verification_is_restored_only_when_verification_is_not_required() {
    let mut lab = RestoreLab::with_policy(
        true,
        "  services: {names: [nextcloud]}\n  destination: {pbs: {storage: pbs-homelab}}\n",
    )
    .await;
    lab.lab
        .sim
        .inject(Fault::PbsVerifyFailure {
            vmid: Some(200),
            count: 1,
        })
        .unwrap();
    let backups = lab.lab.run_now().await;
    let item = &backups.services[0];
    assert!(item.message.contains("verification"), "{backups:#?}");

    // requireVerified (the default): the only snapshot failed its verification.
    lab.apply(&format!("  source: {{serviceRef: {{name: nextcloud}}}}\n{QUICK}"));
    let status = until_run(&mut lab, "g1").await;
    let r = last_restore(&status);
    assert_eq!(r.result, Some(RestoreResult::Failed));
    assert_eq!(r.reason, "NoVerifiedBackup", "{r:#?}");
    assert_eq!(lab.restore_tasks(), 0);

    lab.apply(&format!(
        "  source: {{serviceRef: {{name: nextcloud}}}}\n  selection: {{requireVerified: false}}\n{QUICK}"
    ));
    let status = until_run(&mut lab, "g1").await;
    let r = last_restore(&status);
    assert_eq!(r.result, Some(RestoreResult::Passed), "{r:#?}");
    assert!(
        r.backup_volid
            .as_deref()
            .is_some_and(|v| v.starts_with("pbs-homelab:backup/vm/200/")),
        "{r:#?}"
    );
    assert_eq!(lab.restore_tasks(), 1);
    assert_eq!(lab.guests_in_range(), Vec::<u32>::new());
}

#[tokio::test]
async fn live_restore_of_a_backup_not_on_pbs_is_refused_before_the_restore() {
    let mut lab = RestoreLab::start().await;
    lab.apply(&format!(
        "  source: {{serviceRef: {{name: nextcloud}}}}\n  liveRestore: true\n{QUICK}"
    ));
    let status = until_run(&mut lab, "g1").await;
    let r = last_restore(&status);
    assert_eq!(r.result, Some(RestoreResult::Failed));
    assert_eq!(r.reason, "LiveRestoreNeedsPbs", "{r:#?}");
    assert!(r.booted_time.is_none());
    assert_eq!(
        status.last_run.as_ref().unwrap().result,
        Some(RestoreResult::Failed)
    );
    assert_eq!(lab.restore_tasks(), 0, "refused before the POST");
    assert_eq!(lab.guests_in_range(), Vec::<u32>::new());
}

/// A lab whose BackupPolicy has just put nextcloud into the chunk store (staging on
/// `nfs-backup`), and the backup's id.
async fn chunk_store_lab() -> (RestoreLab, String) {
    let mut lab = RestoreLab::with_policy(false, "  destination: {storage: {storage: nfs-backup}}\n").await;
    lab.lab.apply_chunk_store_policy("nextcloud");
    let backups = lab.lab.run_now().await;
    let made = backups.services[0].volid.clone().unwrap();
    assert!(made.starts_with("chunkstore/"), "{made}");
    lab.lab.settle().await;
    assert!(
        lab.lab.backups("nfs-backup", 200).is_empty(),
        "nothing staged yet"
    );
    (lab, made)
}

/// Passes until the restore task of the reassembled archive runs; the staged archive's path.
async fn until_restoring_staged(lab: &mut RestoreLab) -> String {
    let status = lab
        .until("the restore task of the reassembled archive", |s| {
            s.current_run.as_ref().is_some_and(|r| {
                r.restores[0].phase == RestorePhase::Restoring && r.restores[0].upid.is_some()
            })
        })
        .await;
    let staged = lab.lab.backups("nfs-backup", 200);
    assert_eq!(staged.len(), 1, "the archive is staged: {staged:?}");
    let recorded = status.current_run.unwrap().restores[0].staged_archive.clone();
    let recorded = recorded.expect("the staged archive is recorded in status");
    assert!(std::path::Path::new(&recorded).exists(), "{recorded}");
    recorded
}

#[tokio::test]
async fn a_chunk_store_backup_is_reassembled_into_the_staging_path_restored_and_unstaged() {
    let (mut lab, made) = chunk_store_lab().await;
    lab.apply(&format!(
        "  source: {{serviceRef: {{name: nextcloud}}}}\n  rto: {{targetSeconds: 3600}}\n{QUICK}"
    ));
    // While PVE restores, the reassembled archive sits in the staging path.
    until_restoring_staged(&mut lab).await;

    let status = until_run(&mut lab, "g1").await;
    let r = last_restore(&status);
    assert_eq!(r.result, Some(RestoreResult::Passed), "{r:#?}");
    assert_eq!(r.backup_volid.as_deref(), Some(made.as_str()));
    assert!(r.rto_seconds.is_some() && r.restore_seconds.is_some(), "{r:#?}");
    assert!(r.cleaned_up);
    assert_eq!(r.staged_archive, None, "{r:#?}");
    assert_eq!(lab.restore_tasks(), 1);
    lab.lab.settle().await;
    assert!(
        lab.lab.backups("nfs-backup", 200).is_empty(),
        "the staged archive is removed after the restore"
    );
    assert_eq!(lab.guests_in_range(), Vec::<u32>::new());
}

#[tokio::test]
async fn deleting_the_restore_test_while_a_staged_archive_restores_removes_copy_and_archive() {
    let (mut lab, _) = chunk_store_lab().await;
    lab.apply(&format!("  source: {{serviceRef: {{name: nextcloud}}}}\n{QUICK}"));
    let staged = until_restoring_staged(&mut lab).await;
    // Deleted while PVE still reads the archive: the finalizer waits for the task, removes the
    // copy, then the archive, and only then lets the RestoreTest go.
    for _ in 0..500 {
        let now = lab.lab.now;
        if lab.lab.world.delete::<RestoreTestKind>(NAME, now).await.unwrap() {
            assert_eq!(lab.guests_in_range(), Vec::<u32>::new());
            assert!(!std::path::Path::new(&staged).exists(), "{staged} is left behind");
            lab.lab.settle().await;
            assert!(lab.lab.backups("nfs-backup", 200).is_empty());
            return;
        }
        lab.lab.tick(Duration::from_millis(200)).await;
    }
    panic!("the RestoreTest was not released: {:?}", lab.guests_in_range());
}

#[tokio::test]
async fn selection_by_volid_restores_exactly_that_backup_and_an_unknown_volid_is_no_backup() {
    let mut lab = RestoreLab::start().await;
    lab.lab.tick(Duration::from_secs(3600)).await;
    lab.lab.run_now().await;
    let files = lab.lab.backups("nfs-backup", 200);
    assert_eq!(files.len(), 2, "{files:?}");
    let older = files[0].0.clone();

    lab.apply(&format!(
        "  source: {{serviceRef: {{name: nextcloud}}}}\n  selection: {{policy: Volid, volid: '{older}'}}\n{QUICK}"
    ));
    let status = until_run(&mut lab, "g1").await;
    let r = last_restore(&status);
    assert_eq!(r.result, Some(RestoreResult::Passed), "{r:#?}");
    assert_eq!(r.backup_volid.as_deref(), Some(older.as_str()), "not the latest");

    let missing = "nfs-backup:backup/vzdump-qemu-200-2001_01_01-00_00_00.vma.zst";
    lab.apply(&format!(
        "  source: {{serviceRef: {{name: nextcloud}}}}\n  selection: {{policy: Volid, volid: '{missing}'}}\n{QUICK}"
    ));
    let status = until_run(&mut lab, "g1").await;
    let r = last_restore(&status);
    assert_eq!(r.result, Some(RestoreResult::Failed));
    assert_eq!(r.reason, "NoBackup", "{r:#?}");
    assert!(r.message.contains(missing), "{r:#?}");
    assert_eq!(lab.restore_tasks(), 1);
}

#[tokio::test]
async fn only_backups_younger_than_max_age_are_restored() {
    let mut lab = RestoreLab::start().await;
    lab.lab.tick(Duration::from_secs(7200)).await;
    lab.apply(&format!(
        "  source: {{serviceRef: {{name: gitea}}}}\n  selection: {{maxAgeSeconds: 3600}}\n{QUICK}"
    ));
    let status = until_run(&mut lab, "g1").await;
    let r = last_restore(&status);
    assert_eq!(r.result, Some(RestoreResult::Failed));
    assert_eq!(r.reason, "NoRecentBackup", "{r:#?}");
    assert_eq!(lab.restore_tasks(), 0);

    // A fresh backup is young enough.
    lab.lab.run_now().await;
    lab.request().await;
    let status = lab.until_idle().await;
    let r = last_restore(&status);
    assert_eq!(r.result, Some(RestoreResult::Passed), "{r:#?}");
}

#[tokio::test]
async fn source_services_picks_one_per_run_and_every_service_gets_its_turn() {
    let mut lab = RestoreLab::start().await;
    lab.apply(&format!(
        "  source: {{services: {{matchLabels: {{backup: nightly}}}}, count: 1}}\n{QUICK}"
    ));
    let mut picked = Vec::new();
    let status = until_run(&mut lab, "g1").await;
    for round in 0..5 {
        let status = if round == 0 {
            status.clone()
        } else {
            lab.lab.tick(Duration::from_secs(60)).await;
            lab.request().await;
            lab.until_idle().await
        };
        let last = status.last_run.as_ref().unwrap();
        let r = last_restore(&status);
        assert!(
            ["nextcloud", "gitea"].contains(&last.service.as_str()),
            "{last:#?}"
        );
        assert_eq!(r.service, last.service);
        assert_eq!(r.result, Some(RestoreResult::Passed), "{r:#?}");
        picked.push(last.service.clone());
        if picked.iter().any(|p| p == "nextcloud") && picked.iter().any(|p| p == "gitea") {
            break;
        }
    }
    assert!(
        picked.iter().any(|p| p == "nextcloud") && picked.iter().any(|p| p == "gitea"),
        "both Services are picked over the runs: {picked:?}"
    );
    // The Service never tested comes next: the second run picks the other one.
    assert_ne!(picked[0], picked[1], "{picked:?}");
    let status = lab.status();
    assert_eq!(status.history.len(), picked.len());
    assert_eq!(lab.restore_tasks(), picked.len());
}

#[tokio::test]
async fn a_vmid_source_whose_guest_is_gone_needs_a_target_node() {
    let mut lab = RestoreLab::start().await;
    lab.lab.sim.state_mut(|c| {
        c.guests.remove(&200);
    });
    // Drop what the operator cached about the cluster.
    lab.restart();
    let source = "  source: {vmid: 200, type: VM, storage: nfs-backup}\n";
    apply_test(
        &mut lab,
        NAME,
        "{storage: local-lvm, vmidRange: {start: 9900, end: 9909}}",
        &format!("{source}{QUICK}"),
    );
    let status = until_run(&mut lab, "g1").await;
    let r = last_restore(&status);
    assert_eq!(r.result, Some(RestoreResult::Failed));
    assert_eq!(r.reason, "NoTargetNode", "{r:#?}");
    assert!(r.message.contains("target.node"), "{r:#?}");
    assert_eq!(lab.restore_tasks(), 0);

    // With target.node (pve3 in the lab's default target), the backup of the gone guest restores.
    lab.apply(&format!("{source}{QUICK}"));
    let status = until_run(&mut lab, "g1").await;
    let last = status.last_run.as_ref().unwrap();
    assert_eq!(last.service, "");
    let r = last_restore(&status);
    assert_eq!(r.result, Some(RestoreResult::Passed), "{r:#?}");
    assert_eq!(r.node, "pve3");
    assert_eq!(r.source_vmid, 200);
    assert!(
        r.backup_volid
            .as_deref()
            .is_some_and(|v| v.starts_with("nfs-backup:backup/vzdump-qemu-200-")),
        "{r:#?}"
    );
    assert_eq!(lab.guests_in_range(), Vec::<u32>::new());
}

#[tokio::test]
async fn a_schedule_runs_at_its_slot_and_suspend_stops_it_but_not_run_now() {
    let mut lab = RestoreLab::start().await;
    let now = lab.lab.now;
    let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
    let mut slot = today
        .at(6, 0, 0, 0)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .unwrap()
        .timestamp();
    if slot <= now {
        slot = slot.checked_add(jiff::SignedDuration::from_hours(24)).unwrap();
    }
    let spec = format!(
        "  schedule: '0 6 * * *'\n  timeZone: UTC\n  source: {{serviceRef: {{name: gitea}}}}\n{QUICK}"
    );
    lab.apply(&spec);
    lab.pass().await;
    let status = lab.status();
    assert!(status.current_run.is_none(), "nothing before the slot");
    assert_eq!(status.next_run_time, Some(slot));
    assert_eq!(
        find_condition(&status.conditions, "Ready").unwrap().reason,
        "Scheduled"
    );

    let until_slot = Duration::try_from(slot.duration_since(now)).unwrap();
    if until_slot > Duration::from_secs(60) {
        lab.lab.tick(until_slot - Duration::from_secs(60)).await;
        lab.pass().await;
        assert!(lab.status().current_run.is_none(), "a minute before the slot");
        lab.lab.tick(Duration::from_secs(90)).await;
    } else {
        lab.lab.tick(until_slot + Duration::from_secs(30)).await;
    }
    lab.pass().await;
    let status = lab.status();
    let run = status.current_run.as_ref().expect("the slot's run starts");
    let id = slot.strftime("%Y%m%d-%H%M%S").to_string();
    assert!(id.ends_with("-060000"), "{id}");
    assert_eq!(run.run_id, id);
    let next = slot.checked_add(jiff::SignedDuration::from_hours(24)).unwrap();
    assert_eq!(status.next_run_time, Some(next), "the next day's slot");
    let status = lab.until_idle().await;
    assert_eq!(
        status.last_run.as_ref().unwrap().result,
        Some(RestoreResult::Passed)
    );
    assert_eq!(status.next_run_time, Some(next));

    // Suspended: the next slot passes without a run; the run-now annotation still runs.
    // `kubectl apply` of the changed spec: a new generation, the status kept.
    lab.lab
        .world
        .edit::<RestoreTest>(|t| {
            t.spec.suspend = true;
            t.metadata.generation = Some(2);
        })
        .unwrap();
    lab.pass().await;
    assert!(
        lab.status().current_run.is_none(),
        "a schedule runs no generation run"
    );
    let until_next = Duration::try_from(next.duration_since(lab.lab.now)).unwrap();
    lab.lab.tick(until_next + Duration::from_secs(30)).await;
    lab.pass().await;
    let status = lab.status();
    assert!(status.current_run.is_none(), "suspended: {status:#?}");
    assert_eq!(status.next_run_time, None);
    assert_eq!(
        find_condition(&status.conditions, "Ready").unwrap().reason,
        "Suspended"
    );
    assert_eq!(lab.restore_tasks(), 1);
    lab.request().await;
    let run_id = lab.status().current_run.unwrap().run_id;
    assert!(run_id.starts_with("now-"), "{run_id}");
    let status = lab.until_idle().await;
    assert_eq!(
        status.last_run.as_ref().unwrap().result,
        Some(RestoreResult::Passed)
    );
    assert_eq!(status.history.len(), 2);
    assert_eq!(lab.restore_tasks(), 2);
}

/// Whether a restore holds its node (chosen, and not past its checks).
fn holds_node(status: &RestoreTestStatus) -> Option<(String, u32)> {
    let r = status.current_run.as_ref()?.restores.first()?;
    let busy = r.restored_vmid != 0
        && matches!(
            r.phase,
            RestorePhase::Pending | RestorePhase::Restoring | RestorePhase::Booting | RestorePhase::Checking
        );
    busy.then(|| (r.node.clone(), u32::try_from(r.restored_vmid).unwrap()))
}

#[tokio::test]
async fn two_restore_tests_on_one_node_take_turns_and_get_different_vmids() {
    let mut lab = RestoreLab::start().await;
    let spec = "  network: {mode: None}\n  cleanup: {afterSeconds: 120}\n";
    apply_test(
        &mut lab,
        "drill-a",
        "{node: pve3, storage: local-lvm, vmidRange: {start: 9900, end: 9909}}",
        &format!("  source: {{serviceRef: {{name: gitea}}}}\n{spec}"),
    );
    apply_test(
        &mut lab,
        "drill-b",
        "{node: pve3, storage: local-lvm, vmidRange: {start: 9900, end: 9904}}",
        &format!("  source: {{serviceRef: {{name: nextcloud}}}}\n{spec}"),
    );
    let mut waited = false;
    let mut holders: Vec<String> = Vec::new();
    for _ in 0..3000 {
        let now = lab.lab.now;
        lab.lab.world.reconcile::<RestoreTestKind>(now).await.unwrap();
        let a = status_of(&lab, "drill-a");
        let b = status_of(&lab, "drill-b");
        let held: Vec<_> = [("drill-a", &a), ("drill-b", &b)]
            .into_iter()
            .filter_map(|(n, s)| holds_node(s).map(|h| (n, h)))
            .collect();
        assert!(held.len() <= 1, "two restores on pve3 at once: {held:?}");
        if let Some((n, _)) = held.first()
            && holders.last().map(String::as_str) != Some(n)
        {
            holders.push((*n).to_owned());
        }
        for s in [&a, &b] {
            if let Some(r) = s.current_run.as_ref().and_then(|r| r.restores.first())
                && r.message.contains("another RestoreTest")
            {
                waited = true;
            }
        }
        if a.last_run.is_some() && b.last_run.is_some() && a.current_run.is_none() && b.current_run.is_none()
        {
            break;
        }
        lab.lab.tick(Duration::from_secs(1)).await;
    }
    let (a, b) = (status_of(&lab, "drill-a"), status_of(&lab, "drill-b"));
    assert!(
        a.current_run.is_none() && b.current_run.is_none(),
        "both runs end: {a:#?} {b:#?}"
    );
    assert!(waited, "one waited for the other");
    assert_eq!(holders.len(), 2, "one after the other: {holders:?}");
    let (ra, rb) = (last_restore(&a), last_restore(&b));
    assert_eq!(ra.result, Some(RestoreResult::Passed), "{ra:#?}");
    assert_eq!(rb.result, Some(RestoreResult::Passed), "{rb:#?}");
    assert_eq!((ra.node.as_str(), rb.node.as_str()), ("pve3", "pve3"));
    assert_ne!(ra.restored_vmid, rb.restored_vmid, "{ra:#?} {rb:#?}");
    assert!(ra.cleaned_up && rb.cleaned_up);
    assert_eq!(lab.guests_in_range(), Vec::<u32>::new());
}

#[tokio::test]
async fn count_two_restores_both_services_one_after_the_other_on_the_node() {
    let mut lab = RestoreLab::start().await;
    lab.apply(&format!(
        "  source: {{services: {{matchLabels: {{backup: nightly}}}}, count: 2}}\n{QUICK}"
    ));
    let status = lab
        .until("the run's end", |s| {
            if let Some(run) = &s.current_run {
                let busy = run
                    .restores
                    .iter()
                    .filter(|r| {
                        r.restored_vmid != 0
                            && matches!(
                                r.phase,
                                RestorePhase::Pending
                                    | RestorePhase::Restoring
                                    | RestorePhase::Booting
                                    | RestorePhase::Checking
                            )
                    })
                    .count();
                assert!(busy <= 1, "two restores of one run on pve3 at once: {run:#?}");
            }
            s.last_run.is_some() && s.current_run.is_none()
        })
        .await;
    let last = status.last_run.as_ref().unwrap();
    assert_eq!(last.service, "gitea, nextcloud");
    assert_eq!(last.restores.len(), 2);
    assert_eq!(last.result, Some(RestoreResult::Passed), "{last:#?}");
    assert!(last.restores.iter().all(|r| r.cleaned_up && r.node == "pve3"));
    assert_eq!(lab.restore_tasks(), 2);
    assert_eq!(lab.guests_in_range(), Vec::<u32>::new());
}

#[tokio::test]
async fn source_services_matching_nothing_starts_no_run_and_says_why() {
    let mut lab = RestoreLab::start().await;
    lab.apply(&format!(
        "  source: {{services: {{matchLabels: {{backup: weekly}}}}, count: 1}}\n{QUICK}"
    ));
    lab.pass().await;
    let status = lab.status();
    assert!(
        status.current_run.is_none() && status.last_run.is_none(),
        "{status:#?}"
    );
    let ready = find_condition(&status.conditions, "Ready").unwrap();
    assert_eq!(ready.reason, "NoServicesSelected", "{ready:?}");
    assert!(lab.events().iter().any(|e| e == "NoServicesSelected"));
    assert_eq!(lab.restore_tasks(), 0);
}

#[tokio::test]
async fn live_restore_of_a_chunk_store_backup_is_refused_before_anything_is_staged() {
    let mut lab = RestoreLab::with_policy(false, "  destination: {storage: {storage: nfs-backup}}\n").await;
    lab.lab.apply_chunk_store_policy("nextcloud");
    lab.lab.run_now().await;
    lab.lab.settle().await;
    lab.apply(&format!(
        "  source: {{serviceRef: {{name: nextcloud}}}}\n  liveRestore: true\n{QUICK}"
    ));
    let status = until_run(&mut lab, "g1").await;
    let r = last_restore(&status);
    assert_eq!(r.reason, "LiveRestoreNeedsPbs", "{r:#?}");
    assert!(
        r.backup_volid
            .as_deref()
            .is_some_and(|v| v.starts_with("chunkstore/"))
    );
    assert_eq!(lab.restore_tasks(), 0);
    assert!(lab.lab.backups("nfs-backup", 200).is_empty(), "nothing staged");
    assert_eq!(lab.guests_in_range(), Vec::<u32>::new());
}

#[tokio::test]
async fn a_restore_test_that_finds_no_backup_does_not_hold_its_node() {
    let mut lab = RestoreLab::start().await;
    lab.lab.tick(Duration::from_secs(7200)).await;
    // drill-a claims pve3, then finds every backup too old; drill-b comes one pass later.
    apply_test(
        &mut lab,
        "drill-a",
        "{node: pve3, storage: local-lvm, vmidRange: {start: 9900, end: 9909}}",
        &format!("  source: {{serviceRef: {{name: gitea}}}}\n  selection: {{maxAgeSeconds: 3600}}\n{QUICK}"),
    );
    let now = lab.lab.now;
    lab.lab.world.reconcile::<RestoreTestKind>(now).await.unwrap();
    apply_test(
        &mut lab,
        "drill-b",
        "{node: pve3, storage: local-lvm, vmidRange: {start: 9910, end: 9919}}",
        &format!("  source: {{serviceRef: {{name: gitea}}}}\n{QUICK}"),
    );
    for _ in 0..600 {
        let now = lab.lab.now;
        lab.lab.world.reconcile::<RestoreTestKind>(now).await.unwrap();
        let (a, b) = (status_of(&lab, "drill-a"), status_of(&lab, "drill-b"));
        if a.current_run.is_none() && b.current_run.is_none() && b.last_run.is_some() {
            let ra = last_restore(&a);
            assert_eq!(ra.reason, "NoRecentBackup", "{ra:#?}");
            let rb = last_restore(&b);
            assert_eq!(rb.result, Some(RestoreResult::Passed), "{rb:#?}");
            assert_eq!(rb.node, "pve3");
            return;
        }
        lab.lab.tick(Duration::from_secs(1)).await;
    }
    let b = status_of(&lab, "drill-b");
    panic!("drill-b never got pve3: {b:#?}");
}

#[tokio::test]
async fn after_a_restart_a_restore_in_progress_keeps_its_node_from_another_restore_test() {
    let mut lab = RestoreLab::start().await;
    let spec = "  network: {mode: None}\n  cleanup: {afterSeconds: 0}\n";
    apply_test(
        &mut lab,
        "zz-first",
        "{node: pve3, storage: local-lvm, vmidRange: {start: 9900, end: 9909}}",
        &format!("  source: {{serviceRef: {{name: nextcloud}}}}\n{spec}"),
    );
    for _ in 0..600 {
        let now = lab.lab.now;
        lab.lab.world.reconcile::<RestoreTestKind>(now).await.unwrap();
        let first = status_of(&lab, "zz-first");
        if first
            .current_run
            .as_ref()
            .is_some_and(|r| r.restores[0].phase == RestorePhase::Restoring && r.restores[0].upid.is_some())
        {
            break;
        }
        lab.lab.tick(Duration::from_millis(200)).await;
    }
    // The operator restarts (the node claims were in memory) and a second RestoreTest, passed
    // before the first (names in order), wants the same node.
    lab.restart();
    apply_test(
        &mut lab,
        "aa-second",
        "{node: pve3, storage: local-lvm, vmidRange: {start: 9910, end: 9919}}",
        &format!("  source: {{serviceRef: {{name: gitea}}}}\n{spec}"),
    );
    let mut waited = false;
    for _ in 0..3000 {
        let now = lab.lab.now;
        lab.lab.world.reconcile::<RestoreTestKind>(now).await.unwrap();
        let (a, b) = (status_of(&lab, "zz-first"), status_of(&lab, "aa-second"));
        let restoring = |s: &RestoreTestStatus| {
            s.current_run
                .as_ref()
                .is_some_and(|r| r.restores.iter().any(|d| d.phase == RestorePhase::Restoring))
        };
        assert!(
            !(restoring(&a) && restoring(&b)),
            "two restores on pve3: {a:#?} {b:#?}"
        );
        if let Some(r) = b.current_run.as_ref().and_then(|r| r.restores.first())
            && r.message
                .starts_with("waiting: a restore is running on node pve3")
        {
            waited = true;
        }
        if a.current_run.is_none() && b.current_run.is_none() && b.last_run.is_some() {
            assert!(waited, "the second waited for the first");
            assert_eq!(last_restore(&a).result, Some(RestoreResult::Passed));
            assert_eq!(last_restore(&b).result, Some(RestoreResult::Passed));
            assert_eq!(lab.guests_in_range(), Vec::<u32>::new());
            return;
        }
        lab.lab.tick(Duration::from_millis(200)).await;
    }
    panic!("the runs did not end");
}
