//! [`PveClient`]: transport, endpoint failover, authentication, timeouts, retries and metrics.
//!
//! One attempt walks the endpoints in priority order (starting from the one that last worked) and
//! moves to the next endpoint only on a connect error, when the request was certainly not sent.
//! Across attempts, calls are retried with jittered exponential backoff when the request never
//! left (connect errors) or when the operation is idempotent and the failure is a transport
//! error, a timeout, a 5xx (not 501) or a 429. A POST that may have started a task is never
//! repeated.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;
use url::Url;

use super::auth::{self, Credentials, Redactor, Secret, Ticket};
use super::config::{ClientConfig, RetryPolicy, Timeouts};
use super::error::{Error, Result, is_retryable_status};
use super::metrics::ClientMetrics;
use super::ops::Method;
use super::request::Call;
use super::tls;

/// After failing over, try the preferred endpoints again after this long.
const PREFER_AGAIN_AFTER_SECS: u64 = 60;

/// A typed client for one PVE cluster. Cheap to clone; share it.
#[derive(Clone)]
pub struct PveClient {
    inner: Arc<Inner>,
}

/// One endpoint: its URL as configured, its API base, and the HTTP client verifying its
/// certificate (shared by endpoints with the same TLS settings).
struct Target {
    url: String,
    base: Url,
    http: reqwest::Client,
}

struct Inner {
    endpoints: Vec<Target>,
    /// Index of the endpoint that last answered, and when we moved to it (unix secs).
    active: AtomicUsize,
    active_since: AtomicU64,
    auth: AuthState,
    redactor: Redactor,
    timeouts: Timeouts,
    retries: RetryPolicy,
    metrics: Option<ClientMetrics>,
    dialect: Dialect,
}

/// Which server the client talks to: PVE, or a Proxmox Backup Server (its own token header,
/// errors as plain-text bodies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Pve,
    Pbs,
}

pub(crate) enum AuthState {
    Token(HeaderMap),
    Ticket {
        username: String,
        password: Secret,
        ticket: Mutex<Option<Ticket>>,
    },
}

impl fmt::Debug for PveClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let endpoints: Vec<&str> = self.inner.endpoints.iter().map(|t| t.url.as_str()).collect();
        f.debug_struct("PveClient")
            .field("endpoints", &endpoints)
            .finish_non_exhaustive()
    }
}

/// The `{"data": ..., "total": N}` envelope of every PVE response.
#[derive(Deserialize)]
pub(crate) struct Envelope<T> {
    pub(crate) data: T,
    #[serde(default, deserialize_with = "super::decode::opt_u64")]
    pub(crate) total: Option<u64>,
}

impl PveClient {
    /// Builds a client. Checks the configuration; makes no request.
    pub fn new(config: ClientConfig) -> Result<Self> {
        Self::build(config, Dialect::Pve)
    }

    /// The transport of a PBS client: the same endpoints, TLS, timeouts, retries and metrics,
    /// with PBS's token header (`PBSAPIToken=user@realm!name:secret`) or ticket cookie
    /// (`PBSAuthCookie`).
    pub(crate) fn new_pbs(config: ClientConfig) -> Result<Self> {
        Self::build(config, Dialect::Pbs)
    }

