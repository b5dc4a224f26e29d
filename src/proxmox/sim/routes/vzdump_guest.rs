//! One guest of a vzdump job (`PVE::VZDump::exec_backup_task`): lock `backup`, mode-dependent
//! power transitions (snapshot: none, suspend: paused briefly, stop: stopped and restarted),
//! the archive (a real file, or an in-memory PBS snapshot), `.log`/`.notes`/`.protected` beside
//! it, retention (`prune-backups`), and the log lines PVE writes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::backup::JobOpts;
use super::set_lock;
use crate::proxmox::sim::clock::{DAY_SECS, format_epoch};
use crate::proxmox::sim::dump::{Compression, DumpHeader, write_dump};
use crate::proxmox::sim::state::{GuestKind, PbsBackup, Power};
use crate::proxmox::sim::tasks::TaskCtx;

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

/// `PVE::Storage::prune_mark_backup_group`: which of `ctimes` (newest first) to keep.
pub(crate) fn prune_marks(entries: &[(i64, bool)], keep: &BTreeMap<String, u32>) -> Vec<bool> {
    let mut marks: Vec<Option<bool>> = entries
        .iter()
        .map(|(_, protected)| protected.then_some(true))
        .collect();
    let rules: [(&str, &str); 6] = [
        ("keep-last", ""),
        ("keep-hourly", "%Y/%m/%d/%H"),
        ("keep-daily", "%Y/%m/%d"),
        ("keep-weekly", "%Y/%V"),
        ("keep-monthly", "%Y/%m"),
        ("keep-yearly", "%Y"),
    ];
    for (option, pattern) in rules {
        let Some(&count) = keep.get(option).filter(|c| **c > 0) else {
            continue;
        };
        let id = |ctime: i64| {
            if pattern.is_empty() {
                ctime.to_string()
            } else {
                format_epoch(ctime, pattern)
            }
        };
        let already: Vec<String> = entries
            .iter()
            .zip(&marks)
            .filter(|(_, m)| **m == Some(true))
            .map(|((c, _), _)| id(*c))
            .collect();
        let mut newly: Vec<String> = Vec::new();
        for (i, (ctime, _)) in entries.iter().enumerate() {
            let key = id(*ctime);
            if marks[i].is_some() || already.contains(&key) {
                continue;
            }
            if !newly.contains(&key) {
                if newly.len() >= count as usize {
                    break;
                }
                newly.push(key);
                marks[i] = Some(true);
            } else {
                marks[i] = Some(false);
            }
        }
    }
    marks.into_iter().map(|m| m.unwrap_or(false)).collect()
}

/// Logs to the task and to the per-guest `.log` file (with time stamps, like vzdump).
#[derive(Clone)]
struct GuestLog {
    t: TaskCtx,
    lines: Arc<Mutex<Vec<String>>>,
}

impl GuestLog {
    fn line(&self, level: &str, msg: impl AsRef<str>) {
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
    fn info(&self, msg: impl AsRef<str>) {
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
            (None, Some(s)) if s.is_file_based() => Some(c.backup_dir(&s.id)),
            _ => None,
        };
        let existing: Vec<(i64, bool)> = opts
            .storage
            .as_deref()
            .map(|s| {
                super::storage::backups(c, s)
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
    let volid = if let Some(storage) = &opts.storage {
        if is_pbs {
            let size = disk.size * 3 / 5;
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
                });
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
        let written = tokio::task::spawn_blocking(move || write_dump(&path, compression, &header))
            .await
            .map_err(|e| format!("archive writer failed: {e}"))?
            .map_err(|e| format!("unable to write archive '{}': {e}", target.display()))?;
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

/// `$generate_notes` of PVE::VZDump: `\\n` and `\\\\` escapes, `{{cluster}}`, `{{guestname}}`,
/// `{{node}}`, `{{vmid}}`; anything else in braces is an error.
pub(crate) fn generate_notes(template: &str, vars: &[(&str, &str)], vmid: u32) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            Some(other) => return Err(format!("unexpected escape character '{other}'")),
            None => out.push('\\'),
        }
    }
    let vmid = vmid.to_string();
    for (name, value) in vars.iter().copied().chain([("vmid", vmid.as_str())]) {
        out = out.replace(&format!("{{{{{name}}}}}"), value);
    }
    if let Some(start) = out.find("{{")
        && let Some(len) = out[start + 2..].find("}}")
    {
        let name = &out[start + 2..start + 2 + len];
        if !name.is_empty() && !name.contains(char::is_whitespace) {
            return Err(format!("unexpected variable name '{name}'"));
        }
    }
    Ok(out)
}

fn set_attribute(t: &TaskCtx, volid: &str, notes: Option<&str>, protected: Option<bool>, log: &GuestLog) {
    let result = t.state(|c| {
        let b = super::storage::find_backup(c, volid).map_err(|e| e.message.trim_end().to_string())?;
        super::storage::set_attributes(c, &b, notes, protected)
    });
    if let Err(e) = result {
        log.line("WARN", format!("unable to add notes - {e}"));
    }
}

fn prune(
    t: &TaskCtx,
    storage: &str,
    vmid: u32,
    kind: GuestKind,
    keep: &BTreeMap<String, u32>,
    log: &GuestLog,
) {
    let keepstr: Vec<String> = keep.iter().map(|(k, v)| format!("{k}={v}")).collect();
    log.info(format!(
        "prune older backups with retention: {}",
        keepstr.join(", ")
    ));
    let pruned = t.state(|c| {
        let group: Vec<_> = super::storage::backups(c, storage)
            .into_iter()
            .filter(|b| b.vmid == vmid && b.kind == kind)
            .collect();
        let marks = prune_marks(
            &group.iter().map(|b| (b.ctime, b.protected)).collect::<Vec<_>>(),
            keep,
        );
        let mut removed = 0;
        // Remove PBS entries from the back so indices stay valid.
        for (b, keep) in group.iter().zip(marks).rev() {
            if !keep && super::storage::remove_backup(c, b).is_ok() {
                removed += 1;
            }
        }
        removed
    });
    let extra = if pruned > 0 {
        " not covered by keep-retention policy"
    } else {
        ""
    };
    log.info(format!("pruned {pruned} backup(s){extra}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_marks_keep_last_and_daily_like_pve() {
        let day = 86_400;
        let entries: Vec<(i64, bool)> = vec![
            (10 * day + 100, false),
            (10 * day + 50, false),
            (9 * day, false),
            (8 * day, true),
            (7 * day, false),
        ];
        let mut keep = BTreeMap::new();
        keep.insert("keep-last".to_string(), 1);
        assert_eq!(
            prune_marks(&entries, &keep),
            vec![true, false, false, true, false]
        );
        keep.insert("keep-daily".to_string(), 2);
        assert_eq!(prune_marks(&entries, &keep), vec![true, false, true, true, true]);
        assert_eq!(format_size(3 * 1024 * 1024), "3MB");
        assert_eq!(hms(3725), "01:02:05");
        let vars = [("guestname", "web"), ("node", "pve1"), ("cluster", "c")];
        assert_eq!(
            generate_notes("{{guestname}}\\n{{vmid}}", &vars, 100),
            Ok("web\n100".to_string())
        );
        assert_eq!(
            generate_notes("{{bogus}}", &vars, 1),
            Err("unexpected variable name 'bogus'".to_string())
        );
    }
}
