//! The RestoreTest kind's requests to the API server, through the generic driver and a mocked
//! API server (`ApiServerVerifier`): the cleanup finalizer is added before anything else; a pass
//! reads its ProxmoxCluster, lists the namespace's Services and BackupPolicies, writes its status
//! by server-side apply with its own field manager and publishes its Events; on deletion the
//! finalizer stays while a restored copy recorded in status cannot be removed, and goes (only
//! ours) when there is none.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::controller::{FINALIZER, RestoreTestKind};
use crate::controllers::OperatorDeps;
use crate::controllers::pve::ProxmoxDeps;
use crate::controllers::runtime::api_mock::{self, empty_list, event_answer, status_body};
use crate::controllers::runtime::backoff::BackoffTracker;
use crate::controllers::runtime::context::Context;
use crate::controllers::runtime::driver::reconcile;
use crate::crd::RestoreTest;
use crate::crd::common::GuestType;
use crate::crd::restore_test::{RestorePhase, RestoreResultDetail, RestoreRun, RestoreTestStatus};
use crate::metrics::Metrics;

const PATH: &str = "/apis/autopilot.homelab.dev/v1alpha1/namespaces/lab/restoretests/drill";

fn restore_test(finalizers: &[&str], deleting: bool) -> RestoreTest {
    let mut t: RestoreTest = serde_yaml::from_str(
        "apiVersion: autopilot.homelab.dev/v1alpha1\nkind: RestoreTest\n\
         metadata: {name: drill, namespace: lab, uid: uid-t, generation: 1, resourceVersion: '7'}\n\
         spec: {clusterRef: {name: homelab}, source: {serviceRef: {name: nextcloud}}, \
         target: {node: pve3, vmidRange: {start: 9900, end: 9909}}, network: {mode: None}}\n",
    )
    .unwrap();
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
    t.metadata.creation_timestamp = Some(now.clone());
    if !finalizers.is_empty() {
        t.metadata.finalizers = Some(finalizers.iter().map(|f| (*f).to_owned()).collect());
    }
    if deleting {
        t.metadata.deletion_timestamp = Some(now);
    }
    t
}

fn context() -> (Arc<Context<OperatorDeps>>, api_mock::ApiServerVerifier) {
    let (client, api) = api_mock::client();
    let deps = OperatorDeps::new(PathBuf::from("/nonexistent"), None, ProxmoxDeps::new(None));
    let ctx = Context::new(
        "restoretest",
        client,
        Metrics::new(),
        "pod-a",
        BackoffTracker::default(),
        Arc::new(deps),
    );
    (Arc::new(ctx), api)
}

