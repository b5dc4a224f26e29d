use super::*;
use crate::crd::common::{GuestTarget, GuestType};

const GUESTS: &str = "
clusterRef: {name: homelab}
schedule: '0 3 * * SUN'
timeZone: Europe/Berlin
window: {days: [Sunday], startTime: '03:00', endTime: '05:00'}
guests:
  services: {matchLabels: {updates: weekly}}
  lxcExecutor: Ssh
  ssh: {secretRef: {name: pve-ssh}}
";

const NODES: &str = "
clusterRef: {name: homelab}
schedule: '0 4 1 * *'
nodes:
  order: [pve3, pve2, pve1]
  executor: External
";

fn spec(yaml: &str) -> UpdatePolicySpec {
    serde_yaml::from_str(yaml).unwrap()
}

#[test]
fn update_policy_guest_defaults_and_round_trip() {
    let s = spec(GUESTS);
    let g = s.guests.as_ref().unwrap();
    assert_eq!(g.command_timeout_seconds, 1800);
    assert_eq!(g.reboot, GuestReboot::IfRequired);
    assert!(g.pause_on_failure);
    assert_eq!(g.effective_command()[0], "sh");
    assert!(g.effective_command()[2].starts_with("apt-get update"));
    assert!(s.validate().is_ok(), "{:?}", s.validate());
    let up = UpdatePolicy::new("weekly", s);
    let back: UpdatePolicy = serde_json::from_value(serde_json::to_value(&up).unwrap()).unwrap();
    assert_eq!(back, up);
}

#[test]
fn update_policy_node_defaults() {
    let s = spec(NODES);
    let n = s.nodes.as_ref().unwrap();
    assert_eq!(n.reboot, NodeReboot::IfKernelChanged);
    assert_eq!(n.rejoin_timeout_seconds, 1800);
    assert!(n.ceph_set_noout);
    assert!(s.validate().is_ok());
}

#[test]
fn update_policy_validate_requires_one_scope_and_executor_secrets() {
    let mut both = spec(GUESTS);
    both.nodes = spec(NODES).nodes;
    assert_eq!(both.validate().unwrap_err().errors()[0].path, "spec");

    let mut s = spec(NODES);
    s.concurrency = 2;
    if let Some(n) = s.nodes.as_mut() {
        n.executor = NodeExecutor::RootTerminal;
        n.order.push("pve3".into());
    }
    let err = s.validate().unwrap_err();
    let paths: Vec<_> = err.errors().iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.nodes.rootCredentialsSecretRef",
            "spec.nodes.order[3]",
            "spec.concurrency"
        ]
    );

    let mut g = spec(GUESTS);
    if let Some(guests) = g.guests.as_mut() {
        guests.ssh = None;
        guests.command = vec!["true".into()];
        guests.package_manager = Some(PackageManager::Dnf);
    }
    let err = g.validate().unwrap_err();
    let paths: Vec<_> = err.errors().iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["spec.guests.packageManager", "spec.guests.ssh"]);
}

#[test]
fn update_policy_status_round_trips() {
    let t = jiff::Timestamp::from_second(1_717_297_200).unwrap();
    let status = UpdatePolicyStatus {
        scope: Some(UpdateScope::Guests),
        current_run: Some(UpdateRunProgress {
            id: "20240602-030000".into(),
            start_time: t,
            current_node: None,
        }),
        guests: vec![GuestUpdateStatus {
            guest: GuestTarget::new("nextcloud", 200, GuestType::Vm, Some("pve1".into())),
            step: GuestUpdateStep::Updating,
            snapshot_name: Some("ap-upd-20240602-030000".into()),
            upid: None,
            exec_pid: Some(4242),
            exit_code: None,
            out_truncated: false,
            err_truncated: false,
            output_tail: String::new(),
            reason: String::new(),
            message: String::new(),
        }],
        nodes: vec![NodeUpdateStatus {
            node: "pve2".into(),
            step: NodeUpdateStep::Draining,
            pve_version_before: Some("9.1.1".into()),
            pve_version_after: None,
            kernel_before: None,
            kernel_after: None,
            rebooted: false,
            moved_guests: vec![MovedGuest {
                vmid: 201,
                type_: GuestType::Lxc,
                from: "pve2".into(),
                to: "pve1".into(),
            }],
            stopped_guests: vec![300],
            upid: None,
            reason: String::new(),
            message: String::new(),
        }],
        rollbacks_total: 1,
        ..Default::default()
    };
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["guests"][0]["snapshotName"], "ap-upd-20240602-030000");
    // The flattened GuestTarget keeps the item's four plain fields.
    assert_eq!(
        (
            &json["guests"][0]["service"],
            &json["guests"][0]["vmid"],
            &json["guests"][0]["type"],
            &json["guests"][0]["node"]
        ),
        (
            &serde_json::json!("nextcloud"),
            &serde_json::json!(200),
            &serde_json::json!("VM"),
            &serde_json::json!("pve1")
        )
    );
    assert_eq!(json["nodes"][0]["movedGuests"][0]["type"], "LXC");
    assert_eq!(
        serde_json::from_value::<UpdatePolicyStatus>(json).unwrap(),
        status
    );
}
