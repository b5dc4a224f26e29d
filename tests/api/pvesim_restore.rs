//! Restores on the simulator: VM `archive` and container `ostemplate` + `restore`, from dir
//! and PBS storages, with `unique`, `force` and target storage.

use std::time::Duration;

use serde_json::json;

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
    // Over a VMID that lives on another node: from a backup pve2 sees too (PBS is shared;
    // `local` is per node and only pve1 holds the file).
    api.run_task("/nodes/pve1/vzdump", &[("vmid", "100"), ("storage", "pbs")])
        .await;
    let pbs_volid = content(&api, "pbs").await[0]["volid"]
        .as_str()
        .expect("pbs volid")
        .to_string();
    let elsewhere = api
        .post("/nodes/pve2/qemu", &[("vmid", "100"), ("archive", &pbs_volid)])
        .await;
    assert_eq!(
        elsewhere.reason.as_deref(),
        Some("unable to restore vm 100 - already existing on cluster node 'pve1'")
    );
    api.sim.advance_clock(Duration::from_secs(3 * 86_400));
    let resp = api
        .post(
            "/nodes/pve1/qemu",
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
    let restored = api.get("/nodes/pve1/qemu/150/config").await.ok();
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

/// `local` is per node: PVE resolves a restore's archive on the target node itself
/// (`abs_filesystem_path`), so a backup on another node's `local` is not found there. qemu-server
/// does it before locking the VMID (a 500 on the POST), pve-container in the `vzrestore` worker
/// (the task fails and the new CT is gone); on the node holding the file both restores work.
#[tokio::test]
async fn restoring_another_nodes_local_backup_is_refused_while_the_owning_node_restores_it() {
    let api = Api::fast().await;
    api.run_task("/nodes/pve2/vzdump", &[("vmid", "103"), ("compress", "zstd")])
        .await;
    api.run_task("/nodes/pve2/vzdump", &[("vmid", "102"), ("compress", "zstd")])
        .await;
    let on_pve2 = crate::pvesim_common::content_on(&api, "pve2", "local").await;
    let volid_of = |vmid: u64| {
        on_pve2
            .iter()
            .find(|r| r["vmid"] == vmid)
            .and_then(|r| r["volid"].as_str())
            .expect("backup on pve2's local")
            .to_string()
    };
    let (vm_volid, ct_volid) = (volid_of(103), volid_of(102));
    assert!(
        crate::pvesim_common::content_on(&api, "pve1", "local")
            .await
            .is_empty(),
        "pve1's local does not hold pve2's files"
    );

    // qemu: refused synchronously, nothing locked or created.
    let vm = api
        .post("/nodes/pve1/qemu", &[("vmid", "160"), ("archive", &vm_volid)])
        .await;
    assert_eq!(vm.status, 500, "{}", vm.raw);
    let cant_find = format!("can't find file '{vm_volid}'");
    assert_eq!(vm.reason.as_deref(), Some(cant_find.as_str()));
    assert!(api.sim.state(|c| c.guest(160).is_none()));
    let config = api
        .get(&format!(
            "/nodes/pve1/vzdump/extractconfig?volume={}",
            encode(&vm_volid)
        ))
        .await;
    assert_eq!(config.status, 500, "{}", config.raw);
    assert_eq!(config.reason.as_deref(), Some(cant_find.as_str()));

    // lxc: the worker fails after "recovering backed-up configuration", the CT is removed.
    let (upid, status) = api
        .run_task(
            "/nodes/pve1/lxc",
            &[
                ("vmid", "161"),
                ("ostemplate", &ct_volid),
                ("restore", "1"),
                ("storage", "local-lvm"),
            ],
        )
        .await;
    assert!(upid.contains(":vzrestore:161:"), "{upid}");
    let log = api.task_log(&upid).await;
    assert_eq!(
        status["exitstatus"],
        format!("can't find file '{ct_volid}'"),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains(&format!("recovering backed-up configuration from '{ct_volid}'"))),
        "{log:?}"
    );
    assert!(api.sim.state(|c| c.guest(161).is_none()));

    // On pve2, which holds both files, the same restores work.
    let config = api
        .get(&format!(
            "/nodes/pve2/vzdump/extractconfig?volume={}",
            encode(&vm_volid)
        ))
        .await
        .ok();
    assert!(
        config
            .data()
            .as_str()
            .is_some_and(|c| c.contains("name: jellyfin"))
    );
    let restores: [(&str, &[(&str, &str)]); 2] = [
        (
            "/nodes/pve2/qemu",
            &[("vmid", "160"), ("archive", &vm_volid), ("unique", "1")],
        ),
        (
            "/nodes/pve2/lxc",
            &[
                ("vmid", "161"),
                ("ostemplate", &ct_volid),
                ("restore", "1"),
                ("storage", "local-lvm"),
            ],
        ),
    ];
    for (path, params) in restores {
        let (upid, status) = api.run_task(path, params).await;
        assert_eq!(status["exitstatus"], "OK", "{:?}", api.task_log(&upid).await);
    }
    api.get("/nodes/pve2/qemu/160/config").await.ok();
    api.get("/nodes/pve2/lxc/161/config").await.ok();
}

