//! Hot reload: [`diff`] a new configuration against the one in force (added /
//! updated with the changed fields / removed / unchanged) and apply it with a
//! [`ReloadStrategy`]:
//!
//! - **recreate**: the old instance is taken out of service and retired (its
//!   calls in flight finish, at most `drain_timeout`), then the new one is
//!   created; calls in between get `PLUGIN_1201`. With rollback, a new instance
//!   failing its health check is replaced by a fresh one of the old config.
//! - **graceful**: the new instance is created and health-checked beside the
//!   old one, then swapped in; the old one drains (at most `drain_timeout`)
//!   and is closed. New calls never wait. Up to `max_concurrent_reloads`
//!   plugins at once.
//! - **rolling**: graceful, one plugin at a time, each gated on its health
//!   check; the first failure stops the roll (the rest keep their old config
//!   and are reported as skipped).
//!
//! With `rollback_on_failure`, a new instance that fails to start or to pass
//! its health check within `health_check_timeout` is discarded and the old one
//! keeps serving; without it, the new one is installed anyway. Removed plugins
//! drain and close; the configuration in force afterwards is the new one,
//! except for plugins rolled back or skipped, which keep their old entry.
//! One reload runs at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::config::{ManagerConfig, PluginConfig};
use crate::error::{Error, ErrorKind};
use crate::health::PluginStatus;
use crate::manager::{Entry, LoadError, Manager};

/// How updated plugins are replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReloadStrategy {
    /// Remove, then create.
    Recreate,
    /// Create beside, check, swap, drain the old.
    Graceful,
    /// Graceful, one at a time, stopping at the first failure.
    Rolling,
}

/// Reload settings (seed `ReloadOptions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadOptions {
    /// Strategy.
    pub strategy: ReloadStrategy,
    /// How long an old instance's calls in flight may take before it is closed.
    pub drain_timeout: Duration,
    /// Bound on one plugin's whole replacement.
    pub graceful_timeout: Duration,
    /// Plugins replaced at once (graceful, recreate).
    pub max_concurrent_reloads: usize,
    /// How long a new instance has to pass its health check.
    pub health_check_timeout: Duration,
    /// Keep the old instance when the new one fails.
    pub rollback_on_failure: bool,
}

impl Default for ReloadOptions {
    fn default() -> Self {
        ReloadOptions {
            strategy: ReloadStrategy::Graceful,
            drain_timeout: Duration::from_secs(30),
            graceful_timeout: Duration::from_secs(60),
            max_concurrent_reloads: 3,
            health_check_timeout: Duration::from_secs(10),
            rollback_on_failure: true,
        }
    }
}

/// An updated plugin (seed `PluginUpdate`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginUpdate {
    /// Name.
    pub name: String,
    /// Before (defaults merged in).
    pub old_config: PluginConfig,
    /// After (defaults merged in).
    pub new_config: PluginConfig,
    /// Changed fields, e.g. `endpoint`, `retry.max_retries`.
    pub changes: Vec<String>,
}

/// The difference between two configurations (seed `PluginDiff`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PluginDiff {
    /// New plugins (defaults merged in).
    pub added: Vec<PluginConfig>,
    /// Changed plugins.
    pub updated: Vec<PluginUpdate>,
    /// Names gone.
    pub removed: Vec<String>,
    /// Names the same.
    pub unchanged: Vec<String>,
}

