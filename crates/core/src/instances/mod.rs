//! Feature instances: from a catalog entry to a running, healthy service.
//!
//! An [`Instance`] is created through the daemon. The call validates what it
//! can without side effects (feature, mode, options, name), stores the record
//! as `queued` and returns at once; a task then runs the [`StepKind`]s in
//! order — install, ports, network, config, process, ready. Each step is a value
//! with an `apply` and an idempotent `undo`. The step reached is stored
//! *before* it runs, so a daemon killed mid-create finds the record at its next
//! boot and undoes every step up to it, newest first; the same happens on any
//! failure, so nothing stays allocated: no port, namespace, file or process.
//!
//! Isolation ([`Isolation`]) decides which requests share an instance: one per
//! feature, per tenant or per session. A request whose key already has a
//! healthy instance gets that instance back from an in-memory index, without
//! touching the store; idle per-session instances are deleted after the
//! `session_ttl`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hangar_fetch::{DownloadOptions, Downloader, Installer, Step as FetchStep};
use hangar_store::{Desired, InstanceRow, Source};
use hangar_supervisor::{
    Check, Health as ProbeHealth, ProbeSpec, ProcessSpec, RestartPolicy, State,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tracing::{info, warn};

use crate::config::InstanceSettings;
use crate::daemon::{blocking, now_ms, Daemon, Want};
use crate::error::{Error, Result};
use hangar_feature::catalog::manifest::HealthKind;
use hangar_feature::catalog::{self, Catalog, Isolation, Manifest};

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Accepted; its create task has not begun.
    Queued,
    /// Its feature is being downloaded and installed.
    Installing,
    /// Ports, network and config are being made.
    Creating,
    /// Its process started; waiting for it to be healthy.
    Starting,
    /// Healthy and serving.
    Running,
    /// Stopped on request; everything it owns is kept.
    Stopped,
    /// A step failed (see the error); everything the steps made was taken back.
    Error,
    /// Being deleted.
    Deleting,
}

impl InstanceState {
    /// Lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            InstanceState::Queued => "queued",
            InstanceState::Installing => "installing",
            InstanceState::Creating => "creating",
            InstanceState::Starting => "starting",
            InstanceState::Running => "running",
            InstanceState::Stopped => "stopped",
            InstanceState::Error => "error",
            InstanceState::Deleting => "deleting",
        }
    }

    /// A create (or start) is under way.
    pub const fn in_progress(self) -> bool {
        matches!(
            self,
            InstanceState::Queued
                | InstanceState::Installing
                | InstanceState::Creating
                | InstanceState::Starting
        )
    }
}

/// The steps from a record to a healthy process, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    /// Download, verify and install the feature (skipped when installed).
    Install,
    /// Allocate the instance's ports.
    Ports,
    /// Make its private network, when the manifest asks for one.
    Network,
    /// Render, write and check its config.
    Config,
    /// Register and start its process.
    Process,
    /// Wait until the process is running and its probe passes.
    Ready,
}

impl StepKind {
    /// Every step, in order.
    pub const ALL: [StepKind; 6] = [
        StepKind::Install,
        StepKind::Ports,
        StepKind::Network,
        StepKind::Config,
        StepKind::Process,
        StepKind::Ready,
    ];

    /// Lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            StepKind::Install => "install",
            StepKind::Ports => "ports",
            StepKind::Network => "network",
            StepKind::Config => "config",
            StepKind::Process => "process",
            StepKind::Ready => "ready",
        }
    }

    const fn state(self) -> InstanceState {
        match self {
            StepKind::Install => InstanceState::Installing,
            StepKind::Ports | StepKind::Network | StepKind::Config => InstanceState::Creating,
            StepKind::Process | StepKind::Ready => InstanceState::Starting,
        }
    }
}

/// Why an instance is in the error state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceError {
    /// The step that failed, if a step did.
    pub step: Option<StepKind>,
    /// Stable code.
    pub code: String,
    /// What went wrong.
    pub message: String,
    /// How to fix it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Where it happened (the checker's output, the path, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<(String, String)>,
}

/// A feature instance, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// Stable id, `i-` and 12 hex digits.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// The feature (catalog id).
    pub feature: String,
    /// The feature's version.
    pub version: String,
    /// Operation mode, if the feature has modes.
    #[serde(default)]
    pub mode: Option<String>,
    /// The options given (before defaults are merged).
    #[serde(default)]
    pub options: Map<String, Value>,
    /// Tenant key, for per-tenant isolation.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Session key, for per-session isolation.
    #[serde(default)]
    pub session: Option<String>,
    /// The feature's isolation level.
    pub isolation: Isolation,
    /// The isolation key: requests with the same key share this instance.
    pub key: String,
    /// Lifecycle state.
    pub state: InstanceState,
    /// Should it run (a stopped instance stays stopped across restarts).
    pub desired: Desired,
    /// The step reached (stored before it runs).
    #[serde(default)]
    pub step: Option<StepKind>,
    /// Steps applied (undone newest first on failure).
    #[serde(default)]
    pub done: Vec<StepKind>,
    /// Why it is in error.
    #[serde(default)]
    pub error: Option<InstanceError>,
    /// Named ports.
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
    /// Address it binds.
    pub bind: String,
    /// Its private network's record, when it has one.
    #[serde(default)]
    pub network: Option<Value>,
    /// Its supervised process's name.
    pub process: String,
    /// Its directory (config, data).
    pub dir: PathBuf,
    /// Its main config file, once written.
    #[serde(default)]
    pub config_file: Option<PathBuf>,
    /// The feature's binary, once installed.
    #[serde(default)]
    pub binary: Option<PathBuf>,
    /// Created (ms since the epoch).
    pub created_ms: i64,
    /// Last changed (ms since the epoch).
    pub updated_ms: i64,
}

