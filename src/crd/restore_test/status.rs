//! Status of a RestoreTest: the last and current run with the RTO breakdown of every
//! restore, and a bounded history.

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::crd::common::GuestType;
use crate::crd::conditions::Condition;

/// Condition type: the last run passed.
pub const CONDITION_SUCCEEDED: &str = "Succeeded";
/// Condition type: the last run met the RTO target (reasons `WithinTarget`, `TargetExceeded`).
pub const CONDITION_RTO_MET: &str = "RTOMet";

/// Observed state of a RestoreTest.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreTestStatus {
    /// The `metadata.generation` this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Succeeded` (last run) and `RTOMet` (`WithinTarget` or `TargetExceeded`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::crd::conditions::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The last finished run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RestoreRun>,
    /// The run in progress; each restore's VMID and task are recorded before they are used,
    /// so a restarted operator resumes (or cleans up) instead of restoring twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_run: Option<RestoreRun>,
    /// Next scheduled run (absent while suspended or without a schedule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_time: Option<Timestamp>,
    /// The `schedule` slot the last run served (or skipped), so a slot runs once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scheduled_time: Option<Timestamp>,
    /// Without a `schedule`: the `metadata.generation` the last once-per-change run served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_generation: Option<i64>,
    /// Earlier runs, newest first, at most `spec.historyLimit`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<RestoreRunSummary>,
    /// The last value of the `autopilot.homelab.dev/run-now` annotation that was served, so
    /// the same request does not run twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub last_run_request: Option<String>,
}

/// Outcome of a restore test.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RestoreResult {
    /// Restored, booted, every check passed within the RTO target.
    Passed,
    /// Restore, boot or a check failed.
    Failed,
    /// Everything passed, but slower than the RTO target.
    #[serde(rename = "RTOExceeded")]
    RtoExceeded,
}

/// Where one restore is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RestorePhase {
    /// VMID chosen, restore not requested yet.
    Pending,
    /// The restore task runs.
    Restoring,
    /// Configuring the isolated network and starting the guest.
    Booting,
    /// Waiting for the checks to pass.
    Checking,
    /// Waiting for `cleanup.afterSeconds`, then deleting the guest.
    CleaningUp,
    /// Finished (guest removed, or kept after a failure).
    Done,
}

/// One run (possibly several restores).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreRun {
    /// Run id, e.g. `20240601-060000`.
    pub run_id: String,
    /// When the run started.
    pub start_time: Timestamp,
    /// When the run finished (absent while running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Timestamp>,
    /// Services restored, comma-separated (for `kubectl get`), e.g. `nextcloud, gitea`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service: String,
    /// Overall result: the worst of the restores (absent while running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = crate::crd::common::optional_enum)]
    pub result: Option<RestoreResult>,
    /// The slowest restore's RTO in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_seconds: Option<i64>,
    /// The RTO target this run was measured against (`spec.rto.targetSeconds` when it ran), so
    /// editing the target does not rewrite past results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_target_seconds: Option<i64>,
    /// One entry per restored backup.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restores: Vec<RestoreResultDetail>,
}

/// One restored backup, with the RTO breakdown.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreResultDetail {
    /// Name of the Service restored (empty for a `vmid` source).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service: String,
    /// VMID of the original guest.
    pub source_vmid: i32,
    /// `VM` or `LXC`.
    #[serde(rename = "type")]
    pub type_: GuestType,
    /// Volume ID of the backup restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_volid: Option<String>,
    /// When that backup was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_time: Option<Timestamp>,
    /// VMID of the restored guest (recorded before the restore is requested).
    pub restored_vmid: i32,
    /// Node it was restored on.
    pub node: String,
    /// Where this restore is.
    pub phase: RestorePhase,
    /// UPID of the running PVE task (restore, start, destroy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upid: Option<crate::crd::common::TaskHandle>,
    /// When the restore request was accepted (the RTO clock starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_start_time: Option<Timestamp>,
    /// When the restore request was sent to PVE (for a chunk-store backup, after its
    /// reassembly). A request that got no answer is looked for at `restoredVmid` for a while
    /// from here before it is sent again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_time: Option<Timestamp>,
    /// When the restore task finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_time: Option<Timestamp>,
    /// When the guest was started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub booted_time: Option<Timestamp>,
    /// When the guest was ready: running, and for VMs with an agent check, the agent answering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_ready_time: Option<Timestamp>,
    /// When all checks first passed (the RTO clock stops).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_time: Option<Timestamp>,
    /// When the checks ended, passed or failed (cleanup counts `cleanup.afterSeconds` from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_time: Option<Timestamp>,
    /// Restore request to all checks passing, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_seconds: Option<i64>,
    /// Time spent restoring data, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_seconds: Option<i64>,
    /// Time from the start until the guest was ready (`guestReadyTime`), in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_seconds: Option<i64>,
    /// Time from the guest being ready until all checks passed, in seconds. `restoreSeconds`,
    /// `bootSeconds` and `applicationSeconds` add up to about `rtoSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_seconds: Option<i64>,
    /// Result of this restore (absent while running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = crate::crd::common::optional_enum)]
    pub result: Option<RestoreResult>,
    /// PascalCase reason, e.g. `CheckFailed`, `NoVerifiedBackup`, `IsolationUnverified`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// What happened, for humans.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Outcome of each check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckOutcome>,
    /// Whether the restored guest has been removed.
    #[serde(default, skip_serializing_if = "crate::crd::common::is_false")]
    pub cleaned_up: bool,
    /// For a chunk-store backup: the archive reassembled for this restore, as the operator
    /// mounts the BackupPolicy's `stagingPath`. Recorded before the reassembly starts and cleared
    /// once the file is removed (when the restore task ends, or when the RestoreTest is deleted),
    /// so a restart or a deletion mid-restore never leaves it behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub staged_archive: Option<String>,
}

impl RestoreResultDetail {
    /// A restore of `source_vmid` not started yet (no backup or VMID chosen).
    pub fn pending(service: impl Into<String>, source_vmid: i32, type_: GuestType) -> Self {
        Self {
            service: service.into(),
            source_vmid,
            type_,
            backup_volid: None,
            backup_time: None,
            restored_vmid: 0,
            node: String::new(),
            phase: RestorePhase::Pending,
            upid: None,
            restore_start_time: None,
            request_time: None,
            restored_time: None,
            booted_time: None,
            guest_ready_time: None,
            healthy_time: None,
            finished_time: None,
            rto_seconds: None,
            restore_seconds: None,
            boot_seconds: None,
            application_seconds: None,
            result: None,
            reason: String::new(),
            message: String::new(),
            checks: Vec::new(),
            cleaned_up: false,
            staged_archive: None,
        }
    }
}

/// Outcome of one check on a restored guest.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckOutcome {
    /// Check name.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// Details of the last probe.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// A past run, in `history`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreRunSummary {
    /// Run id.
    pub run_id: String,
    /// When it started.
    pub start_time: Timestamp,
    /// Services restored.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service: String,
    /// Result.
    pub result: RestoreResult,
    /// Slowest RTO in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_seconds: Option<i64>,
}
