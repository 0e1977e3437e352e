//! [`Manager`]: plugins by name, each behind its layers (see [`crate::layers`]),
//! created by a transport factory registered under the transport's name, with
//! a health checker each, balanced groups (plugins sharing a `type`), metrics,
//! hot reload ([`crate::reload`]) and a graceful shutdown that drains calls in
//! flight within a deadline before closing transports.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use hangar_plugin::{ExecOptions, Manager, ManagerConfig};
//! let cfg = ManagerConfig::from_file("plugins.yaml".as_ref())?;
//! let m = Manager::new();
//! m.load(cfg).await?;
//! let out = m.execute("echo", serde_json::json!({"msg": "hi"})).await?;
//! let by_key = m
//!     .execute_group("kv", serde_json::json!({"get": "k1"}), ExecOptions {
//!         key: Some("k1".into()),
//!         ..ExecOptions::default()
//!     })
//!     .await?;
//! m.shutdown(std::time::Duration::from_secs(10)).await;
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::balance::{Balancer, Strategy};
use crate::breaker::{BreakerState, CircuitBreaker};
use crate::config::{ConfigErrors, ManagerConfig, PluginConfig};
use crate::context::{new_request_id, ExecutionContext};
use crate::error::{Error, ErrorKind};
use crate::factories::TransportFactory;
use crate::guard::{Guard, GuardConfig, Stack};
use crate::health::{HealthChecker, HealthListener, HealthMonitor, HealthStatus, PluginStatus};
use crate::layers::{
    service_fn, AddHeaders, Body, BoxService, Call, Deadline, Failover, Reply, Resolver, Service,
    TransportService,
};
use crate::metrics::Metrics;
use crate::plugin::{decode_raw, encode_raw, Plugin, PluginInfo};
use crate::transport::{BoxFuture, CallContext, CallKind, Transport, TransportKind};

/// How long [`Manager::unregister`] waits for calls in flight.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(30);

/// Options of one call.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Deadline of the whole call, retries and failover included (`None`:
    /// bounded by per-attempt timeouts and retries only).
    pub timeout: Option<Duration>,
    /// Headers sent to the plugin (with the auth and trace headers).
    pub headers: HashMap<String, String>,
    /// Key for consistent hashing (group calls).
    pub key: Option<String>,
    /// Request id (generated when `None`).
    pub request_id: Option<String>,
    /// Overrides the plugin's `retry.max_retries`.
    pub max_retries: Option<u32>,
    /// Cancels the call.
    pub cancel: Option<CancellationToken>,
}

impl From<&ExecutionContext> for ExecOptions {
    fn from(c: &ExecutionContext) -> ExecOptions {
        ExecOptions {
            timeout: c.timeout,
            headers: c.headers.clone(),
            key: c.metadata.get("key").cloned(),
            request_id: (!c.request_id.is_empty()).then(|| c.request_id.clone()),
            max_retries: c.max_retries,
            cancel: Some(c.cancel.clone()),
        }
    }
}

/// Why a load or registration failed; nothing was changed.
#[derive(Debug, Clone)]
pub enum LoadError {
    /// The configuration is invalid (every problem listed).
    Config(ConfigErrors),
    /// A plugin could not be created.
    Plugin(Error),
}

impl LoadError {
    /// The first code.
    pub fn code(&self) -> &'static str {
        match self {
            LoadError::Config(c) => c.0.first().map(|e| e.code).unwrap_or("PLUGIN_1011"),
            LoadError::Plugin(e) => e.code(),
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Config(c) => c.fmt(f),
            LoadError::Plugin(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for LoadError {}

impl From<ConfigErrors> for LoadError {
    fn from(e: ConfigErrors) -> Self {
        LoadError::Config(e)
    }
}

impl From<Error> for LoadError {
    fn from(e: Error) -> Self {
        LoadError::Plugin(e)
    }
}

/// Calls in flight, awaitable to zero.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    n: AtomicUsize,
    zero: Notify,
}

pub(crate) struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.n.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.zero.notify_waiters();
        }
    }
}

