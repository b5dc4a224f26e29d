//! The RestoreTest controller through the generic driver (the demo's in-memory API server as its
//! source, `kubectl apply`-shaped YAML in), against the simulator over real HTTPS on loopback,
//! with backups made by the BackupPolicy controller first: a pass within and over the RTO target,
//! failing checks, probes outside `probeCidr`, isolation, passthrough devices, and the faults
//! that must not leak a guest or lose data (failed restore task, NIC that cannot be moved, full
//! storage, restarts mid-restore and mid-boot, deletion mid-test, API down during cleanup).

use std::time::Duration;

use homelab_autopilot::controllers::kit::schedule::RUN_NOW_ANNOTATION;
use homelab_autopilot::controllers::restore_test::RestoreDeps;
use homelab_autopilot::controllers::restore_test::controller::RestoreTestKind;
use homelab_autopilot::crd::RestoreTest;
use homelab_autopilot::crd::conditions::{ConditionStatus, find_condition};
use homelab_autopilot::crd::restore_test::{
    RestorePhase, RestoreResult, RestoreResultDetail, RestoreTestStatus,
};
use homelab_autopilot::pvesim::Fault;

use crate::controllers_backup::BackupLab;

/// A lab with fresh backups of nextcloud (VM 200) and gitea (CT 201) on `nfs-backup`.
pub(crate) struct RestoreLab {
    pub(crate) lab: BackupLab,
    requests: u32,
}

pub(crate) const NAME: &str = "drill";

impl RestoreLab {
    pub(crate) async fn start() -> Self {
        Self::with_backups(true).await
    }

    pub(crate) async fn with_backups(backup: bool) -> Self {
        let mut lab = BackupLab::start().await;
        lab.apply_policy("  destination: {storage: {storage: nfs-backup}}\n  mode: Stop\n");
        if backup {
            let status = lab.run_now().await;
            assert_eq!(
                status
                    .services
                    .iter()
                    .filter(|s| s.verified == Some(true))
                    .count(),
                2,
                "{status:#?}"
            );
        }
        Self { lab, requests: 0 }
    }

    /// A lab (with the PBS API if `pbs`) whose BackupPolicy `nightly` has `policy` (YAML mapping
    /// body, indented 2, e.g. its destination); no backup is made yet (`lab.lab.run_now()`).
    pub(crate) async fn with_policy(pbs: bool, policy: &str) -> Self {
        let mut lab = BackupLab::start_with(pbs).await;
        lab.apply_policy(policy);
        Self { lab, requests: 0 }
    }

    /// `kubectl apply` of RestoreTest `drill` with `spec` (YAML mapping body, indented 2).
    pub(crate) fn apply(&mut self, spec: &str) {
        let yaml = format!(
            "apiVersion: autopilot.homelab.dev/v1alpha1\nkind: RestoreTest\nmetadata: {{name: {NAME}}}\n\
             spec:\n  clusterRef: {{name: homelab}}\n  target: {{node: pve3, storage: local-lvm, vmidRange: {{start: 9900, end: 9909}}}}\n{spec}"
        );
        let now = self.lab.now;
        self.lab
            .world
            .apply_at(&[("restore-test.yaml", &yaml)], now)
            .unwrap();
    }

    pub(crate) fn test(&self) -> RestoreTest {
        self.lab.world.get::<RestoreTest>(NAME).unwrap()
    }

    pub(crate) fn status(&self) -> RestoreTestStatus {
        self.test().status.unwrap_or_default()
    }

    pub(crate) fn current(&self) -> Option<RestoreResultDetail> {
        self.status()
            .current_run
            .and_then(|r| r.restores.into_iter().next())
    }

    pub(crate) async fn pass(&mut self) {
        let now = self.lab.now;
        self.lab.world.reconcile::<RestoreTestKind>(now).await.unwrap();
    }

    pub(crate) async fn request(&mut self) {
        self.requests += 1;
        let value = format!("drill-{}", self.requests);
        self.lab
            .world
            .annotate::<RestoreTest>(NAME, RUN_NOW_ANNOTATION, &value)
            .unwrap();
        self.pass().await;
        assert!(self.status().current_run.is_some(), "{:#?}", self.status());
    }

