//! `UpdatePolicy`: scheduled software updates, either inside guests (snapshot, update,
//! validate, roll back on failure) or of the Proxmox nodes themselves (rolling, one node at a
//! time, keeping quorum and draining guests first). See `shared/proxmox/OPERATIONS.md` §5.1.

mod status;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use status::*;

use super::cel::{cron_fields_rule, exactly_one_of, immutable, rule};
use super::common::{
    CRON_PATTERN, MaintenanceWindow, NODE_PATTERN, ServiceSelector, TIME_ZONE_PATTERN, default_time_zone,
    default_true, validate_schedule,
};
use super::health::{HealthCheck, validate_health_checks};
use super::refs::{LocalObjectReference, SecretReference};
use super::validation::{Errors, InvalidSpec, Validate};

/// Scheduled updates of guests or of the Proxmox nodes.
///
/// Privileges the API token needs: for guests `VM.Snapshot`, `VM.Snapshot.Rollback`,
/// `VM.GuestAgent.Unrestricted` and `VM.PowerMgmt`; for nodes `Sys.Audit`, `Sys.Modify`,
/// `Sys.PowerMgmt`, `VM.Migrate`, `VM.PowerMgmt` and `Sys.Console` (HA migrations).
// Every `printcolumn(...)` repeats `type_`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "autopilot.homelab.dev",
    version = "v1alpha1",
    kind = "UpdatePolicy",
    plural = "updatepolicies",
    namespaced,
    status = "UpdatePolicyStatus",
    shortname = "upd",
    category = "autopilot",
    derive = "PartialEq",
    doc = "Scheduled updates, either inside guests (snapshot, update, validate, roll back on failure) or of the Proxmox nodes (rolling, one node at a time, keeping quorum).",
    printcolumn(
        name = "Scope",
        type_ = "string",
        json_path = ".status.scope",
        description = "Guests or Nodes"
    ),
    printcolumn(
        name = "Result",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Succeeded\")].reason",
        description = "Outcome of the last run"
    ),
    printcolumn(name = "Last Run", type_ = "date", json_path = ".status.lastRun.startTime"),
    printcolumn(
        name = "Next",
        type_ = "string",
        json_path = ".status.nextRunTime",
        description = "Next scheduled run"
    ),
    printcolumn(
        name = "Rollbacks",
        type_ = "integer",
        json_path = ".status.rollbacksTotal",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = rule(exactly_one_of(&["guests", "nodes"]), "set exactly one of guests (update software inside guests) or nodes (rolling update of the Proxmox nodes)"),
    validation = rule("!has(self.nodes) || self.concurrency == 1", "concurrency must be 1 with nodes: nodes are updated one at a time; set 1 or leave it out")
)]
pub struct UpdatePolicySpec {
    /// The ProxmoxCluster (same namespace) to update in. Immutable.
    #[x_kube(validation = immutable("clusterRef"))]
    pub cluster_ref: LocalObjectReference,
    /// When a run may start, as 5-field cron in `timeZone`, e.g. `0 3 * * SUN`.
    #[schemars(length(min = 1, max = 128), regex(pattern = CRON_PATTERN))]
    #[x_kube(validation = cron_fields_rule())]
    pub schedule: String,
    /// IANA time zone of `schedule` and `window`, e.g. `Europe/Berlin` (default `UTC`).
    #[serde(default = "default_time_zone")]
    #[schemars(length(min = 1, max = 64), regex(pattern = TIME_ZONE_PATTERN))]
    pub time_zone: String,
    /// Pause scheduling; a run in progress finishes its current guest or node. Default false.
    #[serde(default)]
    pub suspend: bool,
    /// Maintenance window: a scheduled run only starts inside it (and may finish after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<MaintenanceWindow>,
    /// Guests updated at the same time (1-16, default 1). Nodes are always updated one at a time.
    #[serde(default = "default_concurrency")]
    #[schemars(range(min = 1, max = 16))]
    pub concurrency: i32,
    /// Update software inside the selected guests. Exactly one of `guests` and `nodes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guests: Option<GuestUpdates>,
    /// Rolling update of the Proxmox nodes. Exactly one of `guests` and `nodes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeUpdates>,
}

fn default_concurrency() -> i32 {
    1
}

