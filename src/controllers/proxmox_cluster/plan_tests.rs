//! The ProxmoxCluster planner against JSON fixtures of PVE responses.

use std::collections::BTreeMap;

use super::super::observe::{ObservedStorage, storages_from};
use super::*;
use crate::crd::conditions::{Condition, is_condition_true};
use crate::proxmox::api::{ClusterResource, ClusterStatusEntry, StorageConfig};

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_750_000_000 + secs).unwrap()
}

fn spec(extra: &str) -> ProxmoxClusterSpec {
    serde_yaml::from_str(&format!(
        "endpoints: [{{url: 'https://pve1:8006'}}, {{url: 'https://pve2:8006', priority: 10}}]\n\
         credentialsSecretRef: {{name: pve-api-token}}\nresyncIntervalSeconds: 300\n{extra}"
    ))
    .unwrap()
}

fn fixture_storages() -> Vec<ObservedStorage> {
    let configs: Vec<StorageConfig> =
        serde_json::from_str(include_str!("testdata/storage_config.json")).unwrap();
    let rows: Vec<ClusterResource> =
        serde_json::from_str(include_str!("testdata/storage_resources.json")).unwrap();
    storages_from(configs, &rows)
}

fn observation(status_json: &str) -> ClusterObservation {
    let rows: Vec<ClusterStatusEntry> = serde_json::from_str(status_json).unwrap();
    let cluster = crate::proxmox::api::ClusterStatus::from_entries(rows);
    let node_versions: BTreeMap<String, String> = cluster
        .nodes
        .iter()
        .filter(|n| n.online)
        .map(|n| (n.name.clone(), "9.1.2".to_owned()))
        .collect();
    ClusterObservation {
        endpoint: "https://pve1:8006".into(),
        version: "9.1.2".into(),
        cluster,
        node_versions,
        storages: fixture_storages(),
    }
}

fn healthy() -> ClusterObservation {
    observation(include_str!("testdata/cluster_status_healthy.json"))
}

fn no_quorum() -> ClusterObservation {
    observation(include_str!("testdata/cluster_status_no_quorum.json"))
}

const TUNING: Tuning = Tuning::DEFAULT;

fn run(
    spec: &ProxmoxClusterSpec,
    previous: &ProxmoxClusterStatus,
    now: Timestamp,
    observed: Result<&ClusterObservation, &Failure>,
) -> ClusterPlan {
    plan(
        PlanInput {
            spec,
            generation: Some(1),
            previous,
            now,
            tuning: &TUNING,
        },
        observed,
    )
}

fn cond<'a>(s: &'a ProxmoxClusterStatus, t: &str) -> &'a Condition {
    find_condition(&s.conditions, t).unwrap_or_else(|| panic!("no {t} in {:?}", s.conditions))
}

fn reasons(p: &ClusterPlan) -> Vec<(&str, &str)> {
    p.outcome
        .events
        .iter()
        .map(|e| (e.type_str(), e.reason.as_str()))
        .collect()
}

#[test]
fn plan_first_connect_reports_nodes_versions_storages_and_one_event() {
    let s = spec("");
    let p = run(&s, &ProxmoxClusterStatus::default(), at(0), Ok(&healthy()));
    let st = &p.outcome.status;
    assert!(p.connected);
    assert_eq!(st.observed_generation, Some(1));
    assert_eq!(st.endpoint.as_deref(), Some("https://pve1:8006"));
    assert_eq!(st.version.as_deref(), Some("9.1.2"));
    assert_eq!(st.cluster_name.as_deref(), Some("homelab"));
    assert_eq!(
        (st.quorate, st.nodes_online.as_deref()),
        (Some(true), Some("3/3"))
    );
    assert_eq!(st.nodes.len(), 3);
    assert_eq!(st.nodes[1].ip.as_deref(), Some("192.168.100.12"));
    assert_eq!(st.nodes[1].version.as_deref(), Some("9.1.2"));
    assert_eq!(st.storages.len(), 3, "all storages when none are declared");
    let types: Vec<&str> = st.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(types, ["Ready", "Connected", "Quorate"]);
    for t in ["Ready", "Connected", "Quorate"] {
        assert!(is_condition_true(&st.conditions, t), "{t}");
    }
    assert_eq!(reasons(&p), [("Normal", "Connected")]);
    assert!(
        p.outcome.events[0]
            .note
            .contains("Proxmox VE 9.1.2, cluster homelab, 3/3 nodes online")
    );
    assert_eq!(p.outcome.requeue, Duration::from_secs(300));
}

