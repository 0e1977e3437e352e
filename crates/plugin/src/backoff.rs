//! Retry with exponential backoff and ±10 % jitter (seed 003): the wait before
//! retry `n` (0-based) is `min(initial × multiplier^n, max) × (1 ± jitter)`.
//! Only errors the caller marks retryable are retried, at most `max_retries`
//! times.

use std::time::Duration;

/// Retry settings (seed names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryConfig {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Wait before the first retry.
    pub initial_interval: Duration,
    /// Growth per retry.
    pub multiplier: f64,
    /// Cap on the wait.
    pub max_interval: Duration,
    /// Random spread, as a fraction (0.1 = ±10 %).
    pub jitter: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: 3,
            initial_interval: Duration::from_millis(100),
            multiplier: 2.0,
            max_interval: Duration::from_secs(5),
            jitter: 0.1,
        }
    }
}

impl RetryConfig {
    /// The backoff these settings describe.
    pub fn backoff(&self) -> hangar_base::Backoff {
        hangar_base::Backoff {
            initial: self.initial_interval,
            multiplier: self.multiplier,
            max: self.max_interval,
            jitter: self.jitter,
        }
    }

    /// The wait before retry `n` (0-based) without jitter.
    pub fn base_delay(&self, n: u32) -> Duration {
        self.backoff().base_delay(n)
    }

    /// The wait before retry `n` with jitter, `unit` a uniform sample in [0, 1).
    pub fn delay(&self, n: u32, unit: f64) -> Duration {
        self.backoff().delay(n, unit)
    }

    /// Whether to retry after failed attempt `attempt` (1-based), and how long
    /// to wait first. `None`: give up (not retryable, or out of retries).
    pub fn next(&self, attempt: u32, retryable: bool) -> Option<Duration> {
        if !retryable || attempt > self.max_retries {
            return None;
        }
        Some(self.delay(attempt - 1, fastrand::f64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let c = RetryConfig::default();
        assert_eq!(c.base_delay(0), Duration::from_millis(100));
        assert_eq!(c.base_delay(1), Duration::from_millis(200));
        assert_eq!(c.base_delay(3), Duration::from_millis(800));
        assert_eq!(c.base_delay(20), Duration::from_secs(5));
        assert_eq!(c.base_delay(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let c = RetryConfig::default();
        assert_eq!(c.delay(1, 0.0), Duration::from_secs_f64(0.18));
        assert_eq!(c.delay(1, 0.5), Duration::from_millis(200));
        assert!(c.delay(1, 0.999_999) <= Duration::from_millis(220));
        for _ in 0..1000 {
            let d = c.next(2, true).unwrap().as_secs_f64();
            assert!((0.18..=0.22).contains(&d), "{d}");
        }
    }

    #[test]
    fn gives_up_when_told_or_out_of_retries() {
        let c = RetryConfig::default();
        assert!(c.next(1, false).is_none());
        assert!(c.next(3, true).is_some());
        assert!(c.next(4, true).is_none());
    }
}
