//! Restores on the simulator: VM `archive` and container `ostemplate` + `restore`, from dir
//! and PBS storages, with `unique`, `force` and target storage.

use std::time::Duration;

use crate::pvesim_common::{Api, backup_files, content, encode, sha};

#[tokio::test]
async fn restore_reads_the_archive_back_and_refuses_existing_vmids_without_force() {
    let api = Api::fast().await;
    api.run_task("/nodes/pve1/vzdump", &[("vmid", "100"), ("compress", "zstd")])
        .await;
    let backed_up = api.sim.disk_image(100).expect("disk");
    let volid = content(&api, "local").await[0]["volid"]
        .as_str()
        .expect("volid")
        .to_string();
    let config = api
        .get(&format!(
            "/nodes/pve1/vzdump/extractconfig?volume={}",
            encode(&volid)
        ))
        .await
        .ok();
    assert!(
        config
            .data()
            .as_str()
            .is_some_and(|c| c.contains("name: nextcloud") && c.contains("scsi0: local-lvm:vm-100-disk-0"))
    );
    let exists = api
        .post("/nodes/pve1/qemu", &[("vmid", "100"), ("archive", &volid)])
        .await;
    assert_eq!(
        exists.reason.as_deref(),
        Some("unable to restore vm 100 - config file already exists")
    );
    let elsewhere = api
        .post("/nodes/pve2/qemu", &[("vmid", "100"), ("archive", &volid)])
        .await;
    assert_eq!(
        elsewhere.reason.as_deref(),
        Some("unable to restore vm 100 - already existing on cluster node 'pve1'")
    );
    api.sim.advance_clock(Duration::from_secs(3 * 86_400));
    let resp = api
        .post(
            "/nodes/pve2/qemu",
            &[
                ("vmid", "150"),
                ("archive", &volid),
                ("unique", "1"),
                ("storage", "ceph"),
                ("name", "ap-restore-test"),
            ],
        )
        .await
        .ok();
    let upid = resp.data().as_str().expect("UPID").to_string();
    assert!(upid.contains(":qmrestore:150:"), "{upid}");
    let status = api.wait_task(&upid).await;
    assert_eq!(status["exitstatus"], "OK", "{:?}", api.task_log(&upid).await);
    let restored = api.get("/nodes/pve2/qemu/150/config").await.ok();
    assert_eq!(restored.data()["name"], "ap-restore-test");
    assert_eq!(restored.data()["scsi0"], "ceph:vm-150-disk-0,iothread=1,size=64G");
    assert!(restored.data().get("lock").is_none());
    assert_ne!(
        restored.data()["net0"],
        api.get("/nodes/pve1/qemu/100/config").await.ok().data()["net0"],
        "unique renews MACs"
    );
    assert_eq!(
        sha(api.sim.disk_image(150)),
        sha(Some(backed_up)),
        "restored disk equals the backed-up disk"
    );
}

#[tokio::test]
async fn restore_of_a_truncated_archive_fails_the_task_and_removes_the_guest() {
    let api = Api::fast().await;
    api.run_task("/nodes/pve1/vzdump", &[("vmid", "100"), ("compress", "zstd")])
        .await;
    let name = backup_files(api.sim.dump_dir(), ".vma.zst").remove(0);
    let path = api.sim.dump_dir().join(&name);
    let bytes = std::fs::read(&path).expect("archive");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("truncate");
    let (upid, status) = api
        .run_task(
            "/nodes/pve1/qemu",
            &[("vmid", "151"), ("archive", &format!("local:backup/{name}"))],
        )
        .await;
    assert_eq!(status["status"], "stopped");
    assert_ne!(status["exitstatus"], "OK", "{:?}", api.task_log(&upid).await);
    assert!(api.sim.state(|c| c.guest(151).is_none()));
}

#[tokio::test]
async fn lxc_restore_uses_ostemplate_restore_and_target_storage() {
    let api = Api::fast().await;
    api.run_task("/nodes/pve2/vzdump", &[("vmid", "102"), ("compress", "zstd")])
        .await;
    let volid = crate::pvesim_common::content_on(&api, "pve2", "local").await[0]["volid"]
        .as_str()
        .expect("volid")
        .to_string();
    let no_rootdir = api
        .post(
            "/nodes/pve2/lxc",
            &[("vmid", "160"), ("ostemplate", &volid), ("restore", "1")],
        )
        .await;
    assert_eq!(
        no_rootdir.reason.as_deref(),
        Some("storage 'local' does not support container directories")
    );
    let exists = api
        .post(
            "/nodes/pve2/lxc",
            &[
                ("vmid", "102"),
                ("ostemplate", &volid),
                ("restore", "1"),
                ("storage", "local-lvm"),
            ],
        )
        .await;
    assert_eq!(
        exists.reason.as_deref(),
        Some("CT 102 already exists on node 'pve2'")
    );
    let (upid, status) = api
        .run_task(
            "/nodes/pve2/lxc",
            &[
                ("vmid", "160"),
                ("ostemplate", &volid),
                ("restore", "1"),
                ("storage", "local-lvm"),
                ("hostname", "ap-pihole"),
            ],
        )
        .await;
    assert!(upid.contains(":vzrestore:160:"), "{upid}");
    assert_eq!(status["exitstatus"], "OK");
    let config = api.get("/nodes/pve2/lxc/160/config").await.ok();
    assert_eq!(config.data()["hostname"], "ap-pihole");
    assert_eq!(config.data()["rootfs"], "local-lvm:vm-160-disk-0,size=8G");
    assert_eq!(config.data()["memory"], 512);
}

#[tokio::test]
async fn pbs_storage_keeps_backups_in_memory_and_restores_them() {
    let api = Api::fast().await;
    let (_, status) = api
        .run_task("/nodes/pve1/vzdump", &[("vmid", "100"), ("storage", "pbs")])
        .await;
    assert_eq!(status["exitstatus"], "OK");
    let rows = content(&api, "pbs").await;
    let volid = rows[0]["volid"].as_str().expect("volid").to_string();
    assert!(
        regex::Regex::new(r"^pbs:backup/vm/100/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
            .expect("re")
            .is_match(&volid),
        "{volid}"
    );
    assert_eq!(rows[0]["verification"]["state"], "ok");
    let (_, restore) = api
        .run_task("/nodes/pve1/qemu", &[("vmid", "170"), ("archive", &volid)])
        .await;
    assert_eq!(restore["exitstatus"], "OK");
    assert_eq!(sha(api.sim.disk_image(170)), sha(api.sim.disk_image(100)));
}

#[tokio::test]
async fn restore_with_force_overwrites_a_stopped_guest() {
    let api = Api::fast().await;
    api.run_task("/nodes/pve2/vzdump", &[("vmid", "103")]).await;
    let volid = crate::pvesim_common::content_on(&api, "pve2", "local").await[0]["volid"]
        .as_str()
        .expect("volid")
        .to_string();
    api.put("/nodes/pve2/qemu/103/config", &[("memory", "1024")])
        .await
        .ok();
    let (upid, status) = api
        .run_task(
            "/nodes/pve2/qemu",
            &[("vmid", "103"), ("archive", &volid), ("force", "1")],
        )
        .await;
    assert_eq!(status["exitstatus"], "OK", "{:?}", api.task_log(&upid).await);
    assert_eq!(
        api.get("/nodes/pve2/qemu/103/config").await.ok().data()["memory"],
        "8192"
    );
}
