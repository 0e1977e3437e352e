//! The seam between the resilience layers and the wire: every transport
//! (Unix socket, HTTP, gRPC, exec) is a [`Transport`], so the manager, the
//! balancer and the guard never know which one they drive.
//!
//! A transport carries one [`CallKind`] with a JSON payload and a
//! [`CallContext`] (request id, headers, deadline) and answers with the
//! plugin's JSON result or a typed [`Error`]. It is object safe: the manager
//! holds `Arc<dyn Transport>`.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::error::{Error, ErrorKind};

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

/// The transports the library ships, by the name a plugin's `transport`
/// field gives (`unix`, `http`, `https`, `grpc`, `grpc-tls`, `exec`). A host
/// may register factories under other names too, so that field stays a
/// string; [`crate::PluginConfig::transport_kind`] reads it as one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransportKind {
    /// `unix`: length-prefixed JSON over a Unix socket.
    Unix,
    /// `http`: HTTP/1.1 without TLS.
    Http,
    /// `https`: HTTP/1.1 over TLS (or mTLS).
    Https,
    /// `grpc`: gRPC without TLS.
    Grpc,
    /// `grpc-tls`: gRPC over TLS (or mTLS).
    GrpcTls,
    /// `exec`: an executable spoken to over its stdin and stdout.
    Exec,
}

impl TransportKind {
    /// Every kind, each with a factory in a new [`crate::Manager`].
    pub const ALL: [TransportKind; 6] = [
        TransportKind::Unix,
        TransportKind::Http,
        TransportKind::Https,
        TransportKind::Grpc,
        TransportKind::GrpcTls,
        TransportKind::Exec,
    ];

    /// The configuration and wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            TransportKind::Unix => "unix",
            TransportKind::Http => "http",
            TransportKind::Https => "https",
            TransportKind::Grpc => "grpc",
            TransportKind::GrpcTls => "grpc-tls",
            TransportKind::Exec => "exec",
        }
    }

    /// The error kind (and `TRANSPORT_13xx` code) of this transport breaking
    /// mid-call.
    pub const fn error_kind(self) -> ErrorKind {
        match self {
            TransportKind::Http | TransportKind::Https => ErrorKind::HttpTransport,
            TransportKind::Grpc | TransportKind::GrpcTls => ErrorKind::GrpcTransport,
            TransportKind::Unix => ErrorKind::UnixTransport,
            TransportKind::Exec => ErrorKind::ExecTransport,
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TransportKind {
    type Err = Error;

    /// A known name; none is `PLUGIN_1002`, any other `PLUGIN_1008`.
    fn from_str(s: &str) -> Result<TransportKind, Error> {
        if s.is_empty() {
            return Err(
                Error::new(ErrorKind::InvalidTransport, "no transport given")
                    .with_hint("set transport to unix, http, https, grpc, grpc-tls or exec"),
            );
        }
        TransportKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::UnsupportedTransport,
                    format!("no factory for transport {s:?}"),
                )
                .with_hint("use one of: unix, http, https, grpc, grpc-tls, exec")
            })
    }
}

/// Per-call context every transport carries to the plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallContext {
    /// Correlates the call end to end (logs, tracing, responses).
    pub request_id: String,
    /// Headers (auth, caller metadata).
    pub headers: HashMap<String, String>,
    /// Trace context, sent as the `traceparent` header (in place of one
    /// among `headers`). Kept apart from the map so that a call carries it
    /// without allocating, and every attempt copies it for free; see
    /// [`crate::TraceContext::start_call`].
    pub trace: Option<crate::context::TraceContext>,
    /// How long the caller waits for this attempt.
    pub timeout: Duration,
}

/// A call's headers as they go into an envelope: its own (less any
/// `traceparent`, when it carries trace context of its own), the
/// transport's (`extra`: auth), the trace context, and the caller's request
/// id where the envelope's had to be made unique.
pub(crate) struct WireHeaders<'a> {
    pub(crate) call: &'a HashMap<String, String>,
    pub(crate) trace: Option<crate::context::TraceContext>,
    pub(crate) extra: &'a [(String, String)],
    pub(crate) request_id: Option<&'a str>,
}

impl<'a> WireHeaders<'a> {
    /// The headers of `ctx` alone.
    pub(crate) fn of(ctx: &'a CallContext) -> WireHeaders<'a> {
        WireHeaders {
            call: &ctx.headers,
            trace: ctx.trace,
            extra: &[],
            request_id: None,
        }
    }

    fn request_id(&self) -> Option<&'a str> {
        self.request_id
            .filter(|_| !self.call.contains_key(crate::context::REQUEST_ID_HEADER))
    }

