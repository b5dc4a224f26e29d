//! The Service planner against JSON fixtures of `/cluster/resources`.

use super::*;
use crate::controllers::pve::guest::{Unavailable, view_from};
use crate::crd::conditions::Condition;
use crate::proxmox::{Vmid, api::ClusterResource};

const UPID: &str = "UPID:pve1:00001234:00005678:66A1B2C3:qmstart:204:root@pam!pvesim:";

pub(crate) fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_750_000_000 + secs).unwrap()
}

pub(crate) fn rows(json: &str) -> Vec<ClusterResource> {
    serde_json::from_str(json).unwrap()
}

pub(crate) fn view(vmid: u32, type_: GuestType) -> GuestView {
    view_from(
        &rows(include_str!("testdata/resources_vm.json")),
        Vmid::new(vmid).unwrap(),
        type_,
    )
}

pub(crate) fn migrated(vmid: u32, type_: GuestType) -> GuestView {
    view_from(
        &rows(include_str!("testdata/resources_vm_migrated.json")),
        Vmid::new(vmid).unwrap(),
        type_,
    )
}

pub(crate) fn spec(vmid: i32, type_: &str, extra: &str) -> ServiceSpec {
    serde_yaml::from_str(&format!(
        "clusterRef: {{name: homelab}}\nvmid: {vmid}\ntype: {type_}\n{extra}"
    ))
    .unwrap()
}

pub(crate) const TUNING: Tuning = Tuning::DEFAULT;

pub(crate) struct Pass<'a> {
    pub(crate) spec: &'a ServiceSpec,
    previous: &'a ServiceStatus,
    memory: &'a ServiceMemory,
    now: Timestamp,
}

impl Pass<'_> {
    pub(crate) fn input(&self) -> PlanInput<'_> {
        PlanInput {
            spec: self.spec,
            generation: Some(1),
            previous: self.previous,
            now: self.now,
            cluster: "homelab",
            resync: Duration::from_secs(300),
            tuning: &TUNING,
            memory: self.memory,
            next_check: None,
        }
    }

    pub(crate) fn run(&self, guest: &GuestView, task: &TaskView) -> ServicePlan {
        plan(self.input(), guest, task, Vec::new())
    }

    /// The pass with no task and `health` as the folded check results.
    pub(crate) fn checked(&self, guest: &GuestView, health: Vec<HealthCheckResult>) -> ServicePlan {
        plan(self.input(), guest, &TaskView::None, health)
    }
}

/// The first pass over `s` (no stored status, nothing remembered) at t=0, seeing `guest`.
pub(crate) fn first_pass(s: &ServiceSpec, guest: &GuestView) -> ServicePlan {
    pass(s, &ServiceStatus::default(), &ServiceMemory::default(), 0).run(guest, &TaskView::None)
}

/// A pass at t=`secs` over `s` after `previous` (its status stored, nothing remembered).
pub(crate) fn pass_after(
    s: &ServiceSpec,
    previous: &ServicePlan,
    secs: i64,
    guest: &GuestView,
) -> ServicePlan {
    pass(s, &previous.outcome.status, &ServiceMemory::default(), secs).run(guest, &TaskView::None)
}

pub(crate) fn pass<'a>(
    spec: &'a ServiceSpec,
    previous: &'a ServiceStatus,
    memory: &'a ServiceMemory,
    secs: i64,
) -> Pass<'a> {
    Pass {
        spec,
        previous,
        memory,
        now: at(secs),
    }
}

pub(crate) fn cond<'a>(s: &'a ServiceStatus, t: &str) -> &'a Condition {
    find_condition(&s.conditions, t).unwrap_or_else(|| panic!("no {t} in {:?}", s.conditions))
}

pub(crate) fn events(p: &ServicePlan) -> Vec<(&str, &str)> {
    p.outcome
        .events
        .iter()
        .map(|e| (e.type_str(), e.reason.as_str()))
        .collect()
}

