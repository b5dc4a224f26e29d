//! Running controllers: [`ControllerSpec`] describes one, [`Operator`] runs them all behind the
//! CRD wait and the leader lease, with the shared error policy (see ARCHITECTURE.md).
//!
//! Each controller watches `Api<DeserializeGuard<K>>`, so one stored object that does not parse
//! into `K` becomes a permanent `InvalidObject` error (a `Ready=False` condition with reason
//! `InvalidObject` on the object, a Warning Event, a metric) instead of an error that would stall
//! the watcher for every object of the kind.

use std::{fmt::Debug, future::Future, sync::Arc, time::Duration};

use futures::{FutureExt, StreamExt, TryStreamExt, future::BoxFuture};
use k8s_openapi::{
    NamespaceResourceScope, apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Resource,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
    core::{DeserializeGuard, error_boundary::InvalidObject},
    runtime::{
        Controller, Predicate, WatchStreamExt,
        controller::{self, Action},
        predicates,
        reflector::{self, ObjectRef},
        wait::{await_condition, conditions},
        watcher::{self, watcher},
    },
};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument, warn};

pub mod backoff;
pub mod context;
pub mod driver;
pub mod error;
pub mod events;
pub mod http;
pub mod leader;
pub mod status;

#[cfg(test)]
pub(crate) mod api_mock;

use self::{
    backoff::{BackoffPolicy, BackoffTracker},
    context::{Context, PERMANENT_ERROR_REQUEUE},
    error::{Error, ReconcileError},
    events::report_reconciled,
    http::{Health, Readiness},
    leader::{LeaderElector, LeaseConfig},
};
use crate::metrics::Metrics;

/// Default number of objects of one kind reconciled at the same time.
pub const DEFAULT_CONCURRENCY: u16 = 4;

/// Failed reconciles whose Warning Events are published at the same time, per controller.
const EVENT_CONCURRENCY: usize = 8;

/// The client and namespace scope controllers watch in (`--namespace`, or all namespaces).
#[derive(Clone)]
pub struct ApiScope {
    client: Client,
    namespace: Option<String>,
}

impl ApiScope {
    /// The scope of `namespace` (`None`: all namespaces).
    pub fn new(client: Client, namespace: Option<String>) -> Self {
        Self { client, namespace }
    }

    /// The kube client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The watched namespace, `None` for all.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// An `Api` for a namespaced kind in this scope (for `.watches()` hooks).
    pub fn api<O: Resource<Scope = NamespaceResourceScope, DynamicType = ()>>(&self) -> Api<O> {
        match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }
}

/// The object reference `.watches()` mappers return: `namespace/name` of kind `K`.
pub fn object_ref<K: Resource<DynamicType = ()>>(
    namespace: &str,
    name: &str,
) -> ObjectRef<DeserializeGuard<K>> {
    ObjectRef::new(name).within(namespace)
}

/// The name of the CustomResourceDefinition of `K` (`<plural>.<group>`).
pub fn crd_name<K: Resource<DynamicType = ()>>() -> String {
    format!("{}.{}", K::plural(&()), K::group(&()))
}

/// What a kind needs to be run by a controller: one of our namespaced custom resources.
pub trait ControlledKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> ControlledKind for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// What a controller watches: `K`, or the error of an object that does not parse into it.
pub type Guarded<K> = DeserializeGuard<K>;
type Hook<K> = Box<dyn FnOnce(Controller<Guarded<K>>, &ApiScope) -> Controller<Guarded<K>> + Send>;

/// How to run the controller of kind `K`.
pub struct ControllerSpec<K: Resource<DynamicType = ()> + Clone + Debug + 'static> {
    name: &'static str,
    watcher: watcher::Config,
    concurrency: u16,
    backoff: BackoffPolicy,
    permanent_requeue: Duration,
    hooks: Vec<Hook<K>>,
    forget: Option<Forget>,
}

/// Called with the keys of each object of the kind the watch reports deleted.
type Forget = Arc<dyn Fn(&driver::ObjectKey) + Send + Sync>;

