//! Storage content: backups are the real files in a file-based storage's directory (with
//! `.notes` and `.protected` beside them, like pve-storage) or in-memory PBS snapshots.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::{ok, task};
use crate::pvesim::dump::parse_archive_name;
use crate::pvesim::http::{ApiError, ApiResult, pve_bool};
use crate::pvesim::router::{Ctx, Reply};
use crate::pvesim::state::{Cluster, GuestKind};

/// One backup on a storage.
#[derive(Debug, Clone)]
pub(crate) struct BackupEntry {
    pub(crate) volid: String,
    pub(crate) storage: String,
    /// The file (file-based storages).
    pub(crate) path: Option<PathBuf>,
    /// Index in `Cluster::pbs_backups` (PBS storages).
    pub(crate) pbs: Option<usize>,
    pub(crate) vmid: u32,
    pub(crate) kind: GuestKind,
    pub(crate) ctime: i64,
    pub(crate) size: u64,
    pub(crate) format: String,
    pub(crate) notes: Option<String>,
    pub(crate) protected: bool,
    /// PBS: the last verification (`state`, `upid`).
    pub(crate) verification: Option<(String, String)>,
}

impl BackupEntry {
    fn json(&self) -> Value {
        let mut v = json!({
            "volid": self.volid, "content": "backup", "format": self.format, "size": self.size,
            "ctime": self.ctime, "vmid": self.vmid, "subtype": self.kind.as_str(),
        });
        // Listings carry the first line (`file_read_firstline`; PBS: the snapshot `comment`);
        // the volume's own GET has all of it.
        if let Some(first) = self.notes.as_deref().and_then(|n| n.lines().next()) {
            v["notes"] = json!(first);
        }
        if self.protected {
            v["protected"] = pve_bool(true);
        }
        // pve-storage's PBSPlugin lists `verification` only for verified snapshots.
        if let Some((state, upid)) = &self.verification {
            v["verification"] = json!({ "state": state, "upid": upid });
        }
        v
    }
}

/// Backups on `storage` as `node` sees it (newest first): a local storage holds only what was
/// written on that node.
pub(crate) fn backups_on(cluster: &Cluster, storage: &str, node: &str) -> Vec<BackupEntry> {
    let Some(s) = cluster.storages.get(storage) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if s.kind == "pbs" {
        for (i, b) in cluster
            .pbs_backups
            .iter()
            .enumerate()
            .filter(|(_, b)| b.storage == storage)
        {
            out.push(BackupEntry {
                volid: b.volid(),
                storage: storage.to_string(),
                path: None,
                pbs: Some(i),
                vmid: b.vmid,
                kind: b.kind,
                ctime: b.backup_time,
                size: b.size,
                format: "pbs-".to_string() + if b.kind == GuestKind::Qemu { "vm" } else { "ct" },
                notes: b.notes.clone(),
                protected: b.protected,
                verification: b.verification.as_ref().map(|v| (v.state.clone(), v.upid.clone())),
            });
        }
    } else if s.is_file_based() && s.has_content("backup") {
        let dir = cluster.backup_dir_on(storage, node);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return out;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(parsed) = parse_archive_name(&name) else {
                continue;
            };
            let path = entry.path();
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            let notes = std::fs::read_to_string(format!("{}.notes", path.display()))
                .ok()
                .map(|n| n.trim_end().to_string());
            let protected = std::path::Path::new(&format!("{}.protected", path.display())).exists();
            out.push(BackupEntry {
                volid: format!("{storage}:backup/{name}"),
                storage: storage.to_string(),
                path: Some(path),
                pbs: None,
                vmid: parsed.vmid,
                kind: GuestKind::parse(&parsed.kind).unwrap_or(GuestKind::Qemu),
                ctime: parsed.ctime,
                size,
                format: parsed.format,
                notes,
                protected,
                verification: None,
            });
        }
    }
    out.sort_by(|a, b| b.ctime.cmp(&a.ctime).then(a.volid.cmp(&b.volid)));
    out
}

/// Bytes used on a storage as the main node sees it; see [`usage_on`].
pub(crate) fn usage(cluster: &Cluster, storage: &str) -> u64 {
    usage_on(cluster, storage, &cluster.local_node)
}

