//! Authentication over real loopback HTTP: ticket login, cookie and CSRF headers, renewal before
//! expiry, re-login after a 401, and secrets kept out of every error and Debug output.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};

use super::auth::unix_now;
use super::testutil::{TOKEN_SECRET, guest_on_pve1, json_response, serve_plain, token_config};
use super::{ClientConfig, Credentials, Error, GuestType, PveClient, Secret, TlsVerify};

const PASSWORD: &str = "correct-horse-battery";
const UPID: &str = "UPID:pve1:00001234:00005678:6AC05394:qmstart:100:root@pam:";

fn unauthorized() -> Response {
    json_response(
        StatusCode::UNAUTHORIZED,
        r#"{"data":null,"message":"authentication failure\n"}"#,
    )
}

/// A tiny PVE auth front: issues tickets (the first one already 110 minutes old), renews them,
/// and checks cookie and CSRF headers.
#[derive(Default)]
struct Tickets {
    logins: AtomicUsize,
    renewals: AtomicUsize,
    issued: AtomicUsize,
    /// Valid ticket -> its CSRF token.
    valid: Mutex<HashMap<String, String>>,
    renewed_from: Mutex<HashSet<String>>,
}

impl Tickets {
    fn issue(&self, age_secs: u64) -> (String, String) {
        let n = self.issued.fetch_add(1, Ordering::SeqCst);
        let t = format!("{:08X}", unix_now() - age_secs);
        let (ticket, csrf) = (format!("PVE:root@pam:{t}::signature{n}"), format!("{t}:csrf{n}"));
        self.valid.lock().unwrap().insert(ticket.clone(), csrf.clone());
        (ticket, csrf)
    }

    /// The CSRF token of the ticket in the request's cookie, if that ticket is valid.
    fn check(&self, headers: &HeaderMap) -> Option<String> {
        let cookie = headers.get("cookie")?.to_str().ok()?;
        let ticket = cookie.strip_prefix("PVEAuthCookie=")?;
        self.valid.lock().unwrap().get(ticket).cloned()
    }
}

async fn ticket_endpoint(State(s): State<Arc<Tickets>>, Form(f): Form<HashMap<String, String>>) -> Response {
    if f.get("username").map(String::as_str) != Some("root@pam") {
        return unauthorized();
    }
    let password = f.get("password").cloned().unwrap_or_default();
    let (ticket, csrf) = if password == PASSWORD {
        s.logins.fetch_add(1, Ordering::SeqCst);
        s.issue(110 * 60)
    } else if s.valid.lock().unwrap().contains_key(&password) {
        s.renewals.fetch_add(1, Ordering::SeqCst);
        s.renewed_from.lock().unwrap().insert(password);
        s.issue(0)
    } else {
        return unauthorized();
    };
    let body = format!(
        r#"{{"data":{{"username":"root@pam","ticket":"{ticket}","CSRFPreventionToken":"{csrf}","clustername":"lab"}}}}"#
    );
    json_response(StatusCode::OK, body)
}

