//! Prometheus metrics: a non-global registry built in [`Metrics::new`] and served on `/metrics`.
//!
//! Every series is named `homelab_autopilot_<area>_<name>_<unit>`. Labels carry object names and
//! fixed categories only: never UIDs, UPIDs, chunk ids or messages. Other parts register their own
//! series on [`Metrics::registry`] (the Proxmox client adds its request counters and latencies).

use std::time::Instant;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// The prefix of every series of this process.
pub const NAMESPACE: &str = "homelab_autopilot";

/// Buckets of the reconcile duration histogram, in seconds. A reconcile does one bounded step and
/// never waits for a long Proxmox task, so almost all of them should land below one second.
const RECONCILE_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// All metrics of the process. Cheap to clone: every series is reference counted.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// The registry every series is registered in (also by other parts, e.g. the Proxmox client).
    pub registry: Registry,
    /// Reconcile counters and durations, per controller.
    pub reconcile: ReconcileMetrics,
    /// `homelab_autopilot_leader`: 1 while this replica holds the leader lease, else 0.
    pub leader: IntGauge,
    /// Backup results (filled by the BackupPolicy controller).
    pub backup: BackupMetrics,
    /// Restore test results (filled by the RestoreTest controller).
    pub restore_test: RestoreTestMetrics,
    /// Proxmox connection series.
    pub proxmox: ProxmoxMetrics,
    /// Update results (filled by the UpdatePolicy controller).
    pub update: UpdateMetrics,
    /// Chunk store size (filled by the chunk store users).
    pub chunkstore: ChunkStoreMetrics,
}

/// Reconcile series, labelled by controller name (`proxmoxcluster`, `service`, ...).
#[derive(Clone, Debug)]
pub struct ReconcileMetrics {
    /// `homelab_autopilot_reconcile_total{controller,result}`; `result` is `ok` or `error`.
    pub total: IntCounterVec,
    /// `homelab_autopilot_reconcile_errors_total{controller,category}`; `category` is the error's
    /// fixed PascalCase category (the same string as the Warning Event's reason).
    pub errors: IntCounterVec,
    /// `homelab_autopilot_reconcile_duration_seconds{controller}`.
    pub duration: HistogramVec,
}

/// Backup series.
#[derive(Clone, Debug)]
pub struct BackupMetrics {
    /// `homelab_autopilot_backup_last_success_timestamp_seconds{namespace,policy,service}`:
    /// Unix time of the last successful backup of a Service under a BackupPolicy.
    pub last_success_timestamp_seconds: GaugeVec,
    /// `homelab_autopilot_backup_bytes{namespace,policy,kind}`: size of the last backup of a
    /// policy; `kind` is `logical` (data read) or `stored` (new bytes written after dedup).
    pub bytes: IntGaugeVec,
    /// `homelab_autopilot_backup_duration_seconds{namespace,policy}`: how long one guest's
    /// backup took (vzdump, ingest and verification).
    pub duration_seconds: HistogramVec,
    /// `homelab_autopilot_backup_failures_total{namespace,policy,category}`: failed guest
    /// backups by reason (`GuestLocked`, `TaskFailed`, `VerifyFailed`...).
    pub failures_total: IntCounterVec,
    /// `homelab_autopilot_backup_interval_seconds{namespace,policy}`: the time between two slots
    /// of a policy's schedule (the `backupTooOld` alert allows this plus a margin).
    pub interval_seconds: GaugeVec,
}

/// Restore test series.
#[derive(Clone, Debug)]
pub struct RestoreTestMetrics {
    /// `homelab_autopilot_restore_test_rto_seconds{namespace,restoretest,service}`: measured
    /// recovery time of the last run.
    pub rto_seconds: GaugeVec,
    /// `homelab_autopilot_restore_test_rto_target_seconds{namespace,restoretest,service}`: the
    /// RTO target the last run was measured against.
    pub rto_target_seconds: GaugeVec,
    /// `homelab_autopilot_restore_test_success{namespace,restoretest,service}`: 1 if the last run
    /// passed, 0 if it failed.
    pub success: IntGaugeVec,
    /// `homelab_autopilot_restore_test_last_success_timestamp_seconds{namespace,restoretest,service}`:
    /// Unix time of the last run that restored the Service and passed (`Passed` or `RTOExceeded`).
    /// A failed run leaves it alone, so the `restoreTestStale` alert also catches a test that keeps
    /// failing or stopped running.
    pub last_success_timestamp_seconds: GaugeVec,
}