/// The simulator writes VMA for VMs, but a legacy `vzdump-qemu-*.tar` placed by hand is listed
/// like PVE lists it, and qemu-server's `restore_tar_archive` refuses config overrides for it in
/// the worker: the task fails and, as with any qmrestore failure, the empty VM stays behind.
#[tokio::test]
async fn a_qemu_tar_archive_cannot_take_config_overrides_like_qemu_server() {
    let api = Api::fast().await;
    let name = "vzdump-qemu-100-2024_06_01-02_00_00.tar";
    let dir = crate::pvesim_common::node_backup_dir(&api.sim, "local", "pve1");
    std::fs::create_dir_all(&dir).expect("dump dir");
    std::fs::write(dir.join(name), b"legacy tar archive").expect("archive");
    let volid = format!("local:backup/{name}");
    let row = content(&api, "local")
        .await
        .into_iter()
        .find(|r| r["volid"] == volid.as_str())
        .expect("the tar archive is listed");
    assert_eq!(
        (row["format"].as_str(), row["subtype"].as_str()),
        (Some("tar"), Some("qemu"))
    );
    let (upid, status) = api
        .run_task(
            "/nodes/pve1/qemu",
            &[
                ("vmid", "152"),
                ("archive", &volid),
                ("name", "ap-restore-test"),
                ("memory", "2048"),
            ],
        )
        .await;
    assert_eq!(
        status["exitstatus"],
        "cannot pass along options (memory name) when restoring from tar archive",
        "{:?}",
        api.task_log(&upid).await
    );
    assert_empty_leftover(&api, "pve1", 152, &upid).await;
}

#[tokio::test]
async fn restore_of_a_truncated_archive_fails_and_leaves_the_empty_vm_behind_like_pve() {
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
    assert_empty_leftover(&api, "pve1", 151, &upid).await;
}

/// qemu-server removes the `create` lock and dies: the config file stays, empty, and the VMID
/// stays taken until someone deletes the VM.
async fn assert_empty_leftover(api: &Api, node: &str, vmid: u32, upid: &str) {
    let log = api.task_log(upid).await;
    assert!(
        log.iter()
            .any(|l| l.contains(&format!("VM {vmid} state is NOT cleaned up"))),
        "{log:?}"
    );
    let config = api.get(&format!("/nodes/{node}/qemu/{vmid}/config")).await.ok();
    let keys: Vec<&String> = config.data().as_object().expect("config").keys().collect();
    assert_eq!(keys, ["digest"], "an empty, unlocked config is left");
    let taken = api.get(&format!("/cluster/nextid?vmid={vmid}")).await;
    assert_eq!(taken.status, 400, "{}", taken.raw);
    let destroy = api
        .delete(&format!(
            "/nodes/{node}/qemu/{vmid}?purge=1&destroy-unreferenced-disks=1"
        ))
        .await
        .ok()
        .data()
        .as_str()
        .expect("UPID")
        .to_string();
    let done = api.wait_task(&destroy).await;
    assert_eq!(done["exitstatus"], "OK", "{:?}", api.task_log(&destroy).await);
    assert!(api.sim.state(|c| c.guest(vmid).is_none()));
}

