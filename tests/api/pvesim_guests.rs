//! Guests on the simulator: lists, power tasks with real UPIDs, config digests, locks,
//! snapshots, clone, migrate, the guest agent, HA and node endpoints.

use std::collections::BTreeMap;
use std::time::Duration;

use homelab_autopilot::pvesim::{Power, SimConfig};
use regex::Regex;
use serde_json::json;

use crate::pvesim_common::{Api, encode, eventually, fast_config};

const UPID_RE: &str = r"^UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):([0-9A-Fa-f]{8}):([^:\s/]+):([^:\s/]*):([^:\s/]+):$";

/// A simulator whose `vzdump` tasks take a minute of real time (for lock races).
async fn slow_backups() -> Api {
    let mut durations = BTreeMap::new();
    durations.insert("vzdump".to_string(), Duration::from_secs(60_000));
    Api::start(SimConfig {
        task_durations: durations,
        ..fast_config()
    })
    .await
}

#[tokio::test]
async fn guest_lists_and_status_use_pve_shapes() {
    let api = Api::fast().await;
    let qemu = api.get("/nodes/pve1/qemu").await.ok();
    let rows = qemu.data().as_array().expect("rows");
    let nextcloud = rows.iter().find(|r| r["vmid"] == 100).expect("vm 100");
    assert_eq!(nextcloud["name"], "nextcloud");
    assert_eq!(nextcloud["status"], "running");
    assert_eq!(nextcloud["tags"], "prod;web");
    assert!(nextcloud["uptime"].as_u64().is_some_and(|u| u > 0));
    let current = api.get("/nodes/pve1/qemu/100/status/current").await.ok();
    assert_eq!(current.data()["qmpstatus"], "running");
    assert_eq!(current.data()["agent"], 1);
    assert_eq!(current.data()["ha"]["managed"], 0);
    let ha = api.get("/nodes/pve1/qemu/101/status/current").await.ok();
    assert_eq!(ha.data()["ha"]["managed"], 1);
    let lxc = api.get("/nodes/pve2/lxc").await.ok();
    assert_eq!(lxc.data()[0]["type"], "lxc");
    let template = api.get("/nodes/pve3/qemu").await.ok();
    let t = template
        .data()
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["vmid"] == 9000)
        .cloned()
        .expect("template");
    assert_eq!(t["template"], 1);
    let missing = api.get("/nodes/pve2/qemu/100/status/current").await;
    assert_eq!(
        missing.reason.as_deref(),
        Some("Configuration file 'nodes/pve2/qemu-server/100.conf' does not exist")
    );
}

#[tokio::test]
async fn stop_and_start_run_as_tasks_with_token_user_in_the_upid() {
    let api = Api::fast().await;
    let (upid, status) = api.run_task("/nodes/pve1/qemu/100/status/stop", &[]).await;
    assert!(Regex::new(UPID_RE).expect("regex").is_match(&upid), "{upid}");
    assert!(upid.contains(":qmstop:100:root@pam!pvesim:"), "{upid}");
    assert_eq!(status["status"], "stopped");
    assert_eq!(status["exitstatus"], "OK");
    assert_eq!(status["user"], "root@pam");
    assert_eq!(status["tokenid"], "pvesim");
    assert_eq!(status["type"], "qmstop");
    assert!(status.get("endtime").is_none(), "status has no endtime: {status}");
    assert_eq!(
        api.task_log(&upid).await.last().map(String::as_str),
        Some("TASK OK")
    );
    assert_eq!(
        api.sim.state(|c| c.guest(100).map(|g| g.power)),
        Some(Power::Stopped)
    );
    let (_, started) = api.run_task("/nodes/pve1/qemu/100/status/start", &[]).await;
    assert_eq!(started["exitstatus"], "OK");
    let (_, again) = api.run_task("/nodes/pve1/qemu/100/status/start", &[]).await;
    assert_eq!(again["exitstatus"], "VM 100 already running");
    let lxc_start = api.post("/nodes/pve2/lxc/102/status/start", &[]).await;
    assert_eq!(
        (lxc_start.status, lxc_start.reason.as_deref()),
        (500, Some("CT 102 already running"))
    );
    let tasks = api.get("/nodes/pve1/tasks?typefilter=qmstart").await.ok();
    assert_eq!(tasks.body["total"], 2);
    assert!(
        tasks
            .data()
            .as_array()
            .expect("rows")
            .iter()
            .all(|t| t["status"].is_string() && t["endtime"].is_u64())
    );
}

