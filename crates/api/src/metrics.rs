//! Prometheus metrics and the HTTP listener that serves them.
//!
//! Families (the seed's launcher metrics under the `hangar_` prefix):
//!
//! | family | type | labels |
//! |---|---|---|
//! | `hangar_processes` | gauge | `state` |
//! | `hangar_process_starts_total` | counter | `process` |
//! | `hangar_process_restarts_total` | counter | `process` |
//! | `hangar_process_failures_total` | counter | `process` |
//! | `hangar_health_checks_total` | counter | `process`, `probe`, `result` |
//! | `hangar_launch_duration_seconds` | histogram | — |
//! | `hangar_uptime_seconds` | gauge | — |
//! | `hangar_events_total` | counter | — |
//! | `hangar_sink_delivered_total`, `_dropped_total`, `_failed_attempts_total` | counter | `sink` |
//! | `hangar_build_info` | gauge (info) | `version` |
//! | `hangar_process_cpu_seconds_total` | counter | `process` |
//! | `hangar_process_memory_bytes` | gauge | `process` |
//! | `process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_start_time_seconds`, `process_open_fds`, `process_max_fds` | counter, gauges | — (the daemon itself) |
//!
//! Event-driven families are updated by one task reading the daemon's event bus
//! (stored events only); state gauges, health checks and sink counters are read
//! from snapshots at scrape time, and so are the supervised processes' CPU and
//! memory (their cgroup's figures where they have one, else their pid's from
//! `/proc`) and the daemon's own `process_*` figures ([`crate::usage`]).
//! `/metrics` is OpenMetrics text when the scraper asks for it, Prometheus text
//! 0.0.4 otherwise ([`crate::exposition`]). `/metrics.json` gives the same figures plus
//! launch-duration percentiles (p50, p95, p99 over the last 1024 launches).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::State as AxState;
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use hangar_core::{Daemon, Error};