    fn build(config: ClientConfig, dialect: Dialect) -> Result<Self> {
        if config.endpoints.is_empty() {
            return Err(Error::Config {
                field: "endpoints",
                message: "list at least one PVE endpoint".into(),
            });
        }
        if config.retries.max_attempts == 0 {
            return Err(Error::Config {
                field: "retries.maxAttempts",
                message: "must be at least 1".into(),
            });
        }
        config.credentials.validate()?;
        let mut endpoints = config.endpoints.clone();
        endpoints.sort_by_key(|e| e.priority);
        // One HTTP client per distinct certificate check: each endpoint verifies with its own
        // pin (or the shared trust), and endpoints with equal settings share connections' config.
        let mut clients: Vec<(&super::TlsVerify, reqwest::Client)> = Vec::new();
        let mut targets = Vec::with_capacity(endpoints.len());
        for e in &endpoints {
            let tls = e.tls.as_ref().unwrap_or(&config.tls);
            let http = match clients.iter().find(|(t, _)| *t == tls) {
                Some((_, http)) => http.clone(),
                None => {
                    let http = http_client(tls, &config.timeouts)?;
                    clients.push((tls, http.clone()));
                    http
                }
            };
            targets.push(Target {
                url: e.url.trim().trim_end_matches('/').to_owned(),
                base: e.api_base()?,
                http,
            });
        }

        let redactor = Redactor::default();
        let auth = match &config.credentials {
            Credentials::ApiToken { token_id, secret } => {
                redactor.add(secret);
                AuthState::Token(match dialect {
                    Dialect::Pve => auth::token_header(token_id, secret)?,
                    Dialect::Pbs => auth::pbs_token_header(token_id, secret)?,
                })
            }
            Credentials::Password { username, password } => {
                redactor.add(password);
                AuthState::Ticket {
                    username: username.clone(),
                    password: password.clone(),
                    ticket: Mutex::new(None),
                }
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                endpoints: targets,
                active: AtomicUsize::new(0),
                active_since: AtomicU64::new(0),
                auth,
                redactor,
                timeouts: config.timeouts,
                retries: config.retries,
                metrics: config.metrics,
                dialect,
            }),
        })
    }

    /// The base URL of the endpoint that answered last (the preferred one before any call): the
    /// endpoint in use after a failover.
    pub fn endpoint(&self) -> &str {
        let idx = self.inner.active.load(Ordering::Relaxed);
        // `new` refuses an empty endpoint list, so the index is in bounds.
        &self.inner.endpoints[idx.min(self.inner.endpoints.len() - 1)].url
    }

    pub(crate) fn auth_state(&self) -> &AuthState {
        &self.inner.auth
    }

    pub(crate) fn redactor(&self) -> &Redactor {
        &self.inner.redactor
    }

    /// Runs `call` and decodes its `data`.
    pub(crate) async fn run<T: DeserializeOwned>(&self, call: Call) -> Result<T> {
        Ok(self.run_envelope::<T>(call).await?.data)
    }

    /// Runs `call` and decodes the whole envelope (for `total`).
    pub(crate) async fn run_envelope<T: DeserializeOwned>(&self, mut call: Call) -> Result<Envelope<T>> {
        if let Some(e) = call.take_error() {
            return Err(e);
        }
        let body = self.execute(&call).await?;
        serde_json::from_slice::<Envelope<T>>(&body).map_err(|e| Error::Decode {
            what: call.op.to_string(),
            detail: if call.sensitive_response {
                "(detail withheld: the response carries credentials)".into()
            } else {
                self.inner.redactor.redact(&e.to_string())
            },
        })
    }

    /// Retries and re-authentication around [`Self::attempt`]; returns the body of a 2xx response.
    async fn execute(&self, call: &Call) -> Result<Vec<u8>> {
        let mut attempt = 1u32;
        let mut relogged = false;
        loop {
            let used_ticket = match (call.authenticated, &self.inner.auth) {
                // Boxed: logging in runs a call itself (unauthenticated, so no deeper recursion).
                (true, AuthState::Ticket { .. }) => Some(Box::pin(self.ticket()).await?),
                _ => None,
            };
            let err = match self.attempt(call, used_ticket.as_ref()).await {
                Ok(body) => return Ok(body),
                Err(e) => e,
            };
            // An expired or revoked ticket: PVE did not run the request; log in again once.
            if let (Error::Unauthorized { .. }, Some(t)) = (&err, &used_ticket)
                && !relogged
            {
                relogged = true;
                self.forget_ticket(t).await;
                continue;
            }
            let retry = match &err {
                Error::Connect { .. } => true,
                Error::Transport { .. } | Error::Timeout { .. } => call.idempotent,
                Error::Api { status, .. } => call.idempotent && is_retryable_status(*status),
                _ => false,
            };
            if !retry || attempt >= self.inner.retries.max_attempts {
                return Err(err);
            }
            let wait = self.inner.retries.backoff(attempt);
            tracing::debug!(op = %call.op, attempt, ?wait, error = %err, "retrying PVE call");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    fn start_index(&self) -> usize {
        let active = self.inner.active.load(Ordering::Relaxed);
        let since = self.inner.active_since.load(Ordering::Relaxed);
        if active != 0 && auth::unix_now().saturating_sub(since) >= PREFER_AGAIN_AFTER_SECS {
            0
        } else {
            active.min(self.inner.endpoints.len() - 1)
        }
    }

    /// One attempt: tries endpoints in order while connecting fails.
    async fn attempt(&self, call: &Call, ticket: Option<&Ticket>) -> Result<Vec<u8>> {
        let n = self.inner.endpoints.len();
        let start = self.start_index();
        let mut last_connect_error = None;
        for i in 0..n {
            let idx = (start + i) % n;
            match self.send(call, idx, ticket).await {
                Err(e @ Error::Connect { .. }) => {
                    tracing::warn!(endpoint = %self.inner.endpoints[idx].url, error = %e, "PVE endpoint unreachable");
                    last_connect_error = Some(e);
                }
                other => {
                    // Any answer (even an HTTP error) proves the endpoint reachable.
                    if !matches!(other, Err(Error::Tls { .. })) {
                        self.mark_active(idx, idx != start);
                    }
                    return other;
                }
            }
        }
        Err(last_connect_error.unwrap_or_else(|| Error::Connect {
            endpoint: String::new(),
            detail: "no endpoint".into(),
        }))
    }

    /// Remembers the endpoint that answered. After a failover (including a failed re-probe of
    /// the preferred endpoints) the clock restarts, so a dead preferred endpoint is tried again
    /// only once per [`PREFER_AGAIN_AFTER_SECS`], not on every call.
    fn mark_active(&self, idx: usize, failed_over: bool) {
        let previous = self.inner.active.swap(idx, Ordering::Relaxed);
        if failed_over || previous != idx {
            self.inner.active_since.store(auth::unix_now(), Ordering::Relaxed);
        }
        if previous != idx {
            tracing::info!(endpoint = %self.inner.endpoints[idx].url, "using PVE endpoint");
        }
    }

    /// Sends the request to one endpoint.
    async fn send(&self, call: &Call, idx: usize, ticket: Option<&Ticket>) -> Result<Vec<u8>> {
        let target = &self.inner.endpoints[idx];
        let endpoint = &target.url;
        let url = format!("{}{}", target.base.as_str().trim_end_matches('/'), call.path);
        let method = call.op.method;
        let mut req = target.http.request(method.to_reqwest(), url);
        if call.authenticated {
            req = match (&self.inner.auth, ticket) {
                (AuthState::Token(h), _) => req.headers(h.clone()),
                (AuthState::Ticket { .. }, Some(t)) => req.headers(match self.inner.dialect {
                    Dialect::Pve => auth::ticket_headers(t, method != Method::Get)?,
                    Dialect::Pbs => auth::ticket_headers_named("PBSAuthCookie", t, method != Method::Get)?,
                }),
                (AuthState::Ticket { .. }, None) => req,
            };
        }
        req = match method {
            Method::Get | Method::Delete => req.query(&call.params),
            Method::Post | Method::Put => req.form(&call.params),
        };
        let started = Instant::now();
        let observe = |code: &str| {
            if let Some(m) = &self.inner.metrics {
                m.observe(method.as_str(), call.op.path_template, code, started.elapsed());
            }
        };
        let result = async {
            let resp = req
                .send()
                .await
                .map_err(|e| self.transport_error(e, endpoint, call))?;
            let status = resp.status();
            let reason = resp
                .extensions()
                .get::<hyper::ext::ReasonPhrase>()
                .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned());
            let body = resp
                .bytes()
                .await
                .map_err(|e| self.transport_error(e, endpoint, call))?;
            Ok::<_, Error>((status, reason, body))
        }
        .await;
        let (status, reason, body) = match result {
            Ok(r) => r,
            Err(e) => {
                observe(e.category());
                return Err(e);
            }
        };
        observe(status.as_str());
        tracing::debug!(op = %call.op, endpoint = %endpoint, status = status.as_u16(), elapsed = ?started.elapsed(), "PVE call");
        if status.is_success() {
            return Ok(body.to_vec());
        }
        // PBS (proxmox-rest-server) sends the message itself as the body, not JSON.
        if self.inner.dialect == Dialect::Pbs
            && serde_json::from_slice::<serde_json::Value>(&body).is_err()
            && !body.is_empty()
        {
            let text = String::from_utf8_lossy(&body);
            let text = text.trim();
            if !text.is_empty() && text.len() <= 4096 {
                return Err(Error::from_response(
                    status.as_u16(),
                    Some(text),
                    b"",
                    &self.inner.redactor,
                ));
            }
        }
        let reason = reason.as_deref().or(status.canonical_reason());
        Err(Error::from_response(
            status.as_u16(),
            reason,
            &body,
            &self.inner.redactor,
        ))
    }

    fn transport_error(&self, e: reqwest::Error, endpoint: &str, call: &Call) -> Error {
        let endpoint = endpoint.to_owned();
        if let Some(t) = tls::find_tls_failure(&e) {
            return Error::Tls {
                endpoint,
                expected: t.expected,
                presented: t.presented,
                detail: t.detail,
            };
        }
        let detail = self.inner.redactor.redact(&error_chain(&e));
        if e.is_connect() {
            Error::Connect { endpoint, detail }
        } else if e.is_timeout() {
            Error::Timeout {
                what: format!(
                    "{} on {endpoint} after {:?}",
                    call.op, self.inner.timeouts.request
                ),
            }
        } else {
            Error::Transport { endpoint, detail }
        }
    }
}

/// An HTTP client verifying server certificates by `tls`.
fn http_client(tls: &super::TlsVerify, timeouts: &Timeouts) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls::client_config(tls)?)
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.request)
        .user_agent(concat!("homelab-autopilot/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Error::Config {
            field: "tls",
            message: format!("cannot build the HTTP client: {e}"),
        })
}

/// The messages of an error and its sources, without repeats: `error sending request: ...:
/// Connection refused (os error 111)`.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let msg = err.to_string();
        if !parts.iter().any(|p| p.contains(&msg)) {
            parts.push(msg);
        }
        cur = err.source();
    }
    parts.join(": ")
}
