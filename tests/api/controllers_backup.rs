//! The BackupPolicy controller through the generic driver (the demo's in-memory API server as
//! its source, `kubectl apply`-shaped YAML in), against the simulator over real HTTPS on
//! loopback and a real chunk store in a temporary directory: each destination, retention,
//! verification, locked and deleted guests, failing tasks, a restarted operator, deletion.

use std::time::Duration;

use homelab_autopilot::controllers::backup_policy::controller::BackupPolicyKind;
use homelab_autopilot::controllers::backup_policy::ingest::StoreSettings;
use homelab_autopilot::controllers::kit::schedule::RUN_NOW_ANNOTATION;
use homelab_autopilot::controllers::pve::{ProxmoxDeps, Tuning};
use homelab_autopilot::crd::BackupPolicy;
use homelab_autopilot::crd::backup_policy::{BackupItemState, BackupPolicyStatus, BackupResult};
use homelab_autopilot::crd::conditions::{ConditionStatus, find_condition};
use homelab_autopilot::demo::sim_seed;
use homelab_autopilot::demo::world::World;
use homelab_autopilot::pvesim::{SimConfig, SimHandle, Simulator};
use homelab_autopilot::storage::{ChunkStore, OpenOptions};
use jiff::Timestamp;

use crate::pvesim_common::schema_path;

pub(crate) struct BackupLab {
    pub(crate) sim: SimHandle,
    pub(crate) world: World,
    pub(crate) now: Timestamp,
    store: tempfile::TempDir,
    requests: u32,
}

const SERVICES: &str = "
apiVersion: autopilot.homelab.dev/v1alpha1
kind: Service
metadata: {name: nextcloud, labels: {backup: nightly}}
spec: {clusterRef: {name: homelab}, vmid: 200, type: VM}
---
apiVersion: autopilot.homelab.dev/v1alpha1
kind: Service
metadata: {name: gitea, labels: {backup: nightly}}
spec: {clusterRef: {name: homelab}, vmid: 201, type: LXC}
";

fn fresh_deps() -> ProxmoxDeps {
    ProxmoxDeps::new(None).with_tuning(Tuning {
        task_poll: Duration::from_millis(20),
        ..Tuning::default()
    })
}

impl BackupLab {
    pub(crate) async fn start() -> Self {
        Self::start_with(false).await
    }