use crate::exposition::Format;
use crate::usage::{ProcessesCollector, SelfCollector};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcLabel {
    process: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabel {
    process: String,
    probe: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabel {
    sink: String,
}

const STATES: [&str; 8] = [
    "stopped", "waiting", "starting", "running", "stopping", "backoff", "exited", "failed",
];
/// Launch durations kept for percentiles.
const RECENT: usize = 1024;

/// The metric families and what feeds them.
pub struct Metrics {
    registry: Registry,
    processes: Family<StateLabel, Gauge>,
    starts: Family<ProcLabel, Counter>,
    restarts: Family<ProcLabel, Counter>,
    failures: Family<ProcLabel, Counter>,
    checks: Family<CheckLabel, Counter>,
    launch: Histogram,
    uptime: Gauge<f64, AtomicU64>,
    events: Counter,
    sink_delivered: Family<SinkLabel, Counter>,
    sink_dropped: Family<SinkLabel, Counter>,
    sink_failed: Family<SinkLabel, Counter>,
    /// Last values seen of snapshot counters, to turn them into increments.
    seen: Mutex<HashMap<String, u64>>,
    /// When each process entered `starting`, by name (ms).
    launching: Mutex<HashMap<String, i64>>,
    recent: Mutex<VecDeque<f64>>,
    /// Starts, restarts and failures over all processes, for the JSON view.
    totals: [AtomicU64; 3],
    /// The supervised processes' CPU and memory, taken at each refresh.
    usage: ProcessesCollector,
    born: Instant,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty families, registered.
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::default(),
            processes: Family::default(),
            starts: Family::default(),
            restarts: Family::default(),
            failures: Family::default(),
            checks: Family::default(),
            launch: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            uptime: Gauge::default(),
            events: Counter::default(),
            sink_delivered: Family::default(),
            sink_dropped: Family::default(),
            sink_failed: Family::default(),
            seen: Mutex::new(HashMap::new()),
            launching: Mutex::new(HashMap::new()),
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
            totals: Default::default(),
            usage: ProcessesCollector::default(),
            born: Instant::now(),
        };
        // The standard `process_*` families of the daemon itself, unprefixed.
        m.registry.register_collector(Box::new(SelfCollector));
        let r = m.registry.sub_registry_with_prefix("hangar");
        r.register(
            "build",
            "The hangar build serving these metrics (always 1)",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        r.register_collector(Box::new(m.usage.clone()));
        r.register("processes", "Processes by state", m.processes.clone());
        r.register("process_starts", "Process spawns", m.starts.clone());
        r.register(
            "process_restarts",
            "Restarts the restart policy decided, with or without backoff",
            m.restarts.clone(),
        );
        r.register(
            "process_failures",
            "Runs or starts that ended in failure: failed exits, spawns, probes, dependencies",
            m.failures.clone(),
        );
        r.register("health_checks", "Health checks by result", m.checks.clone());
        r.register(
            "launch_duration_seconds",
            "Time from spawn to running (readiness passed)",
            m.launch.clone(),
        );
        r.register(
            "uptime_seconds",
            "Time since the daemon started",
            m.uptime.clone(),
        );
        r.register("events", "Events stored", m.events.clone());
        r.register(
            "sink_delivered",
            "Events a history sink delivered",
            m.sink_delivered.clone(),
        );
        r.register(
            "sink_dropped",
            "Events a history sink dropped",
            m.sink_dropped.clone(),
        );
        r.register(
            "sink_failed_attempts",
            "Failed delivery attempts of a history sink",
            m.sink_failed.clone(),
        );
        m
    }

    /// Account for one stored event.
    pub fn observe(&self, r: &hangar_store::EventRecord) {
        self.events.inc();
        if r.kind != "state" {
            return;
        }
        let label = || ProcLabel {
            process: r.name.clone(),
        };
        // The state machine says which transitions are restarts and failures
        // (`detail.restart`, `detail.failure`); state names alone cannot: a
        // restart without backoff goes straight from running to starting.
        let flag = |k: &str| r.detail.get(k).and_then(|v| v.as_bool()) == Some(true);
        if flag("restart") {
            self.restarts.get_or_create(&label()).inc();
            self.totals[1].fetch_add(1, Ordering::Relaxed);
        }
        if flag("failure") {
            self.failures.get_or_create(&label()).inc();
            self.totals[2].fetch_add(1, Ordering::Relaxed);
        }
        match r.to.as_str() {
            "starting" => {
                self.starts.get_or_create(&label()).inc();
                self.totals[0].fetch_add(1, Ordering::Relaxed);
                if let Ok(mut l) = self.launching.lock() {
                    l.insert(r.name.clone(), r.at_ms);
                }
            }
            "running" => {
                let began = self
                    .launching
                    .lock()
                    .ok()
                    .and_then(|mut l| l.remove(&r.name));
                if let Some(t0) = began {
                    let secs = (r.at_ms - t0).max(0) as f64 / 1000.0;
                    self.launch.observe(secs);
                    if let Ok(mut q) = self.recent.lock() {
                        if q.len() == RECENT {
                            q.pop_front();
                        }
                        q.push_back(secs);
                    }
                }
            }
            _ => {}
        }
    }

    fn bump(&self, key: String, now: u64, c: &Counter) {
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        let last = seen.insert(key, now).unwrap_or(0);
        // A smaller value means the source was reset (a new probe, a new process).
        c.inc_by(if now >= last { now - last } else { now });
    }

    /// Refresh snapshot-based families from the daemon; returns the daemon
    /// facts it read, for callers that show them too.
    async fn refresh(&self, d: &Daemon) -> hangar_core::DaemonInfo {
        self.uptime.set(self.born.elapsed().as_secs_f64());
        let usage = crate::usage::read_all(d).await;
        if let Ok(mut snap) = self.usage.snapshot.lock() {
            *snap = usage;
        }
        let info = d.info().await;
        for s in STATES {
            let n = info.by_state.get(s).copied().unwrap_or(0);
            self.processes
                .get_or_create(&StateLabel { state: s.into() })
                .set(i64::from(n));
        }
        for st in d.manager().status_all("*").unwrap_or_default() {
            let Some(probe) = st.health.probe else {
                continue;
            };
            for (result, n) in [
                ("success", st.health.checks_passed),
                ("failure", st.health.checks_failed),
            ] {
                let l = CheckLabel {
                    process: st.name.to_string(),
                    probe: probe.to_string(),
                    result: result.into(),
                };
                let key = format!("check/{}/{probe}/{result}", st.name);
                self.bump(key, n, &self.checks.get_or_create(&l));
            }
        }
        for s in &info.sinks {
            let l = SinkLabel {
                sink: s.name.clone(),
            };
            self.bump(
                format!("sink/d/{}", s.name),
                s.delivered,
                &self.sink_delivered.get_or_create(&l),
            );
            self.bump(
                format!("sink/x/{}", s.name),
                s.dropped,
                &self.sink_dropped.get_or_create(&l),
            );
            self.bump(
                format!("sink/f/{}", s.name),
                s.failed_attempts,
                &self.sink_failed.get_or_create(&l),
            );
        }
        info
    }

    /// The text exposition in `format`.
    pub async fn text(&self, d: &Daemon, format: Format) -> String {
        let _ = self.refresh(d).await;
        format.encode(&self.registry)
    }

    /// The same figures as JSON, with launch percentiles.
    pub async fn json(&self, d: &Daemon) -> serde_json::Value {
        let info = self.refresh(d).await;
        let mut recent: Vec<f64> = self
            .recent
            .lock()
            .map(|q| q.iter().copied().collect())
            .unwrap_or_default();
        recent.sort_by(f64::total_cmp);
        let pct = |p: f64| -> Option<f64> {
            if recent.is_empty() {
                return None;
            }
            let i = ((recent.len() as f64 - 1.0) * p).round() as usize;
            recent.get(i).copied()
        };
        let total = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "uptime_seconds": self.born.elapsed().as_secs_f64(),
            "processes": info.by_state,
            "process_starts_total": total(&self.totals[0]),
            "process_restarts_total": total(&self.totals[1]),
            "process_failures_total": total(&self.totals[2]),
            "events_total": self.events.get(),
            "launch_duration_seconds": {
                "count": recent.len(),
                "p50": pct(0.50),
                "p95": pct(0.95),
                "p99": pct(0.99),
            },
            "sinks": info.sinks.iter().map(|s| serde_json::json!({
                "name": s.name, "kind": s.kind, "delivered": s.delivered,
                "dropped": s.dropped, "failed_attempts": s.failed_attempts, "queued": s.queued,
            })).collect::<Vec<_>>(),
        })
    }
}

