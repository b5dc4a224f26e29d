//! The kube drivers of the two controllers against a mocked API server (tower-test, in the style
//! of kube-rs controller-rs's `ApiServerVerifier`), with the real simulator behind them: which
//! requests they make, in which order. No finalizer is ever added; the status goes as a
//! server-side apply patch on the status subresource with our field manager and the object's
//! generation as `observedGeneration`; it is sent only when the status changed; the Event comes
//! after the status, with its reason and the object it is about.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use homelab_autopilot::controllers::proxmox_cluster::controller::{self as cluster_controller, ClusterKind};
use homelab_autopilot::controllers::pve::ProxmoxDeps;
use homelab_autopilot::controllers::runtime::ControlledKind;
use homelab_autopilot::controllers::runtime::driver::{
    Env, ObjectKey, Reconciler, Source, reconcile, run_pass,
};
use homelab_autopilot::controllers::runtime::error::Error as DriverError;
use homelab_autopilot::controllers::service::controller::{self as service_controller, ServiceKind};
use homelab_autopilot::controllers::{BackoffTracker, Context, OperatorDeps};
use homelab_autopilot::crd::{ProxmoxCluster, Service};
use homelab_autopilot::metrics::Metrics;
use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use tower_test::mock::Handle;

use crate::controllers_common::{Lab, service};

type Mock = Handle<Request<Body>, Response<Body>>;

const SERVICE_STATUS: &str = "/apis/autopilot.homelab.dev/v1alpha1/namespaces/lab/services/nextcloud/status";

fn context(name: &'static str, client: Client) -> Arc<Context<OperatorDeps>> {
    let deps = OperatorDeps::new("/nonexistent".into(), None, ProxmoxDeps::new(None));
    Arc::new(Context::new(
        name,
        client,
        Metrics::new(),
        "test-pod",
        BackoffTracker::default(),
        Arc::new(deps),
    ))
}

fn cluster(lab: &Lab) -> ProxmoxCluster {
    let mut c = ProxmoxCluster::new("homelab", lab.cluster.clone());
    c.metadata.namespace = Some("lab".into());
    c.metadata.uid = Some("uid-homelab".into());
    c.metadata.generation = Some(1);
    c
}

fn nextcloud(generation: i64) -> Service {
    let mut obj = Service::new("nextcloud", service(200, "VM", ""));
    obj.metadata.namespace = Some("lab".into());
    obj.metadata.uid = Some("uid-nextcloud".into());
    obj.metadata.generation = Some(generation);
    obj
}

/// Every condition, and the status itself, name the generation they were computed from.
fn assert_observed_generation(status: &Value, generation: i64) {
    assert_eq!(status["observedGeneration"], generation, "{status}");
    let conditions = status["conditions"].as_array().expect("conditions");
    assert!(!conditions.is_empty());
    for c in conditions {
        assert_eq!(c["observedGeneration"], generation, "{c}");
    }
}

/// Asserts that the code under test, now finished, sent nothing more.
fn assert_no_more_requests(mock: &mut Mock) {
    use futures::FutureExt as _;
    if let Some(Some((req, _))) = mock.next_request().now_or_never() {
        panic!("unexpected request {} {}", req.method(), req.uri());
    }
}

fn secret_json(lab: &Lab) -> Value {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "pve-api-token", "namespace": "lab", "resourceVersion": "7"},
        "data": {"tokenId": b64(lab.sim.token_id()), "tokenSecret": b64(lab.sim.token_secret())},
    })
}

