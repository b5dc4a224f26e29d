//! The RestoreTest's pure decisions, unit-tested on fixtures: which Services a `source.services`
//! run picks, which backup a restore uses, how every NIC of a backed-up config is moved onto the
//! isolation network, which passthrough devices go before the first start, whether a bridge or
//! VNet is isolated, the lowest free VMID, the RTO breakdown and the run's result.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use jiff::Timestamp;

use super::reasons;
use crate::crd::common::{GuestType, VmidRange};
use crate::crd::health::{HealthCheck, HealthCheckType};
use crate::crd::restore_test::{
    IsolationMode, IsolationNetwork, RestoreResult, RestoreResultDetail, RestoreRun, RestoreRunSummary,
    SelectionPolicy,
};
use crate::crd::service::Criticality;
use crate::proxmox::api::{NetworkInterface, SdnVnet, SdnZone};

/// The tag every restored copy carries (with the RestoreTest's UID in its description).
pub const TAG: &str = "autopilot";

/// The description marker proving a guest was restored by the RestoreTest with `uid`.
pub fn marker(uid: &str) -> String {
    format!("autopilot restore-test={uid}")
}

/// Whether a guest's tags and description prove it was restored by the RestoreTest `uid`.
pub fn is_ours(tags: &[String], description: Option<&str>, uid: &str) -> bool {
    !uid.is_empty()
        && tags.iter().any(|t| t == TAG)
        && description.is_some_and(|d| d.lines().any(|l| l.trim() == marker(uid)))
}

/// Whether the verification of a backup is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verified {
    /// Verified (PBS state `ok`, a BackupPolicy's check, a chunk-store read-back).
    Yes,
    /// Verification failed.
    No,
    /// Never verified: the archive check (size + readable config) runs before it is used.
    Unknown,
}

/// One backup a restore could use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// PVE volid, or `chunkstore/<snapshot id>`.
    pub id: String,
    /// When it was taken.
    pub time: Timestamp,
    /// Its size in bytes (0: unknown).
    pub size: u64,
    /// Whether it passed verification.
    pub verified: Verified,
    /// Whether it is on a Proxmox Backup Server (live restore needs that).
    pub pbs: bool,
}

/// The selection settings of a run.
#[derive(Clone, Copy, Debug)]
pub struct Selection<'a> {
    /// `Latest`, `Random` or `Volid`.
    pub policy: SelectionPolicy,
    /// The volid of policy `Volid`.
    pub volid: Option<&'a str>,
    /// Only backups younger than this.
    pub max_age_seconds: Option<i64>,
    /// Only verified backups (unverified file archives are checked first).
    pub require_verified: bool,
}

/// The candidates to try, in order: the first that passes its archive check (when its
/// verification is unknown) is restored. Errors are `(reason, message)`.
pub fn choose_backups<'c>(
    candidates: &'c [Candidate],
    selection: Selection<'_>,
    seed: &str,
    now: Timestamp,
) -> Result<Vec<&'c Candidate>, (&'static str, String)> {
    let mut list: Vec<&Candidate> = candidates.iter().collect();
    if list.is_empty() {
        return Err((reasons::NO_BACKUP, "no backup of this guest was found".into()));
    }
    if selection.policy == SelectionPolicy::Volid {
        let volid = selection.volid.unwrap_or_default();
        list.retain(|c| c.id == volid);
        if list.is_empty() {
            return Err((
                reasons::NO_BACKUP,
                format!("selection.volid {volid} is not among this guest's backups"),
            ));
        }
    }
    if let Some(max) = selection.max_age_seconds {
        let oldest = now.as_second().saturating_sub(max);
        let newest = list.iter().map(|c| c.time).max();
        list.retain(|c| c.time.as_second() >= oldest);
        if list.is_empty() {
            let newest = newest.map_or_else(|| "none".to_owned(), |t| t.to_string());
            return Err((
                reasons::NO_RECENT_BACKUP,
                format!(
                    "no backup is younger than selection.maxAgeSeconds ({max} s); the newest is from {newest}"
                ),
            ));
        }
    }
    if selection.require_verified {
        let before = list.len();
        list.retain(|c| c.verified != Verified::No);
        if list.is_empty() {
            return Err((
                reasons::NO_VERIFIED_BACKUP,
                format!(
                    "all {before} candidate backups failed verification (set selection.requireVerified: false to restore one anyway)"
                ),
            ));
        }
    }
    match selection.policy {
        SelectionPolicy::Latest | SelectionPolicy::Volid => {
            list.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| a.id.cmp(&b.id)));
        }
        SelectionPolicy::Random => list.sort_by_key(|c| hash64(seed, &c.id)),
    }
    Ok(list)
}

