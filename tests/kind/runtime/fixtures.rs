//! Test-only CRDs (`Gadget`, `Latecomer`, group `runtime.test.autopilot.homelab.dev`), their
//! reconcilers, and the Gadget environment; the generic helpers live in `harness`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use homelab_autopilot::controllers::{
    self, BackoffPolicy, Context, ControllerSpec, ReconcileError, kit::Conditions, object_ref, patch_status,
    report_change,
};
use homelab_autopilot::crd::conditions::{Condition, ConditionStatus, find_condition};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client, CustomResource, Resource, ResourceExt,
    api::{ApiResource, DynamicObject, PostParams},
    runtime::{controller::Action, events::EventType, watcher},
};
use schemars::JsonSchema;

use crate::harness::{TestNamespace, apply_crd, client_or_skip, poll};
use serde::{Deserialize, Serialize};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// The color of a gadget. The CRD schema allows any string, so a stored object can carry a
/// color this type rejects: that is the malformed object of the tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    Red,
    Green,
    /// Rejected by the reconciler with a permanent error.
    Black,
}

/// A test-only kind for the runtime.
#[derive(CustomResource, Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "runtime.test.autopilot.homelab.dev",
    version = "v1",
    kind = "Gadget",
    namespaced,
    status = "GadgetStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct GadgetSpec {
    /// The gadget's color.
    #[schemars(with = "String")]
    pub color: Color,
    /// How many reconciles fail with a transient error before one succeeds.
    #[serde(default)]
    pub fail_first: i32,
}

/// Status of a Gadget.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GadgetStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions: the CRDs' own condition type, which the runtime's generic helpers
    /// maintain through `StatusCondition`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// Reconcile attempts per object UID, shared with the test.
#[derive(Clone, Debug, Default)]
pub struct GadgetDeps {
    attempts: Arc<Mutex<HashMap<String, i32>>>,
}

impl GadgetDeps {
    pub fn attempts(&self, uid: &str) -> i32 {
        self.attempts.lock().unwrap().get(uid).copied().unwrap_or(0)
    }

