//! Running one health check against a guest: HTTP and TCP from the operator, guest agent ping
//! and exec through PVE, `GuestRunning` from the guest's observed state. Every probe is bounded
//! by the check's `timeoutSeconds`. Used by the Service controller (continuous monitoring) and
//! the RestoreTest controller (checks on a restored copy); when and how results are folded is
//! each kind's business.

use std::{sync::OnceLock, time::Duration};

use super::guest::{GuestFacts, GuestView};
use crate::crd::health::{ExecCheck, HealthCheck, HealthCheckType, HttpCheck, TcpCheck};
use crate::crd::service::PowerState;
use crate::proxmox::{PveClient, TlsVerify};

/// Bytes of an HTTP response body read for `bodyContains`.
const MAX_BODY: usize = 1 << 20;
/// Characters of a command's output quoted in a failure message.
const OUTPUT_QUOTE: usize = 200;
/// Delay between two reads of a running exec's status.
const EXEC_POLL: Duration = Duration::from_millis(200);

/// The outcome of one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Whether the check passed.
    pub ok: bool,
    /// What was seen, e.g. `HTTP 503, expected 200`.
    pub message: String,
}

impl Probe {
    /// A passed probe.
    pub fn pass(message: impl Into<String>) -> Self {
        Self {
            ok: true,
            message: message.into(),
        }
    }

    /// A failed probe.
    pub fn fail(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            message: message.into(),
        }
    }
}

/// The HTTP clients of `HTTP` checks: one verifying certificates against the system roots, one
/// for checks with `insecureSkipVerify`. Each is built on first use, then shared by all checks.
pub struct HealthEnv {
    verified: OnceLock<Result<reqwest::Client, String>>,
    insecure: OnceLock<Result<reqwest::Client, String>>,
    /// Requests go only where the check says: no redirect is followed, no proxy is used.
    confined: bool,
}

impl std::fmt::Debug for HealthEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthEnv").finish_non_exhaustive()
    }
}

impl Default for HealthEnv {
    fn default() -> Self {
        Self::new()
    }
}

