//! The Service reconcile core against the simulator over real HTTPS on loopback: finding guests
//! where they really run, migrations, offline nodes, power-state enforcement through PVE tasks
//! (including a guest locked by a backup), and health checks against real local listeners and
//! the simulator's guest agent.

use homelab_autopilot::controllers::pve::ClusterAccess;
use homelab_autopilot::controllers::pve::guest::Unavailable;
use homelab_autopilot::crd::ServiceStatus;
use homelab_autopilot::crd::conditions::ConditionStatus;
use homelab_autopilot::crd::service::PowerState;
use homelab_autopilot::demo::standin::StandIn;
use homelab_autopilot::proxmox::api::MigrateRequest;
use homelab_autopilot::proxmox::{GuestRef, GuestType, NodeName, Vmid};

use crate::controllers_common::{Lab, at, cond, event_reasons, service, summary};

fn guest(node: &str, guest_type: GuestType, vmid: u32) -> GuestRef {
    GuestRef::new(NodeName::new(node).unwrap(), guest_type, Vmid::new(vmid).unwrap())
}

fn tasks_of(lab: &Lab, kind: &str) -> usize {
    lab.sim
        .tasks()
        .iter()
        .filter(|t| t.upid.contains(&format!(":{kind}:")))
        .count()
}

#[tokio::test]
async fn service_finds_guest_ignoring_the_hint_and_follows_a_migration() {
    let lab = Lab::start().await;
    let spec = service(200, "VM", "node: pve3\n");
    let first = lab.first_service_pass("s1", &spec).await;
    let st = &first.status;
    assert_eq!(st.node.as_deref(), Some("pve1"));
    assert_eq!(st.name.as_deref(), Some("nextcloud"));
    assert_eq!(st.power_state, Some(PowerState::Running));
    assert!(st.start_time.is_some());
    assert_eq!(cond(&st.conditions, "Ready").status, ConditionStatus::True);
    assert_eq!(event_reasons(&first), ["GuestFound"]);

    let task = lab
        .admin
        .migrate_guest(
            &guest("pve1", GuestType::Qemu, 200),
            &MigrateRequest::new(NodeName::new("pve2").unwrap(), true),
        )
        .await
        .unwrap();
    lab.wait_task(task.upid.as_str()).await;
    lab.sim.advance_clock(std::time::Duration::from_secs(60));
    lab.changed_by_hand();
    let moved = lab.service_pass("s1", &spec, st, at(60)).await;
    assert_eq!(moved.status.node.as_deref(), Some("pve2"));
    assert_eq!(event_reasons(&moved), ["GuestMigrated"]);
    assert_eq!(
        moved.status.start_time, st.start_time,
        "a live migration keeps the uptime"
    );
}

#[tokio::test]
async fn service_stopped_guest_with_desired_running_is_started_through_a_task() {
    let lab = Lab::start().await;
    let spec = service(200, "VM", "powerState: Running\n");
    let up = lab.first_service_pass("s1", &spec).await;
    assert_eq!(cond(&up.status.conditions, "PowerStateInSync").reason, "InSync");

    lab.stop_by_hand(&guest("pve1", GuestType::Qemu, 200)).await;
    let acting = lab.service_pass("s1", &spec, &up.status, at(60)).await;
    let upid = acting
        .status
        .upid
        .clone()
        .expect("the start task is recorded in status");
    assert!(upid.contains(":qmstart:200:"), "{upid}");
    assert_eq!(acting.status.power_state, Some(PowerState::Stopped));
    assert_eq!(
        cond(&acting.status.conditions, "PowerStateInSync").reason,
        "Starting"
    );
    assert_eq!(
        cond(&acting.status.conditions, "Healthy").reason,
        "GuestNotRunning"
    );
    assert_eq!(
        event_reasons(&acting),
        ["GuestDown", "Unhealthy", "StartingGuest"]
    );
    assert_eq!(acting.requeue, std::time::Duration::from_millis(100));

    lab.wait_task(&upid).await;
    let done = lab.service_pass("s1", &spec, &acting.status, at(65)).await;
    assert_eq!(done.status.upid, None);
    assert_eq!(done.status.power_state, Some(PowerState::Running));
    assert_eq!(cond(&done.status.conditions, "PowerStateInSync").reason, "InSync");
    assert_eq!(event_reasons(&done), ["GuestRecovered", "Healthy"]);
    assert_eq!(tasks_of(&lab, "qmstart"), 1, "started exactly once");
    assert_eq!(lab.guest(200), Some(("pve1".into(), true)));
}