#[tokio::test]
async fn a_restore_failing_half_way_frees_its_volumes_but_keeps_the_vm_config() {
    let api = Api::fast().await;
    api.run_task("/nodes/pve1/vzdump", &[("vmid", "100"), ("storage", "pbs")])
        .await;
    let volid = content(&api, "pbs").await[0]["volid"]
        .as_str()
        .expect("volid")
        .to_string();
    api.sim
        .fail_next_task("qmrestore", "restore failed: short read on chunk 4f1c...");
    let (upid, status) = api
        .run_task("/nodes/pve1/qemu", &[("vmid", "190"), ("archive", &volid)])
        .await;
    assert_eq!(
        status["exitstatus"],
        "restore failed: short read on chunk 4f1c..."
    );
    let log = api.task_log(&upid).await;
    assert!(log.iter().any(|l| l.contains("restore-drive: 25%")), "{log:?}");
    assert!(!log.iter().any(|l| l.contains("restore-drive: 50%")), "{log:?}");
    assert!(
        log.iter()
            .any(|l| l == "temporary volume 'local-lvm:vm-190-disk-0' sucessfuly removed"),
        "{log:?}"
    );
    assert_empty_leftover(&api, "pve1", 190, &upid).await;

    // A container restore that fails half-way leaves nothing (pve-container destroys a config
    // it created).
    api.run_task("/nodes/pve2/vzdump", &[("vmid", "102"), ("compress", "zstd")])
        .await;
    // `local` is per node: the backup made on pve2 is listed on pve2.
    let ct = crate::pvesim_common::content_on(&api, "pve2", "local").await;
    let ct_volid = ct
        .iter()
        .filter_map(|r| r["volid"].as_str())
        .find(|v| v.contains("lxc-102"))
        .expect("ct backup")
        .to_string();
    api.sim
        .fail_next_task("vzrestore", "unexpected end of tar archive");
    let (_, status) = api
        .run_task(
            "/nodes/pve2/lxc",
            &[
                ("vmid", "191"),
                ("ostemplate", &ct_volid),
                ("restore", "1"),
                ("storage", "local-lvm"),
            ],
        )
        .await;
    assert_eq!(status["exitstatus"], "unexpected end of tar archive");
    assert!(api.sim.state(|c| c.guest(191).is_none()));
}

#[tokio::test]
async fn a_restore_into_a_full_storage_fails_half_way_and_leaves_the_empty_vm() {
    let api = Api::fast().await;
    api.run_task("/nodes/pve1/vzdump", &[("vmid", "100"), ("storage", "pbs")])
        .await;
    let volid = content(&api, "pbs").await[0]["volid"]
        .as_str()
        .expect("volid")
        .to_string();
    // pve1's local-lvm holds about 21 GiB (it is per node); nextcloud's 64 GiB disk does not fit
    // in what is left.
    api.sim.state_mut(|c| {
        if let Some(s) = c.storages.get_mut("local-lvm") {
            s.total = 34 << 30;
        }
    });
    let storages = api.get("/nodes/pve1/storage?content=images").await.ok();
    let lvm = storages
        .data()
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["storage"] == "local-lvm")
        .cloned()
        .expect("local-lvm");
    assert!(lvm["avail"].as_u64().expect("avail") < 16 << 30, "{lvm}");
    let (upid, status) = api
        .run_task("/nodes/pve1/qemu", &[("vmid", "240"), ("archive", &volid)])
        .await;
    assert_eq!(
        status["exitstatus"],
        "error writing 'local-lvm:vm-240-disk-0': No space left on device"
    );
    assert_empty_leftover(&api, "pve1", 240, &upid).await;
}

fn restore_log_duration(log: &[String]) -> f64 {
    log.iter()
        .find_map(|l| {
            l.strip_prefix("restore image complete (")
                .and_then(|r| r.split("duration=").nth(1))
                .and_then(|r| r.split('s').next())
                .and_then(|d| d.parse().ok())
        })
        .unwrap_or_else(|| panic!("no duration in {log:?}"))
}

#[tokio::test]
async fn restore_time_follows_the_disk_size_bwlimit_and_time_scale() {
    let api = Api::fast().await;
    for (node, vmid) in [("pve1", "100"), ("pve2", "103")] {
        api.run_task(
            &format!("/nodes/{node}/vzdump"),
            &[("vmid", vmid), ("storage", "pbs")],
        )
        .await;
    }
    let rows = content(&api, "pbs").await;
    let volid = |vmid: &str| {
        rows.iter()
            .filter_map(|r| r["volid"].as_str())
            .find(|v| v.contains(&format!("/vm/{vmid}/")))
            .expect("backup")
            .to_string()
    };
    // nextcloud: 64 GiB at 256 MiB/s plus 2 s; jellyfin: 32 GiB; with bwlimit 100 MiB/s.
    let (big, _) = api
        .run_task("/nodes/pve1/qemu", &[("vmid", "200"), ("archive", &volid("100"))])
        .await;
    let (small, _) = api
        .run_task("/nodes/pve1/qemu", &[("vmid", "201"), ("archive", &volid("103"))])
        .await;
    let started = std::time::Instant::now();
    let (limited, status) = api
        .run_task(
            "/nodes/pve1/qemu",
            &[("vmid", "202"), ("archive", &volid("100")), ("bwlimit", "102400")],
        )
        .await;
    let real = started.elapsed();
    assert_eq!(status["exitstatus"], "OK");
    assert_eq!(restore_log_duration(&api.task_log(&big).await), 258.0);
    assert_eq!(restore_log_duration(&api.task_log(&small).await), 130.0);
    let slow = restore_log_duration(&api.task_log(&limited).await);
    assert!((slow - 657.36).abs() < 0.01, "{slow}");
    // time_scale 0.001: 657 simulated seconds take about 0.66 real seconds.
    assert!(real >= Duration::from_millis(600), "{real:?}");
}

