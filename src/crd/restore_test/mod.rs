//! `RestoreTest`: restore a backup into an isolated network, boot it, run health checks,
//! measure the recovery time (RTO) and clean up. See `shared/proxmox/OPERATIONS.md` §5.2.

mod status;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use status::*;

use super::cel::{cidr_is_aligned, cron_fields_rule, exactly_one_of, immutable, rule};
use super::common::{
    BRIDGE_PATTERN, CIDR_PATTERN, CRON_PATTERN, GuestType, NODE_PATTERN, STORAGE_PATTERN, ServiceSelector,
    TIME_ZONE_PATTERN, VMID_MAX, VMID_MIN, VmidRange, default_time_zone, default_true, validate_schedule,
};
use super::health::{HealthCheck, reject_agent_checks_for_lxc, validate_health_checks};
use super::refs::LocalObjectReference;
use super::validation::{Errors, InvalidSpec, Validate};

/// Periodic proof that backups restore: restore, boot, check, measure, clean up.
// Every `printcolumn(...)` repeats `type_`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "autopilot.homelab.dev",
    version = "v1alpha1",
    kind = "RestoreTest",
    plural = "restoretests",
    namespaced,
    status = "RestoreTestStatus",
    shortname = "rt",
    category = "autopilot",
    derive = "PartialEq",
    doc = "Restores a backup into an isolated network, boots it, runs health checks, measures the recovery time (RTO) and cleans up, on a schedule.",
    printcolumn(
        name = "Service",
        type_ = "string",
        json_path = ".status.lastRun.service",
        description = "Service(s) restored in the last run"
    ),
    printcolumn(name = "Result", type_ = "string", json_path = ".status.lastRun.result"),
    printcolumn(
        name = "RTO",
        type_ = "integer",
        json_path = ".status.lastRun.rtoSeconds",
        description = "Measured recovery time in seconds"
    ),
    printcolumn(
        name = "Target",
        type_ = "integer",
        json_path = ".status.lastRun.rtoTargetSeconds",
        description = "RTO target in seconds the last run was measured against"
    ),
    printcolumn(name = "Last Run", type_ = "date", json_path = ".status.lastRun.startTime"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = rule(
        "!has(self.selection) || !has(self.selection.policy) || self.selection.policy != 'Volid' || !has(self.source.services)",
        "selection.volid names one backup; it needs a single source (serviceRef or vmid), not source.services"
    ),
    validation = rule(
        "!has(self.source.type) || self.source.type == 'VM' || !has(self.healthChecks) || self.healthChecks.all(c, c.type != 'GuestAgent' && c.type != 'Exec')",
        "healthChecks: GuestAgent and Exec checks need the QEMU guest agent and work for VMs only; use GuestRunning, TCP or HTTP for an LXC source"
    ),
    validation = rule(
        "has(self.network.probeCidr) || !has(self.healthChecks) || self.healthChecks.all(c, c.type != 'TCP' && c.type != 'HTTP')",
        "healthChecks: TCP and HTTP checks need network.probeCidr, the path into the isolated network; the restored copy keeps its production address, so without it a check would probe production"
    )
)]
pub struct RestoreTestSpec {
    /// The ProxmoxCluster (same namespace) to restore in. Immutable.
    #[x_kube(validation = immutable("clusterRef"))]
    pub cluster_ref: LocalObjectReference,
    /// What to restore: one Service (`serviceRef`), one guest by `vmid` + `type`, or a random
    /// pick of `count` Services from a selector (`services`).
    pub source: RestoreSource,
    /// Which backup of each source to restore (default: the latest verified one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<BackupSelection>,
    /// When to run, as 5-field cron in `timeZone`, e.g. `0 6 1 * *` (monthly). Absent: run
    /// once after each change of the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = CRON_PATTERN))]
    #[x_kube(validation = cron_fields_rule())]
    pub schedule: Option<String>,
    /// IANA time zone of `schedule`, e.g. `Europe/Berlin` (default `UTC`).
    #[serde(default = "default_time_zone")]
    #[schemars(length(min = 1, max = 64), regex(pattern = TIME_ZONE_PATTERN))]
    pub time_zone: String,
    /// Pause scheduling; a run in progress finishes. Default false.
    #[serde(default)]
    pub suspend: bool,
    /// Where the restored guest goes.
    pub target: RestoreTarget,
    /// The isolated network the restored guest is attached to. Every NIC of the backup is
    /// moved onto it before the first boot, so the copy can never reach production.
    pub network: IsolationNetwork,
    /// Shrink the restored guest, e.g. to fit a small test node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<ResourceOverrides>,
    /// Checks on the restored guest; all must pass for the test to pass. Default: `GuestRunning`
    /// (and `GuestAgent` for VMs). TCP/HTTP checks need a route from the operator into the
    /// isolated network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::crd::health::health_checks_schema")]
    pub health_checks: Vec<HealthCheck>,
    /// Seconds from the first start until all checks must pass (60-7200, default 600).
    #[serde(default = "default_boot_timeout")]
    #[schemars(range(min = 60, max = 7200))]
    pub boot_timeout_seconds: i32,
    /// Recovery time objective. The RTO is measured from the restore request to the first
    /// full pass of all checks; exceeding the target fails the test with `RTOExceeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto: Option<RtoTarget>,
    /// Start the guest while it is still being restored (PBS backups only; the RTO then
    /// measures time to service, not to a full copy). Default false.
    #[serde(default)]
    pub live_restore: bool,
    /// Restore bandwidth limit in KiB/s (PVE `bwlimit`, 1-104857600). Absent: the storage's or
    /// datacenter's restore limit. A limit makes the measured RTO slower than an emergency
    /// restore would be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 104857600))]
    pub bandwidth_limit_ki_bps: Option<i32>,
    /// When to remove the restored guest (default: 300 seconds after the checks, also on failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup: Option<CleanupPolicy>,
    /// Past runs kept in `status.history` (1-20, default 5).
    #[serde(default = "default_history_limit")]
    #[schemars(range(min = 1, max = 20))]
    pub history_limit: i32,
}