fn ticket_router(state: Arc<Tickets>) -> Router {
    Router::new()
        .route("/api2/json/access/ticket", post(ticket_endpoint))
        .route(
            "/api2/json/version",
            get(|State(s): State<Arc<Tickets>>, h: HeaderMap| async move {
                // GET needs the cookie and must not carry the CSRF token.
                if s.check(&h).is_none() || h.contains_key("csrfpreventiontoken") {
                    return unauthorized();
                }
                json_response(
                    StatusCode::OK,
                    r#"{"data":{"version":"9.1.2","release":"9.1","repoid":"0123abcd"}}"#,
                )
            }),
        )
        .route(
            "/api2/json/nodes/pve1/qemu/100/status/start",
            post(|State(s): State<Arc<Tickets>>, h: HeaderMap| async move {
                let csrf = h.get("csrfpreventiontoken").and_then(|v| v.to_str().ok());
                match s.check(&h) {
                    Some(want) if csrf == Some(want.as_str()) => {
                        json_response(StatusCode::OK, format!(r#"{{"data":"{UPID}"}}"#))
                    }
                    _ => unauthorized(),
                }
            }),
        )
        .with_state(state)
}

fn password_config(url: &str, password: &str) -> ClientConfig {
    let mut c = token_config(&[url], TlsVerify::InsecureSkipVerify);
    c.credentials = Credentials::Password {
        username: "root@pam".into(),
        password: Secret::new(password),
    };
    c
}

#[tokio::test]
async fn ticket_login_sends_cookie_and_csrf_and_renews_before_expiry() {
    let state = Arc::new(Tickets::default());
    let server = serve_plain(ticket_router(state.clone())).await;
    let client = PveClient::new(password_config(&server.url, PASSWORD)).unwrap();

    assert_eq!(client.version().await.unwrap().version, "9.1.2");
    assert_eq!(
        (
            state.logins.load(Ordering::SeqCst),
            state.renewals.load(Ordering::SeqCst)
        ),
        (1, 0)
    );

    // We have held the ticket for 91 minutes: the next call renews it (posting it as the
    // password) and the POST carries the new cookie and CSRF token. (The server stamped it 110
    // minutes in the past, as a server with a lagging clock would: that alone triggers nothing.)
    client.age_ticket(std::time::Duration::from_secs(91 * 60)).await;
    let task = client
        .start_guest(&guest_on_pve1(GuestType::Qemu, 100))
        .await
        .unwrap();
    assert_eq!(task.upid.as_str(), UPID);
    assert_eq!(
        (
            state.logins.load(Ordering::SeqCst),
            state.renewals.load(Ordering::SeqCst)
        ),
        (1, 1)
    );
    assert!(
        state
            .renewed_from
            .lock()
            .unwrap()
            .iter()
            .all(|t| t.contains("signature0"))
    );

    // The renewed ticket is fresh: no further login.
    client.version().await.unwrap();
    assert_eq!(
        (
            state.logins.load(Ordering::SeqCst),
            state.renewals.load(Ordering::SeqCst)
        ),
        (1, 1)
    );
}

#[tokio::test]
async fn ticket_rejected_with_401_logs_in_again_once() {
    let state = Arc::new(Tickets::default());
    let server = serve_plain(ticket_router(state.clone())).await;
    let client = PveClient::new(password_config(&server.url, PASSWORD)).unwrap();
    client.version().await.unwrap();
    // The server forgets every ticket (e.g. its auth key rotated).
    state.valid.lock().unwrap().clear();
    client.version().await.unwrap();
    assert_eq!(state.logins.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn wrong_password_is_unauthorized_without_leaking_it() {
    let state = Arc::new(Tickets::default());
    let server = serve_plain(ticket_router(state.clone())).await;
    let client = PveClient::new(password_config(&server.url, "wrong-password-123")).unwrap();
    let err = client.version().await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("wrong-password-123"));
}

/// Echoes the credentials it receives everywhere an error can carry text.
fn echo_router() -> Router {
    fn creds(h: &HeaderMap) -> String {
        ["authorization", "cookie", "csrfpreventiontoken"]
            .iter()
            .filter_map(|k| h.get(*k).and_then(|v| v.to_str().ok()))
            .collect::<Vec<_>>()
            .join(" ")
    }
    fn echo(status: StatusCode, h: &HeaderMap) -> Response {
        let c = creds(h);
        let body = format!(r#"{{"data":null,"message":"bad {c}\n","errors":{{"{c}":"was {c}"}}}}"#);
        let mut resp = json_response(status, body);
        if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(format!("bad {c}").into_bytes()) {
            resp.extensions_mut().insert(reason);
        }
        resp
    }
    Router::new()
        .route(
            "/api2/json/version",
            get(|h: HeaderMap| async move { echo(StatusCode::BAD_REQUEST, &h) }),
        )
        .route(
            "/api2/json/cluster/status",
            get(|h: HeaderMap| async move { echo(StatusCode::UNAUTHORIZED, &h) }),
        )
        .route(
            "/api2/json/nodes",
            get(|h: HeaderMap| async move { echo(StatusCode::INTERNAL_SERVER_ERROR, &h) }),
        )
        .route(
            "/api2/json/cluster/nextid",
            // 200 with a body that does not decode: the decoder's message quotes the value.
            get(|h: HeaderMap| async move {
                json_response(StatusCode::OK, format!(r#"{{"data":"{}"}}"#, creds(&h)))
            }),
        )
}

#[tokio::test]
async fn secrets_never_appear_in_debug_output_or_errors() {
    let server = serve_plain(echo_router()).await;
    let config = token_config(&[&server.url], TlsVerify::InsecureSkipVerify);
    assert!(!format!("{config:?}").contains(TOKEN_SECRET));
    let client = PveClient::new(config).unwrap();
    assert!(!format!("{client:?}").contains(TOKEN_SECRET));
    let errors = vec![
        client.version().await.unwrap_err(),
        client.cluster_status().await.unwrap_err(),
        client.nodes().await.unwrap_err(),
        client.next_vmid().await.unwrap_err(),
    ];
    let kinds: Vec<&str> = errors.iter().map(Error::category).collect();
    assert_eq!(
        kinds,
        [
            "ParameterVerificationFailed",
            "Unauthorized",
            "ApiError",
            "DecodeFailed"
        ]
    );
    for e in &errors {
        let text = format!("{e} {e:?}");
        assert!(!text.contains(TOKEN_SECRET), "secret leaked: {text}");
        assert!(
            text.contains("***") || matches!(e, Error::Decode { .. }),
            "{text}"
        );
    }

    // Ticket auth: neither the password nor the ticket nor the CSRF token leak.
    let state = Arc::new(Tickets::default());
    let tickets = serve_plain(ticket_router(state.clone()).merge(echo_router_for_tickets())).await;
    let config = password_config(&tickets.url, PASSWORD);
    assert!(!format!("{config:?}").contains(PASSWORD));
    let client = PveClient::new(config).unwrap();
    let err = client.nodes().await.unwrap_err();
    let text = format!("{err} {err:?}");
    let issued: Vec<String> = state
        .valid
        .lock()
        .unwrap()
        .iter()
        .flat_map(|(t, c)| [t.clone(), c.clone()])
        .collect();
    assert!(!issued.is_empty());
    for secret in issued.iter().map(String::as_str).chain([PASSWORD]) {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
}

fn echo_router_for_tickets() -> Router {
    Router::new().route(
        "/api2/json/nodes",
        get(|h: HeaderMap| async move {
            let cookie = h
                .get("cookie")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(r#"{{"data":null,"message":"cannot use {cookie}\n"}}"#),
            )
        }),
    )
}
