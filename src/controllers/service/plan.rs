//! Plan: a Service's status, Events and (at most one) power action from what one pass saw. Pure.
//!
//! Conditions: `Found` (the guest exists, of the right type), `PowerStateInSync` (only while
//! `spec.powerState` is managed), `Healthy` (the guest runs and every check passes; `False`
//! with reason `GuestNotRunning` while it is known not to run) and `Ready` (all of them, except
//! `Healthy` for a guest stopped because `spec.powerState` is `Stopped`).
//! Events fire on transitions only: found/missing, down/recovered, moved node, paused, locked,
//! power action started/failed, unhealthy/healthy.

use std::time::Duration;

use jiff::Timestamp;

use super::ServiceMemory;
pub use super::healthy::REASON_GUEST_NOT_RUNNING;
use super::healthy::{healthy, stopped_as_desired};
pub use super::power::{PowerAction, record_action};
use crate::controllers::kit::{
    Change, Conditions, Outcome, PlannedEvent,
    time::{add, elapsed},
};
use crate::controllers::pve::guest::{GuestFacts, GuestView};
use crate::controllers::pve::task::TaskView;
use crate::controllers::pve::{Tuning, reasons};
use crate::crd::common::GuestType;
use crate::crd::common::TaskHandle;
use crate::crd::conditions::{ConditionStatus, READY, find_condition};
use crate::crd::health::HealthCheckResult;
use crate::crd::service::{
    CONDITION_FOUND, CONDITION_HEALTHY, CONDITION_POWER_STATE_IN_SYNC, DesiredPowerState, PowerState,
    ServiceSpec, ServiceStatus,
};
use crate::proxmox::GuestRef;

/// Event action of Events about what was observed.
pub const ACTION_OBSERVE: &str = "Observe";
/// Event action of power Events.
pub const ACTION_POWER: &str = "EnforcePowerState";
/// Event action of health Events.
pub const ACTION_HEALTH: &str = "HealthCheck";

/// A start time within this much of the stored one is the same start (uptime is read a moment
/// after "now" is taken): keeps `status.startTime` from changing on every pass.
const START_TIME_TOLERANCE: Duration = Duration::from_secs(30);

/// How often `lastSeenTime` of a guest seen without change is refreshed at most (or once per
/// resync, if that is longer). Each refresh is a status write per Service: at a 30 s resync and a
/// thousand Services, refreshing every resync would be 33 writes a second to the API server for
/// no news. When a guest disappears, `lastSeenTime` is at most this old, and the Ready
/// condition's transition time says when it was missed.
pub const LAST_SEEN_REFRESH: Duration = Duration::from_secs(600);

/// What a pass needs besides what it saw.
#[derive(Clone, Copy, Debug)]
pub struct PlanInput<'a> {
    /// The spec.
    pub spec: &'a ServiceSpec,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// The stored status.
    pub previous: &'a ServiceStatus,
    /// Now.
    pub now: Timestamp,
    /// Name of the ProxmoxCluster (for messages).
    pub cluster: &'a str,
    /// Drift check interval (the cluster's resync interval).
    pub resync: Duration,
    /// Timing.
    pub tuning: &'a Tuning,
    /// What the operator remembers about this Service.
    pub memory: &'a ServiceMemory,
    /// When the next health check is due.
    pub next_check: Option<Timestamp>,
}

/// The plan of one pass.
#[derive(Clone, Debug, PartialEq)]
pub struct ServicePlan {
    /// Status, Events, requeue.
    pub outcome: Outcome<ServiceStatus>,
    /// The power action to take now, on this guest.
    pub action: Option<(PowerAction, GuestRef)>,
    /// The memory to keep for the next pass.
    pub memory: ServiceMemory,
}

/// `nextcloud (VM 200)`, or `VM 200` without a name.
pub fn guest_label(type_: GuestType, vmid: i32, name: Option<&str>) -> String {
    let kind = match type_ {
        GuestType::Vm => "VM",
        GuestType::Lxc => "CT",
    };
    match name {
        Some(n) => format!("{n} ({kind} {vmid})"),
        None => format!("{kind} {vmid}"),
    }
}

