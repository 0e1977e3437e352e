//! Configuration: [`ManagerConfig`] with its `default_*` blocks and a list of
//! [`PluginConfig`], loaded from JSON or YAML (`serde_yaml_ng`), merged field by
//! field with the defaults, and validated so that *every* error is reported at
//! once with the seed's code and the field's path.
//!
//! **Durations** are written as humantime strings (`"250ms"`, `"30s"`, `"1m"`)
//! or as an integer number of milliseconds.
//!
//! **Merging**: every setting inside a section is optional. A plugin's value
//! wins; when it leaves a field out, the manager's `default_<section>` value is
//! taken; when that is absent too, the built-in default (the seed's) applies.
//! So `retry: {max_retries: 5}` keeps the default block's `initial_interval`.
//!
//! **Validation codes** (all reported, never just the first):
//!
//! | code | when |
//! |---|---|
//! | `PLUGIN_1001` | name empty, longer than 128 bytes, or with characters other than `A-Za-z0-9._-` |
//! | `PLUGIN_1002` | transport missing |
//! | `PLUGIN_1003` | `http`/`https`/`grpc`/`grpc-tls` without an endpoint |
//! | `PLUGIN_1004` | an `http(s)` endpoint that is not an `http(s)://host…` URL matching the transport |
//! | `PLUGIN_1005` | a gRPC endpoint that is not `host:port` |
//! | `PLUGIN_1006` | `unix` without a socket path |
//! | `PLUGIN_1007` | `exec` without an executable |
//! | `PLUGIN_1008` | a transport no factory is registered for |
//! | `PLUGIN_1009` | no plugins, and discovery off |
//! | `PLUGIN_1010` | two plugins with one name |
//! | `PLUGIN_1011` | the file is not valid JSON/YAML for this schema |
//! | `PLUGIN_1012` | retry settings out of range (multiplier < 1, initial > max interval) — not in the seed |
//! | `AUTH_1101`..`1105` | API key, bearer token, basic credentials, mTLS cert/key missing; unknown method |
//! | `TRANSPORT_1301`..`1304` | connection settings impossible for http / grpc / unix / exec (zero pool, zero timeouts, idle > max, mTLS over plain http or grpc, an `env` entry without `=`) |
//! | `CIRCUIT_1401` | breaker enabled with a zero failure or success threshold |
//! | `CIRCUIT_1402` | breaker enabled with a zero recovery timeout |
//! | `RATELIMIT_1501` | rate limit enabled with requests per second ≤ 0 or a zero burst |
//! | `HEALTH_1601` | health check enabled with a zero interval or failure limit |
//! | `HEALTH_1602` | health check timeout zero or longer than the interval |
//! | `LOADBALANCER_1701` | a weight of 0 (the plugin could never be chosen) |
//! | `LOADBALANCER_1702` | an unknown load-balancing strategy |

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{AuthConfig, BreakerConfig, RateLimitConfig, RetryConfig, Strategy, TransportKind};

macro_rules! merge_fields {
    ($self:ident, $def:ident; $($f:ident),*) => {
        Self { $($f: $self.$f.clone().or_else(|| $def.$f.clone()),)* }
    };
}

/// Retry and backoff (seed `RetryConfig`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrySection {
    /// Retries after the first attempt (default 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Wait before the first retry (default 100ms).
    #[serde(
        with = "hangar_base::duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub initial_interval: Option<Duration>,
    /// Cap on the wait (default 5s).
    #[serde(
        with = "hangar_base::duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_interval: Option<Duration>,
    /// Growth per retry (default 2.0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<f64>,
    /// ±10 % jitter on each wait (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub random_jitter: Option<bool>,
}

impl RetrySection {
    /// Field-wise: ours, else `def`'s.
    pub fn merged(&self, def: &RetrySection) -> RetrySection {
        merge_fields!(self, def; max_retries, initial_interval, max_interval, multiplier, random_jitter)
    }

