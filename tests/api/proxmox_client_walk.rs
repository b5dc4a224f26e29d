//! The schema walk: the typed client calls every operation of `ops::ALL`, each with every
//! parameter it can send (across the calls of that operation), against the simulator validating
//! each request with the official `pve-apischema.json`. The simulator's request journal then
//! proves, per operation, that it was called, that every inventory parameter was sent, and that
//! nothing was rejected with a 400. A new operation added to the inventory fails this test, named,
//! until the walk calls it.

use std::collections::{BTreeMap, BTreeSet};

use homelab_autopilot::proxmox::api::{
    BackupMode, CloneRequest, Compression, ConfigUpdate, ContentKind, CreateSnapshot, DeleteGuestOptions,
    Feature, MigrateRequest, NetworkTypeFilter, ResourceKind, RestoreCt, RestoreVm, ShutdownOptions,
    StopOptions, VolumeUpdate, VzdumpRequest,
};
use homelab_autopilot::proxmox::ops::{self, Operation};
use homelab_autopilot::proxmox::{GuestRef, GuestType, PveClient, SnapshotName, TaskRef};
use homelab_autopilot::pvesim::RequestRecord;

use crate::proxmox_client_common::{AuthKind, Env, ct, node, vm, vmid};

const OWNER: &str = "autopilot.homelab.dev/owner-uid=walk";

fn snap(name: &str) -> SnapshotName {
    SnapshotName::new(name).expect("snapshot name")
}

/// Runs a task-starting call and waits for it to succeed.
async fn done(env: &Env, what: &str, task: homelab_autopilot::proxmox::Result<TaskRef>) {
    let task = task.unwrap_or_else(|e| panic!("{what}: {e}"));
    env.wait(&task).await;
}

/// What the journal says about one operation.
fn check_op(op: &Operation, records: &[RequestRecord]) -> Result<(), String> {
    let calls: Vec<&RequestRecord> = records
        .iter()
        .filter(|r| r.method == op.method.as_str() && r.template == op.path_template)
        .collect();
    if let Some(bad) = calls.iter().find(|r| r.status == 400) {
        return Err(format!("{op}: the schema rejected parameters {:?}", bad.params));
    }
    let accepted: Vec<&&RequestRecord> = calls.iter().filter(|r| r.status == 200).collect();
    if accepted.is_empty() {
        return Err(format!(
            "{op}: never called successfully by the walk (statuses {:?}); add it to the schema walk",
            calls.iter().map(|r| r.status).collect::<Vec<_>>()
        ));
    }
    let sent: BTreeSet<&str> = accepted
        .iter()
        .flat_map(|r| r.params.iter().map(String::as_str))
        .collect();
    let missing: Vec<&&str> = op.params.iter().filter(|p| !sent.contains(**p)).collect();
    if !missing.is_empty() {
        return Err(format!("{op}: the walk never sent {missing:?}"));
    }
    if op.config_keys && !sent.iter().any(|p| !op.params.contains(p)) {
        return Err(format!("{op}: the walk never sent a guest config key"));
    }
    Ok(())
}

#[tokio::test]
async fn schema_walk_every_inventory_operation_is_accepted_by_the_official_schema() {
    // root@pam with a ticket: root-only vzdump options (bwlimit, dumpdir) are allowed.
    let Some(env) = Env::start(AuthKind::Ticket).await else {
        return;
    };
    let c = &env.client;
    walk_cluster_and_nodes(&env, c).await;
    walk_guests(&env, c).await;
    walk_clone_and_migrate(&env, c).await;
    walk_backup_and_restore(&env, c).await;

    let records = env.sim.requests();
    let failures: Vec<String> = ops::ALL
        .iter()
        .filter_map(|op| check_op(op, &records).err())
        .collect();
    assert!(
        failures.is_empty(),
        "schema walk failures:\n{}",
        failures.join("\n")
    );
    // Nothing else the client sent was refused by the schema either.
    let rejected: Vec<&RequestRecord> = records.iter().filter(|r| r.status == 400).collect();
    assert!(rejected.is_empty(), "{rejected:?}");
}

#[test]
fn schema_walk_check_names_an_operation_that_was_not_walked() {
    let op = ops::VERSION;
    let err = check_op(&op, &[]).unwrap_err();
    assert!(err.starts_with("GET /version: never called"), "{err}");
    let partial = [RequestRecord {
        method: "GET".into(),
        template: "/cluster/resources".into(),
        params: Vec::new(),
        status: 200,
    }];
    let err = check_op(&ops::CLUSTER_RESOURCES, &partial).unwrap_err();
    assert!(err.contains("never sent [\"type\"]"), "{err}");
}

