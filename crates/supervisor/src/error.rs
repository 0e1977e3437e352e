//! Typed errors with a stable code, context and a hint for the fix.

use std::fmt;
use std::sync::Arc;

/// What went wrong, as a stable machine-readable code.
///
/// The string form ([`ErrorKind::code`]) is part of the public contract: scripts and
/// the API match on it, so it never changes once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A [`crate::ProcessSpec`] failed validation.
    InvalidSpec,
    /// A glob pattern could not be parsed.
    InvalidPattern,
    /// A process with this name is already registered and active.
    DuplicateName,
    /// No process with this name is registered.
    ProcessNotFound,
    /// The process could not be spawned (missing executable, permissions, limits).
    ProcessStartFailed,
    /// The restart circuit opened: too many consecutive failures.
    MaxErrorsExceeded,
    /// The liveness probe failed past its failure threshold.
    HealthCheckFailed,
    /// The readiness probe did not pass within the start timeout.
    ReadinessTimeout,
    /// The process's ports could not be allocated.
    PortUnavailable,
    /// A dependency can no longer meet its condition.
    DependencyFailed,
    /// Dependencies form a cycle.
    DependencyCycle,
    /// The manager is shutting down and refuses new work.
    ShuttingDown,
    /// An operating-system call failed outside of spawning.
    Io,
    /// A signal name or number that is not a standard Linux signal.
    InvalidSignal,
    /// The process has no running main process to act on.
    ProcessNotRunning,
    /// More processes than the descriptor limit or the kernel's pids hold.
    CapacityExceeded,
}

impl ErrorKind {
    /// The stable code, e.g. `PROCESS_START_FAILED`.
    pub const fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidSpec => "INVALID_SPEC",
            ErrorKind::InvalidPattern => "INVALID_PATTERN",
            ErrorKind::DuplicateName => "DUPLICATE_NAME",
            ErrorKind::ProcessNotFound => "PROCESS_NOT_FOUND",
            ErrorKind::ProcessStartFailed => "PROCESS_START_FAILED",
            ErrorKind::MaxErrorsExceeded => "MAX_ERRORS_EXCEEDED",
            ErrorKind::HealthCheckFailed => "HEALTH_CHECK_FAILED",
            ErrorKind::ReadinessTimeout => "READINESS_TIMEOUT",
            ErrorKind::PortUnavailable => "PORT_UNAVAILABLE",
            ErrorKind::DependencyFailed => "DEPENDENCY_FAILED",
            ErrorKind::DependencyCycle => "DEPENDENCY_CYCLE",
            ErrorKind::ShuttingDown => "SHUTTING_DOWN",
            ErrorKind::Io => "IO_ERROR",
            ErrorKind::InvalidSignal => "INVALID_SIGNAL",
            ErrorKind::ProcessNotRunning => "PROCESS_NOT_RUNNING",
            ErrorKind::CapacityExceeded => "CAPACITY_EXCEEDED",
        }
    }

    /// What kind of failure this is; edges map it to a gRPC status, an HTTP
    /// status and an exit code.
    pub const fn category(self) -> hangar_base::Category {
        use hangar_base::Category as C;
        match self {
            ErrorKind::InvalidSpec
            | ErrorKind::InvalidPattern
            | ErrorKind::DependencyCycle
            | ErrorKind::InvalidSignal => C::Invalid,
            ErrorKind::ProcessNotRunning => C::Precondition,
            ErrorKind::DuplicateName => C::Conflict,
            ErrorKind::ProcessNotFound => C::NotFound,
            // The service ran and failed: not the caller's to fix, and not
            // safe to retry blindly (a create or start is not idempotent).
            ErrorKind::HealthCheckFailed | ErrorKind::ProcessStartFailed => C::Internal,
            ErrorKind::MaxErrorsExceeded
            | ErrorKind::PortUnavailable
            | ErrorKind::CapacityExceeded => C::Exhausted,
            ErrorKind::ReadinessTimeout => C::Timeout,
            ErrorKind::DependencyFailed | ErrorKind::ShuttingDown => C::Precondition,
            ErrorKind::Io => C::Internal,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An error from the supervisor: a kind (stable code), a message, the context it
/// happened in (process name, command, pid, …) and a hint for the fix.
///
/// Cheap to clone, so the same error can sit in a status snapshot and travel in an
/// event.
#[derive(Clone)]
pub struct Error {
    inner: Arc<Inner>,
}

struct Inner {
    kind: ErrorKind,
    message: String,
    context: Vec<(&'static str, String)>,
    hint: Option<String>,
    source: Option<std::io::Error>,
}

impl Error {
    pub(crate) fn of(kind: ErrorKind, message: impl Into<String>) -> Builder {
        Builder {
            inner: Inner {
                kind,
                message: message.into(),
                context: Vec::new(),
                hint: None,
                source: None,
            },
        }
    }

    /// The kind of error.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The stable code, e.g. `PROCESS_NOT_FOUND`.
    pub fn code(&self) -> &'static str {
        self.inner.kind.code()
    }

    /// What kind of failure this is (see [`hangar_base::Category`]).
    pub fn category(&self) -> hangar_base::Category {
        self.inner.kind.category()
    }

    /// The human-readable message, without code, context or hint.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// Key/value context: which process, command, pid.
    pub fn context(&self) -> &[(&'static str, String)] {
        &self.inner.context
    }

    /// A suggestion for the fix, when there is one.
    pub fn hint(&self) -> Option<&str> {
        self.inner.hint.as_deref()
    }
}

pub(crate) struct Builder {
    inner: Inner,
}

impl Builder {
    pub(crate) fn ctx(mut self, key: &'static str, value: impl fmt::Display) -> Self {
        self.inner.context.push((key, value.to_string()));
        self
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.inner.hint = Some(hint.into());
        self
    }

    pub(crate) fn source(mut self, source: std::io::Error) -> Self {
        self.inner.source = Some(source);
        self
    }

    pub(crate) fn build(self) -> Error {
        Error {
            inner: Arc::new(self.inner),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.code(), self.inner.message)?;
        if let Some(src) = &self.inner.source {
            write!(f, ": {src}")?;
        }
        for (k, v) in &self.inner.context {
            write!(f, " {k}={v:?}")?;
        }
        if let Some(h) = &self.inner.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("code", &self.code())
            .field("message", &self.inner.message)
            .field("context", &self.inner.context)
            .field("hint", &self.inner.hint)
            .field("source", &self.inner.source)
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl hangar_base::Coded for ErrorKind {
    fn code(self) -> &'static str {
        ErrorKind::code(self)
    }
    fn category(self) -> hangar_base::Category {
        ErrorKind::category(self)
    }
}

/// The same error for the service layer: code, category, context and hint
/// unchanged; the message keeps the OS error behind it.
impl From<Error> for hangar_base::Error {
    fn from(e: Error) -> hangar_base::Error {
        let mut message = e.message().to_string();
        if let Some(src) = std::error::Error::source(&e) {
            message.push_str(&format!(": {src}"));
        }
        let context = e
            .context()
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        hangar_base::Error::from_parts(
            e.code(),
            e.category(),
            message,
            context,
            e.hint().map(str::to_string),
        )
    }
}
