//! Health checks: shared by Service (continuous monitoring), UpdatePolicy (validation after an
//! update) and RestoreTest (checks on the restored guest).

use jiff::Timestamp;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::cel::rule;
use super::common::ENTRY_NAME_PATTERN;
use super::validation::Errors;

/// Default `intervalSeconds` of a health check.
pub const DEFAULT_INTERVAL_SECONDS: i32 = 60;
/// Default `timeoutSeconds` of a health check.
pub const DEFAULT_TIMEOUT_SECONDS: i32 = 10;
/// Default `failureThreshold` of a health check.
pub const DEFAULT_FAILURE_THRESHOLD: i32 = 3;

/// How a health check probes the guest.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum HealthCheckType {
    /// Proxmox reports the guest as `running` (`/status/current`). Works for VMs and LXC.
    GuestRunning,
    /// The QEMU guest agent answers a ping through Proxmox. VMs only (the agent must be enabled).
    GuestAgent,
    /// A command run inside the guest through the QEMU guest agent exits with the expected code.
    /// VMs only: Proxmox has no API to run commands in a container.
    Exec,
    /// A TCP connection from the operator to `tcp.host:tcp.port` succeeds.
    #[serde(rename = "TCP")]
    Tcp,
    /// An HTTP(S) GET from the operator to `http.url` returns an expected status.
    #[serde(rename = "HTTP")]
    Http,
}

impl HealthCheckType {
    /// Whether the check needs the QEMU guest agent (and so a VM).
    pub fn needs_guest_agent(self) -> bool {
        matches!(self, Self::GuestAgent | Self::Exec)
    }
}

/// One health check. Set `type` and, for `HTTP`, `TCP` and `Exec`, the block of the same name.
/// A check is unhealthy after `failureThreshold` consecutive failures and healthy again after
/// one success.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = rule("self.type == 'HTTP' ? has(self.http) : !has(self.http)", "http must be set when type is HTTP, and only then"),
    validation = rule("self.type == 'TCP' ? has(self.tcp) : !has(self.tcp)", "tcp must be set when type is TCP, and only then"),
    validation = rule("self.type == 'Exec' ? has(self.exec) : !has(self.exec)", "exec must be set when type is Exec, and only then"),
    validation = rule(
        "(has(self.timeoutSeconds) ? self.timeoutSeconds : 10) <= (has(self.intervalSeconds) ? self.intervalSeconds : 60)",
        "timeoutSeconds must not exceed intervalSeconds (defaults 10 and 60)"
    )
)]
pub struct HealthCheck {
    /// Name of the check, unique within the list (reported in status), e.g. `web`.
    #[schemars(length(min = 1, max = 63), regex(pattern = ENTRY_NAME_PATTERN))]
    pub name: String,
    /// How to probe: `GuestRunning`, `GuestAgent`, `Exec`, `TCP` or `HTTP`.
    #[serde(rename = "type")]
    pub type_: HealthCheckType,
    /// Settings of an `HTTP` check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheck>,
    /// Settings of a `TCP` check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpCheck>,
    /// Settings of an `Exec` check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecCheck>,
    /// Seconds between two probes (10-86400, default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 86400))]
    pub interval_seconds: Option<i32>,
    /// Seconds one probe may take before it counts as failed (1-600, default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 600))]
    pub timeout_seconds: Option<i32>,
    /// Consecutive failures before the check reports unhealthy (1-100, default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: Option<i32>,
}

impl HealthCheck {
    /// `intervalSeconds` or its default.
    pub fn interval_seconds(&self) -> i32 {
        self.interval_seconds.unwrap_or(DEFAULT_INTERVAL_SECONDS)
    }

    /// `timeoutSeconds` or its default.
    pub fn timeout_seconds(&self) -> i32 {
        self.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS)
    }

    /// `failureThreshold` or its default.
    pub fn failure_threshold(&self) -> i32 {
        self.failure_threshold.unwrap_or(DEFAULT_FAILURE_THRESHOLD)
    }

    /// Runtime checks (backstop for the CEL rules); `path` is e.g. `spec.healthChecks[0]`.
    pub fn validate_into(&self, path: &str, errors: &mut Errors) {
        let blocks = [
            (HealthCheckType::Http, "http", self.http.is_some()),
            (HealthCheckType::Tcp, "tcp", self.tcp.is_some()),
            (HealthCheckType::Exec, "exec", self.exec.is_some()),
        ];
        for (type_, field, set) in blocks {
            if (self.type_ == type_) != set {
                errors.add(
                    format!("{path}.{field}"),
                    format!("{field} must be set when type is {type_:?}, and only then"),
                );
            }
        }
        if self.timeout_seconds() > self.interval_seconds() {
            errors.add(
                format!("{path}.timeoutSeconds"),
                format!(
                    "{} is more than intervalSeconds ({}); lower it",
                    self.timeout_seconds(),
                    self.interval_seconds()
                ),
            );
        }
    }
}

