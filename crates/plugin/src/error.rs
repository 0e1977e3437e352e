//! Errors with the seed's stable codes, typed, so retry decisions never match
//! on strings.
//!
//! Every code of the seed is an [`ErrorKind`]; one is ours: `AUTH_1106`, a
//! credential that was presented but is wrong (the seed only names missing
//! ones). [`ErrorKind::from_code`] maps a code received on the wire back to its
//! kind (a plugin server reports the code of a refusal, the client keeps it).

use std::fmt;

/// What went wrong, with the seed's code ([`ErrorKind::code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `PLUGIN_1001`: the plugin name is empty or invalid.
    InvalidPluginName,
    /// `PLUGIN_1002`: no transport, or one not known.
    InvalidTransport,
    /// `PLUGIN_1003`: the transport needs an endpoint and there is none.
    MissingEndpoint,
    /// `PLUGIN_1004`: the endpoint is not a valid URL.
    InvalidEndpointUrl,
    /// `PLUGIN_1005`: the endpoint has the wrong form for its transport.
    InvalidEndpointFormat,
    /// `PLUGIN_1006`: a Unix-socket plugin without a socket path.
    MissingSocketPath,
    /// `PLUGIN_1007`: an exec plugin without an executable.
    MissingExecutable,
    /// `PLUGIN_1008`: no factory for that transport.
    UnsupportedTransport,
    /// `PLUGIN_1009`: the configuration holds no plugin.
    NoPluginsConfigured,
    /// `PLUGIN_1010`: two plugins share a name.
    DuplicatePluginName,
    /// `PLUGIN_1011`: the configuration is not valid JSON (or YAML).
    InvalidJsonConfig,
    /// `AUTH_1101`: API-key auth without a key (in the config, or in a request).
    MissingApiKey,
    /// `AUTH_1102`: bearer auth without a token.
    MissingBearerToken,
    /// `AUTH_1103`: basic auth without a username and password.
    MissingBasicCredentials,
    /// `AUTH_1104`: mTLS without a certificate and key (or a client without one).
    MissingMtlsCerts,
    /// `AUTH_1105`: an auth method not known (or custom without headers).
    UnsupportedAuthMethod,
    /// `AUTH_1106` (ours): a credential was presented and is wrong.
    AuthFailed,
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
    /// `TRANSPORT_1301`: a transport broke mid-call, transport not named
    /// (custom [`Transport`](crate::Transport) implementations); the library's
    /// own transports use the specific kinds below.
    Transport,
    /// `TRANSPORT_1301`: the HTTP transport broke mid-call.
    HttpTransport,
    /// `TRANSPORT_1302`: the gRPC transport broke mid-call.
    GrpcTransport,
    /// `TRANSPORT_1303`: the Unix-socket transport broke mid-call (or is closed).
    UnixTransport,
    /// `TRANSPORT_1304`: the exec transport broke mid-call (the child died, or
    /// the transport is closed).
    ExecTransport,
    /// `CIRCUIT_1401`: refused by an open circuit.
    CircuitOpen,
    /// `CIRCUIT_1402`: a call through the breaker timed out.
    CircuitTimeout,
    /// `RATELIMIT_1501`: refused by the rate limit.
    RateLimited,
    /// `HEALTH_1601`: the health check failed.
    HealthCheckFailed,
    /// `HEALTH_1602`: the health check did not answer in time.
    HealthCheckTimeout,
    /// `LOADBALANCER_1701`: no plugin available to take the call.
    NoAvailablePlugins,
    /// `LOADBALANCER_1702`: the balancer failed to pick a plugin.
    LoadBalancerFailed,
}

const ALL: &[ErrorKind] = &[
    ErrorKind::InvalidPluginName,
    ErrorKind::InvalidTransport,
    ErrorKind::MissingEndpoint,
    ErrorKind::InvalidEndpointUrl,
    ErrorKind::InvalidEndpointFormat,
    ErrorKind::MissingSocketPath,
    ErrorKind::MissingExecutable,
    ErrorKind::UnsupportedTransport,
    ErrorKind::NoPluginsConfigured,
    ErrorKind::DuplicatePluginName,
    ErrorKind::InvalidJsonConfig,
    ErrorKind::MissingApiKey,
    ErrorKind::MissingBearerToken,
    ErrorKind::MissingBasicCredentials,
    ErrorKind::MissingMtlsCerts,
    ErrorKind::UnsupportedAuthMethod,
    ErrorKind::AuthFailed,
    ErrorKind::PluginNotFound,
    ErrorKind::PluginNotEnabled,
    ErrorKind::ExecutionFailed,
    ErrorKind::Timeout,
    ErrorKind::ConnectionFailed,
    ErrorKind::HttpTransport,
    ErrorKind::GrpcTransport,
    ErrorKind::UnixTransport,
    ErrorKind::ExecTransport,
    ErrorKind::CircuitOpen,
    ErrorKind::CircuitTimeout,
    ErrorKind::RateLimited,
    ErrorKind::HealthCheckFailed,
    ErrorKind::HealthCheckTimeout,
    ErrorKind::NoAvailablePlugins,
    ErrorKind::LoadBalancerFailed,
];

