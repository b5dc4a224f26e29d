//! The RestoreTest kind's core (no kube): on `schedule`, once per spec change or on demand,
//! restore a backup of each source into an isolated network under a fresh VMID, start it, run
//! the checks, measure the RTO (restore, boot, application), report, and remove the copy.
//!
//! Every long step records its intent in status first (`currentRun`, then each restore's backup,
//! node and VMID in phase `Pending`, then its task), so a restarted operator resumes or cleans
//! up instead of restoring twice. Nothing we did not create is ever deleted: a copy carries the
//! `autopilot` tag and this RestoreTest's UID in its description ([`plan::is_ours`]); the only
//! guest deleted without that proof is the empty config a failed restore task of ours left at
//! the VMID we recorded for it. One pass does one bounded step per restore.

mod checks;
mod cleanup;
pub mod controller;
pub mod plan;
pub mod reasons;
mod steps;

#[cfg(test)]
mod kube_tests;

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;

use crate::controllers::kit::schedule::{Due, Schedule, requeue_after, run_id, run_now_requested};
use crate::controllers::kit::{Claims, Conditions, Outcome, PlannedEvent};
use crate::controllers::pve::probe::HealthEnv;
use crate::controllers::pve::reasons::failure_reason;
use crate::controllers::pve::selector::select;
use crate::controllers::pve::{ClusterAccess, ProxmoxDeps};
use crate::crd::conditions::{ConditionStatus, READY};
use crate::crd::restore_test::{
    CONDITION_RTO_MET, CONDITION_SUCCEEDED, RestorePhase, RestoreResult, RestoreResultDetail, RestoreRun,
    RestoreTest, RestoreTestSpec, RestoreTestStatus,
};
use crate::crd::{BackupPolicy, Service};
use crate::metrics::Metrics;
use crate::storage::StoreLocation;

pub use cleanup::delete_copies;

/// The RestoreTest controller's per-process state.
#[derive(Debug)]
pub struct RestoreDeps {
    /// The operator's chunk store (chunk-store backups are reassembled from it).
    pub store: StoreLocation,
    /// HTTP clients of `HTTP` checks.
    pub health: HealthEnv,
    /// Nodes restoring now, by (cluster UID, node): one restore test per node at a time.
    nodes: Claims<String>,
    /// VMIDs chosen by a restore and not released yet, by (cluster UID, VMID).
    vmids: Claims<u32>,
}

impl RestoreDeps {
    /// State with the chunk store at `store`.
    pub fn new(store: StoreLocation) -> Self {
        Self {
            store,
            health: HealthEnv::confined(),
            nodes: Claims::default(),
            vmids: Claims::default(),
        }
    }

    /// Claims `node` of `cluster` for the RestoreTest `test`; false while another holds it.
    pub fn claim_node(&self, cluster: &str, node: &str, test: &str) -> bool {
        self.nodes.claim(cluster, node.to_owned(), test)
    }

    /// Whether `test` holds the claim of `node`.
    pub fn holds_node(&self, cluster: &str, node: &str, test: &str) -> bool {
        self.nodes.holds(cluster, node.to_owned(), test)
    }

    /// Releases `test`'s claim of `node`.
    pub fn release_node(&self, cluster: &str, node: &str, test: &str) {
        self.nodes.release(cluster, node.to_owned(), test);
    }

    /// Reserves `vmid` of `cluster` for `test`; false while another RestoreTest reserved it.
    pub fn reserve_vmid(&self, cluster: &str, vmid: u32, test: &str) -> bool {
        self.vmids.claim(cluster, vmid, test)
    }

    /// VMIDs of `cluster` other RestoreTests reserved.
    pub fn reserved_by_others(&self, cluster: &str, test: &str) -> BTreeSet<u32> {
        self.vmids.held_by_others(cluster, test).into_iter().collect()
    }

    /// Releases `test`'s reservation of `vmid`.
    pub fn release_vmid(&self, cluster: &str, vmid: u32, test: &str) {
        self.vmids.release(cluster, vmid, test);
    }

    /// Releases everything `test` holds (deleted).
    pub fn release_all(&self, test: &str) {
        self.nodes.release_all(test);
        self.vmids.release_all(test);
    }
}

/// Gives the RestoreTest controller its state.
pub trait HasRestoreDeps {
    /// The RestoreTest controller's state.
    fn restore(&self) -> &RestoreDeps;
}