fn default_boot_timeout() -> i32 {
    600
}

fn default_history_limit() -> i32 {
    5
}

/// What to restore.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = rule(exactly_one_of(&["serviceRef", "vmid", "services"]), "set exactly one of serviceRef, vmid (with type and storage) or services (with count)"),
    validation = rule("has(self.vmid) == has(self.type)", "vmid and type go together"),
    validation = rule("!has(self.vmid) || has(self.storage)", "storage is required with vmid: it says where that guest's backups are"),
    validation = rule("has(self.count) == has(self.services)", "services and count go together (count = how many to pick at random)")
)]
pub struct RestoreSource {
    /// A Service (same namespace); its backups are found through the BackupPolicies that
    /// cover it, or on `storage` if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_ref: Option<LocalObjectReference>,
    /// VMID of a guest whose backups are on `storage` (the guest itself may be long gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = VMID_MIN, max = VMID_MAX))]
    pub vmid: Option<i32>,
    /// `VM` or `LXC` (with `vmid`).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = crate::crd::common::optional_enum)]
    pub type_: Option<GuestType>,
    /// Pick `count` Services at random from these each run, favouring critical ones and those
    /// tested longest ago.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<ServiceSelector>,
    /// How many Services to pick per run (1-20), with `services`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 20))]
    pub count: Option<i32>,
    /// PVE storage holding the backups, e.g. `pbs-homelab`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 64), regex(pattern = STORAGE_PATTERN))]
    pub storage: Option<String>,
}

/// Which backup to restore.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rule(
    "(has(self.policy) && self.policy == 'Volid') == has(self.volid)",
    "volid is required with policy Volid, and only then"
))]
pub struct BackupSelection {
    /// `Latest` (default), `Random` (any retained backup, to test old ones too) or `Volid`.
    #[serde(default)]
    pub policy: SelectionPolicy,
    /// Exact backup volume ID with policy `Volid`, e.g. `pbs-homelab:backup/vm/200/2024-06-01T02:30:00Z`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 255))]
    pub volid: Option<String>,
    /// Only consider backups younger than this many seconds; fail if there is none
    /// (3600-31622400). Absent: any age.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 3600, max = 31622400))]
    pub max_age_seconds: Option<i32>,
    /// Skip PBS backups whose verification failed (default true).
    #[serde(default = "default_true")]
    pub require_verified: bool,
}

/// Backup selection policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SelectionPolicy {
    /// The newest backup.
    #[default]
    Latest,
    /// A random retained backup.
    Random,
    /// The backup named in `volid`.
    Volid,
}

/// Where the restored guest goes. It always gets a new VMID; existing guests are never
/// overwritten.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreTarget {
    /// Node to restore on, e.g. `pve3`. Default: the node the source guest runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63), regex(pattern = NODE_PATTERN))]
    pub node: Option<String>,
    /// Storage for the restored disks, e.g. `local-lvm`. Default: the storages in the backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 64), regex(pattern = STORAGE_PATTERN))]
    pub storage: Option<String>,
    /// VMIDs the restored guests may use, e.g. `9900`-`9999`. Keep it clear of real guests.
    pub vmid_range: VmidRange,
}

