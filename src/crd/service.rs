//! `Service`: one Proxmox guest (VM or LXC container) the operator watches, health-checks and,
//! when asked, keeps in a desired power state. Deleting a Service never touches the guest.

use jiff::Timestamp;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::cel::{immutable, rule};
use super::common::{GuestType, NODE_PATTERN, VMID_MAX, VMID_MIN};
use super::conditions::Condition;
use super::health::{HealthCheck, HealthCheckResult, reject_agent_checks_for_lxc, validate_health_checks};
use super::refs::LocalObjectReference;
use super::validation::{Errors, InvalidSpec, Validate};

/// Condition type: the guest exists in the cluster.
pub const CONDITION_FOUND: &str = "Found";
/// Condition type: the guest runs and every health check passes (`False`, reason
/// `GuestNotRunning`, while it is stopped, paused or missing).
pub const CONDITION_HEALTHY: &str = "Healthy";
/// Condition type: the guest is in `spec.powerState` (only when it is not `Unmanaged`).
pub const CONDITION_POWER_STATE_IN_SYNC: &str = "PowerStateInSync";

/// A Proxmox guest (VM or LXC container) under the operator's watch.
///
/// The operator finds where the guest really runs (the node hint is only a hint), reports its
/// power state and uptime, runs its health checks and, if `powerState` is `Running` or
/// `Stopped`, starts or shuts it down to match. Deleting this resource never touches the guest.
/// List these with `kubectl get services.autopilot.homelab.dev` (or the short name `pveguest`),
/// because plain `kubectl get services` means the core Services.
// Every `printcolumn(...)` repeats `type_`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "autopilot.homelab.dev",
    version = "v1alpha1",
    kind = "Service",
    plural = "services",
    namespaced,
    status = "ServiceStatus",
    shortname = "pveguest",
    shortname = "apsvc",
    category = "autopilot",
    derive = "PartialEq",
    doc = "A Proxmox guest (VM or LXC container) the operator watches, health-checks and optionally keeps running or stopped. Deleting it never touches the guest.",
    printcolumn(
        name = "Node",
        type_ = "string",
        json_path = ".status.node",
        description = "Node the guest runs on now"
    ),
    printcolumn(name = "VMID", type_ = "integer", json_path = ".spec.vmid"),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(
        name = "Power",
        type_ = "string",
        json_path = ".status.powerState",
        description = "Observed power state"
    ),
    printcolumn(
        name = "Healthy",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Healthy\")].status"
    ),
    printcolumn(
        name = "Up",
        type_ = "date",
        json_path = ".status.startTime",
        description = "Time since the guest started"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rule(
    "self.type == 'VM' || !has(self.healthChecks) || self.healthChecks.all(c, c.type != 'GuestAgent' && c.type != 'Exec')",
    "healthChecks: GuestAgent and Exec checks need the QEMU guest agent and work for type VM only; use GuestRunning, TCP or HTTP for LXC"
))]
pub struct ServiceSpec {
    /// The ProxmoxCluster (same namespace) the guest belongs to. Immutable.
    #[x_kube(validation = immutable("clusterRef"))]
    pub cluster_ref: LocalObjectReference,
    /// The guest's VMID (100-999999999), unique in the Proxmox cluster. Immutable.
    #[schemars(range(min = VMID_MIN, max = VMID_MAX))]
    #[x_kube(validation = immutable("vmid"))]
    pub vmid: i32,
    /// `VM` (QEMU) or `LXC` (container). Immutable.
    #[serde(rename = "type")]
    #[x_kube(validation = immutable("type"))]
    pub type_: GuestType,
    /// Node the guest is expected on, e.g. `pve1`. Only a hint: the operator always asks the
    /// cluster where the guest runs and reports that in `status.node`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63), regex(pattern = NODE_PATTERN))]
    pub node: Option<String>,
    /// Desired power state: `Unmanaged` (default: only report), `Running` (start the guest
    /// whenever it is found stopped) or `Stopped` (shut it down whenever it is found running).
    #[serde(default)]
    pub power_state: DesiredPowerState,
    /// How important the guest is: `Low`, `Normal` (default), `High` or `Critical`. Restore
    /// tests that pick services at random pick critical ones more often.
    #[serde(default)]
    pub criticality: Criticality,
    /// Health checks run on their interval while the guest runs; `status.conditions[Healthy]`
    /// reports the first failing check. While the guest is stopped, paused or missing no check
    /// runs and `Healthy` is `False` with reason `GuestNotRunning`; the first pass that sees it
    /// running runs them all. At most 16, names unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::health::health_checks_schema")]
    pub health_checks: Vec<HealthCheck>,
}