#[tokio::test]
async fn service_desired_stopped_shuts_the_guest_down_and_unmanaged_leaves_it() {
    let lab = Lab::start().await;
    let unmanaged = service(201, "LXC", "");
    let p = lab.first_service_pass("s2", &unmanaged).await;
    assert!(find_none(&p.status, "PowerStateInSync"));
    assert_eq!(tasks_of(&lab, "vzshutdown"), 0);

    let stopped = service(201, "LXC", "powerState: Stopped\n");
    let p = lab.service_pass("s2", &stopped, &p.status, at(10)).await;
    let upid = p.status.upid.clone().expect("shutdown task recorded");
    assert!(upid.contains(":vzshutdown:201:"), "{upid}");
    assert_eq!(event_reasons(&p), ["ShuttingDownGuest"]);
    lab.wait_task(&upid).await;
    let p = lab.service_pass("s2", &stopped, &p.status, at(20)).await;
    assert_eq!(p.status.power_state, Some(PowerState::Stopped));
    assert_eq!(event_reasons(&p), ["GuestStopped", "Unhealthy"]);
    assert_eq!(
        cond(&p.status.conditions, "Healthy").reason,
        "GuestNotRunning",
        "a stopped guest is not healthy"
    );
    assert_eq!(
        cond(&p.status.conditions, "Ready").status,
        ConditionStatus::True,
        "but stopped is what the spec asks for"
    );
}

fn find_none(st: &ServiceStatus, t: &str) -> bool {
    st.conditions.iter().all(|c| c.type_ != t)
}

#[tokio::test]
async fn service_guest_locked_by_a_backup_is_not_started_until_the_lock_is_gone() {
    let lab = Lab::start().await;
    lab.stop_by_hand(&guest("pve1", GuestType::Qemu, 200)).await;
    lab.sim.state_mut(|c| {
        c.guests
            .get_mut(&200)
            .unwrap()
            .config
            .insert("lock".into(), "backup".into());
    });
    let spec = service(200, "VM", "powerState: Running\n");
    let waiting = lab.first_service_pass("s1", &spec).await;
    let c = cond(&waiting.status.conditions, "PowerStateInSync");
    assert_eq!(summary(c), (ConditionStatus::False, "GuestLocked"));
    assert!(c.message.contains("locked (backup)"), "{}", c.message);
    assert_eq!(waiting.status.upid, None);
    assert_eq!(tasks_of(&lab, "qmstart"), 0, "never fights the backup");
    assert_eq!(
        event_reasons(&waiting),
        ["GuestFound", "GuestLocked", "Unhealthy"]
    );
    assert_eq!(waiting.requeue, std::time::Duration::from_secs(30));

    lab.sim.state_mut(|c| {
        c.guests.get_mut(&200).unwrap().config.remove("lock");
    });
    lab.changed_by_hand();
    let started = lab.service_pass("s1", &spec, &waiting.status, at(30)).await;
    assert!(started.status.upid.is_some());
    assert_eq!(event_reasons(&started), ["StartingGuest"]);
}

#[tokio::test]
async fn service_on_offline_node_is_unknown_and_left_alone() {
    let lab = Lab::start().await;
    let spec = service(201, "LXC", "powerState: Running\n");
    let ok = lab.first_service_pass("s2", &spec).await;
    lab.sim.set_node_online("pve2", false).unwrap();
    lab.changed_by_hand();
    let p = lab.service_pass("s2", &spec, &ok.status, at(60)).await;
    assert_eq!(p.status.power_state, Some(PowerState::Unknown));
    assert_eq!(p.status.node.as_deref(), Some("pve2"));
    let c = cond(&p.status.conditions, "PowerStateInSync");
    assert_eq!(summary(c), (ConditionStatus::Unknown, "GuestStateUnknown"));
    assert_eq!(p.status.upid, None);
    assert_eq!(event_reasons(&p), ["GuestStateUnknown"]);
    assert_eq!(tasks_of(&lab, "vzstart"), 0);
}

