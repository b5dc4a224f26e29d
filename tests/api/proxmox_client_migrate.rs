//! The typed client against the simulator: clone (full and linked, to another node), migrate
//! after PVE's precondition check, and delete with purge. Runs with the API token and with
//! tickets.

use homelab_autopilot::proxmox::Error;
use homelab_autopilot::proxmox::api::{CloneRequest, DeleteGuestOptions, MigrateRequest, StopOptions};

use crate::proxmox_client_common::{AuthKind, Env, ct, node, per_auth, vm, vmid};

per_auth!(clone_migrate_delete: client_clone_migrate_delete_with_token, client_clone_migrate_delete_with_ticket);

async fn clone_migrate_delete(auth: AuthKind) {
    let Some(env) = Env::start(auth).await else { return };
    let c = &env.client;

    // Full clone of a VM on local storage, on its own node.
    let mut full = CloneRequest::new(vmid(200));
    full.name = Some("ap-replica".into());
    full.full = Some(true);
    full.storage = Some("local-lvm".into());
    full.format = Some("raw".into());
    full.description = Some("autopilot.homelab.dev/owner-uid=abc".into());
    let task = c.clone_guest(&vm("pve1", 100), &full).await.expect("full clone");
    assert_eq!(task.upid.worker_type(), "qmclone");
    env.wait(&task).await;
    let clone = c.guest_config(&vm("pve1", 200)).await.expect("clone config");
    assert_eq!(clone.name().as_deref(), Some("ap-replica"));
    // Linked clone of a template on shared storage, to another node.
    let mut linked = CloneRequest::new(vmid(201));
    linked.full = Some(false);
    linked.target = Some(node("pve1"));
    linked.name = Some("ap-linked".into());
    let task = c
        .clone_guest(&vm("pve3", 9000), &linked)
        .await
        .expect("linked clone");
    env.wait(&task).await;
    let located = c.locate_guest(vmid(201)).await.expect("locate clone");
    assert_eq!(located.guest, vm("pve1", 201));
    // A container clone sends `hostname`.
    let mut ct_clone = CloneRequest::new(vmid(202));
    ct_clone.name = Some("ap-gitea".into());
    ct_clone.full = Some(true);
    ct_clone.target = Some(node("pve1"));
    let stop = c
        .stop_guest(&ct("pve3", 104), &StopOptions::default())
        .await
        .expect("stop for clone");
    env.wait(&stop).await;
    let task = c
        .clone_guest(&ct("pve3", 104), &ct_clone)
        .await
        .expect("ct clone");
    assert_eq!(task.upid.worker_type(), "vzclone");
    env.wait(&task).await;
    let config = c.guest_config(&ct("pve1", 202)).await.expect("ct clone config");
    assert_eq!(config.name().as_deref(), Some("ap-gitea"));

    // Migrate: the client checks PVE's precondition first.
    let nextcloud = vm("pve1", 100);
    let same = c
        .migrate_guest(&nextcloud, &MigrateRequest::new(node("pve1"), true))
        .await
        .unwrap_err();
    assert!(matches!(same, Error::InvalidRequest { .. }), "{same:?}");
    let offline = c
        .migrate_guest(&nextcloud, &MigrateRequest::new(node("pve2"), false))
        .await
        .unwrap_err();
    assert!(offline.to_string().contains("set online"), "{offline}");
    let pre = c
        .migrate_precondition(&nextcloud, Some(&node("pve2")))
        .await
        .expect("precondition");
    assert!(pre.running && !pre.local_disks.is_empty(), "{pre:?}");
    let mut live = MigrateRequest::new(node("pve2"), true);
    live.with_local_disks = true;
    live.target_storage = Some("local-lvm".into());
    live.bwlimit = Some(100_000);
    let task = c.migrate_guest(&nextcloud, &live).await.expect("migrate");
    assert_eq!(task.upid.worker_type(), "qmigrate");
    env.wait(&task).await;
    let moved = c.locate_guest(vmid(100)).await.expect("locate");
    assert_eq!((moved.guest, moved.status.as_str()), (vm("pve2", 100), "running"));
    // A running container moves in restart mode.
    let pihole = ct("pve2", 102);
    let refused = c
        .migrate_guest(&pihole, &MigrateRequest::new(node("pve3"), false))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("online or restart"), "{refused}");
    let mut restart = MigrateRequest::new(node("pve3"), false);
    restart.restart = true;
    restart.timeout = Some(30);
    let task = c.migrate_guest(&pihole, &restart).await.expect("ct migrate");
    assert_eq!(task.upid.worker_type(), "vzmigrate");
    env.wait(&task).await;
    assert_eq!(
        c.locate_guest(vmid(102)).await.expect("locate").guest,
        ct("pve3", 102)
    );

    // Delete with purge removes the guest and its HA resource.
    let ha = vm("pve1", 101);
    env.wait(&c.stop_guest(&ha, &StopOptions::default()).await.expect("stop"))
        .await;
    let opts = DeleteGuestOptions {
        purge: true,
        destroy_unreferenced_disks: true,
    };
    let task = c.delete_guest(&ha, &opts).await.expect("delete");
    assert_eq!(task.upid.worker_type(), "qmdestroy");
    env.wait(&task).await;
    assert!(env.sim.state(|s| s.guest(101).is_none()));
    assert!(
        c.ha_resources(None)
            .await
            .expect("ha")
            .iter()
            .all(|r| r.sid != "vm:101")
    );
    let gone = c.guest_status(&ha).await.unwrap_err();
    assert!(matches!(gone, Error::NotFound { .. }), "{gone:?}");
}