pub(crate) fn summary(c: &Condition) -> (ConditionStatus, &str) {
    (c.status, c.reason.as_str())
}

#[test]
fn plan_first_pass_finds_guest_where_it_runs_and_reports_it() {
    let s = spec(200, "VM", "node: pve3\n");
    let p = first_pass(&s, &view(200, GuestType::Vm));
    let st = &p.outcome.status;
    assert_eq!(st.node.as_deref(), Some("pve1"), "the node hint pve3 is ignored");
    assert_eq!(st.name.as_deref(), Some("nextcloud"));
    assert_eq!(st.power_state, Some(PowerState::Running));
    assert_eq!(st.start_time, Some(at(-3600)));
    assert_eq!(st.last_seen_time, Some(at(0)));
    let types: Vec<&str> = st.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(
        types,
        ["Ready", "Found", "Healthy"],
        "no PowerStateInSync while unmanaged"
    );
    assert_eq!(summary(cond(st, "Ready")), (ConditionStatus::True, "Ready"));
    assert_eq!(
        summary(cond(st, "Healthy")),
        (ConditionStatus::True, "NoHealthChecks")
    );
    assert_eq!(events(&p), [("Normal", "GuestFound")]);
    assert_eq!(
        p.outcome.events[0].note,
        "Found nextcloud (VM 200), running on pve1"
    );
    assert_eq!(p.action, None);
    assert_eq!(p.outcome.requeue, Duration::from_secs(300));
}

#[test]
fn plan_same_guest_a_minute_later_changes_nothing() {
    let s = spec(200, "VM", "");
    let first = first_pass(&s, &view(200, GuestType::Vm));
    // One second of jitter between "now" and the uptime read: the start time holds.
    let GuestView::Found(mut later) = view(200, GuestType::Vm) else {
        unreachable!()
    };
    later.uptime = Some(3600 + 61);
    let second = pass_after(&s, &first, 60, &GuestView::Found(later));
    assert_eq!(second.outcome.status, first.outcome.status);
    assert!(second.outcome.events.is_empty());
    // A resync interval later nothing changed either: no status write per Service and resync.
    let GuestView::Found(mut resynced) = view(200, GuestType::Vm) else {
        unreachable!()
    };
    resynced.uptime = Some(3600 + 300);
    let third = pass_after(&s, &first, 300, &GuestView::Found(resynced));
    assert_eq!(third.outcome.status, first.outcome.status);
    // After LAST_SEEN_REFRESH the last-seen time is refreshed once.
    let fourth = pass_after(&s, &first, 600, &view(200, GuestType::Vm));
    assert_eq!(fourth.outcome.status.last_seen_time, Some(at(600)));
}

#[test]
fn plan_migrated_guest_updates_node_with_an_event() {
    let s = spec(200, "VM", "");
    let first = first_pass(&s, &view(200, GuestType::Vm));
    let moved = pass_after(&s, &first, 60, &migrated(200, GuestType::Vm));
    assert_eq!(moved.outcome.status.node.as_deref(), Some("pve2"));
    assert_eq!(events(&moved), [("Normal", "GuestMigrated")]);
    assert_eq!(
        moved.outcome.events[0].note,
        "nextcloud (VM 200) moved from pve1 to pve2"
    );
    assert_eq!(moved.outcome.status.last_seen_time, Some(at(60)));
}

#[test]
fn plan_unmanaged_guest_going_down_is_reported_but_left_alone() {
    let s = spec(201, "LXC", "");
    let first = first_pass(&s, &view(201, GuestType::Lxc));
    let down = pass_after(&s, &first, 60, &migrated(201, GuestType::Lxc));
    assert_eq!(
        events(&down),
        [("Warning", "GuestDown"), ("Warning", "Unhealthy")]
    );
    assert_eq!(down.outcome.events[0].note, "gitea (CT 201) is stopped on pve2");
    assert_eq!(
        down.outcome.events[1].note,
        "gitea (CT 201): the guest is stopped"
    );
    assert_eq!(down.action, None);
    assert_eq!(down.outcome.status.start_time, None);
    assert_eq!(
        summary(cond(&down.outcome.status, "Healthy")),
        (ConditionStatus::False, "GuestNotRunning")
    );
    assert_eq!(
        summary(cond(&down.outcome.status, "Ready")),
        (ConditionStatus::False, "GuestNotRunning")
    );
}

