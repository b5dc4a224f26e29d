//! The ProxmoxCluster reconcile core against the simulator over real HTTPS on loopback:
//! connecting, failover, authentication and TLS failures, quorum and node changes, and the
//! client cache following the credentials Secret.

use homelab_autopilot::crd::conditions::ConditionStatus;
use homelab_autopilot::crd::proxmox_cluster::ProxmoxClusterStatus;
use homelab_autopilot::proxmox::ClientMetrics;
use prometheus::Encoder;

use crate::controllers_common::{CLUSTER_UID, Lab, at, cond, event_reasons, summary};

#[tokio::test]
async fn cluster_connect_reports_version_quorum_nodes_and_storages() {
    let lab = Lab::start().await;
    let plan = lab.cluster_pass(&ProxmoxClusterStatus::default(), at(0)).await;
    let st = &plan.outcome.status;
    assert!(plan.connected);
    let c = cond(&st.conditions, "Connected");
    assert_eq!(summary(c), (ConditionStatus::True, "Connected"));
    assert_eq!(cond(&st.conditions, "Quorate").status, ConditionStatus::True);
    assert_eq!(cond(&st.conditions, "Ready").status, ConditionStatus::True);
    assert_eq!(st.endpoint.as_deref(), Some(lab.sim.url()));
    assert_eq!(st.version.as_deref(), Some("9.1.3"));
    assert_eq!(st.cluster_name.as_deref(), Some("homelab"));
    assert_eq!(st.nodes_online.as_deref(), Some("3/3"));
    let nodes: Vec<(&str, bool, Option<&str>, Option<&str>)> = st
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.online, n.ip.as_deref(), n.version.as_deref()))
        .collect();
    assert_eq!(
        nodes,
        [
            ("pve1", true, Some("192.168.1.10"), Some("9.1.3")),
            ("pve2", true, Some("192.168.2.10"), Some("9.1.3")),
            ("pve3", true, Some("192.168.3.10"), Some("9.1.3")),
        ]
    );
    let storages: Vec<(&str, &str, bool)> = st
        .storages
        .iter()
        .map(|s| (s.name.as_str(), s.type_.as_str(), s.shared))
        .collect();
    assert_eq!(
        storages,
        [("local-lvm", "lvmthin", false), ("pbs-homelab", "pbs", true)]
    );
    assert_eq!(st.storages[0].nodes, ["pve1", "pve2", "pve3"]);
    assert_eq!(event_reasons(&plan.outcome), ["Connected"]);

    // The next pass (a resync later) writes the same status and no Event.
    let again = lab.cluster_pass(st, at(300)).await;
    assert_eq!(again.outcome.status, *st);
    assert!(again.outcome.events.is_empty());
}

#[tokio::test]
async fn cluster_wrong_token_reports_authentication_failed_without_the_secret() {
    let mut lab = Lab::start().await;
    let token_id = lab.sim.token_id().to_owned();
    lab.set_secret(&[("tokenId", &token_id), ("tokenSecret", "wrong-secret-4711")]);
    let plan = lab.cluster_pass(&ProxmoxClusterStatus::default(), at(0)).await;
    assert!(!plan.connected);
    let c = cond(&plan.outcome.status.conditions, "Connected");
    assert_eq!(summary(c), (ConditionStatus::False, "AuthenticationFailed"));
    assert!(c.message.contains("Secret \"pve-api-token\""), "{}", c.message);
    assert_eq!(event_reasons(&plan.outcome), ["AuthenticationFailed"]);
    let everything = format!(
        "{}{:?}",
        serde_json::to_string(&plan.outcome.status).unwrap(),
        plan.outcome.events
    );
    assert!(!everything.contains("wrong-secret-4711"), "{everything}");
    assert!(!everything.contains(lab.sim.token_secret()), "{everything}");

    // The credentials are fixed: the new Secret version builds a new client, which connects.
    let secret = lab.sim.token_secret().to_owned();
    lab.set_secret(&[("tokenId", &token_id), ("tokenSecret", &secret)]);
    let fixed = lab.cluster_pass(&plan.outcome.status, at(60)).await;
    assert!(fixed.connected);
    assert_eq!(event_reasons(&fixed.outcome), ["Connected"]);
}

#[tokio::test]
async fn cluster_password_credentials_connect_with_a_ticket() {
    let mut lab = Lab::start().await;
    let (user, password) = (lab.sim.username().to_owned(), lab.sim.password().to_owned());
    lab.set_secret(&[("username", &user), ("password", &password)]);
    let plan = lab.cluster_pass(&ProxmoxClusterStatus::default(), at(0)).await;
    assert!(plan.connected, "{:#?}", plan.outcome.status.conditions);
}

#[tokio::test]
async fn cluster_wrong_fingerprint_reports_tls_mismatch_with_the_presented_one() {
    let lab = Lab::start().await;
    let mut spec = lab.cluster.clone();
    let pinned = ["AB"; 32].join(":");
    spec.tls.as_mut().unwrap().fingerprint = Some(pinned.clone());
    let plan = lab
        .cluster_pass_with(&spec, &ProxmoxClusterStatus::default(), true, at(0))
        .await;
    let c = cond(&plan.outcome.status.conditions, "Connected");
    assert_eq!(summary(c), (ConditionStatus::False, "TlsMismatch"));
    let fix = format!("set spec.tls.fingerprint to \"{}\"", lab.sim.fingerprint());
    assert!(c.message.contains(&fix), "{}", c.message);
    assert!(c.message.contains(&pinned), "{}", c.message);
}

