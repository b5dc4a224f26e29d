//! The typed client against the simulator: cluster reads, guest power, config with digest,
//! snapshots and feature. Every scenario runs twice, with the API token and with user/password
//! tickets.

use homelab_autopilot::proxmox::api::{
    ConfigUpdate, CreateSnapshot, Feature, ResourceKind, ShutdownOptions, StopOptions,
};
use homelab_autopilot::proxmox::{Error, GuestType, SnapshotName, TaskRef};

use crate::proxmox_client_common::{AuthKind, Env, ct, node, per_auth, vm, vmid};

per_auth!(cluster_reads: client_cluster_reads_with_token_decode_sim_answers, client_cluster_reads_with_ticket_decode_sim_answers);

async fn cluster_reads(auth: AuthKind) {
    let Some(env) = Env::start(auth).await else { return };
    let c = &env.client;

    let version = c.version().await.expect("version");
    assert!(version.version.starts_with("9."), "{version:?}");
    assert!(
        !version.release.is_empty() && !version.repoid.is_empty(),
        "{version:?}"
    );

    let status = c.cluster_status().await.expect("cluster status");
    let cluster = status.cluster.as_ref().expect("cluster row");
    assert_eq!(
        (cluster.name.as_str(), cluster.quorate, cluster.nodes),
        ("homelab", true, 3)
    );
    assert!(status.is_quorate());
    let names: Vec<&str> = status.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["pve1", "pve2", "pve3"]);
    assert!(status.nodes.iter().all(|n| n.online));
    assert_eq!(status.nodes.iter().filter(|n| n.local).count(), 1);
    assert!(status.nodes[0].local, "the main listener is pve1");

    let nodes = c.nodes().await.expect("nodes");
    assert_eq!(nodes.len(), 3);
    assert!(nodes.iter().all(|n| n.status == "online"));
    assert_eq!(
        nodes[0].ssl_fingerprint.as_deref(),
        Some(env.sim.fingerprint()),
        "PVE reports the node certificate's fingerprint"
    );

    let all = c.cluster_resources(None).await.expect("resources");
    for kind in ["node", "storage", "qemu", "lxc"] {
        assert!(all.iter().any(|r| r.resource_type == kind), "no {kind} row");
    }
    let vms = c
        .cluster_resources(Some(ResourceKind::Vm))
        .await
        .expect("vm resources");
    assert!(
        vms.iter().all(|r| r.guest_type().is_some()),
        "type=vm gives guests only"
    );
    let template = vms
        .iter()
        .find(|r| r.vmid == Some(vmid(9000)))
        .expect("template row");
    assert!(template.template);
    let ha = vms
        .iter()
        .find(|r| r.vmid == Some(vmid(101)))
        .expect("HA guest row");
    assert_eq!(ha.hastate.as_deref(), Some("started"));
    let storages = c
        .cluster_resources(Some(ResourceKind::Storage))
        .await
        .expect("storages");
    assert!(storages.iter().any(|r| r.id == "storage/pve1/local"));

    let pihole = c.locate_guest(vmid(102)).await.expect("locate 102");
    assert_eq!(pihole.guest, ct("pve2", 102));
    assert_eq!(
        (pihole.status.as_str(), pihole.name.as_deref()),
        ("running", Some("pihole"))
    );
    let missing = c.locate_guest(vmid(4242)).await.unwrap_err();
    assert!(matches!(missing, Error::NotFound { .. }), "{missing:?}");

    let next = c.next_vmid().await.expect("nextid");
    assert_eq!(next.get(), 105, "lowest free id from 100");
    assert!(!c.is_vmid_free(vmid(100)).await.expect("vmid check"));
    assert!(c.is_vmid_free(vmid(4242)).await.expect("vmid check"));

    let st = c.node_status(&node("pve1")).await.expect("node status");
    assert!(st.pveversion.starts_with("pve-manager/9."), "{}", st.pveversion);
    assert!(
        st.memory.total > st.memory.used && st.memory.used > 0,
        "{:?}",
        st.memory
    );
    assert_eq!(st.loadavg.len(), 3);
    assert_eq!(st.current_kernel.release, "6.14.11-4-pve");
    assert!(st.uptime.is_some_and(|u| u > 0));

    let qemu = c.guests(&node("pve1"), GuestType::Qemu).await.expect("qemu list");
    let ids: Vec<u32> = qemu.iter().map(|g| g.vmid.get()).collect();
    assert_eq!(ids, [100, 101]);
    // As qemu-server's vmstatus: QMP state only with full=1, then for every VM.
    assert!(qemu.iter().all(|g| g.qmpstatus.is_none()), "{qemu:?}");
    let full = c.qemu_guests_full(&node("pve1")).await.expect("full qemu list");
    let states: Vec<_> = full
        .iter()
        .map(|g| (g.vmid.get(), g.status.as_str(), g.qmpstatus.as_deref()))
        .collect();
    assert_eq!(
        states,
        [
            (100, "running", Some("running")),
            (101, "running", Some("running"))
        ]
    );
    let lxc = c.guests(&node("pve2"), GuestType::Lxc).await.expect("lxc list");
    assert_eq!(lxc.iter().map(|g| g.vmid.get()).collect::<Vec<_>>(), [102]);
    assert_eq!(lxc[0].name.as_deref(), Some("pihole"));

    let s = c.guest_status(&vm("pve1", 100)).await.expect("status");
    assert!(s.is_running() && s.agent && !s.ha.managed, "{s:?}");
    assert_eq!(s.qmpstatus.as_deref(), Some("running"));
    let s = c.guest_status(&vm("pve1", 101)).await.expect("status");
    assert!(s.ha.managed, "{s:?}");
    let wrong_node = c.guest_status(&vm("pve2", 100)).await.unwrap_err();
    assert!(matches!(wrong_node, Error::NotFound { .. }), "{wrong_node:?}");
}

