//! The ProxmoxCluster kind on the generic driver: reads the credentials Secret (and CA Secret)
//! through the driver's source, runs [`reconcile_core`], sets the `pve_cluster_connected` gauge.
//! A watch on Secrets re-triggers the clusters that use a changed Secret, so a rotated or fixed
//! token is picked up at once; a deleted cluster's client and gauge series go with it.

use k8s_openapi::api::core::v1::Secret;
use kube::{
    ResourceExt,
    runtime::{Controller, watcher},
};

use super::reconcile_core;
use crate::controllers::kit::Outcome;
use crate::controllers::pve::{HasProxmox, read::cluster_inputs};
use crate::controllers::runtime::{
    ApiScope, Guarded,
    driver::{Env, ObjectKey, Reconciler, Source},
    error::Error,
    object_ref,
};
use crate::crd::ProxmoxCluster;
use crate::crd::proxmox_cluster::ProxmoxClusterStatus;
use crate::crd::validation::{InvalidSpec, Validate};
use crate::metrics::Metrics;

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

/// The ProxmoxCluster kind.
pub struct ClusterKind;

impl<D: HasProxmox + Send + Sync + 'static> Reconciler<D> for ClusterKind {
    type Kind = ProxmoxCluster;
    type Status = ProxmoxClusterStatus;
    const CONTROLLER: &'static str = CONTROLLER;

    fn status(obj: &ProxmoxCluster) -> Option<&ProxmoxClusterStatus> {
        obj.status.as_ref()
    }

    fn validate(obj: &ProxmoxCluster) -> Result<(), InvalidSpec> {
        obj.spec.validate()
    }

    async fn reconcile<S: Source>(
        env: &Env<'_, D, S>,
        obj: &ProxmoxCluster,
    ) -> Result<Outcome<ProxmoxClusterStatus>, Error> {
        let namespace = obj.namespace().unwrap_or_default();
        let name = obj.name_any();
        let uid = obj.uid().unwrap_or_else(|| format!("{namespace}/{name}"));
        let inputs = cluster_inputs(env.source, obj).await?;
        let previous = obj.status.clone().unwrap_or_default();
        let plan = reconcile_core(
            env.deps.proxmox(),
            inputs.refs(obj, &uid, &namespace),
            &previous,
            env.now,
        )
        .await;
        env.metrics
            .proxmox
            .cluster_connected
            .with_label_values(&[&namespace, &name])
            .set(i64::from(plan.connected));
        Ok(plan.outcome)
    }

    fn forget(deps: &D, metrics: &Metrics, key: &ObjectKey) {
        deps.proxmox().clients.remove(&key.uid);
        deps.proxmox().snapshots.forget(&key.uid);
        let _ = metrics
            .proxmox
            .cluster_connected
            .remove_label_values(&[&key.namespace, &key.name]);
    }

    fn customize(
        controller: Controller<Guarded<ProxmoxCluster>>,
        scope: &ApiScope,
        deps: &std::sync::Arc<D>,
    ) -> Controller<Guarded<ProxmoxCluster>> {
        let store = controller.store();
        // Dependents that found the cluster unreachable ask for a prompt re-check.
        let rechecks = futures::stream::unfold(deps.proxmox().rechecks.subscribe(), |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(key) => return Some((object_ref::<ProxmoxCluster>(&key.namespace, &key.name), rx)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        controller.reconcile_on(rechecks).watches(
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
    }
}
