//! Events: every state change, with a timestamp, broadcast to subscribers.

use std::sync::Arc;
use std::time::SystemTime;

use crate::error::Error;
use crate::health::{Health, ProbeKind};
use crate::state::{ExitInfo, State};

/// Something that happened to a process.
#[derive(Debug, Clone)]
pub struct Event {
    /// Increases by one per event of this manager; a gap means a slow subscriber
    /// lost events (see [`tokio::sync::broadcast::error::RecvError::Lagged`]).
    pub seq: u64,
    /// Wall-clock time of the event.
    pub at: SystemTime,
    /// Process name.
    pub name: Arc<str>,
    /// The child's pid at the time, if it had one.
    pub pid: Option<u32>,
    /// What happened.
    pub kind: EventKind,
}

/// The kinds of events.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum EventKind {
    /// A state transition.
    State {
        /// State before.
        from: State,
        /// State after.
        to: State,
        /// The exit that caused it.
        exit: Option<ExitInfo>,
        /// The error that caused it.
        error: Option<Error>,
        /// Restarts so far (by policy).
        restarts: u64,
        /// The policy decided a restart here (see [`crate::Transition::restart`]).
        restart: bool,
        /// A run or a start ended in failure here (see
        /// [`crate::Transition::failure`]).
        failure: bool,
    },
    /// A probe changed the process's health.
    Health {
        /// Which probe.
        probe: ProbeKind,
        /// Health before.
        from: Health,
        /// Health after.
        to: Health,
        /// Why the last check failed, if it did.
        error: Option<String>,
    },
}