    /// With `pbs`, the simulator also serves the PBS API behind storage `pbs-homelab`, and the
    /// ProxmoxCluster lists it under `backupServers`.
    pub(crate) async fn start_with(pbs: bool) -> Self {
        let sim = Simulator::start(SimConfig {
            seed: sim_seed().unwrap(),
            schema: schema_path(),
            time_scale: 0.001,
            pbs_listen: pbs.then(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
            ..SimConfig::default()
        })
        .await
        .expect("simulator starts");
        let store = tempfile::tempdir().unwrap();
        let now = Timestamp::from_second(sim.now()).unwrap();
        let mut world = World::empty(fresh_deps(), settings(&store));
        let servers = match (sim.pbs_url(), sim.pbs_fingerprint()) {
            (Some(url), Some(fp)) => format!(
                ", backupServers: [{{name: pbs, url: '{url}', datastore: homelab, storage: pbs-homelab, \
                 credentialsSecretRef: {{name: pbs-token}}, tls: {{fingerprint: '{fp}'}}}}]"
            ),
            _ => String::new(),
        };
        let cluster = format!(
            "apiVersion: autopilot.homelab.dev/v1alpha1\nkind: ProxmoxCluster\nmetadata: {{name: homelab}}\n\
             spec: {{endpoints: [{{url: '{}'}}], credentialsSecretRef: {{name: pve-token}}, tls: {{fingerprint: '{}'}}{servers}}}\n",
            sim.url(),
            sim.fingerprint()
        );
        world
            .apply_at(&[("cluster.yaml", &cluster), ("services.yaml", SERVICES)], now)
            .unwrap();
        for secret in ["pve-token", "pbs-token"] {
            world
                .update_secret(
                    secret,
                    &[("tokenId", sim.token_id()), ("tokenSecret", sim.token_secret())],
                )
                .unwrap();
        }
        BackupLab {
            sim,
            world,
            now,
            store,
            requests: 0,
        }
    }

    /// `kubectl apply` of a BackupPolicy `nightly` with `spec` (YAML mapping body, indented 2).
    pub(crate) fn apply_policy(&mut self, spec: &str) {
        let yaml = format!(
            "apiVersion: autopilot.homelab.dev/v1alpha1\nkind: BackupPolicy\nmetadata: {{name: nightly}}\n\
             spec:\n  clusterRef: {{name: homelab}}\n  services: {{matchLabels: {{backup: nightly}}}}\n  \
             schedule: '30 2 * * *'\n{spec}"
        );
        self.world.apply_at(&[("policy.yaml", &yaml)], self.now).unwrap();
    }

    /// `apply_policy` of a policy backing up `service` into the chunk store, staged through
    /// the simulator's `nfs-backup` storage.
    pub(crate) fn apply_chunk_store_policy(&mut self, service: &str) {
        let staging = self.sim.state(|c| c.backup_dir("nfs-backup"));
        self.apply_policy(&format!(
            "  services: {{names: [{service}]}}\n  destination: {{chunkStore: {{stagingStorage: nfs-backup, \
             stagingPath: '{}'}}}}\n",
            staging.display()
        ));
    }

    pub(crate) fn policy(&self) -> BackupPolicy {
        self.world.get::<BackupPolicy>("nightly").unwrap()
    }

    pub(crate) fn status(&self) -> BackupPolicyStatus {
        self.policy().status.unwrap_or_default()
    }

    /// Asks for a run now (`kubectl annotate … autopilot.homelab.dev/run-now=<n>`) and drives
    /// passes until the run finished.
    pub(crate) async fn run_now(&mut self) -> BackupPolicyStatus {
        self.requests += 1;
        let value = format!("r{}", self.requests);
        self.world
            .annotate::<BackupPolicy>("nightly", RUN_NOW_ANNOTATION, &value)
            .unwrap();
        self.pass().await;
        assert!(
            self.status().current_run.is_some(),
            "the run-now request starts a run: {:?}",
            self.status()
        );
        self.until_idle().await
    }

    pub(crate) async fn pass(&mut self) {
        self.world.reconcile::<BackupPolicyKind>(self.now).await.unwrap();
    }

    /// Passes (one simulated second apart) until no run is in progress.
    pub(crate) async fn until_idle(&mut self) -> BackupPolicyStatus {
        for _ in 0..2000 {
            self.pass().await;
            let status = self.status();
            if status.current_run.is_none() {
                return status;
            }
            self.tick(Duration::from_secs(1)).await;
        }
        panic!("the run did not finish: {:#?}", self.status());
    }

    pub(crate) async fn tick(&mut self, by: Duration) {
        self.now = homelab_autopilot::controllers::kit::time::add(self.now, by);
        self.sim.advance_clock(by);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    pub(crate) fn event_reasons(&self) -> Vec<String> {
        self.world.events.iter().map(|e| e.event.reason.clone()).collect()
    }

    /// Backup files the simulator holds for `vmid` on `storage`, as `(volid, notes)`.
    pub(crate) fn backups(&self, storage: &str, vmid: u32) -> Vec<(String, Option<String>)> {
        let mut out: Vec<(String, Option<String>)> = Vec::new();
        let dir = self.sim.state(|c| c.backup_dir(storage));
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let prefix_vm = format!("vzdump-qemu-{vmid}-");
            let prefix_ct = format!("vzdump-lxc-{vmid}-");
            if (name.starts_with(&prefix_vm) || name.starts_with(&prefix_ct))
                && !name.ends_with(".log")
                && !name.ends_with(".notes")
                && !name.ends_with(".protected")
            {
                let notes = std::fs::read_to_string(entry.path().with_file_name(format!("{name}.notes")))
                    .ok()
                    .map(|n| n.trim_end().to_owned());
                out.push((format!("{storage}:backup/{name}"), notes));
            }
        }
        out.sort();
        out
    }

    /// The command line of every vzdump job (PVE logs it as its first line), e.g.
    /// `vzdump 200 --mode stop --remove 0 … --node pve1`.
    fn vzdump_jobs(&self) -> Vec<String> {
        self.sim
            .tasks()
            .iter()
            .filter(|t| t.upid.contains(":vzdump:"))
            .filter_map(|t| {
                t.log.iter().find_map(|l| {
                    l.split_once("starting new backup job: ")
                        .map(|(_, c)| c.to_owned())
                })
            })
            .collect()
    }

    /// Waits until no PVE task runs (volume deletions are tasks too).
    pub(crate) async fn settle(&mut self) {
        for _ in 0..500 {
            if self.sim.tasks().iter().all(|t| !t.running()) {
                return;
            }
            self.tick(Duration::from_millis(100)).await;
        }
        panic!("tasks still running: {:?}", self.sim.tasks());
    }

    fn vzdump_tasks(&self) -> usize {
        self.sim
            .tasks()
            .iter()
            .filter(|t| t.upid.contains(":vzdump:"))
            .count()
    }
}

fn settings(dir: &tempfile::TempDir) -> StoreSettings {
    StoreSettings {
        repo: dir.path().join("repo"),
        key_file: None,
    }
}

fn uid(lab: &BackupLab) -> String {
    lab.policy().metadata.uid.unwrap()
}

#[tokio::test]
async fn backup_to_a_pve_storage_runs_on_demand_verifies_and_reports() {
    let mut lab = BackupLab::start().await;
    lab.apply_policy("  destination: {storage: {storage: nfs-backup}}\n  mode: Stop\n");
    lab.pass().await;
    let idle = lab.status();
    assert!(
        idle.current_run.is_none(),
        "nothing runs before 02:30 unless asked"
    );
    assert!(idle.next_run_time.is_some());
    assert_eq!(
        find_condition(&idle.conditions, "Ready").unwrap().reason,
        "Scheduled"
    );

    let status = lab.run_now().await;
    let last = status.last_backup.as_ref().expect("a finished run");
    assert_eq!(last.result, BackupResult::Succeeded, "{status:#?}");
    assert_eq!(status.last_run_request.as_deref(), Some("r1"));
    assert_eq!(status.services.len(), 2);
    for svc in &status.services {
        assert_eq!(svc.result, BackupResult::Succeeded);
        assert_eq!(svc.verified, Some(true), "{svc:?}");
        assert!(
            svc.volid
                .as_deref()
                .unwrap()
                .starts_with("nfs-backup:backup/vzdump-")
        );
        assert!(svc.size_bytes.unwrap() > 0);
    }
    assert_eq!(status.backup_count, Some(2));
    assert!(status.stored_size.is_some());
    assert_eq!(
        find_condition(&status.conditions, "BackupSucceeded")
            .unwrap()
            .status,
        ConditionStatus::True
    );
    assert_eq!(
        find_condition(&status.conditions, "Verified").unwrap().status,
        ConditionStatus::True
    );
    let reasons = lab.event_reasons();
    assert_eq!(reasons, ["BackupStarted", "BackupSucceeded"], "{reasons:?}");

    // What PVE was asked: our mode, no PVE-side pruning, zstd, and the marker with our UID.
    let uid = uid(&lab);
    let jobs = lab.vzdump_jobs();
    assert_eq!(jobs.len(), 2, "one vzdump per guest: {jobs:?}");
    for job in &jobs {
        assert!(job.contains("--mode stop"), "{job}");
        assert!(job.contains("--remove 0"), "{job}");
        assert!(job.contains("--compress zstd"), "{job}");
        assert!(job.contains("--storage nfs-backup"), "{job}");
        assert!(
            job.contains(&format!("--notes-template autopilot policy={uid} run=now-")),
            "{job}"
        );
    }

    // The same annotation value again does not run again (a restart cannot repeat it).
    lab.pass().await;
    assert!(lab.status().current_run.is_none());
    assert_eq!(lab.vzdump_tasks(), 2);
}

#[tokio::test]
async fn retention_prunes_only_this_policys_backups_never_protected_or_foreign_ones() {
    let mut lab = BackupLab::start().await;
    lab.apply_policy(
        "  services: {names: [nextcloud]}\n  destination: {storage: {storage: nfs-backup}}\n  \
         retention: {keepLast: 2}\n",
    );
    // A backup made by hand (no marker) must survive any retention of ours.
    let admin = admin_client(&lab.sim);
    let node = homelab_autopilot::proxmox::NodeName::new("pve1").unwrap();
    backup_by_hand(&admin, "made by hand").await;
    lab.tick(Duration::from_secs(3600)).await;

    let mut ours = Vec::new();
    for round in 0..4 {
        let status = lab.run_now().await;
        assert_eq!(
            status.last_backup.as_ref().unwrap().result,
            BackupResult::Succeeded,
            "round {round}: {status:#?}"
        );
        ours.push(status.services[0].volid.clone().unwrap());
        if round == 0 {
            // The user protects the first backup of ours: retention must keep it.
            let volid = ours[0].clone();
            admin
                .update_volume_protection(&node, "nfs-backup", &volid, true)
                .await;
        }
        lab.tick(Duration::from_secs(3600)).await;
    }
    lab.settle().await;
    let files = lab.backups("nfs-backup", 200);
    let volids: Vec<&str> = files.iter().map(|(v, _)| v.as_str()).collect();
    assert!(
        files.iter().any(|(_, n)| n.as_deref() == Some("made by hand")),
        "a backup without our marker is never pruned: {volids:?}"
    );
    assert!(volids.contains(&ours[0].as_str()), "protected: kept");
    assert!(!volids.contains(&ours[1].as_str()), "pruned: {volids:?}");
    assert!(volids.contains(&ours[2].as_str()) && volids.contains(&ours[3].as_str()));
    assert!(lab.event_reasons().iter().any(|r| r == "BackupsPruned"));
}

/// A backup of VM 200 to nfs-backup made in the Proxmox UI, with these notes.
async fn backup_by_hand(admin: &AdminClient, notes: &str) {
    let node = homelab_autopilot::proxmox::NodeName::new("pve1").unwrap();
    let task = admin
        .vzdump(
            &node,
            &homelab_autopilot::proxmox::api::VzdumpRequest {
                vmids: vec![homelab_autopilot::proxmox::Vmid::new(200).unwrap()],
                storage: Some("nfs-backup".into()),
                notes_template: Some(notes.into()),
                remove: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    admin
        .wait_task(
            &task,
            Duration::from_millis(20),
            tokio::time::Instant::now() + Duration::from_secs(30),
        )
        .await
        .unwrap();
}

fn admin_client(sim: &SimHandle) -> AdminClient {
    AdminClient(
        homelab_autopilot::proxmox::PveClient::new(homelab_autopilot::proxmox::ClientConfig::new(
            vec![homelab_autopilot::proxmox::Endpoint::new(sim.url(), 0)],
            homelab_autopilot::proxmox::Credentials::ApiToken {
                token_id: sim.token_id().to_owned(),
                secret: homelab_autopilot::proxmox::Secret::new(sim.token_secret()),
            },
            homelab_autopilot::proxmox::TlsVerify::Fingerprint(sim.fingerprint().to_owned()),
        ))
        .unwrap(),
        reqwest_client(sim),
        sim.url().to_owned(),
        format!("PVEAPIToken={}={}", sim.token_id(), sim.token_secret()),
    )
}

fn reqwest_client(sim: &SimHandle) -> reqwest::Client {
    crate::pvesim_common::client_for(sim)
}

/// The admin's own PVE client, plus raw requests for what the typed client does not offer.
struct AdminClient(
    homelab_autopilot::proxmox::PveClient,
    reqwest::Client,
    String,
    String,
);

impl std::ops::Deref for AdminClient {
    type Target = homelab_autopilot::proxmox::PveClient;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl AdminClient {
    /// `PUT …/content/{volume}` with `protected=1` (as the PVE GUI's "protect" does).
    async fn update_volume_protection(
        &self,
        node: &homelab_autopilot::proxmox::NodeName,
        storage: &str,
        volid: &str,
        protected: bool,
    ) {
        let url = format!(
            "{}/api2/json/nodes/{node}/storage/{storage}/content/{}",
            self.2,
            urlencode(volid)
        );
        let resp = self
            .1
            .put(url)
            .header("Authorization", &self.3)
            .form(&[("protected", if protected { "1" } else { "0" })])
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{:?}", resp.text().await);
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn chunk_store_destination_ingests_verifies_dedups_and_removes_the_staged_archive() {
    let mut lab = BackupLab::start().await;
    let staging = lab.sim.state(|c| c.backup_dir("nfs-backup"));
    let receiver = Receiver::start().await;
    lab.world
        .update_secret("alerts", &[("webhook", &format!("{}/hook", receiver.url))])
        .unwrap();
    // Any volume is more than 1 % full: SpaceLow must fire for the store's volume.
    lab.apply_policy(&format!(
        "  services: {{names: [nextcloud]}}\n  destination: {{chunkStore: {{stagingStorage: nfs-backup, \
         stagingPath: '{}'}}}}\n  retention: {{keepLast: 1}}\n  notifications: {{secretRef: {{name: alerts}}, \
         events: [SpaceLow], spaceWarningPercent: 1}}\n  clusterConfig: true\n",
        staging.display()
    ));
    let first = lab.run_now().await;
    assert_eq!(
        first.last_backup.as_ref().unwrap().result,
        BackupResult::Succeeded,
        "{first:#?}"
    );
    let svc = &first.services[0];
    let volid = svc.volid.clone().unwrap();
    assert!(volid.starts_with("chunkstore/"), "{volid}");
    assert_eq!(svc.verified, Some(true));
    lab.settle().await;
    assert!(
        lab.backups("nfs-backup", 200).is_empty(),
        "the staged archive is deleted after the ingest"
    );
    let alerts: Vec<serde_json::Value> = receiver
        .requests()
        .iter()
        .map(|(_, _, body)| serde_json::from_str(body).unwrap())
        .collect();
    assert!(
        alerts
            .iter()
            .any(|a| a["event"] == "SpaceLow" && a["labels"]["subject"] == "the chunk store"),
        "{alerts:?}"
    );
    let jobs = lab.vzdump_jobs();
    assert!(
        jobs[0].contains("--compress 0"),
        "uncompressed, so the store can deduplicate: {jobs:?}"
    );

    lab.tick(Duration::from_secs(3600)).await;
    let second = lab.run_now().await;
    let item_stored = second.services[0].stored_bytes.unwrap();
    let item_logical = second.services[0].size_bytes.unwrap();
    assert!(
        item_stored * 4 < item_logical,
        "an unchanged guest stores little the second time: {item_stored} of {item_logical}"
    );
    let store = ChunkStore::open(
        &lab.store.path().join("repo").to_string_lossy(),
        OpenOptions::default(),
    )
    .unwrap();
    let mut snaps = store.list().unwrap();
    snaps.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<&str> = snaps.iter().map(|s| s.name.as_str()).collect();
    let ns = namespace();
    assert_eq!(
        names,
        [format!("{ns}.nightly.cluster"), format!("{ns}.nightly.vm-200")],
        "keepLast 1 pruned the first run's backup and cluster export"
    );
    assert_eq!(second.backup_count, Some(2));

    // The cluster export: every guest's config, storages, node networks, status, HA.
    let export = second.cluster_config.as_ref().expect("clusterConfig status");
    assert!(
        export.last_success_time.is_some() && export.message.is_empty(),
        "{export:?}"
    );
    let id = export
        .volid
        .as_deref()
        .unwrap()
        .strip_prefix("chunkstore/")
        .unwrap();
    let snap = snaps.iter().find(|s| s.id == id).expect("the export snapshot");
    let mut json = Vec::new();
    store
        .restore_to_writer(snap, &mut json, &homelab_autopilot::storage::NoProgress)
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let vm200 = doc["guests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["vmid"] == 200)
        .expect("guest 200");
    assert_eq!(vm200["config"]["name"], "nextcloud");
    assert!(
        doc["networks"]["pve1"].as_array().is_some_and(|n| !n.is_empty()),
        "{}",
        doc["networks"]
    );
    assert!(
        doc["storage"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["storage"] == "nfs-backup"))
    );
    assert_eq!(doc["clusterStatus"]["cluster"]["quorate"], true);
}

fn namespace() -> String {
    homelab_autopilot::demo::world::NAMESPACE.to_owned()
}

#[tokio::test]
async fn a_locked_guest_is_retried_with_backoff_and_a_missing_one_fails_alone() {
    let mut lab = BackupLab::start().await;
    let extra = "
apiVersion: autopilot.homelab.dev/v1alpha1
kind: Service
metadata: {name: ghost, labels: {backup: nightly}}
spec: {clusterRef: {name: homelab}, vmid: 777, type: VM}
";
    lab.world.apply_at(&[("ghost.yaml", extra)], lab.now).unwrap();
    lab.apply_policy("  destination: {storage: {storage: nfs-backup}}\n  concurrency: 2\n");
    lab.sim.state_mut(|c| {
        c.guests
            .get_mut(&201)
            .unwrap()
            .config
            .insert("lock".into(), "snapshot".into());
    });
    lab.world
        .annotate::<BackupPolicy>("nightly", RUN_NOW_ANNOTATION, "go")
        .unwrap();
    for _ in 0..40 {
        lab.pass().await;
        lab.tick(Duration::from_secs(1)).await;
    }
    let status = lab.status();
    let run = status
        .current_run
        .as_ref()
        .expect("still running: gitea waits for its lock");
    let gitea = run.items.iter().find(|i| i.guest.service == "gitea").unwrap();
    assert_eq!(gitea.state, BackupItemState::Pending, "{gitea:?}");
    assert!(gitea.attempts.unwrap() >= 2, "{gitea:?}");
    assert!(gitea.next_attempt_time.is_some());
    assert!(gitea.message.contains("locked (snapshot)"), "{}", gitea.message);
    let ghost = run.items.iter().find(|i| i.guest.service == "ghost").unwrap();
    assert_eq!(ghost.state, BackupItemState::Failed);
    assert_eq!(ghost.reason.as_deref(), Some("GuestNotFound"));

    lab.sim.state_mut(|c| {
        c.guests.get_mut(&201).unwrap().config.remove("lock");
    });
    lab.world.deps.proxmox.snapshots.invalidate(&lab.cluster_uid());
    let done = lab.until_idle().await;
    let last = done.last_backup.as_ref().unwrap();
    assert_eq!(last.result, BackupResult::PartiallySucceeded, "{done:#?}");
    assert!(last.message.contains("ghost (GuestNotFound)"), "{}", last.message);
    assert_eq!(
        find_condition(&done.conditions, "BackupSucceeded")
            .unwrap()
            .reason,
        "PartiallySucceeded"
    );
    assert!(lab.event_reasons().iter().any(|r| r == "BackupFailed"));
}

impl BackupLab {
    pub(crate) fn cluster_uid(&self) -> String {
        self.world
            .get::<homelab_autopilot::crd::ProxmoxCluster>("homelab")
            .unwrap()
            .metadata
            .uid
            .unwrap()
    }
}

#[tokio::test]
async fn a_failing_vzdump_fails_its_item_and_leaves_no_backup() {
    let mut lab = BackupLab::start().await;
    lab.apply_policy("  services: {names: [nextcloud]}\n  destination: {storage: {storage: nfs-backup}}\n");
    lab.sim.fail_next_task("vzdump", "job errors");
    let status = lab.run_now().await;
    let item = &status.services[0];
    assert_eq!(item.result, BackupResult::Failed, "{status:#?}");
    assert!(item.message.contains("job errors"), "{}", item.message);
    assert!(lab.backups("nfs-backup", 200).is_empty());
    assert_eq!(
        find_condition(&status.conditions, "BackupSucceeded")
            .unwrap()
            .reason,
        "BackupFailed"
    );
}

#[tokio::test]
async fn a_restarted_operator_resumes_the_recorded_vzdump_instead_of_starting_another() {
    let mut lab = BackupLab::start().await;
    lab.apply_policy("  services: {names: [nextcloud]}\n  destination: {storage: {storage: nfs-backup}}\n");
    lab.world
        .annotate::<BackupPolicy>("nightly", RUN_NOW_ANNOTATION, "once")
        .unwrap();
    // Run until the vzdump's UPID is recorded.
    for _ in 0..10 {
        lab.pass().await;
        let status = lab.status();
        if status
            .current_run
            .as_ref()
            .is_some_and(|r| r.items[0].upid.is_some())
        {
            break;
        }
    }
    assert_eq!(lab.vzdump_tasks(), 1);
    // The operator restarts: every per-process memory is new; only the status survives.
    lab.world.deps.proxmox = fresh_deps();
    lab.world.deps.backup =
        homelab_autopilot::controllers::backup_policy::BackupDeps::new(settings(&lab.store));
    let status = lab.until_idle().await;
    assert_eq!(
        status.last_backup.as_ref().unwrap().result,
        BackupResult::Succeeded
    );
    assert_eq!(lab.vzdump_tasks(), 1, "no second vzdump");
    assert_eq!(lab.backups("nfs-backup", 200).len(), 1, "no duplicate backup");
}

#[tokio::test]
async fn an_intent_recorded_but_upid_lost_finds_the_backup_by_its_marker() {
    let mut lab = BackupLab::start().await;
    lab.apply_policy("  services: {names: [nextcloud]}\n  destination: {storage: {storage: nfs-backup}}\n");
    lab.world
        .annotate::<BackupPolicy>("nightly", RUN_NOW_ANNOTATION, "once")
        .unwrap();
    let mut before_post = None;
    for _ in 0..10 {
        let status = lab.status();
        if let Some(run) = &status.current_run
            && run.items[0].state == BackupItemState::Running
            && run.items[0].upid.is_none()
        {
            before_post = Some(status.clone());
        }
        lab.pass().await;
        if lab
            .status()
            .current_run
            .as_ref()
            .is_some_and(|r| r.items[0].upid.is_some())
        {
            break;
        }
    }
    let before_post = before_post.expect("the intent was recorded before the POST");
    // Let the vzdump finish, then lose the status write that recorded its UPID.
    for _ in 0..200 {
        if lab.backups("nfs-backup", 200).len() == 1 && lab.sim.tasks().iter().all(|t| !t.running()) {
            break;
        }
        lab.tick(Duration::from_millis(200)).await;
    }
    lab.world
        .set_status::<BackupPolicy>("nightly", &before_post)
        .unwrap();
    let status = lab.until_idle().await;
    assert_eq!(
        status.last_backup.as_ref().unwrap().result,
        BackupResult::Succeeded,
        "{status:#?}"
    );
    assert_eq!(lab.vzdump_tasks(), 1, "the backup was adopted, not made again");
}

#[tokio::test]
async fn deleting_a_delete_policy_removes_its_backups_and_nothing_else() {
    let mut lab = BackupLab::start().await;
    lab.apply_policy(
        "  services: {names: [nextcloud]}\n  destination: {storage: {storage: nfs-backup}}\n  \
         deletionPolicy: Delete\n",
    );
    lab.run_now().await;
    lab.tick(Duration::from_secs(60)).await;
    lab.run_now().await;
    assert_eq!(lab.backups("nfs-backup", 200).len(), 2);
    backup_by_hand(&admin_client(&lab.sim), "autopilot policy=someone-else run=x").await;
    let mut gone = false;
    for _ in 0..20 {
        if lab
            .world
            .delete::<BackupPolicyKind>("nightly", lab.now)
            .await
            .unwrap()
        {
            gone = true;
            break;
        }
        lab.tick(Duration::from_secs(5)).await;
    }
    assert!(gone, "the cleanup finished");
    lab.settle().await;
    let left = lab.backups("nfs-backup", 200);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(
        left[0].1.as_deref(),
        Some("autopilot policy=someone-else run=x"),
        "another policy's backup stays"
    );
}

#[tokio::test]
async fn backup_to_pbs_reports_logical_size_and_leaves_verified_to_pbs() {
    let mut lab = BackupLab::start().await;
    lab.apply_policy("  services: {names: [nextcloud]}\n  destination: {pbs: {storage: pbs-homelab}}\n");
    let status = lab.run_now().await;
    assert_eq!(
        status.last_backup.as_ref().unwrap().result,
        BackupResult::Succeeded,
        "{status:#?}"
    );
    let svc = &status.services[0];
    assert!(
        svc.volid
            .as_deref()
            .unwrap()
            .starts_with("pbs-homelab:backup/vm/200/"),
        "{svc:?}"
    );
    assert!(status.stored_bytes.is_none(), "PBS cannot attribute dedup space");
    assert!(
        status.stored_size.as_deref().unwrap().ends_with("(logical)"),
        "{:?}",
        status.stored_size
    );
    let jobs = lab.vzdump_jobs();
    assert!(!jobs[0].contains("--compress"), "PBS compresses itself: {jobs:?}");
}

/// A webhook receiver on loopback that keeps every request (path, headers, body).
struct Receiver {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, axum::http::HeaderMap, String)>>>,
}

impl Receiver {
    pub(crate) async fn start() -> Self {
        let seen: std::sync::Arc<std::sync::Mutex<Vec<(String, axum::http::HeaderMap, String)>>> =
            Default::default();
        let store = seen.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: String| {
                let store = store.clone();
                async move {
                    store.lock().unwrap().push((uri.path().to_owned(), headers, body));
                    "ok"
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { url, seen }
    }

    fn requests(&self) -> Vec<(String, axum::http::HeaderMap, String)> {
        self.seen.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn failed_backups_notify_webhook_and_ntfy_once_per_cooldown_and_never_leak_the_url() {
    let mut lab = BackupLab::start().await;
    let receiver = Receiver::start().await;
    lab.world
        .update_secret(
            "backup-alerts",
            &[
                ("webhook", &format!("{}/hook", receiver.url)),
                ("ntfy", &format!("{}/homelab-topic", receiver.url)),
            ],
        )
        .unwrap();
    lab.apply_policy(
        "  services: {names: [nextcloud]}\n  destination: {storage: {storage: nfs-backup}}\n  \
         notifications: {secretRef: {name: backup-alerts}}\n",
    );
    lab.sim.fail_next_task("vzdump", "job errors");
    let status = lab.run_now().await;
    assert_eq!(status.last_backup.as_ref().unwrap().result, BackupResult::Failed);
    let got = receiver.requests();
    assert_eq!(got.len(), 2, "one per channel: {got:?}");
    let hook = got.iter().find(|(p, _, _)| p == "/hook").expect("the webhook");
    let body: serde_json::Value = serde_json::from_str(&hook.2).unwrap();
    assert_eq!(body["event"], "BackupFailed");
    assert_eq!(body["labels"]["subject"], "nextcloud");
    assert!(body["message"].as_str().unwrap().contains("job errors"), "{body}");
    let ntfy = got.iter().find(|(p, _, _)| p == "/homelab-topic").expect("ntfy");
    assert_eq!(ntfy.1["Title"], "Backup of nextcloud failed");
    assert_eq!(ntfy.1["Priority"], "high");

    // Within the cooldown (3600 s) the same failure is not sent again.
    lab.tick(Duration::from_secs(600)).await;
    lab.sim.fail_next_task("vzdump", "job errors");
    lab.run_now().await;
    assert_eq!(receiver.requests().len(), 2, "cooldown");
    // A success is not sent by default.
    lab.tick(Duration::from_secs(7200)).await;
    lab.run_now().await;
    assert_eq!(receiver.requests().len(), 2, "BackupSucceeded is opt-in");

    // A channel that answers an error is reported by name, never by URL.
    lab.world
        .update_secret("backup-alerts", &[("webhook", "http://127.0.0.1:9/secret-token")])
        .unwrap();
    lab.world.update_secret("backup-alerts", &[("ntfy", "")]).unwrap();
    lab.tick(Duration::from_secs(7200)).await;
    lab.sim.fail_next_task("vzdump", "job errors");
    lab.run_now().await;
    let failed: Vec<_> = lab
        .world
        .events
        .iter()
        .filter(|e| e.event.reason == "NotificationFailed")
        .collect();
    assert_eq!(failed.len(), 1, "{:?}", lab.event_reasons());
    assert!(
        failed[0].event.note.contains("webhook"),
        "{}",
        failed[0].event.note
    );
    assert!(
        !failed[0].event.note.contains("secret-token"),
        "{}",
        failed[0].event.note
    );
}

#[tokio::test]
async fn two_policies_selecting_one_guest_take_turns() {
    let mut lab = BackupLab::start().await;
    for name in ["first", "second"] {
        let yaml = format!(
            "apiVersion: autopilot.homelab.dev/v1alpha1\nkind: BackupPolicy\nmetadata: {{name: {name}}}\n\
             spec:\n  clusterRef: {{name: homelab}}\n  services: {{names: [nextcloud]}}\n  \
             schedule: '30 2 * * *'\n  destination: {{storage: {{storage: nfs-backup}}}}\n"
        );
        lab.world.apply_at(&[("p.yaml", &yaml)], lab.now).unwrap();
        lab.world
            .annotate::<BackupPolicy>(name, RUN_NOW_ANNOTATION, "go")
            .unwrap();
    }
    for _ in 0..2000 {
        lab.pass().await;
        let idle = ["first", "second"].iter().all(|n| {
            let p = lab.world.get::<BackupPolicy>(n).unwrap();
            p.status
                .as_ref()
                .is_some_and(|s| s.current_run.is_none() && s.last_backup.is_some())
        });
        if idle {
            break;
        }
        lab.tick(Duration::from_secs(1)).await;
    }
    for name in ["first", "second"] {
        let st = lab.world.get::<BackupPolicy>(name).unwrap().status.unwrap();
        assert_eq!(
            st.last_backup.as_ref().unwrap().result,
            BackupResult::Succeeded,
            "{name}: {st:#?}"
        );
    }
    let mut spans: Vec<(i64, i64)> = lab
        .sim
        .tasks()
        .iter()
        .filter(|t| t.upid.contains(":vzdump:200:"))
        .map(|t| (t.starttime, t.endtime.unwrap()))
        .collect();
    spans.sort();
    assert_eq!(spans.len(), 2, "one backup per policy");
    assert!(spans[0].1 <= spans[1].0, "never at the same time: {spans:?}");
    assert_eq!(lab.backups("nfs-backup", 200).len(), 2);
}

#[tokio::test]
async fn the_pve_api_down_mid_run_delays_the_run_without_failing_or_repeating_it() {
    let mut lab = BackupLab::start().await;
    lab.apply_policy("  services: {names: [nextcloud]}\n  destination: {storage: {storage: nfs-backup}}\n");
    lab.world
        .annotate::<BackupPolicy>("nightly", RUN_NOW_ANNOTATION, "once")
        .unwrap();
    for _ in 0..10 {
        lab.pass().await;
        if lab
            .status()
            .current_run
            .as_ref()
            .is_some_and(|r| r.items[0].upid.is_some())
        {
            break;
        }
    }
    // Every request fails for a while (connections dropped): many passes go by.
    lab.sim.set_error_rate(None, "*", 1.0, 503);
    for _ in 0..4 {
        lab.pass().await;
        lab.tick(Duration::from_secs(60)).await;
    }
    let during = lab.status();
    let run = during.current_run.as_ref().expect("the run waits");
    assert_eq!(run.items[0].state, BackupItemState::Running, "{during:#?}");
    assert!(run.items[0].upid.is_some(), "the recorded task is kept");
    lab.sim.clear_faults();
    let status = lab.until_idle().await;
    assert_eq!(
        status.last_backup.as_ref().unwrap().result,
        BackupResult::Succeeded,
        "{status:#?}"
    );
    assert_eq!(lab.vzdump_tasks(), 1);
}

/// `homelab-autopilot restore` as a user runs it, against the simulator.
async fn restore_cli(lab: &BackupLab, args: &[&str]) -> std::process::Output {
    let secret = lab.store.path().join("token-secret");
    std::fs::write(&secret, lab.sim.token_secret()).unwrap();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_homelab-autopilot"))
        .arg("restore")
        .args(args)
        .args(["--endpoint", lab.sim.url(), "--token-id", lab.sim.token_id()])
        .arg("--token-secret-file")
        .arg(&secret)
        .args(["--fingerprint", lab.sim.fingerprint()])
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn restore_puts_a_chunk_store_or_storage_backup_on_a_free_vmid_and_never_overwrites() {
    let mut lab = BackupLab::start().await;
    let staging = lab.sim.state(|c| c.backup_dir("nfs-backup"));
    lab.apply_chunk_store_policy("nextcloud");
    let status = lab.run_now().await;
    let id = status.services[0].volid.clone().unwrap();
    assert!(id.starts_with("chunkstore/"));
    let repo = lab.store.path().join("repo");
    let chunk_args = [
        "--store",
        repo.to_str().unwrap(),
        "--staging-storage",
        "nfs-backup",
        "--staging-path",
        staging.to_str().unwrap(),
    ];

    // Onto a VMID in use: refused before anything happens.
    let taken = restore_cli(
        &lab,
        &[
            &[id.as_str(), "--node", "pve1", "--vmid", "200", "--type", "vm"][..],
            &chunk_args[..],
        ]
        .concat(),
    )
    .await;
    assert!(!taken.status.success());
    let err = String::from_utf8_lossy(&taken.stderr);
    assert!(err.contains("VMID 200 is in use"), "{err}");
    assert!(lab.backups("nfs-backup", 200).is_empty(), "nothing staged");

    // Onto a free VMID: reassembled on the staging storage, restored, staged file removed.
    let ok = restore_cli(
        &lab,
        &[
            &[
                id.as_str(),
                "--node",
                "pve1",
                "--vmid",
                "300",
                "--type",
                "vm",
                "--unique",
            ][..],
            &chunk_args[..],
        ]
        .concat(),
    )
    .await;
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(out.contains("restored: vm 300 on pve1"), "{out}");
    let restored = lab.sim.state(|c| c.guests.get(&300).map(|g| g.node.clone()));
    assert_eq!(restored.as_deref(), Some("pve1"));
    assert!(
        lab.backups("nfs-backup", 200).is_empty(),
        "the staged archive is removed"
    );

    // A plain storage backup (a PVE volid) restores the same way.
    lab.apply_policy("  services: {names: [gitea]}\n  destination: {storage: {storage: nfs-backup}}\n");
    let st = lab.run_now().await;
    let volid = st
        .services
        .iter()
        .find(|s| s.name == "gitea")
        .unwrap()
        .volid
        .clone()
        .unwrap();
    let node = lab.sim.state(|c| c.guests[&201].node.clone());
    let ct = restore_cli(
        &lab,
        &[
            volid.as_str(),
            "--node",
            &node,
            "--vmid",
            "301",
            "--type",
            "lxc",
            "--storage",
            "local-lvm",
        ],
    )
    .await;
    assert!(ct.status.success(), "{}", String::from_utf8_lossy(&ct.stderr));
    assert!(lab.sim.state(|c| c.guests.contains_key(&301)));
}

#[tokio::test]
async fn a_full_staging_storage_fails_the_item_cleanly_and_the_next_run_succeeds() {
    let mut lab = BackupLab::start().await;
    lab.apply_chunk_store_policy("nextcloud");
    lab.sim
        .inject(homelab_autopilot::pvesim::Fault::StorageFull {
            storage: "nfs-backup".into(),
            avail_bytes: 0,
        })
        .unwrap();
    let failed = lab.run_now().await;
    let svc = &failed.services[0];
    assert_eq!(svc.result, BackupResult::Failed, "{failed:#?}");
    assert!(svc.message.contains("No space left on device"), "{}", svc.message);
    assert!(
        lab.backups("nfs-backup", 200).is_empty(),
        "no partial staged archive"
    );
    let store = ChunkStore::open(
        &lab.store.path().join("repo").to_string_lossy(),
        OpenOptions::default(),
    );
    assert!(
        store.map(|s| s.list().unwrap().is_empty()).unwrap_or(true),
        "no half snapshot in the store"
    );
    assert!(
        lab.sim.state(|c| !c.guests[&200].config.contains_key("lock")),
        "the guest is not left locked"
    );

    lab.sim.clear_faults();
    lab.tick(Duration::from_secs(60)).await;
    let ok = lab.run_now().await;
    assert_eq!(
        ok.last_backup.as_ref().unwrap().result,
        BackupResult::Succeeded,
        "{ok:#?}"
    );
}

#[tokio::test]
async fn a_restart_after_the_ingest_committed_adopts_its_snapshot_instead_of_storing_another() {
    let mut lab = BackupLab::start().await;
    lab.apply_chunk_store_policy("nextcloud");
    lab.world
        .annotate::<BackupPolicy>("nightly", RUN_NOW_ANNOTATION, "once")
        .unwrap();
    let mut ingesting = false;
    for _ in 0..200 {
        lab.pass().await;
        let status = lab.status();
        if status
            .current_run
            .as_ref()
            .is_some_and(|r| r.items[0].state == BackupItemState::Ingesting)
        {
            ingesting = true;
            break;
        }
        lab.tick(Duration::from_secs(1)).await;
    }
    assert!(ingesting, "the item reached Ingesting: {:#?}", lab.status());
    // The ingest commits its snapshot, and the operator dies before it records that in status:
    // the new process finds status saying Ingesting and no job of its own.
    lab.pass().await; // starts the ingest job
    let repo = lab.store.path().join("repo");
    let mut committed = false;
    for _ in 0..500 {
        let opened = ChunkStore::open(&repo.to_string_lossy(), OpenOptions::default());
        committed = opened
            .as_ref()
            .ok()
            .and_then(|s| s.list().ok())
            .is_some_and(|l| l.iter().any(|s| s.complete));
        if committed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(committed, "the first process's ingest committed its snapshot");
    lab.world.deps.backup =
        homelab_autopilot::controllers::backup_policy::BackupDeps::new(settings(&lab.store));
    lab.world.deps.proxmox = fresh_deps();
    let status = lab.until_idle().await;
    assert_eq!(
        status.last_backup.as_ref().unwrap().result,
        BackupResult::Succeeded,
        "{status:#?}"
    );
    assert_eq!(lab.vzdump_tasks(), 1, "no second vzdump");
    // The staged-volid tag makes the ingest idempotent: the committed snapshot is adopted, not
    // stored twice, and the staged archive is deleted (a PVE task: wait for it).
    lab.settle().await;
    let store = ChunkStore::open(
        &lab.store.path().join("repo").to_string_lossy(),
        OpenOptions::default(),
    )
    .unwrap();
    let snaps: Vec<_> = store.list().unwrap().into_iter().filter(|s| s.complete).collect();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(
        status.services[0].volid.as_deref(),
        Some(format!("chunkstore/{}", snaps[0].id).as_str())
    );
    assert!(
        lab.backups("nfs-backup", 200).is_empty(),
        "no orphaned staged archive"
    );
}

#[tokio::test]
async fn a_guest_deleted_before_its_turn_fails_guest_not_found_and_the_others_go_on() {
    let mut lab = BackupLab::start().await;
    lab.apply_policy("  destination: {storage: {storage: nfs-backup}}\n");
    lab.world
        .annotate::<BackupPolicy>("nightly", RUN_NOW_ANNOTATION, "once")
        .unwrap();
    lab.pass().await;
    assert!(lab.status().current_run.is_some());
    // gitea (CT 201) is deleted in the Proxmox UI while nextcloud is being backed up.
    lab.sim.state_mut(|c| {
        c.guests.remove(&201);
    });
    lab.world.deps.proxmox.snapshots.invalidate(&lab.cluster_uid());
    let status = lab.until_idle().await;
    let gitea = status.services.iter().find(|s| s.name == "gitea").unwrap();
    assert_eq!(gitea.result, BackupResult::Failed);
    let last = status.last_backup.as_ref().unwrap();
    assert_eq!(last.result, BackupResult::PartiallySucceeded, "{status:#?}");
    assert!(last.message.contains("gitea (GuestNotFound)"), "{}", last.message);
    assert_eq!(lab.backups("nfs-backup", 201).len(), 0);
    assert_eq!(lab.backups("nfs-backup", 200).len(), 1);
}

#[tokio::test]
async fn scheduled_verification_finds_a_damaged_archive_among_the_retained_backups() {
    let mut lab = BackupLab::start().await;
    lab.apply_policy(
        "  services: {names: [nextcloud]}\n  destination: {storage: {storage: nfs-backup}}\n  \
         verification: {schedule: '*/10 * * * *'}\n",
    );
    let status = lab.run_now().await;
    assert_eq!(status.services[0].verified, Some(true));
    lab.tick(Duration::from_secs(11 * 60)).await;
    lab.pass().await;
    let fine = lab.status();
    let first = fine
        .last_verification
        .as_ref()
        .expect("a scheduled verification ran");
    assert_eq!((first.checked, first.failed), (1, 0), "{first:?}");

    // The archive on the NFS share is damaged (its header overwritten).
    let volid = status.services[0].volid.clone().unwrap();
    let file = lab
        .sim
        .state(|c| c.backup_dir("nfs-backup"))
        .join(volid.split_once("backup/").unwrap().1);
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::write(&file, vec![0u8; usize::try_from(len).unwrap()]).unwrap();
    lab.tick(Duration::from_secs(10 * 60)).await;
    lab.pass().await;
    let damaged = lab.status();
    let second = damaged.last_verification.as_ref().unwrap();
    assert_eq!((second.checked, second.failed), (1, 1), "{second:?}");
    assert!(second.message.contains(&volid), "{}", second.message);
    assert_eq!(
        find_condition(&damaged.conditions, "Verified").unwrap().status,
        ConditionStatus::False
    );
    assert_eq!(damaged.services[0].verified, Some(false));
    assert!(lab.event_reasons().iter().any(|r| r == "VerifyFailed"));
}

#[tokio::test]
async fn pbs_backups_are_verified_through_the_clusters_backup_server_and_a_bad_one_fails() {
    let mut lab = BackupLab::start_with(true).await;
    // The datastore does not verify new snapshots by itself: the operator must ask.
    lab.sim
        .inject(homelab_autopilot::pvesim::Fault::PbsVerifyNew { enabled: false })
        .unwrap();
    lab.apply_policy("  services: {names: [nextcloud]}\n  destination: {pbs: {storage: pbs-homelab}}\n");
    let good = lab.run_now().await;
    let svc = &good.services[0];
    assert_eq!(svc.result, BackupResult::Succeeded, "{good:#?}");
    assert_eq!(svc.verified, Some(true), "verified through PBS: {svc:?}");
    assert_eq!(
        find_condition(&good.conditions, "Verified").unwrap().status,
        ConditionStatus::True
    );

    // The next snapshot of VM 200 is damaged: PBS's verification fails, and so does the item.
    lab.sim
        .inject(homelab_autopilot::pvesim::Fault::PbsVerifyFailure {
            vmid: Some(200),
            count: 1,
        })
        .unwrap();
    lab.tick(Duration::from_secs(3600)).await;
    let bad = lab.run_now().await;
    let svc = &bad.services[0];
    assert_eq!(svc.result, BackupResult::Failed, "{bad:#?}");
    assert!(svc.message.contains("verification"), "{}", svc.message);
    assert_eq!(
        find_condition(&bad.conditions, "Verified").unwrap().reason,
        "VerifyFailed"
    );
    assert!(lab.event_reasons().iter().any(|r| r == "VerifyFailed"));
}

/// A small tmpfs mounted at a fresh directory (root only), unmounted on drop.
struct SmallFs(tempfile::TempDir);

impl SmallFs {
    fn mount(size: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Self(dir))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

#[tokio::test]
async fn a_full_chunk_store_fails_the_ingest_keeps_earlier_backups_and_leaves_no_staged_archive() {
    let fs = match SmallFs::mount("6m") {
        Ok(fs) => fs,
        Err(why) => {
            println!("SKIP chunk store full test: cannot mount a small tmpfs ({why})");
            return;
        }
    };
    let mut lab = BackupLab::start().await;
    let location = StoreSettings {
        repo: fs.0.path().join("repo"),
        key_file: None,
    };
    lab.world.deps.backup = homelab_autopilot::controllers::backup_policy::BackupDeps::new(location.clone());
    lab.apply_chunk_store_policy("gitea");
    let first = lab.run_now().await;
    assert_eq!(
        first.last_backup.as_ref().unwrap().result,
        BackupResult::Succeeded,
        "{first:#?}"
    );
    // Fill what is left of the store's file system.
    let filler = fs.0.path().join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/urandom", "bs=64k"])
        .arg(format!("of={}", filler.display()))
        .output();
    // gitea changed a lot since: new data that needs new space.
    lab.sim.state_mut(|c| {
        if let Some(g) = c.guests.get_mut(&201) {
            g.config.insert("description".into(), "x".repeat(100));
        }
    });
    lab.tick(Duration::from_secs(40 * 86_400)).await;
    let second = lab.run_now().await;
    let svc = second.services.iter().find(|s| s.name == "gitea").unwrap();
    if svc.result == BackupResult::Succeeded {
        println!("SKIP chunk store full test: the second backup found room after all");
        return;
    }
    assert_eq!(svc.result, BackupResult::Failed, "{second:#?}");
    let last = second.last_backup.as_ref().unwrap();
    assert!(last.message.contains("gitea (IngestFailed)"), "{}", last.message);
    assert_eq!(
        svc.volid, first.services[0].volid,
        "the last good backup is still the one shown"
    );
    lab.settle().await;
    assert!(
        lab.backups("nfs-backup", 201).is_empty(),
        "no orphaned staged archive"
    );
    let _ = std::fs::remove_file(&filler);
    let store = location.open_or_init().unwrap();
    let snaps: Vec<_> = store.list().unwrap().into_iter().filter(|s| s.complete).collect();
    assert_eq!(snaps.len(), 1, "no half snapshot: {snaps:?}");
    assert!(
        store.verify(None, true).unwrap().ok,
        "the earlier backup is intact"
    );
}

#[tokio::test]
async fn a_vzdump_that_ends_on_a_guest_lock_is_retried_not_polled_forever() {
    let mut lab = BackupLab::start().await;
    lab.apply_policy("  services: {names: [nextcloud]}\n  destination: {storage: {storage: nfs-backup}}\n");
    // The lock appears between our look at the cluster and the vzdump's own check.
    lab.sim.fail_next_task("vzdump", "VM 200 is locked (snapshot)");
    let status = lab.run_now().await;
    assert_eq!(
        status.last_backup.as_ref().unwrap().result,
        BackupResult::Succeeded,
        "{status:#?}"
    );
    assert_eq!(lab.vzdump_tasks(), 2, "the locked attempt, then the retry");
}