#[tokio::test]
async fn ha_managed_start_runs_hastart() {
    let api = Api::fast().await;
    api.run_task("/nodes/pve1/qemu/101/status/stop", &[]).await;
    let (upid, status) = api.run_task("/nodes/pve1/qemu/101/status/start", &[]).await;
    assert!(upid.contains(":hastart:101:"), "{upid}");
    assert_eq!(status["exitstatus"], "OK");
    assert_eq!(api.task_log(&upid).await[0], "Requesting HA start for VM 101");
}

#[tokio::test]
async fn config_put_checks_digest_and_fills_in_macs() {
    let api = Api::fast().await;
    let config = api.get("/nodes/pve1/qemu/100/config").await.ok();
    assert_eq!(config.data()["cores"], 4);
    assert_eq!(config.data()["memory"], "4096");
    let digest = config.data()["digest"].as_str().expect("digest").to_string();
    api.put(
        "/nodes/pve1/qemu/100/config",
        &[
            ("digest", &digest),
            ("net1", "virtio,bridge=vmbr1"),
            ("tags", "prod;web;autopilot"),
        ],
    )
    .await
    .ok();
    let stale = api
        .put(
            "/nodes/pve1/qemu/100/config",
            &[("digest", &digest), ("memory", "8192")],
        )
        .await;
    assert_eq!(
        (stale.status, stale.reason.as_deref()),
        (
            500,
            Some("detected modified configuration - file changed by other user? Try again.")
        )
    );
    let after = api.get("/nodes/pve1/qemu/100/config").await.ok();
    assert_ne!(after.data()["digest"], digest);
    assert!(
        Regex::new("^virtio=BC:24:11:[0-9A-F:]{8},bridge=vmbr1$")
            .expect("re")
            .is_match(after.data()["net1"].as_str().unwrap_or(""))
    );
    assert_eq!(after.data()["tags"], "prod;web;autopilot");
    api.put("/nodes/pve1/qemu/100/config", &[("delete", "net1")])
        .await
        .ok();
    assert!(
        api.get("/nodes/pve1/qemu/100/config")
            .await
            .ok()
            .data()
            .get("net1")
            .is_none()
    );
}

#[tokio::test]
async fn backup_lock_blocks_config_and_snapshot_until_the_backup_ends() {
    let api = slow_backups().await;
    let backup = api
        .post("/nodes/pve1/vzdump", &[("vmid", "100"), ("storage", "local")])
        .await
        .ok();
    let upid = backup.data().as_str().expect("UPID").to_string();
    assert!(upid.contains(":vzdump:100:"), "{upid}");
    let config = api.get("/nodes/pve1/qemu/100/config").await.ok();
    assert_eq!(config.data()["lock"], "backup");
    let put = api
        .put("/nodes/pve1/qemu/100/config", &[("memory", "8192")])
        .await;
    assert_eq!(
        (put.status, put.reason.as_deref()),
        (500, Some("VM is locked (backup)"))
    );
    let (snap_upid, snap) = api
        .run_task("/nodes/pve1/qemu/100/snapshot", &[("snapname", "during")])
        .await;
    assert_eq!(snap["exitstatus"], "VM is locked (backup)");
    assert_eq!(
        api.task_log(&snap_upid).await.last().map(String::as_str),
        Some("TASK ERROR: VM is locked (backup)")
    );
    let resources = api.get("/cluster/resources?type=vm").await.ok();
    let row = resources
        .data()
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["vmid"] == 100)
        .cloned()
        .expect("row");
    assert_eq!(row["lock"], "backup");
    api.delete(&format!("/nodes/pve1/tasks/{}", encode(&upid)))
        .await
        .ok();
    let stopped = api.wait_task(&upid).await;
    assert_eq!(stopped["exitstatus"], "received interrupt");
    assert!(
        api.get("/nodes/pve1/qemu/100/config")
            .await
            .ok()
            .data()
            .get("lock")
            .is_none()
    );
}

