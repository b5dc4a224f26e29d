//! Poll a PVE task the operator started and recorded in status: one bounded step per pass, never
//! a wait.

use crate::proxmox::{PveClient, TaskRef};

/// How the power task recorded in status is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskView {
    /// No task recorded.
    None,
    /// Still running (or PVE could not be asked: look again later).
    Running(String),
    /// It ended; `error` is `None` on success.
    Done {
        /// The UPID.
        upid: String,
        /// PVE task type (`qmstart`, `vzshutdown`...).
        task_type: String,
        /// Why it failed.
        error: Option<String>,
    },
}

/// Polls the task `upid` once (one bounded step: never waits for it).
pub async fn poll_task(client: &PveClient, upid: &str) -> TaskView {
    let Ok(task) = upid.parse::<TaskRef>() else {
        return TaskView::Done {
            upid: upid.to_owned(),
            task_type: String::new(),
            error: Some(format!("status.upid {upid:?} is not a PVE task id; ignoring it")),
        };
    };
    let task_type = task.upid.worker_type().to_owned();
    match client.task_result(&task).await {
        Ok(None) => TaskView::Running(upid.to_owned()),
        Ok(Some(_)) => TaskView::Done {
            upid: upid.to_owned(),
            task_type,
            error: None,
        },
        Err(e) if e.is_transient() => TaskView::Running(upid.to_owned()),
        Err(e) => TaskView::Done {
            upid: upid.to_owned(),
            task_type,
            error: Some(e.to_string()),
        },
    }
}
