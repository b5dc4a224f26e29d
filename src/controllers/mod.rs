//! The controllers: the composition root of the operator. Layers (see `ARCHITECTURE.md`):
//!
//! - [`runtime`]: kind-agnostic kube plumbing: [`ControllerSpec`] and [`Operator`] (watch with
//!   `DeserializeGuard`, bounded concurrency, CRD wait, leader lease, graceful shutdown, the error
//!   policy), the [`Context`], status patches, Events, backoff, probes.
//! - [`kit`]: kube-free helpers every kind uses: [`kit::Outcome`], [`kit::Conditions`], memory
//!   maps, time.
//! - [`pve`]: what every Proxmox-driving kind shares: reaching a cluster, finding a guest,
//!   polling a task, shared reasons, [`pve::ProxmoxDeps`].
//! - [`proxmox_cluster`], [`service`], [`backup_policy`], [`restore_test`]: one folder per kind. A kind imports `runtime`, `kit` and
//!   `pve`, never another kind.
//! - [`cli`]: `homelab-autopilot operator`.
//!
//! Only this file (and the demo) names every kind.

pub mod backup_policy;
pub mod cli;
pub mod kit;
pub mod proxmox_cluster;
pub mod pve;
pub mod restore_cli;
pub mod restore_test;
pub mod runtime;
pub mod service;

use std::{path::PathBuf, sync::Arc};

pub use runtime::{backoff, context, error, events, http, leader, status};

pub use backoff::{BackoffPolicy, BackoffTracker};
pub use context::{Context, field_manager};
pub use error::{Error, ReconcileError};
pub use events::{publish_events, report_change};
pub use http::{Health, Readiness};
pub use leader::{LeaderElector, LeaseConfig};
pub use runtime::{
    ApiScope, ControlledKind, ControllerSpec, Failure, Operator, crd_name, object_ref, wait_for_crds,
};
pub use status::patch_status;

/// The product's dependencies beyond Kubernetes, shared by all controllers as `Context::deps`:
/// what every Proxmox-driving kind shares ([`pve::ProxmoxDeps`]), each kind's own per-process
/// state, and the chunk store settings (the BackupPolicy controller opens the store from them).
#[derive(Debug)]
pub struct OperatorDeps {
    /// `--store-path`: directory of the chunk store.
    pub store_path: PathBuf,
    /// `--store-key-file`: the chunk store's encryption key file, if any.
    pub store_key_file: Option<PathBuf>,
    /// Proxmox clients and timing.
    pub proxmox: Arc<pve::ProxmoxDeps>,
    /// The Service controller's health-check clients and per-Service memory.
    pub service: service::ServiceDeps,
    /// The BackupPolicy controller's chunk store, ingest jobs and guest claims.
    pub backup: backup_policy::BackupDeps,
    /// The RestoreTest controller's chunk store access, check clients, node and VMID claims.
    pub restore: restore_test::RestoreDeps,
}

impl OperatorDeps {
    /// Dependencies with the given chunk store settings and Proxmox dependencies.
    pub fn new(store_path: PathBuf, store_key_file: Option<PathBuf>, proxmox: pve::ProxmoxDeps) -> Self {
        let store = backup_policy::ingest::StoreSettings {
            repo: store_path.clone(),
            key_file: store_key_file.clone(),
        };
        Self {
            store_path,
            store_key_file,
            proxmox: Arc::new(proxmox),
            service: service::ServiceDeps::default(),
            backup: backup_policy::BackupDeps::new(store.clone()),
            restore: restore_test::RestoreDeps::new(store),
        }
    }
}

impl pve::HasProxmox for OperatorDeps {
    fn proxmox(&self) -> &pve::ProxmoxDeps {
        &self.proxmox
    }
}

impl service::HasServiceDeps for OperatorDeps {
    fn service(&self) -> &service::ServiceDeps {
        &self.service
    }
}

impl backup_policy::HasBackupDeps for OperatorDeps {
    fn backup(&self) -> &backup_policy::BackupDeps {
        &self.backup
    }
}

impl restore_test::HasRestoreDeps for OperatorDeps {
    fn restore(&self) -> &restore_test::RestoreDeps {
        &self.restore
    }
}

/// Registers every controller this build has (ProxmoxCluster, Service, BackupPolicy,
/// RestoreTest) on
/// `operator`.
pub fn register_controllers(operator: Operator<OperatorDeps>) -> Operator<OperatorDeps> {
    operator
        .register_kind::<proxmox_cluster::controller::ClusterKind>()
        .register_kind::<service::controller::ServiceKind>()
        .register_kind::<backup_policy::controller::BackupPolicyKind>()
        .register_kind::<restore_test::controller::RestoreTestKind>()
}
