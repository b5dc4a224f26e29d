//! `/cluster/*`, `/storage` and `/nodes`.

use serde_json::{Map, Value, json};

use super::ok;
use crate::pvesim::auth::Caller;
use crate::pvesim::http::{ApiError, ApiResult, pve_bool};
use crate::pvesim::router::{Ctx, Reply};
use crate::pvesim::schema::split_list;
use crate::pvesim::state::{Cluster, GuestKind, HaResource, Node, Power};
use crate::pvesim::tasks::TaskSpec;

/// Memory in use on a node (running guests plus the host itself).
pub(crate) fn node_mem(cluster: &Cluster, node: &str) -> u64 {
    let guests: u64 = cluster
        .guests
        .values()
        .filter(|g| g.node == node && g.power.is_up())
        .map(|g| g.maxmem() / 2)
        .sum();
    (2u64 << 30) + guests
}

fn node_row(cluster: &Cluster, n: &Node, now: i64, fingerprint: Option<&str>) -> Value {
    let mut v = json!({ "node": n.name, "id": format!("node/{}", n.name), "type": "node", "level": "" });
    if let Some(fp) = fingerprint.filter(|f| !f.is_empty()) {
        v["ssl_fingerprint"] = json!(fp);
    }
    if !n.online {
        v["status"] = json!("offline");
        return v;
    }
    v["status"] = json!("online");
    v["maxcpu"] = json!(n.cpus);
    v["cpu"] = json!(0.02 + 0.01 * f64::from(n.nodeid % 5));
    v["maxmem"] = json!(n.memory);
    v["mem"] = json!(node_mem(cluster, &n.name).min(n.memory));
    v["maxdisk"] = json!(n.rootfs);
    v["disk"] = json!(n.rootfs / 10);
    v["uptime"] = json!((now - n.boot_time).max(0));
    v
}

fn guest_row(cluster: &Cluster, vmid: u32, now: i64) -> Option<Value> {
    let g = cluster.guests.get(&vmid)?;
    let online = cluster.nodes.get(&g.node).is_some_and(|n| n.online);
    let mut map = Map::new();
    map.insert("id".into(), json!(format!("{}/{}", g.kind.as_str(), g.vmid)));
    map.insert("type".into(), json!(g.kind.as_str()));
    map.insert("vmid".into(), json!(g.vmid));
    map.insert("node".into(), json!(g.node));
    if let Some(pool) = cluster.pool_of(vmid) {
        map.insert("pool".into(), json!(pool));
    }
    if !online {
        // What PVE shows for guests on a node that left the cluster: no live data at all.
        map.insert("status".into(), json!("unknown"));
        if let Some(tags) = g.tags() {
            map.insert("tags".into(), json!(tags));
        }
        return Some(Value::Object(map));
    }
    g.usage_fields(now, &mut map);
    // pvestatd writes `qmpstatus || status` into the RRD that `/cluster/resources` reads, so
    // a paused VM shows `paused` here (pve-manager PVE/Service/pvestatd.pm update_qemu_status,
    // PVE/API2Tools.pm extract_vm_stats).
    if g.kind == GuestKind::Qemu && matches!(g.power, Power::Paused { .. }) {
        map.insert("status".into(), json!("paused"));
    }
    // Config properties PVE adds to every guest row (`get_guest_config_properties`).
    if let Some(lock) = g.lock() {
        map.insert("lock".into(), json!(lock));
    }
    if let Some(tags) = g.tags() {
        map.insert("tags".into(), json!(tags));
    }
    if let Some(cpus) = map.remove("cpus") {
        map.insert("maxcpu".into(), cpus);
    }
    map.remove("pid");
    map.insert("template".into(), pve_bool(g.is_template()));
    if let Some(ha) = cluster.ha.get(&format!("{}:{}", g.kind.ha_type(), g.vmid)) {
        map.insert("hastate".into(), json!(ha.state));
    }
    Some(Value::Object(map))
}

/// `GET /cluster/resources`.
pub(crate) fn resources(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let filter = ctx.params.str("type");
    let now = ctx.now();
    let c = &*ctx.cluster;
    let want = |t: &str| filter.as_deref().is_none_or(|f| f == t);
    let mut rows = Vec::new();
    if want("vm") {
        rows.extend(c.guests.keys().filter_map(|id| guest_row(c, *id, now)));
    }
    if want("node") {
        rows.extend(c.nodes.values().map(|n| {
            let mut row = node_row(c, n, now, None);
            if n.online {
                row["cgroup-mode"] = json!(2);
            }
            row
        }));
    }
    if want("storage") {
        for n in c.nodes.values() {
            for s in c.storages.values().filter(|s| s.available_on(&n.name)) {
                let mut row = json!({
                    "id": format!("storage/{}/{}", n.name, s.id), "type": "storage", "storage": s.id,
                    "node": n.name, "status": if n.online { "available" } else { "unknown" },
                });
                if n.online {
                    row["plugintype"] = json!(s.kind);
                    row["content"] = json!(s.content.join(","));
                    row["shared"] = pve_bool(s.shared);
                    row["maxdisk"] = json!(s.total);
                    row["disk"] = json!(super::storage::usage_on(c, &s.id, &n.name));
                }
                rows.push(row);
            }
        }
    }
    ok(Value::Array(rows))
}

