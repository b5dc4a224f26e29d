//! The typed client against the simulator: vzdump, storage content list/delete, extractconfig,
//! restore of VMs and containers, the guest agent, HA and apt. Every scenario runs with the API
//! token and with tickets.

use std::time::Duration;

use homelab_autopilot::proxmox::api::{
    BackupMode, Compression, ContentKind, ResourceKind, RestoreCt, RestoreVm, StorageContent, VzdumpRequest,
};
use homelab_autopilot::proxmox::{Error, GuestType, PveClient};

use crate::proxmox_client_common::{AuthKind, Env, ct, node, per_auth, vm, vmid};

const OWNER: &str = "autopilot.homelab.dev/owner-uid=0f3c";

/// The backups of `id` on `storage` as seen from `node_name`.
async fn backups(c: &PveClient, node_name: &str, storage: &str, id: u32) -> Vec<StorageContent> {
    c.storage_content(
        &node(node_name),
        storage,
        Some(ContentKind::Backup),
        Some(vmid(id)),
    )
    .await
    .expect("storage content")
}

per_auth!(backup_restore: client_backup_and_restore_with_token, client_backup_and_restore_with_ticket);

async fn backup_restore(auth: AuthKind) {
    let Some(env) = Env::start(auth).await else { return };
    let c = &env.client;

    let storages = c.storage_configs().await.expect("storage configs");
    assert!(
        storages
            .iter()
            .any(|s| s.storage == "local" && s.storage_type == "dir")
    );
    let on_pve1 = c
        .node_storages(&node("pve1"), Some(ContentKind::Backup))
        .await
        .expect("node storages");
    let local = on_pve1
        .iter()
        .find(|s| s.storage == "local")
        .expect("local allows backups");
    assert!(
        local.active && local.enabled && local.total.is_some(),
        "{local:?}"
    );
    assert!(
        on_pve1.iter().all(|s| s.content.contains("backup")),
        "{on_pve1:?}"
    );

    // A VM backup: zstd, snapshot mode, notes with our ownership marker.
    let req = VzdumpRequest {
        vmids: vec![vmid(100)],
        storage: Some("local".into()),
        mode: Some(BackupMode::Snapshot),
        compress: Some(Compression::Zstd),
        notes_template: Some(format!("{{{{guestname}}}} {OWNER}")),
        remove: Some(false),
        ..VzdumpRequest::default()
    };
    let task = c.vzdump(&node("pve1"), &req).await.expect("vzdump");
    assert_eq!((task.upid.worker_type(), task.upid.id()), ("vzdump", "100"));
    env.wait(&task).await;
    let rows = backups(c, "pve1", "local", 100).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let vm_backup = rows[0].clone();
    assert!(
        vm_backup.volid.starts_with("local:backup/vzdump-qemu-100-"),
        "{}",
        vm_backup.volid
    );
    assert!(vm_backup.volid.ends_with(".vma.zst"));
    assert_eq!(vm_backup.format, "vma.zst");
    assert_eq!(vm_backup.subtype.as_deref(), Some("qemu"));
    assert_eq!(vm_backup.content.as_deref(), Some("backup"));
    assert_eq!(
        vm_backup.notes.as_deref(),
        Some(format!("nextcloud {OWNER}").as_str())
    );
    assert!(vm_backup.size > 0 && vm_backup.ctime.is_some_and(|t| t > 0) && !vm_backup.protected);
    let file = vm_backup.volid.trim_start_matches("local:backup/");
    let on_disk = std::fs::metadata(env.sim.dump_dir().join(file)).expect("real file in the dump dir");
    assert_eq!(on_disk.len(), vm_backup.size);

    // A container backup: uncompressed, stop mode, protected.
    let req = VzdumpRequest {
        vmids: vec![vmid(102)],
        storage: Some("local".into()),
        mode: Some(BackupMode::Stop),
        compress: Some(Compression::None),
        notes_template: Some(OWNER.into()),
        protected: Some(true),
        bwlimit: Some(50_000),
        ..VzdumpRequest::default()
    };
    // PVE 9.1: bwlimit needs Sys.Modify on `/`, which root's unseparated token and ticket have.
    let task = c.vzdump(&node("pve2"), &req).await.expect("vzdump ct");
    env.wait(&task).await;
    let ct_backup = backups(c, "pve2", "local", 102).await.remove(0);
    assert!(
        ct_backup.volid.ends_with(".tar"),
        "compress=0 is uncompressed: {}",
        ct_backup.volid
    );
    assert_eq!(
        (ct_backup.format.as_str(), ct_backup.subtype.as_deref()),
        ("tar", Some("lxc"))
    );
    assert!(ct_backup.protected);

    // The config inside each backup.
    let config = c
        .extract_backup_config(&node("pve1"), &vm_backup.volid)
        .await
        .expect("extractconfig");
    assert!(config.contains("name: nextcloud"), "{config}");
    assert!(
        !config.contains("[before-upgrade]"),
        "no snapshot sections in a backup: {config}"
    );
    let config = c
        .extract_backup_config(&node("pve2"), &ct_backup.volid)
        .await
        .expect("extractconfig ct");
    assert!(config.contains("hostname: pihole"), "{config}");

    // Restore the VM next to the original: new VMID, unique MACs, other storage, a new name.
    let mut restore = RestoreVm {
        vmid: vmid(300),
        archive: vm_backup.volid.clone(),
        storage: Some("ceph".into()),
        unique: true,
        start: false,
        live_restore: false,
        pool: Some("no-such-pool".into()),
        bwlimit: None,
        overrides: [("name".to_owned(), "ap-restore-test".to_owned())].into(),
    };
    // PVE checks the pool first: a missing one is a permission error.
    let err = c.restore_vm(&node("pve1"), &restore).await.unwrap_err();
    assert!(
        matches!(&err, Error::PermissionDenied { message } if message.contains("pool 'no-such-pool' does not exist")),
        "{err:?}"
    );
    restore.pool = Some("autopilot".into());
    let task = c.restore_vm(&node("pve1"), &restore).await.expect("restore vm");
    assert_eq!(task.upid.worker_type(), "qmrestore");
    env.wait(&task).await;
    let restored = c.guest_config(&vm("pve1", 300)).await.expect("restored config");
    let original = c.guest_config(&vm("pve1", 100)).await.expect("original config");
    assert_eq!(restored.name().as_deref(), Some("ap-restore-test"));
    assert!(
        restored
            .get("scsi0")
            .is_some_and(|d| d.starts_with("ceph:vm-300-disk-0")),
        "{restored:?}"
    );
    assert_ne!(
        restored.get("net0"),
        original.get("net0"),
        "unique gives a new MAC"
    );
    let row = c
        .cluster_resources(Some(ResourceKind::Vm))
        .await
        .expect("resources");
    let row = row
        .iter()
        .find(|r| r.vmid == Some(vmid(300)))
        .expect("restored guest row");
    assert_eq!(row.pool.as_deref(), Some("autopilot"));
    assert_eq!(
        env.sim.disk_image(300).map(|d| d.len()),
        env.sim.disk_image(100).map(|d| d.len()),
        "the restored disk comes from the archive"
    );
    // Never over an existing guest.
    restore.vmid = vmid(100);
    let exists = match c.restore_vm(&node("pve1"), &restore).await {
        Ok(task) => crate::proxmox_client_common::wait(c, &task).await.unwrap_err(),
        Err(e) => e,
    };
    assert!(exists.to_string().contains("already exists"), "{exists}");

    // Restore the container onto another storage, on pve2: `local` is per node and the backup
    // lies on pve2's (pve1 would not find the file).
    let task = c
        .restore_ct(
            &node("pve2"),
            &RestoreCt {
                vmid: vmid(301),
                archive: ct_backup.volid.clone(),
                storage: Some("local-lvm".into()),
                unique: true,
                start: true,
                ignore_unpack_errors: false,
                pool: None,
                bwlimit: Some(100_000),
                overrides: [("hostname".to_owned(), "ap-pihole-test".to_owned())].into(),
            },
        )
        .await
        .expect("restore ct");
    assert_eq!(task.upid.worker_type(), "vzrestore");
    env.wait(&task).await;
    let restored = c.guest_config(&ct("pve2", 301)).await.expect("restored ct");
    assert_eq!(restored.name().as_deref(), Some("ap-pihole-test"));
    assert!(
        restored
            .get("rootfs")
            .is_some_and(|r| r.starts_with("local-lvm:vm-301-disk-0")),
        "{restored:?}"
    );
    assert!(
        c.guest_status(&ct("pve2", 301))
            .await
            .expect("status")
            .is_running()
    );

    // Content delete: protected backups are refused, others go (task or null with delay).
    let refused = match c
        .delete_volume(&node("pve2"), "local", &ct_backup.volid, None)
        .await
    {
        Ok(Some(task)) => crate::proxmox_client_common::wait(c, &task).await.unwrap_err(),
        Ok(None) => panic!("protected backup was deleted"),
        Err(e) => e,
    };
    assert!(refused.to_string().contains("protected"), "{refused}");
    assert_eq!(backups(c, "pve2", "local", 102).await.len(), 1);
    let deleted = c
        .delete_volume(&node("pve1"), "local", &vm_backup.volid, Some(30))
        .await
        .expect("delete");
    if let Some(task) = deleted {
        assert_eq!(task.upid.worker_type(), "imgdel");
        env.wait(&task).await;
    }
    assert!(backups(c, "pve1", "local", 100).await.is_empty());
    assert!(!env.sim.dump_dir().join(file).exists(), "the file is gone");
}

