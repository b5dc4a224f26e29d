//! The operator runtime against a real API server: leader election, the generic controller with a
//! test-only CRD (`Gadget`), status via SSA, Events, backoff, malformed objects, the CRD wait and
//! the probes over real HTTP.
//!
//! Generic helpers (client or SKIP, namespaces, polling, HTTP) come from `harness`.

mod fixtures;

use std::time::Duration;

use homelab_autopilot::{
    controllers::{ControllerSpec, Health, LeaderElector, LeaseConfig, Operator, Readiness, leader::Attempt},
    metrics::Metrics,
};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::harness::{
    TestNamespace, apply_crd, client_or_skip, delete_crd, free_loopback_addr, get, poll, start_http, try_get,
    wait_event,
};
use fixtures::{GadgetDeps, Latecomer, gadget_reconcile, latecomer_reconcile};

const WAIT: Duration = Duration::from_secs(60);

fn short_lease(namespace: &str, identity: &str) -> LeaseConfig {
    LeaseConfig {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        renew_interval: Duration::from_millis(300),
        retry_period: Duration::from_millis(100),
        ..LeaseConfig::new("runtime-test", namespace, identity)
    }
}

async fn holder(client: &Client, ns: &str, name: &str) -> Option<String> {
    let lease = Api::<Lease>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    lease.spec.and_then(|s| s.holder_identity)
}

/// Overwrites the Lease's holder as a rogue writer would (what another replica taking over
/// looks like to the current leader).
async fn steal_lease(client: &Client, ns: &str, name: &str) {
    let api = Api::<Lease>::namespaced(client.clone(), ns);
    let api = &api;
    // The leader renews concurrently: retry on a resourceVersion conflict.
    poll("the lease to be stolen", WAIT, || async move {
        let mut lease = api.get(name).await.unwrap();
        let spec = lease.spec.get_or_insert_with(Default::default);
        spec.holder_identity = Some("intruder".into());
        spec.lease_duration_seconds = Some(3600);
        match api.replace(name, &PostParams::default(), &lease).await {
            Ok(_) => Some(()),
            Err(kube::Error::Api(s)) if s.code == 409 => None,
            Err(e) => panic!("cannot steal the lease: {e}"),
        }
    })
    .await;
}

