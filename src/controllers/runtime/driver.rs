//! The generic driver, written once for every kind: a kind implements [`Reconciler`] (its core:
//! validate, reconcile, clean up, forget) and the driver does the rest, the same way for all:
//!
//! 1. keys (a stored object has a namespace and a name);
//! 2. the finalizer, when the kind declares one: added before the first act, and on deletion the
//!    kind's cleanup runs until it reports [`Cleanup::Done`]; only then is the finalizer removed;
//! 3. [`Reconciler::validate`] before acting: an invalid spec gets `Ready=False` with reason
//!    `InvalidSpec` (naming the field and the fix) and a Warning Event, and the core never runs;
//! 4. the kind's core, which dereferences what it needs through a [`Source`] (the API server
//!    here, in-memory objects in `homelab-autopilot demo`, which drives the same cores through
//!    [`run_pass`]);
//! 5. the status, patched only when it changed (a write wakes every watcher of the object);
//! 6. the Events the core planned, after the status;
//! 7. the requeue the core asked for.

use std::{fmt::Debug, future::Future, sync::Arc, time::Duration};

use jiff::Timestamp;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};
use serde::{Serialize, de::DeserializeOwned};

use super::{ApiScope, ControlledKind, Guarded};
use super::{
    context::{Context, PERMANENT_ERROR_REQUEUE},
    error::Error,
    events::publish_events,
    status::{keys, patch_status},
};
use crate::controllers::kit::{Conditions, Outcome, PlannedEvent};
use crate::crd::conditions::{ConditionStatus, ConditionedStatus, READY};
use crate::crd::validation::InvalidSpec;
use crate::metrics::Metrics;

/// Condition and Event reason of a spec that fails the operator's own checks.
pub const INVALID_SPEC: &str = "InvalidSpec";
/// Event action of the `InvalidSpec` Warning.
pub const ACTION_VALIDATE: &str = "Validate";

/// Where a core reads the objects it refers to (a ProxmoxCluster, a Secret): the API server in
/// the operator, in-memory objects in the demo. A missing object is `Ok(None)` (data for the
/// status); only a failure to ask is an error.
pub trait Source: Send + Sync {
    /// The object `namespace/name` of kind `T`, if it exists.
    fn get<T: ControlledKind>(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<T>, Error>> + Send;

    /// Every object of kind `T` in `namespace` (a policy's candidate Services).
    fn list<T: ControlledKind>(&self, namespace: &str) -> impl Future<Output = Result<Vec<T>, Error>> + Send;
}

impl Source for Client {
    async fn get<T: ControlledKind>(&self, namespace: &str, name: &str) -> Result<Option<T>, Error> {
        Api::<T>::namespaced(self.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|source| Error::ReadObject {
                kind: T::kind(&()).into_owned(),
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                source,
            })
    }

    async fn list<T: ControlledKind>(&self, namespace: &str) -> Result<Vec<T>, Error> {
        Api::<T>::namespaced(self.clone(), namespace)
            .list(&kube::api::ListParams::default())
            .await
            .map(|list| list.items)
            .map_err(|source| Error::ListObjects {
                kind: T::kind(&()).into_owned(),
                namespace: namespace.to_owned(),
                source,
            })
    }
}

/// The result of a kind's cleanup step on deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cleanup {
    /// Everything the object owns outside Kubernetes is gone: the finalizer may be removed.
    Done,
    /// Cleanup is under way (a task runs); look again after this delay, keep the finalizer.
    Pending(Duration),
}

/// `namespace`, `name` and UID of an object the watch reported deleted.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID (empty if the object had none).
    pub uid: String,
}

impl ObjectKey {
    /// The key of `obj`.
    pub fn of<K: Resource>(obj: &K) -> Self {
        let meta = obj.meta();
        Self {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
        }
    }
}

