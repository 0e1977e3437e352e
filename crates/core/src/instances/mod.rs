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
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hangar_fetch::{DownloadOptions, Downloader, Installer};
use hangar_store::{Desired, Source, Store};
use hangar_supervisor::Manager;
use serde_json::{json, Map, Value};
use tracing::{info, warn};

use crate::config::InstanceSettings;
use crate::desired::{Action, DesiredSet, Want};
use crate::error::{Error, Result};
use crate::events::EventSink;
use crate::util::{blocking, lock, now_ms};
use hangar_feature::catalog::{self, Catalog, Isolation, Manifest};

mod export;
mod features;
mod limits;
mod network;
mod options;
mod record;
mod render;
mod steps;
mod watch;

pub use export::{Export, ExportFormat};
pub use features::FeatureInfo;
pub use record::{
    CreateRequest, Created, Instance, InstanceError, InstanceState, StepKind, REDACTED,
};

/// The instance table: every map, behind one lock so they cannot disagree.
/// Never held across an await.
#[derive(Default)]
struct Table {
    /// id → record.
    records: BTreeMap<String, Instance>,
    /// Isolation key → id, for the launch fast path.
    keys: HashMap<String, String>,
    /// id → last request that used it (per-session reaping).
    used: HashMap<String, Instant>,
    /// id → cancel flag of its running create task.
    flows: HashMap<String, tokio::sync::watch::Sender<bool>>,
    /// id → lock serialising operations on one instance.
    locks: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

impl Table {
    /// Find by id or name.
    fn find(&self, id_or_name: &str) -> Option<&Instance> {
        self.records
            .get(id_or_name)
            .or_else(|| self.records.values().find(|i| i.name == id_or_name))
    }

    /// Forget everything about an instance.
    fn forget(&mut self, inst: &Instance) {
        self.records.remove(&inst.id);
        if self.keys.get(&inst.key) == Some(&inst.id) {
            self.keys.remove(&inst.key);
        }
        self.used.remove(&inst.id);
        self.locks.remove(&inst.id);
    }
}

/// What the daemon hands the instances: the parts of it they use.
pub(crate) struct InstancesParts {
    /// The desired set (an instance's process is one of its entries).
    pub(crate) desired: DesiredSet,
    /// Into the daemon's persist task.
    pub(crate) events: EventSink,
    /// The store (instance records).
    pub(crate) store: Arc<Store>,
    /// The supervisor (ports, status, checkers).
    pub(crate) manager: Manager,
}

/// The feature instances: their table, and the tools the steps use. Cheap
/// to clone: every clone is the same table.
#[derive(Clone)]
pub(crate) struct Instances {
    s: Arc<Shared>,
}

struct Shared {
    desired: DesiredSet,
    events: EventSink,
    store: Arc<Store>,
    manager: Manager,
    table: Mutex<Table>,
    catalogs: Vec<PathBuf>,
    builtin: PathBuf,
    installer: Installer,
    settings: InstanceSettings,
    root: PathBuf,
    net: network::Net,
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

impl Instances {
    pub(crate) fn open(
        parts: InstancesParts,
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
            s: Arc::new(Shared {
                desired: parts.desired,
                events: parts.events,
                store: parts.store,
                manager: parts.manager,
                table: Mutex::new(Table::default()),
                catalogs,
                builtin: data_dir.join("catalog").join("builtin"),
                installer: Installer::new(data_dir.join("features"), d),
                settings: settings.clone(),
                root: data_dir.join("instances"),
                net: network::Net::new(net.clone()),
            }),
        })
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        lock(&self.s.table)
    }

    fn catalog(&self) -> Result<Catalog> {
        let dirs = if self.s.catalogs.is_empty() {
            vec![catalog::materialize_builtin(&self.s.builtin)?]
        } else {
            self.s.catalogs.clone()
        };
        Catalog::load(&dirs)
    }