#[tokio::test]
async fn finalizer_first_then_reads_writes_status_by_ssa_and_publishes_events() {
    let (ctx, mut api) = context();
    let obj = restore_test(&[], false);
    let answer = serde_json::to_value(&obj).unwrap();
    let task = tokio::spawn(reconcile::<RestoreTestKind, OperatorDeps>(
        Arc::new(obj),
        Arc::clone(&ctx),
    ));

    let add = api.answer(200, answer.clone()).await;
    assert_eq!((add.method.as_str(), add.path.as_str()), ("PATCH", PATH));
    assert_eq!(add.body["metadata"]["finalizers"], json!([FINALIZER]));
    assert_eq!(add.body["metadata"]["resourceVersion"], "7");

    let cluster = api.answer(404, status_body(404, "NotFound")).await;
    assert_eq!(
        cluster.path,
        "/apis/autopilot.homelab.dev/v1alpha1/namespaces/lab/proxmoxclusters/homelab"
    );
    let mut list = empty_list("ServiceList");
    list["items"] = json!([{
        "apiVersion": "autopilot.homelab.dev/v1alpha1", "kind": "Service",
        "metadata": {"name": "nextcloud", "namespace": "lab"},
        "spec": {"clusterRef": {"name": "homelab"}, "vmid": 200, "type": "VM"}
    }]);
    let services = api.answer(200, list).await;
    assert_eq!(
        (services.method.as_str(), services.path.as_str()),
        (
            "GET",
            "/apis/autopilot.homelab.dev/v1alpha1/namespaces/lab/services"
        )
    );
    let policies = api.answer(200, empty_list("BackupPolicyList")).await;
    assert_eq!(
        policies.path,
        "/apis/autopilot.homelab.dev/v1alpha1/namespaces/lab/backuppolicies"
    );

    let status = api.answer(200, answer).await;
    assert_eq!(
        (status.method.as_str(), status.path.as_str()),
        ("PATCH", &*format!("{PATH}/status"))
    );
    assert_eq!(status.content_type, "application/apply-patch+yaml");
    assert_eq!(
        status.param("fieldManager").as_deref(),
        Some("homelab-autopilot-restoretest")
    );
    let body = &status.body["status"];
    assert_eq!(body["observedGeneration"], 1);
    let condition = |t: &str| {
        body["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(condition("Ready")["reason"], "WaitingForCluster", "{body}");
    assert_eq!(condition("Succeeded")["status"], "Unknown", "{body}");
    // Without a schedule the spec's generation runs once: recorded now, waiting for the cluster.
    assert_eq!(body["currentRun"]["runId"], "g1", "{body}");
    assert_eq!(body["currentRun"]["restores"][0]["phase"], "Pending");
    assert_eq!(body["runGeneration"], 1);

    let started = api.answer(201, event_answer()).await;
    assert_eq!(
        (started.method.as_str(), started.body["reason"].as_str()),
        ("POST", Some("RestoreTestStarted"))
    );
    assert_eq!(started.body["regarding"]["kind"], "RestoreTest");
    let waiting = api.answer(201, event_answer()).await;
    assert_eq!(waiting.body["reason"], "WaitingForCluster");
    let action = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_ne!(action, kube::runtime::controller::Action::await_change());
    api.assert_no_request();
}

fn with_copy(mut t: RestoreTest) -> RestoreTest {
    let mut copy = RestoreResultDetail::pending("nextcloud", 200, GuestType::Vm);
    copy.restored_vmid = 9900;
    copy.node = "pve3".into();
    copy.phase = RestorePhase::Checking;
    t.status = Some(RestoreTestStatus {
        current_run: Some(RestoreRun {
            run_id: "g1".into(),
            start_time: jiff::Timestamp::now(),
            completion_time: None,
            service: "nextcloud".into(),
            result: None,
            rto_seconds: None,
            rto_target_seconds: None,
            restores: vec![copy],
        }),
        ..Default::default()
    });
    t
}

#[tokio::test]
async fn deletion_keeps_the_finalizer_while_a_recorded_copy_cannot_be_removed() {
    let (ctx, mut api) = context();
    let obj = with_copy(restore_test(&[FINALIZER], true));
    let task = tokio::spawn(reconcile::<RestoreTestKind, OperatorDeps>(
        Arc::new(obj),
        Arc::clone(&ctx),
    ));
    let cluster = api.answer(404, status_body(404, "NotFound")).await;
    assert!(
        cluster.path.ends_with("/proxmoxclusters/homelab"),
        "{}",
        cluster.path
    );
    // Copy 9900 is recorded and the cluster cannot be asked: no finalizer patch, a requeue.
    let action = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_ne!(action, kube::runtime::controller::Action::await_change());
    api.assert_no_request();
}

#[tokio::test]
async fn deletion_without_copies_removes_only_our_finalizer() {
    let (ctx, mut api) = context();
    let obj = restore_test(&["example.com/other", FINALIZER], true);
    let answer = serde_json::to_value(&obj).unwrap();
    let task = tokio::spawn(reconcile::<RestoreTestKind, OperatorDeps>(
        Arc::new(obj),
        Arc::clone(&ctx),
    ));
    let cluster = api.answer(404, status_body(404, "NotFound")).await;
    assert!(cluster.path.ends_with("/proxmoxclusters/homelab"));
    let remove = api.answer(200, answer).await;
    assert_eq!((remove.method.as_str(), remove.path.as_str()), ("PATCH", PATH));
    assert_eq!(
        remove.body["metadata"]["finalizers"],
        json!(["example.com/other"])
    );
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    api.assert_no_request();
}
