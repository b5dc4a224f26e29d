//! The typed client against an unreliable simulator: injected errors (GET retried, POST never),
//! latency beyond the timeout, dropped connections, an offline node, quorum loss, failing tasks,
//! expiring tickets, endpoint failover and a guest locked by a running backup.
//!
//! Attempts are counted with the client's own metrics (one observation per attempt), so "retried"
//! and "not retried" are proved, not inferred.

use std::collections::BTreeMap;
use std::time::Duration;

use homelab_autopilot::proxmox::api::{ConfigUpdate, CreateSnapshot, ResourceKind, VzdumpRequest};
use homelab_autopilot::proxmox::{
    ClientMetrics, Endpoint, Error, PveClient, RetryPolicy, SnapshotName, TlsVerify,
};
use homelab_autopilot::pvesim::{SimConfig, Simulator};
use prometheus::Registry;

use crate::proxmox_client_common::{AuthKind, Env, TlsKind, config, ct, node, sim_config, vm, vmid, wait};

/// A client with metrics, to count attempts.
fn counted(
    env: &Env,
    auth: AuthKind,
    edit: impl FnOnce(&mut homelab_autopilot::proxmox::ClientConfig),
) -> (PveClient, Registry) {
    let registry = Registry::new();
    let mut cfg = config(&env.sim, auth, TlsKind::Pin);
    cfg.metrics = Some(ClientMetrics::new(&registry).expect("metrics"));
    edit(&mut cfg);
    (PveClient::new(cfg).expect("client"), registry)
}

/// How many attempts of `method template` ended with `code`.
fn attempts(registry: &Registry, method: &str, template: &str, code: &str) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == "homelab_autopilot_pve_requests_total")
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| {
            let labels: BTreeMap<&str, &str> = m.get_label().iter().map(|l| (l.name(), l.value())).collect();
            labels.get("method") == Some(&method)
                && labels.get("path_template") == Some(&template)
                && labels.get("code") == Some(&code)
        })
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

