//! Health: a [`HealthChecker`] per plugin asks the transport for `health`
//! every `interval` (each check bounded by `timeout`) and counts failures in a
//! row; a [`HealthMonitor`] aggregates them into an overall status.
//!
//! Status of one plugin after a check:
//!
//! - answered healthy → **healthy** (the failure count resets);
//! - failed, fewer than `failure_limit` failures in a row → **unhealthy** when
//!   the plugin itself said so, **degraded** when it could not be reached or
//!   was late;
//! - `failure_limit` failures in a row → **offline**.
//!
//! Unhealthy and offline plugins are out of load-balancing rotation (the
//! manager wires each checker's listener to [`crate::Balancer::set_healthy`]).
//! Overall: **unknown** with nothing checked yet, **offline** when every plugin
//! is, **unhealthy** when any is unhealthy or offline, **degraded** when any is
//! degraded, else **healthy**.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;

use crate::config::HealthCheckSettings;
use crate::error::ErrorKind;
use crate::transport::{CallContext, CallKind, Transport};

/// A plugin's (or the system's) operational status (seed `PluginStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum PluginStatus {
    /// Not determined yet.
    Unknown,
    /// Fully operational.
    Healthy,
    /// Operational, but its last check failed.
    Degraded,
    /// The plugin reports it is not well.
    Unhealthy,
    /// Not responding: out of rotation.
    Offline,
}

impl PluginStatus {
    /// Lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            PluginStatus::Unknown => "unknown",
            PluginStatus::Healthy => "healthy",
            PluginStatus::Degraded => "degraded",
            PluginStatus::Unhealthy => "unhealthy",
            PluginStatus::Offline => "offline",
        }
    }

    /// Whether a balancer should still send calls.
    pub const fn takes_calls(self) -> bool {
        matches!(
            self,
            PluginStatus::Unknown | PluginStatus::Healthy | PluginStatus::Degraded
        )
    }
}

impl std::fmt::Display for PluginStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Health of one plugin (seed `HealthStatus`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthStatus {
    /// Status.
    pub status: PluginStatus,
    /// Why, when not healthy.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When it was determined (`None`: never checked).
    #[serde(serialize_with = "ser_time")]
    pub last_check: Option<SystemTime>,
    /// How long the check took.
    #[serde(serialize_with = "ser_dur")]
    pub response_time: Duration,
    /// Extra details (error code, failures in a row).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

fn ser_time<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string()),
        None => s.serialize_none(),
    }
}

fn ser_dur<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

impl HealthStatus {
    /// Never checked.
    pub fn unknown() -> HealthStatus {
        HealthStatus {
            status: PluginStatus::Unknown,
            message: String::new(),
            last_check: None,
            response_time: Duration::ZERO,
            metadata: BTreeMap::new(),
        }
    }

    /// A status with a message, checked now.
    pub fn new(status: PluginStatus, message: impl Into<String>) -> HealthStatus {
        HealthStatus {
            status,
            message: message.into(),
            last_check: Some(SystemTime::now()),
            ..HealthStatus::unknown()
        }
    }
}

/// Called after every check with the plugin's name and new status.
pub type HealthListener = Arc<dyn Fn(&str, &HealthStatus) + Send + Sync>;

/// Periodic health checks of one plugin (seed `HealthChecker`).
pub struct HealthChecker {
    name: String,
    transport: Arc<dyn Transport>,
    settings: HealthCheckSettings,
    status: Mutex<HealthStatus>,
    failures: AtomicU32,
    listener: Option<HealthListener>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for HealthChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthChecker")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .field("status", &self.status())
            .finish()
    }
}

