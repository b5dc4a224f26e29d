//! The simulated clock.
//!
//! Simulated wall time is the real wall clock plus an offset that tests (and the admin endpoint)
//! can advance, so "a day later" needs no waiting. Simulated *durations* (how long a task runs,
//! the 3 s delay on a failed login, injected latency) are multiplied by `time_scale` before the
//! simulator really waits: `time_scale = 0.001` makes a 10 s backup finish in 10 ms. The clock is
//! UTC; the simulated nodes run in UTC too (file names and log lines use it).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds in a simulated day (the unit of pseudo-disk drift).
pub(crate) const DAY_SECS: i64 = 86_400;

/// Simulated wall clock plus duration scaling.
#[derive(Debug)]
pub(crate) struct Clock {
    offset_secs: AtomicI64,
    time_scale: f64,
}

impl Clock {
    /// A clock `offset_secs` ahead of real time whose durations are scaled by `time_scale`.
    pub(crate) fn new(offset_secs: i64, time_scale: f64) -> Self {
        let time_scale = if time_scale.is_finite() && time_scale >= 0.0 {
            time_scale
        } else {
            1.0
        };
        Self {
            offset_secs: AtomicI64::new(offset_secs),
            time_scale,
        }
    }

    /// Simulated time as Unix epoch seconds.
    pub(crate) fn now(&self) -> i64 {
        real_epoch() + self.offset_secs.load(Ordering::Relaxed)
    }

    /// The simulated day number (days since the epoch).
    pub(crate) fn day(&self) -> i64 {
        self.now().div_euclid(DAY_SECS)
    }

    /// Moves simulated time forward by `secs` (negative values move it back).
    pub(crate) fn advance(&self, secs: i64) {
        self.offset_secs.fetch_add(secs, Ordering::Relaxed);
    }

    /// The real duration that stands for the simulated duration `sim`.
    pub(crate) fn real(&self, sim: Duration) -> Duration {
        // `mul_f64` panics on overflow or negative factors; the factor is checked in `new` and
        // simulated durations are bounded (hours at most), so clamp defensively anyway.
        let secs = sim.as_secs_f64() * self.time_scale;
        if secs.is_finite() && secs >= 0.0 {
            Duration::from_secs_f64(secs.min(86_400.0))
        } else {
            Duration::ZERO
        }
    }

    /// Waits for the simulated duration `sim`.
    pub(crate) async fn sleep(&self, sim: Duration) {
        let real = self.real(sim);
        if !real.is_zero() {
            tokio::time::sleep(real).await;
        }
    }
}

pub(crate) fn real_epoch() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Formats epoch seconds with a strftime pattern in UTC (the simulated nodes' time zone).
pub(crate) fn format_epoch(epoch: i64, pattern: &str) -> String {
    match jiff::Timestamp::from_second(epoch) {
        Ok(ts) => ts.strftime(pattern).to_string(),
        Err(_) => epoch.to_string(),
    }
}

/// Parses `YYYY_MM_DD-HH_MM_SS` (vzdump file names) back to epoch seconds.
pub(crate) fn parse_vzdump_time(text: &str) -> Option<i64> {
    let civil = jiff::civil::DateTime::strptime("%Y_%m_%d-%H_%M_%S", text).ok()?;
    civil
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp().as_second())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_advance_moves_now_and_day() {
        let clock = Clock::new(0, 1.0);
        let before = clock.now();
        clock.advance(DAY_SECS);
        assert!(clock.now() - before >= DAY_SECS);
        assert!(clock.day() > before.div_euclid(DAY_SECS));
    }

    #[test]
    fn clock_real_scales_durations() {
        let clock = Clock::new(0, 0.001);
        assert_eq!(clock.real(Duration::from_secs(10)), Duration::from_millis(10));
        assert_eq!(Clock::new(0, 0.0).real(Duration::from_secs(3)), Duration::ZERO);
        assert_eq!(
            Clock::new(0, f64::NAN).real(Duration::from_secs(2)),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn vzdump_time_round_trips() {
        let text = format_epoch(1_717_200_000, "%Y_%m_%d-%H_%M_%S");
        assert_eq!(text, "2024_06_01-00_00_00");
        assert_eq!(parse_vzdump_time(&text), Some(1_717_200_000));
        assert_eq!(parse_vzdump_time("2024-06-01"), None);
    }
}
