//! The simulator's wire format and authentication, over real loopback HTTPS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use homelab_autopilot::pvesim::SimConfig;
use serde_json::json;

use crate::pvesim_common::{Api, Auth, Body, fast_config};

#[tokio::test]
async fn version_with_token_returns_data_envelope_and_pve_headers() {
    let api = Api::fast().await;
    let resp = api.get("/version").await.ok();
    assert_eq!(resp.data()["version"], "9.1.3");
    assert_eq!(resp.data()["release"], "9.1");
    assert_eq!(resp.headers["server"], "pve-api-daemon/3.0");
    assert_eq!(resp.headers["content-type"], "application/json;charset=UTF-8");
    api.sim.shutdown().await;
}

#[tokio::test]
async fn unknown_path_is_501_with_the_message_in_the_reason_phrase() {
    let api = Api::fast().await;
    let resp = api.get("/nodes/pve1/nonsense").await;
    assert_eq!(resp.status, 501);
    assert_eq!(
        resp.reason.as_deref(),
        Some("Method 'GET /nodes/pve1/nonsense' not implemented")
    );
    assert_eq!(resp.body["data"], serde_json::Value::Null);
    assert_eq!(
        resp.body["message"],
        "Method 'GET /nodes/pve1/nonsense' not implemented"
    );
}

#[tokio::test]
async fn served_certificate_matches_the_advertised_fingerprint() {
    let api = Api::fast().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    let mut pem = api.sim.ca_pem().as_bytes();
    for cert in rustls_pemfile_certs(&mut pem) {
        roots.add(cert).expect("CA is a valid trust anchor");
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let addr = api.sim.url().trim_start_matches("https://").to_string();
    let tcp = tokio::net::TcpStream::connect(&addr).await.expect("connects");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("server name");
    let tls = connector
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the CA succeeds");
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first().cloned())
        .expect("leaf cert");
    let digest = <sha2::Sha256 as sha2::Digest>::digest(leaf.as_ref());
    let fingerprint: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    assert_eq!(fingerprint.join(":"), api.sim.fingerprint());
}

