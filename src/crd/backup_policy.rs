//! `BackupPolicy`: back up selected Services on a cron schedule to a Proxmox Backup Server,
//! a PVE backup storage or the operator's own dedup chunk store, then prune and verify.

use jiff::Timestamp;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::cel::{cron_fields_rule, exactly_one_of, immutable, rule};
use super::common::{
    CRON_PATTERN, DeletionPolicy, GuestTarget, Retention, STORAGE_PATTERN, ServiceSelector,
    TIME_ZONE_PATTERN, default_time_zone, validate_schedule,
};
use super::conditions::Condition;
use super::refs::LocalObjectReference;
use super::validation::{Errors, InvalidSpec, Validate, parse_cron};

/// Condition type: the last run backed up every selected Service.
pub const CONDITION_BACKUP_SUCCEEDED: &str = "BackupSucceeded";
/// Condition type: the last verification found every backup readable.
pub const CONDITION_VERIFIED: &str = "Verified";

/// Scheduled backups of a set of Services.
// Every `printcolumn(...)` repeats `type_`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "autopilot.homelab.dev",
    version = "v1alpha1",
    kind = "BackupPolicy",
    plural = "backuppolicies",
    namespaced,
    status = "BackupPolicyStatus",
    shortname = "bkp",
    category = "autopilot",
    derive = "PartialEq",
    doc = "Scheduled backups of selected Services to a Proxmox Backup Server, a PVE backup storage or the operator's dedup chunk store, with retention and verification.",
    printcolumn(
        name = "Last Backup",
        type_ = "date",
        json_path = ".status.lastBackup.completionTime",
        description = "When the last run finished"
    ),
    printcolumn(name = "Result", type_ = "string", json_path = ".status.lastBackup.result"),
    printcolumn(
        name = "Next",
        type_ = "string",
        json_path = ".status.nextRunTime",
        description = "Next scheduled run"
    ),
    printcolumn(
        name = "Stored",
        type_ = "string",
        json_path = ".status.storedSize",
        description = "Space the retained backups take"
    ),
    printcolumn(
        name = "Schedule",
        type_ = "string",
        json_path = ".spec.schedule",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rule(
    "!has(self.clusterConfig) || !self.clusterConfig || has(self.destination.chunkStore)",
    "clusterConfig needs destination.chunkStore: the export is stored in the chunk store"
))]
pub struct BackupPolicySpec {
    /// The ProxmoxCluster (same namespace) the Services belong to. Immutable.
    #[x_kube(validation = immutable("clusterRef"))]
    pub cluster_ref: LocalObjectReference,
    /// Which Services (`services.autopilot.homelab.dev`, same namespace) to back up.
    pub services: ServiceSelector,
    /// When to back up, as 5-field cron in `timeZone`, e.g. `30 2 * * *` (02:30 daily) or
    /// `@daily`.
    #[schemars(length(min = 1, max = 128), regex(pattern = CRON_PATTERN))]
    #[x_kube(validation = cron_fields_rule())]
    pub schedule: String,
    /// IANA time zone of `schedule`, e.g. `Europe/Berlin` (default `UTC`).
    #[serde(default = "default_time_zone")]
    #[schemars(length(min = 1, max = 64), regex(pattern = TIME_ZONE_PATTERN))]
    pub time_zone: String,
    /// Pause scheduling; a run in progress finishes. Default false.
    #[serde(default)]
    pub suspend: bool,
    /// How vzdump treats a running guest: `Snapshot` (default: no downtime), `Suspend`
    /// (short pause) or `Stop` (shut down for a fully consistent copy, then start again).
    #[serde(default)]
    pub mode: BackupMode,
    /// Where backups go. Set exactly one of `pbs`, `storage` or `chunkStore`.
    pub destination: BackupDestination,
    /// Which backups to keep; older ones are pruned after each run. Leave out to keep all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// Checks that backups can be read back (default: verify each new backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// How many guests to back up at once across the cluster (1-16, default 1); never more
    /// than one per node.
    #[serde(default = "default_concurrency")]
    #[schemars(range(min = 1, max = 16))]
    pub concurrency: i32,
    /// Bandwidth limit for each backup in KiB/s (vzdump `bwlimit`); unlimited when absent.
    /// PVE 9.1 lets only a user or token with `Sys.Modify` on `/` set it: grant that to the
    /// operator's token, or leave this out and rely on the storage's or datacenter's limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 104857600))]
    pub bandwidth_limit_ki_bps: Option<i32>,
    /// If a scheduled run was missed (operator down) by more than this many seconds, skip it
    /// and wait for the next one. Absent: a missed run starts as soon as possible, once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 60, max = 31622400))]
    pub starting_deadline_seconds: Option<i32>,
    /// What happens to the backups when this BackupPolicy is deleted: `Retain` (default:
    /// backups outlive the policy) or `Delete` (remove the backups this policy made).
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Tell Discord, Slack, ntfy or a webhook when backups fail, fail verification or space
    /// runs low (and, if asked, when they succeed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<Notifications>,
    /// Chunk store only: with each run, also store a JSON export of the cluster's guest configs,
    /// storages, node networks, cluster status and HA resources (snapshot
    /// `<namespace>.<policy>.cluster`), to rebuild or diff a node against. Default false.
    #[serde(default, skip_serializing_if = "super::common::is_false")]
    pub cluster_config: bool,
}

