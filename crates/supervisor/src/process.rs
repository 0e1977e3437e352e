//! The driver of one process: a tokio task that owns the [`Machine`], the child's
//! pidfd, the timer, the probe task and the dependency watch, and turns the
//! machine's actions into syscalls.
//!
//! Everything about one process happens on its task, so no lock is held across an
//! await and one slow process never holds up another. Readers (status) look at a
//! snapshot behind a short std mutex that the task updates on every transition.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_channel::mpsc;
use futures_util::StreamExt;
use rustix::process::{Signal, WaitId, WaitIdOptions};
use tokio::io::unix::AsyncFd;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cgroup::ProcessCgroup;
use crate::deps::{evaluate, DepState};
use crate::error::{Error, ErrorKind, Result};
use crate::event::{Event, EventKind};
use crate::health::{HealthStatus, HealthTracker, ProbeKind, Verdict};
use crate::logs::ProcessLog;
use crate::manager::{snapshot, Ctx, PROCESS_PORTS};
use crate::privs::SetupError;
use crate::probe::{self, ProbeVerdict, Target};
use crate::spawn::{kill_group, Output, SpawnRequest, Spawned};
use crate::spec::{substitute_ports, KillMode, ProcessSpec};
use crate::state::{Action, ExitInfo, Gates, Input, Machine, State, Transition};
use crate::status::ProcessStatus;
use crate::tree::Lineage;

pub(crate) enum Command {
    /// Start. With a spec, this is a (re)registration: refused while active.
    Start {
        spec: Option<Arc<ProcessSpec>>,
        reply: oneshot::Sender<Result<u32>>,
    },
    Restart {
        reply: oneshot::Sender<Result<u32>>,
    },
    Stop {
        timeout: Option<Duration>,
        reply: oneshot::Sender<()>,
    },
    /// Send a signal to the running child (its group with `group`). Answers
    /// the main pid.
    Signal {
        sig: crate::spec::SignalName,
        group: bool,
        reply: oneshot::Sender<Result<u32>>,
    },
    /// Stop, then end the task.
    Remove {
        timeout: Option<Duration>,
        reply: oneshot::Sender<()>,
    },
}

/// What readers see of a process without asking its task.
pub(crate) struct Shared {
    /// Copy on write: readers take the `Arc` (listing thousands costs no
    /// deep copies); the process task and its probe `make_mut` it.
    pub status: Mutex<Arc<ProcessStatus>>,
    pub log: Arc<ProcessLog>,
    /// The spec in force (dependency order and cycle checks read it).
    pub spec: Mutex<Arc<ProcessSpec>>,
    /// Generation of the running probe task; changed under the status lock.
    pub probe_generation: AtomicU64,
    /// The running child's cgroup (usage reads, kill_all).
    pub cgroup: Mutex<Option<Arc<ProcessCgroup>>>,
}

/// A spawned child, watched through its pidfd.
pub(crate) struct Child {
    pub pid: u32,
    pidfd: AsyncFd<OwnedFd>,
    /// Removed once the child and its group are gone.
    pub cgroup: Option<Arc<ProcessCgroup>>,
    /// What of its tree left its process group.
    lineage: Arc<Lineage>,
    /// Released (dropped) only after the child is reaped.
    _claim: hangar_base::children::Claim,
}

impl Child {
    /// Register a freshly spawned child's pidfd with the runtime. On failure the
    /// child is killed and reaped: what cannot be watched must not run.
    pub(crate) fn watch(spawned: Spawned) -> io::Result<Child> {
        // SAFETY: `register` requires the fd to stay open and unchanged for as long
        // as the AsyncFd lives. An OwnedFd moved into it is closed only when the
        // AsyncFd drops it, and nothing else knows its number.
        match unsafe { AsyncFd::register(spawned.pidfd) } {
            Ok(pidfd) => Ok(Child {
                pid: spawned.pid,
                pidfd,
                cgroup: spawned.cgroup.map(Arc::new),
                lineage: Arc::new(Lineage::new(spawned.spawn)),
                _claim: spawned.claim,
            }),
            Err(err) => {
                let e = err.into_parts().1;
                let _ = kill_group(spawned.pid, Signal::KILL);
                let _ = rustix::process::waitpid(
                    rustix::process::Pid::from_raw(spawned.pid as i32),
                    rustix::process::WaitOptions::empty(),
                );
                if let Some(cg) = spawned.cgroup {
                    let _ = cg.remove_blocking();
                }
                Err(e)
            }
        }
    }
}

