//! `/version` and `/access/*`.

use serde_json::{Value, json};

use super::ok;
use crate::pvesim::http::ApiResult;
use crate::pvesim::router::{Ctx, Reply};

/// `GET /version`: the pve-manager version of the node that answers.
pub(crate) fn version(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let version = ctx
        .cluster
        .nodes
        .get(ctx.serving_node)
        .map(|n| n.pve_version.clone())
        .unwrap_or_else(|| "9.1.3".into());
    let release: String = version.split('.').take(2).collect::<Vec<_>>().join(".");
    ok(json!({ "version": version, "release": release, "repoid": "e5010dce", "console": "xtermjs" }))
}

/// `GET /access/ticket` (a dummy, like PVE's).
pub(crate) fn ticket_get(_ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    ok(Value::Null)
}

/// `POST /access/ticket`: login or ticket renewal.
pub(crate) fn ticket_post(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let data = ctx.shared.auth.login(&ctx.params, &ctx.cluster.name, ctx.now())?;
    ok(data)
}

/// `GET /access/domains`.
pub(crate) fn domains(_ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    ok(json!([
        { "realm": "pam", "type": "pam", "comment": "Linux PAM standard authentication" },
        { "realm": "pve", "type": "pve", "comment": "Proxmox VE authentication server" },
    ]))
}
