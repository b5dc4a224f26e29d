//! Decodes every captured response in `../shared/proxmox/fixtures/` with the client's types.
//! A new fixture without a decoder here fails the test, so none is silently skipped.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::api::{
    ClusterResource, ClusterStatus, ClusterStatusEntry, GuestConfig, SnapshotList, TicketResponse,
};
use super::auth::Redactor;
use super::task::{TaskExit, TaskLogLine, TaskStatus};
use super::testutil::shared_proxmox_dir;
use super::{Error, Upid};

#[derive(Deserialize)]
struct Envelope<T> {
    data: T,
    #[serde(default)]
    total: Option<u64>,
}

fn data<T: DeserializeOwned>(text: &str) -> T {
    serde_json::from_str::<Envelope<T>>(text).unwrap().data
}

fn access_ticket(text: &str) {
    let t: TicketResponse = data(text);
    assert_eq!(t.username, "root@pam");
    let ticket = t.ticket.clone().unwrap();
    assert!(ticket.expose().starts_with("PVE:root@pam:"));
    assert!(t.csrf_prevention_token.is_some());
    assert!(
        !format!("{t:?}").contains(ticket.expose()),
        "ticket must not be in Debug"
    );
}

fn cluster_resources(name: &str, text: &str) {
    // The partial capture is a bare array cut from a debug log; the others are envelopes.
    let rows: Vec<ClusterResource> = match serde_json::from_str::<Value>(text).unwrap() {
        Value::Array(_) => serde_json::from_str(text).unwrap(),
        _ => data(text),
    };
    assert!(!rows.is_empty());
    let guests: Vec<_> = rows.iter().filter(|r| r.guest_type().is_some()).collect();
    assert!(
        guests.iter().all(|g| g.vmid.is_some() && g.node.is_some()),
        "{name}"
    );
    if name.contains("partial") {
        let offline = rows
            .iter()
            .find(|r| r.status.as_deref() == Some("unknown"))
            .expect("offline row");
        assert_eq!(offline.vmid.map(|v| v.get()), Some(1011));
        assert!(offline.maxmem.is_none() && offline.uptime.is_none());
        assert!(rows.iter().any(|r| r.template));
    } else {
        assert!(rows.iter().any(|r| r.resource_type == "node"));
        let tpl = rows
            .iter()
            .find(|r| r.vmid.map(|v| v.get()) == Some(101))
            .unwrap();
        assert!(tpl.template);
    }
}

fn cluster_status(text: &str) {
    let status = ClusterStatus::from_entries(data::<Vec<ClusterStatusEntry>>(text));
    let cluster = status.cluster.clone().unwrap();
    assert!(status.is_quorate() && cluster.quorate);
    assert_eq!(cluster.nodes, 4);
    assert_eq!(status.nodes.len(), 4);
    assert!(status.nodes.iter().all(|n| n.online));
    assert_eq!(status.nodes.iter().filter(|n| n.local).count(), 1);
}

fn error_response(text: &str) {
    #[derive(Deserialize)]
    struct Http {
        status: u16,
        reason: String,
    }
    #[derive(Deserialize)]
    struct Captured {
        #[serde(rename = "_http")]
        http: Http,
        body: Value,
    }
    let c: Captured = serde_json::from_str(text).unwrap();
    let body = serde_json::to_vec(&c.body).unwrap();
    let err = Error::from_response(c.http.status, Some(&c.http.reason), &body, &Redactor::default());
    assert!(
        matches!(&err, Error::Api { status: 500, message } if message == "QEMU guest agent is not running"),
        "{err:?}"
    );
    assert!(err.is_transient());
}

fn lxc_config(text: &str) {
    let c: GuestConfig = data(text);
    assert_eq!(c.digest, "7db6aaf9c508c3e176a3d1fa7acc319bae7e905e");
    assert_eq!(c.name().as_deref(), Some("docker"));
    assert_eq!(c.parent().as_deref(), Some("autoweekly251223173813"));
    assert_eq!(c.get("memory").as_deref(), Some("4096"));
    assert!(c.tags().is_empty(), "tags \" \" means none");
    assert!(c.values["lxc"].is_array());
}

