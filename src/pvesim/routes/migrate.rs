//! Clone and migrate (qemu-server `clone_vm`/`migrate_vm`, pve-container's counterparts).

use serde_json::{Value, json};

use super::{guest, ok, per_kind, set_lock, task};
use crate::pvesim::http::{ApiError, ApiResult, pve_bool};
use crate::pvesim::router::{Ctx, Reply};
use crate::pvesim::state::guest::{is_volume_key, volumes_of, with_mac};
use crate::pvesim::state::{Cluster, Guest, GuestKind, Power};
use crate::pvesim::tasks::TaskCtx;

fn shared_storages(cluster: &Cluster, g: &Guest) -> bool {
    g.volumes()
        .iter()
        .all(|(_, _, s)| cluster.storages.get(s).is_some_and(|s| s.shared))
}

fn clone(ctx: &mut Ctx<'_>, kind: GuestKind) -> ApiResult<Reply> {
    let newid = u32::try_from(ctx.req_int("newid")?)
        .map_err(|_| ApiError::param("newid", "value does not look like a valid VM ID"))?;
    let pool = ctx.params.str("pool");
    if let Some(p) = &pool {
        ctx.cluster.check_pool(p)?;
    }
    let g = guest(ctx, kind)?;
    let (vmid, source_node, label, agent) = (g.vmid, g.node.clone(), kind.label(), g.agent);
    let snapname = ctx.params.str("snapname");
    let storage = ctx.params.str("storage");
    let full = ctx.params.bool("full").unwrap_or(!g.is_template());
    let mut target = ctx.params.str("target").filter(|t| *t != source_node);
    if let Some(t) = &target {
        ctx.cluster.check_node(t)?;
    }
    if let Some(s) = &storage {
        ctx.cluster.storage(s)?;
    }
    if ctx.cluster.guests.contains_key(&newid) {
        return Err(match kind {
            GuestKind::Qemu => {
                ApiError::internal(format!("unable to create VM {newid}: config file already exists"))
            }
            GuestKind::Lxc => ctx
                .cluster
                .check_vmid_unused(newid)
                .err()
                .unwrap_or_else(|| ApiError::internal("exists")),
        });
    }
    g.check_lock().map_err(ApiError::internal)?;
    let source = match &snapname {
        Some(s) => g
            .snapshots
            .get(s)
            .map(|s| (s.config.clone(), s.disk.clone()))
            .ok_or_else(|| ApiError::internal(format!("snapshot '{s}' does not exist")))?,
        None => (g.config.clone(), g.disk.clone()),
    };
    if !full {
        if storage.is_some() {
            return Err(ApiError::internal(
                "parameter 'storage' not allowed for linked clones",
            ));
        }
        if ctx.params.has("format") {
            return Err(ApiError::internal(
                "parameter 'format' not allowed for linked clones",
            ));
        }
        if !g.is_template()
            && let Some((key, _, _)) = g.volumes().first()
        {
            return Err(ApiError::internal(format!(
                "Linked clone feature is not supported for drive '{key}'"
            )));
        }
    }
    if kind == GuestKind::Lxc && full && g.power.is_up() && snapname.is_none() {
        return Err(ApiError::internal(
            "Full clone of a running container is only possible from a snapshot",
        ));
    }
    if let Some(t) = &target {
        if !shared_storages(ctx.cluster, g) {
            return Err(ApiError::internal(format!(
                "can't clone {label} to node '{t}' ({label} uses local storage)"
            )));
        }
        if let Some(s) = &storage
            && !ctx.cluster.storages.get(s).is_some_and(|s| s.shared)
        {
            return Err(ApiError::internal(format!(
                "can't clone to non-shared storage '{s}'"
            )));
        }
    }
    let name_key = kind.name_key();
    let new_name = ctx.params.str(name_key).unwrap_or_else(|| match kind {
        GuestKind::Qemu => format!("Copy-of-VM-{}", g.name()),
        GuestKind::Lxc => g.name(),
    });
    let description = ctx.params.str("description");
    let node = target.take().unwrap_or_else(|| source_node.clone());
    let (mut config, disk) = source;
    let mut volumes_log = Vec::new();
    let mut disk_index = 0;
    for (key, value) in config.iter_mut() {
        if !is_volume_key(kind, key) || key.starts_with("unused") || value.contains("media=cdrom") {
            continue;
        }
        let mut parts: Vec<String> = value.split(',').map(str::to_string).collect();
        let (old_storage, old_name) = parts[0]
            .split_once(':')
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .unwrap_or_default();
        let new_storage = if full {
            storage.clone().unwrap_or(old_storage.clone())
        } else {
            old_storage.clone()
        };
        let new_volume = format!("vm-{newid}-disk-{disk_index}");
        disk_index += 1;
        parts[0] = if full {
            format!("{new_storage}:{new_volume}")
        } else {
            format!("{old_storage}:{old_name}/{new_volume}")
        };
        volumes_log.push(format!(
            "create {} clone of drive {key} ({old_storage}:{old_name})",
            if full { "full" } else { "linked" }
        ));
        *value = parts.join(",");
    }
    config.retain(|k, _| {
        !k.starts_with("unused") && !matches!(k.as_str(), "parent" | "template" | "lock" | "vmgenid")
    });
    config.insert(name_key.to_string(), new_name);
    config.insert("lock".into(), "clone".into());
    if let Some(d) = description {
        config.insert("description".into(), d);
    }
    let net_keys: Vec<String> = config.keys().filter(|k| k.starts_with("net")).cloned().collect();
    for key in net_keys {
        let mac = ctx.cluster.random_mac();
        if let Some(v) = config.get_mut(&key) {
            *v = with_mac(v, kind, &mac);
        }
    }
    let seed = ctx.cluster.fresh_seed();
    let day = ctx.shared.clock.day();
    let new_guest = Guest {
        vmid: newid,
        kind,
        node: node.clone(),
        config,
        snapshots: Default::default(),
        power: Power::Stopped,
        agent,
        disk: disk.fork(day, seed),
        exec: Default::default(),
        next_exec_pid: 1000,
        ip: None,
    };
    ctx.cluster.guests.insert(newid, new_guest);
    if let Some(p) = &pool {
        ctx.cluster.join_pool(p, newid);
    }
    let task_kind = format!("{}clone", kind.task_prefix());
    let tk = task_kind.clone();
    task(ctx, &source_node, &task_kind, &vmid.to_string(), move |t| {
        Box::pin(async move {
            for line in &volumes_log {
                t.log(line);
            }
            if let Err(e) = t.sleep(t.part(&tk, 1)).await.and_then(|()| t.checkpoint()) {
                t.state(|c| {
                    c.guests.remove(&newid);
                    c.leave_pools(newid);
                });
                return Err(e);
            }
            for _ in &volumes_log {
                t.log("transferred 100% (done)");
            }
            set_lock(&t, newid, None);
            Ok(())
        })
    })
}
per_kind!(clone_qemu, clone_lxc, clone);

