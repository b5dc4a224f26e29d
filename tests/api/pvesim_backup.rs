//! Backups on the simulator: vzdump writes real archive files, storage content lists them,
//! restore reads them back, PBS storages keep snapshots in memory.

use std::io::Read;
use std::time::Duration;

use homelab_autopilot::pvesim::{SimConfig, read_dump};
use serde_json::Value;

use crate::pvesim_common::{Api, Body, backup_files, content, encode, fast_config, sha};

/// Splits a decompressed VMA archive into `(header, disk bytes)`: the simulator's metadata blob
/// (`pvesim.json`) with the config blob (`qemu-server.conf`) added, and the device data.
fn split_archive(bytes: &[u8]) -> (Value, Vec<u8>) {
    let vma = crate::proxmox_client_archive::parse_vma(bytes);
    let mut header: Value = serde_json::from_slice(&vma.configs["pvesim.json"]).expect("metadata");
    let config = String::from_utf8(vma.configs["qemu-server.conf"].clone()).expect("config");
    header["config"] = Value::String(config);
    (header, vma.data[&1].clone())
}

#[tokio::test]
async fn vzdump_zstd_writes_a_real_archive_of_the_pseudo_disk_with_log_and_notes() {
    let api = Api::fast().await;
    let (upid, status) = api
        .run_task(
            "/nodes/pve1/vzdump",
            &[
                ("vmid", "100"),
                ("storage", "local"),
                ("compress", "zstd"),
                ("notes-template", "{{guestname}} on {{node}}"),
            ],
        )
        .await;
    assert_eq!(status["exitstatus"], "OK", "{:?}", api.task_log(&upid).await);
    let files = backup_files(api.sim.dump_dir(), ".vma.zst");
    assert_eq!(files.len(), 1);
    let name = &files[0];
    assert!(
        regex::Regex::new(r"^vzdump-qemu-100-\d{4}_\d\d_\d\d-\d\d_\d\d_\d\d\.vma\.zst$")
            .expect("re")
            .is_match(name),
        "{name}"
    );
    let path = api.sim.dump_dir().join(name);
    let decoded = zstd::decode_all(std::fs::File::open(&path).expect("archive")).expect("real zstd");
    let (header, disk) = split_archive(&decoded);
    assert_eq!(header["vmid"], 100);
    assert!(
        header["config"]
            .as_str()
            .is_some_and(|c| c.contains("name: nextcloud"))
    );
    assert_eq!(
        sha(Some(disk)),
        sha(api.sim.disk_image(100)),
        "archive holds the guest's pseudo-disk"
    );
    let stem = name.trim_end_matches(".vma.zst");
    let log = std::fs::read_to_string(api.sim.dump_dir().join(format!("{stem}.log")))
        .expect(".log beside the archive");
    assert!(log.contains("INFO: Starting Backup of VM 100 (qemu)"));
    let notes = std::fs::read_to_string(format!("{}.notes", path.display())).expect(".notes");
    assert_eq!(notes.trim_end(), "nextcloud on pve1");
    let task_log = api.task_log(&upid).await;
    assert!(
        task_log[0].starts_with("INFO: starting new backup job: vzdump 100"),
        "{task_log:?}"
    );
    assert!(task_log.iter().any(|l| l == "INFO: backup mode: snapshot"));
    assert!(
        task_log
            .iter()
            .any(|l| l.starts_with("INFO: creating vzdump archive '") && l.ends_with(".vma.zst'"))
    );
    let rows = content(&api, "local").await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row["volid"], format!("local:backup/{name}"));
    assert_eq!(row["subtype"], "qemu");
    assert_eq!(row["format"], "vma.zst");
    assert_eq!(row["vmid"], 100);
    assert_eq!(row["notes"], "nextcloud on pve1");
    assert_eq!(row["size"], std::fs::metadata(&path).expect("metadata").len());
    assert!(row["ctime"].is_i64() && row.get("protected").is_none());
    assert!(api.sim.state(|c| {
        c.guest(100)
            .is_some_and(|g| g.lock().is_none() && g.power.is_up())
    }));
}

