//! Every request is validated against the official schema: each rule kind is rejected with
//! PVE's 400 shape and message, valid requests pass, and every simulated endpoint exists in it.

use homelab_autopilot::pvesim::SchemaIndex;
use serde_json::{Value, json};

use crate::pvesim_common::{Api, Body, Resp, schema_path};

fn error_of(resp: &Resp, field: &str) -> String {
    assert_eq!(resp.status, 400, "{}", resp.raw);
    assert_eq!(resp.reason.as_deref(), Some("Parameter verification failed."));
    assert_eq!(resp.body["data"], Value::Null);
    assert_eq!(resp.body["message"], "Parameter verification failed.\n");
    resp.body["errors"][field]
        .as_str()
        .unwrap_or_else(|| panic!("no error for {field}: {}", resp.raw))
        .to_string()
}

#[tokio::test]
async fn schema_violations_of_each_rule_kind_are_rejected_with_pve_messages() {
    if schema_path().is_none() {
        return;
    }
    let api = Api::fast().await;
    let not_in_schema =
        "property is not defined in schema and the schema does not allow additional properties";
    assert_eq!(
        error_of(&api.get("/version?bogus=1").await, "bogus"),
        not_in_schema
    );
    assert_eq!(
        error_of(
            &api.put("/nodes/pve1/qemu/100/config", &[("bogus", "1")]).await,
            "bogus"
        ),
        not_in_schema
    );
    assert_eq!(
        error_of(&api.post("/nodes/pve1/qemu/100/snapshot", &[]).await, "snapname"),
        "property is missing and it is not optional"
    );
    assert_eq!(
        error_of(&api.get("/nodes/pve1/tasks?limit=abc").await, "limit"),
        "type check ('integer') failed - got 'abc'"
    );
    assert_eq!(
        error_of(&api.get("/nodes/pve1/tasks?start=-1").await, "start"),
        "value must have a minimum value of 0"
    );
    let volid = "/nodes/pve1/storage/local/content/local%3Abackup%2Fx.vma?delay=50";
    let delay = api
        .request(reqwest::Method::DELETE, volid, Body::None, &api.auth)
        .await;
    assert_eq!(error_of(&delay, "delay"), "value must have a maximum value of 30");
    assert_eq!(
        error_of(
            &api.post("/nodes/pve1/vzdump", &[("vmid", "100"), ("remove", "true")])
                .await,
            "remove"
        ),
        "type check ('boolean') failed - got 'true'"
    );
    assert_eq!(
        error_of(
            &api.post("/nodes/pve1/vzdump", &[("vmid", "100"), ("mode", "fast")])
                .await,
            "mode"
        ),
        "value 'fast' does not have a value in the enumeration 'snapshot, suspend, stop'"
    );
    assert_eq!(
        error_of(
            &api.put("/nodes/pve1/qemu/100/config", &[("vmgenid", "not-a-uuid")])
                .await,
            "vmgenid"
        ),
        "value does not match the regex pattern"
    );
    let long = "x".repeat(41);
    assert_eq!(
        error_of(
            &api.post("/nodes/pve1/qemu/100/snapshot", &[("snapname", &long)])
                .await,
            "snapname"
        ),
        "value may only be 40 characters long"
    );
    assert_eq!(
        error_of(
            &api.post("/cluster/ha/resources/vm:101/migrate", &[("node", "bad_node")])
                .await,
            "node"
        ),
        "invalid format - value does not look like a valid node name\n"
    );
    // Calls for another node are proxied before validation: an unknown name fails the lookup.
    let proxied = api.get("/nodes/bad_node/qemu").await;
    assert_eq!(
        (proxied.status, proxied.reason.as_deref()),
        (
            500,
            Some(
                "hostname lookup 'bad_node' failed - failed to get address info for: bad_node: Name or service not known"
            )
        )
    );
    assert_eq!(
        error_of(&api.get("/nodes/pve1/qemu/99/status/current").await, "vmid"),
        "invalid format - value does not look like a valid VM ID\n"
    );
    assert_eq!(
        error_of(
            &api.put("/nodes/pve1/qemu/100/config", &[("tags", "bad tag!")])
                .await,
            "tags"
        ),
        "invalid format - invalid characters in tag\n"
    );
    assert_eq!(
        error_of(
            &api.post("/nodes/pve1/vzdump", &[("vmid", "100"), ("storage", "-bad")])
                .await,
            "storage"
        ),
        "invalid format - storage ID '-bad' contains illegal characters\n"
    );
    assert_eq!(
        error_of(
            &api.put("/nodes/pve1/qemu/100/config", &[("net0", "foo=1")]).await,
            "net0"
        ),
        "invalid format - invalid key in comma-separated list property: foo\n"
    );
    assert!(
        error_of(
            &api.put(
                "/nodes/pve1/qemu/100/config",
                &[("net0", "virtio=zz,bridge=vmbr0")]
            )
            .await,
            "net0"
        )
        .starts_with("invalid format - format error\nnet0.macaddr: ")
    );
    assert_eq!(
        error_of(
            &api.post("/nodes/pve1/vzdump", &[("vmid", "100"), ("notes-template", "x")])
                .await,
            "storage"
        ),
        "missing property - 'notes-template' requires this property"
    );
    let conflict = api.get("/nodes/pve1/qemu/100/status/current?vmid=101").await;
    assert_eq!(
        error_of(&conflict, "vmid"),
        "duplicate parameter (already defined in URI) with conflicting values!"
    );
}

#[tokio::test]
async fn valid_requests_pass_validation_in_form_and_json() {
    if schema_path().is_none() {
        return;
    }
    let api = Api::fast().await;
    api.put(
        "/nodes/pve1/qemu/100/config",
        &[
            ("net1", "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1"),
            ("onboot", "1"),
        ],
    )
    .await
    .ok();
    api.put(
        "/nodes/pve2/lxc/102/config",
        &[("net1", "name=eth1,bridge=vmbr1,ip=dhcp")],
    )
    .await
    .ok();
    let json = api
        .request(
            reqwest::Method::PUT,
            "/nodes/pve1/qemu/100/config",
            Body::Json(json!({"onboot": true, "cores": 2})),
            &api.auth,
        )
        .await;
    assert_eq!(json.status, 200, "{}", json.raw);
    api.post(
        "/nodes/pve1/vzdump",
        &[
            ("vmid", "100"),
            ("mode", "snapshot"),
            ("compress", "zstd"),
            ("remove", "0"),
        ],
    )
    .await
    .ok();
    api.get("/nodes/pve1/tasks?limit=5&start=0&source=all").await.ok();
}

#[tokio::test]
async fn every_simulated_endpoint_exists_in_the_official_schema() {
    let Some(path) = schema_path() else { return };
    let schema = SchemaIndex::load(&path).expect("schema parses");
    assert!(schema.len() > 600, "{} methods", schema.len());
    let api = Api::fast().await;
    let missing: Vec<_> = api
        .sim
        .endpoints()
        .into_iter()
        .filter(|(m, t)| !schema.contains(m, t))
        .collect();
    assert!(missing.is_empty(), "not in the schema: {missing:?}");
}