#[test]
fn plan_stopped_guest_with_desired_running_starts_it_and_records_the_upid() {
    let s = spec(204, "VM", "powerState: Running\n");
    let mem = ServiceMemory::default();
    let prev = ServiceStatus {
        power_state: Some(PowerState::Running),
        node: Some("pve1".into()),
        conditions: vec![Condition::new(
            "Found",
            ConditionStatus::True,
            "Found",
            "",
            Some(1),
            at(-60),
        )],
        ..Default::default()
    };
    let input = pass(&s, &prev, &mem, 0);
    let mut p = input.run(&view(204, GuestType::Vm), &TaskView::None);
    let (action, guest) = p.action.clone().expect("an action");
    assert_eq!(action, PowerAction::Start);
    assert_eq!((guest.node.as_str(), guest.vmid.get()), ("pve1", 204));
    record_action(&mut p, input.input(), Ok(UPID.into()));
    let st = &p.outcome.status;
    assert_eq!(st.upid.as_deref(), Some(UPID));
    assert_eq!(
        summary(cond(st, "PowerStateInSync")),
        (ConditionStatus::False, "Starting")
    );
    assert_eq!(summary(cond(st, "Ready")), (ConditionStatus::False, "Starting"));
    assert_eq!(
        summary(cond(st, "Healthy")),
        (ConditionStatus::False, "GuestNotRunning")
    );
    assert_eq!(
        events(&p),
        [
            ("Warning", "GuestDown"),
            ("Warning", "Unhealthy"),
            ("Normal", "StartingGuest")
        ]
    );
    assert_eq!(p.outcome.requeue, Duration::from_secs(5));
    assert_eq!(p.action, None);

    // Next pass: the task runs; nothing new is started.
    let mem2 = p.memory.clone();
    let running = pass(&s, st, &mem2, 5).run(&view(204, GuestType::Vm), &TaskView::Running(UPID.into()));
    assert_eq!(running.action, None);
    assert_eq!(running.outcome.status.upid.as_deref(), Some(UPID));
    assert!(running.outcome.events.is_empty());
    assert_eq!(running.outcome.requeue, Duration::from_secs(5));

    // The task ended and the guest runs: in sync, recovered, the UPID is gone.
    let GuestView::Found(mut up) = view(204, GuestType::Vm) else {
        unreachable!()
    };
    up.power = PowerState::Running;
    up.uptime = Some(3);
    let done = TaskView::Done {
        upid: UPID.into(),
        task_type: "qmstart".into(),
        error: None,
        locked: false,
    };
    let after = pass(&s, &running.outcome.status, &mem2, 10).run(&GuestView::Found(up), &done);
    let st = &after.outcome.status;
    assert_eq!(st.upid, None);
    assert_eq!(
        summary(cond(st, "PowerStateInSync")),
        (ConditionStatus::True, "InSync")
    );
    assert_eq!(
        events(&after),
        [("Normal", "GuestRecovered"), ("Normal", "Healthy")]
    );
    assert_eq!(st.start_time, Some(at(7)));
}

#[test]
fn plan_locked_guest_waits_instead_of_fighting_the_backup() {
    let s = spec(202, "VM", "powerState: Running\n");
    let p = first_pass(&s, &view(202, GuestType::Vm));
    assert_eq!(p.action, None);
    let c = cond(&p.outcome.status, "PowerStateInSync");
    assert_eq!(summary(c), (ConditionStatus::False, "GuestLocked"));
    assert!(c.message.contains("locked (backup)"), "{}", c.message);
    assert_eq!(
        events(&p),
        [
            ("Normal", "GuestFound"),
            ("Normal", "GuestLocked"),
            ("Warning", "Unhealthy")
        ]
    );
    assert_eq!(p.outcome.requeue, Duration::from_secs(30));
}

