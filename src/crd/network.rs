//! The per-node network plan of a ProxmoxCluster: subnets, gateways, VM and LXC address
//! ranges, bridges and VLANs, the MAC prefix and the guest naming pattern. Replicas and
//! restored guests get their addresses from here.
//!
//! The CRD checks the IPv4 arithmetic with CEL (see [`super::cel`]); [`NetworkPlan::validate_into`]
//! repeats every check in Rust as the backstop.

use std::net::Ipv4Addr;

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::cel::{cidr_is_aligned, ipv4_in_cidr, ipv4_int, ipv4_ranges_disjoint, rule};
use super::common::{BRIDGE_PATTERN, IPV4_PATTERN, NODE_PATTERN};
use super::naming::{
    DEFAULT_NAMING_PATTERN, NAMING_PATTERN_PATTERN, NAMING_PATTERN_UNIQUE_MESSAGE,
    NAMING_PATTERN_UNIQUE_RULE, check_pattern,
};
use super::validation::{Errors, Ipv4Net, parse_ipv4, ranges_overlap};

/// Default MAC prefix: locally administered, unicast.
pub const DEFAULT_MAC_PREFIX: &str = "02:00:00";
/// Default bridge of a node network.
pub const DEFAULT_BRIDGE: &str = "vmbr0";
/// Shape of a unicast MAC prefix of one to three octets (as Proxmox's `mac-prefix` format).
pub const MAC_PREFIX_PATTERN: &str = r"^[0-9a-fA-F][02468aceACE](:[0-9a-fA-F]{2}){0,2}$";
/// A node subnet: IPv4 CIDR with a prefix of 8 to 30 bits.
pub const NODE_SUBNET_PATTERN: &str = r"^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])/([89]|[12][0-9]|30)$";

/// Addressing and naming for guests the operator creates or restores.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPlan {
    /// First octets of the MAC addresses the operator assigns (1-3 octets, unicast), default
    /// `02:00:00` (locally administered). The remaining octets are derived per guest and
    /// checked against every MAC in the cluster.
    #[serde(default = "default_mac_prefix")]
    #[schemars(length(max = 8), regex(pattern = MAC_PREFIX_PATTERN))]
    pub mac_prefix: String,
    /// Name pattern for guests the operator creates (replicas), default
    /// `pve-{node}-{type}-{seq:02d}`. Placeholders: `{node}`, `{type}` (`vm`/`lxc`),
    /// `{source}`, `{vmid}`, `{seq}` and `{seq:0Nd}`; must contain `{seq...}` or `{vmid}`.
    #[serde(default = "default_naming_pattern")]
    #[schemars(length(min = 1, max = 63), regex(pattern = NAMING_PATTERN_PATTERN))]
    #[x_kube(validation = rule(NAMING_PATTERN_UNIQUE_RULE, NAMING_PATTERN_UNIQUE_MESSAGE))]
    pub naming_pattern: String,
    /// One entry per node: its subnet, gateway, bridge and address ranges. Ranges must not
    /// overlap, within a node or across nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(
        merge_strategy = kube::core::ListMerge::Map(vec!["node".into()]),
        validation = rule(nodes_disjoint_rule(), "address ranges of different nodes overlap; give each node its own vmRange and lxcRange")
    )]
    pub nodes: Vec<NodeNetwork>,
}

impl Default for NetworkPlan {
    fn default() -> Self {
        Self {
            mac_prefix: default_mac_prefix(),
            naming_pattern: default_naming_pattern(),
            nodes: Vec::new(),
        }
    }
}

fn default_mac_prefix() -> String {
    DEFAULT_MAC_PREFIX.to_string()
}

fn default_naming_pattern() -> String {
    DEFAULT_NAMING_PATTERN.to_string()
}

/// CEL over the `nodes` list: no range of one node overlaps a range of another.
fn nodes_disjoint_rule() -> String {
    let pair = |x: &str, y: &str| {
        format!(
            "(!has(a.{x}) || !has(b.{y}) || {})",
            ipv4_ranges_disjoint(&format!("a.{x}"), &format!("b.{y}"))
        )
    };
    format!(
        "self.all(a, self.all(b, a.node == b.node || ({} && {} && {} && {})))",
        pair("vmRange", "vmRange"),
        pair("vmRange", "lxcRange"),
        pair("lxcRange", "vmRange"),
        pair("lxcRange", "lxcRange")
    )
}

