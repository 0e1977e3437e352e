//! [`Manager`]: the registry of supervised processes and the public API.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures_channel::mpsc;
use tokio::sync::{broadcast, oneshot};

use crate::cgroup::{validate_group, Cgroups, Placement, ResourceUsage};
use crate::deps::{find_cycle, stop_batches};

use crate::error::{Error, ErrorKind, Result};
use crate::event::{Event, EventKind};
use crate::logs::{LogPump, ProcessLog, Stream};
use crate::ports::{PortRange, PortRegistry};
use crate::process::{Actor, Command, Shared};
use crate::spawn::Spawner;
use crate::spec::ProcessSpec;
use crate::state::State;
use crate::status::{ProcessStatus, Tail};

/// How long orphans left at shutdown get between the stop signal and SIGKILL.
const ORPHAN_GRACE: Duration = Duration::from_secs(5);

/// The port range processes' named ports come from.
pub(crate) const PROCESS_PORTS: &str = "processes";

/// Settings of a [`Manager`].
#[derive(Debug, Clone)]
pub struct ManagerOptions {
    /// Threads that fork and exec (default 2).
    pub spawn_threads: usize,
    /// Events buffered per subscriber before a slow one starts losing them.
    pub event_capacity: usize,
    /// Seed for restart jitter; random when unset. Set it for repeatable tests.
    pub jitter_seed: Option<u64>,
    /// Ports handed to processes that ask for named `ports`.
    pub port_range: std::ops::RangeInclusive<u16>,
    /// The name of this supervisor's directory in the cgroup tree: processes
    /// with `limits` get `<base>/hangar/<cgroup_group>/<process name>`. A daemon
    /// should give a stable name unique on the host (so that
    /// [`Cgroups::remove_group`] finds what a crashed run left); unset, a name
    /// unique to this manager (`<pid>-<n>`).
    pub cgroup_group: Option<String>,
    /// This supervisor's id, in every child's environment as
    /// `HANGAR_SUPERVISOR_ID` (descendants inherit it: it tells whose an
    /// orphan is, and a daemon's recovery finds what a crashed run left by
    /// it). A daemon should give one stable per data dir; unset, the cgroup
    /// group name.
    pub supervisor_id: Option<String>,
    /// Become the child subreaper of this program (`PR_SET_CHILD_SUBREAPER`)
    /// and reap every orphan that reparents to it; descendants that left
    /// their process group then end with their process, and whatever is left
    /// ends at [`Manager::shutdown`]. For programs whose job is supervising
    /// (`hangar run`, `hangar serve`): every other child of the program must
    /// be claimed ([`hangar_base::children`]) or the sweep reaps it.
    pub subreaper: bool,
    /// Give every process a cgroup of its own where the host lets hangar make
    /// one (root, or a delegated cgroup v2 subtree), not only those with
    /// `limits`: stopping a process then kills its whole cgroup, whatever left
    /// its process group, and its usage is counted. Quietly nothing where
    /// cgroups cannot be made.
    pub cgroup_every_process: bool,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        ManagerOptions {
            spawn_threads: 2,
            event_capacity: 4096,
            jitter_seed: None,
            port_range: 20000..=29999,
            cgroup_group: None,
            supervisor_id: None,
            subreaper: false,
            cgroup_every_process: false,
        }
    }
}

/// What every process task shares.
pub(crate) struct Ctx {
    pub spawner: Spawner,
    pub events: broadcast::Sender<Event>,
    pub seq: AtomicU64,
    pub base_env: Arc<Vec<(String, String)>>,
    global_env: RwLock<Arc<Vec<(String, String)>>>,
    /// The process table: name → entry. Process tasks read it to watch their
    /// dependencies.
    pub procs: RwLock<HashMap<Arc<str>, Entry>>,
    pub ports: PortRegistry,
    /// One pooled HTTP client for every HTTP probe.
    pub http: crate::probe::HttpClient,
    /// Where processes' cgroups go.
    pub placement: Arc<Placement>,
}

impl Ctx {
    /// Announce an event (no subscriber is fine).
    pub(crate) fn emit(&self, name: &Arc<str>, pid: Option<u32>, kind: EventKind) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let _ = self.events.send(Event {
            seq,
            at: std::time::SystemTime::now(),
            name: Arc::clone(name),
            pid,
            kind,
        });
    }

    pub(crate) fn global_env(&self) -> Arc<Vec<(String, String)>> {
        match self.global_env.read() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }
}

pub(crate) struct Entry {
    tx: mpsc::UnboundedSender<Command>,
    pub shared: Arc<Shared>,
}

