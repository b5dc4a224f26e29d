//! The BackupPolicy kind's condition and Event reasons and actions (stable API, PascalCase).

/// Ready: the schedule is active and the cluster reachable.
pub const SCHEDULED: &str = "Scheduled";
/// Ready: `spec.suspend` is set.
pub const SUSPENDED: &str = "Suspended";
/// Ready: a run is in progress.
pub const RUNNING: &str = "Running";
/// Ready=False: the selector matches no Service of the policy's cluster.
pub const NO_SERVICES: &str = "NoServicesSelected";

/// A run started (Event).
pub const BACKUP_STARTED: &str = "BackupStarted";
/// Every backup of a run succeeded (condition and Event).
pub const BACKUP_SUCCEEDED: &str = "BackupSucceeded";
/// Some backups of a run failed (condition).
pub const PARTIALLY_SUCCEEDED: &str = "PartiallySucceeded";
/// A backup or a whole run failed (condition and Event).
pub const BACKUP_FAILED: &str = "BackupFailed";
/// Verification of a new backup failed (condition and Event).
pub const VERIFY_FAILED: &str = "VerifyFailed";
/// Verified: every backup of the last run read back.
pub const VERIFIED: &str = "BackupsVerified";
/// Verified: verification is switched off or pending on the destination.
pub const NOT_VERIFIED: &str = "NotVerified";
/// Retention deleted old backups (Event).
pub const BACKUPS_PRUNED: &str = "BackupsPruned";
/// Retention could not delete an old backup (Event).
pub const PRUNE_FAILED: &str = "PruneFailed";
/// The scheduled slot was later than `startingDeadlineSeconds` (Event).
pub const SCHEDULE_MISSED: &str = crate::controllers::kit::schedule::REASON_SCHEDULE_MISSED;

/// Item: the guest stayed locked by another operation until the next slot.
pub const GUEST_LOCKED: &str = "GuestLocked";
/// Item: the guest does not exist (any more) in the cluster.
pub const GUEST_NOT_FOUND: &str = "GuestNotFound";
/// Item: the vzdump task failed.
pub const TASK_FAILED: &str = "TaskFailed";
/// Item: vzdump reported success but no backup carrying our marker was found.
pub const BACKUP_MISSING: &str = "BackupNotFound";
/// Item: reading the staged archive into the chunk store failed.
pub const INGEST_FAILED: &str = "IngestFailed";
/// Item: the chunk store cannot be opened or created.
pub const STORE_UNAVAILABLE: &str = "ChunkStoreUnavailable";

/// The cluster configuration export failed (Event).
pub const CLUSTER_CONFIG_FAILED: &str = "ClusterConfigExportFailed";
/// A notification could not be sent (Event).
pub const NOTIFICATION_FAILED: &str = "NotificationFailed";

/// Event action: send a notification.
pub const ACTION_NOTIFY: &str = "Notify";
/// Event action: start a backup run.
pub const ACTION_BACKUP: &str = "Backup";
/// Event action: verify a backup.
pub const ACTION_VERIFY: &str = "Verify";
/// Event action: prune old backups.
pub const ACTION_PRUNE: &str = "Prune";
/// Event action: schedule a run.
pub const ACTION_SCHEDULE: &str = "Schedule";