#[tokio::test]
async fn service_missing_guest_and_unavailable_cluster_are_reported() {
    let lab = Lab::start().await;
    let missing = service(4242, "VM", "powerState: Running\n");
    let p = lab.first_service_pass("s3", &missing).await;
    let c = cond(&p.status.conditions, "Found");
    assert_eq!(summary(c), (ConditionStatus::False, "GuestNotFound"));
    assert!(
        c.message.contains("VMID 4242 in cluster homelab"),
        "{}",
        c.message
    );
    assert_eq!(event_reasons(&p), ["GuestMissing", "Unhealthy"]);

    let access = ClusterAccess {
        name: "homelab".into(),
        uid: String::new(),
        resync: std::time::Duration::from_secs(300),
        client: Err(Unavailable {
            reason: "SecretNotFound".into(),
            message: "ProxmoxCluster homelab: Secret \"pve-api-token\" does not exist".into(),
        }),
    };
    let spec = service(200, "VM", "");
    let p = lab
        .service_pass_with("s4", &spec, &ServiceStatus::default(), &access, at(0))
        .await;
    let c = cond(&p.status.conditions, "Found");
    assert_eq!(summary(c), (ConditionStatus::Unknown, "SecretNotFound"));
    assert_eq!(p.status.power_state, Some(PowerState::Unknown));
}

#[tokio::test]
async fn service_health_checks_probe_local_listeners_and_the_guest_agent() {
    let lab = Lab::start().await;
    let web = StandIn::start().await.unwrap();
    let port = web.addr().port();
    let checks = format!(
        "healthChecks:\n\
         - {{name: web, type: HTTP, http: {{url: '{}/status.php', bodyContains: '\"installed\":true'}}, failureThreshold: 1}}\n\
         - {{name: ssh, type: TCP, tcp: {{host: 127.0.0.1, port: {port}}}}}\n\
         - {{name: agent, type: GuestAgent}}\n\
         - {{name: php, type: Exec, exec: {{command: [systemctl, is-active, php8.2-fpm]}}}}\n\
         - {{name: up, type: GuestRunning}}\n",
        web.url()
    );
    let spec = service(200, "VM", &checks);
    let p = lab.first_service_pass("s1", &spec).await;
    let results: Vec<(&str, bool, &str)> = p
        .status
        .health
        .iter()
        .map(|r| (r.name.as_str(), r.healthy, r.message.as_str()))
        .collect();
    assert_eq!(
        results,
        [
            ("web", true, "HTTP 200, body matches"),
            ("ssh", true, "connected"),
            ("agent", true, "the guest agent answered"),
            ("php", true, "exit code 0"),
            ("up", true, "running on pve1"),
        ]
    );
    let h = cond(&p.status.conditions, "Healthy");
    assert_eq!(summary(h), (ConditionStatus::True, "ChecksPassing"));

    // Not due yet: nothing runs, nothing changes.
    web.set_status(503);
    let same = lab.service_pass("s1", &spec, &p.status, at(30)).await;
    assert_eq!(same.status, p.status);

    // A minute later the web check fails and, with failureThreshold 1, the Service is unhealthy.
    let bad = lab.service_pass("s1", &spec, &p.status, at(60)).await;
    let h = cond(&bad.status.conditions, "Healthy");
    assert_eq!(summary(h), (ConditionStatus::False, "CheckFailing"));
    assert_eq!(
        h.message,
        "check web (HTTP) is failing: HTTP 503, expected 200 (1 failures in a row)"
    );
    assert_eq!(event_reasons(&bad), ["Unhealthy"]);
    assert_eq!(cond(&bad.status.conditions, "Ready").reason, "CheckFailing");
}

#[tokio::test]
async fn service_stopped_guest_is_not_healthy_and_its_checks_wait_until_it_runs() {
    let lab = Lab::start().await;
    let web = StandIn::start().await.unwrap();
    let checks = format!(
        "healthChecks:\n\
         - {{name: web, type: HTTP, http: {{url: '{}/status.php'}}, failureThreshold: 1}}\n\
         - {{name: agent, type: GuestAgent}}\n",
        web.url()
    );
    let spec = service(200, "VM", &checks);
    let up = lab.first_service_pass("s1", &spec).await;
    assert_eq!(cond(&up.status.conditions, "Healthy").reason, "ChecksPassing");
    let agent_calls = || {
        lab.sim
            .requests()
            .iter()
            .filter(|r| r.template.contains("/agent/"))
            .count()
    };

    lab.stop_by_hand(&guest("pve1", GuestType::Qemu, 200)).await;
    // Both checks are due and the web server now fails (failureThreshold 1), but neither runs.
    web.set_status(503);
    let agent_before = agent_calls();
    let down = lab.service_pass("s1", &spec, &up.status, at(120)).await;
    let h = cond(&down.status.conditions, "Healthy");
    assert_eq!(summary(h), (ConditionStatus::False, "GuestNotRunning"));
    assert_eq!(
        h.message,
        "the guest is stopped; its health checks resume when it runs"
    );
    assert_eq!(down.status.health, up.status.health, "no check ran");
    assert_eq!(agent_calls(), agent_before, "the guest agent was not asked");
    assert_eq!(event_reasons(&down), ["GuestDown", "Unhealthy"]);
    assert_eq!(
        down.requeue,
        std::time::Duration::from_secs(300),
        "the drift check, not a due check, sets the pace"
    );
    let still = lab.service_pass("s1", &spec, &down.status, at(240)).await;
    assert_eq!(still.status, down.status);
    assert!(still.events.is_empty(), "{:?}", still.events);

    // Started again ten seconds later: every check runs on that pass, and Healthy follows them.
    web.set_status(200);
    lab.start_by_hand(&guest("pve1", GuestType::Qemu, 200)).await;
    let back = lab.service_pass("s1", &spec, &still.status, at(250)).await;
    assert!(agent_calls() > agent_before, "the agent check ran again");
    let h = cond(&back.status.conditions, "Healthy");
    assert_eq!(summary(h), (ConditionStatus::True, "ChecksPassing"));
    assert_eq!(event_reasons(&back), ["GuestRecovered", "Healthy"]);
}