    /// The policy, built-in defaults filling what is unset.
    pub fn resolve(&self) -> RetryConfig {
        let d = RetryConfig::default();
        RetryConfig {
            max_retries: self.max_retries.unwrap_or(d.max_retries),
            initial_interval: self.initial_interval.unwrap_or(d.initial_interval),
            multiplier: self.multiplier.unwrap_or(d.multiplier),
            max_interval: self.max_interval.unwrap_or(d.max_interval),
            jitter: if self.random_jitter.unwrap_or(true) {
                0.1
            } else {
                0.0
            },
        }
    }
}

/// Circuit breaker (seed `CircuitBreakerConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitBreakerSection {
    /// On (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Failures in a row that open the circuit (default 5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
    /// Open time before a trial (default 30s).
    #[serde(
        with = "hangar_base::duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub recovery_timeout: Option<Duration>,
    /// Requests seen before the circuit may open (default 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_request_threshold: Option<u32>,
    /// Half-open successes that close it (default 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<u32>,
}

impl CircuitBreakerSection {
    /// Field-wise: ours, else `def`'s.
    pub fn merged(&self, def: &CircuitBreakerSection) -> CircuitBreakerSection {
        merge_fields!(self, def; enabled, failure_threshold, recovery_timeout, min_request_threshold, success_threshold)
    }

    /// The policy, built-in defaults filling what is unset.
    pub fn resolve(&self) -> BreakerConfig {
        let d = BreakerConfig::default();
        BreakerConfig {
            enabled: self.enabled.unwrap_or(d.enabled),
            failure_threshold: self.failure_threshold.unwrap_or(d.failure_threshold),
            recovery_timeout: self.recovery_timeout.unwrap_or(d.recovery_timeout),
            min_request_threshold: self
                .min_request_threshold
                .unwrap_or(d.min_request_threshold),
            success_threshold: self.success_threshold.unwrap_or(d.success_threshold),
        }
    }
}

/// Health checking (seed `HealthCheckConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheckSection {
    /// On (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Time between checks (default 30s).
    #[serde(
        with = "hangar_base::duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub interval: Option<Duration>,
    /// Deadline of one check (default 5s).
    #[serde(
        with = "hangar_base::duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Failures in a row that mark the plugin offline (default 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_limit: Option<u32>,
    /// Transport-specific health endpoint (an HTTP path); `ping` asks for
    /// liveness only (a `ping` message instead of `health`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// Resolved health-check settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckSettings {
    /// On.
    pub enabled: bool,
    /// Time between checks.
    pub interval: Duration,
    /// Deadline of one check.
    pub timeout: Duration,
    /// Failures in a row that mark the plugin offline.
    pub failure_limit: u32,
    /// Liveness only: send `ping` instead of `health` (`endpoint: ping`),
    /// for plugins that do not answer `health`.
    pub ping: bool,
}

impl HealthCheckSection {
    /// Field-wise: ours, else `def`'s.
    pub fn merged(&self, def: &HealthCheckSection) -> HealthCheckSection {
        merge_fields!(self, def; enabled, interval, timeout, failure_limit, endpoint)
    }

    /// The settings, built-in defaults filling what is unset.
    pub fn resolve(&self) -> HealthCheckSettings {
        HealthCheckSettings {
            enabled: self.enabled.unwrap_or(true),
            interval: self.interval.unwrap_or(Duration::from_secs(30)),
            timeout: self.timeout.unwrap_or(Duration::from_secs(5)),
            failure_limit: self.failure_limit.unwrap_or(3),
            ping: self.endpoint.as_deref() == Some("ping"),
        }
    }
}

/// Connection pooling and timeouts (seed `ConnectionConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionSection {
    /// Pool size (default 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Idle connections kept (default 5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_idle_connections: Option<u32>,
    /// Idle connections closed after (default 30s).
    #[serde(
        with = "hangar_base::duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub idle_timeout: Option<Duration>,
    /// Deadline to connect (default 10s).
    #[serde(
        with = "hangar_base::duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub connection_timeout: Option<Duration>,
    /// Deadline of one attempt (default 30s).
    #[serde(
        with = "hangar_base::duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub request_timeout: Option<Duration>,
    /// TCP keep-alive (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<bool>,
    /// No compression (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_compression: Option<bool>,
}