/// Bytes used on a storage as `node` sees it: a base of 5 GiB, guest disks by a quarter of
/// their configured size (thin provisioning; on a local storage only the node's own guests),
/// backups by their real size; a `storage-full` fault raises it so that at most its limit is
/// free.
pub(crate) fn usage_on(cluster: &Cluster, storage: &str, node: &str) -> u64 {
    let Some(s) = cluster.storages.get(storage) else {
        return 0;
    };
    let disks: u64 = cluster
        .guests
        .values()
        .filter(|g| s.shared || g.node == node)
        .flat_map(|g| {
            g.volumes()
                .into_iter()
                .filter(|(_, _, s)| s == storage)
                .map(move |(key, _, _)| {
                    let size = g
                        .config
                        .get(&key)
                        .and_then(|v| v.split(',').find_map(|p| p.strip_prefix("size=")))
                        .map(crate::pvesim::state::guest::parse_size)
                        .unwrap_or(0);
                    size / 4
                })
        })
        .sum();
    let backups: u64 = backups_on(cluster, storage, node).iter().map(|b| b.size).sum();
    let used = (5u64 << 30) + disks + backups;
    match s.avail_limit {
        Some(limit) => used.max(s.total.saturating_sub(limit)),
        None => used,
    }
}

/// Bytes free on a storage as `node` sees it.
pub(crate) fn avail_on(cluster: &Cluster, storage: &str, node: &str) -> u64 {
    let total = cluster.storages.get(storage).map_or(0, |s| s.total);
    total.saturating_sub(usage_on(cluster, storage, node))
}

/// The backup archive `volid` as a restore or `extractconfig` on `node` resolves it
/// (`PVE::Storage::abs_filesystem_path`, which activates the storage first): a shared storage
/// shows every node the same files, a non-shared one (`local`) only what lies on `node` itself,
/// so another node's local backup is "can't find file '<volid>'", like PVE's `-f $path` check.
/// PBS snapshots are looked up in the datastore, whichever node asks.
pub(crate) fn find_archive(cluster: &Cluster, node: &str, volid: &str) -> Result<BackupEntry, ApiError> {
    let (storage, _) = volid
        .split_once(':')
        .ok_or_else(|| ApiError::internal(format!("unable to parse volume ID '{volid}'")))?;
    let s = cluster.storage(storage)?;
    if s.kind == "pbs" {
        return find_backup_on(cluster, node, volid);
    }
    // activate_storage -> storage_check_enabled -> storage_check_node.
    if !s.available_on(node) {
        return Err(ApiError::internal(format!(
            "storage '{storage}' is not available on node '{node}'"
        )));
    }
    backups_on(cluster, storage, node)
        .into_iter()
        .find(|b| b.volid == volid)
        .ok_or_else(|| ApiError::internal(format!("can't find file '{volid}'")))
}

/// Finds a backup by volid as `node` sees the storage.
pub(crate) fn find_backup_on(cluster: &Cluster, node: &str, volid: &str) -> Result<BackupEntry, ApiError> {
    let (storage, _) = volid
        .split_once(':')
        .ok_or_else(|| ApiError::internal(format!("unable to parse volume ID '{volid}'")))?;
    cluster.storage(storage)?;
    backups_on(cluster, storage, node)
        .into_iter()
        .find(|b| b.volid == volid)
        .ok_or_else(|| ApiError::internal(format!("volume '{volid}' does not exist")))
}

fn storage_on_node(ctx: &Ctx<'_>) -> ApiResult<(String, String)> {
    let (node, storage) = (ctx.node()?, ctx.req("storage")?);
    ctx.cluster.check_node(&node)?;
    let s = ctx.cluster.storage(&storage)?;
    if !s.available_on(&node) {
        return Err(ApiError::internal(format!(
            "storage '{storage}' is not available on node '{node}'"
        )));
    }
    Ok((node, storage))
}

/// `GET /nodes/{node}/storage/{storage}/content`.
pub(crate) fn list(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let (node, storage) = storage_on_node(ctx)?;
    let content = ctx.params.str("content");
    let vmid = ctx.params.int("vmid");
    if content.as_deref().is_some_and(|c| c != "backup") {
        return ok(json!([]));
    }
    let rows = backups_on(ctx.cluster, &storage, &node)
        .into_iter()
        .filter(|b| vmid.is_none_or(|v| i64::from(b.vmid) == v))
        .map(|b| b.json());
    ok(Value::Array(rows.collect()))
}

fn volume(ctx: &Ctx<'_>) -> ApiResult<BackupEntry> {
    let (node, storage) = storage_on_node(ctx)?;
    let mut volid = ctx.req("volume")?;
    if !volid.contains(':') {
        volid = format!("{storage}:{volid}");
    }
    find_backup_on(ctx.cluster, &node, &volid)
}

