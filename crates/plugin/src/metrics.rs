//! Observability: counters, gauges and histograms labelled per plugin (in a
//! `prometheus-client` registry, exposed as Prometheus/OpenMetrics text by
//! [`Metrics::encode`]), and a [`ObservabilityReport`] with per-plugin
//! requests, success rate and latency (seed `PluginMetricsReport`).
//!
//! Metric families (prefix `hangar_plugin_`):
//!
//! | name | type | labels |
//! |---|---|---|
//! | `requests_total` | counter | plugin, outcome (`ok` or the error code) |
//! | `request_duration_seconds` | histogram | plugin |
//! | `active_requests` | gauge | plugin |
//! | `circuit_breaker_state` | gauge (0 closed, 1 open, 2 half-open) | plugin |
//! | `circuit_breaker_trips_total` | counter | plugin |
//! | `health_checks_total` | counter | plugin, outcome (`ok`, `failed`) |
//! | `health_status` | gauge (0 unknown … 4 offline) | plugin |
//!
//! Calls are traced with a `tracing` span `plugin_call` carrying the plugin,
//! request id and trace id; the trace context travels to the plugin in the
//! `traceparent` header (see [`crate::TraceContext`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::breaker::BreakerState;
use crate::error::{Error, ErrorKind};
use crate::health::PluginStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabel {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    plugin: String,
    outcome: String,
}

type HistCtor = fn() -> Histogram;

fn latency_histogram() -> Histogram {
    // 50 µs … ~26 s.
    Histogram::new(exponential_buckets(0.00005, 2.0, 20))
}

/// One plugin's figures for the report. Each is its own atomic, so that the
/// calls of every thread count without a lock; a report read while calls end
/// may be a call apart between figures, never torn within one. Calls in
/// flight are the Prometheus gauge, calls succeeded its `ok` counter.
#[derive(Debug)]
struct Stats {
    failed: AtomicU64,
    latency_total_ns: AtomicU64,
    /// `u64::MAX` until a call ends.
    min_ns: AtomicU64,
    max_ns: AtomicU64,
    timeout: AtomicU64,
    connection: AtomicU64,
    refused: AtomicU64,
    other: AtomicU64,
    trips: AtomicU64,
    health_total: AtomicU64,
    health_failed: AtomicU64,
    /// Error codes seen, for `forget` to remove their series (error path only).
    outcomes: Mutex<std::collections::BTreeSet<&'static str>>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            failed: AtomicU64::new(0),
            latency_total_ns: AtomicU64::new(0),
            min_ns: AtomicU64::new(u64::MAX),
            max_ns: AtomicU64::new(0),
            timeout: AtomicU64::new(0),
            connection: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            other: AtomicU64::new(0),
            trips: AtomicU64::new(0),
            health_total: AtomicU64::new(0),
            health_failed: AtomicU64::new(0),
            outcomes: Mutex::default(),
        }
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// Numbers of one plugin (seed `PluginMetricsReport`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginMetricsReport {
    /// Calls finished.
    pub total_requests: u64,
    /// Successful.
    pub successful_requests: u64,
    /// Failed.
    pub failed_requests: u64,
    /// In flight.
    pub active_requests: i64,
    /// Successful share, in percent (100 when none yet).
    pub success_rate_percent: f64,
    /// Fastest call, ms.
    pub min_latency_ms: f64,
    /// Slowest call, ms.
    pub max_latency_ms: f64,
    /// Mean, ms.
    pub avg_latency_ms: f64,
    /// Failures by deadline (`PLUGIN_1204`).
    pub timeout_errors: u64,
    /// Failures to reach the plugin (`PLUGIN_1205`, `TRANSPORT_13xx`).
    pub connection_errors: u64,
    /// Refused by our own policies (circuit open, rate limit, no plugin available).
    pub refused: u64,
    /// Everything else (the plugin's own errors).
    pub other_errors: u64,
    /// Times the circuit opened.
    pub circuit_breaker_trips: u64,
    /// Health checks run.
    pub health_check_total: u64,
    /// Health checks failed.
    pub health_check_failed: u64,
}

