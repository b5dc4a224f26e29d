//! Unit tests of the error policy and the guarded reconcile (no API server: a mock client that is
//! never called).

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ObjectMeta;
use kube::runtime::events::EventType;

use super::*;

#[derive(Debug, thiserror::Error)]
#[error("dependency failed")]
struct TestError {
    transient: bool,
}

impl ReconcileError for TestError {
    fn category(&self) -> &'static str {
        if self.transient {
            "DependencyUnavailable"
        } else {
            "SpecInvalid"
        }
    }
    fn is_transient(&self) -> bool {
        self.transient
    }
}

fn context() -> Arc<Context<()>> {
    let (svc, _handle) =
        tower_test::mock::pair::<::http::Request<kube::client::Body>, ::http::Response<kube::client::Body>>();
    let client = Client::new(svc, "default");
    let backoff = BackoffTracker::new(BackoffPolicy {
        jitter: 0.0,
        ..BackoffPolicy::default()
    });
    Arc::new(Context::new(
        "widget",
        client,
        Metrics::new(),
        "pod-a",
        backoff,
        Arc::new(()),
    ))
}

fn config_map(uid: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some("cm".into()),
            namespace: Some("lab".into()),
            uid: Some(uid.into()),
            generation: Some(1),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    }
}

fn guarded(uid: &str) -> Arc<Guarded<ConfigMap>> {
    Arc::new(DeserializeGuard(Ok(config_map(uid))))
}

fn invalid(uid: &str) -> Arc<Guarded<ConfigMap>> {
    Arc::new(DeserializeGuard(Err(InvalidObject {
        error: "unknown variant `purple`".into(),
        metadata: config_map(uid).metadata,
    })))
}

fn errors(ctx: &Context<()>, category: &str) -> u64 {
    ctx.metrics
        .reconcile
        .errors
        .with_label_values(&["widget", category])
        .get()
}

#[tokio::test]
async fn error_policy_transient_error_backs_off_per_object_and_counts_category() {
    let ctx = context();
    let err = Failure::Reconcile(TestError { transient: true });
    let delays: Vec<_> = (0..3)
        .map(|_| error_policy(guarded("u1"), &err, Arc::clone(&ctx)))
        .collect();
    assert_eq!(
        delays,
        [5, 10, 20].map(|s| Action::requeue(Duration::from_secs(s)))
    );
    // Another object starts at the first step.
    assert_eq!(
        error_policy(guarded("u2"), &err, Arc::clone(&ctx)),
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(errors(&ctx, "DependencyUnavailable"), 4);
}

#[tokio::test]
async fn error_policy_permanent_error_requeues_long_and_resets_backoff() {
    let ctx = context();
    error_policy(
        guarded("u1"),
        &Failure::Reconcile(TestError { transient: true }),
        Arc::clone(&ctx),
    );
    let action = error_policy(
        guarded("u1"),
        &Failure::Reconcile(TestError { transient: false }),
        Arc::clone(&ctx),
    );
    assert_eq!(action, Action::requeue(PERMANENT_ERROR_REQUEUE));
    assert_eq!(ctx.backoff.failures("u1"), 0);
    assert_eq!(errors(&ctx, "SpecInvalid"), 1);
}

#[tokio::test]
async fn reconcile_guarded_invalid_object_fails_permanently_without_reconcile() {
    let ctx = context();
    let called = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&called);
    let reconcile = Arc::new(move |_: Arc<ConfigMap>, _: Arc<Context<()>>| {
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        async { Ok::<_, TestError>(Action::await_change()) }
    });
    let err = reconcile_guarded(invalid("u1"), Arc::clone(&ctx), reconcile)
        .await
        .unwrap_err();
    assert!(!called.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(err.category(), "InvalidObject");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("unknown variant `purple`"), "{err}");
    let action = error_policy(invalid("u1"), &err, Arc::clone(&ctx));
    assert_eq!(action, Action::requeue(PERMANENT_ERROR_REQUEUE));
    assert_eq!(errors(&ctx, "InvalidObject"), 1);
    assert_eq!(
        ctx.metrics
            .reconcile
            .total
            .with_label_values(&["widget", "error"])
            .get(),
        1
    );
}

#[tokio::test]
async fn reconcile_guarded_success_resets_backoff_and_counts_ok() {
    let ctx = context();
    ctx.backoff.next_delay("u1");
    let reconcile = Arc::new(|obj: Arc<ConfigMap>, _: Arc<Context<()>>| async move {
        assert_eq!(obj.metadata.name.as_deref(), Some("cm"));
        Ok::<_, TestError>(Action::requeue(Duration::from_secs(600)))
    });
    let action = reconcile_guarded(guarded("u1"), Arc::clone(&ctx), reconcile)
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(600)));
    assert_eq!(ctx.backoff.failures("u1"), 0);
    assert_eq!(
        ctx.metrics
            .reconcile
            .total
            .with_label_values(&["widget", "ok"])
            .get(),
        1
    );
    assert_eq!(
        ctx.metrics
            .reconcile
            .duration
            .with_label_values(&["widget"])
            .get_sample_count(),
        1
    );
}