pub(crate) struct Actor {
    name: Arc<str>,
    /// The spec as given.
    spec: Arc<ProcessSpec>,
    /// The spec with ports allocated and substituted; `None` until the first spawn.
    resolved: Option<Arc<ProcessSpec>>,
    machine: Machine,
    shared: Arc<Shared>,
    ctx: Arc<Ctx>,
    child: Option<Child>,
    timer: Option<Instant>,
    start_waiters: Vec<oneshot::Sender<Result<u32>>>,
    stop_waiters: Vec<oneshot::Sender<()>>,
    removing: bool,
    probe_task: Option<JoinHandle<()>>,
    probe_generation: u64,
    probe_tx: mpsc::UnboundedSender<ProbeVerdict>,
    deps_rx: Option<broadcast::Receiver<Event>>,
}

fn gates(spec: &ProcessSpec) -> Gates {
    Gates {
        depends: !spec.depends_on.is_empty(),
        readiness: spec.readiness.is_some(),
        liveness: spec.liveness.is_some(),
        start_timeout: spec.start_timeout,
    }
}

impl Actor {
    pub(crate) fn new(
        spec: Arc<ProcessSpec>,
        shared: Arc<Shared>,
        ctx: Arc<Ctx>,
        seed: u64,
        probe_tx: mpsc::UnboundedSender<ProbeVerdict>,
    ) -> Actor {
        let mut machine = Machine::new(spec.restart, seed);
        machine.set_gates(gates(&spec));
        machine.set_stop_timeout(spec.stop_timeout);
        Actor {
            name: Arc::from(spec.name.as_str()),
            machine,
            spec,
            resolved: None,
            shared,
            ctx,
            child: None,
            timer: None,
            start_waiters: Vec::new(),
            stop_waiters: Vec::new(),
            removing: false,
            probe_task: None,
            probe_generation: 0,
            probe_tx,
            deps_rx: None,
        }
    }

    /// The process's task. Not an `async fn`: one of those keeps its `self`
    /// argument twice in its future (the argument and the moved-in local),
    /// and this future lives as long as the process is registered.
    #[allow(clippy::manual_async_fn)]
    pub(crate) fn run(
        mut self,
        rx: mpsc::UnboundedReceiver<Command>,
        probe_rx: mpsc::UnboundedReceiver<ProbeVerdict>,
    ) -> impl Future<Output = ()> + Send {
        async move { self.run_loop(rx, probe_rx).await }
    }

