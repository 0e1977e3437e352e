//! [`Guard`]: one plugin's resilience policies composed as [`crate::layers`]
//! around a leaf service, in a fixed, documented order (outside in):
//!
//! 1. **metrics** ([`crate::layers::Metered`], when given a [`Metrics`]);
//! 2. **rate limit**: no token, no call (`RATELIMIT_1501`, at once), taken
//!    once per call — retries are the caller's budget, not new requests;
//! 3. **retry**: a retryable failure is retried after the backoff while
//!    retries remain;
//! 4. for each attempt, the **circuit breaker** (an open circuit refuses at
//!    once, `CIRCUIT_1401`; outcomes feed it, our own refusals do not count);
//! 5. the per-attempt **deadline** (`PLUGIN_1204`);
//! 6. the leaf (a transport, or any [`Service`]).
//!
//! A layer left out (no rate limit, no metrics) is there and passes calls on.
//!
//! Time is tokio's, so tests run with paused time.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::layers::{BoxService, BreakerListener, Call, Policies, Reply, Service};
use crate::metrics::Metrics;
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

/// The layers of a [`Guard`], outside in, around leaf `L`, as one service
/// whose call is one state machine (see [`Policies`]).
pub type Stack<L> = Policies<L>;

/// One plugin's policies around a leaf service. Share it (`Arc`) between
/// concurrent callers.
pub struct Guard<L = BoxService> {
    service: Arc<Stack<L>>,
    breaker: Arc<CircuitBreaker>,
}

impl<L> std::fmt::Debug for Guard<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("breaker", &self.breaker.stats())
            .finish_non_exhaustive()
    }
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl Guard {
    /// The layers of `cfg` around `leaf`: circuit closed, bucket full.
    pub fn new(cfg: GuardConfig, leaf: BoxService) -> Guard {
        Self::build(cfg, leaf, None, None)
    }
}

impl<L: Service> Guard<L> {
    /// As [`Guard::new`] around any leaf, recording in `metrics` and telling
    /// `listener` about breaker state changes. A layer that `cfg` leaves out
    /// (no rate limit, no metrics) passes calls on untouched.
    pub fn build(
        cfg: GuardConfig,
        leaf: L,
        metrics: Option<Arc<Metrics>>,
        listener: Option<BreakerListener>,
    ) -> Guard<L> {
        let breaker = Arc::new(CircuitBreaker::new(cfg.breaker));
        let bucket = cfg
            .rate_limit
            .enabled
            .then(|| TokenBucket::new_at(cfg.rate_limit, now()));
        let service = Policies::new(
            metrics,
            bucket,
            cfg.retry,
            Arc::clone(&breaker),
            listener,
            cfg.timeout,
            leaf,
        );
        Guard {
            service: Arc::new(service),
            breaker,
        }
    }

    /// The breaker, for stats and manual reset.
    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.breaker
    }

    /// The composed layers, shared.
    pub fn stack(&self) -> &Arc<Stack<L>> {
        &self.service
    }

    /// The composed layers as a [`BoxService`].
    pub fn service(&self) -> BoxService {
        Arc::clone(&self.service) as BoxService
    }

    /// Run one call through the layers.
    pub async fn call(&self, call: Call) -> Result<Reply, Error> {
        self.service.call(call).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::layers::service_fn;
    use serde_json::Value;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn cfg() -> GuardConfig {
        GuardConfig {
            timeout: Duration::from_millis(500),
            ..GuardConfig::default()
        }
    }

    fn call() -> Call {
        Call::new("p", Value::Null)
    }

    fn counting(
        calls: &Arc<AtomicU32>,
        r: impl Fn(u32) -> Result<Value, Error> + Send + Sync + 'static,
    ) -> BoxService {
        let calls = Arc::clone(calls);
        let r = Arc::new(r);
        service_fn(move |_| {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            let r = Arc::clone(&r);
            async move { r(n) }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn retryable_failures_are_retried_with_backoff_then_given_up() {
        let calls = Arc::new(AtomicU32::new(0));
        let g = Guard::new(
            GuardConfig {
                breaker: BreakerConfig {
                    enabled: false,
                    ..BreakerConfig::default()
                },
                ..cfg()
            },
            counting(&calls, |_| {
                Err(Error::new(ErrorKind::ConnectionFailed, "refused"))
            }),
        );
        let t0 = tokio::time::Instant::now();
        let r = g.call(call()).await;
        assert_eq!(r.unwrap_err().kind, ErrorKind::ConnectionFailed);
        assert_eq!(calls.load(Ordering::SeqCst), 4, "1 + max_retries 3");
        // 100 + 200 + 400 ms, each ±10 %.
        let took = t0.elapsed().as_secs_f64();
        assert!((0.63..=0.77).contains(&took), "{took}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_plugin_error_is_not_retried() {
        let calls = Arc::new(AtomicU32::new(0));
        let g = Guard::new(
            cfg(),
            counting(&calls, |_| {
                Err(Error::new(ErrorKind::ExecutionFailed, "bad request"))
            }),
        );
        assert_eq!(g.call(call()).await.unwrap_err().code(), "PLUGIN_1203");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_attempt_times_out_and_the_retry_succeeds() {
        let n = Arc::new(AtomicU32::new(0));
        let n2 = Arc::clone(&n);
        let g = Guard::new(
            cfg(),
            service_fn(move |_| {
                let k = n2.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    if k == 1 {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                    Ok(Value::from(k))
                }
            }),
        );
        assert_eq!(
            g.call(call()).await.and_then(Reply::into_value),
            Ok(Value::from(2))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_circuit_refuses_without_calling_then_recovers() {
        let calls = Arc::new(AtomicU32::new(0));
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let f2 = Arc::clone(&fail);
        let g = Guard::new(
            GuardConfig {
                retry: RetryConfig {
                    max_retries: 0,
                    ..RetryConfig::default()
                },
                ..cfg()
            },
            counting(&calls, move |n| {
                if f2.load(Ordering::SeqCst) {
                    Err(Error::new(ErrorKind::ConnectionFailed, "down"))
                } else {
                    Ok(Value::from(n))
                }
            }),
        );
        for _ in 0..5 {
            let _ = g.call(call()).await;
        }
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        assert_eq!(g.call(call()).await.unwrap_err().code(), "CIRCUIT_1401");
        assert_eq!(calls.load(Ordering::SeqCst), 5, "refused without a call");
        tokio::time::advance(Duration::from_secs(30)).await;
        fail.store(false, Ordering::SeqCst);
        assert!(g.call(call()).await.is_ok());
        assert!(g.call(call()).await.is_ok());
        assert_eq!(g.breaker().state(), crate::BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_refuses_past_the_burst() {
        let calls = Arc::new(AtomicU32::new(0));
        let g = Guard::new(
            GuardConfig {
                rate_limit: RateLimitConfig {
                    enabled: true,
                    requests_per_second: 10.0,
                    burst: 2,
                },
                ..cfg()
            },
            counting(&calls, |_| Ok(Value::Null)),
        );
        assert!(g.call(call()).await.is_ok());
        assert!(g.call(call()).await.is_ok());
        assert_eq!(g.call(call()).await.unwrap_err().code(), "RATELIMIT_1501");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(g.call(call()).await.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
