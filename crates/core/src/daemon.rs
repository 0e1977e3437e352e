//! [`Daemon`]: the long-running service behind `hangar serve`.
//!
//! It owns the supervisor [`Manager`], the SQLite [`Store`] and the event bus, and
//! keeps three promises:
//!
//! - **Persisted before announced.** One task takes the supervisor's events, writes
//!   them (and the observed state they imply) to the store in batches, one
//!   transaction per batch, and only then hands them to API subscribers and sinks.
//! - **One path for boot and reload.** The desired set of processes is computed
//!   from the configuration file plus the processes added through the API, and
//!   [`Daemon::reload`] applies the difference to what runs: added start, removed
//!   stop, changed restart, unchanged are not touched. Boot is a reload from empty.
//! - **Nothing left behind by a crash.** Before anything starts, what an earlier
//!   daemon on the same data dir left running is found and ended
//!   ([`crate::recovery`]), then every process is started again as its desired
//!   state says. A reconciler compares desired and observed state at an interval.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hangar_store::{Desired, EventQuery, EventRecord, Observation, Source, Store};
use hangar_supervisor::{
    Event, EventKind, Manager, ManagerOptions, ProcessSpec, ProcessStatus, State,
};
use serde_json::json;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::{DaemonConfig, Settings};
pub use crate::desired::ActionReport;
use crate::desired::{not_found, start_one, Action, DesiredSet};
use crate::desired::{ReloadReport, Want, WantMap};
use crate::error::{Error, Result};
use crate::events::EventSink;
use crate::instances::{CreateRequest, Created, Instance, Instances, InstancesParts};
use crate::procfile;
use crate::recovery::{self, RecordedGroup};
use crate::sinks::{SinkStats, Sinks};
use crate::spool::{self, Loss, Spool};
use crate::util::{blocking, detached, ms, now_ms};

/// Where and how to boot.
#[derive(Debug, Clone, Default)]
pub struct BootOptions {
    /// The data dir: store, socket, logs.
    pub data_dir: PathBuf,
    /// The configuration file, if any.
    pub config: Option<PathBuf>,
    /// Catalog directories instances come from (first match wins); empty: the
    /// `[daemon.instances] catalog` setting, else the built-in catalog.
    pub catalogs: Vec<PathBuf>,
}

/// A process as the API shows it: what is wanted and what runs.
#[derive(Debug, Clone)]
pub struct ProcessView {
    /// The desired side.
    pub want: Arc<Want>,
    /// The supervisor's snapshot, shared with it; `None` when it was never
    /// started.
    pub status: Option<Arc<ProcessStatus>>,
}

/// Facts about the daemon itself.
#[derive(Debug, Clone)]
pub struct DaemonInfo {
    /// hangar's pid.
    pub pid: u32,
    /// When it booted.
    pub started_at: SystemTime,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// Its configuration file.
    pub config: Option<PathBuf>,
    /// The data dir's supervisor id.
    pub supervisor_id: String,
    /// Processes by state name.
    pub by_state: BTreeMap<String, u32>,
    /// Id of the newest stored event.
    pub last_event_id: i64,
    /// History sink counters.
    pub sinks: Vec<SinkStats>,
    /// Leftover processes of an earlier daemon ended at boot.
    pub recovered_killed: usize,
    /// Where the HTTP listener (metrics, GraphQL, the dashboard) listens.
    pub http_addr: Option<std::net::SocketAddr>,
}

/// The daemon. Cheap to clone.
#[derive(Clone)]
pub struct Daemon {
    inner: Arc<Inner>,
}

struct Inner {
    data_dir: PathBuf,
    config_path: Option<PathBuf>,
    log_dir: PathBuf,
    manager: Manager,
    store: Arc<Store>,
    bus: broadcast::Sender<Arc<EventRecord>>,
    instances: Instances,
    sinks: Mutex<Option<Sinks>>,
    settings: Settings,
    /// What should run; the one path that changes what runs.
    desired: DesiredSet,
    started_at: SystemTime,
    recovered_killed: usize,
    last_event_id: AtomicI64,
    /// The newest stored event id when this daemon booted: events after it are
    /// this daemon's own.
    boot_event_id: i64,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The session reaper, kept apart: shutdown ends it before taking the
    /// desired set, since a reap in the middle of a delete waits for the set.
    reaper: Mutex<Option<JoinHandle<()>>>,
    /// The HTTP listener's address, once `hangar serve` has bound it.
    http_addr: Mutex<Option<std::net::SocketAddr>>,
    _lock: OwnedFd,
}

/// Events a slow API subscriber may fall behind by before it loses some.
const BUS_CAPACITY: usize = 16 * 1024;
/// Most events written in one transaction.
const BATCH: usize = 2048;
/// While the store refuses writes, how often it is tried again (and a
/// released reserve made again).
const STORE_RETRY: Duration = Duration::from_secs(1);

/// The default data dir: `$HANGAR_DATA_DIR`, else `/var/lib/hangar` as root, else
/// `$XDG_DATA_HOME/hangar` (or `~/.local/share/hangar`).
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("HANGAR_DATA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/lib/hangar");
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("hangar")
}

/// The control socket's path in a data dir.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("hangar.sock")
}

fn take_lock(data_dir: &Path) -> Result<OwnedFd> {
    use rustix::fs::{flock, open, FlockOperation, Mode, OFlags};
    let path = data_dir.join("hangar.lock");
    let fd = open(
        &path,
        OFlags::CREATE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| {
        Error::new(
            crate::ErrorKind::DataDirUnusable,
            format!("cannot open the lock file: {e}"),
        )
        .with("path", path.display())
        .hint("check the data dir's permissions, or pick another with --data-dir")
    })?;
    flock(&fd, FlockOperation::NonBlockingLockExclusive).map_err(|_| {
        Error::new(
            crate::ErrorKind::DaemonAlreadyRunning,
            "another hangar daemon uses this data dir",
        )
        .with("data_dir", data_dir.display())
        .hint("stop the other daemon first (`hangar status` shows it), or use another --data-dir")
    })?;
    Ok(fd)
}

