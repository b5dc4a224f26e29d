//! Fault injection: endpoint errors, latency, dropped connections, offline nodes, quorum
//! loss, task failures, plus the admin endpoint and per-node listeners.

use std::time::Duration;

use homelab_autopilot::pvesim::{EndpointFault, Fault, SimConfig};
use serde_json::json;

use crate::pvesim_common::{Api, Body, client_for, fast_config};

#[tokio::test]
async fn fail_next_returns_the_injected_status_then_recovers() {
    let api = Api::fast().await;
    api.sim
        .fail_next("GET", "/cluster/resources", 2, 503, "service unavailable");
    for _ in 0..2 {
        let resp = api.get("/cluster/resources").await;
        assert_eq!(
            (resp.status, resp.reason.as_deref()),
            (503, Some("service unavailable"))
        );
        assert_eq!(resp.body["message"], "service unavailable\n");
    }
    api.get("/cluster/resources").await.ok();
    api.get("/version").await.ok();
}

#[tokio::test]
async fn error_rate_is_deterministic_for_the_same_seed() {
    async fn pattern(seed: u64) -> Vec<u16> {
        let api = Api::start(SimConfig {
            rng_seed: seed,
            ..fast_config()
        })
        .await;
        api.sim.set_error_rate(Some("GET"), "/version", 0.5, 500);
        let mut out = Vec::new();
        for _ in 0..24 {
            out.push(api.get("/version").await.status);
        }
        out
    }
    let a = pattern(7).await;
    assert_eq!(a, pattern(7).await);
    assert!(a.contains(&500) && a.contains(&200), "{a:?}");
}

#[tokio::test]
async fn latency_makes_a_short_client_timeout_fire() {
    let api = Api::fast().await;
    api.sim.add_latency(None, "/version", Duration::from_secs(5));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .tls_certs_only([reqwest::Certificate::from_pem(api.sim.ca_pem().as_bytes()).expect("pem")])
        .build()
        .expect("client");
    let err = client
        .get(format!("{}/api2/json/version", api.sim.url()))
        .header(
            "Authorization",
            format!("PVEAPIToken={}={}", api.sim.token_id(), api.sim.token_secret()),
        )
        .send()
        .await
        .expect_err("times out");
    assert!(err.is_timeout(), "{err:?}");
    api.sim.clear_faults();
    api.get("/version").await.ok();
}

#[tokio::test]
async fn dropped_connections_fail_the_request_without_a_response() {
    let api = Api::fast().await;
    api.sim.drop_next(Some("GET"), "/nodes", 1);
    let err = api
        .try_request(reqwest::Method::GET, "/nodes", Body::None, &api.auth)
        .await
        .expect_err("dropped");
    assert!(!err.is_status() && !err.is_timeout(), "{err:?}");
    api.get("/nodes").await.ok();
}

#[tokio::test]
async fn offline_node_shows_unknown_guests_and_answers_proxied_calls_with_595() {
    let api = Api::fast().await;
    api.sim.set_node_online("pve2", false).expect("node exists");
    let resources = api.get("/cluster/resources").await.ok();
    let rows = resources.data().as_array().expect("rows");
    let ct = rows.iter().find(|r| r["vmid"] == 102).expect("ct 102");
    assert_eq!(
        ct,
        &json!({"id": "lxc/102", "type": "lxc", "vmid": 102, "node": "pve2", "status": "unknown", "tags": "prod;dns", "pool": "prod"})
    );
    let node = rows.iter().find(|r| r["id"] == "node/pve2").expect("node row");
    assert_eq!(node["status"], "offline");
    let proxied = api.get("/nodes/pve2/lxc/102/status/current").await;
    assert_eq!(
        (proxied.status, proxied.reason.as_deref(), proxied.raw.as_str()),
        (595, Some("No route to host"), "")
    );
    let status = api.get("/cluster/status").await.ok();
    let pve2 = status
        .data()
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["name"] == "pve2")
        .cloned()
        .expect("pve2");
    assert_eq!(pve2["online"], 0);
    assert_eq!(status.data()[0]["quorate"], 1, "2 of 3 votes keep quorum");
    let unknown = api.get("/nodes/pve9/qemu").await;
    assert_eq!(unknown.status, 500);
    api.sim.set_node_online("pve2", true).expect("node exists");
    api.get("/nodes/pve2/lxc/102/status/current").await.ok();
}

