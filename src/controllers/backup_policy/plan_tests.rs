use super::*;
use crate::crd::common::{GuestTarget, GuestType};

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_717_200_000 + secs).unwrap()
}

fn item(service: &str, node: Option<&str>, state: BackupItemState) -> BackupRunItem {
    let mut i = BackupRunItem::pending(GuestTarget::new(
        service,
        200,
        GuestType::Vm,
        node.map(str::to_owned),
    ));
    i.state = state;
    i
}

#[test]
fn notes_marker_round_trips_and_foreign_notes_are_never_ours() {
    let notes = notes_template("uid-1", "20240601-023000").replace("{{guestname}}", "nextcloud");
    assert_eq!(owner_of(&notes), Some(("uid-1", "20240601-023000")));
    assert!(owned_by(Some(&notes), "uid-1"));
    assert!(!owned_by(Some(&notes), "uid-2"));
    assert!(!owned_by(Some("nightly backup of nextcloud"), "uid-1"));
    assert!(!owned_by(Some("autopilotx policy=uid-1 run=r"), "uid-1"));
    assert!(!owned_by(None, "uid-1"));
    assert!(!owned_by(Some(&notes), ""), "an empty UID proves nothing");
    // Only the first line counts: PVE lists only that one.
    assert!(!owned_by(Some("mine\nautopilot policy=uid-1 run=r"), "uid-1"));
}

#[test]
fn lock_backoff_doubles_from_5s_to_at_most_5min() {
    let secs: Vec<u64> = (1..=8).map(|n| lock_backoff(n).as_secs()).collect();
    assert_eq!(secs, [5, 10, 20, 40, 80, 160, 300, 300]);
    assert_eq!(lock_backoff(1000).as_secs(), 300);
}

#[test]
fn may_start_respects_concurrency_and_one_vzdump_per_node() {
    let items = vec![
        item("a", Some("pve1"), BackupItemState::Running),
        item("b", None, BackupItemState::Pending),
    ];
    assert!(!may_start(&items, 2, "pve1"), "never two per node");
    assert!(may_start(&items, 2, "pve2"));
    assert!(!may_start(&items, 1, "pve2"), "concurrency 1");
    let ingesting = vec![item("a", Some("pve1"), BackupItemState::Ingesting)];
    assert!(
        may_start(&ingesting, 2, "pve1"),
        "an ingest does not hold the node's vzdump"
    );
    assert!(!may_start(&ingesting, 1, "pve2"), "but it holds a slot");
}

#[test]
fn summary_and_services_report_partial_runs_and_keep_the_last_good_backup() {
    let mut ok = item("a", Some("pve1"), BackupItemState::Succeeded);
    ok.volid = Some("nfs:backup/a.vma.zst".into());
    ok.size_bytes = Some(100);
    ok.start_time = Some(at(0));
    ok.completion_time = Some(at(30));
    ok.verified = Some(true);
    let mut bad = item("b", Some("pve2"), BackupItemState::Failed);
    bad.reason = Some("GuestLocked".into());
    bad.message = "locked".into();
    let run = BackupRun {
        run_id: "r1".into(),
        scheduled_time: at(0),
        start_time: at(0),
        request: None,
        items: vec![ok, bad],
    };
    let s = summarize(&run, at(60));
    assert_eq!(s.result, BackupResult::PartiallySucceeded);
    assert_eq!(s.logical_bytes, Some(100));
    assert_eq!(s.duration_seconds, Some(60));
    assert!(
        s.message.contains("1/2") && s.message.contains("b (GuestLocked)"),
        "{}",
        s.message
    );

    let previous = vec![ServiceBackupStatus {
        name: "b".into(),
        vmid: 200,
        result: BackupResult::Succeeded,
        last_attempt_time: Some(at(-86400)),
        last_success_time: Some(at(-86400)),
        volid: Some("nfs:backup/b-old".into()),
        size_bytes: Some(7),
        verified: Some(true),
        duration_seconds: Some(3),
        stored_bytes: None,
        message: String::new(),
    }];
    let selected: BTreeSet<String> = ["a".to_owned(), "b".to_owned()].into();
    let services = merge_services(&previous, &run, &selected, at(60));
    assert_eq!(services[0].volid.as_deref(), Some("nfs:backup/a.vma.zst"));
    assert_eq!(services[0].duration_seconds, Some(30));
    assert_eq!(services[1].result, BackupResult::Failed);
    assert_eq!(
        services[1].volid.as_deref(),
        Some("nfs:backup/b-old"),
        "a failure keeps the last good backup"
    );
    let mut gone = previous.clone();
    gone[0].name = "removed-from-selector".into();
    let names: Vec<String> = merge_services(&gone, &run, &selected, at(60))
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["a", "b"], "a Service no longer selected leaves the list");
    assert_eq!(run_result(&[]), BackupResult::Failed);
}