#[tokio::test]
async fn cluster_missing_secret_and_key_name_the_fix() {
    let mut lab = Lab::start().await;
    let plan = lab
        .cluster_pass_with(&lab.cluster, &ProxmoxClusterStatus::default(), false, at(0))
        .await;
    let c = cond(&plan.outcome.status.conditions, "Connected");
    assert_eq!(c.reason, "SecretNotFound");
    assert!(c.message.contains("namespace lab"), "{}", c.message);
    let token_id = lab.sim.token_id().to_owned();
    lab.set_secret(&[("tokenId", &token_id)]);
    let plan = lab.cluster_pass(&plan.outcome.status, at(10)).await;
    let c = cond(&plan.outcome.status.conditions, "Connected");
    assert_eq!(c.reason, "SecretInvalid");
    assert!(c.message.contains("no key tokenSecret"), "{}", c.message);
    assert_eq!(event_reasons(&plan.outcome), ["SecretInvalid"]);
}

#[tokio::test]
async fn cluster_first_endpoint_dead_fails_over_to_the_next() {
    let lab = Lab::start().await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("https://{}", l.local_addr().unwrap())
    };
    let mut spec = lab.cluster.clone();
    spec.endpoints = serde_yaml::from_str(&format!(
        "[{{url: '{dead}', priority: 0}}, {{url: '{}', priority: 10}}]",
        lab.sim.url()
    ))
    .unwrap();
    let plan = lab
        .cluster_pass_with(&spec, &ProxmoxClusterStatus::default(), true, at(0))
        .await;
    assert!(plan.connected, "{:#?}", plan.outcome.status.conditions);
    assert_eq!(plan.outcome.status.endpoint.as_deref(), Some(lab.sim.url()));

    // Every endpoint dead: Unreachable, naming them all.
    spec.endpoints.truncate(1);
    // Tests change the spec without a new generation: drop the cached client by hand.
    lab.deps.clients.remove(CLUSTER_UID);
    let plan = lab
        .cluster_pass_with(&spec, &ProxmoxClusterStatus::default(), true, at(0))
        .await;
    let c = cond(&plan.outcome.status.conditions, "Connected");
    assert_eq!(c.reason, "Unreachable");
    assert!(c.message.contains(&dead), "{}", c.message);
}

#[tokio::test]
async fn cluster_quorum_loss_and_offline_node_flip_conditions() {
    let lab = Lab::start().await;
    let ok = lab
        .cluster_pass(&ProxmoxClusterStatus::default(), at(0))
        .await
        .outcome
        .status;
    lab.sim.set_node_online("pve3", false).unwrap();
    let one_down = lab.cluster_pass(&ok, at(60)).await;
    let st = &one_down.outcome.status;
    assert_eq!(st.nodes_online.as_deref(), Some("2/3"));
    assert!(!st.nodes[2].online);
    assert_eq!(cond(&st.conditions, "Quorate").status, ConditionStatus::True);
    assert_eq!(event_reasons(&one_down.outcome), ["NodeOffline"]);

    lab.sim.set_quorum_lost(true);
    let lost = lab.cluster_pass(st, at(120)).await;
    let q = cond(&lost.outcome.status.conditions, "Quorate");
    assert_eq!(
        (q.status, q.reason.as_str()),
        (ConditionStatus::False, "QuorumLost")
    );
    assert_eq!(
        cond(&lost.outcome.status.conditions, "Ready").reason,
        "QuorumLost"
    );
    assert_eq!(event_reasons(&lost.outcome), ["QuorumLost"]);

    lab.sim.set_quorum_lost(false);
    lab.sim.set_node_online("pve3", true).unwrap();
    let back = lab.cluster_pass(&lost.outcome.status, at(180)).await;
    assert_eq!(event_reasons(&back.outcome), ["QuorumRegained", "NodeOnline"]);
    assert_eq!(
        cond(&back.outcome.status.conditions, "Ready").status,
        ConditionStatus::True
    );
}

#[tokio::test]
async fn cluster_client_is_cached_per_secret_version_and_counts_requests() {
    let mut lab = Lab::start().await;
    let registry = prometheus::Registry::new();
    lab.deps.client_metrics = Some(ClientMetrics::new(&registry).unwrap());
    lab.cluster_pass(&ProxmoxClusterStatus::default(), at(0)).await;
    assert_eq!(lab.deps.clients.len(), 1);
    let first = lab
        .deps
        .clients
        .get("uid-cluster", "1/1/-")
        .expect("cached for generation 1, Secret 1");
    lab.cluster_pass(&ProxmoxClusterStatus::default(), at(1)).await;
    let second = lab.deps.clients.get("uid-cluster", "1/1/-").unwrap();
    assert_eq!(format!("{first:?}"), format!("{second:?}"));
    // A rotated Secret replaces the client.
    let (id, secret) = (lab.sim.token_id().to_owned(), lab.sim.token_secret().to_owned());
    lab.set_secret(&[("tokenId", &id), ("tokenSecret", &secret)]);
    lab.cluster_pass(&ProxmoxClusterStatus::default(), at(2)).await;
    assert!(lab.deps.clients.get("uid-cluster", "1/1/-").is_none());
    assert!(lab.deps.clients.get("uid-cluster", "1/2/-").is_some());
    let mut text = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&registry.gather(), &mut text)
        .unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains(
            "homelab_autopilot_pve_requests_total{code=\"200\",method=\"GET\",path_template=\"/version\"} 3"
        ),
        "{text}"
    );
}
