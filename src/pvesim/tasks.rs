//! Worker tasks: UPIDs, task logs, status and the asynchronous runner.
//!
//! A task is registered with a real-looking UPID (`UPID:node:pid:pstart:starttime:type:id:user:`),
//! runs as a tokio task that sleeps for simulated durations and changes the cluster under its
//! lock, and ends with `TASK OK`, `TASK WARNINGS: N` or `TASK ERROR: msg` as its last log line;
//! `exitstatus` is derived from that line like `PVE::UPID::read_status`. Stopping a task
//! (`DELETE .../tasks/{upid}`) interrupts its next wait with `received interrupt`.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Notify;

use super::Shared;
use super::auth::{Caller, split_tokenid};
use super::state::Cluster;

/// A finished or running task as the simulator records it.
#[derive(Debug, Clone)]
pub struct TaskInfo {
    /// The UPID.
    pub upid: String,
    /// Node that runs it.
    pub node: String,
    /// Worker pid.
    pub pid: u32,
    /// Process start in clock ticks since boot.
    pub pstart: u64,
    /// Start time (epoch seconds).
    pub starttime: i64,
    /// Task type (`qmstart`, `vzdump`...).
    pub kind: String,
    /// Task id (usually the VMID, may be empty).
    pub id: String,
    /// User as in the UPID (`user@realm!token` for API tokens).
    pub user: String,
    /// Log lines.
    pub log: Vec<String>,
    /// End time, once stopped.
    pub endtime: Option<i64>,
    /// Exit status, once stopped (`OK`, `WARNINGS: 1`, or the error).
    pub exitstatus: Option<String>,
}

impl TaskInfo {
    /// Whether the task still runs.
    pub fn running(&self) -> bool {
        self.exitstatus.is_none()
    }

    /// Whether it ended successfully (`OK` or `WARNINGS: N`).
    pub fn succeeded(&self) -> bool {
        self.exitstatus
            .as_deref()
            .is_some_and(|s| s == "OK" || s.starts_with("WARNINGS: "))
    }

    fn user_fields(&self, v: &mut Value) {
        match split_tokenid(&self.user) {
            Some((user, token)) => {
                v["user"] = json!(user);
                v["tokenid"] = json!(token);
            }
            None => v["user"] = json!(self.user),
        }
    }

    /// `GET /nodes/{node}/tasks/{upid}/status` (no `endtime`, like the real endpoint).
    pub(crate) fn status_json(&self) -> Value {
        let mut v = json!({
            "upid": self.upid, "node": self.node, "pid": self.pid, "pstart": self.pstart,
            "starttime": self.starttime, "type": self.kind, "id": self.id,
            "status": if self.running() { "running" } else { "stopped" },
        });
        self.user_fields(&mut v);
        if let Some(exit) = &self.exitstatus {
            v["exitstatus"] = json!(exit);
        }
        v
    }

    /// A row of `GET /nodes/{node}/tasks`.
    pub(crate) fn list_json(&self) -> Value {
        let mut v = json!({
            "upid": self.upid, "node": self.node, "pid": self.pid, "pstart": self.pstart,
            "starttime": self.starttime, "type": self.kind, "id": self.id,
        });
        self.user_fields(&mut v);
        if let (Some(end), Some(exit)) = (self.endtime, &self.exitstatus) {
            v["endtime"] = json!(end);
            v["status"] = json!(exit);
        }
        v
    }
}

/// `PVE::UPID::read_status`: the exit status from a task log's last line.
pub(crate) fn read_status(last_line: Option<&str>) -> String {
    match last_line {
        None => "unable to get last line from task log - no lines".into(),
        Some("TASK OK") => "OK".into(),
        Some(line) => {
            if let Some(n) = line.strip_prefix("TASK WARNINGS: ")
                && n.bytes().all(|b| b.is_ascii_digit())
                && !n.is_empty()
            {
                return format!("WARNINGS: {n}");
            }
            match line.strip_prefix("TASK ERROR: ") {
                Some(msg) => msg.to_string(),
                None => "unexpected status".into(),
            }
        }
    }
}

