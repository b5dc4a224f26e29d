//! Unit tests of the error policy and the guarded reconcile (no API server: a mock client that is
//! never called).

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ObjectMeta;

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
        tower_test::mock::pair::<http::Request<kube::client::Body>, http::Response<kube::client::Body>>();
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