    fn skips(&self, key: &str) -> bool {
        self.trace.is_some() && key.eq_ignore_ascii_case(crate::context::TRACEPARENT)
    }

    /// Whether no header goes out.
    pub(crate) fn is_empty(&self) -> bool {
        self.trace.is_none()
            && self.extra.is_empty()
            && self.request_id().is_none()
            && self.call.is_empty()
    }
}

impl Serialize for WireHeaders<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let id = self.request_id();
        let mut m = s.serialize_map(None)?;
        for (k, v) in self.call {
            if !self.skips(k) {
                m.serialize_entry(k, v)?;
            }
        }
        for (k, v) in self.extra {
            m.serialize_entry(k, v)?;
        }
        if let Some(t) = &self.trace {
            let mut buf = [0u8; crate::context::TRACEPARENT_LEN];
            m.serialize_entry(crate::context::TRACEPARENT, t.header_in(&mut buf))?;
        }
        if let Some(id) = id {
            m.serialize_entry(crate::context::REQUEST_ID_HEADER, id)?;
        }
        m.end()
    }
}

/// One way of reaching a plugin.
pub trait Transport: Send + Sync + 'static {
    /// The transport's name: a [`TransportKind::as_str`] for the library's
    /// own transports, the name its factory is registered under for others.
    fn kind(&self) -> &'static str;

    /// Send one call and wait for its answer, at most `ctx.timeout`.
    fn call(
        &self,
        kind: CallKind,
        data: Value,
        ctx: CallContext,
    ) -> BoxFuture<'_, Result<Value, Error>>;

    /// [`Transport::call`] with the payload shared rather than owned: the
    /// manager's layers call this, so that a call that may be retried needs
    /// no copy of its payload. The library's transports only read it; the
    /// default hands [`Transport::call`] the value (a copy while others hold
    /// it).
    fn call_shared(
        &self,
        kind: CallKind,
        data: Arc<Value>,
        ctx: CallContext,
    ) -> BoxFuture<'_, Result<Value, Error>> {
        self.call(kind, Arc::unwrap_or_clone(data), ctx)
    }

    /// [`Transport::call`] with the payload and the answer left as JSON
    /// text: the transport neither parses nor re-encodes them, so a caller
    /// with its own types (see [`TransportExt::execute_typed`]) or one that
    /// passes bytes through pays for no [`Value`] on either side. The
    /// library's transports carry the text as it is; the default goes
    /// through [`Transport::call`].
    fn call_raw<'a>(
        &'a self,
        kind: CallKind,
        data: &'a RawValue,
        ctx: CallContext,
    ) -> BoxFuture<'a, Result<Box<RawValue>, Error>> {
        Box::pin(async move {
            let data = Value::from_raw(data)?;
            let out = self.call(kind, data, ctx).await?;
            Box::<RawValue>::from_value(&out)
        })
    }

    /// Whether [`Transport::call`] itself gives up at `ctx.timeout` (with
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout)). The library's
    /// transports do; the manager's timeout layer then adds no timer of its
    /// own. A host's transport that says so must keep to it.
    fn ends_at_timeout(&self) -> bool {
        false
    }

    /// Whether this transport writes [`CallContext::trace`] into what it
    /// sends (the library's transports do). One that does not (a host's,
    /// written before the field) gets the trace context in `ctx.headers`
    /// as `traceparent`, as it always had.
    fn writes_trace(&self) -> bool {
        false
    }

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
        // Straight to and from JSON text: no `Value` in between.
        let data = Box::<RawValue>::from_value(req);
        Box::pin(async move {
            let out = self.call_raw(CallKind::Execute, &data?, ctx).await?;
            serde_json::from_str(out.get()).map_err(|e| {
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

/// What a call's payload or answer is held as: parsed ([`Value`]) or JSON
/// text ([`RawValue`]). The transports are written once over both.
pub(crate) trait Payload: Serialize + Sized + Send + 'static {
    /// From JSON text already known to be valid (a field of a parsed frame).
    fn from_raw(raw: &RawValue) -> Result<Self, Error>;
    /// From bytes that may not be JSON (a gRPC field); empty is `null`.
    fn from_bytes(b: &[u8]) -> Result<Self, serde_json::Error>;
    /// Encoded from any serializable value.
    fn from_value<T: Serialize + ?Sized>(v: &T) -> Result<Self, Error>;
    /// JSON `null`.
    fn null() -> Self;
    /// Wrap the sender of a call waiting for an answer of this form.
    fn waiter(tx: tokio::sync::oneshot::Sender<Result<Self, Error>>) -> crate::unix::Waiter;
    /// The payload as a field of an envelope parsed for this form: the value
    /// itself, or the field's text borrowed from the envelope. Where the form
    /// is known before the envelope is read, the payload is parsed with it in
    /// one pass, not found as text and then parsed again.
    type Field<'de>: serde::Deserialize<'de>;
    /// The payload from its field.
    fn from_field(f: Self::Field<'_>) -> Self;
}

fn encode_err(e: serde_json::Error) -> Error {
    Error::new(
        crate::ErrorKind::ExecutionFailed,
        format!("cannot encode the request: {e}"),
    )
}

impl Payload for Value {
    fn from_raw(raw: &RawValue) -> Result<Value, Error> {
        serde_json::from_str(raw.get()).map_err(|e| {
            Error::new(
                crate::ErrorKind::ExecutionFailed,
                format!("cannot parse the JSON payload: {e}"),
            )
        })
    }
    fn from_bytes(b: &[u8]) -> Result<Value, serde_json::Error> {
        if b.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(b)
    }
    fn from_value<T: Serialize + ?Sized>(v: &T) -> Result<Value, Error> {
        serde_json::to_value(v).map_err(encode_err)
    }
    fn null() -> Value {
        Value::Null
    }
    fn waiter(tx: tokio::sync::oneshot::Sender<Result<Value, Error>>) -> crate::unix::Waiter {
        crate::unix::Waiter::Value(tx)
    }
    type Field<'de> = Value;
    fn from_field(f: Value) -> Value {
        f
    }
}

impl Payload for Box<RawValue> {
    fn from_raw(raw: &RawValue) -> Result<Box<RawValue>, Error> {
        Ok(raw.to_owned())
    }
    fn from_bytes(b: &[u8]) -> Result<Box<RawValue>, serde_json::Error> {
        if b.is_empty() {
            return Ok(Self::null());
        }
        // Checked here: JSON text that is not JSON would break the frame it
        // is copied into.
        serde_json::from_slice::<&RawValue>(b).map(RawValue::to_owned)
    }
    fn from_value<T: Serialize + ?Sized>(v: &T) -> Result<Box<RawValue>, Error> {
        serde_json::value::to_raw_value(v).map_err(encode_err)
    }
    fn null() -> Box<RawValue> {
        RawValue::NULL.to_owned()
    }
    fn waiter(
        tx: tokio::sync::oneshot::Sender<Result<Box<RawValue>, Error>>,
    ) -> crate::unix::Waiter {
        crate::unix::Waiter::Raw(tx)
    }
    type Field<'de> = &'de RawValue;
    fn from_field(f: &RawValue) -> Box<RawValue> {
        f.to_owned()
    }
}

impl CallContext {
    /// For a transport that does not write [`CallContext::trace`]: the
    /// trace context moved into `headers` as `traceparent`.
    pub(crate) fn trace_for(mut self, t: &(impl Transport + ?Sized)) -> CallContext {
        if let Some(tc) = self.trace.filter(|_| !t.writes_trace()) {
            self.headers
                .retain(|k, _| !k.eq_ignore_ascii_case(crate::context::TRACEPARENT));
            self.headers
                .insert(crate::context::TRACEPARENT.to_string(), tc.to_header());
            self.trace = None;
        }
        self
    }

    /// A context with only a timeout.
    pub fn with_timeout(timeout: Duration) -> CallContext {
        CallContext {
            timeout,
            ..CallContext::default()
        }
    }
}

/// `fut` bounded by the deadline `at` gives, with the timer armed only when
/// `fut` does not finish on its first poll. Most of what a call awaits
/// before the wire (a pooled connection, a write into a socket with room)
/// is ready at once, and a tokio timer costs a clock read, a clone of the
/// runtime's handle and a wheel entry, shared by every thread.
///
/// A future of its own rather than an `async fn`: that would keep `fut`
/// twice (the argument, and the pinned copy it polls), and a call's future
/// is made of several of these.
pub(crate) fn within<F, A>(at: A, fut: F) -> Within<F, A>
where
    F: Future,
    A: FnOnce() -> Option<tokio::time::Instant>,
{
    Within {
        fut,
        at: Some(at),
        timer: None,
    }
}

/// The deadline of a [`within`] passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elapsed;

pin_project_lite::pin_project! {
    /// See [`within`].
    pub(crate) struct Within<F, A> {
        #[pin]
        fut: F,
        at: Option<A>,
        #[pin]
        timer: Option<tokio::time::Sleep>,
    }
}

impl<F, A> Future for Within<F, A>
where
    F: Future,
    A: FnOnce() -> Option<tokio::time::Instant>,
{
    type Output = Result<F::Output, Elapsed>;

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        let mut this = self.project();
        let had_budget = tokio::task::coop::has_budget_remaining();
        if let Poll::Ready(v) = this.fut.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        // Pending on the first poll: the timer, if there is a deadline.
        if let Some(at) = this.at.take() {
            if let Some(d) = at() {
                this.timer.set(Some(tokio::time::sleep_until(d)));
            }
        }
        let Some(timer) = this.timer.as_pin_mut() else {
            return Poll::Pending;
        };
        // As `tokio::time::Timeout` does: when the inner future used up the
        // task's budget, the timer is polled outside it, or a future that
        // always uses it up would never be timed out.
        let fired = if had_budget && !tokio::task::coop::has_budget_remaining() {
            std::pin::pin!(tokio::task::coop::unconstrained(timer))
                .poll(cx)
                .is_ready()
        } else {
            timer.poll(cx).is_ready()
        };
        if fired {
            Poll::Ready(Err(Elapsed))
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn within_arms_a_timer_only_for_a_future_that_waits() {
        use tokio::time::{sleep, Instant};
        // Ready at once: the deadline is not even asked for.
        let r = within(|| -> Option<Instant> { panic!("no timer for it") }, async {
            7
        })
        .await;
        assert_eq!(r.ok(), Some(7));
        // Waits past its deadline: ends at it.
        let t0 = Instant::now();
        let r = within(
            || Some(t0 + Duration::from_millis(50)),
            std::future::pending::<()>(),
        )
        .await;
        assert!(r.is_err());
        assert_eq!(t0.elapsed(), Duration::from_millis(50));
        // Waits, and finishes first.
        let r = within(|| Some(Instant::now() + Duration::from_secs(1)), async {
            sleep(Duration::from_millis(10)).await;
            3
        })
        .await;
        assert_eq!(r.ok(), Some(3));
        // No deadline: waits as long as it takes.
        let r = within(|| None, async {
            sleep(Duration::from_secs(3600)).await;
            4
        })
        .await;
        assert_eq!(r.ok(), Some(4));
    }

    /// A future that uses up its task's budget on every poll is still timed
    /// out (tokio's own `timeout` does the same), rather than never.
    #[tokio::test]
    async fn within_times_out_a_future_that_uses_up_its_budget() {
        let busy = async {
            loop {
                tokio::task::coop::consume_budget().await;
            }
        };
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            within(
                || Some(tokio::time::Instant::now() + Duration::from_millis(50)),
                busy,
            ),
        )
        .await;
        assert_eq!(r, Ok(Err(Elapsed)), "within's own deadline ends it");
    }

    #[test]
    fn transport_names_round_trip_in_every_form() {
        for k in TransportKind::ALL {
            assert_eq!(k.as_str().parse::<TransportKind>(), Ok(k));
            assert_eq!(k.to_string(), k.as_str());
            let j = serde_json::to_value(k).expect("ser");
            assert_eq!(j, k.as_str());
            assert_eq!(serde_json::from_value::<TransportKind>(j).expect("de"), k);
        }
        assert_eq!(TransportKind::GrpcTls.as_str(), "grpc-tls");
        assert_eq!(TransportKind::Https.error_kind().code(), "TRANSPORT_1301");
        assert_eq!(TransportKind::Exec.error_kind().code(), "TRANSPORT_1304");
    }

    #[test]
    fn an_unknown_transport_name_is_plugin_1008_and_none_plugin_1002() {
        let e = "pigeon".parse::<TransportKind>().expect_err("unknown");
        assert_eq!(e.code(), "PLUGIN_1008");
        assert!(e.message.contains("\"pigeon\""), "{e}");
        assert_eq!(
            "".parse::<TransportKind>().expect_err("none").code(),
            "PLUGIN_1002"
        );
        assert!("GRPC".parse::<TransportKind>().is_err());
        assert!(serde_json::from_str::<TransportKind>("\"grpc_tls\"").is_err());
    }
}