#[test]
fn plan_unchanged_cluster_later_gives_identical_status_and_no_events() {
    let s = spec("");
    let first = run(&s, &ProxmoxClusterStatus::default(), at(0), Ok(&healthy()));
    let second = run(&s, &first.outcome.status, at(3600), Ok(&healthy()));
    assert_eq!(second.outcome.status, first.outcome.status);
    assert!(second.outcome.events.is_empty());
}

#[test]
fn plan_quorum_loss_and_recovery_flip_conditions_with_events() {
    let s = spec("");
    let ok = run(&s, &ProxmoxClusterStatus::default(), at(0), Ok(&healthy()))
        .outcome
        .status;
    let lost = run(&s, &ok, at(60), Ok(&no_quorum()));
    let st = &lost.outcome.status;
    assert_eq!(cond(st, "Quorate").status, ConditionStatus::False);
    assert_eq!(cond(st, "Quorate").reason, "QuorumLost");
    assert_eq!(cond(st, "Quorate").last_transition_time, at(60));
    assert_eq!(cond(st, "Ready").reason, "QuorumLost");
    assert!(is_condition_true(&st.conditions, "Connected"));
    assert_eq!(st.nodes_online.as_deref(), Some("1/3"));
    assert_eq!(
        reasons(&lost),
        [
            ("Warning", "QuorumLost"),
            ("Warning", "NodeOffline"),
            ("Warning", "NodeOffline")
        ]
    );
    assert_eq!(st.nodes[2].version, None, "offline nodes are not asked");
    let back = run(&s, st, at(120), Ok(&healthy()));
    assert_eq!(
        reasons(&back),
        [
            ("Normal", "QuorumRegained"),
            ("Normal", "NodeOnline"),
            ("Normal", "NodeOnline")
        ]
    );
    assert!(is_condition_true(&back.outcome.status.conditions, "Ready"));
}

#[test]
fn plan_standalone_node_is_quorate_without_cluster_name() {
    let s = spec("");
    let obs = observation(include_str!("testdata/cluster_status_standalone.json"));
    let p = run(&s, &ProxmoxClusterStatus::default(), at(0), Ok(&obs));
    assert_eq!(p.outcome.status.cluster_name, None);
    assert_eq!(cond(&p.outcome.status, "Quorate").reason, "Standalone");
    assert!(is_condition_true(&p.outcome.status.conditions, "Ready"));
}

#[test]
fn plan_auth_failure_keeps_inventory_clears_live_fields_and_backs_off() {
    let s = spec("");
    let ok = run(&s, &ProxmoxClusterStatus::default(), at(0), Ok(&healthy()))
        .outcome
        .status;
    let failure = Failure::Pve(crate::proxmox::Error::Unauthorized {
        message: "authentication failure".into(),
    });
    let p = run(&s, &ok, at(100), Err(&failure));
    let st = &p.outcome.status;
    assert!(!p.connected);
    let c = cond(st, "Connected");
    assert_eq!(
        (c.status, c.reason.as_str()),
        (ConditionStatus::False, "AuthenticationFailed")
    );
    assert!(c.message.contains("Secret \"pve-api-token\""), "{}", c.message);
    assert_eq!(cond(st, "Quorate").status, ConditionStatus::Unknown);
    assert_eq!(cond(st, "Ready").reason, "AuthenticationFailed");
    assert_eq!(
        (st.endpoint.as_ref(), st.quorate, st.nodes_online.as_ref()),
        (None, None, None)
    );
    assert!(st.nodes.is_empty());
    assert_eq!(st.version.as_deref(), Some("9.1.2"));
    assert_eq!(st.storages.len(), 3);
    assert_eq!(reasons(&p), [("Warning", "AuthenticationFailed")]);
    assert_eq!(p.outcome.requeue, Duration::from_secs(5));

    // The same failure ten minutes on: no new Event, the retry delay has grown to the cap.
    let later = run(&s, st, at(700), Err(&failure));
    assert!(later.outcome.events.is_empty());
    assert_eq!(later.outcome.requeue, Duration::from_secs(300));
    assert_eq!(later.outcome.status, *st);
}