/// Supervises named processes: start, stop, restart, status, by name or glob.
///
/// Cheap to clone; every method may be called concurrently from many tasks. Lookup
/// by name is a hash-map read; each process is driven by its own task, so the map
/// lock is never held across an await.
///
/// Must be used inside a tokio runtime (with the `time` and `net` drivers enabled).
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Arc<Ctx>,
    seeds: Mutex<fastrand::Rng>,
    closing: AtomicBool,
    usage: crate::usage::UsageCache,
}

impl Manager {
    /// A manager with default options.
    pub fn new() -> Result<Manager> {
        Manager::with_options(ManagerOptions::default())
    }

    /// A manager with these options. Starts the spawner and log threads.
    pub fn with_options(opts: ManagerOptions) -> Result<Manager> {
        let io_err = |e: std::io::Error| {
            Error::of(ErrorKind::Io, "could not start supervisor threads")
                .source(e)
                .hint("the system may be out of threads or file descriptors")
                .build()
        };
        let group = match opts.cgroup_group {
            Some(g) => {
                validate_group(&g).map_err(|m| {
                    Error::of(ErrorKind::InvalidSpec, m)
                        .hint("give cgroup_group as one directory name, e.g. \"daemon\"")
                        .build()
                })?;
                g
            }
            None => {
                static MANAGERS: AtomicU64 = AtomicU64::new(0);
                let n = MANAGERS.fetch_add(1, Ordering::Relaxed);
                format!("{}-{n}", std::process::id())
            }
        };
        if opts.subreaper {
            crate::tree::install().map_err(|e| {
                Error::of(ErrorKind::Io, "could not become the child subreaper")
                    .source(e)
                    .hint("hangar needs Linux >= 3.4 (PR_SET_CHILD_SUBREAPER) and a tokio runtime with signal handling")
                    .build()
            })?;
        }
        let supervisor_id = Arc::from(opts.supervisor_id.as_deref().unwrap_or(&group));
        let placement = Arc::new(Placement {
            host: Cgroups::host(),
            group,
            supervisor_id,
            every_process: opts.cgroup_every_process,
            spawns: AtomicU64::new(0),
        });
        let logs = LogPump::start().map_err(io_err)?;
        let spawner = Spawner::new(opts.spawn_threads, logs.clone(), Arc::clone(&placement))
            .map_err(io_err)?;
        let (events, _) = broadcast::channel(opts.event_capacity.max(16));
        let base_env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        let range = PortRange::new(
            PROCESS_PORTS,
            *opts.port_range.start(),
            *opts.port_range.end(),
        );
        let ports = PortRegistry::new([range]).map_err(|e| {
            Error::of(
                ErrorKind::InvalidSpec,
                format!("invalid port range: {}", e.message),
            )
            .hint(e.hint)
            .build()
        })?;
        let http = crate::probe::http_client();
        let seeds = match opts.jitter_seed {
            Some(s) => fastrand::Rng::with_seed(s),
            None => fastrand::Rng::new(),
        };
        Ok(Manager {
            inner: Arc::new(Inner {
                ctx: Arc::new(Ctx {
                    spawner,
                    events,
                    seq: AtomicU64::new(0),
                    base_env: Arc::new(base_env),
                    global_env: RwLock::new(Arc::new(Vec::new())),
                    procs: RwLock::new(HashMap::new()),
                    ports,
                    http,
                    placement,
                }),
                seeds: Mutex::new(seeds),
                closing: AtomicBool::new(false),
                usage: crate::usage::UsageCache::default(),
            }),
        })
    }

