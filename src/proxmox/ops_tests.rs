//! What the typed operations put on the wire and how they read replies, against a loopback server
//! that records each request and answers from a script. (The simulator tests behaviour; these
//! pin the client's own logic: encoding, client-side checks, task waiting.)

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::api::{MigrateRequest, RestoreCt, VzdumpRequest};
use super::testutil::{TestServer, guest_on_pve1, serve_plain, token_config};
use super::{Error, GuestType, NodeName, PveClient, TaskRef, TlsVerify, Vmid};

/// One request as the server saw it (path still percent-encoded).
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    body: String,
}

type Script = HashMap<(String, String), VecDeque<(u16, String)>>;

#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Arc<Mutex<Script>>,
}

impl Recorder {
    /// Answers `method path` with `status`/`body`; several answers are given in order, the last
    /// one repeats.
    fn reply(&self, method: &str, path: &str, status: u16, body: &str) {
        let key = (method.to_owned(), format!("/api2/json{path}"));
        self.script
            .lock()
            .unwrap()
            .entry(key)
            .or_default()
            .push_back((status, body.to_owned()));
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn answer(State(r): State<Recorder>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = String::from_utf8(to_bytes(body, 1 << 20).await.unwrap().to_vec()).unwrap();
    let path = parts.uri.path().to_owned();
    r.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path: path.clone(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        body,
    });
    let mut script = r.script.lock().unwrap();
    let Some(queue) = script.get_mut(&(parts.method.to_string(), path)) else {
        return (StatusCode::NOT_IMPLEMENTED, "no script").into_response();
    };
    let (status, body) = if queue.len() > 1 {
        queue.pop_front().unwrap()
    } else {
        queue[0].clone()
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap()
}

async fn setup() -> (Recorder, TestServer, PveClient) {
    let rec = Recorder::default();
    let server = serve_plain(Router::new().fallback(answer).with_state(rec.clone())).await;
    let client = PveClient::new(token_config(&[&server.url], TlsVerify::InsecureSkipVerify)).unwrap();
    (rec, server, client)
}

fn node() -> NodeName {
    NodeName::new("pve1").unwrap()
}

const UPID: &str = "UPID:pve1:00001234:00005678:6AC05394:vzdump:100:autopilot@pve!operator:";

fn upid_reply() -> String {
    format!(r#"{{"data":"{UPID}"}}"#)
}

#[tokio::test]
async fn agent_exec_sends_command_as_repeated_keys() {
    let (rec, _s, client) = setup().await;
    rec.reply(
        "POST",
        "/nodes/pve1/qemu/100/agent/exec",
        200,
        r#"{"data":{"pid":"42"}}"#,
    );
    let cmd = ["sh".to_owned(), "-c".to_owned(), "echo a&b".to_owned()];
    let pid = client
        .agent_exec(&node(), Vmid::new(100).unwrap(), &cmd, None)
        .await
        .unwrap();
    assert_eq!(pid, 42);
    assert_eq!(rec.seen()[0].body, "command=sh&command=-c&command=echo+a%26b");
    let err = client
        .agent_exec(&node(), Vmid::new(100).unwrap(), &[], None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRequest { .. }));
    assert_eq!(rec.seen().len(), 1, "an invalid exec is refused before sending");
}

#[tokio::test]
async fn agent_exec_status_forgotten_pid_is_not_found() {
    let (rec, _s, client) = setup().await;
    let path = "/nodes/pve1/qemu/100/agent/exec-status";
    rec.reply(
        "GET",
        path,
        200,
        r#"{"data":{"exited":1,"exitcode":0,"out-data":"hi\n"}}"#,
    );
    rec.reply(
        "GET",
        path,
        500,
        r#"{"data":null,"message":"Agent error: Invalid parameter 'pid'\n"}"#,
    );
    let vmid = Vmid::new(100).unwrap();
    let st = client.agent_exec_status(&node(), vmid, 42).await.unwrap();
    assert!(st.exited && st.exitcode == Some(0) && st.out_data.as_deref() == Some("hi\n"));
    let err = client.agent_exec_status(&node(), vmid, 42).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert_eq!(rec.seen().len(), 2, "exec-status is never repeated automatically");
    assert_eq!(rec.seen()[0].query, "pid=42");
}

#[tokio::test]
async fn vzdump_and_restore_ct_send_pve_parameter_shapes() {
    let (rec, _s, client) = setup().await;
    rec.reply("POST", "/nodes/pve1/vzdump", 200, &upid_reply());
    rec.reply("POST", "/nodes/pve1/lxc", 200, &upid_reply());
    let req = VzdumpRequest {
        vmids: vec![Vmid::new(100).unwrap(), Vmid::new(101).unwrap()],
        storage: Some("local".into()),
        compress: Some(super::api::Compression::Zstd),
        protected: Some(false),
        ..Default::default()
    };
    let task = client.vzdump(&node(), &req).await.unwrap();
    assert_eq!(task.node, node());
    assert_eq!(
        rec.seen()[0].body,
        "vmid=100%2C101&storage=local&compress=zstd&protected=0"
    );
    let restore = RestoreCt {
        vmid: Vmid::new(9001).unwrap(),
        archive: "local:backup/vzdump-lxc-101-2024_06_01-02_00_00.tar.zst".into(),
        storage: Some("local-zfs".into()),
        unique: true,
        start: false,
        ignore_unpack_errors: false,
        pool: None,
        bwlimit: None,
        overrides: [("hostname".to_owned(), "ap-restore-101".to_owned())].into(),
    };
    client.restore_ct(&node(), &restore).await.unwrap();
    assert_eq!(
        rec.seen()[1].body,
        "vmid=9001&ostemplate=local%3Abackup%2Fvzdump-lxc-101-2024_06_01-02_00_00.tar.zst&restore=1\
         &storage=local-zfs&unique=1&hostname=ap-restore-101"
    );
    let both = VzdumpRequest {
        dumpdir: Some("/tmp".into()),
        ..req
    };
    assert!(matches!(
        client.vzdump(&node(), &both).await,
        Err(Error::InvalidRequest { .. })
    ));
}

#[tokio::test]
async fn delete_volume_encodes_volid_and_reads_null_or_upid() {
    let (rec, _s, client) = setup().await;
    let volid = "local:backup/vzdump-qemu-100-2024_06_01-02_00_00.vma.zst";
    let path =
        "/nodes/pve1/storage/local/content/local%3Abackup%2Fvzdump-qemu-100-2024_06_01-02_00_00.vma.zst";
    rec.reply("DELETE", path, 200, &upid_reply());
    rec.reply("DELETE", path, 200, r#"{"data":null}"#);
    let task = client.delete_volume(&node(), "local", volid, None).await.unwrap();
    assert_eq!(task.map(|t| t.to_string()).as_deref(), Some(UPID));
    assert_eq!(
        client
            .delete_volume(&node(), "local", volid, Some(5))
            .await
            .unwrap(),
        None
    );
    assert_eq!(rec.seen()[1].query, "delay=5");
}

#[tokio::test]
async fn nextid_reads_string_or_number_and_vmid_check_maps_taken_to_false() {
    let (rec, _s, client) = setup().await;
    rec.reply("GET", "/cluster/nextid", 200, r#"{"data":"105"}"#);
    rec.reply("GET", "/cluster/nextid", 200, r#"{"data":106}"#);
    rec.reply(
        "GET",
        "/cluster/nextid",
        400,
        r#"{"data":null,"message":"Parameter verification failed.\n","errors":{"vmid":"VM 100 already exists\n"}}"#,
    );
    assert_eq!(client.next_vmid().await.unwrap().get(), 105);
    assert_eq!(client.next_vmid().await.unwrap().get(), 106);
    assert!(!client.is_vmid_free(Vmid::new(100).unwrap()).await.unwrap());
    assert_eq!(rec.seen()[2].query, "vmid=100");
}

#[tokio::test]
async fn locate_guest_finds_node_and_type_or_not_found() {
    let (rec, _s, client) = setup().await;
    rec.reply(
        "GET",
        "/cluster/resources",
        200,
        r#"{"data":[{"id":"qemu/100","type":"qemu","vmid":100,"node":"pve2","status":"running","template":0},
                    {"id":"lxc/101","type":"lxc","vmid":"101","node":"pve3","status":"unknown"}]}"#,
    );
    let loc = client.locate_guest(Vmid::new(101).unwrap()).await.unwrap();
    assert_eq!(
        (loc.guest.node.as_str(), loc.guest.guest_type, loc.status.as_str()),
        ("pve3", GuestType::Lxc, "unknown")
    );
    assert_eq!(rec.seen()[0].query, "type=vm");
    let err = client.locate_guest(Vmid::new(555).unwrap()).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }));
}

