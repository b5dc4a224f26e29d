//! The kube driver of the ProxmoxCluster core: reads the credentials Secret (and CA Secret),
//! runs [`reconcile_core`], applies the status, publishes the Events, sets the
//! `pve_cluster_connected` gauge and requeues. A watch on Secrets re-triggers the clusters that
//! use a changed Secret, so a rotated or fixed token is picked up at once.

use std::{collections::HashSet, sync::Arc};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{controller::Action, events::EventType, watcher},
};
use prometheus::core::Collector;

use super::resolve::SecretData;
use super::{ClusterInputs, reconcile_core};
use crate::controllers::{
    context::{Context, OperatorDeps, Stores, store_uids},
    error::Error,
    runtime::{ControllerSpec, object_ref},
    shared::PlannedEvent,
    status::{keys, patch_status},
};
use crate::crd::ProxmoxCluster;

/// Controller name: metric label and field manager suffix.
pub const CONTROLLER: &str = "proxmoxcluster";

/// Whether `cluster` reads the Secret `name` (credentials or CA).
fn uses_secret(cluster: &ProxmoxCluster, name: &str) -> bool {
    cluster.spec.credentials_secret_ref.name == name
        || cluster
            .spec
            .tls
            .as_ref()
            .and_then(|t| t.ca_secret_ref.as_ref())
            .is_some_and(|r| r.name == name)
}

/// The controller: ProxmoxClusters, re-triggered by changes of the Secrets they use.
pub fn spec(stores: Arc<Stores>) -> ControllerSpec<ProxmoxCluster> {
    ControllerSpec::new(CONTROLLER).customize(move |controller, scope| {
        let store = controller.store();
        // Set once per operator; a second registration would reuse the first store.
        let _ = stores.clusters.set(store.clone());
        controller.watches(
            scope.api::<Secret>(),
            watcher::Config::default(),
            move |secret: Secret| {
                let namespace = secret.namespace().unwrap_or_default();
                let name = secret.name_any();
                store
                    .state()
                    .iter()
                    .filter_map(|guard| guard.0.as_ref().ok())
                    .filter(|c| c.namespace().as_deref() == Some(namespace.as_str()) && uses_secret(c, &name))
                    .map(|c| object_ref::<ProxmoxCluster>(&namespace, &c.name_any()))
                    .collect::<Vec<_>>()
            },
        )
    })
}

pub(crate) fn read_error(
    kind: &'static str,
    namespace: &str,
    name: &str,
) -> impl FnOnce(kube::Error) -> Error {
    let (namespace, name) = (namespace.to_owned(), name.to_owned());
    move |source| Error::ReadObject {
        kind,
        namespace,
        name,
        source,
    }
}

/// Reads the Secrets (credentials and CA bundle) `cluster` points at. A missing object is data for the
/// status (`SecretNotFound`, `CaNotFound`); an API failure is an error.
pub(crate) async fn read_refs(client: &Client, cluster: &ProxmoxCluster) -> Result<ClusterInputs, Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let secret_name = &cluster.spec.credentials_secret_ref.name;
    let secret = secrets
        .get_opt(secret_name)
        .await
        .map_err(read_error("Secret", &namespace, secret_name))?
        .map(|s| (secret_data(&s), s.resource_version().unwrap_or_default()));
    let ca = match super::resolve::ca_secret(&cluster.spec) {
        None => None,
        Some(selector) => {
            let found = secrets.get_opt(&selector.name).await.map_err(read_error(
                "Secret",
                &namespace,
                &selector.name,
            ))?;
            let found = found.map(|s| (secret_data(&s), s.resource_version().unwrap_or_default()));
            Some(super::resolve::ca_bundle(
                selector,
                found.as_ref().map(|(data, rv)| (data, rv.as_str())),
            ))
        }
    };
    Ok(ClusterInputs { secret, ca })
}

fn secret_data(secret: &Secret) -> SecretData {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

/// Publishes the planned Events about `obj`. A failure is logged, not returned: the status is
/// already written, and Events are best effort.
pub(crate) async fn publish_events<K: Resource<DynamicType = ()>>(
    ctx: &Context<OperatorDeps>,
    obj: &K,
    events: &[PlannedEvent],
) {
    for e in events {
        let type_ = if e.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        if let Err(err) = ctx.publish(obj, type_, &e.reason, e.action, e.note.clone()).await {
            tracing::warn!(reason = %e.reason, error = %err, "cannot publish Event");
        }
    }
}

/// Drops the clients and gauge series of clusters that no longer exist.
fn forget_deleted(ctx: &Context<OperatorDeps>) {
    let Some(uids) = store_uids(&ctx.deps.stores.clusters) else {
        return;
    };
    ctx.deps.proxmox.clients.retain(|uid| uids.contains(uid));
    let Some(store) = ctx.deps.stores.clusters.get() else {
        return;
    };
    let live: HashSet<(String, String)> = store
        .state()
        .iter()
        .map(|c| (c.namespace().unwrap_or_default(), c.name_any()))
        .collect();
    let gauge = &ctx.metrics.proxmox.cluster_connected;
    for family in gauge.collect() {
        for metric in family.get_metric() {
            let label = |n: &str| {
                metric
                    .get_label()
                    .iter()
                    .find(|l| l.name() == n)
                    .map(|l| l.value().to_owned())
                    .unwrap_or_default()
            };
            let (namespace, cluster) = (label("namespace"), label("cluster"));
            if !live.contains(&(namespace.clone(), cluster.clone())) {
                let _ = gauge.remove_label_values(&[&namespace, &cluster]);
            }
        }
    }
}

/// Reconciles one ProxmoxCluster.
pub async fn reconcile(obj: Arc<ProxmoxCluster>, ctx: Arc<Context<OperatorDeps>>) -> Result<Action, Error> {
    let (namespace, name) = keys(obj.as_ref())?;
    let uid = obj.uid().unwrap_or_else(|| format!("{namespace}/{name}"));
    forget_deleted(&ctx);
    let read = read_refs(&ctx.client, &obj).await?;
    let previous = obj.status.clone().unwrap_or_default();
    let plan = reconcile_core(
        &ctx.deps.proxmox,
        read.refs(&obj, &uid, &namespace),
        &previous,
        Timestamp::now(),
    )
    .await;
    ctx.metrics
        .proxmox
        .cluster_connected
        .with_label_values(&[&namespace, &name])
        .set(i64::from(plan.connected));
    if plan.outcome.status != previous {
        patch_status(&ctx, obj.as_ref(), &plan.outcome.status).await?;
    }
    publish_events(&ctx, obj.as_ref(), &plan.outcome.events).await;
    Ok(Action::requeue(plan.outcome.requeue))
}