/// Where and when to notify.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notifications {
    /// A Secret (same namespace) holding webhook URLs under the keys `discord`, `slack`, `ntfy`
    /// and `webhook` (any of them), e.g.
    /// `kubectl create secret generic backup-alerts --from-literal=ntfy=https://ntfy.sh/my-topic`.
    pub secret_ref: LocalObjectReference,
    /// Which events to send (default `BackupFailed`, `VerifyFailed`, `SpaceLow`).
    #[serde(default = "default_notification_events")]
    #[schemars(length(max = 4))]
    pub events: Vec<NotificationEvent>,
    /// Send the same event about the same Service at most once in this many seconds (default
    /// 3600; 0 sends every time).
    #[serde(default = "default_cooldown_seconds")]
    #[schemars(range(min = 0, max = 604800))]
    pub cooldown_seconds: i32,
    /// `SpaceLow` fires when the destination (or staging) storage, or the chunk store's volume,
    /// is fuller than this percentage (default 85).
    #[serde(default = "default_space_warning_percent")]
    #[schemars(range(min = 1, max = 100))]
    pub space_warning_percent: i32,
}

/// An event worth a notification.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum NotificationEvent {
    /// A Service's backup failed.
    BackupFailed,
    /// A new backup did not read back.
    VerifyFailed,
    /// The destination is fuller than `spaceWarningPercent`.
    SpaceLow,
    /// A Service was backed up (opt-in: this is every night).
    BackupSucceeded,
}

fn default_notification_events() -> Vec<NotificationEvent> {
    vec![
        NotificationEvent::BackupFailed,
        NotificationEvent::VerifyFailed,
        NotificationEvent::SpaceLow,
    ]
}

fn default_cooldown_seconds() -> i32 {
    3600
}

fn default_space_warning_percent() -> i32 {
    85
}

fn default_concurrency() -> i32 {
    1
}

/// vzdump mode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum BackupMode {
    /// Live backup, no downtime (default).
    #[default]
    Snapshot,
    /// Suspend the guest for the copy.
    Suspend,
    /// Stop the guest, back up, start it again.
    Stop,
}

/// Where backups go: exactly one of the three.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rule(
    exactly_one_of(&["pbs", "storage", "chunkStore"]),
    "set exactly one of pbs, storage or chunkStore"
))]
pub struct BackupDestination {
    /// A Proxmox Backup Server datastore, through its PVE storage (deduplicated, verifiable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pbs: Option<PbsDestination>,
    /// A PVE storage with content `backup` (NFS, CIFS, directory): plain vzdump archives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageDestination>,
    /// The operator's own deduplicating chunk store (`--store-path`, a PVC in the chart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_store: Option<ChunkStoreDestination>,
}

/// Back up to a Proxmox Backup Server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PbsDestination {
    /// ID of the PVE storage of type `pbs`, e.g. `pbs-homelab`. List the server under the
    /// ProxmoxCluster's `backupServers` to get verification state and sizes in status.
    #[schemars(length(min = 2, max = 64), regex(pattern = STORAGE_PATTERN))]
    pub storage: String,
}