#[tokio::test]
async fn client_injected_errors_retry_get_until_success_and_never_retry_post() {
    let Some(env) = Env::start(AuthKind::Token).await else {
        return;
    };
    let (c, reg) = counted(&env, AuthKind::Token, |_| {});
    let resources = "/cluster/resources";

    env.sim.fail_next("GET", resources, 3, 503, "pveproxy busy");
    let rows = c
        .cluster_resources(Some(ResourceKind::Vm))
        .await
        .expect("4th attempt succeeds");
    assert!(!rows.is_empty());
    assert_eq!(
        (
            attempts(&reg, "GET", resources, "503"),
            attempts(&reg, "GET", resources, "200")
        ),
        (3, 1)
    );

    // One more failure than attempts: the caller gets PVE's error, transient.
    env.sim.fail_next("GET", resources, 4, 500, "pveproxy busy");
    let err = c.cluster_resources(None).await.unwrap_err();
    assert!(
        matches!(&err, Error::Api { status: 500, message } if message == "pveproxy busy"),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert_eq!(attempts(&reg, "GET", resources, "500"), 4);

    // An error rate on an endpoint: every call still succeeds, some after retries.
    env.sim
        .set_error_rate(Some("GET"), "/nodes/{node}/status", 0.3, 502);
    let (c_rate, reg_rate) = counted(&env, AuthKind::Token, |cfg| cfg.retries.max_attempts = 12);
    for _ in 0..20 {
        c_rate
            .node_status(&node("pve1"))
            .await
            .expect("retried until success");
    }
    let failed = attempts(&reg_rate, "GET", "/nodes/{node}/status", "502");
    assert!(failed > 0, "the error rate injected some failures");
    assert_eq!(attempts(&reg_rate, "GET", "/nodes/{node}/status", "200"), 20);
    env.sim.clear_faults();

    // POSTs that may start a task are never repeated: one attempt, the error surfaces, no task ran.
    let start = "/nodes/{node}/qemu/{vmid}/status/start";
    env.sim.fail_next("POST", start, 1, 503, "service unavailable");
    let tasks_before = env.sim.tasks().len();
    let err = c.start_guest(&vm("pve2", 103)).await.unwrap_err();
    assert!(matches!(err, Error::Api { status: 503, .. }), "{err:?}");
    assert_eq!(attempts(&reg, "POST", start, "503"), 1);
    assert_eq!(attempts(&reg, "POST", start, "200"), 0);
    assert_eq!(env.sim.tasks().len(), tasks_before);
    // The fault is used up: the same call works now.
    let task = c.start_guest(&vm("pve2", 103)).await.expect("start");
    env.wait(&task).await;
    let vzdump = "/nodes/{node}/vzdump";
    env.sim.set_error_rate(Some("POST"), vzdump, 1.0, 500);
    let req = VzdumpRequest {
        vmids: vec![vmid(103)],
        ..VzdumpRequest::default()
    };
    assert!(c.vzdump(&node("pve2"), &req).await.is_err());
    assert_eq!(attempts(&reg, "POST", vzdump, "500"), 1);
}

#[tokio::test]
async fn client_latency_beyond_the_timeout_is_timeout_and_drops_are_transport_errors() {
    let Some(env) = Env::start(AuthKind::Token).await else {
        return;
    };
    let (c, reg) = counted(&env, AuthKind::Token, |cfg| {
        cfg.timeouts.request = Duration::from_millis(300);
        cfg.retries = RetryPolicy {
            max_attempts: 2,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
        };
    });
    env.sim
        .add_latency(Some("GET"), "/version", Duration::from_secs(2));
    let err = c.version().await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert_eq!(err.category(), "Timeout");
    assert_eq!(
        attempts(&reg, "GET", "/version", "Timeout"),
        2,
        "a timed-out GET is retried"
    );
    env.sim.add_latency(
        Some("POST"),
        "/nodes/{node}/lxc/{vmid}/status/stop",
        Duration::from_secs(2),
    );
    let err = c
        .stop_guest(&ct("pve3", 104), &Default::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert_eq!(
        attempts(&reg, "POST", "/nodes/{node}/lxc/{vmid}/status/stop", "Timeout"),
        1,
        "a POST is not"
    );
    env.sim.clear_faults();
    assert!(c.version().await.is_ok());

    // A dropped connection: the GET is retried on a new connection, the POST is not.
    env.sim.drop_next(Some("GET"), "/cluster/status", 1);
    let status = c.cluster_status().await.expect("retried after the drop");
    assert!(status.is_quorate());
    assert_eq!(attempts(&reg, "GET", "/cluster/status", "TransportError"), 1);
    env.sim
        .drop_next(Some("POST"), "/nodes/{node}/qemu/{vmid}/status/start", 1);
    let err = c.start_guest(&vm("pve2", 103)).await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn client_sees_offline_node_guests_as_unknown_and_calls_to_it_fail_unreachable() {
    let Some(env) = Env::start(AuthKind::Token).await else {
        return;
    };
    let c = &env.client;
    env.sim.set_node_online("pve2", false).expect("pve2 exists");

    let status = c.cluster_status().await.expect("cluster status");
    let pve2 = status.nodes.iter().find(|n| n.name == "pve2").expect("pve2 row");
    assert!(!pve2.online);
    assert!(status.is_quorate(), "two of three votes");
    let nodes = c.nodes().await.expect("nodes");
    assert_eq!(
        nodes
            .iter()
            .find(|n| n.node.as_str() == "pve2")
            .map(|n| n.status.as_str()),
        Some("offline")
    );
    let pihole = c.locate_guest(vmid(102)).await.expect("still listed");
    assert_eq!(
        (pihole.guest.clone(), pihole.status.as_str()),
        (ct("pve2", 102), "unknown")
    );
    let jellyfin = c.locate_guest(vmid(103)).await.expect("still listed");
    assert_eq!(jellyfin.status, "unknown");

    for err in [
        c.guest_status(&pihole.guest).await.map(drop).unwrap_err(),
        c.node_status(&node("pve2")).await.map(drop).unwrap_err(),
        c.start_guest(&jellyfin.guest).await.map(drop).unwrap_err(),
    ] {
        assert!(
            matches!(&err, Error::Api { status: 595, message } if message.contains("No route to host")),
            "{err:?}"
        );
        assert!(err.is_transient(), "the node may come back");
    }
    // The rest of the cluster works, and the node comes back.
    assert!(c.guest_status(&vm("pve1", 100)).await.is_ok());
    env.sim.set_node_online("pve2", true).expect("pve2 exists");
    assert_eq!(c.locate_guest(vmid(102)).await.expect("locate").status, "running");
}

#[tokio::test]
async fn client_without_quorum_reads_but_writes_fail() {
    let Some(env) = Env::start(AuthKind::Ticket).await else {
        return;
    };
    let c = &env.client;
    env.sim.set_quorum_lost(true);
    let status = c.cluster_status().await.expect("reads work");
    assert!(!status.is_quorate());
    assert!(c.guest_config(&vm("pve1", 100)).await.is_ok());
    assert!(c.cluster_resources(None).await.is_ok());
    let mut update = ConfigUpdate::default();
    update.set.insert("memory".into(), "2048".into());
    for err in [
        c.update_config(&vm("pve1", 100), &update).await.unwrap_err(),
        c.start_guest(&vm("pve2", 103)).await.map(drop).unwrap_err(),
    ] {
        assert!(
            matches!(&err, Error::Api { status: 500, message } if message.contains("no quorum")),
            "{err:?}"
        );
    }
    env.sim.set_quorum_lost(false);
    c.update_config(&vm("pve1", 100), &update)
        .await
        .expect("quorum is back");
}

#[tokio::test]
async fn client_failed_task_reports_exit_status_and_log_tail() {
    let Some(env) = Env::start(AuthKind::Token).await else {
        return;
    };
    let c = &env.client;
    env.sim
        .fail_next_task("qmstart", "start failed: QEMU exited with code 1");
    let task = c.start_guest(&vm("pve2", 103)).await.expect("task starts");
    let err = wait(c, &task).await.unwrap_err();
    let Error::TaskFailed {
        upid,
        exit_status,
        log_tail,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(upid, task.upid.as_str());
    assert_eq!(exit_status, "start failed: QEMU exited with code 1");
    assert_eq!(
        log_tail.last().map(String::as_str),
        Some("TASK ERROR: start failed: QEMU exited with code 1")
    );
    assert!(!err.is_transient());
    // The result stays readable after the failure (a controller polls again after a restart).
    let again = c.task_result(&task).await.unwrap_err();
    assert!(matches!(again, Error::TaskFailed { .. }));

    // vzdump: the per-guest error is in the log, the task ends in `job errors`.
    env.sim.fail_next_task("vzdump", "no space left on device");
    let req = VzdumpRequest {
        vmids: vec![vmid(100)],
        ..VzdumpRequest::default()
    };
    let task = c.vzdump(&node("pve1"), &req).await.expect("vzdump starts");
    let err = wait(c, &task).await.unwrap_err();
    let Error::TaskFailed {
        exit_status,
        log_tail,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(exit_status, "job errors");
    assert!(
        log_tail.iter().any(|l| l.contains("no space left on device")),
        "{log_tail:?}"
    );
    assert!(err.to_string().contains("job errors (log: "), "{err}");
}

#[tokio::test]
async fn client_logs_in_again_when_tickets_expire_or_are_revoked() {
    let Some(env) = Env::start(AuthKind::Ticket).await else {
        return;
    };
    let (c, reg) = counted(&env, AuthKind::Ticket, |_| {});
    let logins = |reg: &Registry| attempts(reg, "POST", "/access/ticket", "200");
    c.version().await.expect("first call logs in");
    let task = c.start_guest(&vm("pve2", 103)).await.expect("POST with CSRF");
    wait(&c, &task).await.expect("started");
    assert_eq!(logins(&reg), 1, "the ticket is reused");

    // PVE rotated its auth key: the ticket is rejected once, the client logs in again.
    env.sim.expire_tickets();
    c.guest_status(&vm("pve2", 103))
        .await
        .expect("re-login after 401");
    assert_eq!(logins(&reg), 2);
    assert_eq!(
        attempts(&reg, "GET", "/nodes/{node}/qemu/{vmid}/status/current", "401"),
        1
    );
    // Two hours pass on the server: the ticket expired; the next write logs in and succeeds.
    env.sim.advance_clock(Duration::from_secs(2 * 3600 + 60));
    let task = c
        .shutdown_guest(&vm("pve2", 103), &Default::default())
        .await
        .expect("re-login");
    wait(&c, &task).await.expect("shut down");
    assert_eq!(logins(&reg), 3);

    // A wrong password is an auth failure, not retried, and never shows the password.
    let mut cfg = config(&env.sim, AuthKind::Ticket, TlsKind::Pin);
    cfg.credentials = homelab_autopilot::proxmox::Credentials::Password {
        username: env.sim.username().into(),
        password: "not-the-password".into(),
    };
    let err = PveClient::new(cfg).expect("client").version().await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("not-the-password"));
}

#[tokio::test]
async fn client_ticket_renewal_does_not_depend_on_the_server_clock() {
    let Some(env) = Env::start(AuthKind::Ticket).await else {
        return;
    };
    // The server's clock is 100 minutes behind ours: its tickets look old to us at once.
    env.sim
        .inject(homelab_autopilot::pvesim::Fault::AdvanceClock { seconds: -6000 })
        .expect("clock");
    let (c, reg) = counted(&env, AuthKind::Ticket, |_| {});
    for _ in 0..5 {
        c.version().await.expect("call");
    }
    assert_eq!(
        attempts(&reg, "POST", "/access/ticket", "200"),
        1,
        "no renewal storm under clock skew"
    );
}

#[tokio::test]
async fn client_fails_over_to_the_next_endpoint_when_the_first_is_down() {
    let Some(mut sim_cfg) = sim_config() else { return };
    sim_cfg.node_listeners = true;
    let sim = Simulator::start(sim_cfg).await.expect("simulator");
    // The first endpoint: a port nobody listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("https://{}", l.local_addr().expect("addr"))
    };
    let mut cfg = config(&sim, AuthKind::Token, TlsKind::Pin);
    cfg.endpoints = vec![
        Endpoint::new(dead, 0),
        Endpoint::new(sim.url(), 1),
        // pve2 serves its own certificate: its endpoint carries its own pin.
        Endpoint::new(sim.node_url("pve2").expect("pve2 listener"), 2).with_tls(TlsVerify::Fingerprint(
            sim.node_fingerprint("pve2").expect("pve2 certificate").to_owned(),
        )),
    ];
    let registry = Registry::new();
    cfg.metrics = Some(ClientMetrics::new(&registry).expect("metrics"));
    let c = PveClient::new(cfg).expect("client");
    c.version().await.expect("second endpoint answers");
    assert_eq!(attempts(&registry, "GET", "/version", "ConnectFailed"), 1);
    c.version().await.expect("sticks to the working endpoint");
    assert_eq!(attempts(&registry, "GET", "/version", "ConnectFailed"), 1);

    // pve1 (the second endpoint) goes down too: the client moves to pve2's listener.
    sim.set_node_online("pve1", false).expect("pve1");
    let status = c.cluster_status().await.expect("pve2 answers");
    assert!(
        status.nodes.iter().any(|n| n.name == "pve2" && n.local),
        "{status:?}"
    );
    assert!(status.nodes.iter().any(|n| n.name == "pve1" && !n.online));
    let task = c
        .start_guest(&vm("pve2", 103))
        .await
        .expect("writes work via pve2");
    wait(&c, &task).await.expect("started");
    sim.shutdown().await;
}

#[tokio::test]
async fn client_gets_locked_while_a_backup_runs_and_succeeds_after() {
    let Some(base) = sim_config() else { return };
    let mut durations = BTreeMap::new();
    durations.insert("vzdump".to_string(), Duration::from_secs(3000)); // 3 s real
    let cfg = SimConfig {
        task_durations: durations,
        ..base
    };
    let Some(env) = Env::start_with(Some(cfg), AuthKind::Token).await else {
        return;
    };
    let c = &env.client;
    let guest = vm("pve1", 100);
    let req = VzdumpRequest {
        vmids: vec![vmid(100)],
        ..VzdumpRequest::default()
    };
    let backup = c.vzdump(&node("pve1"), &req).await.expect("vzdump");

    let mut update = ConfigUpdate::default();
    update.set.insert("memory".into(), "2048".into());
    let err = c.update_config(&guest, &update).await.unwrap_err();
    let Error::Locked { lock, message } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(lock.as_deref(), Some("backup"), "{message}");
    assert!(err.is_transient());
    let snap = CreateSnapshot {
        name: SnapshotName::new("ap-x").expect("name"),
        description: None,
        vmstate: false,
    };
    // PVE checks a snapshot's lock inside the task: the task fails on the lock.
    let task = c.create_snapshot(&guest, &snap).await.expect("task starts");
    let err = wait(c, &task).await.unwrap_err();
    assert!(
        matches!(&err, Error::TaskFailed { exit_status, .. } if exit_status == "VM is locked (backup)"),
        "{err:?}"
    );
    assert!(err.is_locked() && err.is_transient(), "{err:?}");
    assert_eq!(err.category(), "GuestLocked");
    assert_eq!(
        c.locate_guest(vmid(100)).await.expect("locate").lock.as_deref(),
        Some("backup")
    );

    env.wait(&backup).await;
    c.update_config(&guest, &update)
        .await
        .expect("unlocked after the backup");
    assert_eq!(c.locate_guest(vmid(100)).await.expect("locate").lock, None);
}