#[tokio::test]
async fn losing_quorum_blocks_writes_but_not_reads() {
    let api = Api::fast().await;
    api.sim.set_node_online("pve2", false).expect("node");
    api.sim.set_node_online("pve3", false).expect("node");
    let status = api.get("/cluster/status").await.ok();
    assert_eq!(status.data()[0]["quorate"], 0);
    let write = api.post("/nodes/pve1/qemu/100/status/stop", &[]).await;
    assert_eq!(
        (write.status, write.reason.as_deref()),
        (500, Some("cluster not ready - no quorum?"))
    );
    api.get("/nodes/pve1/qemu/100/status/current").await.ok();
    api.sim.set_node_online("pve2", true).expect("node");
    api.post("/nodes/pve1/qemu/100/status/stop", &[]).await.ok();
    api.sim.set_quorum_lost(true);
    let injected = api
        .put("/nodes/pve1/qemu/100/config", &[("memory", "1024")])
        .await;
    assert_eq!(injected.reason.as_deref(), Some("cluster not ready - no quorum?"));
}

#[tokio::test]
async fn injected_task_failure_fails_the_next_task_of_that_type_only() {
    let api = Api::fast().await;
    api.sim.fail_next_task("qmshutdown", "shutdown timed out");
    let (upid, failed) = api.run_task("/nodes/pve1/qemu/100/status/shutdown", &[]).await;
    assert_eq!(failed["exitstatus"], "shutdown timed out");
    assert_eq!(
        api.task_log(&upid).await.last().map(String::as_str),
        Some("TASK ERROR: shutdown timed out")
    );
    assert!(
        api.sim.state(|c| c.guest(100).is_some_and(|g| g.power.is_up())),
        "a failed shutdown leaves the VM running"
    );
    let (_, ok) = api.run_task("/nodes/pve1/qemu/100/status/shutdown", &[]).await;
    assert_eq!(ok["exitstatus"], "OK");
}

#[tokio::test]
async fn admin_endpoint_injects_faults_and_reports_state() {
    let api = Api::fast().await;
    let client = client_for(&api.sim);
    let fault = json!({"kind": "endpoint", "method": "POST", "path": "/nodes/{node}/vzdump", "failNext": 1, "status": 500, "message": "backup storage full"});
    let resp = client
        .post(format!("{}/_sim/faults", api.sim.url()))
        .json(&fault)
        .send()
        .await
        .expect("admin");
    assert_eq!(resp.status(), 200);
    let failed = api.post("/nodes/pve1/vzdump", &[("vmid", "100")]).await;
    assert_eq!(failed.reason.as_deref(), Some("backup storage full"));
    let bad = client
        .post(format!("{}/_sim/faults", api.sim.url()))
        .json(&json!({"kind": "nope"}))
        .send()
        .await
        .expect("admin");
    assert_eq!(bad.status(), 400);
    client
        .post(format!("{}/_sim/faults", api.sim.url()))
        .json(&json!({"kind": "node-offline", "node": "pve3"}))
        .send()
        .await
        .expect("admin");
    let state: serde_json::Value = client
        .get(format!("{}/_sim/state", api.sim.url()))
        .send()
        .await
        .expect("state")
        .json()
        .await
        .expect("json");
    let pve3 = state["data"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["node"] == "pve3")
        .cloned()
        .expect("pve3");
    assert_eq!(pve3["online"], false);
    assert_eq!(state["data"]["guests"].as_array().map(Vec::len), Some(6));
}

#[tokio::test]
async fn node_listeners_drop_connections_while_their_node_is_offline() {
    let config = SimConfig {
        node_listeners: true,
        faults: vec![Fault::Endpoint(EndpointFault::default())],
        ..fast_config()
    };
    let api = Api::start(config).await;
    let pve2 = api.sim.node_url("pve2").expect("pve2 listener").to_string();
    let token = format!("PVEAPIToken={}={}", api.sim.token_id(), api.sim.token_secret());
    let version = |url: String| {
        let client = client_for(&api.sim);
        let token = token.clone();
        async move {
            client
                .get(format!("{url}/api2/json/version"))
                .header("Authorization", token)
                .send()
                .await
        }
    };
    assert_eq!(version(pve2.clone()).await.expect("pve2 answers").status(), 200);
    let cluster = api.get("/cluster/status").await.ok();
    assert_eq!(cluster.data()[0]["quorate"], 1);
    api.sim.set_node_online("pve2", false).expect("node");
    assert!(
        version(pve2.clone()).await.is_err(),
        "an offline node does not answer"
    );
    assert_eq!(
        version(api.sim.url().to_string())
            .await
            .expect("pve1 answers")
            .status(),
        200
    );
}