/// Back up to a PVE backup storage.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageDestination {
    /// ID of a PVE storage with content `backup`, e.g. `nfs-backup`. For clusters it must be
    /// shared, so every node can write to it.
    #[schemars(length(min = 2, max = 64), regex(pattern = STORAGE_PATTERN))]
    pub storage: String,
    /// Archive compression: `Zstd` (default), `Lzo`, `Gzip` or `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = crate::crd::common::optional_enum)]
    pub compression: Option<Compression>,
}

/// vzdump archive compression.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Compression {
    /// zstd (default).
    #[default]
    Zstd,
    /// lzo.
    Lzo,
    /// gzip.
    Gzip,
    /// Uncompressed.
    None,
}

/// Back up into the operator's chunk store. vzdump first writes the archive to a staging PVE
/// storage that the operator's pod also mounts; the operator then chunks it into its store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChunkStoreDestination {
    /// ID of the PVE storage (content `backup`) vzdump writes the archive to, e.g. `nfs-staging`.
    #[schemars(length(min = 2, max = 64), regex(pattern = STORAGE_PATTERN))]
    pub staging_storage: String,
    /// Where that storage's `dump/` directory is mounted in the operator's pod, e.g.
    /// `/mnt/staging/dump`.
    #[schemars(length(min = 2, max = 1024), regex(pattern = r"^/[^\x00]*$"))]
    pub staging_path: String,
    /// Keep the staged archive after it was chunked (default false: delete it).
    #[serde(default, skip_serializing_if = "super::common::is_false")]
    pub keep_staged_archive: bool,
}

/// Verification of backups.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// Verify each backup right after it is taken (PBS verify, archive check, or chunk
    /// read-back). Default true.
    #[serde(default = "super::common::default_true")]
    pub after_backup: bool,
    /// Also re-verify every retained backup on this 5-field cron schedule (in `timeZone`),
    /// e.g. `0 5 * * SUN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = CRON_PATTERN))]
    #[x_kube(validation = cron_fields_rule())]
    pub schedule: Option<String>,
}

impl BackupPolicySpec {
    /// Whether each new backup is verified (true unless switched off).
    pub fn verify_after_backup(&self) -> bool {
        self.verification.as_ref().is_none_or(|v| v.after_backup)
    }
}

/// Outcome of a run or of one Service's backup.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BackupResult {
    /// Every backup succeeded.
    Succeeded,
    /// Some Services were backed up, some failed.
    PartiallySucceeded,
    /// Nothing was backed up.
    Failed,
}

/// State of one guest's backup within the current run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BackupItemState {
    /// Waiting for its turn.
    Pending,
    /// vzdump (or chunking) running.
    Running,
    /// Chunk store only: the staged archive is being read into the store.
    Ingesting,
    /// Verifying the new backup.
    Verifying,
    /// Done.
    Succeeded,
    /// Failed; see `message`.
    Failed,
}

/// Observed state of a BackupPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupPolicyStatus {
    /// The `metadata.generation` this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `BackupSucceeded` (last run) and `Verified`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::conditions::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The last finished run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<BackupRunSummary>,
    /// When the last run that backed up every Service finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Timestamp>,
    /// Next scheduled run (absent while suspended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_time: Option<Timestamp>,
    /// The schedule slot of the last run started or skipped: a restarted operator starts a
    /// missed slot once, never one it already served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scheduled_time: Option<Timestamp>,
    /// The last scheduled re-verification of every retained backup (`verification.schedule`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verification: Option<VerificationRun>,
    /// The last export of the cluster's configuration (`spec.clusterConfig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_config: Option<ClusterConfigStatus>,
    /// The last `autopilot.homelab.dev/run-now` annotation value served: a restart never
    /// repeats an on-demand run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub last_run_request: Option<String>,
    /// The run in progress, recorded before each step so a restarted operator resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_run: Option<BackupRun>,
    /// Latest backup of each selected Service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub services: Vec<ServiceBackupStatus>,
    /// Number of backups retained for this policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_count: Option<i32>,
    /// Sum of the sizes of all retained backups as written (before deduplication).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical_bytes: Option<i64>,
    /// Space the retained backups take on the destination (after deduplication, if any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<i64>,
    /// `storedBytes` for humans, e.g. `12.4 GiB` (for `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_size: Option<String>,
}

