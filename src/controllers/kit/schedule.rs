//! Cron schedules of the scheduled kinds (BackupPolicy, UpdatePolicy, RestoreTest, and any
//! later one), as plain functions over `jiff` timestamps.
//!
//! A reconcile parses the spec once ([`Schedule::from_spec`]: `schedule` plus `timeZone`,
//! errors naming the field with a condition reason), asks [`Schedule::due`] whether a slot is
//! to be run now, skipped as too late, or waited for, names the run with [`run_id`], and
//! requeues with [`requeue_after`]. [`run_now_requested`] reads the on-demand annotation
//! [`RUN_NOW_ANNOTATION`].
//!
//! # Slots and daylight saving time
//!
//! A schedule names wall-clock times ("slots") in its time zone, as cron does. Each slot runs
//! at most once, at one instant:
//!
//! - a slot the clock skips (spring forward: 02:30 on the last Sunday of March does not exist
//!   in Europe/Berlin) runs at the first instant after the gap (03:00 CEST); several skipped
//!   slots (`*/15 2 * * *`) fold into that one run, as does a slot at the end of the gap;
//! - a slot the clock shows twice (fall back: 02:30 on the last Sunday of October happens in
//!   CEST and again in CET) runs at its first occurrence only.
//!
//! croner 4, asked with a zoned time, does the same for a single time of day, but treats any
//! schedule with a list, range, step or `*` in its minute or hour field as an interval job: the
//! repeated hour runs again (`30 2,14 * * *` would run three times on the fall-back day) and
//! times inside the gap do not run at all. A second backup or update because the wall clock
//! repeated is work nobody asked for, so this module asks croner for wall-clock slots only
//! (civil times) and maps them to instants itself, by the rule above, for every schedule. An
//! hourly schedule therefore has one two-hour interval on the fall-back day.
//!
//! # Missed runs
//!
//! A slot is served once a run for it started or it was skipped; the controller records the
//! slot's time in status. When the operator was down, or requeued late, [`Schedule::due`] runs
//! only the most recent slot that passed since the last served one (never one run per missed
//! slot), unless it is later than `startingDeadlineSeconds`: then it is skipped and reported.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp};

use crate::crd::validation::parse_cron;
pub use crate::crd::validation::{REASON_INVALID_TIME_ZONE, UnknownTimeZone, time_zone};

/// Annotation that requests a run now, whatever the schedule says. Any new non-empty value
/// (e.g. a date: `kubectl annotate bkp nightly autopilot.homelab.dev/run-now="$(date +%s)"
/// --overwrite`) requests one run; the controller records the value it served in
/// `status.lastRunRequest`.
pub const RUN_NOW_ANNOTATION: &str = "autopilot.homelab.dev/run-now";

/// Longest requeue of a scheduled kind while it waits for its next slot. Waking up at least this
/// often notices a wall clock that jumped, a resumed suspend or an edit the watch missed, at a
/// cost of one cheap reconcile.
pub const MAX_REQUEUE: Duration = Duration::from_secs(10 * 60);

/// Shortest requeue: a slot that is due now (or a clock slightly behind) is checked again after
/// this, not in a tight loop.
pub const MIN_REQUEUE: Duration = Duration::from_secs(1);

/// Condition reason for a `schedule` field the operator cannot use.
pub const REASON_INVALID_SCHEDULE: &str = "InvalidSchedule";

/// Event reason for a slot skipped because it was later than `startingDeadlineSeconds`.
pub const REASON_SCHEDULE_MISSED: &str = "ScheduleMissed";

/// Why a schedule cannot be used. Both variants name the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The schedule does not parse, or never matches a date.
    #[error("{field}: {message}")]
    Schedule {
        /// Path of the field, e.g. `spec.schedule`.
        field: String,
        /// What is wrong and the fix.
        message: String,
    },
    /// The time zone is not in the operator's time zone database.
    #[error(transparent)]
    TimeZone(#[from] UnknownTimeZone),
}

impl ScheduleError {
    /// Condition reason: `InvalidSchedule` or `InvalidTimeZone`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Schedule { .. } => REASON_INVALID_SCHEDULE,
            Self::TimeZone(e) => e.reason(),
        }
    }

    /// Path of the field at fault.
    pub fn field(&self) -> &str {
        match self {
            Self::Schedule { field, .. } => field,
            Self::TimeZone(e) => &e.field,
        }
    }
}

