//! Guest config (GET/PUT, qemu's asynchronous POST), `feature` and `template`.
//!
//! Changes apply at once (the simulator has no pending section). New disks (`scsi1:
//! local-lvm:10`) get a volume name, new NICs a random `BC:24:11` MAC, deleted disks become
//! `unusedN`, like qemu-server and pve-container do.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{check_lock, guest, ok, per_kind, task};
use crate::pvesim::http::{ApiError, ApiResult, Params, pve_bool, value_text};
use crate::pvesim::router::{Ctx, Reply};
use crate::pvesim::schema::split_list;
use crate::pvesim::state::guest::is_volume_key;
use crate::pvesim::state::{Cluster, GuestKind};

/// Parameters that are not config keys.
const NOT_CONFIG: &[&str] = &[
    "node",
    "vmid",
    "digest",
    "delete",
    "revert",
    "skiplock",
    "force",
    "background_delay",
];

fn get(ctx: &mut Ctx<'_>, kind: GuestKind) -> ApiResult<Reply> {
    let g = guest(ctx, kind)?;
    if let Some(snap) = ctx.params.str("snapshot") {
        let s = g
            .snapshots
            .get(&snap)
            .ok_or_else(|| ApiError::internal(format!("snapshot '{snap}' does not exist")))?;
        let mut map = s.config_json(kind);
        map.insert("digest".into(), json!(g.digest()));
        return ok(Value::Object(map));
    }
    ok(g.config_json())
}
per_kind!(get_qemu, get_lxc, get);

/// Applies a config update (`update_vm_api` / `update_pct_config`) to the guest `vmid`.
pub(crate) fn apply_update(
    cluster: &mut Cluster,
    vmid: u32,
    params: &Params,
    skiplock: bool,
) -> Result<(), ApiError> {
    let kind = cluster
        .guests
        .get(&vmid)
        .map(|g| g.kind)
        .ok_or_else(|| ApiError::internal(format!("VM {vmid} does not exist")))?;
    let mut updates: BTreeMap<String, String> = BTreeMap::new();
    for key in params.keys().filter(|k| !NOT_CONFIG.contains(&k.as_str())) {
        if let Some(value) = params.get(key).and_then(value_text) {
            updates.insert(key.clone(), value);
        }
    }
    let deletes: Vec<String> = params.str("delete").map(|d| split_list(&d)).unwrap_or_default();
    if let Some(both) = deletes.iter().find(|d| updates.contains_key(*d)) {
        return Err(ApiError::param(
            both.clone(),
            "unable to delete and set the same option",
        ));
    }
    for (key, value) in updates.iter_mut() {
        prepare_value(cluster, kind, vmid, key, value)?;
    }
    let g = cluster
        .guests
        .get_mut(&vmid)
        .ok_or_else(|| ApiError::internal(format!("VM {vmid} does not exist")))?;
    if let Some(digest) = params.str("digest")
        && !digest.is_empty()
        && digest != g.digest()
    {
        return Err(ApiError::internal(
            "detected modified configuration - file changed by other user? Try again.",
        ));
    }
    if !skiplock {
        g.check_lock().map_err(ApiError::internal)?;
    }
    for key in deletes {
        match g.config.remove(&key) {
            Some(old)
                if is_volume_key(kind, &key)
                    && !key.starts_with("unused")
                    && !old.contains("media=cdrom") =>
            {
                let volid = old.split(',').next().unwrap_or("").to_string();
                let slot = (0..256)
                    .map(|i| format!("unused{i}"))
                    .find(|k| !g.config.contains_key(k));
                if let Some(slot) = slot {
                    g.config.insert(slot, volid);
                }
            }
            _ => {}
        }
    }
    for (key, value) in updates {
        g.config.insert(key, value);
    }
    Ok(())
}