/// Totals (seed `GlobalMetrics`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GlobalMetrics {
    /// Calls finished.
    pub total_requests: u64,
    /// Failed.
    pub total_errors: u64,
    /// In flight.
    pub active_requests: i64,
    /// Successful share, in percent.
    pub overall_success_rate: f64,
}

/// The report (seed `ObservabilityReport`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObservabilityReport {
    /// RFC 3339.
    pub generated_at: String,
    /// Since the metrics were created, seconds.
    pub uptime_seconds: f64,
    /// Totals.
    pub global: GlobalMetrics,
    /// Per plugin.
    pub plugins: BTreeMap<String, PluginMetricsReport>,
}

/// The metrics of a manager. Share it behind `Arc`.
pub struct Metrics {
    registry: Registry,
    requests: Family<OutcomeLabel, Counter>,
    duration: Family<PluginLabel, Histogram, HistCtor>,
    active: Family<PluginLabel, Gauge>,
    breaker_state: Family<PluginLabel, Gauge>,
    breaker_trips: Family<PluginLabel, Counter>,
    health_checks: Family<OutcomeLabel, Counter>,
    health_status: Family<PluginLabel, Gauge>,
    state: RwLock<State>,
    started: Instant,
}

/// The plugins being counted, and those forgotten since: a call or health
/// check that ends after its plugin was removed must not bring its series
/// back. Every write through a family (`get_or_create`, which would make a
/// removed series again) holds this lock (read), and [`Metrics::forget`]
/// holds it (write), so the two never interleave. Writes to series already
/// resolved ([`Handles`]) need no lock: once forgotten, they are detached
/// from the registry and count nowhere.
#[derive(Default)]
struct State {
    handles: HashMap<String, Arc<Handles>>,
    gone: HashSet<String>,
}

/// One plugin's series, resolved once so a call costs no label allocation.
struct Handles {
    active: Gauge,
    duration: Histogram,
    ok: Counter,
    stats: Stats,
    /// Set by [`Metrics::forget`]: a [`Meter`] holding these resolves again.
    forgotten: AtomicBool,
}

/// One plugin's series, resolved once for the calls of a layer
/// ([`Metrics::meter`]): a call's start and end then take no lock on the
/// registry and hash no name, and both land on the same series even when
/// the plugin is forgotten and added back in between.
#[derive(Clone)]
pub(crate) struct Meter(Arc<Handles>);

impl Meter {
    /// Whether the plugin was forgotten since this was resolved.
    pub(crate) fn is_stale(&self) -> bool {
        self.0.forgotten.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with the families above.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("hangar_plugin");
        let requests = Family::<OutcomeLabel, Counter>::default();
        let duration =
            Family::<PluginLabel, Histogram, HistCtor>::new_with_constructor(latency_histogram);
        let active = Family::<PluginLabel, Gauge>::default();
        let breaker_state = Family::<PluginLabel, Gauge>::default();
        let breaker_trips = Family::<PluginLabel, Counter>::default();
        let health_checks = Family::<OutcomeLabel, Counter>::default();
        let health_status = Family::<PluginLabel, Gauge>::default();
        registry.register(
            "requests",
            "Plugin calls finished, by outcome",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Plugin call latency",
            duration.clone(),
        );
        registry.register("active_requests", "Plugin calls in flight", active.clone());
        registry.register(
            "circuit_breaker_state",
            "0 closed, 1 open, 2 half-open",
            breaker_state.clone(),
        );
        registry.register(
            "circuit_breaker_trips",
            "Times the circuit opened",
            breaker_trips.clone(),
        );
        registry.register(
            "health_checks",
            "Health checks run, by outcome",
            health_checks.clone(),
        );
        registry.register(
            "health_status",
            "0 unknown, 1 healthy, 2 degraded, 3 unhealthy, 4 offline",
            health_status.clone(),
        );
        Metrics {
            registry,
            requests,
            duration,
            active,
            breaker_state,
            breaker_trips,
            health_checks,
            health_status,
            state: RwLock::new(State::default()),
            started: Instant::now(),
        }
    }

