//! Errors with the seed's stable codes, typed, so retry decisions never match
//! on strings.

use std::fmt;

/// What went wrong, with the seed's code ([`ErrorKind::code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `PLUGIN_1201`: no plugin of that name.
    PluginNotFound,
    /// `PLUGIN_1202`: the plugin is disabled.
    PluginNotEnabled,
    /// `PLUGIN_1203`: the plugin answered with an error.
    ExecutionFailed,
    /// `PLUGIN_1204`: no answer within the deadline.
    Timeout,
    /// `PLUGIN_1205`: could not reach the plugin.
    ConnectionFailed,
    /// `TRANSPORT_1301`..`1304`: the transport broke mid-call.
    Transport,
    /// `CIRCUIT_1401`: refused by an open circuit.
    CircuitOpen,
    /// `RATELIMIT_1501`: refused by the rate limit.
    RateLimited,
    /// `HEALTH_1601`: the health check failed.
    HealthCheckFailed,
    /// `LOADBALANCER_1701`: no plugin available to take the call.
    NoAvailablePlugins,
}

impl ErrorKind {
    /// The seed's code.
    pub const fn code(self) -> &'static str {
        match self {
            ErrorKind::PluginNotFound => "PLUGIN_1201",
            ErrorKind::PluginNotEnabled => "PLUGIN_1202",
            ErrorKind::ExecutionFailed => "PLUGIN_1203",
            ErrorKind::Timeout => "PLUGIN_1204",
            ErrorKind::ConnectionFailed => "PLUGIN_1205",
            ErrorKind::Transport => "TRANSPORT_1301",
            ErrorKind::CircuitOpen => "CIRCUIT_1401",
            ErrorKind::RateLimited => "RATELIMIT_1501",
            ErrorKind::HealthCheckFailed => "HEALTH_1601",
            ErrorKind::NoAvailablePlugins => "LOADBALANCER_1701",
        }
    }

    /// Another attempt may succeed: the failure was in reaching the plugin or
    /// in time, not in what it answered, and not a refusal of ours.
    pub const fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Timeout | ErrorKind::ConnectionFailed | ErrorKind::Transport
        )
    }

    /// Counts against the circuit breaker (a refusal by our own policies does not).
    pub const fn counts_as_failure(self) -> bool {
        !matches!(self, ErrorKind::CircuitOpen | ErrorKind::RateLimited)
    }
}

/// An error: its kind (and code), a message, and the plugin it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Details.
    pub message: String,
    /// The plugin, when known.
    pub plugin: Option<String>,
}

impl Error {
    /// An error of this kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            plugin: None,
        }
    }

    /// The seed's code.
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.plugin {
            Some(p) => write!(f, "{}: {p}: {}", self.code(), self.message),
            None => write!(f, "{}: {}", self.code(), self.message),
        }
    }
}

impl std::error::Error for Error {}