    async fn run_loop(
        &mut self,
        mut rx: mpsc::UnboundedReceiver<Command>,
        mut probe_rx: mpsc::UnboundedReceiver<ProbeVerdict>,
    ) {
        let mut open = true;
        loop {
            if (self.removing || !open) && !self.machine.state().is_active() {
                break;
            }
            let timer = self.timer;
            tokio::select! {
                biased;
                exit = wait_exit(self.child.as_ref()) => {
                    if let Some(child) = self.child.take() {
                        Box::pin(self.release_cgroup(child)).await;
                    }
                    self.feed(Input::Exited(exit)).await;
                }
                () = sleep_until(timer) => {
                    self.timer = None;
                    self.feed(Input::Timer).await;
                }
                Some(v) = probe_rx.next() => self.probe_verdict(v).await,
                about = recv_dep_event(self.deps_rx.as_mut()) => {
                    // Other processes' events are no news for this one.
                    let relevant = about.as_deref().is_none_or(|n| self.spec.depends_on.contains_key(n));
                    if relevant {
                        if let Some(input) = self.check_deps() {
                            self.feed(input).await;
                        }
                    }
                }
                cmd = rx.next(), if open => match cmd {
                    Some(cmd) => self.command(cmd).await,
                    None => {
                        // Every handle is gone (the manager was dropped): stop the
                        // process as a removal would, then end. Nothing may outlive
                        // its supervisor entry.
                        open = false;
                        self.removing = true;
                        if self.machine.state().is_active() {
                            let timeout = self.spec.stop_timeout;
                            self.feed(Input::Stop { timeout }).await;
                        }
                    }
                },
            }
        }
        // Unreachable in practice (the loop ends only in an inactive state, where
        // every child has been reaped), but never leave a child unwatched.
        if let Some(child) = self.child.take() {
            let _ = kill_group(child.pid, Signal::KILL);
            wait_exit(Some(&child)).await;
            Box::pin(self.release_cgroup(child)).await;
        }
        self.set_probe(None);
        self.ctx.ports.release_all(&self.name);
        for w in self.stop_waiters.drain(..) {
            let _ = w.send(());
        }
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Start { spec, reply } => {
                let state = self.machine.state();
                if let Some(spec) = spec {
                    if state.is_active() {
                        let err = Error::of(
                            ErrorKind::DuplicateName,
                            format!("a process named {:?} is already {}", self.name, state),
                        )
                        .ctx("name", &self.name)
                        .hint("pick another name, or stop or remove the existing process first")
                        .build();
                        let _ = reply.send(Err(err));
                        return;
                    }
                    self.replace_spec(spec);
                }
                match self.machine.state() {
                    State::Running => {
                        let pid = self.child.as_ref().map(|c| c.pid).unwrap_or(0);
                        let _ = reply.send(Ok(pid));
                    }
                    _ => {
                        self.start_waiters.push(reply);
                        self.feed(Input::Start).await;
                    }
                }
            }
            Command::Restart { reply } => {
                self.start_waiters.push(reply);
                self.feed(Input::Restart).await;
            }
            Command::Stop { timeout, reply } => {
                if !self.machine.state().is_active() {
                    let _ = reply.send(());
                    return;
                }
                self.stop_waiters.push(reply);
                let timeout = timeout.unwrap_or(self.spec.stop_timeout);
                self.feed(Input::Stop { timeout }).await;
            }
            Command::Signal { sig, group, reply } => {
                let _ = reply.send(self.signal(sig, group));
            }
            Command::Remove { timeout, reply } => {
                self.removing = true;
                self.stop_waiters.push(reply);
                if self.machine.state().is_active() {
                    let timeout = timeout.unwrap_or(self.spec.stop_timeout);
                    self.feed(Input::Stop { timeout }).await;
                }
            }
        }
    }

    /// Send `sig` to the child: through its pidfd (so never to a recycled pid),
    /// or to its process group, which the unreaped child pins.
    fn signal(&self, sig: crate::spec::SignalName, group: bool) -> Result<u32> {
        let not_running = || {
            Error::of(
                ErrorKind::ProcessNotRunning,
                format!(
                    "process {:?} is {}: there is no process to signal",
                    self.name,
                    self.machine.state()
                ),
            )
            .ctx("name", &self.name)
            .ctx("signal", sig)
            .hint("start it first (`hangar start`); `hangar ps` shows its state")
            .build()
        };
        let (Some(child), Some(s)) = (&self.child, sig.to_rustix()) else {
            return Err(not_running());
        };
        let res = if group {
            kill_group(child.pid, s)
        } else {
            match rustix::process::pidfd_send_signal(child.pidfd.get_ref().as_fd(), s) {
                Ok(()) => Ok(()),
                // Exited, not yet reaped: its exit is on its way.
                Err(rustix::io::Errno::SRCH) => return Err(not_running()),
                Err(e) => Err(e.into()),
            }
        };
        res.map_err(|e: io::Error| {
            Error::of(ErrorKind::Io, format!("could not send {sig}"))
                .source(e)
                .ctx("name", &self.name)
                .ctx("pid", child.pid)
                .hint("hangar may lack the privilege to signal it (CAP_KILL)")
                .build()
        })?;
        Ok(child.pid)
    }

    /// The child and its group are gone: kill whatever else is left in its cgroup
    /// and remove it, before the exit is reported (a caller told "stopped" finds
    /// no cgroup left).
    async fn release_cgroup(&mut self, child: Child) {
        let Some(cg) = child.cgroup else { return };
        if let Ok(mut slot) = self.shared.cgroup.lock() {
            *slot = None;
        }
        match cg.remove().await {
            Ok(Some(oom)) if oom > 0 => tracing::warn!(
                process = %self.name,
                oom_kills = oom,
                memory_max = ?self.spec.limits.and_then(|l| l.memory_max),
                "the out-of-memory killer killed processes of this process's cgroup: it reached its memory limit"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(
                process = %self.name,
                error = %e,
                "could not remove the process's cgroup"
            ),
        }
    }

    fn replace_spec(&mut self, spec: Arc<ProcessSpec>) {
        self.machine.set_policy(spec.restart);
        self.machine.set_gates(gates(&spec));
        self.machine.set_stop_timeout(spec.stop_timeout);
        if let Ok(mut s) = self.shared.spec.lock() {
            *s = Arc::clone(&spec);
        }
        if spec.ports != self.spec.ports {
            self.ctx.ports.release_all(&self.name);
            if let Ok(mut st) = self.shared.status.lock() {
                Arc::make_mut(&mut st).ports.clear();
            }
        }
        self.resolved = None;
        self.spec = spec;
    }

    /// Run inputs through the machine until it has nothing more to say, carrying out
    /// each action. Spawning is awaited here (on the spawner threads), and its
    /// outcome fed straight back in.
    ///
    /// Boxed: the steps (spawning, stopping) are the largest futures here, and
    /// unboxed they would size the process task's future for all its idle life.
    fn feed(&mut self, first: Input) -> Pin<Box<impl Future<Output = ()> + Send + '_>> {
        Box::pin(self.feed_steps(first))
    }

    async fn feed_steps(&mut self, first: Input) {
        let mut queue = VecDeque::from([first]);
        while let Some(input) = queue.pop_front() {
            let out = self.machine.handle(input, Instant::now().into_std());
            if let Some(t) = out.transition {
                self.publish(t);
            }
            for action in out.actions {
                match action {
                    Action::Spawn => queue.push_back(self.spawn().await),
                    Action::SignalStop => {
                        if let Some(c) = &self.child {
                            // Descendants that left the group are found (and
                            // pinned) while the leader still holds them.
                            if !c.lineage.alone(Some(c.pid)) {
                                let (l, pid) = (Arc::clone(&c.lineage), c.pid);
                                crate::tree::off_runtime(move || l.pin_escaped(pid)).await;
                            }
                            let sig = self.spec.stop_signal.to_rustix();
                            match self.spec.kill_mode {
                                KillMode::Group => {
                                    let _ = kill_group(c.pid, sig);
                                    // A stopped (SIGSTOP) group would never see the signal.
                                    let _ = kill_group(c.pid, Signal::CONT);
                                    c.lineage.signal_pinned(sig);
                                }
                                // The main process alone: the rest of the tree
                                // gets SIGKILL when the grace ends or the main
                                // process exits (`KillGroup`, `wait_exit`).
                                KillMode::Mixed => {
                                    let fd = c.pidfd.get_ref().as_fd();
                                    let _ = rustix::process::pidfd_send_signal(fd, sig);
                                    let _ = rustix::process::pidfd_send_signal(fd, Signal::CONT);
                                }
                            }
                        }
                    }
                    Action::KillGroup => {
                        if let Some(c) = &self.child {
                            let _ = kill_group(c.pid, Signal::KILL);
                            if !c.lineage.alone(None) {
                                let l = Arc::clone(&c.lineage);
                                crate::tree::off_runtime(move || l.kill_escaped()).await;
                            }
                        }
                    }
                    Action::ArmTimer(d) => self.timer = Some(Instant::now() + d),
                    Action::DisarmTimer => self.timer = None,
                    Action::AwaitDeps => {
                        // Subscribe first, then look: no change can slip between.
                        self.deps_rx = Some(self.ctx.events.subscribe());
                        if let Some(input) = self.check_deps() {
                            queue.push_back(input);
                        }
                    }
                    Action::StopAwaitingDeps => self.deps_rx = None,
                    Action::Probe(kind) => self.set_probe(kind),
                }
            }
        }
    }

    /// Where the dependencies stand: `None` while any is pending.
    fn check_deps(&self) -> Option<Input> {
        let procs = self.ctx.procs.read().ok()?;
        let mut met = true;
        for (dep, cond) in &self.spec.depends_on {
            let st = procs.get(dep.as_str()).map(|e| snapshot(&e.shared));
            match evaluate(*cond, st.as_ref()) {
                DepState::Met => {}
                DepState::Pending => met = false,
                DepState::Broken(why) => {
                    let err = Error::of(
                        ErrorKind::DependencyFailed,
                        format!("dependency {dep:?} cannot become {cond}: {why}"),
                    )
                    .ctx("name", &self.name)
                    .ctx("dependency", dep)
                    .hint("fix and start the dependency, then start this process again")
                    .build();
                    return Some(Input::DepsBroken(err));
                }
            }
        }
        met.then_some(Input::DepsMet)
    }

    /// Start (or stop) the probe task. A process that is no longer running has no
    /// health to report; one handed from readiness to liveness keeps the health it
    /// had until the liveness probe's first result.
    fn set_probe(&mut self, kind: Option<ProbeKind>) {
        if let Some(task) = self.probe_task.take() {
            task.abort();
        }
        self.probe_generation += 1;
        let running = self.machine.state() == State::Running;
        if let Ok(mut st) = self.shared.status.lock() {
            self.shared
                .probe_generation
                .store(self.probe_generation, Ordering::Release);
            if !running {
                Arc::make_mut(&mut st).health = HealthStatus::default();
            }
        }
        let (Some(kind), Some(child), Some(resolved)) = (kind, &self.child, &self.resolved) else {
            return;
        };
        let spec = match kind {
            ProbeKind::Readiness => resolved.readiness.clone(),
            ProbeKind::Liveness => resolved.liveness.clone(),
        };
        let Some(spec) = spec else { return };
        let tracker = HealthTracker::new(kind, &spec, resolved.start_timeout);
        let target = Target {
            pid: child.pid,
            spec: Arc::clone(resolved),
            shared: Arc::clone(&self.shared),
            name: Arc::clone(&self.name),
        };
        self.probe_task = Some(tokio::spawn(probe::run(
            Arc::clone(&self.ctx),
            self.probe_generation,
            kind,
            spec,
            tracker,
            target,
            self.probe_tx.clone(),
        )));
    }

    async fn probe_verdict(&mut self, v: ProbeVerdict) {
        if v.generation != self.probe_generation {
            return;
        }
        match v.verdict {
            Verdict::Ready => self.feed(Input::Ready).await,
            Verdict::Unhealthy(why) => {
                let err = Error::of(ErrorKind::HealthCheckFailed, format!("liveness probe failed: {why}"))
                    .ctx("name", &self.name)
                    .ctx("consecutive_failures", v.consecutive_failures)
                    .hint("the process is restarted through its restart policy; check its logs and the probe's target")
                    .build();
                self.feed(Input::Unhealthy(err)).await;
            }
        }
    }

    /// Allocate the spec's ports (once) and substitute them: the spec the child and
    /// its probes actually see.
    fn resolve(&mut self) -> Result<Arc<ProcessSpec>> {
        if let Some(r) = &self.resolved {
            return Ok(Arc::clone(r));
        }
        let mut ports = Vec::with_capacity(self.spec.ports.len());
        for name in &self.spec.ports {
            match self.ctx.ports.allocate(PROCESS_PORTS, &self.name) {
                Ok(p) => ports.push((name.clone(), p)),
                Err(e) => {
                    self.ctx.ports.release_all(&self.name);
                    return Err(Error::of(ErrorKind::PortUnavailable, e.message.clone())
                        .ctx("name", &self.name)
                        .ctx("port", name)
                        .ctx("code", e.code())
                        .hint(e.hint)
                        .build());
                }
            }
        }
        if ports.is_empty() {
            // Nothing to substitute: the spec as given (a copy per process
            // would cost about a kilobyte each).
            self.resolved = Some(Arc::clone(&self.spec));
            return Ok(Arc::clone(&self.spec));
        }
        let mut spec = (*self.spec).clone();
        let sub = |s: &str| substitute_ports(s, &ports);
        spec.args = spec.args.iter().map(|a| sub(a)).collect();
        for v in spec.env.values_mut() {
            *v = sub(v);
        }
        for probe in [&mut spec.readiness, &mut spec.liveness]
            .into_iter()
            .flatten()
        {
            probe.check.map_strings(&sub);
        }
        for (name, port) in &ports {
            let var = format!(
                "HANGAR_PORT_{}",
                name.to_ascii_uppercase().replace('-', "_")
            );
            spec.env.insert(var, port.to_string());
        }
        if spec.health_port {
            spec.env
                .insert("HEALTH_PORT".into(), ports[0].1.to_string());
        }
        if let Ok(mut st) = self.shared.status.lock() {
            Arc::make_mut(&mut st).ports = ports;
        }
        let spec = Arc::new(spec);
        self.resolved = Some(Arc::clone(&spec));
        Ok(spec)
    }

    async fn spawn(&mut self) -> Input {
        let spec = match self.resolve() {
            Ok(s) => s,
            Err(error) => {
                return Input::SpawnFailed {
                    error,
                    permanent: false,
                    exhausted: false,
                }
            }
        };
        let req = SpawnRequest {
            base_env: spec.inherit_env.then(|| Arc::clone(&self.ctx.base_env)),
            spec,
            global_env: self.ctx.global_env(),
            output: Output::Log(Arc::clone(&self.shared.log)),
        };
        match self.ctx.spawner.spawn(req).await {
            Ok(spawned) => match Child::watch(spawned) {
                Ok(child) => {
                    let pid = child.pid;
                    if let Ok(mut slot) = self.shared.cgroup.lock() {
                        slot.clone_from(&child.cgroup);
                    }
                    self.child = Some(child);
                    Input::Spawned { pid }
                }
                Err(e) => Input::SpawnFailed {
                    exhausted: exhausted(&e),
                    error: self.start_error(e),
                    permanent: false,
                },
            },
            Err(e) if SetupError::find(&e).is_some() => {
                let permanent = SetupError::find(&e).is_some_and(|s| s.permanent);
                Input::SpawnFailed {
                    exhausted: !permanent && exhausted(&e),
                    error: self.setup_error(e),
                    permanent,
                }
            }
            Err(e) => {
                let permanent = matches!(
                    e.kind(),
                    io::ErrorKind::NotFound
                        | io::ErrorKind::PermissionDenied
                        | io::ErrorKind::InvalidInput
                ) || e.raw_os_error() == Some(8); // ENOEXEC: not an executable format
                Input::SpawnFailed {
                    exhausted: !permanent && exhausted(&e),
                    error: self.start_error(e),
                    permanent,
                }
            }
        }
    }

    /// A failure to set up the child's cgroup, user or namespace.
    fn setup_error(&self, e: io::Error) -> Error {
        spawn_error(&self.name, &self.spec, e)
    }

    fn start_error(&self, e: io::Error) -> Error {
        start_error(&self.name, &self.spec, e)
    }

    fn publish(&mut self, t: Transition) {
        let pid = self.child.as_ref().map(|c| c.pid);
        let now = SystemTime::now();
        let restarts = self.machine.restarts();
        if let Ok(mut guard) = self.shared.status.lock() {
            let st = Arc::make_mut(&mut guard);
            st.state = t.to;
            st.pid = pid;
            st.since = now;
            st.restarts = restarts;
            st.consecutive_failures = self.machine.consecutive_failures();
            if t.to == State::Running {
                st.started_at = Some(now);
            } else if t.to != State::Stopping {
                st.started_at = None;
            }
            if t.exit.is_some() {
                st.last_exit = t.exit;
            }
            if t.error.is_some() {
                st.last_error = t.error.clone();
            }
        }
        self.ctx.emit(
            &self.name,
            pid,
            EventKind::State {
                from: t.from,
                to: t.to,
                exit: t.exit,
                error: t.error.clone(),
                restarts,
                restart: t.restart,
                failure: t.failure,
            },
        );
        // Resolve callers waiting on this start or stop, after the event is out: a
        // caller that subscribes once its call returned must not see this event.
        match t.to {
            State::Running => {
                for w in self.start_waiters.drain(..) {
                    let _ = w.send(Ok(pid.unwrap_or(0)));
                }
            }
            State::Starting | State::Stopping => {}
            _ => {
                if t.from == State::Starting || !t.to.is_active() {
                    let err = t.error.clone().unwrap_or_else(|| {
                        Error::of(
                            ErrorKind::ProcessStartFailed,
                            format!("process {} before it was running", t.to),
                        )
                        .ctx("name", &self.name)
                        .build()
                    });
                    for w in self.start_waiters.drain(..) {
                        let _ = w.send(Err(err.clone()));
                    }
                }
            }
        }
        // A stop is complete once the process left Stopping, even if a start queued
        // behind it has already moved it on to Starting.
        // A removal is answered at the very end, once the ports are released too.
        if (!t.to.is_active() || t.from == State::Stopping) && !self.removing {
            for w in self.stop_waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }
}

