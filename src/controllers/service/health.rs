//! Health checks of a Service: which are due ([`due_checks`], pure), running them
//! ([`crate::controllers::pve::probe`]), and folding the probes into the status results
//! ([`fold`], pure: failure threshold, transition times). The due checks of one pass run
//! concurrently.

use std::{collections::BTreeMap, time::Duration};

use jiff::Timestamp;

use super::ServiceMemory;
use super::observe::GuestView;
use crate::controllers::kit::time::{add, elapsed};
pub use crate::controllers::pve::probe::{HealthEnv, Probe, probe};
use crate::crd::health::{HealthCheck, HealthCheckResult, HealthCheckType};
use crate::crd::service::PowerState;

/// The checks of `checks` due at `now`: never run, or last run at least `intervalSeconds` ago.
pub fn due_checks<'a>(
    checks: &'a [HealthCheck],
    memory: &ServiceMemory,
    now: Timestamp,
) -> Vec<&'a HealthCheck> {
    checks
        .iter()
        .filter(|c| {
            memory
                .last_probe
                .get(&c.name)
                .is_none_or(|last| elapsed(*last, now) >= interval(c))
        })
        .collect()
}

/// When the next of `checks` falls due (`None` without checks).
pub fn next_due<'a>(
    checks: impl IntoIterator<Item = &'a HealthCheck>,
    memory: &ServiceMemory,
    now: Timestamp,
) -> Option<Timestamp> {
    checks
        .into_iter()
        .map(|c| {
            memory
                .last_probe
                .get(&c.name)
                .map_or(now, |last| add(*last, interval(c)))
        })
        .min()
}

fn interval(c: &HealthCheck) -> Duration {
    Duration::from_secs(u64::try_from(c.interval_seconds()).unwrap_or(60))
}

/// Whether a check can run against `guest` this pass. While the guest is known not to run
/// (stopped, paused, missing, another type) none does: every check probes the guest or what it
/// serves, and the `Healthy` condition already says it is down. Checks that ask PVE about the
/// guest are also skipped while its state is unknown (cluster unreachable, node offline); HTTP
/// and TCP then still run.
pub fn can_run(check: &HealthCheck, guest: &GuestView) -> bool {
    if guest.not_running().is_some() {
        return false;
    }
    match check.type_ {
        HealthCheckType::Http | HealthCheckType::Tcp => true,
        _ => matches!(guest, GuestView::Found(f) if f.power == PowerState::Running),
    }
}

/// Folds this pass's probes (by check name) into the results in status: a check turns
/// unhealthy after `failureThreshold` failures in a row and healthy after one success; checks
/// that did not run keep their result; removed checks drop out.
pub fn fold(
    checks: &[HealthCheck],
    previous: &[HealthCheckResult],
    probes: &BTreeMap<String, Probe>,
    now: Timestamp,
) -> Vec<HealthCheckResult> {
    let mut results = Vec::new();
    for check in checks {
        let before = previous
            .iter()
            .find(|r| r.name == check.name && r.type_ == check.type_);
        let Some(probe) = probes.get(&check.name) else {
            results.extend(before.cloned());
            continue;
        };
        let failures = if probe.ok {
            0
        } else {
            before.map_or(0, |b| b.consecutive_failures).saturating_add(1)
        };
        let healthy = probe.ok || (failures < check.failure_threshold() && before.is_none_or(|b| b.healthy));
        let last_transition_time = match before {
            Some(b) if b.healthy == healthy => b.last_transition_time,
            _ => Some(now),
        };
        results.push(HealthCheckResult {
            name: check.name.clone(),
            type_: check.type_,
            healthy,
            message: probe.message.clone(),
            consecutive_failures: failures,
            last_transition_time,
        });
    }
    results
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
