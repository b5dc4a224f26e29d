//! The endpoints, one module per area. Paths are spelled like the schema's path templates.

mod access;
mod agent;
mod backup;
mod cluster;
mod config;
mod migrate;
mod network;
mod node;
mod power;
mod restore;
mod restore_config;
mod retention;
mod snapshot;
mod storage;
mod vzdump_guest;

use serde_json::Value;

pub(crate) use storage::usage as storage_usage;

use super::http::{ApiError, ApiResult};
use super::router::{Ctx, Reply, Route, Router};
use super::state::{Guest, GuestKind};
use super::tasks::{TaskBody, TaskCtx, TaskSpec};

/// Defines `$qemu` and `$lxc` handlers that call `$f(ctx, kind)`.
macro_rules! per_kind {
    ($qemu:ident, $lxc:ident, $f:path) => {
        pub(crate) fn $qemu(
            ctx: &mut crate::pvesim::router::Ctx<'_>,
        ) -> crate::pvesim::http::ApiResult<crate::pvesim::router::Reply> {
            $f(ctx, crate::pvesim::state::GuestKind::Qemu)
        }
        pub(crate) fn $lxc(
            ctx: &mut crate::pvesim::router::Ctx<'_>,
        ) -> crate::pvesim::http::ApiResult<crate::pvesim::router::Reply> {
            $f(ctx, crate::pvesim::state::GuestKind::Lxc)
        }
    };
}
pub(crate) use per_kind;

/// A successful reply.
pub(crate) fn ok(v: Value) -> ApiResult<Reply> {
    Ok(Reply::from(v))
}

/// Starts a task on `node` and replies with its UPID.
pub(crate) fn task(
    ctx: &mut Ctx<'_>,
    node: &str,
    kind: &str,
    id: &str,
    body: impl FnOnce(TaskCtx) -> TaskBody,
) -> ApiResult<Reply> {
    let spec = TaskSpec {
        node: node.to_string(),
        kind: kind.to_string(),
        id: id.to_string(),
        caller: ctx.caller.clone(),
    };
    let upid = ctx.shared.spawn_task(ctx.cluster, spec, body);
    ok(Value::String(upid))
}

/// A task that fails right away with `msg` (checks PVE does inside the worker).
pub(crate) fn failing_task(
    ctx: &mut Ctx<'_>,
    node: &str,
    kind: &str,
    id: &str,
    msg: String,
) -> ApiResult<Reply> {
    task(ctx, node, kind, id, move |t| {
        Box::pin(async move {
            t.sleep(t.part("fail", 10)).await?;
            Err(msg)
        })
    })
}

/// The guest addressed by `{node}` and `{vmid}`.
pub(crate) fn guest<'c>(ctx: &'c Ctx<'_>, kind: GuestKind) -> ApiResult<&'c Guest> {
    let (node, vmid) = (ctx.node()?, ctx.vmid()?);
    ctx.cluster.guest_at(&node, kind, vmid)
}

/// Sets or clears a guest's config lock from a task.
pub(crate) fn set_lock(t: &TaskCtx, vmid: u32, lock: Option<&str>) {
    t.state(|c| {
        if let Some(g) = c.guests.get_mut(&vmid) {
            match lock {
                Some(l) => g.config.insert("lock".into(), l.to_string()),
                None => g.config.remove("lock"),
            };
        }
    });
}

/// `check_lock` unless `skiplock` (only root may skip locks, like PVE).
pub(crate) fn check_lock(ctx: &Ctx<'_>, guest: &Guest) -> Result<(), ApiError> {
    if ctx.params.flag("skiplock") {
        if ctx.caller.upid_user() != "root@pam" {
            return Err(ApiError::param("skiplock", "Only root may use this option."));
        }
        return Ok(());
    }
    guest.check_lock().map_err(ApiError::internal)
}