#[tokio::test]
async fn migrate_refused_by_precondition_sends_no_post() {
    let (rec, _s, client) = setup().await;
    rec.reply(
        "GET",
        "/nodes/pve1/qemu/100/migrate",
        200,
        r#"{"data":{"running":1,"allowed_nodes":["pve2"],"not_allowed_nodes":{"pve3":{"unavailable_storages":["local-lvm"]}},"local_disks":[],"local_resources":[]}}"#,
    );
    rec.reply("POST", "/nodes/pve1/qemu/100/migrate", 200, &upid_reply());
    let vm = guest_on_pve1(GuestType::Qemu, 100);
    let to = |n: &str, online| MigrateRequest::new(NodeName::new(n).unwrap(), online);
    let err = client.migrate_guest(&vm, &to("pve3", true)).await.unwrap_err();
    assert!(err.to_string().contains("local-lvm"), "{err}");
    let err = client.migrate_guest(&vm, &to("pve2", false)).await.unwrap_err();
    assert!(err.to_string().contains("running"), "{err}");
    client.migrate_guest(&vm, &to("pve2", true)).await.unwrap();
    let posts: Vec<Seen> = rec.seen().into_iter().filter(|s| s.method == "POST").collect();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].body, "target=pve2&online=1");
    assert_eq!(rec.seen()[0].query, "target=pve3");
}