/// Storages of the guest that `node` cannot use.
fn unavailable_storages(cluster: &Cluster, g: &Guest, node: &str) -> Vec<String> {
    let mut out: Vec<String> = g
        .volumes()
        .into_iter()
        .map(|v| v.2)
        .filter(|s| !cluster.storages.get(s).is_some_and(|st| st.available_on(node)))
        .collect();
    out.dedup();
    out
}

fn precondition(ctx: &mut Ctx<'_>, kind: GuestKind) -> ApiResult<Reply> {
    let g = guest(ctx, kind)?;
    let target = ctx.params.str("target");
    let c = &*ctx.cluster;
    let mut allowed = Vec::new();
    let mut not_allowed = serde_json::Map::new();
    for n in c
        .nodes
        .values()
        .filter(|n| n.name != g.node && target.as_deref().is_none_or(|t| t == n.name))
    {
        let missing = unavailable_storages(c, g, &n.name);
        if missing.is_empty() && n.online {
            allowed.push(n.name.clone());
        } else if kind == GuestKind::Qemu {
            not_allowed.insert(n.name.clone(), json!({ "unavailable_storages": missing }));
        } else {
            not_allowed.insert(n.name.clone(), json!({}));
        }
    }
    let running = pve_bool(g.power.is_up());
    if kind == GuestKind::Lxc {
        let mut v = json!({ "running": running, "allowed-nodes": allowed });
        if !not_allowed.is_empty() {
            v["not-allowed-nodes"] = Value::Object(not_allowed);
        }
        return ok(v);
    }
    let local_disks: Vec<Value> = g
        .volumes()
        .into_iter()
        .filter(|(_, _, s)| !c.storages.get(s).is_some_and(|st| st.shared))
        .map(|(key, volid, _)| {
            let size = g.config.get(&key).and_then(|v| v.split(',').find_map(|p| p.strip_prefix("size="))).map(crate::pvesim::state::guest::parse_size).unwrap_or(0);
            json!({ "volid": volid, "size": size, "cdrom": 0, "is_unused": pve_bool(key.starts_with("unused")) })
        })
        .collect();
    let mut v = json!({
        "running": running, "allowed_nodes": allowed, "local_disks": local_disks, "local_resources": [],
        "mapped-resources": [], "mapped-resource-info": {}, "has-dbus-vmstate": 0,
    });
    if !not_allowed.is_empty() {
        v["not_allowed_nodes"] = Value::Object(not_allowed);
    }
    ok(v)
}
per_kind!(precondition_qemu, precondition_lxc, precondition);

