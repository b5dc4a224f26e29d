//! Node networks and SDN: `GET /nodes/{node}/network`, `GET /cluster/sdn/zones` and
//! `GET /cluster/sdn/vnets`: what a restore test needs to prove that a bridge or VNet is isolated
//! (a bridge without `bridge_ports`, or a VNet in a `simple` zone).

use serde::{Deserialize, Deserializer};

use crate::proxmox::client::PveClient;
use crate::proxmox::decode;
use crate::proxmox::error::Result;
use crate::proxmox::ops;
use crate::proxmox::request::Call;
use crate::proxmox::types::NodeName;

/// The `type` filter of `GET /nodes/{node}/network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkTypeFilter {
    /// Linux bridges only.
    Bridge,
    /// Linux and OVS bridges, plus the SDN VNets available on the node.
    AnyBridge,
    /// Linux and OVS bridges, no VNets.
    AnyLocalBridge,
    /// SDN VNets only.
    Vnet,
    /// Every interface plus the VNets.
    IncludeSdn,
    /// Physical NICs.
    Eth,
    /// Bonds.
    Bond,
    /// VLAN interfaces.
    Vlan,
}

impl NetworkTypeFilter {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bridge => "bridge",
            Self::AnyBridge => "any_bridge",
            Self::AnyLocalBridge => "any_local_bridge",
            Self::Vnet => "vnet",
            Self::IncludeSdn => "include_sdn",
            Self::Eth => "eth",
            Self::Bond => "bond",
            Self::Vlan => "vlan",
        }
    }
}

/// `bridge_ports` / `slaves`: space separated; pve-common reads `none` as `""`, so empty and
/// `none` both mean "no ports".
fn port_list<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    let text = decode::opt_string(d)?.unwrap_or_default();
    Ok(text
        .split([' ', ',', ';', '\t'])
        .filter(|p| !p.is_empty() && *p != "none")
        .map(str::to_string)
        .collect())
}

/// One row of `GET /nodes/{node}/network`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct NetworkInterface {
    /// Interface name (`vmbr0`, `eno1`, or a VNet name).
    pub iface: String,
    /// `bridge`, `eth`, `bond`, `vlan`, `OVSBridge`, `vnet`, ...
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Whether the interface is up.
    #[serde(default, deserialize_with = "decode::bool_lenient")]
    pub active: bool,
    /// Whether it starts on boot.
    #[serde(default, deserialize_with = "decode::bool_lenient")]
    pub autostart: bool,
    /// Bridge ports (uplinks); empty for a bridge without any.
    #[serde(default, deserialize_with = "port_list")]
    pub bridge_ports: Vec<String>,
    /// OVS bridge ports.
    #[serde(default, deserialize_with = "port_list")]
    pub ovs_ports: Vec<String>,
    /// Bond members.
    #[serde(default, deserialize_with = "port_list")]
    pub slaves: Vec<String>,
    /// VLAN-aware bridge (`bridge_vlan_aware`; `vlanaware` on VNet rows).
    #[serde(default, deserialize_with = "decode::bool_lenient", alias = "vlanaware")]
    pub bridge_vlan_aware: bool,
    /// IPv4 CIDR of the interface.
    #[serde(default, deserialize_with = "decode::opt_string")]
    pub cidr: Option<String>,
    /// Default gateway.
    #[serde(default, deserialize_with = "decode::opt_string")]
    pub gateway: Option<String>,
    /// VLAN id (`vlan` interfaces).
    #[serde(rename = "vlan-id", default, deserialize_with = "decode::opt_u64")]
    pub vlan_id: Option<u64>,
    /// Comments.
    #[serde(default, deserialize_with = "decode::opt_string")]
    pub comments: Option<String>,
}

impl NetworkInterface {
    /// A Linux or OVS bridge, or an SDN VNet (all can be a guest's `bridge=`).
    pub fn is_bridge(&self) -> bool {
        matches!(self.kind.as_str(), "bridge" | "OVSBridge" | "vnet")
    }

    /// Whether traffic can leave the node through it: a local bridge with any port.
    /// VNets report no ports here; their isolation is decided by the zone type.
    pub fn has_uplink(&self) -> bool {
        !self.bridge_ports.is_empty() || !self.ovs_ports.is_empty()
    }
}

/// One row of `GET /cluster/sdn/zones`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SdnZone {
    /// Zone id.
    pub zone: String,
    /// `simple`, `vlan`, `qinq`, `vxlan`, `evpn`, `faucet`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The bridge a `vlan`/`qinq` zone tags traffic onto.
    #[serde(default, deserialize_with = "decode::opt_string")]
    pub bridge: Option<String>,
    /// Nodes the zone exists on (empty: all).
    #[serde(default, deserialize_with = "port_list")]
    pub nodes: Vec<String>,
    /// IPAM id.
    #[serde(default, deserialize_with = "decode::opt_string")]
    pub ipam: Option<String>,
    /// DHCP backend.
    #[serde(default, deserialize_with = "decode::opt_string")]
    pub dhcp: Option<String>,
    /// MTU.
    #[serde(default, deserialize_with = "decode::opt_u64")]
    pub mtu: Option<u64>,
    /// `new`, `changed`, `deleted` (only with `pending=1`).
    #[serde(default, deserialize_with = "decode::opt_string")]
    pub state: Option<String>,
}