per_auth!(guest_power: client_power_tasks_with_token_change_sim_state, client_power_tasks_with_ticket_change_sim_state);

async fn guest_power(auth: AuthKind) {
    let Some(env) = Env::start(auth).await else { return };
    let c = &env.client;
    let jellyfin = vm("pve2", 103);
    let up = |env: &Env| env.sim.state(|s| s.guest(103).map(|g| g.power.is_up()));

    let start = c.start_guest(&jellyfin).await.expect("start");
    assert_eq!(start.upid.worker_type(), "qmstart");
    assert_eq!(start.node, node("pve2"), "polled on the guest's node");
    match auth {
        AuthKind::Token => assert_eq!(start.upid.auth_id(), env.sim.token_id()),
        AuthKind::Ticket => assert_eq!(start.upid.auth_id(), env.sim.username()),
    }
    // A controller stores the UPID string and resumes after a restart with a fresh client.
    let stored = serde_json::to_string(&start).expect("serialize");
    let resumed: TaskRef = serde_json::from_str(&stored).expect("deserialize");
    let restarted =
        crate::proxmox_client_common::client(&env.sim, auth, crate::proxmox_client_common::TlsKind::Pin);
    let done = crate::proxmox_client_common::wait(&restarted, &resumed)
        .await
        .expect("resumed wait");
    assert_eq!(done.warnings, 0);
    assert_eq!(up(&env), Some(true));
    let status = c.task_status(&resumed).await.expect("task status");
    assert_eq!(
        (status.status.as_str(), status.exitstatus.as_deref()),
        ("stopped", Some("OK"))
    );
    assert_eq!(status.task_type, "qmstart");
    assert_eq!(status.id, "103");
    assert_eq!(status.tokenid.is_some(), auth == AuthKind::Token, "{status:?}");

    let reboot = c.reboot_guest(&jellyfin, Some(30)).await.expect("reboot");
    assert_eq!(reboot.upid.worker_type(), "qmreboot");
    env.wait(&reboot).await;
    assert_eq!(up(&env), Some(true));

    let shutdown = c
        .shutdown_guest(
            &jellyfin,
            &ShutdownOptions {
                timeout: Some(60),
                force_stop: Some(true),
            },
        )
        .await
        .expect("shutdown");
    env.wait(&shutdown).await;
    assert_eq!(up(&env), Some(false));

    let gitea = ct("pve3", 104);
    let stop = c
        .stop_guest(
            &gitea,
            &StopOptions {
                timeout: None,
                overrule_shutdown: Some(true),
            },
        )
        .await
        .expect("stop");
    assert_eq!(stop.upid.worker_type(), "vzstop");
    env.wait(&stop).await;
    assert_eq!(
        env.sim.state(|s| s.guest(104).map(|g| g.power.is_up())),
        Some(false)
    );
    let start = c.start_guest(&gitea).await.expect("start ct");
    env.wait(&start).await;
    let reboot = c.reboot_guest(&gitea, None).await.expect("reboot ct");
    env.wait(&reboot).await;
    let shutdown = c
        .shutdown_guest(
            &gitea,
            &ShutdownOptions {
                timeout: Some(10),
                force_stop: None,
            },
        )
        .await
        .expect("shutdown ct");
    env.wait(&shutdown).await;
    assert_eq!(
        env.sim.state(|s| s.guest(104).map(|g| g.power.is_up())),
        Some(false)
    );

    // HA-managed guests start through the HA manager.
    let ha_stop = c
        .stop_guest(&vm("pve1", 101), &StopOptions::default())
        .await
        .expect("stop HA guest");
    assert_eq!(ha_stop.upid.worker_type(), "hastop");
    env.wait(&ha_stop).await;
}