fn http_client(tls: &TlsVerify, confined: bool) -> Result<reqwest::Client, String> {
    let config = crate::proxmox::rustls_client_config(tls).map_err(|e| e.to_string())?;
    let builder = if confined {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
    } else {
        reqwest::Client::builder()
    };
    builder
        .tls_backend_preconfigured(config)
        .user_agent(concat!(
            "homelab-autopilot-healthcheck/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

impl HealthEnv {
    /// No client yet (a missing system root store only fails the checks that need it).
    pub fn new() -> Self {
        Self {
            verified: OnceLock::new(),
            insecure: OnceLock::new(),
            confined: false,
        }
    }

    /// For probes that must reach only the address they were cleared for (a restored copy in
    /// its isolated network): a redirect is answered as its own status, never followed (it
    /// could lead to the production guest), and no proxy stands in between.
    pub fn confined() -> Self {
        Self {
            confined: true,
            ..Self::new()
        }
    }

    fn client(&self, insecure: bool) -> &Result<reqwest::Client, String> {
        if insecure {
            self.insecure
                .get_or_init(|| http_client(&TlsVerify::InsecureSkipVerify, self.confined))
        } else {
            self.verified
                .get_or_init(|| http_client(&TlsVerify::SystemRoots, self.confined))
        }
    }
}

/// Runs one check, bounded by its timeout. `client` is the cluster's client (agent checks).
pub async fn probe(
    check: &HealthCheck,
    guest: &GuestView,
    client: Option<&PveClient>,
    env: &HealthEnv,
) -> Probe {
    let timeout = Duration::from_secs(u64::try_from(check.timeout_seconds()).unwrap_or(10));
    let run = async {
        match check.type_ {
            HealthCheckType::Http => match &check.http {
                Some(http) => probe_http(http, env, timeout).await,
                None => Probe::fail("type HTTP needs the http block"),
            },
            HealthCheckType::Tcp => match &check.tcp {
                Some(tcp) => probe_tcp(tcp).await,
                None => Probe::fail("type TCP needs the tcp block"),
            },
            HealthCheckType::GuestRunning | HealthCheckType::GuestAgent | HealthCheckType::Exec => {
                match running_guest(guest) {
                    Err(why) => Probe::fail(why),
                    Ok(facts) => probe_guest(check, facts, client).await,
                }
            }
        }
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(p) => p,
        Err(_) => Probe::fail(format!("no answer within {}s", timeout.as_secs())),
    }
}

fn running_guest(guest: &GuestView) -> Result<&GuestFacts, String> {
    match guest {
        GuestView::Found(f) if f.power == PowerState::Running => Ok(f),
        GuestView::Unavailable(u) => Err(u.message.clone()),
        _ => Err(guest
            .not_running()
            .unwrap_or_else(|| "the state of the guest is unknown".into())),
    }
}

async fn probe_guest(check: &HealthCheck, facts: &GuestFacts, client: Option<&PveClient>) -> Probe {
    if check.type_ == HealthCheckType::GuestRunning {
        return Probe::pass(format!("running on {}", facts.guest.node));
    }
    let Some(client) = client else {
        return Probe::fail("no connection to the cluster");
    };
    let (node, vmid) = (&facts.guest.node, facts.guest.vmid);
    match (check.type_, &check.exec) {
        (HealthCheckType::GuestAgent, _) => match client.agent_ping(node, vmid).await {
            Ok(()) => Probe::pass("the guest agent answered"),
            Err(e) => Probe::fail(format!("the guest agent did not answer: {e}")),
        },
        (HealthCheckType::Exec, Some(exec)) => probe_exec(client, facts, exec).await,
        _ => Probe::fail("type Exec needs the exec block"),
    }
}

async fn probe_exec(client: &PveClient, facts: &GuestFacts, exec: &ExecCheck) -> Probe {
    let (node, vmid) = (&facts.guest.node, facts.guest.vmid);
    let pid = match client.agent_exec(node, vmid, &exec.command, None).await {
        Ok(pid) => pid,
        Err(e) => return Probe::fail(format!("cannot run {:?}: {e}", exec.command.join(" "))),
    };
    // The caller's timeout bounds this loop.
    let status = loop {
        match client.agent_exec_status(node, vmid, pid).await {
            Ok(s) if s.exited => break s,
            Ok(_) => tokio::time::sleep(EXEC_POLL).await,
            Err(e) => {
                return Probe::fail(format!(
                    "cannot read the result of {:?}: {e}",
                    exec.command.join(" ")
                ));
            }
        }
    };
    let expected = i64::from(exec.expected_exit_code.unwrap_or(0));
    match (status.exitcode, status.signal) {
        (Some(code), _) if code == expected => Probe::pass(format!("exit code {code}")),
        (Some(code), _) => {
            let output = status
                .err_data
                .filter(|e| !e.trim().is_empty())
                .or(status.out_data)
                .unwrap_or_default();
            let output = quote(&output);
            let tail = if output.is_empty() {
                String::new()
            } else {
                format!(": {output}")
            };
            Probe::fail(format!("exit code {code}, expected {expected}{tail}"))
        }
        (None, Some(signal)) => Probe::fail(format!("killed by signal {signal}")),
        (None, None) => Probe::fail("the command ended without an exit code"),
    }
}

fn quote(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(OUTPUT_QUOTE) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}

async fn probe_http(http: &HttpCheck, env: &HealthEnv, timeout: Duration) -> Probe {
    let client = match env.client(http.insecure_skip_verify) {
        Ok(c) => c,
        Err(e) => return Probe::fail(e.clone()),
    };
    let response = match client.get(&http.url).timeout(timeout).send().await {
        Ok(r) => r,
        Err(e) => return Probe::fail(describe_request_error(&e)),
    };
    let status = i32::from(response.status().as_u16());
    let expected = http.expected_status();
    if !expected.contains(&status) {
        let list: Vec<String> = expected.iter().map(i32::to_string).collect();
        return Probe::fail(format!("HTTP {status}, expected {}", list.join(" or ")));
    }
    let Some(needle) = &http.body_contains else {
        return Probe::pass(format!("HTTP {status}"));
    };
    match read_body(response).await {
        Ok(body) if body.contains(needle.as_str()) => Probe::pass(format!("HTTP {status}, body matches")),
        Ok(_) => Probe::fail(format!("HTTP {status}, but the body does not contain {needle:?}")),
        Err(e) => Probe::fail(format!(
            "HTTP {status}, but reading the body failed: {}",
            describe_request_error(&e)
        )),
    }
}

async fn read_body(mut response: reqwest::Response) -> Result<String, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_BODY {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

fn describe_request_error(e: &reqwest::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

async fn probe_tcp(tcp: &TcpCheck) -> Probe {
    let Ok(port) = u16::try_from(tcp.port) else {
        return Probe::fail(format!("port {} is out of range", tcp.port));
    };
    match tokio::net::TcpStream::connect((tcp.host.as_str(), port)).await {
        Ok(_) => Probe::pass("connected"),
        Err(e) => Probe::fail(format!("cannot connect: {e}")),
    }
}