/// CEL: the range field `r` of `self` (if set) holds host addresses of `self.subnet`
/// (inside it, and neither its network nor its broadcast address).
fn range_in_subnet_rule(r: &str) -> String {
    let host = |ip: String| {
        let offset = format!("({} - {})", ipv4_int(&ip), ipv4_int("self.subnet.split('/')[0]"));
        format!("({offset} > 0 && {offset} < {})", subnet_size_minus_one())
    };
    format!(
        "!has(self.{r}) || ({} && {})",
        host(format!("self.{r}.start")),
        host(format!("self.{r}.end"))
    )
}

fn subnet_size_minus_one() -> String {
    let sizes: Vec<String> = (0..=32u32)
        .map(|p| ((1u64 << (32 - p)) - 1).to_string())
        .collect();
    format!("[{}][int(self.subnet.split('/')[1])]", sizes.join(", "))
}

/// CEL: the gateway lies in neither range.
fn gateway_outside_ranges_rule() -> String {
    let gw = ipv4_int("self.gateway");
    let outside = |r: &str| {
        format!(
            "(!has(self.{r}) || {gw} < {} || {gw} > {})",
            ipv4_int(&format!("self.{r}.start")),
            ipv4_int(&format!("self.{r}.end"))
        )
    };
    format!("{} && {}", outside("vmRange"), outside("lxcRange"))
}

/// The network of one Proxmox node, e.g. subnet `192.168.1.0/24`, gateway `192.168.1.1`,
/// VMs from `.100` to `.199` and containers from `.200` to `.254`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = rule(cidr_is_aligned("self.subnet"), "subnet has host bits set; use the network address, e.g. 192.168.1.0/24"),
    validation = rule(ipv4_in_cidr("self.gateway", "self.subnet"), "gateway must lie inside subnet"),
    validation = rule(range_in_subnet_rule("vmRange"), "vmRange must lie inside subnet, excluding its network and broadcast addresses"),
    validation = rule(range_in_subnet_rule("lxcRange"), "lxcRange must lie inside subnet, excluding its network and broadcast addresses"),
    validation = rule(
        format!("!has(self.vmRange) || !has(self.lxcRange) || {}", ipv4_ranges_disjoint("self.vmRange", "self.lxcRange")),
        "vmRange and lxcRange overlap; give VMs and containers separate ranges"
    ),
    validation = rule(gateway_outside_ranges_rule(), "gateway lies inside vmRange or lxcRange; move the range or the gateway")
)]
pub struct NodeNetwork {
    /// Proxmox node name, e.g. `pve1`.
    #[schemars(length(min = 1, max = 63), regex(pattern = NODE_PATTERN))]
    pub node: String,
    /// The node's guest subnet in CIDR form (prefix 8-30), e.g. `192.168.1.0/24`.
    #[schemars(length(max = 18), regex(pattern = NODE_SUBNET_PATTERN))]
    pub subnet: String,
    /// Default gateway for guests on this node, e.g. `192.168.1.1`.
    #[schemars(length(max = 15), regex(pattern = IPV4_PATTERN))]
    pub gateway: String,
    /// Linux bridge guests attach to (default `vmbr0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 15), regex(pattern = BRIDGE_PATTERN))]
    pub bridge: Option<String>,
    /// VLAN tag set on guest NICs (1-4094); none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4094))]
    pub vlan_tag: Option<i32>,
    /// Addresses for VMs on this node, e.g. `192.168.1.100`-`192.168.1.199`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_range: Option<IpRange>,
    /// Addresses for LXC containers on this node, e.g. `192.168.1.200`-`192.168.1.254`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lxc_range: Option<IpRange>,
    /// Addresses inside the ranges the operator must never hand out (taken by hand-made guests).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 15), regex(pattern = IPV4_PATTERN)))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub excluded: Vec<String>,
}