#[tokio::test]
async fn service_agent_and_exec_failures_carry_the_reason() {
    let lab = Lab::start().await;
    let checks = "healthChecks:\n\
                  - {name: agent, type: GuestAgent, failureThreshold: 1}\n\
                  - {name: cmd, type: Exec, exec: {command: [\"false\"]}, failureThreshold: 1}\n";
    lab.sim.state_mut(|c| {
        c.guests.get_mut(&200).unwrap().agent = homelab_autopilot::pvesim::state::AgentState::NotResponding;
    });
    let p = lab.first_service_pass("s1", &service(200, "VM", checks)).await;
    let agent = &p.status.health[0];
    assert!(!agent.healthy);
    assert!(
        agent.message.contains("QEMU guest agent is not running"),
        "{}",
        agent.message
    );
    assert!(!p.status.health[1].healthy);

    let lab = Lab::start().await;
    let p = lab.first_service_pass("s1", &service(200, "VM", checks)).await;
    assert!(p.status.health[0].healthy);
    assert_eq!(p.status.health[1].message, "exit code 1, expected 0");
}

/// GET requests the simulator answered for `template`.
fn gets(lab: &Lab, template: &str) -> usize {
    lab.sim
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.template == template)
        .count()
}

#[tokio::test]
async fn services_share_one_cluster_resources_read_per_resync_window() {
    let lab = Lab::start().await;
    let access = lab.access().await;
    // Twenty Services of one cluster reconciled at once (the containers: no per-guest call).
    let specs: Vec<_> = (0..20).map(|_| service(201, "LXC", "")).collect();
    let before = gets(&lab, "/cluster/resources");
    let passes = specs.iter().enumerate().map(|(i, spec)| {
        let access = &access;
        let lab = &lab;
        async move {
            lab.service_pass_with(&format!("s{i}"), spec, &ServiceStatus::default(), access, at(0))
                .await
        }
    });
    let outcomes = futures::future::join_all(passes).await;
    assert!(outcomes.iter().all(|o| o.status.node.as_deref() == Some("pve2")));
    assert_eq!(
        gets(&lab, "/cluster/resources") - before,
        1,
        "concurrent reconciles wait for the one request in flight"
    );
    assert_eq!(gets(&lab, "/nodes/{node}/lxc/{vmid}/status/current"), 0);

    // Within the resync window (300 s) the snapshot serves every pass...
    lab.service_pass_with("s0", &specs[0], &outcomes[0].status, &access, at(299))
        .await;
    assert_eq!(gets(&lab, "/cluster/resources") - before, 1);
    // ...after it, one new read.
    lab.service_pass_with("s0", &specs[0], &outcomes[0].status, &access, at(300))
        .await;
    lab.service_pass_with("s1", &specs[1], &outcomes[1].status, &access, at(301))
        .await;
    assert_eq!(gets(&lab, "/cluster/resources") - before, 2);
}

#[tokio::test]
async fn own_power_action_invalidates_the_snapshot_so_the_next_pass_sees_its_effect() {
    let lab = Lab::start().await;
    let guest_ref = GuestRef::new(
        NodeName::new("pve2").unwrap(),
        GuestType::Lxc,
        Vmid::new(201).unwrap(),
    );
    lab.stop_by_hand(&guest_ref).await;
    let spec = service(201, "LXC", "powerState: Running\n");
    let first = lab.first_service_pass("s1", &spec).await;
    let upid = first.status.upid.clone().expect("the operator starts the guest");
    lab.wait_task(&upid).await;
    let reads = gets(&lab, "/cluster/resources");
    // Well within the resync window, but after our own start: a fresh read shows it running.
    let next = lab.service_pass("s1", &spec, &first.status, at(5)).await;
    assert_eq!(gets(&lab, "/cluster/resources"), reads + 1);
    assert_eq!(next.status.power_state, Some(PowerState::Running));
}