/// Resolved connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// Pool size.
    pub max_connections: u32,
    /// Idle connections kept.
    pub max_idle_connections: u32,
    /// Idle connections closed after.
    pub idle_timeout: Duration,
    /// Deadline to connect.
    pub connection_timeout: Duration,
    /// Deadline of one attempt.
    pub request_timeout: Duration,
    /// TCP keep-alive.
    pub keep_alive: bool,
    /// No compression.
    pub disable_compression: bool,
}

impl ConnectionSection {
    /// Field-wise: ours, else `def`'s.
    pub fn merged(&self, def: &ConnectionSection) -> ConnectionSection {
        merge_fields!(self, def; max_connections, max_idle_connections, idle_timeout, connection_timeout, request_timeout, keep_alive, disable_compression)
    }

    /// The settings, built-in defaults filling what is unset.
    pub fn resolve(&self) -> ConnectionSettings {
        ConnectionSettings {
            max_connections: self.max_connections.unwrap_or(10),
            max_idle_connections: self.max_idle_connections.unwrap_or(5),
            idle_timeout: self.idle_timeout.unwrap_or(Duration::from_secs(30)),
            connection_timeout: self.connection_timeout.unwrap_or(Duration::from_secs(10)),
            request_timeout: self.request_timeout.unwrap_or(Duration::from_secs(30)),
            keep_alive: self.keep_alive.unwrap_or(true),
            disable_compression: self.disable_compression.unwrap_or(false),
        }
    }
}

/// Rate limit (seed `RateLimitConfig`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSection {
    /// On (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Sustained rate (default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<f64>,
    /// Largest burst (default 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst_size: Option<u32>,
    /// Accepted for the seed's schema; the bucket refills continuously.
    #[serde(
        with = "hangar_base::duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub time_window: Option<Duration>,
}

impl RateLimitSection {
    /// Field-wise: ours, else `def`'s.
    pub fn merged(&self, def: &RateLimitSection) -> RateLimitSection {
        merge_fields!(self, def; enabled, requests_per_second, burst_size, time_window)
    }

    /// The policy, built-in defaults filling what is unset.
    pub fn resolve(&self) -> RateLimitConfig {
        let d = RateLimitConfig::default();
        RateLimitConfig {
            enabled: self.enabled.unwrap_or(d.enabled),
            requests_per_second: self.requests_per_second.unwrap_or(d.requests_per_second),
            burst: self.burst_size.unwrap_or(d.burst),
        }
    }
}

