//! The BackupPolicy kind on the generic driver: reads its ProxmoxCluster and the Services of its
//! namespace through the driver's source, runs [`reconcile_core`]. A finalizer lets a policy
//! with `deletionPolicy: Delete` remove its backups when it is deleted (with `Retain` the
//! cleanup only drops staged archives of a run cut short). Changed Services and clusters wake the
//! policies that use them.

use std::time::Duration;

use kube::{
    ResourceExt,
    core::DeserializeGuard,
    runtime::{Controller, watcher},
};

use super::{HasBackupDeps, PolicyInput, delete_backups, reconcile_core};
use k8s_openapi::api::core::v1::Secret;

use crate::controllers::kit::Outcome;
use crate::controllers::kit::notify::channels;
use crate::controllers::pve::pbs::pbs_access;
use crate::controllers::pve::read::secret_data;
use crate::controllers::pve::selector::selects;
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
use crate::crd::backup_policy::{BackupItemState, BackupPolicyStatus};
use crate::crd::validation::{InvalidSpec, Validate};
use crate::crd::{BackupPolicy, ProxmoxCluster, Service};
use crate::metrics::Metrics;

/// Controller name: metric label and field manager suffix.
pub const CONTROLLER: &str = "backuppolicy";
/// The finalizer: backups of a `deletionPolicy: Delete` policy go before the policy does.
pub const FINALIZER: &str = "autopilot.homelab.dev/cleanup";

/// The BackupPolicy kind.
pub struct BackupPolicyKind;

fn uid_of(obj: &BackupPolicy) -> String {
    obj.uid().unwrap_or_default()
}

impl<D: HasProxmox + HasBackupDeps + Send + Sync + 'static> Reconciler<D> for BackupPolicyKind {
    type Kind = BackupPolicy;
    type Status = BackupPolicyStatus;
    const CONTROLLER: &'static str = CONTROLLER;
    const FINALIZER: Option<&'static str> = Some(FINALIZER);

    fn status(obj: &BackupPolicy) -> Option<&BackupPolicyStatus> {
        obj.status.as_ref()
    }

    fn validate(obj: &BackupPolicy) -> Result<(), InvalidSpec> {
        obj.spec.validate()
    }

    async fn reconcile<S: Source>(
        env: &Env<'_, D, S>,
        obj: &BackupPolicy,
    ) -> Result<Outcome<BackupPolicyStatus>, Error> {
        let namespace = obj.namespace().unwrap_or_default();
        let uid = uid_of(obj);
        let access = cluster_access(
            env.source,
            env.deps.proxmox(),
            Referrer::of(obj, &namespace, env.now),
            &obj.spec.cluster_ref.name,
        )
        .await?;
        let services: Vec<Service> = env.source.list(&namespace).await?;
        let notify = match &obj.spec.notifications {
            None => None,
            Some(n) => Some(
                match env.source.get::<Secret>(&namespace, &n.secret_ref.name).await? {
                    Some(secret) => channels(&secret_data(&secret)).map_err(|e| {
                        format!("Secret {} (spec.notifications.secretRef): {e}", n.secret_ref.name)
                    }),
                    None => Err(format!(
                        "Secret {} (spec.notifications.secretRef) does not exist in namespace {namespace}",
                        n.secret_ref.name
                    )),
                },
            ),
        };
        let verifying = obj
            .status
            .as_ref()
            .and_then(|s| s.current_run.as_ref())
            .is_some_and(|r| r.items.iter().any(|i| i.state == BackupItemState::Verifying));
        let pbs = match (&obj.spec.destination.pbs, verifying) {
            (Some(dest), true) => {
                pbs_access(env.source, &namespace, &obj.spec.cluster_ref.name, &dest.storage).await?
            }
            _ => None,
        };
        let input = PolicyInput {
            policy: obj,
            uid: &uid,
            namespace: &namespace,
            services: &services,
            access: &access,
            notify: notify.as_ref(),
            pbs: pbs.as_ref(),
        };
        Ok(reconcile_core(env.deps.proxmox(), env.deps.backup(), env.metrics, input, env.now).await)
    }

    async fn cleanup<S: Source>(env: &Env<'_, D, S>, obj: &BackupPolicy) -> Result<Cleanup, Error> {
        let namespace = obj.namespace().unwrap_or_default();
        let access = cluster_access(
            env.source,
            env.deps.proxmox(),
            Referrer::of(obj, &namespace, env.now),
            &obj.spec.cluster_ref.name,
        )
        .await?;
        let client = access.client.as_ref().ok();
        match delete_backups(env.deps.backup(), obj, &uid_of(obj), client).await {
            Ok(true) => Ok(Cleanup::Done),
            Ok(false) => Ok(Cleanup::Pending(Duration::from_secs(5))),
            Err(message) => {
                tracing::warn!(
                    policy = %obj.name_any(),
                    %namespace,
                    error = %message,
                    "cannot delete this BackupPolicy's backups yet; trying again"
                );
                Ok(Cleanup::Pending(Duration::from_secs(30)))
            }
        }
    }

    fn forget(deps: &D, metrics: &Metrics, key: &ObjectKey) {
        deps.backup().release_all(&key.uid);
        deps.backup().cooldowns.forget(&format!("{}/", key.uid));
        let backup = &metrics.backup;
        for kind in ["logical", "stored"] {
            let _ = backup
                .bytes
                .remove_label_values(&[&key.namespace, &key.name, kind]);
        }
        let _ = backup
            .interval_seconds
            .remove_label_values(&[&key.namespace, &key.name]);
        let _ = backup
            .duration_seconds
            .remove_label_values(&[&key.namespace, &key.name]);
    }

    fn customize(
        controller: Controller<Guarded<BackupPolicy>>,
        scope: &ApiScope,
        _deps: &std::sync::Arc<D>,
    ) -> Controller<Guarded<BackupPolicy>> {
        let by_service = controller.store();
        let by_cluster = controller.store();
        controller
            .watches(
                scope.api::<DeserializeGuard<Service>>(),
                watcher::Config::default(),
                move |guard: DeserializeGuard<Service>| {
                    let Ok(service) = guard.0 else {
                        return Vec::new();
                    };
                    let namespace = service.namespace().unwrap_or_default();
                    by_service
                        .state()
                        .iter()
                        .filter_map(|g| g.0.as_ref().ok())
                        .filter(|p| {
                            p.namespace().as_deref() == Some(namespace.as_str())
                                && selects(&p.spec.services, &p.spec.cluster_ref.name, &service)
                        })
                        .map(|p| object_ref::<BackupPolicy>(&namespace, &p.name_any()))
                        .collect::<Vec<_>>()
                },
            )
            .watches(
                scope.api::<DeserializeGuard<ProxmoxCluster>>(),
                watcher::Config::default(),
                move |cluster: DeserializeGuard<ProxmoxCluster>| {
                    let namespace = cluster.namespace().unwrap_or_default();
                    let name = cluster.name_any();
                    by_cluster
                        .state()
                        .iter()
                        .filter_map(|g| g.0.as_ref().ok())
                        .filter(|p| {
                            p.namespace().as_deref() == Some(namespace.as_str())
                                && p.spec.cluster_ref.name == name
                        })
                        .map(|p| object_ref::<BackupPolicy>(&namespace, &p.name_any()))
                        .collect::<Vec<_>>()
                },
            )
    }
}