/// Updates inside guests: snapshot, run the update command, validate, roll back on failure.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = rule("!(has(self.command) && has(self.packageManager))", "set command or packageManager, not both"),
    validation = rule("!has(self.lxcExecutor) || self.lxcExecutor != 'Ssh' || has(self.ssh)", "ssh is required when lxcExecutor is Ssh")
)]
pub struct GuestUpdates {
    /// Which Services (same namespace) to update.
    pub services: ServiceSelector,
    /// How to run commands in LXC containers: `Ssh` (SSH to the node hosting the container
    /// and run `pct exec`; needs `ssh`) or `Terminal` (the container console through the
    /// API). Proxmox has no API to run a command in a container, so there is no default:
    /// containers are skipped with reason `LxcExecutorNotSet` until this is chosen. VMs are
    /// always updated through the QEMU guest agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = crate::crd::common::optional_enum)]
    pub lxc_executor: Option<LxcExecutor>,
    /// SSH access to the Proxmox nodes (for `lxcExecutor: Ssh`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshAccess>,
    /// Update command as program and arguments (no shell), e.g.
    /// `["sh", "-c", "apt-get update && apt-get -y dist-upgrade"]`. Default: the preset of
    /// `packageManager`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 4096)))]
    pub command: Vec<String>,
    /// Use the preset update command for `Apt` (the default), `Dnf`, `Apk`, `Pacman` or `Zypper`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = crate::crd::common::optional_enum)]
    pub package_manager: Option<PackageManager>,
    /// Seconds the update command may run; it is wrapped in `timeout` inside the guest
    /// (60-86400, default 1800).
    #[serde(default = "default_command_timeout")]
    #[schemars(range(min = 60, max = 86400))]
    pub command_timeout_seconds: i32,
    /// Snapshot before updating, to roll back to (default: a disk-only snapshot kept one day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<GuestSnapshot>,
    /// Reboot after updating: `Never`, `IfRequired` (default: the guest reports
    /// `/var/run/reboot-required` or a newer kernel) or `Always`.
    #[serde(default)]
    pub reboot: GuestReboot,
    /// How to decide an update worked (default: the Service's own health checks pass within
    /// 600 seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<UpdateValidation>,
    /// What to do when validation fails (default: roll back to the snapshot and start the guest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackPolicy>,
    /// Seconds to keep watching the health checks after a successful update before calling it
    /// done (0-604800, default 0); a failure during the soak still rolls back.
    #[serde(default)]
    #[schemars(range(min = 0, max = 604800))]
    pub soak_seconds: i32,
    /// Stop the run at the first failed guest (default true); false carries on with the rest.
    #[serde(default = "default_true")]
    pub pause_on_failure: bool,
}

fn default_command_timeout() -> i32 {
    1800
}

/// How commands reach an LXC container.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum LxcExecutor {
    /// SSH to the hosting node and `pct exec`.
    Ssh,
    /// Script the container console (`termproxy` with `cmode=shell`).
    Terminal,
}

/// Preset update commands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PackageManager {
    /// Debian/Ubuntu: `apt-get update && apt-get -y dist-upgrade`.
    #[default]
    Apt,
    /// Fedora/RHEL: `dnf -y upgrade`.
    Dnf,
    /// Alpine: `apk update && apk upgrade`.
    Apk,
    /// Arch: `pacman -Syu --noconfirm`.
    Pacman,
    /// openSUSE: `zypper --non-interactive update`.
    Zypper,
}

impl PackageManager {
    /// The preset command as argv.
    pub fn command(self) -> Vec<String> {
        let script = match self {
            Self::Apt => {
                "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get -y -o Dpkg::Options::=--force-confold dist-upgrade"
            }
            Self::Dnf => "dnf -y upgrade",
            Self::Apk => "apk update && apk upgrade",
            Self::Pacman => "pacman -Syu --noconfirm",
            Self::Zypper => "zypper --non-interactive update",
        };
        vec!["sh".into(), "-c".into(), script.into()]
    }
}

impl GuestUpdates {
    /// The command to run: `command`, else the package manager preset.
    pub fn effective_command(&self) -> Vec<String> {
        if self.command.is_empty() {
            self.package_manager.unwrap_or_default().command()
        } else {
            self.command.clone()
        }
    }
}

/// SSH access.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SshAccess {
    /// Secret (same namespace) with key `privateKey` (OpenSSH format) and optionally
    /// `knownHosts` (without it, host keys are accepted on first use and pinned in status).
    pub secret_ref: SecretReference,
    /// Login user (default `root`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[a-z_][a-z0-9_-]*$"))]
    pub user: Option<String>,
    /// SSH port (1-65535, default 22).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
}