/// A scheduled re-verification of the retained backups.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerificationRun {
    /// The slot of `verification.schedule` it served.
    pub scheduled_time: Timestamp,
    /// When it finished.
    pub completion_time: Timestamp,
    /// Backups checked.
    pub checked: i32,
    /// Backups that did not read back.
    pub failed: i32,
    /// Which ones and why (bounded), or what kept the check from running.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// The last export of the cluster's configuration.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfigStatus {
    /// When the last export was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_time: Option<Timestamp>,
    /// Its id, `chunkstore/<snapshot id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volid: Option<String>,
    /// What went wrong with the last attempt, if it failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Summary of a finished run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRunSummary {
    /// Run id, e.g. `20240601-023000`.
    pub run_id: String,
    /// When the run started.
    pub start_time: Timestamp,
    /// When the run finished.
    pub completion_time: Timestamp,
    /// `Succeeded`, `PartiallySucceeded` or `Failed`.
    pub result: BackupResult,
    /// Bytes read from the guests in this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical_bytes: Option<i64>,
    /// New bytes stored by this run (after deduplication).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<i64>,
    /// How long the run took, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i64>,
    /// Services backed up / selected, e.g. `3/4`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// The run in progress, with the intent recorded before each action.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRun {
    /// Run id, e.g. `20240601-023000` (deterministic from the scheduled time).
    pub run_id: String,
    /// The scheduled time this run serves.
    pub scheduled_time: Timestamp,
    /// When the run started.
    pub start_time: Timestamp,
    /// The `run-now` annotation value this run serves (absent for a scheduled run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub request: Option<String>,
    /// One entry per guest to back up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub items: Vec<BackupRunItem>,
}

/// One guest's backup within a run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRunItem {
    /// The Service, its guest and the node the backup task runs on.
    #[serde(flatten)]
    pub guest: GuestTarget,
    /// Where this item is.
    pub state: BackupItemState,
    /// UPID of the running PVE task (vzdump or verify), recorded right after it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upid: Option<crate::crd::common::TaskHandle>,
    /// Volume ID of the new backup, e.g. `pbs-homelab:backup/vm/200/2024-06-01T02:30:00Z`; a
    /// chunk-store backup reads `chunkstore/<snapshot id>` (PVE volids always contain `:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volid: Option<String>,
    /// Chunk store only: the staged vzdump archive being ingested (deleted after ingest unless
    /// `keepStagedArchive`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_volid: Option<String>,
    /// When this item's backup started (vzdump requested).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Timestamp>,
    /// When it finished (successfully or not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Timestamp>,
    /// Size of the backup as written, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// New bytes stored (chunk store: after deduplication).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<i64>,
    /// Whether the new backup passed verification (absent: not verified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
    /// Attempts so far that found the guest locked (backoff 5 s doubling to 5 min).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
    /// When a locked guest is tried again (kept in status, so the backoff survives restarts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<Timestamp>,
    /// Why it failed, as a stable PascalCase reason (`GuestLocked`, `GuestNotFound`,
    /// `TaskFailed`, `VerifyFailed`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What went wrong, when `Failed`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// The latest backup of one Service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceBackupStatus {
    /// Name of the Service.
    pub name: String,
    /// VMID of the guest.
    pub vmid: i32,
    /// Outcome of the latest attempt.
    pub result: BackupResult,
    /// When the latest attempt finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_time: Option<Timestamp>,
    /// When the latest successful backup was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_time: Option<Timestamp>,
    /// Volume ID of the latest successful backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volid: Option<String>,
    /// Size of that backup as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// Whether that backup passed verification (absent: not verified yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
    /// How long the latest attempt took, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i64>,
    /// New bytes the latest successful backup stored (chunk store: after deduplication;
    /// absent for PBS, which cannot attribute shared chunks to one backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<i64>,
    /// Why the latest attempt failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl BackupRunItem {
    /// An item waiting for its turn.
    pub fn pending(guest: GuestTarget) -> Self {
        Self {
            guest,
            state: BackupItemState::Pending,
            upid: None,
            volid: None,
            staged_volid: None,
            start_time: None,
            completion_time: None,
            size_bytes: None,
            stored_bytes: None,
            verified: None,
            attempts: None,
            next_attempt_time: None,
            reason: None,
            message: String::new(),
        }
    }

    /// Whether the item is finished (succeeded or failed).
    pub fn is_done(&self) -> bool {
        matches!(self.state, BackupItemState::Succeeded | BackupItemState::Failed)
    }
}