impl Instance {
    fn row(&self) -> Result<InstanceRow> {
        Ok(InstanceRow {
            id: self.id.clone(),
            name: self.name.clone(),
            feature: self.feature.clone(),
            state: self.state.as_str().to_string(),
            body: serde_json::to_string(self).map_err(|e| {
                Error::new(
                    crate::ErrorKind::InstanceEncode,
                    format!("cannot encode the instance: {e}"),
                )
            })?,
            updated_ms: self.updated_ms,
        })
    }
}

/// What `create` asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateRequest {
    /// Catalog id.
    pub feature: String,
    /// Name; generated from the feature and key when empty.
    pub name: Option<String>,
    /// Operation mode.
    pub mode: Option<String>,
    /// Options over the mode's defaults.
    pub options: Map<String, Value>,
    /// Tenant key.
    pub tenant: Option<String>,
    /// Session key.
    pub session: Option<String>,
}

/// What `create` answers.
#[derive(Debug, Clone)]
pub struct Created {
    /// The instance (queued when new).
    pub instance: Instance,
    /// An existing instance for the same isolation key was returned.
    pub reused: bool,
}

/// The daemon's instance table and the tools the steps use.
pub(crate) struct Instances {
    records: Mutex<BTreeMap<String, Instance>>,
    /// Isolation key → id, for the launch fast path.
    keys: Mutex<HashMap<String, String>>,
    /// id → last request that used it (per-session reaping).
    used: Mutex<HashMap<String, Instant>>,
    /// id → cancel flag of its running create task.
    flows: Mutex<HashMap<String, tokio::sync::watch::Sender<bool>>>,
    /// id → lock serialising operations on one instance.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    catalogs: Vec<PathBuf>,
    builtin: PathBuf,
    installer: Installer,
    settings: InstanceSettings,
    root: PathBuf,
    net: network::Net,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Instances {
    pub(crate) fn open(
        data_dir: &Path,
        settings: &InstanceSettings,
        net: &hangar_net::NetworkConfig,
        catalogs: &[PathBuf],
    ) -> Result<Instances> {
        let d = Downloader::new(DownloadOptions {
            allow_http: settings.allow_http,
            ..DownloadOptions::default()
        })
        .map_err(Error::from)?;
        let catalogs = if catalogs.is_empty() {
            settings.catalog.clone()
        } else {
            catalogs.to_vec()
        };
        Ok(Instances {
            records: Mutex::new(BTreeMap::new()),
            keys: Mutex::new(HashMap::new()),
            used: Mutex::new(HashMap::new()),
            flows: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            catalogs,
            builtin: data_dir.join("catalog").join("builtin"),
            installer: Installer::new(data_dir.join("features"), d),
            settings: settings.clone(),
            root: data_dir.join("instances"),
            net: network::Net::new(net.clone()),
        })
    }

    fn catalog(&self) -> Result<Catalog> {
        let dirs = if self.catalogs.is_empty() {
            vec![catalog::materialize_builtin(&self.builtin)?]
        } else {
            self.catalogs.clone()
        };
        Catalog::load(&dirs)
    }

    fn manifest(&self, feature: &str) -> Result<(Manifest, PathBuf)> {
        let cat = self.catalog()?;
        let e = cat.get(feature)?;
        Ok((e.manifest.clone(), e.dir.clone()))
    }

    fn op_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(lock(&self.locks).entry(id.to_string()).or_default())
    }

    fn get(&self, id: &str) -> Option<Instance> {
        lock(&self.records).get(id).cloned()
    }

    /// Find by id or name.
    fn find(&self, id_or_name: &str) -> Option<Instance> {
        let recs = lock(&self.records);
        recs.get(id_or_name)
            .or_else(|| recs.values().find(|i| i.name == id_or_name))
            .cloned()
    }
}

fn new_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS; two draws give 64 bits, of which 48
    // are kept. Collisions are checked by the caller.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("i-{:012x}", h.finish() & 0xffff_ffff_ffff)
}

