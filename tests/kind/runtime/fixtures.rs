//! Test-only CRDs (`Gadget`, `Latecomer`, group `runtime.test.autopilot.homelab.dev`), their
//! reconcilers, and local e2e helpers (client or SKIP, namespaces, polling, HTTP).

use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use homelab_autopilot::{
    controllers::{
        self, BackoffPolicy, ConditionStatus, Context, ControllerSpec, DesiredCondition, Health,
        ReconcileError, StatusCondition, http, object_ref, patch_status, report_transition, set_condition,
    },
    metrics::Metrics,
};
use jiff::Timestamp;
use k8s_openapi::{
    api::{
        core::v1::{ConfigMap, Namespace},
        events::v1::Event,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Api, Client, CustomResource, CustomResourceExt, Resource, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
    runtime::{
        controller::Action,
        events::EventType,
        wait::{await_condition, conditions},
        watcher,
    },
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

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
    /// Conditions.
    #[serde(default)]
    pub conditions: Vec<TestCondition>,
}

/// A condition type of our own, like the CRD types have, adapted through `StatusCondition`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[schemars(with = "String")]
    pub last_transition_time: Time,
}

impl StatusCondition for TestCondition {
    fn condition_type(&self) -> &str {
        &self.type_
    }
    fn condition_status(&self) -> &str {
        &self.status
    }
    fn reason(&self) -> &str {
        &self.reason
    }
    fn message(&self) -> &str {
        &self.message
    }
    fn observed_generation(&self) -> Option<i64> {
        self.observed_generation
    }
    fn last_transition_time(&self) -> Option<Timestamp> {
        Some(self.last_transition_time.0)
    }
    fn build(d: &DesiredCondition, observed_generation: Option<i64>, since: Timestamp) -> Self {
        Self {
            type_: d.type_.clone(),
            status: d.status.as_str().into(),
            reason: d.reason.clone(),
            message: d.message.clone(),
            observed_generation,
            last_transition_time: Time(since),
        }
    }
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
    let ready = DesiredCondition::new(
        "Ready",
        ConditionStatus::True,
        "Reconciled",
        format!("The gadget is {:?}{motto}.", g.spec.color),
    );
    let generation = g.meta().generation;
    let transition = set_condition(&mut status.conditions, &ready, generation, Timestamp::now());
    status.observed_generation = generation;
    patch_status(&ctx, g.as_ref(), &status).await?;
    report_transition(
        &ctx,
        g.as_ref(),
        &ready,
        &transition,
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

/// A client for `KUBECONFIG`, or `None` after printing the SKIP line.
pub async fn client_or_skip() -> Option<Client> {
    const SKIP: &str = "SKIP tests/kind: no Kubernetes API (set KUBECONFIG)";
    if std::env::var_os("KUBECONFIG").is_none() {
        println!("{SKIP}");
        return None;
    }
    let client = match Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            println!("{SKIP}: {e}");
            return None;
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), client.apiserver_version()).await {
        Ok(Ok(_)) => Some(client),
        Ok(Err(e)) => {
            println!("{SKIP}: {e}");
            None
        }
        Err(_) => {
            println!("{SKIP}: API server did not answer within 10 s");
            None
        }
    }
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

/// A namespace of its own for one test.
pub struct TestNamespace {
    pub name: String,
    client: Client,
}

impl TestNamespace {
    pub async fn create(client: &Client, prefix: &str) -> Self {
        let name = format!("{prefix}-{:08x}", rand::random::<u32>());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
        Self {
            name,
            client: client.clone(),
        }
    }

    pub async fn delete(self) {
        Api::<Namespace>::all(self.client)
            .delete(&self.name, &DeleteParams::default())
            .await
            .unwrap();
    }
}

/// Polls `check` every 100 ms until it returns `Some`, failing after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Installs (server-side apply) the CRD of `K` and waits until it is established.
pub async fn apply_crd<K: CustomResourceExt>(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = K::crd_name();
    api.patch(
        name,
        &PatchParams::apply("homelab-autopilot-runtime-test").force(),
        &Patch::Apply(K::crd()),
    )
    .await
    .unwrap();
    tokio::time::timeout(WAIT, await_condition(api, name, conditions::is_crd_established()))
        .await
        .unwrap()
        .unwrap();
}

/// Deletes the CRD of `K` if present and waits until it is gone.
pub async fn delete_crd<K: CustomResourceExt>(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = K::crd_name();
    let Some(crd) = api.get_opt(name).await.unwrap() else {
        return;
    };
    let uid = crd.uid().unwrap();
    api.delete(name, &DeleteParams::default()).await.unwrap();
    tokio::time::timeout(WAIT, await_condition(api, name, conditions::is_deleted(&uid)))
        .await
        .unwrap()
        .unwrap();
}

/// Creates a Gadget from raw JSON (bypassing the Rust type), retrying while discovery of a new
/// CRD catches up.
pub async fn create_gadget(client: &Client, ns: &str, name: &str, spec: serde_json::Value) {
    let ar = ApiResource::erase::<Gadget>(&());
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar);
    let obj = DynamicObject::new(name, &ar).data(json!({ "spec": spec }));
    let (api, obj) = (&api, &obj);
    wait_for(&format!("Gadget {name} to be created"), WAIT, || async move {
        api.create(&PostParams::default(), obj).await.ok().map(drop)
    })
    .await;
}

/// Waits until Gadget `name` reports Ready=True for `generation`.
pub async fn wait_ready(api: &Api<Gadget>, name: &str, generation: i64) -> Gadget {
    wait_for(
        &format!("Gadget {name} Ready at generation {generation}"),
        WAIT,
        || async move {
            let g = api.get(name).await.ok()?;
            let status = g.status.as_ref()?;
            let ready = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (ready && status.observed_generation == Some(generation)).then_some(g)
        },
    )
    .await
}

/// Waits for an Event with `reason` regarding object `name`.
pub async fn wait_event(client: &Client, ns: &str, name: &str, reason: &str) -> Event {
    let api = Api::<Event>::namespaced(client.clone(), ns);
    let api = &api;
    wait_for(&format!("Event {reason} on {name}"), WAIT, || async move {
        api.list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
            })
    })
    .await
}

/// Serves the operator's HTTP endpoints on a free loopback port.
pub async fn start_http(metrics: Metrics, health: Health) -> (SocketAddr, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(http::serve(
        listener,
        metrics,
        health,
        stop.clone().cancelled_owned(),
    ));
    (addr, stop)
}

/// GET `path` over real HTTP: status code and body.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resp = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// A loopback address with a port that was free a moment ago (for a child process to bind).
pub fn free_loopback_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Like [`get`], but `None` while nothing listens yet.
pub async fn try_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resp = reqwest::get(format!("http://{addr}{path}")).await.ok()?;
    Some((resp.status().as_u16(), resp.text().await.ok()?))
}
