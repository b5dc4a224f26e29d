//! The leader election against a mocked API server that keeps one Lease the way the real one
//! does (compare-and-swap on `resourceVersion`, 404 when missing, 409 on a stale write), recording
//! every request: the Lease is created, renewed in place, respected while another holder's claim
//! lasts in our observation, taken over after it expired, released, and a leader that cannot renew
//! in time steps down before anyone may take over.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Method;
use serde_json::{Value, json};

use super::*;
use crate::controllers::runtime::api_mock::{self, Seen, status_body};

const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/homelab-autopilot";

#[derive(Default)]
struct LeaseServer {
    lease: Option<Value>,
    version: u64,
    /// Answer every request with this status (an API server that is down or refusing).
    fail_with: Option<u16>,
    /// Another writer renews the Lease right after our next GET (a race between read and write).
    race_after_get: bool,
    log: Vec<Seen>,
}

impl LeaseServer {
    fn store(&mut self, mut lease: Value) -> Value {
        self.version += 1;
        lease["metadata"]["resourceVersion"] = self.version.to_string().into();
        lease["metadata"]["namespace"] = "ops".into();
        self.lease = Some(lease.clone());
        lease
    }

    fn handle(&mut self, req: &Seen) -> (u16, Value) {
        if let Some(code) = self.fail_with {
            return (code, status_body(code, "InternalError"));
        }
        let stored_version = self
            .lease
            .as_ref()
            .map(|l| l["metadata"]["resourceVersion"].clone());
        match (&req.method, req.path.as_str()) {
            (&Method::GET, PATH) => match self.lease.clone() {
                Some(l) => {
                    if std::mem::take(&mut self.race_after_get) {
                        self.store(l.clone());
                    }
                    (200, l)
                }
                None => (404, status_body(404, "NotFound")),
            },
            (&Method::POST, "/apis/coordination.k8s.io/v1/namespaces/ops/leases") => match self.lease {
                Some(_) => (409, status_body(409, "AlreadyExists")),
                None => (201, self.store(req.body.clone())),
            },
            (&Method::PUT, PATH)
                if Some(&req.body["metadata"]["resourceVersion"]) == stored_version.as_ref() =>
            {
                (200, self.store(req.body.clone()))
            }
            (&Method::PUT, PATH) => (409, status_body(409, "Conflict")),
            _ => (404, status_body(404, "NotFound")),
        }
    }
}

/// A client whose requests are served by a [`LeaseServer`] on a background task.
fn serve() -> (Client, Arc<Mutex<LeaseServer>>) {
    let (client, mut api) = api_mock::client();
    let server = Arc::new(Mutex::new(LeaseServer::default()));
    let shared = Arc::clone(&server);
    tokio::spawn(async move {
        loop {
            let Some((req, send)) = api.next_or_end().await else {
                return;
            };
            let (code, body) = shared.lock().unwrap().handle(&req);
            shared.lock().unwrap().log.push(req);
            api_mock::respond(send, code, &body);
        }
    });
    (client, server)
}

fn config(identity: &str) -> LeaseConfig {
    LeaseConfig::new("homelab-autopilot", "ops", identity)
}

fn quick(identity: &str) -> LeaseConfig {
    LeaseConfig {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(600),
        renew_interval: Duration::from_millis(150),
        retry_period: Duration::from_millis(100),
        ..config(identity)
    }
}

fn held_by(holder: &str, seconds: i64, transitions: i64) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "homelab-autopilot"},
        "spec": {
            "holderIdentity": holder, "leaseDurationSeconds": seconds,
            // Written by a node whose clock is an hour behind: expiry is judged on our own clock
            // from when we first saw this record, never from these stamps.
            "acquireTime": "2026-01-01T00:00:00.000000Z", "renewTime": "2026-01-01T00:00:00.000000Z",
            "leaseTransitions": transitions,
        },
    })
}

fn requests(server: &Mutex<LeaseServer>) -> Vec<(Method, Value)> {
    let server = server.lock().unwrap();
    server
        .log
        .iter()
        .map(|s| (s.method.clone(), s.body.clone()))
        .collect()
}

fn take_log(server: &Mutex<LeaseServer>) -> Vec<(Method, Value)> {
    let log = requests(server);
    server.lock().unwrap().log.clear();
    log
}

