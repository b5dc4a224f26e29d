//! Status of an UpdatePolicy: the last and current run, per-guest and per-node progress
//! (recorded before each step so a restarted operator resumes instead of repeating).

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::crd::common::{GuestTarget, GuestType};
use crate::crd::conditions::Condition;

/// Condition type: the last run succeeded.
pub const CONDITION_SUCCEEDED: &str = "Succeeded";
/// Condition type: the last run rolled at least one guest back.
pub const CONDITION_ROLLED_BACK: &str = "RolledBack";
/// Condition type: a run is in progress.
pub const CONDITION_PROGRESSING: &str = "Progressing";

/// Observed state of an UpdatePolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdatePolicyStatus {
    /// The `metadata.generation` this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Succeeded` (last run; its reason is the result), `RolledBack` and
    /// `Progressing` (a run is under way).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::crd::conditions::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// `Guests` or `Nodes` (for `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = crate::crd::common::optional_enum)]
    pub scope: Option<UpdateScope>,
    /// The last finished run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<UpdateRunSummary>,
    /// Next time a run may start (absent while suspended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_time: Option<Timestamp>,
    /// The run in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_run: Option<UpdateRunProgress>,
    /// Per-guest progress of the current (or last) run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guests: Vec<GuestUpdateStatus>,
    /// Per-node progress of the current (or last) run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeUpdateStatus>,
    /// Guests rolled back since this policy was created.
    #[serde(default)]
    pub rollbacks_total: i32,
}

/// What an UpdatePolicy updates.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum UpdateScope {
    /// Software inside guests.
    Guests,
    /// The Proxmox nodes.
    Nodes,
}

/// Outcome of an update run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum UpdateResult {
    /// Everything updated and validated.
    Succeeded,
    /// Some guests or nodes updated, others failed or were skipped.
    PartiallySucceeded,
    /// Validation failed and guests were rolled back.
    RolledBack,
    /// The run failed; see `reason` and `message`.
    Failed,
}

/// Summary of a finished run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateRunSummary {
    /// Run id, e.g. `20240602-030000`; snapshots of this run are named `ap-upd-<id>`.
    pub id: String,
    /// When the run started.
    pub start_time: Timestamp,
    /// When the run finished.
    pub completion_time: Timestamp,
    /// Run time in seconds.
    pub duration_seconds: i64,
    /// `Succeeded`, `PartiallySucceeded`, `RolledBack` or `Failed`.
    pub result: UpdateResult,
    /// PascalCase reason, e.g. `ValidationFailed`, `QuorumAtRisk`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// What happened, for humans.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// The run in progress.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateRunProgress {
    /// Run id, e.g. `20240602-030000`.
    pub id: String,
    /// When the run started.
    pub start_time: Timestamp,
    /// The node being updated (node updates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_node: Option<String>,
}

/// Step of a guest update.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum GuestUpdateStep {
    /// Not started.
    Pending,
    /// Taking the pre-update snapshot.
    Snapshotting,
    /// Running the update command.
    Updating,
    /// Rebooting after the update.
    Rebooting,
    /// Running the validation checks.
    Validating,
    /// Watching the checks during the soak time.
    Soaking,
    /// Rolling back to the snapshot.
    RollingBack,
    /// Updated and validated.
    Succeeded,
    /// Validation failed and the guest was rolled back.
    RolledBack,
    /// Failed (and not rolled back); see `reason`.
    Failed,
    /// Not updated; see `reason` (e.g. `LxcExecutorNotSet`, `SnapshotUnsupported`).
    Skipped,
}

/// Progress of one guest.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GuestUpdateStatus {
    /// The Service, its guest and the node the guest ran on during the update.
    #[serde(flatten)]
    pub guest: GuestTarget,
    /// Current step.
    pub step: GuestUpdateStep,
    /// Name of the pre-update snapshot (`ap-upd-<run id>`), recorded before it is taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_name: Option<String>,
    /// UPID of the running PVE task (snapshot, rollback, reboot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upid: Option<crate::crd::common::TaskHandle>,
    /// Guest-agent pid of the running update command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_pid: Option<i64>,
    /// Exit code of the update command, saved the first time the agent reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The command's stdout was longer than the agent keeps (16 MiB): output incomplete.
    #[serde(default, skip_serializing_if = "crate::crd::common::is_false")]
    pub out_truncated: bool,
    /// The command's stderr was longer than the agent keeps (16 MiB): output incomplete.
    #[serde(default, skip_serializing_if = "crate::crd::common::is_false")]
    pub err_truncated: bool,
    /// Last lines of the command's output (at most 4 KiB).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 4096))]
    pub output_tail: String,
    /// PascalCase reason of the current step's outcome.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// What happened, for humans.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Step of a node update.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum NodeUpdateStep {
    /// Not started.
    Pending,
    /// Moving or stopping guests.
    Draining,
    /// Upgrading packages.
    Upgrading,
    /// Rebooting.
    Rebooting,
    /// Waiting for the node to come back and rejoin.
    Rejoining,
    /// Starting guests again and moving them back.
    Restoring,
    /// Done.
    Succeeded,
    /// Failed; the rollout stopped here (see `reason`).
    Failed,
}

/// Progress of one node, with what was done to its guests (so it can be undone).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeUpdateStatus {
    /// Node name.
    pub node: String,
    /// Current step.
    pub step: NodeUpdateStep,
    /// `pveversion` before the update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pve_version_before: Option<String>,
    /// `pveversion` after the update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pve_version_after: Option<String>,
    /// Running kernel before the update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_before: Option<String>,
    /// Running kernel after the update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_after: Option<String>,
    /// Whether the node was rebooted.
    #[serde(default, skip_serializing_if = "crate::crd::common::is_false")]
    pub rebooted: bool,
    /// Guests migrated away, to move back afterwards.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moved_guests: Vec<MovedGuest>,
    /// VMIDs of guests that were running and got shut down, to start again afterwards.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stopped_guests: Vec<i32>,
    /// UPID of the running PVE task (migrate, startall).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upid: Option<crate::crd::common::TaskHandle>,
    /// PascalCase reason of the current step's outcome, e.g. `QuorumAtRisk`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// What happened, for humans.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// A guest moved off a node during its update.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MovedGuest {
    /// VMID.
    pub vmid: i32,
    /// `VM` or `LXC`.
    #[serde(rename = "type")]
    pub type_: GuestType,
    /// Node it was on.
    pub from: String,
    /// Node it went to.
    pub to: String,
}