impl ErrorKind {
    /// The seed's code.
    pub const fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidPluginName => "PLUGIN_1001",
            ErrorKind::InvalidTransport => "PLUGIN_1002",
            ErrorKind::MissingEndpoint => "PLUGIN_1003",
            ErrorKind::InvalidEndpointUrl => "PLUGIN_1004",
            ErrorKind::InvalidEndpointFormat => "PLUGIN_1005",
            ErrorKind::MissingSocketPath => "PLUGIN_1006",
            ErrorKind::MissingExecutable => "PLUGIN_1007",
            ErrorKind::UnsupportedTransport => "PLUGIN_1008",
            ErrorKind::NoPluginsConfigured => "PLUGIN_1009",
            ErrorKind::DuplicatePluginName => "PLUGIN_1010",
            ErrorKind::InvalidJsonConfig => "PLUGIN_1011",
            ErrorKind::MissingApiKey => "AUTH_1101",
            ErrorKind::MissingBearerToken => "AUTH_1102",
            ErrorKind::MissingBasicCredentials => "AUTH_1103",
            ErrorKind::MissingMtlsCerts => "AUTH_1104",
            ErrorKind::UnsupportedAuthMethod => "AUTH_1105",
            ErrorKind::AuthFailed => "AUTH_1106",
            ErrorKind::PluginNotFound => "PLUGIN_1201",
            ErrorKind::PluginNotEnabled => "PLUGIN_1202",
            ErrorKind::ExecutionFailed => "PLUGIN_1203",
            ErrorKind::Timeout => "PLUGIN_1204",
            ErrorKind::ConnectionFailed => "PLUGIN_1205",
            ErrorKind::Transport | ErrorKind::HttpTransport => "TRANSPORT_1301",
            ErrorKind::GrpcTransport => "TRANSPORT_1302",
            ErrorKind::UnixTransport => "TRANSPORT_1303",
            ErrorKind::ExecTransport => "TRANSPORT_1304",
            ErrorKind::CircuitOpen => "CIRCUIT_1401",
            ErrorKind::CircuitTimeout => "CIRCUIT_1402",
            ErrorKind::RateLimited => "RATELIMIT_1501",
            ErrorKind::HealthCheckFailed => "HEALTH_1601",
            ErrorKind::HealthCheckTimeout => "HEALTH_1602",
            ErrorKind::NoAvailablePlugins => "LOADBALANCER_1701",
            ErrorKind::LoadBalancerFailed => "LOADBALANCER_1702",
        }
    }

    /// The kind a stable code names (`TRANSPORT_1301` is the HTTP transport).
    /// Used to keep the kind of an error a plugin server reported by code.
    pub fn from_code(code: &str) -> Option<ErrorKind> {
        ALL.iter().copied().find(|k| k.code() == code)
    }

    /// What kind of failure it is; an edge maps it to a gRPC status, an HTTP
    /// status or an exit code.
    pub const fn category(self) -> hangar_base::Category {
        use hangar_base::Category as C;
        match self {
            ErrorKind::InvalidPluginName
            | ErrorKind::InvalidTransport
            | ErrorKind::MissingEndpoint
            | ErrorKind::InvalidEndpointUrl
            | ErrorKind::InvalidEndpointFormat
            | ErrorKind::MissingSocketPath
            | ErrorKind::MissingExecutable
            | ErrorKind::UnsupportedTransport
            | ErrorKind::NoPluginsConfigured
            | ErrorKind::InvalidJsonConfig
            | ErrorKind::UnsupportedAuthMethod => C::Invalid,
            ErrorKind::DuplicatePluginName => C::Conflict,
            ErrorKind::MissingApiKey
            | ErrorKind::MissingBearerToken
            | ErrorKind::MissingBasicCredentials
            | ErrorKind::MissingMtlsCerts
            | ErrorKind::AuthFailed => C::Unauthenticated,
            ErrorKind::PluginNotFound => C::NotFound,
            ErrorKind::PluginNotEnabled => C::Precondition,
            // The plugin answered, with an error of its own.
            ErrorKind::ExecutionFailed => C::Internal,
            ErrorKind::Timeout | ErrorKind::CircuitTimeout | ErrorKind::HealthCheckTimeout => {
                C::Timeout
            }
            ErrorKind::ConnectionFailed
            | ErrorKind::Transport
            | ErrorKind::HttpTransport
            | ErrorKind::GrpcTransport
            | ErrorKind::UnixTransport
            | ErrorKind::ExecTransport
            | ErrorKind::HealthCheckFailed
            | ErrorKind::NoAvailablePlugins
            | ErrorKind::LoadBalancerFailed => C::Unavailable,
            ErrorKind::CircuitOpen | ErrorKind::RateLimited => C::Exhausted,
        }
    }

    /// The transport error kind of a transport name (`http`/`https`,
    /// `grpc`/`grpc-tls`, `unix`, `exec`); [`ErrorKind::Transport`] otherwise.
    pub fn transport(name: &str) -> ErrorKind {
        name.parse::<crate::TransportKind>()
            .map(crate::TransportKind::error_kind)
            .unwrap_or(ErrorKind::Transport)
    }

    /// Another attempt may succeed: the failure was in reaching the plugin or
    /// in time, not in what it answered, and not a refusal of ours or a
    /// credential problem.
    pub const fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Timeout
                | ErrorKind::ConnectionFailed
                | ErrorKind::Transport
                | ErrorKind::HttpTransport
                | ErrorKind::GrpcTransport
                | ErrorKind::UnixTransport
                | ErrorKind::ExecTransport
                | ErrorKind::CircuitTimeout
        )
    }

    /// A transport error (`TRANSPORT_13xx`).
    pub const fn is_transport(self) -> bool {
        matches!(
            self,
            ErrorKind::Transport
                | ErrorKind::HttpTransport
                | ErrorKind::GrpcTransport
                | ErrorKind::UnixTransport
                | ErrorKind::ExecTransport
        )
    }

    /// An authentication error (`AUTH_11xx`).
    pub const fn is_auth(self) -> bool {
        matches!(
            self,
            ErrorKind::MissingApiKey
                | ErrorKind::MissingBearerToken
                | ErrorKind::MissingBasicCredentials
                | ErrorKind::MissingMtlsCerts
                | ErrorKind::UnsupportedAuthMethod
                | ErrorKind::AuthFailed
        )
    }

    /// Counts against the circuit breaker (a refusal by our own policies does not).
    pub const fn counts_as_failure(self) -> bool {
        !matches!(self, ErrorKind::CircuitOpen | ErrorKind::RateLimited)
    }
}

