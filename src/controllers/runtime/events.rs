//! Events and log lines for what happened: the Events a core planned, condition changes (one
//! info line and one Event per change, nothing when the state holds) and reconcile failures, published from the controller's
//! result stream as Warning Events whose reason is the error category (Stackable
//! `report_controller_reconciled`).

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Resource,
    runtime::{
        controller::{self, Action},
        events::{Event, EventType},
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