#[test]
fn plan_failed_power_action_backs_off_before_trying_again() {
    let s = spec(204, "VM", "powerState: Running\n");
    let mem = ServiceMemory::default();
    let prev = ServiceStatus::default();
    let input = pass(&s, &prev, &mem, 0);
    let mut p = input.run(&view(204, GuestType::Vm), &TaskView::None);
    let denied = crate::proxmox::Error::PermissionDenied {
        message: "Permission check failed (/vms/204, VM.PowerMgmt)".into(),
    };
    record_action(&mut p, input.input(), Err(denied));
    let c = cond(&p.outcome.status, "PowerStateInSync");
    assert_eq!(summary(c), (ConditionStatus::False, "PowerActionFailed"));
    assert!(c.message.contains("VM.PowerMgmt"), "{}", c.message);
    assert!(events(&p).contains(&("Warning", "PowerActionFailed")));
    let mem2 = p.memory.clone();
    assert!(mem2.power_failure.is_some());
    let soon = pass(&s, &p.outcome.status, &mem2, 60).run(&view(204, GuestType::Vm), &TaskView::None);
    assert_eq!(soon.action, None);
    assert_eq!(soon.outcome.requeue, Duration::from_secs(240));
    let later = pass(&s, &soon.outcome.status, &mem2, 300).run(&view(204, GuestType::Vm), &TaskView::None);
    assert!(later.action.is_some(), "tries again after the back-off");
}

#[test]
fn plan_failed_power_task_is_reported_once() {
    let s = spec(204, "VM", "powerState: Running\n");
    let mem = ServiceMemory::default();
    let prev = ServiceStatus {
        upid: Some(UPID.into()),
        ..Default::default()
    };
    let done = TaskView::Done {
        upid: UPID.into(),
        task_type: "qmstart".into(),
        error: Some("PVE task failed: start failed: storage 'ceph' is not online".into()),
        locked: false,
    };
    let p = pass(&s, &prev, &mem, 0).run(&view(204, GuestType::Vm), &done);
    assert_eq!(p.outcome.status.upid, None);
    assert_eq!(p.action, None, "no immediate retry after a failed task");
    let c = cond(&p.outcome.status, "PowerStateInSync");
    assert_eq!(summary(c), (ConditionStatus::False, "PowerActionFailed"));
    assert!(
        c.message.contains("storage 'ceph' is not online"),
        "{}",
        c.message
    );
    assert!(events(&p).contains(&("Warning", "PowerActionFailed")));
}

#[test]
fn plan_desired_stopped_shuts_a_running_guest_down() {
    let s = spec(200, "VM", "powerState: Stopped\n");
    let p = first_pass(&s, &view(200, GuestType::Vm));
    assert_eq!(p.action.map(|a| a.0), Some(PowerAction::Shutdown));
}

