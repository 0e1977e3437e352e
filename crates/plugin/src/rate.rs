//! Token-bucket rate limit: `requests_per_second` tokens flow in continuously,
//! up to `burst` stored; a request takes one or is refused (`RATELIMIT_1501`)
//! with the time until the next token.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Rate-limit settings (seed names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitConfig {
    /// Off: every request passes.
    pub enabled: bool,
    /// Sustained rate.
    pub requests_per_second: f64,
    /// Tokens stored at most (the largest burst).
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: false,
            requests_per_second: 100.0,
            burst: 10,
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A thread-safe token bucket. It starts full.
#[derive(Debug)]
pub struct TokenBucket {
    cfg: RateLimitConfig,
    bucket: Mutex<Bucket>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(cfg: RateLimitConfig) -> TokenBucket {
        Self::new_at(cfg, Instant::now())
    }

    /// A full bucket as of `now`.
    pub fn new_at(cfg: RateLimitConfig, now: Instant) -> TokenBucket {
        TokenBucket {
            cfg,
            bucket: Mutex::new(Bucket {
                tokens: f64::from(cfg.burst.max(1)),
                at: now,
            }),
        }
    }

    /// Take a token now, or learn how long until one is there.
    pub fn try_acquire(&self) -> Result<(), Duration> {
        self.try_acquire_at(Instant::now())
    }

    /// [`TokenBucket::try_acquire`] at `now`.
    pub fn try_acquire_at(&self, now: Instant) -> Result<(), Duration> {
        if !self.cfg.enabled {
            return Ok(());
        }
        let rate = self.cfg.requests_per_second;
        if !(rate.is_finite() && rate > 0.0) {
            // A zero rate admits only the initial burst.
            let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
            if b.tokens >= 1.0 {
                b.tokens -= 1.0;
                return Ok(());
            }
            return Err(Duration::MAX);
        }
        let cap = f64::from(self.cfg.burst.max(1));
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(cap);
        b.at = b.at.max(now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(rps: f64, burst: u32) -> RateLimitConfig {
        RateLimitConfig {
            enabled: true,
            requests_per_second: rps,
            burst,
        }
    }

    #[test]
    fn burst_then_the_rate() {
        let t = Instant::now();
        let b = TokenBucket::new_at(on(10.0, 3), t);
        for _ in 0..3 {
            assert!(b.try_acquire_at(t).is_ok());
        }
        let wait = b.try_acquire_at(t).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        assert!(b.try_acquire_at(t + Duration::from_millis(99)).is_err());
        assert!(b.try_acquire_at(t + Duration::from_millis(101)).is_ok());
    }

    #[test]
    fn tokens_never_exceed_the_burst() {
        let t = Instant::now();
        let b = TokenBucket::new_at(on(1000.0, 5), t);
        let later = t + Duration::from_secs(60);
        let ok = (0..100).filter(|_| b.try_acquire_at(later).is_ok()).count();
        assert_eq!(ok, 5);
    }

    #[test]
    fn a_thousand_per_second_over_a_second() {
        let t = Instant::now();
        let b = TokenBucket::new_at(on(1000.0, 1), t);
        let ok = (0..2000)
            .filter(|i| b.try_acquire_at(t + Duration::from_micros(500 * i)).is_ok())
            .count();
        // 1 s at 1000/s plus the initial token.
        assert!((1000..=1001).contains(&ok), "{ok}");
    }

    #[test]
    fn disabled_and_zero_rate() {
        let t = Instant::now();
        let off = TokenBucket::new_at(RateLimitConfig::default(), t);
        assert!((0..10_000).all(|_| off.try_acquire_at(t).is_ok()));
        let zero = TokenBucket::new_at(on(0.0, 2), t);
        assert!(zero.try_acquire_at(t).is_ok());
        assert!(zero.try_acquire_at(t).is_ok());
        assert_eq!(
            zero.try_acquire_at(t + Duration::from_secs(999)),
            Err(Duration::MAX)
        );
    }
}
