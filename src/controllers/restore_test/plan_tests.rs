use super::*;
use crate::crd::restore_test::{IsolationMode, IsolationNetwork, RestorePhase};

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_780_000_000 + secs).unwrap()
}

fn net(mode: IsolationMode, bridge: Option<&str>, tag: Option<i32>) -> IsolationNetwork {
    IsolationNetwork {
        mode,
        bridge: bridge.map(str::to_owned),
        vlan_tag: tag,
        require_no_uplink: tag.is_none(),
        probe_cidr: None,
    }
}

#[test]
fn every_vm_nic_moves_onto_the_isolation_bridge_keeping_model_and_mac() {
    let bridge = net(IsolationMode::Bridge, Some("vmbr99"), None);
    assert_eq!(
        isolate_nic(
            GuestType::Vm,
            "net0",
            "virtio=BC:24:11:00:00:01,bridge=vmbr0,tag=20,firewall=1,trunks=10;20",
            &bridge
        )
        .unwrap(),
        "virtio=BC:24:11:00:00:01,firewall=1,bridge=vmbr99"
    );
    assert_eq!(
        isolate_nic(
            GuestType::Vm,
            "net1",
            "model=e1000,macaddr=BC:24:11:00:00:02,bridge=vmbr1",
            &bridge
        )
        .unwrap(),
        "e1000=BC:24:11:00:00:02,bridge=vmbr99"
    );
    let tagged = net(IsolationMode::Bridge, Some("vmbr1"), Some(99));
    assert_eq!(
        isolate_nic(
            GuestType::Vm,
            "net0",
            "virtio=BC:24:11:00:00:01,bridge=vmbr0,tag=20",
            &tagged
        )
        .unwrap(),
        "virtio=BC:24:11:00:00:01,bridge=vmbr1,tag=99"
    );
    // None: the original bridge, with the link down.
    let none = net(IsolationMode::None, None, None);
    assert_eq!(
        isolate_nic(
            GuestType::Vm,
            "net0",
            "virtio=BC:24:11:00:00:01,bridge=vmbr0,tag=20",
            &none
        )
        .unwrap(),
        "virtio=BC:24:11:00:00:01,bridge=vmbr0,tag=20,link_down=1"
    );
    // A NIC without a bridge would be user-mode networking: refused with None.
    assert!(isolate_nic(GuestType::Vm, "net0", "virtio=BC:24:11:00:00:01", &none).is_err());
    // Unknown model: cannot be rewritten.
    let err = isolate_nic(
        GuestType::Vm,
        "net1",
        "bogus=AA:BB:CC:DD:EE:FF,bridge=vmbr0",
        &bridge,
    )
    .unwrap_err();
    assert!(err.contains("net1"), "{err}");
}

#[test]
fn restored_nics_are_recognised_as_isolated() {
    let bridge = net(IsolationMode::Bridge, Some("vmbr99"), None);
    assert!(nic_isolated("virtio=BC:24:11:00:00:01,bridge=vmbr99", &bridge));
    assert!(!nic_isolated("virtio=BC:24:11:00:00:01,bridge=vmbr0", &bridge));
    assert!(!nic_isolated(
        "virtio=BC:24:11:00:00:01,bridge=vmbr99,tag=5",
        &bridge
    ));
    let tagged = net(IsolationMode::Bridge, Some("vmbr1"), Some(99));
    assert!(nic_isolated("virtio=x,bridge=vmbr1,tag=99", &tagged));
    assert!(!nic_isolated("virtio=x,bridge=vmbr1", &tagged));
    let none = net(IsolationMode::None, None, None);
    assert!(nic_isolated("virtio=x,bridge=vmbr0,link_down=1", &none));
    assert!(!nic_isolated("virtio=x,bridge=vmbr0", &none));
}

#[test]
fn container_nics_keep_name_and_addresses_and_need_a_name() {
    let vnet = net(IsolationMode::SdnVnet, Some("rtest"), None);
    assert_eq!(
        isolate_nic(
            GuestType::Lxc,
            "net0",
            "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:03,ip=192.168.2.201/24,gw=192.168.2.1,type=veth",
            &vnet
        )
        .unwrap(),
        "name=eth0,hwaddr=BC:24:11:00:00:03,ip=192.168.2.201/24,gw=192.168.2.1,type=veth,bridge=rtest"
    );
    assert!(isolate_nic(GuestType::Lxc, "net0", "bridge=vmbr0,ip=dhcp", &vnet).is_err());
}

