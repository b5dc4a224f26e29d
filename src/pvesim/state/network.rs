//! Node networks (`/etc/network/interfaces`) and the SDN configuration (`/etc/pve/sdn/*.cfg`).
//!
//! The same types describe the seed (camelCase YAML) and the state. Without a seed entry every
//! node gets two NICs, the uplink bridge `vmbr0` (port `eno1`), a VLAN-aware bridge `vmbr1`
//! (port `eno2`) and the port-less bridge `vmbr99`; the cluster gets a `simple` zone `isolated`
//! with VNet `rtest` and a `vlan` zone `vlanzone` on `vmbr1` with VNet `vlan30` (tag 30).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::pvesim::http::pve_bool;

/// One interface of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetInterface {
    /// Interface name (`vmbr0`, `eno1`).
    pub iface: String,
    /// `bridge`, `eth`, `bond`, `vlan`, `OVSBridge`...
    #[serde(rename = "type")]
    pub kind: String,
    /// Bridge ports (space separated); none: the bridge has no uplink.
    #[serde(default)]
    pub bridge_ports: Option<String>,
    /// `bridge_vlan_aware`.
    #[serde(default)]
    pub vlan_aware: bool,
    /// IPv4 CIDR (`192.168.100.11/24`).
    #[serde(default)]
    pub cidr: Option<String>,
    /// Default gateway.
    #[serde(default)]
    pub gateway: Option<String>,
    /// Whether the interface is up.
    #[serde(default = "yes")]
    pub active: bool,
    /// `auto` line in the interfaces file.
    #[serde(default = "yes")]
    pub autostart: bool,
    /// Comment.
    #[serde(default)]
    pub comments: Option<String>,
}

/// An SDN zone (`/etc/pve/sdn/zones.cfg`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SdnZone {
    /// Zone id.
    pub zone: String,
    /// `simple`, `vlan`, `qinq`, `vxlan`, `evpn`, `faucet`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The bridge a `vlan`/`qinq` zone tags on.
    #[serde(default)]
    pub bridge: Option<String>,
    /// Only on these nodes (none: all).
    #[serde(default)]
    pub nodes: Option<Vec<String>>,
    /// IPAM (`pve`).
    #[serde(default)]
    pub ipam: Option<String>,
    /// DHCP backend (`dnsmasq`).
    #[serde(default)]
    pub dhcp: Option<String>,
    /// MTU.
    #[serde(default)]
    pub mtu: Option<u32>,
}

/// An SDN VNet (`/etc/pve/sdn/vnets.cfg`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SdnVnet {
    /// VNet id (also the bridge name on the nodes).
    pub vnet: String,
    /// Zone.
    pub zone: String,
    /// VLAN tag / VXLAN VNI.
    #[serde(default)]
    pub tag: Option<u32>,
    /// Alias.
    #[serde(default)]
    pub alias: Option<String>,
    /// VLAN-aware.
    #[serde(default)]
    pub vlanaware: bool,
    /// `isolate-ports`.
    #[serde(default)]
    pub isolate_ports: bool,
}

/// The seed's and the cluster's SDN configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sdn {
    /// Zones.
    #[serde(default)]
    pub zones: Vec<SdnZone>,
    /// VNets.
    #[serde(default)]
    pub vnets: Vec<SdnVnet>,
}

/// Networks of the whole cluster.
#[derive(Debug, Clone, Default)]
pub struct Networks {
    /// Interfaces by node.
    pub interfaces: BTreeMap<String, Vec<NetInterface>>,
    /// SDN (applied, running) configuration.
    pub sdn: Sdn,
}

fn yes() -> bool {
    true
}

fn iface(name: &str, kind: &str) -> NetInterface {
    NetInterface {
        iface: name.into(),
        kind: kind.into(),
        bridge_ports: None,
        vlan_aware: false,
        cidr: None,
        gateway: None,
        active: true,
        autostart: true,
        comments: None,
    }
}