#[tokio::test]
async fn leader_election_single_leader_takeover_on_release_and_expiry() {
    let Some(client) = client_or_skip().await else {
        return;
    };
    let ns = TestNamespace::create(&client, "rt-lease").await;
    let mut a = LeaderElector::new(client.clone(), short_lease(&ns.name, "replica-a"));
    let mut b = LeaderElector::new(client.clone(), short_lease(&ns.name, "replica-b"));

    assert_eq!(a.try_acquire_or_renew().await.unwrap(), Attempt::Leading);
    for _ in 0..5 {
        assert_eq!(
            b.try_acquire_or_renew().await.unwrap(),
            Attempt::HeldBy("replica-a".into())
        );
        assert_eq!(a.try_acquire_or_renew().await.unwrap(), Attempt::Leading);
    }
    assert!(a.is_leader() && !b.is_leader());

    // Graceful hand-over: a releases, b takes the lease at once.
    assert!(a.release().await.unwrap());
    assert_eq!(holder(&client, &ns.name, "runtime-test").await, None);
    assert_eq!(b.try_acquire_or_renew().await.unwrap(), Attempt::Leading);
    assert_eq!(
        a.try_acquire_or_renew().await.unwrap(),
        Attempt::HeldBy("replica-b".into())
    );

    // b crashes (stops renewing). A fresh candidate must first see the record unchanged for a
    // whole lease duration on its own clock, then takes over.
    drop(b);
    let mut c = LeaderElector::new(client.clone(), short_lease(&ns.name, "replica-c"));
    assert_eq!(
        c.try_acquire_or_renew().await.unwrap(),
        Attempt::HeldBy("replica-b".into())
    );
    let deadline = std::time::Instant::now() + WAIT;
    while c.try_acquire_or_renew().await.unwrap() != Attempt::Leading {
        assert!(
            std::time::Instant::now() < deadline,
            "replica-c never took over the expired lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lease = Api::<Lease>::namespaced(client.clone(), &ns.name)
        .get("runtime-test")
        .await
        .unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("replica-c"));
    assert_eq!(spec.lease_transitions, Some(2));

    // The leader notices when someone else holds the lease and steps down.
    let hold = tokio::spawn(async move { c.hold().await });
    steal_lease(&client, &ns.name, "runtime-test").await;
    let lost = tokio::time::timeout(WAIT, hold).await.unwrap().unwrap();
    assert!(lost.to_string().contains("intruder"), "{lost}");
    ns.delete().await;
}

#[tokio::test]
async fn controller_reconciles_status_events_backoff_and_bad_objects() {
    let Some((client, ns, gadgets)) = fixtures::gadget_env("rt-ctrl").await else {
        return;
    };

    // A stored object that the apiserver accepts but our type rejects, created first.
    fixtures::create_gadget(&client, &ns.name, "malformed", json!({"color": "purple"})).await;

    let deps = GadgetDeps::default();
    let metrics = Metrics::new();
    let health = Health::new();
    let (addr, http_stop) = start_http(metrics.clone(), health.clone()).await;
    let shutdown = CancellationToken::new();
    let operator = Operator::new(
        client.clone(),
        metrics,
        Some(ns.name.clone()),
        "test-pod",
        deps.clone(),
    )
    .leader_election(short_lease(&ns.name, "test-pod"))
    .register(fixtures::gadget_spec(), gadget_reconcile);
    let run = tokio::spawn(operator.run(health.clone(), shutdown.clone()));

    poll("readyz 200 and leading", WAIT, || async move {
        let (code, body) = get(addr, "/readyz").await;
        (code == 200 && body.starts_with("leading")).then_some(())
    })
    .await;
    assert_eq!(get(addr, "/healthz").await, (200, "ok\n".into()));

    fixtures::create_gadget(&client, &ns.name, "good", json!({"color": "red"})).await;
    fixtures::create_gadget(
        &client,
        &ns.name,
        "flaky",
        json!({"color": "green", "failFirst": 2}),
    )
    .await;
    fixtures::create_gadget(&client, &ns.name, "black", json!({"color": "black"})).await;

    let good = fixtures::wait_ready(&gadgets, "good", 1).await;
    let cond = &good.status.as_ref().unwrap().conditions[0];
    assert_eq!(
        (cond.type_.as_str(), cond.status.as_str(), cond.reason.as_str()),
        ("Ready", "True", "Reconciled")
    );
    assert_eq!(cond.observed_generation, Some(1));
    let since = cond.last_transition_time;
    let managers = good.managed_fields();
    assert!(
        managers
            .iter()
            .any(|m| m.manager.as_deref() == Some("homelab-autopilot-gadget")
                && m.subresource.as_deref() == Some("status")
                && m.operation.as_deref() == Some("Apply")),
        "{managers:?}"
    );

    // A spec change bumps observedGeneration; the condition keeps its transition time.
    gadgets
        .patch(
            "good",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"color": "green"}})),
        )
        .await
        .unwrap();
    let good = fixtures::wait_ready(&gadgets, "good", 2).await;
    let cond = &good.status.as_ref().unwrap().conditions[0];
    assert_eq!(cond.observed_generation, Some(2));
    assert_eq!(cond.last_transition_time, since);
    assert!(cond.message.contains("Green"), "{}", cond.message);

    // The controller's ConfigMap watch (a `.customize()` hook) re-triggers the gadget at once;
    // without it the next reconcile would be the 5 min requeue.
    let motto = k8s_openapi::api::core::v1::ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("good".into()),
            ..Default::default()
        },
        data: Some([("motto".to_owned(), "shiny".to_owned())].into()),
        ..Default::default()
    };
    Api::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &motto)
        .await
        .unwrap();
    let gadgets_ref = &gadgets;
    poll("the ConfigMap watch to re-reconcile good", WAIT, || async move {
        let g = gadgets_ref.get("good").await.ok()?;
        let cond = g.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
        cond.message.contains("Green and shiny").then_some(())
    })
    .await;

    // Transient errors are retried with backoff until the reconcile succeeds.
    let flaky = fixtures::wait_ready(&gadgets, "flaky", 1).await;
    assert!(deps.attempts(&flaky.uid().unwrap()) >= 3);

    for (object, type_, reason) in [
        ("good", "Normal", "BecameReady"),
        ("flaky", "Warning", "DependencyFlaked"),
        ("flaky", "Normal", "BecameReady"),
        ("malformed", "Warning", "InvalidObject"),
        ("black", "Warning", "UnsupportedColor"),
    ] {
        let ev = wait_event(&client, &ns.name, object, reason).await;
        assert_eq!(ev.type_.as_deref(), Some(type_));
        assert_eq!(ev.reporting_controller.as_deref(), Some("homelab-autopilot"));
        assert_eq!(ev.reporting_instance.as_deref(), Some("test-pod"));
    }
    // The malformed object also says why on itself: Ready=False with reason InvalidObject,
    // written by a field manager of its own so the controller's other status fields survive.
    let raw: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns.name,
        &kube::api::ApiResource::erase::<fixtures::Gadget>(&()),
    );
    let raw_ref = &raw;
    poll(
        "Ready=False InvalidObject on the malformed gadget",
        WAIT,
        || async move {
            let o = raw_ref.get("malformed").await.ok()?;
            let conditions = o.data["status"]["conditions"].as_array()?.clone();
            let ready = conditions.iter().find(|c| c["type"] == "Ready")?;
            (ready["status"] == "False" && ready["reason"] == "InvalidObject").then_some(())
        },
    )
    .await;

    // The recorder merges a repeated Event into a series: none means it was published once, for
    // the flip, and not again for the spec change that kept the status.
    let became_ready = wait_event(&client, &ns.name, "good", "BecameReady").await;
    assert!(became_ready.series.is_none(), "{:?}", became_ready.series);

    let (code, text) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    for series in [
        "homelab_autopilot_reconcile_errors_total{category=\"DependencyFlaked\",controller=\"gadget\"} 2",
        "homelab_autopilot_reconcile_errors_total{category=\"InvalidObject\",controller=\"gadget\"}",
        "homelab_autopilot_reconcile_errors_total{category=\"UnsupportedColor\",controller=\"gadget\"}",
        "homelab_autopilot_reconcile_total{controller=\"gadget\",result=\"ok\"}",
        "homelab_autopilot_reconcile_duration_seconds_count{controller=\"gadget\"}",
        "homelab_autopilot_leader 1",
    ] {
        assert!(text.contains(series), "missing {series} in\n{text}");
    }

    // Graceful shutdown: controllers stop, the lease is released, readiness goes down.
    shutdown.cancel();
    tokio::time::timeout(WAIT, run).await.unwrap().unwrap().unwrap();
    assert_eq!(holder(&client, &ns.name, "runtime-test").await, None);
    assert_eq!(get(addr, "/readyz").await.0, 503);
    assert!(
        get(addr, "/metrics")
            .await
            .1
            .contains("homelab_autopilot_leader 0")
    );
    http_stop.cancel();
    ns.delete().await;
}

