//! The power part of the Service plan: whether to start or shut the guest down to reach
//! `spec.powerState` (never while a task runs, the guest is locked, paused, a template, on an
//! offline node, or within the back-off after a failed attempt), and recording the result of
//! the one action a pass may take.

use super::ServiceMemory;
use super::observe::GuestView;
use super::plan::{ACTION_POWER, Builder, PlanInput, ServicePlan, guest_label, verb};
use crate::controllers::kit::{Conditions, PlannedEvent, time::add};
use crate::crd::conditions::{ConditionStatus, READY, find_condition, remove_condition};
use crate::crd::service::{CONDITION_POWER_STATE_IN_SYNC, DesiredPowerState, PowerState, ServiceStatus};
use crate::proxmox::{self, GuestRef};

/// What the operator does to reach `spec.powerState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerAction {
    /// `POST .../status/start`.
    Start,
    /// `POST .../status/shutdown` (clean shutdown).
    Shutdown,
}

pub(super) fn power(
    b: &mut Builder<'_>,
    guest: &GuestView,
    pending: Option<&str>,
    memory: &ServiceMemory,
) -> Option<(PowerAction, GuestRef)> {
    let target = match b.input.spec.power_state {
        DesiredPowerState::Unmanaged => {
            remove_condition(&mut b.status.conditions, CONDITION_POWER_STATE_IN_SYNC);
            return None;
        }
        DesiredPowerState::Running => PowerState::Running,
        DesiredPowerState::Stopped => PowerState::Stopped,
    };
    let want = format!("{target:?}");
    let set = |b: &mut Builder<'_>, status, reason: &str, message: String| {
        b.set(CONDITION_POWER_STATE_IN_SYNC, status, reason, &message)
    };
    if let Some(upid) = pending {
        let task_type = upid
            .parse::<crate::proxmox::Upid>()
            .map(|u| u.worker_type().to_owned())
            .unwrap_or_default();
        let reason = if verb(&task_type) == "start" {
            "Starting"
        } else {
            "ShuttingDown"
        };
        set(
            b,
            ConditionStatus::False,
            reason,
            format!("waiting for task {upid}"),
        );
        return None;
    }
    let f = match guest {
        GuestView::Found(f) => f,
        GuestView::Missing => {
            set(
                b,
                ConditionStatus::False,
                "GuestNotFound",
                "the guest does not exist".into(),
            );
            return None;
        }
        GuestView::WrongType { .. } => {
            set(
                b,
                ConditionStatus::False,
                "TypeMismatch",
                "the VMID belongs to a guest of another type".into(),
            );
            return None;
        }
        GuestView::Unavailable(u) => {
            set(
                b,
                ConditionStatus::Unknown,
                "GuestStateUnknown",
                u.message.clone(),
            );
            return None;
        }
    };
    let action = match (f.power, target) {
        (p, t) if p == t => {
            set(
                b,
                ConditionStatus::True,
                "InSync",
                format!("the guest is {want}, as spec.powerState asks"),
            );
            return None;
        }
        (PowerState::Unknown, _) => {
            let message = format!("node {} is offline; the guest's state is unknown", f.guest.node);
            set(b, ConditionStatus::Unknown, "GuestStateUnknown", message);
            return None;
        }
        (PowerState::Paused, _) => {
            let message =
                "the guest is paused (a suspend-mode backup, or paused by hand); resume it in Proxmox VE";
            set(b, ConditionStatus::False, "GuestPaused", message.into());
            return None;
        }
        (_, PowerState::Running) => PowerAction::Start,
        _ => PowerAction::Shutdown,
    };
    if f.template {
        let message = "the guest is a template and cannot run; set spec.powerState to Unmanaged".into();
        set(b, ConditionStatus::False, "GuestIsTemplate", message);
        return None;
    }
    if let Some(lock) = &f.lock {
        let message = format!(
            "the guest is locked ({lock}) by another operation; waiting for it to finish before the {}",
            if action == PowerAction::Start {
                "start"
            } else {
                "shutdown"
            }
        );
        if set(b, ConditionStatus::False, "GuestLocked", message.clone()).is_news() {
            b.normal("GuestLocked", ACTION_POWER, format!("{}: {message}", b.label));
        }
        return None;
    }
    if let Some((retry_after, why)) = memory.power_failure.as_ref().filter(|(t, _)| *t > b.input.now) {
        let message = format!("{why}; trying again after {retry_after}");
        set(b, ConditionStatus::False, "PowerActionFailed", message);
        return None;
    }
    Some((action, f.guest.clone()))
}

/// Records the result of starting the planned power action: the task's UPID (polled on the
/// next passes) or the failure.
pub fn record_action(
    plan: &mut ServicePlan,
    input: PlanInput<'_>,
    result: Result<crate::crd::common::TaskHandle, proxmox::Error>,
) {
    let Some((action, guest)) = plan.action.take() else {
        return;
    };
    let label = guest_label(
        input.spec.type_,
        input.spec.vmid,
        plan.outcome.status.name.as_deref(),
    );
    let (reason, verb, event) = match action {
        PowerAction::Start => ("Starting", "start", "StartingGuest"),
        PowerAction::Shutdown => ("ShuttingDown", "shut down", "ShuttingDownGuest"),
    };
    let status = &mut plan.outcome.status;
    let conditions = Conditions::new(&input.previous.conditions, input.generation, input.now);
    let set = |status: &mut ServiceStatus, s, reason: &str, message: &str| {
        conditions.set(
            &mut status.conditions,
            CONDITION_POWER_STATE_IN_SYNC,
            s,
            reason,
            message,
        );
    };
    match result {
        Ok(upid) => {
            set(
                status,
                ConditionStatus::False,
                reason,
                &format!("waiting for task {upid}"),
            );
            status.upid = Some(upid);
            plan.outcome.events.push(PlannedEvent::normal(
                event,
                ACTION_POWER,
                format!(
                    "Asked Proxmox VE to {verb} {label} on {} because spec.powerState is {:?}",
                    guest.node, input.spec.power_state
                ),
            ));
            plan.outcome.requeue = input.tuning.task_poll;
        }
        Err(proxmox::Error::Locked { message, .. }) => {
            let message = format!("the guest is locked by another operation ({message}); waiting");
            set(status, ConditionStatus::False, "GuestLocked", &message);
            plan.outcome.requeue = plan.outcome.requeue.min(input.tuning.locked_retry);
        }
        Err(e) => {
            let message = format!("cannot {verb} the guest: {e}");
            set(status, ConditionStatus::False, "PowerActionFailed", &message);
            plan.outcome.events.push(PlannedEvent::warning(
                "PowerActionFailed",
                ACTION_POWER,
                format!("{label}: {message}"),
            ));
            plan.memory.power_failure = Some((add(input.now, input.tuning.power_retry_after), message));
        }
    }
    // Ready mirrors PowerStateInSync while the action runs.
    if let Some(c) = find_condition(&plan.outcome.status.conditions, CONDITION_POWER_STATE_IN_SYNC).cloned() {
        conditions.set(
            &mut plan.outcome.status.conditions,
            READY,
            c.status,
            &c.reason,
            &c.message,
        );
    }
}