/// One recorded request: method, path and query, content type, JSON body.
struct Seen {
    method: Method,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

/// Takes the next request and answers it with `answer` (status 200).
async fn expect(mock: &mut Mock, answer: Value) -> Seen {
    respond(mock, 200, answer).await
}

/// Takes the next request and answers it with `status` and `answer`.
async fn respond(mock: &mut Mock, status: u16, answer: Value) -> Seen {
    let (req, send) = tokio::time::timeout(Duration::from_secs(30), mock.next_request())
        .await
        .expect("a request in time")
        .expect("the client is alive");
    let seen = Seen {
        method: req.method().clone(),
        path: req.uri().path().to_owned(),
        query: req.uri().query().unwrap_or_default().to_owned(),
        content_type: req
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default(),
        body: {
            let bytes = req.into_body().collect_bytes().await.unwrap();
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        },
    };
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&answer).unwrap()))
            .unwrap(),
    );
    seen
}

fn assert_status_apply(seen: &Seen, path: &str, manager: &str, kind: &str) {
    assert_eq!(seen.method, Method::PATCH);
    assert_eq!(seen.path, path);
    assert_eq!(seen.content_type, "application/apply-patch+yaml");
    assert!(
        seen.query.contains(&format!("fieldManager={manager}")),
        "{}",
        seen.query
    );
    assert!(seen.query.contains("force=true"), "{}", seen.query);
    assert_eq!(seen.body["apiVersion"], "autopilot.homelab.dev/v1alpha1");
    assert_eq!(seen.body["kind"], kind);
    assert!(
        seen.body
            .get("metadata")
            .is_none_or(|m| m.get("finalizers").is_none())
    );
}

/// Takes the next request, which must create an Event with `reason` about object `regarding`.
async fn expect_event(mock: &mut Mock, reason: &str, regarding: &str) {
    let answer = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "x"}});
    let event = expect(mock, answer).await;
    assert_event(&event, reason, regarding);
}

fn assert_event(seen: &Seen, reason: &str, regarding: &str) {
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.path, "/apis/events.k8s.io/v1/namespaces/lab/events");
    assert_eq!(seen.body["reason"], reason);
    assert_eq!(seen.body["regarding"]["name"], regarding);
    assert_eq!(seen.body["regarding"]["namespace"], "lab");
    assert_eq!(
        seen.body["regarding"]["apiVersion"],
        "autopilot.homelab.dev/v1alpha1"
    );
    assert_eq!(seen.body["regarding"]["uid"], format!("uid-{regarding}"));
    assert_eq!(seen.body["reportingController"], "homelab-autopilot");
    assert_eq!(seen.body["reportingInstance"], "test-pod");
}

#[tokio::test]
async fn cluster_reconcile_reads_secret_applies_status_then_publishes_event() {
    let lab = Lab::start().await;
    let (svc, mut mock) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(cluster_controller::CONTROLLER, Client::new(svc, "default"));
    let obj = Arc::new(cluster(&lab));
    let object_json = serde_json::to_value(obj.as_ref()).unwrap();
    let run = tokio::spawn(reconcile::<ClusterKind, OperatorDeps>(obj, ctx));

    let first = expect(&mut mock, secret_json(&lab)).await;
    assert_eq!(
        (first.method, first.path.as_str()),
        (Method::GET, "/api/v1/namespaces/lab/secrets/pve-api-token")
    );
    let status = expect(&mut mock, object_json).await;
    assert_status_apply(
        &status,
        "/apis/autopilot.homelab.dev/v1alpha1/namespaces/lab/proxmoxclusters/homelab/status",
        "homelab-autopilot-proxmoxcluster",
        "ProxmoxCluster",
    );
    let conditions = status.body["status"]["conditions"].as_array().unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "Connected" && c["status"] == "True")
    );
    assert_observed_generation(&status.body["status"], 1);
    assert_eq!(status.body["status"]["nodesOnline"], "3/3");
    expect_event(&mut mock, "Connected", "homelab").await;

    let action = run.await.unwrap().unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    drop(mock);
}