async fn walk_cluster_and_nodes(env: &Env, c: &PveClient) {
    let pve1 = node("pve1");
    c.version().await.expect("version");
    c.cluster_status().await.expect("cluster status");
    c.cluster_resources(Some(ResourceKind::Vm))
        .await
        .expect("resources");
    c.next_vmid().await.expect("nextid");
    assert!(c.is_vmid_free(vmid(4242)).await.expect("nextid?vmid"));
    c.nodes().await.expect("nodes");
    c.node_status(&pve1).await.expect("node status");
    c.node_network(&pve1, Some(NetworkTypeFilter::AnyBridge))
        .await
        .expect("node network");
    c.sdn_zones().await.expect("sdn zones");
    c.sdn_vnets().await.expect("sdn vnets");
    c.ha_resources(Some(GuestType::Qemu)).await.expect("ha resources");
    c.apt_updates(&pve1).await.expect("apt list");
    let refresh = c.apt_refresh(&pve1, true).await.expect("apt update");
    env.wait(&refresh).await;
    c.task_status(&refresh).await.expect("task status");
    c.task_log(&refresh, 0, 10).await.expect("task log");
    c.apt_versions(&pve1).await.expect("apt versions");
    c.storage_configs().await.expect("storage configs");
    c.node_storages(&pve1, Some(ContentKind::Backup))
        .await
        .expect("node storages");
}

/// Power, config, snapshots, feature, agent on a VM and a container.
async fn walk_guests(env: &Env, c: &PveClient) {
    for ty in [GuestType::Qemu, GuestType::Lxc] {
        c.guests(&node("pve1"), ty).await.expect("list");
    }
    c.qemu_guests_full(&node("pve1")).await.expect("full list");
    let (jellyfin, gitea) = (vm("pve2", 103), ct("pve3", 104));
    for g in [&jellyfin, &gitea] {
        if !c.guest_status(g).await.expect("status").is_running() {
            done(env, "start", c.start_guest(g).await).await;
        }
        done(env, "reboot", c.reboot_guest(g, Some(60)).await).await;
        let shutdown = ShutdownOptions {
            timeout: Some(60),
            force_stop: Some(true),
        };
        done(env, "shutdown", c.shutdown_guest(g, &shutdown).await).await;
        done(env, "start", c.start_guest(g).await).await;
        let timeout = (g.guest_type == GuestType::Qemu).then_some(30);
        let stop = StopOptions {
            timeout,
            overrule_shutdown: Some(true),
        };
        done(env, "stop", c.stop_guest(g, &stop).await).await;
    }
    for g in [vm("pve1", 100), ct("pve2", 102)] {
        walk_config_and_snapshots(env, c, &g).await;
    }
    let pve1 = node("pve1");
    c.agent_ping(&pve1, vmid(100)).await.expect("ping");
    c.agent_network_interfaces(&pve1, vmid(100))
        .await
        .expect("interfaces");
    let pid = c
        .agent_exec(&pve1, vmid(100), &["cat".into()], Some("hello"))
        .await
        .expect("exec");
    c.agent_exec_status(&pve1, vmid(100), pid)
        .await
        .expect("exec-status");
}

async fn walk_config_and_snapshots(env: &Env, c: &PveClient, g: &GuestRef) {
    let config = c.guest_config(g).await.expect("config");
    let mut update = ConfigUpdate {
        digest: Some(config.digest.clone()),
        delete: vec!["tags".into()],
        ..ConfigUpdate::default()
    };
    update.set.insert("description".into(), OWNER.into());
    update.set.insert("memory".into(), "1536".into());
    c.update_config(g, &update).await.expect("config update");
    let name = snap("ap-walk");
    let create = CreateSnapshot {
        name: name.clone(),
        description: Some(OWNER.into()),
        vmstate: g.guest_type == GuestType::Qemu,
    };
    done(env, "snapshot", c.create_snapshot(g, &create).await).await;
    c.snapshots(g).await.expect("snapshots");
    c.guest_config_at(g, &name).await.expect("config at snapshot");
    c.guest_feature(g, Feature::Clone, Some(&name))
        .await
        .expect("feature");
    done(env, "rollback", c.rollback_snapshot(g, &name, true).await).await;
    done(env, "delete snapshot", c.delete_snapshot(g, &name, true).await).await;
}