/// Fills in what PVE adds to new values: MACs, volume names of new disks, tag cleanup.
pub(crate) fn prepare_value(
    cluster: &mut Cluster,
    kind: GuestKind,
    vmid: u32,
    key: &str,
    value: &mut String,
) -> Result<(), ApiError> {
    if key == "tags" {
        let mut tags: Vec<String> = split_list(value);
        tags.dedup();
        *value = tags.join(";");
    } else if key.starts_with("net") && key[3..].bytes().all(|b| b.is_ascii_digit()) {
        let mac_key = if kind == GuestKind::Lxc { "hwaddr" } else { "" };
        let mut parts: Vec<String> = value.split(',').map(str::to_string).collect();
        if kind == GuestKind::Lxc {
            if !parts.iter().any(|p| p.starts_with("hwaddr=")) {
                parts.push(format!("{mac_key}={}", cluster.random_mac()));
            }
        } else if let Some(first) = parts.first().cloned() {
            let model = first.strip_prefix("model=").unwrap_or(&first).to_string();
            if !model.contains('=') && !parts.iter().any(|p| p.starts_with("macaddr=")) {
                parts[0] = format!("{model}={}", cluster.random_mac());
            }
        }
        *value = parts.join(",");
    } else if is_volume_key(kind, key) && !key.starts_with("unused") && !value.contains("media=cdrom") {
        let mut parts: Vec<String> = value.split(',').map(str::to_string).collect();
        let first = parts.first().cloned().unwrap_or_default();
        if let Some((storage, size)) = first.split_once(':')
            && size.parse::<f64>().is_ok()
        {
            let s = cluster.storage(storage)?;
            let content = if kind == GuestKind::Qemu {
                "images"
            } else {
                "rootdir"
            };
            if !s.has_content(content) {
                return Err(ApiError::param(
                    key,
                    format!("storage '{storage}' does not support container directories"),
                ));
            }
            let used: Vec<String> = cluster
                .guests
                .get(&vmid)
                .map(|g| g.volumes().into_iter().map(|v| v.1).collect())
                .unwrap_or_default();
            let n = (0..)
                .find(|n| !used.iter().any(|v| v.ends_with(&format!("vm-{vmid}-disk-{n}"))))
                .unwrap_or(0);
            parts[0] = format!("{storage}:vm-{vmid}-disk-{n}");
            parts.retain(|p| !p.starts_with("size="));
            parts.push(format!("size={size}G"));
            *value = parts.join(",");
        }
    }
    Ok(())
}

fn put(ctx: &mut Ctx<'_>, kind: GuestKind) -> ApiResult<Reply> {
    let g = guest(ctx, kind)?;
    let vmid = g.vmid;
    let skiplock = ctx.params.flag("skiplock");
    if skiplock {
        check_lock(ctx, g)?;
    }
    let params = ctx.params.clone();
    apply_update(ctx.cluster, vmid, &params, skiplock)?;
    ok(Value::Null)
}
per_kind!(put_qemu, put_lxc, put);