#[derive(Clone)]
struct Http {
    d: Daemon,
    m: Arc<Metrics>,
}

async fn metrics_text(AxState(s): AxState<Http>, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    (
        [
            (header::CONTENT_TYPE, format.content_type()),
            (header::VARY, "Accept"),
        ],
        s.m.text(&s.d, format).await,
    )
}

async fn metrics_json(AxState(s): AxState<Http>) -> impl IntoResponse {
    axum::Json(s.m.json(&s.d).await)
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// The HTTP listener: `/metrics`, `/metrics.json`, `/healthz`.
pub struct HttpServer {
    /// The bound address.
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    /// Stop listening.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.task).await;
    }
}

/// Start feeding `m` from the daemon's stored events: first those stored since
/// boot (the configuration's processes start while the listeners come up, before
/// this is called), then the live ones, each once.
pub fn feed(d: &Daemon, m: Arc<Metrics>) -> tokio::task::JoinHandle<()> {
    // Subscribe before reading history, then skip live events already replayed.
    let mut rx = d.subscribe();
    let d = d.clone();
    tokio::spawn(async move {
        let mut seen = d.boot_event_id();
        let past = d
            .history(hangar_store::EventQuery {
                after_id: Some(seen),
                limit: Some(hangar_store::EventQuery::MAX_LIMIT),
                ..Default::default()
            })
            .await
            .unwrap_or_default();
        for r in &past {
            m.observe(r);
            seen = seen.max(r.id);
        }
        loop {
            match rx.recv().await {
                Ok(r) if r.id <= seen => continue,
                Ok(r) => m.observe(&r),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            }
        }
    })
}

/// Listen on `addr` and serve metrics.
pub async fn serve_http(d: Daemon, m: Arc<Metrics>, addr: SocketAddr) -> Result<HttpServer, Error> {
    Ok(serve_http_on(
        d,
        m,
        bind_http(addr).await?,
        crate::conn::ConnLimits::default(),
    ))
}

/// Bind the HTTP listener without serving yet (connections wait in the
/// backlog), so a taken address is refused before anything starts.
pub async fn bind_http(addr: SocketAddr) -> Result<tokio::net::TcpListener, Error> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::new(
            crate::ErrorKind::ListenFailed,
            format!("cannot listen for HTTP on {addr}: {e}"),
        )
        .with("address", addr)
        .hint("pick a free address with --http (or daemon.http), or --http '' to turn it off")
    })
}

/// Serve metrics on a listener from [`bind_http`].
pub fn serve_http_on(
    d: Daemon,
    m: Arc<Metrics>,
    l: tokio::net::TcpListener,
    limits: crate::conn::ConnLimits,
) -> HttpServer {
    let addr = l
        .local_addr()
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    let (stop, mut rx) = watch::channel(false);
    let mut app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/metrics.json", get(metrics_json))
        .route("/healthz", get(healthz))
        .with_state(Http { d: d.clone(), m });
    // GraphQL beside the metrics, behind the API token (made at first start).
    match crate::graphql::Auth::open(d.data_dir()) {
        Ok(auth) => {
            app = app.merge(crate::graphql::router(
                d,
                std::sync::Arc::new(auth),
                addr,
                rx.clone(),
            ));
        }
        Err(e) => tracing::error!("GraphQL is off: {e}"),
    }
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let l = crate::conn::Limited::new(l, crate::conn::Admission::new(limits));
        if let Err(e) = axum::serve(l, app).with_graceful_shutdown(shutdown).await {
            tracing::error!("HTTP server failed: {e}");
        }
    });
    HttpServer { addr, stop, task }
}