/// Wait for the next event while watching dependencies: the name of the process
/// it is about, or `None` when events were lost (then anything may have changed).
/// Never resolves when not watching.
async fn recv_dep_event(rx: Option<&mut broadcast::Receiver<Event>>) -> Option<Arc<str>> {
    let Some(rx) = rx else {
        return std::future::pending().await;
    };
    // Boxed (a waiter node): only a process waiting on dependencies has one.
    match Box::pin(rx.recv()).await {
        Ok(ev) => Some(ev.name),
        Err(RecvError::Lagged(_)) => None,
        Err(RecvError::Closed) => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        // Boxed, as `wait_exit`'s readiness below: a timer is armed in a few
        // states only (backoff, a stop's grace), and unboxed its entry would
        // sit in every process task's future for the process's whole life.
        Some(d) => Box::pin(tokio::time::sleep_until(d)).await,
        None => std::future::pending().await,
    }
}

/// Wait until the child exits, then reap it. Before reaping, SIGKILL whatever is
/// left of its process group (the unreaped leader pins the group id, so the signal
/// cannot hit a recycled group) and of its tree outside the group.
pub(crate) async fn wait_exit(child: Option<&Child>) -> ExitInfo {
    let Some(child) = child else {
        return std::future::pending().await;
    };
    loop {
        let mut guard = match Box::pin(child.pidfd.readable()).await {
            Ok(g) => g,
            Err(_) => return std::future::pending().await,
        };
        match rustix::process::waitid(
            WaitId::PidFd(child.pidfd.get_ref().as_fd()),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT,
        ) {
            Ok(Some(_)) => {}
            Ok(None) => {
                guard.clear_ready();
                continue;
            }
            Err(_) => return ExitInfo::code(-1),
        }
        let _ = kill_group(child.pid, Signal::KILL);
        if !child.lineage.alone(None) {
            let l = Arc::clone(&child.lineage);
            crate::tree::off_runtime(move || l.kill_escaped()).await;
        }
        return match rustix::process::waitid(
            WaitId::PidFd(child.pidfd.get_ref().as_fd()),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
        ) {
            Ok(Some(st)) => match (st.exit_status(), st.terminating_signal()) {
                (Some(code), _) => ExitInfo::code(code),
                (None, Some(sig)) => ExitInfo {
                    code: None,
                    signal: Some(sig),
                    core_dumped: st.dumped(),
                },
                (None, None) => ExitInfo::code(-1),
            },
            _ => ExitInfo::code(-1),
        };
    }
}