/// `POST /nodes/{node}/qemu/{vmid}/config`: the same update in a `qmconfig` task.
pub(crate) fn post_qemu(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let g = guest(ctx, GuestKind::Qemu)?;
    let (vmid, node) = (g.vmid, g.node.clone());
    let skiplock = ctx.params.flag("skiplock");
    if skiplock {
        check_lock(ctx, g)?;
    }
    let params = ctx.params.clone();
    task(ctx, &node, "qmconfig", &vmid.to_string(), move |t| {
        Box::pin(async move {
            t.sleep(t.part("qmconfig", 1)).await?;
            t.checkpoint()?;
            t.state(|c| apply_update(c, vmid, &params, skiplock))
                .map_err(|e| e.message.trim_end().to_string())?;
            t.log(format!(
                "update VM {vmid}: {}",
                params
                    .keys()
                    .filter(|k| !NOT_CONFIG.contains(&k.as_str()))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
            Ok(())
        })
    })
}

/// Whether every volume's storage supports snapshots (lvmthin, zfs, rbd, btrfs; qcow2 on files).
fn snapshot_capable(cluster: &Cluster, volumes: &[(String, String, String)]) -> bool {
    volumes.iter().all(|(_, volid, storage)| {
        cluster
            .storages
            .get(storage)
            .is_some_and(|s| match s.kind.as_str() {
                "lvmthin" | "zfspool" | "rbd" | "btrfs" | "cephfs" => true,
                "dir" | "nfs" | "cifs" => volid.ends_with(".qcow2"),
                _ => false,
            })
    })
}

fn feature(ctx: &mut Ctx<'_>, kind: GuestKind) -> ApiResult<Reply> {
    let g = guest(ctx, kind)?;
    let which = ctx.req("feature")?;
    let volumes = g.volumes();
    let has = match which.as_str() {
        "snapshot" => snapshot_capable(ctx.cluster, &volumes),
        "clone" => g.is_template() && snapshot_capable(ctx.cluster, &volumes),
        _ => true, // copy: a full copy always works
    };
    let mut res = json!({ "hasFeature": pve_bool(has) });
    if kind == GuestKind::Qemu {
        let shared = volumes
            .iter()
            .all(|(_, _, s)| ctx.cluster.storages.get(s).is_some_and(|s| s.shared));
        let nodes: Vec<&String> = ctx
            .cluster
            .nodes
            .values()
            .filter(|n| n.online && (shared || n.name == g.node))
            .filter(|n| {
                volumes.iter().all(|(_, _, s)| {
                    ctx.cluster
                        .storages
                        .get(s)
                        .is_some_and(|s| s.available_on(&n.name))
                })
            })
            .map(|n| &n.name)
            .collect();
        res["nodes"] = json!(nodes);
    }
    ok(res)
}
per_kind!(feature_qemu, feature_lxc, feature);

fn to_base_volumes(config: &mut BTreeMap<String, String>, kind: GuestKind) {
    for (key, value) in config.iter_mut() {
        if is_volume_key(kind, key) && !key.starts_with("unused") {
            *value = value.replacen(":vm-", ":base-", 1);
        }
    }
}

/// `POST /nodes/{node}/qemu/{vmid}/template` (task `qmtemplate`).
pub(crate) fn template_qemu(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let g = guest(ctx, GuestKind::Qemu)?;
    let (vmid, node) = (g.vmid, g.node.clone());
    if g.is_template() {
        return Err(ApiError::internal("you can't convert a template to a template"));
    }
    if g.power.is_up() {
        return Err(ApiError::internal(
            "you can't convert a VM to template if VM is running",
        ));
    }
    g.check_lock().map_err(ApiError::internal)?;
    task(ctx, &node, "qmtemplate", &vmid.to_string(), move |t| {
        Box::pin(async move {
            t.sleep(t.part("qmtemplate", 1)).await?;
            t.checkpoint()?;
            t.state(|c| {
                if let Some(g) = c.guests.get_mut(&vmid) {
                    to_base_volumes(&mut g.config, GuestKind::Qemu);
                    g.config.insert("template".into(), "1".into());
                }
            });
            Ok(())
        })
    })
}

/// `POST /nodes/{node}/lxc/{vmid}/template` (synchronous, returns null).
pub(crate) fn template_lxc(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let g = guest(ctx, GuestKind::Lxc)?;
    let vmid = g.vmid;
    if g.is_template() {
        return Err(ApiError::internal("you can't convert a template to a template"));
    }
    if g.power.is_up() {
        return Err(ApiError::internal(
            "you can't convert a CT to template if the CT is running",
        ));
    }
    g.check_lock().map_err(ApiError::internal)?;
    if let Some(g) = ctx.cluster.guests.get_mut(&vmid) {
        to_base_volumes(&mut g.config, GuestKind::Lxc);
        g.config.insert("template".into(), "1".into());
    }
    ok(Value::Null)
}