/// A parsed schedule in its time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: croner::Cron,
    zone: TimeZone,
    field: String,
    expr: String,
}

/// What a scheduled kind does now, from [`Schedule::due`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Due {
    /// Start the run for the slot at `scheduled` (the most recent one not yet served; older
    /// missed slots are folded into it). Record `scheduled` before acting.
    Run {
        /// The slot this run serves.
        scheduled: Timestamp,
    },
    /// The most recent missed slot is later than the starting deadline: record it as served
    /// without running, report it (Event [`REASON_SCHEDULE_MISSED`], [`Skipped::message`]) and
    /// wait for `next`.
    Skip(Skipped),
    /// Nothing to run before `next`.
    Wait {
        /// The next slot.
        next: Timestamp,
    },
}

/// A slot skipped because it was too late to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The slot skipped.
    pub scheduled: Timestamp,
    /// How late it would have started.
    pub late_by: SignedDuration,
    /// The starting deadline it exceeded.
    pub deadline: SignedDuration,
    /// The next slot.
    pub next: Timestamp,
}

impl Skipped {
    /// A sentence for the Event, e.g. "skipped the run scheduled for 2024-06-01T02:30:00Z: it
    /// would start 3h 5m late, more than startingDeadlineSeconds (3600); next run at ...".
    pub fn message(&self) -> String {
        format!(
            "skipped the run scheduled for {}: it would start {:#} late, more than \
             startingDeadlineSeconds ({}); next run at {}",
            self.scheduled,
            self.late_by,
            self.deadline.as_secs(),
            self.next
        )
    }
}

impl Schedule {
    /// Parses `expr`, the value of the field at `field` (e.g. `spec.verification.schedule`),
    /// to be read on the wall clock of `zone`.
    pub fn parse(field: &str, expr: &str, zone: TimeZone) -> Result<Self, ScheduleError> {
        let cron = parse_cron(expr).map_err(|message| ScheduleError::Schedule {
            field: field.to_string(),
            message,
        })?;
        Ok(Self {
            cron,
            zone,
            field: field.to_string(),
            expr: expr.to_string(),
        })
    }

    /// Parses the usual pair of fields `{prefix}schedule` and `{prefix}timeZone` (prefix
    /// `spec.`), checking the zone with the shared [`time_zone`] check.
    pub fn from_spec(prefix: &str, expr: &str, zone_name: &str) -> Result<Self, ScheduleError> {
        let zone = time_zone(&format!("{prefix}timeZone"), zone_name)?;
        Self::parse(&format!("{prefix}schedule"), expr, zone)
    }

    /// The time zone the schedule is read in.
    pub fn zone(&self) -> &TimeZone {
        &self.zone
    }

    /// The first slot strictly after `t`, by the rule in the module docs.
    pub fn next_after(&self, t: Timestamp) -> Result<Timestamp, ScheduleError> {
        let mut slot = self.zone.to_datetime(t);
        loop {
            slot = self
                .cron
                .find_next_occurrence(&slot, false)
                .map_err(|e| self.never_fires(&e))?;
            let at = self.instant_of(slot)?;
            // A slot in the repeated hour that already passed in its first occurrence is
            // before `t` although its wall clock is after `t`'s: look further.
            if at > t {
                return Ok(at);
            }
        }
    }

    /// The latest slot in `(after, until]`, if any.
    pub fn latest_between(
        &self,
        after: Timestamp,
        until: Timestamp,
    ) -> Result<Option<Timestamp>, ScheduleError> {
        // Walk forward from a window before `until`, widening it until it holds a slot or
        // reaches `after`: the walk stays short for frequent schedules after a long outage,
        // and sparse ones (Feb 29) need a few widenings only.
        let mut window = SignedDuration::from_hours(1);
        loop {
            let start = until.checked_sub(window).unwrap_or(after).max(after);
            let mut latest = None;
            let mut cursor = start;
            loop {
                let slot = self.next_after(cursor)?;
                if slot > until {
                    break;
                }
                latest = Some(slot);
                cursor = slot;
            }
            if latest.is_some() || start == after {
                return Ok(latest);
            }
            window = window.saturating_mul(4);
        }
    }