fn hash64(seed: &str, item: &str) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(seed.as_bytes());
    h.update(&[0]);
    h.update(item.as_bytes());
    let bytes = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// A Service `source.services` may pick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pickable {
    /// Its name.
    pub name: String,
    /// Its criticality.
    pub criticality: Criticality,
    /// When a run of this RestoreTest last restored it.
    pub last_tested: Option<Timestamp>,
}

fn weight(p: &Pickable, now: Timestamp) -> f64 {
    let criticality = match p.criticality {
        Criticality::Low => 1.0,
        Criticality::Normal => 2.0,
        Criticality::High => 4.0,
        Criticality::Critical => 8.0,
    };
    // Days since the last test (never tested counts as three months), at least one.
    let days = p.last_tested.map_or(90.0, |t| {
        ((now.as_second() - t.as_second()) as f64 / 86_400.0).clamp(0.0, 90.0)
    });
    criticality * (1.0 + days)
}

/// Picks `count` Services at random, weighted by criticality and by the time since each was
/// last tested (weighted sampling without replacement, Efraimidis-Spirakis); deterministic for
/// a given `seed` (the run id). Returned in name order.
pub fn pick_services(candidates: &[Pickable], count: usize, seed: &str, now: Timestamp) -> Vec<String> {
    let mut keyed: Vec<(f64, &str)> = candidates
        .iter()
        .map(|p| {
            let u = (hash64(seed, &p.name) >> 11) as f64 / (1u64 << 53) as f64;
            let u = u.clamp(1e-12, 1.0 - 1e-12);
            (u.ln() / weight(p, now), p.name.as_str())
        })
        .collect();
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    let mut names: Vec<String> = keyed.into_iter().take(count).map(|(_, n)| n.to_owned()).collect();
    names.sort();
    names
}

/// When each Service was last restored by a run in `runs` (newest start time).
pub fn last_tested<'a>(runs: impl IntoIterator<Item = (&'a str, Timestamp)>) -> BTreeMap<String, Timestamp> {
    let mut out: BTreeMap<String, Timestamp> = BTreeMap::new();
    for (services, start) in runs {
        for name in services.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let entry = out.entry(name.to_owned()).or_insert(start);
            if *entry < start {
                *entry = start;
            }
        }
    }
    out
}

/// Parses a backed-up config as `vzdump/extractconfig` returns it: `key: value` lines, `#` lines
/// are the description, snapshot sections (`[name]`) are not part of the current config.
pub fn parse_config(text: &str) -> BTreeMap<String, String> {
    let mut config = BTreeMap::new();
    let mut description = Vec::new();
    for line in text.lines() {
        if line.starts_with('[') {
            break;
        }
        if let Some(d) = line.strip_prefix('#') {
            description.push(d.to_owned());
        } else if let Some((k, v)) = line.split_once(':') {
            config.insert(k.trim().to_owned(), v.trim().to_owned());
        }
    }
    if !description.is_empty() {
        config.insert("description".into(), description.join("\n"));
    }
    config
}

