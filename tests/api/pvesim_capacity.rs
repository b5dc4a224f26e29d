//! Storage capacity and per-node local storages: a backup that does not fit fails with
//! `No space left on device` and leaves no partial archive; a non-shared storage (`local`) is
//! per node, as in PVE.

use homelab_autopilot::pvesim::Fault;

use crate::pvesim_common::{Api, backup_files, content, fast_config, pbs_config};

async fn rows_on(api: &Api, node: &str, storage: &str) -> Vec<serde_json::Value> {
    let resp = api
        .get(&format!("/nodes/{node}/storage/{storage}/content?content=backup"))
        .await
        .ok();
    resp.data().as_array().expect("rows").clone()
}

#[tokio::test]
async fn a_local_storage_is_per_node() {
    let api = Api::start(fast_config()).await;
    // 102 (pihole) lives on pve2.
    let (_, s) = api
        .run_task("/nodes/pve2/vzdump", &[("vmid", "102"), ("storage", "local")])
        .await;
    assert_eq!(s["exitstatus"], "OK", "{s}");
    let on_pve2 = rows_on(&api, "pve2", "local").await;
    assert_eq!(on_pve2.len(), 1, "{on_pve2:?}");
    assert!(
        rows_on(&api, "pve1", "local").await.is_empty(),
        "pve1's local is another disk"
    );
    assert!(backup_files(api.sim.dump_dir(), ".tar.zst").is_empty());
    let volid = on_pve2[0]["volid"].as_str().expect("volid").to_string();
    let path = format!(
        "/nodes/pve1/storage/local/content/{}",
        crate::pvesim_common::encode(&volid)
    );
    let missing = api.get(&path).await;
    assert_eq!(missing.status, 500, "{}", missing.raw);
    assert!(missing.raw.contains("does not exist"), "{}", missing.raw);
    let on_pve2_info = api.get(&path.replace("/nodes/pve1/", "/nodes/pve2/")).await.ok();
    assert!(on_pve2_info.data()["size"].as_u64().is_some_and(|s| s > 0));
    // The cluster view counts it on pve2 only.
    let resources = api.get("/cluster/resources?type=storage").await.ok();
    let disk = |node: &str| {
        resources.data().as_array().and_then(|rows| {
            rows.iter()
                .find(|r| r["id"] == format!("storage/{node}/local"))
                .and_then(|r| r["disk"].as_u64())
        })
    };
    assert!(
        disk("pve2") > disk("pve1"),
        "{:?} vs {:?}",
        disk("pve2"),
        disk("pve1")
    );
}

#[tokio::test]
async fn a_full_storage_fails_the_backup_and_keeps_no_partial_archive() {
    let api = Api::start(pbs_config()).await;
    api.sim
        .inject("storage-full=local".parse().expect("fault"))
        .expect("fault");
    let (upid, s) = api
        .run_task("/nodes/pve1/vzdump", &[("vmid", "100"), ("storage", "local")])
        .await;
    assert_eq!(s["exitstatus"], "job errors", "{s}");
    let log = api.task_log(&upid).await;
    assert!(
        log.iter()
            .any(|l| l.contains("Backup of VM 100 failed") && l.contains("No space left on device")),
        "{log:?}"
    );
    assert!(
        backup_files(api.sim.dump_dir(), ".vma.zst").is_empty(),
        "no partial archive"
    );
    assert!(content(&api, "local").await.is_empty());
    let storages = api.get("/nodes/pve1/storage?storage=local").await.ok();
    assert_eq!(storages.data()[0]["avail"], 0, "{}", storages.raw);
    // The guest is not left locked.
    let config = api.get("/nodes/pve1/qemu/100/config").await.ok();
    assert!(config.data().get("lock").is_none(), "{}", config.raw);

    // A few bytes free are not enough either; freeing the storage lets it through.
    api.sim
        .inject(Fault::StorageFull {
            storage: "local".into(),
            avail_bytes: 4096,
        })
        .expect("fault");
    let (_, s) = api
        .run_task("/nodes/pve1/vzdump", &[("vmid", "100"), ("storage", "local")])
        .await;
    assert_eq!(s["exitstatus"], "job errors");
    api.sim
        .inject("storage-free=local".parse().expect("fault"))
        .expect("fault");
    let (_, s) = api
        .run_task("/nodes/pve1/vzdump", &[("vmid", "100"), ("storage", "local")])
        .await;
    assert_eq!(s["exitstatus"], "OK");
    assert_eq!(content(&api, "local").await.len(), 1);

    // PBS: the datastore is full, no snapshot is created.
    api.sim
        .inject("storage-full=pbs".parse().expect("fault"))
        .expect("fault");
    let (upid, s) = api
        .run_task("/nodes/pve1/vzdump", &[("vmid", "100"), ("storage", "pbs")])
        .await;
    assert_eq!(s["exitstatus"], "job errors");
    assert!(
        api.task_log(&upid)
            .await
            .iter()
            .any(|l| l.contains("No space left on device")),
    );
    assert!(content(&api, "pbs").await.is_empty());
    api.sim.clear_faults();
    let (_, s) = api
        .run_task("/nodes/pve1/vzdump", &[("vmid", "100"), ("storage", "pbs")])
        .await;
    assert_eq!(s["exitstatus"], "OK", "clear lifts storage-full");
}