#[tokio::test]
async fn missing_lease_is_created_with_our_identity_then_renewed_in_place() {
    let (client, server) = serve();
    let mut elector = LeaderElector::new(client, config("pod-a"));
    assert_eq!(elector.try_acquire_or_renew().await.unwrap(), Attempt::Leading);
    assert!(elector.is_leader());
    let log = take_log(&server);
    assert_eq!(
        log.iter().map(|(m, _)| m.clone()).collect::<Vec<_>>(),
        [Method::GET, Method::POST]
    );
    let created = &log[1].1["spec"];
    assert_eq!(created["holderIdentity"], "pod-a");
    assert_eq!(created["leaseDurationSeconds"], 15);
    assert_eq!(created["leaseTransitions"], 0);
    let acquired = created["acquireTime"].as_str().unwrap().to_owned();
    let first_renew = created["renewTime"].as_str().unwrap().to_owned();

    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(elector.try_acquire_or_renew().await.unwrap(), Attempt::Leading);
    let log = take_log(&server);
    assert_eq!(
        log.iter().map(|(m, _)| m.clone()).collect::<Vec<_>>(),
        [Method::GET, Method::PUT]
    );
    let renewed = &log[1];
    // A compare-and-swap on the version we read; the claim keeps its acquire time.
    assert_eq!(renewed.1["metadata"]["resourceVersion"], "1");
    assert_eq!(renewed.1["spec"]["holderIdentity"], "pod-a");
    assert_eq!(renewed.1["spec"]["acquireTime"], acquired.as_str());
    assert_eq!(renewed.1["spec"]["leaseTransitions"], 0);
    let renew: jiff::Timestamp = renewed.1["spec"]["renewTime"].as_str().unwrap().parse().unwrap();
    assert!(renew > first_renew.parse().unwrap());
}

#[tokio::test]
async fn lease_of_another_is_respected_until_it_expires_in_our_observation_then_taken_over() {
    let (client, server) = serve();
    server.lock().unwrap().store(held_by("pod-b", 1, 4));
    let mut elector = LeaderElector::new(client, config("pod-a"));

    assert_eq!(
        elector.try_acquire_or_renew().await.unwrap(),
        Attempt::HeldBy("pod-b".into())
    );
    assert_eq!(
        take_log(&server).into_iter().map(|(m, _)| m).collect::<Vec<_>>(),
        [Method::GET],
        "a valid claim of another replica is never written over"
    );

    // pod-b renews half-way: a new record, so its claim lasts a full duration from now.
    tokio::time::sleep(Duration::from_millis(600)).await;
    server.lock().unwrap().store(held_by("pod-b", 1, 4));
    assert_eq!(
        elector.try_acquire_or_renew().await.unwrap(),
        Attempt::HeldBy("pod-b".into())
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        elector.try_acquire_or_renew().await.unwrap(),
        Attempt::HeldBy("pod-b".into()),
        "the renewed claim has not expired yet in our observation"
    );
    assert!(take_log(&server).iter().all(|(m, _)| m == Method::GET));

    // pod-b stops renewing: once its record is older than its duration on our clock, we take over.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(elector.try_acquire_or_renew().await.unwrap(), Attempt::Leading);
    let log = take_log(&server);
    let (method, taken) = log.last().unwrap();
    assert_eq!(*method, Method::PUT);
    assert_eq!(taken["spec"]["holderIdentity"], "pod-a");
    assert_eq!(taken["spec"]["leaseTransitions"], 5);
    assert_eq!(taken["spec"]["leaseDurationSeconds"], 15);
    assert_ne!(taken["spec"]["acquireTime"], "2026-01-01T00:00:00.000000Z");
}

#[tokio::test]
async fn write_racing_another_writer_conflicts_and_claims_nothing() {
    let (client, server) = serve();
    server.lock().unwrap().store(held_by("", 1, 0));
    server.lock().unwrap().race_after_get = true;
    let mut a = LeaderElector::new(client, config("pod-a"));
    // Our write carries the version we read; the API server refuses it (409) because someone
    // wrote in between, and we do not believe we lead.
    assert_eq!(a.try_acquire_or_renew().await.unwrap(), Attempt::Conflict);
    assert!(!a.is_leader());
    let log = take_log(&server);
    assert_eq!(log.last().unwrap().0, Method::PUT);
    assert_eq!(log.last().unwrap().1["metadata"]["resourceVersion"], "1");
    // The next attempt reads the new version and succeeds.
    assert_eq!(a.try_acquire_or_renew().await.unwrap(), Attempt::Leading);
}

