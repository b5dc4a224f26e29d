//! Snapshots, following `PVE::AbstractConfig` (pve-guest-common): create (lock `snapshot`,
//! `snapstate: prepare`, then commit and set `parent`), delete (lock `snapshot-delete`, children
//! re-parented), rollback (lock `rollback`, stops the guest, restores config and disk, starts it
//! again when RAM was saved). Rollback to an older snapshot is refused when a disk is on ZFS, LVM
//! or a file-based storage, like pve-storage's `volume_rollback_is_possible`.

use serde_json::{Value, json};

use super::{failing_task, guest, ok, per_kind, set_lock, task};
use crate::pvesim::http::{ApiError, ApiResult, pve_bool};
use crate::pvesim::router::{Ctx, Reply};
use crate::pvesim::state::{Cluster, Guest, GuestKind, Power, Snapshot};

fn list(ctx: &mut Ctx<'_>, kind: GuestKind) -> ApiResult<Reply> {
    let g = guest(ctx, kind)?;
    let mut rows: Vec<Value> = g
        .snapshots
        .iter()
        .map(|(name, s)| {
            let mut v = json!({ "name": name, "snaptime": s.snaptime, "description": s.description });
            if kind == GuestKind::Qemu {
                v["vmstate"] = pve_bool(s.vmstate);
            }
            if let Some(parent) = s.config.get("parent") {
                v["parent"] = json!(parent);
            }
            if let Some(state) = &s.snapstate {
                v["snapstate"] = json!(state);
            }
            v
        })
        .collect();
    let mut current = json!({
        "name": "current", "digest": g.digest(), "running": pve_bool(g.power.is_up()), "description": "You are here!",
    });
    if let Some(parent) = g.config.get("parent") {
        current["parent"] = json!(parent);
    }
    rows.push(current);
    ok(Value::Array(rows))
}
per_kind!(list_qemu, list_lxc, list);

fn snapname(ctx: &Ctx<'_>) -> ApiResult<String> {
    ctx.req("snapname")
}

/// Whether the guest's storages can snapshot at all.
fn snapshot_supported(cluster: &Cluster, g: &Guest) -> bool {
    g.volumes().iter().all(|(_, volid, s)| {
        cluster.storages.get(s).is_some_and(|s| match s.kind.as_str() {
            "lvmthin" | "zfspool" | "zfs" | "rbd" | "btrfs" | "cephfs" => true,
            "dir" | "nfs" | "cifs" => volid.ends_with(".qcow2"),
            _ => false,
        })
    })
}