#[tokio::test]
async fn service_reconcile_reads_cluster_and_secret_applies_status_then_publishes_event() {
    let lab = Lab::start().await;
    let (svc, mut mock) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(service_controller::CONTROLLER, Client::new(svc, "default"));
    let obj = nextcloud(1);
    let object_json = serde_json::to_value(&obj).unwrap();
    let run = tokio::spawn(reconcile::<ServiceKind, OperatorDeps>(Arc::new(obj), ctx));

    let get_cluster = expect(&mut mock, serde_json::to_value(cluster(&lab)).unwrap()).await;
    assert_eq!(
        (get_cluster.method, get_cluster.path.as_str()),
        (
            Method::GET,
            "/apis/autopilot.homelab.dev/v1alpha1/namespaces/lab/proxmoxclusters/homelab"
        )
    );
    let get_secret = expect(&mut mock, secret_json(&lab)).await;
    assert_eq!(get_secret.path, "/api/v1/namespaces/lab/secrets/pve-api-token");
    let status = expect(&mut mock, object_json).await;
    assert_status_apply(&status, SERVICE_STATUS, "homelab-autopilot-service", "Service");
    assert_eq!(status.body["status"]["node"], "pve1");
    assert_eq!(status.body["status"]["powerState"], "Running");
    assert_observed_generation(&status.body["status"], 1);
    expect_event(&mut mock, "GuestFound", "nextcloud").await;
    run.await.unwrap().unwrap();
    assert_eq!(
        lab.guest(200),
        Some(("pve1".into(), true)),
        "the guest is only read"
    );
}

/// Runs one cluster reconcile against the mock, answering the Secret read and whatever follows
/// it; returns the requests after the Secret read (method and path) and the applied status.
async fn cluster_pass(
    lab: &Lab,
    ctx: &Arc<Context<OperatorDeps>>,
    mock: &mut Mock,
    obj: ProxmoxCluster,
) -> (Vec<String>, Option<Value>) {
    let object_json = serde_json::to_value(&obj).unwrap();
    let run = tokio::spawn(reconcile::<ClusterKind, OperatorDeps>(
        Arc::new(obj),
        Arc::clone(ctx),
    ));
    let secret = expect(mock, secret_json(lab)).await;
    assert_eq!(secret.path, "/api/v1/namespaces/lab/secrets/pve-api-token");
    let (mut requests, mut applied) = (Vec::new(), None);
    while !run.is_finished() {
        let next = tokio::time::timeout(Duration::from_millis(100), mock.next_request()).await;
        let Ok(Some((req, send))) = next else { continue };
        requests.push(format!("{} {}", req.method(), req.uri().path()));
        let is_status = req.method() == Method::PATCH;
        let body = req.into_body().collect_bytes().await.unwrap();
        send.send_response(
            Response::builder()
                .body(Body::from(object_json.to_string().into_bytes()))
                .unwrap(),
        );
        if is_status {
            applied = Some(serde_json::from_slice::<Value>(&body).unwrap()["status"].clone());
        }
    }
    run.await.unwrap().unwrap();
    assert_no_more_requests(mock);
    (requests, applied)
}

#[tokio::test]
async fn cluster_status_is_applied_only_when_it_changed() {
    let lab = Lab::start().await;
    let (svc, mut mock) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(cluster_controller::CONTROLLER, Client::new(svc, "default"));

    let (requests, first) = cluster_pass(&lab, &ctx, &mut mock, cluster(&lab)).await;
    let first = first.expect("the first pass writes the status");
    assert_eq!(
        requests.len(),
        2,
        "status, then the Connected Event: {requests:?}"
    );
    // The API server now stores that status; the next pass observes the same cluster.
    let mut stored = cluster(&lab);
    stored.status = Some(serde_json::from_value(first.clone()).unwrap());
    let (requests, second) = cluster_pass(&lab, &ctx, &mut mock, stored.clone()).await;
    assert_eq!(
        (requests, second),
        (vec![], None),
        "an unchanged status is not written again (it would wake the watch), and no Event repeats"
    );

    // A spec edit bumps the generation: the status changes (observedGeneration) and is written.
    stored.metadata.generation = Some(2);
    let third = cluster_pass(&lab, &ctx, &mut mock, stored)
        .await
        .1
        .expect("a new generation is reported");
    assert_observed_generation(&third, 2);
    assert_eq!(
        third["conditions"][0]["lastTransitionTime"],
        first["conditions"][0]["lastTransitionTime"]
    );
}