#[tokio::test]
async fn wait_task_failure_carries_the_log_tail() {
    let (rec, _s, client) = setup().await;
    let task: TaskRef = UPID.parse().unwrap();
    let base = "/nodes/pve1/tasks/UPID%3Apve1%3A00001234%3A00005678%3A6AC05394%3Avzdump%3A100%3Aautopilot%40pve%21operator%3A";
    let status = |s: &str, exit: &str| format!(r#"{{"data":{{"upid":"{UPID}","status":"{s}"{exit}}}}}"#);
    rec.reply("GET", &format!("{base}/status"), 200, &status("running", ""));
    rec.reply(
        "GET",
        &format!("{base}/status"),
        200,
        &status("stopped", r#","exitstatus":"job errors""#),
    );
    let lines = |from: u64, to: u64| {
        let rows: Vec<String> = (from..=to)
            .map(|n| format!(r#"{{"n":{n},"t":"line {n}"}}"#))
            .collect();
        format!(r#"{{"data":[{}],"total":30}}"#, rows.join(","))
    };
    rec.reply("GET", &format!("{base}/log"), 200, &lines(1, 20));
    rec.reply("GET", &format!("{base}/log"), 200, &lines(11, 30));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let err = client
        .wait_task(&task, Duration::from_millis(1), deadline)
        .await
        .unwrap_err();
    let Error::TaskFailed {
        exit_status,
        log_tail,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(exit_status, "job errors");
    assert_eq!(log_tail.first().map(String::as_str), Some("line 11"));
    assert_eq!(log_tail.last().map(String::as_str), Some("line 30"));
    let logs: Vec<String> = rec
        .seen()
        .into_iter()
        .filter(|s| s.path.ends_with("/log"))
        .map(|s| s.query)
        .collect();
    assert_eq!(logs, ["start=0&limit=20", "start=10&limit=20"]);
}

#[tokio::test]
async fn wait_task_warnings_succeed_and_a_running_task_times_out() {
    let (rec, _s, client) = setup().await;
    let ok: TaskRef = "UPID:pve1:00000001:00000002:00000003:qmstart:100:root@pam:"
        .parse()
        .unwrap();
    let stuck: TaskRef = "UPID:pve1:00000001:00000002:00000004:qmstart:100:root@pam:"
        .parse()
        .unwrap();
    let path = |t: &TaskRef| {
        format!(
            "/nodes/pve1/tasks/{}/status",
            t.upid.as_str().replace(':', "%3A").replace('@', "%40")
        )
    };
    rec.reply(
        "GET",
        &path(&ok),
        200,
        r#"{"data":{"upid":"x","status":"stopped","exitstatus":"WARNINGS: 2"}}"#,
    );
    rec.reply(
        "GET",
        &path(&stuck),
        200,
        r#"{"data":{"upid":"x","status":"running"}}"#,
    );
    let far = tokio::time::Instant::now() + Duration::from_secs(30);
    assert_eq!(
        client
            .wait_task(&ok, Duration::from_millis(1), far)
            .await
            .unwrap()
            .warnings,
        2
    );
    let soon = tokio::time::Instant::now() + Duration::from_millis(20);
    let err = client
        .wait_task(&stuck, Duration::from_millis(5), soon)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(client.task_result(&stuck).await.unwrap().is_none());
}