/// Parses a UPID into `(node, pid, pstart, starttime, type, id, user)`.
pub(crate) fn parse_upid(upid: &str) -> Option<(String, u32, u64, i64, String, String, String)> {
    let rest = upid.strip_prefix("UPID:")?.strip_suffix(':')?;
    let parts: Vec<&str> = rest.split(':').collect();
    if parts.len() != 7 {
        return None;
    }
    let hex = |s: &str, lens: &[usize]| {
        lens.contains(&s.len())
            .then(|| u64::from_str_radix(s, 16).ok())
            .flatten()
    };
    let node_ok = !parts[0].is_empty() && parts[0].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let field_ok = |s: &str| !s.contains(|c: char| c == '/' || c.is_whitespace());
    if !node_ok || parts[4].is_empty() || parts[6].is_empty() || !parts[4..].iter().all(|p| field_ok(p)) {
        return None;
    }
    Some((
        parts[0].to_string(),
        u32::try_from(hex(parts[1], &[8])?).ok()?,
        hex(parts[2], &[8, 9])?,
        i64::try_from(hex(parts[3], &[8])?).ok()?,
        parts[4].to_string(),
        parts[5].to_string(),
        parts[6].to_string(),
    ))
}

struct Control {
    cancelled: AtomicBool,
    notify: Notify,
}

/// All tasks of the cluster.
#[derive(Default)]
pub(crate) struct Tasks {
    pub(crate) list: BTreeMap<String, TaskInfo>,
    controls: BTreeMap<String, Arc<Control>>,
}

impl Tasks {
    /// Requests a running task to stop.
    pub(crate) fn stop(&mut self, upid: &str) {
        if let Some(control) = self.controls.get(upid) {
            control.cancelled.store(true, Ordering::SeqCst);
            control.notify.notify_waiters();
        }
    }
}

static NEXT_PID: AtomicU32 = AtomicU32::new(0x0003_1000);

/// What a handler wants to run.
pub(crate) struct TaskSpec {
    pub(crate) node: String,
    pub(crate) kind: String,
    pub(crate) id: String,
    pub(crate) caller: Caller,
}

/// The body of a task.
pub(crate) type TaskBody = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Handle a running task uses to log, wait and touch the cluster.
#[derive(Clone)]
pub(crate) struct TaskCtx {
    shared: Arc<Shared>,
    pub(crate) upid: String,
    pub(crate) node: String,
    control: Arc<Control>,
    injected: Option<String>,
    warnings: Arc<AtomicU32>,
}

impl TaskCtx {
    /// Appends a log line.
    pub(crate) fn log(&self, line: impl Into<String>) {
        let line = line.into();
        if let Some(task) = self.shared.tasks().list.get_mut(&self.upid) {
            task.log.extend(line.lines().map(str::to_string));
        }
    }

    /// Logs a warning (`WARN: ...`) and counts it for `TASK WARNINGS: N`.
    pub(crate) fn warn(&self, line: impl AsRef<str>) {
        self.warnings.fetch_add(1, Ordering::SeqCst);
        self.log(format!("WARN: {}", line.as_ref()));
    }

    /// Waits a simulated duration; fails with `received interrupt` when the task is stopped.
    pub(crate) async fn sleep(&self, sim: Duration) -> Result<(), String> {
        let interrupted = || self.control.cancelled.load(Ordering::SeqCst);
        if interrupted() {
            return Err("received interrupt".into());
        }
        let notified = self.control.notify.notified();
        tokio::select! {
            _ = self.shared.clock.sleep(sim) => {}
            _ = notified => {}
        }
        if interrupted() {
            Err("received interrupt".into())
        } else {
            Ok(())
        }
    }

    /// The configured duration of this task type, split in `parts` equal waits.
    pub(crate) fn part(&self, kind: &str, parts: u32) -> Duration {
        self.shared.task_duration(kind) / parts.max(1)
    }

    /// Runs `f` on the cluster under its lock.
    pub(crate) fn state<R>(&self, f: impl FnOnce(&mut Cluster) -> R) -> R {
        let mut cluster = self.shared.cluster();
        f(&mut cluster)
    }

    /// Simulated now.
    pub(crate) fn now(&self) -> i64 {
        self.shared.clock.now()
    }

