//! Poll a PVE task the operator started and recorded in status (a [`TaskHandle`]): one bounded
//! step per pass, never a wait. The handle is turned into the client's typed task reference here,
//! once.

use crate::crd::common::TaskHandle;
use crate::proxmox::{PveClient, TaskRef};

/// How the task recorded in status is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskView {
    /// No task recorded.
    None,
    /// Still running (or PVE could not be asked: look again later).
    Running(TaskHandle),
    /// It ended; `error` is `None` on success.
    Done {
        /// The task.
        upid: TaskHandle,
        /// PVE task type (`qmstart`, `vzshutdown`...).
        task_type: String,
        /// Why it failed.
        error: Option<String>,
        /// It failed because the guest was locked by another operation (the client's
        /// `Error::is_locked`): worth trying again later, unlike other failures.
        locked: bool,
    },
}

/// The handle of a task the client started, to record in status.
pub fn handle(task: &TaskRef) -> TaskHandle {
    TaskHandle::new(task.upid.to_string())
}

/// Polls the task `upid` once (one bounded step: never waits for it).
pub async fn poll_task(client: &PveClient, upid: &TaskHandle) -> TaskView {
    let Ok(task) = upid.parse::<TaskRef>() else {
        return TaskView::Done {
            upid: upid.clone(),
            task_type: String::new(),
            error: Some(format!(
                "status.upid {:?} is not a PVE task id; ignoring it",
                upid.as_str()
            )),
            locked: false,
        };
    };
    let task_type = task.upid.worker_type().to_owned();
    match client.task_result(&task).await {
        Ok(None) => TaskView::Running(upid.clone()),
        Ok(Some(_)) => TaskView::Done {
            upid: upid.clone(),
            task_type,
            error: None,
            locked: false,
        },
        // A task that ended on a guest lock has ended: report it (the client counts a lock as
        // transient for requests, which would keep it "running" here forever).
        Err(e) if e.is_locked() => TaskView::Done {
            upid: upid.clone(),
            task_type,
            error: Some(e.to_string()),
            locked: true,
        },
        Err(e) if e.is_transient() => TaskView::Running(upid.clone()),
        Err(e) => TaskView::Done {
            upid: upid.clone(),
            task_type,
            error: Some(e.to_string()),
            locked: false,
        },
    }
}