async fn walk_clone_and_migrate(env: &Env, c: &PveClient) {
    // Clones from a snapshot of guests on shared storage, to another node, with every option.
    let homeassistant = vm("pve1", 101);
    let gitea = ct("pve3", 104);
    for g in [&homeassistant, &gitea] {
        let create = CreateSnapshot {
            name: snap("ap-base"),
            description: None,
            vmstate: false,
        };
        done(env, "snapshot", c.create_snapshot(g, &create).await).await;
    }
    let mut req = CloneRequest::new(vmid(200));
    req.name = Some("ap-clone".into());
    req.full = Some(true);
    req.target = Some(node("pve2"));
    req.storage = Some("ceph".into());
    req.format = Some("raw".into());
    req.snapname = Some(snap("ap-base"));
    req.pool = Some("autopilot".into());
    req.description = Some(OWNER.into());
    req.bwlimit = Some(100_000);
    done(env, "qemu clone", c.clone_guest(&homeassistant, &req).await).await;
    let mut req = CloneRequest {
        newid: vmid(201),
        format: None,
        ..req
    };
    req.name = Some("ap-ct-clone".into());
    done(env, "lxc clone", c.clone_guest(&gitea, &req).await).await;

    // Migrations with every option, after PVE's precondition check.
    let mut live = MigrateRequest::new(node("pve3"), true);
    live.with_local_disks = true;
    live.target_storage = Some("local-lvm".into());
    live.bwlimit = Some(100_000);
    done(
        env,
        "qemu migrate",
        c.migrate_guest(&vm("pve1", 100), &live).await,
    )
    .await;
    let mut restart = MigrateRequest::new(node("pve1"), true);
    restart.restart = true;
    restart.timeout = Some(60);
    restart.target_storage = Some("local-lvm".into());
    restart.bwlimit = Some(100_000);
    // `online` is accepted for a stopped container only (PVE cannot live-migrate containers).
    let pihole = ct("pve2", 102);
    done(env, "stop", c.stop_guest(&pihole, &StopOptions::default()).await).await;
    done(env, "lxc migrate", c.migrate_guest(&pihole, &restart).await).await;
    let moved = c.ha_migrate("vm:101", &node("pve3")).await.expect("ha migrate");
    assert_eq!(moved.requested_node, "pve3");
}

async fn walk_backup_and_restore(env: &Env, c: &PveClient) {
    let pve1 = node("pve1");
    let full = VzdumpRequest {
        vmids: vec![vmid(100)],
        storage: Some("pbs".into()),
        mode: Some(BackupMode::Snapshot),
        compress: Some(Compression::Zstd),
        notes_template: Some(format!("{{{{guestname}}}} {OWNER}")),
        remove: Some(false),
        protected: Some(false),
        bwlimit: Some(200_000),
        dumpdir: None,
    };
    let on = node("pve3"); // 100 lives on pve3 since the walk migrated it
    done(env, "vzdump to pbs", c.vzdump(&on, &full).await).await;
    let dir = VzdumpRequest {
        vmids: vec![vmid(102)],
        storage: None,
        dumpdir: Some(env.sim.dump_dir().display().to_string()),
        compress: Some(Compression::None),
        // The schema: notes and protection need `storage` (they live with the storage).
        notes_template: None,
        protected: None,
        ..full.clone()
    };
    done(env, "vzdump to dumpdir", c.vzdump(&pve1, &dir).await).await;
    let ct_backup = VzdumpRequest {
        storage: Some("local".into()),
        dumpdir: None,
        ..full.clone()
    };
    let ct_backup = VzdumpRequest {
        vmids: vec![vmid(102)],
        ..ct_backup
    };
    done(env, "vzdump to local", c.vzdump(&pve1, &ct_backup).await).await;

    let pbs = c
        .storage_content(&on, "pbs", Some(ContentKind::Backup), Some(vmid(100)))
        .await
        .expect("pbs content");
    let local = c
        .storage_content(&pve1, "local", Some(ContentKind::Backup), Some(vmid(102)))
        .await
        .expect("local content");
    let (vm_volid, ct_volid) = (pbs[0].volid.clone(), local[0].volid.clone());
    c.extract_backup_config(&on, &vm_volid)
        .await
        .expect("extractconfig");

    let restore = RestoreVm {
        vmid: vmid(300),
        archive: vm_volid,
        storage: Some("ceph".into()),
        unique: true,
        start: true,
        live_restore: true,
        pool: Some("autopilot".into()),
        bwlimit: Some(100_000),
        overrides: BTreeMap::from([("name".to_owned(), "ap-restore".to_owned())]),
    };
    done(env, "restore vm", c.restore_vm(&pve1, &restore).await).await;
    let restore = RestoreCt {
        vmid: vmid(301),
        archive: ct_volid.clone(),
        storage: Some("local-lvm".into()),
        unique: true,
        start: true,
        ignore_unpack_errors: true,
        pool: Some("autopilot".into()),
        bwlimit: Some(100_000),
        overrides: BTreeMap::from([("hostname".to_owned(), "ap-restore-ct".to_owned())]),
    };
    done(env, "restore ct", c.restore_ct(&pve1, &restore).await).await;

    let opts = DeleteGuestOptions {
        purge: true,
        destroy_unreferenced_disks: true,
    };
    for g in [vm("pve1", 300), ct("pve1", 301)] {
        done(env, "stop", c.stop_guest(&g, &StopOptions::default()).await).await;
        done(env, "delete", c.delete_guest(&g, &opts).await).await;
    }
    let unprotect = VolumeUpdate {
        notes: Some(format!("walked {OWNER}")),
        protected: Some(false),
    };
    c.update_volume(&pve1, "local", &ct_volid, &unprotect)
        .await
        .expect("update volume");
    let deleted = c
        .delete_volume(&pve1, "local", &ct_volid, Some(5))
        .await
        .expect("delete volume");
    if let Some(task) = deleted {
        env.wait(&task).await;
    }
}