/// All routes.
pub(crate) fn router() -> Router {
    let r = |method: &'static str, template: &'static str, handler| Route {
        method,
        template,
        handler,
        greedy: false,
    };
    let mut routes = vec![
        r("GET", "/version", access::version),
        r("GET", "/access/ticket", access::ticket_get),
        r("POST", "/access/ticket", access::ticket_post),
        r("GET", "/access/domains", access::domains),
        r("GET", "/cluster/resources", cluster::resources),
        r("GET", "/cluster/status", cluster::status),
        r("GET", "/cluster/nextid", cluster::nextid),
        r("GET", "/cluster/ha/resources", cluster::ha_list),
        r("POST", "/cluster/ha/resources", cluster::ha_create),
        r("GET", "/cluster/ha/resources/{sid}", cluster::ha_get),
        r("PUT", "/cluster/ha/resources/{sid}", cluster::ha_update),
        r("DELETE", "/cluster/ha/resources/{sid}", cluster::ha_delete),
        r("POST", "/cluster/ha/resources/{sid}/migrate", cluster::ha_migrate),
        r("GET", "/storage", cluster::storage_list),
        r("GET", "/storage/{storage}", cluster::storage_get),
        r("GET", "/nodes", cluster::nodes),
        r("GET", "/nodes/{node}/status", node::status),
        r("GET", "/nodes/{node}/network", network::list),
        r("GET", "/cluster/sdn/zones", network::zones),
        r("GET", "/cluster/sdn/vnets", network::vnets),
        r("GET", "/nodes/{node}/apt/update", node::apt_list),
        r("POST", "/nodes/{node}/apt/update", node::apt_update),
        r("GET", "/nodes/{node}/apt/versions", node::apt_versions),
        r("GET", "/nodes/{node}/storage", node::storage),
        r("GET", "/nodes/{node}/tasks", node::tasks),
        r("GET", "/nodes/{node}/tasks/{upid}/status", node::task_status),
        r("GET", "/nodes/{node}/tasks/{upid}/log", node::task_log),
        r("DELETE", "/nodes/{node}/tasks/{upid}", node::task_stop),
        r("GET", "/nodes/{node}/qemu", power::list_qemu),
        r("GET", "/nodes/{node}/lxc", power::list_lxc),
        r("POST", "/nodes/{node}/qemu", restore::create_qemu),
        r("POST", "/nodes/{node}/lxc", restore::create_lxc),
        r("POST", "/nodes/{node}/vzdump", backup::vzdump),
        r("GET", "/nodes/{node}/vzdump/extractconfig", backup::extractconfig),
        r("GET", "/nodes/{node}/storage/{storage}/content", storage::list),
        r("POST", "/nodes/{node}/qemu/{vmid}/config", config::post_qemu),
        r(
            "POST",
            "/nodes/{node}/qemu/{vmid}/template",
            config::template_qemu,
        ),
        r("POST", "/nodes/{node}/lxc/{vmid}/template", config::template_lxc),
        r(
            "GET",
            "/nodes/{node}/lxc/{vmid}/interfaces",
            agent::lxc_interfaces,
        ),
        r("POST", "/nodes/{node}/qemu/{vmid}/agent/ping", agent::ping),
        r(
            "GET",
            "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces",
            agent::network,
        ),
        r(
            "GET",
            "/nodes/{node}/qemu/{vmid}/agent/get-host-name",
            agent::host_name,
        ),
        r("GET", "/nodes/{node}/qemu/{vmid}/agent/get-osinfo", agent::osinfo),
        r("POST", "/nodes/{node}/qemu/{vmid}/agent/exec", agent::exec),
        r(
            "GET",
            "/nodes/{node}/qemu/{vmid}/agent/exec-status",
            agent::exec_status,
        ),
    ];
    macro_rules! both {
        ($method:literal, $suffix:literal, $q:path, $l:path) => {
            routes.push(r(
                $method,
                concat!("/nodes/{node}/qemu/{vmid}", $suffix),
                $q,
            ));
            routes.push(r($method, concat!("/nodes/{node}/lxc/{vmid}", $suffix), $l));
        };
    }
    both!("GET", "/status/current", power::current_qemu, power::current_lxc);
    both!("POST", "/status/start", power::start_qemu, power::start_lxc);
    both!("POST", "/status/stop", power::stop_qemu, power::stop_lxc);
    both!(
        "POST",
        "/status/shutdown",
        power::shutdown_qemu,
        power::shutdown_lxc
    );
    both!("POST", "/status/reboot", power::reboot_qemu, power::reboot_lxc);
    both!("DELETE", "", power::destroy_qemu, power::destroy_lxc);
    both!("GET", "/config", config::get_qemu, config::get_lxc);
    both!("PUT", "/config", config::put_qemu, config::put_lxc);
    both!("GET", "/feature", config::feature_qemu, config::feature_lxc);
    both!("GET", "/snapshot", snapshot::list_qemu, snapshot::list_lxc);
    both!("POST", "/snapshot", snapshot::create_qemu, snapshot::create_lxc);
    both!(
        "DELETE",
        "/snapshot/{snapname}",
        snapshot::delete_qemu,
        snapshot::delete_lxc
    );
    both!(
        "POST",
        "/snapshot/{snapname}/rollback",
        snapshot::rollback_qemu,
        snapshot::rollback_lxc
    );
    both!(
        "GET",
        "/snapshot/{snapname}/config",
        snapshot::config_get_qemu,
        snapshot::config_get_lxc
    );
    both!(
        "PUT",
        "/snapshot/{snapname}/config",
        snapshot::config_put_qemu,
        snapshot::config_put_lxc
    );
    both!("POST", "/clone", migrate::clone_qemu, migrate::clone_lxc);
    both!("POST", "/migrate", migrate::migrate_qemu, migrate::migrate_lxc);
    both!(
        "GET",
        "/migrate",
        migrate::precondition_qemu,
        migrate::precondition_lxc
    );
    for method in ["GET", "PUT", "DELETE"] {
        let handler = match method {
            "GET" => storage::info,
            "PUT" => storage::update,
            _ => storage::delete,
        };
        routes.push(Route {
            method,
            template: "/nodes/{node}/storage/{storage}/content/{volume}",
            handler,
            greedy: true,
        });
    }
    Router::new(routes)
}