/// `GET /nodes/{node}/storage/{storage}/content/{volume}`.
pub(crate) fn info(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let b = volume(ctx)?;
    let path = b
        .path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| b.volid.clone());
    let mut v = json!({ "path": path, "size": b.size, "used": b.size, "format": b.format });
    if let Some(n) = &b.notes {
        v["notes"] = json!(n);
    }
    if b.protected {
        v["protected"] = pve_bool(true);
    }
    ok(v)
}

/// Sets notes / protection of a backup (`update_volume_attribute`).
pub(crate) fn set_attributes(
    cluster: &mut Cluster,
    b: &BackupEntry,
    notes: Option<&str>,
    protected: Option<bool>,
) -> Result<(), String> {
    if let Some(i) = b.pbs {
        let backup = cluster.pbs_backups.get_mut(i).ok_or("backup vanished")?;
        if let Some(n) = notes {
            backup.notes = (!n.is_empty()).then(|| n.to_string());
        }
        if let Some(p) = protected {
            backup.protected = p;
        }
        return Ok(());
    }
    let path = b.path.as_ref().ok_or("no path")?.display().to_string();
    if let Some(n) = notes {
        let file = format!("{path}.notes");
        if n.is_empty() {
            std::fs::remove_file(&file).or_else(ignore_missing)
        } else {
            std::fs::write(&file, format!("{n}\n"))
        }
        .map_err(|e| format!("unable to write notes: {e}"))?;
    }
    if let Some(p) = protected {
        let file = format!("{path}.protected");
        if p {
            std::fs::write(&file, b"")
        } else {
            std::fs::remove_file(&file).or_else(ignore_missing)
        }
        .map_err(|e| format!("unable to set protection: {e}"))?;
    }
    Ok(())
}

fn ignore_missing(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

/// `PUT /nodes/{node}/storage/{storage}/content/{volume}` (`notes`, `protected`).
pub(crate) fn update(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let b = volume(ctx)?;
    let notes = ctx.params.str("notes");
    let protected = ctx.params.bool("protected");
    set_attributes(ctx.cluster, &b, notes.as_deref(), protected).map_err(ApiError::internal)?;
    ok(Value::Null)
}

/// Removes a backup (`archive_remove`: the file, its `.log` and `.notes`).
pub(crate) fn remove_backup(cluster: &mut Cluster, b: &BackupEntry) -> Result<(), String> {
    if let Some(i) = b.pbs {
        if b.protected {
            return Err(format!("cannot remove protected backup '{}'", b.volid));
        }
        if i < cluster.pbs_backups.len() {
            cluster.pbs_backups.remove(i);
        }
        return Ok(());
    }
    let path = b.path.as_ref().ok_or("no path")?;
    if b.protected {
        return Err(format!("cannot remove protected archive '{}'", path.display()));
    }
    std::fs::remove_file(path).map_err(|e| format!("removing archive {} failed: {e}", path.display()))?;
    let base = path.display().to_string();
    let _ = std::fs::remove_file(format!("{base}.notes"));
    let stem = base.split('.').next().unwrap_or(&base).to_string();
    let _ = std::fs::remove_file(format!("{stem}.log"));
    Ok(())
}

/// `DELETE /nodes/{node}/storage/{storage}/content/{volume}`: task `imgdel` (id
/// `<vmid>@<storage>`); with `delay` it waits and answers `null` when done in time.
pub(crate) fn delete(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let b = volume(ctx)?;
    let node = ctx.node()?;
    let delay = ctx.params.int("delay");
    let id = format!("{}@{}", b.vmid, b.storage);
    let volid = b.volid.clone();
    let reply = task(ctx, &node, "imgdel", &id, move |t| {
        Box::pin(async move {
            t.sleep(t.part("imgdel", 1)).await?;
            t.checkpoint()?;
            t.state(|c| {
                let current =
                    find_backup_on(c, &t.node, &volid).map_err(|e| e.message.trim_end().to_string())?;
                remove_backup(c, &current)
            })?;
            t.log(format!("Removed volume '{volid}'"));
            Ok(())
        })
    })?;
    match (delay, reply) {
        (Some(secs), Reply::Now(ok)) if secs > 0 => {
            let upid = ok.data.as_str().unwrap_or_default().to_string();
            Ok(Reply::WaitTask(upid, std::time::Duration::from_secs(secs as u64)))
        }
        (_, reply) => Ok(reply),
    }
}
