//! Transport edge cases against minimal loopback servers: TLS verification modes, endpoint
//! failover, retries, auth errors. PVE behaviour itself is tested against the simulator.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};

use super::testutil::{
    TOKEN_SECRET, guest_on_pve1, json_response, mint_certs, refused_url, serve_plain, serve_tls, token_config,
};
use super::{ClientMetrics, Error, GuestType, PveClient, TlsVerify};

const VERSION: &str = r#"{"data":{"version":"9.1.2","release":"9.1","repoid":"0123abcd"}}"#;
const UPID: &str = "UPID:pve1:00001234:00005678:6AC05394:qmstart:100:autopilot@pve!operator:";

fn version_router(hits: Arc<AtomicUsize>) -> Router {
    Router::new().route(
        "/api2/json/version",
        get(move || {
            hits.fetch_add(1, Ordering::SeqCst);
            async { json_response(StatusCode::OK, VERSION) }
        }),
    )
}

#[tokio::test]
async fn tls_pinned_fingerprint_match_connects() {
    let certs = mint_certs();
    let server = serve_tls(version_router(Arc::default()), &certs).await;
    let client = PveClient::new(token_config(
        &[&server.url],
        TlsVerify::Fingerprint(certs.fingerprint.clone()),
    ))
    .unwrap();
    assert_eq!(client.version().await.unwrap().version, "9.1.2");
}