#[tokio::test]
async fn operators_sharing_a_lease_never_both_reconcile() {
    let Some((client, ns, gadgets)) = fixtures::gadget_env("rt-2rep").await else {
        return;
    };
    let start = |identity: &'static str| {
        let deps = GadgetDeps::default();
        let health = Health::new();
        let shutdown = CancellationToken::new();
        let operator = Operator::new(
            client.clone(),
            Metrics::new(),
            Some(ns.name.clone()),
            identity,
            deps.clone(),
        )
        .leader_election(short_lease(&ns.name, identity))
        .register(fixtures::gadget_spec(), gadget_reconcile);
        let run = tokio::spawn(operator.run(health.clone(), shutdown.clone()));
        (deps, health, shutdown, run)
    };
    let first = start("replica-1");
    let second = start("replica-2");
    let (h1, h2) = (&first.1, &second.1);
    let leading = poll("one replica to lead", WAIT, || async move {
        match (h1.get(), h2.get()) {
            (Readiness::Leading, Readiness::Standby) => Some(true),
            (Readiness::Standby, Readiness::Leading) => Some(false),
            _ => None,
        }
    })
    .await;
    let (leader, standby) = if leading { (first, second) } else { (second, first) };

    fixtures::create_gadget(&client, &ns.name, "one", json!({"color": "red"})).await;
    fixtures::wait_ready(&gadgets, "one", 1).await;
    assert!(leader.0.total() >= 1);
    assert_eq!(standby.0.total(), 0, "the standby must not reconcile");
    assert_eq!(standby.1.get(), Readiness::Standby);

    // Rollout: the leader shuts down gracefully and hands over; the standby takes over.
    leader.2.cancel();
    tokio::time::timeout(WAIT, leader.3)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let standby_health = &standby.1;
    poll("standby to lead", WAIT, || async move {
        (standby_health.get() == Readiness::Leading).then_some(())
    })
    .await;
    fixtures::create_gadget(&client, &ns.name, "two", json!({"color": "green"})).await;
    fixtures::wait_ready(&gadgets, "two", 1).await;
    assert!(standby.0.total() >= 1);

    // Losing the lease stops the controllers and ends the run with an error (exit non-zero).
    let lease_holder = holder(&client, &ns.name, "runtime-test").await.unwrap();
    steal_lease(&client, &ns.name, "runtime-test").await;
    let err = tokio::time::timeout(WAIT, standby.3)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(
        err.to_string().contains("lost the leader election lease"),
        "{err} (holder was {lease_holder})"
    );
    standby.2.cancel();
    ns.delete().await;
}

