//! Custom resource types for the `autopilot.homelab.dev/v1alpha1` API (no IO).
//!
//! One module per kind: [`proxmox_cluster`], [`service`], [`backup_policy`],
//! [`update_policy`], [`restore_test`], [`replication_job`]. Shared pieces: [`conditions`]
//! (status conditions and their helpers), [`refs`] (Secret/object references), [`common`],
//! [`health`], [`network`] and [`naming`] (schedules, retention, selectors, health checks,
//! the network plan, guest names), [`cel`] (builders for the CEL validation rules) and
//! [`validation`] (the runtime `validate()` backstop). [`generate`] renders the CRD YAML that
//! `homelab-autopilot crd` prints and `crds/` holds.

pub mod backup_policy;
pub mod cel;
pub mod cli;
pub mod common;
pub mod conditions;
pub mod generate;
pub mod health;
pub mod naming;
pub mod network;
pub mod proxmox_cluster;
pub mod refs;
pub mod replication_job;
pub mod restore_test;
pub mod service;
pub mod update_policy;
pub mod validation;

pub use backup_policy::{BackupPolicy, BackupPolicySpec, BackupPolicyStatus};
pub use conditions::{Condition, ConditionStatus};
pub use proxmox_cluster::{ProxmoxCluster, ProxmoxClusterSpec, ProxmoxClusterStatus};
pub use replication_job::{ReplicationJob, ReplicationJobSpec, ReplicationJobStatus};
pub use restore_test::{RestoreTest, RestoreTestSpec, RestoreTestStatus};
pub use service::{Service, ServiceSpec, ServiceStatus};
pub use update_policy::{UpdatePolicy, UpdatePolicySpec, UpdatePolicyStatus};
pub use validation::{FieldError, InvalidSpec, Validate};

/// The API group of every kind.
pub const GROUP: &str = "autopilot.homelab.dev";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";
/// The `kubectl get <category>` that lists every kind.
pub const CATEGORY: &str = "autopilot";