    /// Passes one simulated second apart until `done` holds.
    pub(crate) async fn until(
        &mut self,
        what: &str,
        done: impl Fn(&RestoreTestStatus) -> bool,
    ) -> RestoreTestStatus {
        for _ in 0..3000 {
            self.pass().await;
            let status = self.status();
            if done(&status) {
                return status;
            }
            self.lab.tick(Duration::from_secs(1)).await;
        }
        panic!("{what} did not happen: {:#?}", self.status());
    }

    pub(crate) async fn until_idle(&mut self) -> RestoreTestStatus {
        self.until("the run's end", |s| s.current_run.is_none()).await
    }

    pub(crate) async fn until_phase(&mut self, phase: RestorePhase) -> RestoreResultDetail {
        self.until(&format!("phase {phase:?}"), |s| {
            s.current_run
                .as_ref()
                .is_some_and(|r| r.restores.iter().any(|x| x.phase == phase))
        })
        .await;
        self.current().unwrap()
    }

    pub(crate) fn guest_config(&self, vmid: u32) -> Option<std::collections::BTreeMap<String, String>> {
        self.lab
            .sim
            .state(|c| c.guests.get(&vmid).map(|g| g.config.clone()))
    }

    pub(crate) fn restore_tasks(&self) -> usize {
        self.lab
            .sim
            .tasks()
            .iter()
            .filter(|t| t.upid.contains(":qmrestore:") || t.upid.contains(":vzrestore:"))
            .count()
    }

    pub(crate) fn guests_in_range(&self) -> Vec<u32> {
        self.lab.sim.state(|c| {
            c.guests
                .keys()
                .copied()
                .filter(|v| (9900..=9909).contains(v))
                .collect()
        })
    }

    pub(crate) fn events(&self) -> Vec<String> {
        self.lab
            .world
            .events
            .iter()
            .filter(|e| e.object == format!("restoretest/{NAME}"))
            .map(|e| e.event.reason.clone())
            .collect()
    }

    /// An operator restart: every per-process state (clients, snapshots, claims) is lost;
    /// status, the simulator and the store stay.
    pub(crate) fn restart(&mut self) {
        let deps = &mut self.lab.world.deps;
        deps.proxmox = homelab_autopilot::controllers::pve::ProxmoxDeps::new(None).with_tuning(
            homelab_autopilot::controllers::pve::Tuning {
                task_poll: Duration::from_millis(20),
                ..Default::default()
            },
        );
        deps.restore = RestoreDeps::new(deps.backup.store.clone());
    }
}

pub(crate) const AGENT_CHECKS: &str = "  network: {mode: Bridge, bridge: vmbr99}\n  healthChecks:\n  - {name: agent, type: GuestAgent}\n  - {name: app, type: Exec, exec: {command: [systemctl, is-active, nextcloud]}}\n";