#[tokio::test]
async fn reconcile_guarded_transient_error_keeps_backoff() {
    let ctx = context();
    ctx.backoff.next_delay("u1");
    let reconcile = Arc::new(|_: Arc<ConfigMap>, _: Arc<Context<()>>| async {
        Err::<Action, _>(TestError { transient: true })
    });
    let err = reconcile_guarded(guarded("u1"), Arc::clone(&ctx), reconcile)
        .await
        .unwrap_err();
    assert!(err.is_transient());
    assert_eq!(err.category(), "DependencyUnavailable");
    assert_eq!(ctx.backoff.failures("u1"), 1);
}

#[test]
fn crd_name_is_plural_dot_group() {
    assert_eq!(crd_name::<ConfigMap>(), "configmaps.");
    let r = object_ref::<ConfigMap>("lab", "cm");
    assert_eq!(r.name, "cm");
    assert_eq!(r.namespace.as_deref(), Some("lab"));
}

fn invalid_service(generation: i64) -> Arc<Guarded<crate::crd::Service>> {
    Arc::new(DeserializeGuard(Err(InvalidObject {
        error: "spec.powerState: unknown variant `Purple`".into(),
        metadata: ObjectMeta {
            name: Some("nextcloud".into()),
            namespace: Some("lab".into()),
            uid: Some("u1".into()),
            generation: Some(generation),
            ..ObjectMeta::default()
        },
    })))
}

fn mocked_context() -> (Arc<Context<()>>, super::api_mock::ApiServerVerifier) {
    let (client, verifier) = super::api_mock::client();
    let ctx = Context::new(
        "service",
        client,
        Metrics::new(),
        "pod-a",
        BackoffTracker::default(),
        Arc::new(()),
    );
    (Arc::new(ctx), verifier)
}

const SERVICE_PATH: &str = "/apis/autopilot.homelab.dev/v1alpha1/namespaces/lab/services/nextcloud";

fn never_called(
    _: Arc<crate::crd::Service>,
    _: Arc<Context<()>>,
) -> futures::future::Ready<Result<Action, TestError>> {
    panic!("an object that does not parse must never reach the reconcile")
}

#[tokio::test]
async fn invalid_object_gets_ready_false_condition_by_its_own_field_manager() {
    let (ctx, mut api) = mocked_context();
    let run = tokio::spawn(reconcile_guarded(
        invalid_service(3),
        Arc::clone(&ctx),
        Arc::new(never_called),
    ));

    let get = api
        .answer(
            200,
            serde_json::json!({
                "apiVersion": "autopilot.homelab.dev/v1alpha1", "kind": "Service",
                "metadata": {"name": "nextcloud", "namespace": "lab", "generation": 3},
                "status": {"node": "pve1"},
            }),
        )
        .await;
    assert_eq!((get.method.as_str(), get.path.as_str()), ("GET", SERVICE_PATH));
    let patch = api.answer(200, serde_json::json!({})).await;
    assert_eq!(patch.method, ::http::Method::PATCH);
    assert_eq!(patch.path, format!("{SERVICE_PATH}/status"));
    assert_eq!(patch.content_type, "application/apply-patch+yaml");
    assert_eq!(
        patch.param("fieldManager").as_deref(),
        Some("homelab-autopilot-service-invalid")
    );
    assert_eq!(patch.param("force").as_deref(), Some("true"));
    assert_eq!(patch.body["apiVersion"], "autopilot.homelab.dev/v1alpha1");
    assert_eq!(patch.body["kind"], "Service");
    // Only the condition: the controller's other status fields (here `node`) stay as they are.
    let status = patch.body["status"].as_object().unwrap();
    assert_eq!(status.keys().collect::<Vec<_>>(), ["conditions"]);
    let condition = &patch.body["status"]["conditions"][0];
    assert_eq!(condition["type"], "Ready");
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "InvalidObject");
    assert_eq!(condition["observedGeneration"], 3);
    let message = condition["message"].as_str().unwrap();
    assert!(message.contains("unknown variant `Purple`"), "{message}");
    // The group is named: plain `kubectl explain services.spec` explains the core Service.
    assert!(
        message.contains("kubectl explain services.spec --api-version=autopilot.homelab.dev/v1alpha1"),
        "{message}"
    );

    let err = run.await.unwrap().unwrap_err();
    assert_eq!(err.category(), "InvalidObject");
    assert!(!err.is_transient(), "a malformed object is not retried in a loop");
    assert_eq!(
        error_policy(invalid_service(3), &err, Arc::clone(&ctx)),
        Action::requeue(PERMANENT_ERROR_REQUEUE)
    );
    api.assert_no_request();
}