fn create(ctx: &mut Ctx<'_>, kind: GuestKind) -> ApiResult<Reply> {
    let name = snapname(ctx)?;
    if name == "current" || name.eq_ignore_ascii_case("pending") {
        return Err(ApiError::internal(format!(
            "unable to use snapshot name '{}' (reserved name)",
            name.to_lowercase()
        )));
    }
    let description = ctx.params.str("description").unwrap_or_default();
    let want_vmstate = kind == GuestKind::Qemu && ctx.params.flag("vmstate");
    let now = ctx.now();
    let day = ctx.shared.clock.day();
    let g = guest(ctx, kind)?;
    let (vmid, node) = (g.vmid, g.node.clone());
    let task_kind = format!("{}snapshot", kind.task_prefix());
    // __snapshot_prepare, run right away so a conflicting call sees the lock.
    let prepared: Result<(), String> = (|| {
        if g.is_template() {
            return Err("you can't take a snapshot if it's a template".into());
        }
        g.check_lock()?;
        if g.snapshots.contains_key(&name) {
            return Err(format!("snapshot name '{name}' already used"));
        }
        if !snapshot_supported(ctx.cluster, g) {
            return Err("snapshot feature is not available".into());
        }
        Ok(())
    })();
    if let Err(msg) = prepared {
        return failing_task(ctx, &node, &task_kind, &vmid.to_string(), msg);
    }
    let g = ctx
        .cluster
        .guests
        .get_mut(&vmid)
        .ok_or_else(|| ApiError::internal("guest vanished"))?;
    let mut config = g.config.clone();
    for k in ["lock", "description"] {
        config.remove(k);
    }
    config.retain(|k, _| !k.starts_with("unused"));
    let vmstate = want_vmstate && g.power.is_up();
    g.config.insert("lock".into(), "snapshot".into());
    for s in g.snapshots.values_mut() {
        if s.config.get("parent") == Some(&name) {
            s.config.remove("parent");
        }
    }
    g.snapshots.insert(
        name.clone(),
        Snapshot {
            config,
            description,
            snaptime: now,
            vmstate,
            snapstate: Some("prepare".into()),
            disk: g.disk.frozen(day),
        },
    );
    let tk = task_kind.clone();
    task(ctx, &node, &task_kind, &vmid.to_string(), move |t| {
        Box::pin(async move {
            if vmstate {
                t.log("saving VM state and RAM using storage 'local-lvm'");
            }
            let waited = t.sleep(t.part(&tk, 1)).await.and_then(|()| t.checkpoint());
            let result = t.state(|c| {
                let g = c
                    .guests
                    .get_mut(&vmid)
                    .ok_or_else(|| "guest vanished".to_string())?;
                g.config.remove("lock");
                if let Err(e) = &waited {
                    g.snapshots.remove(&name);
                    return Err(e.clone());
                }
                if let Some(s) = g.snapshots.get_mut(&name) {
                    s.snapstate = None;
                }
                g.config.insert("parent".into(), name.clone());
                Ok(())
            });
            if result.is_err() {
                t.log("snapshot create failed: starting cleanup");
            }
            result
        })
    })
}
per_kind!(create_qemu, create_lxc, create);

fn delete(ctx: &mut Ctx<'_>, kind: GuestKind) -> ApiResult<Reply> {
    let name = snapname(ctx)?;
    let g = guest(ctx, kind)?;
    let (vmid, node) = (g.vmid, g.node.clone());
    let task_kind = format!("{}delsnapshot", kind.task_prefix());
    let checked: Result<(), String> = (|| {
        if !g.snapshots.contains_key(&name) {
            return Err(format!("snapshot '{name}' does not exist"));
        }
        g.check_lock()?;
        if g.is_template() {
            return Err("you can't delete a snapshot if vm is a template".into());
        }
        Ok(())
    })();
    if let Err(msg) = checked {
        return failing_task(ctx, &node, &task_kind, &vmid.to_string(), msg);
    }
    if let Some(g) = ctx.cluster.guests.get_mut(&vmid) {
        g.config.insert("lock".into(), "snapshot-delete".into());
        if let Some(s) = g.snapshots.get_mut(&name) {
            s.snapstate = Some("delete".into());
        }
    }
    let tk = task_kind.clone();
    task(ctx, &node, &task_kind, &vmid.to_string(), move |t| {
        Box::pin(async move {
            let waited = t.sleep(t.part(&tk, 1)).await.and_then(|()| t.checkpoint());
            t.state(|c| {
                let g = c
                    .guests
                    .get_mut(&vmid)
                    .ok_or_else(|| "guest vanished".to_string())?;
                g.config.remove("lock");
                waited?;
                let removed = g.snapshots.remove(&name);
                let new_parent = removed.as_ref().and_then(|s| s.config.get("parent").cloned());
                let relink = |config: &mut std::collections::BTreeMap<String, String>| {
                    if config.get("parent") == Some(&name) {
                        match &new_parent {
                            Some(p) => config.insert("parent".into(), p.clone()),
                            None => config.remove("parent"),
                        };
                    }
                };
                relink(&mut g.config);
                for s in g.snapshots.values_mut() {
                    relink(&mut s.config);
                }
                Ok(())
            })
        })
    })
}
per_kind!(delete_qemu, delete_lxc, delete);