    /// Simulated day.
    pub(crate) fn day(&self) -> i64 {
        self.shared.clock.day()
    }

    /// Fails here when a task failure was injected for this task.
    pub(crate) fn checkpoint(&self) -> Result<(), String> {
        match &self.injected {
            Some(msg) => Err(msg.clone()),
            None => Ok(()),
        }
    }

    /// The simulator (for dump I/O paths and node state).
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl Shared {
    pub(crate) fn tasks(&self) -> MutexGuard<'_, Tasks> {
        self.tasks_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a task and spawns its body; returns the UPID.
    pub(crate) fn spawn_task(
        self: &Arc<Self>,
        cluster: &Cluster,
        spec: TaskSpec,
        body: impl FnOnce(TaskCtx) -> TaskBody,
    ) -> String {
        let now = self.clock.now();
        let boot = cluster
            .nodes
            .get(&spec.node)
            .map(|n| n.boot_time)
            .unwrap_or(now - 3600);
        let pid = NEXT_PID.fetch_add(1, Ordering::Relaxed) & 0x3F_FFFF;
        let pstart = ((now - boot).max(1) as u64) * 100;
        let user = spec.caller.upid_user();
        let upid = format!(
            "UPID:{}:{pid:08X}:{pstart:08X}:{:08X}:{}:{}:{user}:",
            spec.node,
            now.max(0),
            spec.kind,
            spec.id
        );
        let control = Arc::new(Control {
            cancelled: AtomicBool::new(false),
            notify: Notify::new(),
        });
        let injected = self.faults.take_task_failure(&spec.kind);
        {
            let mut tasks = self.tasks();
            tasks.list.insert(
                upid.clone(),
                TaskInfo {
                    upid: upid.clone(),
                    node: spec.node.clone(),
                    pid,
                    pstart,
                    starttime: now,
                    kind: spec.kind.clone(),
                    id: spec.id.clone(),
                    user,
                    log: Vec::new(),
                    endtime: None,
                    exitstatus: None,
                },
            );
            tasks.controls.insert(upid.clone(), control.clone());
        }
        let ctx = TaskCtx {
            shared: self.clone(),
            upid: upid.clone(),
            node: spec.node,
            control,
            injected,
            warnings: Arc::new(AtomicU32::new(0)),
        };
        let future = body(ctx.clone());
        tokio::spawn(async move {
            let result = future.await;
            let last = match result {
                Ok(()) => match ctx.warnings.load(Ordering::SeqCst) {
                    0 => "TASK OK".to_string(),
                    n => format!("TASK WARNINGS: {n}"),
                },
                Err(msg) => format!("TASK ERROR: {}", msg.trim_end()),
            };
            let end = ctx.now();
            let mut tasks = ctx.shared.tasks();
            tasks.controls.remove(&ctx.upid);
            if let Some(task) = tasks.list.get_mut(&ctx.upid) {
                task.log.push(last);
                task.exitstatus = Some(read_status(task.log.last().map(String::as_str)));
                task.endtime = Some(end);
            }
        });
        upid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_status_maps_last_lines_like_pve() {
        assert_eq!(read_status(Some("TASK OK")), "OK");
        assert_eq!(read_status(Some("TASK WARNINGS: 2")), "WARNINGS: 2");
        assert_eq!(read_status(Some("TASK ERROR: job errors")), "job errors");
        assert_eq!(read_status(Some("INFO: something")), "unexpected status");
    }

    #[test]
    fn parse_upid_accepts_documented_forms() {
        let parsed = parse_upid("UPID:pve1:003C8E2F:14E92805:6AC05394:vzdump:100:root@pam!operator:");
        assert_eq!(
            parsed.map(|p| (p.0, p.4, p.5, p.6)),
            Some((
                "pve1".into(),
                "vzdump".into(),
                "100".into(),
                "root@pam!operator".into()
            ))
        );
        assert!(parse_upid("UPID:pve1:003C8E30:14E928060:6AC05395:vzdump::root@pam:").is_some());
        assert!(parse_upid("UPID:pve1:1:2:3:x::root@pam:").is_none());
        assert!(parse_upid("nonsense").is_none());
    }
}
