//! PVE tasks: the handle a controller stores ([`TaskRef`]), status and log reads, and waiting.
//!
//! A task is stopped when `status` is `stopped`; its `exitstatus` is `OK`, `WARNINGS: N` (both
//! success) or the error text (pve-common `PVE::UPID::read_status`). On failure we fetch the tail
//! of the task log, because `exitstatus` alone (`job errors`) rarely says what went wrong.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::time::Instant;

use super::client::PveClient;
use super::decode;
use super::error::{Error, Result};
use super::ops;
use super::request::Call;
use super::types::{NodeName, ParseIdError};
use super::upid::Upid;

/// How many log lines [`Error::TaskFailed`] carries.
pub const LOG_TAIL_LINES: u64 = 20;

/// A handle on a PVE task: store it (it serializes as the plain UPID string) and poll it again
/// after a restart. The node is the one in the UPID, where the task runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskRef {
    /// The node to ask about the task.
    pub node: NodeName,
    /// The task id.
    pub upid: Upid,
}

impl TaskRef {
    /// The handle of the task `upid` (polled on the node named in it).
    pub fn new(upid: Upid) -> Self {
        Self {
            node: upid.node().clone(),
            upid,
        }
    }
}

impl fmt::Display for TaskRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.upid.fmt(f)
    }
}

impl FromStr for TaskRef {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Upid::parse(s).map(Self::new)
    }
}

impl Serialize for TaskRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.upid.serialize(s)
    }
}

impl<'de> Deserialize<'de> for TaskRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Upid::deserialize(d).map(Self::new)
    }
}

impl schemars::JsonSchema for TaskRef {
    fn schema_name() -> Cow<'static, str> {
        "TaskRef".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A Proxmox VE task id (UPID:node:pid:pstart:starttime:type:id:user:).",
            "pattern": "^UPID:"
        })
    }
}

/// How a stopped task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskExit {
    /// `OK`.
    Ok,
    /// `WARNINGS: N`: success, with N warnings in the log.
    Warnings(u32),
    /// Anything else: the error text.
    Failed(String),
}

impl TaskExit {
    /// Interprets an `exitstatus`.
    pub fn from_exit_status(s: &str) -> Self {
        let s = s.trim();
        if s == "OK" {
            return Self::Ok;
        }
        if let Some(n) = s.strip_prefix("WARNINGS: ").and_then(|n| n.parse().ok()) {
            return Self::Warnings(n);
        }
        Self::Failed(s.to_owned())
    }

    /// Interprets a task log's last line (`TASK OK`, `TASK WARNINGS: N`, `TASK ERROR: msg`), the
    /// way PVE derives `exitstatus`. `None` when the line is not a final status line.
    pub fn from_log_line(line: &str) -> Option<Self> {
        let line = line.trim_end();
        if line == "TASK OK" {
            return Some(Self::Ok);
        }
        if let Some(w) = line.strip_prefix("TASK WARNINGS: ") {
            return w.parse().ok().map(Self::Warnings);
        }
        line.strip_prefix("TASK ERROR: ")
            .map(|m| Self::Failed(m.to_owned()))
    }

    /// Whether the task succeeded (possibly with warnings).
    pub fn is_success(&self) -> bool {
        !matches!(self, Self::Failed(_))
    }
}

/// `GET /nodes/{node}/tasks/{upid}/status`.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskStatus {
    /// The task id.
    pub upid: String,
    /// `running` or `stopped`.
    pub status: String,
    /// Set once stopped.
    #[serde(default)]
    pub exitstatus: Option<String>,
    /// Task type (`vzdump`, `qmstart`, ...).
    #[serde(rename = "type", default)]
    pub task_type: String,
    /// Object id (VMID), may be empty.
    #[serde(default, deserialize_with = "decode::string_lenient")]
    pub id: String,
    /// `user@realm` (without the token name).
    #[serde(default)]
    pub user: String,
    /// The API token name, if a token started the task.
    #[serde(default)]
    pub tokenid: Option<String>,
    /// Node.
    #[serde(default)]
    pub node: String,
    /// Worker pid.
    #[serde(default, deserialize_with = "decode::opt_u64")]
    pub pid: Option<u64>,
    /// Start time (Unix seconds).
    #[serde(default, deserialize_with = "decode::opt_u64")]
    pub starttime: Option<u64>,
}

impl TaskStatus {
    /// Whether the task still runs.
    pub fn is_running(&self) -> bool {
        self.status != "stopped"
    }

    /// How it ended, once stopped and when PVE reported an exit status.
    pub fn exit(&self) -> Option<TaskExit> {
        if self.is_running() {
            return None;
        }
        self.exitstatus.as_deref().map(TaskExit::from_exit_status)
    }
}

/// One line of a task log.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TaskLogLine {
    /// Line number, from 1.
    #[serde(deserialize_with = "decode::u64_lenient")]
    pub n: u64,
    /// The text.
    #[serde(default)]
    pub t: String,
}

/// A page of a task log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskLog {
    /// The lines of this page.
    pub lines: Vec<TaskLogLine>,
    /// Total number of lines in the log, when PVE reports it.
    pub total: Option<u64>,
}

/// A task that finished successfully.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSuccess {
    /// The N of `WARNINGS: N` (0 for `OK`).
    pub warnings: u32,
}

impl PveClient {
    /// The task's current status.
    pub async fn task_status(&self, task: &TaskRef) -> Result<TaskStatus> {
        self.run(Call::new(
            ops::TASK_STATUS,
            &[task.node.as_str(), task.upid.as_str()],
        ))
        .await
    }