/// What one pass of a core may use: the operator's dependencies, where to read referenced
/// objects, the process metrics, and the time of the pass.
pub struct Env<'a, D, S> {
    /// The operator's shared dependencies.
    pub deps: &'a D,
    /// Where referenced objects are read.
    pub source: &'a S,
    /// Process metrics (gauges a kind sets, e.g. `pve_cluster_connected`).
    pub metrics: &'a Metrics,
    /// The time of this pass.
    pub now: Timestamp,
}

/// A kind as the generic driver runs it. `D` is the operator's shared dependencies.
pub trait Reconciler<D: Send + Sync + 'static>: Send + Sync + 'static {
    /// The custom resource.
    type Kind: ControlledKind + Serialize;
    /// Its status.
    type Status: ConditionedStatus + Serialize + PartialEq + Clone + Default + Debug + Send + Sync + 'static;
    /// Controller name (lowercase kind): metric label, field manager suffix.
    const CONTROLLER: &'static str;
    /// The finalizer of a kind that creates things outside Kubernetes (`None`: no finalizer).
    const FINALIZER: Option<&'static str> = None;

    /// The stored status.
    fn status(obj: &Self::Kind) -> Option<&Self::Status>;

    /// The operator's own checks of the spec, beyond the CRD schema.
    fn validate(obj: &Self::Kind) -> Result<(), InvalidSpec>;

    /// One pass of the kind's core.
    fn reconcile<S: Source>(
        env: &Env<'_, D, S>,
        obj: &Self::Kind,
    ) -> impl Future<Output = Result<Outcome<Self::Status>, Error>> + Send;

    /// One cleanup step on deletion (only for kinds with a [`Reconciler::FINALIZER`]). Removes
    /// only what the status and our ownership marker prove ours; idempotent; works even if no
    /// reconcile ever ran.
    fn cleanup<S: Source>(
        _env: &Env<'_, D, S>,
        _obj: &Self::Kind,
    ) -> impl Future<Output = Result<Cleanup, Error>> + Send {
        async { Ok(Cleanup::Done) }
    }

    /// Forgets what the process keeps about a deleted object (memory, clients, metric series).
    /// Called when the watch reports the deletion, whatever else reconciles.
    fn forget(_deps: &D, _metrics: &Metrics, _key: &ObjectKey) {}

    /// Adds watches of related kinds to the controller (map a changed dependency to the objects
    /// that use it with [`super::object_ref`]) and other triggers (`reconcile_on`).
    fn customize(
        controller: kube::runtime::Controller<Guarded<Self::Kind>>,
        _scope: &ApiScope,
        _deps: &Arc<D>,
    ) -> kube::runtime::Controller<Guarded<Self::Kind>> {
        controller
    }
}

/// What one pass decided, for its driver to carry out.
#[derive(Clone, Debug, PartialEq)]
pub struct Pass<S> {
    /// The status to write, `None` when it equals the stored one.
    pub status: Option<S>,
    /// Events to publish after the status.
    pub events: Vec<PlannedEvent>,
    /// When to look again.
    pub requeue: Duration,
}

