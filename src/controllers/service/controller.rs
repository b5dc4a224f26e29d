//! The Service kind on the generic driver: finds the referenced ProxmoxCluster and its client
//! through the driver's source, runs [`reconcile_core`]. A watch on ProxmoxClusters re-triggers
//! their Services (a cluster that connects, or changes, is picked up at once); a deleted Service's
//! memory goes with it. No finalizer: deleting a Service never touches its guest.

use kube::{
    ResourceExt,
    core::DeserializeGuard,
    runtime::{Controller, watcher},
};

use super::{HasServiceDeps, ServiceRefs, reconcile_core};
use crate::controllers::kit::Outcome;
use crate::controllers::pve::{
    self, HasProxmox,
    read::{Referrer, cluster_access},
};
use crate::controllers::runtime::{
    ApiScope, Guarded,
    driver::{Env, ObjectKey, Reconciler, Source},
    error::Error,
    object_ref,
};
use crate::crd::conditions::find_condition;
use crate::crd::service::CONDITION_FOUND;
use crate::crd::service::ServiceStatus;
use crate::crd::validation::{InvalidSpec, Validate};
use crate::crd::{ProxmoxCluster, Service};
use crate::metrics::Metrics;

/// Controller name: metric label and field manager suffix.
pub const CONTROLLER: &str = "service";

/// The Service kind.
pub struct ServiceKind;

impl<D: HasProxmox + HasServiceDeps + Send + Sync + 'static> Reconciler<D> for ServiceKind {
    type Kind = Service;
    type Status = ServiceStatus;
    const CONTROLLER: &'static str = CONTROLLER;

    fn status(obj: &Service) -> Option<&ServiceStatus> {
        obj.status.as_ref()
    }

    fn validate(obj: &Service) -> Result<(), InvalidSpec> {
        obj.spec.validate()
    }

    async fn reconcile<S: Source>(
        env: &Env<'_, D, S>,
        obj: &Service,
    ) -> Result<Outcome<ServiceStatus>, Error> {
        let namespace = obj.namespace().unwrap_or_default();
        let uid = obj
            .uid()
            .unwrap_or_else(|| format!("{namespace}/{}", obj.name_any()));
        let access = cluster_access(
            env.source,
            env.deps.proxmox(),
            Referrer::of(obj, &namespace, env.now),
            &obj.spec.cluster_ref.name,
        )
        .await?;
        let previous = obj.status.clone().unwrap_or_default();
        let refs = ServiceRefs::of(obj, &uid, &previous, &access);
        let outcome = reconcile_core(env.deps.proxmox(), env.deps.service(), refs, env.now).await;
        // The cluster answered its own last check, but not us: have it re-checked now rather than
        // at its next resync, so its Connected condition and gauge follow the outage promptly.
        let unreachable = find_condition(&outcome.status.conditions, CONDITION_FOUND)
            .is_some_and(|c| c.reason == pve::reasons::UNREACHABLE);
        if access.client.is_ok() && unreachable {
            env.deps
                .proxmox()
                .rechecks
                .request(&namespace, &access.name, env.now);
        }
        Ok(outcome)
    }

    fn forget(deps: &D, _metrics: &Metrics, key: &ObjectKey) {
        deps.service().memory.remove(&key.uid);
    }

    fn customize(
        controller: Controller<Guarded<Service>>,
        scope: &ApiScope,
        _deps: &std::sync::Arc<D>,
    ) -> Controller<Guarded<Service>> {
        let store = controller.store();
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
    }
}
