//! Health: probe definitions, health status, and the threshold logic that turns
//! probe results into health changes and verdicts. Pure; executing checks lives in
//! `probe.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// One way of checking a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// A TCP connect to `host:port` succeeds.
    Tcp {
        /// `host:port`; `{port.NAME}` is replaced by the process's port.
        address: String,
    },
    /// An HTTP GET answers with the expected status (any 2xx when unset) and, if
    /// given, a body containing `body_contains`.
    Http {
        /// `http://…` URL; `{port.NAME}` is replaced by the process's port.
        url: String,
        /// Exact status expected; any 2xx when unset.
        status: Option<u16>,
        /// Extra request headers.
        headers: BTreeMap<String, String>,
        /// A substring the body must contain.
        body_contains: Option<String>,
    },
    /// A command exits 0 within the timeout. Runs in its own process group, with
    /// the process's environment; killed (with its group) on timeout.
    Exec {
        /// Program and arguments.
        command: Vec<String>,
    },
    /// The process is alive (not exited, not a zombie).
    Process,
    /// Every check passes (run concurrently).
    All(Vec<Check>),
    /// At least one check passes (run concurrently).
    Any(Vec<Check>),
}

impl Check {
    /// Every problem with this check (empty when valid).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self {
            Check::Tcp { address } => {
                if address
                    .rsplit_once(':')
                    .is_none_or(|(h, p)| h.is_empty() || p.is_empty())
                {
                    out.push(format!("tcp address {address:?} is not host:port"));
                }
            }
            Check::Http { url, status, .. } => {
                if !url.starts_with("http://") {
                    out.push(format!("url {url:?} must start with http://"));
                } else if url.len() <= "http://".len() {
                    out.push(format!("url {url:?} has no host"));
                }
                if let Some(s) = status {
                    if !(100..=599).contains(s) {
                        out.push(format!("status {s} is not an HTTP status"));
                    }
                }
            }
            Check::Exec { command } => {
                if command.first().is_none_or(|c| c.trim().is_empty()) {
                    out.push("exec command is empty".into());
                }
            }
            Check::Process => {}
            Check::All(v) | Check::Any(v) => {
                if v.is_empty() {
                    out.push("a composite check needs at least one check".into());
                }
                for c in v {
                    out.extend(c.problems());
                }
            }
        }
        out
    }

    /// Apply `f` to every string a placeholder may appear in.
    pub(crate) fn map_strings(&mut self, f: &dyn Fn(&str) -> String) {
        match self {
            Check::Tcp { address } => *address = f(address),
            Check::Http {
                url,
                headers,
                body_contains,
                ..
            } => {
                *url = f(url);
                for v in headers.values_mut() {
                    *v = f(v);
                }
                if let Some(b) = body_contains {
                    *b = f(b);
                }
            }
            Check::Exec { command } => {
                for c in command {
                    *c = f(c);
                }
            }
            Check::Process => {}
            Check::All(v) | Check::Any(v) => v.iter_mut().for_each(|c| c.map_strings(f)),
        }
    }

    /// Every string of the check, for placeholder validation.
    pub(crate) fn strings(&self) -> Vec<&str> {
        match self {
            Check::Tcp { address } => vec![address],
            Check::Http {
                url,
                headers,
                body_contains,
                ..
            } => std::iter::once(url.as_str())
                .chain(headers.values().map(String::as_str))
                .chain(body_contains.as_deref())
                .collect(),
            Check::Exec { command } => command.iter().map(String::as_str).collect(),
            Check::Process => vec![],
            Check::All(v) | Check::Any(v) => v.iter().flat_map(|c| c.strings()).collect(),
        }
    }
}

/// A probe: a check and its schedule and thresholds.
///
/// Until the first success the probe runs on a fast schedule (5 ms, doubling, at
/// most 50 ms and never slower than `interval`) so that a process that listens
/// quickly becomes ready quickly; afterwards every `interval`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProbeSpec {
    /// What to check.
    pub check: Check,
    /// Wait before the first check.
    #[serde(
        serialize_with = "hangar_base::duration::serialize_ms",
        deserialize_with = "hangar_base::duration::deserialize"
    )]
    pub initial_delay: Duration,
    /// Time between checks once the probe has succeeded.
    #[serde(
        serialize_with = "hangar_base::duration::serialize_ms",
        deserialize_with = "hangar_base::duration::deserialize"
    )]
    pub interval: Duration,
    /// A check slower than this fails.
    #[serde(
        serialize_with = "hangar_base::duration::serialize_ms",
        deserialize_with = "hangar_base::duration::deserialize"
    )]
    pub timeout: Duration,
    /// Successes in a row to become healthy.
    pub success_threshold: u32,
    /// Failures in a row to become unhealthy.
    pub failure_threshold: u32,
}

impl Default for ProbeSpec {
    fn default() -> Self {
        ProbeSpec {
            check: Check::Process,
            initial_delay: Duration::ZERO,
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            failure_threshold: 3,
        }
    }
}

