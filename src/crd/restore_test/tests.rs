use super::*;
use jiff::Timestamp;

const MONTHLY: &str = "
clusterRef: {name: homelab}
source: {serviceRef: {name: nextcloud}}
schedule: '0 6 1 * *'
target: {node: pve3, vmidRange: {start: 9900, end: 9999}}
network: {mode: Bridge, bridge: vmbr99}
rto: {targetSeconds: 900}
";

fn spec(yaml: &str) -> RestoreTestSpec {
    serde_yaml::from_str(yaml).unwrap()
}

#[test]
fn restore_test_defaults_and_round_trip() {
    let s = spec(MONTHLY);
    assert_eq!(s.boot_timeout_seconds, 600);
    assert_eq!(s.history_limit, 5);
    assert!(s.network.require_no_uplink);
    assert!(!s.live_restore);
    assert!(s.validate().is_ok(), "{:?}", s.validate());
    let rt = RestoreTest::new("nextcloud-monthly", s);
    let back: RestoreTest = serde_json::from_value(serde_json::to_value(&rt).unwrap()).unwrap();
    assert_eq!(back, rt);
}

#[test]
fn restore_test_validate_reports_source_and_network_mistakes() {
    let mut s = spec(MONTHLY);
    s.source.vmid = Some(200);
    s.network = IsolationNetwork {
        mode: IsolationMode::None,
        bridge: Some("vmbr99".into()),
        vlan_tag: Some(99),
        require_no_uplink: true,
        probe_cidr: None,
    };
    s.selection = Some(BackupSelection {
        policy: SelectionPolicy::Volid,
        volid: None,
        max_age_seconds: None,
        require_verified: true,
    });
    let err = s.validate().unwrap_err();
    let paths: Vec<_> = err.errors().iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.source",
            "spec.source.type",
            "spec.source.storage",
            "spec.selection.volid",
            "spec.network.bridge",
            "spec.network.vlanTag",
            "spec.network.vlanTag"
        ]
    );
}

#[test]
fn restore_test_random_pick_needs_count() {
    let mut s = spec(MONTHLY);
    s.source.service_ref = None;
    s.source.services = Some(crate::crd::common::ServiceSelector {
        names: vec!["a".into(), "b".into()],
        ..Default::default()
    });
    assert_eq!(s.validate().unwrap_err().errors()[0].path, "spec.source.count");
    s.source.count = Some(1);
    assert!(s.validate().is_ok());
}

#[test]
fn restore_test_status_round_trips() {
    let t = Timestamp::from_second(1_717_221_600).unwrap();
    let run = RestoreRun {
        run_id: "20240601-060000".into(),
        start_time: t,
        completion_time: Some(t),
        service: "nextcloud".into(),
        result: Some(RestoreResult::RtoExceeded),
        rto_seconds: Some(1200),
        rto_target_seconds: Some(900),
        restores: vec![RestoreResultDetail {
            service: "nextcloud".into(),
            source_vmid: 200,
            type_: GuestType::Vm,
            backup_volid: Some("pbs-homelab:backup/vm/200/2024-06-01T02:30:00Z".into()),
            backup_time: Some(t),
            restored_vmid: 9900,
            node: "pve3".into(),
            phase: RestorePhase::Done,
            upid: None,
            restore_start_time: Some(t),
            restored_time: None,
            booted_time: None,
            guest_ready_time: Some(t),
            healthy_time: None,
            finished_time: None,
            rto_seconds: Some(1200),
            restore_seconds: Some(900),
            boot_seconds: Some(240),
            application_seconds: Some(60),
            result: Some(RestoreResult::RtoExceeded),
            reason: "TargetExceeded".into(),
            message: String::new(),
            checks: vec![CheckOutcome {
                name: "web".into(),
                passed: true,
                message: String::new(),
            }],
            cleaned_up: true,
            staged_archive: None,
            request_time: None,
        }],
    };
    let status = RestoreTestStatus {
        last_run: Some(run),
        ..Default::default()
    };
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["lastRun"]["result"], "RTOExceeded");
    assert_eq!(json["lastRun"]["rtoSeconds"], 1200);
    assert_eq!(json["lastRun"]["rtoTargetSeconds"], 900);
    assert_eq!(json["lastRun"]["restores"][0]["applicationSeconds"], 60);
    assert!(json["lastRun"]["restores"][0]["guestReadyTime"].is_string());
    assert_eq!(serde_json::from_value::<RestoreTestStatus>(json).unwrap(), status);
}

#[test]
fn restore_test_probes_need_probe_cidr_and_must_stay_inside_it() {
    let mut s = spec(&format!(
        "{MONTHLY}healthChecks:\n- {{name: web, type: HTTP, http: {{url: 'http://192.168.1.20:8080/status'}}}}\n- {{name: ssh, type: TCP, tcp: {{host: 10.99.1.20, port: 22}}}}\n- {{name: db, type: TCP, tcp: {{host: db.lab, port: 5432}}}}\n"
    ));
    let paths = |s: &RestoreTestSpec| -> Vec<String> {
        s.validate()
            .err()
            .map(|e| e.errors().iter().map(|e| e.path.clone()).collect())
            .unwrap_or_default()
    };
    assert_eq!(
        paths(&s),
        [
            "spec.healthChecks[0]",
            "spec.healthChecks[1]",
            "spec.healthChecks[2]"
        ]
    );
    s.network.probe_cidr = Some("10.99.0.0/16".into());
    assert_eq!(
        paths(&s),
        ["spec.healthChecks[0]"],
        "only the production address is refused"
    );
    s.health_checks.remove(0);
    assert!(paths(&s).is_empty());
    s.network.vlan_tag = Some(30);
    assert_eq!(paths(&s), ["spec.network.vlanTag"]);
    s.network.require_no_uplink = false;
    assert!(paths(&s).is_empty());
    s.bandwidth_limit_ki_bps = Some(51200);
    let back: RestoreTestSpec = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
    assert_eq!(back, s);
    assert_eq!(serde_json::to_value(&s).unwrap()["bandwidthLimitKiBps"], 51200);
}
