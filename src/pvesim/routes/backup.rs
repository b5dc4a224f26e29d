//! `POST /nodes/{node}/vzdump` and `GET /nodes/{node}/vzdump/extractconfig`, following
//! pve-manager's `PVE::API2::VZDump` and `PVE::VZDump`: option permissions, local guests only
//! (others are skipped, `OK` without a task when none is local), UPID id = the VMID only for a
//! single guest, one vzdump per node at a time, per-guest failures end in `job errors`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use super::vzdump_guest::backup_guest;
use super::{ok, task};
use crate::pvesim::dump::{Compression, read_dump_header};
use crate::pvesim::http::{ApiError, ApiResult};
use crate::pvesim::router::{Ctx, Reply};
use crate::pvesim::schema::split_list;
use crate::pvesim::tasks::TaskCtx;

/// Options of one backup job.
#[derive(Debug, Clone)]
pub(crate) struct JobOpts {
    pub(crate) node: String,
    pub(crate) storage: Option<String>,
    pub(crate) dumpdir: Option<PathBuf>,
    pub(crate) mode: String,
    pub(crate) compression: Compression,
    pub(crate) notes_template: Option<String>,
    pub(crate) protected: bool,
    pub(crate) remove: bool,
    /// `keep-last` etc.; empty or `keep-all` means keep everything.
    pub(crate) prune: BTreeMap<String, u32>,
    pub(crate) prelocked: Option<u32>,
}

/// Parses `keep-last=3,keep-daily=7` (`keep-all=1` gives an empty map).
pub(crate) fn parse_prune(text: &str) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for part in text.split(',') {
        if let Some((k, v)) = part.trim().split_once('=')
            && let Ok(n) = v.parse::<u32>()
        {
            if k == "keep-all" && n > 0 {
                return BTreeMap::new();
            }
            out.insert(k.to_string(), n);
        }
    }
    out
}

/// `assert_param_permission_vzdump` of PVE 9.1 (pve-manager `PVE::API2::VZDump` and
/// `PVE::API2::Backup::assert_param_permission_common`): nothing is checked for `root@pam`
/// (with a ticket: a token's user is `root@pam!<token>`); `tmpdir`, `dumpdir`, `script` and
/// `job-id` are root@pam's only; `bwlimit`, `ionice` and `performance` need `Sys.Modify` on `/`;
/// `prune-backups` (and the old `maxfiles`) need `Datastore.Allocate` on the target storage.
/// Then, like the handler: `Datastore.AllocateSpace` on the storage and `VM.Backup` on each
/// guest.
fn check_permissions(ctx: &Ctx<'_>) -> ApiResult<()> {
    let user = ctx.caller.upid_user();
    if user == "root@pam" {
        return Ok(());
    }
    for key in ["tmpdir", "dumpdir", "script", "job-id"] {
        if ctx.params.has(key) {
            return Err(ApiError::param(key, "Only root may set this option."));
        }
    }
    let auth = &ctx.shared.auth;
    if ["bwlimit", "ionice", "performance"]
        .iter()
        .any(|k| ctx.params.has(k))
    {
        auth.check(ctx.caller, "/", "Sys.Modify")?;
    }
    // `PVE::VZDump::get_storage_param`: the storage given, none with dumpdir, else `local`.
    let storage = match ctx.params.str("storage").filter(|s| !s.is_empty()) {
        Some(s) => Some(s),
        None if ctx.params.has("dumpdir") => None,
        None => Some("local".to_string()),
    };
    if let Some(storage) = &storage {
        if ctx.params.has("prune-backups") || ctx.params.has("maxfiles") {
            auth.check(ctx.caller, &format!("/storage/{storage}"), "Datastore.Allocate")?;
        }
        auth.check(
            ctx.caller,
            &format!("/storage/{storage}"),
            "Datastore.AllocateSpace",
        )?;
    }
    if let Some(list) = ctx.params.str("vmid") {
        for vmid in split_list(&list) {
            auth.check(ctx.caller, &format!("/vms/{vmid}"), "VM.Backup")?;
        }
    }
    Ok(())
}

