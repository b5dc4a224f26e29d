//! The BackupPolicy kind's core (no kube): on `schedule` (or on demand), back up each selected
//! Service's guest with vzdump to PBS, a PVE backup storage or the operator's chunk store, check
//! each new backup, apply retention to this policy's backups only, and report.
//!
//! Every long step records its intent in status first (`currentRun`, then each item's state,
//! node and UPID), so a restarted operator resumes: an item with a UPID is polled, never started
//! again, and an item whose vzdump was requested but not recorded finds the backup by the marker
//! in its notes before it would start another. One pass does one bounded step per item.

pub mod cluster_config;
pub mod controller;
pub mod destination;
pub mod ingest;
pub mod plan;
pub mod reasons;

#[cfg(test)]
mod kube_tests;

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

use crate::controllers::kit::notify::{self, Channel, Cooldowns, Notice};
use crate::controllers::kit::schedule::{Due, Schedule, requeue_after, run_id, run_now_requested};
use crate::controllers::kit::time::elapsed;
use crate::controllers::kit::{Claims, Conditions, Outcome, PlannedEvent};
use crate::controllers::pve::guest::{GuestView, view_from};
use crate::controllers::pve::pbs::PbsAccess;
use crate::controllers::pve::reasons::failure_reason;
use crate::controllers::pve::restore::chunk_snapshot_name;
use crate::controllers::pve::selector::{Selection, select};
use crate::controllers::pve::task::{TaskView, handle, poll_task};
use crate::controllers::pve::{ClusterAccess, ProxmoxDeps};
use crate::crd::backup_policy::{
    BackupItemState, BackupPolicy, BackupPolicySpec, BackupPolicyStatus, BackupResult, BackupRun,
    BackupRunItem, CONDITION_BACKUP_SUCCEEDED, CONDITION_VERIFIED, NotificationEvent,
};
use crate::crd::common::{DeletionPolicy, GuestTarget};
use crate::crd::conditions::{ConditionStatus, READY};
use crate::crd::{BackupPolicy as Policy, Service};
use crate::metrics::Metrics;
use crate::proxmox::api::{ClusterResource, StorageContent};
use crate::proxmox::{NodeName, PveClient, Vmid};

use destination::{Check, Destination, as_owned, check_backup, file_name, find_backup, owned_backups};
use ingest::{IngestRequest, IngestView, Ingests, StoreSettings};
use plan::{human_bytes, may_start, merge_services, next_attempt, prune_plan, summarize};

/// The BackupPolicy controller's per-process state.
#[derive(Debug)]
pub struct BackupDeps {
    /// The operator's chunk store.
    pub store: StoreSettings,
    /// Chunk store ingest jobs.
    pub ingests: Ingests,
    /// When each notification was last sent (per policy, event and subject).
    pub cooldowns: Cooldowns,
    /// Guests a policy is backing up now, by (cluster UID, VMID): two policies selecting one
    /// guest take turns.
    claims: Claims<u32>,
}

impl BackupDeps {
    /// State with the chunk store at `store`.
    pub fn new(store: StoreSettings) -> Self {
        Self {
            store,
            ingests: Ingests::default(),
            cooldowns: Cooldowns::default(),
            claims: Claims::default(),
        }
    }

    /// Claims guest `vmid` of `cluster` for `policy`; false while another policy holds it.
    pub fn claim(&self, cluster: &str, vmid: u32, policy: &str) -> bool {
        self.claims.claim(cluster, vmid, policy)
    }

    /// Releases `policy`'s claim of guest `vmid`.
    pub fn release(&self, cluster: &str, vmid: u32, policy: &str) {
        self.claims.release(cluster, vmid, policy);
    }

    /// Releases every claim of `policy` (deleted).
    pub fn release_all(&self, policy: &str) {
        self.claims.release_all(policy);
    }
}

/// Gives the BackupPolicy controller its state.
pub trait HasBackupDeps {
    /// The BackupPolicy controller's state.
    fn backup(&self) -> &BackupDeps;
}

/// What one pass over a BackupPolicy reads: the object, the Services of its namespace and its
/// cluster access.
#[derive(Clone, Copy, Debug)]
pub struct PolicyInput<'a> {
    /// The policy.
    pub policy: &'a BackupPolicy,
    /// Its UID (the ownership proof in backup notes and store tags).
    pub uid: &'a str,
    /// Its namespace.
    pub namespace: &'a str,
    /// The Services of the namespace.
    pub services: &'a [Service],
    /// Its ProxmoxCluster.
    pub access: &'a ClusterAccess,
    /// Where notifications go (`spec.notifications`' Secret, read by the driver), or why they
    /// cannot; `None` without `spec.notifications`.
    pub notify: Option<&'a Result<Vec<Channel>, String>>,
    /// The PBS behind a `pbs` destination (the cluster's `backupServers` entry for that
    /// storage), when one is configured: new backups are verified through it.
    pub pbs: Option<&'a Result<PbsAccess, String>>,
}

struct Pass<'a> {
    input: PolicyInput<'a>,
    spec: &'a BackupPolicySpec,
    name: String,
    proxmox: &'a ProxmoxDeps,
    backup: &'a BackupDeps,
    metrics: &'a Metrics,
    now: Timestamp,
    status: BackupPolicyStatus,
    stored_conditions: Vec<crate::crd::conditions::Condition>,
    events: Vec<PlannedEvent>,
    requeue: Option<Duration>,
    /// Why the cluster cannot be used now, if it cannot.
    blocked: Option<(String, String)>,
    /// Notifications to send at the end of the pass, with their cooldown key.
    notices: Vec<(String, Notice)>,
}

/// One pass over a BackupPolicy.
pub async fn reconcile_core(
    proxmox: &ProxmoxDeps,
    backup: &BackupDeps,
    metrics: &Metrics,
    input: PolicyInput<'_>,
    now: Timestamp,
) -> Outcome<BackupPolicyStatus> {
    let stored = input.policy.status.clone().unwrap_or_default();
    let mut pass = Pass {
        input,
        spec: &input.policy.spec,
        name: input.policy.name_any(),
        proxmox,
        backup,
        metrics,
        now,
        stored_conditions: stored.conditions.clone(),
        status: stored,
        events: Vec::new(),
        requeue: None,
        blocked: None,
        notices: Vec::new(),
    };
    pass.status.observed_generation = input.policy.metadata.generation;
    pass.run().await;
    pass.send_notices().await;
    pass.finish()
}