    /// Run `f` on `plugin`'s series (made on first use), unless the plugin
    /// was forgotten. The state stays locked while `f` runs.
    fn live<R>(&self, plugin: &str, f: impl FnOnce(&Arc<Handles>) -> R) -> Option<R> {
        {
            let st = self.state.read().unwrap_or_else(|p| p.into_inner());
            if let Some(h) = st.handles.get(plugin) {
                return Some(f(h));
            }
            if st.gone.contains(plugin) {
                return None;
            }
        }
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        if st.gone.contains(plugin) {
            return None;
        }
        let h = st.handles.entry(plugin.to_string()).or_insert_with(|| {
            let l = Self::label(plugin);
            Arc::new(Handles {
                active: self.active.get_or_create(&l).clone(),
                duration: self.duration.get_or_create(&l).clone(),
                ok: self
                    .requests
                    .get_or_create(&OutcomeLabel {
                        plugin: plugin.to_string(),
                        outcome: "ok".into(),
                    })
                    .clone(),
                stats: Stats::default(),
                forgotten: AtomicBool::new(false),
            })
        });
        Some(f(h))
    }

    /// Count `plugin` again after a [`Metrics::forget`] (it was added back).
    pub fn track(&self, plugin: &str) {
        self.state
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .gone
            .remove(plugin);
    }

    fn label(plugin: &str) -> PluginLabel {
        PluginLabel {
            plugin: plugin.to_string(),
        }
    }

    /// `plugin`'s series, resolved for [`Metrics::started`] and
    /// [`Metrics::finished`] (none once it is forgotten).
    pub(crate) fn meter(&self, plugin: &str) -> Option<Meter> {
        self.live(plugin, |h| Meter(Arc::clone(h)))
    }

    /// A call to `plugin` starts.
    pub fn call_started(&self, plugin: &str) {
        if let Some(m) = self.meter(plugin) {
            self.started(&m);
        }
    }

    /// A call to `plugin` ended after `took`.
    pub fn call_finished(&self, plugin: &str, took: Duration, result: Result<(), &Error>) {
        if let Some(m) = self.meter(plugin) {
            self.finished(&m, plugin, took, result);
        }
    }

    /// A call starts, on series resolved before.
    pub(crate) fn started(&self, m: &Meter) {
        let h = &m.0;
        h.active.inc();
    }

    /// A call of `plugin` ended after `took`, on the series its start used.
    pub(crate) fn finished(
        &self,
        m: &Meter,
        plugin: &str,
        took: Duration,
        result: Result<(), &Error>,
    ) {
        let h = &m.0;
        h.active.dec();
        match result {
            Ok(()) => {
                h.ok.inc();
            }
            // A family write, and the code remembered for `forget` to
            // remove: both under the state lock, and only while these are
            // still the plugin's series (not forgotten, not replaced).
            Err(e) => {
                let st = self.state.read().unwrap_or_else(|p| p.into_inner());
                if st
                    .handles
                    .get(plugin)
                    .is_some_and(|cur| Arc::ptr_eq(cur, h))
                {
                    self.requests
                        .get_or_create(&OutcomeLabel {
                            plugin: plugin.to_string(),
                            outcome: e.code().to_string(),
                        })
                        .inc();
                    h.stats
                        .outcomes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(e.code());
                }
            }
        }
        h.duration.observe(took.as_secs_f64());
        let s = &h.stats;
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        s.latency_total_ns.fetch_add(ns, Ordering::Relaxed);
        // Read first: a new extreme is rare, a write to a shared line is not.
        if ns < s.min_ns.load(Ordering::Relaxed) {
            s.min_ns.fetch_min(ns, Ordering::Relaxed);
        }
        if ns > s.max_ns.load(Ordering::Relaxed) {
            s.max_ns.fetch_max(ns, Ordering::Relaxed);
        }
        if let Err(e) = result {
            bump(&s.failed);
            bump(match e.kind {
                ErrorKind::Timeout => &s.timeout,
                ErrorKind::ConnectionFailed | ErrorKind::Transport => &s.connection,
                ErrorKind::CircuitOpen | ErrorKind::RateLimited | ErrorKind::NoAvailablePlugins => {
                    &s.refused
                }
                _ => &s.other,
            });
        }
    }