    pub fn total(&self) -> i32 {
        self.attempts.lock().unwrap().values().sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GadgetError {
    #[error("a dependency flaked on attempt {attempt}")]
    Flaky { attempt: i32 },
    #[error("spec.color: black is not supported; use red or green")]
    Unsupported,
    #[error("cannot read the gadget's ConfigMap: {0}")]
    ReadConfigMap(#[source] Box<kube::Error>),
    #[error(transparent)]
    Runtime(#[from] controllers::Error),
}

impl ReconcileError for GadgetError {
    fn category(&self) -> &'static str {
        match self {
            Self::Flaky { .. } => "DependencyFlaked",
            Self::Unsupported => "UnsupportedColor",
            Self::ReadConfigMap(_) => "ConfigMapUnreadable",
            Self::Runtime(e) => e.category(),
        }
    }
    fn is_transient(&self) -> bool {
        match self {
            Self::Flaky { .. } => true,
            Self::Unsupported => false,
            Self::ReadConfigMap(e) => controllers::error::kube_error_is_transient(e),
            Self::Runtime(e) => e.is_transient(),
        }
    }
}

/// Fails `failFirst` times (transient), rejects black (permanent), else reports Ready via SSA and
/// publishes `BecameReady` on the transition.
pub async fn gadget_reconcile(g: Arc<Gadget>, ctx: Arc<Context<GadgetDeps>>) -> Result<Action, GadgetError> {
    let attempt = {
        let mut attempts = ctx.deps.attempts.lock().unwrap();
        let n = attempts.entry(g.uid().unwrap_or_default()).or_default();
        *n += 1;
        *n
    };
    if g.spec.color == Color::Black {
        return Err(GadgetError::Unsupported);
    }
    if attempt <= g.spec.fail_first {
        return Err(GadgetError::Flaky { attempt });
    }
    // A ConfigMap of the same name may add a motto; the controller watches ConfigMaps.
    let configmaps = Api::<ConfigMap>::namespaced(ctx.client.clone(), &g.namespace().unwrap_or_default());
    let motto = configmaps
        .get_opt(&g.name_any())
        .await
        .map_err(|e| GadgetError::ReadConfigMap(Box::new(e)))?
        .and_then(|cm| cm.data?.get("motto").cloned())
        .map(|m| format!(" and {m}"))
        .unwrap_or_default();
    let mut status = g.status.clone().unwrap_or_default();
    let stored = status.conditions.clone();
    let generation = g.meta().generation;
    let message = format!("The gadget is {:?}{motto}.", g.spec.color);
    let change = Conditions::new(&stored, generation, Timestamp::now()).set(
        &mut status.conditions,
        "Ready",
        ConditionStatus::True,
        "Reconciled",
        &message,
    );
    status.observed_generation = generation;
    patch_status(&ctx, g.as_ref(), &status).await?;
    let ready = find_condition(&status.conditions, "Ready")
        .cloned()
        .unwrap_or_else(|| {
            Condition::new(
                "Ready",
                ConditionStatus::True,
                "Reconciled",
                message,
                generation,
                Timestamp::now(),
            )
        });
    report_change(
        &ctx,
        g.as_ref(),
        &ready,
        &change,
        EventType::Normal,
        "BecameReady",
        "Reconcile",
    )
    .await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// The Gadget controller: fast backoff, and a watch on ConfigMaps that re-triggers the Gadget
/// of the same name.
pub fn gadget_spec() -> ControllerSpec<Gadget> {
    let backoff = BackoffPolicy {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(2),
        jitter: 0.1,
    };
    ControllerSpec::new("gadget")
        .backoff(backoff)
        .customize(|controller, scope| {
            controller.watches(scope.api::<ConfigMap>(), watcher::Config::default(), |cm| {
                let ns = cm.namespace()?;
                Some(object_ref::<Gadget>(&ns, &cm.name_any()))
            })
        })
}

/// A second test-only kind whose CRD the readiness test deletes and creates.
#[derive(CustomResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "runtime.test.autopilot.homelab.dev",
    version = "v1",
    kind = "Latecomer",
    namespaced,
    status = "LatecomerStatus"
)]
pub struct LatecomerSpec {
    /// Free text.
    #[serde(default)]
    pub note: String,
}

/// Status of a Latecomer.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatecomerStatus {
    /// Generation of the spec this status describes.
    pub observed_generation: Option<i64>,
}

pub async fn latecomer_reconcile(l: Arc<Latecomer>, ctx: Arc<Context>) -> Result<Action, controllers::Error> {
    let status = LatecomerStatus {
        observed_generation: l.meta().generation,
    };
    patch_status(&ctx, l.as_ref(), &status).await?;
    Ok(Action::await_change())
}

/// Client, a fresh namespace and the Gadget API in it, with the Gadget CRD installed; `None`
/// (after the SKIP line) without an API server.
pub async fn gadget_env(prefix: &str) -> Option<(Client, TestNamespace, Api<Gadget>)> {
    let client = client_or_skip().await?;
    apply_crd::<Gadget>(&client).await;
    let ns = TestNamespace::create(&client, prefix).await;
    let gadgets = Api::<Gadget>::namespaced(client.clone(), &ns.name);
    Some((client, ns, gadgets))
}

/// Creates a Gadget from raw JSON (bypassing the Rust type), retrying while discovery of a new
/// CRD catches up.
pub async fn create_gadget(client: &Client, ns: &str, name: &str, spec: serde_json::Value) {
    let ar = ApiResource::erase::<Gadget>(&());
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar);
    let obj = DynamicObject::new(name, &ar).data(json!({ "spec": spec }));
    let (api, obj) = (&api, &obj);
    poll(&format!("Gadget {name} to be created"), WAIT, || async move {
        api.create(&PostParams::default(), obj).await.ok().map(drop)
    })
    .await;
}

/// Waits until Gadget `name` reports Ready=True for `generation`.
pub async fn wait_ready(api: &Api<Gadget>, name: &str, generation: i64) -> Gadget {
    poll(
        &format!("Gadget {name} Ready at generation {generation}"),
        WAIT,
        || async move {
            let g = api.get(name).await.ok()?;
            let status = g.status.as_ref()?;
            let ready = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == ConditionStatus::True);
            (ready && status.observed_generation == Some(generation)).then_some(g)
        },
    )
    .await
}
