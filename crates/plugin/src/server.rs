//! The transport-neutral server SDK: one [`Handler`] served over every
//! transport ([`unix::serve`](crate::unix::serve),
//! [`http::serve`](crate::http::serve), [`grpc::serve`](crate::grpc::serve),
//! [`exec::serve_stdio`](crate::exec::serve_stdio)).
//!
//! Every transport turns a request into a [`Call`] (kind, request id,
//! headers, deadline, data), checks its headers with the server's
//! [`ServerAuth`], and answers through [`dispatch`]: `ping` answers `"pong"`,
//! `info` the handler's [`Handler::info`], `health` `{"healthy": bool}` (an
//! unhealthy plugin answers `HEALTH_1601`), `execute` the handler's result
//! within the call's deadline (`PLUGIN_1204` past it).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::auth::ServerAuth;
use crate::error::{Error, ErrorKind};
use crate::transport::CallKind;

/// One call as a handler sees it, whatever the transport.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// What is asked (the handler's `execute` only sees [`CallKind::Execute`]).
    pub kind: CallKind,
    /// The caller's request id (for logs and tracing).
    pub request_id: String,
    /// The call's headers (trace context, caller metadata, credentials).
    pub headers: HashMap<String, String>,
    /// When the caller stops waiting, if it said.
    pub deadline: Option<Instant>,
    /// The payload.
    pub data: Value,
}

impl Call {
    /// The time left before the deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// A header by name, in any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A deadline `timeout_ms` from now (none for 0).
    pub(crate) fn deadline_in(timeout_ms: u64) -> Option<Instant> {
        Call::deadline_after(Duration::from_millis(timeout_ms))
    }

    /// A deadline `d` from now: none for zero, nor for one too far to add
    /// to the clock (a caller's number must not panic the server).
    pub(crate) fn deadline_after(d: Duration) -> Option<Instant> {
        if d.is_zero() {
            return None;
        }
        Instant::now().checked_add(d)
    }
}

/// What a plugin does, whatever transport serves it. Methods return futures
/// so implementations may await.
pub trait Handler: Send + Sync + 'static {
    /// Run one call. An `Err` reaches the caller as `PLUGIN_1203` with the
    /// message.
    fn execute(&self, call: Call) -> impl Future<Output = Result<Value, String>> + Send;
    /// Describe the plugin (name, version, capabilities).
    fn info(&self) -> Value;
    /// Whether the plugin is healthy.
    fn health(&self) -> impl Future<Output = bool> + Send {
        async { true }
    }
}

/// Answer one call with `handler`: check `auth`, then dispatch on its kind.
pub async fn dispatch<H: Handler>(
    handler: &H,
    auth: &ServerAuth,
    call: Call,
) -> Result<Value, Error> {
    auth.check(&call.headers)?;
    answer(handler, call).await
}

/// Dispatch a call whose credentials were already checked.
pub(crate) async fn answer<H: Handler>(handler: &H, call: Call) -> Result<Value, Error> {
    match call.kind {
        CallKind::Ping => Ok(Value::String("pong".into())),
        CallKind::Info => Ok(handler.info()),
        CallKind::Health => {
            if handler.health().await {
                Ok(serde_json::json!({ "healthy": true }))
            } else {
                Err(Error::new(
                    ErrorKind::HealthCheckFailed,
                    "the plugin reports itself unhealthy",
                ))
            }
        }
        CallKind::Execute => {
            let deadline = call.deadline;
            let fut = handler.execute(call);
            let res = match deadline {
                Some(d) => match tokio::time::timeout_at(d, fut).await {
                    Ok(r) => r,
                    Err(_) => {
                        return Err(Error::new(
                            ErrorKind::Timeout,
                            "the plugin did not finish within the call's deadline",
                        ))
                    }
                },
                None => fut.await,
            };
            res.map_err(|e| Error::new(ErrorKind::ExecutionFailed, e))
        }
    }
}

/// A running server: stop it with [`Server::shutdown`] (or by dropping it).
/// Unix-socket and HTTP servers close every connection at once, calls in
/// flight included; a gRPC server stops accepting and drains the calls in
/// flight (tonic's graceful shutdown).
#[derive(Debug)]
pub struct Server {
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) task: Option<tokio::task::JoinHandle<()>>,
    pub(crate) addr: Option<SocketAddr>,
}

impl Server {
    pub(crate) fn new(
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
        addr: Option<SocketAddr>,
    ) -> Server {
        Server {
            stop,
            task: Some(task),
            addr,
        }
    }

    /// The bound TCP address (HTTP and gRPC servers).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// Stop accepting, close every connection, and wait for the accept loop.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// Run until the server stops (for a plugin's `main`).
    pub async fn wait(mut self) {
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Resolves when `stop` says so (or its sender is gone).
pub(crate) async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}
