//! The RestoreTest kind's condition and Event reasons and actions (stable API, PascalCase:
//! alerts and `kubectl describe` readers match on them).

/// Ready: waiting for the next `schedule` slot.
pub const SCHEDULED: &str = "Scheduled";
/// Ready: no `schedule`; the spec's generation has been tested, the next change runs again.
pub const TESTED: &str = "Tested";
/// Ready: `spec.suspend` is set.
pub const SUSPENDED: &str = "Suspended";
/// Ready: a run is in progress.
pub const RUNNING: &str = "Running";
/// Ready=False: `source.services` matches no Service of the cluster.
pub const NO_SERVICES: &str = "NoServicesSelected";

/// A run started (Event).
pub const STARTED: &str = "RestoreTestStarted";
/// PVE accepted a restore (Event).
pub const RESTORING: &str = "Restoring";
/// A restored guest was started in isolation (Event).
pub const BOOTING: &str = "Booting";
/// Every restore of a run passed within the target (Succeeded condition and Event).
pub const PASSED: &str = "RestoreTestPassed";
/// A run failed (Succeeded condition and Event); each restore names its own reason.
pub const FAILED: &str = "RestoreTestFailed";
/// Everything passed, slower than `spec.rto.targetSeconds` (Succeeded condition and Event).
pub const RTO_EXCEEDED: &str = "RTOExceeded";
/// A restored guest was removed (Event).
pub const CLEANED_UP: &str = "CleanedUp";
/// A restored guest could not be removed yet (Event; retried).
pub const CLEANUP_FAILED: &str = "CleanupFailed";
/// A failed copy was kept, stopped, for a look (`cleanup.onFailure: Keep`) (Event).
pub const KEPT: &str = "FailedCopyKept";
/// The scheduled slot was missed (Event).
pub const SCHEDULE_MISSED: &str = "ScheduleMissed";

/// RTOMet: the last run was as fast as the target.
pub const WITHIN_TARGET: &str = "WithinTarget";
/// RTOMet=False: the last run was slower than the target.
pub const TARGET_EXCEEDED: &str = "TargetExceeded";
/// RTOMet=Unknown: the last run failed before the RTO could be measured.
pub const NOT_MEASURED: &str = "NotMeasured";
/// Succeeded=Unknown: no run has finished yet.
pub const NO_RUN_YET: &str = "NoRunYet";

/// Restore reason: no backup of the source passed verification.
pub const NO_VERIFIED_BACKUP: &str = "NoVerifiedBackup";
/// Restore reason: no backup is younger than `selection.maxAgeSeconds`.
pub const NO_RECENT_BACKUP: &str = "NoRecentBackup";
/// Restore reason: the source has no backup at all (or `selection.volid` does not exist).
pub const NO_BACKUP: &str = "NoBackup";
/// Restore reason: the Service of `source.serviceRef` does not exist or is not on this cluster.
pub const SERVICE_NOT_FOUND: &str = "ServiceNotFound";
/// Restore reason: the target node is unknown (a gone source guest needs `target.node`).
pub const NO_TARGET_NODE: &str = "NoTargetNode";
/// Restore reason: every VMID of `target.vmidRange` is taken.
pub const NO_FREE_VMID: &str = "NoFreeVmid";
/// Restore reason: the target storage has less room than the backed-up disks need.
pub const INSUFFICIENT_SPACE: &str = "InsufficientSpace";
/// Restore reason: the isolation network cannot be proven isolated (uplink, zone type, absent).
pub const ISOLATION_UNVERIFIED: &str = "IsolationUnverified";
/// Restore reason: a NIC of the backup cannot be moved onto the isolation network.
pub const NIC_NOT_OVERRIDABLE: &str = "NicNotOverridable";
/// Restore reason: a passthrough device (`hostpciN`, `usbN`, `devN`) could not be removed.
pub const PASSTHROUGH_NOT_REMOVABLE: &str = "PassthroughNotRemovable";
/// Restore reason: `liveRestore` with a backup that is not on a Proxmox Backup Server.
pub const LIVE_RESTORE_NEEDS_PBS: &str = "LiveRestoreNeedsPbs";
/// Restore reason: PVE refused the restore or its task failed.
pub const RESTORE_FAILED: &str = "RestoreFailed";
/// Restore reason: the restored guest did not start.
pub const START_FAILED: &str = "StartFailed";
/// Restore reason: the guest did not become ready within `bootTimeoutSeconds`.
pub const BOOT_TIMEOUT: &str = "BootTimeout";
/// Restore reason: a check did not pass within `bootTimeoutSeconds`.
pub const CHECK_FAILED: &str = "CheckFailed";
/// Restore reason: the restore test was deleted or its guest vanished mid-test.
pub const ABORTED: &str = "Aborted";

/// Event action: scheduling a run.
pub const ACTION_SCHEDULE: &str = "Schedule";
/// Event action: restoring a backup.
pub const ACTION_RESTORE: &str = "Restore";
/// Event action: starting or checking a restored guest.
pub const ACTION_CHECK: &str = "Check";
/// Event action: removing a restored guest.
pub const ACTION_CLEANUP: &str = "Cleanup";
