//! The standard Kubernetes condition shape shared by every kind, and lookups.
//!
//! Controllers build the full status each pass and set conditions with
//! `controllers::status::set_condition`, which keeps `lastTransitionTime` unless the status
//! really flips: writing the same observation twice yields the same status (no reconcile loops
//! from ever-changing timestamps).

use jiff::Timestamp;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Condition type set on every kind: the object is fully reconciled and healthy.
pub const READY: &str = "Ready";

/// One aspect of an object's observed state (same shape as `metav1.Condition`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type in PascalCase, e.g. `Ready`, `Connected`, `BackupSucceeded`.
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 316))]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// Machine-readable PascalCase reason for the last transition, e.g. `AuthenticationFailed`.
    /// Reasons are stable API: alerts may match on them.
    #[schemars(
        length(min = 1, max = 1024),
        regex(pattern = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    )]
    pub reason: String,
    /// Human-readable explanation: what happened and, when something is wrong, what to do.
    #[schemars(length(max = 32768))]
    pub message: String,
    /// When the status last changed between True, False and Unknown (RFC 3339).
    pub last_transition_time: Timestamp,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
}

/// Status of a [`Condition`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// The operator cannot tell (yet).
    Unknown,
}

impl ConditionStatus {
    /// The API string (`True`, `False`, `Unknown`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    /// `True` for `true`, `False` for `false`.
    fn from(value: bool) -> Self {
        if value { Self::True } else { Self::False }
    }
}

impl std::fmt::Display for ConditionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Condition {
    /// A condition observed at `now` for `generation`.
    pub fn new(
        type_: impl Into<String>,
        status: ConditionStatus,
        reason: impl Into<String>,
        message: impl Into<String>,
        generation: Option<i64>,
        now: Timestamp,
    ) -> Self {
        Self {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message: message.into(),
            last_transition_time: now,
            observed_generation: generation,
        }
    }

    /// Whether the status is `True`.
    pub fn is_true(&self) -> bool {
        self.status == ConditionStatus::True
    }
}

/// A status with the standard `conditions` list and `observedGeneration` (every kind's): what
/// the generic driver needs to report a spec it refuses.
pub trait ConditionedStatus {
    /// The conditions.
    fn conditions(&self) -> &[Condition];
    /// The conditions, to change.
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
    /// Sets `observedGeneration`.
    fn set_observed_generation(&mut self, generation: Option<i64>);
}

macro_rules! conditioned_status {
    ($($t:ty),* $(,)?) => {$(
        impl ConditionedStatus for $t {
            fn conditions(&self) -> &[Condition] {
                &self.conditions
            }
            fn conditions_mut(&mut self) -> &mut Vec<Condition> {
                &mut self.conditions
            }
            fn set_observed_generation(&mut self, generation: Option<i64>) {
                self.observed_generation = generation;
            }
        }
    )*};
}

/// Implements [`ConditionedStatus`] for status types with `conditions` and
/// `observed_generation` fields (also test kinds').
#[cfg(test)]
pub(crate) use conditioned_status;

conditioned_status!(
    crate::crd::proxmox_cluster::ProxmoxClusterStatus,
    crate::crd::service::ServiceStatus,
    crate::crd::backup_policy::BackupPolicyStatus,
    crate::crd::update_policy::UpdatePolicyStatus,
    crate::crd::restore_test::RestoreTestStatus,
    crate::crd::replication_job::ReplicationJobStatus,
);

/// Schema of a `status.conditions` list: at most 16 entries, merged by `type` under
/// server-side apply (`x-kubernetes-list-type: map`), like every built-in kind's conditions.
/// Use with `#[schemars(schema_with = "crate::crd::conditions::conditions_schema")]`.
pub fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let item = generator.subschema_for::<Condition>();
    json_schema!({
        "type": "array",
        "items": item,
        "maxItems": 16,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
    })
}

/// The condition of type `type_`, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of type `type_` is present and `True`.
pub fn is_condition_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(Condition::is_true)
}

/// Removes the condition of type `type_`; returns whether one was removed.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) -> bool {
    let before = conditions.len();
    conditions.retain(|c| c.type_ != type_);
    conditions.len() != before
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn cond(status: ConditionStatus, reason: &str, now: Timestamp) -> Condition {
        Condition::new(READY, status, reason, format!("{reason} happened"), Some(3), now)
    }

    #[test]
    fn condition_lookups_find_check_and_remove_by_type() {
        let mut conditions = vec![
            cond(ConditionStatus::True, "Connected", at(100)),
            Condition::new(
                "Quorate",
                ConditionStatus::Unknown,
                "NotChecked",
                "",
                None,
                at(150),
            ),
        ];
        assert!(is_condition_true(&conditions, READY));
        assert!(!is_condition_true(&conditions, "Quorate"));
        assert!(remove_condition(&mut conditions, "Quorate"));
        assert!(!remove_condition(&mut conditions, "Quorate"));
        assert!(find_condition(&conditions, "Quorate").is_none());
        assert_eq!(conditions.len(), 1);
    }

    #[test]
    fn condition_serializes_in_kubernetes_shape() {
        let c = cond(ConditionStatus::False, "Unreachable", at(0));
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "type": "Ready",
                "status": "False",
                "reason": "Unreachable",
                "message": "Unreachable happened",
                "lastTransitionTime": "1970-01-01T00:00:00Z",
                "observedGeneration": 3
            })
        );
        let back: Condition = serde_json::from_value(json).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn condition_accepts_kubernetes_time_with_offset() {
        let json = serde_json::json!({
            "type": "Ready", "status": "True", "reason": "Ok", "message": "",
            "lastTransitionTime": "2024-05-01T12:00:00+02:00"
        });
        let c: Condition = serde_json::from_value(json).unwrap();
        assert_eq!(c.last_transition_time.to_string(), "2024-05-01T10:00:00Z");
        assert_eq!(c.observed_generation, None);
        assert_eq!(ConditionStatus::from(true), ConditionStatus::True);
        assert_eq!(ConditionStatus::Unknown.to_string(), "Unknown");
    }
}