impl<K: ControlledKind> ControllerSpec<K> {
    /// A controller named `name` (lowercase kind: metric label, field manager suffix) watching
    /// every object of `K` in the operator's scope.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            watcher: watcher::Config::default(),
            concurrency: DEFAULT_CONCURRENCY,
            backoff: BackoffPolicy::default(),
            permanent_requeue: PERMANENT_ERROR_REQUEUE,
            hooks: Vec::new(),
            forget: None,
        }
    }

    /// Calls `forget` with each object the watch reports deleted (also one deleted while the watch
    /// was down, found when it lists again), so per-object memory, clients and metric series go
    /// with the object, whatever else reconciles.
    pub fn on_delete(mut self, forget: impl Fn(&driver::ObjectKey) + Send + Sync + 'static) -> Self {
        self.forget = Some(Arc::new(forget));
        self
    }

    /// Restricts or tunes the watch of `K` (label selectors, page size).
    pub fn watcher_config(mut self, config: watcher::Config) -> Self {
        self.watcher = config;
        self
    }

    /// Objects reconciled at the same time (at least 1).
    pub fn concurrency(mut self, n: u16) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Backoff after transient errors.
    pub fn backoff(mut self, policy: BackoffPolicy) -> Self {
        self.backoff = policy;
        self
    }

    /// Requeue delay after permanent errors.
    pub fn permanent_requeue(mut self, delay: Duration) -> Self {
        self.permanent_requeue = delay;
        self
    }

    /// Adds to the kube-runtime `Controller` before it runs: `.watches()` on related kinds
    /// (map a ProxmoxCluster or Secret change to its dependents with [`object_ref`]),
    /// `.owns()`, `.reconcile_all_on()`.
    pub fn customize(
        mut self,
        hook: impl FnOnce(Controller<Guarded<K>>, &ApiScope) -> Controller<Guarded<K>> + Send + 'static,
    ) -> Self {
        self.hooks.push(Box::new(hook));
        self
    }
}

/// A reconcile failure as the runtime sees it: the object did not parse, or the controller failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure<E> {
    /// The stored object does not deserialize into the Rust type.
    #[error("the object does not match the schema this operator understands: {0}")]
    InvalidObject(#[source] Box<InvalidObject>),
    /// The controller's reconcile failed.
    #[error(transparent)]
    Reconcile(E),
}

impl<E: ReconcileError> ReconcileError for Failure<E> {
    fn category(&self) -> &'static str {
        match self {
            Self::InvalidObject(_) => INVALID_OBJECT,
            Self::Reconcile(e) => e.category(),
        }
    }

    fn is_transient(&self) -> bool {
        match self {
            Self::InvalidObject(_) => false,
            Self::Reconcile(e) => e.is_transient(),
        }
    }
}

/// The backoff key of an object: its UID (a recreated object starts afresh), else namespace/name.
fn backoff_key<K: Resource>(obj: &K) -> String {
    let meta = obj.meta();
    meta.uid.clone().unwrap_or_else(|| {
        format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default()
        )
    })
}

#[instrument(skip_all, fields(
    controller = ctx.controller,
    kind = %K::kind(&()),
    namespace = obj.meta().namespace.as_deref(),
    name = obj.meta().name.as_deref(),
    generation = obj.meta().generation,
))]
async fn reconcile_guarded<K, E, D, F, Fut>(
    obj: Arc<Guarded<K>>,
    ctx: Arc<Context<D>>,
    reconcile: Arc<F>,
) -> Result<Action, Failure<E>>
where
    K: Resource<DynamicType = ()> + Clone,
    E: ReconcileError,
    F: Fn(Arc<K>, Arc<Context<D>>) -> Fut,
    Fut: Future<Output = Result<Action, E>>,
{
    let _timer = ctx.metrics.reconcile.measure(ctx.controller);
    let result = match &obj.0 {
        Ok(k) => reconcile(Arc::new(k.clone()), Arc::clone(&ctx))
            .await
            .map_err(Failure::Reconcile),
        Err(invalid) => {
            report_invalid::<K, D>(&ctx, invalid).await;
            Err(Failure::InvalidObject(Box::new(invalid.clone())))
        }
    };
    ctx.metrics.reconcile.count(ctx.controller, result.is_ok());
    if result.is_ok() {
        ctx.backoff.reset(&backoff_key(obj.as_ref()));
    }
    result
}