fn verify(ctx: &Ctx<'_>) -> ApiResult<()> {
    let p = &ctx.params;
    if p.flag("stdout") {
        return Err(ApiError::param(
            "stdout",
            "option is only allowed on the command line interface.",
        ));
    }
    let has_vmid = p.str("vmid").is_some_and(|v| !v.is_empty());
    for other in ["all", "exclude", "pool"] {
        let set = if other == "all" {
            p.flag(other)
        } else {
            p.str(other).is_some_and(|v| !v.is_empty())
        };
        if set && has_vmid {
            return Err(ApiError::param(other, "option conflicts with option 'vmid'"));
        }
    }
    if p.has("prune-backups") && p.has("maxfiles") {
        return Err(ApiError::param(
            "prune-backups",
            "option conflicts with option 'maxfiles'",
        ));
    }
    if p.str("notes-template").is_some_and(|t| t.contains('\n')) {
        return Err(ApiError::param("notes-template", "contains a line feed"));
    }
    if !(p.flag("all") || p.flag("stop") || p.str("pool").is_some() || p.str("exclude").is_some() || has_vmid)
    {
        return Err(ApiError::param("vmid", "property is missing"));
    }
    Ok(())
}

/// `POST /nodes/{node}/vzdump`.
pub(crate) fn vzdump(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let node = ctx.node()?;
    ctx.cluster.check_node(&node)?;
    check_permissions(ctx)?;
    verify(ctx)?;
    let p = ctx.params.clone();
    let defaults = ctx.cluster.vzdump_defaults.clone();
    let opt = |key: &str| p.str(key).or_else(|| defaults.get(key).cloned());
    let wanted: Vec<u32> = if let Some(list) = p.str("vmid").filter(|v| !v.is_empty()) {
        split_list(&list).iter().filter_map(|v| v.parse().ok()).collect()
    } else {
        let exclude: Vec<u32> = p
            .str("exclude")
            .map(|e| split_list(&e).iter().filter_map(|v| v.parse().ok()).collect())
            .unwrap_or_default();
        ctx.cluster
            .guests
            .keys()
            .copied()
            .filter(|id| !exclude.contains(id))
            .collect()
    };
    let mut local: Vec<u32> = Vec::new();
    let mut skipped: Vec<u32> = Vec::new();
    for vmid in wanted {
        match ctx.cluster.guests.get(&vmid) {
            Some(g) if g.node != node => skipped.push(vmid),
            _ => local.push(vmid),
        }
    }
    local.sort_unstable();
    local.dedup();
    skipped.sort_unstable();
    if local.is_empty() && !p.flag("all") {
        return ok(Value::String("OK".into()));
    }
    let mut storage = opt("storage");
    let dumpdir = p.str("dumpdir").map(PathBuf::from);
    if dumpdir.is_none() && storage.is_none() {
        storage = Some("local".into());
    }
    let prune_text = p.str("prune-backups").or_else(|| {
        storage
            .as_ref()
            .and_then(|s| ctx.cluster.storages.get(s))
            .and_then(|s| s.prune_backups.clone())
    });
    let mut opts = JobOpts {
        node: node.clone(),
        storage,
        dumpdir,
        mode: opt("mode").unwrap_or_else(|| "snapshot".into()),
        compression: Compression::from_option(&opt("compress").unwrap_or_else(|| "0".into())),
        notes_template: p.str("notes-template").filter(|t| !t.is_empty()),
        protected: p.flag("protected"),
        remove: p.bool("remove").unwrap_or(true),
        prune: prune_text.as_deref().map(parse_prune).unwrap_or_default(),
        prelocked: None,
    };
    if opts.prune.is_empty() {
        opts.remove = false;
    }
    // Lock the first guest now, so a conflicting call right after this one sees `lock: backup`.
    if let Some(first) = local.first()
        && let Some(g) = ctx.cluster.guests.get_mut(first)
        && g.lock().is_none()
        && ctx
            .cluster
            .storages
            .get(opts.storage.as_deref().unwrap_or("local"))
            .is_some_and(|s| s.has_content("backup"))
    {
        g.config.insert("lock".into(), "backup".into());
        opts.prelocked = Some(*first);
    }
    let id = if local.len() == 1 {
        local[0].to_string()
    } else {
        String::new()
    };
    let cmdline = command_line(&local, &p);
    task(ctx, &node, "vzdump", &id, move |t| {
        Box::pin(async move { run_job(t, opts, local, skipped, cmdline).await })
    })
}

fn command_line(vmids: &[u32], p: &crate::pvesim::http::Params) -> String {
    let mut cmd = String::from("vzdump");
    for id in vmids {
        cmd.push_str(&format!(" {id}"));
    }
    for key in p.keys().filter(|k| !matches!(k.as_str(), "vmid" | "node")) {
        cmd.push_str(&format!(" --{key} {}", p.str(key).unwrap_or_default()));
    }
    cmd.push_str(&format!(" --node {}", p.str("node").unwrap_or_default()));
    cmd
}