#[test]
fn the_isolation_bridge_must_not_be_the_original_guests_bridge() {
    let config = BTreeMap::from([(
        "net0".to_owned(),
        "virtio=BC:24:11:00:00:01,bridge=vmbr99".to_owned(),
    )]);
    let err = shares_original_bridge(&config, &net(IsolationMode::Bridge, Some("vmbr99"), None)).unwrap();
    assert!(err.contains("isolation network itself"), "{err}");
    assert_eq!(
        shares_original_bridge(&config, &net(IsolationMode::Bridge, Some("vmbr98"), None)),
        None
    );
    assert_eq!(
        shares_original_bridge(&config, &net(IsolationMode::None, None, None)),
        None
    );
    let ok = isolate_nics(GuestType::Vm, &config, &net(IsolationMode::None, None, None)).unwrap();
    assert_eq!(ok.len(), 1);
}

#[test]
fn passthrough_and_disks_are_found_in_a_backed_up_config() {
    let config = parse_config(
        "#nextcloud\nagent: 1\nhostpci0: 0000:01:00.0,pcie=1\nusb1: host=1a86:7523\nscsi0: ceph:vm-200-disk-0,size=64G\n\
         ide2: none,media=cdrom\nefidisk0: ceph:vm-200-disk-1,size=4M\nnet0: virtio=BC:24:11:00:00:01,bridge=vmbr0\n[snap1]\nhostpci1: x\n",
    );
    assert_eq!(passthrough_keys(GuestType::Vm, &config), ["hostpci0", "usb1"]);
    assert_eq!(disk_bytes(GuestType::Vm, &config), (64u64 << 30) + (4 << 20));
    assert_eq!(
        disk_storages(GuestType::Vm, &config),
        BTreeSet::from(["ceph".to_owned()])
    );
    assert!(agent_enabled(&config));
    assert_eq!(config["description"], "nextcloud");
    let ct = parse_config(
        "rootfs: local-lvm:vm-201-disk-0,size=16G\ndev0: /dev/ttyUSB0\nmp0: ceph:vm-201-disk-1,size=1T\n",
    );
    assert_eq!(passthrough_keys(GuestType::Lxc, &ct), ["dev0"]);
    assert_eq!(disk_bytes(GuestType::Lxc, &ct), (16u64 << 30) + (1 << 40));
    assert_eq!(parse_size("512M"), Some(512 << 20));
    assert_eq!(parse_size("12X"), None);
}

fn cand(id: &str, age: i64, verified: Verified) -> Candidate {
    Candidate {
        id: id.to_owned(),
        time: t(-age),
        size: 10,
        verified,
        pbs: false,
    }
}

fn sel(policy: SelectionPolicy, volid: Option<&str>, max_age: Option<i64>, require: bool) -> Selection<'_> {
    Selection {
        policy,
        volid,
        max_age_seconds: max_age,
        require_verified: require,
    }
}

#[test]
fn backups_are_chosen_by_policy_age_and_verification() {
    let list = [
        cand("s:backup/a", 100, Verified::Yes),
        cand("s:backup/b", 10, Verified::No),
        cand("s:backup/c", 50_000, Verified::Unknown),
    ];
    let ids = |r: Vec<&Candidate>| r.into_iter().map(|c| c.id.clone()).collect::<Vec<_>>();
    // Latest verified first; unknown ones stay (checked before use); failed ones go.
    let latest = choose_backups(&list, sel(SelectionPolicy::Latest, None, None, true), "r", t(0)).unwrap();
    assert_eq!(ids(latest), ["s:backup/a", "s:backup/c"]);
    let any = choose_backups(&list, sel(SelectionPolicy::Latest, None, None, false), "r", t(0)).unwrap();
    assert_eq!(ids(any)[0], "s:backup/b");
    let young = choose_backups(
        &list,
        sel(SelectionPolicy::Latest, None, Some(3600), true),
        "r",
        t(0),
    )
    .unwrap();
    assert_eq!(ids(young), ["s:backup/a"]);
    let err = choose_backups(
        &list,
        sel(SelectionPolicy::Latest, None, Some(5), true),
        "r",
        t(0),
    )
    .unwrap_err();
    assert_eq!(err.0, reasons::NO_RECENT_BACKUP);
    let only_failed = [cand("s:backup/b", 10, Verified::No)];
    let err = choose_backups(
        &only_failed,
        sel(SelectionPolicy::Latest, None, None, true),
        "r",
        t(0),
    )
    .unwrap_err();
    assert_eq!(err.0, reasons::NO_VERIFIED_BACKUP);
    let err = choose_backups(&[], sel(SelectionPolicy::Latest, None, None, true), "r", t(0)).unwrap_err();
    assert_eq!(err.0, reasons::NO_BACKUP);
    let exact = choose_backups(
        &list,
        sel(SelectionPolicy::Volid, Some("s:backup/c"), None, true),
        "r",
        t(0),
    )
    .unwrap();
    assert_eq!(ids(exact), ["s:backup/c"]);
    let err = choose_backups(
        &list,
        sel(SelectionPolicy::Volid, Some("s:backup/x"), None, true),
        "r",
        t(0),
    )
    .unwrap_err();
    assert_eq!(err.0, reasons::NO_BACKUP);
    // Random: a permutation, the same for the same run, different across runs.
    let many: Vec<Candidate> = (0..20)
        .map(|i| cand(&format!("s:backup/{i}"), i, Verified::Yes))
        .collect();
    let a = ids(choose_backups(
        &many,
        sel(SelectionPolicy::Random, None, None, true),
        "run-1",
        t(0),
    )
    .unwrap());
    let b = ids(choose_backups(
        &many,
        sel(SelectionPolicy::Random, None, None, true),
        "run-1",
        t(0),
    )
    .unwrap());
    let c = ids(choose_backups(
        &many,
        sel(SelectionPolicy::Random, None, None, true),
        "run-2",
        t(0),
    )
    .unwrap());
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a.len(), 20);
}

