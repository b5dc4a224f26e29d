//! TLS trust per node, as on a real Proxmox VE cluster: one cluster CA signs a distinct
//! certificate per node. The client verifies each endpoint with its own pin (or the CA), so it
//! fails over between nodes; one pin shared by two nodes' endpoints fails with a TLS mismatch
//! naming the endpoint; and pvesim with `--state-dir` keeps its certificates across restarts.

use homelab_autopilot::proxmox::{Endpoint, Error, PveClient, TlsVerify};
use homelab_autopilot::pvesim::{SimConfig, SimHandle, Simulator};

use crate::proxmox_client_common::{AuthKind, TlsKind, config, sim_config};

/// A simulator with one listener per node (pve1 on the main listener).
async fn three_nodes() -> Option<SimHandle> {
    let mut cfg = sim_config()?;
    cfg.node_listeners = true;
    Some(Simulator::start(cfg).await.expect("simulator"))
}

fn node_url(sim: &SimHandle, node: &str) -> String {
    sim.node_url(node).expect("node listener").to_owned()
}

fn pin(sim: &SimHandle, node: &str) -> TlsVerify {
    TlsVerify::Fingerprint(sim.node_fingerprint(node).expect("node certificate").to_owned())
}

#[tokio::test]
async fn pvesim_serves_a_distinct_certificate_per_node_from_one_ca() {
    let Some(sim) = three_nodes().await else { return };
    let fps: Vec<&str> = ["pve1", "pve2", "pve3"]
        .iter()
        .map(|n| sim.node_fingerprint(n).expect("certificate"))
        .collect();
    assert_eq!(fps[0], sim.fingerprint(), "the main listener serves pve1");
    assert!(
        fps[0] != fps[1] && fps[1] != fps[2] && fps[0] != fps[2],
        "{fps:?}"
    );
    let info = sim.info_json();
    assert_eq!(info["nodeFingerprints"]["pve2"], fps[1]);
    sim.shutdown().await;
}

#[tokio::test]
async fn client_fails_over_to_the_second_node_with_per_endpoint_pins() {
    let Some(sim) = three_nodes().await else { return };
    let mut cfg = config(&sim, AuthKind::Token, TlsKind::Pin);
    cfg.endpoints = vec![
        Endpoint::new(sim.url(), 0).with_tls(pin(&sim, "pve1")),
        Endpoint::new(node_url(&sim, "pve2"), 1).with_tls(pin(&sim, "pve2")),
    ];
    let client = PveClient::new(cfg).expect("client");
    client.version().await.expect("pve1 verifies with its own pin");
    sim.set_node_online("pve1", false).expect("pve1 offline");
    let status = client
        .cluster_status()
        .await
        .expect("pve2 verifies with its own pin");
    assert!(
        status.nodes.iter().any(|n| n.name == "pve2" && n.local),
        "{status:?}"
    );
    assert_eq!(client.endpoint(), node_url(&sim, "pve2"));
    sim.shutdown().await;
}

#[tokio::test]
async fn client_with_one_pin_for_two_nodes_fails_over_into_a_tls_mismatch_naming_the_endpoint() {
    let Some(sim) = three_nodes().await else { return };
    let mut cfg = config(&sim, AuthKind::Token, TlsKind::Pin); // pve1's fingerprint for all
    let pve2 = node_url(&sim, "pve2");
    cfg.endpoints = vec![Endpoint::new(sim.url(), 0), Endpoint::new(pve2.clone(), 1)];
    let client = PveClient::new(cfg).expect("client");
    client.version().await.expect("pve1 matches the pin");
    sim.set_node_online("pve1", false).expect("pve1 offline");
    let err = client.version().await.unwrap_err();
    let Error::Tls {
        endpoint,
        expected,
        presented,
        ..
    } = &err
    else {
        panic!("expected a TLS mismatch, got {err:?}")
    };
    assert_eq!(endpoint, &pve2);
    assert_eq!(expected.as_deref(), Some(sim.fingerprint()));
    assert_eq!(presented.as_deref(), sim.node_fingerprint("pve2"));
    assert!(err.to_string().contains(&pve2), "{err}");
    sim.shutdown().await;
}

#[tokio::test]
async fn client_trusting_the_cluster_ca_verifies_every_node() {
    let Some(sim) = three_nodes().await else { return };
    let mut cfg = config(&sim, AuthKind::Token, TlsKind::Ca);
    cfg.endpoints = ["pve1", "pve2", "pve3"]
        .iter()
        .enumerate()
        .map(|(i, n)| Endpoint::new(node_url(&sim, n), i32::try_from(i).expect("small")))
        .collect();
    let client = PveClient::new(cfg).expect("client");
    client.version().await.expect("pve1 verifies by the CA");
    for node in ["pve1", "pve2"] {
        sim.set_node_online(node, false).expect("offline");
        let status = client
            .cluster_status()
            .await
            .expect("the next node verifies by the CA");
        assert!(status.nodes.iter().any(|n| n.local && n.online), "{status:?}");
    }
    assert_eq!(client.endpoint(), node_url(&sim, "pve3"));
    sim.shutdown().await;
}

#[tokio::test]
async fn pvesim_with_a_state_dir_keeps_ca_and_node_certificates_across_restarts() {
    let Some(base) = sim_config() else { return };
    let dir = std::env::temp_dir().join(format!("pvesim-state-{}", rand::random::<u64>()));
    let start = || async {
        Simulator::start(SimConfig {
            node_listeners: true,
            state_dir: Some(dir.clone()),
            ..base.clone()
        })
        .await
        .expect("simulator")
    };
    let first = start().await;
    let (ca, fps): (String, Vec<String>) = (
        first.ca_pem().to_owned(),
        ["pve1", "pve2", "pve3"]
            .iter()
            .map(|n| first.node_fingerprint(n).expect("certificate").to_owned())
            .collect(),
    );
    first.shutdown().await;
    assert!(dir.join("pve-root-ca.pem").exists() && dir.join("nodes/pve2/pve-ssl.pem").exists());

    let second = start().await;
    assert_eq!(second.ca_pem(), ca);
    for (node, fp) in ["pve1", "pve2", "pve3"].iter().zip(&fps) {
        assert_eq!(second.node_fingerprint(node), Some(fp.as_str()), "{node}");
    }
    // A client pinned during the first run still connects to the restarted simulator.
    let mut cfg = config(&second, AuthKind::Token, TlsKind::Pin);
    cfg.endpoints =
        vec![Endpoint::new(node_url(&second, "pve2"), 0).with_tls(TlsVerify::Fingerprint(fps[1].clone()))];
    PveClient::new(cfg)
        .expect("client")
        .version()
        .await
        .expect("pin still valid");
    second.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