/// Checks the target like `PVE::VZDump->new` does; errors end the job before it starts.
fn check_target(t: &TaskCtx, opts: &JobOpts) -> Result<(), String> {
    let dump_root = t.state(|c| c.dump_root.clone());
    if let Some(dir) = &opts.dumpdir {
        if !dir.starts_with(&dump_root) {
            return Err(format!(
                "dumpdir '{}' is outside the simulator's dump directory '{}'",
                dir.display(),
                dump_root.display()
            ));
        }
        if !dir.is_dir() {
            return Err(format!("dumpdir '{}' does not exist", dir.display()));
        }
        if opts.storage.is_some() {
            return Err("cannot use options 'storage' and 'dumpdir' at the same time".into());
        }
        return Ok(());
    }
    let Some(id) = &opts.storage else {
        return Err("internal error".into());
    };
    t.state(|c| {
        let s = c.storages.get(id).ok_or_else(|| format!("could not get storage information for '{id}': storage '{id}' does not exist"))?;
        if !s.available_on(&opts.node) {
            return Err(format!("could not activate storage '{id}': storage '{id}' is not available on node '{}'", opts.node));
        }
        if !s.has_content("backup") {
            return Err(format!("could not get storage information for '{id}': can't use storage '{id}' for backups - wrong content type"));
        }
        Ok(())
    })
}

async fn wait_global_lock(t: &TaskCtx) -> Result<(), String> {
    let mut announced = false;
    loop {
        let busy = {
            let tasks = t.shared().tasks();
            let me = tasks.list.get(&t.upid).map(|m| (m.starttime, m.pid));
            tasks.list.values().any(|o| {
                o.node == t.node
                    && o.kind == "vzdump"
                    && o.running()
                    && o.upid != t.upid
                    && me.is_some_and(|m| (o.starttime, o.pid) < m)
            })
        };
        if !busy {
            if announced {
                t.log("INFO: got global lock");
            }
            return Ok(());
        }
        if !announced {
            t.log("INFO: trying to get global lock - waiting...");
            announced = true;
        }
        t.sleep(std::time::Duration::from_secs(1)).await?;
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

async fn run_job(
    t: TaskCtx,
    opts: JobOpts,
    vmids: Vec<u32>,
    skipped: Vec<u32>,
    cmdline: String,
) -> Result<(), String> {
    if let Err(e) = check_target(&t, &opts) {
        if let Some(id) = opts.prelocked {
            super::set_lock(&t, id, None);
        }
        return Err(e);
    }
    wait_global_lock(&t).await?;
    t.log(format!("INFO: starting new backup job: {cmdline}"));
    if !skipped.is_empty() {
        let list: Vec<String> = skipped.iter().map(u32::to_string).collect();
        t.log(format!("INFO: skip external VMs: {}", list.join(", ")));
    }
    let mut errors = 0;
    for vmid in &vmids {
        let prelocked = opts.prelocked == Some(*vmid);
        if let Err(e) = backup_guest(&t, &opts, *vmid, prelocked).await {
            if e == "received interrupt" {
                return Err(e);
            }
            errors += 1;
        }
    }
    if errors > 0 {
        t.log("INFO: Backup job finished with errors");
        Err("job errors".into())
    } else {
        t.log("INFO: Backup job finished successfully");
        Ok(())
    }
}

/// `GET /nodes/{node}/vzdump/extractconfig`: the guest config stored in the archive, as `node`
/// resolves the volid (`extract_vzdump_config` -> `abs_filesystem_path`: another node's local
/// backup is "can't find file").
pub(crate) fn extractconfig(ctx: &mut Ctx<'_>) -> ApiResult<Reply> {
    let node = ctx.node()?;
    let volid = ctx.req("volume")?;
    let b = super::storage::find_archive(ctx.cluster, &node, &volid)?;
    if let Some(i) = b.pbs {
        let config = ctx
            .cluster
            .pbs_backups
            .get(i)
            .map(|b| b.config_text.clone())
            .unwrap_or_default();
        return ok(Value::String(config));
    }
    let path = b.path.ok_or_else(|| ApiError::internal("backup has no file"))?;
    let header = read_dump_header(&path).map_err(ApiError::internal)?;
    ok(Value::String(header.config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_prune_understands_keep_all_and_counts() {
        assert!(parse_prune("keep-all=1").is_empty());
        let p = parse_prune("keep-last=3, keep-daily=7");
        assert_eq!(p.get("keep-last"), Some(&3));
        assert_eq!(p.get("keep-daily"), Some(&7));
    }
}
