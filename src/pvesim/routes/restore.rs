//! `POST /nodes/{node}/qemu` and `POST /nodes/{node}/lxc`: create a guest, or restore one from
//! a backup (`archive` for VMs, `ostemplate` + `restore=1` for containers). Restores stream the
//! archive back and fail the task on corruption; the guest is locked `create` meanwhile.
//!
//! A restore takes a fixed overhead plus the backed-up disks' size over a throughput (capped by
//! `bwlimit`), in simulated time (so `time_scale` applies), unless `SimConfig::task_durations`
//! fixes the task's duration. An injected `qmrestore`/`vzrestore` task failure strikes half-way,
//! after the volumes were allocated. Cleanup is PVE's: a failed `qmrestore` frees the volumes it
//! allocated but leaves the VM's config behind, empty and unlocked ("VM N state is NOT cleaned
//! up"), so the VMID stays taken; a failed `vzrestore` of a new container removes it entirely.
//! `live-restore` (VMs): refused inside the task for non-PBS archives with PVE's message; from a
//! PBS backup the VM runs at once (config locked `create`) while the task restores; if that
//! fails, the VM is stopped and its config and volumes stay ("live-restore failed").
//! A target storage without room for the restored disks (counted like `usage`: a quarter of
//! each disk's size) fails the task half-way with "No space left on device" (the exact
//! message of each storage plugin is not modelled).
//!
//! The archive is resolved as the target node sees it ([`find_archive`]): a backup on another
//! node's non-shared storage (`local`) is not there. qemu-server resolves it before locking the
//! VMID (`$classify_restore_archive` -> `abs_filesystem_path`), so the POST fails with a 500
//! "can't find file '<volid>'"; pve-container does it in the `vzrestore` worker (after
//! "recovering backed-up configuration from ..."), so that task fails with the same message.
//! A legacy qemu `.tar` archive cannot take config overrides (`restore_tar_archive`); the
//! simulator never writes one, but lists and refuses a hand-placed one like PVE.

use std::collections::BTreeMap;
use std::time::Duration;

use super::restore_config::{merge_config, new_guest_config, override_keys, parse_config_text};
use super::storage::{find_archive, usage};
use super::task;
use crate::pvesim::clock::DAY_SECS;
use crate::pvesim::dump::{DumpHeader, parse_archive_name, read_dump};
use crate::pvesim::http::{ApiError, ApiResult, Params};
use crate::pvesim::router::{Ctx, Reply};
use crate::pvesim::state::guest::{is_volume_key, parse_size};
use crate::pvesim::state::{AgentState, Cluster, Guest, GuestKind, Power, PseudoDisk};
use crate::pvesim::tasks::TaskCtx;

/// Restore throughput without `bwlimit`, bytes per simulated second.
const RESTORE_BYTES_PER_SEC: f64 = (256u64 << 20) as f64;
/// Fixed part of a restore (allocate volumes, write the config), simulated seconds.
const RESTORE_OVERHEAD_SECS: f64 = 2.0;
/// Progress steps logged (and waited) during a restore; a failure strikes after half of them.
const RESTORE_STEPS: u32 = 4;

/// The size of the disks in a backed-up config (what the restore writes).
fn backed_up_disk_bytes(kind: GuestKind, config_text: &str) -> u64 {
    parse_config_text(config_text)
        .iter()
        .filter(|(k, v)| is_volume_key(kind, k) && !k.starts_with("unused") && !v.contains("media=cdrom"))
        .filter_map(|(_, v)| v.split(',').find_map(|p| p.strip_prefix("size=")).map(parse_size))
        .sum()
}

