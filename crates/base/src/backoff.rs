//! The one backoff every retry loop in hangar uses: the supervisor's restarts,
//! plugin retries and exec-plugin restarts, downloads and history sinks.
//!
//! Pure arithmetic: the caller keeps the attempt count and supplies the random
//! sample, so the supervisor's state machine stays deterministic under test
//! and each caller picks its own source of randomness.

use std::time::Duration;

/// `initial × multiplier^attempt`, capped at `max`, then spread by ±`jitter`
/// (a fraction: 0.1 is ±10 %).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The wait before the first retry.
    pub initial: Duration,
    /// Growth per attempt; below 1 (or NaN) counts as 1.
    pub multiplier: f64,
    /// Cap on the wait before jitter.
    pub max: Duration,
    /// Random spread as a fraction of the wait, clamped to `[0, 1]`.
    pub jitter: f64,
}

impl Backoff {
    /// Doubling from `initial` up to `max`, without jitter.
    pub const fn doubling(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            multiplier: 2.0,
            max,
            jitter: 0.0,
        }
    }

    /// The same backoff with ±`jitter`.
    pub const fn with_jitter(mut self, jitter: f64) -> Backoff {
        self.jitter = jitter;
        self
    }

    /// The wait before attempt `attempt` (0-based) without jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        // NaN fails the comparison; +∞ passes and lands on the cap.
        let m = if self.multiplier >= 1.0 {
            self.multiplier
        } else {
            1.0
        };
        let cap = self.max.as_secs_f64();
        // powi saturates to infinity for large attempts; the cap brings it back.
        let secs = self.initial.as_secs_f64() * m.powi(attempt.min(1 << 20) as i32);
        let secs = if secs.is_finite() {
            secs.min(cap).max(0.0)
        } else {
            cap
        };
        // Capped again as a Duration: past 2^53 ns the float rounds, and
        // may round up past the cap.
        Duration::try_from_secs_f64(secs)
            .unwrap_or(Duration::MAX)
            .min(self.max)
    }

    /// The wait before attempt `attempt` with jitter from `unit`, a sample
    /// uniformly distributed in `[0, 1)`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let j = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let factor = 1.0 + j * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        // A cap near Duration::MAX times (1 + jitter) overflows: saturate.
        Duration::try_from_secs_f64((self.base_delay(attempt).as_secs_f64() * factor).max(0.0))
            .unwrap_or(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn grows_by_the_multiplier_and_caps() {
        let b = Backoff::doubling(MS(100), Duration::from_secs(5));
        let got: Vec<Duration> = (0..8).map(|a| b.base_delay(a)).collect();
        assert_eq!(
            got,
            [100, 200, 400, 800, 1600, 3200, 5000, 5000]
                .map(MS)
                .to_vec()
        );
        assert_eq!(b.base_delay(u32::MAX), Duration::from_secs(5));
        let slow = Backoff {
            multiplier: 1.5,
            ..b
        };
        assert_eq!(slow.base_delay(2), MS(225));
    }

    #[test]
    fn a_multiplier_below_one_or_not_finite_does_not_shrink_the_wait() {
        for m in [0.5, f64::NAN, f64::NEG_INFINITY] {
            let b = Backoff {
                multiplier: m,
                ..Backoff::doubling(MS(100), MS(1000))
            };
            assert_eq!(b.base_delay(5), MS(100), "{m}");
        }
        let b = Backoff {
            multiplier: f64::INFINITY,
            ..Backoff::doubling(MS(100), MS(1000))
        };
        assert_eq!(b.base_delay(1), MS(1000));
    }

    #[test]
    fn the_cap_holds_where_a_float_cannot_hold_the_durations_exactly() {
        // An f64 has 53 bits: u64::MAX milliseconds, or a cap of 2^60 ns
        // and a few, come back from seconds as a float a little larger.
        let max = Duration::from_millis(u64::MAX);
        let b = Backoff {
            multiplier: 1e308,
            ..Backoff::doubling(max, max)
        };
        for a in [0, 1, 7, u32::MAX] {
            assert!(
                b.base_delay(a) <= max,
                "{a}: {:?} > {max:?}",
                b.base_delay(a)
            );
        }
        let max = Duration::from_nanos((1 << 60) + 3);
        let b = Backoff::doubling(Duration::from_nanos(1 << 58), max);
        assert_eq!(b.base_delay(5), max);
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let b = Backoff::doubling(MS(1000), MS(1000)).with_jitter(0.1);
        assert_eq!(b.delay(0, 0.0), MS(900));
        assert_eq!(b.delay(0, 0.5), MS(1000));
        assert!(b.delay(0, 0.999_999) <= MS(1100));
        assert_eq!(b.delay(0, 7.0), MS(1100), "a sample above 1 is clamped");
        let wild = b.with_jitter(5.0);
        assert_eq!(wild.delay(0, 0.0), Duration::ZERO);
    }

    #[test]
    fn a_cap_near_the_largest_duration_saturates_instead_of_panicking() {
        let b = Backoff::doubling(Duration::from_secs(1), Duration::MAX).with_jitter(1.0);
        assert_eq!(b.delay(200, 0.999), Duration::MAX);
        assert!(b.base_delay(u32::MAX) <= Duration::MAX);
    }
}