#[tokio::test]
async fn invalid_object_already_marked_is_not_patched_again() {
    let (ctx, mut api) = mocked_context();
    let run = tokio::spawn(reconcile_guarded(
        invalid_service(3),
        Arc::clone(&ctx),
        Arc::new(never_called),
    ));
    // What the first pass wrote: a second pass (woken by that very write) must not write again,
    // or each write would trigger the next.
    let (get, send) = api.next().await;
    assert_eq!(get.path, SERVICE_PATH);
    let message = "the stored object does not match the schema this operator understands \
                   (spec.powerState: unknown variant `Purple`); correct that field (kubectl explain \
                   services.spec --api-version=autopilot.homelab.dev/v1alpha1) and apply it again";
    super::api_mock::respond(
        send,
        200,
        &serde_json::json!({
            "apiVersion": "autopilot.homelab.dev/v1alpha1", "kind": "Service",
            "metadata": {"name": "nextcloud", "namespace": "lab", "generation": 3},
            "status": {"conditions": [{
                "type": "Ready", "status": "False", "reason": "InvalidObject",
                "message": message, "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": 3,
            }]},
        }),
    );
    run.await.unwrap().unwrap_err();
    api.assert_no_request();
}

#[test]
fn invalid_object_condition_keeps_transition_time_while_ready_stays_false() {
    let now: jiff::Timestamp = "2026-06-01T00:00:00Z".parse().unwrap();
    let stored = serde_json::json!({"conditions": [{
        "type": "Ready", "status": "False", "reason": "ClusterNotFound", "message": "x",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }]});
    let c = invalid_object_condition(Some(&stored), "bad", Some(2), now).unwrap();
    assert_eq!(c["lastTransitionTime"], "2026-01-01T00:00:00Z");
    assert_eq!(c["reason"], "InvalidObject");
    let was_ready = serde_json::json!({"conditions": [{
        "type": "Ready", "status": "True", "reason": "Ready", "message": "x",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }]});
    let c = invalid_object_condition(Some(&was_ready), "bad", Some(2), now).unwrap();
    assert_eq!(c["lastTransitionTime"], "2026-06-01T00:00:00Z");
    let c = invalid_object_condition(None, "bad", None, now).unwrap();
    assert!(c.get("observedGeneration").is_none());
}

const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/lab/events";

/// Answers the next Event request with its own body (as the API server echoes the object).
async fn echo(api: &mut super::api_mock::ApiServerVerifier) -> super::api_mock::Seen {
    let (seen, send) = api.next().await;
    super::api_mock::respond(
        send,
        if seen.method == ::http::Method::POST {
            201
        } else {
            200
        },
        &seen.body,
    );
    seen
}

#[tokio::test]
async fn publish_folds_exact_repeats_but_a_changed_note_is_a_new_event() {
    let (ctx, mut api) = mocked_context();
    let svc = config_map("u1");
    let publisher = tokio::spawn({
        let ctx = Arc::clone(&ctx);
        async move {
            for note in [
                "HTTP 503 from /health",
                "HTTP 503 from /health",
                "HTTP 500 from /health",
            ] {
                ctx.publish(&svc, EventType::Warning, "Unhealthy", "HealthCheck", note)
                    .await
                    .expect("published");
            }
        }
    });
    let first = echo(&mut api).await;
    assert_eq!(
        (first.method.as_str(), first.path.as_str()),
        ("POST", EVENTS_PATH)
    );
    assert_eq!(first.body["note"], "HTTP 503 from /health");
    assert_eq!(first.body["reason"], "Unhealthy");
    assert_eq!(first.body["type"], "Warning");
    assert_eq!(first.body["reportingController"], "homelab-autopilot");
    assert_eq!(first.body["reportingInstance"], "pod-a");
    assert_eq!(first.body["regarding"]["name"], "cm");
    let name = first.body["metadata"]["name"]
        .as_str()
        .expect("a name")
        .to_owned();

    let repeat = echo(&mut api).await;
    assert_eq!(
        repeat.method,
        ::http::Method::PATCH,
        "the same note folds into a series"
    );
    assert_eq!(repeat.path, format!("{EVENTS_PATH}/{name}"));
    assert_eq!(repeat.body["series"]["count"], 2);

    let changed = echo(&mut api).await;
    assert_eq!(
        (changed.method.as_str(), changed.path.as_str()),
        ("POST", EVENTS_PATH),
        "a new cause is a new Event, not a count on the old message"
    );
    assert_eq!(changed.body["note"], "HTTP 500 from /health");
    assert!(changed.body["series"].is_null());
    assert_ne!(changed.body["metadata"]["name"], name.as_str());
    publisher.await.expect("publisher");
    api.assert_no_request();
}