fn fields(v: &Value, prefix: &str, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) if prefix.is_empty() || !m.is_empty() => {
            for (k, x) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                // Sections are compared field by field; maps (labels,
                // options) and leaves as a whole.
                let section = prefix.is_empty()
                    && matches!(
                        k.as_str(),
                        "retry"
                            | "circuit_breaker"
                            | "health_check"
                            | "connection"
                            | "rate_limit"
                            | "auth"
                    );
                if section {
                    fields(x, &p, out);
                } else {
                    out.insert(p, x.clone());
                }
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

/// The fields that differ between two plugin configurations.
pub fn changed_fields(a: &PluginConfig, b: &PluginConfig) -> Vec<String> {
    let (mut fa, mut fb) = (BTreeMap::new(), BTreeMap::new());
    fields(&serde_json::to_value(a).unwrap_or_default(), "", &mut fa);
    fields(&serde_json::to_value(b).unwrap_or_default(), "", &mut fb);
    let keys: BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
    keys.into_iter()
        .filter(|k| fa.get(*k) != fb.get(*k))
        .cloned()
        .collect()
}

/// Compare two configurations plugin by plugin, each with its own defaults
/// merged in (so a changed default block updates every plugin that uses it).
pub fn diff(old: &ManagerConfig, new: &ManagerConfig) -> PluginDiff {
    let olds: BTreeMap<String, PluginConfig> = old
        .resolved_plugins()
        .into_iter()
        .map(|p| (p.name.clone(), p))
        .collect();
    let news = new.resolved_plugins();
    let mut d = PluginDiff::default();
    let mut seen = BTreeSet::new();
    for p in news {
        seen.insert(p.name.clone());
        match olds.get(&p.name) {
            None => d.added.push(p),
            Some(o) => {
                let changes = changed_fields(o, &p);
                if changes.is_empty() {
                    d.unchanged.push(p.name.clone());
                } else {
                    d.updated.push(PluginUpdate {
                        name: p.name.clone(),
                        old_config: o.clone(),
                        new_config: p,
                        changes,
                    });
                }
            }
        }
    }
    d.removed = olds.into_keys().filter(|n| !seen.contains(n)).collect();
    d
}

/// One plugin the reload could not apply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReloadFailure {
    /// Plugin.
    pub name: String,
    /// The error's code.
    pub code: String,
    /// What went wrong.
    pub message: String,
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReloadReport {
    /// The difference.
    pub diff: PluginDiff,
    /// Plugins added, updated or removed as asked.
    pub applied: Vec<String>,
    /// New instances discarded (the old one, if any, kept serving).
    pub rolled_back: Vec<ReloadFailure>,
    /// Installed although unhealthy (no rollback).
    pub unhealthy: Vec<ReloadFailure>,
    /// Not attempted (a rolling reload stopped first).
    pub skipped: Vec<String>,
    /// Old instances whose calls did not all finish within the drain timeout.
    pub drain_timed_out: Vec<String>,
}

enum Outcome {
    Applied(String),
    AppliedUndrained(String),
    RolledBack(ReloadFailure),
    Unhealthy(ReloadFailure),
}

fn failure(name: &str, e: &Error) -> ReloadFailure {
    ReloadFailure {
        name: name.to_string(),
        code: e.code().to_string(),
        message: e.message.clone(),
    }
}

/// Check a new instance within `timeout`.
async fn gate(e: &Entry, timeout: Duration) -> Result<(), Error> {
    if !e.cfg.health_check.resolve().enabled {
        return Ok(());
    }
    match tokio::time::timeout(timeout, e.checker.check()).await {
        Err(_) => Err(Error::new(
            ErrorKind::HealthCheckFailed,
            format!("HEALTH_1602: no health answer within {timeout:?}"),
        )),
        Ok(s) if s.status == PluginStatus::Healthy => Ok(()),
        Ok(s) => Err(Error::new(
            ErrorKind::HealthCheckFailed,
            format!("the new instance is {}: {}", s.status, s.message),
        )),
    }
}

async fn replace(m: Manager, old: PluginConfig, new: PluginConfig, o: ReloadOptions) -> Outcome {
    let name = new.name.clone();
    if !new.is_enabled() {
        let undrained = match m.remove_entry(&name) {
            Some(e) => !e.retire(o.drain_timeout).await,
            None => false,
        };
        m.set_disabled(new);
        return if undrained {
            Outcome::AppliedUndrained(name)
        } else {
            Outcome::Applied(name)
        };
    }
    let mut undrained = false;
    if o.strategy == ReloadStrategy::Recreate {
        if let Some(e) = m.remove_entry(&name) {
            undrained = !e.retire(o.drain_timeout).await;
        }
    }
    let built = match tokio::time::timeout(o.graceful_timeout, m.build_entry(new.clone())).await {
        Ok(r) => r,
        Err(_) => Err(Error::new(
            ErrorKind::Timeout,
            format!(
                "the new instance was not created within {:?}",
                o.graceful_timeout
            ),
        )),
    };
    let checked = match built {
        Ok(e) => match gate(&e, o.health_check_timeout).await {
            Ok(()) => Ok(e),
            Err(err) => Err((Some(e), err)),
        },
        Err(err) => Err((None, err)),
    };
    match checked {
        Ok(e) => {
            if let Some(old_e) = m.install(e) {
                undrained |= !old_e.retire(o.drain_timeout).await;
            }
            if undrained {
                Outcome::AppliedUndrained(name)
            } else {
                Outcome::Applied(name)
            }
        }
        Err((Some(e), err)) if !o.rollback_on_failure => {
            if let Some(old_e) = m.install(e) {
                old_e.retire(o.drain_timeout).await;
            }
            Outcome::Unhealthy(failure(&name, &err))
        }
        Err((e, err)) => {
            if let Some(e) = e {
                e.retire(Duration::ZERO).await;
            }
            let f = failure(&name, &err);
            // Recreate took the old one out: bring a fresh one of the old config back.
            if m.entry(&name).is_none() && old.is_enabled() {
                match m.build_entry(old.clone()).await {
                    Ok(e) => {
                        m.install(e);
                    }
                    Err(e2) => tracing::warn!(plugin = %name, error = %e2, "rollback failed"),
                }
            } else if m.entry(&name).is_none() {
                m.set_disabled(old);
            }
            Outcome::RolledBack(f)
        }
    }
}

impl Manager {
    /// Apply `new` by difference (see the module docs). An invalid `new` is
    /// refused whole (every error listed) and nothing changes.
    pub async fn reload(
        &self,
        new: ManagerConfig,
        opts: ReloadOptions,
    ) -> Result<ReloadReport, LoadError> {
        new.validate(Some(&self.transports()))?;
        let _g = self.inner.reload_lock.lock().await;
        let current = self.config();
        let d = diff(&current, &new);
        let mut report = ReloadReport {
            diff: d.clone(),
            ..ReloadReport::default()
        };
        let strategy_changed = current.strategy() != new.strategy();
        self.set_config(ManagerConfig {
            plugins: current.plugins.clone(),
            ..new.clone()
        });
        if strategy_changed {
            self.rebuild_groups();
        }

        // Removed: out of service at once, drained together.
        let mut drains = tokio::task::JoinSet::new();
        for name in &d.removed {
            if let Some(e) = self.remove_entry(name) {
                let (name, t) = (name.clone(), opts.drain_timeout);
                drains.spawn(async move { (name, e.retire(t).await) });
            } else {
                self.forget_disabled(name);
                report.applied.push(name.clone());
            }
        }

        // Added and updated, at most `max_concurrent_reloads` at once
        // (rolling: one, stopping at the first failure).
        let mut work: Vec<(PluginConfig, PluginConfig)> = Vec::new();
        for p in &d.added {
            // "Old" of an added plugin: disabled, so a rollback removes it.
            let old = PluginConfig {
                enabled: Some(false),
                ..p.clone()
            };
            work.push((old, p.clone()));
        }
        for u in &d.updated {
            work.push((u.old_config.clone(), u.new_config.clone()));
        }
        let cap = match opts.strategy {
            ReloadStrategy::Rolling => 1,
            _ => opts.max_concurrent_reloads.max(1),
        };
        let sem = Arc::new(tokio::sync::Semaphore::new(cap));
        let added: BTreeSet<String> = d.added.iter().map(|p| p.name.clone()).collect();
        let mut outcomes = Vec::new();
        if opts.strategy == ReloadStrategy::Rolling {
            let mut stopped = false;
            for (old, new) in work {
                if stopped {
                    report.skipped.push(new.name.clone());
                    continue;
                }
                let o = replace(self.clone(), old, new, opts).await;
                stopped = matches!(o, Outcome::RolledBack(_) | Outcome::Unhealthy(_));
                outcomes.push(o);
            }
        } else {
            let mut set = tokio::task::JoinSet::new();
            for (old, new) in work {
                let (m, sem) = (self.clone(), Arc::clone(&sem));
                set.spawn(async move {
                    let _permit = sem.acquire_owned().await;
                    replace(m, old, new, opts).await
                });
            }
            while let Some(r) = set.join_next().await {
                if let Ok(o) = r {
                    outcomes.push(o);
                }
            }
        }
        for o in outcomes {
            match o {
                Outcome::Applied(n) => report.applied.push(n),
                Outcome::AppliedUndrained(n) => {
                    report.drain_timed_out.push(n.clone());
                    report.applied.push(n);
                }
                Outcome::RolledBack(f) => report.rolled_back.push(f),
                Outcome::Unhealthy(f) => {
                    report.applied.push(f.name.clone());
                    report.unhealthy.push(f);
                }
            }
        }
        while let Some(r) = drains.join_next().await {
            if let Ok((name, drained)) = r {
                if !drained {
                    report.drain_timed_out.push(name.clone());
                }
                report.applied.push(name);
            }
        }

        // The configuration in force: the new one, but rolled-back and
        // skipped plugins keep their old entry (or stay absent if new).
        let kept: BTreeSet<&str> = report
            .rolled_back
            .iter()
            .map(|f| f.name.as_str())
            .chain(report.skipped.iter().map(String::as_str))
            .collect();
        let mut plugins = Vec::new();
        for p in &new.plugins {
            if !kept.contains(p.name.as_str()) {
                plugins.push(p.clone());
            } else if !added.contains(&p.name) {
                if let Some(o) = current.plugins.iter().find(|o| o.name == p.name) {
                    plugins.push(o.clone());
                }
            } else {
                self.forget_disabled(&p.name);
            }
        }
        self.set_config(ManagerConfig { plugins, ..new });
        report.applied.sort();
        report.drain_timed_out.sort();
        Ok(report)
    }
}