/// The pre-update snapshot.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GuestSnapshot {
    /// Take a snapshot before updating (default true). Without one there is no rollback.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Include the VM's RAM (default false). A RAM snapshot restarts the VM on rollback and
    /// is much larger; a disk-only snapshot freezes the file systems through the guest agent.
    #[serde(default)]
    pub vm_state: bool,
    /// Seconds to keep the snapshot after a successful update (0-2592000, default 86400).
    /// Only snapshots the operator made (`ap-upd-<run>`) are ever deleted.
    #[serde(default = "default_snapshot_retain")]
    #[schemars(range(min = 0, max = 2592000))]
    pub retain_seconds: i32,
}

fn default_snapshot_retain() -> i32 {
    86400
}

/// Reboot after a guest update.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum GuestReboot {
    /// Never reboot.
    Never,
    /// Reboot when the guest needs it (default).
    #[default]
    IfRequired,
    /// Always reboot.
    Always,
}

/// How an update is judged.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateValidation {
    /// Run the Service's own health checks (default true).
    #[serde(default = "default_true")]
    pub service_health_checks: bool,
    /// Extra checks for validation only, e.g. an `Exec` running the application's self-test.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::crd::health::health_checks_schema")]
    pub health_checks: Vec<HealthCheck>,
    /// Seconds all checks have to pass after the update (and reboot) finished (30-7200,
    /// default 600).
    #[serde(default = "default_validation_timeout")]
    #[schemars(range(min = 30, max = 7200))]
    pub timeout_seconds: i32,
    /// Consecutive passing rounds needed (1-10, default 1).
    #[serde(default = "default_success_threshold")]
    #[schemars(range(min = 1, max = 10))]
    pub success_threshold: i32,
}

fn default_validation_timeout() -> i32 {
    600
}

fn default_success_threshold() -> i32 {
    1
}

/// Rollback behaviour.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackPolicy {
    /// Roll back to the pre-update snapshot when validation fails (default true). Refused,
    /// with a Warning, if a newer snapshot than ours exists on the guest.
    #[serde(default = "default_true")]
    pub on_failure: bool,
    /// Start the guest after rolling back (default true).
    #[serde(default = "default_true")]
    pub start_after_rollback: bool,
}

/// Rolling update of the Proxmox nodes. A node is only touched when the cluster is quorate,
/// every node is online, and the cluster keeps quorum without it; this cannot be switched off.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = rule("self.executor != 'Ssh' || has(self.ssh)", "ssh is required when executor is Ssh"),
    validation = rule("self.executor != 'RootTerminal' || has(self.rootCredentialsSecretRef)", "rootCredentialsSecretRef is required when executor is RootTerminal")
)]
pub struct NodeUpdates {
    /// Nodes to update, in this order, e.g. `[pve3, pve2, pve1]`. Empty: every node, in name order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 63), regex(pattern = NODE_PATTERN)))]
    pub order: Vec<String>,
    /// How packages get upgraded (the PVE API cannot): `Ssh` (run `apt-get dist-upgrade` over
    /// SSH; needs `ssh`), `RootTerminal` (the node shell as `root@pam`; needs
    /// `rootCredentialsSecretRef`) or `External` (something else upgrades packages; the
    /// operator only drains, reboots and restores guests). Required: there is no safe default.
    pub executor: NodeExecutor,
    /// SSH access to the nodes (for `executor: Ssh`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshAccess>,
    /// Secret (same namespace) with `username` (`root@pam`) and `password` (for `executor: RootTerminal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_credentials_secret_ref: Option<SecretReference>,
    /// How guests leave a node before it reboots (default: migrate everything, no local disks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainPolicy>,
    /// Reboot after upgrading: `IfKernelChanged` (default: a newer kernel is installed than
    /// the one running), `Always` or `Never`.
    #[serde(default)]
    pub reboot: NodeReboot,
    /// Set the Ceph `noout` flag while a node is down (only if Ceph is present). Default true.
    #[serde(default = "default_true")]
    pub ceph_set_noout: bool,
    /// Seconds a rebooted node has to come back online and rejoin (300-7200, default 1800).
    #[serde(default = "default_rejoin_timeout")]
    #[schemars(range(min = 300, max = 7200))]
    pub rejoin_timeout_seconds: i32,
    /// Stop the rollout at the first failure, leaving the node's state in status (default
    /// true). The operator never undoes steps it did not do.
    #[serde(default = "default_true")]
    pub pause_on_failure: bool,
}

