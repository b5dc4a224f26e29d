//! The `Healthy` condition of a Service and its Events, from the folded check results and
//! whether the guest runs. Pure; part of [`super::plan`].
//!
//! While the guest is known not to run (stopped, paused, missing, another type) `Healthy` is
//! `False` with reason `GuestNotRunning`: that is known, not merely unchecked, so not `Unknown`
//! (which stays for "cannot tell yet": no result so far). Its checks wait meanwhile
//! ([`super::health::can_run`]) and all run on the first pass that sees the guest running.

use super::observe::GuestView;
use super::plan::{ACTION_HEALTH, Builder};
use crate::crd::conditions::ConditionStatus;
use crate::crd::health::{HealthCheck, HealthCheckResult, HealthCheckType};
use crate::crd::service::{CONDITION_HEALTHY, DesiredPowerState, PowerState, ServiceSpec};

/// `Healthy` reason while the guest is known not to run (stopped, paused, missing).
pub const REASON_GUEST_NOT_RUNNING: &str = "GuestNotRunning";

/// Whether the guest is stopped because `spec.powerState` asks for it.
pub(super) fn stopped_as_desired(spec: &ServiceSpec, observed: Option<PowerState>) -> bool {
    spec.power_state == DesiredPowerState::Stopped && observed == Some(PowerState::Stopped)
}

/// Sets `Healthy`. One Event each way: `Unhealthy` when it turns False (a failing check, or a
/// guest that stopped: a Warning unless `spec.powerState` asked for the stop) and `Healthy`
/// when it turns True again; a change of reason within False is not news.
pub(super) fn healthy(b: &mut Builder<'_>, guest: &GuestView) {
    let (status, reason, message) = condition(b.input.spec, &b.status.health, guest);
    let change = b.set(CONDITION_HEALTHY, status, reason, &message);
    let (changed, before) = (change.is_news(), change.before);
    let was_false = before.is_some_and(|c| c.status == ConditionStatus::False);
    let note = format!("{}: {message}", b.label);
    if changed && status == ConditionStatus::False && !was_false {
        if stopped_as_desired(b.input.spec, b.status.power_state) {
            b.normal("Unhealthy", ACTION_HEALTH, note);
        } else {
            b.warning("Unhealthy", ACTION_HEALTH, note);
        }
    } else if changed && status == ConditionStatus::True && was_false {
        b.normal("Healthy", ACTION_HEALTH, note);
    }
}

/// Status, reason and message of `Healthy`.
fn condition(
    spec: &ServiceSpec,
    results: &[HealthCheckResult],
    guest: &GuestView,
) -> (ConditionStatus, &'static str, String) {
    let checks: &[HealthCheck] = &spec.health_checks;
    if let Some(why) = guest.not_running() {
        let message = if checks.is_empty() {
            why
        } else {
            format!("{why}; its health checks resume when it runs")
        };
        return (ConditionStatus::False, REASON_GUEST_NOT_RUNNING, message);
    }
    if checks.is_empty() {
        return (
            ConditionStatus::True,
            "NoHealthChecks",
            "no health checks are defined (spec.healthChecks)".to_owned(),
        );
    }
    let failing: Vec<&HealthCheckResult> = results.iter().filter(|r| !r.healthy).collect();
    let unchecked: Vec<&str> = checks
        .iter()
        .filter(|c| !results.iter().any(|r| r.name == c.name))
        .map(|c| c.name.as_str())
        .collect();
    if let Some(first) = failing.first() {
        let more = match failing.len() {
            1 => String::new(),
            n => format!("; {} more failing", n - 1),
        };
        (
            ConditionStatus::False,
            "CheckFailing",
            format!(
                "check {} ({}) is failing: {} ({} failures in a row){more}",
                first.name,
                check_type_name(first.type_),
                first.message,
                first.consecutive_failures
            ),
        )
    } else if !unchecked.is_empty() {
        (
            ConditionStatus::Unknown,
            "NotChecked",
            format!("waiting for the first result of: {}", unchecked.join(", ")),
        )
    } else {
        (
            ConditionStatus::True,
            "ChecksPassing",
            format!("all {} health checks pass", checks.len()),
        )
    }
}

/// The API spelling of a check type (`HTTP`, `GuestAgent`).
fn check_type_name(t: HealthCheckType) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{t:?}"))
}

#[cfg(test)]
#[path = "healthy_tests.rs"]
mod tests;
