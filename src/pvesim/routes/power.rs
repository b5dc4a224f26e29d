//! Guest lists, `status/current`, start/stop/shutdown/reboot and destroy, with the checks
//! qemu-server and pve-container make (some before forking the worker: HTTP 500; some inside it:
//! a failed task).

use serde_json::{Map, Value, json};

use super::{check_lock, guest, ok, per_kind, task};
use crate::pvesim::http::{ApiError, ApiResult};
use crate::pvesim::router::{Ctx, Reply};
use crate::pvesim::state::{Cluster, Guest, GuestKind, Power};
use crate::pvesim::tasks::TaskCtx;

fn ha_json(c: &Cluster, g: &Guest) -> Value {
    match c.ha.get(&format!("{}:{}", g.kind.ha_type(), g.vmid)) {
        Some(r) => json!({ "managed": 1, "state": r.state, "group": r.options.get("group") }),
        None => json!({ "managed": 0 }),
    }
}

/// How much a row tells, as qemu-server's `vmstatus($vmid, $full)` decides.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Detail {
    /// `GET /nodes/{node}/qemu` without `full`: what the config and `/proc` tell, no QMP query.
    List,
    /// `GET /nodes/{node}/qemu?full=1`: also what QMP tells (`qmpstatus` for every VM, `stopped`
    /// for a stopped one; the running QEMU version and machine).
    FullList,
    /// `status/current`: the full status plus `ha` and `agent`.
    Current,
}

fn row(c: &Cluster, g: &Guest, now: i64, detail: Detail) -> Value {
    let mut map = Map::new();
    map.insert("vmid".into(), json!(g.vmid));
    g.usage_fields(now, &mut map);
    match g.kind {
        GuestKind::Qemu => {
            let qmp = match g.power {
                Power::Running { .. } => "running",
                Power::Paused { .. } => "paused",
                Power::Stopped => "stopped",
            };
            if detail != Detail::List {
                map.insert("qmpstatus".into(), json!(qmp));
                if g.power.is_up() {
                    map.insert("running-qemu".into(), json!("10.1.2"));
                    map.insert("running-machine".into(), json!("pc-i440fx-10.1+pve0"));
                }
            }
            if detail == Detail::Current {
                map.insert("ha".into(), ha_json(c, g));
                if g.config
                    .get("agent")
                    .is_some_and(|a| a.starts_with('1') || a.contains("enabled=1"))
                {
                    map.insert("agent".into(), json!(1));
                }
            }
        }
        GuestKind::Lxc => {
            map.insert("type".into(), json!("lxc"));
            let swap = g
                .config
                .get("swap")
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
                << 20;
            map.insert("maxswap".into(), json!(swap));
            map.insert("swap".into(), json!(0));
            if detail == Detail::Current {
                map.insert("ha".into(), ha_json(c, g));
            }
        }
    }
    Value::Object(map)
}

fn list(ctx: &mut Ctx<'_>, kind: GuestKind) -> ApiResult<Reply> {
    let node = ctx.node()?;
    ctx.cluster.check_node(&node)?;
    let now = ctx.now();
    // `full` exists for QEMU only (the schema refuses it for /lxc).
    let detail = if kind == GuestKind::Qemu && ctx.params.flag("full") {
        Detail::FullList
    } else {
        Detail::List
    };
    let c = &*ctx.cluster;
    ok(Value::Array(
        c.guests
            .values()
            .filter(|g| g.node == node && g.kind == kind)
            .map(|g| row(c, g, now, detail))
            .collect(),
    ))
}

/// `GET /nodes/{node}/qemu` (`full=1`: with the QMP state of every VM).
pub(crate) fn list_qemu(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    list(ctx, GuestKind::Qemu)
}

/// `GET /nodes/{node}/lxc`.
pub(crate) fn list_lxc(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    list(ctx, GuestKind::Lxc)
}

