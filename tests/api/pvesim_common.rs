//! Helpers for the simulator tests: a plain reqwest client speaking PVE's wire format over real
//! loopback HTTPS (trusting the simulator's CA), and small polling helpers.

use std::path::PathBuf;
use std::time::Duration;

use homelab_autopilot::pvesim::{SimConfig, SimHandle, Simulator};
use serde_json::Value;

/// The official schema, read from `../shared` (tests skip schema checks when it is absent).
pub fn schema_path() -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/proxmox/pve-apischema.json");
    if path.exists() {
        Some(path)
    } else {
        println!("SKIP schema validation: ../shared/proxmox/pve-apischema.json not found");
        None
    }
}

/// A config for fast tests: schema on, tasks 1000x faster.
pub fn fast_config() -> SimConfig {
    SimConfig {
        schema: schema_path(),
        time_scale: 0.001,
        ..SimConfig::default()
    }
}

/// [`fast_config`] plus the simulated PBS on an ephemeral loopback port
/// ([`SimHandle::pbs_url`], [`SimHandle::pbs_fingerprint`]).
pub fn pbs_config() -> SimConfig {
    SimConfig {
        pbs_listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        ..fast_config()
    }
}

/// The `Authorization` value of the simulator's default token, PBS style
/// (`PBSAPIToken=user@realm!name:secret`).
pub fn pbs_token(sim: &SimHandle) -> String {
    format!("PBSAPIToken={}:{}", sim.token_id(), sim.token_secret())
}

/// A reqwest client for the PBS listener: it has its own self-signed certificate, so this one
/// pins nothing and accepts it (tests of the typed client pin its fingerprint).
pub fn pbs_http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .tls_danger_accept_invalid_certs(true)
        .build()
        .expect("client builds")
}

/// A raw PBS API call (`path` under `/api2/json`) with `auth` as the `Authorization` header;
/// returns status and body (JSON, or the plain-text PBS error as a JSON string).
pub async fn pbs_call(
    sim: &SimHandle,
    method: reqwest::Method,
    path: &str,
    form: &[(&str, &str)],
    auth: &str,
) -> (u16, Value) {
    let base = sim.pbs_url().expect("simulator started with pbs_listen");
    let mut req = pbs_http_client()
        .request(method.clone(), format!("{base}/api2/json{path}"))
        .header("Authorization", auth);
    if !form.is_empty() {
        req = if method == reqwest::Method::GET || method == reqwest::Method::DELETE {
            req.query(form)
        } else {
            req.form(form)
        };
    }
    let resp = req.send().await.expect("PBS listener answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// How requests authenticate.
#[derive(Clone, Debug)]
pub enum Auth {
    None,
    Token(String),
    Ticket { ticket: String, csrf: String },
}

/// A decoded response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub reason: Option<String>,
    pub body: Value,
    pub raw: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Resp {
    /// `data` of the envelope.
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }

    /// Panics with the response when the status is not 200.
    pub fn ok(self) -> Self {
        assert_eq!(
            self.status, 200,
            "expected 200, got {} {:?}: {}",
            self.status, self.reason, self.raw
        );
        self
    }
}

/// A simulator and a client for it.
pub struct Api {
    pub sim: SimHandle,
    pub client: reqwest::Client,
    pub auth: Auth,
    base: String,
}

/// Builds a reqwest client trusting the simulator's CA (or plain HTTP).
pub fn client_for(sim: &SimHandle) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(20));
    if !sim.ca_pem().is_empty() {
        let ca = reqwest::Certificate::from_pem(sim.ca_pem().as_bytes()).expect("CA PEM parses");
        builder = builder.tls_certs_only([ca]);
    }
    builder.build().expect("client builds")
}

impl Api {
    /// Starts a simulator with `config` and authenticates with its API token.
    pub async fn start(config: SimConfig) -> Api {
        let sim = Simulator::start(config).await.expect("simulator starts");
        let client = client_for(&sim);
        let auth = Auth::Token(format!("PVEAPIToken={}={}", sim.token_id(), sim.token_secret()));
        let base = format!("{}/api2/json", sim.url());
        Api {
            sim,
            client,
            auth,
            base,
        }
    }

    /// Starts the default fast simulator.
    pub async fn fast() -> Api {
        Api::start(fast_config()).await
    }