fn is_numbered(key: &str, prefix: &str) -> bool {
    key.strip_prefix(prefix)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The config's NIC keys (`net0`, `net1`...).
pub fn nic_keys(config: &BTreeMap<String, String>) -> Vec<&str> {
    config
        .keys()
        .map(String::as_str)
        .filter(|k| is_numbered(k, "net"))
        .collect()
}

const QEMU_NIC_MODELS: &[&str] = &[
    "e1000",
    "e1000-82540em",
    "e1000-82544gc",
    "e1000-82545em",
    "e1000e",
    "i82551",
    "i82557b",
    "i82559er",
    "ne2k_isa",
    "ne2k_pci",
    "pcnet",
    "rtl8139",
    "virtio",
    "vmxnet3",
];

/// NIC options carried over to the isolated copy (others, like `trunks` or the old `tag` and
/// `bridge`, are replaced or dropped).
const KEPT_NIC_OPTIONS: &[&str] = &[
    "firewall", "mtu", "queues", "rate", "name", "hwaddr", "ip", "gw", "ip6", "gw6", "type",
];

/// The bridge (`bridge=`) of a NIC value.
pub fn nic_bridge(value: &str) -> Option<&str> {
    value.split(',').find_map(|p| p.strip_prefix("bridge="))
}

/// One NIC moved onto the isolation network, or why it cannot be.
pub fn isolate_nic(
    kind: GuestType,
    key: &str,
    value: &str,
    net: &IsolationNetwork,
) -> Result<String, String> {
    let mut parts: Vec<(String, String)> = Vec::new();
    let mut model: Option<(String, Option<String>)> = None;
    for (i, part) in value
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .enumerate()
    {
        let (k, v) = match part.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim().to_owned())),
            None => (part, None),
        };
        if kind == GuestType::Vm && i == 0 && QEMU_NIC_MODELS.contains(&k) {
            model = Some((k.to_owned(), v));
            continue;
        }
        if kind == GuestType::Vm && k == "model" {
            model = Some((v.unwrap_or_default(), None));
            continue;
        }
        if kind == GuestType::Vm && k == "macaddr" {
            if let Some((_, mac)) = &mut model {
                *mac = v;
            } else {
                parts.push(("macaddr".into(), v.unwrap_or_default()));
            }
            continue;
        }
        let Some(v) = v else {
            return Err(format!("{key}: cannot read {part:?} in {value:?}"));
        };
        parts.push((k.to_owned(), v));
    }
    let mut out: Vec<String> = Vec::new();
    match kind {
        GuestType::Vm => {
            let Some((model, mac)) = model.filter(|(m, _)| QEMU_NIC_MODELS.contains(&m.as_str())) else {
                return Err(format!(
                    "{key}: no known NIC model in {value:?}, so it cannot be rewritten onto the isolation network"
                ));
            };
            let mac = mac.or_else(|| parts.iter().find(|(k, _)| k == "macaddr").map(|(_, v)| v.clone()));
            out.push(match mac {
                Some(mac) => format!("{model}={mac}"),
                None => model,
            });
        }
        GuestType::Lxc => {
            if !parts.iter().any(|(k, _)| k == "name") {
                return Err(format!(
                    "{key}: no interface name in {value:?}, so it cannot be rewritten onto the isolation network"
                ));
            }
        }
    }
    let original_bridge = parts.iter().find(|(k, _)| k == "bridge").map(|(_, v)| v.clone());
    let original_tag = parts.iter().find(|(k, _)| k == "tag").map(|(_, v)| v.clone());
    for (k, v) in &parts {
        if KEPT_NIC_OPTIONS.contains(&k.as_str()) {
            out.push(format!("{k}={v}"));
        }
    }
    match (net.mode, net.bridge.as_deref()) {
        (IsolationMode::Bridge | IsolationMode::SdnVnet, Some(bridge)) => {
            out.push(format!("bridge={bridge}"));
            if let Some(tag) = net.vlan_tag.filter(|_| net.mode == IsolationMode::Bridge) {
                out.push(format!("tag={tag}"));
            }
        }
        (IsolationMode::None, _) => {
            // The link stays down, so the original bridge carries nothing; a VM NIC without a
            // bridge would be user-mode networking, a path out through the host.
            let Some(bridge) = original_bridge else {
                return Err(format!(
                    "{key}: has no bridge; with network.mode None it would fall back to user-mode networking"
                ));
            };
            out.push(format!("bridge={bridge}"));
            if let Some(tag) = original_tag {
                out.push(format!("tag={tag}"));
            }
        }
        _ => return Err("network.bridge is required for modes Bridge and SdnVnet".into()),
    }
    if net.mode == IsolationMode::None {
        out.push("link_down=1".into());
    }
    Ok(out.join(","))
}