#[tokio::test]
async fn vzdump_compress_options_produce_the_pve_extensions() {
    let api = Api::fast().await;
    for (compress, ext) in [("0", ".tar"), ("gzip", ".tar.gz"), ("lzo", ".tar.lzo")] {
        let (_, status) = api
            .run_task("/nodes/pve2/vzdump", &[("vmid", "102"), ("compress", compress)])
            .await;
        assert_eq!(status["exitstatus"], "OK");
        api.sim.advance_clock(Duration::from_secs(1));
        // pve2's `local` (not shared): its own directory.
        let dir = crate::pvesim_common::node_backup_dir(&api.sim, "local", "pve2");
        let files = backup_files(&dir, ext);
        assert_eq!(files.len(), 1, "{compress}: {files:?}");
        assert_eq!(read_dump(&dir.join(&files[0])).map(|h| h.vmid), Ok(102));
    }
    let dir = crate::pvesim_common::node_backup_dir(&api.sim, "local", "pve2");
    let gz = backup_files(&dir, ".tar.gz");
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(dir.join(&gz[0])).expect("file"))
        .read_to_end(&mut decoded)
        .expect("real gzip");
    let entries = crate::proxmox_client_archive::tar_entries(&decoded);
    assert_eq!(
        entries[0].0, "./etc/vzdump/pct.conf",
        "a real tar led by the config"
    );
}

#[tokio::test]
async fn vzdump_of_several_guests_skips_other_nodes_and_has_an_empty_task_id() {
    let api = Api::fast().await;
    let (upid, status) = api
        .run_task("/nodes/pve1/vzdump", &[("vmid", "100,101,102"), ("mode", "stop")])
        .await;
    assert!(upid.contains(":vzdump::root@pam!pvesim:"), "{upid}");
    assert_eq!(
        status["exitstatus"], "job errors",
        "HA-managed 101 refuses stop mode"
    );
    let log = api.task_log(&upid).await;
    let ha = "ERROR: Backup of VM 101 failed - Cannot execute a backup with stop mode on a HA managed and enabled Service. Use snapshot mode or disable the Service.";
    assert!(log.contains(&ha.to_string()), "{log:?}");
    assert!(
        log.contains(&"INFO: skip external VMs: 102".to_string()),
        "{log:?}"
    );
    assert!(log.iter().any(|l| l == "INFO: stopping virtual guest"));
    assert!(log.iter().any(|l| l == "INFO: restarting vm"));
    assert!(api.sim.state(|c| c.guest(100).is_some_and(|g| g.power.is_up())));
    let only_remote = api.post("/nodes/pve1/vzdump", &[("vmid", "102")]).await.ok();
    assert_eq!(only_remote.data(), &Value::String("OK".into()));
    let missing = api.post("/nodes/pve1/vzdump", &[]).await;
    assert_eq!(missing.body["errors"]["vmid"], "property is missing");
}

#[tokio::test]
async fn vzdump_failures_end_in_job_errors_and_unlock_the_guest() {
    let api = Api::fast().await;
    api.sim.fail_next_task("vzdump", "this should not be used");
    api.sim.clear_faults();
    api.sim.state_mut(|c| {
        c.guests
            .get_mut(&100)
            .map(|g| g.config.insert("lock".into(), "snapshot".into()))
    });
    let (upid, status) = api.run_task("/nodes/pve1/vzdump", &[("vmid", "100")]).await;
    assert_eq!(status["exitstatus"], "job errors");
    let log = api.task_log(&upid).await;
    assert!(
        log.contains(&"ERROR: Backup of VM 100 failed - VM is locked (snapshot)".to_string()),
        "{log:?}"
    );
    assert_eq!(log.last().map(String::as_str), Some("TASK ERROR: job errors"));
    api.sim
        .state_mut(|c| c.guests.get_mut(&100).map(|g| g.config.remove("lock")));
    api.sim
        .fail_next_task("vzdump", "unable to write archive: No space left on device");
    let (_, injected) = api.run_task("/nodes/pve1/vzdump", &[("vmid", "100")]).await;
    assert_eq!(injected["exitstatus"], "job errors");
    assert!(
        api.sim
            .state(|c| c.guest(100).is_some_and(|g| g.lock().is_none()))
    );
}

