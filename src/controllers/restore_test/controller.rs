//! The RestoreTest kind on the generic driver: reads its ProxmoxCluster, the Services and the
//! BackupPolicies of its namespace through the driver's source, runs [`reconcile_core`]. Its
//! finalizer removes every restored copy (stop, delete) before the RestoreTest goes, also one
//! deleted mid-test. Changed Services, BackupPolicies and clusters wake the tests that use them.

use std::time::Duration;

use prometheus::core::Collector;

use kube::{
    ResourceExt,
    core::DeserializeGuard,
    runtime::{Controller, watcher},
};

use super::{HasRestoreDeps, TestInput, delete_copies, reconcile_core};
use crate::controllers::kit::Outcome;
use crate::controllers::pve::{
    HasProxmox,
    read::{Referrer, cluster_access},
};
use crate::controllers::runtime::{
    ApiScope, Guarded,
    driver::{Cleanup, Env, ObjectKey, Reconciler, Source},
    error::Error,
    object_ref,
};
use crate::crd::restore_test::RestoreTestStatus;
use crate::crd::validation::{InvalidSpec, Validate};
use crate::crd::{BackupPolicy, ProxmoxCluster, RestoreTest, Service};
use crate::metrics::Metrics;

/// Controller name: metric label and field manager suffix.
pub const CONTROLLER: &str = "restoretest";
/// The finalizer: restored copies go before the RestoreTest does.
pub const FINALIZER: &str = "autopilot.homelab.dev/cleanup";

/// The RestoreTest kind.
pub struct RestoreTestKind;

/// The `service` labels a metric family holds for the RestoreTest `key`.
fn stale_services(family: &dyn Collector, key: &ObjectKey) -> Vec<String> {
    family
        .collect()
        .iter()
        .flat_map(|f| f.get_metric())
        .filter(|metric| {
            let labels = metric.get_label();
            let is = |name: &str, value: &str| labels.iter().any(|l| l.name() == name && l.value() == value);
            is("namespace", &key.namespace) && is("restoretest", &key.name)
        })
        .filter_map(|metric| {
            metric
                .get_label()
                .iter()
                .find(|l| l.name() == "service")
                .map(|l| l.value().to_owned())
        })
        .collect()
}

