//! The `Healthy` condition through the planner, against the JSON fixtures of `plan_tests`.

use super::super::observe::GuestView;
use super::super::plan::PowerAction;
use super::super::plan::tests::{
    at, cond, events, first_pass, migrated, pass, pass_after, spec, summary, view,
};
use crate::controllers::service::ServiceMemory;
use crate::crd::common::GuestType;
use crate::crd::conditions::ConditionStatus;
use crate::crd::health::{HealthCheckResult, HealthCheckType};
use crate::crd::service::{PowerState, ServiceStatus};

#[test]
fn healthy_failing_check_turns_false_with_its_message_and_back() {
    let s = spec(
        200,
        "VM",
        "healthChecks:\n- {name: web, type: HTTP, http: {url: 'https://cloud.home.lan/status.php'}}\n",
    );
    let mem = ServiceMemory::default();
    let prev = ServiceStatus::default();
    let result = |healthy, failures| HealthCheckResult {
        name: "web".into(),
        type_: HealthCheckType::Http,
        healthy,
        message: if healthy {
            "HTTP 200".into()
        } else {
            "HTTP 503, expected 200".into()
        },
        consecutive_failures: failures,
        last_transition_time: Some(at(0)),
    };
    let input = pass(&s, &prev, &mem, 0);
    let ok = input.checked(&view(200, GuestType::Vm), vec![result(true, 0)]);
    assert_eq!(
        summary(cond(&ok.outcome.status, "Healthy")),
        (ConditionStatus::True, "ChecksPassing")
    );
    let input = pass(&s, &ok.outcome.status, &mem, 180);
    let bad = input.checked(&view(200, GuestType::Vm), vec![result(false, 3)]);
    let c = cond(&bad.outcome.status, "Healthy");
    assert_eq!(summary(c), (ConditionStatus::False, "CheckFailing"));
    assert_eq!(
        c.message,
        "check web (HTTP) is failing: HTTP 503, expected 200 (3 failures in a row)"
    );
    assert_eq!(
        summary(cond(&bad.outcome.status, "Ready")),
        (ConditionStatus::False, "CheckFailing")
    );
    assert_eq!(events(&bad), [("Warning", "Unhealthy")]);
    let input = pass(&s, &bad.outcome.status, &mem, 240);
    let back = input.checked(&view(200, GuestType::Vm), vec![result(true, 0)]);
    assert_eq!(events(&back), [("Normal", "Healthy")]);
    assert_eq!(
        summary(cond(&back.outcome.status, "Ready")),
        (ConditionStatus::True, "Ready")
    );
}

#[test]
fn healthy_checks_without_results_are_not_checked_yet() {
    let s = spec(200, "VM", "healthChecks:\n- {name: agent, type: GuestAgent}\n");
    let p = first_pass(&s, &view(200, GuestType::Vm));
    assert_eq!(
        summary(cond(&p.outcome.status, "Healthy")),
        (ConditionStatus::Unknown, "NotChecked")
    );
}

/// The `web` check of [`healthy_is_false_while_the_guest_is_stopped_with_one_event_each_way`].
fn web_result(healthy: bool, at_secs: i64) -> HealthCheckResult {
    HealthCheckResult {
        name: "web".into(),
        type_: HealthCheckType::Http,
        healthy,
        message: if healthy {
            "HTTP 200"
        } else {
            "HTTP 503, expected 200"
        }
        .into(),
        consecutive_failures: if healthy { 0 } else { 3 },
        last_transition_time: Some(at(at_secs)),
    }
}