/// The isolated network for restored guests.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = rule("(self.mode == 'None') != has(self.bridge)", "bridge is required for modes Bridge and SdnVnet, and must be absent for None"),
    validation = rule("!has(self.vlanTag) || self.mode == 'Bridge'", "vlanTag is only allowed with mode Bridge"),
    validation = rule(
        "!has(self.vlanTag) || (has(self.requireNoUplink) && !self.requireNoUplink)",
        "vlanTag needs requireNoUplink: false: a VLAN bridge has uplinks, and whether the VLAN is isolated depends on the switch, which the operator cannot check"
    ),
    validation = rule(
        format!("!has(self.probeCidr) || {}", cidr_is_aligned("self.probeCidr")),
        "probeCidr must be a network address without host bits, e.g. 10.99.0.0/16"
    )
)]
pub struct IsolationNetwork {
    /// `Bridge` (a Linux bridge without uplink), `SdnVnet` (a VNet of an SDN Simple zone) or
    /// `None` (NICs restored with the link down).
    pub mode: IsolationMode,
    /// The bridge or VNet name, e.g. `vmbr99`. Never the bridge of the original guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 15), regex(pattern = BRIDGE_PATTERN))]
    pub bridge: Option<String>,
    /// VLAN tag on the bridge (1-4094). Isolation then depends on the switch, which the
    /// operator cannot check: also set `requireNoUplink: false` to accept that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4094))]
    pub vlan_tag: Option<i32>,
    /// Refuse to restore if the bridge has physical ports (default true).
    #[serde(default = "default_true")]
    pub require_no_uplink: bool,
    /// IPv4 network through which the operator reaches restored guests, e.g. a masquerade range
    /// routed into the isolated segment (`10.99.0.0/16`). `TCP` and `HTTP` checks need it and
    /// may only target addresses inside it: the copy keeps its production address, so a probe
    /// of that address would reach production and pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 9, max = 18), regex(pattern = CIDR_PATTERN))]
    pub probe_cidr: Option<String>,
}

/// How restored guests are isolated.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum IsolationMode {
    /// A Linux bridge without physical ports.
    Bridge,
    /// A VNet of an SDN Simple zone.
    SdnVnet,
    /// No network: every NIC restored with `link_down=1`.
    None,
}

/// Resources of the restored guest.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceOverrides {
    /// Memory in MiB (64-1048576).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 64, max = 1048576))]
    pub memory_mi_b: Option<i32>,
    /// CPU cores (1-512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 512))]
    pub cores: Option<i32>,
}

/// Recovery time objective.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RtoTarget {
    /// Target in seconds (1-604800), e.g. 900 for 15 minutes.
    #[schemars(range(min = 1, max = 604800))]
    pub target_seconds: i32,
}

/// Removal of restored guests.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CleanupPolicy {
    /// Seconds to keep the guest after the checks, for a look (0-86400, default 300).
    #[serde(default = "default_cleanup_after")]
    #[schemars(range(min = 0, max = 86400))]
    pub after_seconds: i32,
    /// After a failed test: `Delete` (default) or `Keep` (stopped, for debugging, until the
    /// next run or until this RestoreTest is deleted). A restore task that failed leaves only an
    /// empty config, nothing to look at: it is removed either way.
    #[serde(default)]
    pub on_failure: FailedGuestPolicy,
}

fn default_cleanup_after() -> i32 {
    300
}

impl Default for CleanupPolicy {
    /// What an absent `cleanup` means: remove the copy 300 s after the checks, also on failure.
    fn default() -> Self {
        Self {
            after_seconds: default_cleanup_after(),
            on_failure: FailedGuestPolicy::Delete,
        }
    }
}

impl Default for BackupSelection {
    /// What an absent `selection` means: the latest verified backup, of any age.
    fn default() -> Self {
        Self {
            policy: SelectionPolicy::Latest,
            volid: None,
            max_age_seconds: None,
            require_verified: true,
        }
    }
}

/// What happens to the guest of a failed test.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum FailedGuestPolicy {
    /// Delete it like a passed test's guest.
    #[default]
    Delete,
    /// Keep it, stopped.
    Keep,
}

