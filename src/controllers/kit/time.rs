//! Time arithmetic on `jiff` timestamps that never panics.

use std::time::Duration;

use jiff::Timestamp;

/// Duration between two timestamps, zero if `later` is not after `earlier`.
pub fn elapsed(earlier: Timestamp, later: Timestamp) -> Duration {
    Duration::try_from(later.duration_since(earlier)).unwrap_or(Duration::ZERO)
}

/// `now + d` (saturating at the maximum timestamp).
pub fn add(now: Timestamp, d: Duration) -> Timestamp {
    let span = jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX);
    now.checked_add(span).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_and_add_saturate() {
        let t = Timestamp::from_second(100).unwrap();
        let later = add(t, Duration::from_secs(30));
        assert_eq!(elapsed(t, later), Duration::from_secs(30));
        assert_eq!(elapsed(later, t), Duration::ZERO);
        assert_eq!(add(Timestamp::MAX, Duration::from_secs(1)), Timestamp::MAX);
    }
}
