//! What one reconcile pass of a core returns: the complete status, the Events to publish after
//! it is written, and when to look again. Its driver (the kube runtime or the demo) does the
//! writing and publishing.

use std::time::Duration;

/// An Event a reconcile pass wants published (on transitions only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedEvent {
    /// Warning (something is wrong) or Normal.
    pub warning: bool,
    /// PascalCase reason, stable API (`GuestMigrated`, `AuthenticationFailed`).
    pub reason: String,
    /// PascalCase action the controller took or observed (`Observe`, `Start`, `Connect`).
    pub action: &'static str,
    /// A sentence for a human; never contains secrets.
    pub note: String,
}

impl PlannedEvent {
    /// A Normal Event.
    pub fn normal(reason: impl Into<String>, action: &'static str, note: impl Into<String>) -> Self {
        Self {
            warning: false,
            reason: reason.into(),
            action,
            note: note.into(),
        }
    }

    /// A Warning Event.
    pub fn warning(reason: impl Into<String>, action: &'static str, note: impl Into<String>) -> Self {
        Self {
            warning: true,
            reason: reason.into(),
            action,
            note: note.into(),
        }
    }

    /// `Normal` or `Warning`, as `kubectl get events` prints the type.
    pub fn type_str(&self) -> &'static str {
        if self.warning { "Warning" } else { "Normal" }
    }
}

/// The result of one reconcile pass of a core: the complete status to write, the Events to
/// publish after it is written, and when to look again.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome<S> {
    /// The whole status (written with server-side apply, so omitted fields are removed).
    pub status: S,
    /// Events, in the order they happened.
    pub events: Vec<PlannedEvent>,
    /// Delay before the next pass (earlier if a watched object changes).
    pub requeue: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planned_event_types_print_like_kubectl() {
        assert_eq!(PlannedEvent::normal("A", "Observe", "x").type_str(), "Normal");
        assert_eq!(PlannedEvent::warning("A", "Observe", "x").type_str(), "Warning");
    }
}