/// PVE requests the simulator answered since `from` (an index into its journal), by
/// `METHOD template`.
fn calls_since(lab: &Lab, from: usize) -> std::collections::BTreeMap<String, usize> {
    let mut calls = std::collections::BTreeMap::new();
    for r in &lab.sim.requests()[from..] {
        *calls.entry(format!("{} {}", r.method, r.template)).or_default() += 1;
    }
    calls
}

#[tokio::test]
async fn many_services_cost_one_cluster_read_per_resync() {
    use homelab_autopilot::pvesim::{SeedSpec, SimConfig};
    const GENERATED: u32 = 90;
    let seed = homelab_autopilot::demo::sim_seed()
        .unwrap()
        .with_generated_guests(GENERATED);
    let lab = Lab::start_seeded(SimConfig {
        seed,
        ..SimConfig::default()
    })
    .await;
    let access = lab.access().await;
    // 90 running VMs spread over pve1-pve3, the seed's running VM 200 and container 201.
    let first = SeedSpec::FIRST_GENERATED_VMID as i32;
    let mut specs: Vec<_> = (first..first + GENERATED as i32)
        .map(|vmid| service(vmid, "VM", ""))
        .collect();
    specs.push(service(200, "VM", ""));
    specs.push(service(201, "LXC", ""));
    let resync = |statuses: Vec<ServiceStatus>, secs: i64| {
        let (lab, access, specs) = (&lab, &access, &specs);
        async move {
            let passes = specs
                .iter()
                .zip(statuses)
                .enumerate()
                .map(|(i, (spec, status))| async move {
                    lab.service_pass_with(&format!("s{i}"), spec, &status, access, at(secs))
                        .await
                        .status
                });
            futures::future::join_all(passes).await
        }
    };
    let per_resync: std::collections::BTreeMap<String, usize> =
        [("GET /cluster/resources".to_owned(), 1)].into();

    // The first resync: every Service reports its node and power state...
    let before = lab.sim.requests().len();
    let statuses = resync(vec![ServiceStatus::default(); specs.len()], 0).await;
    assert!(statuses.iter().all(|s| s.node.is_some()), "{statuses:#?}");
    assert!(
        statuses
            .iter()
            .all(|s| s.power_state == Some(PowerState::Running))
    );
    assert_eq!(
        statuses[0].node.as_deref(),
        Some("pve1"),
        "the first generated VM is on the first node"
    );
    // ...for one cluster read, whatever the number of Services and nodes.
    assert_eq!(calls_since(&lab, before), per_resync);

    // Within the resync window nothing is asked again.
    let before = lab.sim.requests().len();
    let first_statuses = statuses.clone();
    let statuses = resync(statuses, 150).await;
    assert_eq!(calls_since(&lab, before), Default::default());
    // An uptime read 150 s ago is 150 s longer now: the start times stay where they were.
    assert_eq!(statuses, first_statuses, "nothing changed, so no status changes");

    // The next window costs the same again.
    let before = lab.sim.requests().len();
    let statuses = resync(statuses, 300).await;
    assert_eq!(calls_since(&lab, before), per_resync);
    assert_eq!(statuses.len(), specs.len());
}

#[tokio::test]
async fn a_paused_vm_is_seen_in_the_cluster_read() {
    use homelab_autopilot::pvesim::Power;
    let lab = Lab::start().await;
    let spec = service(200, "VM", "");
    let up = lab.first_service_pass("s1", &spec).await;
    assert_eq!(up.status.power_state, Some(PowerState::Running));
    lab.sim.state_mut(|c| {
        let g = c.guests.get_mut(&200).unwrap();
        if let Power::Running { since } = g.power {
            g.power = Power::Paused { since };
        }
    });
    lab.changed_by_hand();
    let before = lab.sim.requests().len();
    let paused = lab.service_pass("s1", &spec, &up.status, at(10)).await;
    assert_eq!(paused.status.power_state, Some(PowerState::Paused));
    assert_eq!(
        calls_since(&lab, before).keys().collect::<Vec<_>>(),
        ["GET /cluster/resources"],
        "no per-guest or per-node call"
    );
}
