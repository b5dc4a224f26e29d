//! Snapshots, clone and migrate on the simulator.

use homelab_autopilot::pvesim::{Power, SimConfig};
use serde_json::{Value, json};

use crate::pvesim_common::{Api, fast_config};

fn snapshot_names(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("list")
        .iter()
        .map(|s| s["name"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
async fn snapshots_chain_parents_roll_back_and_delete_like_pve() {
    let api = Api::fast().await;
    api.run_task(
        "/nodes/pve1/qemu/100/snapshot",
        &[("snapname", "s1"), ("description", "first")],
    )
    .await;
    api.run_task(
        "/nodes/pve1/qemu/100/snapshot",
        &[("snapname", "s2"), ("vmstate", "1")],
    )
    .await;
    let list = api.get("/nodes/pve1/qemu/100/snapshot").await.ok();
    let names = snapshot_names(list.data());
    assert!(
        names.contains(&"before-upgrade".into())
            && names.contains(&"s1".into())
            && names.contains(&"current".into())
    );
    let by_name = |n: &str| {
        list.data()
            .as_array()
            .expect("list")
            .iter()
            .find(|s| s["name"] == n)
            .cloned()
            .expect("snapshot")
    };
    assert_eq!(by_name("s1")["parent"], "before-upgrade");
    assert_eq!(by_name("s1")["vmstate"], 0);
    assert_eq!(by_name("s2")["vmstate"], 1);
    assert!(by_name("s1")["snaptime"].is_i64());
    assert_eq!(by_name("current")["parent"], "s2");
    assert_eq!(by_name("current")["description"], "You are here!");
    assert_eq!(by_name("current")["running"], 1);
    let (_, dup) = api
        .run_task("/nodes/pve1/qemu/100/snapshot", &[("snapname", "s1")])
        .await;
    assert_eq!(dup["exitstatus"], "snapshot name 's1' already used");
    let reserved = api
        .post("/nodes/pve1/qemu/100/snapshot", &[("snapname", "current")])
        .await;
    assert_eq!(
        reserved.reason.as_deref(),
        Some("unable to use snapshot name 'current' (reserved name)")
    );
    // lvm-thin allows rolling back to an older snapshot; the VM ends up stopped (s1 has no RAM).
    let (_, rb) = api
        .run_task("/nodes/pve1/qemu/100/snapshot/s1/rollback", &[])
        .await;
    assert_eq!(rb["exitstatus"], "OK");
    assert_eq!(
        api.get("/nodes/pve1/qemu/100/config").await.ok().data()["parent"],
        "s1"
    );
    assert_eq!(
        api.sim.state(|c| c.guest(100).map(|g| g.power)),
        Some(Power::Stopped)
    );
    let deleted = api
        .request(
            reqwest::Method::DELETE,
            "/nodes/pve1/qemu/100/snapshot/s1",
            crate::pvesim_common::Body::None,
            &api.auth,
        )
        .await
        .ok();
    let del_status = api.wait_task(deleted.data().as_str().expect("UPID")).await;
    assert_eq!(del_status["exitstatus"], "OK");
    let after = api.get("/nodes/pve1/qemu/100/snapshot").await.ok();
    let s2 = after
        .data()
        .as_array()
        .expect("list")
        .iter()
        .find(|s| s["name"] == "s2")
        .cloned()
        .expect("s2");
    assert_eq!(s2["parent"], "before-upgrade");
}

#[tokio::test]
async fn rollback_on_zfs_only_to_the_most_recent_snapshot() {
    let mut seed = homelab_autopilot::pvesim::SeedSpec::default_cluster();
    seed.storages.push(
        serde_yaml::from_str("{id: tank, type: zfspool, content: [images, rootdir]}").expect("storage"),
    );
    seed.guests.push(
        serde_yaml::from_str(
            "{vmid: 300, type: qemu, node: pve1, storage: tank, snapshots: [{name: old}, {name: new}]}",
        )
        .expect("guest"),
    );
    let api = Api::start(SimConfig {
        seed,
        ..fast_config()
    })
    .await;
    let (_, old) = api
        .run_task("/nodes/pve1/qemu/300/snapshot/old/rollback", &[])
        .await;
    assert_eq!(
        old["exitstatus"],
        "can't rollback, 'old' is not most recent snapshot on 'tank:vm-300-disk-0'"
    );
    let (_, latest) = api
        .run_task("/nodes/pve1/qemu/300/snapshot/new/rollback", &[])
        .await;
    assert_eq!(latest["exitstatus"], "OK");
}

#[tokio::test]
async fn clone_full_local_and_linked_cross_node_follow_storage_rules() {
    let api = Api::fast().await;
    let cross = api
        .post(
            "/nodes/pve1/qemu/100/clone",
            &[("newid", "200"), ("target", "pve2")],
        )
        .await;
    assert_eq!(
        cross.reason.as_deref(),
        Some("can't clone VM to node 'pve2' (VM uses local storage)")
    );
    let (upid, status) = api
        .run_task(
            "/nodes/pve1/qemu/100/clone",
            &[("newid", "200"), ("name", "ap-replica")],
        )
        .await;
    assert!(upid.contains(":qmclone:100:"), "{upid}");
    assert_eq!(status["exitstatus"], "OK");
    let clone = api.get("/nodes/pve1/qemu/200/config").await.ok();
    assert_eq!(clone.data()["name"], "ap-replica");
    assert_eq!(
        clone.data()["scsi0"],
        "local-lvm:vm-200-disk-0,iothread=1,size=64G"
    );
    let source = api.get("/nodes/pve1/qemu/100/config").await.ok();
    assert_ne!(
        clone.data()["net0"],
        source.data()["net0"],
        "clone gets a new MAC"
    );
    assert!(clone.data().get("lock").is_none());
    let linked = api
        .post("/nodes/pve1/qemu/100/clone", &[("newid", "201"), ("full", "0")])
        .await;
    assert_eq!(
        linked.reason.as_deref(),
        Some("Linked clone feature is not supported for drive 'scsi0'")
    );
    let exists = api.post("/nodes/pve1/qemu/100/clone", &[("newid", "101")]).await;
    assert_eq!(
        exists.reason.as_deref(),
        Some("unable to create VM 101: config file already exists")
    );
    let (_, from_template) = api
        .run_task(
            "/nodes/pve3/qemu/9000/clone",
            &[("newid", "202"), ("target", "pve1"), ("full", "0")],
        )
        .await;
    assert_eq!(from_template["exitstatus"], "OK");
    let linked_config = api.get("/nodes/pve1/qemu/202/config").await.ok();
    assert_eq!(
        linked_config.data()["scsi0"],
        "ceph:base-9000-disk-0/vm-202-disk-0,iothread=1,size=16G"
    );
}

#[tokio::test]
async fn migrate_precondition_and_online_migration_move_the_guest() {
    let api = Api::fast().await;
    let pre = api.get("/nodes/pve1/qemu/100/migrate").await.ok();
    assert_eq!(pre.data()["running"], 1);
    assert_eq!(pre.data()["allowed_nodes"], json!(["pve2", "pve3"]));
    assert_eq!(pre.data()["local_disks"][0]["volid"], "local-lvm:vm-100-disk-0");
    let lxc_pre = api.get("/nodes/pve2/lxc/102/migrate").await.ok();
    assert!(lxc_pre.data().get("allowed-nodes").is_some(), "{}", lxc_pre.raw);
    let offline = api
        .post("/nodes/pve1/qemu/100/migrate", &[("target", "pve2")])
        .await;
    assert_eq!(
        offline.reason.as_deref(),
        Some("can't migrate running VM without --online")
    );
    let (_, local_disks) = api
        .run_task(
            "/nodes/pve1/qemu/100/migrate",
            &[("target", "pve2"), ("online", "1")],
        )
        .await;
    assert_eq!(
        local_disks["exitstatus"],
        "can't live migrate attached local disks without with-local-disks option"
    );
    let (upid, ok) = api
        .run_task(
            "/nodes/pve1/qemu/100/migrate",
            &[("target", "pve2"), ("online", "1"), ("with-local-disks", "1")],
        )
        .await;
    assert!(upid.contains(":qmigrate:100:"), "{upid}");
    assert_eq!(ok["exitstatus"], "OK");
    api.get("/nodes/pve2/qemu/100/status/current").await.ok();
    let gone = api.get("/nodes/pve1/qemu/100/status/current").await;
    assert_eq!(gone.status, 500);
    assert_eq!(
        api.sim
            .state(|c| c.guest(100).map(|g| (g.node.clone(), g.power.is_up()))),
        Some(("pve2".into(), true))
    );
    assert!(
        api.task_log(&upid)
            .await
            .iter()
            .any(|l| l.contains("migration finished successfully"))
    );
    let lxc = api
        .post("/nodes/pve2/lxc/102/migrate", &[("target", "pve3")])
        .await;
    assert_eq!(
        lxc.reason.as_deref(),
        Some("running container can only be migrated in restart mode")
    );
    let (_, restart) = api
        .run_task(
            "/nodes/pve2/lxc/102/migrate",
            &[("target", "pve3"), ("restart", "1")],
        )
        .await;
    assert_eq!(restart["exitstatus"], "OK");
}
