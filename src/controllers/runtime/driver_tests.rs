//! The generic driver against a mocked API server: the finalizer is added before the first act
//! and removed only after the kind's cleanup reports done; an invalid spec is reported and never
//! reaches the core; the status is written only when it changed.

use std::sync::Mutex;

use kube::CustomResource;
use serde::Deserialize;

use super::*;
use crate::controllers::kit::Conditions;
use crate::controllers::runtime::{
    api_mock::{self, ApiServerVerifier, event_answer},
    backoff::BackoffTracker,
};
use crate::crd::conditions::Condition;
use crate::crd::validation::FieldError;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "test.autopilot.homelab.dev",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus",
    schema = "disabled"
)]
struct WidgetSpec {
    size: i32,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
struct WidgetStatus {
    conditions: Vec<Condition>,
    observed_generation: Option<i64>,
}

crate::crd::conditions::conditioned_status!(WidgetStatus);

const FINALIZER: &str = "autopilot.homelab.dev/cleanup";
const PATH: &str = "/apis/test.autopilot.homelab.dev/v1/namespaces/lab/widgets/w1";

/// What the test kind does, and what it was asked to do.
#[derive(Default)]
struct Deps {
    reconciled: Mutex<u32>,
    /// Results the next cleanups return, in order.
    cleanups: Mutex<Vec<Result<Cleanup, ()>>>,
    cleaned: Mutex<u32>,
}

struct WidgetKind;

impl Reconciler<Deps> for WidgetKind {
    type Kind = Widget;
    type Status = WidgetStatus;
    const CONTROLLER: &'static str = "widget";
    const FINALIZER: Option<&'static str> = Some(FINALIZER);

    fn status(obj: &Widget) -> Option<&WidgetStatus> {
        obj.status.as_ref()
    }

    fn validate(obj: &Widget) -> Result<(), InvalidSpec> {
        if obj.spec.size < 0 {
            return Err(InvalidSpec(vec![FieldError {
                path: "spec.size".into(),
                message: "must not be negative; use 0 or more".into(),
                // A specific reason where the check has one (like InvalidTimeZone).
                reason: (obj.spec.size < -100).then_some("SizeFarTooSmall"),
            }]));
        }
        Ok(())
    }

    async fn reconcile<S: Source>(
        env: &Env<'_, Deps, S>,
        obj: &Widget,
    ) -> Result<Outcome<WidgetStatus>, Error> {
        *env.deps.reconciled.lock().unwrap() += 1;
        let mut status = obj.status.clone().unwrap_or_default();
        let stored = status.conditions.clone();
        let generation = obj.metadata.generation;
        let change = Conditions::new(&stored, generation, env.now).set(
            &mut status.conditions,
            READY,
            ConditionStatus::True,
            "Reconciled",
            "ok",
        );
        status.observed_generation = generation;
        let events = if change.is_news() {
            vec![PlannedEvent::normal("BecameReady", "Reconcile", "ok")]
        } else {
            vec![]
        };
        Ok(Outcome {
            status,
            events,
            requeue: Duration::from_secs(300),
        })
    }

    async fn cleanup<S: Source>(env: &Env<'_, Deps, S>, _obj: &Widget) -> Result<Cleanup, Error> {
        *env.deps.cleaned.lock().unwrap() += 1;
        match env.deps.cleanups.lock().unwrap().remove(0) {
            Ok(c) => Ok(c),
            Err(()) => Err(Error::MissingObjectKey {
                kind: "Widget".into(),
                field: "cleanup failed in the test",
            }),
        }
    }
}

fn widget(size: i32, finalizers: &[&str], deleting: bool) -> Widget {
    let mut w = Widget::new("w1", WidgetSpec { size });
    w.metadata.namespace = Some("lab".into());
    w.metadata.uid = Some("uid-w1".into());
    w.metadata.generation = Some(1);
    w.metadata.resource_version = Some("5".into());
    if !finalizers.is_empty() {
        w.metadata.finalizers = Some(finalizers.iter().map(|f| (*f).to_owned()).collect());
    }
    if deleting {
        w.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-01-01T00:00:00Z".parse().unwrap(),
        ));
    }
    w
}

fn context(deps: Deps) -> (Arc<Context<Deps>>, ApiServerVerifier) {
    let (client, api) = api_mock::client();
    let ctx = Context::new(
        "widget",
        client,
        Metrics::new(),
        "pod-a",
        BackoffTracker::default(),
        Arc::new(deps),
    );
    (Arc::new(ctx), api)
}

fn run(
    obj: Widget,
    ctx: &Arc<Context<Deps>>,
) -> tokio::task::JoinHandle<Result<kube::runtime::controller::Action, Error>> {
    tokio::spawn(reconcile::<WidgetKind, Deps>(Arc::new(obj), Arc::clone(ctx)))
}

/// Runs one reconcile that must finish without any further request to the API server (a request
/// nobody answers would hang it: fail after 10 s instead).
async fn run_alone(
    obj: Widget,
    ctx: &Arc<Context<Deps>>,
) -> Result<kube::runtime::controller::Action, Error> {
    tokio::time::timeout(Duration::from_secs(10), run(obj, ctx))
        .await
        .expect("the reconcile made a request to the API server that none was expected")
        .unwrap()
}