#[tokio::test]
async fn guest_agent_answers_only_when_configured_running_and_responding() {
    let api = Api::fast().await;
    assert_eq!(
        api.post("/nodes/pve1/qemu/100/agent/ping", &[]).await.ok().data(),
        &json!({"result": {}})
    );
    let net = api
        .get("/nodes/pve1/qemu/100/agent/network-get-interfaces")
        .await
        .ok();
    let ens18 = net.data()["result"]
        .as_array()
        .expect("ifaces")
        .iter()
        .find(|i| i["name"] == "ens18")
        .cloned()
        .expect("ens18");
    assert_eq!(ens18["ip-addresses"][0]["ip-address-type"], "ipv4");
    let stopped = api.post("/nodes/pve2/qemu/103/agent/ping", &[]).await;
    assert_eq!(
        (stopped.status, stopped.reason.as_deref()),
        (500, Some("VM 103 is not running"))
    );
    api.put("/nodes/pve1/qemu/100/config", &[("delete", "agent")])
        .await
        .ok();
    let none = api.post("/nodes/pve1/qemu/100/agent/ping", &[]).await;
    assert_eq!(none.reason.as_deref(), Some("No QEMU guest agent configured"));
    assert_eq!(none.body["message"], "No QEMU guest agent configured\n");
    api.put("/nodes/pve1/qemu/100/config", &[("agent", "1")])
        .await
        .ok();
    api.sim.state_mut(|c| {
        c.guests
            .get_mut(&100)
            .map(|g| g.agent = homelab_autopilot::pvesim::state::AgentState::NotResponding)
    });
    let dead = api.post("/nodes/pve1/qemu/100/agent/ping", &[]).await;
    assert_eq!(dead.reason.as_deref(), Some("QEMU guest agent is not running"));
}