    /// The same simulator with other credentials.
    pub fn with_auth(&self, auth: Auth) -> ApiRef<'_> {
        ApiRef { api: self, auth }
    }

    /// Logs in with the password and switches to ticket authentication.
    pub async fn login(&mut self) {
        let resp = self
            .request(
                reqwest::Method::POST,
                "/access/ticket",
                Body::Form(vec![
                    ("username".into(), self.sim.username().into()),
                    ("password".into(), self.sim.password().into()),
                ]),
                &Auth::None,
            )
            .await
            .ok();
        let ticket = resp.data()["ticket"].as_str().expect("ticket").to_string();
        let csrf = resp.data()["CSRFPreventionToken"]
            .as_str()
            .expect("csrf")
            .to_string();
        self.auth = Auth::Ticket { ticket, csrf };
    }

    pub async fn request(&self, method: reqwest::Method, path: &str, body: Body, auth: &Auth) -> Resp {
        self.try_request(method, path, body, auth)
            .await
            .expect("request reaches the simulator")
    }

    pub async fn try_request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Body,
        auth: &Auth,
    ) -> Result<Resp, reqwest::Error> {
        let mut req = self.client.request(method, format!("{}{}", self.base, path));
        match auth {
            Auth::None => {}
            Auth::Token(header) => req = req.header("Authorization", header),
            Auth::Ticket { ticket, csrf } => {
                let cookie = format!(
                    "PVEAuthCookie={}",
                    percent_encoding::utf8_percent_encode(ticket, percent_encoding::NON_ALPHANUMERIC)
                );
                req = req.header("Cookie", cookie).header("CSRFPreventionToken", csrf);
            }
        }
        req = match body {
            Body::None => req,
            Body::Form(pairs) => req.form(&pairs),
            Body::Json(v) => req.json(&v),
        };
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let reason = resp
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned());
        let reason = reason.or_else(|| resp.status().canonical_reason().map(str::to_string));
        let headers = resp.headers().clone();
        let raw = resp.text().await?;
        let body = serde_json::from_str(&raw).unwrap_or(Value::Null);
        Ok(Resp {
            status,
            reason,
            body,
            raw,
            headers,
        })
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.request(reqwest::Method::GET, path, Body::None, &self.auth)
            .await
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Resp {
        self.request(reqwest::Method::POST, path, Body::form(form), &self.auth)
            .await
    }

    pub async fn post_json(&self, path: &str, json: Value) -> Resp {
        self.request(reqwest::Method::POST, path, Body::Json(json), &self.auth)
            .await
    }

    pub async fn put(&self, path: &str, form: &[(&str, &str)]) -> Resp {
        self.request(reqwest::Method::PUT, path, Body::form(form), &self.auth)
            .await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.request(reqwest::Method::DELETE, path, Body::None, &self.auth)
            .await
    }

    /// Polls `/nodes/{node}/tasks/{upid}/status` until `stopped` (deadline 20 s); returns it.
    pub async fn wait_task(&self, upid: &str) -> Value {
        let node = upid.split(':').nth(1).expect("UPID has a node");
        let path = format!("/nodes/{node}/tasks/{}/status", encode(upid));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let status = self.get(&path).await.ok();
            if status.data()["status"] == "stopped" {
                return status.data().clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "task {upid} did not finish"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The task log lines.
    pub async fn task_log(&self, upid: &str) -> Vec<String> {
        let node = upid.split(':').nth(1).expect("UPID has a node");
        let resp = self
            .get(&format!("/nodes/{node}/tasks/{}/log?limit=0", encode(upid)))
            .await
            .ok();
        resp.data()
            .as_array()
            .expect("log lines")
            .iter()
            .map(|l| l["t"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Starts a task with a POST and waits for it; returns `(upid, status)`.
    pub async fn run_task(&self, path: &str, form: &[(&str, &str)]) -> (String, Value) {
        let resp = self.post(path, form).await.ok();
        let upid = resp
            .data()
            .as_str()
            .unwrap_or_else(|| panic!("{path} returned no UPID: {}", resp.raw))
            .to_string();
        let status = self.wait_task(&upid).await;
        (upid, status)
    }
}

/// Request body.
pub enum Body {
    None,
    Form(Vec<(String, String)>),
    Json(Value),
}

impl Body {
    pub fn form(pairs: &[(&str, &str)]) -> Body {
        if pairs.is_empty() {
            Body::None
        } else {
            Body::Form(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        }
    }
}

/// The simulator with other credentials.
pub struct ApiRef<'a> {
    api: &'a Api,
    auth: Auth,
}

impl ApiRef<'_> {
    pub async fn get(&self, path: &str) -> Resp {
        self.api
            .request(reqwest::Method::GET, path, Body::None, &self.auth)
            .await
    }
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Resp {
        self.api
            .request(reqwest::Method::POST, path, Body::form(form), &self.auth)
            .await
    }
}

/// Percent-encodes a path segment (UPIDs contain `@` and `!`, volids `:` and `/`).
pub fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Polls `check` until it is true (deadline 10 s).
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// SHA-256 hex of some bytes (compared instead of megabytes of assertion output).
pub fn sha(bytes: Option<Vec<u8>>) -> Option<String> {
    bytes.map(|b| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&b)))
}

pub fn backup_files(dir: &std::path::Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("dump dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(suffix))
        .collect();
    names.sort();
    names
}

pub async fn content(api: &Api, storage: &str) -> Vec<Value> {
    let resp = api
        .get(&format!("/nodes/pve1/storage/{storage}/content?content=backup"))
        .await
        .ok();
    resp.data().as_array().expect("rows").clone()
}

/// The backup rows of `storage` as `node` sees it (a local storage is per node).
pub async fn content_on(api: &Api, node: &str, storage: &str) -> Vec<Value> {
    let resp = api
        .get(&format!("/nodes/{node}/storage/{storage}/content?content=backup"))
        .await
        .ok();
    resp.data().as_array().expect("rows").clone()
}

/// Where `node`'s backups on the file-based `storage` are (`local` is per node).
pub fn node_backup_dir(sim: &SimHandle, storage: &str, node: &str) -> PathBuf {
    sim.state(|c| c.backup_dir_on(storage, node))
}