/// Minimal PEM reader for the test (the CA file holds one certificate).
fn rustls_pemfile_certs(pem: &mut &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use base64::Engine;
    let text = String::from_utf8_lossy(pem).into_owned();
    text.split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .filter_map(|block| block.split("-----END CERTIFICATE-----").next())
        .map(|b64| b64.chars().filter(|c| !c.is_whitespace()).collect::<String>())
        .filter_map(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .map(rustls::pki_types::CertificateDer::from)
        .collect()
}

#[tokio::test]
async fn plain_http_serves_the_same_api() {
    let api = Api::start(SimConfig {
        plain_http: true,
        ..fast_config()
    })
    .await;
    assert!(api.sim.url().starts_with("http://"));
    assert_eq!(api.sim.fingerprint(), "");
    api.get("/version").await.ok();
}

#[tokio::test]
async fn missing_or_wrong_credentials_are_401_without_body() {
    let api = Api::fast().await;
    let none = api
        .request(reqwest::Method::GET, "/version", Body::None, &Auth::None)
        .await;
    assert_eq!(
        (none.status, none.reason.as_deref(), none.raw.as_str()),
        (401, Some("No ticket"), "")
    );
    let bad = format!("PVEAPIToken={}=wrong", api.sim.token_id());
    let wrong = api.with_auth(Auth::Token(bad)).get("/version").await;
    assert_eq!(
        (wrong.status, wrong.reason.as_deref()),
        (401, Some("invalid token value!"))
    );
    let unknown = api
        .with_auth(Auth::Token("PVEAPIToken=root@pam!nope=x".into()))
        .get("/version")
        .await;
    assert_eq!(
        unknown.reason.as_deref(),
        Some("no such token 'nope' for user 'root@pam'")
    );
}

#[tokio::test]
async fn unauthorized_answers_are_delayed_by_three_scaled_seconds() {
    // time_scale 0.1: the 3 s delay becomes at least 300 ms (a lower bound only).
    let api = Api::start(SimConfig {
        time_scale: 0.1,
        ..fast_config()
    })
    .await;
    let started = Instant::now();
    let resp = api
        .request(reqwest::Method::GET, "/version", Body::None, &Auth::None)
        .await;
    assert_eq!(resp.status, 401);
    assert!(
        started.elapsed() >= Duration::from_millis(290),
        "401 came back after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn ticket_login_needs_csrf_on_writes_and_expires_after_two_hours() {
    let mut api = Api::fast().await;
    api.login().await;
    let Auth::Ticket { ticket, csrf } = api.auth.clone() else {
        panic!("ticket auth")
    };
    assert!(ticket.starts_with("PVE:root@pam:"), "{ticket}");
    api.get("/version").await.ok();
    let no_csrf = Auth::Ticket {
        ticket: ticket.clone(),
        csrf: String::new(),
    };
    let write = api.with_auth(no_csrf).post("/nodes/pve1/apt/update", &[]).await;
    assert_eq!(
        (write.status, write.reason.as_deref()),
        (401, Some("Permission denied - invalid csrf token"))
    );
    api.post("/nodes/pve1/apt/update", &[]).await.ok();
    // Renewal: POST the ticket as the password.
    let renewed = api
        .request(
            reqwest::Method::POST,
            "/access/ticket",
            Body::form(&[("username", "root@pam"), ("password", &ticket)]),
            &Auth::None,
        )
        .await
        .ok();
    assert!(
        renewed.data()["ticket"]
            .as_str()
            .is_some_and(|t| t.starts_with("PVE:root@pam:"))
    );
    api.sim.advance_clock(Duration::from_secs(2 * 3600));
    let expired = api.with_auth(Auth::Ticket { ticket, csrf }).get("/version").await;
    assert_eq!(
        (expired.status, expired.reason.as_deref()),
        (401, Some("permission denied - invalid PVE ticket"))
    );
}

#[tokio::test]
async fn expiring_tickets_forces_a_new_login_and_bad_password_is_401_with_body() {
    let mut api = Api::fast().await;
    api.login().await;
    api.sim.expire_tickets();
    let resp = api.get("/version").await;
    assert_eq!(resp.status, 401);
    let bad = api
        .request(
            reqwest::Method::POST,
            "/access/ticket",
            Body::form(&[("username", "root@pam"), ("password", "nope")]),
            &Auth::None,
        )
        .await;
    assert_eq!(
        (bad.status, bad.reason.as_deref()),
        (401, Some("authentication failure"))
    );
    assert_eq!(
        bad.body,
        json!({"data": null, "message": "authentication failure\n"})
    );
    api.login().await;
    api.get("/version").await.ok();
}

#[tokio::test]
async fn json_and_form_bodies_are_both_accepted() {
    let api = Api::fast().await;
    let json = api
        .post_json(
            "/nodes/pve1/qemu/100/snapshot",
            json!({"snapname": "viajson", "vmstate": true}),
        )
        .await
        .ok();
    let upid = json.data().as_str().expect("UPID").to_string();
    assert_eq!(api.wait_task(&upid).await["exitstatus"], "OK");
    let snaps = api.get("/nodes/pve1/qemu/100/snapshot").await.ok();
    let snap = snaps
        .data()
        .as_array()
        .expect("list")
        .iter()
        .find(|s| s["name"] == "viajson")
        .cloned()
        .expect("snapshot");
    assert_eq!(snap["vmstate"], 1);
}

#[tokio::test]
async fn nextid_is_a_json_string_and_taken_ids_are_parameter_errors() {
    let api = Api::fast().await;
    let next = api.get("/cluster/nextid").await.ok();
    assert_eq!(next.data(), &json!("105"));
    let taken = api.get("/cluster/nextid?vmid=100").await;
    assert_eq!(
        (taken.status, taken.reason.as_deref()),
        (400, Some("Parameter verification failed."))
    );
    assert_eq!(taken.body["errors"]["vmid"], "VM 100 already exists");
    assert_eq!(
        api.get("/cluster/nextid?vmid=4242").await.ok().data(),
        &json!("4242")
    );
}

#[tokio::test]
async fn cluster_status_and_nodes_use_integer_booleans() {
    let api = Api::fast().await;
    let status = api.get("/cluster/status").await.ok();
    let rows = status.data().as_array().expect("rows").clone();
    assert_eq!(rows[0]["type"], "cluster");
    assert_eq!(rows[0]["quorate"], 1);
    assert_eq!(rows[0]["nodes"], 3);
    let local: Vec<_> = rows.iter().filter(|r| r["local"] == 1).collect();
    assert_eq!(local.len(), 1);
    assert_eq!(local[0]["name"], "pve1");
    let nodes = api.get("/nodes").await.ok();
    assert!(
        nodes
            .data()
            .as_array()
            .expect("nodes")
            .iter()
            .all(|n| n["status"] == "online"
                && n["maxcpu"].is_u64()
                && n["ssl_fingerprint"].as_str()
                    == api.sim.node_fingerprint(n["node"].as_str().unwrap_or_default()))
    );
}

#[tokio::test]
async fn failed_start_names_the_schema_file_and_the_fix() {
    let bad = SimConfig {
        schema: Some("/nonexistent/pve-apischema.json".into()),
        ..fast_config()
    };
    let err = homelab_autopilot::pvesim::Simulator::start(bad)
        .await
        .expect_err("bad schema path");
    let text = err.to_string();
    assert!(
        text.contains("/nonexistent/pve-apischema.json") && text.contains("--schema"),
        "{text}"
    );
}