impl InFlight {
    pub(crate) fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.n.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(Arc::clone(self))
    }

    pub(crate) fn count(&self) -> usize {
        self.n.load(Ordering::Acquire)
    }

    /// Wait until no call is in flight, at most `timeout`; true when drained.
    pub(crate) async fn drained(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.zero.notified();
                if self.count() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

/// The service at the bottom of every plugin's stack: the transport, with
/// the plugin's credentials added to each call.
pub(crate) type Leaf = AddHeaders<TransportService>;

/// One live plugin.
pub(crate) struct Entry {
    /// `cfg.name`, shared by every call of it.
    pub(crate) name: Arc<str>,
    pub(crate) cfg: PluginConfig,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) service: BoxService,
    /// `service` under the caller's deadline and cancellation, as its own
    /// type: a call through it is part of the caller's future, with no
    /// allocation of its own.
    pub(crate) bounded: Deadline<Arc<Stack<Leaf>>>,
    pub(crate) breaker: Arc<CircuitBreaker>,
    pub(crate) checker: Arc<HealthChecker>,
    pub(crate) inflight: Arc<InFlight>,
}

impl Entry {
    /// Stop its checker, wait for its calls (at most `drain`), close its
    /// transport. True when every call finished.
    pub(crate) async fn retire(&self, drain: Duration) -> bool {
        self.checker.stop();
        let drained = self.inflight.drained(drain).await;
        self.transport.close().await;
        drained
    }
}

/// A plugin as listed by [`Manager::list`].
#[derive(Debug, Clone, Serialize)]
pub struct PluginListing {
    /// Name.
    pub name: String,
    /// Its balancing group (its `type`, or its name).
    pub group: String,
    /// Transport.
    pub transport: String,
    /// Endpoint (or executable).
    pub endpoint: String,
    /// Taking calls.
    pub enabled: bool,
    /// Last health.
    pub health: HealthStatus,
    /// Breaker state.
    #[serde(serialize_with = "ser_state")]
    pub circuit: BreakerState,
    /// Calls in flight.
    pub in_flight: usize,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

fn ser_state<S: Serializer>(s: &BreakerState, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(match s {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half-open",
    })
}

/// What [`Manager::shutdown`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ShutdownReport {
    /// Every call in flight finished within the deadline.
    pub drained: bool,
    /// Calls still in flight when the transports were closed.
    pub abandoned: usize,
    /// Transports closed.
    pub closed: usize,
}

pub(crate) struct Inner {
    factories: RwLock<BTreeMap<String, TransportFactory>>,
    pub(crate) plugins: RwLock<BTreeMap<String, Arc<Entry>>>,
    pub(crate) disabled: RwLock<BTreeMap<String, PluginConfig>>,
    groups: RwLock<HashMap<String, Arc<Balancer>>>,
    strategy: RwLock<Strategy>,
    pub(crate) config: RwLock<ManagerConfig>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) monitor: HealthMonitor,
    all_inflight: Arc<InFlight>,
    closing: AtomicBool,
    pub(crate) reload_lock: tokio::sync::Mutex<()>,
    watcher: std::sync::Mutex<Option<crate::discovery::DiscoveryWatcher>>,
}

/// The plugin manager. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Manager {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("plugins", &self.names())
            .finish_non_exhaustive()
    }
}

impl Default for Manager {
    fn default() -> Self {
        Manager::new()
    }
}