/// The interfaces a node gets when the seed names none.
pub fn default_interfaces(node_ip: &str) -> Vec<NetInterface> {
    let gateway = node_ip
        .rsplit_once('.')
        .map(|(net, _)| format!("{net}.1"))
        .unwrap_or_else(|| "192.168.100.1".into());
    vec![
        iface("eno1", "eth"),
        iface("eno2", "eth"),
        NetInterface {
            bridge_ports: Some("eno1".into()),
            cidr: Some(format!("{node_ip}/24")),
            gateway: Some(gateway),
            ..iface("vmbr0", "bridge")
        },
        NetInterface {
            bridge_ports: Some("eno2".into()),
            vlan_aware: true,
            comments: Some("trunk".into()),
            ..iface("vmbr1", "bridge")
        },
        NetInterface {
            comments: Some("isolated, no uplink".into()),
            ..iface("vmbr99", "bridge")
        },
    ]
}

/// The SDN configuration of a seed without one.
pub fn default_sdn() -> Sdn {
    Sdn {
        zones: vec![
            SdnZone {
                zone: "isolated".into(),
                kind: "simple".into(),
                bridge: None,
                nodes: None,
                ipam: Some("pve".into()),
                dhcp: None,
                mtu: None,
            },
            SdnZone {
                zone: "vlanzone".into(),
                kind: "vlan".into(),
                bridge: Some("vmbr1".into()),
                nodes: None,
                ipam: Some("pve".into()),
                dhcp: None,
                mtu: None,
            },
        ],
        vnets: vec![
            SdnVnet {
                vnet: "rtest".into(),
                zone: "isolated".into(),
                tag: None,
                alias: Some("restore tests".into()),
                vlanaware: false,
                isolate_ports: false,
            },
            SdnVnet {
                vnet: "vlan30".into(),
                zone: "vlanzone".into(),
                tag: Some(30),
                alias: None,
                vlanaware: false,
                isolate_ports: false,
            },
        ],
    }
}

fn digest(text: &str) -> String {
    use sha2::{Digest, Sha256};
    let hash = Sha256::digest(text.as_bytes());
    hash.iter().take(20).map(|b| format!("{b:02x}")).collect()
}

impl NetInterface {
    /// A row of `GET /nodes/{node}/network` (shape of pve-common's `read_etc_network_interfaces`).
    pub(crate) fn json(&self, priority: usize) -> Value {
        let method = if self.cidr.is_some() { "static" } else { "manual" };
        let mut v = json!({
            "iface": self.iface, "type": self.kind, "method": method, "method6": "manual",
            "families": ["inet"], "priority": priority,
        });
        if self.active {
            v["active"] = pve_bool(true);
        }
        if self.autostart {
            v["autostart"] = pve_bool(true);
        }
        if self.kind == "eth" {
            v["exists"] = pve_bool(true);
        }
        if self.kind == "bridge" {
            // pve-common reads `bridge-ports none` as an empty string.
            v["bridge_ports"] = json!(self.bridge_ports.clone().unwrap_or_default());
            v["bridge_stp"] = json!("off");
            v["bridge_fd"] = json!("0");
            if self.vlan_aware {
                v["bridge_vlan_aware"] = pve_bool(true);
            }
        }
        if let Some(cidr) = &self.cidr {
            v["cidr"] = json!(cidr);
            if let Some((addr, mask)) = cidr.split_once('/') {
                v["address"] = json!(addr);
                v["netmask"] = json!(mask);
            }
        }
        if let Some(gw) = &self.gateway {
            v["gateway"] = json!(gw);
        }
        if let Some(c) = &self.comments {
            v["comments"] = json!(format!("{c}\n"));
        }
        v
    }
}

impl SdnZone {
    /// Whether the zone exists on `node`.
    pub fn on_node(&self, node: &str) -> bool {
        self.nodes
            .as_ref()
            .is_none_or(|nodes| nodes.iter().any(|n| n == node))
    }