#[tokio::test]
async fn readyz_waits_for_crd_established_then_controller_runs() {
    let Some(client) = client_or_skip().await else {
        return;
    };
    delete_crd::<Latecomer>(&client).await;
    let ns = TestNamespace::create(&client, "rt-crd").await;
    let metrics = Metrics::new();
    let health = Health::new();
    let (addr, http_stop) = start_http(metrics.clone(), health.clone()).await;
    let shutdown = CancellationToken::new();
    let operator = Operator::new(client.clone(), metrics, Some(ns.name.clone()), "test-pod", ())
        .register(ControllerSpec::<Latecomer>::new("latecomer"), latecomer_reconcile);
    let run = tokio::spawn(operator.run(health.clone(), shutdown.clone()));

    let crd = "latecomers.runtime.test.autopilot.homelab.dev";
    poll("readyz to report the missing CRD", WAIT, || async move {
        let (code, body) = get(addr, "/readyz").await;
        (code == 503 && body.contains(crd)).then_some(())
    })
    .await;
    assert_eq!(get(addr, "/healthz").await.0, 200);

    apply_crd::<Latecomer>(&client).await;
    poll("readyz 200", WAIT, || async move {
        (get(addr, "/readyz").await.0 == 200).then_some(())
    })
    .await;
    let latecomers = Api::<Latecomer>::namespaced(client.clone(), &ns.name);
    let latecomers = &latecomers;
    let first = &Latecomer::new("first", Default::default());
    poll("latecomer created", WAIT, || async move {
        latecomers
            .create(&PostParams::default(), first)
            .await
            .ok()
            .map(drop)
    })
    .await;
    poll("latecomer reconciled", WAIT, || async move {
        let l = latecomers.get("first").await.ok()?;
        (l.status?.observed_generation == Some(1)).then_some(())
    })
    .await;

    shutdown.cancel();
    tokio::time::timeout(WAIT, run).await.unwrap().unwrap().unwrap();
    http_stop.cancel();
    ns.delete().await;
}

#[tokio::test]
async fn operator_cli_leads_serves_probes_and_releases_lease_on_sigterm() {
    let Some(client) = client_or_skip().await else {
        return;
    };
    let ns = TestNamespace::create(&client, "rt-cli").await;
    let addr = free_loopback_addr();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_homelab-autopilot"))
        .args(["--log-format", "json", "operator", "--lease-name", "cli-test"])
        .args(["--lease-namespace", &ns.name, "--namespace", &ns.name])
        .args(["--http-addr", &addr.to_string()])
        .env("POD_NAME", "cli-test-pod")
        .env_remove("AUTOPILOT_NAMESPACE")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // Ready comes first (standby), then leading once the lease is acquired.
    poll("operator readyz 200 and leading", WAIT, || async move {
        try_get(addr, "/readyz")
            .await
            .filter(|(code, body)| *code == 200 && body.starts_with("leading"))
    })
    .await;
    assert_eq!(
        holder(&client, &ns.name, "cli-test").await.as_deref(),
        Some("cli-test-pod")
    );
    assert!(
        get(addr, "/metrics")
            .await
            .1
            .contains("homelab_autopilot_leader 1")
    );

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(WAIT, child.wait()).await.unwrap().unwrap();
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert!(status.success(), "exit {status:?}, stderr:\n{stderr}");
    assert_eq!(
        holder(&client, &ns.name, "cli-test").await,
        None,
        "lease not released:\n{stderr}"
    );
    for line in [
        "acquired leader lease",
        "released leader lease",
        "operator stopped",
    ] {
        assert!(stderr.contains(line), "no {line:?} in:\n{stderr}");
    }
    assert!(
        stderr.lines().all(|l| l.starts_with('{')),
        "not JSON lines:\n{stderr}"
    );
    ns.delete().await;
}