fn r<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn w<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl Manager {
    /// An empty manager with a factory for every [`TransportKind`] and fresh metrics.
    pub fn new() -> Manager {
        Self::with_metrics(Arc::new(Metrics::new()))
    }

    /// As [`Manager::new`], recording into `metrics`.
    pub fn with_metrics(metrics: Arc<Metrics>) -> Manager {
        let m = Manager {
            inner: Arc::new(Inner {
                factories: RwLock::new(BTreeMap::new()),
                plugins: RwLock::new(BTreeMap::new()),
                disabled: RwLock::new(BTreeMap::new()),
                groups: RwLock::new(HashMap::new()),
                strategy: RwLock::new(Strategy::RoundRobin),
                config: RwLock::new(ManagerConfig::default()),
                metrics,
                monitor: HealthMonitor::new(),
                all_inflight: Arc::new(InFlight::default()),
                closing: AtomicBool::new(false),
                reload_lock: tokio::sync::Mutex::new(()),
                watcher: std::sync::Mutex::new(None),
            }),
        };
        for k in TransportKind::ALL {
            m.register_factory(k.as_str(), crate::factories::builtin(k));
        }
        m
    }

    /// Register (or replace) the factory for transport `name`.
    pub fn register_factory(&self, name: &str, f: TransportFactory) {
        w(&self.inner.factories).insert(name.to_string(), f);
    }

    /// Transport names with a factory.
    pub fn transports(&self) -> Vec<String> {
        r(&self.inner.factories).keys().cloned().collect()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The health monitor.
    pub fn monitor(&self) -> &HealthMonitor {
        &self.inner.monitor
    }

    /// The configuration in force (plugins as given, defaults not merged in).
    pub fn config(&self) -> ManagerConfig {
        r(&self.inner.config).clone()
    }

    /// Names of the live (enabled) plugins.
    pub fn names(&self) -> Vec<String> {
        r(&self.inner.plugins).keys().cloned().collect()
    }

    /// Load `cfg`: validate it whole (every error, with codes), create every
    /// enabled plugin's transport, then start serving. On any failure nothing
    /// changes. Plugins already loaded are replaced through a recreate reload.
    /// With `discovery.enabled`, the directories are then scanned (and
    /// watched in `watch_mode`; see [`crate::discovery`]).
    pub async fn load(&self, cfg: ManagerConfig) -> Result<(), LoadError> {
        cfg.validate(Some(&self.transports()))?;
        if !self.names().is_empty() || !r(&self.inner.disabled).is_empty() {
            let opts = crate::reload::ReloadOptions {
                strategy: crate::reload::ReloadStrategy::Recreate,
                rollback_on_failure: false,
                ..crate::reload::ReloadOptions::default()
            };
            self.reload(cfg, opts).await?;
            return Ok(());
        }
        let _g = self.inner.reload_lock.lock().await;
        let mut built = Vec::new();
        for p in cfg.resolved_plugins() {
            if !p.is_enabled() {
                continue;
            }
            match self.build_entry(p).await {
                Ok(e) => built.push(e),
                Err(e) => {
                    for b in built {
                        b.retire(Duration::ZERO).await;
                    }
                    return Err(LoadError::Plugin(e));
                }
            }
        }
        *w(&self.inner.strategy) = cfg.strategy();
        for p in cfg.resolved_plugins() {
            if !p.is_enabled() {
                w(&self.inner.disabled).insert(p.name.clone(), p);
            }
        }
        for e in built {
            self.install(e);
        }
        let discovery = cfg.discovery.clone();
        *w(&self.inner.config) = cfg;
        drop(_g);
        if discovery.enabled {
            self.start_discovery(discovery).await;
        }
        Ok(())
    }

    /// Scan the discovery directories once (and keep watching them in watch
    /// mode, until [`Manager::shutdown`]). Problems are logged: a bad file
    /// or directory never fails the plugins already loaded.
    async fn start_discovery(&self, d: crate::config::DiscoveryConfig) {
        if d.watch_mode {
            match crate::discovery::watch(self.clone(), d).await {
                Ok(wt) => {
                    *self.inner.watcher.lock().unwrap_or_else(|p| p.into_inner()) = Some(wt);
                }
                Err(e) => tracing::warn!(error = %e, "plugin discovery cannot watch"),
            }
        } else {
            match crate::discovery::sync(self, &d).await {
                Ok((scan, _)) => {
                    for p in scan.problems {
                        for e in p.errors {
                            tracing::warn!(file = %p.path.display(), error = %e, "discovered plugin skipped");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "plugin discovery failed"),
            }
        }
    }

    /// Register one plugin (the manager's defaults merged in). `PLUGIN_1010`
    /// when the name is taken.
    pub async fn register(&self, plugin: PluginConfig) -> Result<(), LoadError> {
        let cfg = self.config();
        let p = plugin.with_defaults(&cfg);
        let mut errs = Vec::new();
        p.validate_into("plugin", &mut errs);
        if !self.transports().contains(&p.transport) && !p.transport.is_empty() {
            errs.push(crate::config::ConfigError {
                code: "PLUGIN_1008",
                path: "plugin.transport".into(),
                message: format!("no factory for transport {:?}", p.transport),
                hint: format!("use one of: {}", self.transports().join(", ")),
            });
        }
        if self.exists(&p.name) {
            errs.push(crate::config::ConfigError {
                code: "PLUGIN_1010",
                path: "plugin.name".into(),
                message: format!("a plugin named {:?} is already registered", p.name),
                hint: "unregister it first, or reload".into(),
            });
        }
        if !errs.is_empty() {
            return Err(LoadError::Config(ConfigErrors(errs)));
        }
        let _g = self.inner.reload_lock.lock().await;
        if p.is_enabled() {
            let e = self.build_entry(p).await?;
            self.install(e);
        } else {
            w(&self.inner.disabled).insert(p.name.clone(), p);
        }
        w(&self.inner.config).plugins.push(plugin);
        Ok(())
    }

    /// Register a plugin over a transport built elsewhere (in-process,
    /// tests, a transport without a factory).
    pub async fn register_transport(
        &self,
        plugin: PluginConfig,
        transport: Arc<dyn Transport>,
    ) -> Result<(), LoadError> {
        let p = plugin.with_defaults(&self.config());
        if self.exists(&p.name) {
            return Err(LoadError::Config(ConfigErrors(vec![
                crate::config::ConfigError {
                    code: "PLUGIN_1010",
                    path: "plugin.name".into(),
                    message: format!("a plugin named {:?} is already registered", p.name),
                    hint: "unregister it first".into(),
                },
            ])));
        }
        let e = self.entry_over(p, transport);
        self.install(e);
        w(&self.inner.config).plugins.push(plugin);
        Ok(())
    }

    fn exists(&self, name: &str) -> bool {
        r(&self.inner.plugins).contains_key(name) || r(&self.inner.disabled).contains_key(name)
    }

    /// Remove a plugin: out of rotation at once, its calls in flight finish
    /// (at most [`DEFAULT_DRAIN`]), then its transport is closed.
    pub async fn unregister(&self, name: &str) -> Result<(), Error> {
        let removed = {
            let _g = self.inner.reload_lock.lock().await;
            w(&self.inner.config).plugins.retain(|p| p.name != name);
            if w(&self.inner.disabled).remove(name).is_some() {
                return Ok(());
            }
            self.remove_entry(name)
        };
        match removed {
            Some(e) => {
                e.retire(DEFAULT_DRAIN).await;
                Ok(())
            }
            None => Err(not_found(name)),
        }
    }

    pub(crate) fn factory(&self, transport: &str) -> Option<TransportFactory> {
        r(&self.inner.factories).get(transport).cloned()
    }

    /// Create a plugin's transport and layers (not installed yet).
    pub(crate) async fn build_entry(&self, p: PluginConfig) -> Result<Arc<Entry>, Error> {
        let f = self.factory(&p.transport).ok_or_else(|| {
            Error::new(
                ErrorKind::ConnectionFailed,
                format!("PLUGIN_1008: no factory for transport {:?}", p.transport),
            )
        })?;
        let t = f(&p).await.map_err(|mut e| {
            e.plugin.get_or_insert_with(|| p.name.clone());
            e
        })?;
        Ok(self.entry_over(p, t))
    }

    pub(crate) fn entry_over(&self, p: PluginConfig, transport: Arc<dyn Transport>) -> Arc<Entry> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let group = p.group().to_string();
        let listener: HealthListener = Arc::new(move |name: &str, st: &HealthStatus| {
            if let Some(inner) = weak.upgrade() {
                inner.metrics.health_checked(name, st.status);
                if let Some(b) = r(&inner.groups).get(&group) {
                    b.set_healthy(name, st.status.takes_calls());
                }
            }
        });
        let checker = HealthChecker::new(
            &p.name,
            Arc::clone(&transport),
            p.health_check.resolve(),
            Some(listener),
        );
        let metrics = Arc::clone(&self.inner.metrics);
        let m2 = Arc::clone(&metrics);
        let breaker_listener: crate::layers::BreakerListener =
            Arc::new(move |name: &str, st: BreakerState| {
                m2.breaker(name, st, st == BreakerState::Open)
            });
        // The auth headers go on every call, so that a transport built by a
        // factory of the host's also sends them.
        let auth = p.auth.header_pairs();
        let leaf = AddHeaders::new(auth, TransportService::new(Arc::clone(&transport)));
        let guard = Guard::build(
            GuardConfig {
                breaker: p.circuit_breaker.resolve(),
                rate_limit: p.rate_limit.resolve(),
                retry: p.retry.resolve(),
                timeout: p.connection.resolve().request_timeout,
            },
            leaf,
            Some(metrics),
            Some(breaker_listener),
        );
        Arc::new(Entry {
            name: Arc::from(p.name.as_str()),
            breaker: Arc::clone(guard.breaker()),
            service: guard.service(),
            // One future for the whole stack of a call.
            bounded: Deadline::new(Arc::clone(guard.stack())),
            cfg: p,
            transport,
            checker,
            inflight: Arc::new(InFlight::default()),
        })
    }

    /// Put `e` in service (replacing any entry of its name, which is returned
    /// still open: retire it).
    pub(crate) fn install(&self, e: Arc<Entry>) -> Option<Arc<Entry>> {
        let name = e.cfg.name.clone();
        let group = e.cfg.group().to_string();
        // Counted again if it was removed before (see `Metrics::forget`).
        self.inner.metrics.track(&name);
        let old = w(&self.inner.plugins).insert(name.clone(), Arc::clone(&e));
        w(&self.inner.disabled).remove(&name);
        if let Some(o) = &old {
            if o.cfg.group() != group {
                if let Some(b) = r(&self.inner.groups).get(o.cfg.group()) {
                    b.remove(&name);
                }
            }
        }
        {
            let strategy = *r(&self.inner.strategy);
            let mut groups = w(&self.inner.groups);
            let b = groups
                .entry(group)
                .or_insert_with(|| Arc::new(Balancer::new(strategy)));
            b.add(&name, e.cfg.weight(), e.cfg.priority);
        }
        self.inner
            .monitor
            .add_checker(&name, Arc::clone(&e.checker));
        if tokio::runtime::Handle::try_current().is_ok() {
            e.checker.start();
        }
        old
    }

    /// Take `name` out of service (its entry is returned still open).
    pub(crate) fn remove_entry(&self, name: &str) -> Option<Arc<Entry>> {
        let e = w(&self.inner.plugins).remove(name)?;
        if let Some(b) = r(&self.inner.groups).get(e.cfg.group()) {
            b.remove(name);
        }
        self.inner.monitor.remove_checker(name);
        self.inner.metrics.forget(name);
        Some(e)
    }

    pub(crate) fn entry(&self, name: &str) -> Option<Arc<Entry>> {
        r(&self.inner.plugins).get(name).cloned()
    }

    pub(crate) fn set_disabled(&self, p: PluginConfig) {
        w(&self.inner.disabled).insert(p.name.clone(), p);
    }

    pub(crate) fn forget_disabled(&self, name: &str) {
        w(&self.inner.disabled).remove(name);
    }

    /// New balancers (the strategy changed), members and health kept.
    pub(crate) fn rebuild_groups(&self) {
        let strategy = *r(&self.inner.strategy);
        let mut groups: HashMap<String, Arc<Balancer>> = HashMap::new();
        for e in r(&self.inner.plugins).values() {
            let b = groups
                .entry(e.cfg.group().to_string())
                .or_insert_with(|| Arc::new(Balancer::new(strategy)));
            b.add(&e.cfg.name, e.cfg.weight(), e.cfg.priority);
            b.set_healthy(&e.cfg.name, e.checker.status().status.takes_calls());
        }
        *w(&self.inner.groups) = groups;
    }

    pub(crate) fn set_config(&self, cfg: ManagerConfig) {
        *w(&self.inner.strategy) = cfg.strategy();
        *w(&self.inner.config) = cfg;
    }

    fn lookup(&self, name: &str) -> Result<Arc<Entry>, Error> {
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(Error::new(
                ErrorKind::PluginNotEnabled,
                "the plugin manager is shutting down",
            ));
        }
        if let Some(e) = self.entry(name) {
            return Ok(e);
        }
        if r(&self.inner.disabled).contains_key(name) {
            let mut e = Error::new(ErrorKind::PluginNotEnabled, "the plugin is disabled");
            e.plugin = Some(name.to_string());
            return Err(e);
        }
        Err(not_found(name))
    }

    fn make_call(&self, plugin: Arc<str>, kind: CallKind, data: Body, o: ExecOptions) -> Call {
        Call {
            plugin,
            kind,
            data,
            ctx: CallContext {
                request_id: o.request_id.unwrap_or_else(new_request_id),
                headers: o.headers,
                trace: None,
                timeout: Duration::ZERO,
            },
            key: o.key,
            max_retries: o.max_retries,
            // A timeout too long to add to the clock is none.
            deadline: o
                .timeout
                .and_then(|t| tokio::time::Instant::now().checked_add(t)),
            cancel: o.cancel,
        }
    }

    /// Call plugin `name` with `data` through its whole stack.
    pub async fn execute(&self, name: &str, data: Value) -> Result<Value, Error> {
        self.execute_with(name, data, ExecOptions::default()).await
    }

    /// [`Manager::execute`] with options.
    pub async fn execute_with(
        &self,
        name: &str,
        data: Value,
        opts: ExecOptions,
    ) -> Result<Value, Error> {
        self.call_kind(name, CallKind::Execute, data, opts).await
    }

    /// Send any kind of call (`info`, `ping`, …) to plugin `name` through its stack.
    pub async fn call_kind(
        &self,
        name: &str,
        kind: CallKind,
        data: Value,
        opts: ExecOptions,
    ) -> Result<Value, Error> {
        self.call_body(name, kind, Body::Value(Arc::new(data)), opts)
            .await?
            .into_value()
    }

    /// [`Manager::execute_with`] with the payload and the answer as JSON
    /// text (see [`Transport::call_raw`]): for a caller with its own types,
    /// or one passing bytes on, the stack parses neither.
    pub async fn execute_raw(
        &self,
        name: &str,
        data: &RawValue,
        opts: ExecOptions,
    ) -> Result<Box<RawValue>, Error> {
        let data = Body::Text(Arc::from(data.to_owned()));
        self.call_body(name, CallKind::Execute, data, opts)
            .await?
            .into_text()
    }

    async fn call_body(
        &self,
        name: &str,
        kind: CallKind,
        data: Body,
        opts: ExecOptions,
    ) -> Result<Reply, Error> {
        let e = self.lookup(name)?;
        let _all = self.inner.all_inflight.enter();
        let _one = e.inflight.enter();
        let call = self.make_call(Arc::clone(&e.name), kind, data, opts);
        e.bounded.call(call).await.map_err(|mut err| {
            err.plugin.get_or_insert_with(|| name.to_string());
            err
        })
    }

    /// Call one plugin of `group` (plugins sharing a `type`), chosen by the
    /// load-balancing strategy, failing over to the next when one fails.
    pub async fn execute_group(
        &self,
        group: &str,
        data: Value,
        opts: ExecOptions,
    ) -> Result<Value, Error> {
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(Error::new(
                ErrorKind::PluginNotEnabled,
                "the plugin manager is shutting down",
            ));
        }
        let b = r(&self.inner.groups).get(group).cloned().ok_or_else(|| {
            Error::new(
                ErrorKind::NoAvailablePlugins,
                format!("no plugin of type {group:?}"),
            )
        })?;
        let _all = self.inner.all_inflight.enter();
        let weak = Arc::downgrade(&self.inner);
        let resolve: Resolver = Arc::new(move |name: &str| {
            let inner = weak.upgrade()?;
            let e = r(&inner.plugins).get(name).cloned()?;
            Some(service_fn(move |c: Call| {
                let e = Arc::clone(&e);
                async move {
                    let _one = e.inflight.enter();
                    e.service.call(c).await
                }
            }))
        });
        let call = self.make_call(
            Arc::from(group),
            CallKind::Execute,
            Body::Value(Arc::new(data)),
            opts,
        );
        Deadline::layer(Failover::layer(b, resolve))
            .call(call)
            .await?
            .into_value()
    }

    /// Whether `name` is a group (a `type` with live members).
    pub fn is_group(&self, name: &str) -> bool {
        r(&self.inner.groups).contains_key(name)
    }

    /// The balancer of `group`, for its stats.
    pub fn balancer(&self, group: &str) -> Option<Arc<Balancer>> {
        r(&self.inner.groups).get(group).cloned()
    }

    /// Typed execute.
    pub async fn execute_typed<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        name: &str,
        req: &Req,
        opts: ExecOptions,
    ) -> Result<Resp, Error> {
        typed_call(self, name, encode_raw(req), opts).await
    }

    /// A typed handle on plugin `name` that calls through the manager.
    pub fn plugin<Req, Resp>(&self, name: &str) -> Result<ManagedPlugin<Req, Resp>, Error> {
        self.lookup(name)?;
        Ok(ManagedPlugin {
            manager: self.clone(),
            name: name.to_string(),
            _types: std::marker::PhantomData,
        })
    }

    /// The breaker of `name`.
    pub fn breaker(&self, name: &str) -> Option<Arc<CircuitBreaker>> {
        self.entry(name).map(|e| Arc::clone(&e.breaker))
    }

    /// Every plugin (live and disabled) with its health, breaker and load.
    pub fn list(&self) -> Vec<PluginListing> {
        let mut out: Vec<PluginListing> = r(&self.inner.plugins)
            .values()
            .map(|e| PluginListing {
                name: e.cfg.name.clone(),
                group: e.cfg.group().to_string(),
                transport: e.cfg.transport.clone(),
                endpoint: endpoint_of(&e.cfg),
                enabled: true,
                health: e.checker.status(),
                circuit: e.breaker.state(),
                in_flight: e.inflight.count(),
                labels: e.cfg.labels.clone(),
            })
            .collect();
        for p in r(&self.inner.disabled).values() {
            out.push(PluginListing {
                name: p.name.clone(),
                group: p.group().to_string(),
                transport: p.transport.clone(),
                endpoint: endpoint_of(p),
                enabled: false,
                health: HealthStatus::new(PluginStatus::Offline, "disabled"),
                circuit: BreakerState::Closed,
                in_flight: 0,
                labels: p.labels.clone(),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Every live plugin's last health.
    pub fn health(&self) -> BTreeMap<String, HealthStatus> {
        self.inner.monitor.all_status()
    }

    /// Check every live plugin now.
    pub async fn check_health(&self) -> BTreeMap<String, HealthStatus> {
        self.inner.monitor.check_all().await
    }

    /// The overall status.
    pub fn overall_health(&self) -> HealthStatus {
        self.inner.monitor.overall()
    }

    /// Calls in flight, over all plugins.
    pub fn in_flight(&self) -> usize {
        self.inner.all_inflight.count()
    }

    /// Stop taking calls (`PLUGIN_1202` from now on), wait for calls in
    /// flight at most `deadline`, then close every transport. Idempotent.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        self.inner.closing.store(true, Ordering::Release);
        // Stop watching (the watcher holds a handle on the manager).
        drop(
            self.inner
                .watcher
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        self.inner.monitor.shutdown();
        let drained = self.inner.all_inflight.drained(deadline).await;
        let abandoned = self.inner.all_inflight.count();
        let entries: Vec<Arc<Entry>> = std::mem::take(&mut *w(&self.inner.plugins))
            .into_values()
            .collect();
        w(&self.inner.groups).clear();
        let closed = entries.len();
        for e in entries {
            e.checker.stop();
            e.transport.close().await;
        }
        ShutdownReport {
            drained,
            abandoned,
            closed,
        }
    }
}

fn endpoint_of(p: &PluginConfig) -> String {
    if p.transport_kind() == Some(TransportKind::Exec) {
        p.executable.clone()
    } else {
        p.endpoint.clone()
    }
}

fn not_found(name: &str) -> Error {
    let mut e = Error::new(ErrorKind::PluginNotFound, "no plugin of that name");
    e.plugin = Some(name.to_string());
    e
}

/// A typed call through the stack: the request encoded straight to JSON
/// text, the answer decoded straight from it (no `Value` in between).
async fn typed_call<Resp: DeserializeOwned>(
    m: &Manager,
    name: &str,
    req: Result<Box<RawValue>, Error>,
    opts: ExecOptions,
) -> Result<Resp, Error> {
    let data = Body::Text(Arc::from(req?));
    let out = m
        .call_body(name, CallKind::Execute, data, opts)
        .await?
        .into_text()?;
    decode_raw(&out)
}

/// A typed plugin handle through the manager's stack (seed `GetPlugin`).
pub struct ManagedPlugin<Req, Resp> {
    manager: Manager,
    name: String,
    _types: std::marker::PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> Plugin<Req, Resp> for ManagedPlugin<Req, Resp>
where
    Req: Serialize + Send + 'static,
    Resp: DeserializeOwned + Send + 'static,
{
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: self.name.clone(),
            ..PluginInfo::default()
        }
    }

    fn execute<'a>(
        &'a self,
        ctx: &'a ExecutionContext,
        req: Req,
    ) -> BoxFuture<'a, Result<Resp, Error>> {
        Box::pin(typed_call(
            &self.manager,
            &self.name,
            encode_raw(&req),
            ExecOptions::from(ctx),
        ))
    }

    fn health(&self) -> BoxFuture<'_, HealthStatus> {
        Box::pin(async move {
            match self.manager.entry(&self.name) {
                Some(e) => e.checker.check().await,
                None => HealthStatus::new(PluginStatus::Offline, "not registered"),
            }
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.manager.unregister(&self.name).await;
        })
    }
}
