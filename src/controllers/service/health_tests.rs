//! Scheduling and folding of health checks (pure), and HTTP/TCP probes against real loopback
//! listeners.

use super::*;
use crate::controllers::pve::guest::GuestFacts;
use crate::demo::standin::StandIn;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_750_000_000 + secs).unwrap()
}

fn checks(yaml: &str) -> Vec<HealthCheck> {
    serde_yaml::from_str(yaml).unwrap()
}

const TWO: &str = "- {name: web, type: HTTP, http: {url: 'http://x/'}, intervalSeconds: 60, failureThreshold: 2}\n\
                   - {name: running, type: GuestRunning, intervalSeconds: 300}\n";

fn probes(list: &[(&str, bool)]) -> BTreeMap<String, Probe> {
    list.iter()
        .map(|(n, ok)| {
            let p = if *ok {
                Probe::pass("fine")
            } else {
                Probe::fail("HTTP 503")
            };
            ((*n).to_owned(), p)
        })
        .collect()
}

#[test]
fn due_checks_respects_each_interval_and_next_due_is_the_earliest() {
    let cs = checks(TWO);
    let mut mem = ServiceMemory::default();
    let names = |v: Vec<&HealthCheck>| v.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(due_checks(&cs, &mem, at(0))), ["web", "running"]);
    assert_eq!(next_due(&cs, &mem, at(0)), Some(at(0)));
    mem.last_probe.insert("web".into(), at(0));
    mem.last_probe.insert("running".into(), at(0));
    assert!(due_checks(&cs, &mem, at(59)).is_empty());
    assert_eq!(names(due_checks(&cs, &mem, at(60))), ["web"]);
    assert_eq!(next_due(&cs, &mem, at(10)), Some(at(60)));
    assert_eq!(names(due_checks(&cs, &mem, at(300))), ["web", "running"]);
    assert_eq!(next_due(&[], &mem, at(0)), None);
}

#[test]
fn fold_turns_unhealthy_after_threshold_and_healthy_after_one_success() {
    let cs = checks(TWO);
    let r1 = fold(&cs, &[], &probes(&[("web", false), ("running", true)]), at(0));
    assert_eq!(r1.len(), 2);
    assert!(r1[0].healthy, "one failure is below the threshold of 2");
    assert_eq!(r1[0].consecutive_failures, 1);
    assert_eq!(r1[0].last_transition_time, Some(at(0)));
    let r2 = fold(&cs, &r1, &probes(&[("web", false)]), at(60));
    assert!(!r2[0].healthy);
    assert_eq!(r2[0].consecutive_failures, 2);
    assert_eq!(r2[0].last_transition_time, Some(at(60)));
    assert_eq!(r2[0].message, "HTTP 503");
    assert_eq!(r2[1], r1[1], "a check that did not run keeps its result");
    let r3 = fold(&cs, &r2, &probes(&[("web", false)]), at(120));
    assert_eq!((r3[0].healthy, r3[0].consecutive_failures), (false, 3));
    assert_eq!(r3[0].last_transition_time, Some(at(60)));
    let r4 = fold(&cs, &r3, &probes(&[("web", true)]), at(180));
    assert_eq!((r4[0].healthy, r4[0].consecutive_failures), (true, 0));
    assert_eq!(r4[0].last_transition_time, Some(at(180)));
}

#[test]
fn fold_drops_removed_checks_and_resets_a_check_whose_type_changed() {
    let cs = checks(TWO);
    let r1 = fold(&cs, &[], &probes(&[("web", false), ("running", true)]), at(0));
    let only_web = checks("- {name: web, type: TCP, tcp: {host: x, port: 1}}\n");
    let r2 = fold(&only_web, &r1, &probes(&[("web", false)]), at(60));
    assert_eq!(r2.len(), 1);
    assert_eq!(
        r2[0].consecutive_failures, 1,
        "a TCP check named web starts afresh"
    );
}

fn view_running() -> GuestView {
    GuestView::Found(GuestFacts {
        guest: crate::proxmox::GuestRef::new(
            crate::proxmox::NodeName::new("pve1").unwrap(),
            crate::proxmox::GuestType::Qemu,
            crate::proxmox::Vmid::new(200).unwrap(),
        ),
        name: Some("nextcloud".into()),
        power: PowerState::Running,
        uptime: Some(60),
        lock: None,
        template: false,
    })
}

#[test]
fn can_run_skips_guest_checks_while_the_guest_state_is_unknown() {
    let cs = checks(TWO);
    let unknown = GuestView::Unavailable(super::super::observe::Unavailable {
        reason: "Unreachable".into(),
        message: "down".into(),
    });
    assert!(can_run(&cs[0], &unknown));
    assert!(!can_run(&cs[1], &unknown));
    let GuestView::Found(mut offline) = view_running() else {
        unreachable!()
    };
    offline.power = PowerState::Unknown;
    let offline = GuestView::Found(offline);
    assert!(can_run(&cs[0], &offline));
    assert!(!can_run(&cs[1], &offline));
    assert!(can_run(&cs[0], &view_running()));
    assert!(can_run(&cs[1], &view_running()));
}