    fn manifest(&self, feature: &str) -> Result<(Manifest, PathBuf)> {
        let cat = self.catalog()?;
        let e = cat.get(feature)?;
        Ok((e.manifest.clone(), e.dir.clone()))
    }

    fn op_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(self.table().locks.entry(id.to_string()).or_default())
    }

    fn get(&self, id: &str) -> Option<Instance> {
        self.table().records.get(id).cloned()
    }

    /// Find by id or name.
    fn find(&self, id_or_name: &str) -> Option<Instance> {
        self.table().find(id_or_name).cloned()
    }

    /// Store a changed record (memory first, then SQLite) and announce a state change.
    async fn save(&self, mut inst: Instance, from: Option<InstanceState>) -> Result<Instance> {
        inst.updated_ms = now_ms();
        let row = inst.row()?;
        let store = Arc::clone(&self.s.store);
        blocking(move || store.put_instance(&row).map_err(Error::from)).await?;
        self.table().records.insert(inst.id.clone(), inst.clone());
        if from != Some(inst.state) {
            let mut detail = json!({"id": inst.id, "feature": inst.feature});
            if let Some(s) = inst.step {
                detail["step"] = s.as_str().into();
            }
            if let Some(e) = &inst.error {
                detail["error_code"] = e.code.clone().into();
                detail["error"] = e.message.clone().into();
            }
            self.s.events.emit(
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
        let mut inst = self.get(id).ok_or_else(|| not_found(id))?;
        let from = inst.state;
        f(&mut inst);
        self.save(inst, Some(from)).await
    }

    /// Create an instance, or return the one its isolation key already has.
    /// Returns once the record is stored as `queued`; a task does the rest and
    /// reports through `instance.state` events.
    /// What `create` would refuse before it stores anything: the feature,
    /// the mode, the options and the name. Changes nothing (the fleet checks
    /// a request here before it writes it for some node to create).
    pub(crate) async fn check(&self, req: &CreateRequest) -> Result<()> {
        let (manifest, _dir) = self.manifest_of(&req.feature).await?;
        options::validate(&manifest, req.mode.as_deref(), &req.options)?;
        if let Some(name) = &req.name {
            valid_name(name).map_err(|why| {
                Error::new(
                    crate::ErrorKind::InstanceInvalidName,
                    format!("invalid instance name {name:?}: {why}"),
                )
                .with("name", name)
                .hint("pick another name")
            })?;
        }
        Ok(())
    }

    pub(crate) async fn create(&self, req: CreateRequest) -> Result<Created> {
        let ins = self;
        // The launch fast path: no catalog, no store, one map lookup. A
        // request for an explicit name only reuses an instance of that name.
        if req.name.is_none() {
            if let Some(c) = self.reuse(&req, None) {
                return same_ask(&req, c);
            }
        }
        let (manifest, _dir) = self.manifest_of(&req.feature).await?;
        let key = isolation_key(
            &manifest.id,
            manifest.isolation_level,
            req.tenant.as_deref(),
            req.session.as_deref(),
        );
        // The isolation level governs launches (no name: "the instance that
        // serves this key"). A named create asks for that instance: the one of
        // that name, or a new one, whatever serves the key.
        if let Some(c) = self.reuse(&req, Some(&key)) {
            if req.name.as_deref().is_none_or(|n| n == c.instance.name) {
                return same_ask(&req, c);
            }
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
            let t = ins.table();
            if t.records.values().any(|i| i.name == name) {
                return Err(Error::new(
                    crate::ErrorKind::InstanceExists,
                    format!("an instance named {name:?} exists"),
                )
                .with("name", &name)
                .hint("pick another name, or delete the existing instance first"));
            }
        }
        if self.s.desired.snapshot().contains_key(&process) {
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
            dir: ins.s.root.join(&id),
            id: id.clone(),
            name,
            feature: manifest.id.clone(),
            version: manifest.version.clone(),
            mode,
            options: req.options.clone(),
            secret_options: Some(hangar_feature::configgen::secret_keys(&manifest)),
            tenant: req.tenant.clone(),
            session: req.session.clone(),
            isolation: manifest.isolation_level,
            fleet: req.fleet,
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
            config_pending: false,
            binary: None,
            created_ms: now,
            updated_ms: now,
        };
        let claimed = {
            // Claim the key before the first await, so two racing launches for
            // one key make one instance. A named instance serves the key only
            // when no other does.
            let mut t = ins.table();
            match t.keys.get(&key).and_then(|other| t.records.get(other)) {
                Some(o) if req.name.is_none() => {
                    return Ok(Created {
                        instance: o.clone(),
                        reused: true,
                    });
                }
                Some(_) => false,
                None => {
                    t.keys.insert(key.clone(), id.clone());
                    true
                }
            }
        };
        let inst = match self.save(inst, None).await {
            Ok(i) => i,
            Err(e) => {
                if claimed {
                    ins.table().keys.remove(&key);
                }
                return Err(e);
            }
        };
        hangar_base::crash_point!("instance.create.queued");
        ins.table().used.insert(id.clone(), Instant::now());
        self.spawn_flow(&id);
        Ok(Created {
            instance: inst,
            reused: false,
        })
    }

    /// The instance already serving `req`'s key, if any (`key` when known,
    /// else computed from the request as if the feature were per-session,
    /// which is only a cache probe).
    /// The instance serving `req`'s key (or name), if there is one.
    fn reuse(&self, req: &CreateRequest, key: Option<&str>) -> Option<Created> {
        let mut t = self.table();
        let keys = &t.keys;
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
        let inst = t.records.get(&id)?.clone();
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
        t.used.insert(id, Instant::now());
        Some(Created {
            instance: inst,
            reused: true,
        })
    }

    fn spawn_flow(&self, id: &str) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        self.table().flows.insert(id.to_string(), tx);
        let d = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let l = d.op_lock(&id);
            let _g = l.lock().await;
            d.run_flow(&id, rx).await;
            d.table().flows.remove(&id);
        });
    }

    /// Run every step not yet done; on failure undo all, newest first.
    async fn run_flow(&self, id: &str, cancel: tokio::sync::watch::Receiver<bool>) {
        let Some(feature) = self.get(id).map(|i| i.feature) else {
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
            let Some(inst) = self.get(id) else {
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
            hangar_base::crash_point!(&format!("instance.step.{}.stored", step.as_str()));
            let mut c = cancel.clone();
            let res = tokio::select! {
                r = steps::apply(self, id, step, &manifest, &mdir) => r,
                _ = c.wait_for(|v| *v) => Err(cancelled()),
            };
            match res {
                Ok(()) => {
                    if let Err(e) = self.update(id, |i| i.done.push(step)).await {
                        self.fail(id, step, e).await;
                        return;
                    }
                    hangar_base::crash_point!(&format!("instance.step.{}.done", step.as_str()));
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
        hangar_base::crash_point!("instance.create.running");
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
        let name = self.get(id).map(|i| i.name);
        let _ = self
            .update(id, |i| {
                i.state = InstanceState::Error;
                i.error = Some(err);
                i.done.clear();
            })
            .await;
        if let Some(n) = name {
            self.s.events.emit(
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
            if let Err(e) = steps::undo(self, id, *step).await {
                warn!(
                    instance = id,
                    step = step.as_str(),
                    code = e.code(),
                    "undo failed: {}",
                    e.message
                );
            }
            hangar_base::crash_point!(&format!("instance.undo.{}.done", step.as_str()));
        }
    }

    /// A feature's manifest and its directory, read (catalog files, schema
    /// validation) on a blocking thread.
    async fn manifest_of(&self, feature: &str) -> Result<(Manifest, PathBuf)> {
        let (d, f) = (self.clone(), feature.to_string());
        blocking(move || d.manifest(&f)).await
    }

    /// One instance, by id or name.
    pub(crate) fn instance(&self, id_or_name: &str) -> Result<Instance> {
        self.find(id_or_name).ok_or_else(|| not_found(id_or_name))
    }

    /// Every instance, by name.
    pub(crate) fn list(&self) -> Vec<Instance> {
        let t = self.table();
        // Sort references, then copy each record once: sorting the records
        // themselves moved every one of them several times.
        let mut v: Vec<&Instance> = t.records.values().collect();
        v.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        v.into_iter().cloned().collect()
    }

    /// Stop an instance's process; it keeps its ports, network and config.
    pub(crate) async fn stop(&self, id_or_name: &str) -> Result<Instance> {
        let inst = self.instance(id_or_name)?;
        let l = self.op_lock(&inst.id);
        let _g = l.lock().await;
        let inst = self.instance(&inst.id)?;
        if !inst.state.is_up() && inst.state != InstanceState::Stopped {
            return Err(Error::new(
                crate::ErrorKind::InstanceNotRunning,
                format!("{} is {}", inst.name, inst.state.as_str()),
            )
            .hint("only a running instance can be stopped; delete it to take it back"));
        }
        self.s
            .desired
            .act(&inst.process, Desired::Stopped, Action::Stop(None))
            .await?;
        self.update(&inst.id, |i| {
            i.state = InstanceState::Stopped;
            i.desired = Desired::Stopped;
        })
        .await
    }

    /// Start a stopped instance (and wait until it is healthy), or make an
    /// instance in error again from the first step.
    pub(crate) async fn start(&self, id_or_name: &str) -> Result<Instance> {
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
            InstanceState::Stopped
            | InstanceState::Running
            | InstanceState::Degraded
            | InstanceState::Failed => {
                let l = self.op_lock(&inst.id);
                let _g = l.lock().await;
                let r = self
                    .s
                    .desired
                    .act(&inst.process, Desired::Running, Action::Start)
                    .await?;
                if let Some((_, e)) = r.errors.into_iter().next() {
                    return Err(e);
                }
                self.update(&inst.id, |i| {
                    i.state = InstanceState::Starting;
                    i.desired = Desired::Running;
                })
                .await?;
                let res = steps::ready::apply(self, &inst).await;
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
    pub(crate) async fn restart(&self, id_or_name: &str) -> Result<Instance> {
        let inst = self.instance(id_or_name)?;
        if inst.state.is_up() {
            let l = self.op_lock(&inst.id);
            let g = l.lock().await;
            self.s
                .desired
                .act(&inst.process, Desired::Running, Action::Restart)
                .await?;
            steps::ready::apply(self, &inst).await?;
            let inst = self
                .update(&inst.id, |i| {
                    if i.state.is_up() {
                        i.state = InstanceState::Running;
                    }
                })
                .await?;
            drop(g);
            return Ok(inst);
        }
        self.start(&inst.id).await
    }

    /// Delete an instance: stop its process, undo every step, forget it.
    /// A create in progress is cancelled and rolled back first.
    pub(crate) async fn delete(&self, id_or_name: &str) -> Result<()> {
        let inst = self.instance(id_or_name)?;
        if let Some(tx) = self.table().flows.get(&inst.id) {
            let _ = tx.send(true);
        }
        let l = self.op_lock(&inst.id);
        let _g = l.lock().await;
        let Some(inst) = self.get(&inst.id) else {
            return Ok(());
        };
        self.update(&inst.id, |i| i.state = InstanceState::Deleting)
            .await?;
        hangar_base::crash_point!("instance.delete.marked");
        self.undo_all(&inst.id).await;
        self.forget(&inst).await
    }

    async fn forget(&self, inst: &Instance) -> Result<()> {
        let store = Arc::clone(&self.s.store);
        let id = inst.id.clone();
        blocking(move || store.remove_instance(&id).map_err(Error::from)).await?;
        hangar_base::crash_point!("instance.delete.removed");
        self.table().forget(inst);
        self.s.events.emit(
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
    pub(crate) async fn update_options(
        &self,
        id_or_name: &str,
        mode: Option<String>,
        options: Map<String, Value>,
    ) -> Result<Instance> {
        let inst = self.instance(id_or_name)?;
        let l = self.op_lock(&inst.id);
        let _g = l.lock().await;
        let inst = self.instance(&inst.id)?;
        if !inst.state.is_up() && inst.state != InstanceState::Stopped {
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
        next.secret_options = Some(hangar_feature::configgen::secret_keys(&m));
        let (n2, m2, manager) = (next.clone(), m.clone(), self.s.manager.clone());
        let install_dir = render::install_dir(self, &next);
        // Rendered, accepted by the checker and staged beside the files in
        // place, which it replaces only once the record says so: a crash
        // between the two finds the record marked and writes the config
        // from it at the next start (`recover`).
        let staged =
            blocking(move || render::render_checked(&manager, &n2, &m2, &mdir, &install_dir))
                .await?;
        if let Some(s) = &staged {
            next.config_file = Some(s.final_main_path().to_path_buf());
        }
        next.config_pending = staged.is_some();
        let spec = steps::process::spec(self, &next, &m)?;
        let mut next = self.save(next, Some(inst.state)).await?;
        hangar_base::crash_point!("instance.update.saved");
        if let Some(s) = staged {
            if let Err(e) = blocking(move || s.commit()).await {
                // The old config is still in place: so is the old record.
                let _ = self.save(inst.clone(), Some(next.state)).await;
                return Err(e);
            }
            hangar_base::crash_point!("instance.update.written");
            next = self.update(&next.id, |i| i.config_pending = false).await?;
        }
        if inst.state.is_up() {
            let mut change = self.s.desired.write().await;
            let mut desired = change.current().clone();
            desired.insert(
                spec.name.clone(),
                Arc::new(Want {
                    spec,
                    source: Source::Instance,
                    desired: Desired::Running,
                }),
            );
            let report = change.apply(desired).await;
            drop(change);
            if let Some((_, e)) = report.errors.into_iter().next() {
                return Err(e);
            }
            // The spec names the config file, not what is in it: with the
            // same spec, the process restarts to read the new config.
            if !report.changed.contains(&next.process) {
                let r = self
                    .s
                    .desired
                    .act(&next.process, Desired::Running, Action::Restart)
                    .await?;
                if let Some((_, e)) = r.errors.into_iter().next() {
                    return Err(e);
                }
            }
            hangar_base::crash_point!("instance.update.restarted");
            steps::ready::apply(self, &next).await?;
        }
        self.instance(&next.id)
    }

    /// At boot: load the records; take back instances a killed daemon left
    /// half-made (or half-deleted). Returns the process names that must not be
    /// started.
    pub(crate) async fn recover(&self) -> Vec<String> {
        // Installs first: an instance's config is written from its install.
        let installer = self.s.installer.clone();
        if let Ok(swept) = blocking(move || Ok(installer.recover())).await {
            if !swept.is_empty() {
                warn!(features = ?swept, "cleared what interrupted installs left");
            }
        }
        let store = Arc::clone(&self.s.store);
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
        let ins = self;
        let mut dropped = Vec::new();
        let mut interrupted = Vec::new();
        let mut pending = Vec::new();
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
                if inst.config_pending {
                    pending.push(inst.id.clone());
                }
                let reg = self.s.manager.ports();
                if inst.network.is_none() {
                    for p in inst.ports.values() {
                        if let Err(e) = reg.reserve(*p, &inst.id) {
                            warn!(instance = %inst.name, port = p, "cannot reserve the instance's port: {}", e.message);
                        }
                    }
                }
            }
            let mut t = ins.table();
            // Several named instances may share a key; the first serves it.
            t.keys
                .entry(inst.key.clone())
                .or_insert_with(|| inst.id.clone());
            t.used.insert(inst.id.clone(), Instant::now());
            t.records.insert(inst.id.clone(), inst);
        }
        self.recover_networks().await;
        // The processes of interrupted instances are not in the desired set
        // yet (boot applies it after this), so undo only removes records.
        for id in interrupted {
            let Some(inst) = ins.get(&id) else { continue };
            let store = Arc::clone(&self.s.store);
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
        // No config is being staged now: temp files are a crash's.
        let dirs: Vec<PathBuf> = self
            .list()
            .into_iter()
            .map(|i| i.dir.join("config"))
            .collect();
        let _ = blocking(move || {
            let n: usize = dirs
                .iter()
                .map(|d| hangar_feature::configgen::remove_stale_temps(d))
                .sum();
            if n > 0 {
                warn!(files = n, "removed config files an interrupted write left");
            }
            Ok(())
        })
        .await;
        for id in pending {
            self.finish_config(&id).await;
        }
        dropped
    }

    /// An update cut short between storing its options and writing its
    /// config: write the config from the record (rendered and checked as
    /// the update did), so the file says what the record says.
    async fn finish_config(&self, id: &str) {
        let Some(inst) = self.get(id) else { return };
        let res = async {
            let (m, mdir) = self.manifest_of(&inst.feature).await?;
            let (i2, manager) = (inst.clone(), self.s.manager.clone());
            let install_dir = render::install_dir(self, &inst);
            let file =
                blocking(move || render::render_and_check(&manager, &i2, &m, &mdir, &install_dir))
                    .await?;
            self.update(id, |i| {
                i.config_file = file;
                i.config_pending = false;
            })
            .await
        }
        .await;
        match res {
            Ok(_) => warn!(instance = %inst.name, "wrote the config of an interrupted update"),
            Err(e) => warn!(
                instance = %inst.name,
                code = e.code(),
                "cannot write the config of an interrupted update (the next start tries again): {}",
                e.message
            ),
        }
    }

    /// Delete per-session instances nobody asked for within the TTL.
    pub(crate) async fn reap_idle_sessions(&self) {
        let ttl = self.s.settings.session_ttl;
        let idle: Vec<String> = {
            let t = self.table();
            t.records
                .values()
                .filter(|i| {
                    i.isolation == Isolation::PerSession && !i.fleet && !i.state.in_progress()
                })
                .filter(|i| t.used.get(&i.id).is_none_or(|t| t.elapsed() > ttl))
                .map(|i| i.id.clone())
                .collect()
        };
        for id in idle {
            info!(instance = %id, "deleting an idle per-session instance");
            if let Err(e) = self.delete(&id).await {
                warn!(instance = %id, code = e.code(), "could not reap: {}", e.message);
            }
        }
    }

    /// The reaper's loop; ends with the daemon.
    pub(crate) async fn reap_loop(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let ttl = self.s.settings.session_ttl;
        let every = (ttl / 4).clamp(Duration::from_millis(200), Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            self.reap_idle_sessions().await;
        }
    }
}

/// A create answered by an existing instance: fine when it asks for nothing
/// the instance does not already have. Options or a mode that differ are
/// refused, not silently dropped; only the names of the options are given,
/// since their values may be secret.
fn same_ask(req: &CreateRequest, c: Created) -> Result<Created> {
    let i = &c.instance;
    let mut differ: Vec<&str> = req
        .options
        .iter()
        .filter(|(k, v)| i.options.get(*k) != Some(*v))
        .map(|(k, _)| k.as_str())
        .collect();
    if req.mode.is_some() && req.mode != i.mode {
        differ.insert(0, "mode");
    }
    if differ.is_empty() {
        return Ok(c);
    }
    Err(Error::new(
        crate::ErrorKind::InstanceOptionsDiffer,
        format!(
            "instance {} already serves this request with other settings",
            i.name
        ),
    )
    .with("instance", &i.name)
    .with("differ", differ.join(", "))
    .hint(format!(
        "change it with `hangar instance update {} --set KEY=VALUE`, or create another under its own name, tenant or session",
        i.name
    )))
}