/// The simulated duration of a restore of `bytes` with `bwlimit` KiB/s (0 or none: unlimited).
fn restore_duration(t: &TaskCtx, task_kind: &str, bytes: u64, bwlimit: Option<i64>) -> Duration {
    if let Some(fixed) = t.shared().durations.get(task_kind) {
        return *fixed;
    }
    let rate = match bwlimit {
        Some(kib) if kib > 0 => RESTORE_BYTES_PER_SEC.min(kib as f64 * 1024.0),
        _ => RESTORE_BYTES_PER_SEC,
    };
    Duration::from_secs_f64(RESTORE_OVERHEAD_SECS + bytes as f64 / rate)
}

/// A failed restore: the message and the volumes it had allocated.
struct Failed {
    message: String,
    allocated: Vec<String>,
    /// A live-restore that failed after the VM started: its config (with the volumes) stays.
    live_config: Option<BTreeMap<String, String>>,
}

impl From<String> for Failed {
    fn from(message: String) -> Self {
        Self {
            message,
            allocated: Vec::new(),
            live_config: None,
        }
    }
}

/// What the restore task reads.
enum Source {
    File(std::path::PathBuf),
    Pbs {
        config: String,
        disk: PseudoDisk,
        vmid: u32,
        kind: GuestKind,
        backup_time: i64,
    },
}

/// What a restore on `node` reads for `archive`.
fn source_on(cluster: &Cluster, node: &str, archive: &str) -> Result<Source, ApiError> {
    let backup = find_archive(cluster, node, archive)?;
    match (&backup.path, backup.pbs) {
        (Some(path), _) => Ok(Source::File(path.clone())),
        (None, Some(i)) => {
            let b = cluster
                .pbs_backups
                .get(i)
                .ok_or_else(|| ApiError::internal("backup vanished"))?;
            Ok(Source::Pbs {
                config: b.config_text.clone(),
                disk: b.disk.clone(),
                vmid: b.vmid,
                kind: b.kind,
                backup_time: b.backup_time,
            })
        }
        _ => Err(ApiError::internal(format!("can't find file '{archive}'"))),
    }
}

/// Whether `path` is a legacy tar archive (`archive_info` format `tar`: `.tar[.gz|...]`, `.tgz`).
fn is_tar_archive(path: &std::path::Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(parse_archive_name)
        .is_some_and(|a| a.format == "tgz" || a.format.starts_with("tar"))
}

fn check_existing_qemu(ctx: &Ctx<'_>, vmid: u32, node: &str, force: bool) -> ApiResult<bool> {
    let Some(g) = ctx.cluster.guests.get(&vmid) else {
        return Ok(false);
    };
    if g.node != node {
        return Err(ApiError::internal(format!(
            "unable to restore vm {vmid} - already existing on cluster node '{}'",
            g.node
        )));
    }
    if g.config.get("protection").is_some_and(|p| p == "1") {
        return Err(ApiError::internal(format!(
            "unable to restore VM {vmid} - protection mode enabled"
        )));
    }
    if !force {
        return Err(ApiError::internal(format!(
            "unable to restore vm {vmid} - config file already exists"
        )));
    }
    if g.power.is_up() {
        return Err(ApiError::internal(format!(
            "unable to restore vm {vmid} - vm is running"
        )));
    }
    if g.is_template() {
        return Err(ApiError::internal(format!(
            "unable to restore vm {vmid} - vm is a template"
        )));
    }
    Ok(true)
}

fn check_existing_lxc(ctx: &Ctx<'_>, vmid: u32, node: &str, force: bool, restore: bool) -> ApiResult<bool> {
    let Some(g) = ctx.cluster.guests.get(&vmid) else {
        return Ok(false);
    };
    if !(g.node == node && restore && force && g.kind == GuestKind::Lxc) {
        ctx.cluster.check_vmid_unused(vmid)?;
    }
    if g.power.is_up() {
        return Err(ApiError::internal("can't overwrite running container"));
    }
    if g.config.get("protection").is_some_and(|p| p == "1") {
        return Err(ApiError::internal(format!(
            "unable to restore CT {vmid} - protection mode enabled"
        )));
    }
    Ok(true)
}

