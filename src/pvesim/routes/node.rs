//! `/nodes/{node}/status`, `/apt/*`, `/storage` and `/tasks`.

use serde_json::{Value, json};

use super::{ok, task};
use crate::pvesim::http::{ApiError, ApiOk, ApiResult, pve_bool};
use crate::pvesim::router::{Ctx, Reply};
use crate::pvesim::schema::split_list;
use crate::pvesim::state::{AptPackage, Node};
use crate::pvesim::tasks::{TaskInfo, parse_upid};

fn node<'c>(ctx: &'c Ctx<'_>) -> ApiResult<&'c Node> {
    let name = ctx.node()?;
    ctx.cluster.check_node(&name)
}

/// `GET /nodes/{node}/status`.
pub(crate) fn status(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let now = ctx.now();
    let n = node(ctx)?;
    let mem_used = super::cluster::node_mem(ctx.cluster, &n.name).min(n.memory);
    ok(json!({
        "cpu": 0.02 + 0.01 * f64::from(n.nodeid % 5),
        "wait": 0.0008,
        "idle": 0,
        "uptime": (now - n.boot_time).max(0),
        "loadavg": ["0.21", "0.18", "0.15"],
        "kversion": format!("Linux {} #1 SMP PREEMPT_DYNAMIC PMX {} (2025-10-10T08:04Z)", n.kernel, n.kernel.trim_end_matches("-pve")),
        "pveversion": format!("pve-manager/{}/e5010dcea566a205", n.pve_version),
        "cpuinfo": {
            "cpus": n.cpus, "cores": (n.cpus / 2).max(1), "sockets": 1, "model": "AMD Ryzen 7 5700G with Radeon Graphics",
            "mhz": "3800.000", "hvm": "1", "user_hz": 100, "flags": "fpu vme de pse tsc msr pae mce cx8 apic svm",
        },
        "memory": { "total": n.memory, "used": mem_used, "free": n.memory - mem_used, "available": n.memory - mem_used },
        "swap": { "total": 8u64 << 30, "used": 0, "free": 8u64 << 30 },
        "rootfs": { "total": n.rootfs, "used": n.rootfs / 10, "free": n.rootfs - n.rootfs / 10, "avail": n.rootfs - n.rootfs / 8 },
        "ksm": { "shared": 0 },
        "current-kernel": {
            "sysname": "Linux", "release": n.kernel, "machine": "x86_64",
            "version": format!("#1 SMP PREEMPT_DYNAMIC PMX {} (2025-10-10T08:04Z)", n.kernel.trim_end_matches("-pve")),
        },
        "boot-info": { "mode": "efi", "secureboot": 0 },
    }))
}

fn apt_row(p: &AptPackage) -> Value {
    let mut v = json!({
        "Package": p.package, "Title": p.title, "Description": format!("{}.", p.title), "Version": p.version,
        "Origin": p.origin, "Priority": "optional", "Section": p.section, "Arch": "amd64",
    });
    if let Some(old) = &p.old_version {
        v["OldVersion"] = json!(old);
    }
    v
}

/// `GET /nodes/{node}/apt/update`.
pub(crate) fn apt_list(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    ok(Value::Array(node(ctx)?.apt_updates.iter().map(apt_row).collect()))
}

/// `POST /nodes/{node}/apt/update`: task `aptupdate` (empty id) that refreshes the list.
pub(crate) fn apt_update(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let name = node(ctx)?.name.clone();
    let n2 = name.clone();
    task(ctx, &name, "aptupdate", "", move |t| {
        Box::pin(async move {
            t.log("starting apt-get update");
            t.log("Hit:1 http://deb.debian.org/debian trixie InRelease");
            t.log("Hit:2 http://download.proxmox.com/debian/pve trixie InRelease");
            t.sleep(t.part("aptupdate", 1)).await?;
            t.checkpoint()?;
            t.log("Reading package lists...");
            t.state(|c| {
                if let Some(n) = c.nodes.get_mut(&n2) {
                    n.apt_updates = n.apt_available.clone();
                }
            });
            Ok(())
        })
    })
}

/// `GET /nodes/{node}/apt/versions`.
pub(crate) fn apt_versions(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let n = node(ctx)?;
    let rows = n.apt_installed.iter().map(|p| {
        let mut v = apt_row(p);
        v["CurrentState"] = json!("Installed");
        if p.package == "proxmox-ve" {
            v["RunningKernel"] = json!(n.kernel);
            v["ManagerVersion"] = json!(n.pve_version);
        }
        v
    });
    ok(Value::Array(rows.collect()))
}