impl ProbeSpec {
    /// A probe with default schedule for `check`.
    pub fn new(check: Check) -> Self {
        ProbeSpec {
            check,
            ..ProbeSpec::default()
        }
    }

    /// Every problem, each naming the field.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out: Vec<(&'static str, String)> = self
            .check
            .problems()
            .into_iter()
            .map(|m| ("check", m))
            .collect();
        if self.interval.is_zero() {
            out.push(("interval", "interval must be greater than zero".into()));
        }
        if self.timeout.is_zero() {
            out.push(("timeout", "timeout must be greater than zero".into()));
        }
        for (field, n) in [
            ("success_threshold", self.success_threshold),
            ("failure_threshold", self.failure_threshold),
        ] {
            if n == 0 {
                out.push((field, format!("{field} must be at least 1")));
            } else if n > 1000 {
                out.push((field, format!("{n} is out of range 1..=1000")));
            }
        }
        out
    }

    /// Delay before the next check, given the checks run so far and whether one has
    /// ever succeeded.
    pub fn next_delay(&self, checks_done: u32, ever_succeeded: bool) -> Duration {
        if checks_done == 0 {
            return self.initial_delay;
        }
        if ever_succeeded {
            return self.interval;
        }
        let fast = Duration::from_millis(5u64 << (checks_done - 1).min(4));
        fast.min(Duration::from_millis(50)).min(self.interval)
    }
}

/// Which probe a result or event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKind {
    /// Gates Starting → Running.
    Readiness,
    /// Restarts the process when it fails.
    Liveness,
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProbeKind::Readiness => "readiness",
            ProbeKind::Liveness => "liveness",
        })
    }
}

/// Overall health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Not checked yet (or no probe).
    #[default]
    Unknown,
    /// Passing.
    Healthy,
    /// Was healthy, now failing, not yet past the failure threshold.
    Degraded,
    /// Failed `failure_threshold` times in a row.
    Unhealthy,
}

impl Health {
    /// Lower-case name, e.g. `healthy`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Unhealthy => "unhealthy",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Health of a process as its probes see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthStatus {
    /// Current health.
    pub status: Health,
    /// The probe that produced it.
    pub probe: Option<ProbeKind>,
    /// When the last check finished.
    pub last_check: Option<SystemTime>,
    /// How long the last check took.
    pub response_time: Option<Duration>,
    /// Failed checks in a row.
    pub consecutive_failures: u32,
    /// Passed checks in a row.
    pub consecutive_successes: u32,
    /// Why the last failed check failed.
    pub last_error: Option<String>,
    /// Checks passed by the current probe (readiness, then liveness) so far.
    pub checks_passed: u64,
    /// Checks failed by the current probe so far.
    pub checks_failed: u64,
}

/// What a probe result means for the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The readiness probe reached its success threshold.
    Ready,
    /// The liveness probe reached its failure threshold, with the last error.
    Unhealthy(String),
}

/// Turns a probe's results into health, applying its thresholds.
#[derive(Debug, Clone)]
pub struct HealthTracker {
    kind: ProbeKind,
    success_threshold: u32,
    failure_threshold: u32,
    status: HealthStatus,
    ever_ok: bool,
    /// Failures before the first success are "not up yet" until this time.
    grace_until: Option<SystemTime>,
}

impl HealthTracker {
    /// A tracker for a probe of this kind and thresholds.
    ///
    /// Until the probe first succeeds, failures mean "not up yet", not "broken":
    /// health stays `Unknown`. For a readiness probe that lasts until it passes (the
    /// start timeout bounds it); for a liveness probe it lasts `start_grace` from
    /// now, after which failures count as usual, so a process that never answers is
    /// still restarted.
    pub fn new(kind: ProbeKind, spec: &ProbeSpec, start_grace: Duration) -> Self {
        HealthTracker {
            kind,
            success_threshold: spec.success_threshold.max(1),
            failure_threshold: spec.failure_threshold.max(1),
            status: HealthStatus {
                probe: Some(kind),
                ..HealthStatus::default()
            },
            ever_ok: false,
            grace_until: match kind {
                ProbeKind::Readiness => None,
                ProbeKind::Liveness => SystemTime::now().checked_add(start_grace),
            },
        }
    }

    /// The current status.
    pub fn status(&self) -> &HealthStatus {
        &self.status
    }