fn storage_for(ctx: &Ctx<'_>, kind: GuestKind, default: Option<&str>) -> ApiResult<Option<String>> {
    let Some(id) = ctx.params.str("storage").or_else(|| default.map(str::to_string)) else {
        return Ok(None);
    };
    let s = ctx.cluster.storage(&id)?;
    let (content, what) = if kind == GuestKind::Qemu {
        ("images", "vm images")
    } else {
        ("rootdir", "container directories")
    };
    if !s.has_content(content) {
        return Err(ApiError::internal(format!(
            "storage '{id}' does not support {what}"
        )));
    }
    Ok(Some(id))
}

fn create(ctx: &mut Ctx<'_>, kind: GuestKind) -> ApiResult<Reply> {
    let node = ctx.node()?;
    ctx.cluster.check_node(&node)?;
    let vmid = u32::try_from(ctx.req_int("vmid")?)
        .map_err(|_| ApiError::param("vmid", "value does not look like a valid VM ID"))?;
    let pool = ctx.params.str("pool");
    if let Some(p) = &pool {
        ctx.cluster.check_pool(p)?;
    }
    let force = ctx.params.flag("force");
    let unique = ctx.params.flag("unique");
    let start = ctx.params.flag("start");
    let live = kind == GuestKind::Qemu && ctx.params.flag("live-restore");
    let archive = match kind {
        GuestKind::Qemu => ctx.params.str("archive"),
        GuestKind::Lxc => ctx
            .params
            .flag("restore")
            .then(|| ctx.params.str("ostemplate"))
            .flatten(),
    };
    let Some(archive) = archive else {
        return create_new(ctx, kind, node, vmid, start, pool);
    };
    // qemu-server resolves the archive on this node before it locks the VMID; pve-container
    // only in its worker (`source` stays `None` until then).
    let mut source = None;
    if kind == GuestKind::Qemu {
        for key in ctx.params.keys() {
            if is_volume_key(kind, key) && !key.starts_with("unused") {
                return Err(ApiError::param(
                    key.clone(),
                    "option conflicts with option 'archive'",
                ));
            }
        }
        source = Some(source_on(ctx.cluster, &node, &archive)?);
    }
    match kind {
        GuestKind::Qemu => check_existing_qemu(ctx, vmid, &node, force)?,
        GuestKind::Lxc => check_existing_lxc(ctx, vmid, &node, force, true)?,
    };
    let storage = storage_for(ctx, kind, (kind == GuestKind::Lxc).then_some("local"))?;
    // create_and_lock_config: the guest shows `lock: create` while the restore runs.
    let previous = ctx.cluster.guests.get(&vmid).cloned();
    let placeholder = placeholder_guest(kind, vmid, &node, previous.as_ref());
    ctx.cluster.guests.insert(vmid, placeholder);
    let previous_pool = ctx.cluster.pool_of(vmid).map(str::to_string);
    if let Some(p) = &pool {
        ctx.cluster.join_pool(p, vmid);
    }
    let params = ctx.params.clone();
    let task_kind = format!("{}restore", kind.task_prefix());
    let tk = task_kind.clone();
    let had_previous = previous.is_some();
    task(ctx, &node, &task_kind, &vmid.to_string(), move |t| {
        Box::pin(async move {
            let job = Job {
                task_kind: &tk,
                kind,
                vmid,
                archive: &archive,
                storage,
                unique,
                live,
                params: &params,
            };
            match restore(&t, job, source).await {
                Ok((config, disk)) => {
                    let now = t.now();
                    t.state(|c| {
                        if let Some(g) = c.guests.get_mut(&vmid) {
                            g.config = config;
                            g.disk = disk;
                            g.snapshots.clear();
                            // A live-restored VM runs since the start of the task.
                            if !live {
                                g.power = if start {
                                    Power::Running { since: now }
                                } else {
                                    Power::Stopped
                                };
                            }
                        }
                    });
                    Ok(())
                }
                Err(failed) => {
                    if failed.live_config.is_none() {
                        for volid in &failed.allocated {
                            t.log(format!("temporary volume '{volid}' sucessfuly removed"));
                        }
                    }
                    let keep_empty = kind == GuestKind::Qemu && !had_previous;
                    if keep_empty {
                        // qemu-server: remove_lock('create') and die; the config file stays.
                        t.log(format!(
                            "error before or during data restore, some or all disks were not completely restored. VM {vmid} state is NOT cleaned up."
                        ));
                    }
                    t.state(|c| {
                        c.leave_pools(vmid);
                        if let Some(p) = &previous_pool {
                            c.join_pool(p, vmid);
                        }
                        if let (Some(g), Some(config)) = (c.guests.get_mut(&vmid), &failed.live_config) {
                            // The VM was stopped; config and volumes stay, without the lock.
                            g.config = config.clone();
                            g.power = Power::Stopped;
                            return;
                        }
                        if keep_empty {
                            if let Some(g) = c.guests.get_mut(&vmid) {
                                g.config.clear();
                                g.power = Power::Stopped;
                                g.snapshots.clear();
                                g.disk = PseudoDisk::new(u64::from(vmid), 4096, 0);
                            }
                            return;
                        }
                        match previous {
                            Some(old) => c.guests.insert(vmid, old),
                            None => c.guests.remove(&vmid),
                        };
                    });
                    Err(failed.message)
                }
            }
        })
    })
}
super::per_kind!(create_qemu, create_lxc, create);