#[tokio::test]
async fn tls_fingerprint_mismatch_reports_both_and_never_fails_over() {
    let certs = mint_certs();
    let tls_server = serve_tls(version_router(Arc::default()), &certs).await;
    let fallback_hits = Arc::new(AtomicUsize::new(0));
    let fallback = serve_plain(version_router(fallback_hits.clone())).await;
    let pinned = ["00"; 32].join(":");
    let config = token_config(
        &[&tls_server.url, &fallback.url],
        TlsVerify::Fingerprint(pinned.clone()),
    );
    let err = PveClient::new(config).unwrap().version().await.unwrap_err();
    let Error::Tls {
        expected, presented, ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(expected.as_deref(), Some(pinned.as_str()));
    assert_eq!(presented.as_deref(), Some(certs.fingerprint.as_str()));
    assert!(err.to_string().contains(&certs.fingerprint), "{err}");
    assert_eq!(err.category(), "TlsVerificationFailed");
    assert!(!err.is_transient());
    assert_eq!(
        fallback_hits.load(Ordering::SeqCst),
        0,
        "a TLS mismatch must not fail over"
    );
}

#[tokio::test]
async fn tls_ca_pem_accepts_its_leaf_and_rejects_another_ca() {
    let certs = mint_certs();
    let server = serve_tls(version_router(Arc::default()), &certs).await;
    let ok = PveClient::new(token_config(
        &[&server.url],
        TlsVerify::CaPem(certs.ca_pem.clone()),
    ))
    .unwrap();
    assert_eq!(ok.version().await.unwrap().release, "9.1");
    let other_ca = mint_certs().ca_pem;
    let err = PveClient::new(token_config(&[&server.url], TlsVerify::CaPem(other_ca)))
        .unwrap()
        .version()
        .await
        .unwrap_err();
    // The presented fingerprint is reported, so the user can compare it or pin it.
    let Error::Tls {
        expected: None,
        presented: Some(fp),
        detail,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(fp, &certs.fingerprint);
    assert!(detail.contains("was rejected"), "{detail}");
}

#[tokio::test]
async fn tls_insecure_skip_verify_accepts_any_certificate() {
    let certs = mint_certs();
    let server = serve_tls(version_router(Arc::default()), &certs).await;
    let client = PveClient::new(token_config(&[&server.url], TlsVerify::InsecureSkipVerify)).unwrap();
    assert_eq!(client.version().await.unwrap().repoid, "0123abcd");
}

#[tokio::test]
async fn failover_when_first_endpoint_refuses_connections() {
    let hits = Arc::new(AtomicUsize::new(0));
    let posts = Arc::new(AtomicUsize::new(0));
    let p = posts.clone();
    let router = version_router(hits.clone()).route(
        "/api2/json/nodes/pve1/qemu/100/status/start",
        post(move || {
            p.fetch_add(1, Ordering::SeqCst);
            async { json_response(StatusCode::OK, format!(r#"{{"data":"{UPID}"}}"#)) }
        }),
    );
    let server = serve_plain(router).await;
    let dead = refused_url().await;
    let registry = prometheus::Registry::new();
    let mut config = token_config(&[&dead, &server.url], TlsVerify::InsecureSkipVerify);
    config.metrics = Some(ClientMetrics::new(&registry).unwrap());
    let client = PveClient::new(config).unwrap();
    assert_eq!(client.version().await.unwrap().version, "9.1.2");
    // A POST is safe to send elsewhere when the connection was refused: it never left.
    let task = client
        .start_guest(&guest_on_pve1(GuestType::Qemu, 100))
        .await
        .unwrap();
    assert_eq!(task.upid.as_str(), UPID);
    assert_eq!(
        (hits.load(Ordering::SeqCst), posts.load(Ordering::SeqCst)),
        (1, 1)
    );
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    assert!(
        text.contains(r#"code="ConnectFailed",method="GET",path_template="/version""#),
        "{text}"
    );
    assert!(
        text.contains(r#"code="200",method="POST",path_template="/nodes/{node}/qemu/{vmid}/status/start""#),
        "{text}"
    );
    // The second call went straight to the endpoint that answered.
    assert!(!text.contains(r#"code="ConnectFailed",method="POST""#), "{text}");
}

#[tokio::test]
async fn all_endpoints_down_is_a_transient_connect_error() {
    let (a, b) = (refused_url().await, refused_url().await);
    let err = PveClient::new(token_config(&[&a, &b], TlsVerify::InsecureSkipVerify))
        .unwrap()
        .version()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn get_is_retried_on_503_but_post_is_not() {
    let gets = Arc::new(AtomicUsize::new(0));
    let posts = Arc::new(AtomicUsize::new(0));
    let (g, p) = (gets.clone(), posts.clone());
    let router = Router::new()
        .route(
            "/api2/json/version",
            get(move || {
                let n = g.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 2 {
                        json_response(StatusCode::SERVICE_UNAVAILABLE, "")
                    } else {
                        json_response(StatusCode::OK, VERSION)
                    }
                }
            }),
        )
        .route(
            "/api2/json/nodes/pve1/qemu/100/status/start",
            post(move || {
                p.fetch_add(1, Ordering::SeqCst);
                async { json_response(StatusCode::SERVICE_UNAVAILABLE, "") }
            }),
        );
    let server = serve_plain(router).await;
    let client = PveClient::new(token_config(&[&server.url], TlsVerify::InsecureSkipVerify)).unwrap();
    assert_eq!(client.version().await.unwrap().version, "9.1.2");
    assert_eq!(gets.load(Ordering::SeqCst), 3);
    let err = client
        .start_guest(&guest_on_pve1(GuestType::Qemu, 100))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Api { status: 503, .. }), "{err:?}");
    assert_eq!(
        posts.load(Ordering::SeqCst),
        1,
        "a POST that may have started a task is never repeated"
    );
}

#[tokio::test]
async fn unauthorized_401_is_classified_and_not_retried() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let router = Router::new().route(
        "/api2/json/version",
        get(move || {
            h.fetch_add(1, Ordering::SeqCst);
            async {
                json_response(
                    StatusCode::UNAUTHORIZED,
                    r#"{"data":null,"message":"authentication failure\n"}"#,
                )
            }
        }),
    );
    let server = serve_plain(router).await;
    let client = PveClient::new(token_config(&[&server.url], TlsVerify::InsecureSkipVerify)).unwrap();
    let err = client.version().await.unwrap_err();
    assert!(
        matches!(&err, Error::Unauthorized { message } if message == "authentication failure"),
        "{err:?}"
    );
    assert_eq!(err.category(), "Unauthorized");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[test]
fn client_config_errors_name_the_field() {
    let mut config = token_config(&[], TlsVerify::InsecureSkipVerify);
    assert!(
        PveClient::new(config.clone())
            .unwrap_err()
            .to_string()
            .contains("endpoints")
    );
    config.endpoints = vec![super::Endpoint::new("pve1:8006", 0)];
    assert!(
        PveClient::new(config.clone())
            .unwrap_err()
            .to_string()
            .contains("endpoints[].url")
    );
    config.endpoints = vec![super::Endpoint::new("https://pve1:8006", 0)];
    config.tls = TlsVerify::Fingerprint("nope".into());
    assert!(
        PveClient::new(config.clone())
            .unwrap_err()
            .to_string()
            .contains("tls.fingerprint")
    );
    config.tls = TlsVerify::InsecureSkipVerify;
    let client = PveClient::new(config).unwrap();
    assert!(!format!("{client:?}").contains(TOKEN_SECRET));
}

#[test]
fn client_and_its_futures_are_send_sync_and_cheap_to_clone() {
    fn shared<T: Send + Sync + Clone + 'static>(_: &T) {}
    fn send<F: std::future::Future + Send>(_: F) {}
    let client = PveClient::new(token_config(
        &["https://pve1:8006"],
        TlsVerify::InsecureSkipVerify,
    ))
    .unwrap();
    shared(&client);
    shared(&Error::Timeout { what: String::new() });
    let task: super::TaskRef = "UPID:pve1:00000001:00000002:00000003:qmstart:100:root@pam:"
        .parse()
        .unwrap();
    let deadline = tokio::time::Instant::now();
    // Controllers run these inside spawned tasks: the futures must be Send (never polled here).
    send(client.wait_task(&task, std::time::Duration::from_secs(1), deadline));
    send(client.locate_guest(super::Vmid::new(100).unwrap()));
    send(client.start_guest(&guest_on_pve1(GuestType::Lxc, 101)));
}