#[test]
fn picks_favour_critical_services_and_those_tested_longest_ago() {
    let p = |name: &str, criticality, days: Option<i64>| Pickable {
        name: name.to_owned(),
        criticality,
        last_tested: days.map(|d| t(-d * 86_400)),
    };
    let services = [
        p("critical-old", Criticality::Critical, Some(60)),
        p("low-fresh", Criticality::Low, Some(0)),
        p("normal-mid", Criticality::Normal, Some(10)),
    ];
    let mut first = BTreeMap::<String, u32>::new();
    for run in 0..400 {
        let picked = pick_services(&services, 1, &format!("run-{run}"), t(0));
        assert_eq!(picked.len(), 1);
        *first.entry(picked[0].clone()).or_default() += 1;
    }
    let n = |k: &str| first.get(k).copied().unwrap_or(0);
    assert!(
        n("critical-old") > n("normal-mid") && n("normal-mid") > n("low-fresh"),
        "{first:?}"
    );
    assert!(n("low-fresh") < 10, "{first:?}");
    // Deterministic per run id, and count bounded by the candidates.
    assert_eq!(
        pick_services(&services, 2, "x", t(0)),
        pick_services(&services, 2, "x", t(0))
    );
    assert_eq!(pick_services(&services, 9, "x", t(0)).len(), 3);
    let tested = last_tested([("a, b", t(-10)), ("b", t(-5))]);
    assert_eq!(tested["a"], t(-10));
    assert_eq!(tested["b"], t(-5));
}

fn iface(name: &str, kind: &str, ports: &[&str]) -> NetworkInterface {
    serde_json::from_value(serde_json::json!({
        "iface": name, "type": kind, "bridge_ports": ports.join(" ")
    }))
    .unwrap()
}

#[test]
fn bridges_and_vnets_must_be_provably_isolated() {
    let ifaces = [
        iface("vmbr0", "bridge", &["eno1"]),
        iface("vmbr99", "bridge", &[]),
        iface("eno1", "eth", &[]),
    ];
    assert!(check_bridge(&ifaces, "vmbr99", "pve3", true).is_ok());
    let err = check_bridge(&ifaces, "vmbr0", "pve3", true).unwrap_err();
    assert!(err.contains("eno1"), "{err}");
    assert!(check_bridge(&ifaces, "vmbr0", "pve3", false).is_ok());
    assert!(
        check_bridge(&ifaces, "vmbr7", "pve3", true)
            .unwrap_err()
            .contains("does not exist")
    );
    assert!(check_bridge(&ifaces, "eno1", "pve3", true).is_err());

    let zones: Vec<SdnZone> = serde_json::from_value(serde_json::json!([
        {"zone": "isolated", "type": "simple"}, {"zone": "vlanzone", "type": "vlan", "bridge": "vmbr1"}
    ]))
    .unwrap();
    let vnets: Vec<SdnVnet> = serde_json::from_value(serde_json::json!([
        {"vnet": "rtest", "zone": "isolated"}, {"vnet": "vlan30", "zone": "vlanzone", "tag": 30}
    ]))
    .unwrap();
    assert!(check_vnet(&vnets, &zones, "rtest", true).is_ok());
    assert!(
        check_vnet(&vnets, &zones, "vlan30", true)
            .unwrap_err()
            .contains("type vlan")
    );
    assert!(check_vnet(&vnets, &zones, "vlan30", false).is_ok());
    assert!(check_vnet(&vnets, &zones, "nope", true).is_err());
}

