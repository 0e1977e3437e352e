//! [`Guard`]: the resilience policies composed around a call, in a fixed,
//! documented order:
//!
//! 1. **rate limit**: no token, no call (`RATELIMIT_1501`, at once);
//! 2. for each attempt: **circuit breaker** (an open circuit refuses at once,
//!    `CIRCUIT_1401`), then the **deadline** (`PLUGIN_1204` when the attempt
//!    takes longer than `timeout`), then the call itself;
//! 3. the outcome feeds the breaker (our own refusals do not count), and a
//!    **retryable** failure is retried after the backoff while retries remain.
//!
//! The rate limit is taken once per call, not per attempt: retries are the
//! caller's budget, not new requests. Time is tokio's, so tests run with paused
//! time.

use std::future::Future;
use std::time::Duration;

use crate::error::{Error, ErrorKind};
use crate::{BreakerConfig, CircuitBreaker, RateLimitConfig, RetryConfig, TokenBucket};

/// Settings of a [`Guard`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuardConfig {
    /// Circuit breaker.
    pub breaker: BreakerConfig,
    /// Rate limit.
    pub rate_limit: RateLimitConfig,
    /// Retries.
    pub retry: RetryConfig,
    /// Deadline per attempt.
    pub timeout: Duration,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            breaker: BreakerConfig::default(),
            rate_limit: RateLimitConfig::default(),
            retry: RetryConfig::default(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// The policies of one plugin. Share it (`Arc`) between concurrent callers.
#[derive(Debug)]
pub struct Guard {
    cfg: GuardConfig,
    breaker: CircuitBreaker,
    bucket: TokenBucket,
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl Guard {
    /// Fresh policies: circuit closed, bucket full.
    pub fn new(cfg: GuardConfig) -> Guard {
        Guard {
            cfg,
            breaker: CircuitBreaker::new(cfg.breaker),
            bucket: TokenBucket::new_at(cfg.rate_limit, now()),
        }
    }

    /// The breaker, for stats and manual reset.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// Run `attempt(n)` (n counts from 1) under the policies.
    pub async fn call<T, F, Fut>(&self, mut attempt: F) -> Result<T, Error>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        if let Err(wait) = self.bucket.try_acquire_at(now()) {
            return Err(Error::new(
                ErrorKind::RateLimited,
                format!("rate limit reached; next slot in {wait:?}"),
            ));
        }
        let mut n = 0u32;
        loop {
            n += 1;
            if !self.breaker.allow_at(now()) {
                return Err(Error::new(
                    ErrorKind::CircuitOpen,
                    "circuit open: the plugin failed repeatedly",
                ));
            }
            let res = match tokio::time::timeout(self.cfg.timeout, attempt(n)).await {
                Ok(r) => r,
                Err(_) => Err(Error::new(
                    ErrorKind::Timeout,
                    format!("no answer within {:?}", self.cfg.timeout),
                )),
            };
            match res {
                Ok(v) => {
                    self.breaker.record_success();
                    return Ok(v);
                }
                Err(e) => {
                    if e.kind.counts_as_failure() {
                        self.breaker.record_failure_at(now());
                    }
                    match self.cfg.retry.next(n, e.kind.is_retryable()) {
                        Some(wait) => tokio::time::sleep(wait).await,
                        None => return Err(e),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn cfg() -> GuardConfig {
        GuardConfig {
            timeout: Duration::from_millis(500),
            ..GuardConfig::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retryable_failures_are_retried_with_backoff_then_given_up() {
        let g = Guard::new(GuardConfig {
            breaker: BreakerConfig {
                enabled: false,
                ..BreakerConfig::default()
            },
            ..cfg()
        });
        let calls = AtomicU32::new(0);
        let t0 = tokio::time::Instant::now();
        let r: Result<(), Error> = g
            .call(|_| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Error::new(ErrorKind::ConnectionFailed, "refused"))
            })
            .await;
        assert_eq!(r.unwrap_err().kind, ErrorKind::ConnectionFailed);
        assert_eq!(calls.load(Ordering::SeqCst), 4, "1 + max_retries 3");
        // 100 + 200 + 400 ms, each ±10 %.
        let took = t0.elapsed().as_secs_f64();
        assert!((0.63..=0.77).contains(&took), "{took}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_plugin_error_is_not_retried() {
        let g = Guard::new(cfg());
        let calls = AtomicU32::new(0);
        let r: Result<(), Error> = g
            .call(|_| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Error::new(ErrorKind::ExecutionFailed, "bad request"))
            })
            .await;
        assert_eq!(r.unwrap_err().code(), "PLUGIN_1203");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_attempt_times_out_and_the_retry_succeeds() {
        let g = Guard::new(cfg());
        let r = g
            .call(|n| async move {
                if n == 1 {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                Ok::<u32, Error>(n)
            })
            .await;
        assert_eq!(r, Ok(2));
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_circuit_refuses_without_calling_then_recovers() {
        let g = Guard::new(GuardConfig {
            retry: RetryConfig {
                max_retries: 0,
                ..RetryConfig::default()
            },
            ..cfg()
        });
        let calls = AtomicU32::new(0);
        let failing = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), Error>(Error::new(ErrorKind::ConnectionFailed, "down"))
        };
        for _ in 0..5 {
            let _ = g.call(|_| failing()).await;
        }
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        let r = g.call(|_| failing()).await;
        assert_eq!(r.unwrap_err().code(), "CIRCUIT_1401");
        assert_eq!(calls.load(Ordering::SeqCst), 5, "refused without a call");
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(g.call(|_| async { Ok::<_, Error>(1) }).await, Ok(1));
        assert_eq!(g.call(|_| async { Ok::<_, Error>(2) }).await, Ok(2));
        assert_eq!(g.breaker().state(), crate::BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_refuses_past_the_burst() {
        let g = Guard::new(GuardConfig {
            rate_limit: RateLimitConfig {
                enabled: true,
                requests_per_second: 10.0,
                burst: 2,
            },
            ..cfg()
        });
        let ok = || async { Ok::<_, Error>(()) };
        assert!(g.call(|_| ok()).await.is_ok());
        assert!(g.call(|_| ok()).await.is_ok());
        assert_eq!(g.call(|_| ok()).await.unwrap_err().code(), "RATELIMIT_1501");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(g.call(|_| ok()).await.is_ok());
    }
}