#[tokio::test]
async fn protected_backups_cannot_be_deleted_and_others_go_via_imgdel() {
    let api = Api::fast().await;
    api.run_task(
        "/nodes/pve1/vzdump",
        &[("vmid", "100"), ("storage", "local"), ("protected", "1")],
    )
    .await;
    api.sim.advance_clock(Duration::from_secs(5));
    api.run_task("/nodes/pve1/vzdump", &[("vmid", "100"), ("storage", "local")])
        .await;
    let rows = content(&api, "local").await;
    assert_eq!(rows.len(), 2);
    let protected = rows
        .iter()
        .find(|r| r["protected"] == 1)
        .expect("protected backup");
    let plain = rows
        .iter()
        .find(|r| r.get("protected").is_none())
        .expect("plain backup");
    let path = |r: &Value| {
        format!(
            "/nodes/pve1/storage/local/content/{}",
            encode(r["volid"].as_str().unwrap_or(""))
        )
    };
    let resp = api.delete(&path(protected)).await.ok();
    let status = api.wait_task(resp.data().as_str().expect("UPID")).await;
    assert!(
        status["exitstatus"]
            .as_str()
            .is_some_and(|e| e.starts_with("cannot remove protected archive '")),
        "{status}"
    );
    let waited = api
        .request(
            reqwest::Method::DELETE,
            &format!("{}?delay=5", path(plain)),
            Body::None,
            &api.auth,
        )
        .await
        .ok();
    assert_eq!(waited.data(), &Value::Null, "delete finished within the delay");
    assert_eq!(content(&api, "local").await.len(), 1);
    let info = api.get(&path(protected)).await.ok();
    assert_eq!(info.data()["protected"], 1);
    api.put(&path(protected), &[("protected", "0"), ("notes", "keep me")])
        .await
        .ok();
    let updated = content(&api, "local").await;
    assert_eq!(updated[0]["notes"], "keep me");
    assert!(updated[0].get("protected").is_none());
}

#[tokio::test]
async fn prune_backups_keeps_the_newest() {
    // root@pam's token without privilege separation has Datastore.Allocate (PVE 9.1 checks that
    // privilege, not root@pam; see pvesim_permissions for a token without it).
    let api = Api::fast().await;
    for _ in 0..3 {
        let (_, s) = api
            .run_task(
                "/nodes/pve1/vzdump",
                &[("vmid", "100"), ("prune-backups", "keep-last=1")],
            )
            .await;
        assert_eq!(s["exitstatus"], "OK");
        api.sim.advance_clock(Duration::from_secs(60));
    }
    assert_eq!(content(&api, "local").await.len(), 1);
    assert!(
        backup_files(api.sim.dump_dir(), ".log").len() == 1,
        "pruned backups take their .log with them"
    );
}

#[tokio::test]
async fn pseudo_disk_drifts_a_little_per_simulated_day() {
    let api = Api::start(SimConfig { ..fast_config() }).await;
    let today = api.sim.disk_image(100).expect("disk");
    api.sim.advance_clock(Duration::from_secs(86_400));
    let tomorrow = api.sim.disk_image(100).expect("disk");
    let changed = today
        .chunks(4096)
        .zip(tomorrow.chunks(4096))
        .filter(|(a, b)| a != b)
        .count();
    assert!(
        changed > 0 && changed < today.len() / 4096 / 10,
        "{changed} blocks changed"
    );
}

#[tokio::test]
async fn bad_notes_template_is_a_warning_not_a_failure() {
    let api = Api::fast().await;
    let (upid, status) = api
        .run_task(
            "/nodes/pve1/vzdump",
            &[
                ("vmid", "100"),
                ("storage", "local"),
                ("notes-template", "{{bogus}}"),
            ],
        )
        .await;
    assert_eq!(status["exitstatus"], "WARNINGS: 1");
    let log = api.task_log(&upid).await;
    assert!(
        log.contains(&"WARN: unable to add notes - unexpected variable name 'bogus'".to_string()),
        "{log:?}"
    );
    assert_eq!(log.last().map(String::as_str), Some("TASK WARNINGS: 1"));
}

#[tokio::test]
async fn dumpdir_is_root_only_and_must_be_inside_the_dump_directory() {
    let mut api = Api::fast().await;
    let sub = api.sim.dump_dir().join("manual");
    std::fs::create_dir_all(&sub).expect("subdir");
    let dir = sub.display().to_string();
    let token = api
        .post("/nodes/pve1/vzdump", &[("vmid", "100"), ("dumpdir", &dir)])
        .await;
    assert_eq!(token.body["errors"]["dumpdir"], "Only root may set this option.");
    api.login().await;
    let (_, ok) = api
        .run_task("/nodes/pve1/vzdump", &[("vmid", "100"), ("dumpdir", &dir)])
        .await;
    assert_eq!(ok["exitstatus"], "OK");
    // The default cluster's vzdump.conf says zstd.
    assert_eq!(backup_files(&sub, ".vma.zst").len(), 1);
    let (_, outside) = api
        .run_task("/nodes/pve1/vzdump", &[("vmid", "100"), ("dumpdir", "/etc")])
        .await;
    assert!(
        outside["exitstatus"]
            .as_str()
            .is_some_and(|e| e.contains("outside the simulator's dump directory")),
        "{outside}"
    );
}
