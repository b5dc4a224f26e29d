//! The simulated Proxmox Backup Server (`pbs_listen`): its datastore holds what the cluster's
//! `pbs` storage lists, with PBS's snapshot rows, verify tasks, deletion, datastore status, PBS
//! token auth and error format, and the verification faults.

use std::time::Duration;

use homelab_autopilot::pvesim::Fault;
use reqwest::Method;
use serde_json::Value;

use crate::pvesim_common::{Api, content, pbs_call, pbs_config, pbs_token};

async fn backup_to_pbs(api: &Api, vmid: &str) -> Value {
    let (_, status) = api
        .run_task(
            "/nodes/pve1/vzdump",
            &[
                ("vmid", vmid),
                ("storage", "pbs"),
                ("remove", "0"),
                ("notes-template", "{{guestname}}\\nsecond line"),
            ],
        )
        .await;
    assert_eq!(status["exitstatus"], "OK", "{status}");
    api.sim.advance_clock(Duration::from_secs(60));
    content(api, "pbs")
        .await
        .into_iter()
        .find(|r| r["vmid"].as_u64() == vmid.parse::<u64>().ok())
        .expect("backup listed on the pbs storage")
}

async fn snapshots(api: &Api, query: &[(&str, &str)]) -> Vec<Value> {
    let (status, body) = pbs_call(
        &api.sim,
        Method::GET,
        "/admin/datastore/homelab/snapshots",
        query,
        &pbs_token(&api.sim),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().expect("rows").clone()
}

async fn wait_pbs_task(api: &Api, upid: &str) -> Value {
    let path = format!(
        "/nodes/localhost/tasks/{}/status",
        crate::pvesim_common::encode(upid)
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = pbs_call(&api.sim, Method::GET, &path, &[], &pbs_token(&api.sim)).await;
        assert_eq!(status, 200, "{body}");
        if body["data"]["status"] == "stopped" {
            return body["data"].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "PBS task {upid} did not finish"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn pbs_datastore_lists_what_the_pbs_storage_holds() {
    let api = Api::start(pbs_config()).await;
    let row = backup_to_pbs(&api, "100").await;
    // verify-new (the default): verified right after the backup, and PVE shows it.
    assert_eq!(row["verification"]["state"], "ok", "{row}");
    assert_eq!(
        row["notes"], "nextcloud",
        "listings show the first line of the notes"
    );
    let volid = row["volid"].as_str().expect("volid").to_string();
    assert!(volid.starts_with("pbs:backup/vm/100/"), "{volid}");
    let info = api
        .get(&format!(
            "/nodes/pve1/storage/pbs/content/{}",
            crate::pvesim_common::encode(&volid)
        ))
        .await
        .ok();
    assert_eq!(
        info.data()["notes"],
        "nextcloud\nsecond line",
        "the volume has all of it"
    );

    let rows = snapshots(&api, &[]).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let snap = &rows[0];
    assert_eq!(
        (snap["backup-type"].as_str(), snap["backup-id"].as_str()),
        (Some("vm"), Some("100"))
    );
    assert_eq!(snap["backup-time"], row["ctime"]);
    assert_eq!(snap["protected"], false, "PBS uses JSON booleans");
    assert_eq!(snap["comment"], "nextcloud", "the first line of the notes");
    assert_eq!(snap["size"], row["size"]);
    assert_eq!(snap["verification"]["state"], "ok");
    assert!(
        snap["verification"]["upid"]
            .as_str()
            .is_some_and(|u| u.starts_with("UPID:pbs:") && u.contains(":verify_snapshot:")),
        "{snap}"
    );
    assert!(
        snap["files"]
            .as_array()
            .is_some_and(|f| f.iter().any(|n| n == "index.json.blob"))
    );
    assert!(snapshots(&api, &[("backup-type", "ct")]).await.is_empty());
    assert_eq!(snapshots(&api, &[("backup-id", "100")]).await.len(), 1);

    // Datastore usage follows the storage.
    let (_, status) = pbs_call(
        &api.sim,
        Method::GET,
        "/admin/datastore/homelab/status",
        &[],
        &pbs_token(&api.sim),
    )
    .await;
    let s = &status["data"];
    assert_eq!(
        s["total"].as_u64().unwrap(),
        s["used"].as_u64().unwrap() + s["avail"].as_u64().unwrap()
    );
    assert_eq!(s["counts"]["vm"]["snapshots"], 1);
    let (_, stores) = pbs_call(
        &api.sim,
        Method::GET,
        "/admin/datastore",
        &[],
        &pbs_token(&api.sim),
    )
    .await;
    assert_eq!(stores["data"][0]["store"], "homelab");

    // PBS wants its own token header; PVE's is refused. Errors are plain text.
    let pve_header = format!("PVEAPIToken={}={}", api.sim.token_id(), api.sim.token_secret());
    let (status, _) = pbs_call(&api.sim, Method::GET, "/admin/datastore", &[], &pve_header).await;
    assert_eq!(status, 401);
    let (status, body) = pbs_call(
        &api.sim,
        Method::GET,
        "/admin/datastore/nope/snapshots",
        &[],
        &pbs_token(&api.sim),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body, Value::String("datastore 'nope' does not exist".into()));

    // Protected snapshots stay; deleting through PBS removes it from PVE's listing too.
    let time = snap["backup-time"].to_string();
    let target = [
        ("backup-type", "vm"),
        ("backup-id", "100"),
        ("backup-time", time.as_str()),
    ];
    api.put(
        &format!(
            "/nodes/pve1/storage/pbs/content/{}",
            crate::pvesim_common::encode(&volid)
        ),
        &[("protected", "1")],
    )
    .await
    .ok();
    let (status, body) = pbs_call(
        &api.sim,
        Method::DELETE,
        "/admin/datastore/homelab/snapshots",
        &target,
        &pbs_token(&api.sim),
    )
    .await;
    assert_eq!(
        (status, body),
        (400, Value::String("cannot remove protected snapshot".into()))
    );
    api.put(
        &format!(
            "/nodes/pve1/storage/pbs/content/{}",
            crate::pvesim_common::encode(&volid)
        ),
        &[("protected", "0")],
    )
    .await
    .ok();
    let (status, body) = pbs_call(
        &api.sim,
        Method::DELETE,
        "/admin/datastore/homelab/snapshots",
        &target,
        &pbs_token(&api.sim),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(content(&api, "pbs").await.is_empty());
    let (status, _) = pbs_call(
        &api.sim,
        Method::DELETE,
        "/admin/datastore/homelab/snapshots",
        &target,
        &pbs_token(&api.sim),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn verification_is_absent_until_verified_and_a_fault_makes_it_fail() {
    let api = Api::start(pbs_config()).await;
    api.sim
        .inject(Fault::PbsVerifyNew { enabled: false })
        .expect("setting");
    let row = backup_to_pbs(&api, "100").await;
    assert!(row.get("verification").is_none(), "not verified yet: {row}");
    let snap = snapshots(&api, &[]).await.remove(0);
    assert!(snap.get("verification").is_none(), "{snap}");
    let time = snap["backup-time"].to_string();
    let target = [
        ("backup-type", "vm"),
        ("backup-id", "100"),
        ("backup-time", time.as_str()),
    ];

    let (status, body) = pbs_call(
        &api.sim,
        Method::POST,
        "/admin/datastore/homelab/verify",
        &target,
        &pbs_token(&api.sim),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let upid = body["data"].as_str().expect("UPID").to_string();
    let done = wait_pbs_task(&api, &upid).await;
    assert_eq!(
        (done["exitstatus"].as_str(), done["type"].as_str()),
        (Some("OK"), Some("verify_snapshot"))
    );
    assert_eq!(
        (done["user"].as_str(), done["tokenid"].as_str()),
        (Some("root@pam"), Some("pvesim"))
    );
    let row = content(&api, "pbs").await.remove(0);
    assert_eq!(
        row["verification"],
        serde_json::json!({"state": "ok", "upid": upid})
    );

    // A damaged chunk: this verification and every later one fail.
    api.sim
        .inject("pbs-verify-failure=100".parse().expect("fault"))
        .expect("fault");
    for _ in 0..2 {
        let (_, body) = pbs_call(
            &api.sim,
            Method::POST,
            "/admin/datastore/homelab/verify",
            &target,
            &pbs_token(&api.sim),
        )
        .await;
        let upid = body["data"].as_str().expect("UPID").to_string();
        let done = wait_pbs_task(&api, &upid).await;
        assert_eq!(
            done["exitstatus"],
            "verification failed - please check the log for details"
        );
        let (_, log) = pbs_call(
            &api.sim,
            Method::GET,
            &format!(
                "/nodes/localhost/tasks/{}/log",
                crate::pvesim_common::encode(&upid)
            ),
            &[],
            &pbs_token(&api.sim),
        )
        .await;
        let last = log["data"]
            .as_array()
            .and_then(|l| l.last())
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            last["t"],
            "TASK ERROR: verification failed - please check the log for details"
        );
        assert_eq!(snapshots(&api, &[]).await[0]["verification"]["state"], "failed");
        assert_eq!(content(&api, "pbs").await[0]["verification"]["state"], "failed");
    }

    // The state can be set directly (and cleared).
    let volid = row["volid"].as_str().expect("volid");
    api.sim.set_pbs_verification(volid, Some("ok")).expect("set");
    assert_eq!(content(&api, "pbs").await[0]["verification"]["state"], "ok");
    api.sim.set_pbs_verification(volid, None).expect("clear");
    assert!(content(&api, "pbs").await[0].get("verification").is_none());
}

#[tokio::test]
async fn verify_new_fault_fails_the_next_backup_of_that_guest_only() {
    let api = Api::start(pbs_config()).await;
    api.sim
        .inject(Fault::PbsVerifyFailure {
            vmid: Some(102),
            count: 1,
        })
        .expect("fault");
    let (_, s) = api
        .run_task(
            "/nodes/pve2/vzdump",
            &[("vmid", "102"), ("storage", "pbs"), ("remove", "0")],
        )
        .await;
    assert_eq!(s["exitstatus"], "OK", "the backup itself succeeds: {s}");
    backup_to_pbs(&api, "100").await;
    let rows = content(&api, "pbs").await;
    let state = |id: u64| {
        rows.iter()
            .find(|r| r["vmid"] == id)
            .map(|r| r["verification"]["state"].clone())
    };
    assert_eq!(state(102), Some(Value::from("failed")));
    assert_eq!(state(100), Some(Value::from("ok")));
}