impl SdnZone {
    /// A `simple` zone: its VNets are node-local bridges without a physical uplink.
    pub fn is_simple(&self) -> bool {
        self.kind == "simple"
    }

    /// Whether the zone exists on `node`.
    pub fn on_node(&self, node: &str) -> bool {
        self.nodes.is_empty() || self.nodes.iter().any(|n| n == node)
    }
}

/// One row of `GET /cluster/sdn/vnets`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SdnVnet {
    /// VNet id (the bridge name guests use).
    pub vnet: String,
    /// Zone (optional in the schema).
    #[serde(default, deserialize_with = "decode::opt_string")]
    pub zone: Option<String>,
    /// VLAN tag or VXLAN VNI.
    #[serde(default, deserialize_with = "decode::opt_u64")]
    pub tag: Option<u64>,
    /// Alias.
    #[serde(default, deserialize_with = "decode::opt_string")]
    pub alias: Option<String>,
    /// VLAN-aware.
    #[serde(default, deserialize_with = "decode::bool_lenient")]
    pub vlanaware: bool,
    /// Guests on it can only talk to non-isolated ports.
    #[serde(rename = "isolate-ports", default, deserialize_with = "decode::bool_lenient")]
    pub isolate_ports: bool,
}

impl PveClient {
    /// `GET /nodes/{node}/network`, optionally filtered by type.
    pub async fn node_network(
        &self,
        node: &NodeName,
        filter: Option<NetworkTypeFilter>,
    ) -> Result<Vec<NetworkInterface>> {
        self.run(
            Call::new(ops::NODE_NETWORK, &[node.as_str()]).opt("type", filter.map(NetworkTypeFilter::as_str)),
        )
        .await
    }

    /// `GET /cluster/sdn/zones` (the applied configuration).
    pub async fn sdn_zones(&self) -> Result<Vec<SdnZone>> {
        self.run(Call::new(ops::SDN_ZONES, &[])).await
    }

    /// `GET /cluster/sdn/vnets` (the applied configuration).
    pub async fn sdn_vnets(&self) -> Result<Vec<SdnVnet>> {
        self.run(Call::new(ops::SDN_VNETS, &[])).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_decode_pve_shapes_and_empty_ports_mean_no_uplink() {
        let rows: Vec<NetworkInterface> = serde_json::from_str(
            r#"[{"iface":"vmbr0","type":"bridge","active":1,"autostart":1,"bridge_ports":"eno1",
                 "bridge_fd":"0","bridge_stp":"off","cidr":"192.168.100.11/24","gateway":"192.168.100.1",
                 "method":"static","families":["inet"],"priority":4},
                {"iface":"vmbr9","type":"bridge","active":"1","bridge_ports":"","bridge_vlan_aware":1},
                {"iface":"vmbr8","type":"bridge","bridge_ports":"none"},
                {"iface":"rtest","type":"vnet","active":"1","ipam":1,"vlanaware":0}]"#,
        )
        .unwrap();
        assert!(rows[0].has_uplink() && rows[0].active && rows[0].is_bridge());
        assert_eq!(rows[0].gateway.as_deref(), Some("192.168.100.1"));
        assert!(!rows[1].has_uplink() && rows[1].active && rows[1].bridge_vlan_aware);
        assert!(!rows[2].has_uplink() && !rows[2].active);
        assert!(rows[3].is_bridge() && !rows[3].has_uplink() && !rows[3].bridge_vlan_aware);
    }

    #[test]
    fn sdn_zones_and_vnets_decode() {
        let zones: Vec<SdnZone> = serde_json::from_str(
            r#"[{"zone":"isolated","type":"simple","ipam":"pve","digest":"x"},
                {"zone":"vlanzone","type":"vlan","bridge":"vmbr1","nodes":"pve1,pve2","mtu":"1500"}]"#,
        )
        .unwrap();
        assert!(zones[0].is_simple() && zones[0].on_node("pve3"));
        assert!(!zones[1].is_simple() && zones[1].on_node("pve2") && !zones[1].on_node("pve3"));
        assert_eq!(zones[1].mtu, Some(1500));
        let vnets: Vec<SdnVnet> = serde_json::from_str(
            r#"[{"vnet":"rtest","type":"vnet","zone":"isolated"},{"vnet":"vlan30","zone":"vlanzone","tag":"30","isolate-ports":1}]"#,
        )
        .unwrap();
        assert_eq!(vnets[1].tag, Some(30));
        assert!(vnets[1].isolate_ports && !vnets[0].isolate_ports);
    }
}
