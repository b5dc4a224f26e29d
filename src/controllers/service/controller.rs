//! The kube driver of the Service core: finds the referenced ProxmoxCluster and its client,
//! runs [`reconcile_core`], applies the status, publishes the Events and requeues. A watch on
//! ProxmoxClusters re-triggers their Services (a cluster that connects, or changes, is picked up
//! at once). No finalizer: deleting a Service never touches its guest.

use std::sync::Arc;

use jiff::Timestamp;
use kube::{
    Api, ResourceExt,
    core::DeserializeGuard,
    runtime::{controller::Action, watcher},
};

use super::{ClusterAccess, ServiceRefs, reconcile_core};
use crate::controllers::{
    context::{Context, OperatorDeps, Stores, store_uids},
    error::Error,
    proxmox_cluster::controller::{publish_events, read_error, read_refs},
    runtime::{ControllerSpec, object_ref},
    status::{keys, patch_status},
};
use crate::crd::{ProxmoxCluster, Service};

/// Controller name: metric label and field manager suffix.
pub const CONTROLLER: &str = "service";

/// The controller: Services, re-triggered by changes of their ProxmoxCluster.
pub fn spec(stores: Arc<Stores>) -> ControllerSpec<Service> {
    ControllerSpec::new(CONTROLLER).customize(move |controller, scope| {
        let store = controller.store();
        // Set once per operator; a second registration would reuse the first store.
        let _ = stores.services.set(store.clone());
        controller.watches(
            scope.api::<DeserializeGuard<ProxmoxCluster>>(),
            watcher::Config::default(),
            move |cluster: DeserializeGuard<ProxmoxCluster>| {
                let namespace = cluster.namespace().unwrap_or_default();
                let name = cluster.name_any();
                store
                    .state()
                    .iter()
                    .filter_map(|guard| guard.0.as_ref().ok())
                    .filter(|s| {
                        s.namespace().as_deref() == Some(namespace.as_str())
                            && s.spec.cluster_ref.name == name
                    })
                    .map(|s| object_ref::<Service>(&namespace, &s.name_any()))
                    .collect::<Vec<_>>()
            },
        )
    })
}

/// The ProxmoxCluster `name` in `namespace` and its client, or why there is none.
async fn cluster_access(
    ctx: &Context<OperatorDeps>,
    namespace: &str,
    name: &str,
) -> Result<ClusterAccess, Error> {
    let clusters: Api<ProxmoxCluster> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(cluster) =
        clusters
            .get_opt(name)
            .await
            .map_err(read_error("ProxmoxCluster", namespace, name))?
    else {
        return Ok(ClusterAccess::missing(name, namespace));
    };
    let inputs = read_refs(&ctx.client, &cluster).await?;
    Ok(ClusterAccess::through(&ctx.deps.proxmox, &cluster, &inputs, namespace).await)
}

/// Reconciles one Service.
pub async fn reconcile(obj: Arc<Service>, ctx: Arc<Context<OperatorDeps>>) -> Result<Action, Error> {
    let (namespace, name) = keys(obj.as_ref())?;
    let uid = obj.uid().unwrap_or_else(|| format!("{namespace}/{name}"));
    if let Some(uids) = store_uids(&ctx.deps.stores.services) {
        ctx.deps.proxmox.services.retain(|u| uids.contains(u));
    }
    let access = cluster_access(&ctx, &namespace, &obj.spec.cluster_ref.name).await?;
    let previous = obj.status.clone().unwrap_or_default();
    let refs = ServiceRefs::of(&obj, &uid, &previous, &access);
    let outcome = reconcile_core(&ctx.deps.proxmox, refs, Timestamp::now()).await;
    if outcome.status != previous {
        patch_status(&ctx, obj.as_ref(), &outcome.status).await?;
    }
    publish_events(&ctx, obj.as_ref(), &outcome.events).await;
    Ok(Action::requeue(outcome.requeue))
}