    /// A row of `GET /cluster/sdn/zones`.
    pub(crate) fn json(&self) -> Value {
        let mut v = json!({ "zone": self.zone, "type": self.kind });
        v["digest"] = json!(digest(&format!("{self:?}")));
        if let Some(b) = &self.bridge {
            v["bridge"] = json!(b);
        }
        if let Some(n) = &self.nodes {
            v["nodes"] = json!(n.join(","));
        }
        if let Some(i) = &self.ipam {
            v["ipam"] = json!(i);
        }
        if let Some(d) = &self.dhcp {
            v["dhcp"] = json!(d);
        }
        if let Some(m) = self.mtu {
            v["mtu"] = json!(m);
        }
        v
    }
}

impl SdnVnet {
    /// A row of `GET /cluster/sdn/vnets`.
    pub(crate) fn json(&self) -> Value {
        let mut v = json!({ "vnet": self.vnet, "type": "vnet", "zone": self.zone });
        v["digest"] = json!(digest(&format!("{self:?}")));
        if let Some(t) = self.tag {
            v["tag"] = json!(t);
        }
        if let Some(a) = &self.alias {
            v["alias"] = json!(a);
        }
        if self.vlanaware {
            v["vlanaware"] = pve_bool(true);
        }
        if self.isolate_ports {
            v["isolate-ports"] = pve_bool(true);
        }
        v
    }
}

impl Networks {
    /// Whether `bridge` exists on `node`, as a local bridge or a VNet of a zone on that node.
    pub fn bridge_exists(&self, node: &str, bridge: &str) -> bool {
        let local = self
            .interfaces
            .get(node)
            .is_some_and(|l| l.iter().any(|i| i.iface == bridge && i.kind.ends_with("ridge")));
        local || self.local_vnets(node).any(|v| v.vnet == bridge)
    }

    /// VNets whose zone exists on `node` (`PVE::Network::SDN::get_local_vnets`).
    pub fn local_vnets<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a SdnVnet> + 'a {
        self.sdn
            .vnets
            .iter()
            .filter(move |v| self.sdn.zones.iter().any(|z| z.zone == v.zone && z.on_node(node)))
    }

    /// The row `GET /nodes/{node}/network` shows for a local VNet.
    pub(crate) fn vnet_row(&self, v: &SdnVnet) -> Value {
        let ipam = self
            .sdn
            .zones
            .iter()
            .find(|z| z.zone == v.zone)
            .is_some_and(|z| z.ipam.is_some());
        let mut row = json!({
            "iface": v.vnet, "type": "vnet", "active": "1",
            "ipam": u8::from(ipam), "vlanaware": u8::from(v.vlanaware),
        });
        if let Some(a) = &v.alias {
            row["comments"] = json!(a);
        }
        row
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_have_an_uplink_bridge_an_isolated_bridge_and_a_simple_zone_vnet() {
        let ifaces = default_interfaces("192.168.100.11");
        let vmbr0 = ifaces.iter().find(|i| i.iface == "vmbr0").map(|i| i.json(3));
        assert_eq!(
            vmbr0.as_ref().map(|v| v["bridge_ports"].clone()),
            Some(json!("eno1"))
        );
        assert_eq!(vmbr0.map(|v| v["gateway"].clone()), Some(json!("192.168.100.1")));
        let vmbr99 = ifaces.iter().find(|i| i.iface == "vmbr99").map(|i| i.json(5));
        assert_eq!(vmbr99.map(|v| v["bridge_ports"].clone()), Some(json!("")));
        let nets = Networks {
            interfaces: BTreeMap::from([("pve1".to_string(), ifaces)]),
            sdn: default_sdn(),
        };
        assert!(nets.bridge_exists("pve1", "vmbr99") && nets.bridge_exists("pve1", "rtest"));
        assert!(!nets.bridge_exists("pve1", "eno1") && !nets.bridge_exists("pve2", "vmbr0"));
        assert!(nets.bridge_exists("pve2", "rtest"));
    }
}
