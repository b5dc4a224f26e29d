//! The typed client reads node networks and SDN from the simulator: what a restore test needs
//! to prove a bridge or VNet is isolated.

use homelab_autopilot::proxmox::api::NetworkTypeFilter;

use crate::proxmox_client_common::{AuthKind, Env, node};

#[tokio::test]
async fn client_tells_isolated_bridges_and_simple_zone_vnets_from_uplinks() {
    let Some(env) = Env::start(AuthKind::Token).await else {
        return;
    };
    let c = &env.client;
    let pve3 = node("pve3");
    let bridges = c
        .node_network(&pve3, Some(NetworkTypeFilter::AnyBridge))
        .await
        .expect("bridges");
    let find = |name: &str| {
        bridges
            .iter()
            .find(|b| b.iface == name)
            .unwrap_or_else(|| panic!("no {name} in {bridges:?}"))
    };
    assert!(find("vmbr0").has_uplink() && find("vmbr0").active);
    assert_eq!(find("vmbr0").bridge_ports, ["eno1"]);
    assert_eq!(find("vmbr0").cidr.as_deref(), Some("192.168.100.13/24"));
    assert!(find("vmbr1").has_uplink() && find("vmbr1").bridge_vlan_aware);
    assert!(!find("vmbr99").has_uplink() && find("vmbr99").is_bridge());
    assert_eq!(find("rtest").kind, "vnet");
    assert!(bridges.iter().all(|b| b.is_bridge()));
    let all = c.node_network(&pve3, None).await.expect("all");
    assert!(all.iter().any(|i| i.iface == "eno2" && i.kind == "eth"));
    assert!(all.iter().all(|i| i.kind != "vnet"));

    let zones = c.sdn_zones().await.expect("zones");
    let vnets = c.sdn_vnets().await.expect("vnets");
    let zone_of = |vnet: &str| {
        let v = vnets.iter().find(|v| v.vnet == vnet).expect("vnet");
        zones
            .iter()
            .find(|z| Some(&z.zone) == v.zone.as_ref())
            .expect("zone")
            .clone()
    };
    assert!(zone_of("rtest").is_simple() && zone_of("rtest").on_node("pve3"));
    assert!(!zone_of("vlan30").is_simple());
    assert_eq!(zone_of("vlan30").bridge.as_deref(), Some("vmbr1"));
    assert_eq!(
        vnets.iter().find(|v| v.vnet == "vlan30").and_then(|v| v.tag),
        Some(30)
    );
}