    /// The breaker of `plugin` is now in `state`; `tripped` when it just opened.
    pub fn breaker(&self, plugin: &str, state: BreakerState, tripped: bool) {
        let v = match state {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        };
        self.live(plugin, |h| {
            self.breaker_state
                .get_or_create(&Self::label(plugin))
                .set(v);
            if tripped {
                self.breaker_trips.get_or_create(&Self::label(plugin)).inc();
                bump(&h.stats.trips);
            }
        });
    }

    /// A health check of `plugin` gave `status`.
    pub fn health_checked(&self, plugin: &str, status: PluginStatus) {
        let ok = status == PluginStatus::Healthy;
        self.live(plugin, |h| {
            self.health_checks
                .get_or_create(&OutcomeLabel {
                    plugin: plugin.to_string(),
                    outcome: if ok { "ok" } else { "failed" }.to_string(),
                })
                .inc();
            self.health_status
                .get_or_create(&Self::label(plugin))
                .set(status as i64);
            bump(&h.stats.health_total);
            if !ok {
                bump(&h.stats.health_failed);
            }
        });
    }

    /// Forget `plugin`'s series (after it is removed): events about it that
    /// end later are not counted, until [`Metrics::track`] says it is back.
    pub fn forget(&self, plugin: &str) {
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        st.gone.insert(plugin.to_string());
        let gone = st.handles.remove(plugin);
        if let Some(h) = &gone {
            h.forgotten.store(true, Ordering::Relaxed);
        }
        let l = Self::label(plugin);
        self.active.remove(&l);
        self.duration.remove(&l);
        self.breaker_state.remove(&l);
        self.breaker_trips.remove(&l);
        self.health_status.remove(&l);
        let mut outcomes: Vec<String> = vec!["ok".into()];
        if let Some(h) = gone {
            let seen = h.stats.outcomes.lock().unwrap_or_else(|p| p.into_inner());
            outcomes.extend(seen.iter().map(|c| c.to_string()));
        }
        for outcome in outcomes {
            self.requests.remove(&OutcomeLabel {
                plugin: plugin.to_string(),
                outcome,
            });
        }
        for outcome in ["ok", "failed"] {
            self.health_checks.remove(&OutcomeLabel {
                plugin: plugin.to_string(),
                outcome: outcome.to_string(),
            });
        }
    }

    /// Prometheus text exposition (OpenMetrics flavour, ends with `# EOF`).
    pub fn encode(&self) -> String {
        let mut s = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }

    /// The report.
    pub fn report(&self) -> ObservabilityReport {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        let ms = |ns: u64| ns as f64 / 1e6;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut plugins = BTreeMap::new();
        let (mut total, mut errors, mut active) = (0u64, 0u64, 0i64);
        for (name, h) in &st.handles {
            let s = &h.stats;
            let (ok, failed) = (h.ok.get(), get(&s.failed));
            let n = ok + failed;
            let (min, max) = (get(&s.min_ns), get(&s.max_ns));
            let in_flight = h.active.get();
            total += n;
            errors += failed;
            active += in_flight;
            plugins.insert(
                name.clone(),
                PluginMetricsReport {
                    total_requests: n,
                    successful_requests: ok,
                    failed_requests: failed,
                    active_requests: in_flight,
                    success_rate_percent: rate(ok, n),
                    min_latency_ms: if min == u64::MAX { 0.0 } else { ms(min) },
                    max_latency_ms: ms(max),
                    avg_latency_ms: if n == 0 {
                        0.0
                    } else {
                        ms(get(&s.latency_total_ns)) / n as f64
                    },
                    timeout_errors: get(&s.timeout),
                    connection_errors: get(&s.connection),
                    refused: get(&s.refused),
                    other_errors: get(&s.other),
                    circuit_breaker_trips: get(&s.trips),
                    health_check_total: get(&s.health_total),
                    health_check_failed: get(&s.health_failed),
                },
            );
        }
        drop(st);
        ObservabilityReport {
            generated_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            global: GlobalMetrics {
                total_requests: total,
                total_errors: errors,
                active_requests: active,
                overall_success_rate: rate(total - errors, total),
            },
            plugins,
        }
    }
}

fn rate(ok: u64, total: u64) -> f64 {
    if total == 0 {
        100.0
    } else {
        ok as f64 * 100.0 / total as f64
    }
}