per_auth!(agent_ha_apt: client_agent_ha_and_apt_with_token, client_agent_ha_and_apt_with_ticket);

async fn agent_ha_apt(auth: AuthKind) {
    let Some(env) = Env::start(auth).await else { return };
    let c = &env.client;
    let pve1 = node("pve1");

    c.agent_ping(&pve1, vmid(100)).await.expect("agent answers");
    let not_running = c.agent_ping(&node("pve2"), vmid(103)).await.unwrap_err();
    assert!(
        matches!(&not_running, Error::Api { status: 500, message } if message.contains("not running")),
        "{not_running:?}"
    );
    let ifaces = c
        .agent_network_interfaces(&pve1, vmid(100))
        .await
        .expect("interfaces");
    let eth = ifaces
        .iter()
        .find(|i| i.name != "lo")
        .expect("an interface besides lo");
    assert!(eth.hardware_address.is_some());
    assert!(
        eth.ip_addresses
            .iter()
            .any(|a| a.ip_address_type == "ipv4" && a.prefix.is_some()),
        "{eth:?}"
    );

    let pid = c
        .agent_exec(&pve1, vmid(100), &["echo".into(), "hello".into()], None)
        .await
        .expect("exec");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        let st = c
            .agent_exec_status(&pve1, vmid(100), pid)
            .await
            .expect("exec-status");
        if st.exited {
            break st;
        }
        assert!(tokio::time::Instant::now() < deadline, "exec did not finish");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(status.exitcode, Some(0));
    assert_eq!(status.out_data.as_deref(), Some("hello\n"));
    // The agent forgot the pid once it reported the exit.
    let forgotten = c.agent_exec_status(&pve1, vmid(100), pid).await.unwrap_err();
    assert!(matches!(forgotten, Error::NotFound { .. }), "{forgotten:?}");
    let empty = c.agent_exec(&pve1, vmid(100), &[], None).await.unwrap_err();
    assert!(matches!(empty, Error::InvalidRequest { .. }));

    let ha = c.ha_resources(None).await.expect("ha resources");
    assert_eq!(ha.iter().map(|r| r.sid.as_str()).collect::<Vec<_>>(), ["vm:101"]);
    assert_eq!(ha[0].state.as_deref(), Some("started"));
    assert!(
        c.ha_resources(Some(GuestType::Lxc))
            .await
            .expect("ct filter")
            .is_empty()
    );
    let moved = c.ha_migrate("vm:101", &node("pve2")).await.expect("ha migrate");
    assert_eq!(
        (moved.sid.as_str(), moved.requested_node.as_str()),
        ("vm:101", "pve2")
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let at = c.locate_guest(vmid(101)).await.expect("locate");
        if at.guest.node == node("pve2") {
            assert_eq!(at.status, "running");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "HA did not move vm:101");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let bad = c.ha_migrate("101", &node("pve2")).await.unwrap_err();
    assert!(matches!(bad, Error::InvalidRequest { .. }));

    let before = c.apt_updates(&pve1).await.expect("apt list");
    let refresh = c.apt_refresh(&pve1, false).await.expect("apt update");
    assert_eq!(refresh.upid.worker_type(), "aptupdate");
    env.wait(&refresh).await;
    let after = c.apt_updates(&pve1).await.expect("apt list");
    assert!(!after.is_empty() && after.len() >= before.len(), "{after:?}");
    assert!(
        after
            .iter()
            .all(|p| !p.version.is_empty() && p.old_version.is_some()),
        "{after:?}"
    );
    let versions = c.apt_versions(&pve1).await.expect("apt versions");
    let manager = versions
        .iter()
        .find(|v| v.package == "pve-manager")
        .expect("pve-manager");
    assert_eq!(manager.current_state.as_deref(), Some("Installed"));
    assert!(
        versions.iter().any(|v| v.running_kernel.is_some()),
        "{versions:?}"
    );
}

/// The client works with CA verification too (PVE's `pve-root-ca.pem`).
#[tokio::test]
async fn client_with_ca_pem_verifies_the_sim_certificate() {
    let Some(env) = Env::start(AuthKind::Token).await else {
        return;
    };
    let c = crate::proxmox_client_common::client(
        &env.sim,
        AuthKind::Ticket,
        crate::proxmox_client_common::TlsKind::Ca,
    );
    assert!(c.version().await.is_ok());
    let task = c
        .start_guest(&vm("pve2", 103))
        .await
        .expect("write with ticket + CSRF over CA TLS");
    crate::proxmox_client_common::wait(&c, &task).await.expect("task");
    // A pin that does not match is a TLS error naming both fingerprints, never retried.
    let mut config = crate::proxmox_client_common::config(
        &env.sim,
        AuthKind::Token,
        crate::proxmox_client_common::TlsKind::Pin,
    );
    config.tls = homelab_autopilot::proxmox::TlsVerify::Fingerprint("AB:".repeat(31) + "AB");
    let wrong = PveClient::new(config)
        .expect("config")
        .version()
        .await
        .unwrap_err();
    let Error::Tls {
        expected, presented, ..
    } = &wrong
    else {
        panic!("{wrong:?}")
    };
    assert_eq!(presented.as_deref(), Some(env.sim.fingerprint()));
    assert!(expected.is_some());
}

/// vzdump compresses as `/etc/vzdump.conf` says (the default cluster: zstd) unless the request
/// says otherwise; without a vzdump.conf setting PVE's own default is no compression.
#[tokio::test]
async fn client_vzdump_compression_follows_vzdump_conf_unless_requested() {
    let Some(env) = Env::start(AuthKind::Token).await else {
        return;
    };
    let c = &env.client;
    let pve1 = node("pve1");
    let backup = |compress: Option<Compression>| VzdumpRequest {
        vmids: vec![vmid(100)],
        storage: Some("local".into()),
        compress,
        ..VzdumpRequest::default()
    };
    env.wait(&c.vzdump(&pve1, &backup(None)).await.expect("vzdump"))
        .await;
    env.wait(
        &c.vzdump(&pve1, &backup(Some(Compression::None)))
            .await
            .expect("vzdump"),
    )
    .await;
    let mut formats: Vec<String> = backups(c, "pve1", "local", 100)
        .await
        .into_iter()
        .map(|b| b.format)
        .collect();
    formats.sort();
    assert_eq!(formats, ["vma", "vma.zst"]);

    let Some(mut cfg) = crate::proxmox_client_common::sim_config() else {
        return;
    };
    cfg.seed.vzdump_defaults.clear();
    let Some(plain) = Env::start_with(Some(cfg), AuthKind::Token).await else {
        return;
    };
    let task = plain.client.vzdump(&pve1, &backup(None)).await.expect("vzdump");
    plain.wait(&task).await;
    let rows = backups(&plain.client, "pve1", "local", 100).await;
    assert_eq!(
        rows.iter().map(|b| b.format.as_str()).collect::<Vec<_>>(),
        ["vma"]
    );
}