/// Field manager of the `Ready` condition written onto objects that do not parse. It is not the
/// controller's own manager: a server-side apply by that manager with only this condition would
/// remove every other status field it applied before (the history a user must not lose to a typo).
/// The next full status apply of the controller (with `force`) takes the condition back.
pub fn invalid_object_field_manager(controller_manager: &str) -> String {
    format!("{controller_manager}-invalid")
}

/// The `Ready` condition of an object that does not parse, keeping `lastTransitionTime` when the
/// stored condition already says the same (so writing it again changes nothing and wakes no one).
fn invalid_object_condition(
    stored: Option<&serde_json::Value>,
    message: &str,
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> Option<serde_json::Value> {
    use crate::controllers::kit::Conditions;
    use crate::crd::conditions::{Condition, ConditionStatus, READY, find_condition};
    // The spec does not parse; the stored conditions usually still do (else: none stored).
    let stored: Vec<Condition> = stored
        .and_then(|s| s.get("conditions"))
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default();
    let mut list = stored.clone();
    Conditions::new(&stored, generation, now).set(
        &mut list,
        READY,
        ConditionStatus::False,
        INVALID_OBJECT,
        message,
    );
    let ready = find_condition(&list, READY)?;
    if find_condition(&stored, READY) == Some(ready) {
        return None;
    }
    serde_json::to_value(ready).ok()
}

/// Condition and Event reason of an object that does not parse.
pub const INVALID_OBJECT: &str = "InvalidObject";

/// Sets `Ready=False` (reason `InvalidObject`, the parse error and the fix as message) on a stored
/// object that does not parse into `K`, so `kubectl get`/`describe` shows why it is not acted on.
/// Best effort: a failure is logged; the Warning Event and the metric still report the problem.
async fn report_invalid<K, D>(ctx: &Context<D>, invalid: &InvalidObject)
where
    K: Resource<DynamicType = ()>,
{
    let meta = &invalid.metadata;
    let (Some(namespace), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) else {
        return;
    };
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), namespace, &resource);
    let message = super::context::truncate_note(format!(
        "the stored object does not match the schema this operator understands ({}); correct that \
         field (kubectl explain {}.spec --api-version={}) and apply it again",
        invalid.error,
        K::plural(&()),
        K::api_version(&())
    ));
    let result = async {
        let stored = api.get_opt(name).await?;
        let status = stored.as_ref().and_then(|o| o.data.get("status"));
        let Some(condition) =
            invalid_object_condition(status, &message, meta.generation, jiff::Timestamp::now())
        else {
            return Ok(());
        };
        let body = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": {"conditions": [condition]},
        });
        let params = PatchParams::apply(&invalid_object_field_manager(ctx.field_manager())).force();
        api.patch_status(name, &params, &Patch::Apply(body))
            .await
            .map(|_| ())
    }
    .await;
    if let Err(error) = result {
        warn!(controller = ctx.controller, namespace, name, %error, "cannot set the InvalidObject condition");
    }
}

fn error_policy<K, E, D>(obj: Arc<Guarded<K>>, err: &Failure<E>, ctx: Arc<Context<D>>) -> Action
where
    K: Resource<DynamicType = ()>,
    E: ReconcileError,
{
    let category = err.category();
    ctx.metrics.reconcile.error(ctx.controller, category);
    let key = backoff_key(obj.as_ref());
    let meta = obj.meta();
    let (namespace, name) = (
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    );
    if err.is_transient() {
        let delay = ctx.backoff.next_delay(&key);
        warn!(controller = ctx.controller, namespace, name, category, error = %err, retry_in = ?delay, "reconcile failed; retrying");
        Action::requeue(delay)
    } else {
        ctx.backoff.reset(&key);
        let delay = ctx.permanent_requeue;
        tracing::error!(controller = ctx.controller, namespace, name, category, error = %err, retry_in = ?delay, "reconcile failed; needs attention");
        Action::requeue(delay)
    }
}

type Start = Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, ()> + Send>;

struct Registered {
    name: &'static str,
    crd: String,
    start: Start,
}

/// The set of controllers of one process, run behind the CRD wait and the leader lease.
pub struct Operator<D = ()> {
    scope: ApiScope,
    metrics: Metrics,
    instance: String,
    deps: Arc<D>,
    leader: Option<LeaseConfig>,
    controllers: Vec<Registered>,
}