impl Pass<'_> {
    /// Queues a notification of `event` about `subject` (a Service or a storage), if the
    /// policy asks for that event.
    fn notice(&mut self, event: NotificationEvent, subject: &str, title: String, message: String) {
        let Some(config) = &self.spec.notifications else {
            return;
        };
        if !config.events.contains(&event) {
            return;
        }
        let name = format!("{event:?}");
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("namespace".to_owned(), self.input.namespace.to_owned());
        labels.insert("backuppolicy".to_owned(), self.name.clone());
        labels.insert("subject".to_owned(), subject.to_owned());
        let key = format!("{name}/{subject}");
        self.notices.push((
            key,
            Notice {
                event: name,
                title,
                message,
                warning: event != NotificationEvent::BackupSucceeded,
                labels,
                time: self.now,
            },
        ));
    }

    async fn send_notices(&mut self) {
        let (Some(config), Some(channels)) = (&self.spec.notifications, self.input.notify) else {
            return;
        };
        if self.notices.is_empty() {
            return;
        }
        let cooldown = Duration::from_secs(u64::try_from(config.cooldown_seconds).unwrap_or(0));
        let owner = self.input.uid;
        let due: Vec<Notice> = std::mem::take(&mut self.notices)
            .into_iter()
            .filter(|(key, _)| {
                self.backup
                    .cooldowns
                    .allow(&format!("{owner}/{key}"), self.now, cooldown)
            })
            .map(|(_, n)| n)
            .collect();
        let channels = match channels {
            Ok(c) => c,
            Err(e) => {
                if !due.is_empty() {
                    self.events.push(PlannedEvent::warning(
                        reasons::NOTIFICATION_FAILED,
                        reasons::ACTION_NOTIFY,
                        format!("cannot notify: {e}"),
                    ));
                }
                return;
            }
        };
        for n in &due {
            let failures = notify::send(channels, n).await;
            if !failures.is_empty() {
                self.events.push(PlannedEvent::warning(
                    reasons::NOTIFICATION_FAILED,
                    reasons::ACTION_NOTIFY,
                    format!("cannot send {}: {}", n.event, failures.join("; ")),
                ));
            }
        }
    }

    fn soon(&mut self, after: Duration) {
        self.requeue = Some(self.requeue.map_or(after, |r| r.min(after)));
    }

    fn set(&mut self, type_: &str, status: ConditionStatus, reason: &str, message: &str) -> bool {
        let generation = self.input.policy.metadata.generation;
        Conditions::new(&self.stored_conditions, generation, self.now)
            .set(&mut self.status.conditions, type_, status, reason, message)
            .is_news()
    }

    async fn run(&mut self) {
        let schedule = match Schedule::from_spec("spec.", &self.spec.schedule, &self.spec.time_zone) {
            Ok(s) => s,
            Err(e) => {
                self.blocked = Some((e.reason().to_owned(), e.to_string()));
                return;
            }
        };
        let Some(dest) = Destination::of(self.spec) else {
            self.blocked = Some((
                crate::controllers::pve::reasons::INVALID_SPEC.to_owned(),
                "spec.destination: set exactly one of pbs, storage or chunkStore".to_owned(),
            ));
            return;
        };
        let selection = select(
            self.input.services,
            &self.spec.services,
            &self.spec.cluster_ref.name,
        );
        if let Err(u) = &self.input.access.client {
            // Runs still start on time (recorded first); they wait for the cluster.
            self.blocked = Some((u.reason.clone(), u.message.clone()));
            self.soon(self.input.access.resync.min(Duration::from_secs(60)));
        }
        if self.status.current_run.is_none() {
            self.maybe_reverify(dest).await;
        }
        if self.status.current_run.is_none() {
            self.maybe_start(&schedule, &selection, dest);
        }
        if self.status.current_run.is_some() {
            // Without a client the run waits (Ready says why).
            if let Ok(client) = &self.input.access.client {
                self.advance(client, dest, &schedule, &selection).await;
            }
        }
        self.status.next_run_time = if self.spec.suspend {
            None
        } else {
            schedule.next_after(self.now).ok()
        };
        if let Some(next) = self.status.next_run_time
            && let Ok(after) = schedule.next_after(next)
        {
            self.metrics
                .backup
                .interval_seconds
                .with_label_values(&[self.input.namespace, &self.name])
                .set(elapsed(next, after).as_secs_f64());
        }
        self.ready(&selection);
    }

    fn maybe_start(&mut self, schedule: &Schedule, selection: &Selection<'_>, dest: Destination<'_>) {
        let annotations = self.input.policy.annotations();
        let request =
            run_now_requested(annotations, self.status.last_run_request.as_deref()).map(str::to_owned);
        let scheduled = if request.is_some() {
            Some(self.now)
        } else if self.spec.suspend {
            None
        } else {
            let created = self
                .input
                .policy
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(self.now, |t| t.0);
            let deadline = self
                .spec
                .starting_deadline_seconds
                .map(|s| SignedDuration::from_secs(i64::from(s)));
            match schedule.due(self.status.last_scheduled_time, created, self.now, deadline) {
                Ok(Due::Run { scheduled }) => {
                    self.status.last_scheduled_time = Some(scheduled);
                    Some(scheduled)
                }
                Ok(Due::Skip(skipped)) => {
                    self.status.last_scheduled_time = Some(skipped.scheduled);
                    self.events.push(PlannedEvent::warning(
                        reasons::SCHEDULE_MISSED,
                        reasons::ACTION_SCHEDULE,
                        skipped.message(),
                    ));
                    None
                }
                Ok(Due::Wait { .. }) => None,
                Err(e) => {
                    self.blocked = Some((e.reason().to_owned(), e.to_string()));
                    None
                }
            }
        };
        let Some(scheduled) = scheduled else {
            return;
        };
        if let Some(request) = &request {
            self.status.last_run_request = Some(request.clone());
        }
        let items: Vec<BackupRunItem> = selection
            .selected
            .iter()
            .map(|svc| {
                BackupRunItem::pending(GuestTarget::new(
                    svc.name_any(),
                    svc.spec.vmid,
                    svc.spec.type_,
                    None,
                ))
            })
            .collect();
        if items.is_empty() {
            self.events.push(PlannedEvent::warning(
                reasons::BACKUP_FAILED,
                reasons::ACTION_BACKUP,
                format!(
                    "nothing to back up: {}",
                    no_services_message(self.spec, selection)
                ),
            ));
            return;
        }
        let id = match &request {
            Some(_) => format!("now-{}", run_id(self.now)),
            None => run_id(scheduled),
        };
        let names: Vec<&str> = items.iter().map(|i| i.guest.service.as_str()).collect();
        self.events.push(PlannedEvent::normal(
            reasons::BACKUP_STARTED,
            reasons::ACTION_BACKUP,
            format!(
                "run {id}: backing up {} ({}) to {}",
                plural(items.len(), "Service"),
                names.join(", "),
                describe(dest)
            ),
        ));
        self.status.current_run = Some(BackupRun {
            run_id: id,
            scheduled_time: scheduled,
            start_time: self.now,
            request,
            items,
        });
        // The run is recorded before any guest is touched.
        self.soon(Duration::ZERO);
    }

    /// `verification.schedule`: when a slot is due (and no run is in progress), check every
    /// retained backup of this policy again: file archives by their header and config, PBS
    /// snapshots by PBS's verification state, chunk-store snapshots by reading every chunk back.
    async fn maybe_reverify(&mut self, dest: Destination<'_>) {
        let Some(expr) = self
            .spec
            .verification
            .as_ref()
            .and_then(|v| v.schedule.as_deref())
        else {
            return;
        };
        let Ok(schedule) = Schedule::from_spec("spec.verification.", expr, &self.spec.time_zone) else {
            return;
        };
        let created = self
            .input
            .policy
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(self.now, |t| t.0);
        let last = self.status.last_verification.as_ref().map(|v| v.scheduled_time);
        let scheduled = match schedule.due(last, created, self.now, None) {
            Ok(Due::Run { scheduled }) => scheduled,
            Ok(Due::Wait { next }) => {
                self.soon(requeue_after(self.now, next));
                return;
            }
            _ => return,
        };
        let Ok(client) = &self.input.access.client else {
            return;
        };
        let (checked, failures) = match dest {
            Destination::ChunkStore(_) => {
                let store = self.backup.store.clone();
                let uid = self.input.uid.to_owned();
                tokio::task::spawn_blocking(move || ingest::verify_all(&store, &uid))
                    .await
                    .unwrap_or_else(|e| Err(format!("verification stopped: {e}")))
                    .unwrap_or_else(|e| (0, vec![e]))
            }
            Destination::Pbs { storage } | Destination::Storage { storage, .. } => {
                self.reverify_on_pve(client, storage, matches!(dest, Destination::Pbs { .. }))
                    .await
            }
        };
        let failed = failures.len();
        let mut message = failures.iter().take(5).cloned().collect::<Vec<_>>().join("; ");
        if failed > 5 {
            message.push_str(&format!("; and {} more", failed - 5));
        }
        if failed > 0 {
            self.events.push(PlannedEvent::warning(
                reasons::VERIFY_FAILED,
                reasons::ACTION_VERIFY,
                format!("scheduled verification: {failed} of {checked} backups do not read back: {message}"),
            ));
            self.set(
                CONDITION_VERIFIED,
                ConditionStatus::False,
                reasons::VERIFY_FAILED,
                &format!("scheduled verification: {failed} of {checked} backups do not read back"),
            );
            self.notice(
                NotificationEvent::VerifyFailed,
                "scheduled verification",
                format!("{failed} backups of {} do not read back", self.name),
                message.clone(),
            );
        } else if checked > 0 {
            self.set(
                CONDITION_VERIFIED,
                ConditionStatus::True,
                reasons::VERIFIED,
                &format!("scheduled verification: all {checked} retained backups read back"),
            );
        }
        self.status.last_verification = Some(crate::crd::backup_policy::VerificationRun {
            scheduled_time: scheduled,
            completion_time: self.now,
            checked: i32::try_from(checked).unwrap_or(i32::MAX),
            failed: i32::try_from(failed).unwrap_or(i32::MAX),
            message,
        });
    }

    /// Checks every backup of this policy on `storage`, on every online node's view of it.
    async fn reverify_on_pve(
        &mut self,
        client: &PveClient,
        storage: &str,
        pbs: bool,
    ) -> (usize, Vec<String>) {
        let nodes = match client.nodes().await {
            Ok(n) => n,
            Err(e) => return (0, vec![format!("cannot list the nodes: {e}")]),
        };
        let mut seen = BTreeSet::new();
        let mut failures = Vec::new();
        for entry in nodes.iter().filter(|n| n.status == "online") {
            let Ok(rows) = owned_backups(client, &entry.node, storage, None, self.input.uid).await else {
                continue;
            };
            for row in rows {
                if !seen.insert(row.volid.clone()) {
                    continue;
                }
                if let Check::Failed(why) = check_backup(client, &entry.node, &row, pbs).await {
                    failures.push(why);
                    for svc in self
                        .status
                        .services
                        .iter_mut()
                        .filter(|s| s.volid.as_deref() == Some(row.volid.as_str()))
                    {
                        svc.verified = Some(false);
                    }
                }
            }
        }
        (seen.len(), failures)
    }

    async fn advance(
        &mut self,
        client: &PveClient,
        dest: Destination<'_>,
        schedule: &Schedule,
        selection: &Selection<'_>,
    ) {
        let access = self.input.access;
        let resources = match self
            .proxmox
            .snapshots
            .resources(&access.uid, client, access.resync, self.now)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                self.blocked = Some((failure_reason(&e).to_owned(), e.to_string()));
                self.soon(self.proxmox.tuning.reconnect_min);
                return;
            }
        };
        let Some(mut run) = self.status.current_run.take() else {
            return;
        };

        let next_slot = schedule.next_after(run.scheduled_time).ok();
        for i in 0..run.items.len() {
            if run.items[i].is_done() {
                continue;
            }
            self.step(&mut run, i, client, dest, &resources, next_slot).await;
        }
        if run.items.iter().all(BackupRunItem::is_done) {
            if self.spec.cluster_config {
                self.export_cluster_config(&run, client, &resources).await;
            }
            self.finish_run(run, client, dest, selection).await;
        } else {
            self.status.current_run = Some(run);
            self.soon(self.proxmox.tuning.task_poll);
        }
    }

    async fn step(
        &mut self,
        run: &mut BackupRun,
        i: usize,
        client: &PveClient,
        dest: Destination<'_>,
        resources: &[ClusterResource],
        next_slot: Option<Timestamp>,
    ) {
        let Some(vmid) = u32::try_from(run.items[i].guest.vmid)
            .ok()
            .and_then(|v| Vmid::new(v).ok())
        else {
            let item = &mut run.items[i];
            let message = format!("VMID {} is not valid", item.guest.vmid);
            self.fail(item, reasons::GUEST_NOT_FOUND, message);
            return;
        };
        match run.items[i].state {
            BackupItemState::Pending => self.start(run, i, vmid, resources, next_slot),
            BackupItemState::Running => {
                let run_id = run.run_id.clone();
                let item = &mut run.items[i];
                self.vzdump(item, &run_id, vmid, client, dest, resources, next_slot)
                    .await;
            }
            BackupItemState::Ingesting => {
                let run_id = run.run_id.clone();
                self.ingest(&mut run.items[i], &run_id, client, dest).await;
            }
            BackupItemState::Verifying => self.verify(&mut run.items[i], vmid, client, dest).await,
            BackupItemState::Succeeded | BackupItemState::Failed => {}
        }
    }

    /// A pending item: find the guest, wait for a slot, and record the intent to back it up.
    fn start(
        &mut self,
        run: &mut BackupRun,
        i: usize,
        vmid: Vmid,
        resources: &[ClusterResource],
        next_slot: Option<Timestamp>,
    ) {
        if let Some(at) = run.items[i].next_attempt_time.filter(|t| *t > self.now) {
            self.soon(elapsed(self.now, at));
            return;
        }
        let facts = match view_from(resources, vmid, run.items[i].guest.type_) {
            GuestView::Found(facts) => facts,
            GuestView::Missing | GuestView::WrongType { .. } | GuestView::Unavailable(_) => {
                let item = &mut run.items[i];
                let message = format!(
                    "no {} with VMID {} exists in the cluster (Service {})",
                    item.guest.type_.short_name(),
                    vmid,
                    item.guest.service
                );
                self.fail(item, reasons::GUEST_NOT_FOUND, message);
                return;
            }
        };
        let node = facts.guest.node.to_string();
        if !may_start(&run.items, self.spec.concurrency, &node) {
            return;
        }
        let item = &mut run.items[i];
        if let Some(lock) = facts.lock.as_deref().filter(|l| !l.is_empty()) {
            self.locked(item, lock, next_slot);
            return;
        }
        if !self
            .backup
            .claim(&self.input.access.uid, vmid.get(), self.input.uid)
        {
            item.message = "another BackupPolicy is backing up this guest; waiting for it".into();
            self.soon(plan::LOCK_BACKOFF_MIN);
            return;
        }
        item.guest.node = Some(node);
        item.state = BackupItemState::Running;
        item.start_time = Some(self.now);
        item.upid = None;
        item.message = String::new();
        self.soon(Duration::ZERO);
    }

    /// A running item: start vzdump (unless a backup of this run already exists), or poll it.
    #[allow(clippy::too_many_arguments)]
    async fn vzdump(
        &mut self,
        item: &mut BackupRunItem,
        run_id: &str,
        vmid: Vmid,
        client: &PveClient,
        dest: Destination<'_>,
        resources: &[ClusterResource],
        next_slot: Option<Timestamp>,
    ) {
        let Some(node) = item.guest.node.as_deref().and_then(|n| NodeName::new(n).ok()) else {
            item.state = BackupItemState::Pending;
            return;
        };
        let storage = dest.vzdump_storage();
        let Some(upid) = item.upid.clone() else {
            // The intent is recorded; a restart may have lost the UPID of a vzdump that ran:
            // a backup of this run with our marker means it did.
            match find_backup(client, &node, storage, vmid, self.input.uid, run_id).await {
                Ok(Some(row)) => return self.found(item, row, dest),
                Ok(None) => {}
                Err(e) if e.is_transient() => return self.soon(self.proxmox.tuning.task_poll),
                Err(e) => {
                    return self.fail(
                        item,
                        reasons::TASK_FAILED,
                        format!("cannot list backups on storage {storage}: {e}"),
                    );
                }
            }
            let request = dest.vzdump_request(self.spec, vmid, self.input.uid, run_id);
            match client.vzdump(&node, &request).await {
                Ok(task) => {
                    item.upid = Some(handle(&task));
                    self.proxmox.snapshots.invalidate(&self.input.access.uid);
                    self.soon(self.proxmox.tuning.task_poll);
                }
                Err(e) if e.is_transient() => self.soon(self.proxmox.tuning.reconnect_min),
                Err(e) if e.is_locked() => {
                    let message = e.to_string();
                    self.locked(item, &message, next_slot);
                }
                Err(e) => self.fail(item, reasons::TASK_FAILED, format!("vzdump refused: {e}")),
            }
            return;
        };
        match poll_task(client, &upid).await {
            TaskView::None | TaskView::Running(_) => self.soon(self.proxmox.tuning.task_poll),
            TaskView::Done { error: None, .. } => {
                match find_backup(client, &node, storage, vmid, self.input.uid, run_id).await {
                    Ok(Some(row)) => self.found(item, row, dest),
                    Ok(None) => self.fail(
                        item,
                        reasons::BACKUP_MISSING,
                        format!(
                            "vzdump {} succeeded but storage {storage} lists no backup of guest {vmid} \
                             with this policy's notes",
                            upid.as_str()
                        ),
                    ),
                    Err(e) if e.is_transient() => self.soon(self.proxmox.tuning.task_poll),
                    Err(e) => self.fail(
                        item,
                        reasons::BACKUP_MISSING,
                        format!("cannot list backups on storage {storage}: {e}"),
                    ),
                }
            }
            TaskView::Done {
                error: Some(error),
                locked,
                ..
            } => {
                self.proxmox.snapshots.invalidate(&self.input.access.uid);
                // "job errors" says little: the log's ERROR lines say what went wrong.
                let details = error_lines(client, &upid).await;
                let error = if details.is_empty() {
                    error
                } else {
                    format!("{error}: {}", details.join("; "))
                };
                // vzdump reports a locked guest in its log only; the job ends "job errors".
                let locked = locked || details.iter().any(|d| crate::proxmox::guest_lock(d).is_some());
                if locked {
                    self.locked(item, &error, next_slot);
                } else if matches!(view_from(resources, vmid, item.guest.type_), GuestView::Missing)
                    || error.contains("unable to find")
                {
                    self.fail(
                        item,
                        reasons::GUEST_NOT_FOUND,
                        format!("guest {vmid} was deleted during its backup: {error}"),
                    );
                } else {
                    self.fail(item, reasons::TASK_FAILED, format!("vzdump failed: {error}"));
                }
            }
        }
    }

    /// vzdump made `row`: next, ingest it (chunk store), verify it, or be done.
    fn found(&mut self, item: &mut BackupRunItem, row: StorageContent, dest: Destination<'_>) {
        item.upid = None;
        item.size_bytes = i64::try_from(row.size).ok();
        if dest.on_pve() {
            item.volid = Some(row.volid);
            if let Destination::Storage { .. } = dest {
                item.stored_bytes = item.size_bytes;
            }
            if self.spec.verify_after_backup() {
                item.state = BackupItemState::Verifying;
            } else {
                self.succeed(item);
            }
        } else {
            item.staged_volid = Some(row.volid);
            item.state = BackupItemState::Ingesting;
        }
        self.soon(Duration::ZERO);
    }

    async fn ingest(
        &mut self,
        item: &mut BackupRunItem,
        run_id: &str,
        client: &PveClient,
        dest: Destination<'_>,
    ) {
        let Destination::ChunkStore(chunk) = dest else {
            item.state = BackupItemState::Verifying;
            return;
        };
        let Some(staged) = item.staged_volid.clone() else {
            return self.fail(item, reasons::INGEST_FAILED, "no staged archive recorded".into());
        };
        let Some(file) = file_name(&staged) else {
            return self.fail(
                item,
                reasons::INGEST_FAILED,
                format!(
                    "staged volid {staged} is not a file on storage {}",
                    chunk.staging_storage
                ),
            );
        };
        let request = IngestRequest {
            path: std::path::Path::new(&chunk.staging_path).join(file),
            staged_volid: staged.clone(),
            name: chunk_snapshot_name(self.input.namespace, &self.name, &item.guest),
            policy_uid: self.input.uid.to_owned(),
            run_id: run_id.to_owned(),
        };
        match self.backup.ingests.poll_or_start(&self.backup.store, &request) {
            IngestView::Running => self.soon(self.proxmox.tuning.task_poll),
            IngestView::Done(result) => {
                let cleanup = if chunk.keep_staged_archive {
                    None
                } else {
                    self.delete_staged(client, item, &staged).await
                };
                match result {
                    Ok(done) => {
                        item.volid = Some(format!("chunkstore/{}", done.snapshot_id));
                        item.size_bytes = i64::try_from(done.logical_bytes).ok();
                        item.stored_bytes = i64::try_from(done.stored_bytes).ok();
                        item.verified = Some(done.verified);
                        if done.verified {
                            self.succeed(item);
                            if let Some(warning) = cleanup {
                                item.message = warning;
                            }
                        } else {
                            let message = format!(
                                "snapshot {} does not read back: {}",
                                done.snapshot_id,
                                done.problems.join("; ")
                            );
                            self.verify_failed(item, message);
                        }
                    }
                    Err(message) => self.fail(item, reasons::INGEST_FAILED, message),
                }
            }
        }
    }

    /// Deletes the staged archive through the API; a warning when it cannot.
    async fn delete_staged(
        &mut self,
        client: &PveClient,
        item: &BackupRunItem,
        staged: &str,
    ) -> Option<String> {
        let node = item.guest.node.as_deref().and_then(|n| NodeName::new(n).ok())?;
        let storage = destination::storage_of(staged);
        match client.delete_volume(&node, storage, staged, None).await {
            Ok(_) => None,
            Err(e) => Some(format!(
                "the staged archive {staged} could not be deleted ({e}); delete it by hand"
            )),
        }
    }

    async fn verify(
        &mut self,
        item: &mut BackupRunItem,
        vmid: Vmid,
        client: &PveClient,
        dest: Destination<'_>,
    ) {
        let (Some(node), Some(volid)) = (
            item.guest.node.as_deref().and_then(|n| NodeName::new(n).ok()),
            item.volid.clone(),
        ) else {
            return self.fail(
                item,
                reasons::BACKUP_MISSING,
                "no backup recorded to verify".into(),
            );
        };
        let storage = dest.vzdump_storage();
        let row = match owned_backups(client, &node, storage, Some(vmid), self.input.uid).await {
            Ok(rows) => rows.into_iter().find(|r| r.volid == volid),
            Err(e) if e.is_transient() => return self.soon(self.proxmox.tuning.task_poll),
            Err(e) => {
                return self.fail(
                    item,
                    reasons::BACKUP_MISSING,
                    format!("cannot list backups on storage {storage}: {e}"),
                );
            }
        };
        let Some(row) = row else {
            return self.fail(
                item,
                reasons::BACKUP_MISSING,
                format!("backup {volid} is gone from storage {storage}"),
            );
        };
        let pbs = matches!(dest, Destination::Pbs { .. });
        match check_backup(client, &node, &row, pbs).await {
            Check::Verified => {
                item.verified = Some(true);
                self.succeed(item);
            }
            Check::Failed(message) => {
                item.verified = Some(false);
                self.verify_failed(item, message);
            }
            // PBS has not verified it yet: through the cluster's backupServers entry we ask it
            // to; without one PBS verifies on its own schedule and `verified` stays absent.
            Check::Pending if pbs => match self.input.pbs {
                Some(Ok(access)) => self.verify_on_pbs(item, &volid, access).await,
                _ => self.succeed(item),
            },
            Check::Pending => self.soon(self.proxmox.tuning.task_poll),
        }
    }

    /// Starts PBS's verification of the new snapshot (recording the PBS task in the item), or
    /// polls it and reads the result.
    async fn verify_on_pbs(&mut self, item: &mut BackupRunItem, volid: &str, access: &PbsAccess) {
        let Some((_, mut snap)) = crate::proxmox::pbs::SnapshotRef::from_pve_volid(volid) else {
            return self.succeed(item);
        };
        snap.ns = access.namespace.clone();
        let store = access.datastore.as_str();
        let Some(upid) = item.upid.clone() else {
            match access.client.verify_snapshot(store, &snap).await {
                Ok(task) => {
                    item.upid = Some(crate::crd::common::TaskHandle::new(task.as_str().to_owned()));
                    self.soon(self.proxmox.tuning.task_poll);
                }
                Err(e) if e.is_transient() => self.soon(self.proxmox.tuning.task_poll),
                // PBS refused to verify (permissions): the backup stands, unverified.
                Err(e) => {
                    item.message = format!("PBS {} did not start a verification: {e}", access.server);
                    self.succeed(item);
                }
            }
            return;
        };
        let Ok(task) = crate::proxmox::pbs::PbsUpid::parse(upid.as_str()) else {
            return self.succeed(item);
        };
        match access.client.task_status(&task).await {
            Ok(status) if status.exit().is_none() => self.soon(self.proxmox.tuning.task_poll),
            Ok(_) => match access.client.snapshot(store, &snap).await {
                Ok(Some(found)) => match found.verify_state() {
                    Some(crate::proxmox::pbs::VerifyState::Ok) => {
                        item.verified = Some(true);
                        self.succeed(item);
                    }
                    Some(crate::proxmox::pbs::VerifyState::Failed) => {
                        item.verified = Some(false);
                        let message = format!("PBS {} verification of {volid} failed", access.server);
                        self.verify_failed(item, message);
                    }
                    _ => self.succeed(item),
                },
                Ok(None) => self.fail(
                    item,
                    reasons::BACKUP_MISSING,
                    format!("PBS {} no longer lists {volid}", access.server),
                ),
                Err(_) => self.soon(self.proxmox.tuning.task_poll),
            },
            Err(e) if e.is_transient() => self.soon(self.proxmox.tuning.task_poll),
            Err(e) => {
                item.message = format!("cannot follow PBS verification {}: {e}", upid.as_str());
                self.succeed(item);
            }
        }
    }

    fn verify_failed(&mut self, item: &mut BackupRunItem, message: String) {
        self.events.push(PlannedEvent::warning(
            reasons::VERIFY_FAILED,
            reasons::ACTION_VERIFY,
            format!("Service {}: {message}", item.guest.service),
        ));
        self.fail(item, reasons::VERIFY_FAILED, message);
    }

    /// A locked guest: try again with backoff until the next slot, then fail `GuestLocked`.
    fn locked(&mut self, item: &mut BackupRunItem, lock: &str, next_slot: Option<Timestamp>) {
        let attempts = item.attempts.unwrap_or(0).saturating_add(1);
        let next = next_attempt(self.now, attempts);
        if next_slot.is_some_and(|slot| next >= slot) {
            let message = format!(
                "guest {} stayed locked ({lock}) until the next scheduled run; tried {attempts} times",
                item.guest.vmid
            );
            item.attempts = Some(attempts);
            return self.fail(item, reasons::GUEST_LOCKED, message);
        }
        if let Ok(vmid) = u32::try_from(item.guest.vmid) {
            self.backup.release(&self.input.access.uid, vmid, self.input.uid);
        }
        item.attempts = Some(attempts);
        item.next_attempt_time = Some(next);
        item.state = BackupItemState::Pending;
        item.upid = None;
        item.start_time = None;
        item.message = format!("the guest is locked ({lock}); trying again at {next}");
        self.soon(elapsed(self.now, next));
    }

    fn succeed(&mut self, item: &mut BackupRunItem) {
        item.state = BackupItemState::Succeeded;
        item.completion_time = Some(self.now);
        item.upid = None;
        item.reason = None;
        item.next_attempt_time = None;
        self.release(item);
    }

    fn fail(&mut self, item: &mut BackupRunItem, reason: &str, message: String) {
        item.state = BackupItemState::Failed;
        item.completion_time = Some(self.now);
        item.upid = None;
        item.reason = Some(reason.to_owned());
        item.message = message;
        item.next_attempt_time = None;
        self.release(item);
    }

    fn release(&self, item: &BackupRunItem) {
        if let Ok(vmid) = u32::try_from(item.guest.vmid) {
            self.backup.release(&self.input.access.uid, vmid, self.input.uid);
        }
    }

    async fn finish_run(
        &mut self,
        run: BackupRun,
        client: &PveClient,
        dest: Destination<'_>,
        selection: &Selection<'_>,
    ) {
        let summary = summarize(&run, self.now);
        let selected: BTreeSet<String> = selection.selected.iter().map(|s| s.name_any()).collect();
        self.status.services = merge_services(&self.status.services, &run, &selected, self.now);
        let ok = summary.result == BackupResult::Succeeded;
        if ok {
            self.status.last_successful_time = Some(self.now);
        }
        let (cond, reason) = match summary.result {
            BackupResult::Succeeded => (ConditionStatus::True, reasons::BACKUP_SUCCEEDED),
            BackupResult::PartiallySucceeded => (ConditionStatus::False, reasons::PARTIALLY_SUCCEEDED),
            BackupResult::Failed => (ConditionStatus::False, reasons::BACKUP_FAILED),
        };
        let message = format!("run {}: {}", run.run_id, summary.message);
        self.set(CONDITION_BACKUP_SUCCEEDED, cond, reason, &message);
        if ok {
            self.events.push(PlannedEvent::normal(
                reasons::BACKUP_SUCCEEDED,
                reasons::ACTION_BACKUP,
                message.clone(),
            ));
        } else {
            self.events.push(PlannedEvent::warning(
                reasons::BACKUP_FAILED,
                reasons::ACTION_BACKUP,
                message.clone(),
            ));
        }
        self.verified_condition(&run);
        self.record_metrics(&run, &summary);
        for item in &run.items {
            let service = item.guest.service.clone();
            match (item.state, item.reason.as_deref()) {
                (BackupItemState::Succeeded, _) => self.notice(
                    NotificationEvent::BackupSucceeded,
                    &service,
                    format!("Backup of {service} succeeded"),
                    format!(
                        "BackupPolicy {}/{}, run {}: {}",
                        self.input.namespace,
                        self.name,
                        run.run_id,
                        item.volid.as_deref().unwrap_or_default()
                    ),
                ),
                (_, Some(reasons::VERIFY_FAILED)) => self.notice(
                    NotificationEvent::VerifyFailed,
                    &service,
                    format!("Backup of {service} does not read back"),
                    format!(
                        "BackupPolicy {}/{}, run {}: {}",
                        self.input.namespace, self.name, run.run_id, item.message
                    ),
                ),
                _ => self.notice(
                    NotificationEvent::BackupFailed,
                    &service,
                    format!("Backup of {service} failed"),
                    format!(
                        "BackupPolicy {}/{}, run {}: {} ({})",
                        self.input.namespace,
                        self.name,
                        run.run_id,
                        item.message,
                        item.reason.as_deref().unwrap_or("Failed")
                    ),
                ),
            }
        }
        self.space_check(&run, client, dest).await;
        self.status.last_backup = Some(summary);
        self.retain(&run, client, dest).await;
    }

    /// Stores the cluster's configuration in the chunk store (`spec.clusterConfig`), once per
    /// run, when its guests are done.
    async fn export_cluster_config(
        &mut self,
        run: &BackupRun,
        client: &PveClient,
        resources: &[ClusterResource],
    ) {
        let name = format!("{}.{}.cluster", self.input.namespace, self.name);
        let result = match cluster_config::export(client, resources).await {
            Ok(bytes) => {
                let (store, uid, run_id, name) = (
                    self.backup.store.clone(),
                    self.input.uid.to_owned(),
                    run.run_id.clone(),
                    name.clone(),
                );
                tokio::task::spawn_blocking(move || {
                    cluster_config::store(&store, &name, &uid, &run_id, &bytes)
                })
                .await
                .unwrap_or_else(|e| Err(format!("export stopped: {e}")))
            }
            Err(e) => Err(e),
        };
        let previous = self.status.cluster_config.take().unwrap_or_default();
        self.status.cluster_config = Some(match result {
            Ok(id) => crate::crd::backup_policy::ClusterConfigStatus {
                last_success_time: Some(self.now),
                volid: Some(format!(
                    "{}{id}",
                    crate::controllers::pve::restore::CHUNKSTORE_PREFIX
                )),
                message: String::new(),
            },
            Err(message) => {
                self.events.push(PlannedEvent::warning(
                    reasons::CLUSTER_CONFIG_FAILED,
                    reasons::ACTION_BACKUP,
                    message.clone(),
                ));
                crate::crd::backup_policy::ClusterConfigStatus { message, ..previous }
            }
        });
    }

    /// `SpaceLow` when the storage vzdump writes to, or the chunk store's volume, is fuller
    /// than `spaceWarningPercent`.
    async fn space_check(&mut self, run: &BackupRun, client: &PveClient, dest: Destination<'_>) {
        let Some(config) = &self.spec.notifications else {
            return;
        };
        let limit = f64::from(config.space_warning_percent);
        let mut full: Vec<(String, f64)> = Vec::new();
        let node = run
            .items
            .iter()
            .find_map(|i| i.guest.node.as_deref())
            .and_then(|n| NodeName::new(n).ok());
        if let Some(node) = node
            && let Ok(rows) = client.node_storages(&node, None).await
            && let Some(row) = rows.iter().find(|r| r.storage == dest.vzdump_storage())
            && let (Some(used), Some(total)) = (row.used, row.total)
            && total > 0
        {
            full.push((row.storage.clone(), used as f64 * 100.0 / total as f64));
        }
        if let Destination::ChunkStore(_) = dest
            && let Some(percent) = ingest::volume_used_percent(&self.backup.store)
        {
            full.push(("the chunk store".to_owned(), percent));
        }
        for (what, percent) in full.into_iter().filter(|(_, p)| *p >= limit) {
            self.notice(
                NotificationEvent::SpaceLow,
                &what,
                format!("{what} is {percent:.0}% full"),
                format!(
                    "BackupPolicy {}/{} writes there; free space or raise spaceWarningPercent ({}).",
                    self.input.namespace, self.name, config.space_warning_percent
                ),
            );
        }
    }

    fn verified_condition(&mut self, run: &BackupRun) {
        let ok: Vec<&BackupRunItem> = run
            .items
            .iter()
            .filter(|i| i.state == BackupItemState::Succeeded || i.verified == Some(false))
            .collect();
        let failed: Vec<&str> = ok
            .iter()
            .filter(|i| i.verified == Some(false))
            .map(|i| i.guest.service.as_str())
            .collect();
        let pending = ok.iter().filter(|i| i.verified.is_none()).count();
        if !failed.is_empty() {
            let message = format!("backups of {} do not read back", failed.join(", "));
            self.set(
                CONDITION_VERIFIED,
                ConditionStatus::False,
                reasons::VERIFY_FAILED,
                &message,
            );
        } else if ok.is_empty() || pending > 0 {
            let message = if self.spec.verify_after_backup() {
                format!(
                    "{} of the last run not verified yet",
                    plural(pending.max(1), "backup")
                )
            } else {
                "verification.afterBackup is off".to_owned()
            };
            self.set(
                CONDITION_VERIFIED,
                ConditionStatus::Unknown,
                reasons::NOT_VERIFIED,
                &message,
            );
        } else {
            let message = format!("{} of run {} read back", plural(ok.len(), "backup"), run.run_id);
            self.set(
                CONDITION_VERIFIED,
                ConditionStatus::True,
                reasons::VERIFIED,
                &message,
            );
        }
    }

    fn record_metrics(&self, run: &BackupRun, summary: &crate::crd::backup_policy::BackupRunSummary) {
        let m = &self.metrics.backup;
        let ns = self.input.namespace;
        let seconds = self.now.as_second() as f64;
        for item in &run.items {
            if item.state == BackupItemState::Succeeded {
                m.last_success_timestamp_seconds
                    .with_label_values(&[ns, &self.name, &item.guest.service])
                    .set(seconds);
            } else {
                m.failures_total
                    .with_label_values(&[ns, &self.name, item.reason.as_deref().unwrap_or("Failed")])
                    .inc();
            }
            if let (Some(start), Some(end)) = (item.start_time, item.completion_time) {
                m.duration_seconds
                    .with_label_values(&[ns, &self.name])
                    .observe(elapsed(start, end).as_secs_f64());
            }
        }
        if let Some(b) = summary.logical_bytes {
            m.bytes.with_label_values(&[ns, &self.name, "logical"]).set(b);
        }
        if let Some(b) = summary.stored_bytes {
            m.bytes.with_label_values(&[ns, &self.name, "stored"]).set(b);
        }
    }

    /// Retention after the run, then the totals. Only backups a verified (or, with
    /// verification off, successful) backup of the same guest came after are pruned.
    async fn retain(&mut self, run: &BackupRun, client: &PveClient, dest: Destination<'_>) {
        let eligible: Vec<&BackupRunItem> = run
            .items
            .iter()
            .filter(|i| i.state == BackupItemState::Succeeded && i.verified != Some(false))
            .collect();
        match dest {
            Destination::ChunkStore(_) => {
                let mut names: Vec<String> = eligible
                    .iter()
                    .map(|i| chunk_snapshot_name(self.input.namespace, &self.name, &i.guest))
                    .collect();
                if self
                    .status
                    .cluster_config
                    .as_ref()
                    .is_some_and(|c| c.last_success_time == Some(self.now))
                {
                    names.push(format!("{}.{}.cluster", self.input.namespace, self.name));
                }
                let store = self.backup.store.clone();
                let uid = self.input.uid.to_owned();
                let retention = self.spec.retention.clone();
                let result = tokio::task::spawn_blocking(move || {
                    ingest::prune_store(&store, &uid, &names, retention.as_ref())
                })
                .await
                .unwrap_or_else(|e| Err(format!("prune stopped: {e}")));
                match result {
                    Ok(totals) => {
                        if totals.removed > 0 {
                            self.events.push(PlannedEvent::normal(
                                reasons::BACKUPS_PRUNED,
                                reasons::ACTION_PRUNE,
                                format!(
                                    "removed {} from the chunk store under spec.retention",
                                    plural(totals.removed, "old backup")
                                ),
                            ));
                        }
                        let logical = i64::try_from(totals.logical_bytes).unwrap_or(i64::MAX);
                        self.status.backup_count = i32::try_from(totals.kept).ok();
                        self.status.logical_bytes = Some(logical);
                        self.status.stored_bytes = totals.stored_bytes.and_then(|b| i64::try_from(b).ok());
                        self.status.stored_size = Some(match self.status.stored_bytes {
                            Some(b) => human_bytes(b),
                            None => format!("{} (logical)", human_bytes(logical)),
                        });
                    }
                    Err(message) => self.events.push(PlannedEvent::warning(
                        reasons::PRUNE_FAILED,
                        reasons::ACTION_PRUNE,
                        message,
                    )),
                }
            }
            Destination::Pbs { storage } | Destination::Storage { storage, .. } => {
                self.retain_on_pve(run, &eligible, client, storage, dest).await;
            }
        }
    }

    async fn retain_on_pve(
        &mut self,
        run: &BackupRun,
        eligible: &[&BackupRunItem],
        client: &PveClient,
        storage: &str,
        dest: Destination<'_>,
    ) {
        let keep = self.spec.retention.as_ref().map(plan::keep_options);
        let mut removed = Vec::new();
        let mut failures = Vec::new();
        for item in eligible {
            let (Some(keep), Some(node), Ok(Some(vmid))) = (
                keep.as_ref(),
                item.guest.node.as_deref().and_then(|n| NodeName::new(n).ok()),
                u32::try_from(item.guest.vmid).map(|v| Vmid::new(v).ok()),
            ) else {
                continue;
            };
            let verified_volid = self
                .status
                .services
                .iter()
                .find(|s| s.name == item.guest.service && s.verified == Some(true))
                .and_then(|s| s.volid.clone());
            let rows = match owned_backups(client, &node, storage, Some(vmid), self.input.uid).await {
                Ok(rows) => rows,
                Err(e) => {
                    failures.push(format!("cannot list backups of guest {vmid}: {e}"));
                    continue;
                }
            };
            let owned: Vec<_> = rows
                .iter()
                .map(|r| as_owned(r, verified_volid.as_deref()))
                .collect();
            for volid in prune_plan(&owned, keep, self.now) {
                match client.delete_volume(&node, storage, &volid, None).await {
                    Ok(_) => removed.push(volid),
                    Err(e) => failures.push(format!("cannot delete {volid}: {e}")),
                }
            }
        }
        if !removed.is_empty() {
            self.events.push(PlannedEvent::normal(
                reasons::BACKUPS_PRUNED,
                reasons::ACTION_PRUNE,
                format!(
                    "removed {} under spec.retention: {}",
                    plural(removed.len(), "old backup"),
                    removed.join(", ")
                ),
            ));
        }
        if !failures.is_empty() {
            self.events.push(PlannedEvent::warning(
                reasons::PRUNE_FAILED,
                reasons::ACTION_PRUNE,
                failures.join("; "),
            ));
        }
        // Totals over every node the run touched (a storage that is not shared is per node).
        let mut nodes: Vec<&str> = run.items.iter().filter_map(|i| i.guest.node.as_deref()).collect();
        nodes.sort_unstable();
        nodes.dedup();
        let mut seen = BTreeSet::new();
        let mut logical: i64 = 0;
        for node in nodes {
            let Ok(node) = NodeName::new(node) else {
                continue;
            };
            if let Ok(rows) = owned_backups(client, &node, storage, None, self.input.uid).await {
                for row in rows {
                    if seen.insert(row.volid.clone()) {
                        logical = logical.saturating_add(i64::try_from(row.size).unwrap_or(0));
                    }
                }
            }
        }
        self.status.backup_count = i32::try_from(seen.len()).ok();
        self.status.logical_bytes = Some(logical);
        if let Destination::Pbs { .. } = dest {
            // PBS deduplicates across every backup of the datastore: no share is this policy's.
            self.status.stored_bytes = None;
            self.status.stored_size = Some(format!("{} (logical)", human_bytes(logical)));
        } else {
            self.status.stored_bytes = Some(logical);
            self.status.stored_size = Some(human_bytes(logical));
        }
    }

    fn ready(&mut self, selection: &Selection<'_>) {
        let (status, reason, message) = if let Some((reason, message)) = self.blocked.clone() {
            (ConditionStatus::False, reason, message)
        } else if selection.selected.is_empty() {
            (
                ConditionStatus::False,
                reasons::NO_SERVICES.to_owned(),
                no_services_message(self.spec, selection),
            )
        } else if let Some(run) = &self.status.current_run {
            let done = run.items.iter().filter(|i| i.is_done()).count();
            (
                ConditionStatus::True,
                reasons::RUNNING.to_owned(),
                format!("run {}: {done}/{} Services done", run.run_id, run.items.len()),
            )
        } else if self.spec.suspend {
            (
                ConditionStatus::True,
                reasons::SUSPENDED.to_owned(),
                "spec.suspend is set: no new runs start".to_owned(),
            )
        } else {
            let next = self
                .status
                .next_run_time
                .map_or_else(|| "unknown".to_owned(), |t| t.to_string());
            (
                ConditionStatus::True,
                reasons::SCHEDULED.to_owned(),
                format!(
                    "{} selected; next run at {next}",
                    plural(selection.selected.len(), "Service")
                ),
            )
        };
        let news = self.set(READY, status, &reason, &message);
        if news && status == ConditionStatus::False {
            self.events
                .push(PlannedEvent::warning(reason, reasons::ACTION_SCHEDULE, message));
        }
    }

    fn finish(mut self) -> Outcome<BackupPolicyStatus> {
        let requeue = match (self.requeue, self.status.next_run_time) {
            (Some(r), Some(next)) => r.min(requeue_after(self.now, next)),
            (Some(r), None) => r,
            (None, Some(next)) => requeue_after(self.now, next),
            (None, None) => crate::controllers::kit::schedule::MAX_REQUEUE,
        };
        self.status.services.truncate(256);
        Outcome {
            status: self.status,
            events: std::mem::take(&mut self.events),
            requeue,
        }
    }
}

