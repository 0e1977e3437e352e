//! Errors of the per-instance network code: a stable code, context and a hint.

use std::fmt;

/// What went wrong, as a stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum NetErrorKind {
    /// Every number of the configured range is taken.
    Exhausted,
    /// The number is outside the configured range, or held by another owner.
    NumberUnavailable,
    /// The configuration is invalid (range, prefix, addresses, TLS files…).
    InvalidConfig,
    /// The operation needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN).
    PermissionDenied,
    /// A netlink request failed.
    Netlink,
    /// Creating, opening or removing a network namespace failed.
    Namespace,
    /// An object hangar wants to create already exists.
    AlreadyExists,
    /// A fault injected by a test (see `LinuxBackend::fail_after_step`).
    InjectedFault,
    /// The router could not be reached, or the connection broke.
    RouterConnect,
    /// The router refused the login.
    RouterLogin,
    /// The router answered a command with `!trap` or `!fatal`.
    RouterCommand,
    /// The router's answer did not follow the API protocol.
    RouterProtocol,
    /// A record does not belong to this backend or is inconsistent.
    InvalidRecord,
    /// Some other I/O error.
    Io,
}

impl NetErrorKind {
    /// Stable code, e.g. `NET_RANGE_EXHAUSTED`.
    pub const fn code(self) -> &'static str {
        match self {
            NetErrorKind::Exhausted => "NET_RANGE_EXHAUSTED",
            NetErrorKind::NumberUnavailable => "NET_NUMBER_UNAVAILABLE",
            NetErrorKind::InvalidConfig => "NET_CONFIG_INVALID",
            NetErrorKind::PermissionDenied => "NET_PERMISSION_DENIED",
            NetErrorKind::Netlink => "NET_NETLINK_FAILED",
            NetErrorKind::Namespace => "NET_NAMESPACE_FAILED",
            NetErrorKind::AlreadyExists => "NET_ALREADY_EXISTS",
            NetErrorKind::InjectedFault => "NET_INJECTED_FAULT",
            NetErrorKind::RouterConnect => "NET_ROUTER_UNREACHABLE",
            NetErrorKind::RouterLogin => "NET_ROUTER_LOGIN_FAILED",
            NetErrorKind::RouterCommand => "NET_ROUTER_COMMAND_FAILED",
            NetErrorKind::RouterProtocol => "NET_ROUTER_PROTOCOL",
            NetErrorKind::InvalidRecord => "NET_RECORD_INVALID",
            NetErrorKind::Io => "NET_IO",
        }
    }

    /// What kind of failure this is; edges map it to a gRPC status, an HTTP
    /// status and an exit code.
    pub const fn category(self) -> hangar_base::Category {
        use hangar_base::Category as C;
        match self {
            NetErrorKind::Exhausted | NetErrorKind::NumberUnavailable => C::Exhausted,
            NetErrorKind::InvalidConfig | NetErrorKind::InvalidRecord => C::Invalid,
            NetErrorKind::PermissionDenied => C::Precondition,
            NetErrorKind::AlreadyExists => C::Conflict,
            NetErrorKind::RouterConnect => C::Unavailable,
            NetErrorKind::RouterLogin => C::Unauthenticated,
            NetErrorKind::Netlink
            | NetErrorKind::Namespace
            | NetErrorKind::InjectedFault
            | NetErrorKind::RouterCommand
            | NetErrorKind::RouterProtocol
            | NetErrorKind::Io => C::Internal,
        }
    }

    fn default_hint(self) -> &'static str {
        match self {
            NetErrorKind::Exhausted => {
                "widen the network number range in the config, or delete instances that no longer need a network"
            }
            NetErrorKind::NumberUnavailable => "pick a number inside the configured range that no other instance holds",
            NetErrorKind::InvalidConfig => "fix the [network] section of the daemon config",
            NetErrorKind::PermissionDenied => {
                "run the daemon as root (it needs CAP_NET_ADMIN and CAP_SYS_ADMIN for namespaces and routes)"
            }
            NetErrorKind::Netlink => "check `ip link`, `ip rule` and `ip route show table all` for a conflicting object",
            NetErrorKind::Namespace => "check that /run/netns is writable and that `ip netns` works on this host",
            NetErrorKind::AlreadyExists => {
                "an earlier run left this object behind; restart the daemon so recovery removes it"
            }
            NetErrorKind::InjectedFault => "this failure was injected by a test",
            NetErrorKind::RouterConnect => "check the router address, port (8728, or 8729 with TLS) and that the API service is enabled",
            NetErrorKind::RouterLogin => "check the username and password, and that the user's group has the `api` policy",
            NetErrorKind::RouterCommand => "read the router's message; the command or one of its values was refused",
            NetErrorKind::RouterProtocol => "the peer does not speak the RouterOS API (RouterOS 6.43 or newer is required)",
            NetErrorKind::InvalidRecord => "the record was made by another backend or config; tear it down with that one",
            NetErrorKind::Io => "see the cause",
        }
    }
}

/// An error from a network backend or the allocator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetError {
    /// The kind (stable code).
    pub kind: NetErrorKind,
    /// What happened, with the object and step involved.
    pub message: String,
    /// How to fix it.
    pub hint: &'static str,
    /// The OS error number behind it, if any (e.g. `EEXIST`).
    pub errno: Option<i32>,
}

impl NetError {
    /// An error of `kind` with the kind's default hint.
    pub fn new(kind: NetErrorKind, message: impl Into<String>) -> Self {
        NetError {
            kind,
            message: message.into(),
            hint: kind.default_hint(),
            errno: None,
        }
    }

    /// The same error with another hint.
    pub fn with_hint(mut self, hint: &'static str) -> Self {
        self.hint = hint;
        self
    }

    /// The same error with context put in front of the message.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// Stable code.
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    /// What kind of failure this is (see [`hangar_base::Category`]).
    pub fn category(&self) -> hangar_base::Category {
        self.kind.category()
    }

    /// From an OS error: `EPERM`/`EACCES` become [`NetErrorKind::PermissionDenied`],
    /// `EEXIST` becomes [`NetErrorKind::AlreadyExists`], anything else `fallback`.
    pub(crate) fn from_io(
        fallback: NetErrorKind,
        what: impl fmt::Display,
        err: &std::io::Error,
    ) -> Self {
        let errno = err.raw_os_error();
        let kind = match errno {
            Some(1) | Some(13) => NetErrorKind::PermissionDenied,
            Some(17) => NetErrorKind::AlreadyExists,
            _ => fallback,
        };
        let mut e = NetError::new(kind, format!("{what}: {err}"));
        e.errno = errno;
        e
    }
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] {} (hint: {})",
            self.code(),
            self.message,
            self.hint
        )
    }
}

impl std::error::Error for NetError {}

impl hangar_base::Coded for NetErrorKind {
    fn code(self) -> &'static str {
        NetErrorKind::code(self)
    }
    fn category(self) -> hangar_base::Category {
        NetErrorKind::category(self)
    }
}
