use super::*;

const DB: &str = "
clusterRef: {name: homelab}
source: {vmid: 9000, type: VM, node: pve1}
targets: [{node: pve2}, {node: pve3, count: 2}]
clone: {storage: local-lvm}
vmidRange: {start: 3000, end: 3099}
";

fn spec(yaml: &str) -> ReplicationJobSpec {
    serde_yaml::from_str(yaml).unwrap()
}

#[test]
fn replication_job_defaults_and_round_trip() {
    let s = spec(DB);
    let clone = s.clone.as_ref().unwrap();
    assert!(clone.full);
    assert_eq!(clone.cross_node, CrossNodeStrategy::Auto);
    assert_eq!(s.ip_reuse_grace_seconds, 600);
    assert!(!s.start_after_create);
    assert_eq!(s.deletion_policy, crate::crd::common::DeletionPolicy::Retain);
    assert_eq!(s.desired_replicas(), 3);
    assert!(s.validate().is_ok(), "{:?}", s.validate());
    let rj = ReplicationJob::new("db", s);
    let back: ReplicationJob = serde_json::from_value(serde_json::to_value(&rj).unwrap()).unwrap();
    assert_eq!(back, rj);
}

#[test]
fn replication_job_validate_reports_clone_range_and_pattern() {
    let mut s = spec(DB);
    s.source.type_ = GuestType::Lxc;
    s.clone = Some(CloneOptions {
        full: false,
        storage: Some("local-lvm".into()),
        format: Some(DiskFormat::Qcow2),
        pool: None,
        cross_node: CrossNodeStrategy::Direct,
    });
    s.vmid_range = Some(VmidRange {
        start: 3000,
        end: 3001,
    });
    s.naming_pattern = Some("db-{node}".into());
    s.targets.push(ReplicationTarget {
        node: "pve2".into(),
        count: None,
    });
    let err = s.validate().unwrap_err();
    let paths: Vec<_> = err.errors().iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.targets[2].node",
            "spec.namingPattern",
            "spec.clone.full",
            "spec.clone.format",
            "spec.vmidRange"
        ]
    );
    assert!(
        err.to_string()
            .contains("holds 2 VMIDs but the targets want 4 replicas")
    );
}

#[test]
fn replication_job_status_round_trips() {
    let status = ReplicationJobStatus {
        desired_replicas: 3,
        ready_replicas: 1,
        strategy: Some("CloneThenMigrate".into()),
        replicas: vec![Replica {
            name: "pve-pve2-vm-01".into(),
            node: "pve2".into(),
            vmid: 3000,
            mac: Some("02:00:00:a2:65:01".into()),
            ipv4: Some("192.168.2.100".into()),
            phase: ReplicaPhase::Ready,
            upid: None,
            origin: ReplicaOrigin {
                node: "pve1".into(),
                vmid: 9000,
                snapname: None,
                strategy: "CloneThenMigrate".into(),
            },
            message: String::new(),
        }],
        released_addresses: vec![ReleasedAddress {
            ipv4: "192.168.3.101".into(),
            node: "pve3".into(),
            released_time: jiff::Timestamp::from_second(1_717_000_000).unwrap(),
        }],
        ..Default::default()
    };
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["replicas"][0]["origin"]["vmid"], 9000);
    assert_eq!(
        serde_json::from_value::<ReplicationJobStatus>(json).unwrap(),
        status
    );
}