    /// Record one result. Returns the verdict, if this result decided one.
    pub fn record(
        &mut self,
        result: Result<(), String>,
        took: Duration,
        at: SystemTime,
    ) -> Option<Verdict> {
        let s = &mut self.status;
        s.last_check = Some(at);
        s.response_time = Some(took);
        let before = s.status;
        match result {
            Ok(()) => {
                s.checks_passed += 1;
                self.ever_ok = true;
                s.consecutive_successes = s.consecutive_successes.saturating_add(1);
                s.consecutive_failures = 0;
                if s.consecutive_successes >= self.success_threshold {
                    s.status = Health::Healthy;
                } else if s.status == Health::Unhealthy {
                    s.status = Health::Degraded;
                }
            }
            Err(e) => {
                s.checks_failed += 1;
                let grace = !self.ever_ok
                    && match self.kind {
                        ProbeKind::Readiness => true,
                        ProbeKind::Liveness => self.grace_until.is_some_and(|g| at < g),
                    };
                s.consecutive_failures = s.consecutive_failures.saturating_add(1);
                s.consecutive_successes = 0;
                s.last_error = Some(e);
                if grace {
                    // Not up yet: stays Unknown.
                } else if s.consecutive_failures >= self.failure_threshold {
                    s.status = Health::Unhealthy;
                } else if s.status == Health::Healthy {
                    s.status = Health::Degraded;
                }
            }
        }
        match (self.kind, before, s.status) {
            (ProbeKind::Readiness, b, Health::Healthy) if b != Health::Healthy => {
                Some(Verdict::Ready)
            }
            (ProbeKind::Liveness, b, Health::Unhealthy) if b != Health::Unhealthy => {
                Some(Verdict::Unhealthy(s.last_error.clone().unwrap_or_default()))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ok: u32, fail: u32) -> ProbeSpec {
        ProbeSpec {
            success_threshold: ok,
            failure_threshold: fail,
            ..ProbeSpec::default()
        }
    }

    #[test]
    fn liveness_goes_degraded_then_unhealthy_once() {
        let mut t = HealthTracker::new(ProbeKind::Liveness, &spec(1, 3), Duration::ZERO);
        let now = SystemTime::now();
        let d = Duration::from_millis(1);
        assert_eq!(t.record(Ok(()), d, now), None);
        assert_eq!(t.status().status, Health::Healthy);
        assert_eq!(t.record(Err("refused".into()), d, now), None);
        assert_eq!(t.status().status, Health::Degraded);
        assert_eq!(t.record(Err("refused".into()), d, now), None);
        assert_eq!(
            t.record(Err("timeout".into()), d, now),
            Some(Verdict::Unhealthy("timeout".into()))
        );
        assert_eq!(t.status().status, Health::Unhealthy);
        assert_eq!(t.status().consecutive_failures, 3);
        // Only the transition is a verdict.
        assert_eq!(t.record(Err("x".into()), d, now), None);
    }

    #[test]
    fn readiness_needs_its_success_threshold() {
        let mut t = HealthTracker::new(ProbeKind::Readiness, &spec(2, 3), Duration::ZERO);
        let now = SystemTime::now();
        let d = Duration::ZERO;
        for _ in 0..5 {
            assert_eq!(t.record(Err("no".into()), d, now), None);
        }
        // Not ready yet is not unhealthy.
        assert_eq!(t.status().status, Health::Unknown);
        assert_eq!(t.status().consecutive_failures, 5);
        assert_eq!(t.record(Ok(()), d, now), None);
        assert_eq!(t.record(Ok(()), d, now), Some(Verdict::Ready));
    }

    #[test]
    fn liveness_tolerates_a_slow_start_for_the_grace_period() {
        let t0 = SystemTime::now();
        let mut t = HealthTracker::new(ProbeKind::Liveness, &spec(1, 2), Duration::from_secs(60));
        let d = Duration::ZERO;
        for _ in 0..5 {
            assert_eq!(t.record(Err("refused".into()), d, t0), None);
        }
        assert_eq!(t.status().status, Health::Unknown);
        // Past the grace period, failures count.
        let late = t0 + Duration::from_secs(120);
        assert!(matches!(
            t.record(Err("refused".into()), d, late),
            Some(Verdict::Unhealthy(_))
        ));
        // Once it has succeeded, there is no grace.
        let mut t = HealthTracker::new(ProbeKind::Liveness, &spec(1, 2), Duration::from_secs(60));
        t.record(Ok(()), d, t0);
        t.record(Err("x".into()), d, t0);
        assert!(matches!(
            t.record(Err("x".into()), d, t0),
            Some(Verdict::Unhealthy(_))
        ));
    }

    #[test]
    fn fast_schedule_until_first_success() {
        let mut p = spec(1, 1);
        p.interval = Duration::from_secs(1);
        p.initial_delay = Duration::from_millis(7);
        let d: Vec<u128> = (0..8).map(|n| p.next_delay(n, false).as_millis()).collect();
        assert_eq!(d, vec![7, 5, 10, 20, 40, 50, 50, 50]);
        assert_eq!(p.next_delay(3, true), Duration::from_secs(1));
        p.interval = Duration::from_millis(15);
        assert_eq!(p.next_delay(5, false), Duration::from_millis(15));
    }

    #[test]
    fn checks_are_validated() {
        assert!(
            Check::Tcp {
                address: "nohost".into()
            }
            .problems()
            .len()
                == 1
        );
        let bad = Check::Http {
            url: "ftp://x".into(),
            status: Some(42),
            headers: BTreeMap::new(),
            body_contains: None,
        };
        assert_eq!(bad.problems().len(), 2);
        assert_eq!(Check::Any(vec![]).problems().len(), 1);
        let mut p = ProbeSpec::new(Check::Exec { command: vec![] });
        p.interval = Duration::ZERO;
        let fields: Vec<_> = p.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["check", "interval"]);
    }
}
