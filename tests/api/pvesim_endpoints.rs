//! Happy paths and wire shapes of the endpoints the other test files do not exercise.

use serde_json::json;

use crate::pvesim_common::{Api, Body, encode};

#[tokio::test]
async fn storage_config_endpoints_return_full_sections() {
    let api = Api::fast().await;
    let list = api.get("/storage").await.ok();
    let local = list
        .data()
        .as_array()
        .expect("rows")
        .iter()
        .find(|s| s["storage"] == "local")
        .cloned()
        .expect("local");
    assert_eq!(
        (local["type"].as_str(), local["content"].as_str()),
        (Some("dir"), Some("backup,iso,vztmpl"))
    );
    assert!(local["digest"].is_string());
    let ceph = api.get("/storage/ceph").await.ok();
    assert_eq!(ceph.data()["shared"], 1);
    let pbs = api.get("/storage?type=pbs").await.ok();
    assert_eq!(pbs.data()[0]["datastore"], "homelab");
    let missing = api.get("/storage/nope").await;
    assert_eq!(missing.reason.as_deref(), Some("storage 'nope' does not exist"));
    assert!(
        api.get("/access/domains")
            .await
            .ok()
            .data()
            .as_array()
            .is_some_and(|d| d.len() == 2)
    );
}

#[tokio::test]
async fn ha_resource_get_put_and_digestless_update() {
    let api = Api::fast().await;
    let one = api.get("/cluster/ha/resources/vm:101").await.ok();
    assert_eq!(
        (one.data()["sid"].as_str(), one.data()["type"].as_str()),
        (Some("vm:101"), Some("vm"))
    );
    api.put(
        "/cluster/ha/resources/vm:101",
        &[("state", "stopped"), ("comment", "maintenance")],
    )
    .await
    .ok();
    let after = api.get("/cluster/ha/resources/vm:101").await.ok();
    assert_eq!(
        (after.data()["state"].as_str(), after.data()["comment"].as_str()),
        (Some("stopped"), Some("maintenance"))
    );
    assert!(
        api.sim.state(|c| c.guest(101).is_some_and(|g| !g.power.is_up())),
        "stopped state stops the VM"
    );
    let missing = api.get("/cluster/ha/resources/vm:104").await;
    assert_eq!(missing.reason.as_deref(), Some("no such resource 'vm:104'"));
}

#[tokio::test]
async fn qemu_config_post_runs_as_a_qmconfig_task() {
    let api = Api::fast().await;
    let (upid, status) = api
        .run_task("/nodes/pve1/qemu/100/config", &[("memory", "6144")])
        .await;
    assert!(upid.contains(":qmconfig:100:"), "{upid}");
    assert_eq!(status["exitstatus"], "OK");
    assert_eq!(
        api.get("/nodes/pve1/qemu/100/config").await.ok().data()["memory"],
        "6144"
    );
    let (_, stale) = api
        .run_task(
            "/nodes/pve1/qemu/100/config",
            &[("digest", "0000"), ("memory", "1024")],
        )
        .await;
    assert_eq!(
        stale["exitstatus"],
        "detected modified configuration - file changed by other user? Try again."
    );
}

#[tokio::test]
async fn snapshot_config_get_and_description_update() {
    let api = Api::fast().await;
    let snap = api
        .get("/nodes/pve1/qemu/100/snapshot/before-upgrade/config")
        .await
        .ok();
    assert_eq!(snap.data()["name"], "nextcloud");
    assert!(snap.data()["snaptime"].is_i64());
    api.put(
        "/nodes/pve1/qemu/100/snapshot/before-upgrade/config",
        &[("description", "kept")],
    )
    .await
    .ok();
    let again = api
        .get("/nodes/pve1/qemu/100/config?snapshot=before-upgrade")
        .await
        .ok();
    assert_eq!(again.data()["description"], "kept");
    assert!(again.data()["digest"].is_string());
}