fn current(ctx: &mut Ctx<'_>, kind: GuestKind) -> ApiResult<Reply> {
    let now = ctx.now();
    let g = guest(ctx, kind)?;
    ok(row(ctx.cluster, g, now, Detail::Current))
}
per_kind!(current_qemu, current_lxc, current);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Start,
    Stop,
    Shutdown,
    Reboot,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Start => "start",
            Op::Stop => "stop",
            Op::Shutdown => "shutdown",
            Op::Reboot => "reboot",
        }
    }
}

fn set_power(t: &TaskCtx, vmid: u32, power: Power) {
    t.state(|c| {
        if let Some(g) = c.guests.get_mut(&vmid) {
            g.power = power;
        }
    });
}

fn power(ctx: &mut Ctx<'_>, kind: GuestKind, op: Op) -> ApiResult<Reply> {
    let g = guest(ctx, kind)?;
    let (vmid, node, up, paused) = (
        g.vmid,
        g.node.clone(),
        g.power.is_up(),
        matches!(g.power, Power::Paused { .. }),
    );
    let skiplock = ctx.params.flag("skiplock");
    if skiplock {
        check_lock(ctx, g)?;
    }
    let label = kind.label();
    // Checks pve-container / qemu-server make before forking the worker.
    match (kind, op) {
        (GuestKind::Lxc, Op::Start) if up => {
            return Err(ApiError::internal(format!("CT {vmid} already running")));
        }
        (GuestKind::Lxc, Op::Stop | Op::Shutdown | Op::Reboot) if !up => {
            return Err(ApiError::internal(format!("CT {vmid} not running")));
        }
        (GuestKind::Qemu, Op::Reboot) if !up => {
            return Err(ApiError::internal(format!("VM {vmid} not running")));
        }
        (GuestKind::Qemu, Op::Shutdown) if paused && !ctx.params.flag("forceStop") => {
            return Err(ApiError::internal("VM is paused - cannot shutdown"));
        }
        _ => {}
    }
    let ha_sid = format!("{}:{vmid}", kind.ha_type());
    if ctx.cluster.ha.contains_key(&ha_sid) && matches!(op, Op::Start | Op::Stop | Op::Shutdown) {
        let (state, task_kind, verb) = if op == Op::Start {
            ("started", "hastart", "start")
        } else {
            ("stopped", "hastop", "stop")
        };
        if let Some(r) = ctx.cluster.ha.get_mut(&ha_sid) {
            r.state = state.to_string();
        }
        return task(ctx, &node, task_kind, &vmid.to_string(), move |t| {
            Box::pin(async move {
                t.log(format!("Requesting HA {verb} for {label} {vmid}"));
                t.sleep(t.part(task_kind, 1)).await?;
                t.checkpoint()?;
                let now = t.now();
                set_power(
                    &t,
                    vmid,
                    if op == Op::Start {
                        Power::Running { since: now }
                    } else {
                        Power::Stopped
                    },
                );
                Ok(())
            })
        });
    }
    let task_kind = format!("{}{}", kind.task_prefix(), op.name());
    let tk = task_kind.clone();
    task(ctx, &node, &task_kind, &vmid.to_string(), move |t| {
        Box::pin(async move {
            let pre = t.state(|c| -> Result<bool, String> {
                let g = c
                    .guests
                    .get(&vmid)
                    .ok_or_else(|| format!("{label} {vmid} does not exist"))?;
                if op == Op::Start && g.is_template() {
                    return Err(format!(
                        "you can't start a {} if it's a template",
                        if kind == GuestKind::Qemu { "vm" } else { "CT" }
                    ));
                }
                if !skiplock {
                    g.check_lock()?;
                }
                if op == Op::Start && g.power.is_up() {
                    return Err(format!("{label} {vmid} already running"));
                }
                Ok(g.power.is_up())
            })?;
            if op != Op::Start && !pre {
                return Ok(()); // stopping a stopped VM is a no-op
            }
            if op == Op::Shutdown && kind == GuestKind::Lxc {
                t.log(format!("shutting down CT {vmid}"));
            }
            t.sleep(t.part(&tk, 1)).await?;
            t.checkpoint()?;
            let now = t.now();
            let target = match op {
                Op::Start | Op::Reboot => Power::Running { since: now },
                Op::Stop | Op::Shutdown => Power::Stopped,
            };
            set_power(&t, vmid, target);
            Ok(())
        })
    })
}