/// One plugin (seed `PluginConfig`, plus `weight` for the balancer).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginConfig {
    /// Unique name.
    pub name: String,
    /// The plugin's type: plugins of one type form a balanced group
    /// ([`crate::Manager::execute_group`]).
    #[serde(rename = "type", skip_serializing_if = "String::is_empty")]
    pub plugin_type: String,
    /// `unix`, `http`, `https`, `grpc`, `grpc-tls`, `exec` (a
    /// [`TransportKind`]), or any transport a factory was registered for.
    pub transport: String,
    /// Socket path (unix), URL (http), `host:port` (grpc).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub endpoint: String,
    /// Higher is preferred by the `priority` strategy (the seed's rule).
    pub priority: u32,
    /// Share for `weighted-random` and ring points for `consistent-hash` (default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Taking calls (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// For `exec`: the program.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub executable: String,
    /// For `exec`: its arguments.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// For `exec`: `KEY=VALUE` entries.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// For `exec`: working directory.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub work_dir: String,
    /// Authentication.
    pub auth: AuthConfig,
    /// Retry (merged with `default_retry`).
    pub retry: RetrySection,
    /// Circuit breaker (merged with `default_circuit_breaker`).
    pub circuit_breaker: CircuitBreakerSection,
    /// Health check (merged with `default_health_check`).
    pub health_check: HealthCheckSection,
    /// Connection (merged with `default_connection`).
    pub connection: ConnectionSection,
    /// Rate limit (merged with `default_rate_limit`).
    pub rate_limit: RateLimitSection,
    /// Transport-specific options.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, Value>,
    /// Labels, shown in listings.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl PluginConfig {
    /// Taking calls (default true).
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(true)
    }

    /// The balancing weight (default 1).
    pub fn weight(&self) -> u32 {
        self.weight.unwrap_or(1)
    }

    /// Its transport when it is one of the library's own.
    pub fn transport_kind(&self) -> Option<TransportKind> {
        self.transport.parse().ok()
    }

    /// The group it is balanced in: its `type`, or its name when it has none.
    pub fn group(&self) -> &str {
        if self.plugin_type.is_empty() {
            &self.name
        } else {
            &self.plugin_type
        }
    }

    /// This plugin with the manager's defaults merged in, field by field.
    pub fn with_defaults(&self, m: &ManagerConfig) -> PluginConfig {
        PluginConfig {
            retry: self.retry.merged(&m.default_retry),
            circuit_breaker: self.circuit_breaker.merged(&m.default_circuit_breaker),
            health_check: self.health_check.merged(&m.default_health_check),
            connection: self.connection.merged(&m.default_connection),
            rate_limit: self.rate_limit.merged(&m.default_rate_limit),
            ..self.clone()
        }
    }

    /// Validate this plugin alone (`path` prefixes field paths), appending to `out`.
    pub fn validate_into(&self, path: &str, out: &mut Vec<ConfigError>) {
        let mut err = |code: &'static str, field: &str, msg: String, hint: &str| {
            out.push(ConfigError {
                code,
                path: if field.is_empty() {
                    path.to_string()
                } else {
                    format!("{path}.{field}")
                },
                message: msg,
                hint: hint.to_string(),
            })
        };
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 128
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !name_ok {
            err(
                "PLUGIN_1001",
                "name",
                format!("invalid plugin name {:?}", self.name),
                "use 1-128 characters from A-Z a-z 0-9 . _ -",
            );
        }
        use TransportKind as K;
        let kind = match self.transport.parse::<TransportKind>() {
            Ok(k) => Some(k),
            Err(e) => {
                // None given is PLUGIN_1002; another name may be a host's
                // factory's, checked against the factories (PLUGIN_1008).
                if e.kind == crate::ErrorKind::InvalidTransport {
                    err(
                        e.code(),
                        "transport",
                        e.message,
                        e.hint.as_deref().unwrap_or_default(),
                    );
                }
                None
            }
        };
        match kind {
            Some(t @ (K::Http | K::Https)) => {
                if self.endpoint.is_empty() {
                    err(
                        "PLUGIN_1003",
                        "endpoint",
                        format!("transport {t} needs an endpoint"),
                        "set endpoint to the plugin's URL, e.g. https://host:8443/plugin",
                    );
                } else if !endpoint_url_ok(&self.endpoint, t) {
                    err(
                        "PLUGIN_1004",
                        "endpoint",
                        format!("{:?} is not an {t}:// URL with a host", self.endpoint),
                        "write the endpoint as scheme://host[:port][/path], the scheme matching the transport",
                    );
                }
            }
            Some(t @ (K::Grpc | K::GrpcTls)) => {
                if self.endpoint.is_empty() {
                    err(
                        "PLUGIN_1003",
                        "endpoint",
                        format!("transport {t} needs an endpoint"),
                        "set endpoint to host:port",
                    );
                } else if !host_port_ok(&self.endpoint) {
                    err(
                        "PLUGIN_1005",
                        "endpoint",
                        format!("{:?} is not host:port", self.endpoint),
                        "write the endpoint as host:port, e.g. 127.0.0.1:50051",
                    );
                }
            }
            Some(K::Unix) if self.endpoint.is_empty() => err(
                "PLUGIN_1006",
                "endpoint",
                "transport unix needs a socket path".into(),
                "set endpoint to the plugin's socket path, e.g. /run/plugin.sock",
            ),
            Some(K::Exec) => {
                if self.executable.is_empty() {
                    err(
                        "PLUGIN_1007",
                        "executable",
                        "transport exec needs an executable".into(),
                        "set executable to the plugin program's path",
                    );
                }
                for (i, e) in self.env.iter().enumerate() {
                    if !e.contains('=') || e.starts_with('=') {
                        err(
                            "TRANSPORT_1304",
                            &format!("env[{i}]"),
                            format!("{e:?} is not KEY=VALUE"),
                            "write environment entries as KEY=VALUE",
                        );
                    }
                }
            }
            _ => {}
        }
        // Authentication.
        for (code, field, msg, hint) in self.auth.problems(kind) {
            err(code, field, msg, hint);
        }
        // Connection.
        let c = self.connection.resolve();
        // A transport of the host's (or none) is reported as exec's.
        let tcode = kind.unwrap_or(K::Exec).error_kind().code();
        if c.max_connections == 0 {
            err(
                tcode,
                "connection.max_connections",
                "a pool of 0 connections".into(),
                "set max_connections to 1 or more",
            );
        }
        if c.max_idle_connections > c.max_connections {
            err(
                tcode,
                "connection.max_idle_connections",
                format!(
                    "{} idle connections kept out of a pool of {}",
                    c.max_idle_connections, c.max_connections
                ),
                "keep max_idle_connections at most max_connections",
            );
        }
        if c.request_timeout.is_zero() {
            err(
                tcode,
                "connection.request_timeout",
                "a request timeout of 0".into(),
                "set request_timeout, e.g. \"30s\"",
            );
        }
        if c.connection_timeout.is_zero() {
            err(
                tcode,
                "connection.connection_timeout",
                "a connection timeout of 0".into(),
                "set connection_timeout, e.g. \"10s\"",
            );
        }
        // Retry.
        let r = self.retry.resolve();
        if !(r.multiplier.is_finite() && r.multiplier >= 1.0) {
            err(
                "PLUGIN_1012",
                "retry.multiplier",
                format!("multiplier {} is below 1", r.multiplier),
                "use a multiplier of 1.0 or more",
            );
        }
        if r.initial_interval > r.max_interval {
            err(
                "PLUGIN_1012",
                "retry.initial_interval",
                "initial_interval is longer than max_interval".into(),
                "keep initial_interval at most max_interval",
            );
        }
        // Breaker.
        let b = self.circuit_breaker.resolve();
        if b.enabled {
            if b.failure_threshold == 0 {
                err(
                    "CIRCUIT_1401",
                    "circuit_breaker.failure_threshold",
                    "failure threshold 0".into(),
                    "set failure_threshold to 1 or more",
                );
            }
            if b.success_threshold == 0 {
                err(
                    "CIRCUIT_1401",
                    "circuit_breaker.success_threshold",
                    "success threshold 0".into(),
                    "set success_threshold to 1 or more",
                );
            }
            if b.recovery_timeout.is_zero() {
                err(
                    "CIRCUIT_1402",
                    "circuit_breaker.recovery_timeout",
                    "recovery timeout 0".into(),
                    "set recovery_timeout, e.g. \"30s\"",
                );
            }
        }
        // Rate limit.
        let rl = self.rate_limit.resolve();
        if rl.enabled {
            if !(rl.requests_per_second.is_finite() && rl.requests_per_second > 0.0) {
                err(
                    "RATELIMIT_1501",
                    "rate_limit.requests_per_second",
                    format!("{} requests per second", rl.requests_per_second),
                    "set requests_per_second above 0",
                );
            }
            if rl.burst == 0 {
                err(
                    "RATELIMIT_1501",
                    "rate_limit.burst_size",
                    "burst size 0".into(),
                    "set burst_size to 1 or more",
                );
            }
        }
        // Health.
        let h = self.health_check.resolve();
        if h.enabled {
            if h.interval.is_zero() {
                err(
                    "HEALTH_1601",
                    "health_check.interval",
                    "health check interval 0".into(),
                    "set interval, e.g. \"30s\"",
                );
            }
            if h.failure_limit == 0 {
                err(
                    "HEALTH_1601",
                    "health_check.failure_limit",
                    "failure limit 0".into(),
                    "set failure_limit to 1 or more",
                );
            }
            if h.timeout.is_zero() || (!h.interval.is_zero() && h.timeout > h.interval) {
                err(
                    "HEALTH_1602",
                    "health_check.timeout",
                    format!(
                        "health check timeout {:?} is zero or longer than the interval {:?}",
                        h.timeout, h.interval
                    ),
                    "set a timeout above 0 and at most the interval",
                );
            }
        }
        if self.weight == Some(0) {
            err(
                "LOADBALANCER_1701",
                "weight",
                "weight 0: the balancer could never choose this plugin".into(),
                "set weight to 1 or more, or enabled: false",
            );
        }
    }
}

