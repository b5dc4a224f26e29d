//! A mocked Kubernetes API server for unit tests, in the style of kube-rs controller-rs's
//! `ApiServerVerifier`: the code under test gets a real [`Client`] whose requests arrive here
//! (kube's `tower-test` mock service), where the test asserts each one and answers it.

use std::time::Duration;

use futures::FutureExt;
use http::{Method, Request, Response, StatusCode};
use kube::{Client, client::Body};
use serde_json::{Value, json};
use tower_test::mock::{Handle, SendResponse};

/// One request as the API server saw it.
#[derive(Debug)]
pub(crate) struct Seen {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

impl Seen {
    /// The value of query parameter `key`, if present.
    pub fn param(&self, key: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }
}

/// The API server side of a mocked client.
pub(crate) struct ApiServerVerifier(Handle<Request<Body>, Response<Body>>);

/// A client and the verifier that receives its requests.
pub(crate) fn client() -> (Client, ApiServerVerifier) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(svc, "default"), ApiServerVerifier(handle))
}

/// A `metav1.Status` failure body, as the API server sends with 4xx/5xx answers.
pub(crate) fn status_body(code: u16, reason: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Status", "status": "Failure",
        "message": format!("mocked {reason}"), "reason": reason, "code": code,
    })
}

/// The API server's answer to an Event create (its content is not read).
pub(crate) fn event_answer() -> Value {
    json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}})
}

/// An empty list of our API group (`kind`: e.g. `ServiceList`).
pub(crate) fn empty_list(kind: &str) -> Value {
    json!({"apiVersion": "autopilot.homelab.dev/v1alpha1", "kind": kind, "metadata": {}, "items": []})
}

impl ApiServerVerifier {
    /// The next request (failing the test if none comes within 10 s) and its responder.
    pub async fn next(&mut self) -> (Seen, SendResponse<Response<Body>>) {
        let (req, send) = tokio::time::timeout(Duration::from_secs(10), self.0.next_request())
            .await
            .expect("the code under test sent no request within 10 s")
            .expect("the client was dropped before the expected request");
        (seen(req).await, send)
    }

    /// The next request and its responder, or `None` once every client is dropped.
    pub async fn next_or_end(&mut self) -> Option<(Seen, SendResponse<Response<Body>>)> {
        let (req, send) = self.0.next_request().await?;
        Some((seen(req).await, send))
    }

    /// Takes the next request and answers it with `status` and `body`.
    pub async fn answer(&mut self, status: u16, body: Value) -> Seen {
        let (seen, send) = self.next().await;
        respond(send, status, &body);
        seen
    }

    /// Asserts that no request is waiting (call after the code under test has finished).
    pub fn assert_no_request(&mut self) {
        if let Some(Some((req, _))) = self.0.next_request().now_or_never() {
            panic!("unexpected request {} {}", req.method(), req.uri());
        }
    }
}

/// Answers a request.
pub(crate) fn respond(send: SendResponse<Response<Body>>, status: u16, body: &Value) {
    let response = Response::builder()
        .status(StatusCode::from_u16(status).expect("a valid status code"))
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).expect("JSON serializes")))
        .expect("a valid response");
    send.send_response(response);
}

/// Reads a request into a [`Seen`].
pub(crate) async fn seen(req: Request<Body>) -> Seen {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = req.into_body().collect_bytes().await.expect("a readable body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Seen {
        method,
        path,
        query,
        content_type,
        body,
    }
}
