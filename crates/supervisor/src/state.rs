//! The per-process state machine: an input in, a transition and actions out.
//!
//! [`Machine`] does no I/O and reads no clock: the driver passes `now` with each
//! input and carries out the returned [`Action`]s. That keeps every restart,
//! backoff and circuit-breaker rule unit-testable without spawning anything.

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind};
use crate::health::ProbeKind;
use crate::spec::{RestartMode, RestartPolicy};

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Not running, never started or stopped on request.
    Stopped,
    /// Started, waiting for its dependencies' conditions.
    Waiting,
    /// Being spawned.
    Starting,
    /// Spawned and alive.
    Running,
    /// Stop signal sent, waiting for the group to exit.
    Stopping,
    /// Exited, waiting out the backoff before the next start.
    Backoff,
    /// Finished and not restarted (policy `never`, or a clean exit under `on-failure`).
    Exited,
    /// Gave up: could not be spawned, or the restart circuit opened.
    Failed,
}

impl State {
    /// True while the process occupies its name: it runs, or will run by itself.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            State::Waiting | State::Starting | State::Running | State::Stopping | State::Backoff
        )
    }

    /// Lower-case name, e.g. `running`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Waiting => "waiting",
            State::Starting => "starting",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Backoff => "backoff",
            State::Exited => "exited",
            State::Failed => "failed",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// Exit code, when it exited by itself.
    pub code: Option<i32>,
    /// Terminating signal, when it was killed.
    pub signal: Option<i32>,
    /// Whether it dumped core.
    pub core_dumped: bool,
}

impl ExitInfo {
    /// An exit with a code.
    pub fn code(code: i32) -> Self {
        ExitInfo {
            code: Some(code),
            signal: None,
            core_dumped: false,
        }
    }

    /// A death by signal.
    pub fn signal(signal: i32) -> Self {
        ExitInfo {
            code: None,
            signal: Some(signal),
            core_dumped: false,
        }
    }

    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit code {c}"),
            (None, Some(s)) => {
                write!(f, "signal {s}")?;
                if self.core_dumped {
                    f.write_str(" (core dumped)")?;
                }
                Ok(())
            }
            (None, None) => f.write_str("unknown exit"),
        }
    }
}

/// Least wait before a spawn that failed for lack of descriptors, pids or
/// memory is tried again.
pub const EXHAUSTED_RETRY: Duration = Duration::from_secs(1);

/// What happened to the process, fed to [`Machine::handle`].
#[derive(Debug, Clone)]
pub enum Input {
    /// Start by hand. Closes an open circuit and resets the failure count.
    Start,
    /// Restart by hand: stop (if running), then start.
    Restart,
    /// Stop by hand, with this grace period before SIGKILL.
    Stop {
        /// Grace period.
        timeout: Duration,
    },
    /// The spawn succeeded.
    Spawned {
        /// The child's pid (also its process group id).
        pid: u32,
    },
    /// The spawn failed. Permanent failures (no such file, no permission) are not
    /// retried; transient ones (out of pids, fds) go through the restart policy.
    SpawnFailed {
        /// What failed.
        error: Error,
        /// Retrying cannot help.
        permanent: bool,
        /// The host ran out of something every process needs (descriptors,
        /// pids, memory): not this process's fault, so not a strike towards
        /// its restart circuit; retried after at least
        /// [`EXHAUSTED_RETRY`].
        exhausted: bool,
    },
    /// The process exited and was reaped.
    Exited(ExitInfo),
    /// The armed timer expired (backoff over, stop grace period over, or start
    /// timeout reached).
    Timer,
    /// Every dependency condition holds.
    DepsMet,
    /// A dependency can no longer meet its condition.
    DepsBroken(Error),
    /// The readiness probe passed.
    Ready,
    /// The liveness probe failed past its threshold.
    Unhealthy(Error),
}

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Spawn the process.
    Spawn,
    /// Send the stop signal to the process group.
    SignalStop,
    /// SIGKILL the process group.
    KillGroup,
    /// Arm the (single) timer; replaces any armed one.
    ArmTimer(Duration),
    /// Disarm the timer.
    DisarmTimer,
    /// Watch the dependencies and report `DepsMet` / `DepsBroken`.
    AwaitDeps,
    /// Stop watching the dependencies.
    StopAwaitingDeps,
    /// Run this probe from now on (`None`: no probe), replacing any running one.
    Probe(Option<ProbeKind>),
}