#[tokio::test]
async fn agent_exec_status_forgets_the_pid_after_reporting_exit() {
    let api = Api::fast().await;
    let exec = api
        .post_json(
            "/nodes/pve1/qemu/100/agent/exec",
            json!({"command": ["echo", "hello", "world"]}),
        )
        .await
        .ok();
    let pid = exec.data()["pid"].as_u64().expect("pid");
    let path = format!("/nodes/pve1/qemu/100/agent/exec-status?pid={pid}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let done = loop {
        let s = api.get(&path).await.ok();
        if s.data()["exited"] == 1 {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "exec never exited");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    assert_eq!(done.data()["exitcode"], 0);
    assert_eq!(done.data()["out-data"], "hello world\n");
    let again = api.get(&path).await;
    assert_eq!(
        (again.status, again.reason.as_deref()),
        (500, Some("Agent error: Invalid parameter 'pid'"))
    );
    let form = api
        .post("/nodes/pve1/qemu/100/agent/exec", &[("command", "apt-get")])
        .await
        .ok();
    assert!(form.data()["pid"].is_u64());
    let missing = api
        .post_json(
            "/nodes/pve1/qemu/100/agent/exec",
            json!({"command": ["no-such-program"]}),
        )
        .await;
    assert_eq!(missing.status, 500);
    let interfaces = api.get("/nodes/pve2/lxc/102/interfaces").await.ok();
    assert_eq!(interfaces.data()[1]["name"], "eth0");
    assert!(
        interfaces.data()[1]["inet"]
            .as_str()
            .is_some_and(|i| i.ends_with("/24"))
    );
}

#[tokio::test]
async fn delete_guest_with_purge_removes_it_and_its_ha_resource() {
    let api = Api::fast().await;
    let running = api.delete("/nodes/pve1/qemu/101").await;
    assert_eq!(
        running.reason.as_deref(),
        Some("unable to remove VM 101 - used in HA resources and purge parameter not set.")
    );
    api.run_task("/nodes/pve1/qemu/101/status/stop", &[]).await;
    let resp = api
        .request(
            reqwest::Method::DELETE,
            "/nodes/pve1/qemu/101?purge=1",
            crate::pvesim_common::Body::None,
            &api.auth,
        )
        .await
        .ok();
    let status = api.wait_task(resp.data().as_str().expect("UPID")).await;
    assert_eq!(status["exitstatus"], "OK");
    assert!(
        api.sim
            .state(|c| c.guest(101).is_none() && !c.ha.contains_key("vm:101"))
    );
    let running_ct = api.delete("/nodes/pve2/lxc/102").await;
    assert_eq!(
        running_ct.reason.as_deref(),
        Some("unable to destroy CT 102 - container is running")
    );
}

#[tokio::test]
async fn ha_resources_can_be_listed_added_and_migrated() {
    let api = Api::fast().await;
    let list = api.get("/cluster/ha/resources").await.ok();
    assert_eq!(list.data()[0]["sid"], "vm:101");
    assert_eq!(list.data()[0]["state"], "started");
    api.post(
        "/cluster/ha/resources",
        &[("sid", "ct:104"), ("state", "started")],
    )
    .await
    .ok();
    let dup = api.post("/cluster/ha/resources", &[("sid", "vm:101")]).await;
    assert_eq!(
        dup.reason.as_deref(),
        Some("resource ID 'vm:101' already defined")
    );
    let migrate = api
        .post("/cluster/ha/resources/vm:101/migrate", &[("node", "pve3")])
        .await
        .ok();
    assert_eq!(migrate.data()["requested-node"], "pve3");
    eventually("HA migration of vm:101", || {
        api.sim.state(|c| {
            c.guest(101)
                .is_some_and(|g| g.node == "pve3" && g.lock().is_none())
        })
    })
    .await;
    api.delete("/cluster/ha/resources/ct:104").await.ok();
}

#[tokio::test]
async fn apt_update_refreshes_the_update_list_and_versions_show_the_kernel() {
    let api = Api::fast().await;
    assert_eq!(api.get("/nodes/pve1/apt/update").await.ok().data(), &json!([]));
    let (upid, status) = api.run_task("/nodes/pve1/apt/update", &[]).await;
    assert!(upid.contains(":aptupdate::"), "{upid}");
    assert_eq!(status["exitstatus"], "OK");
    let updates = api.get("/nodes/pve1/apt/update").await.ok();
    let kernel = updates
        .data()
        .as_array()
        .expect("rows")
        .iter()
        .find(|p| p["Package"] == "proxmox-kernel-6.14")
        .cloned()
        .expect("kernel update");
    assert_eq!(kernel["OldVersion"], "6.14.11-4");
    let versions = api.get("/nodes/pve1/apt/versions").await.ok();
    let ve = versions
        .data()
        .as_array()
        .expect("rows")
        .iter()
        .find(|p| p["Package"] == "proxmox-ve")
        .cloned()
        .expect("proxmox-ve");
    assert_eq!(ve["RunningKernel"], "6.14.11-4-pve");
    let status = api.get("/nodes/pve1/status").await.ok();
    assert_eq!(status.data()["current-kernel"]["release"], "6.14.11-4-pve");
    assert!(
        status.data()["pveversion"]
            .as_str()
            .is_some_and(|v| v.starts_with("pve-manager/9.1.3/"))
    );
    let storage = api.get("/nodes/pve1/storage?content=backup").await.ok();
    let ids: Vec<&str> = storage
        .data()
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|s| s["storage"].as_str())
        .collect();
    assert_eq!(ids, vec!["local", "pbs"]);
}

#[tokio::test]
async fn feature_reports_snapshot_and_clone_capabilities() {
    let api = Api::fast().await;
    let snap = api
        .get("/nodes/pve1/qemu/100/feature?feature=snapshot")
        .await
        .ok();
    assert_eq!(snap.data()["hasFeature"], 1);
    assert_eq!(
        snap.data()["nodes"],
        json!(["pve1"]),
        "local storage: only this node"
    );
    let linked = api.get("/nodes/pve1/qemu/100/feature?feature=clone").await.ok();
    assert_eq!(linked.data()["hasFeature"], 0, "linked clones need a template");
    let template = api.get("/nodes/pve3/qemu/9000/feature?feature=clone").await.ok();
    assert_eq!(template.data()["hasFeature"], 1);
    assert_eq!(
        template.data()["nodes"],
        json!(["pve1", "pve2", "pve3"]),
        "shared storage: every node"
    );
    let lxc = api.get("/nodes/pve2/lxc/102/feature?feature=snapshot").await.ok();
    assert_eq!(lxc.data(), &json!({"hasFeature": 1}));
}