/// The error for a failed spawn of `spec` (named `name`): a failure to set up
/// the child's cgroup, user or namespace keeps its own message and hint.
pub(crate) fn spawn_error(name: &str, spec: &ProcessSpec, e: io::Error) -> Error {
    let Some(setup) = SetupError::find(&e) else {
        return start_error(name, spec, e);
    };
    let mut b = Error::of(ErrorKind::ProcessStartFailed, setup.message.clone())
        .ctx("code", setup.code)
        .ctx("name", name)
        .ctx("command", &spec.command)
        .hint(setup.hint.clone());
    if let Some(src) = &setup.source {
        b = b.source(io::Error::new(src.kind(), src.to_string()));
    }
    b.build()
}

fn start_error(name: &str, spec: &ProcessSpec, e: io::Error) -> Error {
    let hint = match e.kind() {
        io::ErrorKind::NotFound => match &spec.working_dir {
            Some(dir) if !dir.is_dir() => {
                format!("working directory {} does not exist", dir.display())
            }
            _ => {
                "check the command path, that it exists and is in PATH if given by name".to_string()
            }
        },
        io::ErrorKind::PermissionDenied => {
            "check that the file is executable (chmod +x) and its directory searchable".to_string()
        }
        _ if e.raw_os_error() == Some(8) => {
            "the file is not a binary this system can run; a script needs a #! line".into()
        }
        _ => "a system limit may have been hit (processes, open files); it will be retried"
            .to_string(),
    };
    Error::of(ErrorKind::ProcessStartFailed, "could not start process")
        .source(e)
        .ctx("name", name)
        .ctx("command", &spec.command)
        .hint(hint)
        .build()
}

/// A spawn error that says the host (or this program) ran out of something
/// every process needs: descriptors (EMFILE, ENFILE), pids or threads
/// (EAGAIN from clone), memory (ENOMEM).
fn exhausted(e: &io::Error) -> bool {
    use rustix::io::Errno;
    e.raw_os_error().is_some_and(|c| {
        [Errno::MFILE, Errno::NFILE, Errno::AGAIN, Errno::NOMEM]
            .iter()
            .any(|x| x.raw_os_error() == c)
    })
}
