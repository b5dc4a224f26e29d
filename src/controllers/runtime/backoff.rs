//! Per-object exponential backoff for transient reconcile errors: 5 s doubling
//! to 5 min, with jitter so that many objects failing at once (the PVE API went down) do not
//! retry in lockstep. A success resets an object's backoff.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use rand::Rng;

/// How retries after transient errors are spaced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BackoffPolicy {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Upper bound of any delay (jitter included).
    pub max: Duration,
    /// Relative jitter: a delay is spread uniformly over `base * (1 ± jitter)`. Between 0 and 1.
    pub jitter: f64,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(5 * 60),
            jitter: 0.1,
        }
    }
}

impl BackoffPolicy {
    /// The delay before retry number `failures` (1 for the first failure), given a uniform random
    /// `unit` in `[0, 1)`: `initial * 2^(failures-1)`, capped at `max`, then spread by the jitter
    /// and capped at `max` again.
    pub fn delay(&self, failures: u32, unit: f64) -> Duration {
        let exp = failures.saturating_sub(1).min(31);
        let base = self.initial.saturating_mul(1u32 << exp).min(self.max);
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - jitter + 2.0 * jitter * unit.clamp(0.0, 1.0);
        base.mul_f64(factor).min(self.max)
    }
}

/// Entries not touched for this long belong to objects that were deleted while failing (a failing
/// object is retried at least every `max`), so they are dropped.
const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);

#[derive(Debug)]
struct Entry {
    failures: u32,
    touched: Instant,
}

/// Consecutive transient failures per object, shared by a controller's reconcile and error policy.
#[derive(Clone, Debug, Default)]
pub struct BackoffTracker {
    policy: BackoffPolicy,
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

impl BackoffTracker {
    /// A tracker using `policy`.
    pub fn new(policy: BackoffPolicy) -> Self {
        Self {
            policy,
            entries: Arc::default(),
        }
    }

    /// The policy in use.
    pub fn policy(&self) -> BackoffPolicy {
        self.policy
    }

    /// Records one more transient failure of `key` and returns the delay before its retry.
    pub fn next_delay(&self, key: &str) -> Duration {
        let now = Instant::now();
        // A panic while holding this lock cannot leave the map inconsistent (each operation is a
        // single insert/remove), so a poisoned lock is still safe to use.
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|_, e| now.duration_since(e.touched) < FORGET_AFTER);
        let entry = entries.entry(key.to_owned()).or_insert(Entry {
            failures: 0,
            touched: now,
        });
        entry.failures = entry.failures.saturating_add(1);
        entry.touched = now;
        self.policy.delay(entry.failures, rand::rng().random::<f64>())
    }

    /// Forgets the failures of `key` (after a success or a permanent error).
    pub fn reset(&self, key: &str) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }

    /// Consecutive transient failures recorded for `key`.
    pub fn failures(&self, key: &str) -> u32 {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .map_or(0, |e| e.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn delay_without_jitter_doubles_from_5s_and_caps_at_5min() {
        let p = BackoffPolicy {
            jitter: 0.0,
            ..BackoffPolicy::default()
        };
        let got: Vec<_> = (1..=9).map(|n| p.delay(n, 0.5)).collect();
        assert_eq!(
            got,
            [S(5), S(10), S(20), S(40), S(80), S(160), S(300), S(300), S(300)]
        );
        assert_eq!(p.delay(u32::MAX, 0.5), S(300));
        assert_eq!(p.delay(0, 0.5), S(5));
    }

    #[test]
    fn delay_with_jitter_stays_within_ten_percent_and_below_max() {
        let p = BackoffPolicy::default();
        assert_eq!(p.delay(1, 0.0), Duration::from_millis(4500));
        assert_eq!(p.delay(1, 0.5), S(5));
        assert!(p.delay(1, 0.999_999) <= Duration::from_millis(5500));
        assert!(p.delay(1, 0.999_999) > Duration::from_millis(5499));
        assert_eq!(p.delay(7, 0.0), S(270));
        // The cap holds after jitter too.
        assert_eq!(p.delay(7, 0.999), S(300));
        assert_eq!(p.delay(30, 1.0), S(300));
    }

    #[test]
    fn tracker_counts_per_object_and_resets_on_success() {
        let t = BackoffTracker::new(BackoffPolicy {
            jitter: 0.0,
            ..BackoffPolicy::default()
        });
        assert_eq!(t.next_delay("a"), S(5));
        assert_eq!(t.next_delay("a"), S(10));
        assert_eq!(t.next_delay("b"), S(5));
        assert_eq!(t.next_delay("a"), S(20));
        assert_eq!(t.failures("a"), 3);
        t.reset("a");
        assert_eq!(t.failures("a"), 0);
        assert_eq!(t.next_delay("a"), S(5));
        assert_eq!(t.failures("b"), 1);
    }

    #[test]
    fn tracker_with_jitter_spreads_delays_within_bounds() {
        let t = BackoffTracker::default();
        for i in 0..50 {
            let d = t.next_delay(&format!("obj-{i}"));
            assert!(
                (Duration::from_millis(4500)..=Duration::from_millis(5500)).contains(&d),
                "{d:?}"
            );
        }
    }
}