impl NodeNetwork {
    /// The bridge, or the default `vmbr0`.
    pub fn bridge(&self) -> &str {
        self.bridge.as_deref().unwrap_or(DEFAULT_BRIDGE)
    }
}

/// An inclusive range of IPv4 addresses.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rule(
    format!("{} <= {}", ipv4_int("self.start"), ipv4_int("self.end")),
    "start must not be after end"
))]
pub struct IpRange {
    /// First address, e.g. `192.168.1.100`.
    #[schemars(length(max = 15), regex(pattern = IPV4_PATTERN))]
    pub start: String,
    /// Last address, inclusive, e.g. `192.168.1.199`.
    #[schemars(length(max = 15), regex(pattern = IPV4_PATTERN))]
    pub end: String,
}

impl IpRange {
    /// The range as parsed addresses.
    pub fn parse(&self) -> Result<(Ipv4Addr, Ipv4Addr), String> {
        Ok((parse_ipv4(&self.start)?, parse_ipv4(&self.end)?))
    }
}

impl NetworkPlan {
    /// Runtime checks (backstop for the CEL rules); `path` is e.g. `spec.network`.
    pub fn validate_into(&self, path: &str, errors: &mut Errors) {
        let nodes: Vec<&str> = self.nodes.iter().map(|n| n.node.as_str()).collect();
        errors.check(
            &format!("{path}.namingPattern"),
            check_pattern(&self.naming_pattern, &nodes),
        );
        let mut seen: Vec<(String, &'static str, (Ipv4Addr, Ipv4Addr))> = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let item = format!("{path}.nodes[{i}]");
            if self.nodes[..i].iter().any(|n| n.node == node.node) {
                errors.add(
                    format!("{item}.node"),
                    format!("{:?} is listed twice; merge the entries", node.node),
                );
            }
            for (field, range) in node.validate_into(&item, errors) {
                for (other, other_field, other_range) in &seen {
                    if *other != node.node && ranges_overlap(range, *other_range) {
                        errors.add(
                            format!("{item}.{field}"),
                            format!(
                                "overlaps {other_field} of node {other:?}; give each node its own addresses"
                            ),
                        );
                    }
                }
                seen.push((node.node.clone(), field, range));
            }
        }
    }
}