/// A daemon between [`Daemon::open`] and [`Booting::start`]: it holds its data
/// dir, has ended an earlier daemon's leftovers and runs its event pipeline,
/// but has started no process. What can still fail without anything to
/// undo (binding listeners) goes here.
pub struct Booting {
    daemon: Daemon,
    config: DaemonConfig,
    records: Vec<hangar_store::ProcessRecord>,
}

impl Booting {
    /// The daemon, with nothing started yet.
    pub fn daemon(&self) -> &Daemon {
        &self.daemon
    }

    /// Apply the desired state (boot is a reload from empty). Returns once
    /// everything is registered; processes finish starting in the
    /// background (their events tell).
    pub async fn start(self) -> Daemon {
        let Booting {
            daemon,
            config,
            records,
        } = self;
        // Instances a killed daemon left half-made are taken back before the
        // desired set is computed, so their processes are not started.
        let dropped = daemon.inner.instances.recover().await;
        let records: Vec<_> = records
            .into_iter()
            .filter(|r| !dropped.contains(&r.name))
            .collect();
        let desired = daemon.desired_from(config, &records);
        // A record the desired set does not hold (a process gone from the
        // configuration file while no daemon ran, or a change a crash cut
        // between its writes) would otherwise stay in the store for good.
        let stale: Vec<String> = records
            .iter()
            .map(|r| r.name.clone())
            .filter(|n| !desired.contains_key(n))
            .collect();
        if !stale.is_empty() {
            let store = Arc::clone(&daemon.inner.store);
            let names = stale.clone();
            let res = blocking(move || {
                for n in &names {
                    store.remove_process(n)?;
                }
                Ok(())
            })
            .await;
            match res {
                Ok(()) => info!(processes = ?stale, "forgot records of processes no longer wanted"),
                Err(e) => warn!(
                    code = e.code(),
                    "cannot forget stale process records: {}", e.message
                ),
            }
        }
        let (registered, rx) = tokio::sync::oneshot::channel();
        let d = daemon.clone();
        tokio::spawn(async move {
            let mut change = d.inner.desired.write().await;
            let report = change.apply_then(desired, Some(registered)).await;
            for (name, e) in &report.errors {
                warn!(process = %name, code = e.code(), "{}", e.message);
            }
            info!(
                processes = report.added.len(),
                "boot: desired state applied"
            );
        });
        let _ = rx.await;
        info!(recovered = daemon.inner.recovered_killed, "daemon booted");
        daemon
    }
}

/// Refuse `path` (when it exists) unless the daemon's own user owns it (or,
/// for a file, root does) and no one else may write it, as sshd does for its
/// key files. The data dir must be the daemon's own: it is made 0700 next.
fn trusted(path: &Path, what: &str, dir: bool) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let md = match std::fs::metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(Error::new(
                crate::ErrorKind::DataDirUnusable,
                format!("cannot read the {what}: {e}"),
            )
            .with("path", path.display()))
        }
    };
    let me = rustix::process::geteuid().as_raw();
    let owner_ok = md.uid() == me || (!dir && md.uid() == 0);
    // Writable by anyone: refused. Writable by the group too is refused for
    // a file the daemon's user does not own; a file it owns may be group-
    // writable (a umask of 002 gives checkouts 0664, for the owner's own
    // group).
    let writable_by_others = !(dir && md.uid() == me)
        && (md.mode() & 0o002 != 0 || (md.mode() & 0o020 != 0 && md.uid() != me));
    if owner_ok && !writable_by_others {
        return Ok(());
    }
    let why = if owner_ok {
        format!("the {what} is writable by users other than its owner")
    } else {
        format!("the {what} belongs to another user")
    };
    Err(Error::new(crate::ErrorKind::DataDirUnsafe, why)
        .with("path", path.display())
        .with("owner_uid", md.uid())
        .with("mode", format!("{:o}", md.mode() & 0o7777))
        .with("daemon_uid", me)
        .hint(if dir {
            "use a data dir the daemon's user owns (chown it, or pick another with --data-dir); nothing was changed"
        } else {
            "make it owned by the daemon's user (or root) and not writable by group or others (chmod go-w); nothing was changed"
        }))
}

impl Daemon {
    /// Boot: [`Daemon::open`], then [`Booting::start`].
    pub async fn boot(opts: BootOptions) -> Result<Daemon> {
        Ok(Daemon::open(opts).await?.start().await)
    }