    /// Lines `start..start+limit` (0-based) of the task log.
    pub async fn task_log(&self, task: &TaskRef, start: u64, limit: u64) -> Result<TaskLog> {
        let call = Call::new(ops::TASK_LOG, &[task.node.as_str(), task.upid.as_str()])
            .arg("start", start)
            .arg("limit", limit);
        let env = self.run_envelope::<Vec<TaskLogLine>>(call).await?;
        let mut lines = env.data;
        lines.sort_by_key(|l| l.n);
        Ok(TaskLog {
            lines,
            total: env.total,
        })
    }

    /// The last `n` lines of the task log.
    pub async fn task_log_tail(&self, task: &TaskRef, n: u64) -> Result<Vec<String>> {
        let first = self.task_log(task, 0, n).await?;
        let log = match first.total {
            Some(total) if total > n => self.task_log(task, total - n, n).await?,
            _ => first,
        };
        Ok(log
            .lines
            .into_iter()
            .map(|l| self.redactor().redact(&l.t))
            .collect())
    }

    /// One poll, for controllers that do one bounded step per reconcile: `Ok(None)` while the
    /// task runs, `Ok(Some(..))` when it succeeded, [`Error::TaskFailed`] (with the log tail) when
    /// it failed.
    pub async fn task_result(&self, task: &TaskRef) -> Result<Option<TaskSuccess>> {
        let status = self.task_status(task).await?;
        if status.is_running() {
            return Ok(None);
        }
        let (exit, tail) = match status.exit() {
            Some(exit) => (exit, None),
            None => {
                // Stopped without an exit status: derive it from the last log line, as PVE does.
                let lines = self.task_log_tail(task, LOG_TAIL_LINES).await?;
                let exit = lines.last().and_then(|l| TaskExit::from_log_line(l));
                (
                    exit.unwrap_or_else(|| TaskExit::Failed("unexpected status".into())),
                    Some(lines),
                )
            }
        };
        match exit {
            TaskExit::Ok => Ok(Some(TaskSuccess { warnings: 0 })),
            TaskExit::Warnings(warnings) => Ok(Some(TaskSuccess { warnings })),
            TaskExit::Failed(msg) => {
                let log_tail = match tail {
                    Some(lines) => lines,
                    // The failure is the news; a log that cannot be read must not hide it.
                    None => self.task_log_tail(task, LOG_TAIL_LINES).await.unwrap_or_default(),
                };
                Err(Error::TaskFailed {
                    upid: task.upid.to_string(),
                    exit_status: self.redactor().redact(&msg),
                    log_tail,
                })
            }
        }
    }

    /// Polls every `poll` until the task stops or `deadline` passes ([`Error::Timeout`]).
    /// Transient errors while polling (a node restarting) are tolerated until the deadline.
    pub async fn wait_task(&self, task: &TaskRef, poll: Duration, deadline: Instant) -> Result<TaskSuccess> {
        loop {
            match self.task_result(task).await {
                Ok(Some(done)) => return Ok(done),
                Ok(None) => {}
                // A failed task is final, even when it failed on something transient (a lock).
                Err(e) if e.is_transient() && !matches!(e, Error::TaskFailed { .. }) => {
                    tracing::debug!(task = %task, error = %e, "polling PVE task failed; will retry");
                }
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    what: format!("waiting for task {task}"),
                });
            }
            tokio::time::sleep(poll.min(deadline - now)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_exit_status_parsing() {
        assert_eq!(TaskExit::from_exit_status("OK"), TaskExit::Ok);
        assert_eq!(TaskExit::from_exit_status("WARNINGS: 3"), TaskExit::Warnings(3));
        assert_eq!(
            TaskExit::from_exit_status("job errors"),
            TaskExit::Failed("job errors".into())
        );
        assert_eq!(
            TaskExit::from_exit_status("WARNINGS: x"),
            TaskExit::Failed("WARNINGS: x".into())
        );
        assert!(TaskExit::Warnings(1).is_success() && !TaskExit::Failed(String::new()).is_success());
        assert_eq!(TaskExit::from_log_line("TASK OK"), Some(TaskExit::Ok));
        assert_eq!(
            TaskExit::from_log_line("TASK WARNINGS: 2"),
            Some(TaskExit::Warnings(2))
        );
        assert_eq!(
            TaskExit::from_log_line("TASK ERROR: boom"),
            Some(TaskExit::Failed("boom".into()))
        );
        assert_eq!(TaskExit::from_log_line("INFO: done"), None);
    }

    #[test]
    fn task_ref_serializes_as_plain_upid_string() {
        let s = "UPID:pve2:003C8E2F:14E92805:6AC05394:vzdump:100:root@pam!operator:";
        let t: TaskRef = s.parse().unwrap();
        assert_eq!(t.node.as_str(), "pve2");
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, format!("\"{s}\""));
        assert_eq!(serde_json::from_str::<TaskRef>(&json).unwrap(), t);
        assert!(serde_json::from_str::<TaskRef>("\"not-a-upid\"").is_err());
        let schema = schemars::schema_for!(TaskRef);
        assert_eq!(schema.get("type").and_then(|v| v.as_str()), Some("string"));
    }

    #[test]
    fn task_status_running_has_no_exit() {
        let st: TaskStatus = serde_json::from_str(
            r#"{"upid":"UPID:x:000039C6:1FE23176:619510B1:qmconfig:113:t@pve:","status":"running","id":113}"#,
        )
        .unwrap();
        assert!(st.is_running() && st.exit().is_none());
        assert_eq!(st.id, "113");
    }
}