/// Proxmox connection series.
#[derive(Clone, Debug)]
pub struct ProxmoxMetrics {
    /// `homelab_autopilot_pve_cluster_connected{namespace,cluster}`: 1 while the operator reaches
    /// the ProxmoxCluster's API, else 0.
    pub cluster_connected: IntGaugeVec,
}

/// Update series.
#[derive(Clone, Debug)]
pub struct UpdateMetrics {
    /// `homelab_autopilot_update_rollbacks_total{namespace,policy}`: rollbacks performed after a
    /// failed post-update validation.
    pub rollbacks_total: IntCounterVec,
}

/// Chunk store series.
#[derive(Clone, Debug)]
pub struct ChunkStoreMetrics {
    /// `homelab_autopilot_chunkstore_bytes{kind}`: `logical` (sum of all snapshot sizes) or
    /// `stored` (bytes of chunk files on disk).
    pub bytes: IntGaugeVec,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(NAMESPACE)
}

impl Metrics {
    /// Builds every series and registers it in a fresh registry.
    pub fn new() -> Self {
        // The names and label names below are fixed, valid and distinct, and the registry is new,
        // so neither construction nor registration can fail (the unit tests build this exact set).
        match Self::try_new() {
            Ok(metrics) => metrics,
            Err(e) => unreachable!("fixed metric definitions are valid: {e}"),
        }
    }

