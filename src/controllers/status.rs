//! Status reporting (STYLE section 4, step 7): server-side apply of the whole status on the
//! `/status` subresource with the controller's field manager, and condition bookkeeping that keeps
//! `lastTransitionTime` unless the status flips, so an unchanged world writes an unchanged status
//! (no reconcile loops from timestamps).

use std::fmt::Debug;

use jiff::Timestamp;
use k8s_openapi::{
    NamespaceResourceScope,
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
};
use kube::{
    Api, Resource,
    api::{Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};

use super::{context::Context, error::Error};

/// Applies `status` as the complete status of `obj`: a server-side apply patch on `/status` whose
/// body carries apiVersion and kind, with the controller's field manager and `force` (this
/// controller is the only writer of the status, so it takes over fields another manager holds).
/// Fields we set before and omit now are removed. Returns the updated object.
pub async fn patch_status<K, S, D>(ctx: &Context<D>, obj: &K, status: &S) -> Result<K, Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    S: Serialize + Debug,
{
    let (namespace, name) = keys(obj)?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let body = status_patch_body::<K, S>(status);
    let params = PatchParams::apply(ctx.field_manager()).force();
    api.patch_status(&name, &params, &Patch::Apply(body))
        .await
        .map_err(|source| Error::PatchStatus {
            kind: K::kind(&()).into_owned(),
            namespace,
            name,
            source,
        })
}

/// The namespace and name of a stored object.
// The controllers' Error keeps kube::Error inline (the runtime's choice); this is not a hot path.
#[allow(clippy::result_large_err)]
pub fn keys<K: Resource<DynamicType = ()>>(obj: &K) -> Result<(String, String), Error> {
    let missing = |field| Error::MissingObjectKey {
        kind: K::kind(&()).into_owned(),
        field,
    };
    let namespace = obj
        .meta()
        .namespace
        .clone()
        .ok_or_else(|| missing("metadata.namespace"))?;
    let name = obj.meta().name.clone().ok_or_else(|| missing("metadata.name"))?;
    Ok((namespace, name))
}

/// The apply body of a status patch: `{apiVersion, kind, status}`.
pub fn status_patch_body<K: Resource<DynamicType = ()>, S: Serialize>(status: &S) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    })
}

/// Status of a condition (`True`, `False`, `Unknown`): the CRDs' own type, so the generic
/// helpers and the CRD conditions share one.
pub use crate::crd::conditions::ConditionStatus;

/// The condition a controller observed in this reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredCondition {
    /// Condition type (`Ready`, `Connected`, ...), PascalCase.
    pub type_: String,
    /// Its status.
    pub status: ConditionStatus,
    /// PascalCase reason (an error category on failure).
    pub reason: String,
    /// A sentence for a human.
    pub message: String,
}