/// The `ERROR:` lines of a task's log (at most 3), for a failure message.
async fn error_lines(client: &PveClient, upid: &crate::crd::common::TaskHandle) -> Vec<String> {
    let Ok(task) = upid.parse::<crate::proxmox::TaskRef>() else {
        return Vec::new();
    };
    client
        .task_log_tail(&task, 50)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|l| l.split_once("ERROR: ").map(|(_, e)| e.trim().to_owned()))
        .take(3)
        .collect()
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn describe(dest: Destination<'_>) -> String {
    match dest {
        Destination::Pbs { storage } => format!("Proxmox Backup Server storage {storage}"),
        Destination::Storage { storage, .. } => format!("storage {storage}"),
        Destination::ChunkStore(c) => format!("the chunk store (staged on {})", c.staging_storage),
    }
}

fn no_services_message(spec: &BackupPolicySpec, selection: &Selection<'_>) -> String {
    let mut message = format!(
        "spec.services selects no Service of ProxmoxCluster {}",
        spec.cluster_ref.name
    );
    if !selection.missing.is_empty() {
        message.push_str(&format!(
            "; these names have no Service: {}",
            selection.missing.join(", ")
        ));
    }
    if !selection.other_cluster.is_empty() {
        let names: Vec<String> = selection.other_cluster.iter().map(|s| s.name_any()).collect();
        message.push_str(&format!(
            "; these belong to another cluster: {}",
            names.join(", ")
        ));
    }
    message
}