    fn try_new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let reconcile = ReconcileMetrics {
            total: IntCounterVec::new(
                opts(
                    "reconcile_total",
                    "Reconciles run, by controller and result (ok or error).",
                ),
                &["controller", "result"],
            )?,
            errors: IntCounterVec::new(
                opts(
                    "reconcile_errors_total",
                    "Failed reconciles, by controller and error category.",
                ),
                &["controller", "category"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "reconcile_duration_seconds",
                    "Duration of one reconcile, by controller.",
                )
                .namespace(NAMESPACE)
                .buckets(RECONCILE_BUCKETS.to_vec()),
                &["controller"],
            )?,
        };
        let leader = IntGauge::with_opts(opts(
            "leader",
            "1 while this replica holds the leader election lease and runs the controllers, else 0.",
        ))?;
        let backup = BackupMetrics {
            last_success_timestamp_seconds: GaugeVec::new(
                opts(
                    "backup_last_success_timestamp_seconds",
                    "Unix time of the last successful backup of a Service under a BackupPolicy.",
                ),
                &["namespace", "policy", "service"],
            )?,
            bytes: IntGaugeVec::new(
                opts(
                    "backup_bytes",
                    "Size of the last backup of a BackupPolicy: logical (data read) or stored (new bytes written).",
                ),
                &["namespace", "policy", "kind"],
            )?,
            duration_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "backup_duration_seconds",
                    "How long one guest's backup took under a BackupPolicy (vzdump, ingest, verification).",
                )
                .namespace(NAMESPACE)
                .buckets(vec![
                    10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0,
                ]),
                &["namespace", "policy"],
            )?,
            failures_total: IntCounterVec::new(
                opts(
                    "backup_failures_total",
                    "Failed guest backups under a BackupPolicy, by reason (category).",
                ),
                &["namespace", "policy", "category"],
            )?,
            interval_seconds: GaugeVec::new(
                opts(
                    "backup_interval_seconds",
                    "Seconds between two scheduled runs of a BackupPolicy.",
                ),
                &["namespace", "policy"],
            )?,
        };
        let restore_test_labels = ["namespace", "restoretest", "service"];
        let restore_test = RestoreTestMetrics {
            rto_seconds: GaugeVec::new(
                opts(
                    "restore_test_rto_seconds",
                    "Measured recovery time of the last run of a RestoreTest.",
                ),
                &restore_test_labels,
            )?,
            rto_target_seconds: GaugeVec::new(
                opts(
                    "restore_test_rto_target_seconds",
                    "RTO target of a RestoreTest, for comparison with the measured RTO.",
                ),
                &restore_test_labels,
            )?,
            success: IntGaugeVec::new(
                opts(
                    "restore_test_success",
                    "1 if the last run of a RestoreTest passed, 0 if it failed.",
                ),
                &restore_test_labels,
            )?,
            last_success_timestamp_seconds: GaugeVec::new(
                opts(
                    "restore_test_last_success_timestamp_seconds",
                    "Unix time of the last run of a RestoreTest that restored this Service and passed (Passed or RTOExceeded).",
                ),
                &restore_test_labels,
            )?,
        };
        let proxmox = ProxmoxMetrics {
            cluster_connected: IntGaugeVec::new(
                opts(
                    "pve_cluster_connected",
                    "1 while the operator reaches a ProxmoxCluster's API, else 0.",
                ),
                &["namespace", "cluster"],
            )?,
        };
        let update = UpdateMetrics {
            rollbacks_total: IntCounterVec::new(
                opts(
                    "update_rollbacks_total",
                    "Rollbacks performed after a failed post-update validation.",
                ),
                &["namespace", "policy"],
            )?,
        };
        let chunkstore = ChunkStoreMetrics {
            bytes: IntGaugeVec::new(
                opts(
                    "chunkstore_bytes",
                    "Chunk store size: logical (all snapshots) or stored (chunk files on disk).",
                ),
                &["kind"],
            )?,
        };
        registry.register(Box::new(reconcile.total.clone()))?;
        registry.register(Box::new(reconcile.errors.clone()))?;
        registry.register(Box::new(reconcile.duration.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(backup.last_success_timestamp_seconds.clone()))?;
        registry.register(Box::new(backup.bytes.clone()))?;
        registry.register(Box::new(backup.duration_seconds.clone()))?;
        registry.register(Box::new(backup.failures_total.clone()))?;
        registry.register(Box::new(backup.interval_seconds.clone()))?;
        registry.register(Box::new(restore_test.rto_seconds.clone()))?;
        registry.register(Box::new(restore_test.rto_target_seconds.clone()))?;
        registry.register(Box::new(restore_test.success.clone()))?;
        registry.register(Box::new(restore_test.last_success_timestamp_seconds.clone()))?;
        registry.register(Box::new(proxmox.cluster_connected.clone()))?;
        registry.register(Box::new(update.rollbacks_total.clone()))?;
        registry.register(Box::new(chunkstore.bytes.clone()))?;
        Ok(Self {
            registry,
            reconcile,
            leader,
            backup,
            restore_test,
            proxmox,
            update,
            chunkstore,
        })
    }

    /// Renders every registered series in the Prometheus text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        // The text encoder writes only UTF-8 (names, labels and numbers are all UTF-8).
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ReconcileMetrics {
    /// Creates the zero-valued series of a controller, so that `rate()` and alerts see the
    /// controller from its start instead of from its first error.
    pub fn init(&self, controller: &str) {
        for result in ["ok", "error"] {
            self.total.with_label_values(&[controller, result]);
        }
        self.duration.with_label_values(&[controller]);
    }

    /// Starts timing one reconcile; the duration is observed when the returned guard drops, so an
    /// early return or a cancelled reconcile is measured too.
    pub fn measure(&self, controller: &str) -> ReconcileTimer {
        ReconcileTimer {
            start: Instant::now(),
            histogram: self.duration.with_label_values(&[controller]),
        }
    }

    /// Counts one finished reconcile.
    pub fn count(&self, controller: &str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.total.with_label_values(&[controller, result]).inc();
    }

    /// Counts one failed reconcile under its error category.
    pub fn error(&self, controller: &str, category: &str) {
        self.errors.with_label_values(&[controller, category]).inc();
    }
}

/// Observes the time since its creation into the reconcile duration histogram when dropped.
#[derive(Debug)]
pub struct ReconcileTimer {
    start: Instant,
    histogram: prometheus::Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch_every_series(m: &Metrics) {
        m.reconcile.init("service");
        m.reconcile.count("service", true);
        m.reconcile.error("service", "ClusterNotFound");
        drop(m.reconcile.measure("service"));
        m.leader.set(1);
        m.backup
            .last_success_timestamp_seconds
            .with_label_values(&["lab", "nightly", "nextcloud"])
            .set(1.7e9);
        m.backup
            .bytes
            .with_label_values(&["lab", "nightly", "stored"])
            .set(42);
        m.backup
            .duration_seconds
            .with_label_values(&["lab", "nightly"])
            .observe(12.0);
        m.backup
            .failures_total
            .with_label_values(&["lab", "nightly", "GuestLocked"])
            .inc();
        m.backup
            .interval_seconds
            .with_label_values(&["lab", "nightly"])
            .set(86400.0);
        m.restore_test
            .rto_seconds
            .with_label_values(&["lab", "nextcloud-weekly", "nextcloud"])
            .set(93.5);
        m.restore_test
            .rto_target_seconds
            .with_label_values(&["lab", "nextcloud-weekly", "nextcloud"])
            .set(300.0);
        m.restore_test
            .success
            .with_label_values(&["lab", "nextcloud-weekly", "nextcloud"])
            .set(1);
        m.restore_test
            .last_success_timestamp_seconds
            .with_label_values(&["lab", "nextcloud-weekly", "nextcloud"])
            .set(1.7e9);
        m.proxmox
            .cluster_connected
            .with_label_values(&["lab", "homelab"])
            .set(1);
        m.update
            .rollbacks_total
            .with_label_values(&["lab", "weekly"])
            .inc();
        m.chunkstore.bytes.with_label_values(&["logical"]).set(1024);
    }