/// What one pass over a RestoreTest reads.
#[derive(Clone, Copy, Debug)]
pub struct TestInput<'a> {
    /// The RestoreTest.
    pub test: &'a RestoreTest,
    /// Its UID (the ownership proof in a restored copy's description).
    pub uid: &'a str,
    /// Its namespace.
    pub namespace: &'a str,
    /// The Services of the namespace.
    pub services: &'a [Service],
    /// The BackupPolicies of the namespace (where a Service's backups are).
    pub policies: &'a [BackupPolicy],
    /// Its ProxmoxCluster.
    pub access: &'a ClusterAccess,
}

struct Pass<'a> {
    input: TestInput<'a>,
    spec: &'a RestoreTestSpec,
    name: String,
    proxmox: &'a ProxmoxDeps,
    deps: &'a RestoreDeps,
    metrics: &'a Metrics,
    now: Timestamp,
    status: RestoreTestStatus,
    stored_conditions: Vec<crate::crd::conditions::Condition>,
    events: Vec<PlannedEvent>,
    requeue: Option<Duration>,
    /// Why the cluster cannot be used now, if it cannot.
    blocked: Option<(String, String)>,
    /// Whether `source.services` selects nothing.
    no_services: Option<String>,
}

/// One pass over a RestoreTest.
pub async fn reconcile_core(
    proxmox: &ProxmoxDeps,
    deps: &RestoreDeps,
    metrics: &Metrics,
    input: TestInput<'_>,
    now: Timestamp,
) -> Outcome<RestoreTestStatus> {
    let stored = input.test.status.clone().unwrap_or_default();
    let mut pass = Pass {
        input,
        spec: &input.test.spec,
        name: input.test.name_any(),
        proxmox,
        deps,
        metrics,
        now,
        stored_conditions: stored.conditions.clone(),
        status: stored,
        events: Vec::new(),
        requeue: None,
        blocked: None,
        no_services: None,
    };
    pass.status.observed_generation = input.test.metadata.generation;
    pass.run().await;
    pass.finish()
}