#[test]
fn can_run_skips_every_check_while_the_guest_is_known_not_to_run() {
    let cs = checks(TWO);
    let mut down = vec![
        GuestView::Missing,
        GuestView::WrongType {
            actual: crate::crd::common::GuestType::Lxc,
            node: "pve1".into(),
        },
    ];
    for power in [PowerState::Stopped, PowerState::Paused] {
        let GuestView::Found(mut facts) = view_running() else {
            unreachable!()
        };
        facts.power = power;
        down.push(GuestView::Found(facts));
    }
    for guest in &down {
        assert!(guest.not_running().is_some(), "{guest:?}");
        assert!(cs.iter().all(|c| !can_run(c, guest)), "{guest:?}");
        assert_eq!(
            next_due(
                cs.iter().filter(|c| can_run(c, guest)),
                &ServiceMemory::default(),
                at(0)
            ),
            None,
            "nothing to wait for: {guest:?}"
        );
    }
    assert_eq!(view_running().not_running(), None);
}

#[tokio::test]
async fn probe_http_and_tcp_against_loopback_listeners() {
    let standin = StandIn::start().await.unwrap();
    let env = HealthEnv::new();
    let url = format!("{}/status.php", standin.url());
    let http = checks(&format!(
        "- {{name: web, type: HTTP, http: {{url: '{url}', bodyContains: '\"installed\":true'}}, timeoutSeconds: 5}}\n"
    ));
    let view = view_running();
    let p = probe(&http[0], &view, None, &env).await;
    assert_eq!(p, Probe::pass("HTTP 200, body matches"));
    standin.set_status(503);
    let p = probe(&http[0], &view, None, &env).await;
    assert_eq!(p, Probe::fail("HTTP 503, expected 200"));
    standin.set_status(200);
    standin.set_body("maintenance");
    let p = probe(&http[0], &view, None, &env).await;
    assert!(!p.ok && p.message.contains("does not contain"), "{p:?}");

    let port = standin.addr().port();
    let tcp = checks(&format!(
        "- {{name: ssh, type: TCP, tcp: {{host: 127.0.0.1, port: {port}}}}}\n"
    ));
    assert_eq!(probe(&tcp[0], &view, None, &env).await, Probe::pass("connected"));
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let tcp = checks(&format!(
        "- {{name: ssh, type: TCP, tcp: {{host: 127.0.0.1, port: {closed}}}}}\n"
    ));
    let p = probe(&tcp[0], &view, None, &env).await;
    assert!(!p.ok && p.message.starts_with("cannot connect"), "{p:?}");
    let refused = checks(&format!(
        "- {{name: web, type: HTTP, http: {{url: 'http://127.0.0.1:{closed}/'}}}}\n"
    ));
    let p = probe(&refused[0], &view, None, &env).await;
    assert!(!p.ok, "{p:?}");
}

#[tokio::test]
async fn probe_guest_running_reflects_the_observed_power_state() {
    let env = HealthEnv::new();
    let running = checks("- {name: up, type: GuestRunning}\n");
    assert!(probe(&running[0], &view_running(), None, &env).await.ok);
    let GuestView::Found(mut facts) = view_running() else {
        unreachable!()
    };
    facts.power = PowerState::Stopped;
    let p = probe(&running[0], &GuestView::Found(facts), None, &env).await;
    assert_eq!(p, Probe::fail("the guest is stopped"));
    let p = probe(&running[0], &GuestView::Missing, None, &env).await;
    assert_eq!(p, Probe::fail("the guest does not exist"));
}

/// A one-shot HTTP server on loopback that answers every request with `301` to `location`.
async fn redirect_to(location: String) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = [0u8; 2048];
            let _ = conn.read(&mut buf).await;
            let reply = format!(
                "HTTP/1.1 301 Moved Permanently\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = conn.write_all(reply.as_bytes()).await;
        }
    });
    addr
}

#[tokio::test]
async fn a_confined_probe_answers_a_redirect_with_its_status_instead_of_following_it() {
    // "Production" answers 200; the address the check was cleared for redirects there.
    let production = StandIn::start().await.unwrap();
    let redirecting = redirect_to(format!("{}/status.php", production.url())).await;
    let http = checks(&format!(
        "- {{name: web, type: HTTP, http: {{url: 'http://{redirecting}/'}}, timeoutSeconds: 5}}\n"
    ));
    let view = view_running();
    // A Service's check follows redirects, as a browser would...
    let followed = probe(&http[0], &view, None, &HealthEnv::new()).await;
    assert!(followed.ok, "{followed:?}");
    // ...a restore test's never does: the redirect could lead to the production guest.
    let confined = probe(&http[0], &view, None, &HealthEnv::confined()).await;
    assert_eq!(confined, Probe::fail("HTTP 301, expected 200"));
}
