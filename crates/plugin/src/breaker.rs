//! The circuit breaker of the plugin API reference (seed 003), with exactly its
//! states and thresholds:
//!
//! - **Closed**: every request passes. Failures in a row are counted; the
//!   circuit opens when they reach `failure_threshold` *and* at least
//!   `min_request_threshold` requests have been seen since the circuit last
//!   closed (a plugin is not condemned on its first two calls). A success
//!   resets the count of failures in a row.
//! - **Open**: every request is refused (`CIRCUIT_1401`) until
//!   `recovery_timeout` has passed since it opened; the next request then moves
//!   it to half-open.
//! - **Half-open**: at most `success_threshold` trial requests are let through
//!   at once. `success_threshold` successes in a row close the circuit; any
//!   failure opens it again.
//!
//! Time is passed in (`*_at(now)`), so the rules are tested without sleeping;
//! the plain methods use `Instant::now()`.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Breaker settings (seed names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Off: every request passes and nothing is counted.
    pub enabled: bool,
    /// Failures in a row that open the circuit.
    pub failure_threshold: u32,
    /// How long the circuit stays open before a trial.
    pub recovery_timeout: Duration,
    /// Requests that must have been seen before the circuit may open.
    pub min_request_threshold: u32,
    /// Successes in a row, half-open, that close the circuit.
    pub success_threshold: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            enabled: true,
            failure_threshold: 5,
            recovery_timeout: Duration::from_secs(30),
            min_request_threshold: 3,
            success_threshold: 2,
        }
    }
}

/// Where the breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Normal operation.
    Closed,
    /// Refusing requests.
    Open,
    /// Letting a few trial requests through.
    HalfOpen,
}

/// Counters for monitoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerStats {
    /// Current state.
    pub state: BreakerState,
    /// Failures in a row (closed) or since half-open.
    pub consecutive_failures: u32,
    /// Successes in a row while half-open.
    pub half_open_successes: u32,
    /// Requests let through since the circuit last closed, counted up to
    /// `min_request_threshold` (all the opening rule needs).
    pub requests: u64,
    /// Requests refused, in all.
    pub rejected: u64,
    /// Times the circuit opened, in all.
    pub opened: u64,
    /// When the last failure was recorded.
    pub last_failure: Option<Instant>,
}

#[derive(Debug)]
struct Inner {
    successes: u32,
    in_trial: u32,
    rejected: u64,
    opened: u64,
    opened_at: Option<Instant>,
    last_failure: Option<Instant>,
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

fn state_of(v: u8) -> BreakerState {
    match v {
        CLOSED => BreakerState::Closed,
        OPEN => BreakerState::Open,
        _ => BreakerState::HalfOpen,
    }
}

fn code_of(s: BreakerState) -> u8 {
    match s {
        BreakerState::Closed => CLOSED,
        BreakerState::Open => OPEN,
        BreakerState::HalfOpen => HALF_OPEN,
    }
}

/// A thread-safe circuit breaker.
///
/// Every change of state happens under one lock. The state, the run of
/// failures and the count of requests are atomics beside it, so that a
/// closed circuit admits a call and records a success by reading them: the
/// calls of many threads then share these lines without writing them. A
/// reading that races a change is one the lock could have ordered either way
/// (a call admitted just before the circuit opened).
#[derive(Debug)]
pub struct CircuitBreaker {
    cfg: BreakerConfig,
    state: AtomicU8,
    /// Failures in a row (closed) or since half-open.
    failures: AtomicU32,
    /// Requests let through since the circuit last closed, counted up to
    /// `min_request_threshold` (all the opening rule reads).
    requests: AtomicU64,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(cfg: BreakerConfig) -> CircuitBreaker {
        CircuitBreaker {
            cfg,
            state: AtomicU8::new(CLOSED),
            failures: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            inner: Mutex::new(Inner {
                successes: 0,
                in_trial: 0,
                rejected: 0,
                opened: 0,
                opened_at: None,
                last_failure: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The state is plain counters: a panic elsewhere cannot leave it torn.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn load(&self) -> BreakerState {
        state_of(self.state.load(Ordering::Acquire))
    }

    /// Set the state (under the lock).
    fn set(&self, s: BreakerState) {
        self.state.store(code_of(s), Ordering::Release);
    }

    /// Count a request let through while closed, up to what the opening rule
    /// reads: past it the count would be a write per call for nothing.
    fn count_request(&self) {
        let min = u64::from(self.cfg.min_request_threshold);
        // (A load first, then a write only below the cap; two threads
        // racing at the cap cannot both add.)
        let _ = self
            .requests
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < min).then_some(n + 1)
            });
    }

    /// May a request go through now? Counts it if so.
    pub fn allow(&self) -> bool {
        self.allow_at(Instant::now())
    }

    /// [`CircuitBreaker::allow`] at `now`.
    pub fn allow_at(&self, now: Instant) -> bool {
        self.admit_at(now).0
    }

    /// [`CircuitBreaker::allow_at`], with the state before and after it,
    /// read under the same lock.
    pub fn admit_at(&self, now: Instant) -> (bool, BreakerState, BreakerState) {
        self.admit_with(|| now)
    }

    /// [`CircuitBreaker::admit_at`], reading the clock (`now`) only when
    /// the circuit is not closed.
    pub(crate) fn admit_with(
        &self,
        now: impl FnOnce() -> Instant,
    ) -> (bool, BreakerState, BreakerState) {
        if !self.cfg.enabled {
            return (true, BreakerState::Closed, BreakerState::Closed);
        }
        if self.load() == BreakerState::Closed {
            self.count_request();
            return (true, BreakerState::Closed, BreakerState::Closed);
        }
        let mut g = self.lock();
        let before = self.load();
        let ok = self.allow_locked(&mut g, now());
        (ok, before, self.load())
    }

    fn allow_locked(&self, g: &mut Inner, now: Instant) -> bool {
        let mut state = self.load();
        if state == BreakerState::Open {
            let due = g
                .opened_at
                .is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.recovery_timeout);
            if !due {
                g.rejected += 1;
                return false;
            }
            state = BreakerState::HalfOpen;
            self.set(state);
            g.successes = 0;
            self.failures.store(0, Ordering::Relaxed);
            g.in_trial = 0;
        }
        if state == BreakerState::HalfOpen {
            if g.in_trial >= self.cfg.success_threshold.max(1) {
                g.rejected += 1;
                return false;
            }
            g.in_trial += 1;
        }
        self.count_request();
        true
    }