fn placeholder_guest(kind: GuestKind, vmid: u32, node: &str, previous: Option<&Guest>) -> Guest {
    let mut config = previous.map(|g| g.config.clone()).unwrap_or_default();
    config.insert("lock".into(), "create".into());
    Guest {
        vmid,
        kind,
        node: node.to_string(),
        config,
        snapshots: previous.map(|g| g.snapshots.clone()).unwrap_or_default(),
        power: Power::Stopped,
        agent: previous.map(|g| g.agent).unwrap_or(AgentState::Responding),
        disk: previous
            .map(|g| g.disk.clone())
            .unwrap_or_else(|| PseudoDisk::new(u64::from(vmid), 4096, 0)),
        exec: BTreeMap::new(),
        next_exec_pid: 1000,
        ip: previous.and_then(|g| g.ip.clone()),
    }
}

/// The first new volume whose storage has no room left for it (a quarter of its size, like
/// `usage` counts disks), after the volumes allocated before it.
fn first_full_storage(
    cluster: &crate::pvesim::state::Cluster,
    kind: GuestKind,
    config: &BTreeMap<String, String>,
    allocated: &[String],
) -> Option<String> {
    let mut needed: BTreeMap<String, u64> = BTreeMap::new();
    for (key, value) in config {
        let volid = value.split(',').next().unwrap_or_default();
        if !is_volume_key(kind, key) || !allocated.iter().any(|a| a == volid) {
            continue;
        }
        let storage = volid.split(':').next().unwrap_or_default().to_string();
        let size = value
            .split(',')
            .find_map(|p| p.strip_prefix("size="))
            .map(parse_size)
            .unwrap_or(0);
        let want = needed.entry(storage.clone()).or_default();
        *want += size / 4;
        let full = cluster
            .storages
            .get(&storage)
            .is_some_and(|s| usage(cluster, &storage) + *want > s.total);
        if full {
            return Some(volid.to_string());
        }
    }
    None
}

/// What one restore task does, besides its source.
struct Job<'a> {
    task_kind: &'a str,
    kind: GuestKind,
    vmid: u32,
    archive: &'a str,
    storage: Option<String>,
    unique: bool,
    live: bool,
    params: &'a Params,
}