#[tokio::test]
async fn reboot_shutdown_and_templates() {
    let api = Api::fast().await;
    let (upid, reboot) = api.run_task("/nodes/pve1/qemu/100/status/reboot", &[]).await;
    assert!(upid.contains(":qmreboot:100:"), "{upid}");
    assert_eq!(reboot["exitstatus"], "OK");
    let (_, down) = api.run_task("/nodes/pve2/lxc/102/status/shutdown", &[]).await;
    assert_eq!(down["exitstatus"], "OK");
    let not_running = api.post("/nodes/pve2/lxc/102/status/stop", &[]).await;
    assert_eq!(not_running.reason.as_deref(), Some("CT 102 not running"));
    api.post("/nodes/pve2/lxc/102/template", &[]).await.ok();
    assert_eq!(
        api.get("/nodes/pve2/lxc/102/config").await.ok().data()["rootfs"],
        "local-lvm:base-102-disk-0,size=8G"
    );
    let running = api.post("/nodes/pve1/qemu/100/template", &[]).await;
    assert_eq!(
        running.reason.as_deref(),
        Some("you can't convert a VM to template if VM is running")
    );
    let (_, template) = api.run_task("/nodes/pve2/qemu/103/template", &[]).await;
    assert_eq!(template["exitstatus"], "OK");
    assert_eq!(
        api.get("/nodes/pve2/qemu/103/config").await.ok().data()["template"],
        1
    );
}

#[tokio::test]
async fn create_vm_and_container_allocate_disks_and_macs() {
    let api = Api::fast().await;
    let (upid, vm) = api
        .run_task(
            "/nodes/pve3/qemu",
            &[
                ("vmid", "300"),
                ("name", "ap-new"),
                ("scsi0", "ceph:8"),
                ("net0", "virtio,bridge=vmbr0"),
                ("memory", "1024"),
            ],
        )
        .await;
    assert!(upid.contains(":qmcreate:300:"), "{upid}");
    assert_eq!(vm["exitstatus"], "OK");
    let config = api.get("/nodes/pve3/qemu/300/config").await.ok();
    assert_eq!(config.data()["scsi0"], "ceph:vm-300-disk-0,size=8G");
    assert!(
        config.data()["net0"]
            .as_str()
            .is_some_and(|n| n.starts_with("virtio=BC:24:11:"))
    );
    let exists = api.post("/nodes/pve3/qemu", &[("vmid", "300")]).await;
    assert_eq!(
        exists.reason.as_deref(),
        Some("VM 300 already exists on node 'pve3'")
    );
    let template = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst";
    let (_, ct) = api
        .run_task(
            "/nodes/pve3/lxc",
            &[
                ("vmid", "301"),
                ("ostemplate", template),
                ("storage", "ceph"),
                ("rootfs", "ceph:4"),
                ("start", "1"),
            ],
        )
        .await;
    assert_eq!(ct["exitstatus"], "OK");
    let ct_config = api.get("/nodes/pve3/lxc/301/config").await.ok();
    assert_eq!(ct_config.data()["hostname"], "CT301");
    assert_eq!(ct_config.data()["ostype"], "debian");
    assert!(api.sim.state(|c| c.guest(301).is_some_and(|g| g.power.is_up())));
}

#[tokio::test]
async fn agent_host_name_osinfo_and_task_log_paging() {
    let api = Api::fast().await;
    let host = api.get("/nodes/pve1/qemu/100/agent/get-host-name").await.ok();
    assert_eq!(host.data(), &json!({"result": {"host-name": "nextcloud"}}));
    let os = api.get("/nodes/pve1/qemu/100/agent/get-osinfo").await.ok();
    assert_eq!(os.data()["result"]["id"], "debian");
    let (upid, _) = api.run_task("/nodes/pve1/vzdump", &[("vmid", "100")]).await;
    let path = format!("/nodes/pve1/tasks/{}/log?start=2&limit=3", encode(&upid));
    let page = api.get(&path).await.ok();
    let lines = page.data().as_array().expect("lines");
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["n"], 3);
    assert!(page.body["total"].as_u64().is_some_and(|t| t > 5));
    let unknown = api
        .get("/nodes/pve1/tasks/UPID:pve1:00000001:00000001:00000001:qmstart:100:root@pam:/status")
        .await;
    assert_eq!(unknown.body["errors"]["upid"], "no such task");
    let stop = api
        .request(
            reqwest::Method::DELETE,
            &format!("/nodes/pve1/tasks/{}", encode(&upid)),
            Body::None,
            &api.auth,
        )
        .await;
    assert_eq!(stop.status, 200, "stopping a finished task is a no-op");
}
