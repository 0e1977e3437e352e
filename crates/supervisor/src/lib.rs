//! `hangar_supervisor` runs processes and keeps them running.
//!
//! A [`Manager`] holds named processes, each described by a [`ProcessSpec`]. Every
//! process is driven by its own tokio task around a pure state [`Machine`]
//! (event in, actions out), so restart, backoff and circuit-breaker rules are
//! unit-tested without spawning anything, and one slow process never holds up
//! another.
//!
//! How the parts connect:
//!
//! - **Spawning** happens on a couple of dedicated threads (`spawn` module): each
//!   child gets its own session and process group, `PR_SET_PDEATHSIG` so it dies
//!   with the supervisor, and a pidfd, so exit is learnt from the kernel (epoll on
//!   the pidfd), never by polling. Every child is reaped: no zombies.
//! - **Stopping** sends the spec's stop signal to the whole process group, then
//!   SIGKILL to the group after the grace period. When a group leader exits for any
//!   reason, what is left of its group is killed before the leader is reaped, so
//!   grandchildren do not outlive it.
//! - **Logs** (`logs` module): one thread drains every stdout/stderr pipe into
//!   size-rotated files and a small in-memory tail; a child never blocks on its
//!   pipe and a full disk only drops output (counted in the status).
//! - **Resources and privileges** (`cgroup` and `privs` modules): a spec with
//!   [`Limits`] gets a cgroup of its own (v2 where the host's cgroup2 mount has
//!   the controllers, the v1 hierarchies otherwise, a warning and no limits when
//!   neither can be used — see [`Cgroups::detect`]); the child writes itself into
//!   it before anything else, and it is removed, stragglers killed, once the
//!   process is gone. The child can join a network namespace, drop to another
//!   user ([`RunAs`]) and sets `no_new_privs` by default, all before exec.
//! - **One-shot commands** ([`Manager::run_once`], `once` module): a command run
//!   to completion through the same spawner (a config checker, an exec probe),
//!   its output captured, its whole process group killed on timeout or when the
//!   caller gives up.
//! - **Ending another run's leftovers** ([`reap`]): a caller that proved some
//!   processes are its own (the daemon's recovery scan) has the supervisor
//!   signal them through pidfds, re-checked against the scan.
//! - **Capacity** ([`fdlimit`]): `hangar run` and `hangar serve` raise their own
//!   descriptor limit at start; a start that would take more processes than the
//!   limit (three descriptors each) or the kernel's free pids hold is refused at
//!   once with `CAPACITY_EXCEEDED`, and children get the original limit back.
//! - **Events** ([`Event`]) are broadcast for every state change; [`ProcessStatus`]
//!   snapshots are read without asking the process task.
//!
//! ```no_run
//! use std::time::Duration;
//! use hangar_supervisor::{Manager, ProcessSpec, RestartMode, RestartPolicy};
//!
//! # async fn demo() -> Result<(), hangar_supervisor::Error> {
//! let manager = Manager::new()?;
//! let spec = ProcessSpec::new("sleeper", "sleep").args(["3600"]).restart(RestartPolicy {
//!     policy: RestartMode::Always,
//!     initial_interval: Duration::ZERO,
//!     ..RestartPolicy::default()
//! });
//! let pid = manager.start(spec).await?;
//! println!("sleeper runs as {pid}");
//! manager.stop("sleeper", Some(Duration::from_secs(5))).await?;
//! manager.shutdown().await;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod cgroup;
mod clone3;
mod deps;
mod error;
mod event;
pub mod fdlimit;
mod health;
mod logs;
mod manager;
mod once;
mod ports;
mod privs;
mod probe;
mod process;
pub mod reap;
mod spawn;
mod spec;
mod state;
mod status;
mod tree;
pub mod usage;

pub use cgroup::{
    CgroupVersion, Cgroups, ResourceUsage, CGROUP_CREATE_FAILED, CGROUP_JOIN_FAILED,
    CGROUP_LIMIT_FAILED, CPU_PERIOD_US,
};
pub use deps::{find_cycle, Condition};
pub use error::{Error, ErrorKind, Result};
pub use event::{Event, EventKind};
pub use health::{Check, Health, HealthStatus, HealthTracker, ProbeKind, ProbeSpec, Verdict};
pub use logs::{LogLine, Stream};
pub use manager::{Manager, ManagerOptions};
pub use once::{RunOutput, ONCE_OUTPUT_LIMIT};
pub use ports::{PortError, PortErrorKind, PortRange, PortRegistry};
pub use privs::{
    NETNS_JOIN_FAILED, NETNS_OPEN_FAILED, PRIVS_NOT_ROOT, PRIVS_NO_NEW_PRIVS_FAILED,
    PRIVS_SETID_FAILED, PRIVS_UNKNOWN_USER,
};
pub use spec::{
    expanded_names, KillMode, Limits, LogSpec, ProcessSpec, RestartMode, RestartPolicy, RunAs,
    SignalName, SpecProblem, StopSignal, MAX_NAME_LEN, MIN_CPU_MAX, MIN_MEMORY_MAX,
};
pub use state::{Action, ExitInfo, Gates, Input, Machine, Output, State, Transition};
pub use status::{ProcessStatus, Tail};
pub use tree::{PROCESS_NAME_ENV, SUPERVISOR_ID_ENV};