fn rollback(ctx: &mut Ctx<'_>, kind: GuestKind) -> ApiResult<Reply> {
    let name = snapname(ctx)?;
    let start = ctx.params.flag("start");
    let g = guest(ctx, kind)?;
    let (vmid, node, label) = (g.vmid, g.node.clone(), kind.label());
    let task_kind = format!("{}rollback", kind.task_prefix());
    let checked: Result<(), String> = (|| {
        if g.is_template() {
            return Err("you can't rollback if vm is a template".into());
        }
        let snap = g
            .snapshots
            .get(&name)
            .ok_or_else(|| format!("snapshot '{name}' does not exist"))?;
        for (_, volid, storage) in crate::pvesim::state::guest::volumes_of(kind, &snap.config) {
            let latest_only = ctx
                .cluster
                .storages
                .get(&storage)
                .is_some_and(|s| s.rollback_only_latest());
            let newer = g
                .snapshots
                .iter()
                .any(|(n, s)| n != &name && s.snaptime > snap.snaptime);
            if latest_only && newer {
                return Err(format!(
                    "can't rollback, '{name}' is not most recent snapshot on '{volid}'"
                ));
            }
        }
        if let Some(state) = &snap.snapstate {
            return Err(format!(
                "unable to rollback to incomplete snapshot (snapstate = {state})"
            ));
        }
        g.check_lock()
    })();
    if let Err(msg) = checked {
        return failing_task(ctx, &node, &task_kind, &vmid.to_string(), msg);
    }
    let was_up = g.power.is_up();
    if let Some(g) = ctx.cluster.guests.get_mut(&vmid) {
        g.config.insert("lock".into(), "rollback".into());
    }
    let tk = task_kind.clone();
    task(ctx, &node, &task_kind, &vmid.to_string(), move |t| {
        Box::pin(async move {
            if was_up {
                t.log(format!("stopping {label} {vmid}"));
                t.state(|c| {
                    if let Some(g) = c.guests.get_mut(&vmid) {
                        g.power = Power::Stopped;
                    }
                });
            }
            if let Err(e) = t.sleep(t.part(&tk, 1)).await.and_then(|()| t.checkpoint()) {
                set_lock(&t, vmid, None);
                return Err(e);
            }
            let (now, day) = (t.now(), t.day());
            t.state(|c| {
                let seed = c.fresh_seed();
                let g = c
                    .guests
                    .get_mut(&vmid)
                    .ok_or_else(|| "guest vanished".to_string())?;
                let snap = g
                    .snapshots
                    .get(&name)
                    .cloned()
                    .ok_or_else(|| format!("snapshot '{name}' does not exist"))?;
                let mut config = snap.config.clone();
                for (k, v) in &g.config {
                    if k.starts_with("unused") || k == "description" {
                        config.insert(k.clone(), v.clone());
                    }
                }
                config.remove("lock");
                config.insert("parent".into(), name.clone());
                g.config = config;
                g.disk = snap.disk.fork(day, seed);
                if (snap.vmstate && kind == GuestKind::Qemu) || start {
                    g.power = Power::Running { since: now };
                }
                Ok(())
            })
        })
    })
}
per_kind!(rollback_qemu, rollback_lxc, rollback);

fn config_get(ctx: &mut Ctx<'_>, kind: GuestKind) -> ApiResult<Reply> {
    let name = snapname(ctx)?;
    let g = guest(ctx, kind)?;
    let s = g
        .snapshots
        .get(&name)
        .ok_or_else(|| ApiError::internal(format!("snapshot '{name}' does not exist")))?;
    ok(Value::Object(s.config_json(kind)))
}
per_kind!(config_get_qemu, config_get_lxc, config_get);

fn config_put(ctx: &mut Ctx<'_>, kind: GuestKind) -> ApiResult<Reply> {
    let name = snapname(ctx)?;
    let description = ctx.params.str("description");
    let vmid = guest(ctx, kind)?.vmid;
    let g = ctx
        .cluster
        .guests
        .get_mut(&vmid)
        .ok_or_else(|| ApiError::internal("guest vanished"))?;
    g.check_lock().map_err(ApiError::internal)?;
    let s = g
        .snapshots
        .get_mut(&name)
        .ok_or_else(|| ApiError::internal(format!("snapshot '{name}' does not exist")))?;
    if let Some(d) = description {
        s.description = d;
    }
    ok(Value::Null)
}
per_kind!(config_put_qemu, config_put_lxc, config_put);