    /// Record the outcome of a request that was let through: `Some(true)` a
    /// success, `Some(false)` a failure, `None` neither (it ended in a way
    /// that says nothing about the plugin, or its caller gave up on it: a
    /// half-open trial then gives its place back). Returns the state after
    /// it, read under the same lock.
    pub fn settle_at(&self, outcome: Option<bool>, now: Instant) -> BreakerState {
        self.settle_change_at(outcome, now).1
    }

    /// [`CircuitBreaker::settle_at`], with the state before it, read under
    /// the same lock: a change it shows is this outcome's own, so that of
    /// many calls ending as the circuit opens, one reports the opening.
    pub fn settle_change_at(
        &self,
        outcome: Option<bool>,
        now: Instant,
    ) -> (BreakerState, BreakerState) {
        self.settle_change_with(outcome, || now)
    }

    /// [`CircuitBreaker::settle_change_at`], reading the clock (`now`) only
    /// when the outcome changes something.
    pub(crate) fn settle_change_with(
        &self,
        outcome: Option<bool>,
        now: impl FnOnce() -> Instant,
    ) -> (BreakerState, BreakerState) {
        if !self.cfg.enabled {
            return (BreakerState::Closed, BreakerState::Closed);
        }
        match outcome {
            // A success while closed with no failure to forget changes nothing.
            Some(true)
                if self.load() == BreakerState::Closed
                    && self.failures.load(Ordering::Relaxed) == 0 =>
            {
                return (BreakerState::Closed, BreakerState::Closed);
            }
            None if self.load() != BreakerState::HalfOpen => {
                let s = self.load();
                return (s, s);
            }
            _ => {}
        }
        let mut g = self.lock();
        let before = self.load();
        match outcome {
            Some(true) => self.success_locked(&mut g),
            Some(false) => self.failure_locked(&mut g, now()),
            None => {
                if self.load() == BreakerState::HalfOpen {
                    g.in_trial = g.in_trial.saturating_sub(1);
                }
            }
        }
        (before, self.load())
    }

    /// Record a success of a request that was let through.
    pub fn record_success(&self) {
        self.settle_at(Some(true), Instant::now());
    }

    fn success_locked(&self, g: &mut Inner) {
        match self.load() {
            BreakerState::Closed => self.failures.store(0, Ordering::Relaxed),
            BreakerState::HalfOpen => {
                g.in_trial = g.in_trial.saturating_sub(1);
                g.successes += 1;
                if g.successes >= self.cfg.success_threshold.max(1) {
                    // Counters first: a call admitted the moment the state
                    // reads closed counts from zero.
                    self.failures.store(0, Ordering::Relaxed);
                    g.successes = 0;
                    g.in_trial = 0;
                    self.requests.store(0, Ordering::Relaxed);
                    self.set(BreakerState::Closed);
                }
            }
            BreakerState::Open => {}
        }
    }

    /// Record a failure of a request that was let through.
    pub fn record_failure(&self) {
        self.record_failure_at(Instant::now())
    }

    /// [`CircuitBreaker::record_failure`] at `now`.
    pub fn record_failure_at(&self, now: Instant) {
        self.settle_at(Some(false), now);
    }

    fn failure_locked(&self, g: &mut Inner, now: Instant) {
        g.last_failure = Some(now);
        match self.load() {
            BreakerState::Closed => {
                let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if failures >= self.cfg.failure_threshold.max(1)
                    && self.requests.load(Ordering::Relaxed)
                        >= u64::from(self.cfg.min_request_threshold)
                {
                    self.open(g, now);
                }
            }
            BreakerState::HalfOpen => self.open(g, now),
            BreakerState::Open => {}
        }
    }