impl NodeNetwork {
    /// Checks one node; returns its valid ranges (field name, range) for the cross-node check.
    fn validate_into(&self, path: &str, errors: &mut Errors) -> Vec<(&'static str, (Ipv4Addr, Ipv4Addr))> {
        let subnet = match Ipv4Net::parse(&self.subnet) {
            Ok(net) => Some(net),
            Err(e) => {
                errors.add(format!("{path}.subnet"), e);
                None
            }
        };
        let gateway = parse_ipv4(&self.gateway)
            .map_err(|e| errors.add(format!("{path}.gateway"), e))
            .ok();
        if let (Some(net), Some(gw)) = (subnet, gateway)
            && !net.contains(gw)
        {
            errors.add(
                format!("{path}.gateway"),
                format!("{gw} is outside subnet {}", self.subnet),
            );
        }
        let mut ranges = Vec::new();
        for (field, range) in [("vmRange", &self.vm_range), ("lxcRange", &self.lxc_range)] {
            let Some(range) = range else { continue };
            let (start, end) = match range.parse() {
                Ok(r) => r,
                Err(e) => {
                    errors.add(format!("{path}.{field}"), e);
                    continue;
                }
            };
            if start > end {
                errors.add(
                    format!("{path}.{field}"),
                    format!("start {start} is after end {end}; swap them"),
                );
                continue;
            }
            if let Some(net) = subnet {
                let bad = [start, end]
                    .into_iter()
                    .find(|a| !net.contains(*a) || net.is_network_or_broadcast(*a));
                if let Some(addr) = bad {
                    errors.add(
                        format!("{path}.{field}"),
                        format!(
                            "{addr} is not a host address of subnet {}; keep the range inside it",
                            self.subnet
                        ),
                    );
                }
            }
            if let Some(gw) = gateway
                && (start..=end).contains(&gw)
            {
                errors.add(
                    format!("{path}.{field}"),
                    format!("contains the gateway {gw}; move the range"),
                );
            }
            ranges.push((field, (start, end)));
        }
        if let [(_, vm), (_, lxc)] = ranges.as_slice()
            && ranges_overlap(*vm, *lxc)
        {
            errors.add(
                format!("{path}.lxcRange"),
                "overlaps vmRange; give VMs and containers separate ranges",
            );
        }
        for (i, ex) in self.excluded.iter().enumerate() {
            errors.check(&format!("{path}.excluded[{i}]"), parse_ipv4(ex).map(|_| ()));
        }
        ranges
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(yaml: &str) -> NetworkPlan {
        serde_yaml::from_str(yaml).unwrap()
    }

    const TWO_NODES: &str = "
nodes:
- node: pve1
  subnet: 192.168.1.0/24
  gateway: 192.168.1.1
  vmRange: {start: 192.168.1.100, end: 192.168.1.199}
  lxcRange: {start: 192.168.1.200, end: 192.168.1.254}
- node: pve2
  subnet: 192.168.2.0/24
  gateway: 192.168.2.1
  bridge: vmbr1
  vlanTag: 20
  vmRange: {start: 192.168.2.100, end: 192.168.2.199}
";

    fn errors_of(p: &NetworkPlan) -> Vec<String> {
        let mut errors = Errors::new();
        p.validate_into("spec.network", &mut errors);
        errors
            .finish()
            .err()
            .map(|e| e.errors().iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    }

    #[test]
    fn network_plan_defaults_and_valid_plan() {
        let p = plan(TWO_NODES);
        assert_eq!(p.mac_prefix, "02:00:00");
        assert_eq!(p.naming_pattern, "pve-{node}-{type}-{seq:02d}");
        assert_eq!(p.nodes[0].bridge(), "vmbr0");
        assert_eq!(p.nodes[1].bridge(), "vmbr1");
        assert_eq!(errors_of(&p), Vec::<String>::new());
        assert_eq!(NetworkPlan::default().nodes.len(), 0);
    }

    #[test]
    fn network_plan_reports_ranges_outside_subnet_and_gateway() {
        let mut p = plan(TWO_NODES);
        p.nodes[0].vm_range = Some(IpRange {
            start: "192.168.1.1".into(),
            end: "192.168.1.50".into(),
        });
        p.nodes[1].lxc_range = Some(IpRange {
            start: "192.168.2.200".into(),
            end: "192.168.3.10".into(),
        });
        let errs = errors_of(&p);
        assert!(
            errs.iter()
                .any(|e| e.starts_with("spec.network.nodes[0].vmRange: contains the gateway")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("spec.network.nodes[1].lxcRange: 192.168.3.10 is not a host address")),
            "{errs:?}"
        );
    }

    #[test]
    fn network_plan_reports_overlaps_within_and_across_nodes() {
        let mut p = plan(TWO_NODES);
        p.nodes[0].lxc_range = Some(IpRange {
            start: "192.168.1.150".into(),
            end: "192.168.1.160".into(),
        });
        p.nodes[1].subnet = "192.168.0.0/16".into();
        p.nodes[1].vm_range = Some(IpRange {
            start: "192.168.1.190".into(),
            end: "192.168.1.195".into(),
        });
        let errs = errors_of(&p);
        assert!(
            errs.contains(
                &"spec.network.nodes[0].lxcRange: overlaps vmRange; give VMs and containers separate ranges"
                    .to_string()
            ),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("spec.network.nodes[1].vmRange: overlaps vmRange of node \"pve1\"")),
            "{errs:?}"
        );
    }

    #[test]
    fn network_plan_reports_bad_subnet_pattern_and_duplicates() {
        let mut p = plan(TWO_NODES);
        p.nodes[1].node = "pve1".into();
        p.nodes[0].subnet = "192.168.1.7/24".into();
        p.naming_pattern = "web".into();
        let errs = errors_of(&p);
        assert!(
            errs[0].starts_with("spec.network.namingPattern: namingPattern must contain"),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("spec.network.nodes[0].subnet: \"192.168.1.7/24\" has host bits"))
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("spec.network.nodes[1].node: \"pve1\" is listed twice"))
        );
    }
}