fn default_rejoin_timeout() -> i32 {
    1800
}

/// How node packages are upgraded.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum NodeExecutor {
    /// SSH to the node.
    Ssh,
    /// The node's shell through the API, as `root@pam`.
    RootTerminal,
    /// Packages are handled elsewhere; only drain, reboot and restore.
    External,
}

/// Node reboot policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum NodeReboot {
    /// Reboot when a newer kernel is installed than the one running (default).
    #[default]
    IfKernelChanged,
    /// Always reboot.
    Always,
    /// Never reboot.
    Never,
}

/// How guests leave a node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrainPolicy {
    /// HA-managed guests: `Migrate` (default: request HA migration of each) or
    /// `RequireMigratePolicy` (refuse unless the cluster's HA shutdown policy is `migrate`).
    #[serde(default)]
    pub ha_guests: HaDrain,
    /// Other guests: `Migrate` (default: live-migrate VMs, restart-migrate containers) or
    /// `Shutdown` (shut them down and start them again after the node is back).
    #[serde(default)]
    pub other_guests: GuestDrain,
    /// Also migrate guests with local disks (copies the disks; slow). Default false: such
    /// guests are shut down instead and restarted afterwards.
    #[serde(default)]
    pub with_local_disks: bool,
    /// Seconds the drain may take before the rollout pauses (60-14400, default 1800).
    #[serde(default = "default_drain_timeout")]
    #[schemars(range(min = 60, max = 14400))]
    pub timeout_seconds: i32,
}

fn default_drain_timeout() -> i32 {
    1800
}

/// Drain of HA guests.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum HaDrain {
    /// Request an HA migration of each resource.
    #[default]
    Migrate,
    /// Require the cluster's HA shutdown policy `migrate`.
    RequireMigratePolicy,
}

/// Drain of non-HA guests.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum GuestDrain {
    /// Migrate to another node.
    #[default]
    Migrate,
    /// Shut down, start again afterwards.
    Shutdown,
}

impl Validate for UpdatePolicySpec {
    fn validate(&self) -> Result<(), InvalidSpec> {
        let mut errors = Errors::new();
        validate_schedule("spec.", &self.schedule, &self.time_zone, &mut errors);
        match (&self.guests, &self.nodes) {
            (Some(g), None) => g.validate_into("spec.guests", &mut errors),
            (None, Some(n)) => {
                n.validate_into("spec.nodes", &mut errors);
                if self.concurrency != 1 {
                    errors.add(
                        "spec.concurrency",
                        "nodes are updated one at a time; set concurrency to 1 or leave it out",
                    );
                }
            }
            _ => errors.add("spec", "set exactly one of guests or nodes"),
        }
        errors.finish()
    }
}

impl GuestUpdates {
    fn validate_into(&self, path: &str, errors: &mut Errors) {
        if !self.command.is_empty() && self.package_manager.is_some() {
            errors.add(
                format!("{path}.packageManager"),
                "set command or packageManager, not both",
            );
        }
        if self.lxc_executor == Some(LxcExecutor::Ssh) && self.ssh.is_none() {
            errors.add(format!("{path}.ssh"), "required when lxcExecutor is Ssh");
        }
        if let Some(v) = &self.validation {
            validate_health_checks(
                &format!("{path}.validation.healthChecks"),
                &v.health_checks,
                errors,
            );
        }
    }
}

impl NodeUpdates {
    fn validate_into(&self, path: &str, errors: &mut Errors) {
        if self.executor == NodeExecutor::Ssh && self.ssh.is_none() {
            errors.add(format!("{path}.ssh"), "required when executor is Ssh");
        }
        if self.executor == NodeExecutor::RootTerminal && self.root_credentials_secret_ref.is_none() {
            errors.add(
                format!("{path}.rootCredentialsSecretRef"),
                "required when executor is RootTerminal",
            );
        }
        for (i, node) in self.order.iter().enumerate() {
            if self.order[..i].contains(node) {
                errors.add(format!("{path}.order[{i}]"), format!("{node:?} is listed twice"));
            }
        }
    }
}

#[cfg(test)]
mod tests;