/// `GET /nodes/{node}/storage`.
pub(crate) fn storage(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let name = node(ctx)?.name.clone();
    let content: Vec<String> = ctx
        .params
        .str("content")
        .map(|c| split_list(&c))
        .unwrap_or_default();
    let only = ctx.params.str("storage");
    let c = &*ctx.cluster;
    let rows = c
        .storages
        .values()
        .filter(|s| s.available_on(&name))
        .filter(|s| only.as_deref().is_none_or(|o| o == s.id))
        .filter(|s| content.iter().all(|ct| s.has_content(ct)))
        .map(|s| {
            let used = super::storage::usage(c, &s.id).min(s.total);
            json!({
                "storage": s.id, "type": s.kind, "content": s.content.join(","), "shared": pve_bool(s.shared),
                "active": 1, "enabled": 1, "total": s.total, "used": used, "avail": s.total - used,
                "used_fraction": used as f64 / s.total.max(1) as f64,
            })
        });
    ok(Value::Array(rows.collect()))
}

fn status_class(t: &TaskInfo) -> &'static str {
    match t.exitstatus.as_deref() {
        None => "unknown",
        Some("OK") => "ok",
        Some(s) if s.starts_with("WARNINGS: ") => "warning",
        Some(_) => "error",
    }
}

/// `GET /nodes/{node}/tasks`.
pub(crate) fn tasks(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let name = node(ctx)?.name.clone();
    let p = &ctx.params;
    let (start, limit) = (
        p.int("start").unwrap_or(0).max(0) as usize,
        p.int("limit").unwrap_or(50).max(0) as usize,
    );
    let source = p.str("source").unwrap_or_else(|| "archive".into());
    let vmid = p.str("vmid");
    let typefilter = p.str("typefilter");
    let userfilter = p.str("userfilter");
    let errors = p.flag("errors");
    let (since, until) = (p.int("since"), p.int("until"));
    let statuses: Vec<String> = p.str("statusfilter").map(|s| split_list(&s)).unwrap_or_default();
    let tasks = ctx.shared.tasks();
    let mut list: Vec<&TaskInfo> = tasks
        .list
        .values()
        .filter(|t| t.node == name)
        .filter(|t| match source.as_str() {
            "active" => t.running(),
            "all" => true,
            _ => !t.running(),
        })
        .filter(|t| vmid.as_deref().is_none_or(|v| t.id == v))
        .filter(|t| typefilter.as_deref().is_none_or(|f| t.kind == f))
        .filter(|t| userfilter.as_deref().is_none_or(|f| t.user.contains(f)))
        .filter(|t| !errors || (!t.running() && !t.succeeded()))
        .filter(|t| since.is_none_or(|s| t.starttime >= s) && until.is_none_or(|u| t.starttime <= u))
        .filter(|t| statuses.is_empty() || statuses.iter().any(|s| s == status_class(t)))
        .collect();
    list.sort_by(|a, b| b.starttime.cmp(&a.starttime).then(b.pid.cmp(&a.pid)));
    let total = list.len() as u64;
    let limit = if limit == 0 { usize::MAX } else { limit };
    let rows: Vec<Value> = list
        .into_iter()
        .skip(start)
        .take(limit)
        .map(TaskInfo::list_json)
        .collect();
    Ok(Reply::Now(ApiOk {
        data: Value::Array(rows),
        total: Some(total),
    }))
}

fn find_task(ctx: &Ctx<'_>) -> ApiResult<TaskInfo> {
    let (name, upid) = (ctx.node()?, ctx.req("upid")?);
    if parse_upid(&upid).is_none() {
        return Err(ApiError::param("upid", "unable to parse worker upid"));
    }
    let tasks = ctx.shared.tasks();
    tasks
        .list
        .get(&upid)
        .filter(|t| t.node == name)
        .cloned()
        .ok_or_else(|| ApiError::param("upid", "no such task"))
}

/// `GET /nodes/{node}/tasks/{upid}/status`.
pub(crate) fn task_status(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    ok(find_task(ctx)?.status_json())
}

/// `GET /nodes/{node}/tasks/{upid}/log` (`{n, t}` lines plus `total`).
pub(crate) fn task_log(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let task = find_task(ctx)?;
    let start = ctx.params.int("start").unwrap_or(0).max(0) as usize;
    let limit = match ctx.params.int("limit").unwrap_or(50).max(0) as usize {
        0 => usize::MAX,
        n => n,
    };
    let lines = if task.log.is_empty() && task.running() {
        vec!["no content".to_string()]
    } else {
        task.log.clone()
    };
    let total = lines.len() as u64;
    let rows: Vec<Value> = lines
        .iter()
        .enumerate()
        .skip(start)
        .take(limit)
        .map(|(i, t)| json!({ "n": i + 1, "t": t }))
        .collect();
    Ok(Reply::Now(ApiOk {
        data: Value::Array(rows),
        total: Some(total),
    }))
}

/// `DELETE /nodes/{node}/tasks/{upid}`.
pub(crate) fn task_stop(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let task = find_task(ctx)?;
    ctx.shared.tasks().stop(&task.upid);
    ok(Value::Null)
}