/// Every NIC of a backed-up config moved onto the isolation network, or the first that cannot
/// be (then nothing is restored).
pub fn isolate_nics(
    kind: GuestType,
    config: &BTreeMap<String, String>,
    net: &IsolationNetwork,
) -> Result<BTreeMap<String, String>, String> {
    nic_keys(config)
        .into_iter()
        .map(|key| Ok((key.to_owned(), isolate_nic(kind, key, &config[key], net)?)))
        .collect()
}

/// Why the isolation bridge is no isolation from the original guest: one of its NICs is on it.
pub fn shares_original_bridge(config: &BTreeMap<String, String>, net: &IsolationNetwork) -> Option<String> {
    if net.mode == IsolationMode::None {
        return None;
    }
    let isolated = net.bridge.as_deref()?;
    nic_keys(config).into_iter().find_map(|key| {
        (nic_bridge(&config[key]) == Some(isolated)).then(|| {
            format!(
                "{key} of the original guest is on {isolated}, the isolation network itself: the copy would share its network"
            )
        })
    })
}

/// Whether a NIC of a restored copy is on the isolation network (the bridge or VNet, with the
/// VLAN tag if one is set; with mode None, its link down).
pub fn nic_isolated(value: &str, net: &IsolationNetwork) -> bool {
    let option = |name: &str| {
        value
            .split(',')
            .find_map(|p| p.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
    };
    match net.mode {
        IsolationMode::None => option("link_down") == Some("1"),
        IsolationMode::Bridge | IsolationMode::SdnVnet => {
            option("bridge") == net.bridge.as_deref()
                && option("tag")
                    == net
                        .vlan_tag
                        .filter(|_| net.mode == IsolationMode::Bridge)
                        .map(|t| t.to_string())
                        .as_deref()
        }
    }
}

/// Passthrough devices to delete before the first start (`hostpciN`, `usbN`; `devN` for LXC):
/// the test node may not have them, and the original guest may still hold them.
pub fn passthrough_keys(kind: GuestType, config: &BTreeMap<String, String>) -> Vec<String> {
    let prefixes: &[&str] = match kind {
        GuestType::Vm => &["hostpci", "usb"],
        GuestType::Lxc => &["dev"],
    };
    config
        .keys()
        .filter(|k| prefixes.iter().any(|p| is_numbered(k, p)))
        .cloned()
        .collect()
}

/// A host-side hook to delete before the first start: `hookscript` runs on the PVE node at
/// the copy's start and stop, and could undo the isolation (re-bridge the copy, announce its
/// production address) or act on production in the copy's name.
pub fn hook_keys(config: &BTreeMap<String, String>) -> Vec<String> {
    config.keys().filter(|k| *k == "hookscript").cloned().collect()
}

/// Why raw QEMU `args` would open a network path around the isolation (`-netdev`, `-nic`,
/// `-net`), if they do: a restored VM with such args is never started.
pub fn args_network(kind: GuestType, config: &BTreeMap<String, String>) -> Option<String> {
    if kind != GuestType::Vm {
        return None;
    }
    let args = config.get("args")?;
    let found = args.split_whitespace().find(|a| {
        matches!(*a, "-netdev" | "-nic" | "-net") || a.starts_with("-netdev=") || a.starts_with("-nic=")
    })?;
    Some(format!(
        "the backed-up config passes {found} to QEMU in `args`, a network path the isolation cannot move; remove it from the guest's args"
    ))
}

/// Whether the config enables the QEMU guest agent (`agent: 1` or `agent: enabled=1,...`).
pub fn agent_enabled(config: &BTreeMap<String, String>) -> bool {
    config.get("agent").is_some_and(|v| {
        let first = v.split(',').next().unwrap_or_default();
        let flag = first.strip_prefix("enabled=").unwrap_or(first);
        matches!(flag, "1" | "true" | "yes" | "on")
    })
}

/// The checks a restore runs: `spec.healthChecks`, or by default `GuestRunning`, plus
/// `GuestAgent` for a VM whose backed-up config enables the agent.
pub fn effective_checks(spec: &[HealthCheck], kind: GuestType, agent: bool) -> Vec<HealthCheck> {
    if !spec.is_empty() {
        return spec.to_vec();
    }
    let check = |name: &str, type_| HealthCheck {
        name: name.to_owned(),
        type_,
        http: None,
        tcp: None,
        exec: None,
        interval_seconds: None,
        timeout_seconds: None,
        failure_threshold: None,
    };
    let mut checks = vec![check("running", HealthCheckType::GuestRunning)];
    if kind == GuestType::Vm && agent {
        checks.push(check("agent", HealthCheckType::GuestAgent));
    }
    checks
}

/// Whether the guest counts as ready for these checks: running, and the agent answering when a
/// check needs it.
pub fn needs_agent(checks: &[HealthCheck]) -> bool {
    checks.iter().any(|c| c.type_.needs_guest_agent())
}

/// Bytes of the disks a backed-up config describes (`size=` of every disk, not CD-ROMs).
pub fn disk_bytes(kind: GuestType, config: &BTreeMap<String, String>) -> u64 {
    config
        .iter()
        .filter(|(k, v)| is_disk_key(kind, k) && !v.contains("media=cdrom"))
        .filter_map(|(_, v)| {
            v.split(',')
                .find_map(|p| p.strip_prefix("size="))
                .and_then(parse_size)
        })
        .sum()
}

/// The storages the backed-up disks were on (the restore's default targets).
pub fn disk_storages(kind: GuestType, config: &BTreeMap<String, String>) -> BTreeSet<String> {
    config
        .iter()
        .filter(|(k, v)| is_disk_key(kind, k) && !v.contains("media=cdrom"))
        .filter_map(|(_, v)| {
            v.split(',')
                .next()
                .and_then(|vol| vol.split_once(':'))
                .map(|(s, _)| s.to_owned())
        })
        .collect()
}

fn is_disk_key(kind: GuestType, key: &str) -> bool {
    match kind {
        GuestType::Vm => ["ide", "sata", "scsi", "virtio", "efidisk", "tpmstate"]
            .iter()
            .any(|p| is_numbered(key, p)),
        GuestType::Lxc => key == "rootfs" || is_numbered(key, "mp"),
    }
}

/// A PVE disk size (`32G`, `512M`, `4T`, `1024K`, bytes without a unit).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = digits.parse().ok()?;
    let mult = match unit {
        "" => 1.0,
        "K" | "k" => 1024.0,
        "M" | "m" => 1024.0 * 1024.0,
        "G" | "g" => 1024.0 * 1024.0 * 1024.0,
        "T" | "t" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((n * mult) as u64)
}

/// Whether `bridge` on the target node is an isolated Linux bridge: present, a bridge, and
/// (with `require_no_uplink`) without physical ports.
pub fn check_bridge(
    ifaces: &[NetworkInterface],
    bridge: &str,
    node: &str,
    require_no_uplink: bool,
) -> Result<(), String> {
    let Some(iface) = ifaces.iter().find(|i| i.iface == bridge) else {
        return Err(format!(
            "bridge {bridge} does not exist on node {node}: create a bridge without bridge_ports there (or set network.mode None)"
        ));
    };
    if iface.kind != "bridge" && iface.kind != "OVSBridge" {
        return Err(format!(
            "{bridge} on node {node} is a {}, not a bridge",
            iface.kind
        ));
    }
    let ports: Vec<&String> = iface.bridge_ports.iter().chain(&iface.ovs_ports).collect();
    if require_no_uplink && !ports.is_empty() {
        let ports: Vec<&str> = ports.iter().map(|p| p.as_str()).collect();
        return Err(format!(
            "bridge {bridge} on node {node} has ports ({}): a restored copy on it could reach production; use a bridge without ports, or set network.requireNoUplink: false if you isolate it otherwise",
            ports.join(", ")
        ));
    }
    Ok(())
}

/// Whether `vnet` is a VNet of an SDN zone of type `simple` (no uplink) when required.
pub fn check_vnet(
    vnets: &[SdnVnet],
    zones: &[SdnZone],
    vnet: &str,
    require_no_uplink: bool,
) -> Result<(), String> {
    let Some(v) = vnets.iter().find(|v| v.vnet == vnet) else {
        return Err(format!("SDN VNet {vnet} does not exist (or is not applied yet)"));
    };
    if !require_no_uplink {
        return Ok(());
    }
    let zone_name = v.zone.as_deref().unwrap_or_default();
    let Some(zone) = zones.iter().find(|z| z.zone == zone_name) else {
        return Err(format!(
            "the zone {zone_name:?} of SDN VNet {vnet} does not exist"
        ));
    };
    if zone.kind != "simple" {
        return Err(format!(
            "SDN VNet {vnet} is in zone {zone_name} of type {}, which has an uplink; only a zone of type simple is isolated (or set network.requireNoUplink: false)",
            zone.kind
        ));
    }
    Ok(())
}

/// The lowest VMID of `range` not in `taken`.
pub fn lowest_free(range: &VmidRange, taken: &BTreeSet<u32>) -> Option<u32> {
    let start = u32::try_from(range.start).ok()?;
    let end = u32::try_from(range.end).ok()?;
    (start..=end).find(|v| !taken.contains(v))
}

/// Whether `ip` lies in the IPv4 network `cidr` (`10.99.0.0/16`).
pub fn in_cidr(ip: IpAddr, cidr: &str) -> bool {
    let IpAddr::V4(ip) = ip else {
        return false;
    };
    let Some((base, prefix)) = cidr.split_once('/') else {
        return false;
    };
    let (Ok(base), Ok(prefix)) = (base.parse::<std::net::Ipv4Addr>(), prefix.parse::<u32>()) else {
        return false;
    };
    if prefix > 32 {
        return false;
    }
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    u32::from(ip) & mask == u32::from(base) & mask
}

fn secs(from: Option<Timestamp>, to: Option<Timestamp>) -> Option<i64> {
    Some((to?.as_second() - from?.as_second()).max(0))
}

/// Fills in a restore's breakdown from its timestamps: restore (request to restored), boot
/// (restored to guest ready), application (guest ready to all checks passing) and their sum.
pub fn breakdown(d: &mut RestoreResultDetail) {
    d.restore_seconds = secs(d.restore_start_time, d.restored_time);
    let ready_from = d.restored_time.or(d.booted_time);
    d.boot_seconds = secs(ready_from, d.guest_ready_time);
    d.application_seconds = secs(d.guest_ready_time, d.healthy_time);
    d.rto_seconds = secs(d.restore_start_time, d.healthy_time);
}

/// The result of a restore whose checks all passed, against the target.
pub fn judge(rto_seconds: Option<i64>, target: Option<i64>) -> RestoreResult {
    match (rto_seconds, target) {
        (Some(rto), Some(target)) if rto > target => RestoreResult::RtoExceeded,
        _ => RestoreResult::Passed,
    }
}

/// A run's result: the worst of its restores (Failed over RTOExceeded over Passed); its RTO the
/// slowest restore's.
pub fn summarize(run: &mut RestoreRun) {
    let results: Vec<RestoreResult> = run
        .restores
        .iter()
        .map(|r| r.result.unwrap_or(RestoreResult::Failed))
        .collect();
    run.result = Some(
        if results.is_empty() || results.contains(&RestoreResult::Failed) {
            RestoreResult::Failed
        } else if results.contains(&RestoreResult::RtoExceeded) {
            RestoreResult::RtoExceeded
        } else {
            RestoreResult::Passed
        },
    );
    run.rto_seconds = run.restores.iter().filter_map(|r| r.rto_seconds).max();
}

/// Puts a finished run first in `history`, keeping at most `limit`.
pub fn push_history(history: &mut Vec<RestoreRunSummary>, run: &RestoreRun, limit: usize) {
    history.retain(|h| h.run_id != run.run_id);
    history.insert(
        0,
        RestoreRunSummary {
            run_id: run.run_id.clone(),
            start_time: run.start_time,
            service: run.service.clone(),
            result: run.result.unwrap_or(RestoreResult::Failed),
            rto_seconds: run.rto_seconds,
        },
    );
    history.truncate(limit.max(1));
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