/// An error: its kind (and code), a message, the plugin it concerns and a
/// hint for the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Details.
    pub message: String,
    /// The plugin, when known.
    pub plugin: Option<String>,
    /// What to do about it, when we know.
    pub hint: Option<String>,
}

impl Error {
    /// An error of this kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            plugin: None,
            hint: None,
        }
    }

    /// The same error with a hint for the fix.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = Some(hint.into());
        self
    }

    /// The same error, naming the plugin.
    pub fn with_plugin(mut self, plugin: impl Into<String>) -> Error {
        self.plugin = Some(plugin.into());
        self
    }

    /// The seed's code.
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    /// Whether another attempt may succeed ([`ErrorKind::is_retryable`]).
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.plugin {
            Some(p) => write!(f, "{}: {p}: {}", self.code(), self.message)?,
            None => write!(f, "{}: {}", self.code(), self.message)?,
        }
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl hangar_base::Coded for ErrorKind {
    fn code(self) -> &'static str {
        ErrorKind::code(self)
    }
    fn category(self) -> hangar_base::Category {
        ErrorKind::category(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_back_to_its_kind() {
        for k in ALL {
            assert_eq!(ErrorKind::from_code(k.code()), Some(*k), "{k:?}");
        }
        assert_eq!(ErrorKind::from_code("NOPE_1"), None);
    }

    #[test]
    fn transport_codes_are_per_transport_and_retryable() {
        for (name, code) in [
            ("http", "TRANSPORT_1301"),
            ("https", "TRANSPORT_1301"),
            ("grpc", "TRANSPORT_1302"),
            ("grpc-tls", "TRANSPORT_1302"),
            ("unix", "TRANSPORT_1303"),
            ("exec", "TRANSPORT_1304"),
        ] {
            let k = ErrorKind::transport(name);
            assert_eq!(k.code(), code);
            assert!(k.is_retryable() && k.is_transport());
        }
        for k in [
            ErrorKind::AuthFailed,
            ErrorKind::MissingApiKey,
            ErrorKind::ExecutionFailed,
            ErrorKind::CircuitOpen,
            ErrorKind::RateLimited,
            ErrorKind::InvalidTransport,
        ] {
            assert!(!k.is_retryable(), "{k:?}");
        }
    }
}