/// What stands between a start and Running, fixed per spec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gates {
    /// The spec has dependencies to wait for on a manual start.
    pub depends: bool,
    /// The spec has a readiness probe.
    pub readiness: bool,
    /// The spec has a liveness probe.
    pub liveness: bool,
    /// Restart a process that is not ready after this long.
    pub start_timeout: Duration,
}

/// A change of state, with why it happened.
#[derive(Debug, Clone)]
pub struct Transition {
    /// State before.
    pub from: State,
    /// State after.
    pub to: State,
    /// The exit that caused it, if any.
    pub exit: Option<ExitInfo>,
    /// The error that caused it, if any.
    pub error: Option<Error>,
    /// The restart policy decided a restart here (whether it waits in
    /// `backoff` first or respawns at once): counts once per restart, the same
    /// restart that [`Machine::restarts`] counts.
    pub restart: bool,
    /// A run, or an attempt to start one, ended in failure here: a failed
    /// exit, a failed spawn, a readiness timeout or failed liveness, a broken
    /// dependency, an open circuit. Counts once per failure, whatever the next
    /// state is.
    pub failure: bool,
}

/// The result of one [`Machine::handle`] call.
#[derive(Debug, Default)]
pub struct Output {
    /// Actions for the driver, in order.
    pub actions: Vec<Action>,
    /// The state change, if the state changed.
    pub transition: Option<Transition>,
}

/// What to do once a stop in progress completes.
#[derive(Debug, Clone)]
enum AfterStop {
    Rest,
    Start,
    /// The stop was the supervisor's own (health check or start timeout): once the
    /// process is gone, treat the run as failed with this error.
    Fail(Error),
}

/// The state machine of one process.
#[derive(Debug)]
pub struct Machine {
    state: State,
    policy: RestartPolicy,
    /// Restarts since the last run that stayed up for `min_uptime`: the backoff exponent.
    attempt: u32,
    consecutive_failures: u32,
    restarts: u64,
    started_at: Option<Instant>,
    has_child: bool,
    after_stop: AfterStop,
    stop_timeout: Duration,
    gates: Gates,
    rng: fastrand::Rng,
}