/// Runs a restore from `source`, or (containers) from the archive resolved on the task's node.
async fn restore(
    t: &TaskCtx,
    job: Job<'_>,
    source: Option<Source>,
) -> Result<(BTreeMap<String, String>, PseudoDisk), Failed> {
    let Job {
        task_kind,
        kind,
        vmid,
        archive,
        storage,
        unique,
        live,
        params,
    } = job;
    if kind == GuestKind::Lxc {
        t.log(format!("recovering backed-up configuration from '{archive}'"));
    }
    let source = match source {
        Some(source) => source,
        // pve-container's recover_config -> abs_filesystem_path, in the worker.
        None => t
            .state(|c| source_on(c, &t.node, archive))
            .map_err(|e| Failed::from(e.message.trim_end().to_string()))?,
    };
    let is_pbs = matches!(source, Source::Pbs { .. });
    if live && !is_pbs {
        return Err(Failed::from(
            "live-restore is only compatible with backup images from a Proxmox Backup Server".to_string(),
        ));
    }
    if let (GuestKind::Qemu, Source::File(path)) = (kind, &source) {
        // qemu-server's restore_tar_archive joins the keys in hash order; sorted here.
        let keys = override_keys(params);
        if is_tar_archive(path) && !keys.is_empty() {
            return Err(Failed::from(format!(
                "cannot pass along options ({}) when restoring from tar archive",
                keys.join(" ")
            )));
        }
    }
    let header = match source {
        Source::File(path) => {
            match kind {
                GuestKind::Qemu if is_tar_archive(&path) => {
                    t.log(format!("extracting archive '{}'", path.display()))
                }
                GuestKind::Qemu => t.log(format!(
                    "restore vma archive: vma extract -v -r /var/tmp/vzdumptmp.fifo {} /var/tmp/vzdumptmp",
                    path.display()
                )),
                GuestKind::Lxc => {
                    t.log(format!("restoring '{archive}' now.."));
                    t.log(format!("extracting archive '{}'", path.display()));
                }
            }
            let p = path.clone();
            tokio::task::spawn_blocking(move || read_dump(&p))
                .await
                .map_err(|e| format!("archive reader failed: {e}"))?
                .map_err(|e| format!("command 'extract {}' failed: {e}", path.display()))?
        }
        Source::Pbs {
            config,
            disk,
            vmid: src,
            kind: k,
            backup_time,
        } => DumpHeader {
            vmid: src,
            kind: k.as_str().into(),
            node: String::new(),
            backup_time,
            config,
            disk,
        },
    };
    if header.kind != kind.as_str() {
        return Err(Failed::from(format!(
            "unable to restore '{archive}' - it is a {} backup, not {}",
            header.kind,
            kind.as_str()
        )));
    }
    // Volumes are allocated and the config merged before any data is written.
    let (config, renames) =
        t.state(|c| merge_config(c, kind, vmid, &header.config, storage.as_deref(), unique, params));
    let allocated: Vec<String> = renames.iter().map(|(_, to)| to.clone()).collect();
    for (from, to) in &renames {
        t.log(format!("new volume ID is '{to}' (restored from '{from}')"));
    }
    if live {
        let now = t.now();
        t.log(format!("starting VM {vmid} for live-restore"));
        t.state(|c| {
            if let Some(g) = c.guests.get_mut(&vmid) {
                g.config = config.clone();
                g.config.insert("lock".into(), "create".into());
                g.power = Power::Running { since: now };
            }
        });
    }
    let no_space = t.state(|c| first_full_storage(c, kind, &config, &allocated));
    let bytes = backed_up_disk_bytes(kind, &header.config).max(header.disk.size);
    let bwlimit = params.int("bwlimit");
    let total = restore_duration(t, task_kind, bytes, bwlimit);
    let step = total / RESTORE_STEPS;
    let fail = |message: String| {
        if live {
            // qemu-server's pbs_live_restore: stop the VM, keep config and disks.
            t.log(format!("An error occurred during live-restore: {message}"));
            return Failed {
                message: "live-restore failed".into(),
                allocated: allocated.clone(),
                live_config: Some(config.clone()),
            };
        }
        Failed {
            message,
            allocated: allocated.clone(),
            live_config: None,
        }
    };
    for i in 1..=RESTORE_STEPS {
        t.sleep(step).await.map_err(fail)?;
        if i == RESTORE_STEPS / 2 {
            t.checkpoint().map_err(fail)?;
            if let Some(volid) = &no_space {
                return Err(fail(format!("error writing '{volid}': No space left on device")));
            }
        }
        let done = bytes / u64::from(RESTORE_STEPS) * u64::from(i);
        let secs = (step * i).as_secs();
        match (kind, is_pbs) {
            (GuestKind::Qemu, false) => t.log(format!(
                "progress {}% (read {done} bytes, duration {secs} sec)",
                i * 100 / RESTORE_STEPS
            )),
            (GuestKind::Qemu, true) => t.log(format!(
                "restore-drive: {}% ({done} of {bytes} bytes, {secs} s)",
                i * 100 / RESTORE_STEPS
            )),
            (GuestKind::Lxc, _) => {}
        }
    }
    match (kind, is_pbs) {
        (GuestKind::Qemu, true) => {
            let secs = total.as_secs_f64().max(0.01);
            t.log(format!(
                "restore image complete (bytes={bytes}, duration={secs:.2}s, speed={:.2}MB/s)",
                bytes as f64 / 1_048_576.0 / secs
            ));
            if live {
                t.log("live-restore done");
            }
        }
        (GuestKind::Qemu, false) => t.log(format!("total bytes read {bytes}, sparse bytes 0 (0%)")),
        (GuestKind::Lxc, _) => {
            t.log(format!("Total bytes read: {bytes}"));
            t.log("merging backed-up and given configuration..");
        }
    }
    let day = t.day();
    let seed = t.state(|c| c.fresh_seed());
    let disk = header
        .disk
        .fork(day.max(header.backup_time.div_euclid(DAY_SECS)), seed);
    Ok((config, disk))
}