#[tokio::test]
async fn live_restore_needs_pbs_and_runs_the_vm_while_restoring() {
    let api = Api::fast().await;
    api.run_task("/nodes/pve1/vzdump", &[("vmid", "100"), ("compress", "zstd")])
        .await;
    let file = content(&api, "local").await[0]["volid"]
        .as_str()
        .expect("volid")
        .to_string();
    let (upid, status) = api
        .run_task(
            "/nodes/pve1/qemu",
            &[("vmid", "210"), ("archive", &file), ("live-restore", "1")],
        )
        .await;
    assert_eq!(
        status["exitstatus"],
        "live-restore is only compatible with backup images from a Proxmox Backup Server"
    );
    assert_empty_leftover(&api, "pve1", 210, &upid).await;

    api.run_task("/nodes/pve1/vzdump", &[("vmid", "100"), ("storage", "pbs")])
        .await;
    let pbs = content(&api, "pbs").await[0]["volid"]
        .as_str()
        .expect("volid")
        .to_string();
    let upid = api
        .post(
            "/nodes/pve1/qemu",
            &[
                ("vmid", "211"),
                ("archive", &pbs),
                ("live-restore", "1"),
                ("bwlimit", "102400"),
            ],
        )
        .await
        .ok()
        .data()
        .as_str()
        .expect("UPID")
        .to_string();
    crate::pvesim_common::eventually("the VM runs during the restore", || {
        api.sim.state(|c| {
            c.guest(211)
                .is_some_and(|g| g.power.is_up() && g.lock() == Some("create"))
        })
    })
    .await;
    let running = api.get("/nodes/pve1/qemu/211/status/current").await.ok();
    assert_eq!(running.data()["status"], "running");
    assert!(api.sim.task(&upid).is_some_and(|t| t.running()));
    let done = api.wait_task(&upid).await;
    assert_eq!(done["exitstatus"], "OK", "{:?}", api.task_log(&upid).await);
    let config = api.get("/nodes/pve1/qemu/211/config").await.ok();
    assert!(config.data().get("lock").is_none());
    assert_eq!(
        api.get("/nodes/pve1/qemu/211/status/current").await.ok().data()["status"],
        "running"
    );
    assert!(api.task_log(&upid).await.iter().any(|l| l == "live-restore done"));

    // A live-restore failing half-way stops the VM and keeps its config and disks.
    api.sim.fail_next_task("qmrestore", "reading chunk failed");
    let (upid, status) = api
        .run_task(
            "/nodes/pve1/qemu",
            &[
                ("vmid", "212"),
                ("archive", &pbs),
                ("live-restore", "1"),
                ("description", "autopilot restore test"),
            ],
        )
        .await;
    assert_eq!(status["exitstatus"], "live-restore failed");
    let log = api.task_log(&upid).await;
    assert!(
        log.iter()
            .any(|l| l == "An error occurred during live-restore: reading chunk failed"),
        "{log:?}"
    );
    let left = api.get("/nodes/pve1/qemu/212/config").await.ok();
    assert_eq!(
        left.data()["scsi0"],
        "local-lvm:vm-212-disk-0,iothread=1,size=64G"
    );
    assert_eq!(left.data()["description"], "autopilot restore test");
    assert!(left.data().get("lock").is_none());
    assert_eq!(
        api.get("/nodes/pve1/qemu/212/status/current").await.ok().data()["status"],
        "stopped"
    );
}