    /// Subscribe to events (state changes of every process).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.ctx.events.subscribe()
    }

    /// Set environment variables given to every process started from now on (under
    /// each spec's own `env`). Entries are `KEY=VALUE`.
    pub fn set_global_env<I, S>(&self, vars: I) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = Vec::new();
        for v in vars {
            let v = v.as_ref();
            match v.split_once('=') {
                Some((k, val)) if !k.is_empty() && !v.contains('\0') => {
                    out.push((k.to_string(), val.to_string()))
                }
                _ => {
                    return Err(Error::of(
                        ErrorKind::InvalidSpec,
                        format!("invalid environment entry {v:?}"),
                    )
                    .hint("write entries as KEY=VALUE")
                    .build())
                }
            }
        }
        if let Ok(mut g) = self.inner.ctx.global_env.write() {
            *g = Arc::new(out);
        }
        Ok(())
    }

    /// Register and start one process. Resolves once it runs (with its pid) or its
    /// start failed. With a readiness probe, "runs" means the probe passed; with
    /// `depends_on`, the process first waits (state `Waiting`) for its dependencies,
    /// and a dependency cycle with the registered processes is refused. A process of the same name that is stopped, exited or failed
    /// is replaced; one that is active is a `DUPLICATE_NAME` error.
    pub async fn start(&self, spec: ProcessSpec) -> Result<u32> {
        if spec.instances > 1 {
            return Err(Error::of(
                ErrorKind::InvalidSpec,
                format!("spec asks for {} instances", spec.instances),
            )
            .ctx("name", &spec.name)
            .hint("use start_n to start several instances")
            .build());
        }
        spec.validate()?;
        self.check_cycles(std::slice::from_ref(&spec))?;
        self.check_room([spec.name.as_str()])?;
        let rx = self.send_start(Arc::new(spec))?;
        rx.await.unwrap_or_else(|_| Err(gone()))
    }

    /// Start `spec.instances` copies named `name-1` … `name-N`, concurrently.
    /// Returns one result per instance, in order.
    pub async fn start_n(&self, spec: ProcessSpec) -> Vec<(String, Result<u32>)> {
        if let Err(e) = spec.validate() {
            return vec![(spec.name.clone(), Err(e))];
        }
        let mut instances = spec.expand();
        if spec.instances == 1 {
            // start_n numbers even a single instance (`name-1`), as it always has;
            // expand() leaves a spec of one instance as it is.
            let mut two = spec.clone();
            two.instances = 2;
            instances = two.expand();
            instances.truncate(1);
        }
        // The graph holds the instance names, which is what others depend on.
        if let Err(e) = self.check_cycles(&instances) {
            return vec![(spec.name.clone(), Err(e))];
        }
        // All or none: a set that does not fit is refused before any starts.
        if let Err(e) = self.check_room(instances.iter().map(|s| s.name.as_str())) {
            return vec![(spec.name.clone(), Err(e))];
        }
        let mut pending = Vec::with_capacity(instances.len());
        for one in instances {
            let name = one.name.clone();
            let sent = one.validate().and_then(|()| self.send_start(Arc::new(one)));
            pending.push((name, sent));
        }
        let mut out = Vec::with_capacity(pending.len());
        for (name, rx) in pending {
            let res = match rx {
                Ok(rx) => rx.await.unwrap_or_else(|_| Err(gone())),
                Err(e) => Err(e),
            };
            out.push((name, res));
        }
        out
    }

    /// Whether the processes `names` fit beside those registered (see
    /// [`crate::fdlimit`]); names already registered take no more room.
    fn check_room<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Result<()> {
        let procs = self.inner.ctx.procs.read().map_err(|_| poisoned())?;
        let adding = names
            .into_iter()
            .filter(|n| !procs.contains_key(*n))
            .count();
        crate::fdlimit::check((procs.len() + adding) as u64, adding as u64)
    }

    /// Whether `total` registered processes, `adding` of them not registered
    /// yet, fit under the descriptor limit in force and the kernel's free
    /// pids: a `CAPACITY_EXCEEDED` error with the numbers and the fix if not.
    /// For callers about to start a whole set, so that none starts when the
    /// set cannot be held.
    pub fn check_capacity(&self, total: usize, adding: usize) -> Result<()> {
        crate::fdlimit::check(total as u64, adding as u64)
    }

    fn send_start(&self, spec: Arc<ProcessSpec>) -> Result<oneshot::Receiver<Result<u32>>> {
        self.check_open()?;
        let (reply, rx) = oneshot::channel();
        let name: Arc<str> = Arc::from(spec.name.as_str());
        let mut procs = self.inner.ctx.procs.write().map_err(|_| poisoned())?;
        let cmd = Command::Start {
            spec: Some(Arc::clone(&spec)),
            reply,
        };
        if let Some(entry) = procs.get(&name) {
            if let Err(e) = entry.tx.unbounded_send(cmd) {
                let cmd = e.into_inner();
                // The task ended (removal in flight): replace the entry.
                procs.remove(&name);
                let entry = self.spawn_actor(spec);
                let _ = entry.tx.unbounded_send(cmd);
                procs.insert(name, entry);
            }
        } else {
            let entry = self.spawn_actor(spec);
            let _ = entry.tx.unbounded_send(cmd);
            procs.insert(name, entry);
        }
        Ok(rx)
    }

    fn spawn_actor(&self, spec: Arc<ProcessSpec>) -> Entry {
        let name: Arc<str> = Arc::from(spec.name.as_str());
        let shared = Arc::new(Shared {
            status: Mutex::new(Arc::new(ProcessStatus::new(Arc::clone(&name)))),
            log: ProcessLog::new(name, spec.log.clone()),
            spec: Mutex::new(Arc::clone(&spec)),
            probe_generation: std::sync::atomic::AtomicU64::new(0),
            cgroup: Mutex::new(None),
        });
        let seed = match self.inner.seeds.lock() {
            Ok(mut r) => r.u64(..),
            Err(_) => 0,
        };
        // futures-channel's queues allocate per message, not a block up front:
        // most processes never get a command after their start, and most
        // have no probe (tokio's channels cost ~1.3 KB each at creation).
        let (tx, rx) = mpsc::unbounded();
        let (probe_tx, probe_rx) = mpsc::unbounded();
        let actor = Actor::new(
            spec,
            Arc::clone(&shared),
            Arc::clone(&self.inner.ctx),
            seed,
            probe_tx,
        );
        tokio::spawn(actor.run(rx, probe_rx));
        Entry { tx, shared }
    }

    /// Start a registered process again (from stopped, exited, failed or backoff).
    /// Closes an open restart circuit. Resolves with the pid once it runs.
    pub async fn start_name(&self, name: &str) -> Result<u32> {
        self.check_open()?;
        let (reply, rx) = oneshot::channel();
        self.send(name, Command::Start { spec: None, reply })?;
        rx.await.unwrap_or_else(|_| Err(gone()))
    }

    /// Stop then start a process (or just start it if it is not running).
    pub async fn restart(&self, name: &str) -> Result<u32> {
        self.check_open()?;
        let (reply, rx) = oneshot::channel();
        self.send(name, Command::Restart { reply })?;
        rx.await.unwrap_or_else(|_| Err(gone()))
    }

    /// Close an open circuit and start again; same as [`Manager::start_name`].
    pub async fn reset(&self, name: &str) -> Result<u32> {
        self.start_name(name).await
    }

    /// Stop a process: its stop signal to the whole group, SIGKILL to the group after
    /// `timeout` (the spec's `stop_timeout` when `None`). Resolves when it is gone.
    /// The process stays registered and can be started again.
    pub async fn stop(&self, name: &str, timeout: Option<Duration>) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(name, Command::Stop { timeout, reply })?;
        let _ = rx.await;
        Ok(())
    }

    /// Send `sig` to a running process: its main process, or with `group` its
    /// whole process group. Returns the main pid. `PROCESS_NOT_RUNNING` when it
    /// has no child now.
    pub async fn signal(&self, name: &str, sig: crate::SignalName, group: bool) -> Result<u32> {
        let (reply, rx) = oneshot::channel();
        self.send(name, Command::Signal { sig, group, reply })?;
        rx.await.unwrap_or_else(|_| Err(gone()))
    }

    /// Stop every process whose name matches `pattern` (a glob: `web-*`), all at
    /// once. Returns the names stopped.
    pub async fn stop_all(&self, pattern: &str, timeout: Option<Duration>) -> Result<Vec<String>> {
        let matcher = Matcher::new(pattern)?;
        let names: BTreeSet<String> = {
            let procs = self.inner.ctx.procs.read().map_err(|_| poisoned())?;
            procs
                .keys()
                .filter(|n| matcher.matches(n))
                .map(|n| n.to_string())
                .collect()
        };
        self.in_dependency_order(&names, |reply| Command::Stop { timeout, reply })
            .await;
        Ok(names.into_iter().collect())
    }

    /// Stop these processes (they stay registered), dependents before their
    /// dependencies: each batch at once, waited for before the next. Names not
    /// registered are skipped.
    pub async fn stop_many(&self, names: &BTreeSet<String>, timeout: Option<Duration>) {
        self.in_dependency_order(names, |reply| Command::Stop { timeout, reply })
            .await;
    }

    /// Stop and forget these processes, dependents before their dependencies.
    /// They leave the table at once (a start of the same name registers a new
    /// process); each batch is stopped at once and waited for before the next.
    pub async fn remove_many(&self, names: &BTreeSet<String>) {
        let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
        let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if let Ok(mut procs) = self.inner.ctx.procs.write() {
            for n in names {
                if let Some(e) = procs.remove(n.as_str()) {
                    e.shared.log.close();
                    if let Ok(spec) = e.shared.spec.lock() {
                        deps.insert(n.clone(), spec.depends_on.keys().cloned().collect());
                    }
                    entries.insert(n.clone(), e);
                }
            }
        }
        let present: BTreeSet<String> = entries.keys().cloned().collect();
        for batch in stop_batches(&present, &deps) {
            let mut waits = Vec::with_capacity(batch.len());
            for name in &batch {
                if let Some(entry) = entries.get(name.as_str()) {
                    let (reply, rx) = oneshot::channel();
                    if entry
                        .tx
                        .unbounded_send(Command::Remove {
                            timeout: None,
                            reply,
                        })
                        .is_ok()
                    {
                        waits.push(rx);
                    }
                }
            }
            for rx in waits {
                let _ = rx.await;
            }
        }
    }

    /// Send a stop-like command to `names`, dependents before their dependencies:
    /// each batch is stopped concurrently, and waited for before the next.
    async fn in_dependency_order(
        &self,
        names: &BTreeSet<String>,
        cmd: impl Fn(oneshot::Sender<()>) -> Command,
    ) {
        let deps: BTreeMap<String, Vec<String>> = match self.inner.ctx.procs.read() {
            Ok(procs) => names
                .iter()
                .filter_map(|n| {
                    let e = procs.get(n.as_str())?;
                    let spec = e.shared.spec.lock().ok()?.clone();
                    Some((n.clone(), spec.depends_on.keys().cloned().collect()))
                })
                .collect(),
            Err(_) => BTreeMap::new(),
        };
        for batch in stop_batches(names, &deps) {
            let mut waits = Vec::with_capacity(batch.len());
            if let Ok(procs) = self.inner.ctx.procs.read() {
                for name in &batch {
                    if let Some(entry) = procs.get(name.as_str()) {
                        let (reply, rx) = oneshot::channel();
                        if entry.tx.unbounded_send(cmd(reply)).is_ok() {
                            waits.push(rx);
                        }
                    }
                }
            }
            for rx in waits {
                let _ = rx.await;
            }
        }
    }

    /// Refuse specs whose dependencies would close a cycle with the registered ones.
    fn check_cycles(&self, new: &[ProcessSpec]) -> Result<()> {
        if new.iter().all(|s| s.depends_on.is_empty()) {
            return Ok(());
        }
        let registered: Vec<(String, Vec<String>)> = {
            let procs = self.inner.ctx.procs.read().map_err(|_| poisoned())?;
            procs
                .iter()
                .filter_map(|(n, e)| {
                    let spec = e.shared.spec.lock().ok()?.clone();
                    Some((n.to_string(), spec.depends_on.keys().cloned().collect()))
                })
                .collect()
        };
        let mut graph: HashMap<&str, Vec<&str>> = registered
            .iter()
            .map(|(n, d)| (n.as_str(), d.iter().map(String::as_str).collect()))
            .collect();
        for s in new {
            graph.insert(
                s.name.as_str(),
                s.depends_on.keys().map(String::as_str).collect(),
            );
        }
        match find_cycle(&graph) {
            Some(cycle) => Err(Error::of(
                ErrorKind::DependencyCycle,
                format!("dependency cycle: {}", cycle.join(" -> ")),
            )
            .hint("remove one of the depends_on entries on the cycle")
            .build()),
            None => Ok(()),
        }
    }

    /// Stop a process and forget it.
    pub async fn remove(&self, name: &str, timeout: Option<Duration>) -> Result<()> {
        let entry = {
            let mut procs = self.inner.ctx.procs.write().map_err(|_| poisoned())?;
            procs.remove(name).ok_or_else(|| not_found(name))?
        };
        entry.shared.log.close();
        let (reply, rx) = oneshot::channel();
        if entry
            .tx
            .unbounded_send(Command::Remove { timeout, reply })
            .is_ok()
        {
            let _ = rx.await;
        }
        Ok(())
    }

    /// Status of one process.
    pub fn status(&self, name: &str) -> Result<ProcessStatus> {
        let procs = self.inner.ctx.procs.read().map_err(|_| poisoned())?;
        let entry = procs.get(name).ok_or_else(|| not_found(name))?;
        Ok(snapshot(&entry.shared))
    }

    /// Status of every process whose name matches `pattern`, sorted by name.
    pub fn status_all(&self, pattern: &str) -> Result<Vec<ProcessStatus>> {
        let matcher = Matcher::new(pattern)?;
        let procs = self.inner.ctx.procs.read().map_err(|_| poisoned())?;
        let mut out: Vec<ProcessStatus> = procs
            .iter()
            .filter(|(name, _)| matcher.matches(name))
            .map(|(_, e)| snapshot(&e.shared))
            .collect();
        drop(procs);
        out.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The snapshot of each of `names`, in their order (`None` for a name
    /// not registered), shared with the supervisor: no copy is made of any,
    /// and nothing is sorted, for listings of thousands.
    pub fn statuses_of<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Vec<Option<Arc<ProcessStatus>>> {
        let procs = match self.inner.ctx.procs.read() {
            Ok(p) => p,
            Err(p) => p.into_inner(),
        };
        names
            .into_iter()
            .map(|n| procs.get(n).map(|e| shared_snapshot(&e.shared)))
            .collect()
    }

    /// Name and state of every process: a cheap census, without copying whole
    /// snapshots. Unordered.
    pub fn states(&self) -> Vec<(Arc<str>, State)> {
        match self.inner.ctx.procs.read() {
            Ok(procs) => procs
                .iter()
                .filter_map(|(name, e)| {
                    Some((Arc::clone(name), e.shared.status.lock().ok()?.state))
                })
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// How many processes matching `pattern` are running.
    pub fn count(&self, pattern: &str) -> Result<usize> {
        let matcher = Matcher::new(pattern)?;
        let procs = self.inner.ctx.procs.read().map_err(|_| poisoned())?;
        Ok(procs
            .iter()
            .filter(|(name, e)| {
                matcher.matches(name)
                    && e.shared
                        .status
                        .lock()
                        .is_ok_and(|s| s.state == State::Running)
            })
            .count())
    }

    /// Run `spec` once, to completion or for at most `timeout`, and return its
    /// exit and its output (stdout and stderr interleaved, the last
    /// [`ONCE_OUTPUT_LIMIT`](crate::ONCE_OUTPUT_LIMIT) bytes).
    ///
    /// The command is spawned like any process of this manager: on the
    /// spawner threads, in its own session and process group, with
    /// `PR_SET_PDEATHSIG` (unless `die_with_supervisor` is off), the global
    /// environment (so recovery recognises it), and the spec's user, cgroup
    /// limits, network namespace and `no_new_privs`. Stdin is `/dev/null`. It
    /// is not registered: no name in the table, no events. On timeout its whole
    /// process group is killed and reaped and the result says `timed_out`;
    /// dropping the future does the same. Restart policy, stop signal, probes,
    /// ports, dependencies and log settings of the spec do not apply. With
    /// `limits`, the name must not be that of a running process (it names the
    /// cgroup).
    ///
    /// Errors: `INVALID_SPEC`, `SHUTTING_DOWN`, and `PROCESS_START_FAILED`
    /// when it cannot be started (the I/O error as its source).
    pub async fn run_once(&self, spec: ProcessSpec, timeout: Duration) -> Result<crate::RunOutput> {
        self.check_open()?;
        spec.validate()?;
        crate::once::run_once(&self.inner.ctx, Arc::new(spec), timeout).await
    }

    /// The port registry processes get their named ports from.
    pub fn ports(&self) -> &PortRegistry {
        &self.inner.ctx.ports
    }

    /// Names of all registered processes, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = match self.inner.ctx.procs.read() {
            Ok(p) => p.keys().map(|k| k.to_string()).collect(),
            Err(_) => Vec::new(),
        };
        v.sort();
        v
    }

    /// The last `lines` lines of a process's output (both streams, in order).
    pub fn tail(&self, name: &str, lines: usize) -> Result<Tail> {
        let procs = self.inner.ctx.procs.read().map_err(|_| poisoned())?;
        let entry = procs.get(name).ok_or_else(|| not_found(name))?;
        Ok(entry.shared.log.tail(lines))
    }

    /// Output lines after line number `after` (lines count from 1 since the process
    /// was registered; 0 gives everything still kept), at most `max`, with the
    /// number of the last line returned. Feed that number back in to follow.
    pub fn tail_since(&self, name: &str, after: u64, max: usize) -> Result<(u64, Tail)> {
        let procs = self.inner.ctx.procs.read().map_err(|_| poisoned())?;
        let entry = procs.get(name).ok_or_else(|| not_found(name))?;
        Ok(entry.shared.log.since(after, max))
    }

    /// Resolves once `name` has written a line numbered above `after` (see
    /// [`Manager::tail_since`]). Woken by the log thread, not polled. Fails with
    /// `PROCESS_NOT_FOUND` once the process is removed (or replaced by a new
    /// one of the same name, whose output starts again at line 1).
    pub async fn wait_output(&self, name: &str, after: u64) -> Result<()> {
        let log = {
            let procs = self.inner.ctx.procs.read().map_err(|_| poisoned())?;
            let entry = procs.get(name).ok_or_else(|| not_found(name))?;
            Arc::clone(&entry.shared.log)
        };
        loop {
            let more = log.more.notified();
            tokio::pin!(more);
            more.as_mut().enable();
            if log.is_closed() {
                return Err(not_found(name));
            }
            if log.last_line() > after {
                return Ok(());
            }
            more.await;
        }
    }

    /// Paths of a process's live log files (stdout, stderr), when it logs to files.
    pub fn log_paths(&self, name: &str) -> Result<(Option<PathBuf>, Option<PathBuf>)> {
        let procs = self.inner.ctx.procs.read().map_err(|_| poisoned())?;
        let entry = procs.get(name).ok_or_else(|| not_found(name))?;
        let log = &entry.shared.log;
        Ok((log.path(Stream::Stdout), log.path(Stream::Stderr)))
    }

    /// Stop everything (each with its own stop timeout), forget it, and refuse new
    /// starts. Resolves when every child is gone.
    pub async fn shutdown(&self) {
        self.inner.closing.store(true, Ordering::SeqCst);
        // Entries stay in the table until their process is gone, so status and
        // kill_all still see them while the stop runs. Dependents stop first.
        let names: BTreeSet<String> = match self.inner.ctx.procs.read() {
            Ok(procs) => procs.keys().map(|k| k.to_string()).collect(),
            Err(_) => BTreeSet::new(),
        };
        self.in_dependency_order(&names, |reply| Command::Remove {
            timeout: None,
            reply,
        })
        .await;
        if let Ok(mut procs) = self.inner.ctx.procs.write() {
            for e in procs.values() {
                e.shared.log.close();
            }
            procs.clear();
        }
        // Orphans no process claimed (no markers left to say whose they are)
        // end with the supervisor: nothing outlives it.
        if let Some(r) = crate::tree::reaper() {
            let sid = Arc::clone(&self.inner.ctx.placement.supervisor_id);
            let _ = tokio::task::spawn_blocking(move || r.end_all(&sid, ORPHAN_GRACE)).await;
        }
    }

    /// SIGKILL every process group at once, without waiting or stopping gracefully:
    /// the last resort before the supervisor exits in a hurry. Direct children would
    /// die with the supervisor anyway (PR_SET_PDEATHSIG); this reaches their
    /// descendants too. Returns how many groups were signalled.
    pub fn kill_all(&self) -> usize {
        let pids: Vec<u32> = match self.inner.ctx.procs.read() {
            Ok(p) => p
                .values()
                .filter_map(|e| e.shared.status.lock().ok().and_then(|s| s.pid))
                .collect(),
            Err(_) => Vec::new(),
        };
        for pid in &pids {
            let _ = crate::spawn::kill_group(*pid, rustix::process::Signal::KILL);
        }
        // And what left its process group but not its cgroup.
        if let Ok(p) = self.inner.ctx.procs.read() {
            for e in p.values() {
                let cg = e.shared.cgroup.lock().ok().and_then(|c| c.clone());
                if let Some(cg) = cg {
                    cg.kill_members();
                }
            }
        }
        // And every orphan that reparented to this subreaper.
        if let Some(r) = crate::tree::reaper() {
            r.kill_all_now(&self.inner.ctx.placement.supervisor_id);
        }
        pids.len()
    }

    /// This manager's directory name in the cgroup tree (see
    /// [`ManagerOptions::cgroup_group`]).
    pub fn cgroup_group(&self) -> &str {
        &self.inner.ctx.placement.group
    }

    /// The cgroup directories of a running process (one on v2, one per joined
    /// hierarchy on v1); empty when it has no cgroup (no `limits`, not running,
    /// or no usable cgroups on this host).
    pub fn cgroup_dirs(&self, name: &str) -> Result<Vec<PathBuf>> {
        Ok(self.cgroup_of(name)?.map(|c| c.dirs()).unwrap_or_default())
    }

    /// What a running process's cgroup has counted (memory, cpu time, tasks, OOM
    /// kills); `None` when it has no cgroup.
    pub fn usage(&self, name: &str) -> Result<Option<ResourceUsage>> {
        Ok(self.cgroup_of(name)?.map(|c| c.usage()))
    }

    /// Every running process's CPU and memory, from one sample shared by
    /// every caller (see [`crate::usage`]): at most [`crate::usage::FRESH`]
    /// old, or up to [`crate::usage::STALE`] old while the next is taken in
    /// the background.
    pub async fn usage_sample(&self) -> crate::usage::UsageSample {
        use crate::usage::{FRESH, STALE};
        if let Some(s) = self.inner.usage.last() {
            let age = s.at.elapsed();
            if age < FRESH {
                return s;
            }
            if age < STALE {
                if self.inner.usage.claim_refresh() {
                    let m = self.clone();
                    tokio::spawn(async move {
                        m.take_usage().await;
                        m.inner.usage.refresh_done();
                    });
                }
                return s;
            }
        }
        self.take_usage().await
    }

    /// The last usage sample taken, without reading anything.
    pub fn last_usage_sample(&self) -> Option<crate::usage::UsageSample> {
        self.inner.usage.last()
    }

    async fn take_usage(&self) -> crate::usage::UsageSample {
        self.inner
            .usage
            .take(crate::usage::FRESH, || {
                let Ok(procs) = self.inner.ctx.procs.read() else {
                    return Vec::new();
                };
                procs
                    .iter()
                    .filter_map(|(name, e)| {
                        let pid = e.shared.status.lock().ok()?.pid?;
                        let cg = e.shared.cgroup.lock().ok()?.clone();
                        Some((Arc::clone(name), pid, cg))
                    })
                    .collect()
            })
            .await
    }

    /// Which cgroup version a running process's cgroup is on.
    pub fn cgroup_version(&self, name: &str) -> Result<Option<crate::CgroupVersion>> {
        Ok(self.cgroup_of(name)?.map(|c| c.version()))
    }

    fn cgroup_of(&self, name: &str) -> Result<Option<Arc<crate::cgroup::ProcessCgroup>>> {
        let procs = self.inner.ctx.procs.read().map_err(|_| poisoned())?;
        let entry = procs.get(name).ok_or_else(|| not_found(name))?;
        let cg = entry.shared.cgroup.lock().map_err(|_| poisoned())?.clone();
        Ok(cg)
    }

    fn send(&self, name: &str, cmd: Command) -> Result<()> {
        let procs = self.inner.ctx.procs.read().map_err(|_| poisoned())?;
        let entry = procs.get(name).ok_or_else(|| not_found(name))?;
        entry.tx.unbounded_send(cmd).map_err(|_| not_found(name))
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closing.load(Ordering::SeqCst) {
            return Err(
                Error::of(ErrorKind::ShuttingDown, "the manager is shutting down")
                    .hint("start processes before calling shutdown")
                    .build(),
            );
        }
        Ok(())
    }
}

pub(crate) fn snapshot(shared: &Shared) -> ProcessStatus {
    ProcessStatus::clone(&shared_snapshot(shared))
}

/// The status as it is now, shared: the log figures, which the log thread
/// keeps apart, are written into it first when they changed.
pub(crate) fn shared_snapshot(shared: &Shared) -> Arc<ProcessStatus> {
    let mut g = match shared.status.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let dropped = shared.log.dropped_bytes();
    if dropped != g.log_dropped_bytes {
        let st = Arc::make_mut(&mut g);
        st.log_dropped_bytes = dropped;
        if dropped > 0 {
            st.log_error = shared.log.last_error();
        }
    }
    Arc::clone(&g)
}

fn not_found(name: &str) -> Error {
    Error::of(
        ErrorKind::ProcessNotFound,
        format!("no process named {name:?}"),
    )
    .ctx("name", name)
    .hint("list processes to see the names in use")
    .build()
}

fn gone() -> Error {
    Error::of(
        ErrorKind::ShuttingDown,
        "the process task ended before answering",
    )
    .hint("the manager is shutting down or the process was removed")
    .build()
}

fn poisoned() -> Error {
    Error::of(ErrorKind::Io, "process table lock poisoned by a panic")
        .hint("this is a bug in hangar; please report it")
        .build()
}

/// A glob over process names, with a fast path for plain names and `*`.
enum Matcher {
    All,
    Exact(String),
    Glob(glob::Pattern),
}

impl Matcher {
    fn new(pattern: &str) -> Result<Matcher> {
        if pattern == "*" || pattern.is_empty() {
            return Ok(Matcher::All);
        }
        if !pattern.contains(['*', '?', '[']) {
            return Ok(Matcher::Exact(pattern.to_string()));
        }
        glob::Pattern::new(pattern).map(Matcher::Glob).map_err(|e| {
            Error::of(
                ErrorKind::InvalidPattern,
                format!("invalid glob {pattern:?}: {e}"),
            )
            .hint("use * for any run of characters, ? for one, [abc] for a set")
            .build()
        })
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Matcher::All => true,
            Matcher::Exact(s) => s == name,
            Matcher::Glob(p) => p.matches(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each supervised process is one task whose future lives as long as the
    /// process is registered: at 10,000 processes every hundred bytes here is
    /// a megabyte of the supervisor's memory.
    #[tokio::test]
    async fn a_process_task_stays_small() {
        let m = Manager::new().expect("manager");
        let spec = Arc::new(ProcessSpec::new("p", "true"));
        let shared = Arc::new(Shared {
            status: Mutex::new(Arc::new(ProcessStatus::new(Arc::from("p")))),
            log: ProcessLog::new(Arc::from("p"), spec.log.clone()),
            spec: Mutex::new(Arc::clone(&spec)),
            probe_generation: std::sync::atomic::AtomicU64::new(0),
            cgroup: Mutex::new(None),
        });
        let (_tx, rx) = mpsc::unbounded();
        let (probe_tx, probe_rx) = mpsc::unbounded();
        let actor = Actor::new(spec, shared, Arc::clone(&m.inner.ctx), 1, probe_tx);
        let fut = actor.run(rx, probe_rx);
        let size = std::mem::size_of_val(&fut);
        eprintln!("process task future: {size} bytes");
        // 1,584 bytes (debug build) before the steps, timers and waits that
        // are rarely under way were boxed; about 1,000 after.
        assert!(
            size <= 1_200,
            "the process task's future grew to {size} bytes: box what it awaits rarely"
        );
    }
}