fn snapshot_list(name: &str, text: &str) {
    let list: SnapshotList = data(text);
    assert!(!list.snapshots.is_empty());
    let times: Vec<_> = list.snapshots.iter().map(|s| s.snaptime).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "sorted oldest first: {times:?}"
    );
    if name.contains("SOURCE-DERIVED") {
        let current = list.current.clone().unwrap();
        assert_eq!(current.parent.as_deref(), Some("with-ram"));
        assert!(current.running && current.digest.is_some());
        assert!(list.get("with-ram").unwrap().vmstate);
        assert!(!list.get("pre-upgrade").unwrap().vmstate);
    }
    if name.contains("qemu.go-proxmox") {
        // The mock's `current` row has no digest; still recognised as the pseudo-entry.
        assert!(list.current.is_some() && list.get("current").is_none());
    }
}

fn check_task_status(st: &TaskStatus) -> Option<TaskExit> {
    let upid = Upid::parse(&st.upid).unwrap();
    assert_eq!(upid.worker_type(), st.task_type);
    assert_eq!(upid.id(), st.id);
    assert_eq!(upid.user(), st.user);
    assert_eq!(upid.token_name(), st.tokenid.as_deref());
    st.exit()
}

fn task_status(name: &str, text: &str) {
    let v: Value = serde_json::from_str(text).unwrap();
    if v.get("data").is_some() {
        let exit = check_task_status(&data(text));
        if name.contains("running") {
            assert_eq!(exit, None);
        } else {
            assert_eq!(exit, Some(TaskExit::Warnings(1)));
        }
        return;
    }
    let cases: BTreeMap<String, Envelope<TaskStatus>> = serde_json::from_str(text).unwrap();
    let exits: BTreeMap<_, _> = cases
        .iter()
        .map(|(k, e)| (k.as_str(), check_task_status(&e.data)))
        .collect();
    assert_eq!(exits["running"], None);
    assert_eq!(exits["ok"], Some(TaskExit::Ok));
    assert_eq!(exits["warnings"], Some(TaskExit::Warnings(2)));
    assert_eq!(exits["failed"], Some(TaskExit::Failed("job errors".into())));
    assert_eq!(exits["multi_guest_job_id_is_empty"], Some(TaskExit::Ok));
}

fn task_log_json(text: &str) {
    let env: Envelope<Vec<TaskLogLine>> = serde_json::from_str(text).unwrap();
    assert_eq!(env.total, Some(env.data.len() as u64));
    let last = env.data.iter().max_by_key(|l| l.n).unwrap();
    assert_eq!(
        TaskExit::from_log_line(&last.t),
        Some(TaskExit::Failed("job errors".into()))
    );
}

fn task_log_text(name: &str, text: &str) {
    let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap();
    let want = if name.contains("success") {
        TaskExit::Ok
    } else {
        TaskExit::Failed("job errors".into())
    };
    assert_eq!(TaskExit::from_log_line(last), Some(want), "{name}");
}

fn check_fixture(path: &Path) {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let text = std::fs::read_to_string(path).unwrap();
    match name.as_str() {
        n if n.starts_with("access-ticket") => access_ticket(&text),
        n if n.starts_with("cluster-resources") => cluster_resources(n, &text),
        n if n.starts_with("cluster-status") => cluster_status(&text),
        n if n.starts_with("error-") => error_response(&text),
        n if n.starts_with("lxc-config") => lxc_config(&text),
        n if n.starts_with("snapshot-list") => snapshot_list(n, &text),
        n if n.starts_with("task-status") => task_status(n, &text),
        n if n.starts_with("vzdump-tasklog") && n.ends_with(".json") => task_log_json(&text),
        n if n.ends_with(".log") => task_log_text(n, &text),
        other => panic!("no decoder for fixture {other}: add one to fixture_tests.rs"),
    }
}

#[test]
fn fixtures_every_file_decodes_with_client_types() {
    let Some(dir) = shared_proxmox_dir() else { return };
    let mut paths: Vec<_> = std::fs::read_dir(dir.join("fixtures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 16,
        "expected the captured fixtures, found {}",
        paths.len()
    );
    for path in &paths {
        let result = std::panic::catch_unwind(|| check_fixture(path));
        assert!(
            result.is_ok(),
            "fixture {} failed to decode as expected",
            path.display()
        );
    }
}
