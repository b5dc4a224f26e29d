//! Retention as a pure function, with Proxmox Backup Server's `prune.rs` semantics: snapshots are
//! sorted newest first; keep-last keeps the N newest; each of keep-hourly/daily/weekly/monthly/
//! yearly keeps the newest snapshot of each of the N newest periods that have not already been
//! covered by an earlier rule; the newest unfinished snapshot is kept only if no finished one is
//! newer. Periods are computed in UTC (ISO weeks for weekly).
//!
//! Snapshots dated in the future (more than [`FUTURE_SLACK_US`] after the time prune runs: made
//! while a clock was ahead) are kept and count for no rule, so one dated a year ahead cannot take
//! keep-last's place or the newest day's, week's, ... bucket from today's real backups. Once
//! their time has come they are pruned like any other.

use std::collections::{HashMap, HashSet};

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;

/// How many snapshots to keep per rule (`None` or 0 = rule off).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KeepOptions {
    /// The N newest.
    pub last: Option<u32>,
    /// One per hour, for the N newest hours.
    pub hourly: Option<u32>,
    /// One per day.
    pub daily: Option<u32>,
    /// One per ISO week.
    pub weekly: Option<u32>,
    /// One per month.
    pub monthly: Option<u32>,
    /// One per year.
    pub yearly: Option<u32>,
}

impl KeepOptions {
    /// Whether any rule keeps something (pruning with none would remove everything).
    pub fn keeps_something(&self) -> bool {
        [
            self.last,
            self.hourly,
            self.daily,
            self.weekly,
            self.monthly,
            self.yearly,
        ]
        .iter()
        .any(|v| v.is_some_and(|n| n > 0))
    }
}

/// The decision for one snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PruneMark {
    /// Selected by a rule.
    Keep,
    /// The newest unfinished backup (may still be running).
    KeepPartial,
    /// Dated in the future (a clock that was ahead): kept, and counts for no rule.
    KeepFuture,
    /// Not selected.
    Remove,
}

/// How far after now a snapshot may be dated before prune treats it as future-dated.
pub const FUTURE_SLACK_US: i64 = 10 * 60 * 1_000_000;

/// One snapshot of a group, as prune sees it.
#[derive(Clone, Debug)]
pub struct PruneItem {
    /// Snapshot id.
    pub id: String,
    /// Unix microseconds.
    pub time: i64,
    /// Whether the backup finished.
    pub complete: bool,
}

fn period(t_us: i64, fmt: &str) -> String {
    match Timestamp::from_microsecond(t_us) {
        Ok(ts) => ts.to_zoned(TimeZone::UTC).strftime(fmt).to_string(),
        Err(_) => t_us.to_string(),
    }
}

fn mark_selections(
    mark: &mut HashMap<String, PruneMark>,
    list: &[&PruneItem],
    keep: usize,
    select: impl Fn(&PruneItem) -> String,
) {
    let mut include = HashSet::new();
    let already: HashSet<String> = list
        .iter()
        .filter(|i| mark.get(&i.id) == Some(&PruneMark::Keep))
        .map(|i| select(i))
        .collect();
    for info in list {
        if mark.contains_key(&info.id) {
            continue;
        }
        let sel = select(info);
        if already.contains(&sel) {
            continue;
        }
        if !include.contains(&sel) {
            if include.len() >= keep {
                break;
            }
            include.insert(sel);
            mark.insert(info.id.clone(), PruneMark::Keep);
        } else {
            mark.insert(info.id.clone(), PruneMark::Remove);
        }
    }
}

/// Marks every snapshot of one group (same name), as of now. Returns `(id, mark)` newest first.
pub fn compute_prune(items: &[PruneItem], opts: &KeepOptions) -> Vec<(String, PruneMark)> {
    compute_prune_at(items, opts, Timestamp::now().as_microsecond())
}

