//! Events and log lines for what happened: the Events a core planned, condition changes (one
//! info line and one Event per change, nothing when the state holds) and reconcile failures,
//! published from the controller's result stream as Warning Events whose reason is the error
//! category (Stackable `report_controller_reconciled`).
//!
//! [`Recorder`] publishes them. Like kube-runtime's recorder it folds a repeat into the Event it
//! repeats (the series count goes up), but a repeat must say the same thing: the note is part of
//! what makes two Events the same, so when the cause changes ("HTTP 503" becomes "HTTP 500") a
//! new Event tells the current cause instead of a count bumped on the old message.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{
    api::{
        core::v1::ObjectReference,
        events::v1::{Event as K8sEvent, EventSeries},
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::{
        controller::{self, Action},
        events::{Event, EventType, Reporter},
        reflector::ObjectRef,
        watcher,
    },
};
use tracing::{debug, error, info, warn};

use super::{
    context::{Context, truncate_note},
    error::{Error, ReconcileError},
};
use crate::controllers::kit::{Change, PlannedEvent, conditions::Condition};

/// How long a published Event stays the one a repeat is folded into (as kube-runtime's recorder).
const SERIES_TTL: SignedDuration = SignedDuration::from_mins(6);

/// What makes two Events "the same" (folded into one series): type, reason, action, the object
/// they regard and the note.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SeriesKey {
    warning: bool,
    reason: String,
    action: String,
    regarding: (Option<String>, Option<String>, Option<String>, Option<String>),
    note: Option<String>,
}

impl SeriesKey {
    fn new(ev: &Event, regarding: &ObjectReference) -> Self {
        Self {
            warning: matches!(ev.type_, EventType::Warning),
            reason: ev.reason.clone(),
            action: ev.action.clone(),
            regarding: (
                regarding.kind.clone(),
                regarding.namespace.clone(),
                regarding.name.clone(),
                regarding.uid.clone(),
            ),
            note: ev.note.clone(),
        }
    }
}

/// Publishes `events.k8s.io/v1` Events for one controller (reporter `homelab-autopilot`,
/// instance = pod name), folding exact repeats into series. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    reporter: Reporter,
    series: Arc<Mutex<HashMap<SeriesKey, K8sEvent>>>,
}

impl Recorder {
    /// A recorder publishing through `client` as `reporter`.
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            series: Arc::default(),
        }
    }

    /// Publishes `ev` about the object `regarding`: a new Event, or, when the same Event (same
    /// note included) was published less than 6 minutes ago, a bump of its series count.
    pub async fn publish(&self, ev: &Event, regarding: &ObjectReference) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = SeriesKey::new(ev, regarding);
        let event = {
            let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
            series.retain(|_, e| {
                let last = e
                    .series
                    .as_ref()
                    .map(|s| s.last_observed_time.0)
                    .or_else(|| e.event_time.as_ref().map(|t| t.0));
                last.is_none_or(|t| t + SERIES_TTL > now)
            });
            match series.get(&key) {
                Some(previous) => {
                    let mut event = previous.clone();
                    event.series = Some(EventSeries {
                        count: previous.series.as_ref().map_or(2, |s| s.count + 1),
                        last_observed_time: MicroTime(now),
                    });
                    event
                }
                None => self.new_event(ev, regarding, now),
            }
        };
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        if event.series.is_some() {
            api.patch(&event.name_any(), &PatchParams::default(), &Patch::Merge(&event))
                .await?;
        } else {
            api.create(&PostParams::default(), &event).await?;
        }
        self.series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, event);
        Ok(())
    }

    fn new_event(&self, ev: &Event, regarding: &ObjectReference, now: Timestamp) -> K8sEvent {
        let object = regarding.name.as_deref().unwrap_or(&self.reporter.controller);
        K8sEvent {
            metadata: ObjectMeta {
                name: Some(format!("{object}.{:x}", now.as_nanosecond())),
                namespace: regarding.namespace.clone(),
                ..ObjectMeta::default()
            },
            type_: Some(
                match ev.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
            ),
            reason: Some(ev.reason.clone()),
            action: Some(ev.action.clone()),
            note: ev.note.clone(),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: ev.secondary.clone(),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            ..K8sEvent::default()
        }
    }
}

/// Logs and publishes a condition change: if `change` is news (new, flipped, or another
/// reason), one info line and one Event (`event_type`, `reason`, `action`, the condition's
/// message as note); else nothing. Returns whether an Event was published.
pub async fn report_change<K, D>(
    ctx: &Context<D>,
    obj: &K,
    condition: &Condition,
    change: &Change,
    event_type: EventType,
    reason: &str,
    action: &str,
) -> Result<bool, Error>
where
    K: Resource<DynamicType = ()>,
{
    if !change.is_news() {
        return Ok(false);
    }
    info!(
        controller = ctx.controller,
        kind = %K::kind(&()),
        namespace = obj.meta().namespace.as_deref().unwrap_or_default(),
        name = obj.meta().name.as_deref().unwrap_or_default(),
        condition = %condition.type_,
        from = change.before.as_ref().map_or("none", |b| b.status.as_str()),
        to = %condition.status,
        reason = %condition.reason,
        "condition changed"
    );
    ctx.publish(obj, event_type, reason, action, condition.message.clone())
        .await?;
    Ok(true)
}

/// Publishes the planned Events about `obj`. A failure is logged, not returned: the status is
/// already written, and Events are best effort.
pub async fn publish_events<K: Resource<DynamicType = ()>, D>(
    ctx: &Context<D>,
    obj: &K,
    events: &[PlannedEvent],
) {
    for e in events {
        let type_ = if e.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        if let Err(err) = ctx.publish(obj, type_, &e.reason, e.action, e.note.clone()).await {
            tracing::warn!(reason = %e.reason, error = %err, "cannot publish Event");
        }
    }
}

/// The action of Warning Events about failed reconciles.
pub const RECONCILE_ACTION: &str = "Reconcile";

/// Handles one item of a controller's result stream: a failed reconcile becomes a Warning Event
/// on the object (reason = error category); watch and runner errors are logged.
pub(crate) async fn report_reconciled<K, E, D>(
    ctx: &Context<D>,
    result: Result<(ObjectRef<K>, Action), controller::Error<E, watcher::Error>>,
) where
    K: Resource,
    E: ReconcileError,
{
    match result {
        Ok((obj, action)) => debug!(controller = ctx.controller, object = %obj, ?action, "reconciled"),
        Err(controller::Error::ReconcilerFailed(err, obj)) => {
            let event = Event {
                type_: EventType::Warning,
                reason: err.category().into(),
                note: Some(truncate_note(err.to_string())),
                action: RECONCILE_ACTION.into(),
                secondary: None,
            };
            let reference = ObjectReference::from(*obj);
            if let Err(e) = ctx.recorder.publish(&event, &reference).await {
                warn!(
                    controller = ctx.controller,
                    namespace = reference.namespace.as_deref().unwrap_or_default(),
                    name = reference.name.as_deref().unwrap_or_default(),
                    reason = err.category(),
                    error = %e,
                    "cannot publish Warning Event"
                );
            }
        }
        Err(controller::Error::ObjectNotFound(obj)) => {
            debug!(controller = ctx.controller, object = %obj, "object gone before its reconcile");
        }
        Err(controller::Error::QueueError(e)) => {
            warn!(controller = ctx.controller, error = %e, "watch failed; retrying with backoff");
        }
        Err(controller::Error::RunnerError(e)) => {
            error!(controller = ctx.controller, error = %e, "controller runner failed");
        }
    }
}
