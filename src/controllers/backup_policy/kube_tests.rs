//! The BackupPolicy kind's requests to the API server, through the generic driver and a mocked
//! API server (`ApiServerVerifier`): the cleanup finalizer is added before anything else; a pass
//! reads its ProxmoxCluster and lists the namespace's Services, then writes its status by
//! server-side apply with its own field manager and publishes the Event; deletion with
//! `deletionPolicy: Retain` removes only our finalizer and touches no backup.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::controller::{BackupPolicyKind, FINALIZER};
use crate::controllers::OperatorDeps;
use crate::controllers::pve::ProxmoxDeps;
use crate::controllers::runtime::api_mock::{self, empty_list, status_body};
use crate::controllers::runtime::backoff::BackoffTracker;
use crate::controllers::runtime::context::Context;
use crate::controllers::runtime::driver::reconcile;
use crate::crd::BackupPolicy;
use crate::metrics::Metrics;

const PATH: &str = "/apis/autopilot.homelab.dev/v1alpha1/namespaces/lab/backuppolicies/nightly";

fn policy(finalizers: &[&str], deleting: bool) -> BackupPolicy {
    let mut p: BackupPolicy = serde_yaml::from_str(
        "apiVersion: autopilot.homelab.dev/v1alpha1\nkind: BackupPolicy\n\
         metadata: {name: nightly, namespace: lab, uid: uid-p, generation: 1, resourceVersion: '7'}\n\
         spec: {clusterRef: {name: homelab}, services: {matchLabels: {backup: nightly}}, \
         schedule: '30 2 * * *', destination: {pbs: {storage: pbs-homelab}}}\n",
    )
    .unwrap();
    p.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::now(),
    ));
    if !finalizers.is_empty() {
        p.metadata.finalizers = Some(finalizers.iter().map(|f| (*f).to_owned()).collect());
    }
    if deleting {
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::now(),
        ));
    }
    p
}

fn context() -> (Arc<Context<OperatorDeps>>, api_mock::ApiServerVerifier) {
    let (client, api) = api_mock::client();
    let deps = OperatorDeps::new(PathBuf::from("/nonexistent"), None, ProxmoxDeps::new(None));
    let ctx = Context::new(
        "backuppolicy",
        client,
        Metrics::new(),
        "pod-a",
        BackoffTracker::default(),
        Arc::new(deps),
    );
    (Arc::new(ctx), api)
}

#[tokio::test]
async fn finalizer_first_then_reads_status_by_ssa_and_event() {
    let (ctx, mut api) = context();
    let obj = policy(&[], false);
    let answer = serde_json::to_value(&obj).unwrap();
    let task = tokio::spawn(reconcile::<BackupPolicyKind, OperatorDeps>(
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
    let list = api.answer(200, empty_list("ServiceList")).await;
    assert_eq!(
        (list.method.as_str(), list.path.as_str()),
        (
            "GET",
            "/apis/autopilot.homelab.dev/v1alpha1/namespaces/lab/services"
        )
    );

    let status = api.answer(200, answer).await;
    assert_eq!(
        (status.method.as_str(), status.path.as_str()),
        ("PATCH", &*format!("{PATH}/status"))
    );
    assert_eq!(status.content_type, "application/apply-patch+yaml");
    assert_eq!(
        status.param("fieldManager").as_deref(),
        Some("homelab-autopilot-backuppolicy")
    );
    let ready = &status.body["status"]["conditions"][0];
    assert_eq!(ready["type"], "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "WaitingForCluster", "{ready}");
    assert_eq!(status.body["status"]["observedGeneration"], 1);
    assert!(status.body["status"]["nextRunTime"].is_string());

    let event = api
        .answer(
            201,
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}}),
        )
        .await;
    assert_eq!(event.method.as_str(), "POST");
    assert_eq!(event.body["reason"], "WaitingForCluster");
    assert_eq!(event.body["regarding"]["kind"], "BackupPolicy");
    let action = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_ne!(action, kube::runtime::controller::Action::await_change());
    api.assert_no_request();
}

#[tokio::test]
async fn deleting_a_retain_policy_removes_only_our_finalizer() {
    let (ctx, mut api) = context();
    let obj = policy(&["example.com/other", FINALIZER], true);
    let answer = serde_json::to_value(&obj).unwrap();
    let task = tokio::spawn(reconcile::<BackupPolicyKind, OperatorDeps>(
        Arc::new(obj),
        Arc::clone(&ctx),
    ));
    // The cleanup looks up the cluster (to drop staged archives of a run cut short)...
    let cluster = api.answer(404, status_body(404, "NotFound")).await;
    assert!(
        cluster.path.ends_with("/proxmoxclusters/homelab"),
        "{}",
        cluster.path
    );
    // ...and with Retain deletes nothing: the finalizer goes at once.
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