impl<D: Send + Sync + 'static> Operator<D> {
    /// An operator watching `namespace` (`None`: all namespaces); `instance` is the pod name
    /// (Event reporter instance); `deps` is shared by every controller's [`Context`].
    pub fn new(
        client: Client,
        metrics: Metrics,
        namespace: Option<String>,
        instance: impl Into<String>,
        deps: D,
    ) -> Self {
        Self {
            scope: ApiScope::new(client, namespace),
            metrics,
            instance: instance.into(),
            deps: Arc::new(deps),
            leader: None,
            controllers: Vec::new(),
        }
    }

    /// Runs the controllers only while holding this lease.
    pub fn leader_election(mut self, config: LeaseConfig) -> Self {
        self.leader = Some(config);
        self
    }

    /// Registers the controller of `K`: `reconcile` is called with the parsed object and the
    /// controller's [`Context`].
    pub fn register<K, E, F, Fut>(mut self, spec: ControllerSpec<K>, reconcile: F) -> Self
    where
        K: ControlledKind,
        E: ReconcileError,
        F: Fn(Arc<K>, Arc<Context<D>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
    {
        let ctx = Arc::new({
            let mut ctx = Context::new(
                spec.name,
                self.scope.client().clone(),
                self.metrics.clone(),
                &self.instance,
                BackoffTracker::new(spec.backoff),
                Arc::clone(&self.deps),
            );
            ctx.permanent_requeue = spec.permanent_requeue;
            ctx
        });
        self.metrics.reconcile.init(spec.name);
        let scope = self.scope.clone();
        let start: Start = Box::new(move |shutdown: CancellationToken| {
            let (reader, writer) = reflector::store();
            let mut controller = Controller::for_stream(
                watch(scope.api::<Guarded<K>>(), spec.watcher, writer, spec.forget),
                reader,
            )
            .with_config(controller::Config::default().concurrency(spec.concurrency));
            for hook in spec.hooks {
                controller = hook(controller, &scope);
            }
            let reconcile = Arc::new(reconcile);
            let report_ctx = Arc::clone(&ctx);
            controller
                .graceful_shutdown_on(async move { shutdown.cancelled().await })
                .run(
                    move |obj, ctx| reconcile_guarded(obj, ctx, Arc::clone(&reconcile)),
                    error_policy::<K, E, D>,
                    ctx,
                )
                .for_each_concurrent(EVENT_CONCURRENCY, move |result| {
                    let ctx = Arc::clone(&report_ctx);
                    async move { report_reconciled(&ctx, result).await }
                })
                .boxed()
        });
        self.controllers.push(Registered {
            name: spec.name,
            crd: crd_name::<K>(),
            start,
        });
        self
    }

    /// Registers kind `R` on the generic driver ([`driver::reconcile`]): its watches, its
    /// deletion hook ([`driver::Reconciler::forget`]) and its core.
    pub fn register_kind<R: driver::Reconciler<D>>(self) -> Self
    where
        R::Kind: ControlledKind,
    {
        let (deps, metrics) = (Arc::clone(&self.deps), self.metrics.clone());
        let hook_deps = Arc::clone(&self.deps);
        let spec = ControllerSpec::<R::Kind>::new(R::CONTROLLER)
            .customize(move |controller, scope| R::customize(controller, scope, &hook_deps))
            .on_delete(move |key| R::forget(&deps, &metrics, key));
        self.register(spec, driver::reconcile::<R, D>)
    }

    /// Waits until every registered kind's CRD is established, then (holding the lease, if leader
    /// election is on) runs all controllers until `shutdown`. In-flight reconciles finish before
    /// the lease is released. Returns [`Error::LeadershipLost`] if the lease was lost: the
    /// controllers are stopped at once and the caller should exit non-zero.
    pub async fn run(self, health: Health, shutdown: CancellationToken) -> Result<(), Error> {
        let crds: Vec<String> = self.controllers.iter().map(|c| c.crd.clone()).collect();
        health.set(Readiness::WaitingForCrds(crds.clone()));
        if !wait_for_crds(self.scope.client(), &crds, &shutdown).await? {
            health.set(Readiness::Stopping);
            return Ok(());
        }
        let Some(lease) = self.leader.clone() else {
            health.set(Readiness::Leading);
            let result = run_controllers(self.controllers, &shutdown).await;
            health.set(Readiness::Stopping);
            return result;
        };
        let mut elector = LeaderElector::new(self.scope.client().clone(), lease);
        health.set(Readiness::Standby);
        if !elector.acquire(&shutdown).await? {
            health.set(Readiness::Stopping);
            return Ok(());
        }
        self.metrics.leader.set(1);
        health.set(Readiness::Leading);
        let result = {
            let controllers = run_controllers(self.controllers, &shutdown);
            tokio::select! {
                result = controllers => result,
                lost = elector.hold() => Err(lost),
            }
        };
        self.metrics.leader.set(0);
        health.set(Readiness::Stopping);
        // Every controller has stopped acting, so a standby may take over at once; unless the
        // lease is already someone else's.
        if !matches!(result, Err(Error::LeadershipLost { .. }))
            && let Err(e) = elector.release().await
        {
            warn!(error = %e, "cannot release leader lease; a standby takes over when it expires");
        }
        result
    }
}

