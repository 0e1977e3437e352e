//! `hangar_plugin`: the library a host uses to call out-of-process plugins:
//! a manager, typed plugins, transports (Unix socket, HTTP, gRPC, exec) with
//! server SDKs, and the resilience policies, each pure logic over an explicit
//! clock so it is tested without sleeping:
//!
//! - [`CircuitBreaker`]: the seed's closed / open / half-open breaker with its
//!   failure threshold, recovery timeout, minimum requests and half-open
//!   success threshold, stats and manual reset.
//! - [`TokenBucket`]: requests per second with a burst.
//! - [`RetryConfig`]: exponential backoff with ±10 % jitter, retrying only what
//!   the caller marks retryable.
//! - [`Balancer`]: the seven strategies, enable/disable, stats with success
//!   rate, average latency and health score, and an ordered failover list.
//! - [`Guard`]: the three composed around a call with a per-attempt deadline, in
//!   a documented order (rate limit, then per attempt breaker and deadline,
//!   then retry on [`ErrorKind::is_retryable`] errors), with the seed's codes.
//!
//! Transports (all behind the object-safe [`Transport`] trait, so the guard
//! and the balancer drive any of them; errors carry the seed's
//! `TRANSPORT_1301`..`1304` codes and are retryable, auth refusals
//! `AUTH_11xx` are not):
//!
//! - [`unix`]: length-prefixed JSON in the seed's message shapes over a pool
//!   of Unix-socket connections, each multiplexing concurrent calls by
//!   request id ([`unix::UnixClient`]).
//! - [`http`]: the seed's HTTP request/response envelopes over pooled
//!   keep-alive HTTP/1.1, HTTPS and mTLS, optional gzip ([`http::HttpClient`]).
//! - [`grpc`]: a `PluginService` (Execute/Health/Info carrying JSON bytes)
//!   over tonic, plain or TLS/mTLS ([`grpc::GrpcClient`]); servers also
//!   answer the standard `grpc.health.v1` service.
//! - [`exec`]: a plugin executable started, kept alive (restarted with
//!   backoff) and killed with its process group by the library, spoken to
//!   over its stdin/stdout with the Unix framing ([`exec::ExecClient`]).
//!
//! [`auth`] holds the seed's [`AuthConfig`] (none, api-key, bearer, basic,
//! mtls, custom; also a plugin's `auth` block in the configuration) with
//! validation and the server-side [`ServerAuth`]; [`tls`]
//! the rustls client and server configs. The server SDK ([`server`]) serves
//! one [`Handler`] over every transport; `docs/plugin-protocol.md` describes
//! the Unix and exec wire protocol for plugins in other languages.
//!
//!
//! Above the wire:
//!
//! - [`Plugin`] (typed over request and response, serde) with
//!   [`ExecutionContext`]; [`TransportPlugin`] over any transport.
//! - [`config`]: [`ManagerConfig`] / [`PluginConfig`] from JSON or YAML,
//!   default blocks merged field by field, validation reporting every error
//!   with the seed's code and the field's path.
//! - [`Manager`]: a [`TransportFactory`] per transport name (one per
//!   [`TransportKind`] built in, see [`factories`]), load, register /
//!   unregister, execute (one plugin) and execute_group (balanced, with
//!   failover), list with health, graceful shutdown draining calls in flight.
//! - [`layers`]: the policies as tower-style layers in a documented order
//!   (deadline, failover, metrics, rate limit, retry, breaker, timeout, wire);
//!   [`Guard`] composes one plugin's.
//! - [`health`]: a checker per plugin and a monitor with the overall status.
//! - [`reload`]: diff and hot reload (recreate, graceful, rolling) with
//!   rollback; [`discovery`]: plugins found in directories, watched.
//! - [`Metrics`]: Prometheus exposition, a per-plugin report, tracing spans
//!   with `traceparent` propagation.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use hangar_plugin::{BreakerConfig, BreakerState, CircuitBreaker};
//!
//! let b = CircuitBreaker::new(BreakerConfig::default());
//! let t = Instant::now();
//! for _ in 0..5 {
//!     assert!(b.allow_at(t));
//!     b.record_failure_at(t);
//! }
//! assert_eq!(b.state(), BreakerState::Open);
//! assert!(!b.allow_at(t + Duration::from_secs(1)));
//! assert!(b.allow_at(t + Duration::from_secs(30))); // a half-open trial
//! ```
#![deny(missing_docs)]

pub mod auth;
mod backoff;
mod balance;
mod breaker;
pub mod config;
mod context;
pub mod discovery;
mod error;
pub mod exec;
pub mod factories;
pub mod grpc;
mod guard;
pub mod health;
pub mod http;
pub mod layers;
mod manager;
mod metrics;
mod plugin;
mod rate;
pub mod reload;
pub mod server;
pub mod tls;
mod transport;
pub mod unix;

pub use auth::{AuthConfig, AuthMethod, ServerAuth};
pub use backoff::RetryConfig;
pub use balance::{Balancer, MemberStats, Strategy};
pub use breaker::{BreakerConfig, BreakerState, BreakerStats, CircuitBreaker};
pub use error::{Error, ErrorKind};
pub use guard::{Guard, GuardConfig};
pub use rate::{RateLimitConfig, TokenBucket};
pub use serde_json::value::RawValue;
pub use server::{Call, Handler, Server};
pub use transport::{BoxFuture, CallContext, CallKind, Transport, TransportExt, TransportKind};

pub use config::{ConfigError, ConfigErrors, ManagerConfig, PluginConfig};
pub use context::{new_request_id, ExecutionContext, TraceContext, REQUEST_ID_HEADER, TRACEPARENT};
pub use factories::TransportFactory;
pub use health::{HealthChecker, HealthMonitor, HealthStatus, PluginStatus};
pub use manager::{
    ExecOptions, LoadError, ManagedPlugin, Manager, PluginListing, ShutdownReport, DEFAULT_DRAIN,
};
pub use metrics::{GlobalMetrics, Metrics, ObservabilityReport, PluginMetricsReport};
pub use plugin::{Plugin, PluginInfo, TransportPlugin};
pub use reload::{PluginDiff, ReloadOptions, ReloadReport, ReloadStrategy};