#[test]
fn healthy_is_false_while_the_guest_is_stopped_with_one_event_each_way() {
    let s = spec(
        201,
        "LXC",
        "healthChecks:\n- {name: web, type: HTTP, http: {url: 'http://192.168.2.201:3000/'}}\n",
    );
    let mem = ServiceMemory::default();
    let prev = ServiceStatus::default();
    let up = pass(&s, &prev, &mem, 0).checked(&view(201, GuestType::Lxc), vec![web_result(true, 0)]);
    assert_eq!(
        summary(cond(&up.outcome.status, "Healthy")),
        (ConditionStatus::True, "ChecksPassing")
    );

    // Stopped: the last result is kept, but the guest is not healthy, whatever it said.
    let stopped = migrated(201, GuestType::Lxc);
    let down = pass(&s, &up.outcome.status, &mem, 60).checked(&stopped, vec![web_result(true, 0)]);
    let c = cond(&down.outcome.status, "Healthy");
    assert_eq!(summary(c), (ConditionStatus::False, "GuestNotRunning"));
    assert_eq!(
        c.message,
        "the guest is stopped; its health checks resume when it runs"
    );
    assert_eq!(
        summary(cond(&down.outcome.status, "Ready")),
        (ConditionStatus::False, "GuestNotRunning")
    );
    assert_eq!(
        events(&down),
        [("Warning", "GuestDown"), ("Warning", "Unhealthy")]
    );
    assert_eq!(down.outcome.status.health, [web_result(true, 0)]);

    // Still stopped a pass later: nothing new, not even a second Event.
    let again = pass(&s, &down.outcome.status, &mem, 120).checked(&stopped, vec![web_result(true, 0)]);
    assert_eq!(again.outcome.status, down.outcome.status);
    assert!(again.outcome.events.is_empty());

    // Running again, and the checks pass: healthy, with one Event.
    let back = pass(&s, &again.outcome.status, &mem, 180)
        .checked(&view(201, GuestType::Lxc), vec![web_result(true, 0)]);
    assert_eq!(
        summary(cond(&back.outcome.status, "Healthy")),
        (ConditionStatus::True, "ChecksPassing")
    );
    assert_eq!(
        events(&back),
        [("Normal", "GuestRecovered"), ("Normal", "Healthy")]
    );

    // Running again but a check fails: Healthy stays False (new reason), no second Unhealthy.
    let failing = pass(&s, &again.outcome.status, &mem, 180)
        .checked(&view(201, GuestType::Lxc), vec![web_result(false, 180)]);
    assert_eq!(
        summary(cond(&failing.outcome.status, "Healthy")),
        (ConditionStatus::False, "CheckFailing")
    );
    assert_eq!(events(&failing), [("Normal", "GuestRecovered")]);
}

#[test]
fn healthy_is_false_for_a_paused_guest() {
    let s = spec(200, "VM", "");
    let GuestView::Found(mut paused) = view(200, GuestType::Vm) else {
        unreachable!()
    };
    paused.power = PowerState::Paused;
    let p = first_pass(&s, &GuestView::Found(paused));
    let c = cond(&p.outcome.status, "Healthy");
    assert_eq!(summary(c), (ConditionStatus::False, "GuestNotRunning"));
    assert_eq!(c.message, "the guest is paused");
}

#[test]
fn healthy_is_false_but_ready_true_for_a_guest_stopped_as_desired() {
    let s = spec(201, "LXC", "powerState: Stopped\n");
    let first = first_pass(&s, &view(201, GuestType::Lxc));
    assert_eq!(first.action.as_ref().map(|a| a.0), Some(PowerAction::Shutdown));
    let p = pass_after(&s, &first, 60, &migrated(201, GuestType::Lxc));
    let st = &p.outcome.status;
    assert_eq!(
        summary(cond(st, "Healthy")),
        (ConditionStatus::False, "GuestNotRunning")
    );
    let ready = cond(st, "Ready");
    assert_eq!(summary(ready), (ConditionStatus::True, "Ready"));
    assert_eq!(
        ready.message,
        "gitea (CT 201) is stopped on pve2, as spec.powerState asks"
    );
    assert_eq!(
        events(&p),
        [("Normal", "GuestStopped"), ("Normal", "Unhealthy")],
        "a stop the spec asks for is no warning"
    );
}