pub(super) struct Builder<'a> {
    pub(super) input: PlanInput<'a>,
    pub(super) status: ServiceStatus,
    pub(super) events: Vec<PlannedEvent>,
    pub(super) label: String,
}

impl Builder<'_> {
    /// Sets a condition; the [`Change`] says whether it is news (an Event) and what was stored.
    pub(super) fn set(
        &mut self,
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: &str,
    ) -> Change {
        let input = self.input;
        Conditions::new(&input.previous.conditions, input.generation, input.now).set(
            &mut self.status.conditions,
            type_,
            status,
            reason,
            message,
        )
    }

    pub(super) fn normal(&mut self, reason: &str, action: &'static str, note: String) {
        self.events.push(PlannedEvent::normal(reason, action, note));
    }

    pub(super) fn warning(&mut self, reason: &str, action: &'static str, note: String) {
        self.events.push(PlannedEvent::warning(reason, action, note));
    }
}

/// Plans one pass. `health` are the folded check results ([`super::health::fold`]).
pub fn plan(
    input: PlanInput<'_>,
    guest: &GuestView,
    task: &TaskView,
    health: Vec<HealthCheckResult>,
) -> ServicePlan {
    let previous = input.previous;
    let name = match guest {
        GuestView::Found(f) => f.name.clone(),
        _ => None,
    }
    .or_else(|| previous.name.clone());
    let mut b = Builder {
        input,
        status: ServiceStatus {
            observed_generation: input.generation,
            conditions: previous.conditions.clone(),
            name: name.clone(),
            health,
            ..Default::default()
        },
        events: Vec::new(),
        label: guest_label(input.spec.type_, input.spec.vmid, name.as_deref()),
    };
    if b.status.conditions.is_empty() {
        b.set(READY, ConditionStatus::Unknown, "Reconciling", "");
    }
    let mut memory = input.memory.clone();
    let pending = task_outcome(&mut b, task, &mut memory);
    b.status.upid = pending.clone();
    observed_fields(&mut b, guest);
    found(&mut b, guest);
    let action = super::power::power(&mut b, guest, pending.as_deref(), &memory);
    healthy(&mut b, guest);
    ready(&mut b);
    let requeue = requeue(&b, &memory, action.is_some());
    ServicePlan {
        outcome: Outcome {
            status: b.status,
            events: b.events,
            requeue,
        },
        action,
        memory,
    }
}

pub(super) fn verb(task_type: &str) -> &'static str {
    if task_type.contains("start") {
        "start"
    } else if task_type.contains("shutdown") {
        "shutdown"
    } else {
        "power"
    }
}

/// Handles the task recorded in status; returns the UPID that is still running.
fn task_outcome(b: &mut Builder<'_>, task: &TaskView, memory: &mut ServiceMemory) -> Option<TaskHandle> {
    match task {
        TaskView::None => None,
        TaskView::Running(upid) => Some(upid.clone()),
        TaskView::Done { error: None, .. } => {
            memory.power_failure = None;
            None
        }
        TaskView::Done {
            task_type,
            error: Some(error),
            ..
        } => {
            let message = format!("the {} task ({task_type}) failed: {error}", verb(task_type));
            b.warning(
                "PowerActionFailed",
                ACTION_POWER,
                format!("{}: {message}", b.label),
            );
            memory.power_failure = Some((add(b.input.now, b.input.tuning.power_retry_after), message));
            None
        }
    }
}

fn observed_fields(b: &mut Builder<'_>, guest: &GuestView) {
    let previous = b.input.previous;
    match guest {
        GuestView::Found(f) => {
            b.status.node = Some(f.guest.node.to_string());
            b.status.power_state = Some(f.power);
            b.status.start_time = start_time(previous.start_time, f, b.input.now);
            let changed = previous.node != b.status.node || previous.power_state != Some(f.power);
            let stale = previous
                .last_seen_time
                .is_none_or(|t| elapsed(t, b.input.now) >= b.input.resync.max(LAST_SEEN_REFRESH));
            b.status.last_seen_time = if changed || stale {
                Some(b.input.now)
            } else {
                previous.last_seen_time
            };
        }
        GuestView::Unavailable(_) => {
            // Last known node; everything live is unknown.
            b.status.node = previous.node.clone();
            b.status.power_state = Some(PowerState::Unknown);
            b.status.last_seen_time = previous.last_seen_time;
        }
        GuestView::Missing | GuestView::WrongType { .. } => {
            b.status.power_state = Some(PowerState::Unknown);
            b.status.last_seen_time = previous.last_seen_time;
        }
    }
}