#[test]
fn plan_tls_mismatch_reports_the_presented_fingerprint() {
    let s = spec("");
    let presented = ["AA"; 32].join(":");
    let failure = Failure::Pve(crate::proxmox::Error::Tls {
        endpoint: "https://pve1:8006".into(),
        expected: Some(["BB"; 32].join(":")),
        presented: Some(presented.clone()),
        detail: "mismatch".into(),
    });
    let p = run(&s, &ProxmoxClusterStatus::default(), at(0), Err(&failure));
    let c = cond(&p.outcome.status, "Connected");
    assert_eq!(c.reason, "TlsMismatch");
    assert!(
        c.message
            .contains(&format!("set spec.tls.fingerprint to \"{presented}\"")),
        "{}",
        c.message
    );
}

#[test]
fn plan_unreachable_names_every_endpoint_in_failover_order() {
    let s = spec("");
    let failure = Failure::Pve(crate::proxmox::Error::Connect {
        endpoint: "https://pve2:8006".into(),
        detail: "Connection refused".into(),
    });
    let p = run(&s, &ProxmoxClusterStatus::default(), at(0), Err(&failure));
    let c = cond(&p.outcome.status, "Connected");
    assert_eq!(c.reason, "Unreachable");
    assert!(
        c.message.contains("(https://pve1:8006, https://pve2:8006)"),
        "{}",
        c.message
    );
}

#[test]
fn plan_missing_secret_then_fixed_reports_each_transition_once() {
    let s = spec("");
    let missing = Failure::Unresolved(Unresolved::new(
        "SecretNotFound",
        "Secret \"pve-api-token\" does not exist",
    ));
    let p1 = run(&s, &ProxmoxClusterStatus::default(), at(0), Err(&missing));
    assert_eq!(reasons(&p1), [("Warning", "SecretNotFound")]);
    let p2 = run(&s, &p1.outcome.status, at(10), Ok(&healthy()));
    assert_eq!(reasons(&p2), [("Normal", "Connected")]);
    assert_eq!(cond(&p2.outcome.status, "Connected").last_transition_time, at(10));
}

#[test]
fn plan_endpoint_change_while_connected_is_a_failover_event() {
    let s = spec("");
    let ok = run(&s, &ProxmoxClusterStatus::default(), at(0), Ok(&healthy()))
        .outcome
        .status;
    let mut obs = healthy();
    obs.endpoint = "https://pve2:8006".into();
    let p = run(&s, &ok, at(60), Ok(&obs));
    assert_eq!(reasons(&p), [("Warning", "EndpointFailover")]);
    assert_eq!(p.outcome.status.endpoint.as_deref(), Some("https://pve2:8006"));
}

#[test]
fn plan_declared_storages_filter_status_and_a_missing_one_blocks_ready() {
    let s = spec("storages: [{name: pbs-homelab}, {name: nfs-backup}]\n");
    let p = run(&s, &ProxmoxClusterStatus::default(), at(0), Ok(&healthy()));
    let st = &p.outcome.status;
    let names: Vec<&str> = st.storages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["pbs-homelab"]);
    let ready = cond(st, "Ready");
    assert_eq!(
        (ready.status, ready.reason.as_str()),
        (ConditionStatus::False, "StorageNotFound")
    );
    assert!(ready.message.contains("nfs-backup"), "{}", ready.message);
    assert_eq!(
        reasons(&p),
        [("Normal", "Connected"), ("Warning", "StorageNotFound")]
    );
}
