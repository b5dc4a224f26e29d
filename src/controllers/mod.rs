//! One kube-runtime controller per kind, and the `operator` runtime that runs them.
//!
//! - [`runtime`]: [`ControllerSpec`] and [`Operator`]: watch with `DeserializeGuard`, bounded
//!   concurrency, CRD wait, leader lease, graceful shutdown, the shared error policy.
//! - [`context`]: the [`Context`] every reconcile gets (client, Event recorder, metrics, backoff,
//!   shared dependencies) and the [`ClientCache`] for per-cluster clients.
//! - [`error`]: [`Error`] and the [`ReconcileError`] contract (category, transience).
//! - [`backoff`], [`leader`], [`status`], [`events`], [`http`]: the pieces.
//! - [`cli`]: `homelab-autopilot operator`.

pub mod backoff;
pub mod cli;
pub mod context;
pub mod error;
pub mod events;
pub mod http;
pub mod leader;
pub mod runtime;
pub mod status;

pub use backoff::{BackoffPolicy, BackoffTracker};
pub use context::{ClientCache, Context, OperatorDeps, field_manager};
pub use error::{Error, ReconcileError};
pub use events::report_transition;
pub use http::{Health, Readiness};
pub use leader::{LeaderElector, LeaseConfig};
pub use runtime::{
    ApiScope, ControlledKind, ControllerSpec, Failure, Operator, crd_name, object_ref, wait_for_crds,
};
pub use status::{
    ConditionStatus, DesiredCondition, StatusCondition, Transition, patch_status, set_condition,
};