/// Power state the operator enforces.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DesiredPowerState {
    /// Only observe and report (default).
    #[default]
    Unmanaged,
    /// Keep the guest running: start it when it is found stopped.
    Running,
    /// Keep the guest stopped: shut it down (clean shutdown) when it is found running.
    Stopped,
}

/// How important a guest is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
pub enum Criticality {
    /// Nice to have.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Others depend on it.
    High,
    /// The homelab is down without it.
    Critical,
}

/// Observed power state of a guest.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PowerState {
    /// Running.
    Running,
    /// Stopped.
    Stopped,
    /// Paused or suspended (VM).
    Paused,
    /// Not found in the cluster, or the cluster is unreachable.
    Unknown,
}

/// Observed state of a Service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// The `metadata.generation` this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Found`, `Healthy` and (when `powerState` is managed) `PowerStateInSync`.
    /// `Healthy` is `False` with reason `GuestNotRunning` whenever the guest is known not to
    /// run (stopped, paused, missing): a guest that does not run is never reported healthy.
    /// `Unknown` means the operator cannot tell yet (no check result so far). `Ready` needs all
    /// of them, except `Healthy` for a guest kept stopped by `powerState: Stopped`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::conditions::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Node the guest runs on now (from the cluster, not the hint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The guest's name in Proxmox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Observed power state: `Running`, `Stopped`, `Paused` or `Unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = crate::crd::common::optional_enum)]
    pub power_state: Option<PowerState>,
    /// When the guest last started (now minus its uptime); absent while it is not running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Timestamp>,
    /// When the guest was last found in the cluster. Refreshed on node or power changes and
    /// otherwise every 10 minutes (or every resync, if that is longer), so a missing guest shows
    /// about when it disappeared without a status write per Service and resync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_time: Option<Timestamp>,
    /// Latest result of each health check (kept from before while the guest does not run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health: Vec<HealthCheckResult>,
    /// UPID of the start or shutdown task the operator started to reach `spec.powerState`,
    /// recorded right after it starts and polled until it ends (also after an operator restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upid: Option<crate::crd::common::TaskHandle>,
}

impl Validate for ServiceSpec {
    fn validate(&self) -> Result<(), InvalidSpec> {
        let mut errors = Errors::new();
        validate_health_checks("spec.healthChecks", &self.health_checks, &mut errors);
        if self.type_ == GuestType::Lxc {
            reject_agent_checks_for_lxc("spec.healthChecks", &self.health_checks, &mut errors);
        }
        errors.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::health::HealthCheckType;

    fn spec(yaml: &str) -> ServiceSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn service_spec_defaults_and_round_trip() {
        let s = spec("clusterRef: {name: homelab}\nvmid: 200\ntype: VM\n");
        assert_eq!(s.power_state, DesiredPowerState::Unmanaged);
        assert_eq!(s.criticality, Criticality::Normal);
        assert!(s.validate().is_ok());
        let svc = Service::new("nextcloud", s.clone());
        let back: Service = serde_json::from_value(serde_json::to_value(&svc).unwrap()).unwrap();
        assert_eq!(back, svc);
    }

    #[test]
    fn service_validate_rejects_agent_checks_on_lxc() {
        let s = spec(
            "clusterRef: {name: homelab}\nvmid: 201\ntype: LXC\nhealthChecks:\n- {name: agent, type: GuestAgent}\n",
        );
        let err = s.validate().unwrap_err();
        assert_eq!(err.errors()[0].path, "spec.healthChecks[0].type");
        assert!(err.to_string().contains("use GuestRunning, TCP or HTTP for LXC"));
    }

    #[test]
    fn service_status_round_trips() {
        let status = ServiceStatus {
            observed_generation: Some(2),
            node: Some("pve2".into()),
            power_state: Some(PowerState::Running),
            start_time: Some(Timestamp::from_second(1_700_000_000).unwrap()),
            health: vec![HealthCheckResult {
                name: "web".into(),
                type_: HealthCheckType::Http,
                healthy: false,
                message: "HTTP 503".into(),
                consecutive_failures: 3,
                last_transition_time: None,
            }],
            ..Default::default()
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["startTime"], "2023-11-14T22:13:20Z");
        assert_eq!(json["health"][0]["consecutiveFailures"], 3);
        assert_eq!(serde_json::from_value::<ServiceStatus>(json).unwrap(), status);
    }
}