fn endpoint_url_ok(e: &str, transport: TransportKind) -> bool {
    let Some(rest) = e.strip_prefix(&format!("{transport}://")) else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    !host.is_empty() && !host.contains(char::is_whitespace) && host_port_or_host_ok(host)
}

fn host_port_or_host_ok(h: &str) -> bool {
    if h.starts_with('[') {
        return h.contains(']');
    }
    match h.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => true,
    }
}

fn host_port_ok(e: &str) -> bool {
    let e = e.strip_prefix("dns:///").unwrap_or(e);
    match e.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains(['/', ' '])
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        }
        None => false,
    }
}

/// Directories scanned for plugins (seed `DiscoveryConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// On.
    pub enabled: bool,
    /// Directories to scan (not recursively).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub directories: Vec<String>,
    /// File-name globs, e.g. `*.json`, `*.yaml`, `plugin-*`; none means
    /// `*.json`, `*.yaml`, `*.yml`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub patterns: Vec<String>,
    /// Keep watching and apply changes.
    pub watch_mode: bool,
}

/// The manager's configuration (seed `ManagerConfig`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ManagerConfig {
    /// Log level (informative; the host sets up logging).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub log_level: String,
    /// Port for a metrics endpoint (informative; serve [`crate::Metrics::encode`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_port: Option<u16>,
    /// Load-balancing strategy for groups (default `round-robin`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_balancing: Option<String>,
    /// Retry defaults.
    pub default_retry: RetrySection,
    /// Breaker defaults.
    pub default_circuit_breaker: CircuitBreakerSection,
    /// Health-check defaults.
    pub default_health_check: HealthCheckSection,
    /// Connection defaults.
    pub default_connection: ConnectionSection,
    /// Rate-limit defaults.
    pub default_rate_limit: RateLimitSection,
    /// The plugins.
    pub plugins: Vec<PluginConfig>,
    /// Discovery.
    pub discovery: DiscoveryConfig,
}