#[tokio::test]
async fn backups_carry_passthrough_devices_that_must_go_before_a_start() {
    let api = Api::fast().await;
    api.run_task("/nodes/pve2/vzdump", &[("vmid", "103"), ("storage", "pbs")])
        .await;
    api.run_task("/nodes/pve1/vzdump", &[("vmid", "101"), ("storage", "pbs")])
        .await;
    let rows = content(&api, "pbs").await;
    for (vmid, key, value) in [
        ("103", "hostpci0", "0000:01:00.0"),
        ("101", "usb0", "host=10c4:ea60"),
    ] {
        let volid = rows
            .iter()
            .filter_map(|r| r["volid"].as_str())
            .find(|v| v.contains(&format!("/vm/{vmid}/")))
            .expect("backup")
            .to_string();
        let config = api
            .get(&format!(
                "/nodes/pve1/vzdump/extractconfig?volume={}",
                encode(&volid)
            ))
            .await
            .ok();
        let text = config.data().as_str().expect("config text").to_string();
        assert!(text.contains(&format!("{key}: {value}")), "{text}");
        let copy = format!("22{}", &vmid[2..]);
        api.run_task("/nodes/pve1/qemu", &[("vmid", &copy), ("archive", &volid)])
            .await;
        let restored = api.get(&format!("/nodes/pve1/qemu/{copy}/config")).await.ok();
        assert_eq!(restored.data()[key], value);
        api.put(&format!("/nodes/pve1/qemu/{copy}/config"), &[("delete", key)])
            .await
            .ok();
        let cleaned = api.get(&format!("/nodes/pve1/qemu/{copy}/config")).await.ok();
        assert!(cleaned.data().get(key).is_none());
    }
}

#[tokio::test]
async fn the_application_check_fails_in_every_copy_of_jellyfin() {
    let api = Api::fast().await;
    api.run_task("/nodes/pve2/vzdump", &[("vmid", "103"), ("storage", "pbs")])
        .await;
    let volid = content(&api, "pbs").await[0]["volid"]
        .as_str()
        .expect("volid")
        .to_string();
    api.run_task("/nodes/pve1/qemu", &[("vmid", "230"), ("archive", &volid)])
        .await;
    api.put("/nodes/pve1/qemu/230/config", &[("delete", "hostpci0")])
        .await
        .ok();
    api.run_task("/nodes/pve1/qemu/230/status/start", &[]).await;
    let exit = |vmid: &'static str| {
        let api = &api;
        async move {
            let exec = api
                .post_json(
                    &format!("/nodes/pve1/qemu/{vmid}/agent/exec"),
                    json!({"command": ["systemctl", "is-active", "jellyfin"]}),
                )
                .await
                .ok();
            let pid = exec.data()["pid"].as_u64().expect("pid");
            let path = format!("/nodes/pve1/qemu/{vmid}/agent/exec-status?pid={pid}");
            loop {
                let s = api.get(&path).await.ok();
                if s.data()["exited"] == 1 {
                    return (s.data()["exitcode"].clone(), s.data()["out-data"].clone());
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    assert_eq!(exit("230").await, (json!(3), json!("failed\n")));
    assert_eq!(exit("100").await, (json!(0), json!("active\n")));
}

#[tokio::test]
async fn nodes_have_an_uplink_bridge_an_isolated_bridge_and_sdn_vnets() {
    let api = Api::fast().await;
    let all = api.get("/nodes/pve2/network").await.ok();
    let row = |name: &str| {
        all.data()
            .as_array()
            .expect("rows")
            .iter()
            .find(|r| r["iface"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name}"))
    };
    assert_eq!(row("vmbr0")["bridge_ports"], "eno1");
    assert_eq!(row("vmbr0")["cidr"], "192.168.100.12/24");
    assert_eq!(row("vmbr99")["bridge_ports"], "");
    assert_eq!(row("vmbr1")["bridge_vlan_aware"], 1);
    assert_eq!(row("eno1")["type"], "eth");
    assert!(
        all.data()
            .as_array()
            .expect("rows")
            .iter()
            .all(|r| r["type"] != "vnet")
    );
    let bridges = api.get("/nodes/pve2/network?type=any_bridge").await.ok();
    let names: Vec<&str> = bridges
        .data()
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["iface"].as_str())
        .collect();
    assert_eq!(names, ["vmbr0", "vmbr1", "vmbr99", "rtest", "vlan30"]);
    let vnets = api.get("/nodes/pve2/network?type=vnet").await.ok();
    assert_eq!(vnets.data()[0]["type"], "vnet");
    assert_eq!(vnets.data().as_array().map(Vec::len), Some(2));
    let bad = api.get("/nodes/pve2/network?type=wifi").await;
    if crate::pvesim_common::schema_path().is_some() {
        assert_eq!(bad.status, 400);
    }
    let simple = api.get("/cluster/sdn/zones?type=simple").await.ok();
    assert_eq!(simple.data().as_array().map(Vec::len), Some(1));
    assert_eq!(simple.data()[0]["zone"], "isolated");
    let zones = api.get("/cluster/sdn/zones").await.ok();
    assert_eq!(zones.data()[1]["bridge"], "vmbr1");
    let vnets = api.get("/cluster/sdn/vnets").await.ok();
    assert_eq!(vnets.data()[0]["vnet"], "rtest");
    assert_eq!(vnets.data()[0]["zone"], "isolated");
    assert_eq!(vnets.data()[1]["tag"], 30);
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