#[test]
fn plan_missing_guest_is_flagged_and_never_acted_on() {
    let s = spec(999, "VM", "powerState: Running\n");
    let mem = ServiceMemory::default();
    let prev = ServiceStatus {
        node: Some("pve1".into()),
        name: Some("old".into()),
        last_seen_time: Some(at(-10)),
        conditions: vec![Condition::new(
            "Found",
            ConditionStatus::True,
            "Found",
            "",
            Some(1),
            at(-60),
        )],
        ..Default::default()
    };
    let p = pass(&s, &prev, &mem, 0).run(&view(999, GuestType::Vm), &TaskView::None);
    let st = &p.outcome.status;
    assert_eq!(
        summary(cond(st, "Found")),
        (ConditionStatus::False, "GuestNotFound")
    );
    assert_eq!(
        summary(cond(st, "Ready")),
        (ConditionStatus::False, "GuestNotFound")
    );
    assert_eq!(
        (st.node.as_deref(), st.power_state),
        (None, Some(PowerState::Unknown))
    );
    assert_eq!(st.last_seen_time, Some(at(-10)), "shows when it was last seen");
    assert_eq!(st.name.as_deref(), Some("old"));
    assert_eq!(
        summary(cond(st, "Healthy")),
        (ConditionStatus::False, "GuestNotRunning")
    );
    assert_eq!(cond(st, "Healthy").message, "the guest does not exist");
    assert_eq!(
        events(&p),
        [("Warning", "GuestMissing"), ("Warning", "Unhealthy")]
    );
    assert_eq!(p.action, None);
}

#[test]
fn plan_guest_on_offline_node_is_unknown_and_not_acted_on() {
    let s = spec(203, "VM", "powerState: Running\n");
    let p = first_pass(&s, &view(203, GuestType::Vm));
    assert_eq!(p.outcome.status.power_state, Some(PowerState::Unknown));
    assert_eq!(
        summary(cond(&p.outcome.status, "PowerStateInSync")),
        (ConditionStatus::Unknown, "GuestStateUnknown")
    );
    assert_eq!(p.action, None);
}

#[test]
fn plan_wrong_guest_type_and_template_are_explained() {
    let s = spec(200, "LXC", "");
    let p = first_pass(&s, &view(200, GuestType::Lxc));
    let c = cond(&p.outcome.status, "Found");
    assert_eq!(summary(c), (ConditionStatus::False, "TypeMismatch"));
    assert!(
        c.message.contains("is a VM, but spec.type is LXC"),
        "{}",
        c.message
    );

    let t = spec(9000, "VM", "powerState: Running\n");
    let p = first_pass(&t, &view(9000, GuestType::Vm));
    assert_eq!(p.action, None);
    assert_eq!(
        summary(cond(&p.outcome.status, "PowerStateInSync")),
        (ConditionStatus::False, "GuestIsTemplate")
    );
}

#[test]
fn plan_unreachable_cluster_keeps_last_node_and_says_why() {
    let s = spec(200, "VM", "");
    let first = first_pass(&s, &view(200, GuestType::Vm));
    let down = GuestView::Unavailable(Unavailable {
        reason: "Unreachable".into(),
        message: "cannot connect to any endpoint".into(),
    });
    let p = pass_after(&s, &first, 60, &down);
    let st = &p.outcome.status;
    assert_eq!(st.node.as_deref(), Some("pve1"));
    assert_eq!(st.power_state, Some(PowerState::Unknown));
    assert_eq!(
        summary(cond(st, "Found")),
        (ConditionStatus::Unknown, "Unreachable")
    );
    assert_eq!(events(&p), [("Warning", "Unreachable")]);
}

#[test]
fn plan_cluster_not_created_yet_is_a_normal_wait_then_a_warning() {
    let s = spec(200, "VM", "");
    let unavailable = |reason: &str| {
        GuestView::Unavailable(Unavailable {
            reason: reason.into(),
            message: "ProxmoxCluster \"homelab\"".into(),
        })
    };
    let waiting = first_pass(&s, &unavailable("WaitingForCluster"));
    assert_eq!(
        summary(cond(&waiting.outcome.status, "Ready")),
        (ConditionStatus::Unknown, "WaitingForCluster")
    );
    assert_eq!(events(&waiting), [("Normal", "WaitingForCluster")]);
    let missing = pass_after(&s, &waiting, 120, &unavailable("ClusterNotFound"));
    assert_eq!(
        summary(cond(&missing.outcome.status, "Found")),
        (ConditionStatus::Unknown, "ClusterNotFound")
    );
    assert_eq!(events(&missing), [("Warning", "ClusterNotFound")]);
}