    /// The first half of boot: lock the data dir, open the store, end an
    /// earlier daemon's leftovers and start the event pipeline; nothing of
    /// the desired state starts before [`Booting::start`].
    pub async fn open(opts: BootOptions) -> Result<Booting> {
        let data_dir = opts.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|e| {
            Error::new(
                crate::ErrorKind::DataDirUnusable,
                format!("cannot create the data dir: {e}"),
            )
            .with("data_dir", data_dir.display())
            .hint("check permissions, or pick another with --data-dir or HANGAR_DATA_DIR")
        })?;
        // What this daemon will run comes from these; someone else who can
        // write them could plant a process record or a command. Checked
        // before anything is changed, so a refusal leaves them as they were.
        trusted(&data_dir, "data dir", true)?;
        trusted(&data_dir.join("hangar.db"), "store", false)?;
        if let Some(c) = &opts.config {
            trusted(c, "configuration file", false)?;
        }
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700));
        }
        let lock = take_lock(&data_dir)?;
        let log_dir = data_dir.join("logs");
        let config = match &opts.config {
            Some(p) => DaemonConfig::load(p, Some(log_dir.clone()))?,
            None => DaemonConfig::default(),
        };
        let db = data_dir.join("hangar.db");
        let store = Arc::new(blocking(move || Store::open(&db).map_err(Error::from)).await?);
        let supervisor_id = store.supervisor_id().to_string();

        // Crash recovery comes before anything is started.
        let records = {
            let s = Arc::clone(&store);
            blocking(move || s.processes().map_err(Error::from)).await?
        };
        // Process groups recorded during another boot are not ours to touch:
        // after a reboot their numbers belong to whoever got them.
        let boot_file = data_dir.join("boot_id");
        let this_boot = recovery::boot_id();
        let same_boot = this_boot.is_some()
            && std::fs::read_to_string(&boot_file)
                .ok()
                .map(|s| s.trim().to_string())
                == this_boot;
        if let Some(b) = &this_boot {
            let _ = std::fs::write(&boot_file, b);
        }
        let groups: Vec<RecordedGroup> = records
            .iter()
            .filter(|_| same_boot)
            .filter_map(|r| {
                Some(RecordedGroup {
                    pgid: r.pgid?,
                    leader_start: r.pid_start,
                })
            })
            .collect();
        let id = supervisor_id.clone();
        let recovered_killed = blocking(move || {
            let found = recovery::find_leftovers(&id, &groups);
            Ok(recovery::kill_leftovers(&found, Duration::from_secs(5)))
        })
        .await?;
        {
            let group = format!("hangar-{supervisor_id}");
            let cleared = blocking(move || {
                Ok(hangar_supervisor::Cgroups::host()
                    .remove_group(&group)
                    .unwrap_or(0))
            })
            .await?;
            if cleared > 0 {
                warn!(cgroups = cleared, "removed cgroups an earlier daemon left");
            }
        }
        if recovered_killed > 0 {
            warn!(
                processes = recovered_killed,
                "ended processes an earlier daemon left running"
            );
        }

        let manager = Manager::with_options(ManagerOptions {
            // The persist task drains this in batches; if it ever falls behind
            // it resynchronises from the snapshots, so the ring need not be huge
            // (each slot is preallocated: 8192 slots ≈ 1 MB).
            event_capacity: 8 * 1024,
            port_range: config.settings.ports()?,
            // Stable per data dir, so the next boot finds (and clears) the
            // cgroups this one leaves behind after a crash.
            cgroup_group: Some(format!("hangar-{supervisor_id}")),
            // Every child carries it; the next boot's recovery finds by it
            // what a crashed daemon left.
            supervisor_id: Some(supervisor_id.to_string()),
            subreaper: true,
            cgroup_every_process: true,
            ..ManagerOptions::default()
        })?;
        manager.set_global_env(&config.env)?;

        let sinks = Sinks::start(config.settings.sink.clone()).map_err(|e| {
            Error::from_parts(e.code(), e.category(), e.to_string(), Vec::new(), None)
                .hint("fix the [[daemon.sink]] entry")
        })?;
        let last_event_id = {
            let s = Arc::clone(&store);
            blocking(move || s.last_event_id().map_err(Error::from)).await?
        };
        let (bus, _) = broadcast::channel(BUS_CAPACITY);
        let (stop, _) = watch::channel(false);
        let (events, own_rx) = EventSink::channel();
        let desired = DesiredSet::new(Arc::clone(&store), manager.clone());
        let instances = Instances::open(
            InstancesParts {
                desired: desired.clone(),
                events,
                store: Arc::clone(&store),
                manager: manager.clone(),
            },
            &data_dir,
            &config.settings.instances,
            &config.settings.network,
            &opts.catalogs,
        )?;
        let daemon = Daemon {
            inner: Arc::new(Inner {
                data_dir,
                config_path: opts.config,
                log_dir,
                manager,
                store,
                bus,
                instances,
                sinks: Mutex::new(Some(sinks)),
                settings: config.settings.clone(),
                desired,
                started_at: SystemTime::now(),
                recovered_killed,
                last_event_id: AtomicI64::new(last_event_id),
                boot_event_id: last_event_id,
                stop,
                tasks: Mutex::new(Vec::new()),
                reaper: Mutex::new(None),
                http_addr: Mutex::new(None),
                _lock: lock,
            }),
        };
        // Subscribe before the first start so no event escapes the store.
        let events = daemon.inner.manager.subscribe();
        // Each task gets its view of `stop` here, not when it first runs: a
        // receiver made after the stop was sent would never see it (a refused
        // start shuts down before a busy machine may have run these at all).
        let persister = tokio::spawn(daemon.clone().persist(
            events,
            own_rx,
            daemon.inner.stop.subscribe(),
        ));
        let reconciler = tokio::spawn(daemon.clone().reconcile_loop(daemon.inner.stop.subscribe()));
        let reaper = tokio::spawn(
            daemon
                .inner
                .instances
                .clone()
                .reap_loop(daemon.inner.stop.subscribe()),
        );
        let watcher = tokio::spawn(
            daemon
                .inner
                .instances
                .clone()
                .watch_loop(daemon.inner.stop.subscribe()),
        );
        if let Ok(mut t) = daemon.inner.tasks.lock() {
            t.push(persister);
            t.push(reconciler);
            t.push(watcher);
        }
        if let Ok(mut r) = daemon.inner.reaper.lock() {
            *r = Some(reaper);
        }

        // Boot is a reload from empty. The desired set is applied (and
        // recorded) in `start`, before it returns; the starts finish in the
        // background, so the API comes up at once and shows them starting.
        Ok(Booting {
            daemon,
            config,
            records,
        })
    }

    /// The supervisor.
    pub fn manager(&self) -> &Manager {
        &self.inner.manager
    }

    /// The settings the daemon booted with.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The data dir.
    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    /// Stored events, as they are announced.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<EventRecord>> {
        self.inner.bus.subscribe()
    }

    /// The newest stored event id at boot. Events this daemon stored have larger
    /// ids: a subscriber that comes up after boot (processes start in the
    /// background meanwhile) replays `after_id = boot_event_id()` from history to
    /// miss none of them.
    pub fn boot_event_id(&self) -> i64 {
        self.inner.boot_event_id
    }

    /// Query the event history.
    pub async fn history(&self, q: EventQuery) -> Result<Vec<EventRecord>> {
        let s = Arc::clone(&self.inner.store);
        blocking(move || s.events(&q).map_err(Error::from)).await
    }

    /// Facts about the daemon.
    pub async fn info(&self) -> DaemonInfo {
        let states: std::collections::HashMap<Arc<str>, State> =
            self.inner.manager.states().into_iter().collect();
        let applied = self.inner.desired.snapshot();
        let mut by_state: BTreeMap<String, u32> = BTreeMap::new();
        for name in applied.keys() {
            let state = states.get(name.as_str()).map_or("stopped", |s| s.as_str());
            *by_state.entry(state.to_string()).or_default() += 1;
        }
        let sinks = match self.inner.sinks.lock() {
            Ok(s) => s.as_ref().map(|s| s.stats()).unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        DaemonInfo {
            pid: std::process::id(),
            started_at: self.inner.started_at,
            data_dir: self.inner.data_dir.clone(),
            config: self.inner.config_path.clone(),
            supervisor_id: self.inner.store.supervisor_id().to_string(),
            by_state,
            last_event_id: self.inner.last_event_id.load(Ordering::Relaxed),
            sinks,
            recovered_killed: self.inner.recovered_killed,
            http_addr: self.http_addr(),
        }
    }

    /// Record where the HTTP listener listens (for `status` and
    /// `hangar dashboard`).
    pub fn set_http_addr(&self, addr: Option<std::net::SocketAddr>) {
        *self
            .inner
            .http_addr
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = addr;
    }

    /// Where the HTTP listener listens, when there is one.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        *self
            .inner
            .http_addr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Processes matching a glob (empty: all), sorted by name.
    pub async fn list(&self, pattern: &str) -> Result<Vec<ProcessView>> {
        let pat = if pattern.is_empty() { "*" } else { pattern };
        let m = glob::Pattern::new(pat).map_err(|e| {
            Error::new(
                hangar_supervisor::ErrorKind::InvalidPattern,
                format!("invalid pattern {pat:?}: {e}"),
            )
            .hint("use *, ? and [..] as in shell globs")
        })?;
        // The desired set is sorted by name; the supervisor's snapshots are
        // looked up under one lock, shared, not copied.
        let applied = self.inner.desired.snapshot();
        let wanted: Vec<(&String, &Arc<Want>)> =
            applied.iter().filter(|(n, _)| m.matches(n)).collect();
        let statuses = self
            .inner
            .manager
            .statuses_of(wanted.iter().map(|(n, _)| n.as_str()));
        Ok(wanted
            .into_iter()
            .zip(statuses)
            .map(|((_, w), status)| ProcessView {
                want: Arc::clone(w),
                status,
            })
            .collect())
    }

    /// One process.
    pub async fn get(&self, name: &str) -> Result<ProcessView> {
        let applied = self.inner.desired.snapshot();
        let want = applied.get(name).cloned().ok_or_else(|| not_found(name))?;
        Ok(ProcessView {
            want,
            status: self.inner.manager.status(name).ok().map(Arc::new),
        })
    }

    /// Add processes from process-file TOML (one or more `[[process]]` tables).
    /// All or nothing: refused if any is invalid or its name is taken, and taken
    /// back if one of them fails to start (within the start wait).
    pub async fn add(&self, toml: &str, start: bool) -> Result<Vec<String>> {
        let (d, toml) = (self.clone(), toml.to_string());
        detached(async move { d.add_now(&toml, start).await }).await
    }

    async fn add_now(&self, toml: &str, start: bool) -> Result<Vec<String>> {
        let mut change = self.inner.desired.write().await;
        let pf = procfile::parse(toml, Some(self.inner.log_dir.clone())).map_err(|errs| {
            let mut e = Error::new(
                crate::ErrorKind::ConfigInvalid,
                format!("{} error(s) in the process definition", errs.len()),
            )
            .hint("fix the errors listed; nothing was added");
            for err in errs {
                if !err.key.is_empty() {
                    e = e.with("field", &err.key);
                }
                e = e.with("error", err);
            }
            e
        })?;
        let before = change.current().clone();
        let mut desired = before.clone();
        let mut names = Vec::new();
        for spec in pf.processes.into_iter().flat_map(|s| s.expand()) {
            if desired.contains_key(&spec.name) {
                return Err(Error::new(
                    hangar_supervisor::ErrorKind::DuplicateName,
                    format!("a process named {:?} exists", spec.name),
                )
                .with("process", &spec.name)
                .hint("pick another name, or remove the existing process first"));
            }
            names.push(spec.name.clone());
            desired.insert(
                spec.name.clone(),
                Arc::new(Want {
                    spec,
                    source: Source::Api,
                    desired: if start {
                        Desired::Running
                    } else {
                        Desired::Stopped
                    },
                }),
            );
        }
        let report = change.apply(desired).await;
        // An error without a name is the store refusing the change: nothing moved.
        // A process that failed to start takes the whole add back with it: all
        // or nothing, no record or port left behind.
        match report
            .errors
            .into_iter()
            .find(|(n, _)| start || n.is_empty())
        {
            Some((n, e)) if !n.is_empty() => {
                let undo = change.apply(before).await;
                for (name, err) in undo.errors {
                    warn!(process = %name, code = err.code(), "could not take back a failed add: {}", err.message);
                }
                let hint = format!(
                    "{}; nothing was added",
                    e.hint.as_deref().unwrap_or("fix the process definition")
                );
                Err(e.hint(hint))
            }
            Some((_, e)) => Err(e),
            None => Ok(names),
        }
    }

    /// Stop a process added through the API and forget it.
    pub async fn remove(&self, name: &str) -> Result<()> {
        let (d, name) = (self.clone(), name.to_string());
        detached(async move { d.remove_now(&name).await }).await
    }

    async fn remove_now(&self, name: &str) -> Result<()> {
        let mut change = self.inner.desired.write().await;
        let mut desired = change.current().clone();
        match desired.get(name) {
            None => return Err(not_found(name)),
            Some(w) if w.source == Source::Config => {
                return Err(Error::new(
                    crate::ErrorKind::ProcessFromConfig,
                    format!("{name:?} comes from the configuration file"),
                )
                .with("process", name)
                .hint("delete it from the configuration file and run `hangar reload`"))
            }
            Some(w) if w.source == Source::Instance => {
                return Err(Error::new(
                    crate::ErrorKind::ProcessOfInstance,
                    format!("{name:?} is the process of a feature instance"),
                )
                .with("process", name)
                .hint("delete the instance with `hangar instance delete`"))
            }
            Some(_) => {}
        }
        desired.remove(name);
        let report = change.apply(desired).await;
        match report.errors.into_iter().next() {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    /// Re-read the configuration file and apply the difference.
    pub async fn reload(&self) -> Result<ReloadReport> {
        let d = self.clone();
        detached(async move { d.reload_now().await }).await
    }

    async fn reload_now(&self) -> Result<ReloadReport> {
        let mut change = self.inner.desired.write().await;
        let config = match &self.inner.config_path {
            Some(p) => DaemonConfig::load(p, Some(self.inner.log_dir.clone()))?,
            None => DaemonConfig::default(),
        };
        if config.settings != self.inner.settings {
            warn!("[daemon] settings changed; they take effect at the next start of hangar");
        }
        self.inner.manager.set_global_env(&config.env)?;
        let applied = change.current().clone();
        let mut desired: WantMap = applied
            .iter()
            .filter(|(_, w)| w.source != Source::Config)
            .map(|(n, w)| (n.clone(), w.clone()))
            .collect();
        for spec in config.processes.into_iter().flat_map(|s| s.expand()) {
            // A configuration process keeps its desired state (one stopped with
            // `hangar stop` stays stopped); a new one runs.
            let desired_state = applied
                .get(&spec.name)
                .map(|w| w.desired)
                .unwrap_or(Desired::Running);
            desired.insert(
                spec.name.clone(),
                Arc::new(Want {
                    spec,
                    source: Source::Config,
                    desired: desired_state,
                }),
            );
        }
        Ok(change.apply(desired).await)
    }

    /// Start processes matching a name or glob (their desired state becomes running).
    pub async fn start(&self, pattern: &str) -> Result<ActionReport> {
        let (d, pattern) = (self.clone(), pattern.to_string());
        detached(async move {
            d.inner
                .desired
                .act(&pattern, Desired::Running, Action::Start)
                .await
        })
        .await
    }

    /// Stop processes matching a name or glob (desired: stopped).
    pub async fn stop(&self, pattern: &str, timeout: Option<Duration>) -> Result<ActionReport> {
        let (d, pattern) = (self.clone(), pattern.to_string());
        detached(async move {
            d.inner
                .desired
                .act(&pattern, Desired::Stopped, Action::Stop(timeout))
                .await
        })
        .await
    }

    /// Send a signal (`HUP`, `SIGHUP`, `1`) to the running processes matching
    /// a name or glob: to each main process, or with `group` to its whole
    /// process group. What should run is not changed. An unknown signal is
    /// refused before anything is sent; a pattern that matches nothing is
    /// `PROCESS_NOT_FOUND`; a match that is not running is a per-process error.
    pub async fn signal(&self, pattern: &str, signal: &str, group: bool) -> Result<ActionReport> {
        let sig = hangar_supervisor::SignalName::parse(signal).map_err(Error::from)?;
        let names: Vec<String> = self
            .list(pattern)
            .await?
            .into_iter()
            .map(|v| v.want.spec.name.clone())
            .collect();
        if names.is_empty() {
            return Err(not_found(pattern));
        }
        let mut jobs = tokio::task::JoinSet::new();
        for name in names {
            let mgr = self.inner.manager.clone();
            jobs.spawn(async move {
                let res = match mgr.signal(&name, sig, group).await {
                    Err(e) if e.kind() == hangar_supervisor::ErrorKind::ProcessNotFound => {
                        // In the desired set but never started (stopped at boot).
                        Err(Error::new(
                            hangar_supervisor::ErrorKind::ProcessNotRunning,
                            format!("process {name:?} is stopped: there is no process to signal"),
                        )
                        .with("name", &name)
                        .with("signal", sig)
                        .hint("start it first (`hangar start`); `hangar ps` shows its state"))
                    }
                    r => r.map(drop).map_err(Error::from),
                };
                (name, res)
            });
        }
        let mut report = ActionReport::default();
        while let Some(j) = jobs.join_next().await {
            if let Ok((name, res)) = j {
                match res {
                    Ok(()) => report.names.push(name),
                    Err(e) => report.errors.push((name, e)),
                }
            }
        }
        report.names.sort();
        report.errors.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(report)
    }

    /// Restart processes matching a name or glob (desired: running).
    pub async fn restart(&self, pattern: &str) -> Result<ActionReport> {
        let (d, pattern) = (self.clone(), pattern.to_string());
        detached(async move {
            d.inner
                .desired
                .act(&pattern, Desired::Running, Action::Restart)
                .await
        })
        .await
    }

    /// Stop every process gracefully (each with its own stop settings), persist
    /// the last events, flush the sinks. Desired states are kept, so the next
    /// boot starts the same processes.
    pub async fn shutdown(&self) {
        // End the reaper first: one in the middle of a delete waits for the
        // desired set, which shutdown is about to hold. A delete cut short stays
        // recorded as deleting, and the next boot finishes it.
        let reaper = self.inner.reaper.lock().ok().and_then(|mut r| r.take());
        if let Some(r) = reaper {
            r.abort();
            let _ = r.await;
        }
        // Hold the desired set so no API call starts something mid-shutdown.
        let _change = self.inner.desired.write().await;
        self.inner.manager.shutdown().await;
        // Set even when no task holds a receiver any more.
        self.inner.stop.send_replace(true);
        let tasks: Vec<JoinHandle<()>> = match self.inner.tasks.lock() {
            Ok(mut t) => t.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        for t in tasks {
            let _ = t.await;
        }
        let sinks = self.inner.sinks.lock().ok().and_then(|mut s| s.take());
        if let Some(s) = sinks {
            s.shutdown(Duration::from_secs(3)).await;
        }
    }

    /// Create an instance, or return the one its isolation key already has.
    /// Returns once the record is stored as `queued`; a task does the rest and
    /// reports through `instance.state` events.
    pub async fn create_instance(&self, req: CreateRequest) -> Result<Created> {
        self.inner.instances.create(req).await
    }

    /// Check a create request as `create_instance` would (feature, mode,
    /// options, name) without creating anything.
    pub async fn check_instance(&self, req: &CreateRequest) -> Result<()> {
        self.inner.instances.check(req).await
    }

    /// One instance, by id or name.
    pub fn instance(&self, id_or_name: &str) -> Result<Instance> {
        self.inner.instances.instance(id_or_name)
    }

    /// Every instance, by name.
    pub fn instance_list(&self) -> Vec<Instance> {
        self.inner.instances.list()
    }

    /// Stop an instance's process; it keeps its ports, network and config.
    pub async fn stop_instance(&self, id_or_name: &str) -> Result<Instance> {
        let (i, id) = (self.inner.instances.clone(), id_or_name.to_string());
        detached(async move { i.stop(&id).await }).await
    }

    /// Start a stopped instance (and wait until it is healthy), or make an
    /// instance in error again from the first step.
    pub async fn start_instance(&self, id_or_name: &str) -> Result<Instance> {
        let (i, id) = (self.inner.instances.clone(), id_or_name.to_string());
        detached(async move { i.start(&id).await }).await
    }

    /// Restart an instance's process.
    pub async fn restart_instance(&self, id_or_name: &str) -> Result<Instance> {
        let (i, id) = (self.inner.instances.clone(), id_or_name.to_string());
        detached(async move { i.restart(&id).await }).await
    }

    /// Delete an instance: stop its process, undo every step, forget it.
    /// A create in progress is cancelled and rolled back first.
    pub async fn delete_instance(&self, id_or_name: &str) -> Result<()> {
        let (i, id) = (self.inner.instances.clone(), id_or_name.to_string());
        detached(async move { i.delete(&id).await }).await
    }

    /// Change an instance's mode and options: validated and rendered first;
    /// the new config replaces the old only once its checker accepts it, then
    /// the process restarts. On any failure the old config stays.
    pub async fn update_instance(
        &self,
        id_or_name: &str,
        mode: Option<String>,
        options: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Instance> {
        let (i, id) = (self.inner.instances.clone(), id_or_name.to_string());
        detached(async move { i.update_options(&id, mode, options).await }).await
    }

    /// An instance written for another scheduler (`nomad`, `kubernetes`):
    /// a Nomad job or Kubernetes objects, secret options as references the
    /// target resolves. Changes nothing.
    pub async fn export_instance(&self, id_or_name: &str, format: &str) -> Result<crate::Export> {
        self.inner.instances.export(id_or_name, format).await
    }

    /// Every feature of the daemon's catalog, or those matching every word
    /// of `query`, best first.
    pub async fn features(&self, query: &str) -> Result<Vec<hangar_feature::catalog::Entry>> {
        self.inner.instances.features(query).await
    }

    /// One feature: its manifest, this machine's download, its installs.
    pub async fn feature(&self, id: &str) -> Result<crate::FeatureInfo> {
        self.inner.instances.feature(id).await
    }

    /// Install a version of a feature (`None`: the manifest's) with the
    /// installer the instances use, and make it current. `on_step` sees the
    /// progress (downloads at most every 100 ms). Recorded as a
    /// `feature.installed` or `feature.install_failed` event. The install
    /// goes on to its end if the caller goes away.
    pub async fn install_feature(
        &self,
        id: &str,
        version: Option<&str>,
        allow_unverified: bool,
        on_step: impl Fn(&hangar_fetch::Step) + Send + Sync + 'static,
    ) -> Result<hangar_fetch::Installed> {
        let (i, id, v) = (
            self.inner.instances.clone(),
            id.to_string(),
            version.map(str::to_string),
        );
        detached(async move {
            i.install_feature(&id, v.as_deref(), allow_unverified, &on_step)
                .await
        })
        .await
    }

    /// Uninstall a version of a feature (`None`: every version); refused
    /// (`FEATURE_IN_USE`) while an instance uses it. Recorded as a
    /// `feature.uninstalled` event.
    pub async fn uninstall_feature(&self, id: &str, version: Option<&str>) -> Result<Vec<String>> {
        let (i, id, v) = (
            self.inner.instances.clone(),
            id.to_string(),
            version.map(str::to_string),
        );
        detached(async move { i.uninstall_feature(&id, v.as_deref()).await }).await
    }

    /// Every installed version of every feature.
    pub async fn installed_features(&self) -> Result<Vec<hangar_fetch::Installed>> {
        self.inner.instances.installed().await
    }

    /// SIGKILL every process group now (a second signal during shutdown).
    pub fn kill_all(&self) -> usize {
        self.inner.manager.kill_all()
    }

    /// The desired set at boot: the config's processes, plus API-added records.
    /// Config processes keep a desired state recorded earlier (stopped stays
    /// stopped across restarts).
    fn desired_from(
        &self,
        config: DaemonConfig,
        records: &[hangar_store::ProcessRecord],
    ) -> WantMap {
        let recorded: BTreeMap<&str, &hangar_store::ProcessRecord> =
            records.iter().map(|r| (r.name.as_str(), r)).collect();
        let mut out = BTreeMap::new();
        for r in records.iter().filter(|r| r.source != Source::Config) {
            match serde_json::from_str::<ProcessSpec>(&r.spec_json) {
                Ok(spec) => {
                    out.insert(
                        r.name.clone(),
                        Arc::new(Want {
                            spec,
                            source: r.source,
                            desired: r.desired,
                        }),
                    );
                }
                Err(e) => warn!(process = %r.name, "stored spec unreadable, skipped: {e}"),
            }
        }
        for spec in config.processes.into_iter().flat_map(|s| s.expand()) {
            let desired = recorded
                .get(spec.name.as_str())
                .filter(|r| r.source == Source::Config)
                .map(|r| r.desired)
                .unwrap_or(Desired::Running);
            out.insert(
                spec.name.clone(),
                Arc::new(Want {
                    spec,
                    source: Source::Config,
                    desired,
                }),
            );
        }
        out
    }

    /// Take supervisor events, persist them with the observed state they imply,
    /// then announce them. Ends (after a last drain) when the daemon stops.
    async fn persist(
        self,
        mut events: broadcast::Receiver<Event>,
        mut own: tokio::sync::mpsc::UnboundedReceiver<EventRecord>,
        mut stop: watch::Receiver<bool>,
    ) {
        use broadcast::error::{RecvError, TryRecvError};
        hangar_base::crash_point!("daemon.persist.begin");
        let mut closing = false;
        let mut resync = false;
        // Events the store refused, held until it takes writes again.
        let mut spool = Spool::default();
        // While the store refuses, it is tried at most this often; a released
        // reserve is made again on the same beat.
        let mut next_try = tokio::time::Instant::now();
        loop {
            let mut batch: Vec<Event> = Vec::new();
            let mut mine: Vec<EventRecord> = Vec::new();
            let mut lagged = false;
            let waiting = !spool.is_empty() || self.inner.store.reserve_missing();
            if !closing {
                tokio::select! {
                    Some(r) = own.recv() => mine.push(r),
                    r = events.recv() => match r {
                        Ok(ev) => batch.push(ev),
                        Err(RecvError::Lagged(n)) => {
                            warn!(lost = n, "event pipeline fell behind; resynchronising observed state");
                            spool.lose(n, Some(now_ms()), Loss::Lagged);
                            lagged = true;
                        }
                        Err(RecvError::Closed) => closing = true,
                    },
                    _ = stop.changed() => closing = true,
                    _ = tokio::time::sleep_until(next_try), if waiting => {}
                }
            }
            while batch.len() < BATCH {
                match events.try_recv() {
                    Ok(ev) => batch.push(ev),
                    Err(TryRecvError::Lagged(n)) => {
                        spool.lose(n, Some(now_ms()), Loss::Lagged);
                        lagged = true;
                    }
                    Err(_) => break,
                }
            }
            while mine.len() < BATCH {
                match own.try_recv() {
                    Ok(r) => mine.push(r),
                    Err(_) => break,
                }
            }
            let now = tokio::time::Instant::now();
            if self.inner.store.reserve_missing() && spool.is_empty() && now >= next_try {
                next_try = now + STORE_RETRY;
                let store = Arc::clone(&self.inner.store);
                if blocking(move || Ok(store.restore_reserve()))
                    .await
                    .unwrap_or(false)
                {
                    info!("disk space is back: the store's reserve is made again");
                    mine.push(spool::daemon_event(
                        "store.reserve_restored",
                        "ok",
                        json!({"reserve_bytes": hangar_store::RESERVE_BYTES}),
                    ));
                }
            }
            if batch.is_empty() && mine.is_empty() && !lagged && spool.is_empty() {
                if closing {
                    return;
                }
                continue;
            }
            let mut observed: Vec<Observation> = batch.iter().filter_map(observation).collect();
            let mut records: Vec<EventRecord> = batch.iter().map(record).collect();
            records.append(&mut mine);
            // The store refused the last write: hold these until the next try.
            if !spool.is_empty() && now < next_try && !closing {
                spool.hold(records);
                resync = true;
                continue;
            }
            if lagged || resync {
                observed.extend(self.snapshot_observations());
                resync = false;
            }
            // A write the store refuses (disk full, a locked database) is tried
            // again at once a few times when the store was well, else once per
            // beat; refused events wait in the spool, in order, and are
            // announced only once stored.
            let attempts = if spool.is_empty() { 3u32 } else { 1 };
            let mut pending = spool.take(records);
            let store = Arc::clone(&self.inner.store);
            let write = move || {
                // The pid's start time pins its identity for crash recovery.
                for o in observed.iter_mut() {
                    if let Some(pid) = o.pid {
                        o.pid_start = recovery::stat(pid).map(|s| s.start);
                    }
                }
                let mut ok = false;
                for attempt in 0..attempts {
                    if attempt > 0 {
                        std::thread::sleep(Duration::from_millis(50 << attempt));
                    }
                    match store.apply(&observed, &mut pending.records) {
                        Ok(()) => {
                            ok = true;
                            break;
                        }
                        Err(e) => warn!(code = e.code(), attempt, "could not persist events: {e}"),
                    }
                }
                // The disk filled and the reserve's space let this write
                // through: record that, in that space.
                if ok && store.take_reserve_released() {
                    warn!("the disk holding the store is full; its reserve was released");
                    let mut full = vec![spool::daemon_event(
                        "store.full",
                        "full",
                        json!({"reserve_bytes": hangar_store::RESERVE_BYTES,
                               "path": store.path().map(|p| p.display().to_string())}),
                    )];
                    if store.apply(&[], &mut full).is_ok() {
                        pending.records.extend(full);
                    }
                }
                (ok, pending)
            };
            let (ok, pending) = match tokio::task::spawn_blocking(write).await {
                Ok(r) => r,
                Err(e) => {
                    warn!("persist task failed: {e}");
                    return;
                }
            };
            if !ok {
                spool.refused(pending);
                warn!(
                    held = spool.held(),
                    "events held in memory until the store takes them"
                );
                resync = true;
                next_try = tokio::time::Instant::now() + STORE_RETRY;
                if closing {
                    warn!(
                        lost = spool.held(),
                        "events lost at shutdown: the store refused them"
                    );
                    return;
                }
                continue;
            }
            spool.stored(&pending);
            let records = pending.records;
            if let Some(last) = records.last() {
                self.inner.last_event_id.store(last.id, Ordering::Relaxed);
            }
            let sinks = self.inner.sinks.lock().ok();
            for r in records {
                let r = Arc::new(r);
                if let Some(Some(s)) = sinks.as_deref() {
                    s.offer(&r);
                }
                let _ = self.inner.bus.send(r);
            }
        }
    }

    fn snapshot_observations(&self) -> Vec<Observation> {
        let at = now_ms();
        self.inner
            .manager
            .status_all("*")
            .unwrap_or_default()
            .into_iter()
            .map(|s| Observation {
                name: s.name.to_string(),
                state: s.state.as_str().to_string(),
                pid: s.pid,
                pgid: s.pid,
                pid_start: None,
                restarts: s.restarts,
                at_ms: at,
            })
            .collect()
    }

    /// Compare desired and observed state at an interval: start what should run
    /// but is unknown to the supervisor or stopped, stop what should not run,
    /// and prune the history.
    async fn reconcile_loop(self, mut stop: watch::Receiver<bool>) {
        hangar_base::crash_point!("daemon.reconcile.begin");
        let every = self.inner.settings.reconcile_interval;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_prune: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            self.reconcile_once().await;
            if last_prune.is_none_or(|t| t.elapsed() > Duration::from_secs(600)) {
                last_prune = Some(tokio::time::Instant::now());
                let h = self.inner.settings.history.clone();
                let store = Arc::clone(&self.inner.store);
                let res = blocking(move || {
                    store
                        .prune_events(
                            Some(h.max_age.as_millis() as i64),
                            Some(h.max_rows),
                            now_ms(),
                        )
                        .map_err(Error::from)
                })
                .await;
                match res {
                    Ok(n) if n > 0 => info!(events = n, "pruned event history"),
                    Ok(_) => {}
                    Err(e) => warn!(code = e.code(), "could not prune history: {}", e.message),
                }
            }
        }
    }

    /// One reconciler pass. Exited and failed processes are left alone: their
    /// restart policy and circuit breaker decided that, and the reconciler must
    /// not fight them.
    pub async fn reconcile_once(&self) {
        let Some(change) = self.inner.desired.try_write() else {
            return; // a reload or API change is under way
        };
        let applied = change.current();
        let mgr = &self.inner.manager;
        let mut jobs = tokio::task::JoinSet::new();
        for (name, want) in applied.iter() {
            let status = mgr.status(name).ok();
            match (want.desired, status.as_ref().map(|s| s.state)) {
                (Desired::Running, None | Some(State::Stopped)) => {
                    let (mgr, spec) = (mgr.clone(), want.spec.clone());
                    jobs.spawn(async move { (spec.name.clone(), start_one(&mgr, spec).await) });
                }
                (Desired::Stopped, Some(s)) if s.is_active() && s != State::Stopping => {
                    let (mgr, name) = (mgr.clone(), name.clone());
                    jobs.spawn(async move {
                        (
                            name.clone(),
                            mgr.stop(&name, None).await.map_err(Error::from),
                        )
                    });
                }
                _ => {}
            }
        }
        while let Some(j) = jobs.join_next().await {
            if let Ok((name, Err(e))) = j {
                warn!(process = %name, code = e.code(), "reconciler: {}", e.message);
            }
        }
        drop(change);
    }
}

fn observation(ev: &Event) -> Option<Observation> {
    let EventKind::State { to, restarts, .. } = &ev.kind else {
        return None;
    };
    let pid = if to.is_active() { ev.pid } else { None };
    Some(Observation {
        name: ev.name.to_string(),
        state: to.as_str().to_string(),
        pid,
        pgid: pid,
        pid_start: None,
        restarts: *restarts,
        at_ms: ms(ev.at),
    })
}

fn record(ev: &Event) -> EventRecord {
    let (kind, from, to, detail) = match &ev.kind {
        EventKind::State {
            from,
            to,
            exit,
            error,
            restarts,
            restart,
            failure,
        } => {
            let mut d = serde_json::Map::new();
            d.insert("restarts".into(), (*restarts).into());
            // What the transition was, said by the state machine, so readers
            // (metrics) count restarts and failures without guessing from
            // state names: a restart without backoff goes running -> starting.
            if *restart {
                d.insert("restart".into(), true.into());
            }
            if *failure {
                d.insert("failure".into(), true.into());
            }
            if let Some(x) = exit {
                d.insert("exit".into(), x.to_string().into());
                if let Some(c) = x.code {
                    d.insert("exit_code".into(), c.into());
                }
                if let Some(s) = x.signal {
                    d.insert("signal".into(), s.into());
                }
            }
            if let Some(e) = error {
                d.insert("error_code".into(), e.code().into());
                d.insert("error".into(), e.message().into());
                if let Some(h) = e.hint() {
                    d.insert("hint".into(), h.into());
                }
            }
            (
                "state",
                from.as_str().to_string(),
                to.as_str().to_string(),
                d,
            )
        }
        EventKind::Health {
            probe,
            from,
            to,
            error,
        } => {
            let mut d = serde_json::Map::new();
            d.insert("probe".into(), probe.to_string().into());
            if let Some(e) = error {
                d.insert("error".into(), e.clone().into());
            }
            ("health", from.to_string(), to.to_string(), d)
        }
        _ => (
            "other",
            String::new(),
            String::new(),
            serde_json::Map::new(),
        ),
    };
    EventRecord {
        id: 0,
        at_ms: ms(ev.at),
        name: ev.name.to_string(),
        pid: ev.pid,
        kind: kind.to_string(),
        from,
        to,
        detail: serde_json::Value::Object(detail),
    }
}