impl HealthChecker {
    /// A checker (not started) of `transport` under `name`.
    pub fn new(
        name: &str,
        transport: Arc<dyn Transport>,
        settings: HealthCheckSettings,
        listener: Option<HealthListener>,
    ) -> Arc<HealthChecker> {
        Arc::new(HealthChecker {
            name: name.to_string(),
            transport,
            settings,
            status: Mutex::new(HealthStatus::unknown()),
            failures: AtomicU32::new(0),
            listener,
            task: Mutex::new(None),
        })
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The last status.
    pub fn status(&self) -> HealthStatus {
        self.status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Failures in a row so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    /// One check now (also run by the periodic task).
    pub async fn check(&self) -> HealthStatus {
        let started = tokio::time::Instant::now();
        let ctx = CallContext {
            request_id: format!("health-{}", crate::context::new_request_id()),
            headers: HashMap::new(),
            trace: None,
            timeout: self.settings.timeout,
        };
        let res = tokio::time::timeout(
            self.settings.timeout,
            self.transport.call(
                if self.settings.ping {
                    CallKind::Ping
                } else {
                    CallKind::Health
                },
                Value::Null,
                ctx,
            ),
        )
        .await;
        let took = started.elapsed();
        let outcome: Result<(), (PluginStatus, String, &'static str)> = match res {
            Err(_) => Err((
                PluginStatus::Degraded,
                format!("no health answer within {:?}", self.settings.timeout),
                "HEALTH_1602",
            )),
            Ok(Ok(v)) if v.get("healthy") == Some(&Value::Bool(false)) => Err((
                PluginStatus::Unhealthy,
                "the plugin reports it is unhealthy".into(),
                "HEALTH_1601",
            )),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e))
                if matches!(
                    e.kind,
                    ErrorKind::ExecutionFailed | ErrorKind::HealthCheckFailed
                ) =>
            {
                Err((PluginStatus::Unhealthy, e.message, "HEALTH_1601"))
            }
            Ok(Err(e)) if e.kind == ErrorKind::Timeout => {
                Err((PluginStatus::Degraded, e.message, "HEALTH_1602"))
            }
            Ok(Err(e)) => Err((PluginStatus::Degraded, e.message, "HEALTH_1601")),
        };
        let mut st = match outcome {
            Ok(()) => {
                self.failures.store(0, Ordering::Relaxed);
                HealthStatus::new(PluginStatus::Healthy, "")
            }
            Err((status, msg, code)) => {
                let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                let status = if n >= self.settings.failure_limit.max(1) {
                    PluginStatus::Offline
                } else {
                    status
                };
                let mut s = HealthStatus::new(status, msg);
                s.metadata.insert("code".into(), code.into());
                s.metadata
                    .insert("consecutive_failures".into(), n.to_string());
                s
            }
        };
        st.response_time = took;
        if let Ok(mut g) = self.status.lock() {
            *g = st.clone();
        }
        if let Some(l) = &self.listener {
            l(&self.name, &st);
        }
        st
    }

    /// Check every `interval` until stopped: the first check at once when
    /// the plugin was never checked, else after `interval`. Idempotent; a
    /// no-op when health checks are disabled.
    pub fn start(self: &Arc<Self>) {
        if !self.settings.enabled {
            return;
        }
        let Ok(mut task) = self.task.lock() else {
            return;
        };
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let me = Arc::downgrade(self);
        let never_checked = self.status().last_check.is_none();
        let interval = self.settings.interval.max(Duration::from_millis(1));
        *task = Some(tokio::spawn(async move {
            let start = tokio::time::Instant::now()
                + if never_checked {
                    Duration::ZERO
                } else {
                    interval
                };
            let mut tick = tokio::time::interval_at(start, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(c) = me.upgrade() else { return };
                c.check().await;
            }
        }));
    }

    /// Stop the periodic checks. Idempotent.
    pub fn stop(&self) {
        if let Ok(mut t) = self.task.lock() {
            if let Some(t) = t.take() {
                t.abort();
            }
        }
    }