#[tokio::test]
async fn leader_steps_down_when_it_cannot_renew_within_the_deadline() {
    let (client, server) = serve();
    let mut elector = LeaderElector::new(client, quick("pod-a"));
    assert_eq!(elector.try_acquire_or_renew().await.unwrap(), Attempt::Leading);
    take_log(&server);
    server.lock().unwrap().fail_with = Some(500);

    let started = Instant::now();
    let lost = tokio::time::timeout(Duration::from_secs(5), elector.hold())
        .await
        .expect("hold returns once renewal is impossible");
    let took = started.elapsed();
    assert!(
        matches!(&lost, Error::LeadershipLost { reason, .. } if reason.contains("not renewed")),
        "{lost}"
    );
    // It stopped acting before the lease (2 s) could expire for a standby.
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert!(!elector.is_leader());
    assert!(
        take_log(&server).len() >= 2,
        "it retried the renewal before giving up"
    );
}

#[tokio::test]
async fn leader_steps_down_when_another_replica_holds_the_lease() {
    let (client, server) = serve();
    let mut elector = LeaderElector::new(client, quick("pod-a"));
    assert_eq!(elector.try_acquire_or_renew().await.unwrap(), Attempt::Leading);
    server.lock().unwrap().store(held_by("intruder", 15, 1));
    let lost = tokio::time::timeout(Duration::from_secs(5), elector.hold())
        .await
        .expect("hold notices the new holder");
    assert!(lost.to_string().contains("intruder"), "{lost}");
}

#[tokio::test]
async fn renewals_keep_the_lease_while_the_api_answers() {
    let (client, server) = serve();
    let mut elector = LeaderElector::new(client, quick("pod-a"));
    assert_eq!(elector.try_acquire_or_renew().await.unwrap(), Attempt::Leading);
    take_log(&server);
    let held = tokio::time::timeout(Duration::from_millis(700), elector.hold()).await;
    assert!(
        held.is_err(),
        "hold must not return while renewals succeed: {held:?}"
    );
    let puts = take_log(&server)
        .into_iter()
        .filter(|(m, _)| *m == Method::PUT)
        .count();
    assert!(puts >= 3, "renewed every 150 ms: {puts} renewals in 700 ms");
}

#[tokio::test]
async fn released_lease_is_taken_by_a_standby_at_once() {
    let (client, server) = serve();
    let mut a = LeaderElector::new(client.clone(), config("pod-a"));
    assert_eq!(a.try_acquire_or_renew().await.unwrap(), Attempt::Leading);
    assert!(a.release().await.unwrap());
    let log = take_log(&server);
    let (method, released) = log.last().unwrap();
    assert_eq!(*method, Method::PUT);
    assert!(released["spec"].get("holderIdentity").is_none_or(Value::is_null));
    assert_eq!(released["spec"]["leaseDurationSeconds"], 1);
    assert!(!a.is_leader());

    let mut b = LeaderElector::new(client, config("pod-b"));
    assert_eq!(b.try_acquire_or_renew().await.unwrap(), Attempt::Leading);
    assert_eq!(
        server.lock().unwrap().lease.as_ref().unwrap()["spec"]["holderIdentity"],
        "pod-b"
    );
}

#[tokio::test]
async fn forbidden_lease_ends_the_wait_with_an_error_naming_the_lease() {
    let (client, server) = serve();
    server.lock().unwrap().fail_with = Some(403);
    let mut elector = LeaderElector::new(client, config("pod-a"));
    let err = elector
        .acquire(&CancellationToken::new())
        .await
        .expect_err("no RBAC for the Lease is not retried forever");
    let text = err.to_string();
    assert!(
        text.contains("ops") && text.contains("homelab-autopilot"),
        "{text}"
    );
}

#[test]
fn lease_config_defaults_are_valid() {
    let c = LeaseConfig::new("homelab-autopilot", "ops", "pod-a");
    assert_eq!(c.validate(), Ok(()));
    assert!(c.renew_deadline < c.lease_duration);
}

#[test]
fn lease_config_renew_deadline_not_below_duration_is_rejected() {
    let mut c = LeaseConfig::new("l", "ops", "pod-a");
    c.renew_deadline = c.lease_duration;
    assert!(c.validate().unwrap_err().contains("renew_deadline"));
    let mut c = LeaseConfig::new("l", "ops", "");
    c.identity.clear();
    assert!(c.validate().unwrap_err().contains("POD_NAME"));
    let mut c = LeaseConfig::new("l", "ops", "a");
    c.lease_duration = Duration::from_millis(1500);
    assert!(c.validate().is_err());
}