impl Validate for RestoreTestSpec {
    fn validate(&self) -> Result<(), InvalidSpec> {
        let mut errors = Errors::new();
        let schedule = self.schedule.as_deref().unwrap_or("@daily");
        validate_schedule("spec.", schedule, &self.time_zone, &mut errors);
        let s = &self.source;
        let set = [s.service_ref.is_some(), s.vmid.is_some(), s.services.is_some()];
        if set.iter().filter(|x| **x).count() != 1 {
            errors.add(
                "spec.source",
                "set exactly one of serviceRef, vmid (with type and storage) or services (with count)",
            );
        }
        if s.vmid.is_some() != s.type_.is_some() {
            errors.add("spec.source.type", "vmid and type go together");
        }
        if s.vmid.is_some() && s.storage.is_none() {
            errors.add(
                "spec.source.storage",
                "required with vmid: it says where that guest's backups are",
            );
        }
        if s.services.is_some() != s.count.is_some() {
            errors.add("spec.source.count", "services and count go together");
        }
        if let Some(sel) = &self.selection {
            if (sel.policy == SelectionPolicy::Volid) != sel.volid.is_some() {
                errors.add(
                    "spec.selection.volid",
                    "required with policy Volid, and only then",
                );
            }
            if sel.policy == SelectionPolicy::Volid && s.services.is_some() {
                errors.add(
                    "spec.selection.volid",
                    "names one backup; use a single source (serviceRef or vmid)",
                );
            }
        }
        let net = &self.network;
        if (net.mode == IsolationMode::None) == net.bridge.is_some() {
            errors.add(
                "spec.network.bridge",
                "required for modes Bridge and SdnVnet, and must be absent for None",
            );
        }
        if net.vlan_tag.is_some() && net.mode != IsolationMode::Bridge {
            errors.add("spec.network.vlanTag", "only allowed with mode Bridge");
        }
        if net.vlan_tag.is_some() && net.require_no_uplink {
            errors.add(
                "spec.network.vlanTag",
                "needs requireNoUplink: false (a VLAN bridge has uplinks; its isolation depends on the switch)",
            );
        }
        if let Some(cidr) = net.probe_cidr.as_deref() {
            match parse_cidr(cidr) {
                Some((base, prefix)) if prefix == 32 || base & (u32::MAX >> prefix) == 0 => {}
                _ => errors.add(
                    "spec.network.probeCidr",
                    "must be a network address without host bits, e.g. 10.99.0.0/16",
                ),
            }
        }
        validate_probes(&self.health_checks, net.probe_cidr.as_deref(), &mut errors);
        if self.target.vmid_range.is_empty() {
            errors.add("spec.target.vmidRange", "start must not be greater than end");
        }
        validate_health_checks("spec.healthChecks", &self.health_checks, &mut errors);
        if s.type_ == Some(GuestType::Lxc) {
            reject_agent_checks_for_lxc("spec.healthChecks", &self.health_checks, &mut errors);
        }
        errors.finish()
    }
}

/// `(network, prefix)` of an IPv4 CIDR.
fn parse_cidr(cidr: &str) -> Option<(u32, u32)> {
    let (addr, prefix) = cidr.split_once('/')?;
    let addr: std::net::Ipv4Addr = addr.parse().ok()?;
    let prefix: u32 = prefix.parse().ok().filter(|p| *p <= 32)?;
    Some((u32::from(addr), prefix))
}

/// The host a TCP or HTTP check probes.
fn probe_host(check: &HealthCheck) -> Option<&str> {
    if let Some(tcp) = &check.tcp {
        return Some(tcp.host.as_str());
    }
    let url = check.http.as_ref()?.url.as_str();
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    Some(host.split(':').next().unwrap_or(host))
}

/// TCP/HTTP checks need `probeCidr`; a literal IPv4 target must lie inside it (a name is
/// resolved and checked by the controller).
fn validate_probes(checks: &[HealthCheck], probe_cidr: Option<&str>, errors: &mut Errors) {
    let network = probe_cidr.map(|c| (c, parse_cidr(c)));
    for (i, check) in checks.iter().enumerate() {
        let Some(host) = probe_host(check) else { continue };
        let field = format!("spec.healthChecks[{i}]");
        match network {
            None => errors.add(
                &field,
                "TCP and HTTP checks need network.probeCidr (the path into the isolated network)",
            ),
            Some((_, None)) => {}
            Some((cidr, Some((base, prefix)))) => {
                let Ok(ip) = host.parse::<std::net::Ipv4Addr>() else {
                    continue;
                };
                let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
                if u32::from(ip) & mask != base & mask {
                    errors.add(
                        &field,
                        format!("{host} is outside network.probeCidr {cidr}: it would probe production, not the restored copy"),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
