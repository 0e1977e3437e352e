//! The driver of one process: a tokio task that owns the [`Machine`], the child's
//! pidfd and the timer, and turns the machine's actions into syscalls.
//!
//! Everything about one process happens on its task, so no lock is held across an
//! await and one slow process never holds up another. Readers (status) look at a
//! snapshot behind a short std mutex that the task updates on every transition.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustix::process::{Signal, WaitId, WaitIdOptions};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::error::{Error, ErrorKind, Result};
use crate::event::{Event, EventKind};
use crate::logs::ProcessLog;
use crate::manager::Ctx;
use crate::spawn::{kill_group, SpawnRequest};
use crate::spec::ProcessSpec;
use crate::state::{Action, ExitInfo, Input, Machine, State, Transition};
use crate::status::ProcessStatus;

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
    /// Stop, then end the task.
    Remove {
        timeout: Option<Duration>,
        reply: oneshot::Sender<()>,
    },
}

/// What readers see of a process without asking its task.
pub(crate) struct Shared {
    pub status: Mutex<ProcessStatus>,
    pub log: Arc<ProcessLog>,
}

struct Child {
    pid: u32,
    pidfd: AsyncFd<OwnedFd>,
}

pub(crate) struct Actor {
    name: Arc<str>,
    spec: Arc<ProcessSpec>,
    machine: Machine,
    shared: Arc<Shared>,
    ctx: Arc<Ctx>,
    child: Option<Child>,
    timer: Option<Instant>,
    start_waiters: Vec<oneshot::Sender<Result<u32>>>,
    stop_waiters: Vec<oneshot::Sender<()>>,
    removing: bool,
}

impl Actor {
    pub(crate) fn new(
        spec: Arc<ProcessSpec>,
        shared: Arc<Shared>,
        ctx: Arc<Ctx>,
        seed: u64,
    ) -> Actor {
        Actor {
            name: Arc::from(spec.name.as_str()),
            machine: Machine::new(spec.restart, seed),
            spec,
            shared,
            ctx,
            child: None,
            timer: None,
            start_waiters: Vec::new(),
            stop_waiters: Vec::new(),
            removing: false,
        }
    }

    pub(crate) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut open = true;
        loop {
            if (self.removing || !open) && !self.machine.state().is_active() {
                break;
            }
            let timer = self.timer;
            tokio::select! {
                biased;
                exit = wait_exit(self.child.as_ref()) => {
                    self.child = None;
                    self.feed(Input::Exited(exit)).await;
                }
                () = sleep_until(timer) => {
                    self.timer = None;
                    self.feed(Input::Timer).await;
                }
                cmd = rx.recv(), if open => match cmd {
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
        }
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
                    self.machine.set_policy(spec.restart);
                    self.spec = spec;
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

    /// Run inputs through the machine until it has nothing more to say, carrying out
    /// each action. Spawning is awaited here (on the spawner threads), and its
    /// outcome fed straight back in.
    async fn feed(&mut self, first: Input) {
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
                            let _ = kill_group(c.pid, self.spec.stop_signal.to_rustix());
                            // A stopped (SIGSTOP) group would never see the signal.
                            let _ = kill_group(c.pid, Signal::CONT);
                        }
                    }
                    Action::KillGroup => {
                        if let Some(c) = &self.child {
                            let _ = kill_group(c.pid, Signal::KILL);
                        }
                    }
                    Action::ArmTimer(d) => self.timer = Some(Instant::now() + d),
                    Action::DisarmTimer => self.timer = None,
                }
            }
        }
    }

    async fn spawn(&mut self) -> Input {
        let req = SpawnRequest {
            spec: Arc::clone(&self.spec),
            base_env: self
                .spec
                .inherit_env
                .then(|| Arc::clone(&self.ctx.base_env)),
            global_env: self.ctx.global_env(),
            log: Arc::clone(&self.shared.log),
        };
        match self.ctx.spawner.spawn(req).await {
            // SAFETY: `register` requires the fd to stay open and unchanged for as long
            // as the AsyncFd lives. An OwnedFd moved into it is closed only when the
            // AsyncFd drops it, and nothing else knows its number.
            Ok(spawned) => match unsafe { AsyncFd::register(spawned.pidfd) } {
                Ok(pidfd) => {
                    self.child = Some(Child {
                        pid: spawned.pid,
                        pidfd,
                    });
                    Input::Spawned { pid: spawned.pid }
                }
                Err(err) => {
                    let e = err.into_parts().1;
                    // Cannot watch it, so cannot supervise it: do not let it run.
                    let _ = kill_group(spawned.pid, Signal::KILL);
                    let _ = rustix::process::waitpid(
                        rustix::process::Pid::from_raw(spawned.pid as i32),
                        rustix::process::WaitOptions::empty(),
                    );
                    Input::SpawnFailed {
                        error: self.start_error(e),
                        permanent: false,
                    }
                }
            },
            Err(e) => {
                let permanent = matches!(
                    e.kind(),
                    io::ErrorKind::NotFound
                        | io::ErrorKind::PermissionDenied
                        | io::ErrorKind::InvalidInput
                ) || e.raw_os_error() == Some(8); // ENOEXEC: not an executable format
                Input::SpawnFailed {
                    error: self.start_error(e),
                    permanent,
                }
            }
        }
    }

    fn start_error(&self, e: io::Error) -> Error {
        let hint = match e.kind() {
            io::ErrorKind::NotFound => match &self.spec.working_dir {
                Some(dir) if !dir.is_dir() => {
                    format!("working directory {} does not exist", dir.display())
                }
                _ => "check the command path, that it exists and is in PATH if given by name"
                    .to_string(),
            },
            io::ErrorKind::PermissionDenied => {
                "check that the file is executable (chmod +x) and its directory searchable"
                    .to_string()
            }
            _ if e.raw_os_error() == Some(8) => {
                "the file is not a binary this system can run; a script needs a #! line".into()
            }
            _ => "a system limit may have been hit (processes, open files); it will be retried"
                .to_string(),
        };
        Error::of(ErrorKind::ProcessStartFailed, "could not start process")
            .source(e)
            .ctx("name", &self.name)
            .ctx("command", &self.spec.command)
            .hint(hint)
            .build()
    }

    fn publish(&mut self, t: Transition) {
        let pid = self.child.as_ref().map(|c| c.pid);
        let now = SystemTime::now();
        let restarts = self.machine.restarts();
        if let Ok(mut st) = self.shared.status.lock() {
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
        let seq = self.ctx.seq.fetch_add(1, Ordering::Relaxed);
        // No subscriber is fine.
        let _ = self.ctx.events.send(Event {
            seq,
            at: now,
            name: Arc::clone(&self.name),
            pid,
            kind: EventKind::State {
                from: t.from,
                to: t.to,
                exit: t.exit,
                error: t.error.clone(),
                restarts,
            },
        });
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
        if !t.to.is_active() || t.from == State::Stopping {
            for w in self.stop_waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Wait until the child exits, then reap it. Before reaping, SIGKILL whatever is
/// left of its process group: the unreaped leader pins the group id, so the signal
/// cannot hit a recycled group.
async fn wait_exit(child: Option<&Child>) -> ExitInfo {
    let Some(child) = child else {
        return std::future::pending().await;
    };
    loop {
        let mut guard = match child.pidfd.readable().await {
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