    /// Whether the periodic checks run.
    pub fn is_running(&self) -> bool {
        self.task
            .lock()
            .map(|t| t.as_ref().is_some_and(|t| !t.is_finished()))
            .unwrap_or(false)
    }
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Health of many plugins (seed `HealthMonitor`).
#[derive(Debug, Default)]
pub struct HealthMonitor {
    checkers: RwLock<BTreeMap<String, Arc<HealthChecker>>>,
    manual: RwLock<BTreeMap<String, HealthStatus>>,
}

impl HealthMonitor {
    /// Empty.
    pub fn new() -> HealthMonitor {
        HealthMonitor::default()
    }

    /// Track a checker under `name` (replacing any).
    pub fn add_checker(&self, name: &str, c: Arc<HealthChecker>) {
        if let Ok(mut m) = self.checkers.write() {
            if let Some(old) = m.insert(name.to_string(), c) {
                old.stop();
            }
        }
    }

    /// Stop and forget `name`'s checker.
    pub fn remove_checker(&self, name: &str) {
        if let Ok(mut m) = self.checkers.write() {
            if let Some(old) = m.remove(name) {
                old.stop();
            }
        }
        if let Ok(mut m) = self.manual.write() {
            m.remove(name);
        }
    }

    /// Set a component's status by hand (one without a checker).
    pub fn update_status(&self, name: &str, status: HealthStatus) {
        if let Ok(mut m) = self.manual.write() {
            m.insert(name.to_string(), status);
        }
    }

    /// One component's status.
    pub fn status(&self, name: &str) -> Option<HealthStatus> {
        if let Some(c) = self.checkers.read().ok()?.get(name) {
            return Some(c.status());
        }
        self.manual.read().ok()?.get(name).cloned()
    }

    /// Every component's status, by name.
    pub fn all_status(&self) -> BTreeMap<String, HealthStatus> {
        let mut out: BTreeMap<String, HealthStatus> =
            self.manual.read().map(|m| m.clone()).unwrap_or_default();
        if let Ok(m) = self.checkers.read() {
            for (k, c) in m.iter() {
                out.insert(k.clone(), c.status());
            }
        }
        out
    }

    /// The checker of `name`.
    pub fn checker(&self, name: &str) -> Option<Arc<HealthChecker>> {
        self.checkers.read().ok()?.get(name).cloned()
    }

    /// Check every component now.
    pub async fn check_all(&self) -> BTreeMap<String, HealthStatus> {
        let cs: Vec<Arc<HealthChecker>> = self
            .checkers
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        let mut set = tokio::task::JoinSet::new();
        for c in cs {
            set.spawn(async move { c.check().await });
        }
        while set.join_next().await.is_some() {}
        self.all_status()
    }

    /// The aggregate (see the module docs), with a message naming the
    /// components that are not healthy.
    pub fn overall(&self) -> HealthStatus {
        overall_of(&self.all_status())
    }

    /// Stop every checker.
    pub fn shutdown(&self) {
        if let Ok(m) = self.checkers.read() {
            for c in m.values() {
                c.stop();
            }
        }
    }
}

/// The aggregate of many statuses (see the module docs).
pub fn overall_of(all: &BTreeMap<String, HealthStatus>) -> HealthStatus {
    if all.is_empty() || all.values().all(|s| s.status == PluginStatus::Unknown) {
        return HealthStatus::new(PluginStatus::Unknown, "nothing checked yet");
    }
    let bad: Vec<String> = all
        .iter()
        .filter(|(_, s)| s.status != PluginStatus::Healthy && s.status != PluginStatus::Unknown)
        .map(|(k, s)| format!("{k} {}", s.status))
        .collect();
    let has = |st: PluginStatus| all.values().any(|s| s.status == st);
    let status = if all.values().all(|s| s.status == PluginStatus::Offline) {
        PluginStatus::Offline
    } else if has(PluginStatus::Offline) || has(PluginStatus::Unhealthy) {
        PluginStatus::Unhealthy
    } else if has(PluginStatus::Degraded) {
        PluginStatus::Degraded
    } else {
        PluginStatus::Healthy
    };
    HealthStatus::new(status, bad.join(", "))
}