impl DesiredCondition {
    /// A condition of `type_` with `status`, `reason` and `message`.
    pub fn new(
        type_: impl Into<String>,
        status: impl Into<ConditionStatus>,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// A status condition type the helpers can maintain. Implemented for the Kubernetes
/// `meta/v1 Condition`; the CRD types' own condition type implements it too.
pub trait StatusCondition: Sized {
    /// The condition type.
    fn condition_type(&self) -> &str;
    /// The status string (`True`, `False`, `Unknown`).
    fn condition_status(&self) -> &str;
    /// The reason.
    fn reason(&self) -> &str;
    /// The message.
    fn message(&self) -> &str;
    /// The generation this condition was computed for.
    fn observed_generation(&self) -> Option<i64>;
    /// When the status last flipped.
    fn last_transition_time(&self) -> Option<Timestamp>;
    /// Builds a condition.
    fn build(
        desired: &DesiredCondition,
        observed_generation: Option<i64>,
        last_transition_time: Timestamp,
    ) -> Self;
}

impl StatusCondition for Condition {
    fn condition_type(&self) -> &str {
        &self.type_
    }
    fn condition_status(&self) -> &str {
        &self.status
    }
    fn reason(&self) -> &str {
        &self.reason
    }
    fn message(&self) -> &str {
        &self.message
    }
    fn observed_generation(&self) -> Option<i64> {
        self.observed_generation
    }
    fn last_transition_time(&self) -> Option<Timestamp> {
        Some(self.last_transition_time.0)
    }
    fn build(
        desired: &DesiredCondition,
        observed_generation: Option<i64>,
        last_transition_time: Timestamp,
    ) -> Self {
        Self {
            type_: desired.type_.clone(),
            status: desired.status.as_str().into(),
            reason: desired.reason.clone(),
            message: desired.message.clone(),
            observed_generation,
            last_transition_time: Time(last_transition_time),
        }
    }
}

impl StatusCondition for crate::crd::conditions::Condition {
    fn condition_type(&self) -> &str {
        &self.type_
    }
    fn condition_status(&self) -> &str {
        self.status.as_str()
    }
    fn reason(&self) -> &str {
        &self.reason
    }
    fn message(&self) -> &str {
        &self.message
    }
    fn observed_generation(&self) -> Option<i64> {
        self.observed_generation
    }
    fn last_transition_time(&self) -> Option<Timestamp> {
        Some(self.last_transition_time)
    }
    fn build(
        desired: &DesiredCondition,
        observed_generation: Option<i64>,
        last_transition_time: Timestamp,
    ) -> Self {
        Self::new(
            &desired.type_,
            desired.status,
            &desired.reason,
            &desired.message,
            observed_generation,
            last_transition_time,
        )
    }
}

/// What [`set_condition`] changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Nothing (same status, reason, message and generation).
    Unchanged,
    /// Same status; reason, message or observed generation changed. Not an Event.
    Updated,
    /// The status flipped (or the condition is new): publish an Event and log it.
    Flipped {
        /// The previous status, `None` if the condition is new.
        from: Option<String>,
        /// The new status.
        to: ConditionStatus,
    },
}

impl Transition {
    /// True if the status flipped or the condition is new.
    pub fn is_flip(&self) -> bool {
        matches!(self, Self::Flipped { .. })
    }
}

/// Sets `desired` in `conditions` (replacing the one of the same type), stamped with
/// `observed_generation`. `lastTransitionTime` is kept unless the status flips, then it is `now`.
/// Other condition types are left untouched. Returns what changed.
pub fn set_condition<C: StatusCondition>(
    conditions: &mut Vec<C>,
    desired: &DesiredCondition,
    observed_generation: Option<i64>,
    now: Timestamp,
) -> Transition {
    let existing = conditions
        .iter()
        .position(|c| c.condition_type() == desired.type_);
    let Some(i) = existing else {
        conditions.push(C::build(desired, observed_generation, now));
        return Transition::Flipped {
            from: None,
            to: desired.status,
        };
    };
    let old = &conditions[i];
    let flipped = old.condition_status() != desired.status.as_str();
    let transition = if flipped {
        Transition::Flipped {
            from: Some(old.condition_status().to_owned()),
            to: desired.status,
        }
    } else if old.reason() != desired.reason
        || old.message() != desired.message
        || old.observed_generation() != observed_generation
    {
        Transition::Updated
    } else {
        Transition::Unchanged
    };
    let since = match (flipped, old.last_transition_time()) {
        (false, Some(t)) => t,
        _ => now,
    };
    conditions[i] = C::build(desired, observed_generation, since);
    transition
}

/// The condition of `type_` in `conditions`, if any.
pub fn find_condition<'a, C: StatusCondition>(conditions: &'a [C], type_: &str) -> Option<&'a C> {
    conditions.iter().find(|c| c.condition_type() == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAN1: &str = "2025-01-01T00:00:00Z";
    const JAN2: &str = "2025-01-02T00:00:00Z";

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn ready(ok: bool, reason: &str) -> DesiredCondition {
        DesiredCondition::new("Ready", ok, reason, format!("{reason} happened."))
    }

    /// Sets Ready=`ok` with `reason` for `generation` at time `now`.
    fn set(c: &mut Vec<Condition>, ok: bool, reason: &str, generation: i64, now: &str) -> Transition {
        set_condition(c, &ready(ok, reason), Some(generation), t(now))
    }

    /// Conditions holding Ready=True (Reconciled) for generation 1 since JAN1.
    fn reconciled() -> Vec<Condition> {
        let mut c = vec![];
        set(&mut c, true, "Reconciled", 1, JAN1);
        c
    }

    #[test]
    fn set_condition_new_type_is_a_flip_stamped_now() {
        let mut c: Vec<Condition> = vec![];
        let tr = set(&mut c, true, "Reconciled", 1, JAN1);
        let expected = Transition::Flipped {
            from: None,
            to: ConditionStatus::True,
        };
        assert_eq!(tr, expected);
        assert_eq!(c[0].status, "True");
        assert_eq!(c[0].observed_generation, Some(1));
        assert_eq!(c[0].last_transition_time.0, t(JAN1));
    }

    #[test]
    fn set_condition_same_status_keeps_transition_time_and_updates_generation() {
        let mut c = reconciled();
        let tr = set(&mut c, true, "Reconciled", 2, "2025-02-01T00:00:00Z");
        assert_eq!(tr, Transition::Updated);
        assert_eq!(c[0].observed_generation, Some(2));
        assert_eq!(c[0].last_transition_time.0, t(JAN1));
    }

    #[test]
    fn set_condition_identical_input_is_unchanged_and_idempotent() {
        let mut c = reconciled();
        let before = c.clone();
        let tr = set(&mut c, true, "Reconciled", 1, "2025-03-01T00:00:00Z");
        assert_eq!(tr, Transition::Unchanged);
        assert_eq!(c, before);
    }

    #[test]
    fn set_condition_status_flip_sets_now_and_reports_previous() {
        let mut c = reconciled();
        let tr = set(&mut c, false, "ClusterNotFound", 1, JAN2);
        let expected = Transition::Flipped {
            from: Some("True".into()),
            to: ConditionStatus::False,
        };
        assert_eq!(tr, expected);
        assert!(tr.is_flip());
        assert_eq!(c[0].reason, "ClusterNotFound");
        assert_eq!(c[0].last_transition_time.0, t(JAN2));
    }

    #[test]
    fn set_condition_reason_change_without_flip_keeps_time() {
        let mut c = vec![];
        set(&mut c, false, "Unreachable", 1, JAN1);
        let tr = set(&mut c, false, "AuthFailed", 1, "2025-01-05T00:00:00Z");
        assert_eq!(tr, Transition::Updated);
        assert!(!tr.is_flip());
        assert_eq!(c[0].reason, "AuthFailed");
        assert_eq!(c[0].last_transition_time.0, t(JAN1));
    }

    #[test]
    fn set_condition_leaves_other_types_alone() {
        let mut c = reconciled();
        let connected = DesiredCondition::new("Connected", ConditionStatus::Unknown, "Probing", "Probing.");
        set_condition(&mut c, &connected, Some(1), t(JAN2));
        assert_eq!(c.len(), 2);
        let ready = find_condition(&c, "Ready").unwrap();
        assert_eq!(ready.last_transition_time.0, t(JAN1));
        assert_eq!(find_condition(&c, "Connected").unwrap().status, "Unknown");
        assert!(find_condition(&c, "Quorate").is_none());
    }

    /// The CRDs' condition type through the same helper.
    mod crd_condition {
        use super::*;
        use crate::crd::conditions::{Condition as CrdCondition, READY};

        fn at(secs: i64) -> Timestamp {
            Timestamp::from_second(secs).unwrap()
        }

        fn connected(status: ConditionStatus, reason: &str) -> DesiredCondition {
            DesiredCondition::new(READY, status, reason, format!("{reason} happened"))
        }

        fn conditions() -> Vec<CrdCondition> {
            let mut c = Vec::new();
            set_condition(
                &mut c,
                &connected(ConditionStatus::True, "Connected"),
                Some(3),
                at(100),
            );
            c
        }

        #[test]
        fn set_condition_same_status_keeps_transition_time_and_updates_message() {
            let mut c = conditions();
            let tr = set_condition(
                &mut c,
                &connected(ConditionStatus::True, "StillConnected"),
                Some(3),
                at(200),
            );
            assert_eq!(tr, Transition::Updated);
            assert_eq!(c.len(), 1);
            assert_eq!(c[0].last_transition_time, at(100));
            assert_eq!(c[0].reason, "StillConnected");
            assert_eq!(c[0].message, "StillConnected happened");
        }

        #[test]
        fn set_condition_status_flip_moves_transition_time() {
            let mut c = conditions();
            let tr = set_condition(
                &mut c,
                &connected(ConditionStatus::False, "Unreachable"),
                Some(3),
                at(200),
            );
            assert!(tr.is_flip());
            assert_eq!(c[0].last_transition_time, at(200));
            assert_eq!(c[0].status, ConditionStatus::False);
        }

        #[test]
        fn set_condition_new_type_is_appended_and_reported_as_transition() {
            let mut c = conditions();
            let quorate = DesiredCondition::new("Quorate", ConditionStatus::Unknown, "NotChecked", "");
            let tr = set_condition(&mut c, &quorate, None, at(150));
            assert_eq!(
                tr,
                Transition::Flipped {
                    from: None,
                    to: ConditionStatus::Unknown
                }
            );
            assert_eq!(c.len(), 2);
            assert_eq!(
                c[1],
                CrdCondition::new(
                    "Quorate",
                    ConditionStatus::Unknown,
                    "NotChecked",
                    "",
                    None,
                    at(150)
                )
            );
            assert_eq!(
                find_condition(&c, READY).map(|r| r.last_transition_time),
                Some(at(100))
            );
        }
    }

    #[test]
    fn status_patch_body_carries_api_version_and_kind() {
        use k8s_openapi::api::core::v1::ConfigMap;
        let body = status_patch_body::<ConfigMap, _>(&serde_json::json!({"observedGeneration": 4}));
        let expected = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "status": {"observedGeneration": 4},
        });
        assert_eq!(body, expected);
    }
}