#[tokio::test]
async fn restore_test_passes_within_target_isolated_and_cleans_up() {
    let mut lab = RestoreLab::start().await;
    lab.apply(&format!(
        "  source: {{serviceRef: {{name: nextcloud}}}}\n  rto: {{targetSeconds: 3600}}\n  overrides: {{memoryMiB: 2048}}\n  cleanup: {{afterSeconds: 30}}\n{AGENT_CHECKS}"
    ));
    lab.pass().await;
    // No schedule: one run per spec generation starts by itself.
    let status = lab.status();
    let run = status.current_run.as_ref().expect("the first generation runs");
    assert_eq!(run.run_id, "g1");
    assert_eq!(run.rto_target_seconds, Some(3600));

    // The backup, node and VMID are recorded (with the run) before anything is restored.
    let pending = lab.current().unwrap();
    assert_eq!(pending.phase, RestorePhase::Pending);
    assert_eq!(pending.restored_vmid, 9900);
    assert_eq!(pending.node, "pve3");
    assert!(
        pending
            .backup_volid
            .as_deref()
            .unwrap()
            .starts_with("nfs-backup:backup/vzdump-qemu-200-")
    );
    assert_eq!(
        lab.restore_tasks(),
        0,
        "nothing restored before the intent is written"
    );

    // While it is checked, the copy is isolated, shrunk, tagged and ours.
    let checking = lab.until_phase(RestorePhase::Checking).await;
    assert!(checking.upid.is_none());
    let config = lab.guest_config(9900).expect("the copy exists");
    for (key, value) in config.iter().filter(|(k, _)| k.starts_with("net")) {
        assert!(value.contains("bridge=vmbr99"), "{key}: {value}");
    }
    assert_eq!(config.get("onboot").map(String::as_str), Some("0"));
    assert_eq!(config.get("protection").map(String::as_str), Some("0"));
    assert_eq!(config.get("memory").map(String::as_str), Some("2048"));
    assert!(config["tags"].contains("autopilot"));
    let uid = lab.test().metadata.uid.unwrap();
    assert!(config["description"].contains(&format!("autopilot restore-test={uid}")));

    let status = lab
        .until("the copy removed", |s| {
            s.last_run.is_some() && s.current_run.is_none()
        })
        .await;
    let last = status.last_run.as_ref().unwrap();
    assert_eq!(last.result, Some(RestoreResult::Passed), "{status:#?}");
    assert_eq!(last.service, "nextcloud");
    let r = &last.restores[0];
    assert!(r.cleaned_up, "{r:#?}");
    let rto = r.rto_seconds.unwrap();
    assert!(rto > 0);
    assert_eq!(last.rto_seconds, Some(rto));
    let parts = r.restore_seconds.unwrap() + r.boot_seconds.unwrap() + r.application_seconds.unwrap();
    assert!((parts - rto).abs() <= 1, "{r:#?}");
    assert!(
        r.checks.iter().all(|c| c.passed) && r.checks.len() == 2,
        "{:?}",
        r.checks
    );
    assert_eq!(lab.guests_in_range(), Vec::<u32>::new());
    assert_eq!(lab.restore_tasks(), 1);
    assert_eq!(
        find_condition(&status.conditions, "Succeeded").unwrap().reason,
        "RestoreTestPassed"
    );
    let met = find_condition(&status.conditions, "RTOMet").unwrap();
    assert_eq!(
        (met.status, met.reason.as_str()),
        (ConditionStatus::True, "WithinTarget")
    );
    assert_eq!(
        find_condition(&status.conditions, "Ready").unwrap().reason,
        "Tested"
    );
    assert_eq!(status.history.len(), 1);
    let events = lab.events();
    for reason in [
        "RestoreTestStarted",
        "Restoring",
        "Booting",
        "RestoreTestPassed",
        "CleanedUp",
    ] {
        assert!(events.iter().any(|e| e == reason), "{reason} in {events:?}");
    }

    // The same generation does not run again; the run-now annotation does.
    lab.lab.tick(Duration::from_secs(120)).await;
    lab.pass().await;
    assert!(lab.status().current_run.is_none());
    lab.request().await;
    let status = lab.until_idle().await;
    assert_eq!(status.last_run_request.as_deref(), Some("drill-1"));
    assert_eq!(status.history.len(), 2);
    assert_eq!(lab.restore_tasks(), 2);
}

#[tokio::test]
async fn slower_than_the_target_is_rto_exceeded() {
    let mut lab = RestoreLab::start().await;
    lab.apply("  source: {serviceRef: {name: gitea}}\n  network: {mode: None}\n  rto: {targetSeconds: 1}\n  cleanup: {afterSeconds: 0}\n");
    let status = lab.until("the run's end", |s| s.last_run.is_some()).await;
    let last = status.last_run.unwrap();
    assert_eq!(last.result, Some(RestoreResult::RtoExceeded), "{last:#?}");
    let met = find_condition(&status.conditions, "RTOMet").unwrap();
    assert_eq!(
        (met.status, met.reason.as_str()),
        (ConditionStatus::False, "TargetExceeded")
    );
    let succeeded = find_condition(&status.conditions, "Succeeded").unwrap();
    assert_eq!(
        (succeeded.status, succeeded.reason.as_str()),
        (ConditionStatus::False, "RTOExceeded")
    );
    // A container: restored with its NICs down, never with unique=1, default check only.
    let r = &last.restores[0];
    assert_eq!(r.checks.len(), 1);
    assert_eq!(r.checks[0].name, "running");
    assert_eq!(lab.guests_in_range(), Vec::<u32>::new());
}