#[test]
fn vmids_probe_cidrs_and_ownership() {
    let range = VmidRange {
        start: 9900,
        end: 9902,
    };
    assert_eq!(lowest_free(&range, &BTreeSet::from([9900])), Some(9901));
    assert_eq!(lowest_free(&range, &BTreeSet::from([9900, 9901, 9902])), None);
    assert!(in_cidr("10.99.3.4".parse().unwrap(), "10.99.0.0/16"));
    assert!(!in_cidr("10.98.3.4".parse().unwrap(), "10.99.0.0/16"));
    assert!(!in_cidr("::1".parse().unwrap(), "10.99.0.0/16"));
    assert!(in_cidr("127.0.0.1".parse().unwrap(), "0.0.0.0/0"));
    let tags = vec!["autopilot".to_owned()];
    let desc = format!("{}\nRestore test copy", marker("uid-1"));
    assert!(is_ours(&tags, Some(&desc), "uid-1"));
    assert!(
        !is_ours(&tags, Some(&desc), "uid-2"),
        "another RestoreTest's copy"
    );
    assert!(
        !is_ours(&[], Some(&desc), "uid-1"),
        "the tag is part of the proof"
    );
    assert!(!is_ours(&tags, Some("autopilot restore-test=uid-1x"), "uid-1"));
    assert!(!is_ours(&tags, None, ""));
}

#[test]
fn the_rto_breakdown_adds_up_and_the_worst_restore_decides() {
    let mut d = RestoreResultDetail::pending("nextcloud", 200, GuestType::Vm);
    d.restore_start_time = Some(t(0));
    d.restored_time = Some(t(300));
    d.booted_time = Some(t(305));
    d.guest_ready_time = Some(t(360));
    d.healthy_time = Some(t(400));
    breakdown(&mut d);
    assert_eq!(
        (
            d.restore_seconds,
            d.boot_seconds,
            d.application_seconds,
            d.rto_seconds
        ),
        (Some(300), Some(60), Some(40), Some(400))
    );
    assert_eq!(judge(Some(400), Some(900)), RestoreResult::Passed);
    assert_eq!(judge(Some(400), Some(399)), RestoreResult::RtoExceeded);
    assert_eq!(judge(Some(400), None), RestoreResult::Passed);

    let mut run = RestoreRun {
        run_id: "g1".into(),
        start_time: t(0),
        completion_time: None,
        service: "a, b".into(),
        result: None,
        rto_seconds: None,
        rto_target_seconds: Some(500),
        restores: vec![d.clone(), d.clone()],
    };
    run.restores[1].rto_seconds = Some(700);
    run.restores[0].result = Some(RestoreResult::Passed);
    run.restores[1].result = Some(RestoreResult::RtoExceeded);
    summarize(&mut run);
    assert_eq!(
        (run.result, run.rto_seconds),
        (Some(RestoreResult::RtoExceeded), Some(700))
    );
    run.restores[0].result = Some(RestoreResult::Failed);
    run.restores[0].phase = RestorePhase::Done;
    summarize(&mut run);
    assert_eq!(run.result, Some(RestoreResult::Failed));

    let mut history = Vec::new();
    for i in 0..4 {
        run.run_id = format!("r{i}");
        push_history(&mut history, &run, 3);
    }
    assert_eq!(
        history.iter().map(|h| h.run_id.as_str()).collect::<Vec<_>>(),
        ["r3", "r2", "r1"]
    );
}

#[test]
fn hookscripts_go_and_network_args_are_refused_before_the_first_start() {
    let config: BTreeMap<String, String> = [
        ("hookscript", "local:snippets/announce.pl"),
        ("args", "-cpu host -netdev user,id=n9 -device e1000,netdev=n9"),
        ("net0", "virtio=BC:24:11:00:00:01,bridge=vmbr0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(hook_keys(&config), ["hookscript"]);
    let refused = args_network(GuestType::Vm, &config).expect("refused");
    assert!(
        refused.contains("-netdev") && refused.contains("args"),
        "{refused}"
    );
    let mut plain = config.clone();
    plain.insert("args".into(), "-cpu host,+aes".into());
    assert_eq!(args_network(GuestType::Vm, &plain), None);
    assert_eq!(
        args_network(GuestType::Lxc, &config),
        None,
        "containers have no QEMU args"
    );
}