    #[test]
    fn metrics_render_contains_every_series_with_prefix() {
        let m = Metrics::new();
        touch_every_series(&m);
        let text = m.render().unwrap();
        for series in [
            "homelab_autopilot_reconcile_total{controller=\"service\",result=\"ok\"} 1",
            "homelab_autopilot_reconcile_total{controller=\"service\",result=\"error\"} 0",
            "homelab_autopilot_reconcile_errors_total{category=\"ClusterNotFound\",controller=\"service\"} 1",
            "homelab_autopilot_reconcile_duration_seconds_count{controller=\"service\"} 1",
            "homelab_autopilot_reconcile_duration_seconds_bucket{controller=\"service\",le=\"0.005\"}",
            "homelab_autopilot_leader 1",
            "homelab_autopilot_backup_last_success_timestamp_seconds{namespace=\"lab\",policy=\"nightly\",service=\"nextcloud\"} 1700000000",
            "homelab_autopilot_backup_bytes{kind=\"stored\",namespace=\"lab\",policy=\"nightly\"} 42",
            "homelab_autopilot_backup_failures_total{category=\"GuestLocked\",namespace=\"lab\",policy=\"nightly\"} 1",
            "homelab_autopilot_backup_interval_seconds{namespace=\"lab\",policy=\"nightly\"} 86400",
            "homelab_autopilot_restore_test_rto_seconds{namespace=\"lab\",restoretest=\"nextcloud-weekly\",service=\"nextcloud\"} 93.5",
            "homelab_autopilot_restore_test_rto_target_seconds{namespace=\"lab\",restoretest=\"nextcloud-weekly\",service=\"nextcloud\"} 300",
            "homelab_autopilot_restore_test_success{namespace=\"lab\",restoretest=\"nextcloud-weekly\",service=\"nextcloud\"} 1",
            "homelab_autopilot_restore_test_last_success_timestamp_seconds{namespace=\"lab\",restoretest=\"nextcloud-weekly\",service=\"nextcloud\"} 1700000000",
            "# HELP homelab_autopilot_restore_test_last_success_timestamp_seconds Unix time of the last run of a RestoreTest that restored this Service and passed (Passed or RTOExceeded).",
            "# TYPE homelab_autopilot_restore_test_last_success_timestamp_seconds gauge",
            "homelab_autopilot_pve_cluster_connected{cluster=\"homelab\",namespace=\"lab\"} 1",
            "homelab_autopilot_update_rollbacks_total{namespace=\"lab\",policy=\"weekly\"} 1",
            "homelab_autopilot_chunkstore_bytes{kind=\"logical\"} 1024",
            "# TYPE homelab_autopilot_reconcile_duration_seconds histogram",
            "# TYPE homelab_autopilot_reconcile_total counter",
            "# TYPE homelab_autopilot_leader gauge",
        ] {
            assert!(text.contains(series), "missing {series} in\n{text}");
        }
    }

    #[test]
    fn metrics_registry_accepts_foreign_series() {
        let m = Metrics::new();
        let pve = IntCounterVec::new(opts("pve_requests_total", "test"), &["method"]).unwrap();
        m.registry.register(Box::new(pve.clone())).unwrap();
        pve.with_label_values(&["GET"]).inc();
        assert!(
            m.render()
                .unwrap()
                .contains("homelab_autopilot_pve_requests_total{method=\"GET\"} 1")
        );
    }

    #[test]
    fn reconcile_timer_observes_on_drop() {
        let m = Metrics::new();
        {
            let _t = m.reconcile.measure("x");
        }
        assert_eq!(
            m.reconcile.duration.with_label_values(&["x"]).get_sample_count(),
            1
        );
    }
}