#[tokio::test]
async fn failing_check_fails_the_test_and_keeps_the_copy_stopped_until_the_next_run() {
    let mut lab = RestoreLab::start().await;
    lab.apply(
        "  source: {serviceRef: {name: nextcloud}}\n  network: {mode: Bridge, bridge: vmbr99}\n  bootTimeoutSeconds: 60\n  \
         cleanup: {onFailure: Keep}\n  healthChecks:\n  - {name: app, type: Exec, exec: {command: [nextcloud-occ, status]}}\n",
    );
    let status = lab.until("the run's end", |s| s.last_run.is_some()).await;
    let last = status.last_run.clone().unwrap();
    assert_eq!(last.result, Some(RestoreResult::Failed));
    let r = &last.restores[0];
    assert_eq!(r.reason, "CheckFailed", "{r:#?}");
    assert!(r.checks.iter().any(|c| !c.passed && c.name == "app"));
    assert!(!r.cleaned_up);
    assert!(r.rto_seconds.is_none());
    let met = find_condition(&status.conditions, "RTOMet").unwrap();
    assert_eq!(met.status, ConditionStatus::Unknown);
    // Kept, stopped.
    assert_eq!(lab.guests_in_range(), vec![9900]);
    let power = lab.lab.sim.state(|c| format!("{:?}", c.guests[&9900].power));
    assert!(power.starts_with("Stopped"), "{power}");
    assert!(lab.events().iter().any(|e| e == "FailedCopyKept"));

    // The next run removes it first (and fails the same way).
    lab.request().await;
    lab.until("the kept copy removed", |s| {
        s.history.len() == 1
            && s.current_run
                .as_ref()
                .is_some_and(|r| r.restores[0].restored_vmid != 0)
    })
    .await;
    let status = lab.until_idle().await;
    assert!(status.history.iter().all(|h| h.result == RestoreResult::Failed));
    assert_eq!(lab.restore_tasks(), 2);
}

#[tokio::test]
async fn tcp_checks_reach_only_addresses_inside_probe_cidr() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut lab = RestoreLab::start().await;
    // `localhost` resolves to 127.0.0.1, outside 10.99.0.0/16: refused, never probed.
    lab.apply(&format!(
        "  source: {{serviceRef: {{name: gitea}}}}\n  network: {{mode: Bridge, bridge: vmbr99, probeCidr: 10.99.0.0/16}}\n  \
         bootTimeoutSeconds: 60\n  cleanup: {{afterSeconds: 0}}\n  healthChecks:\n  - {{name: web, type: TCP, tcp: {{host: localhost, port: {port}}}}}\n"
    ));
    let status = lab.until("the run's end", |s| s.last_run.is_some()).await;
    let r = &status.last_run.as_ref().unwrap().restores[0];
    assert_eq!(r.result, Some(RestoreResult::Failed));
    assert!(
        r.checks[0].message.contains("outside network.probeCidr"),
        "{:?}",
        r.checks
    );
    assert_eq!(lab.guests_in_range(), Vec::<u32>::new());

    // Inside probeCidr (the path into the segment), the same listener answers and the test passes.
    lab.apply(&format!(
        "  source: {{serviceRef: {{name: gitea}}}}\n  network: {{mode: Bridge, bridge: vmbr99, probeCidr: 127.0.0.0/8}}\n  \
         bootTimeoutSeconds: 60\n  cleanup: {{afterSeconds: 0}}\n  healthChecks:\n  - {{name: web, type: TCP, tcp: {{host: 127.0.0.1, port: {port}}}}}\n"
    ));
    lab.request().await;
    let status = lab.until_idle().await;
    let r = &status.last_run.as_ref().unwrap().restores[0];
    assert_eq!(r.result, Some(RestoreResult::Passed), "{r:#?}");
    drop(listener);
}

#[tokio::test]
async fn a_failed_restore_task_leaves_nothing_behind() {
    let mut lab = RestoreLab::start().await;
    lab.lab
        .sim
        .inject(Fault::TaskFailure {
            task_type: "qmrestore".into(),
            message: "error writing to the target volume".into(),
            count: 1,
        })
        .unwrap();
    lab.apply("  source: {serviceRef: {name: nextcloud}}\n  network: {mode: None}\n");
    let status = lab.until("the run's end", |s| s.last_run.is_some()).await;
    let r = &status.last_run.as_ref().unwrap().restores[0];
    assert_eq!(r.result, Some(RestoreResult::Failed));
    assert_eq!(r.reason, "RestoreFailed", "{r:#?}");
    assert!(r.message.contains("error writing"), "{r:#?}");
    assert!(
        r.cleaned_up,
        "the empty config qmrestore leaves is ours and removed: {r:#?}"
    );
    assert_eq!(lab.guests_in_range(), Vec::<u32>::new());
    // The backup is untouched.
    assert_eq!(lab.lab.backups("nfs-backup", 200).len(), 1);
}