fn migrate(ctx: &mut Ctx<'_>, kind: GuestKind) -> ApiResult<Reply> {
    let target = ctx.req("target")?;
    let g = guest(ctx, kind)?;
    let (vmid, node, up, label) = (g.vmid, g.node.clone(), g.power.is_up(), kind.label());
    if target == node {
        return Err(ApiError::param("target", "target is local node."));
    }
    ctx.cluster.check_node(&target)?;
    g.check_lock().map_err(ApiError::internal)?;
    let online = ctx.params.flag("online");
    let restart = ctx.params.flag("restart");
    match kind {
        GuestKind::Qemu if up && !online => {
            return Err(ApiError::internal("can't migrate running VM without --online"));
        }
        GuestKind::Lxc if up && online => {
            return Err(ApiError::internal(
                "lxc live migration is currently not implemented",
            ));
        }
        GuestKind::Lxc if up && !restart => {
            return Err(ApiError::internal(
                "running container can only be migrated in restart mode",
            ));
        }
        _ => {}
    }
    let with_local = ctx.params.flag("with-local-disks");
    let local_disks = !shared_storages(ctx.cluster, g);
    let ha = ctx.cluster.ha_managed(kind, vmid);
    let task_kind = match (ha, kind) {
        (true, _) => "hamigrate",
        (false, GuestKind::Qemu) => "qmigrate",
        (false, GuestKind::Lxc) => "vzmigrate",
    }
    .to_string();
    let tk = task_kind.clone();
    task(ctx, &node, &task_kind, &vmid.to_string(), move |t| {
        Box::pin(async move {
            if ha {
                t.log(format!(
                    "Requesting HA migration for {label} {vmid} to node {target}"
                ));
            }
            if kind == GuestKind::Qemu && up && local_disks && !with_local {
                return Err("can't live migrate attached local disks without with-local-disks option".into());
            }
            run_migration(t, vmid, target, tk, up).await
        })
    })
}
per_kind!(migrate_qemu, migrate_lxc, migrate);

/// The migration itself: lock `migrate`, copy, move the config to `target`, unlock.
pub(crate) async fn run_migration(
    t: TaskCtx,
    vmid: u32,
    target: String,
    task_kind: String,
    keep_running: bool,
) -> Result<(), String> {
    let start = t.now();
    let (kind, label, target_ip, up, local) = t.state(|c| -> Result<_, String> {
        let g = c
            .guests
            .get(&vmid)
            .ok_or_else(|| format!("VM {vmid} does not exist"))?;
        g.check_lock()?;
        let n = c
            .nodes
            .get(&target)
            .ok_or_else(|| format!("no such cluster node '{target}'"))?;
        if !n.online {
            return Err(format!("ssh: connect to host {} port 22: No route to host", n.ip));
        }
        let missing = unavailable_storages(c, g, &target);
        if let Some(s) = missing.first() {
            return Err(format!("storage '{s}' is not available on node '{target}'"));
        }
        let local: Vec<String> = volumes_of(g.kind, &g.config)
            .into_iter()
            .filter(|(_, _, s)| !c.storages.get(s).is_some_and(|st| st.shared))
            .map(|v| v.1)
            .collect();
        Ok((g.kind, g.kind.label(), n.ip.clone(), g.power.is_up(), local))
    })?;
    set_lock(&t, vmid, Some("migrate"));
    let time = crate::pvesim::clock::format_epoch(start, "%Y-%m-%d %H:%M:%S");
    t.log(format!(
        "{time} starting migration of {label} {vmid} to node '{target}' ({target_ip})"
    ));
    for volid in &local {
        t.log(format!("{time} found local disk '{volid}' (attached)"));
    }
    if kind == GuestKind::Lxc && up {
        t.log(format!("shutdown CT {vmid}"));
    }
    if let Err(e) = t.sleep(t.part(&task_kind, 1)).await.and_then(|()| t.checkpoint()) {
        set_lock(&t, vmid, None);
        t.log(format!(
            "ERROR: migration aborted (duration {}): {e}",
            duration(t.now() - start)
        ));
        return Err("migration aborted".into());
    }
    let now = t.now();
    t.state(|c| {
        if let Some(g) = c.guests.get_mut(&vmid) {
            g.node = target.clone();
            g.config.remove("lock");
            if kind == GuestKind::Lxc && up {
                g.power = Power::Running { since: now };
            } else if up && !keep_running {
                g.power = Power::Stopped;
            }
        }
    });
    t.log(format!(
        "{} migration finished successfully (duration {})",
        crate::pvesim::clock::format_epoch(now, "%Y-%m-%d %H:%M:%S"),
        duration(now - start)
    ));
    Ok(())
}

fn duration(secs: i64) -> String {
    let s = secs.max(0);
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}
