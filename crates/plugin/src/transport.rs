//! The seam between the resilience layers and the wire: every transport
//! (Unix socket, HTTP, gRPC, exec) is a [`Transport`], so the manager, the
//! balancer and the guard never know which one they drive.
//!
//! A transport carries one [`CallKind`] with a JSON payload and a
//! [`CallContext`] (request id, headers, deadline) and answers with the
//! plugin's JSON result or a typed [`Error`]. It is object safe: the manager
//! holds `Arc<dyn Transport>`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::Value;

use crate::error::Error;

/// A boxed, sendable future (what object-safe async methods return).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a call asks of the plugin; the seed's message `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallKind {
    /// Run the plugin's operation on the payload.
    Execute,
    /// Liveness of the connection; the answer carries no data.
    Ping,
    /// The plugin's self-description (name, version, capabilities).
    Info,
    /// The plugin's own view of its health.
    Health,
}

impl CallKind {
    /// The wire name (`execute`, `ping`, `info`, `health`).
    pub const fn as_str(self) -> &'static str {
        match self {
            CallKind::Execute => "execute",
            CallKind::Ping => "ping",
            CallKind::Info => "info",
            CallKind::Health => "health",
        }
    }

    /// Parse a wire name.
    pub fn parse(s: &str) -> Option<CallKind> {
        Some(match s {
            "execute" => CallKind::Execute,
            "ping" => CallKind::Ping,
            "info" => CallKind::Info,
            "health" => CallKind::Health,
            _ => return None,
        })
    }
}

/// Per-call context every transport carries to the plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallContext {
    /// Correlates the call end to end (logs, tracing, responses).
    pub request_id: String,
    /// Headers (auth, trace context, caller metadata).
    pub headers: HashMap<String, String>,
    /// How long the caller waits for this attempt.
    pub timeout: Duration,
}

/// One way of reaching a plugin.
pub trait Transport: Send + Sync + 'static {
    /// The transport's name: `unix`, `http`, `https`, `grpc`, `grpc-tls`, `exec`.
    fn kind(&self) -> &'static str;

    /// Send one call and wait for its answer, at most `ctx.timeout`.
    fn call(
        &self,
        kind: CallKind,
        data: Value,
        ctx: CallContext,
    ) -> BoxFuture<'_, Result<Value, Error>>;

    /// Release connections and child processes. Idempotent; calls after
    /// `close` fail with a transport error.
    fn close(&self) -> BoxFuture<'_, ()>;
}

/// Conveniences over any [`Transport`]: typed execute and the control calls.
pub trait TransportExt: Transport {
    /// `execute` with serde types on both sides.
    fn execute_typed<'a, Req, Resp>(
        &'a self,
        req: &Req,
        ctx: CallContext,
    ) -> BoxFuture<'a, Result<Resp, Error>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned + 'a,
    {
        let data = serde_json::to_value(req);
        Box::pin(async move {
            let data = data.map_err(|e| {
                Error::new(
                    crate::ErrorKind::ExecutionFailed,
                    format!("cannot encode the request: {e}"),
                )
            })?;
            let out = self.call(CallKind::Execute, data, ctx).await?;
            serde_json::from_value(out).map_err(|e| {
                Error::new(
                    crate::ErrorKind::ExecutionFailed,
                    format!("unexpected answer shape: {e}"),
                )
            })
        })
    }

    /// `ping`: `Ok` when the plugin answers at all.
    fn ping(&self, timeout: Duration) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            self.call(
                CallKind::Ping,
                Value::Null,
                CallContext::with_timeout(timeout),
            )
            .await
            .map(|_| ())
        })
    }

    /// `info`: the plugin's self-description.
    fn info(&self, timeout: Duration) -> BoxFuture<'_, Result<Value, Error>> {
        self.call(
            CallKind::Info,
            Value::Null,
            CallContext::with_timeout(timeout),
        )
    }

    /// `health`: `Ok` when the plugin reports itself healthy (`HEALTH_1601`
    /// when it says it is not).
    fn health(&self, timeout: Duration) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            self.call(
                CallKind::Health,
                Value::Null,
                CallContext::with_timeout(timeout),
            )
            .await
            .map(|_| ())
        })
    }
}

impl<T: Transport + ?Sized> TransportExt for T {}

impl CallContext {
    /// A context with only a timeout.
    pub fn with_timeout(timeout: Duration) -> CallContext {
        CallContext {
            timeout,
            ..CallContext::default()
        }
    }
}