per_auth!(config_and_snapshots: client_config_digest_and_snapshots_with_token, client_config_digest_and_snapshots_with_ticket);

async fn config_and_snapshots(auth: AuthKind) {
    let Some(env) = Env::start(auth).await else { return };
    let c = &env.client;
    let nextcloud = vm("pve1", 100);

    let config = c.guest_config(&nextcloud).await.expect("config");
    assert_eq!(config.name().as_deref(), Some("nextcloud"));
    assert_eq!(config.tags(), ["prod", "web"]);
    assert_eq!(config.parent().as_deref(), Some("before-upgrade"));
    assert_eq!(config.digest.len(), 40, "SHA-1 hex digest");
    let mut update = ConfigUpdate {
        digest: Some(config.digest.clone()),
        delete: vec!["onboot".into()],
        ..ConfigUpdate::default()
    };
    update
        .set
        .insert("description".into(), "autopilot.homelab.dev/owner-uid=abc".into());
    update.set.insert("memory".into(), "6144".into());
    c.update_config(&nextcloud, &update)
        .await
        .expect("update with fresh digest");
    let after = c.guest_config(&nextcloud).await.expect("config");
    assert_eq!(after.get("memory").as_deref(), Some("6144"));
    assert_eq!(
        after.description().as_deref(),
        Some("autopilot.homelab.dev/owner-uid=abc")
    );
    assert_eq!(after.get("onboot"), None);
    assert_ne!(after.digest, config.digest);
    // The first digest is stale now: PVE refuses, and the error says so.
    let stale = c.update_config(&nextcloud, &update).await.unwrap_err();
    assert!(stale.is_digest_mismatch(), "{stale:?}");
    let bad_key = c
        .update_config(
            &nextcloud,
            &ConfigUpdate {
                set: [("cores".to_owned(), "many".to_owned())].into(),
                ..ConfigUpdate::default()
            },
        )
        .await
        .unwrap_err();
    let Error::ParameterVerification { errors, .. } = &bad_key else {
        panic!("{bad_key:?}")
    };
    assert!(errors["cores"].contains("type check"), "{errors:?}");

    let list = c.snapshots(&nextcloud).await.expect("snapshots");
    assert_eq!(list.snapshots.len(), 1);
    let current = list.current.as_ref().expect("current entry");
    assert_eq!(current.parent.as_deref(), Some("before-upgrade"));
    assert!(current.running);

    let snap = SnapshotName::new("ap-nightly").expect("name");
    let create = c
        .create_snapshot(
            &nextcloud,
            &CreateSnapshot {
                name: snap.clone(),
                description: Some("ours".into()),
                vmstate: true,
            },
        )
        .await
        .expect("create snapshot");
    assert_eq!(create.upid.worker_type(), "qmsnapshot");
    env.wait(&create).await;
    let list = c.snapshots(&nextcloud).await.expect("snapshots");
    let ours = list.get("ap-nightly").expect("created");
    assert!(ours.vmstate && ours.snaptime.is_some_and(|t| t > 0), "{ours:?}");
    assert_eq!(ours.parent.as_deref(), Some("before-upgrade"));
    assert_eq!(list.current.and_then(|c| c.parent).as_deref(), Some("ap-nightly"));
    let at = c
        .guest_config_at(&nextcloud, &snap)
        .await
        .expect("config at snapshot");
    assert_eq!(at.get("memory").as_deref(), Some("6144"));

    let feature = c
        .guest_feature(&nextcloud, Feature::Snapshot, None)
        .await
        .expect("feature");
    assert!(feature.has_feature);
    let clone_feature = c
        .guest_feature(&vm("pve3", 9000), Feature::Clone, None)
        .await
        .expect("feature");
    assert!(clone_feature.has_feature, "{clone_feature:?}");

    // Config changed after the snapshot; rolling back restores it.
    let mut change = ConfigUpdate::default();
    change.set.insert("memory".into(), "1024".into());
    c.update_config(&nextcloud, &change).await.expect("update");
    let rollback = c
        .rollback_snapshot(&nextcloud, &snap, true)
        .await
        .expect("rollback");
    assert_eq!(rollback.upid.worker_type(), "qmrollback");
    env.wait(&rollback).await;
    let rolled = c.guest_config(&nextcloud).await.expect("config");
    assert_eq!(rolled.get("memory").as_deref(), Some("6144"));
    assert!(
        c.guest_status(&nextcloud).await.expect("status").is_running(),
        "start=1"
    );

    let delete = c
        .delete_snapshot(&nextcloud, &snap, false)
        .await
        .expect("delete snapshot");
    assert_eq!(delete.upid.worker_type(), "qmdelsnapshot");
    env.wait(&delete).await;
    assert!(
        c.snapshots(&nextcloud)
            .await
            .expect("snapshots")
            .get("ap-nightly")
            .is_none()
    );
    // Deleting it again fails inside the task, as in PVE (the check runs in the worker).
    let again = c
        .delete_snapshot(&nextcloud, &snap, false)
        .await
        .expect("task starts");
    let err = crate::proxmox_client_common::wait(c, &again).await.unwrap_err();
    let Error::TaskFailed {
        exit_status,
        log_tail,
        upid,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(exit_status, "snapshot 'ap-nightly' does not exist");
    assert_eq!(upid, again.upid.as_str());
    assert_eq!(
        log_tail.last().map(String::as_str),
        Some("TASK ERROR: snapshot 'ap-nightly' does not exist")
    );

    // Containers: vmstate is refused client-side, the rest works the same.
    let pihole = ct("pve2", 102);
    let refused = c
        .create_snapshot(
            &pihole,
            &CreateSnapshot {
                name: snap.clone(),
                description: None,
                vmstate: true,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::InvalidRequest { .. }), "{refused:?}");
    let create = c
        .create_snapshot(
            &pihole,
            &CreateSnapshot {
                name: snap.clone(),
                description: None,
                vmstate: false,
            },
        )
        .await
        .expect("ct snapshot");
    assert_eq!(create.upid.worker_type(), "vzsnapshot");
    env.wait(&create).await;
    env.wait(
        &c.rollback_snapshot(&pihole, &snap, false)
            .await
            .expect("ct rollback"),
    )
    .await;
    env.wait(&c.delete_snapshot(&pihole, &snap, true).await.expect("ct delete"))
        .await;
    assert!(
        c.snapshots(&pihole)
            .await
            .expect("ct snapshots")
            .snapshots
            .is_empty()
    );
}