#[tokio::test]
async fn service_status_unchanged_sends_neither_patch_nor_event() {
    let lab = Lab::start().await;
    let (svc, mut mock) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(service_controller::CONTROLLER, Client::new(svc, "default"));
    let cluster_json = serde_json::to_value(cluster(&lab)).unwrap();
    let mut status = None;
    for pass in 0..2 {
        let mut obj = nextcloud(1);
        obj.status = status.clone().map(|s| serde_json::from_value(s).unwrap());
        let object_json = serde_json::to_value(&obj).unwrap();
        let run = tokio::spawn(reconcile::<ServiceKind, OperatorDeps>(
            Arc::new(obj),
            Arc::clone(&ctx),
        ));
        let get_cluster = expect(&mut mock, cluster_json.clone()).await;
        assert_eq!(get_cluster.method, Method::GET);
        expect(&mut mock, secret_json(&lab)).await;
        if pass == 0 {
            let patch = expect(&mut mock, object_json).await;
            assert_status_apply(&patch, SERVICE_STATUS, "homelab-autopilot-service", "Service");
            status = Some(patch.body["status"].clone());
            expect_event(&mut mock, "GuestFound", "nextcloud").await;
        }
        run.await.unwrap().unwrap();
        assert_no_more_requests(&mut mock);
    }
}

/// Takes the next request and answers it 404 with a `metav1.Status` body.
async fn not_found(mock: &mut Mock) -> Seen {
    let body = json!({
        "apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "NotFound",
        "message": "proxmoxclusters.autopilot.homelab.dev \"homelab\" not found", "code": 404,
    });
    respond(mock, 404, body).await
}

/// One Service reconcile whose ProxmoxCluster does not exist, the Service created `age` ago:
/// the applied status's `Ready` condition and the published Event.
async fn service_pass_without_cluster(age: jiff::SignedDuration) -> (Value, Value) {
    let (svc, mut mock) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(service_controller::CONTROLLER, Client::new(svc, "default"));
    let mut obj = nextcloud(1);
    obj.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::now() - age,
    ));
    let object_json = serde_json::to_value(&obj).unwrap();
    let run = tokio::spawn(reconcile::<ServiceKind, OperatorDeps>(Arc::new(obj), ctx));
    let get_cluster = not_found(&mut mock).await;
    assert_eq!(
        get_cluster.path,
        "/apis/autopilot.homelab.dev/v1alpha1/namespaces/lab/proxmoxclusters/homelab"
    );
    let status = expect(&mut mock, object_json).await;
    assert_status_apply(&status, SERVICE_STATUS, "homelab-autopilot-service", "Service");
    let ready = status.body["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Ready")
        .expect("Ready")
        .clone();
    let answer = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "x"}});
    let event = expect(&mut mock, answer).await;
    run.await.unwrap().unwrap();
    assert_no_more_requests(&mut mock);
    (ready, event.body)
}

#[tokio::test]
async fn service_applied_before_its_cluster_waits_with_a_normal_event_then_warns_cluster_not_found() {
    let (ready, event) = service_pass_without_cluster(jiff::SignedDuration::from_secs(5)).await;
    assert_eq!(ready["reason"], "WaitingForCluster", "{ready}");
    assert_eq!(event["type"], "Normal", "{event}");
    assert_eq!(event["reason"], "WaitingForCluster");

    let (ready, event) = service_pass_without_cluster(jiff::SignedDuration::from_mins(10)).await;
    assert_eq!(ready["reason"], "ClusterNotFound", "{ready}");
    assert_eq!(event["type"], "Warning", "{event}");
    assert_eq!(event["reason"], "ClusterNotFound");
    assert!(event["note"].as_str().unwrap().contains("\"homelab\""), "{event}");
}