#[tokio::test]
async fn finalizer_is_added_before_the_first_act() {
    let (ctx, mut api) = context(Deps::default());
    let obj = widget(1, &["example.com/other"], false);
    let answer = serde_json::to_value(&obj).unwrap();
    let task = run(obj, &ctx);

    let add = api.answer(200, answer.clone()).await;
    assert_eq!((add.method.as_str(), add.path.as_str()), ("PATCH", PATH));
    assert_eq!(add.content_type, "application/merge-patch+json");
    assert_eq!(
        add.body["metadata"]["finalizers"],
        serde_json::json!(["example.com/other", FINALIZER]),
        "other finalizers are kept"
    );
    assert_eq!(
        add.body["metadata"]["resourceVersion"], "5",
        "a concurrent change of the object makes the patch fail instead of being overwritten"
    );
    assert_eq!(
        *ctx.deps.reconciled.lock().unwrap(),
        0,
        "nothing is done before the finalizer is stored"
    );
    let status = api.answer(200, answer).await;
    assert_eq!(status.path, format!("{PATH}/status"));
    assert_eq!(status.body["status"]["conditions"][0]["reason"], "Reconciled");
    api.answer(201, event_answer()).await;
    task.await.unwrap().unwrap();
    assert_eq!(*ctx.deps.reconciled.lock().unwrap(), 1);
    api.assert_no_request();
}

#[tokio::test]
async fn deletion_removes_the_finalizer_only_after_cleanup_is_done() {
    let deps = Deps::default();
    *deps.cleanups.lock().unwrap() = vec![
        Ok(Cleanup::Pending(Duration::from_secs(7))),
        Err(()),
        Ok(Cleanup::Done),
    ];
    let (ctx, mut api) = context(deps);
    let obj = widget(1, &["example.com/other", FINALIZER], true);

    // Cleanup under way: the finalizer stays, the object is looked at again soon.
    let action = run_alone(obj.clone(), &ctx).await.unwrap();
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(7))
    );
    api.assert_no_request();

    // Cleanup failed: the finalizer stays and the error goes to the error policy.
    let err = run_alone(obj.clone(), &ctx).await.unwrap_err();
    assert!(err.to_string().contains("cleanup failed"), "{err}");
    api.assert_no_request();

    // Cleanup done: only our finalizer is removed.
    let answer = serde_json::to_value(&obj).unwrap();
    let task = run(obj, &ctx);
    let remove = api.answer(200, answer).await;
    assert_eq!((remove.method.as_str(), remove.path.as_str()), ("PATCH", PATH));
    assert_eq!(
        remove.body["metadata"]["finalizers"],
        serde_json::json!(["example.com/other"])
    );
    assert_eq!(remove.body["metadata"]["resourceVersion"], "5");
    task.await.unwrap().unwrap();
    assert_eq!(*ctx.deps.cleaned.lock().unwrap(), 3);
    assert_eq!(
        *ctx.deps.reconciled.lock().unwrap(),
        0,
        "a deleted object is never reconciled"
    );
    api.assert_no_request();
}

#[tokio::test]
async fn deleted_object_without_our_finalizer_is_left_alone() {
    let (ctx, mut api) = context(Deps::default());
    run_alone(widget(1, &["example.com/other"], true), &ctx)
        .await
        .unwrap();
    assert_eq!(*ctx.deps.cleaned.lock().unwrap(), 0);
    api.assert_no_request();
}

#[tokio::test]
async fn invalid_spec_is_reported_once_and_never_reaches_the_core() {
    let (ctx, mut api) = context(Deps::default());
    let obj = widget(-1, &[FINALIZER], false);
    let answer = serde_json::to_value(&obj).unwrap();
    let task = run(obj.clone(), &ctx);
    let status = api.answer(200, answer).await;
    assert_eq!(status.path, format!("{PATH}/status"));
    let ready = &status.body["status"]["conditions"][0];
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("InvalidSpec"))
    );
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.starts_with("spec.size: must not be negative"),
        "{message}"
    );
    let event = api.answer(201, event_answer()).await;
    assert_eq!(event.body["reason"], "InvalidSpec");
    assert_eq!(event.body["type"], "Warning");
    let action = task.await.unwrap().unwrap();
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(PERMANENT_ERROR_REQUEUE)
    );
    assert_eq!(*ctx.deps.reconciled.lock().unwrap(), 0);

    // The next pass over the stored invalid status writes and announces nothing.
    let mut stored = obj;
    stored.status = Some(serde_json::from_value(status.body["status"].clone()).unwrap());
    run_alone(stored, &ctx).await.unwrap();
    api.assert_no_request();
}

#[tokio::test]
async fn unchanged_status_is_not_written_again() {
    let (ctx, mut api) = context(Deps::default());
    let obj = widget(1, &[FINALIZER], false);
    let answer = serde_json::to_value(&obj).unwrap();
    let task = run(obj.clone(), &ctx);
    let status = api.answer(200, answer).await;
    api.answer(201, event_answer()).await;
    task.await.unwrap().unwrap();
    let mut stored = obj;
    stored.status = Some(serde_json::from_value(status.body["status"].clone()).unwrap());
    run_alone(stored, &ctx).await.unwrap();
    assert_eq!(*ctx.deps.reconciled.lock().unwrap(), 2);
    api.assert_no_request();
}

#[tokio::test]
async fn invalid_spec_with_a_specific_reason_reports_that_reason() {
    let (ctx, mut api) = context(Deps::default());
    let obj = widget(-500, &[FINALIZER], false);
    let answer = serde_json::to_value(&obj).unwrap();
    let task = run(obj, &ctx);
    let status = api.answer(200, answer).await;
    assert_eq!(
        status.body["status"]["conditions"][0]["reason"],
        "SizeFarTooSmall"
    );
    let event = api.answer(201, event_answer()).await;
    assert_eq!(event.body["reason"], "SizeFarTooSmall");
    task.await.unwrap().unwrap();
}