impl Machine {
    /// A stopped machine with this policy. `seed` feeds the jitter; pass a fixed one
    /// in tests for repeatable delays.
    pub fn new(policy: RestartPolicy, seed: u64) -> Self {
        Machine {
            state: State::Stopped,
            policy,
            attempt: 0,
            consecutive_failures: 0,
            restarts: 0,
            started_at: None,
            has_child: false,
            after_stop: AfterStop::Rest,
            stop_timeout: Duration::from_secs(10),
            gates: Gates::default(),
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Restarts done by the policy (manual starts not counted).
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// Failed runs in a row.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Replace the policy (takes effect at the next exit).
    pub fn set_policy(&mut self, policy: RestartPolicy) {
        self.policy = policy;
    }

    /// Set the gates (dependencies, probes, start timeout) of the spec.
    pub fn set_gates(&mut self, gates: Gates) {
        self.gates = gates;
    }

    /// Set the grace period used when the machine stops the process by itself
    /// (restart by hand, failed health check).
    pub fn set_stop_timeout(&mut self, timeout: Duration) {
        self.stop_timeout = timeout;
    }

    /// Feed one input at time `now`; get the transition and the actions to carry out.
    pub fn handle(&mut self, input: Input, now: Instant) -> Output {
        let mut out = Output::default();
        match (self.state, input) {
            // ---- manual start / restart -------------------------------------------
            (State::Stopped | State::Exited | State::Failed, Input::Start | Input::Restart) => {
                self.reset_counters();
                if self.gates.depends {
                    self.go(&mut out, State::Waiting, None, None);
                    out.actions.push(Action::AwaitDeps);
                } else {
                    self.go(&mut out, State::Starting, None, None);
                    out.actions.push(Action::Spawn);
                }
            }
            (State::Waiting, Input::DepsMet) => {
                out.actions.push(Action::StopAwaitingDeps);
                self.go(&mut out, State::Starting, None, None);
                out.actions.push(Action::Spawn);
            }
            (State::Waiting, Input::DepsBroken(error)) => {
                out.actions.push(Action::StopAwaitingDeps);
                self.go(&mut out, State::Failed, None, Some(error));
                out.mark(false, true);
            }
            (State::Waiting, Input::Stop { .. }) => {
                out.actions.push(Action::StopAwaitingDeps);
                self.go(&mut out, State::Stopped, None, None);
            }
            (State::Waiting, Input::Start | Input::Restart) => {}
            (State::Backoff, Input::Start | Input::Restart) => {
                self.reset_counters();
                out.actions.push(Action::DisarmTimer);
                self.go(&mut out, State::Starting, None, None);
                out.actions.push(Action::Spawn);
            }
            (State::Starting | State::Running, Input::Restart) => {
                self.stop_probes(&mut out);
                self.begin_stop(&mut out, self.stop_timeout, AfterStop::Start);
            }
            // A stop of the supervisor's own (failed health) restarts by policy anyway.
            (State::Stopping, Input::Start | Input::Restart)
                if !matches!(self.after_stop, AfterStop::Fail(_)) =>
            {
                self.after_stop = AfterStop::Start;
            }
            (State::Starting | State::Running, Input::Start) => {}

            // ---- stop ----------------------------------------------------------------
            (State::Starting | State::Running, Input::Stop { timeout }) => {
                self.stop_probes(&mut out);
                self.begin_stop(&mut out, timeout, AfterStop::Rest);
            }
            (State::Stopping, Input::Stop { .. }) => {
                // A stop cancels a pending restart-after-stop; the grace period in
                // force is kept.
                self.after_stop = AfterStop::Rest;
            }
            (State::Stopping, Input::Ready | Input::Unhealthy(_)) => {}
            (State::Backoff, Input::Stop { .. }) => {
                out.actions.push(Action::DisarmTimer);
                self.go(&mut out, State::Stopped, None, None);
            }
            (State::Stopped | State::Exited | State::Failed, Input::Stop { .. }) => {}

            // ---- spawn outcome ----------------------------------------------------------
            (State::Starting, Input::Spawned { .. }) => {
                self.has_child = true;
                self.started_at = Some(now);
                if self.gates.readiness {
                    out.actions.push(Action::Probe(Some(ProbeKind::Readiness)));
                    out.actions.push(Action::ArmTimer(self.gates.start_timeout));
                } else {
                    self.go(&mut out, State::Running, None, None);
                    if self.gates.liveness {
                        out.actions.push(Action::Probe(Some(ProbeKind::Liveness)));
                    }
                }
            }
            (State::Starting, Input::Ready) if self.has_child => {
                out.actions.push(Action::DisarmTimer);
                self.go(&mut out, State::Running, None, None);
                let next = self.gates.liveness.then_some(ProbeKind::Liveness);
                out.actions.push(Action::Probe(next));
            }
            (State::Starting, Input::Timer) if self.has_child => {
                let error = Error::of(
                    ErrorKind::ReadinessTimeout,
                    format!("not ready after {:?}", self.gates.start_timeout),
                )
                .hint("the readiness probe never passed: check the process's logs and the probe's target")
                .build();
                out.actions.push(Action::Probe(None));
                self.begin_stop(&mut out, self.stop_timeout, AfterStop::Fail(error));
            }
            (State::Running, Input::Unhealthy(error)) => {
                out.actions.push(Action::Probe(None));
                self.begin_stop(&mut out, self.stop_timeout, AfterStop::Fail(error));
            }
            (
                State::Starting,
                Input::SpawnFailed {
                    error,
                    permanent,
                    exhausted,
                },
            ) => {
                self.has_child = false;
                self.started_at = None;
                if permanent {
                    self.go(&mut out, State::Failed, None, Some(error));
                    out.mark(false, true);
                } else if exhausted {
                    // Waited out, not counted: the circuit is for a process
                    // that keeps failing, not for a host that is full.
                    let delay = self
                        .policy
                        .delay(self.attempt, self.rng.f64())
                        .max(EXHAUSTED_RETRY);
                    self.restarts += 1;
                    self.go(&mut out, State::Backoff, None, Some(error));
                    out.actions.push(Action::ArmTimer(delay));
                    out.mark(true, false);
                } else {
                    self.after_failure(&mut out, None, Some(error), true);
                }
            }

            // ---- exits ------------------------------------------------------------------
            (State::Starting | State::Running, Input::Exited(exit)) => {
                self.has_child = false;
                if self.gates.readiness {
                    // The start timeout may be armed.
                    out.actions.push(Action::DisarmTimer);
                }
                self.stop_probes(&mut out);
                let uptime = self
                    .started_at
                    .take()
                    .map(|t| now.saturating_duration_since(t))
                    .unwrap_or_default();
                if uptime >= self.policy.min_uptime {
                    self.attempt = 0;
                    self.consecutive_failures = 0;
                }
                let failed = !exit.success();
                let restart = match self.policy.policy {
                    RestartMode::Always => true,
                    RestartMode::OnFailure => failed,
                    RestartMode::Never => false,
                };
                if !restart {
                    if failed {
                        self.consecutive_failures += 1;
                    }
                    self.go(&mut out, State::Exited, Some(exit), None);
                    out.mark(false, failed);
                } else {
                    self.after_failure(&mut out, Some(exit), None, failed);
                }
            }
            (State::Stopping, Input::Exited(exit)) => {
                self.has_child = false;
                let uptime = self
                    .started_at
                    .take()
                    .map(|t| now.saturating_duration_since(t))
                    .unwrap_or_default();
                out.actions.push(Action::DisarmTimer);
                match std::mem::replace(&mut self.after_stop, AfterStop::Rest) {
                    AfterStop::Rest => self.go(&mut out, State::Stopped, Some(exit), None),
                    AfterStop::Start => {
                        self.reset_counters();
                        self.go(&mut out, State::Starting, Some(exit), None);
                        out.actions.push(Action::Spawn);
                    }
                    AfterStop::Fail(error) => {
                        if uptime >= self.policy.min_uptime {
                            self.attempt = 0;
                            self.consecutive_failures = 0;
                        }
                        if self.policy.policy == RestartMode::Never {
                            self.consecutive_failures += 1;
                            self.go(&mut out, State::Exited, Some(exit), Some(error));
                            out.mark(false, true);
                        } else {
                            self.after_failure(&mut out, Some(exit), Some(error), true);
                        }
                    }
                }
            }

            // ---- timer ------------------------------------------------------------------
            (State::Backoff, Input::Timer) => {
                self.go(&mut out, State::Starting, None, None);
                out.actions.push(Action::Spawn);
            }
            (State::Stopping, Input::Timer) => {
                // Grace period over: no more asking.
                out.actions.push(Action::KillGroup);
            }

            // Anything else is stale (a timer that raced a transition, an exit of a
            // process we no longer track): ignore it.
            _ => {}
        }
        out
    }

    fn stop_probes(&self, out: &mut Output) {
        if self.gates.readiness || self.gates.liveness {
            out.actions.push(Action::Probe(None));
        }
    }

    fn reset_counters(&mut self) {
        self.attempt = 0;
        self.consecutive_failures = 0;
    }

    fn begin_stop(&mut self, out: &mut Output, timeout: Duration, after: AfterStop) {
        self.after_stop = after;
        self.stop_timeout = timeout;
        self.go(out, State::Stopping, None, None);
        out.actions.push(Action::SignalStop);
        out.actions.push(Action::ArmTimer(timeout));
    }

    /// A run ended (or a spawn failed transiently) and the policy says restart.
    fn after_failure(
        &mut self,
        out: &mut Output,
        exit: Option<ExitInfo>,
        error: Option<Error>,
        failed: bool,
    ) {
        if failed {
            self.consecutive_failures += 1;
            let max = self.policy.max_retries;
            if max > 0 && self.consecutive_failures > max {
                let mut b = Error::of(
                    ErrorKind::MaxErrorsExceeded,
                    format!("{} consecutive failures; restart circuit open", self.consecutive_failures),
                )
                .ctx("max_retries", max)
                .hint("look at the process's logs, fix the cause, then start it again to close the circuit");
                if let Some(e) = &exit {
                    b = b.ctx("last_exit", e);
                }
                if let Some(e) = &error {
                    b = b.ctx("last_error", e);
                }
                self.go(out, State::Failed, exit, Some(b.build()));
                out.mark(false, true);
                return;
            }
        }
        let delay = self.policy.delay(self.attempt, self.rng.f64());
        self.attempt = self.attempt.saturating_add(1);
        self.restarts += 1;
        if delay.is_zero() {
            // No wait: skip the timer round trip, respawn now.
            self.go(out, State::Starting, exit, error);
            out.actions.push(Action::Spawn);
        } else {
            self.go(out, State::Backoff, exit, error);
            out.actions.push(Action::ArmTimer(delay));
        }
        out.mark(true, failed);
    }

    fn go(&mut self, out: &mut Output, to: State, exit: Option<ExitInfo>, error: Option<Error>) {
        let from = self.state;
        self.state = to;
        out.transition = Some(Transition {
            from,
            to,
            exit,
            error,
            restart: false,
            failure: false,
        });
    }
}

impl Output {
    /// Say what the transition just made was: a policy restart, a failure.
    fn mark(&mut self, restart: bool, failure: bool) {
        if let Some(t) = &mut self.transition {
            t.restart = restart;
            t.failure = failure;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(mode: RestartMode) -> RestartPolicy {
        RestartPolicy {
            policy: mode,
            initial_interval: Duration::from_millis(100),
            multiplier: 2.0,
            max_interval: Duration::from_secs(1),
            jitter: 0.0,
            min_uptime: Duration::from_secs(5),
            max_retries: 3,
        }
    }

    fn spawn_err(permanent: bool) -> Input {
        Input::SpawnFailed {
            error: Error::of(ErrorKind::ProcessStartFailed, "boom").build(),
            permanent,
            exhausted: false,
        }
    }

    /// Start, spawn, and crash after `uptime`; return the output of the crash.
    fn crash(m: &mut Machine, t: &mut Instant, uptime: Duration, exit: ExitInfo) -> Output {
        if m.state() != State::Starting {
            m.handle(Input::Timer, *t);
        }
        m.handle(Input::Spawned { pid: 42 }, *t);
        assert_eq!(m.state(), State::Running);
        *t += uptime;
        m.handle(Input::Exited(exit), *t)
    }

    #[test]
    fn start_spawn_run() {
        let mut m = Machine::new(policy(RestartMode::Always), 1);
        let t = Instant::now();
        let o = m.handle(Input::Start, t);
        assert_eq!(o.actions, vec![Action::Spawn]);
        assert_eq!(m.state(), State::Starting);
        let o = m.handle(Input::Spawned { pid: 7 }, t);
        assert!(o.actions.is_empty());
        let tr = o.transition.unwrap();
        assert_eq!((tr.from, tr.to), (State::Starting, State::Running));
    }

    #[test]
    fn backoff_doubles_then_circuit_opens() {
        let mut m = Machine::new(policy(RestartMode::OnFailure), 1);
        let mut t = Instant::now();
        m.handle(Input::Start, t);
        let mut delays = Vec::new();
        for _ in 0..3 {
            let o = crash(&mut m, &mut t, Duration::from_millis(10), ExitInfo::code(1));
            assert_eq!(m.state(), State::Backoff);
            match o.actions.as_slice() {
                [Action::ArmTimer(d)] => delays.push(d.as_millis()),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(delays, vec![100, 200, 400]);
        let o = crash(&mut m, &mut t, Duration::from_millis(10), ExitInfo::code(1));
        assert_eq!(m.state(), State::Failed);
        assert!(o.actions.is_empty());
        let err = o.transition.unwrap().error.unwrap();
        assert_eq!(err.code(), "MAX_ERRORS_EXCEEDED");
        assert_eq!(m.restarts(), 3);

        // A manual start closes the circuit.
        let o = m.handle(Input::Start, t);
        assert_eq!(o.actions, vec![Action::Spawn]);
        assert_eq!(m.consecutive_failures(), 0);
    }

    #[test]
    fn every_restart_and_failure_is_marked_with_or_without_backoff() {
        for initial in [Duration::ZERO, Duration::from_millis(100)] {
            let mut p = policy(RestartMode::Always);
            p.initial_interval = initial;
            p.max_retries = 0;
            let mut m = Machine::new(p, 1);
            let mut t = Instant::now();
            m.handle(Input::Start, t);
            let (mut restarts, mut failures) = (0, 0);
            for exit in [ExitInfo::code(1), ExitInfo::code(0), ExitInfo::code(2)] {
                let tr = crash(&mut m, &mut t, Duration::from_millis(1), exit)
                    .transition
                    .unwrap();
                restarts += u64::from(tr.restart);
                failures += u64::from(tr.failure);
                if initial.is_zero() {
                    // Straight back to starting, no backoff in between.
                    assert_eq!((tr.from, tr.to), (State::Running, State::Starting));
                } else {
                    assert_eq!(tr.to, State::Backoff);
                    // Leaving backoff is the same restart, not another.
                    let tr = m.handle(Input::Timer, t).transition.unwrap();
                    assert!(!tr.restart && !tr.failure, "{tr:?}");
                }
            }
            assert_eq!((restarts, failures), (3, 2), "initial {initial:?}");
            assert_eq!(m.restarts(), restarts);
        }
        // Failures that end the process count too; a manual restart is no
        // restart of the policy.
        let t = Instant::now();
        let mut m = Machine::new(policy(RestartMode::Never), 1);
        m.handle(Input::Start, t);
        m.handle(Input::Spawned { pid: 1 }, t);
        let tr = m.handle(Input::Restart, t).transition.unwrap();
        assert!(!tr.restart && !tr.failure);
        let tr = m
            .handle(Input::Exited(ExitInfo::code(0)), t)
            .transition
            .unwrap();
        assert_eq!(tr.to, State::Starting);
        assert!(!tr.restart && !tr.failure);
        m.handle(Input::Spawned { pid: 2 }, t);
        let tr = m
            .handle(Input::Exited(ExitInfo::code(3)), t)
            .transition
            .unwrap();
        assert_eq!(tr.to, State::Exited);
        assert!(!tr.restart && tr.failure);
        m.handle(Input::Start, t);
        let tr = m.handle(spawn_err(true), t).transition.unwrap();
        assert_eq!(tr.to, State::Failed);
        assert!(tr.failure);
    }

    #[test]
    fn long_run_resets_backoff() {
        let mut m = Machine::new(policy(RestartMode::Always), 1);
        let mut t = Instant::now();
        m.handle(Input::Start, t);
        crash(&mut m, &mut t, Duration::from_millis(1), ExitInfo::code(1));
        let o = crash(&mut m, &mut t, Duration::from_millis(1), ExitInfo::code(1));
        assert_eq!(
            o.actions,
            vec![Action::ArmTimer(Duration::from_millis(200))]
        );
        let o = crash(&mut m, &mut t, Duration::from_secs(6), ExitInfo::code(1));
        assert_eq!(
            o.actions,
            vec![Action::ArmTimer(Duration::from_millis(100))]
        );
        assert_eq!(m.consecutive_failures(), 1);
    }

    #[test]
    fn policies_decide_on_exit() {
        let t = Instant::now();
        let mut m = Machine::new(policy(RestartMode::OnFailure), 1);
        m.handle(Input::Start, t);
        m.handle(Input::Spawned { pid: 1 }, t);
        m.handle(Input::Exited(ExitInfo::code(0)), t);
        assert_eq!(m.state(), State::Exited);

        let mut m = Machine::new(policy(RestartMode::Never), 1);
        m.handle(Input::Start, t);
        m.handle(Input::Spawned { pid: 1 }, t);
        let o = m.handle(Input::Exited(ExitInfo::signal(9)), t);
        assert_eq!(m.state(), State::Exited);
        assert_eq!(o.transition.unwrap().exit, Some(ExitInfo::signal(9)));

        let mut m = Machine::new(policy(RestartMode::Always), 1);
        m.handle(Input::Start, t);
        m.handle(Input::Spawned { pid: 1 }, t);
        m.handle(Input::Exited(ExitInfo::code(0)), t);
        assert_eq!(m.state(), State::Backoff);
        // Clean exits never open the circuit.
        assert_eq!(m.consecutive_failures(), 0);
    }

    #[test]
    fn zero_interval_respawns_without_timer() {
        let mut p = policy(RestartMode::Always);
        p.initial_interval = Duration::ZERO;
        let mut m = Machine::new(p, 1);
        let t = Instant::now();
        m.handle(Input::Start, t);
        m.handle(Input::Spawned { pid: 1 }, t);
        let o = m.handle(Input::Exited(ExitInfo::signal(9)), t);
        assert_eq!(o.actions, vec![Action::Spawn]);
        assert_eq!(m.state(), State::Starting);
    }

    #[test]
    fn a_host_out_of_descriptors_never_opens_the_circuit() {
        let mut p = policy(RestartMode::Always);
        p.max_retries = 2;
        p.initial_interval = Duration::ZERO;
        p.max_interval = Duration::ZERO;
        let mut m = Machine::new(p, 1);
        let t = Instant::now();
        m.handle(Input::Start, t);
        for i in 0..10 {
            let o = m.handle(
                Input::SpawnFailed {
                    error: Error::of(ErrorKind::ProcessStartFailed, "Too many open files").build(),
                    permanent: false,
                    exhausted: true,
                },
                t,
            );
            assert_eq!(m.state(), State::Backoff, "attempt {i}");
            // Waited out for at least a second, even with zero backoff.
            assert!(
                o.actions
                    .iter()
                    .any(|a| matches!(a, Action::ArmTimer(d) if *d >= EXHAUSTED_RETRY)),
                "{:?}",
                o.actions
            );
            m.handle(Input::Timer, t);
            assert_eq!(m.state(), State::Starting);
        }
        assert_eq!(m.consecutive_failures(), 0);
        // A failure of the process itself still counts.
        m.handle(spawn_err(false), t);
        m.handle(Input::Timer, t);
        m.handle(spawn_err(false), t);
        m.handle(Input::Timer, t);
        m.handle(spawn_err(false), t);
        assert_eq!(m.state(), State::Failed);
    }

    #[test]
    fn permanent_spawn_failure_fails_at_once() {
        let mut m = Machine::new(policy(RestartMode::Always), 1);
        let t = Instant::now();
        m.handle(Input::Start, t);
        let o = m.handle(spawn_err(true), t);
        assert_eq!(m.state(), State::Failed);
        assert_eq!(
            o.transition.unwrap().error.unwrap().code(),
            "PROCESS_START_FAILED"
        );
        // Transient ones are retried.
        m.handle(Input::Start, t);
        m.handle(spawn_err(false), t);
        assert_eq!(m.state(), State::Backoff);
    }

    #[test]
    fn stop_signals_then_kills_after_grace() {
        let mut m = Machine::new(policy(RestartMode::Always), 1);
        let t = Instant::now();
        m.handle(Input::Start, t);
        m.handle(Input::Spawned { pid: 1 }, t);
        let o = m.handle(
            Input::Stop {
                timeout: Duration::from_secs(2),
            },
            t,
        );
        assert_eq!(
            o.actions,
            vec![Action::SignalStop, Action::ArmTimer(Duration::from_secs(2))]
        );
        let o = m.handle(Input::Timer, t);
        assert_eq!(o.actions, vec![Action::KillGroup]);
        let o = m.handle(Input::Exited(ExitInfo::signal(9)), t);
        assert_eq!(o.actions, vec![Action::DisarmTimer]);
        assert_eq!(m.state(), State::Stopped);
        // An exit during a requested stop is not a failure and does not restart.
        assert_eq!(m.consecutive_failures(), 0);
        assert_eq!(m.restarts(), 0);
    }

    #[test]
    fn stop_in_backoff_cancels_restart() {
        let mut m = Machine::new(policy(RestartMode::Always), 1);
        let t = Instant::now();
        m.handle(Input::Start, t);
        m.handle(Input::Spawned { pid: 1 }, t);
        m.handle(Input::Exited(ExitInfo::code(3)), t);
        assert_eq!(m.state(), State::Backoff);
        let o = m.handle(
            Input::Stop {
                timeout: Duration::ZERO,
            },
            t,
        );
        assert_eq!(o.actions, vec![Action::DisarmTimer]);
        assert_eq!(m.state(), State::Stopped);
        // A stale timer after that is ignored.
        assert!(m.handle(Input::Timer, t).actions.is_empty());
        assert_eq!(m.state(), State::Stopped);
    }

    #[test]
    fn restart_while_running_stops_then_starts() {
        let mut m = Machine::new(policy(RestartMode::Never), 1);
        let t = Instant::now();
        m.handle(Input::Start, t);
        m.handle(Input::Spawned { pid: 1 }, t);
        let o = m.handle(Input::Restart, t);
        assert_eq!(o.actions[0], Action::SignalStop);
        let o = m.handle(Input::Exited(ExitInfo::signal(15)), t);
        assert_eq!(o.actions, vec![Action::DisarmTimer, Action::Spawn]);
        assert_eq!(m.state(), State::Starting);
    }

    fn gated(readiness: bool, liveness: bool, depends: bool) -> Machine {
        let mut m = Machine::new(policy(RestartMode::OnFailure), 1);
        m.set_gates(Gates {
            depends,
            readiness,
            liveness,
            start_timeout: Duration::from_secs(30),
        });
        m.set_stop_timeout(Duration::from_secs(2));
        m
    }

    fn health_err() -> Error {
        Error::of(ErrorKind::HealthCheckFailed, "connection refused").build()
    }

    #[test]
    fn readiness_gates_running_and_hands_over_to_liveness() {
        let mut m = gated(true, true, false);
        let t = Instant::now();
        m.handle(Input::Start, t);
        let o = m.handle(Input::Spawned { pid: 1 }, t);
        assert_eq!(m.state(), State::Starting);
        assert_eq!(
            o.actions,
            vec![
                Action::Probe(Some(ProbeKind::Readiness)),
                Action::ArmTimer(Duration::from_secs(30))
            ]
        );
        let o = m.handle(Input::Ready, t);
        assert_eq!(m.state(), State::Running);
        assert_eq!(
            o.actions,
            vec![
                Action::DisarmTimer,
                Action::Probe(Some(ProbeKind::Liveness))
            ]
        );
    }

    #[test]
    fn start_timeout_restarts_through_the_policy() {
        let mut m = gated(true, false, false);
        let t = Instant::now();
        m.handle(Input::Start, t);
        m.handle(Input::Spawned { pid: 1 }, t);
        let o = m.handle(Input::Timer, t);
        assert_eq!(m.state(), State::Stopping);
        assert!(o.actions.contains(&Action::SignalStop));
        let o = m.handle(Input::Exited(ExitInfo::signal(15)), t);
        assert_eq!(m.state(), State::Backoff);
        let tr = o.transition.unwrap();
        assert_eq!(tr.error.unwrap().code(), "READINESS_TIMEOUT");
        assert_eq!(m.consecutive_failures(), 1);
    }

    #[test]
    fn liveness_failure_counts_toward_the_circuit() {
        let mut m = gated(false, true, false);
        let t = Instant::now();
        m.handle(Input::Start, t);
        for i in 0..4 {
            if i > 0 {
                m.handle(Input::Timer, t);
            }
            let o = m.handle(Input::Spawned { pid: 1 }, t);
            assert_eq!(o.actions, vec![Action::Probe(Some(ProbeKind::Liveness))]);
            m.handle(Input::Unhealthy(health_err()), t);
            let o = m.handle(Input::Exited(ExitInfo::signal(15)), t);
            let err = o.transition.unwrap().error.unwrap();
            if i < 3 {
                assert_eq!(m.state(), State::Backoff);
                assert_eq!(err.code(), "HEALTH_CHECK_FAILED");
            } else {
                assert_eq!(m.state(), State::Failed);
                assert_eq!(err.code(), "MAX_ERRORS_EXCEEDED");
            }
        }
    }

    #[test]
    fn dependencies_are_awaited_on_manual_start_only() {
        let mut m = gated(false, false, true);
        let t = Instant::now();
        let o = m.handle(Input::Start, t);
        assert_eq!(m.state(), State::Waiting);
        assert_eq!(o.actions, vec![Action::AwaitDeps]);
        let o = m.handle(Input::DepsMet, t);
        assert_eq!(o.actions, vec![Action::StopAwaitingDeps, Action::Spawn]);
        m.handle(Input::Spawned { pid: 1 }, t);
        // A crash restarts without waiting for dependencies again.
        m.handle(Input::Exited(ExitInfo::code(1)), t);
        let o = m.handle(Input::Timer, t);
        assert_eq!(o.actions, vec![Action::Spawn]);
        // A broken dependency fails a waiting process.
        let mut m = gated(false, false, true);
        m.handle(Input::Start, t);
        m.handle(Input::DepsBroken(health_err()), t);
        assert_eq!(m.state(), State::Failed);
    }

    #[test]
    fn jitter_is_bounded_and_seeded() {
        let mut p = policy(RestartMode::Always);
        p.jitter = 0.1;
        p.initial_interval = Duration::from_secs(1);
        p.max_retries = 0;
        let run = |seed| {
            let mut m = Machine::new(p, seed);
            let mut t = Instant::now();
            m.handle(Input::Start, t);
            let o = crash(&mut m, &mut t, Duration::from_millis(1), ExitInfo::code(1));
            match o.actions.as_slice() {
                [Action::ArmTimer(d)] => *d,
                other => panic!("{other:?}"),
            }
        };
        let a: Vec<_> = (0..200).map(run).collect();
        assert!(a
            .iter()
            .all(|d| *d >= Duration::from_millis(900) && *d <= Duration::from_millis(1100)));
        assert!(a.iter().any(|d| *d < Duration::from_millis(980)));
        assert!(a.iter().any(|d| *d > Duration::from_millis(1020)));
        assert_eq!(run(7), run(7));
    }
}