impl Validate for BackupPolicySpec {
    fn validate(&self) -> Result<(), InvalidSpec> {
        let mut errors = Errors::new();
        validate_schedule("spec.", &self.schedule, &self.time_zone, &mut errors);
        let d = &self.destination;
        let set = [d.pbs.is_some(), d.storage.is_some(), d.chunk_store.is_some()];
        if set.iter().filter(|s| **s).count() != 1 {
            errors.add(
                "spec.destination",
                "set exactly one of pbs, storage or chunkStore",
            );
        }
        if self.cluster_config && d.chunk_store.is_none() {
            errors.add(
                "spec.clusterConfig",
                "clusterConfig needs destination.chunkStore: the export is stored in the chunk store",
            );
        }
        if let Some(retention) = &self.retention {
            retention.validate_into("spec.retention", &mut errors);
        }
        if let Some(schedule) = self.verification.as_ref().and_then(|v| v.schedule.as_deref()) {
            errors.check("spec.verification.schedule", parse_cron(schedule).map(|_| ()));
        }
        if self.services.names.is_empty() && self.services.match_labels.is_empty() {
            errors.add(
                "spec.services",
                "select at least one Service: list names or set matchLabels",
            );
        }
        errors.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::common::GuestType;

    const NIGHTLY: &str = "
clusterRef: {name: homelab}
services: {names: [nextcloud]}
schedule: '30 2 * * *'
destination: {pbs: {storage: pbs-homelab}}
retention: {keepDaily: 7, keepWeekly: 4}
";

    #[test]
    fn backup_policy_defaults_and_round_trip() {
        let s: BackupPolicySpec = serde_yaml::from_str(NIGHTLY).unwrap();
        assert_eq!(s.time_zone, "UTC");
        assert_eq!(s.mode, BackupMode::Snapshot);
        assert_eq!(s.concurrency, 1);
        assert_eq!(s.deletion_policy, DeletionPolicy::Retain);
        assert!(s.verify_after_backup());
        assert!(s.validate().is_ok());
        let bp = BackupPolicy::new("nextcloud", s);
        let back: BackupPolicy = serde_json::from_value(serde_json::to_value(&bp).unwrap()).unwrap();
        assert_eq!(back, bp);
    }

    #[test]
    fn backup_policy_validate_reports_each_field() {
        let mut s: BackupPolicySpec = serde_yaml::from_str(NIGHTLY).unwrap();
        s.schedule = "30 25 * * *".into();
        s.destination.storage = Some(StorageDestination {
            storage: "nfs".into(),
            compression: None,
        });
        s.retention = Some(Retention::default());
        s.verification = Some(Verification {
            after_backup: false,
            schedule: Some("sometimes".into()),
        });
        assert!(!s.verify_after_backup());
        let err = s.validate().unwrap_err();
        let paths: Vec<_> = err.errors().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.schedule",
                "spec.destination",
                "spec.retention",
                "spec.verification.schedule"
            ]
        );
    }

    #[test]
    fn backup_policy_status_round_trips_with_current_run() {
        let t = Timestamp::from_second(1_717_209_000).unwrap();
        let status = BackupPolicyStatus {
            current_run: Some(BackupRun {
                run_id: "20240601-023000".into(),
                scheduled_time: t,
                start_time: t,
                items: vec![BackupRunItem {
                    guest: GuestTarget::new("nextcloud", 200, GuestType::Vm, Some("pve1".into())),
                    state: BackupItemState::Running,
                    upid: Some("UPID:pve1:0001:0002:66A1:vzdump:200:root@pam:".into()),
                    ..BackupRunItem::pending(GuestTarget::new("nextcloud", 200, GuestType::Vm, None))
                }],
                request: None,
            }),
            stored_bytes: Some(13_314_398_618),
            stored_size: Some("12.4 GiB".into()),
            ..Default::default()
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["currentRun"]["items"][0]["state"], "Running");
        assert_eq!(
            serde_json::from_value::<BackupPolicyStatus>(json).unwrap(),
            status
        );
    }
}
