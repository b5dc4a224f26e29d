//! One kube-runtime controller per kind, and the `operator` runtime that runs them.
//!
//! - [`runtime`]: [`ControllerSpec`] and [`Operator`]: watch with `DeserializeGuard`, bounded
//!   concurrency, CRD wait, leader lease, graceful shutdown, the shared error policy.
//! - [`context`]: the [`Context`] every reconcile gets (client, Event recorder, metrics, backoff,
//!   shared dependencies) and the [`ClientCache`] for per-cluster clients.
//! - [`error`]: [`Error`] and the [`ReconcileError`] contract (category, transience).
//! - [`backoff`], [`leader`], [`status`], [`events`], [`http`]: the pieces.
//! - [`proxmox_cluster`], [`service`]: the first two controllers. Each splits into a core without
//!   kube types (resolve, observe, plan, act; also driven by `homelab-autopilot demo`) and a
//!   `controller` module that drives it from the API server. [`shared`] holds what the cores
//!   share with their drivers.
//! - [`cli`]: `homelab-autopilot operator`.

pub mod backoff;
pub mod cli;
pub mod context;
pub mod error;
pub mod events;
pub mod http;
pub mod kit;
pub mod leader;
pub mod proxmox_cluster;
pub mod runtime;
pub mod service;
pub mod shared;
pub mod status;

use std::sync::Arc;

pub use backoff::{BackoffPolicy, BackoffTracker};
pub use context::{ClientCache, Context, OperatorDeps, Stores, field_manager};
pub use error::{Error, ReconcileError};
pub use events::report_transition;
pub use http::{Health, Readiness};
pub use leader::{LeaderElector, LeaseConfig};
pub use runtime::{
    ApiScope, ControlledKind, ControllerSpec, Failure, Operator, crd_name, object_ref, wait_for_crds,
};
pub use shared::{Outcome, PlannedEvent, ProxmoxDeps, Tuning};
pub use status::{
    ConditionStatus, DesiredCondition, StatusCondition, Transition, patch_status, set_condition,
};

/// Registers every controller this build has (ProxmoxCluster, Service) on `operator`. `stores`
/// must be the `stores` of the operator's [`OperatorDeps`]: the controllers' watches fill it.
pub fn register_controllers(
    operator: Operator<OperatorDeps>,
    stores: &Arc<Stores>,
) -> Operator<OperatorDeps> {
    operator
        .register(
            proxmox_cluster::controller::spec(Arc::clone(stores)),
            proxmox_cluster::controller::reconcile,
        )
        .register(
            service::controller::spec(Arc::clone(stores)),
            service::controller::reconcile,
        )
}
