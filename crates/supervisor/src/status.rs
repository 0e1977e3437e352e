//! Point-in-time view of a process.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::error::Error;
use crate::health::HealthStatus;
use crate::logs::LogLine;
use crate::state::{ExitInfo, State};

/// A snapshot of one process, as [`crate::Manager::status`] returns it.
#[derive(Debug, Clone)]
pub struct ProcessStatus {
    /// Process name.
    pub name: Arc<str>,
    /// Current state.
    pub state: State,
    /// The child's pid (also its process group id) while it has one.
    pub pid: Option<u32>,
    /// Restarts done by the restart policy.
    pub restarts: u64,
    /// Failed runs in a row (resets after a run of `min_uptime`, or a manual start).
    pub consecutive_failures: u32,
    /// When the current run started (while Running or Stopping).
    pub started_at: Option<SystemTime>,
    /// When the process entered its current state.
    pub since: SystemTime,
    /// How the last run ended.
    pub last_exit: Option<ExitInfo>,
    /// The last error (start failure, open circuit), with its code.
    pub last_error: Option<Error>,
    /// Output bytes lost because the log file could not be written.
    pub log_dropped_bytes: u64,
    /// The last log-file error, if writing failed.
    pub log_error: Option<String>,
    /// Health as the probes see it (`Unknown` without probes).
    pub health: HealthStatus,
    /// Ports allocated to the process, by name.
    pub ports: Vec<(String, u16)>,
}

impl ProcessStatus {
    pub(crate) fn new(name: Arc<str>) -> Self {
        ProcessStatus {
            name,
            state: State::Stopped,
            pid: None,
            restarts: 0,
            consecutive_failures: 0,
            started_at: None,
            since: SystemTime::now(),
            last_exit: None,
            last_error: None,
            log_dropped_bytes: 0,
            log_error: None,
            health: HealthStatus::default(),
            ports: Vec::new(),
        }
    }

    /// Time since the current run started.
    pub fn uptime(&self) -> Option<Duration> {
        self.started_at
            .and_then(|t| SystemTime::now().duration_since(t).ok())
    }
}

/// Recent output of a process, from [`crate::Manager::tail`].
pub type Tail = Vec<LogLine>;