/// The status of an object whose spec failed [`Reconciler::validate`]: the stored one with
/// `Ready=False`, `reason` ([`INVALID_SPEC`], or a more specific one such as `InvalidTimeZone`),
/// `message` (every field error) and the generation.
pub fn invalid_status<S: ConditionedStatus + Clone + Default>(
    stored: Option<&S>,
    generation: Option<i64>,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> S {
    let mut status = stored.cloned().unwrap_or_default();
    let before = status.conditions().to_vec();
    Conditions::new(&before, generation, now).set(
        status.conditions_mut(),
        READY,
        ConditionStatus::False,
        reason,
        message,
    );
    status.set_observed_generation(generation);
    status
}

/// One pass over `obj` without Kubernetes: validate, then the core; the status only if changed.
/// The kube driver ([`reconcile`]) and the demo both run this.
pub async fn run_pass<R, D, S>(env: &Env<'_, D, S>, obj: &R::Kind) -> Result<Pass<R::Status>, Error>
where
    R: Reconciler<D>,
    D: Send + Sync + 'static,
    S: Source,
{
    let stored = R::status(obj);
    let outcome = match R::validate(obj) {
        Ok(()) => R::reconcile(env, obj).await?,
        Err(invalid) => {
            let message = format!("{invalid}; correct the spec and apply it again");
            let reason = invalid.reason();
            let status = invalid_status(stored, obj.meta().generation, reason, &message, env.now);
            let already = stored.is_some_and(|s| *s == status);
            Outcome {
                status,
                events: if already {
                    Vec::new()
                } else {
                    vec![PlannedEvent::warning(reason, ACTION_VALIDATE, message)]
                },
                requeue: PERMANENT_ERROR_REQUEUE,
            }
        }
    };
    Ok(Pass {
        status: (stored != Some(&outcome.status)).then_some(outcome.status),
        events: outcome.events,
        requeue: outcome.requeue,
    })
}

/// The kube driver of kind `R`: finalizer, [`run_pass`] with the API server as [`Source`], status
/// patch when changed, Events, requeue.
pub async fn reconcile<R, D>(obj: Arc<R::Kind>, ctx: Arc<Context<D>>) -> Result<Action, Error>
where
    R: Reconciler<D>,
    D: Send + Sync + 'static,
{
    let (namespace, name) = keys(obj.as_ref())?;
    let env = Env {
        deps: ctx.deps.as_ref(),
        source: &ctx.client,
        metrics: &ctx.metrics,
        now: Timestamp::now(),
    };
    if let Some(finalizer) = R::FINALIZER {
        let api: Api<R::Kind> = Api::namespaced(ctx.client.clone(), &namespace);
        let has = obj.finalizers().iter().any(|f| f == finalizer);
        if obj.meta().deletion_timestamp.is_some() {
            if !has {
                return Ok(Action::await_change());
            }
            return match R::cleanup(&env, &obj).await? {
                Cleanup::Done => {
                    remove_finalizer(&api, obj.as_ref(), &name, finalizer).await?;
                    Ok(Action::await_change())
                }
                Cleanup::Pending(after) => Ok(Action::requeue(after)),
            };
        }
        if !has {
            add_finalizer(&api, obj.as_ref(), &name, finalizer).await?;
        }
    }
    let pass = run_pass::<R, D, Client>(&env, &obj).await?;
    if let Some(status) = &pass.status {
        patch_status(&ctx, obj.as_ref(), status).await?;
    }
    publish_events(&ctx, obj.as_ref(), &pass.events).await;
    Ok(Action::requeue(pass.requeue))
}

/// Adds `finalizer`: a merge patch of the whole finalizer list carrying the resourceVersion it
/// was read at, so a concurrent change of the object fails the patch (409, retried) instead of
/// being overwritten.
async fn add_finalizer<K>(api: &Api<K>, obj: &K, name: &str, finalizer: &str) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let mut list = obj.finalizers().to_vec();
    list.push(finalizer.to_owned());
    set_finalizers(api, obj, name, list, "add").await
}

/// Removes `finalizer` (only after the kind's cleanup reported [`Cleanup::Done`]).
async fn remove_finalizer<K>(api: &Api<K>, obj: &K, name: &str, finalizer: &str) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let list = obj
        .finalizers()
        .iter()
        .filter(|f| *f != finalizer)
        .cloned()
        .collect();
    set_finalizers(api, obj, name, list, "remove").await
}

async fn set_finalizers<K>(
    api: &Api<K>,
    obj: &K,
    name: &str,
    list: Vec<String>,
    action: &'static str,
) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let patch = serde_json::json!({
        "metadata": {"finalizers": list, "resourceVersion": obj.meta().resource_version},
    });
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(|_| ())
        .map_err(|source| Error::Finalizer { action, source })
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