/// `GET /cluster/status`.
pub(crate) fn status(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let c = &*ctx.cluster;
    let mut rows = vec![json!({
        "type": "cluster", "id": "cluster", "name": c.name, "nodes": c.nodes.len(),
        "quorate": pve_bool(c.quorate()), "version": c.nodes.len() + 1,
    })];
    rows.extend(c.nodes.values().map(|n| {
        json!({
            "type": "node", "id": format!("node/{}", n.name), "name": n.name, "nodeid": n.nodeid,
            "ip": n.ip, "online": pve_bool(n.online), "local": pve_bool(n.name == ctx.serving_node), "level": "",
        })
    }));
    ok(Value::Array(rows))
}

/// `GET /cluster/nextid` (answers a JSON string, like real servers).
pub(crate) fn nextid(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    if let Some(vmid) = ctx.params.int("vmid") {
        let taken = u32::try_from(vmid)
            .ok()
            .is_some_and(|v| ctx.cluster.guests.contains_key(&v));
        if taken {
            return Err(ApiError::param("vmid", format!("VM {vmid} already exists")));
        }
        return ok(json!(vmid.to_string()));
    }
    match ctx.cluster.next_free_vmid() {
        Some(id) => ok(json!(id.to_string())),
        None => Err(ApiError::internal(
            "unable to get any free VMID in range [100, 1000000]",
        )),
    }
}

fn ha_json(r: &HaResource) -> Value {
    let (kind, _) = r.sid.split_once(':').unwrap_or(("vm", ""));
    let mut v = json!({ "sid": r.sid, "type": kind, "state": r.state, "digest": "2f3c1a9e0b7d6c5e4f3a2b1c0d9e8f7a6b5c4d3e" });
    for (k, val) in &r.options {
        v[k] = match val.parse::<i64>() {
            Ok(n) if k.starts_with("max_") || k == "failback" => json!(n),
            _ => json!(val),
        };
    }
    v
}

fn normalize_sid(sid: &str, cluster: &Cluster) -> String {
    if sid.contains(':') {
        return sid.to_string();
    }
    let kind = sid
        .parse::<u32>()
        .ok()
        .and_then(|v| cluster.guests.get(&v))
        .map_or("vm", |g| g.kind.ha_type());
    format!("{kind}:{sid}")
}

fn ha_guest(cluster: &Cluster, sid: &str) -> Option<u32> {
    let (kind, id) = sid.split_once(':')?;
    let vmid: u32 = id.parse().ok()?;
    cluster
        .guests
        .get(&vmid)
        .filter(|g| g.kind.ha_type() == kind)
        .map(|g| g.vmid)
}

/// Applies a requested HA state to the guest (the CRM acts immediately in the simulator).
fn apply_ha_state(cluster: &mut Cluster, sid: &str, now: i64) {
    let Some(vmid) = ha_guest(cluster, sid) else {
        return;
    };
    let state = cluster.ha.get(sid).map(|r| r.state.clone()).unwrap_or_default();
    if let Some(g) = cluster.guests.get_mut(&vmid) {
        match state.as_str() {
            "started" | "enabled" if !g.power.is_up() && !g.is_template() => {
                g.power = Power::Running { since: now }
            }
            "stopped" | "disabled" if g.power.is_up() => g.power = Power::Stopped,
            _ => {}
        }
    }
}

/// `GET /cluster/ha/resources`.
pub(crate) fn ha_list(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let filter = ctx.params.str("type");
    let rows = ctx
        .cluster
        .ha
        .values()
        .filter(|r| {
            filter
                .as_deref()
                .is_none_or(|f| r.sid.starts_with(&format!("{f}:")))
        })
        .map(ha_json);
    ok(Value::Array(rows.collect()))
}

const HA_OPTIONS: [&str; 5] = ["group", "max_restart", "max_relocate", "failback", "comment"];