    /// The missed-run rule. `last_served` is the slot of the last run started or skipped (from
    /// status), `created` the object's creation time (slots before it are not missed), `now`
    /// the current time and `deadline` the spec's `startingDeadlineSeconds` (absent: a missed
    /// slot runs however late).
    ///
    /// The most recent slot after the later of `last_served` and `created`, at or before
    /// `now`, runs once; older ones are dropped. It is skipped instead when it is more than
    /// `deadline` late. A `now` before `last_served` (the clock went back) runs nothing until
    /// the slot after `last_served`.
    pub fn due(
        &self,
        last_served: Option<Timestamp>,
        created: Timestamp,
        now: Timestamp,
        deadline: Option<SignedDuration>,
    ) -> Result<Due, ScheduleError> {
        let since = last_served.map_or(created, |served| served.max(created));
        let Some(scheduled) = self.latest_between(since, now)? else {
            return Ok(Due::Wait {
                next: self.next_after(since.max(now))?,
            });
        };
        let late_by = now.duration_since(scheduled);
        match deadline {
            Some(deadline) if late_by > deadline => Ok(Due::Skip(Skipped {
                scheduled,
                late_by,
                deadline,
                next: self.next_after(now)?,
            })),
            _ => Ok(Due::Run { scheduled }),
        }
    }

    /// The instant a wall-clock slot runs at: itself, the first instant after a gap it falls
    /// in, or its first occurrence when the clock shows it twice.
    fn instant_of(&self, slot: DateTime) -> Result<Timestamp, ScheduleError> {
        let out_of_range = |_| self.never_fires(&"the date is out of range");
        match self.zone.to_ambiguous_timestamp(slot).offset() {
            AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(slot).map_err(out_of_range),
            AmbiguousOffset::Fold { before, .. } => before.to_timestamp(slot).map_err(out_of_range),
            AmbiguousOffset::Gap { after, .. } => {
                // Read with the later offset, the slot lies before the transition that opens
                // the gap; that transition is the first instant after the gap.
                let before_gap = after.to_timestamp(slot).map_err(out_of_range)?;
                self.zone
                    .following(before_gap)
                    .next()
                    .map(|transition| transition.timestamp())
                    .ok_or_else(|| self.never_fires(&"no time zone transition closes the gap"))
            }
        }
    }

    fn never_fires(&self, cause: &dyn std::fmt::Display) -> ScheduleError {
        ScheduleError::Schedule {
            field: self.field.clone(),
            message: format!(
                "{:?} has no next run ({cause}); pick a date that exists",
                self.expr
            ),
        }
    }
}

/// The run id of a slot: its time in UTC as `YYYYMMDD-HHMMSS`, e.g. `20240601-023000`.
/// Deterministic, so a restarted operator finds the run it recorded; UTC, so the two slots of a
/// repeated hour could never share one.
pub fn run_id(scheduled: Timestamp) -> String {
    scheduled.strftime("%Y%m%d-%H%M%S").to_string()
}

/// How long to wait before looking again when the next slot is at `next`: until then, but at
/// most [`MAX_REQUEUE`] and at least [`MIN_REQUEUE`].
pub fn requeue_after(now: Timestamp, next: Timestamp) -> Duration {
    let until = next.duration_since(now);
    Duration::try_from(until)
        .unwrap_or(Duration::ZERO)
        .clamp(MIN_REQUEUE, MAX_REQUEUE)
}