impl<D: HasProxmox + HasRestoreDeps + Send + Sync + 'static> Reconciler<D> for RestoreTestKind {
    type Kind = RestoreTest;
    type Status = RestoreTestStatus;
    const CONTROLLER: &'static str = CONTROLLER;
    const FINALIZER: Option<&'static str> = Some(FINALIZER);

    fn status(obj: &RestoreTest) -> Option<&RestoreTestStatus> {
        obj.status.as_ref()
    }

    fn validate(obj: &RestoreTest) -> Result<(), InvalidSpec> {
        obj.spec.validate()
    }

    async fn reconcile<S: Source>(
        env: &Env<'_, D, S>,
        obj: &RestoreTest,
    ) -> Result<Outcome<RestoreTestStatus>, Error> {
        let namespace = obj.namespace().unwrap_or_default();
        let uid = obj.uid().unwrap_or_default();
        let access = cluster_access(
            env.source,
            env.deps.proxmox(),
            Referrer::of(obj, &namespace, env.now),
            &obj.spec.cluster_ref.name,
        )
        .await?;
        let services: Vec<Service> = env.source.list(&namespace).await?;
        let policies: Vec<BackupPolicy> = env.source.list(&namespace).await?;
        let input = TestInput {
            test: obj,
            uid: &uid,
            namespace: &namespace,
            services: &services,
            policies: &policies,
            access: &access,
        };
        Ok(reconcile_core(
            env.deps.proxmox(),
            env.deps.restore(),
            env.metrics,
            input,
            env.now,
        )
        .await)
    }

    async fn cleanup<S: Source>(env: &Env<'_, D, S>, obj: &RestoreTest) -> Result<Cleanup, Error> {
        let namespace = obj.namespace().unwrap_or_default();
        let access = cluster_access(
            env.source,
            env.deps.proxmox(),
            Referrer::of(obj, &namespace, env.now),
            &obj.spec.cluster_ref.name,
        )
        .await?;
        let has_copies = obj.status.as_ref().is_some_and(|s| {
            s.current_run
                .iter()
                .chain(s.last_run.iter())
                .flat_map(|r| &r.restores)
                .any(|r| r.restored_vmid != 0 && !r.cleaned_up)
        });
        let client = match &access.client {
            Ok(c) => c,
            // Without a cluster (deleted with everything else) nothing can be checked; copies
            // recorded in status keep the finalizer until the cluster answers again.
            Err(u) if has_copies => {
                tracing::warn!(restoretest = %obj.name_any(), %namespace, reason = %u.reason, "cannot reach the cluster to remove restored copies; trying again");
                return Ok(Cleanup::Pending(Duration::from_secs(30)));
            }
            Err(_) => return Ok(Cleanup::Done),
        };
        match delete_copies(client, obj, &obj.uid().unwrap_or_default()).await {
            Ok(true) => Ok(Cleanup::Done),
            Ok(false) => Ok(Cleanup::Pending(
                env.deps
                    .proxmox()
                    .tuning
                    .task_poll
                    .max(Duration::from_millis(100)),
            )),
            Err(message) => {
                tracing::warn!(restoretest = %obj.name_any(), %namespace, error = %message, "cannot remove restored copies yet; trying again");
                Ok(Cleanup::Pending(Duration::from_secs(10)))
            }
        }
    }

    fn forget(deps: &D, metrics: &Metrics, key: &ObjectKey) {
        deps.restore().release_all(&key.uid);
        let m = &metrics.restore_test;
        for service in stale_services(&m.success, key) {
            let labels = [key.namespace.as_str(), key.name.as_str(), service.as_str()];
            let _ = m.success.remove_label_values(&labels);
            let _ = m.rto_seconds.remove_label_values(&labels);
            let _ = m.rto_target_seconds.remove_label_values(&labels);
            let _ = m.last_success_timestamp_seconds.remove_label_values(&labels);
        }
    }

    fn customize(
        controller: Controller<Guarded<RestoreTest>>,
        scope: &ApiScope,
        _deps: &std::sync::Arc<D>,
    ) -> Controller<Guarded<RestoreTest>> {
        let by_service = controller.store();
        let by_policy = controller.store();
        let by_cluster = controller.store();
        let in_namespace = |store: &kube::runtime::reflector::Store<Guarded<RestoreTest>>,
                            namespace: &str,
                            cluster: &str| {
            store
                .state()
                .iter()
                .filter_map(|g| g.0.as_ref().ok())
                .filter(|t| t.namespace().as_deref() == Some(namespace) && t.spec.cluster_ref.name == cluster)
                .map(|t| object_ref::<RestoreTest>(namespace, &t.name_any()))
                .collect::<Vec<_>>()
        };
        controller
            .watches(
                scope.api::<DeserializeGuard<Service>>(),
                watcher::Config::default(),
                move |guard: DeserializeGuard<Service>| {
                    let Ok(service) = guard.0 else {
                        return Vec::new();
                    };
                    in_namespace(
                        &by_service,
                        &service.namespace().unwrap_or_default(),
                        &service.spec.cluster_ref.name,
                    )
                },
            )
            .watches(
                scope.api::<DeserializeGuard<BackupPolicy>>(),
                watcher::Config::default(),
                move |guard: DeserializeGuard<BackupPolicy>| {
                    let Ok(policy) = guard.0 else {
                        return Vec::new();
                    };
                    in_namespace(
                        &by_policy,
                        &policy.namespace().unwrap_or_default(),
                        &policy.spec.cluster_ref.name,
                    )
                },
            )
            .watches(
                scope.api::<DeserializeGuard<ProxmoxCluster>>(),
                watcher::Config::default(),
                move |cluster: DeserializeGuard<ProxmoxCluster>| {
                    in_namespace(
                        &by_cluster,
                        &cluster.namespace().unwrap_or_default(),
                        &cluster.name_any(),
                    )
                },
            )
    }
}