fn start(ctx: &mut Ctx<'_>, kind: GuestKind) -> ApiResult<Reply> {
    power(ctx, kind, Op::Start)
}
fn stop(ctx: &mut Ctx<'_>, kind: GuestKind) -> ApiResult<Reply> {
    power(ctx, kind, Op::Stop)
}
fn shutdown(ctx: &mut Ctx<'_>, kind: GuestKind) -> ApiResult<Reply> {
    power(ctx, kind, Op::Shutdown)
}
fn reboot(ctx: &mut Ctx<'_>, kind: GuestKind) -> ApiResult<Reply> {
    power(ctx, kind, Op::Reboot)
}
per_kind!(start_qemu, start_lxc, start);
per_kind!(stop_qemu, stop_lxc, stop);
per_kind!(shutdown_qemu, shutdown_lxc, shutdown);
per_kind!(reboot_qemu, reboot_lxc, reboot);

fn destroy(ctx: &mut Ctx<'_>, kind: GuestKind) -> ApiResult<Reply> {
    let g = guest(ctx, kind)?;
    let (vmid, node, up, label) = (g.vmid, g.node.clone(), g.power.is_up(), kind.label());
    let purge = ctx.params.flag("purge");
    let force = ctx.params.flag("force");
    let skiplock = ctx.params.flag("skiplock");
    let protected = g.config.get("protection").is_some_and(|p| p == "1");
    if ctx.cluster.ha_managed(kind, vmid) && !purge {
        return Err(ApiError::internal(format!(
            "unable to remove {label} {vmid} - used in HA resources and purge parameter not set."
        )));
    }
    match kind {
        GuestKind::Qemu if up => {
            return Err(ApiError::internal(format!(
                "VM {vmid} is running - destroy failed"
            )));
        }
        GuestKind::Lxc => {
            if protected {
                return Err(ApiError::internal(format!(
                    "can't remove CT {vmid} - protection mode enabled"
                )));
            }
            if up && !force {
                return Err(ApiError::internal(format!(
                    "unable to destroy CT {vmid} - container is running"
                )));
            }
            g.check_lock().map_err(ApiError::internal)?;
        }
        GuestKind::Qemu => {}
    }
    if skiplock {
        check_lock(ctx, g)?;
    }
    let task_kind = format!("{}destroy", kind.task_prefix());
    let tk = task_kind.clone();
    task(ctx, &node, &task_kind, &vmid.to_string(), move |t| {
        Box::pin(async move {
            let volumes = t.state(|c| -> Result<Vec<String>, String> {
                let g = c
                    .guests
                    .get(&vmid)
                    .ok_or_else(|| format!("{label} {vmid} does not exist"))?;
                if kind == GuestKind::Qemu {
                    if !skiplock {
                        g.check_lock()?;
                    }
                    if protected {
                        return Err(format!("can't remove VM {vmid} - protection mode enabled"));
                    }
                }
                Ok(g.volumes().into_iter().map(|(_, volid, _)| volid).collect())
            })?;
            if up && force {
                t.log(format!("stopping CT {vmid}"));
            }
            t.sleep(t.part(&tk, 1)).await?;
            t.checkpoint()?;
            for volid in &volumes {
                let name = volid.split_once(':').map_or(volid.as_str(), |(_, n)| n);
                t.log(format!("  Logical volume \"{name}\" successfully removed."));
            }
            if purge {
                t.log(format!("purging {label} {vmid} from related configurations.."));
            }
            t.state(|c| {
                c.guests.remove(&vmid);
                c.leave_pools(vmid); // remove_vm_access, with or without purge
                if purge {
                    c.ha.remove(&format!("{}:{vmid}", kind.ha_type()));
                }
            });
            Ok(())
        })
    })
}
per_kind!(destroy_qemu, destroy_lxc, destroy);