impl Pass<'_> {
    fn soon(&mut self, after: Duration) {
        self.requeue = Some(self.requeue.map_or(after, |r| r.min(after)));
    }

    fn set(&mut self, type_: &str, status: ConditionStatus, reason: &str, message: &str) -> bool {
        let generation = self.input.test.metadata.generation;
        Conditions::new(&self.stored_conditions, generation, self.now)
            .set(&mut self.status.conditions, type_, status, reason, message)
            .is_news()
    }

    fn cluster_uid(&self) -> &str {
        &self.input.access.uid
    }

    async fn run(&mut self) {
        let schedule = match &self.spec.schedule {
            None => None,
            Some(expr) => match Schedule::from_spec("spec.", expr, &self.spec.time_zone) {
                Ok(s) => Some(s),
                Err(e) => {
                    self.blocked = Some((e.reason().to_owned(), e.to_string()));
                    self.ready();
                    return;
                }
            },
        };
        match &self.input.access.client {
            Err(u) => {
                // A run in progress waits (its intent is recorded); new runs start on time.
                self.blocked = Some((u.reason.clone(), u.message.clone()));
                self.soon(self.input.access.resync.min(Duration::from_secs(60)));
                if self.status.current_run.is_none() {
                    self.maybe_start(schedule.as_ref());
                }
                // A run whose every restore failed at its start (e.g. no such Service) ends now.
                if let Some(run) = self.status.current_run.take() {
                    if run.restores.iter().all(|r| r.phase == RestorePhase::Done) {
                        self.finish_run(run);
                    } else {
                        self.status.current_run = Some(run);
                    }
                }
            }
            Ok(client) => {
                let client = client.clone();
                let access = self.input.access;
                match self
                    .proxmox
                    .snapshots
                    .resources(&access.uid, &client, access.resync, self.now)
                    .await
                {
                    Err(e) => {
                        self.blocked = Some((failure_reason(&e).to_owned(), e.to_string()));
                        self.soon(self.proxmox.tuning.reconnect_min);
                    }
                    Ok(resources) => {
                        self.sweep(&client, &resources).await;
                        if self.status.current_run.is_none() {
                            self.maybe_start(schedule.as_ref());
                        }
                        if self.status.current_run.is_some() {
                            self.advance(&client, &resources).await;
                        }
                    }
                }
            }
        }
        if let Some(selector) = &self.spec.source.services
            && select(self.input.services, selector, &self.spec.cluster_ref.name)
                .selected
                .is_empty()
        {
            self.no_services = Some(format!(
                "source.services matches no Service of ProxmoxCluster {} in namespace {}",
                self.spec.cluster_ref.name, self.input.namespace
            ));
        }
        self.status.next_run_time = match (&schedule, self.spec.suspend) {
            (Some(s), false) => s.next_after(self.now).ok(),
            _ => None,
        };
        self.ready();
    }

    /// Starts a run when one is due: on demand (annotation), at a `schedule` slot, or without a
    /// schedule once per spec generation. The picks are recorded before anything is restored.
    fn maybe_start(&mut self, schedule: Option<&Schedule>) {
        let annotations = self.input.test.annotations();
        let request =
            run_now_requested(annotations, self.status.last_run_request.as_deref()).map(str::to_owned);
        let generation = self.input.test.metadata.generation.unwrap_or(0);
        let id = if request.is_some() {
            format!("now-{}", run_id(self.now))
        } else if self.spec.suspend {
            return;
        } else if let Some(schedule) = schedule {
            let created = self
                .input
                .test
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(self.now, |t| t.0);
            match schedule.due(self.status.last_scheduled_time, created, self.now, None) {
                Ok(Due::Run { scheduled }) => {
                    self.status.last_scheduled_time = Some(scheduled);
                    run_id(scheduled)
                }
                Ok(Due::Skip(skipped)) => {
                    self.status.last_scheduled_time = Some(skipped.scheduled);
                    self.events.push(PlannedEvent::warning(
                        reasons::SCHEDULE_MISSED,
                        reasons::ACTION_SCHEDULE,
                        skipped.message(),
                    ));
                    return;
                }
                Ok(Due::Wait { .. }) => return,
                Err(e) => {
                    self.blocked = Some((e.reason().to_owned(), e.to_string()));
                    return;
                }
            }
        } else if self.status.run_generation != Some(generation) {
            self.status.run_generation = Some(generation);
            format!("g{generation}")
        } else {
            return;
        };
        let restores = self.sources(&id);
        if restores.is_empty() {
            let why = self
                .no_services
                .clone()
                .unwrap_or_else(|| "nothing to restore".to_owned());
            self.events.push(PlannedEvent::warning(
                reasons::NO_SERVICES,
                reasons::ACTION_SCHEDULE,
                format!("run {id} did not start: {why}"),
            ));
            if let Some(request) = request {
                self.status.last_run_request = Some(request);
            }
            return;
        }
        if let Some(request) = &request {
            self.status.last_run_request = Some(request.clone());
        }
        let names: Vec<String> = restores
            .iter()
            .map(|r| {
                if r.service.is_empty() {
                    format!("{} {}", r.type_.short_name(), r.source_vmid)
                } else {
                    r.service.clone()
                }
            })
            .collect();
        self.events.push(PlannedEvent::normal(
            reasons::STARTED,
            reasons::ACTION_SCHEDULE,
            format!("run {id}: restoring {} into isolation", names.join(", ")),
        ));
        self.status.current_run = Some(RestoreRun {
            run_id: id,
            start_time: self.now,
            completion_time: None,
            service: restores
                .iter()
                .map(|r| r.service.as_str())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(", "),
            result: None,
            rto_seconds: None,
            rto_target_seconds: self.spec.rto.as_ref().map(|r| i64::from(r.target_seconds)),
            restores,
        });
        self.soon(Duration::ZERO);
    }

    /// The restores of a new run: the `serviceRef`, the `vmid`, or `count` Services picked from
    /// `services` (weighted by criticality and time since their last test).
    fn sources(&mut self, run_id: &str) -> Vec<RestoreResultDetail> {
        let source = &self.spec.source;
        let cluster = &self.spec.cluster_ref.name;
        if let Some(service) = &source.service_ref {
            let found = self.input.services.iter().find(|s| s.name_any() == service.name);
            return vec![match found {
                Some(svc) if &svc.spec.cluster_ref.name == cluster => {
                    RestoreResultDetail::pending(service.name.clone(), svc.spec.vmid, svc.spec.type_)
                }
                other => {
                    let mut r = RestoreResultDetail::pending(
                        service.name.clone(),
                        0,
                        source.type_.unwrap_or(crate::crd::common::GuestType::Vm),
                    );
                    let message = match other {
                        Some(_) => format!(
                            "Service {} (source.serviceRef) belongs to another ProxmoxCluster than {cluster}",
                            service.name
                        ),
                        None => format!(
                            "Service {} (source.serviceRef) does not exist in namespace {}",
                            service.name, self.input.namespace
                        ),
                    };
                    steps::fail_detail(&mut r, reasons::SERVICE_NOT_FOUND, message, self.now);
                    r.phase = RestorePhase::Done;
                    r
                }
            }];
        }
        if let (Some(vmid), Some(type_)) = (source.vmid, source.type_) {
            return vec![RestoreResultDetail::pending(String::new(), vmid, type_)];
        }
        let Some(selector) = &source.services else {
            return Vec::new();
        };
        let selection = select(self.input.services, selector, cluster);
        if selection.selected.is_empty() {
            self.no_services = Some(format!(
                "source.services matches no Service of ProxmoxCluster {cluster} in namespace {}",
                self.input.namespace
            ));
            return Vec::new();
        }
        let runs = self
            .status
            .history
            .iter()
            .map(|h| (h.service.as_str(), h.start_time));
        let tested = plan::last_tested(runs);
        let pickable: Vec<plan::Pickable> = selection
            .selected
            .iter()
            .map(|s| plan::Pickable {
                name: s.name_any(),
                criticality: s.spec.criticality,
                last_tested: tested.get(&s.name_any()).copied(),
            })
            .collect();
        let count = usize::try_from(source.count.unwrap_or(1)).unwrap_or(1);
        let picked = plan::pick_services(&pickable, count, run_id, self.now);
        selection
            .selected
            .iter()
            .filter(|s| picked.contains(&s.name_any()))
            .map(|s| RestoreResultDetail::pending(s.name_any(), s.spec.vmid, s.spec.type_))
            .collect()
    }

    async fn advance(
        &mut self,
        client: &crate::proxmox::PveClient,
        resources: &[crate::proxmox::api::ClusterResource],
    ) {
        let Some(mut run) = self.status.current_run.take() else {
            return;
        };
        for i in 0..run.restores.len() {
            if run.restores[i].phase == RestorePhase::Done {
                continue;
            }
            self.step(&mut run, i, client, resources).await;
        }
        if run.restores.iter().all(|r| r.phase == RestorePhase::Done) {
            self.finish_run(run);
        } else {
            self.status.current_run = Some(run);
            self.soon(self.proxmox.tuning.task_poll);
        }
    }

    fn finish_run(&mut self, mut run: RestoreRun) {
        run.completion_time = Some(self.now);
        plan::summarize(&mut run);
        for r in &run.restores {
            self.release(r);
        }
        let result = run.result.unwrap_or(RestoreResult::Failed);
        let rto = run
            .rto_seconds
            .map_or_else(|| "not measured".to_owned(), |s| format!("{s} s"));
        let target = run
            .rto_target_seconds
            .map_or_else(String::new, |t| format!(" (target {t} s)"));
        let failures: Vec<String> = run
            .restores
            .iter()
            .filter(|r| r.result == Some(RestoreResult::Failed))
            .map(|r| {
                let who = if r.service.is_empty() {
                    format!("{} {}", r.type_.short_name(), r.source_vmid)
                } else {
                    r.service.clone()
                };
                format!("{who}: {} ({})", r.message, r.reason)
            })
            .collect();
        let (status, reason, message) = match result {
            RestoreResult::Passed => (
                ConditionStatus::True,
                reasons::PASSED,
                format!(
                    "run {}: restored, booted and healthy; RTO {rto}{target}",
                    run.run_id
                ),
            ),
            RestoreResult::RtoExceeded => (
                ConditionStatus::False,
                reasons::RTO_EXCEEDED,
                format!(
                    "run {}: restored and healthy, but the RTO was {rto}{target}",
                    run.run_id
                ),
            ),
            RestoreResult::Failed => (
                ConditionStatus::False,
                reasons::FAILED,
                format!("run {} failed: {}", run.run_id, failures.join("; ")),
            ),
        };
        self.set(CONDITION_SUCCEEDED, status, reason, &message);
        let event = if result == RestoreResult::Passed {
            PlannedEvent::normal(reason, reasons::ACTION_CHECK, message)
        } else {
            PlannedEvent::warning(reason, reasons::ACTION_CHECK, message)
        };
        self.events.push(event);
        match (result, run.rto_seconds, run.rto_target_seconds) {
            (RestoreResult::Failed, _, _) => {
                self.set(
                    CONDITION_RTO_MET,
                    ConditionStatus::Unknown,
                    reasons::NOT_MEASURED,
                    "the last run failed before the RTO could be measured",
                );
            }
            (_, Some(rto), Some(target)) if rto > target => {
                self.set(
                    CONDITION_RTO_MET,
                    ConditionStatus::False,
                    reasons::TARGET_EXCEEDED,
                    &format!("RTO {rto} s is over the target of {target} s"),
                );
            }
            (_, Some(rto), Some(target)) => {
                self.set(
                    CONDITION_RTO_MET,
                    ConditionStatus::True,
                    reasons::WITHIN_TARGET,
                    &format!("RTO {rto} s is within the target of {target} s"),
                );
            }
            _ => self.status.conditions.retain(|c| c.type_ != CONDITION_RTO_MET),
        }
        let limit = usize::try_from(self.spec.history_limit).unwrap_or(5);
        plan::push_history(&mut self.status.history, &run, limit);
        self.status.last_run = Some(run);
    }

    /// The last run's series (set again every pass, so a restarted operator reports them too).
    fn record_metrics(&self, run: &RestoreRun) {
        let m = &self.metrics.restore_test;
        for r in &run.restores {
            let service = if r.service.is_empty() {
                format!("{}-{}", r.type_.short_name(), r.source_vmid)
            } else {
                r.service.clone()
            };
            let labels = [self.input.namespace, self.name.as_str(), service.as_str()];
            let passed = matches!(r.result, Some(RestoreResult::Passed | RestoreResult::RtoExceeded));
            m.success.with_label_values(&labels).set(i64::from(passed));
            if let Some(rto) = r.rto_seconds {
                m.rto_seconds.with_label_values(&labels).set(rto as f64);
            }
            if let Some(target) = run.rto_target_seconds {
                m.rto_target_seconds.with_label_values(&labels).set(target as f64);
            }
            if passed && let Some(done) = run.completion_time {
                m.last_success_timestamp_seconds
                    .with_label_values(&labels)
                    .set(done.as_second() as f64);
            }
        }
    }

    /// Gives back the node and VMID a finished restore held.
    fn release(&self, r: &RestoreResultDetail) {
        let cluster = self.cluster_uid();
        if !r.node.is_empty() {
            self.deps.release_node(cluster, &r.node, self.input.uid);
        }
        if let Ok(vmid) = u32::try_from(r.restored_vmid)
            && vmid != 0
            && (r.cleaned_up || r.phase == RestorePhase::Done)
        {
            self.deps.release_vmid(cluster, vmid, self.input.uid);
        }
    }

    fn ready(&mut self) {
        let (status, reason, message) = if let Some((reason, message)) = self.blocked.clone() {
            (ConditionStatus::False, reason, message)
        } else if let Some(why) = self.no_services.clone() {
            (ConditionStatus::False, reasons::NO_SERVICES.to_owned(), why)
        } else if let Some(run) = &self.status.current_run {
            let done = run
                .restores
                .iter()
                .filter(|r| r.phase == RestorePhase::Done)
                .count();
            (
                ConditionStatus::True,
                reasons::RUNNING.to_owned(),
                format!("run {}: {done}/{} restores done", run.run_id, run.restores.len()),
            )
        } else if self.spec.suspend {
            (
                ConditionStatus::True,
                reasons::SUSPENDED.to_owned(),
                "spec.suspend is set: no new runs start".to_owned(),
            )
        } else if let Some(next) = self.status.next_run_time {
            (
                ConditionStatus::True,
                reasons::SCHEDULED.to_owned(),
                format!("next run at {next}"),
            )
        } else {
            (
                ConditionStatus::True,
                reasons::TESTED.to_owned(),
                "no schedule: this spec has been tested; a change of the spec or the run-now annotation runs again".to_owned(),
            )
        };
        let news = self.set(READY, status, &reason, &message);
        if news && status == ConditionStatus::False {
            self.events
                .push(PlannedEvent::warning(reason, reasons::ACTION_SCHEDULE, message));
        }
        if crate::crd::conditions::find_condition(&self.status.conditions, CONDITION_SUCCEEDED).is_none() {
            self.set(
                CONDITION_SUCCEEDED,
                ConditionStatus::Unknown,
                reasons::NO_RUN_YET,
                "no run has finished yet",
            );
        }
    }

    fn finish(mut self) -> Outcome<RestoreTestStatus> {
        if let Some(last) = &self.status.last_run {
            self.record_metrics(last);
        }
        let requeue = match (self.requeue, self.status.next_run_time) {
            (Some(r), Some(next)) => r.min(requeue_after(self.now, next)),
            (Some(r), None) => r,
            (None, Some(next)) => requeue_after(self.now, next),
            (None, None) => self.input.access.resync.max(Duration::from_secs(60)),
        };
        Outcome {
            status: self.status,
            events: std::mem::take(&mut self.events),
            requeue,
        }
    }
}