fn backup(volid: &str, day: i64, protected: bool, verified: bool) -> OwnedBackup {
    OwnedBackup {
        volid: volid.into(),
        time: 1_717_200_000 + day * 86_400,
        protected,
        verified,
    }
}

#[test]
fn retention_keeps_rules_protected_and_the_newest_verified_backup() {
    let keep = KeepOptions {
        last: Some(1),
        ..KeepOptions::default()
    };
    let backups = vec![
        backup("d0", 0, false, false),
        backup("d1", 1, true, false),
        backup("d2", 2, false, true),
        backup("d3", 3, false, false),
    ];
    // keep-last=1 keeps d3; d2 is the newest verified; d1 is protected.
    assert_eq!(prune_plan(&backups, &keep, at(10 * 86_400)), ["d0"]);
    assert!(
        prune_plan(&backups, &KeepOptions::default(), at(10 * 86_400)).is_empty(),
        "no rule: nothing is pruned"
    );
    let daily = keep_options(&Retention {
        keep_daily: Some(2),
        ..Retention::default()
    });
    assert_eq!(daily.daily, Some(2));
    assert_eq!(prune_plan(&backups, &daily, at(10 * 86_400)), ["d0"]);
    // Seen from a day before d3 was taken (a node clock a day ahead): d3 is in the future and
    // does not count, so d2 stays as the newest real backup.
    assert_eq!(prune_plan(&backups, &keep, at(2 * 86_400 + 60)), ["d0"]);
}

#[test]
fn human_bytes_reads_like_kubectl_columns() {
    assert_eq!(human_bytes(512), "512 B");
    assert_eq!(human_bytes(13_314_398_618), "12.4 GiB");
}

#[test]
fn status_of_30_services_stays_well_under_100_kib() {
    use crate::crd::backup_policy::BackupPolicyStatus;
    let long = "x".repeat(300);
    let mut items = Vec::new();
    let mut services = Vec::new();
    for n in 0..30 {
        let name = format!("service-with-a-long-name-{n:02}");
        let mut i = item(&name, Some("pve-node-with-long-name"), BackupItemState::Failed);
        i.upid = Some(
            "UPID:pve-node-with-long-name:0001A2B3:0C4D5E6F:6650A1B2:vzdump:200:autopilot@pve!operator:"
                .into(),
        );
        i.volid = Some(format!("pbs-homelab:backup/vm/{n}/2026-06-01T02:30:00Z"));
        i.staged_volid = Some(format!(
            "nfs-staging:backup/vzdump-qemu-{n}-2026_06_01-02_30_00.vma"
        ));
        i.start_time = Some(at(0));
        i.completion_time = Some(at(60));
        i.size_bytes = Some(1 << 40);
        i.stored_bytes = Some(1 << 30);
        i.attempts = Some(40);
        i.next_attempt_time = Some(at(90));
        i.reason = Some("GuestLocked".into());
        i.message = long.clone();
        items.push(i);
        services.push(ServiceBackupStatus {
            name,
            vmid: 200 + n,
            result: BackupResult::Failed,
            last_attempt_time: Some(at(60)),
            last_success_time: Some(at(-86400)),
            volid: Some(format!("pbs-homelab:backup/vm/{n}/2026-05-31T02:30:00Z")),
            size_bytes: Some(1 << 40),
            verified: Some(true),
            duration_seconds: Some(3600),
            stored_bytes: Some(1 << 30),
            message: long.clone(),
        });
    }
    let run = BackupRun {
        run_id: "20260601-023000".into(),
        scheduled_time: at(0),
        start_time: at(0),
        request: Some("r".repeat(256)),
        items,
    };
    let status = BackupPolicyStatus {
        last_backup: Some(summarize(&run, at(60))),
        current_run: Some(run),
        services,
        ..BackupPolicyStatus::default()
    };
    let bytes = serde_json::to_vec(&status).unwrap().len();
    assert!(bytes < 100 * 1024, "{bytes} bytes");
}