/// The on-demand run request to serve, if any: the [`RUN_NOW_ANNOTATION`] value when it is
/// non-empty and differs from `last_served` (`status.lastRunRequest`). The caller records the
/// returned value in status when it starts the run, so each value runs once.
pub fn run_now_requested<'a>(
    annotations: &'a BTreeMap<String, String>,
    last_served: Option<&str>,
) -> Option<&'a str> {
    annotations
        .get(RUN_NOW_ANNOTATION)
        .map(String::as_str)
        .filter(|value| !value.trim().is_empty() && Some(*value) != last_served)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn berlin() -> TimeZone {
        time_zone("spec.timeZone", "Europe/Berlin")
            .expect("these tests need a time zone database (/usr/share/zoneinfo)")
    }

    fn at(utc: &str) -> Timestamp {
        utc.parse().expect("an RFC 3339 timestamp")
    }

    fn schedule(expr: &str, zone: TimeZone) -> Schedule {
        Schedule::parse("spec.schedule", expr, zone).expect("a valid schedule")
    }

    /// Every slot in `(from, to]`.
    fn slots(s: &Schedule, from: Timestamp, to: Timestamp) -> Vec<Timestamp> {
        let mut out = Vec::new();
        let mut t = from;
        loop {
            t = s.next_after(t).expect("a next slot");
            if t > to {
                return out;
            }
            out.push(t);
        }
    }

    /// The slots of `s` whose wall-clock date in Berlin is `date`.
    fn slots_on(s: &Schedule, date: &str) -> Vec<Timestamp> {
        let day: jiff::civil::Date = date.parse().expect("a date");
        let from = at(&format!("{}T00:00:00Z", day.yesterday().expect("in range")));
        let to = at(&format!(
            "{}T00:00:00Z",
            day.tomorrow().expect("in range").tomorrow().expect("")
        ));
        slots(s, from, to)
            .into_iter()
            .filter(|t| berlin().to_datetime(*t).date() == day)
            .collect()
    }

    /// Drives `due` the way a controller does (run, record the slot, requeue capped) from
    /// `from` to `to`, and returns the slots it ran.
    fn runs_of_a_reconcile_loop(s: &Schedule, from: Timestamp, to: Timestamp) -> Vec<Timestamp> {
        let (mut now, mut served, mut ran) = (from, None, Vec::new());
        while now <= to {
            match s.due(served, from, now, None).expect("due") {
                Due::Run { scheduled } => {
                    served = Some(scheduled);
                    ran.push(scheduled);
                }
                Due::Wait { next } => now += requeue_after(now, next),
                Due::Skip(skipped) => panic!("no deadline, yet skipped: {skipped:?}"),
            }
        }
        ran
    }

    #[test]
    fn two_thirty_runs_once_at_three_on_the_spring_forward_day() {
        // 2025-03-30: Berlin jumps from 02:00 CET to 03:00 CEST; 02:30 does not exist.
        let s = schedule("30 2 * * *", berlin());
        assert_eq!(slots_on(&s, "2025-03-29"), [at("2025-03-29T01:30:00Z")]);
        assert_eq!(
            slots_on(&s, "2025-03-30"),
            [at("2025-03-30T01:00:00Z")],
            "03:00 CEST"
        );
        assert_eq!(slots_on(&s, "2025-03-31"), [at("2025-03-31T00:30:00Z")]);
    }

    #[test]
    fn two_thirty_runs_once_on_the_fall_back_day_at_its_first_occurrence() {
        // 2025-10-26: Berlin goes from 03:00 CEST back to 02:00 CET; 02:30 happens twice.
        let s = schedule("30 2 * * *", berlin());
        assert_eq!(
            slots_on(&s, "2025-10-26"),
            [at("2025-10-26T00:30:00Z")],
            "02:30 CEST"
        );
        // From inside the repeated hour (02:10 CET, after the first 02:30): tomorrow.
        assert_eq!(
            s.next_after(at("2025-10-26T01:10:00Z")).unwrap(),
            at("2025-10-27T01:30:00Z")
        );
    }

    #[test]
    fn the_reconcile_loop_runs_two_thirty_once_on_each_dst_day() {
        let s = schedule("30 2 * * *", berlin());
        for (from, to, day) in [
            ("2025-03-29T12:00:00Z", "2025-03-31T12:00:00Z", "2025-03-30"),
            ("2025-10-25T12:00:00Z", "2025-10-27T12:00:00Z", "2025-10-26"),
        ] {
            let ran = runs_of_a_reconcile_loop(&s, at(from), at(to));
            assert_eq!(ran.len(), 2, "{day}: {ran:?}");
            let day: jiff::civil::Date = day.parse().unwrap();
            let on_day = ran.iter().filter(|t| berlin().to_datetime(**t).date() == day);
            assert_eq!(on_day.count(), 1, "{day}: {ran:?}");
        }
    }

    #[test]
    fn listed_hourly_and_stepped_slots_run_once_per_wall_clock_time() {
        // croner alone would run the 02:30 of a list twice on the fall-back day.
        let twice_a_day = schedule("30 2,14 * * *", berlin());
        assert_eq!(
            slots_on(&twice_a_day, "2025-10-26"),
            [at("2025-10-26T00:30:00Z"), at("2025-10-26T13:30:00Z")]
        );
        assert_eq!(slots_on(&twice_a_day, "2025-03-30").len(), 2);

        let hourly = schedule("@hourly", berlin());
        let fall_back = slots_on(&hourly, "2025-10-26");
        assert_eq!(fall_back.len(), 24, "each wall-clock hour once: {fall_back:?}");
        assert!(fall_back.contains(&at("2025-10-26T00:00:00Z")), "02:00 CEST");
        assert!(
            !fall_back.contains(&at("2025-10-26T01:00:00Z")),
            "02:00 CET repeats a slot"
        );
        let spring = slots_on(&hourly, "2025-03-30");
        assert_eq!(
            spring.len(),
            23,
            "02:00 and 03:00 fold into 03:00 CEST: {spring:?}"
        );

        let in_the_gap = schedule("*/15 2 * * *", berlin());
        assert_eq!(slots_on(&in_the_gap, "2025-03-30"), [at("2025-03-30T01:00:00Z")]);
        assert_eq!(slots_on(&in_the_gap, "2025-10-26").len(), 4);
    }

    #[test]
    fn several_missed_slots_run_once_the_most_recent() {
        let s = schedule("0 * * * *", TimeZone::UTC);
        let created = at("2024-06-01T00:00:00Z");
        let now = at("2024-06-01T14:20:00Z");
        let served = Some(at("2024-06-01T10:00:00Z"));
        assert_eq!(
            s.due(served, created, now, None).unwrap(),
            Due::Run {
                scheduled: at("2024-06-01T14:00:00Z")
            }
        );
        let after_the_run = Some(at("2024-06-01T14:00:00Z"));
        assert_eq!(
            s.due(after_the_run, created, now, None).unwrap(),
            Due::Wait {
                next: at("2024-06-01T15:00:00Z")
            }
        );
    }

    #[test]
    fn a_missed_slot_inside_the_starting_deadline_runs() {
        let s = schedule("30 2 * * *", TimeZone::UTC);
        let (created, served) = (at("2024-05-01T00:00:00Z"), Some(at("2024-05-31T02:30:00Z")));
        let deadline = Some(SignedDuration::from_hours(1));
        let slot = at("2024-06-01T02:30:00Z");
        for now in [
            "2024-06-01T02:30:00Z",
            "2024-06-01T03:00:00Z",
            "2024-06-01T03:30:00Z",
        ] {
            assert_eq!(
                s.due(served, created, at(now), deadline).unwrap(),
                Due::Run { scheduled: slot },
                "{now}"
            );
        }
    }

    #[test]
    fn a_missed_slot_past_the_starting_deadline_is_skipped_and_reported() {
        let s = schedule("30 2 * * *", TimeZone::UTC);
        let (created, served) = (at("2024-05-01T00:00:00Z"), Some(at("2024-05-29T02:30:00Z")));
        let deadline = Some(SignedDuration::from_hours(1));
        let Due::Skip(skipped) = s
            .due(served, created, at("2024-06-01T03:30:01Z"), deadline)
            .unwrap()
        else {
            panic!("expected a skip");
        };
        assert_eq!(
            skipped.scheduled,
            at("2024-06-01T02:30:00Z"),
            "the most recent slot"
        );
        assert_eq!(skipped.late_by, SignedDuration::from_secs(3601));
        assert_eq!(skipped.next, at("2024-06-02T02:30:00Z"));
        let message = skipped.message();
        assert!(
            message.contains("2024-06-01T02:30:00Z")
                && message.contains("start 1h 1s late")
                && message.contains("startingDeadlineSeconds (3600)")
                && message.contains("2024-06-02T02:30:00Z"),
            "{message}"
        );
        // Recorded as served, the slot is not offered again.
        assert_eq!(
            s.due(
                Some(skipped.scheduled),
                created,
                at("2024-06-01T03:31:00Z"),
                deadline
            )
            .unwrap(),
            Due::Wait { next: skipped.next }
        );
    }

    #[test]
    fn slots_before_creation_and_after_a_clock_jump_back_are_not_run() {
        let s = schedule("30 2 * * *", TimeZone::UTC);
        let created = at("2024-06-01T10:00:00Z");
        assert_eq!(
            s.due(None, created, at("2024-06-01T10:01:00Z"), None).unwrap(),
            Due::Wait {
                next: at("2024-06-02T02:30:00Z")
            }
        );
        // Served 02:30 on June 2nd, then the clock went back a day.
        let served = Some(at("2024-06-02T02:30:00Z"));
        assert_eq!(
            s.due(served, created, at("2024-06-01T12:00:00Z"), None).unwrap(),
            Due::Wait {
                next: at("2024-06-03T02:30:00Z")
            }
        );
    }

    #[test]
    fn a_february_29_schedule_fires_in_leap_years_only() {
        let s = schedule("0 3 29 2 *", TimeZone::UTC);
        let next = s.next_after(at("2025-03-01T00:00:00Z")).unwrap();
        assert_eq!(next, at("2028-02-29T03:00:00Z"));
        assert_eq!(s.next_after(next).unwrap(), at("2032-02-29T03:00:00Z"));
        let created = at("2019-01-01T00:00:00Z");
        assert_eq!(
            s.due(
                Some(at("2024-02-29T03:00:00Z")),
                created,
                at("2027-06-01T00:00:00Z"),
                None
            )
            .unwrap(),
            Due::Wait { next }
        );
        assert_eq!(
            s.due(
                Some(at("2020-02-29T03:00:00Z")),
                created,
                at("2027-06-01T00:00:00Z"),
                None
            )
            .unwrap(),
            Due::Run {
                scheduled: at("2024-02-29T03:00:00Z")
            }
        );
    }

    #[test]
    fn run_id_is_the_slot_in_utc() {
        assert_eq!(run_id(at("2024-06-01T02:30:00Z")), "20240601-023000");
        let berlin_slot = schedule("30 2 * * *", berlin())
            .next_after(at("2024-06-01T00:00:00Z"))
            .unwrap();
        assert_eq!(run_id(berlin_slot), "20240601-003000");
    }

    #[test]
    fn requeue_waits_for_the_next_slot_within_the_cap() {
        let now = at("2024-06-01T02:00:00Z");
        let in_secs = |s: i64| now + SignedDuration::from_secs(s);
        assert_eq!(requeue_after(now, in_secs(90)), Duration::from_secs(90));
        assert_eq!(requeue_after(now, in_secs(3 * 3600)), MAX_REQUEUE);
        assert_eq!(requeue_after(now, now), MIN_REQUEUE);
        assert_eq!(requeue_after(now, in_secs(-60)), MIN_REQUEUE);
        assert!(MAX_REQUEUE >= Duration::from_secs(5 * 60) && MAX_REQUEUE <= Duration::from_secs(15 * 60));
    }

    #[test]
    fn run_now_needs_a_new_non_empty_annotation_value() {
        let annotated = |v: &str| BTreeMap::from([(RUN_NOW_ANNOTATION.to_string(), v.to_string())]);
        assert_eq!(run_now_requested(&BTreeMap::new(), None), None);
        assert_eq!(run_now_requested(&annotated(""), None), None);
        assert_eq!(run_now_requested(&annotated("  "), Some("1")), None);
        assert_eq!(run_now_requested(&annotated("1"), None), Some("1"));
        assert_eq!(run_now_requested(&annotated("1"), Some("1")), None);
        assert_eq!(run_now_requested(&annotated("2"), Some("1")), Some("2"));
        let other = BTreeMap::from([("autopilot.homelab.dev/other".to_string(), "1".to_string())]);
        assert_eq!(run_now_requested(&other, None), None);
    }

    #[test]
    fn errors_name_the_field_and_carry_the_condition_reason() {
        let err = Schedule::from_spec("spec.", "30 2 * * *", "Europe/Berln").unwrap_err();
        assert_eq!(err.reason(), "InvalidTimeZone");
        assert_eq!(err.field(), "spec.timeZone");
        assert_eq!(
            err.to_string(),
            "spec.timeZone: \"Europe/Berln\" is not a time zone this operator knows; \
             use an IANA name such as Europe/Berlin"
        );
        let err = Schedule::from_spec("spec.", "0 25 * * *", "UTC").unwrap_err();
        assert_eq!((err.reason(), err.field()), ("InvalidSchedule", "spec.schedule"));
        assert!(err.to_string().contains("the hour field \"25\""), "{err}");
        let err = Schedule::parse("spec.verification.schedule", "@midnight", TimeZone::UTC).unwrap_err();
        assert_eq!(err.field(), "spec.verification.schedule");
        let daily = Schedule::from_spec("spec.", "@daily", "Europe/Berlin").unwrap();
        assert_eq!(
            daily.next_after(at("2024-06-01T12:00:00Z")).unwrap(),
            at("2024-06-01T22:00:00Z"),
            "midnight in Berlin"
        );
    }
}