fn start_time(previous: Option<Timestamp>, f: &GuestFacts, now: Timestamp) -> Option<Timestamp> {
    if !matches!(f.power, PowerState::Running | PowerState::Paused) {
        return None;
    }
    let uptime = Duration::from_secs(f.uptime?);
    let span = jiff::SignedDuration::try_from(uptime).ok()?;
    let computed = now.checked_sub(span).ok()?;
    match previous {
        Some(p) if elapsed(p, computed).max(elapsed(computed, p)) <= START_TIME_TOLERANCE => Some(p),
        _ => Some(computed),
    }
}

fn found(b: &mut Builder<'_>, guest: &GuestView) {
    let spec = b.input.spec;
    let previous = b.input.previous;
    match guest {
        GuestView::Found(f) => {
            let message = format!("{} is on node {}", b.label, f.guest.node);
            let change = b.set(CONDITION_FOUND, ConditionStatus::True, "Found", &message);
            let (changed, before) = (change.is_news(), change.before);
            let before_status = before.map(|c| c.status);
            // After an outage of the cluster (Unknown) the guest is not news, unless it was never
            // seen before (the cluster was not ready when the Service was created).
            let news = before_status != Some(ConditionStatus::Unknown) || previous.last_seen_time.is_none();
            if changed && news {
                let power = format!("{:?}", f.power).to_lowercase();
                let note = if before_status == Some(ConditionStatus::False) {
                    format!("{} is back, {power} on {}", b.label, f.guest.node)
                } else {
                    format!("Found {}, {power} on {}", b.label, f.guest.node)
                };
                b.normal("GuestFound", ACTION_OBSERVE, note);
            }
            if previous_found(previous) {
                transitions(b, f);
            }
        }
        GuestView::Missing => {
            let message = format!(
                "no guest with VMID {} in cluster {} (/cluster/resources): it was deleted or renumbered, or spec.vmid is wrong",
                spec.vmid, b.input.cluster
            );
            if b.set(CONDITION_FOUND, ConditionStatus::False, "GuestNotFound", &message)
                .is_news()
            {
                b.warning(
                    "GuestMissing",
                    ACTION_OBSERVE,
                    format!("{} is missing: {message}", b.label),
                );
            }
        }
        GuestView::WrongType { actual, node } => {
            let message = format!(
                "VMID {} on {node} is a{} {}, but spec.type is {}; recreate this Service with the right type",
                spec.vmid,
                if *actual == GuestType::Vm { "" } else { "n" },
                type_word(*actual),
                type_word(spec.type_)
            );
            if b.set(CONDITION_FOUND, ConditionStatus::False, "TypeMismatch", &message)
                .is_news()
            {
                b.warning("TypeMismatch", ACTION_OBSERVE, message);
            }
        }
        GuestView::Unavailable(u) => {
            let message = format!("cannot ask cluster {}: {}", b.input.cluster, u.message);
            let reason = u.reason.clone();
            if b.set(CONDITION_FOUND, ConditionStatus::Unknown, &reason, &message)
                .is_news()
            {
                let note = format!("State of {} is unknown: {message}", b.label);
                // A cluster applied together with this object is expected, not a fault, until
                // its grace period ends (then the reason becomes ClusterNotFound, a Warning).
                if reason == reasons::WAITING_FOR_CLUSTER {
                    b.normal(&reason, ACTION_OBSERVE, note);
                } else {
                    b.warning(&reason, ACTION_OBSERVE, note);
                }
            }
        }
    }
}

fn type_word(t: GuestType) -> &'static str {
    match t {
        GuestType::Vm => "VM",
        GuestType::Lxc => "LXC",
    }
}