    fn open(&self, g: &mut Inner, now: Instant) {
        self.set(BreakerState::Open);
        g.opened_at = Some(now);
        g.opened += 1;
        g.successes = 0;
        g.in_trial = 0;
    }

    /// The current state (an open circuit past its timeout still reads open
    /// until the next request moves it).
    pub fn state(&self) -> BreakerState {
        self.load()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> BreakerStats {
        let g = self.lock();
        BreakerStats {
            state: self.load(),
            consecutive_failures: self.failures.load(Ordering::Relaxed),
            half_open_successes: g.successes,
            requests: self.requests.load(Ordering::Relaxed),
            rejected: g.rejected,
            opened: g.opened,
            last_failure: g.last_failure,
        }
    }

    /// Close the circuit and clear the counters (totals of rejections and
    /// openings are kept for monitoring).
    pub fn reset(&self) {
        let mut g = self.lock();
        self.failures.store(0, Ordering::Relaxed);
        g.successes = 0;
        g.in_trial = 0;
        self.requests.store(0, Ordering::Relaxed);
        g.opened_at = None;
        self.set(BreakerState::Closed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig::default()
    }

    fn fail(b: &CircuitBreaker, now: Instant, n: u32) {
        for _ in 0..n {
            assert!(b.allow_at(now));
            b.record_failure_at(now);
        }
    }

    #[test]
    fn opens_after_threshold_failures_in_a_row() {
        let b = CircuitBreaker::new(cfg());
        let t = Instant::now();
        fail(&b, t, 4);
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b, t, 1);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow_at(t + Duration::from_secs(29)));
        assert_eq!(b.stats().rejected, 1);
        assert_eq!(b.stats().opened, 1);
    }

    #[test]
    fn a_success_resets_the_run_of_failures() {
        let b = CircuitBreaker::new(cfg());
        let t = Instant::now();
        fail(&b, t, 4);
        assert!(b.allow_at(t));
        b.record_success();
        fail(&b, t, 4);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn minimum_requests_gate_opening() {
        let b = CircuitBreaker::new(BreakerConfig {
            failure_threshold: 1,
            min_request_threshold: 3,
            ..cfg()
        });
        let t = Instant::now();
        fail(&b, t, 2);
        assert_eq!(b.state(), BreakerState::Closed, "only 2 requests seen");
        fail(&b, t, 1);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn half_open_lets_a_few_trials_through_then_closes() {
        let b = CircuitBreaker::new(cfg());
        let t = Instant::now();
        fail(&b, t, 5);
        let later = t + Duration::from_secs(30);
        assert!(b.allow_at(later));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.allow_at(later));
        assert!(
            !b.allow_at(later),
            "at most success_threshold trials at once"
        );
        b.record_success();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow_at(later));
    }

    #[test]
    fn a_half_open_trial_that_ends_saying_nothing_gives_its_place_back() {
        let b = CircuitBreaker::new(cfg());
        let t = Instant::now();
        fail(&b, t, 5);
        let later = t + Duration::from_secs(30);
        assert!(b.allow_at(later));
        assert!(b.allow_at(later));
        assert!(!b.allow_at(later), "both trial places taken");
        // One trial's caller gave up: its place is free again.
        assert_eq!(b.settle_at(None, later), BreakerState::HalfOpen);
        assert!(b.allow_at(later));
    }

    #[test]
    fn a_failure_half_open_reopens_for_a_full_timeout() {
        let b = CircuitBreaker::new(cfg());
        let t = Instant::now();
        fail(&b, t, 5);
        let later = t + Duration::from_secs(31);
        assert!(b.allow_at(later));
        b.record_failure_at(later);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow_at(later + Duration::from_secs(29)));
        assert!(b.allow_at(later + Duration::from_secs(30)));
        assert_eq!(b.stats().opened, 2);
    }

    #[test]
    fn calls_from_many_threads_on_a_closed_circuit_count_up_to_the_rule() {
        let b = std::sync::Arc::new(CircuitBreaker::new(cfg()));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = std::sync::Arc::clone(&b);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        assert!(b.allow_at(Instant::now()));
                        b.record_success();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = b.stats();
        assert_eq!(s.state, BreakerState::Closed);
        assert_eq!(s.consecutive_failures, 0);
        assert_eq!(s.requests, u64::from(cfg().min_request_threshold));
        // The rule still reads: five failures in a row open it.
        fail(&b, Instant::now(), 5);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn reset_and_disabled() {
        let b = CircuitBreaker::new(cfg());
        let t = Instant::now();
        fail(&b, t, 5);
        b.reset();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow_at(t));
        let off = CircuitBreaker::new(BreakerConfig {
            enabled: false,
            ..cfg()
        });
        fail(&off, t, 50);
        assert_eq!(off.state(), BreakerState::Closed);
    }
}