/// Schema of a `healthChecks` list: at most 16 checks, merged by `name`.
pub fn health_checks_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let item = generator.subschema_for::<HealthCheck>();
    schemars::json_schema!({
        "type": "array",
        "items": item,
        "maxItems": 16,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["name"],
    })
}

/// Validates a list of checks: names unique, each check valid.
pub fn validate_health_checks(path: &str, checks: &[HealthCheck], errors: &mut Errors) {
    for (i, check) in checks.iter().enumerate() {
        let item = format!("{path}[{i}]");
        if checks[..i].iter().any(|c| c.name == check.name) {
            errors.add(
                format!("{item}.name"),
                format!("{:?} is used twice; give each check its own name", check.name),
            );
        }
        check.validate_into(&item, errors);
    }
}

/// Reports every check of `checks` that needs the QEMU guest agent, for a container.
pub fn reject_agent_checks_for_lxc(path: &str, checks: &[HealthCheck], errors: &mut Errors) {
    for (i, check) in checks
        .iter()
        .enumerate()
        .filter(|(_, c)| c.type_.needs_guest_agent())
    {
        errors.add(
            format!("{path}[{i}].type"),
            format!(
                "{:?} needs the QEMU guest agent and works for VMs only; use GuestRunning, TCP or HTTP for LXC",
                check.type_
            ),
        );
    }
}

/// An HTTP(S) GET from the operator's pod.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpCheck {
    /// URL to fetch, e.g. `https://cloud.home.lan/status.php`.
    #[schemars(length(min = 8, max = 2048), regex(pattern = r"^https?://[^\s]+$"))]
    pub url: String,
    /// Status codes that count as healthy (default `[200]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(range(min = 100, max = 599)))]
    pub expected_status: Vec<i32>,
    /// Text the response body must contain, e.g. `"installed":true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub body_contains: Option<String>,
    /// Accept any TLS certificate (self-signed homelab services). Default false.
    #[serde(default, skip_serializing_if = "super::common::is_false")]
    pub insecure_skip_verify: bool,
}

impl HttpCheck {
    /// Status codes that count as healthy (`[200]` when none are listed).
    pub fn expected_status(&self) -> Vec<i32> {
        if self.expected_status.is_empty() {
            vec![200]
        } else {
            self.expected_status.clone()
        }
    }
}

/// A TCP connect from the operator's pod.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TcpCheck {
    /// Host name or IP address, e.g. `192.168.1.20` or `db.home.lan`.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[A-Za-z0-9]([A-Za-z0-9.:-]*[A-Za-z0-9])?$")
    )]
    pub host: String,
    /// TCP port (1-65535).
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

/// A command run in the guest through the QEMU guest agent (no shell: pass
/// `["sh", "-c", "..."]` for one).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecCheck {
    /// Program and arguments, e.g. `["systemctl", "is-active", "nginx"]`.
    #[schemars(length(min = 1, max = 32), inner(length(min = 1, max = 4096)))]
    pub command: Vec<String>,
    /// Exit code that counts as healthy (0-255, default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 255))]
    pub expected_exit_code: Option<i32>,
}

/// Latest result of one health check, in status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckResult {
    /// Name of the check (from spec).
    pub name: String,
    /// Type of the check.
    #[serde(rename = "type")]
    pub type_: HealthCheckType,
    /// Whether the check currently counts as healthy.
    pub healthy: bool,
    /// Outcome of the latest probe, e.g. `HTTP 503 from https://cloud.home.lan/status.php`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Failed probes in a row (0 once a probe succeeds).
    #[serde(default)]
    pub consecutive_failures: i32,
    /// When `healthy` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http_check() -> HealthCheck {
        serde_yaml::from_str(
            "name: web\ntype: HTTP\nhttp:\n  url: https://cloud.home.lan/status.php\n  expectedStatus: [200, 204]\n",
        )
        .unwrap()
    }

    #[test]
    fn health_check_defaults_apply_when_fields_are_absent() {
        let c = http_check();
        assert_eq!(
            (c.interval_seconds(), c.timeout_seconds(), c.failure_threshold()),
            (60, 10, 3)
        );
        assert_eq!(c.http.as_ref().unwrap().expected_status(), vec![200, 204]);
        let round: HealthCheck = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(round, c);
    }

    #[test]
    fn health_check_validate_reports_mismatched_block_and_timeout() {
        let mut c = http_check();
        c.type_ = HealthCheckType::Tcp;
        c.timeout_seconds = Some(120);
        let mut errors = Errors::new();
        validate_health_checks("spec.healthChecks", &[http_check(), c], &mut errors);
        let err = errors.finish().unwrap_err();
        let paths: Vec<_> = err.errors().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.healthChecks[1].name",
                "spec.healthChecks[1].http",
                "spec.healthChecks[1].tcp",
                "spec.healthChecks[1].timeoutSeconds"
            ]
        );
    }

    #[test]
    fn health_check_type_knows_which_need_the_agent() {
        assert!(HealthCheckType::Exec.needs_guest_agent());
        assert!(!HealthCheckType::Http.needs_guest_agent());
        assert_eq!(serde_json::to_value(HealthCheckType::Tcp).unwrap(), "TCP");
    }
}
