//! Events and log lines for what happened: condition transitions (one info line and one Event per
//! flip, nothing when the state holds) and reconcile failures, published from the controller's
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
    status::{DesiredCondition, Transition},
};

/// Logs and publishes a condition transition: if `transition` is a flip, one info line and one
/// Event (`event_type`, `reason`, `action`, the condition's message as note); else nothing.
/// Returns whether an Event was published.
pub async fn report_transition<K, D>(
    ctx: &Context<D>,
    obj: &K,
    condition: &DesiredCondition,
    transition: &Transition,
    event_type: EventType,
    reason: &str,
    action: &str,
) -> Result<bool, Error>
where
    K: Resource<DynamicType = ()>,
{
    let Transition::Flipped { from, to } = transition else {
        return Ok(false);
    };
    info!(
        controller = ctx.controller,
        kind = %K::kind(&()),
        namespace = obj.meta().namespace.as_deref().unwrap_or_default(),
        name = obj.meta().name.as_deref().unwrap_or_default(),
        condition = %condition.type_,
        from = from.as_deref().unwrap_or("none"),
        to = %to,
        reason = %condition.reason,
        "condition changed"
    );
    ctx.publish(obj, event_type, reason, action, condition.message.clone())
        .await?;
    Ok(true)
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