/// What deleting a policy does to its backups: with `deletionPolicy: Delete`, remove every
/// backup its marker and UID prove its own (protected ones stay), on every node's view of the
/// destination storage, or its snapshots in the chunk store; with `Retain`, nothing. Also drops
/// the staged archives of a run cut short. `Ok(true)` when nothing of it is left to delete.
pub async fn delete_backups(
    backup: &BackupDeps,
    policy: &Policy,
    uid: &str,
    client: Option<&PveClient>,
) -> Result<bool, String> {
    backup.release_all(uid);
    let spec = &policy.spec;
    let Some(dest) = Destination::of(spec) else {
        return Ok(true);
    };
    let staged: Vec<(String, String)> = policy
        .status
        .as_ref()
        .and_then(|s| s.current_run.as_ref())
        .map(|run| {
            run.items
                .iter()
                .filter_map(|i| Some((i.guest.node.clone()?, i.staged_volid.clone()?)))
                .collect()
        })
        .unwrap_or_default();
    backup
        .ingests
        .forget(&staged.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>());
    let keep_staged = matches!(dest, Destination::ChunkStore(c) if c.keep_staged_archive);
    if !keep_staged && let Some(client) = client {
        for (node, volid) in &staged {
            if let Ok(node) = NodeName::new(node) {
                // Gone already is fine: the ingest may have deleted it.
                let _ = client
                    .delete_volume(&node, destination::storage_of(volid), volid, None)
                    .await;
            }
        }
    }
    if spec.deletion_policy == DeletionPolicy::Retain {
        return Ok(true);
    }
    match dest {
        Destination::ChunkStore(_) => {
            let store = backup.store.clone();
            let uid = uid.to_owned();
            tokio::task::spawn_blocking(move || ingest::delete_all(&store, &uid))
                .await
                .map_err(|e| e.to_string())?
                .map(|_| true)
        }
        Destination::Pbs { storage } | Destination::Storage { storage, .. } => {
            let client = client.ok_or_else(|| "the cluster cannot be reached".to_owned())?;
            let nodes = client.nodes().await.map_err(|e| e.to_string())?;
            let mut left = 0;
            for entry in nodes.iter().filter(|n| n.status == "online") {
                let rows = match owned_backups(client, &entry.node, storage, None, uid).await {
                    Ok(rows) => rows,
                    // A storage not available on that node holds nothing of ours there.
                    Err(e) if !e.is_transient() => continue,
                    Err(e) => return Err(e.to_string()),
                };
                for row in rows.iter().filter(|r| !r.protected) {
                    client
                        .delete_volume(&entry.node, storage, &row.volid, None)
                        .await
                        .map_err(|e| format!("cannot delete {}: {e}", row.volid))?;
                    left += 1;
                }
            }
            // Deleting is a task on PVE: look again until nothing of ours is listed.
            Ok(left == 0)
        }
    }
}