fn valid_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err("a name has 1 to 63 characters".into());
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("a name starts with a letter or digit".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "{c:?} is not allowed; use letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The isolation key: requests with the same key share an instance.
fn isolation_key(
    feature: &str,
    level: Isolation,
    tenant: Option<&str>,
    session: Option<&str>,
) -> String {
    match level {
        Isolation::Shared => feature.to_string(),
        Isolation::PerTenant => format!("{feature}/{}", tenant.unwrap_or("")),
        Isolation::PerSession => format!(
            "{feature}/{}/{}",
            tenant.unwrap_or(""),
            session.unwrap_or("")
        ),
    }
}

/// Port names: the manifest's `port_names`, else `port0`, `port1`, ….
pub(crate) fn port_names(m: &Manifest) -> Vec<String> {
    m.network
        .named_ports()
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

fn not_found(what: &str) -> Error {
    Error::new(
        crate::ErrorKind::InstanceNotFound,
        format!("no instance {what:?}"),
    )
    .with("instance", what)
    .hint("`hangar instance ls` lists the instances")
}

fn cancelled() -> Error {
    Error::new(
        crate::ErrorKind::InstanceCancelled,
        "the instance was deleted while it was being made",
    )
}

/// Replace `{{config}}`, `{{dir}}`, `{{bind}}` and `{{port.NAME}}` in a manifest argument.
fn substitute(arg: &str, inst: &Instance) -> String {
    let mut out = arg.replace("{{bind}}", &inst.bind);
    out = out.replace("{{dir}}", &inst.dir.display().to_string());
    if let Some(c) = &inst.config_file {
        out = out.replace("{{config}}", &c.display().to_string());
    }
    for (n, p) in &inst.ports {
        out = out.replace(&format!("{{{{port.{n}}}}}"), &p.to_string());
    }
    out
}

/// The probe a manifest's `health` describes, against the instance's address.
fn probe(m: &Manifest, inst: &Instance, names: &[String]) -> Option<ProbeSpec> {
    let h = m.health.as_ref()?;
    let port = || {
        let i = h.port_index.unwrap_or(0);
        names.get(i).and_then(|n| inst.ports.get(n)).copied()
    };
    let check = match h.kind {
        HealthKind::Tcp => Check::Tcp {
            address: format!("{}:{}", inst.bind, port()?),
        },
        HealthKind::Http => Check::Http {
            url: format!(
                "http://{}:{}{}",
                inst.bind,
                port()?,
                h.path.as_deref().unwrap_or("/")
            ),
            status: None,
            headers: BTreeMap::new(),
            body_contains: None,
        },
        HealthKind::Exec => Check::Exec {
            command: h.command.iter().map(|a| substitute(a, inst)).collect(),
        },
        HealthKind::Process => Check::Process,
    };
    let mut p = ProbeSpec::new(check);
    if let Some(t) = h.timeout_seconds.filter(|t| *t > 0.0) {
        p.timeout = Duration::from_secs_f64(t);
    }
    if let Some(i) = h.interval_seconds.filter(|t| *t > 0.0) {
        p.interval = Duration::from_secs_f64(i);
    }
    Some(p)
}

impl Daemon {
    pub(crate) fn instances(&self) -> &Instances {
        &self.inner.instances
    }

    /// Store a changed record (memory first, then SQLite) and announce a state change.
    async fn save(&self, mut inst: Instance, from: Option<InstanceState>) -> Result<Instance> {
        inst.updated_ms = now_ms();
        let row = inst.row()?;
        let store = Arc::clone(&self.inner.store);
        blocking(move || store.put_instance(&row).map_err(Error::from)).await?;
        lock(&self.instances().records).insert(inst.id.clone(), inst.clone());
        if from != Some(inst.state) {
            let mut detail = json!({"id": inst.id, "feature": inst.feature});
            if let Some(s) = inst.step {
                detail["step"] = s.as_str().into();
            }
            if let Some(e) = &inst.error {
                detail["error_code"] = e.code.clone().into();
                detail["error"] = e.message.clone().into();
            }
            self.emit(
                &inst.name,
                "instance.state",
                from.map_or("", InstanceState::as_str),
                inst.state.as_str(),
                detail,
            );
        }
        Ok(inst)
    }

    async fn update(&self, id: &str, f: impl FnOnce(&mut Instance)) -> Result<Instance> {
        let mut inst = self.instances().get(id).ok_or_else(|| not_found(id))?;
        let from = inst.state;
        f(&mut inst);
        self.save(inst, Some(from)).await
    }

    /// Create an instance, or return the one its isolation key already has.
    /// Returns once the record is stored as `queued`; a task does the rest and
    /// reports through `instance.state` events.
    pub async fn create_instance(&self, req: CreateRequest) -> Result<Created> {
        let ins = self.instances();
        // The launch fast path: no catalog, no store, one map lookup. A
        // request for an explicit name only reuses an instance of that name.
        if req.name.is_none() {
            if let Some(c) = self.reuse(&req, None) {
                return Ok(c);
            }
        }
        let (manifest, _dir) = self.manifest_of(&req.feature).await?;
        let key = isolation_key(
            &manifest.id,
            manifest.isolation_level,
            req.tenant.as_deref(),
            req.session.as_deref(),
        );
        if let Some(c) = self.reuse(&req, Some(&key)) {
            if req.name.as_deref().is_none_or(|n| n == c.instance.name) {
                return Ok(c);
            }
            return Err(Error::new(
                crate::ErrorKind::InstanceKeyTaken,
                format!(
                    "{} is {}: instance {:?} already serves this key",
                    manifest.id,
                    match manifest.isolation_level {
                        Isolation::Shared => "shared",
                        Isolation::PerTenant => "per-tenant",
                        Isolation::PerSession => "per-session",
                    },
                    c.instance.name
                ),
            )
            .with("key", &key)
            .hint("use that instance, or give another --tenant/--session"));
        }
        let mode = options::validate(&manifest, req.mode.as_deref(), &req.options)?;
        let name = match &req.name {
            Some(n) => n.clone(),
            None => {
                let mut n = manifest.id.clone();
                for k in [&req.tenant, &req.session].into_iter().flatten() {
                    n.push('-');
                    n.push_str(&slug(k));
                }
                n.truncate(63);
                n
            }
        };
        valid_name(&name).map_err(|why| {
            Error::new(
                crate::ErrorKind::InstanceInvalidName,
                format!("invalid instance name {name:?}: {why}"),
            )
            .with("name", &name)
            .hint("pick another name")
        })?;
        let process = format!("{}.{}", manifest.id, name);
        {
            let recs = lock(&ins.records);
            if recs.values().any(|i| i.name == name) {
                return Err(Error::new(
                    crate::ErrorKind::InstanceExists,
                    format!("an instance named {name:?} exists"),
                )
                .with("name", &name)
                .hint("pick another name, or delete the existing instance first"));
            }
        }
        if self.inner.applied.lock().await.contains_key(&process) {
            return Err(Error::new(
                crate::ErrorKind::InstanceExists,
                format!("a process named {process:?} exists"),
            )
            .with("process", &process)
            .hint("pick another instance name"));
        }
        let mut id = new_id();
        while ins.get(&id).is_some() {
            id = new_id();
        }
        let now = now_ms();
        let inst = Instance {
            dir: ins.root.join(&id),
            id: id.clone(),
            name,
            feature: manifest.id.clone(),
            version: manifest.version.clone(),
            mode,
            options: req.options.clone(),
            tenant: req.tenant.clone(),
            session: req.session.clone(),
            isolation: manifest.isolation_level,
            key: key.clone(),
            state: InstanceState::Queued,
            desired: Desired::Running,
            step: None,
            done: Vec::new(),
            error: None,
            ports: BTreeMap::new(),
            bind: "127.0.0.1".into(),
            network: None,
            process,
            config_file: None,
            binary: None,
            created_ms: now,
            updated_ms: now,
        };
        {
            // Claim the key before the first await, so two racing creates for
            // one key make one instance.
            let mut keys = lock(&ins.keys);
            if let Some(other) = keys.get(&key) {
                if let Some(o) = ins.get(other) {
                    return Ok(Created {
                        instance: o,
                        reused: true,
                    });
                }
            }
            keys.insert(key.clone(), id.clone());
        }
        let inst = match self.save(inst, None).await {
            Ok(i) => i,
            Err(e) => {
                lock(&ins.keys).remove(&key);
                return Err(e);
            }
        };
        lock(&ins.used).insert(id.clone(), Instant::now());
        self.spawn_flow(&id);
        Ok(Created {
            instance: inst,
            reused: false,
        })
    }

    /// The instance already serving `req`'s key, if any (`key` when known,
    /// else computed from the request as if the feature were per-session,
    /// which is only a cache probe).
    fn reuse(&self, req: &CreateRequest, key: Option<&str>) -> Option<Created> {
        let ins = self.instances();
        let keys = lock(&ins.keys);
        let id = match key {
            Some(k) => keys.get(k)?.clone(),
            None => {
                // Without the manifest the level is unknown: try each.
                let f = req.feature.as_str();
                [
                    Isolation::PerSession,
                    Isolation::PerTenant,
                    Isolation::Shared,
                ]
                .into_iter()
                .find_map(|l| {
                    keys.get(&isolation_key(
                        f,
                        l,
                        req.tenant.as_deref(),
                        req.session.as_deref(),
                    ))
                })?
                .clone()
            }
        };
        drop(keys);
        let inst = ins.get(&id)?;
        // Only a key computed from the manifest may reuse an instance that is
        // not running (it will be started); the fast path serves healthy ones.
        if key.is_none() && inst.state != InstanceState::Running {
            return None;
        }
        if key.is_none()
            && isolation_key(
                &inst.feature,
                inst.isolation,
                req.tenant.as_deref(),
                req.session.as_deref(),
            ) != inst.key
        {
            return None;
        }
        lock(&ins.used).insert(id, Instant::now());
        Some(Created {
            instance: inst,
            reused: true,
        })
    }

    fn spawn_flow(&self, id: &str) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        lock(&self.instances().flows).insert(id.to_string(), tx);
        let d = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let l = d.instances().op_lock(&id);
            let _g = l.lock().await;
            d.run_flow(&id, rx).await;
            lock(&d.instances().flows).remove(&id);
        });
    }

    /// Run every step not yet done; on failure undo all, newest first.
    async fn run_flow(&self, id: &str, cancel: tokio::sync::watch::Receiver<bool>) {
        let Some(feature) = self.instances().get(id).map(|i| i.feature) else {
            return;
        };
        // One catalog read per flow; the manifest is the same for every step.
        let (manifest, mdir) = match self.manifest_of(&feature).await {
            Ok(m) => m,
            Err(e) => {
                self.fail(id, StepKind::Install, e).await;
                return;
            }
        };
        for step in StepKind::ALL {
            let Some(inst) = self.instances().get(id) else {
                return;
            };
            if inst.done.contains(&step) {
                continue;
            }
            if *cancel.borrow() {
                self.fail(id, step, cancelled()).await;
                return;
            }
            if let Err(e) = self
                .update(id, |i| {
                    i.step = Some(step);
                    i.state = step.state();
                    i.error = None;
                })
                .await
            {
                warn!(
                    instance = id,
                    code = e.code(),
                    "could not record the step: {}",
                    e.message
                );
                self.fail(id, step, e).await;
                return;
            }
            let mut c = cancel.clone();
            let res = tokio::select! {
                r = self.apply_step(id, step, &manifest, &mdir) => r,
                _ = c.wait_for(|v| *v) => Err(cancelled()),
            };
            match res {
                Ok(()) => {
                    if let Err(e) = self.update(id, |i| i.done.push(step)).await {
                        self.fail(id, step, e).await;
                        return;
                    }
                }
                Err(e) => {
                    self.fail(id, step, e).await;
                    return;
                }
            }
        }
        let _ = self
            .update(id, |i| {
                i.state = InstanceState::Running;
                i.step = None;
            })
            .await;
        info!(instance = id, "instance running");
    }

    /// Undo every step (newest first), then record the error.
    async fn fail(&self, id: &str, step: StepKind, e: Error) {
        warn!(
            instance = id,
            step = step.as_str(),
            code = e.code(),
            "instance step failed: {}",
            e.message
        );
        self.undo_all(id).await;
        let err = InstanceError {
            step: Some(step),
            code: e.code().to_string(),
            message: e.message.clone(),
            hint: e.hint.clone(),
            context: e.context.clone(),
        };
        let name = self.instances().get(id).map(|i| i.name);
        let _ = self
            .update(id, |i| {
                i.state = InstanceState::Error;
                i.error = Some(err);
                i.done.clear();
            })
            .await;
        if let Some(n) = name {
            self.emit(
                &n,
                "instance.failed",
                step.as_str(),
                e.code(),
                json!({"id": id, "step": step.as_str(), "error": e.message, "hint": e.hint}),
            );
        }
    }

    /// Undo every step that may have left something, newest first. Each undo
    /// is idempotent and works from the stored record alone, so it also
    /// cleans up after a daemon killed mid-step.
    async fn undo_all(&self, id: &str) {
        for step in StepKind::ALL.iter().rev() {
            if let Err(e) = self.undo_step(id, *step).await {
                warn!(
                    instance = id,
                    step = step.as_str(),
                    code = e.code(),
                    "undo failed: {}",
                    e.message
                );
            }
        }
    }

    /// A feature's manifest and its directory, read (catalog files, schema
    /// validation) on a blocking thread.
    async fn manifest_of(&self, feature: &str) -> Result<(Manifest, PathBuf)> {
        let (d, f) = (self.clone(), feature.to_string());
        blocking(move || d.instances().manifest(&f)).await
    }

    async fn apply_step(
        &self,
        id: &str,
        step: StepKind,
        manifest: &Manifest,
        mdir: &Path,
    ) -> Result<()> {
        let inst = self.instances().get(id).ok_or_else(|| not_found(id))?;
        match step {
            StepKind::Install => self.step_install(&inst, manifest, mdir).await,
            StepKind::Ports => self.step_ports(&inst, manifest).await,
            StepKind::Network => self.step_network(&inst, manifest).await,
            StepKind::Config => self.step_config(&inst, manifest, mdir).await,
            StepKind::Process => self.step_process(&inst, manifest).await,
            StepKind::Ready => self.step_ready(&inst).await,
        }
    }

    async fn undo_step(&self, id: &str, step: StepKind) -> Result<()> {
        let Some(inst) = self.instances().get(id) else {
            return Ok(());
        };
        match step {
            // Installed features are shared by instances and kept; `hangar
            // uninstall` removes them.
            StepKind::Install | StepKind::Ready => Ok(()),
            StepKind::Ports => {
                self.inner.manager.ports().release_all(&inst.id);
                if inst.ports.is_empty() {
                    return Ok(());
                }
                self.update(id, |i| i.ports.clear()).await.map(drop)
            }
            StepKind::Network => self.undo_network(&inst).await,
            StepKind::Config => {
                let dir = inst.dir.clone();
                blocking(move || match std::fs::remove_dir_all(&dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::new(
                        crate::ErrorKind::InstanceCleanup,
                        format!("cannot remove {}: {e}", dir.display()),
                    )),
                    _ => Ok(()),
                })
                .await?;
                if inst.config_file.is_none() {
                    return Ok(());
                }
                self.update(id, |i| i.config_file = None).await.map(drop)
            }
            StepKind::Process => self.unregister(&inst.process).await,
        }
    }

    async fn step_install(&self, inst: &Instance, m: &Manifest, mdir: &Path) -> Result<()> {
        let ins = self.instances();
        let installer = &ins.installer;
        let have = {
            let (d, id, version) = (self.clone(), inst.feature.clone(), inst.version.clone());
            blocking(move || {
                Ok(d.instances()
                    .installer
                    .versions(&id)
                    .unwrap_or_default()
                    .into_iter()
                    .find(|i| i.version == version))
            })
            .await?
        };
        let binary = match have {
            Some(i) => i.binary,
            None => {
                let policy = catalog::InstallPolicy {
                    allow_unverified: ins.settings.allow_unverified,
                    how_to_allow: "set [daemon.instances] allow_unverified = true",
                };
                let req = catalog::plan(installer, m, mdir, &inst.version, policy).await?;
                let name = inst.name.clone();
                let last = Mutex::new(None::<Instant>);
                let d = self.clone();
                let progress = move |s: &FetchStep| {
                    let detail = match s {
                        FetchStep::Download(p) => {
                            // At most one event every 100 ms, and the last.
                            let mut l = lock(&last);
                            if !p.done
                                && l.is_some_and(|t| t.elapsed() < Duration::from_millis(100))
                            {
                                return;
                            }
                            *l = Some(Instant::now());
                            json!({"status": "downloading", "bytes": p.bytes, "total": p.total,
                                   "percent": p.total.filter(|t| *t > 0).map(|t| (p.bytes as f64 * 100.0 / t as f64).min(100.0)),
                                   "bytes_per_sec": p.bytes_per_sec})
                        }
                        FetchStep::Verify => json!({"status": "verifying"}),
                        FetchStep::Extract => json!({"status": "extracting"}),
                        FetchStep::Installed => json!({"status": "completed"}),
                    };
                    d.emit(&name, "install.progress", "", "", detail);
                };
                let done = installer
                    .install(req, &progress)
                    .await
                    .map_err(Error::from)?;
                self.emit(
                    &inst.name,
                    "install.done",
                    "",
                    &done.version,
                    json!({"feature": done.id, "version": done.version, "sha256": done.sha256, "verified": done.verified}),
                );
                done.binary
            }
        };
        self.update(&inst.id, |i| i.binary = Some(binary))
            .await
            .map(drop)
    }

    async fn step_ports(&self, inst: &Instance, m: &Manifest) -> Result<()> {
        let names = port_names(m);
        let reg = self.inner.manager.ports();
        let mut ports = BTreeMap::new();
        if inst.network.is_some() || m.network.requires_vlan {
            // Its own namespace: the manifest's ports are free there.
            for (n, p) in names.iter().zip(&m.network.default_ports) {
                ports.insert(n.clone(), *p);
            }
        } else {
            let Some(range) = reg.ranges().first().map(|r| r.purpose.clone()) else {
                return Err(Error::new(
                    crate::ErrorKind::PortsNoRange,
                    "no port range is configured",
                )
                .hint("set [daemon] port_range"));
            };
            for n in &names {
                match reg.allocate(&range, &inst.id) {
                    Ok(p) => {
                        ports.insert(n.clone(), p);
                    }
                    Err(e) => {
                        reg.release_all(&inst.id);
                        return Err(Error::new(e.kind, e.message.clone())
                            .with("instance", &inst.name)
                            .hint(e.hint));
                    }
                }
            }
        }
        self.update(&inst.id, |i| i.ports = ports).await.map(drop)
    }

    async fn step_config(&self, inst: &Instance, m: &Manifest, mdir: &Path) -> Result<()> {
        let dir = inst.dir.clone();
        let (inst2, m2, mdir2) = (inst.clone(), m.clone(), mdir.to_path_buf());
        let manager = self.inner.manager.clone();
        let file = blocking(move || {
            for sub in ["config", "data"] {
                std::fs::create_dir_all(dir.join(sub)).map_err(|e| {
                    Error::new(
                        crate::ErrorKind::InstanceDir,
                        format!("cannot create {}: {e}", dir.join(sub).display()),
                    )
                })?;
            }
            render::render_and_check(&manager, &inst2, &m2, &mdir2)
        })
        .await?;
        if let Some(u) = &self.instances().settings.user {
            let run_as = hangar_supervisor::RunAs::from_name(u).map_err(Error::from)?;
            let dir = inst.dir.clone();
            blocking(move || give_to(&dir, run_as.uid, run_as.gid)).await?;
        }
        self.update(&inst.id, |i| i.config_file = file)
            .await
            .map(drop)
    }

    async fn step_process(&self, inst: &Instance, m: &Manifest) -> Result<()> {
        let spec = self.instance_spec(inst, m)?;
        let name = spec.name.clone();
        let _change = self.inner.changes.lock().await;
        let mut desired = self.inner.applied.lock().await.clone();
        desired.insert(
            name.clone(),
            Arc::new(Want {
                spec,
                source: Source::Instance,
                desired: Desired::Running,
            }),
        );
        let report = self.apply(desired).await;
        match report
            .errors
            .into_iter()
            .find(|(n, _)| n.is_empty() || *n == name)
        {
            // A crash before it ran is the restart policy's to judge: it backs
            // off and tries again; the ready step sees how that ends.
            Some((_, e))
                if e.is(hangar_supervisor::ErrorKind::ProcessStartFailed)
                    && self
                        .inner
                        .manager
                        .status(&name)
                        .is_ok_and(|s| s.state.is_active()) =>
            {
                Ok(())
            }
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    fn instance_spec(&self, inst: &Instance, m: &Manifest) -> Result<ProcessSpec> {
        let binary = inst.binary.clone().ok_or_else(|| {
            Error::new(
                crate::ErrorKind::InstanceNotInstalled,
                format!("{} is not installed", inst.feature),
            )
        })?;
        let names = port_names(m);
        let mut spec = ProcessSpec::new(&inst.process, binary.display().to_string());
        spec.args = m.binary.args.iter().map(|a| substitute(a, inst)).collect();
        spec.working_dir = Some(inst.dir.join("data"));
        spec.env
            .insert("HANGAR_INSTANCE_ID".into(), inst.id.clone());
        spec.env
            .insert("HANGAR_INSTANCE_NAME".into(), inst.name.clone());
        spec.env.insert("HANGAR_BIND".into(), inst.bind.clone());
        for (n, p) in &inst.ports {
            spec.env.insert(
                format!("HANGAR_PORT_{}", n.to_ascii_uppercase().replace('-', "_")),
                p.to_string(),
            );
        }
        if m.health_port {
            if let Some(p) = m
                .health
                .as_ref()
                .and_then(|h| names.get(h.port_index.unwrap_or(0)))
                .and_then(|n| inst.ports.get(n))
            {
                spec.env.insert("HEALTH_PORT".into(), p.to_string());
            }
        }
        if let Some(c) = &inst.config_file {
            spec.env
                .insert("HANGAR_CONFIG".into(), c.display().to_string());
        }
        let s = &self.instances().settings;
        spec.restart = RestartPolicy {
            initial_interval: Duration::from_millis(500),
            max_interval: Duration::from_secs(30),
            max_retries: s.start_retries,
            ..RestartPolicy::default()
        };
        spec.start_timeout = s.ready_timeout;
        if let Some(p) = probe(m, inst, &names) {
            let mut live = p.clone();
            live.failure_threshold = live.failure_threshold.max(3);
            spec.readiness = Some(p);
            spec.liveness = Some(live);
        }
        limits::apply(&mut spec, m, inst)?;
        if let Some(u) = &s.user {
            let run_as = hangar_supervisor::RunAs::from_name(u).map_err(Error::from)?;
            spec.env.insert("USER".into(), u.clone());
            spec.env
                .insert("HOME".into(), inst.dir.join("data").display().to_string());
            spec.user = Some(run_as);
        }
        // Its own network: the process joins the namespace before exec and
        // binds the instance address there.
        if let Some(path) = inst
            .network
            .as_ref()
            .and_then(|n| n.get("namespace_path"))
            .and_then(Value::as_str)
        {
            spec.netns = Some(PathBuf::from(path));
        }
        Ok(spec)
    }

    async fn step_ready(&self, inst: &Instance) -> Result<()> {
        let deadline = Instant::now() + self.instances().settings.ready_timeout;
        let mut wait = Duration::from_millis(5);
        loop {
            match self.inner.manager.status(&inst.process) {
                Ok(s) if s.state == State::Running && s.health.status != ProbeHealth::Unhealthy => {
                    return Ok(())
                }
                Ok(s) if matches!(s.state, State::Failed | State::Exited) => {
                    let why = s
                        .last_error
                        .map(|e| e.message().to_string())
                        .or_else(|| s.last_exit.map(|x| format!("it exited ({x})")))
                        .unwrap_or_else(|| "it stopped".into());
                    return Err(Error::new(
                        crate::ErrorKind::InstanceStartFailed,
                        format!("{} did not stay up: {why}", inst.process),
                    )
                    .with("restarts", s.restarts)
                    .hint(format!("see `hangar logs {}`", inst.process)));
                }
                Ok(_) => {}
                Err(e) if e.kind() == hangar_supervisor::ErrorKind::ProcessNotFound => {
                    return Err(Error::new(
                        crate::ErrorKind::InstanceStartFailed,
                        format!("{} is gone", inst.process),
                    ))
                }
                Err(e) => return Err(e.into()),
            }
            if Instant::now() > deadline {
                return Err(Error::new(
                    hangar_supervisor::ErrorKind::ReadinessTimeout,
                    format!("{} was not healthy in time", inst.process),
                )
                .hint("raise [daemon.instances] ready_timeout, or check `hangar logs`"));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(100));
        }
    }

    /// Remove a process from the desired set (stopping it); absent is fine.
    async fn unregister(&self, process: &str) -> Result<()> {
        let _change = self.inner.changes.lock().await;
        let mut desired = self.inner.applied.lock().await.clone();
        if desired.remove(process).is_none() {
            return Ok(());
        }
        let report = self.apply(desired).await;
        match report.errors.into_iter().next() {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    /// One instance, by id or name.
    pub fn instance(&self, id_or_name: &str) -> Result<Instance> {
        self.instances()
            .find(id_or_name)
            .ok_or_else(|| not_found(id_or_name))
    }

    /// Every instance, by name.
    pub fn instance_list(&self) -> Vec<Instance> {
        let mut v: Vec<Instance> = lock(&self.instances().records).values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Stop an instance's process; it keeps its ports, network and config.
    pub async fn stop_instance(&self, id_or_name: &str) -> Result<Instance> {
        let inst = self.instance(id_or_name)?;
        let l = self.instances().op_lock(&inst.id);
        let _g = l.lock().await;
        let inst = self.instance(&inst.id)?;
        if inst.state != InstanceState::Running && inst.state != InstanceState::Stopped {
            return Err(Error::new(
                crate::ErrorKind::InstanceNotRunning,
                format!("{} is {}", inst.name, inst.state.as_str()),
            )
            .hint("only a running instance can be stopped; delete it to take it back"));
        }
        self.stop(&inst.process, None).await?;
        self.update(&inst.id, |i| {
            i.state = InstanceState::Stopped;
            i.desired = Desired::Stopped;
        })
        .await
    }

    /// Start a stopped instance (and wait until it is healthy), or make an
    /// instance in error again from the first step.
    pub async fn start_instance(&self, id_or_name: &str) -> Result<Instance> {
        let inst = self.instance(id_or_name)?;
        match inst.state {
            InstanceState::Error => {
                let inst = self
                    .update(&inst.id, |i| {
                        i.state = InstanceState::Queued;
                        i.error = None;
                        i.done.clear();
                        i.desired = Desired::Running;
                    })
                    .await?;
                self.spawn_flow(&inst.id);
                Ok(inst)
            }
            InstanceState::Stopped | InstanceState::Running => {
                let l = self.instances().op_lock(&inst.id);
                let _g = l.lock().await;
                let r = self.start(&inst.process).await?;
                if let Some((_, e)) = r.errors.into_iter().next() {
                    return Err(e);
                }
                self.update(&inst.id, |i| {
                    i.state = InstanceState::Starting;
                    i.desired = Desired::Running;
                })
                .await?;
                let res = self.step_ready(&inst).await;
                self.update(&inst.id, |i| {
                    i.state = if res.is_ok() {
                        InstanceState::Running
                    } else {
                        InstanceState::Stopped
                    };
                })
                .await?;
                res?;
                self.instance(&inst.id)
            }
            s => Err(Error::new(
                crate::ErrorKind::InstanceBusy,
                format!("{} is {}", inst.name, s.as_str()),
            )
            .hint("wait until it is running or in error")),
        }
    }

    /// Restart an instance's process.
    pub async fn restart_instance(&self, id_or_name: &str) -> Result<Instance> {
        let inst = self.instance(id_or_name)?;
        if inst.state == InstanceState::Running {
            let l = self.instances().op_lock(&inst.id);
            let g = l.lock().await;
            self.restart(&inst.process).await?;
            self.step_ready(&inst).await?;
            drop(g);
            return self.instance(&inst.id);
        }
        self.start_instance(&inst.id).await
    }

    /// Delete an instance: stop its process, undo every step, forget it.
    /// A create in progress is cancelled and rolled back first.
    pub async fn delete_instance(&self, id_or_name: &str) -> Result<()> {
        let inst = self.instance(id_or_name)?;
        if let Some(tx) = lock(&self.instances().flows).get(&inst.id) {
            let _ = tx.send(true);
        }
        let l = self.instances().op_lock(&inst.id);
        let _g = l.lock().await;
        let Some(inst) = self.instances().get(&inst.id) else {
            return Ok(());
        };
        self.update(&inst.id, |i| i.state = InstanceState::Deleting)
            .await?;
        self.undo_all(&inst.id).await;
        self.forget(&inst).await
    }

    async fn forget(&self, inst: &Instance) -> Result<()> {
        let store = Arc::clone(&self.inner.store);
        let id = inst.id.clone();
        blocking(move || store.remove_instance(&id).map_err(Error::from)).await?;
        let ins = self.instances();
        lock(&ins.records).remove(&inst.id);
        {
            let mut keys = lock(&ins.keys);
            if keys.get(&inst.key) == Some(&inst.id) {
                keys.remove(&inst.key);
            }
        }
        lock(&ins.used).remove(&inst.id);
        lock(&ins.locks).remove(&inst.id);
        self.emit(
            &inst.name,
            "instance.state",
            InstanceState::Deleting.as_str(),
            "deleted",
            json!({"id": inst.id, "feature": inst.feature}),
        );
        Ok(())
    }

    /// Change an instance's mode and options: validated and rendered first;
    /// the new config replaces the old only once its checker accepts it, then
    /// the process restarts. On any failure the old config stays.
    pub async fn update_instance(
        &self,
        id_or_name: &str,
        mode: Option<String>,
        options: Map<String, Value>,
    ) -> Result<Instance> {
        let inst = self.instance(id_or_name)?;
        let l = self.instances().op_lock(&inst.id);
        let _g = l.lock().await;
        let inst = self.instance(&inst.id)?;
        if !matches!(inst.state, InstanceState::Running | InstanceState::Stopped) {
            return Err(Error::new(
                crate::ErrorKind::InstanceBusy,
                format!("{} is {}", inst.name, inst.state.as_str()),
            )
            .hint("update a running or stopped instance"));
        }
        let (m, mdir) = self.manifest_of(&inst.feature).await?;
        let mode = mode.or(inst.mode.clone());
        let mut opts = inst.options.clone();
        opts.extend(options);
        let mode = options::validate(&m, mode.as_deref(), &opts)?;
        let mut next = inst.clone();
        next.mode = mode;
        next.options = opts;
        let (n2, m2, manager) = (next.clone(), m.clone(), self.inner.manager.clone());
        let file = blocking(move || render::render_and_check(&manager, &n2, &m2, &mdir)).await?;
        next.config_file = file;
        let spec = self.instance_spec(&next, &m)?;
        let next = self.save(next, Some(inst.state)).await?;
        if inst.state == InstanceState::Running {
            let _change = self.inner.changes.lock().await;
            let mut desired = self.inner.applied.lock().await.clone();
            desired.insert(
                spec.name.clone(),
                Arc::new(Want {
                    spec,
                    source: Source::Instance,
                    desired: Desired::Running,
                }),
            );
            let report = self.apply(desired).await;
            if let Some((_, e)) = report.errors.into_iter().next() {
                return Err(e);
            }
            drop(_change);
            self.step_ready(&next).await?;
        }
        self.instance(&next.id)
    }

    /// At boot: load the records; take back instances a killed daemon left
    /// half-made (or half-deleted). Returns the process names that must not be
    /// started.
    pub(crate) async fn recover_instances(&self) -> Vec<String> {
        let store = Arc::clone(&self.inner.store);
        let rows = match blocking(move || store.instances().map_err(Error::from)).await {
            Ok(r) => r,
            Err(e) => {
                warn!(
                    code = e.code(),
                    "cannot read instance records: {}", e.message
                );
                return Vec::new();
            }
        };
        let ins = self.instances();
        let mut dropped = Vec::new();
        let mut interrupted = Vec::new();
        for row in rows {
            let inst: Instance = match serde_json::from_str(&row.body) {
                Ok(i) => i,
                Err(e) => {
                    warn!(instance = %row.id, "instance record unreadable, skipped: {e}");
                    continue;
                }
            };
            if inst.state.in_progress() || inst.state == InstanceState::Deleting {
                dropped.push(inst.process.clone());
                interrupted.push(inst.id.clone());
            } else {
                let reg = self.inner.manager.ports();
                if inst.network.is_none() {
                    for p in inst.ports.values() {
                        if let Err(e) = reg.reserve(*p, &inst.id) {
                            warn!(instance = %inst.name, port = p, "cannot reserve the instance's port: {}", e.message);
                        }
                    }
                }
            }
            lock(&ins.keys).insert(inst.key.clone(), inst.id.clone());
            lock(&ins.used).insert(inst.id.clone(), Instant::now());
            lock(&ins.records).insert(inst.id.clone(), inst);
        }
        self.recover_networks().await;
        // The processes of interrupted instances are not in the desired set
        // yet (boot applies it after this), so undo only removes records.
        for id in interrupted {
            let Some(inst) = ins.get(&id) else { continue };
            let store = Arc::clone(&self.inner.store);
            let p = inst.process.clone();
            let _ = blocking(move || store.remove_process(&p).map_err(Error::from)).await;
            if inst.state == InstanceState::Deleting {
                self.undo_all(&id).await;
                let _ = self.forget(&inst).await;
                continue;
            }
            let step = inst.step.unwrap_or(StepKind::Install);
            self.fail(
                &id,
                step,
                Error::new(
                    crate::ErrorKind::InstanceInterrupted,
                    "hangar stopped while the instance was being made; everything it had was taken back",
                )
                .hint("`hangar instance start` makes it again"),
            )
            .await;
        }
        dropped
    }

    /// Delete per-session instances nobody asked for within the TTL.
    pub(crate) async fn reap_idle_sessions(&self) {
        let ttl = self.instances().settings.session_ttl;
        let idle: Vec<String> = {
            let used = lock(&self.instances().used);
            lock(&self.instances().records)
                .values()
                .filter(|i| i.isolation == Isolation::PerSession && !i.state.in_progress())
                .filter(|i| used.get(&i.id).is_none_or(|t| t.elapsed() > ttl))
                .map(|i| i.id.clone())
                .collect()
        };
        for id in idle {
            info!(instance = %id, "deleting an idle per-session instance");
            if let Err(e) = self.delete_instance(&id).await {
                warn!(instance = %id, code = e.code(), "could not reap: {}", e.message);
            }
        }
    }

    /// The reaper's loop; ends with the daemon.
    pub(crate) async fn reap_loop(self) {
        let ttl = self.instances().settings.session_ttl;
        let every = (ttl / 4).clamp(Duration::from_millis(200), Duration::from_secs(60));
        let mut stop = self.inner.stop.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            self.reap_idle_sessions().await;
        }
    }
}

/// `chown -R` without following links: the instance's files to the user it runs as.
fn give_to(dir: &Path, uid: u32, gid: u32) -> Result<()> {
    let fail = |p: &Path, e: std::io::Error| {
        Error::new(
            crate::ErrorKind::InstanceDir,
            format!("cannot give {} to uid {uid}: {e}", p.display()),
        )
        .hint("run hangar as root to run instances as another user")
    };
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid)).map_err(|e| fail(dir, e))?;
    for e in std::fs::read_dir(dir).map_err(|e| fail(dir, e))? {
        let e = e.map_err(|e| fail(dir, e))?;
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            give_to(&p, uid, gid)?;
        } else {
            std::os::unix::fs::lchown(&p, Some(uid), Some(gid)).map_err(|e| fail(&p, e))?;
        }
    }
    Ok(())
}

mod limits;
mod network;
mod options;
mod render;
