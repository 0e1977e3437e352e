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

use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::auth::ServerAuth;
use crate::error::{Error, ErrorKind};
use crate::transport::CallKind;

/// One call as a handler sees it, whatever the transport: its payload
/// parsed (`Call`, for [`Handler::execute`]) or as JSON text
/// (`Call<Box<RawValue>>`, for [`Handler::execute_raw`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Call<D = Value> {
    /// What is asked (the handler's `execute` only sees [`CallKind::Execute`]).
    pub kind: CallKind,
    /// The caller's request id (for logs and tracing).
    pub request_id: String,
    /// The call's headers (trace context, caller metadata, credentials).
    pub headers: HashMap<String, String>,
    /// When the caller stops waiting, if it said.
    pub deadline: Option<Instant>,
    /// The payload.
    pub data: D,
}

impl<D> Call<D> {
    /// The same call with another payload.
    pub fn with_data<E>(self, data: E) -> Call<E> {
        Call {
            kind: self.kind,
            request_id: self.request_id,
            headers: self.headers,
            deadline: self.deadline,
            data,
        }
    }

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
}

impl Call {
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
    /// Whether the servers hand `execute` calls to
    /// [`Handler::execute_raw`], payload and answer as JSON text, rather
    /// than to [`Handler::execute`]. For a handler with its own request and
    /// answer types, or one that passes the bytes on: it then pays for no
    /// [`Value`]. Off by default.
    const RAW: bool = false;
    /// Run one call whose payload is JSON text, and answer with JSON text
    /// (only called where [`Handler::RAW`] is set). The default parses the
    /// payload, runs [`Handler::execute`] and encodes its answer.
    fn execute_raw(
        &self,
        call: Call<Box<RawValue>>,
    ) -> impl Future<Output = Result<Box<RawValue>, String>> + Send {
        async move {
            let data: Value = serde_json::from_str(call.data.get()).map_err(|e| e.to_string())?;
            let out = self.execute(call.with_data(data)).await?;
            serde_json::value::to_raw_value(&out).map_err(|e| e.to_string())
        }
    }
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

/// A call's payload as a server holds it; how the handler takes it decides
/// which ([`Handler::RAW`]).
pub(crate) trait Served: crate::transport::Payload {
    /// Answer `call` with `handler` (credentials already checked).
    fn answer<H: Handler>(
        handler: &H,
        call: Call<Self>,
    ) -> impl Future<Output = Result<Self, Error>> + Send;
}

impl Served for Value {
    fn answer<H: Handler>(
        handler: &H,
        call: Call<Value>,
    ) -> impl Future<Output = Result<Value, Error>> + Send {
        answer(handler, call)
    }
}

impl Served for Box<RawValue> {
    async fn answer<H: Handler>(
        handler: &H,
        call: Call<Box<RawValue>>,
    ) -> Result<Box<RawValue>, Error> {
        if call.kind != CallKind::Execute {
            // The control calls carry nothing worth keeping as text.
            let out = answer(handler, call.with_data(Value::Null)).await?;
            return <Box<RawValue> as crate::transport::Payload>::from_value(&out);
        }
        let deadline = call.deadline;
        within(deadline, handler.execute_raw(call)).await
    }
}

/// A handler's run of `execute`, bounded by the call's deadline.
async fn within<T>(
    deadline: Option<Instant>,
    fut: impl Future<Output = Result<T, String>>,
) -> Result<T, Error> {
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
            within(deadline, handler.execute(call)).await
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