/// The driver's [`Source`] over a few stored objects, without an API server.
struct Objects(Vec<Value>);

impl Source for Objects {
    async fn get<T: ControlledKind>(&self, _namespace: &str, name: &str) -> Result<Option<T>, DriverError> {
        let kind = T::kind(&());
        Ok(self
            .0
            .iter()
            .find(|o| o["kind"] == kind.as_ref() && o["metadata"]["name"] == name)
            .map(|o| serde_json::from_value(o.clone()).unwrap()))
    }

    async fn list<T: ControlledKind>(&self, _namespace: &str) -> Result<Vec<T>, DriverError> {
        let kind = T::kind(&());
        Ok(self
            .0
            .iter()
            .filter(|o| o["kind"] == kind.as_ref())
            .map(|o| serde_json::from_value(o.clone()).unwrap())
            .collect())
    }
}

fn deps() -> OperatorDeps {
    OperatorDeps::new("/nonexistent".into(), None, ProxmoxDeps::new(None))
}

#[tokio::test]
async fn service_that_cannot_reach_its_cluster_asks_for_one_prompt_cluster_recheck() {
    let lab = Lab::start().await;
    let deps = deps();
    let mut rechecks = deps.proxmox.rechecks.subscribe();
    let objects = Objects(vec![
        serde_json::to_value(cluster(&lab)).unwrap(),
        secret_json(&lab),
    ]);
    let metrics = Metrics::new();
    // PVE stops answering the cluster-wide read (connections dropped, retries included).
    lab.sim.drop_next(None, "/cluster/resources", 50);
    for (i, second) in [0, 1, 2].into_iter().enumerate() {
        let env = Env {
            deps: &deps,
            source: &objects,
            metrics: &metrics,
            now: crate::controllers_common::at(second),
        };
        let pass = run_pass::<ServiceKind, OperatorDeps, Objects>(&env, &nextcloud(1))
            .await
            .unwrap();
        let status = pass.status.expect("a status");
        let found = status.conditions.iter().find(|c| c.type_ == "Found").unwrap();
        assert_eq!(found.reason, "Unreachable", "{found:?}");
        let request = rechecks.try_recv();
        if i == 0 {
            let key = request.expect("the first failure asks for a re-check");
            assert_eq!((key.namespace.as_str(), key.name.as_str()), ("lab", "homelab"));
        } else {
            assert!(
                request.is_err(),
                "failures within 10 s do not ask again: {request:?}"
            );
        }
    }
}

#[tokio::test]
async fn deleted_cluster_leaves_metrics_and_the_client_cache() {
    let lab = Lab::start().await;
    let deps = deps();
    let objects = Objects(vec![secret_json(&lab)]);
    let metrics = Metrics::new();
    let env = Env {
        deps: &deps,
        source: &objects,
        metrics: &metrics,
        now: crate::controllers_common::at(0),
    };
    let obj = cluster(&lab);
    run_pass::<ClusterKind, OperatorDeps, Objects>(&env, &obj)
        .await
        .unwrap();
    let series = "homelab_autopilot_pve_cluster_connected{cluster=\"homelab\",namespace=\"lab\"} 1";
    assert!(metrics.render().unwrap().contains(series));
    assert_eq!(deps.proxmox.clients.len(), 1);
    <ClusterKind as Reconciler<OperatorDeps>>::forget(&deps, &metrics, &ObjectKey::of(&obj));
    assert!(
        !metrics.render().unwrap().contains("pve_cluster_connected{"),
        "{}",
        metrics.render().unwrap()
    );
    assert!(deps.proxmox.clients.is_empty());
}
