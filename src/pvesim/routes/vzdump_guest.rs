//! One guest of a vzdump job (`PVE::VZDump::exec_backup_task`): lock `backup`, mode-dependent
//! power transitions (snapshot: none, suspend: paused briefly, stop: stopped and restarted),
//! the archive (a real file, or an in-memory PBS snapshot), `.log`/`.notes`/`.protected` beside
//! it, retention (`prune-backups`), and the log lines PVE writes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::backup::JobOpts;
use super::retention::{generate_notes, prune, set_attribute};
use super::set_lock;
use crate::pvesim::clock::{DAY_SECS, format_epoch};
use crate::pvesim::dump::{Compression, DumpHeader, write_dump};
use crate::pvesim::state::{GuestKind, PbsBackup, Power};
use crate::pvesim::tasks::TaskCtx;

/// `PVE::VZDump::format_size`.
fn format_size(size: u64) -> String {
    let kb = size as f64 / 1024.0;
    if kb < 1024.0 {
        return format!("{}KB", kb as u64);
    }
    let mb = kb / 1024.0;
    if mb < 1024.0 {
        return format!("{}MB", mb as u64);
    }
    format!("{:.2}GB", mb / 1024.0)
}

fn hms(secs: i64) -> String {
    let s = secs.max(0);
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// Logs to the task and to the per-guest `.log` file (with time stamps, like vzdump).
#[derive(Clone)]
pub(crate) struct GuestLog {
    t: TaskCtx,
    lines: Arc<Mutex<Vec<String>>>,
}

impl GuestLog {
    pub(crate) fn line(&self, level: &str, msg: impl AsRef<str>) {
        let msg = msg.as_ref();
        if level == "WARN" {
            self.t.warn(msg); // log_warn: counted for `TASK WARNINGS: N`
        } else {
            self.t.log(format!("{level}: {msg}"));
        }
        let stamp = format_epoch(self.t.now(), "%Y-%m-%d %H:%M:%S");
        if let Ok(mut lines) = self.lines.lock() {
            lines.push(format!("{stamp} {level}: {msg}"));
        }
    }
    pub(crate) fn info(&self, msg: impl AsRef<str>) {
        self.line("INFO", msg);
    }
}

/// Backs up one guest; errors are logged as `ERROR: Backup of VM N failed - ...`.
pub(crate) async fn backup_guest(
    t: &TaskCtx,
    opts: &JobOpts,
    vmid: u32,
    prelocked: bool,
) -> Result<(), String> {
    let log = GuestLog {
        t: t.clone(),
        lines: Arc::new(Mutex::new(Vec::new())),
    };
    let start = t.now();
    let mut locked = prelocked;
    let mut logfile: Option<PathBuf> = None;
    let mut restore_power: Option<Power> = None;
    let result = run(t, opts, vmid, &log, &mut locked, &mut logfile, &mut restore_power).await;
    if locked {
        set_lock(t, vmid, None);
    }
    if let Some(power) = restore_power {
        let verb = if matches!(power, Power::Running { .. }) {
            "restarting vm"
        } else {
            "resume vm"
        };
        log.info(verb);
        let now = t.now();
        t.state(|c| {
            if let Some(g) = c.guests.get_mut(&vmid) {
                g.power = if matches!(power, Power::Running { .. }) {
                    Power::Running { since: now }
                } else {
                    power
                };
            }
        });
        log.info("guest is online again after <1 seconds");
    }
    let end = t.now();
    match &result {
        Ok(()) => {
            log.info(format!("Finished Backup of VM {vmid} ({})", hms(end - start)));
            log.info(format!(
                "Backup finished at {}",
                format_epoch(end, "%Y-%m-%d %H:%M:%S")
            ));
        }
        Err(e) => {
            log.line("ERROR", format!("Backup of VM {vmid} failed - {e}"));
            log.info(format!("Failed at {}", format_epoch(end, "%Y-%m-%d %H:%M:%S")));
        }
    }
    if let Some(path) = logfile {
        let text = log.lines.lock().map(|l| l.join("\n") + "\n").unwrap_or_default();
        let _ = tokio::task::spawn_blocking(move || std::fs::write(path, text)).await;
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn run(
    t: &TaskCtx,
    opts: &JobOpts,
    vmid: u32,
    log: &GuestLog,
    locked: &mut bool,
    logfile: &mut Option<PathBuf>,
    restore_power: &mut Option<Power>,
) -> Result<(), String> {
    let backup_time = t.now();
    let info = t.state(|c| {
        let g = c
            .guests
            .get(&vmid)
            .ok_or_else(|| format!("unable to find VM '{vmid}'"))?;
        let ha_started =
            c.ha.get(&format!("{}:{vmid}", g.kind.ha_type()))
                .is_some_and(|r| r.state == "started");
        let storage = opts.storage.as_ref().and_then(|s| c.storages.get(s)).cloned();
        let dir = match (&opts.dumpdir, &storage) {
            (Some(d), _) => Some(d.clone()),
            (None, Some(s)) if s.is_file_based() => Some(c.backup_dir_on(&s.id, &opts.node)),
            _ => None,
        };
        let existing: Vec<(i64, bool)> = opts
            .storage
            .as_deref()
            .map(|s| {
                super::storage::backups_on(c, s, &opts.node)
                    .into_iter()
                    .filter(|b| b.vmid == vmid && b.kind == g.kind)
                    .map(|b| (b.ctime, b.protected))
                    .collect()
            })
            .unwrap_or_default();
        Ok::<_, String>((
            g.kind,
            g.name(),
            g.power,
            g.volumes(),
            g.config.clone(),
            ha_started,
            dir,
            existing,
            c.name.clone(),
        ))
    })?;
    let (kind, name, power, volumes, config, ha_started, dir, existing, cluster_name) = info;
    if opts.mode == "stop" && ha_started {
        return Err("Cannot execute a backup with stop mode on a HA managed and enabled Service. Use snapshot mode or disable the Service.".into());
    }
    let limit: u32 = opts.prune.values().sum();
    if (limit > 0 && !opts.remove) || opts.protected {
        let unprotected = existing.iter().filter(|(_, p)| !p).count() as u32;
        if !opts.protected && unprotected >= limit {
            return Err(format!(
                "There is a max backup limit of {limit} enforced by the target storage or the vzdump parameters. Either increase the limit or delete old backups."
            ));
        }
    }
    let basename = format!(
        "vzdump-{}-{vmid}-{}",
        kind.as_str(),
        format_epoch(backup_time, "%Y_%m_%d-%H_%M_%S")
    );
    let ext = format!(
        "{}{}",
        if kind == GuestKind::Qemu { ".vma" } else { ".tar" },
        opts.compression.extension()
    );
    if let Some(d) = &dir {
        *logfile = Some(d.join(format!("{basename}.log")));
    }
    log.info(format!("Starting Backup of VM {vmid} ({})", kind.as_str()));
    log.info(format!(
        "Backup started at {}",
        format_epoch(backup_time, "%Y-%m-%d %H:%M:%S")
    ));
    let running = power.is_up();
    log.info(format!(
        "status = {}",
        if running { "running" } else { "stopped" }
    ));
    if !*locked {
        t.state(|c| -> Result<(), String> {
            let g = c
                .guests
                .get_mut(&vmid)
                .ok_or_else(|| format!("unable to find VM '{vmid}'"))?;
            g.check_lock()?;
            g.config.insert("lock".into(), "backup".into());
            Ok(())
        })?;
        *locked = true;
    }
    let mode = if running {
        opts.mode.clone()
    } else {
        "stop".to_string()
    };
    match kind {
        GuestKind::Qemu => {
            log.info(format!("VM Name: {name}"));
            for (key, volid, _) in &volumes {
                let size = config
                    .get(key)
                    .and_then(|v| v.split(',').find_map(|p| p.strip_prefix("size=")))
                    .unwrap_or("0");
                log.info(format!("include disk '{key}' '{volid}' {size}"));
            }
        }
        GuestKind::Lxc => {
            log.info(format!("CT Name: {name}"));
            log.info("including mount point rootfs ('/') in backup");
        }
    }
    log.info(format!("backup mode: {mode}"));
    log.info("ionice priority: 7");
    let set_power = |p: Power| {
        t.state(|c| {
            if let Some(g) = c.guests.get_mut(&vmid) {
                g.power = p;
            }
        })
    };
    if mode == "stop" && running {
        log.info("stopping virtual guest");
        set_power(Power::Stopped);
        *restore_power = Some(Power::Running { since: backup_time });
    } else if mode == "suspend" {
        log.info("suspending guest");
        if let Power::Running { since } = power {
            set_power(Power::Paused { since });
            *restore_power = Some(power);
        }
    } else if kind == GuestKind::Lxc {
        log.info("create storage snapshot 'vzdump'");
    }
    let is_pbs = dir.is_none();
    let target = match &dir {
        Some(d) => d.join(format!("{basename}{ext}")),
        None => PathBuf::from(format!(
            "{}/{vmid}/{}",
            if kind == GuestKind::Qemu { "vm" } else { "ct" },
            format_epoch(backup_time, "%Y-%m-%dT%H:%M:%SZ")
        )),
    };
    if is_pbs {
        log.info(format!(
            "creating Proxmox Backup Server archive '{}'",
            target.display()
        ));
    } else {
        log.info(format!("creating vzdump archive '{}'", target.display()));
    }
    if kind == GuestKind::Qemu
        && mode == "snapshot"
        && config.get("agent").is_some_and(|a| a.starts_with('1'))
    {
        log.info("issuing guest-agent 'fs-freeze' command");
        log.info("issuing guest-agent 'fs-thaw' command");
    }
    if mode == "suspend"
        && let Some(p) = restore_power.take()
    {
        t.sleep(t.part("vzdump", 10)).await?;
        log.info("resume vm");
        set_power(p);
        log.info("guest is online again after 1 seconds");
    }
    t.sleep(t.part("vzdump", 1)).await?;
    t.checkpoint()?;
    let day = backup_time.div_euclid(DAY_SECS);
    let disk = t
        .state(|c| c.guests.get(&vmid).map(|g| g.disk.frozen(day)))
        .ok_or_else(|| format!("unable to find VM '{vmid}'"))?;
    let mut conf = config.clone();
    conf.remove("lock");
    let config_text: String = conf.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
    let header = DumpHeader {
        vmid,
        kind: kind.as_str().into(),
        node: opts.node.clone(),
        backup_time,
        config: config_text.clone(),
        disk: disk.clone(),
    };
    // What the target storage has free before this archive (no check for a dumpdir).
    let avail = opts
        .storage
        .as_deref()
        .map(|s| t.state(|c| super::storage::avail_on(c, s, &opts.node)));
    let volid = if let Some(storage) = &opts.storage {
        if is_pbs {
            let size = disk.size * 3 / 5;
            if avail.is_some_and(|a| size > a) {
                return Err(format!(
                    "backup write data failed: command error: write_data upload error: pipelined request failed: inserting chunk on store '{}' failed - No space left on device (os error 28)",
                    t.state(|c| c.storages.get(storage).and_then(|s| s.datastore.clone()))
                        .unwrap_or_else(|| storage.clone())
                ));
            }
            let now = t.now();
            t.state(|c| {
                c.pbs_backups.push(PbsBackup {
                    storage: storage.clone(),
                    vmid,
                    kind,
                    backup_time,
                    size,
                    notes: None,
                    protected: false,
                    config_text,
                    disk,
                    verification: None,
                    corrupt: false,
                });
                let index = c.pbs_backups.len() - 1;
                crate::pvesim::pbs::on_snapshot_created(c, index, now, "root@pam");
            });
            log.info(format!("transferred {} in 1 seconds", format_size(size)));
            Some(format!("{storage}:backup/{}", target.display()))
        } else {
            Some(format!("{storage}:backup/{basename}{ext}"))
        }
    } else {
        None
    };
    if !is_pbs {
        let path = target.clone();
        let compression: Compression = opts.compression;
        let written = tokio::task::spawn_blocking(move || {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            write_dump(&path, compression, &header)
        })
        .await
        .map_err(|e| format!("archive writer failed: {e}"))?
        .map_err(|e| format!("unable to write archive '{}': {e}", target.display()))?;
        if avail.is_some_and(|a| written > a) {
            // The writer hit ENOSPC: vzdump removes the partial archive.
            let _ = std::fs::remove_file(&target);
            return Err(match kind {
                GuestKind::Qemu => "vma_queue_write: write error - No space left on device".into(),
                GuestKind::Lxc => format!(
                    "command 'tar cpf - --totals ... | zstd' failed: tar: {}: Cannot write: No space left on device",
                    target.display()
                ),
            });
        }
        log.info(format!("archive file size: {}", format_size(written)));
    }
    if let (Some(volid), Some(template)) = (&volid, &opts.notes_template) {
        log.info("adding notes to backup");
        let vars = [
            ("cluster", cluster_name.as_str()),
            ("guestname", name.as_str()),
            ("node", opts.node.as_str()),
        ];
        match generate_notes(template, &vars, vmid) {
            Ok(notes) => set_attribute(t, volid, Some(&notes), None, log),
            Err(e) => log.line("WARN", format!("unable to add notes - {e}")),
        }
    }
    if let (Some(volid), true) = (&volid, opts.protected) {
        log.info("marking backup as protected");
        set_attribute(t, volid, None, Some(true), log);
    }
    if opts.remove
        && let Some(storage) = &opts.storage
    {
        prune(t, storage, vmid, kind, &opts.prune, log);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_are_formatted_like_vzdump() {
        assert_eq!(format_size(3 * 1024 * 1024), "3MB");
        assert_eq!(format_size(2048), "2KB");
        assert_eq!(hms(3725), "01:02:05");
    }
}