async fn run_controllers(controllers: Vec<Registered>, shutdown: &CancellationToken) -> Result<(), Error> {
    if controllers.is_empty() {
        info!("no controllers registered; holding until shutdown");
        shutdown.cancelled().await;
        return Ok(());
    }
    let names: Vec<&'static str> = controllers.iter().map(|c| c.name).collect();
    info!(controllers = ?names, "starting controllers");
    let runs = controllers.into_iter().map(|c| {
        let name = c.name;
        (c.start)(shutdown.clone()).map(move |()| name)
    });
    let mut stopped = futures::stream::iter(runs).buffer_unordered(usize::MAX);
    while let Some(name) = stopped.next().await {
        if !shutdown.is_cancelled() {
            return Err(Error::ControllerStopped {
                controller: name.into(),
            });
        }
        info!(controller = name, "controller stopped");
    }
    Ok(())
}

/// The watch of a controller's own kind: every event goes into the reflector `writer` (the
/// controller's store), deletions reach `forget`, and only changes of generation, labels,
/// annotations or finalizers trigger a reconcile. Our own status writes change none of them, so
/// they do not wake the controller again (requeues and watches of dependencies do).
fn watch<K: ControlledKind>(
    api: Api<Guarded<K>>,
    config: watcher::Config,
    writer: reflector::store::Writer<Guarded<K>>,
    forget: Option<Forget>,
) -> impl futures::Stream<Item = Result<Guarded<K>, watcher::Error>> + Send + 'static {
    // Keys seen by the current listing: after a re-list, what the store knew and the listing
    // lacks was deleted while the watch was down.
    let mut listing: Option<std::collections::HashSet<driver::ObjectKey>> = None;
    let reader = writer.as_reader();
    watcher(api, config)
        .default_backoff()
        .map_ok(move |event| {
            if let Some(forget) = &forget {
                match &event {
                    watcher::Event::Delete(obj) => forget(&driver::ObjectKey::of(obj)),
                    watcher::Event::Init => listing = Some(Default::default()),
                    watcher::Event::InitApply(obj) => {
                        if let Some(seen) = &mut listing {
                            seen.insert(driver::ObjectKey::of(obj));
                        }
                    }
                    watcher::Event::InitDone => {
                        let seen = listing.take().unwrap_or_default();
                        for obj in reader.state() {
                            let key = driver::ObjectKey::of(obj.as_ref());
                            if !seen.contains(&key) {
                                forget(&key);
                            }
                        }
                    }
                    watcher::Event::Apply(_) => {}
                }
            }
            event
        })
        .reflect(writer)
        .applied_objects()
        .predicate_filter(
            predicates::generation
                .combine(predicates::labels)
                .combine(predicates::annotations)
                .combine(predicates::finalizers),
            Default::default(),
        )
}

/// Waits until each CRD in `names` exists with condition `Established=True`. Returns `false` if
/// `shutdown` fired first.
pub async fn wait_for_crds(
    client: &Client,
    names: &[String],
    shutdown: &CancellationToken,
) -> Result<bool, Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in names {
        info!(crd = %name, "waiting for CustomResourceDefinition to be established");
        let established = await_condition(api.clone(), name, conditions::is_crd_established());
        tokio::select! {
            () = shutdown.cancelled() => return Ok(false),
            result = established => {
                result.map_err(|source| Error::WaitForCrd { crd: name.clone(), source })?;
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests;