/// `POST /cluster/ha/resources`.
pub(crate) fn ha_create(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let sid = normalize_sid(&ctx.req("sid")?, ctx.cluster);
    if ha_guest(ctx.cluster, &sid).is_none() {
        return Err(ApiError::internal(format!(
            "resource '{sid}' does not exist in cluster"
        )));
    }
    if ctx.cluster.ha.contains_key(&sid) {
        return Err(ApiError::internal(format!("resource ID '{sid}' already defined")));
    }
    let state = ctx.params.str("state").unwrap_or_else(|| "started".into());
    let options = HA_OPTIONS
        .iter()
        .filter_map(|k| ctx.params.str(k).map(|v| (k.to_string(), v)))
        .collect();
    ctx.cluster.ha.insert(
        sid.clone(),
        HaResource {
            sid: sid.clone(),
            state,
            options,
        },
    );
    apply_ha_state(ctx.cluster, &sid, ctx.shared.clock.now());
    ok(Value::Null)
}

fn ha_sid(ctx: &Ctx<'_>) -> ApiResult<String> {
    let sid = normalize_sid(&ctx.req("sid")?, ctx.cluster);
    if ctx.cluster.ha.contains_key(&sid) {
        Ok(sid)
    } else {
        Err(ApiError::internal(format!("no such resource '{sid}'")))
    }
}

/// `GET /cluster/ha/resources/{sid}`.
pub(crate) fn ha_get(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let sid = ha_sid(ctx)?;
    ok(ctx.cluster.ha.get(&sid).map(ha_json).unwrap_or(Value::Null))
}

/// `PUT /cluster/ha/resources/{sid}`.
pub(crate) fn ha_update(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let sid = ha_sid(ctx)?;
    let state = ctx.params.str("state");
    let deletes: Vec<String> = ctx
        .params
        .str("delete")
        .map(|d| split_list(&d))
        .unwrap_or_default();
    let updates: Vec<(String, String)> = HA_OPTIONS
        .iter()
        .filter_map(|k| ctx.params.str(k).map(|v| (k.to_string(), v)))
        .collect();
    if let Some(r) = ctx.cluster.ha.get_mut(&sid) {
        if let Some(state) = state {
            r.state = state;
        }
        for d in deletes {
            r.options.remove(&d);
        }
        r.options.extend(updates);
    }
    apply_ha_state(ctx.cluster, &sid, ctx.shared.clock.now());
    ok(Value::Null)
}

/// `DELETE /cluster/ha/resources/{sid}`.
pub(crate) fn ha_delete(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let sid = ha_sid(ctx)?;
    ctx.cluster.ha.remove(&sid);
    ok(Value::Null)
}

/// `POST /cluster/ha/resources/{sid}/migrate`: the CRM migrates the guest (a `qmigrate` /
/// `vzmigrate` task on the source node, run as `root@pam`).
pub(crate) fn ha_migrate(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let sid = ha_sid(ctx)?;
    let target = ctx.req("node")?;
    let target_online = ctx.cluster.check_node(&target)?.online;
    let vmid =
        ha_guest(ctx.cluster, &sid).ok_or_else(|| ApiError::internal(format!("no such resource '{sid}'")))?;
    let Some((source, kind)) = ctx.cluster.guests.get(&vmid).map(|g| (g.node.clone(), g.kind)) else {
        return Err(ApiError::internal(format!("no such resource '{sid}'")));
    };
    if source != target && target_online {
        let kind_name = if kind == GuestKind::Qemu {
            "qmigrate"
        } else {
            "vzmigrate"
        };
        let caller = Caller::User {
            userid: "root@pam".into(),
        };
        let spec = TaskSpec {
            node: source,
            kind: kind_name.to_string(),
            id: vmid.to_string(),
            caller,
        };
        let to = target.clone();
        ctx.shared.spawn_task(ctx.cluster, spec, move |t| {
            Box::pin(
                async move { super::migrate::run_migration(t, vmid, to, kind_name.to_string(), true).await },
            )
        });
    }
    ok(json!({ "sid": sid, "requested-node": target }))
}

/// `GET /storage`.
pub(crate) fn storage_list(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let filter = ctx.params.str("type");
    let rows = ctx
        .cluster
        .storages
        .values()
        .filter(|s| filter.as_deref().is_none_or(|f| f == s.kind))
        .map(|s| s.config_json());
    ok(Value::Array(rows.collect()))
}

/// `GET /storage/{storage}`.
pub(crate) fn storage_get(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let id = ctx.req("storage")?;
    ok(ctx.cluster.storage(&id)?.config_json())
}

/// `GET /nodes`.
pub(crate) fn nodes(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let now = ctx.now();
    let c = &*ctx.cluster;
    ok(Value::Array(
        c.nodes
            .values()
            .map(|n| {
                node_row(
                    c,
                    n,
                    now,
                    ctx.shared.fingerprints.get(&n.name).map(String::as_str),
                )
            })
            .collect(),
    ))
}
