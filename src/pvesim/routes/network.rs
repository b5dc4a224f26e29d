//! `GET /nodes/{node}/network` (pve-manager `PVE::API2::Network::index`) and the SDN lists
//! `GET /cluster/sdn/zones` and `GET /cluster/sdn/vnets`.

use serde_json::Value;

use super::ok;
use crate::pvesim::http::ApiResult;
use crate::pvesim::router::{Ctx, Reply};

/// `GET /nodes/{node}/network`: the node's interfaces (no `lo`), filtered by `type`; the
/// `any_bridge`, `include_sdn` and `vnet` filters add the VNets whose zone is on the node.
pub(crate) fn list(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let node = ctx.node()?;
    ctx.cluster.check_node(&node)?;
    let filter = ctx.params.str("type");
    let nets = &ctx.cluster.network;
    let ifaces = nets.interfaces.get(&node).map(Vec::as_slice).unwrap_or_default();
    let mut rows: Vec<Value> = ifaces
        .iter()
        .enumerate()
        .filter(|(_, i)| match filter.as_deref() {
            None | Some("include_sdn") => true,
            Some("any_bridge" | "any_local_bridge") => i.kind == "bridge" || i.kind == "OVSBridge",
            Some(t) => i.kind == t,
        })
        .map(|(n, i)| i.json(n + 2))
        .collect();
    if matches!(filter.as_deref(), Some("any_bridge" | "include_sdn" | "vnet")) {
        rows.extend(nets.local_vnets(&node).map(|v| nets.vnet_row(v)));
    }
    ok(Value::Array(rows))
}

/// `GET /cluster/sdn/zones` (`type` filters; `pending`/`running` show the same, applied config).
pub(crate) fn zones(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let filter = ctx.params.str("type");
    let rows = ctx
        .cluster
        .network
        .sdn
        .zones
        .iter()
        .filter(|z| filter.as_deref().is_none_or(|t| z.kind == t))
        .map(|z| z.json());
    ok(Value::Array(rows.collect()))
}

/// `GET /cluster/sdn/vnets`.
pub(crate) fn vnets(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let rows = ctx.cluster.network.sdn.vnets.iter().map(|v| v.json());
    ok(Value::Array(rows.collect()))
}