/// Parse a strategy name (the seed's spelling).
pub fn parse_strategy(s: &str) -> Option<Strategy> {
    Some(match s {
        "round-robin" => Strategy::RoundRobin,
        "random" => Strategy::Random,
        "least-connections" => Strategy::LeastConnections,
        "least-latency" => Strategy::LeastLatency,
        "weighted-random" => Strategy::WeightedRandom,
        "consistent-hash" => Strategy::ConsistentHash,
        "priority" => Strategy::Priority,
        _ => return None,
    })
}

impl ManagerConfig {
    /// Parse JSON (`PLUGIN_1011` on a syntax or schema error).
    pub fn from_json(text: &str) -> Result<ManagerConfig, ConfigErrors> {
        serde_json::from_str(text).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                code: "PLUGIN_1011",
                path: format!("line {} column {}", e.line(), e.column()),
                message: format!("invalid JSON configuration: {e}"),
                hint: "fix the file; see the field list in the hangar_plugin::config docs".into(),
            }])
        })
    }

    /// Parse YAML (`PLUGIN_1011` on a syntax or schema error).
    pub fn from_yaml(text: &str) -> Result<ManagerConfig, ConfigErrors> {
        serde_yaml_ng::from_str(text).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                code: "PLUGIN_1011",
                path: e
                    .location()
                    .map(|l| format!("line {} column {}", l.line(), l.column()))
                    .unwrap_or_default(),
                message: format!("invalid YAML configuration: {e}"),
                hint: "fix the file; see the field list in the hangar_plugin::config docs".into(),
            }])
        })
    }

    /// Read a file: `.yaml`/`.yml` as YAML, anything else as JSON.
    pub fn from_file(path: &Path) -> Result<ManagerConfig, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                code: "PLUGIN_1011",
                path: path.display().to_string(),
                message: format!("cannot read the configuration: {e}"),
                hint: "check the path and its permissions".into(),
            }])
        })?;
        if is_yaml(path) {
            Self::from_yaml(&text)
        } else {
            Self::from_json(&text)
        }
    }

    /// As pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The strategy for groups.
    pub fn strategy(&self) -> Strategy {
        self.load_balancing
            .as_deref()
            .and_then(parse_strategy)
            .unwrap_or(Strategy::RoundRobin)
    }

    /// Every plugin with the defaults merged in.
    pub fn resolved_plugins(&self) -> Vec<PluginConfig> {
        self.plugins.iter().map(|p| p.with_defaults(self)).collect()
    }

    /// Validate everything; `transports` are the names factories exist for
    /// (`None` skips that check). Every problem is reported.
    pub fn validate(&self, transports: Option<&[String]>) -> Result<(), ConfigErrors> {
        let mut out = Vec::new();
        if self.plugins.is_empty() && !self.discovery.enabled {
            out.push(ConfigError {
                code: "PLUGIN_1009",
                path: "plugins".into(),
                message: "no plugins configured".into(),
                hint: "add at least one entry under plugins, or enable discovery".into(),
            });
        }
        if let Some(s) = &self.load_balancing {
            if parse_strategy(s).is_none() {
                out.push(ConfigError {
                    code: "LOADBALANCER_1702",
                    path: "load_balancing".into(),
                    message: format!("unknown load-balancing strategy {s:?}"),
                    hint: "use round-robin, random, least-connections, least-latency, weighted-random, consistent-hash or priority".into(),
                });
            }
        }
        let mut seen = std::collections::HashMap::new();
        for (i, p) in self.resolved_plugins().iter().enumerate() {
            let path = format!("plugins[{i}]");
            p.validate_into(&path, &mut out);
            if let Some(first) = seen.insert(p.name.clone(), i) {
                out.push(ConfigError {
                    code: "PLUGIN_1010",
                    path: format!("{path}.name"),
                    message: format!("plugin name {:?} is also used by plugins[{first}]", p.name),
                    hint: "give every plugin its own name".into(),
                });
            }
            if let Some(ts) = transports {
                if !p.transport.is_empty() && !ts.contains(&p.transport) {
                    out.push(ConfigError {
                        code: "PLUGIN_1008",
                        path: format!("{path}.transport"),
                        message: format!("no factory for transport {:?}", p.transport),
                        hint: format!("use one of: {}", ts.join(", ")),
                    });
                }
            }
        }
        if out.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(out))
        }
    }
}

pub(crate) fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// One configuration problem: the seed's code, where, what, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigError {
    /// The seed's code, e.g. `AUTH_1101`.
    pub code: &'static str,
    /// Where, e.g. `plugins[2].auth.api_key`.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.code, self.path, self.message)
    }
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The codes, in order.
    pub fn codes(&self) -> Vec<&'static str> {
        self.0.iter().map(|e| e.code).collect()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} configuration error(s)", self.0.len())?;
        for e in &self.0 {
            write!(f, "\n  {e}\n    hint: {}", e.hint)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