fn previous_found(previous: &ServiceStatus) -> bool {
    find_condition(&previous.conditions, CONDITION_FOUND).is_some_and(|c| c.status == ConditionStatus::True)
}

/// Events for node and power changes of a guest that was found before.
fn transitions(b: &mut Builder<'_>, f: &GuestFacts) {
    let previous = b.input.previous;
    let node = f.guest.node.to_string();
    if let Some(before) = previous.node.as_deref().filter(|n| *n != node) {
        b.normal(
            "GuestMigrated",
            ACTION_OBSERVE,
            format!("{} moved from {before} to {node}", b.label),
        );
    }
    let Some(before) = previous.power_state.filter(|p| *p != f.power) else {
        return;
    };
    let desired = b.input.spec.power_state;
    match f.power {
        PowerState::Stopped if desired == DesiredPowerState::Stopped => {
            b.normal(
                "GuestStopped",
                ACTION_OBSERVE,
                format!("{} stopped on {node}", b.label),
            );
        }
        PowerState::Stopped => b.warning(
            "GuestDown",
            ACTION_OBSERVE,
            format!("{} is stopped on {node}", b.label),
        ),
        PowerState::Running if desired == DesiredPowerState::Stopped => b.warning(
            "GuestStarted",
            ACTION_OBSERVE,
            format!(
                "{} is running on {node} although spec.powerState is Stopped",
                b.label
            ),
        ),
        PowerState::Running if before != PowerState::Unknown => {
            b.normal(
                "GuestRecovered",
                ACTION_OBSERVE,
                format!("{} is running again on {node}", b.label),
            );
        }
        PowerState::Running => {}
        PowerState::Paused => b.warning(
            "GuestPaused",
            ACTION_OBSERVE,
            format!("{} is paused on {node}", b.label),
        ),
        PowerState::Unknown => b.warning(
            "GuestStateUnknown",
            ACTION_OBSERVE,
            format!("the state of {} is unknown: node {node} is offline", b.label),
        ),
    }
}

fn ready(b: &mut Builder<'_>) {
    // A guest kept stopped on purpose is ready once it is stopped: it is not healthy (it serves
    // nothing), but it is what the spec asks for.
    let stopped = stopped_as_desired(b.input.spec, b.status.power_state);
    let order = [CONDITION_FOUND, CONDITION_POWER_STATE_IN_SYNC, CONDITION_HEALTHY];
    let blocking = order
        .iter()
        .filter(|t| !(stopped && **t == CONDITION_HEALTHY))
        .filter_map(|t| find_condition(&b.status.conditions, t))
        .find(|c| c.status != ConditionStatus::True)
        .cloned();
    match blocking {
        Some(c) => {
            b.set(READY, c.status, &c.reason, &c.message);
        }
        None => {
            let message = match (&b.status.node, b.status.power_state) {
                (Some(node), _) if stopped => {
                    format!("{} is stopped on {node}, as spec.powerState asks", b.label)
                }
                (Some(node), Some(p)) => format!(
                    "{} is {} on {node} and healthy",
                    b.label,
                    format!("{p:?}").to_lowercase()
                ),
                _ => format!("{} is healthy", b.label),
            };
            b.set(READY, ConditionStatus::True, "Ready", &message);
        }
    }
}

fn requeue(b: &Builder<'_>, memory: &ServiceMemory, acting: bool) -> Duration {
    let t = b.input.tuning;
    let mut delay = b.input.resync.min(t.drift_check_max);
    if b.status.upid.is_some() || acting {
        delay = delay.min(t.task_poll);
    }
    let locked = find_condition(&b.status.conditions, CONDITION_POWER_STATE_IN_SYNC)
        .is_some_and(|c| c.reason == "GuestLocked");
    if locked {
        delay = delay.min(t.locked_retry);
    }
    if let Some((retry_after, _)) = &memory.power_failure
        && *retry_after > b.input.now
    {
        delay = delay.min(elapsed(b.input.now, *retry_after));
    }
    if let Some(next) = b.input.next_check {
        delay = delay.min(elapsed(b.input.now, next));
    }
    delay.max(Duration::from_secs(1))
}

#[cfg(test)]
#[path = "plan_tests.rs"]
pub(super) mod tests;