#[tokio::test]
async fn a_guest_built_where_a_failed_restore_was_is_left_alone() {
    let mut lab = RestoreLab::start().await;
    lab.lab
        .sim
        .inject(Fault::TaskFailure {
            task_type: "qmrestore".into(),
            message: "error writing to the target volume".into(),
            count: 1,
        })
        .unwrap();
    lab.apply(
        "  source: {serviceRef: {name: nextcloud}}\n  network: {mode: None}\n  cleanup: {onFailure: Keep}\n",
    );
    let status = lab.until("the run's end", |s| s.last_run.is_some()).await;
    let r = &status.last_run.as_ref().unwrap().restores[0];
    assert_eq!(r.reason, "RestoreFailed", "{r:#?}");
    assert!(r.cleaned_up, "{r:#?}");
    assert_eq!(
        lab.guests_in_range(),
        Vec::<u32>::new(),
        "an empty placeholder has nothing to look at: removed despite onFailure: Keep"
    );
    // Someone builds a diskless network-boot VM at the same VMID.
    lab.lab.sim.state_mut(|c| {
        let mut g = c.guests.get(&200).unwrap().clone();
        g.vmid = 9900;
        g.node = "pve3".into();
        g.power = homelab_autopilot::pvesim::Power::Stopped;
        g.snapshots.clear();
        g.config = [
            ("name", "pxe-lab"),
            ("memory", "2048"),
            ("boot", "order=net0"),
            ("net0", "virtio=BC:24:11:99:00:01,bridge=vmbr0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        c.guests.insert(9900, g);
    });
    let cluster = lab.lab.cluster_uid();
    lab.lab.world.deps.proxmox.snapshots.invalidate(&cluster);
    // The next run takes another VMID and leaves it alone...
    lab.request().await;
    let status = lab.until_idle().await;
    let r = &status.last_run.as_ref().unwrap().restores[0];
    assert_eq!(r.result, Some(RestoreResult::Passed), "{r:#?}");
    assert_ne!(r.restored_vmid, 9900);
    let name_of_9900 = |lab: &RestoreLab| {
        lab.lab
            .sim
            .state(|c| c.guests.get(&9900).and_then(|g| g.config.get("name").cloned()))
    };
    assert_eq!(name_of_9900(&lab).as_deref(), Some("pxe-lab"));
    // ...and so does deleting the RestoreTest.
    for _ in 0..500 {
        let now = lab.lab.now;
        if lab.lab.world.delete::<RestoreTestKind>(NAME, now).await.unwrap() {
            assert_eq!(name_of_9900(&lab).as_deref(), Some("pxe-lab"));
            return;
        }
        lab.lab.tick(Duration::from_millis(200)).await;
    }
    panic!("the RestoreTest was not released");
}

#[tokio::test]
async fn a_nic_that_cannot_be_moved_aborts_before_the_restore() {
    let mut lab = RestoreLab::with_backups(false).await;
    // A NIC whose model nobody knows: it cannot be rewritten onto the isolation network.
    lab.lab.sim.state_mut(|c| {
        let g = c.guests.get_mut(&200).unwrap();
        g.config
            .insert("net1".into(), "bogus-nic=AA:BB:CC:DD:EE:FF,bridge=vmbr0".into());
    });
    lab.lab.run_now().await;
    lab.apply("  source: {serviceRef: {name: nextcloud}}\n  network: {mode: Bridge, bridge: vmbr99}\n  selection: {requireVerified: false}\n");
    let status = lab.until("the run's end", |s| s.last_run.is_some()).await;
    let r = &status.last_run.as_ref().unwrap().restores[0];
    assert_eq!(r.reason, "NicNotOverridable", "{r:#?}");
    assert!(r.message.contains("net1"), "{r:#?}");
    assert_eq!(lab.restore_tasks(), 0, "refused before the POST");
    assert_eq!(lab.guests_in_range(), Vec::<u32>::new());
}

#[tokio::test]
async fn isolation_is_proven_before_anything_is_restored() {
    let mut lab = RestoreLab::start().await;
    // vmbr0 has an uplink: refused.
    lab.apply("  source: {serviceRef: {name: gitea}}\n  network: {mode: Bridge, bridge: vmbr0}\n");
    let status = lab.until("the run's end", |s| s.last_run.is_some()).await;
    let r = &status.last_run.as_ref().unwrap().restores[0];
    assert_eq!(r.reason, "IsolationUnverified", "{r:#?}");
    assert!(r.message.contains("has ports"), "{r:#?}");
    // A VNet of a VLAN zone is not isolated either; one of a simple zone is.
    lab.apply("  source: {serviceRef: {name: gitea}}\n  network: {mode: SdnVnet, bridge: vlan30}\n");
    lab.request().await;
    let status = lab.until_idle().await;
    let r = &status.last_run.as_ref().unwrap().restores[0];
    assert_eq!(r.reason, "IsolationUnverified", "{r:#?}");
    assert_eq!(lab.restore_tasks(), 0);
    lab.apply("  source: {serviceRef: {name: gitea}}\n  network: {mode: SdnVnet, bridge: rtest}\n  cleanup: {afterSeconds: 0}\n");
    lab.request().await;
    let status = lab.until_idle().await;
    let r = &status.last_run.as_ref().unwrap().restores[0];
    assert_eq!(r.result, Some(RestoreResult::Passed), "{r:#?}");
}

#[tokio::test]
async fn passthrough_devices_are_removed_before_the_first_start_or_the_copy_never_starts() {
    let mut lab = RestoreLab::with_backups(false).await;
    lab.lab.sim.state_mut(|c| {
        let g = c.guests.get_mut(&200).unwrap();
        g.config.insert("hostpci0".into(), "0000:01:00.0,pcie=1".into());
        g.config.insert("usb0".into(), "host=1a86:7523".into());
        g.config
            .insert("hookscript".into(), "local:snippets/announce.pl".into());
    });
    lab.lab.run_now().await;
    lab.apply(
        "  source: {serviceRef: {name: nextcloud}}\n  network: {mode: None}\n  cleanup: {afterSeconds: 60}\n",
    );
    lab.until_phase(RestorePhase::Checking).await;
    let config = lab.guest_config(9900).unwrap();
    assert!(
        !config.contains_key("hostpci0") && !config.contains_key("usb0"),
        "{config:?}"
    );
    assert!(
        !config.contains_key("hookscript"),
        "the host-side hook goes too: {config:?}"
    );
    assert!(config["net0"].contains("link_down=1"), "{config:?}");
    lab.until_idle().await;

    // PVE refuses to remove them: the copy is never started, and it is removed.
    lab.lab.sim.fail_next(
        "PUT",
        "/nodes/{node}/qemu/{vmid}/config",
        5,
        500,
        "device is busy",
    );
    lab.request().await;
    let status = lab.until_idle().await;
    let r = &status.last_run.as_ref().unwrap().restores[0];
    assert_eq!(r.reason, "PassthroughNotRemovable", "{r:#?}");
    assert!(r.booted_time.is_none());
    lab.until("the copy removed", |s| {
        s.last_run.as_ref().is_some_and(|r| r.restores[0].cleaned_up)
    })
    .await;
    assert_eq!(lab.guests_in_range(), Vec::<u32>::new());
}

#[tokio::test]
async fn a_full_target_storage_refuses_the_restore_up_front() {
    let mut lab = RestoreLab::start().await;
    lab.lab
        .sim
        .inject(Fault::StorageFull {
            storage: "local-lvm".into(),
            avail_bytes: 0,
        })
        .unwrap();
    lab.apply("  source: {serviceRef: {name: nextcloud}}\n  network: {mode: None}\n");
    let status = lab.until("the run's end", |s| s.last_run.is_some()).await;
    let r = &status.last_run.as_ref().unwrap().restores[0];
    assert_eq!(r.reason, "InsufficientSpace", "{r:#?}");
    assert_eq!(lab.restore_tasks(), 0);
    assert_eq!(lab.guests_in_range(), Vec::<u32>::new());
}

#[tokio::test]
async fn a_restarted_operator_resumes_mid_restore_and_mid_boot_without_restoring_twice() {
    let mut lab = RestoreLab::start().await;
    lab.apply(&format!(
        "  source: {{serviceRef: {{name: nextcloud}}}}\n  cleanup: {{afterSeconds: 0}}\n{AGENT_CHECKS}"
    ));
    let restoring = lab.until_phase(RestorePhase::Restoring).await;
    assert!(restoring.upid.is_some());
    lab.restart();
    let booting = lab.until_phase(RestorePhase::Checking).await;
    assert_eq!(booting.restored_vmid, 9900);
    lab.restart();
    let status = lab.until_idle().await;
    assert_eq!(
        status.last_run.as_ref().unwrap().result,
        Some(RestoreResult::Passed),
        "{status:#?}"
    );
    assert_eq!(lab.restore_tasks(), 1, "restored once");
    assert_eq!(lab.guests_in_range(), Vec::<u32>::new());
}

#[tokio::test]
async fn a_restore_request_whose_answer_is_lost_is_found_not_repeated_or_leaked() {
    let mut lab = RestoreLab::start().await;
    // PVE starts the restore, but its answer (the UPID) never arrives.
    lab.lab
        .sim
        .lose_answer_next(Some("POST"), "/nodes/{node}/qemu", 1);
    lab.apply(&format!(
        "  source: {{serviceRef: {{name: nextcloud}}}}\n  cleanup: {{afterSeconds: 0}}\n{AGENT_CHECKS}"
    ));
    let restoring = lab.until_phase(RestorePhase::Restoring).await;
    assert_eq!(restoring.upid, None, "no answer, no task id: {restoring:#?}");
    assert!(restoring.request_time.is_some(), "{restoring:#?}");
    let status = lab.until_idle().await;
    let r = &status.last_run.as_ref().unwrap().restores[0];
    assert_eq!(r.result, Some(RestoreResult::Passed), "{r:#?}");
    assert_eq!(r.restored_vmid, 9900);
    assert_eq!(
        lab.restore_tasks(),
        1,
        "the restore PVE started is used, not requested again"
    );
    assert!(r.cleaned_up, "{r:#?}");
    assert_eq!(lab.guests_in_range(), Vec::<u32>::new());
}

#[tokio::test]
async fn a_start_whose_answer_is_lost_is_not_sent_twice() {
    let mut lab = RestoreLab::start().await;
    // PVE starts the copy, but its answer (the UPID) never arrives: like an operator that
    // stopped right after asking.
    lab.lab
        .sim
        .lose_answer_next(Some("POST"), "/nodes/{node}/qemu/{vmid}/status/start", 1);
    lab.apply(&format!(
        "  source: {{serviceRef: {{name: nextcloud}}}}\n  cleanup: {{afterSeconds: 0}}\n{AGENT_CHECKS}"
    ));
    let status = lab.until_idle().await;
    let r = &status.last_run.as_ref().unwrap().restores[0];
    assert_eq!(r.result, Some(RestoreResult::Passed), "{r:#?}");
    let starts = lab
        .lab
        .sim
        .tasks()
        .iter()
        .filter(|t| t.upid.contains(":qmstart:9900:"))
        .count();
    assert_eq!(starts, 1, "started once");
    assert_eq!(lab.guests_in_range(), Vec::<u32>::new());
}

#[tokio::test]
async fn deleting_the_restore_test_mid_test_removes_its_copy() {
    let mut lab = RestoreLab::start().await;
    lab.apply(&format!(
        "  source: {{serviceRef: {{name: nextcloud}}}}\n{AGENT_CHECKS}"
    ));
    lab.until_phase(RestorePhase::Checking).await;
    assert_eq!(lab.guests_in_range(), vec![9900]);
    for _ in 0..500 {
        let now = lab.lab.now;
        if lab.lab.world.delete::<RestoreTestKind>(NAME, now).await.unwrap() {
            assert_eq!(lab.guests_in_range(), Vec::<u32>::new());
            return;
        }
        lab.lab.tick(Duration::from_millis(200)).await;
    }
    panic!("the RestoreTest was not released: {:?}", lab.guests_in_range());
}

#[tokio::test]
async fn cleanup_is_retried_while_the_api_is_down() {
    let mut lab = RestoreLab::start().await;
    lab.apply(
        "  source: {serviceRef: {name: gitea}}\n  network: {mode: None}\n  cleanup: {afterSeconds: 0}\n",
    );
    lab.until_phase(RestorePhase::CleaningUp).await;
    lab.lab.sim.fail_next(
        "DELETE",
        "/nodes/{node}/lxc/{vmid}",
        3,
        503,
        "service unavailable",
    );
    lab.lab.sim.fail_next(
        "POST",
        "/nodes/{node}/lxc/{vmid}/status/stop",
        3,
        503,
        "service unavailable",
    );
    let status = lab.until_idle().await;
    let r = &status.last_run.as_ref().unwrap().restores[0];
    assert!(r.cleaned_up, "{r:#?}");
    assert_eq!(r.result, Some(RestoreResult::Passed));
    assert_eq!(lab.guests_in_range(), Vec::<u32>::new());
}
