//! Conditions, set one way by every controller: [`Conditions::set`] keeps `lastTransitionTime`
//! unless the status flips against the stored condition (so an unchanged world writes an
//! unchanged status and wakes no watch) and returns a [`Change`] that says whether the
//! observation is news worth an Event (new, status flipped, or reason changed).

use jiff::Timestamp;

pub use crate::crd::conditions::{Condition, ConditionStatus, find_condition};

/// What a [`Conditions::set`] changed, compared with the stored condition of that type.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// The stored condition before this pass (`None`: the condition is new).
    pub before: Option<Condition>,
    /// The status is new or flipped.
    pub flipped: bool,
    /// The reason changed (the status may have stayed the same).
    pub reason_changed: bool,
}

impl Change {
    /// New, flipped or with another reason: publish an Event.
    pub fn is_news(&self) -> bool {
        self.flipped || self.reason_changed
    }

    /// The condition existed before this pass.
    pub fn existed(&self) -> bool {
        self.before.is_some()
    }
}

/// How one pass sets conditions: against the `stored` list (what the API server has), stamped
/// with the object's generation, with `now` as the transition time of conditions that flip.
#[derive(Clone, Copy, Debug)]
pub struct Conditions<'p> {
    stored: &'p [Condition],
    generation: Option<i64>,
    now: Timestamp,
}

impl<'p> Conditions<'p> {
    /// Conditions of a pass over an object whose stored conditions are `stored`.
    pub fn new(stored: &'p [Condition], generation: Option<i64>, now: Timestamp) -> Self {
        Self {
            stored,
            generation,
            now,
        }
    }

    /// Sets the condition `type_` in `list` (the status being built; other types are left alone).
    /// The transition time and the returned [`Change`] are judged against the stored condition,
    /// not against an earlier set of this same pass.
    pub fn set(
        &self,
        list: &mut Vec<Condition>,
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: &str,
    ) -> Change {
        let before = find_condition(self.stored, type_).cloned();
        let since = before
            .as_ref()
            .filter(|b| b.status == status)
            .map_or(self.now, |b| b.last_transition_time);
        let condition = Condition::new(type_, status, reason, message, self.generation, since);
        match list.iter_mut().find(|c| c.type_ == type_) {
            Some(slot) => *slot = condition,
            None => list.push(condition),
        }
        Change {
            flipped: before.as_ref().is_none_or(|b| b.status != status),
            reason_changed: before.as_ref().is_some_and(|b| b.reason != reason),
            before,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConditionStatus::{False, True, Unknown};

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn stored() -> Vec<Condition> {
        vec![Condition::new(
            "Ready",
            True,
            "Reconciled",
            "ok",
            Some(1),
            at(100),
        )]
    }

    #[test]
    fn new_condition_is_news_stamped_now() {
        let mut list = vec![];
        let change = Conditions::new(&[], Some(1), at(100)).set(&mut list, "Ready", True, "Reconciled", "ok");
        assert!(change.flipped && change.is_news() && !change.existed());
        assert_eq!(list, stored());
    }

    #[test]
    fn same_observation_changes_nothing_and_is_not_news() {
        let before = stored();
        let mut list = before.clone();
        let change =
            Conditions::new(&before, Some(1), at(500)).set(&mut list, "Ready", True, "Reconciled", "ok");
        assert!(!change.is_news() && change.existed());
        assert_eq!(list, before, "no new timestamp: the status is byte-identical");
    }

    #[test]
    fn new_generation_or_message_keeps_transition_time_and_is_not_news() {
        let before = stored();
        let mut list = before.clone();
        let c = Conditions::new(&before, Some(2), at(500));
        assert!(
            !c.set(&mut list, "Ready", True, "Reconciled", "still ok")
                .is_news()
        );
        let ready = &list[0];
        assert_eq!(
            (
                ready.observed_generation,
                ready.last_transition_time,
                ready.message.as_str()
            ),
            (Some(2), at(100), "still ok")
        );
    }

    #[test]
    fn reason_change_without_flip_is_news_but_keeps_time() {
        let before = vec![Condition::new(
            "Connected",
            False,
            "Unreachable",
            "x",
            Some(1),
            at(100),
        )];
        let mut list = before.clone();
        let change = Conditions::new(&before, Some(1), at(500)).set(
            &mut list,
            "Connected",
            False,
            "AuthenticationFailed",
            "y",
        );
        assert!(change.reason_changed && !change.flipped && change.is_news());
        assert_eq!(list[0].last_transition_time, at(100));
    }

    #[test]
    fn flip_moves_transition_time_and_reports_the_stored_condition() {
        let before = stored();
        let mut list = before.clone();
        let change = Conditions::new(&before, Some(1), at(500)).set(
            &mut list,
            "Ready",
            False,
            "ClusterNotFound",
            "gone",
        );
        assert!(change.flipped);
        assert_eq!(change.before.unwrap().status, True);
        assert_eq!(list[0].last_transition_time, at(500));
    }

    #[test]
    fn changes_are_judged_against_the_stored_list_not_earlier_sets_of_this_pass() {
        let before = stored();
        let mut list = before.clone();
        let c = Conditions::new(&before, Some(1), at(500));
        c.set(&mut list, "Ready", False, "Probing", "x");
        let change = c.set(&mut list, "Ready", True, "Reconciled", "ok");
        assert!(!change.is_news(), "back to what was stored: nothing to announce");
        assert_eq!(list, before);
    }

    #[test]
    fn other_types_are_left_alone_and_new_ones_appended() {
        let before = stored();
        let mut list = before.clone();
        Conditions::new(&before, Some(1), at(500)).set(&mut list, "Quorate", Unknown, "NotChecked", "");
        assert_eq!(list.len(), 2);
        assert_eq!(list[0], before[0]);
        assert_eq!(list[1].type_, "Quorate");
    }
}