fn create_new(
    ctx: &mut Ctx<'_>,
    kind: GuestKind,
    node: String,
    vmid: u32,
    start: bool,
    pool: Option<String>,
) -> ApiResult<Reply> {
    ctx.cluster.check_vmid_unused(vmid)?;
    if kind == GuestKind::Lxc {
        let template = ctx.req("ostemplate")?;
        let (store, _) = template.split_once(':').ok_or_else(|| {
            ApiError::param("ostemplate", format!("unable to parse volume ID '{template}'"))
        })?;
        ctx.cluster.storage(store)?;
        storage_for(ctx, kind, Some("local"))?;
    }
    let storage = storage_for(ctx, kind, None)?;
    let config = new_guest_config(ctx.cluster, kind, vmid, &ctx.params, storage.as_deref())
        .map_err(ApiError::internal)?;
    let seed = ctx.cluster.fresh_seed();
    let day = ctx.shared.clock.day();
    let mut guest = placeholder_guest(kind, vmid, &node, None);
    guest.disk = PseudoDisk::new(seed, 1024 * 1024, day);
    ctx.cluster.guests.insert(vmid, guest);
    if let Some(p) = &pool {
        ctx.cluster.join_pool(p, vmid);
    }
    let task_kind = format!("{}create", kind.task_prefix());
    let tk = task_kind.clone();
    task(ctx, &node, &task_kind, &vmid.to_string(), move |t| {
        Box::pin(async move {
            if let Err(e) = t.sleep(t.part(&tk, 1)).await.and_then(|()| t.checkpoint()) {
                t.state(|c| {
                    c.guests.remove(&vmid);
                    c.leave_pools(vmid);
                });
                return Err(e);
            }
            let now = t.now();
            t.state(|c| {
                if let Some(g) = c.guests.get_mut(&vmid) {
                    g.config = config;
                    g.power = if start {
                        Power::Running { since: now }
                    } else {
                        Power::Stopped
                    };
                }
            });
            Ok(())
        })
    })
}
