//! What a reconcile receives: [`Context`], one per controller, sharing the kube client, metrics
//! and the operator's dependencies `D` (defined by the composition root, `controllers::OperatorDeps`).

use std::{fmt, sync::Arc, time::Duration};

use kube::{
    Client, Resource,
    runtime::events::{Event, EventType, Reporter},
};

use super::{backoff::BackoffTracker, error::Error, events::Recorder};
use crate::metrics::Metrics;

/// The Event reporter (`reportingController`) of every Event we publish.
pub const REPORTER: &str = "homelab-autopilot";

/// The server-side apply field manager of a controller: `homelab-autopilot-<controller>`.
pub fn field_manager(controller: &str) -> String {
    format!("{REPORTER}-{controller}")
}

/// Default delay before retrying an object after a permanent error. The object is reconciled
/// earlier when it changes (the user fixed it) or when a watched dependency changes.
pub const PERMANENT_ERROR_REQUEUE: Duration = Duration::from_secs(15 * 60);

/// Everything a controller's reconcile needs. One per controller, shared by all its reconciles.
pub struct Context<D = ()> {
    /// Controller name (lowercase kind): metric label and field manager suffix.
    pub controller: &'static str,
    /// The kube client.
    pub client: Client,
    /// This controller's Event recorder (reporter `homelab-autopilot`, instance = pod name); one
    /// per controller so that exact repeats are merged into series (a changed note is a new
    /// Event).
    pub recorder: Recorder,
    /// Process metrics.
    pub metrics: Metrics,
    /// Consecutive transient failures per object.
    pub backoff: BackoffTracker,
    /// Requeue delay after a permanent error.
    pub permanent_requeue: Duration,
    /// Dependencies beyond Kubernetes, shared by all controllers of the operator.
    pub deps: Arc<D>,
    field_manager: String,
}

impl<D> fmt::Debug for Context<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("controller", &self.controller)
            .field("field_manager", &self.field_manager)
            .finish_non_exhaustive()
    }
}

impl<D> Context<D> {
    /// Builds the context of controller `controller`; `instance` is the Event reporter instance
    /// (the pod name).
    pub fn new(
        controller: &'static str,
        client: Client,
        metrics: Metrics,
        instance: &str,
        backoff: BackoffTracker,
        deps: Arc<D>,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: REPORTER.into(),
                instance: Some(instance.into()),
            },
        );
        Self {
            controller,
            client,
            recorder,
            metrics,
            backoff,
            permanent_requeue: PERMANENT_ERROR_REQUEUE,
            deps,
            field_manager: field_manager(controller),
        }
    }

    /// The server-side apply field manager of this controller.
    pub fn field_manager(&self) -> &str {
        &self.field_manager
    }

    /// Publishes an Event about `obj`. `reason` and `action` are PascalCase API strings; `note`
    /// is a sentence for a human and must not contain secrets.
    pub async fn publish<K>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: impl Into<String>,
    ) -> Result<(), Error>
    where
        K: Resource<DynamicType = ()>,
    {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate_note(note.into())),
            action: action.into(),
            secondary: None,
        };
        self.recorder
            .publish(&event, &obj.object_ref(&()))
            .await
            .map_err(|source| Error::PublishEvent {
                reason: reason.into(),
                kind: K::kind(&()).into_owned(),
                namespace: obj.meta().namespace.clone().unwrap_or_default(),
                name: obj.meta().name.clone().unwrap_or_default(),
                source,
            })
    }
}

/// Event notes are limited to 1 kB by the API.
const MAX_NOTE_BYTES: usize = 1024;

/// Cuts `note` to at most 1 kB on a character boundary.
pub(crate) fn truncate_note(mut note: String) -> String {
    if note.len() > MAX_NOTE_BYTES {
        let mut end = MAX_NOTE_BYTES - '…'.len_utf8();
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push('…');
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_manager_prefixes_controller_name() {
        assert_eq!(field_manager("service"), "homelab-autopilot-service");
    }

    #[test]
    fn truncate_note_keeps_short_notes_and_cuts_long_ones_on_char_boundary() {
        assert_eq!(truncate_note("short".into()), "short");
        let long = "é".repeat(1000);
        let cut = truncate_note(long);
        assert!(cut.len() <= MAX_NOTE_BYTES);
        assert!(cut.ends_with('…'));
    }
}