/// [`compute_prune`] as of `now_us` (Unix microseconds).
pub fn compute_prune_at(items: &[PruneItem], opts: &KeepOptions, now_us: i64) -> Vec<(String, PruneMark)> {
    let mut all: Vec<&PruneItem> = items.iter().collect();
    all.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
    let mut mark = HashMap::new();
    let future = |i: &PruneItem| i.time > now_us.saturating_add(FUTURE_SLACK_US);
    for i in all.iter().filter(|i| future(i)) {
        mark.insert(i.id.clone(), PruneMark::KeepFuture);
    }
    let list: Vec<&PruneItem> = all.iter().copied().filter(|i| !future(i)).collect();
    let mut keep_unfinished = true;
    for info in &list {
        if info.complete {
            keep_unfinished = false;
        } else {
            let m = if keep_unfinished {
                PruneMark::KeepPartial
            } else {
                PruneMark::Remove
            };
            mark.insert(info.id.clone(), m);
            keep_unfinished = false;
        }
    }
    let rules: [(Option<u32>, &str); 6] = [
        (opts.last, ""),
        (opts.hourly, "%Y/%m/%d/%H"),
        (opts.daily, "%Y/%m/%d"),
        (opts.weekly, "%G/%V"),
        (opts.monthly, "%Y/%m"),
        (opts.yearly, "%Y"),
    ];
    for (keep, fmt) in rules {
        let Some(keep) = keep else { continue };
        if fmt.is_empty() {
            mark_selections(&mut mark, &list, keep as usize, |i| {
                format!("{}/{}", i.time, i.id)
            });
        } else {
            mark_selections(&mut mark, &list, keep as usize, |i| period(i.time, fmt));
        }
    }
    all.iter()
        .map(|i| (i.id.clone(), *mark.get(&i.id).unwrap_or(&PruneMark::Remove)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, when: &str) -> PruneItem {
        let t: Timestamp = when.parse().unwrap();
        PruneItem {
            id: id.into(),
            time: t.as_microsecond(),
            complete: true,
        }
    }

    fn kept(items: &[PruneItem], opts: KeepOptions) -> Vec<String> {
        let mut v: Vec<String> = compute_prune(items, &opts)
            .into_iter()
            .filter(|(_, m)| *m != PruneMark::Remove)
            .map(|(id, _)| id)
            .collect();
        v.sort();
        v
    }

    /// Two backups a day (02:00 and 14:00) from 2025-12-20 to 2026-01-20, as in restic's and
    /// PBS's examples of overlapping rules.
    fn table() -> Vec<PruneItem> {
        let mut v = Vec::new();
        let mut t: Timestamp = "2025-12-20T02:00:00Z".parse().unwrap();
        let end: Timestamp = "2026-01-21T00:00:00Z".parse().unwrap();
        while t < end {
            let z = t.to_zoned(TimeZone::UTC);
            v.push(PruneItem {
                id: z.strftime("%m%d-%H").to_string(),
                time: t.as_microsecond(),
                complete: true,
            });
            t = t.checked_add(jiff::SignedDuration::from_hours(12)).unwrap();
        }
        v
    }

    #[test]
    fn prune_keep_last_keeps_newest_n() {
        let k = kept(
            &table(),
            KeepOptions {
                last: Some(3),
                ..Default::default()
            },
        );
        assert_eq!(k, vec!["0119-14", "0120-02", "0120-14"]);
    }

    #[test]
    fn prune_keep_daily_keeps_newest_of_each_day() {
        let k = kept(
            &table(),
            KeepOptions {
                daily: Some(3),
                ..Default::default()
            },
        );
        assert_eq!(k, vec!["0118-14", "0119-14", "0120-14"]);
    }

    #[test]
    fn prune_rules_do_not_double_count_periods() {
        // keep-last 2 covers 01-20 twice; keep-daily 2 then takes the next two days (PBS skips
        // periods already covered by an earlier rule).
        let k = kept(
            &table(),
            KeepOptions {
                last: Some(2),
                daily: Some(2),
                ..Default::default()
            },
        );
        assert_eq!(k, vec!["0118-14", "0119-14", "0120-02", "0120-14"]);
    }

    #[test]
    fn prune_weekly_uses_iso_weeks_and_monthly_yearly_span_new_year() {
        // ISO week 2026-W03 is Jan 12-18, W04 starts Jan 19; 2026-W01 starts 2025-12-29.
        let k = kept(
            &table(),
            KeepOptions {
                weekly: Some(4),
                ..Default::default()
            },
        );
        assert_eq!(k, vec!["0104-14", "0111-14", "0118-14", "0120-14"]);
        let k = kept(
            &table(),
            KeepOptions {
                monthly: Some(2),
                ..Default::default()
            },
        );
        assert_eq!(k, vec!["0120-14", "1231-14"]);
        let k = kept(
            &table(),
            KeepOptions {
                yearly: Some(5),
                ..Default::default()
            },
        );
        assert_eq!(k, vec!["0120-14", "1231-14"]);
    }

    #[test]
    fn prune_future_dated_snapshot_is_kept_but_takes_no_bucket() {
        let now: Timestamp = "2026-01-20T15:00:00Z".parse().unwrap();
        let mut items = table();
        items.push(item("future", "2027-01-20T02:00:00Z"));
        let marks: HashMap<String, PruneMark> = compute_prune_at(
            &items,
            &KeepOptions {
                last: Some(1),
                daily: Some(2),
                yearly: Some(1),
                ..Default::default()
            },
            now.as_microsecond(),
        )
        .into_iter()
        .collect();
        assert_eq!(marks["future"], PruneMark::KeepFuture);
        // Today's real backup keeps keep-last and the yearly bucket; daily takes the two days
        // before it.
        assert_eq!(marks["0120-14"], PruneMark::Keep);
        assert_eq!(marks["0119-14"], PruneMark::Keep);
        assert_eq!(marks["0118-14"], PruneMark::Keep);
        assert_eq!(marks["0117-14"], PruneMark::Remove);
    }

    #[test]
    fn prune_hourly_and_unfinished_rules() {
        let mut items = vec![
            item("a", "2026-01-01T10:05:00Z"),
            item("b", "2026-01-01T10:45:00Z"),
            item("c", "2026-01-01T11:10:00Z"),
        ];
        assert_eq!(
            kept(
                &items,
                KeepOptions {
                    hourly: Some(5),
                    ..Default::default()
                }
            ),
            vec!["b", "c"]
        );
        // An unfinished backup newer than every finished one is kept; older ones are removed.
        items.push(PruneItem {
            complete: false,
            ..item("d", "2026-01-01T12:00:00Z")
        });
        items.push(PruneItem {
            complete: false,
            ..item("e", "2026-01-01T09:00:00Z")
        });
        let marks: HashMap<String, PruneMark> = compute_prune(
            &items,
            &KeepOptions {
                last: Some(1),
                ..Default::default()
            },
        )
        .into_iter()
        .collect();
        assert_eq!(marks["d"], PruneMark::KeepPartial);
        assert_eq!(marks["e"], PruneMark::Remove);
        assert_eq!(marks["c"], PruneMark::Keep);
        assert_eq!(marks["a"], PruneMark::Remove);
    }
}
