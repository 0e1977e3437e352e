//! The resilience policies as layers around a call, the way tower composes
//! services: each layer is a small [`Service`] that wraps the next one and
//! does one thing. The manager builds, for each plugin, from the outside in:
//!
//! 1. [`Deadline`] — the caller's overall deadline and cancellation
//!    (`PLUGIN_1204` when either ends the call); outermost, so it bounds
//!    retries and failover too;
//! 2. [`Failover`] (group calls only) — the balancer's ordered candidates,
//!    the next one tried when one fails;
//! 3. [`Metered`] — metrics and a `tracing` span per plugin call;
//! 4. [`RateLimit`] — one token per call, refused at once (`RATELIMIT_1501`);
//!    outside retry, so retries are not new requests;
//! 5. [`Retry`] — retryable failures ([`ErrorKind::is_retryable`]) again after
//!    the backoff, while retries remain and the deadline allows the wait;
//! 6. [`CircuitBreak`] — per attempt: an open circuit refuses at once
//!    (`CIRCUIT_1401`), outcomes feed the breaker;
//! 7. [`Timeout`] — per attempt (`connection.request_timeout`, cut to what is
//!    left of the deadline; `PLUGIN_1204`);
//! 8. [`TransportService`] — the wire.
//!
//! Every layer is usable alone around any [`Service`] (see [`service_fn`]).
//! [`Policies`] is steps 3 to 7 as one service (what a manager's plugin
//! uses): the same code, in one future. Time is tokio's, so tests run with
//! paused time.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::balance::Balancer;
use crate::breaker::{BreakerState, CircuitBreaker};
use crate::error::{Error, ErrorKind};
use crate::metrics::{Meter, Metrics};
use crate::rate::TokenBucket;
use crate::transport::{BoxFuture, CallContext, CallKind, Transport};
use crate::RetryConfig;

/// A call's payload as the layers carry it, shared so that a retry or a
/// failover copies none of it.
#[derive(Debug, Clone)]
pub enum Body {
    /// Parsed; the transport's [`Transport::call_shared`].
    Value(Arc<Value>),
    /// JSON text; the transport's [`Transport::call_raw`], so that neither
    /// side parses it.
    Text(Arc<RawValue>),
}

/// What a service answers: parsed for a [`Body::Value`] call, JSON text for
/// a [`Body::Text`] one.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Parsed.
    Value(Value),
    /// JSON text.
    Text(Box<RawValue>),
}

impl Reply {
    /// The answer parsed (text is parsed here).
    pub fn into_value(self) -> Result<Value, Error> {
        match self {
            Reply::Value(v) => Ok(v),
            Reply::Text(t) => <Value as crate::transport::Payload>::from_raw(&t),
        }
    }

    /// The answer as JSON text (a value is encoded here).
    pub fn into_text(self) -> Result<Box<RawValue>, Error> {
        match self {
            Reply::Value(v) => <Box<RawValue> as crate::transport::Payload>::from_value(&v),
            Reply::Text(t) => Ok(t),
        }
    }
}

impl From<Value> for Reply {
    fn from(v: Value) -> Reply {
        Reply::Value(v)
    }
}

/// One call travelling through the layers.
#[derive(Debug, Clone)]
pub struct Call {
    /// The plugin it is for (set by [`Failover`] for each candidate);
    /// shared, as every layer and attempt keeps it.
    pub plugin: Arc<str>,
    /// What is asked.
    pub kind: CallKind,
    /// Payload, shared so that a retry or a failover needs no copy.
    pub data: Body,
    /// Request id, headers, per-attempt timeout (set by [`Timeout`]).
    pub ctx: CallContext,
    /// Key for consistent hashing.
    pub key: Option<String>,
    /// Overrides the retry layer's `max_retries`.
    pub max_retries: Option<u32>,
    /// The overall deadline.
    pub deadline: Option<tokio::time::Instant>,
    /// Cancels the call (none: only its deadline ends it).
    pub cancel: Option<CancellationToken>,
}

impl Call {
    /// An `execute` call of `plugin` with a fresh request id.
    pub fn new(plugin: &str, data: Value) -> Call {
        Call {
            plugin: Arc::from(plugin),
            kind: CallKind::Execute,
            data: Body::Value(Arc::new(data)),
            ctx: CallContext {
                request_id: crate::context::new_request_id(),
                ..CallContext::default()
            },
            key: None,
            max_retries: None,
            deadline: None,
            cancel: None,
        }
    }

    fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(tokio::time::Instant::now()))
    }
}

/// Something that answers calls.
///
/// Layers are generic over the service they wrap, so that a stack built of
/// known layers is one future: one allocation and no dynamic call between
/// layers (the manager's, per plugin, is [`Policies`], one state machine). [`BoxService`] is the dynamic form,
/// for stacks chosen at run time and for services of the host's.
pub trait Service: Send + Sync + 'static {
    /// Handle one call. The future borrows the service, so that a layer
    /// reaches what it holds (the next layer, its breaker, its metrics)
    /// without a reference count per call.
    fn call(&self, call: Call) -> impl Future<Output = Result<Reply, Error>> + Send + '_;

    /// Whether this service itself ends a call at its `ctx.timeout` (the
    /// library's transports do), so that [`Timeout`] need not time it too.
    fn ends_at_timeout(&self) -> bool {
        false
    }
}

/// The object-safe form of [`Service`] (every service is one): its future
/// boxed.
pub trait DynService: Send + Sync + 'static {
    /// [`Service::call`], boxed.
    fn call_boxed(&self, call: Call) -> BoxFuture<'_, Result<Reply, Error>>;

    /// [`Service::ends_at_timeout`].
    fn ends_at_timeout_dyn(&self) -> bool;
}

impl<S: Service> DynService for S {
    fn call_boxed(&self, call: Call) -> BoxFuture<'_, Result<Reply, Error>> {
        Box::pin(self.call(call))
    }

    fn ends_at_timeout_dyn(&self) -> bool {
        self.ends_at_timeout()
    }
}

/// A shared service of any type.
pub type BoxService = Arc<dyn DynService>;

impl Service for BoxService {
    fn call(&self, call: Call) -> impl Future<Output = Result<Reply, Error>> + Send + '_ {
        (**self).call_boxed(call)
    }

    fn ends_at_timeout(&self) -> bool {
        (**self).ends_at_timeout_dyn()
    }
}

/// A stack shared between holders (the manager's entry and its balancer)
/// is still its concrete type.
impl<S: Service> Service for Arc<S> {
    fn call(&self, call: Call) -> impl Future<Output = Result<Reply, Error>> + Send + '_ {
        (**self).call(call)
    }

    fn ends_at_timeout(&self) -> bool {
        (**self).ends_at_timeout()
    }
}

struct FnService<F>(F);

impl<F, Fut, R> Service for FnService<F>
where
    F: Fn(Call) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, Error>> + Send + 'static,
    R: Into<Reply>,
{
    fn call(&self, call: Call) -> impl Future<Output = Result<Reply, Error>> + Send + '_ {
        let fut = (self.0)(call);
        async move { fut.await.map(Into::into) }
    }
}

/// A service from a closure (tests, in-process plugins) answering a
/// [`Reply`] or a `Value`.
pub fn service_fn<F, Fut, R>(f: F) -> BoxService
where
    F: Fn(Call) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, Error>> + Send + 'static,
    R: Into<Reply> + 'static,
{
    Arc::new(FnService(f))
}

fn now_std() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

fn timeout_err(msg: String) -> Error {
    Error::new(ErrorKind::Timeout, msg)
}

/// The leaf: the call on the wire.
pub struct TransportService {
    transport: Arc<dyn Transport>,
}

impl TransportService {
    /// Over `transport`.
    pub fn new(transport: Arc<dyn Transport>) -> TransportService {
        TransportService { transport }
    }

    /// Over `transport`, shared.
    pub fn layer(transport: Arc<dyn Transport>) -> BoxService {
        Arc::new(TransportService::new(transport))
    }
}

impl Service for TransportService {
    fn call(&self, call: Call) -> impl Future<Output = Result<Reply, Error>> + Send + '_ {
        let t = &self.transport;
        async move {
            let ctx = call.ctx.trace_for(&**t);
            match call.data {
                Body::Value(v) => t.call_shared(call.kind, v, ctx).await.map(Reply::Value),
                Body::Text(text) => t.call_raw(call.kind, &text, ctx).await.map(Reply::Text),
            }
        }
    }

    fn ends_at_timeout(&self) -> bool {
        self.transport.ends_at_timeout()
    }
}

/// Headers every call carries (a plugin's credentials), each added where the
/// call has none of that name.
pub struct AddHeaders<S = BoxService> {
    headers: Vec<(String, String)>,
    inner: S,
}

impl<S: Service> AddHeaders<S> {
    /// Add `headers` (none: a layer that adds nothing) to `inner`'s calls.
    pub fn new(headers: Vec<(String, String)>, inner: S) -> AddHeaders<S> {
        AddHeaders { headers, inner }
    }
}

impl AddHeaders {
    /// Add `headers` to `inner`'s calls.
    pub fn layer(headers: Vec<(String, String)>, inner: BoxService) -> BoxService {
        Arc::new(AddHeaders::new(headers, inner))
    }
}

impl<S: Service> Service for AddHeaders<S> {
    fn call(&self, mut call: Call) -> impl Future<Output = Result<Reply, Error>> + Send + '_ {
        for (k, v) in &self.headers {
            call.ctx
                .headers
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
        self.inner.call(call)
    }

    fn ends_at_timeout(&self) -> bool {
        self.inner.ends_at_timeout()
    }
}

/// Per-attempt deadline.
pub struct Timeout<S = BoxService> {
    per_attempt: Duration,
    inner: S,
    /// The inner service ends the attempt at `ctx.timeout` itself: no second
    /// timer.
    inner_ends: bool,
}

impl<S: Service> Timeout<S> {
    /// Each attempt at most `per_attempt` (and at most what is left of the
    /// call's deadline).
    pub fn new(per_attempt: Duration, inner: S) -> Timeout<S> {
        Timeout {
            per_attempt,
            inner_ends: inner.ends_at_timeout(),
            inner,
        }
    }
}

impl<S> Timeout<S> {
    /// Set the attempt's timeout on `call`: how long, and whether this layer
    /// must time it (a zero timeout means "the transport's default" to a
    /// transport, so a deadline already reached is timed here).
    fn arm(&self, call: &mut Call) -> (Duration, bool) {
        let t = match call.remaining() {
            Some(r) => r.min(self.per_attempt),
            None => self.per_attempt,
        };
        call.ctx.timeout = t;
        (t, !self.inner_ends || t.is_zero())
    }
}

fn attempt_timed_out(t: Duration) -> Error {
    timeout_err(format!("no answer within {t:?}"))
}

impl Timeout {
    /// [`Timeout::new`], shared.
    pub fn layer(per_attempt: Duration, inner: BoxService) -> BoxService {
        Arc::new(Timeout::new(per_attempt, inner))
    }
}

impl<S: Service> Service for Timeout<S> {
    fn call(&self, mut call: Call) -> impl Future<Output = Result<Reply, Error>> + Send + '_ {
        let (t, timed) = self.arm(&mut call);
        let inner = &self.inner;
        // (Each layer makes the inner future where it awaits it, never in a
        // variable first: a future moved out of a variable keeps its room in
        // the outer one, and the stack's single future would double per
        // layer.)
        async move {
            if !timed {
                return inner.call(call).await;
            }
            match tokio::time::timeout(t, inner.call(call)).await {
                Ok(r) => r,
                Err(_) => Err(attempt_timed_out(t)),
            }
        }
    }
}

/// Called when a breaker changes state: plugin, new state.
pub type BreakerListener = Arc<dyn Fn(&str, BreakerState) + Send + Sync>;

/// Circuit breaker per attempt.
pub struct CircuitBreak<S = BoxService> {
    breaker: Arc<CircuitBreaker>,
    listener: Option<BreakerListener>,
    inner: S,
    /// The plugin of the first call, kept for the listener: a manager builds
    /// one stack per plugin, so its calls need not each count a reference
    /// on a name every thread shares.
    plugin: std::sync::OnceLock<Arc<str>>,
}

impl<S> CircuitBreak<S> {
    /// Guard `inner` with `breaker`; `listener` hears state changes.
    pub fn new(
        breaker: Arc<CircuitBreaker>,
        listener: Option<BreakerListener>,
        inner: S,
    ) -> CircuitBreak<S> {
        CircuitBreak {
            breaker,
            listener,
            inner,
            plugin: std::sync::OnceLock::new(),
        }
    }

    /// Admit one attempt of `call`: an [`Attempt`] to settle with its
    /// outcome, or the refusal of an open circuit.
    fn admit(&self, call: &Call) -> Result<Attempt<'_>, Error> {
        let listener = self.listener.as_ref();
        // Only a listener needs the name, once the call has gone on.
        let plugin = listener.map(|_| {
            let first = self.plugin.get_or_init(|| Arc::clone(&call.plugin));
            if **first == *call.plugin {
                Cow::Borrowed(first)
            } else {
                Cow::Owned(Arc::clone(&call.plugin))
            }
        });
        let (allowed, before, mid) = self.breaker.admit_with(now_std);
        let attempt = Attempt {
            breaker: &self.breaker,
            listener,
            plugin,
            armed: allowed,
        };
        attempt.notify(before, mid);
        if !allowed {
            return Err(Error::new(
                ErrorKind::CircuitOpen,
                "circuit open: the plugin failed repeatedly; calls resume after the recovery timeout",
            ));
        }
        Ok(attempt)
    }
}

/// An attempt the breaker let through. Settled with its outcome; one
/// dropped unsettled (its caller gave up, or an outer deadline passed)
/// settles as saying nothing, so that a half-open trial gives its place
/// back rather than holding it for good.
struct Attempt<'a> {
    breaker: &'a CircuitBreaker,
    listener: Option<&'a BreakerListener>,
    plugin: Option<Cow<'a, Arc<str>>>,
    armed: bool,
}

impl Attempt<'_> {
    fn notify(&self, before: BreakerState, after: BreakerState) {
        if after != before {
            if let (Some(l), Some(p)) = (self.listener, &self.plugin) {
                l(p, after);
            }
        }
    }

    /// Feed the attempt's outcome to the breaker (our own refusals do not
    /// count).
    fn settle(mut self, r: &Result<Reply, Error>) {
        self.armed = false;
        let outcome = match r {
            Ok(_) => Some(true),
            Err(e) if e.kind.counts_as_failure() => Some(false),
            Err(_) => None,
        };
        let (before, after) = self.breaker.settle_change_with(outcome, now_std);
        self.notify(before, after);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.breaker.settle_change_with(None, now_std);
        }
    }
}

impl CircuitBreak {
    /// [`CircuitBreak::new`], shared.
    pub fn layer(
        breaker: Arc<CircuitBreaker>,
        listener: Option<BreakerListener>,
        inner: BoxService,
    ) -> BoxService {
        Arc::new(CircuitBreak::new(breaker, listener, inner))
    }
}

impl<S: Service> Service for CircuitBreak<S> {
    fn call(&self, call: Call) -> impl Future<Output = Result<Reply, Error>> + Send + '_ {
        let admitted = self.admit(&call);
        let inner = &self.inner;
        async move {
            let attempt = admitted?;
            let r = inner.call(call).await;
            attempt.settle(&r);
            r
        }
    }
}

/// Retry with backoff.
pub struct Retry<S = BoxService> {
    cfg: RetryConfig,
    inner: S,
}

impl<S> Retry<S> {
    /// Retry `inner` per `cfg` (a call's `max_retries` overrides it).
    pub fn new(cfg: RetryConfig, inner: S) -> Retry<S> {
        Retry { cfg, inner }
    }

    /// The settings for `call` (its `max_retries` overrides ours).
    fn config_for(&self, call: &Call) -> RetryConfig {
        let mut cfg = self.cfg;
        if let Some(m) = call.max_retries {
            cfg.max_retries = m;
        }
        cfg
    }
}

/// After attempt `n` of `call` failed with `e`: the wait before the next
/// one, or none when the call gives up (not retryable, no retries left, or
/// the deadline comes first).
fn retry_wait(cfg: &RetryConfig, n: u32, e: &Error, call: &Call) -> Option<Duration> {
    let wait = cfg.next(n, e.kind.is_retryable())?;
    if call.remaining().is_some_and(|r| r <= wait) {
        return None;
    }
    tracing::debug!(plugin = %call.plugin, attempt = n, ?wait, error = %e, "retrying");
    Some(wait)
}

impl Retry {
    /// [`Retry::new`], shared.
    pub fn layer(cfg: RetryConfig, inner: BoxService) -> BoxService {
        Arc::new(Retry::new(cfg, inner))
    }
}

impl<S: Service> Service for Retry<S> {
    fn call(&self, call: Call) -> impl Future<Output = Result<Reply, Error>> + Send + '_ {
        let cfg = self.config_for(&call);
        let inner = &self.inner;
        async move {
            let mut n = 0u32;
            loop {
                n += 1;
                let e = match inner.call(call.clone()).await {
                    Ok(v) => return Ok(v),
                    Err(e) => e,
                };
                let Some(wait) = retry_wait(&cfg, n, &e, &call) else {
                    return Err(e);
                };
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Token-bucket rate limit, one token per call.
pub struct RateLimit<S = BoxService> {
    /// None: no limit (the layer passes calls on).
    bucket: Option<TokenBucket>,
    inner: S,
}

impl<S> RateLimit<S> {
    /// Limit `inner` with `bucket` (none: no limit).
    pub fn new(bucket: Option<TokenBucket>, inner: S) -> RateLimit<S> {
        RateLimit { bucket, inner }
    }

    /// Take a token, or say when the next one comes.
    fn take(&self) -> Result<(), Error> {
        match self.bucket.as_ref().map(|b| b.try_acquire_at(now_std())) {
            Some(Err(wait)) => Err(Error::new(
                ErrorKind::RateLimited,
                format!("rate limit reached; next slot in {wait:?}"),
            )),
            _ => Ok(()),
        }
    }
}

impl RateLimit {
    /// Limit `inner` with `bucket`.
    pub fn layer(bucket: TokenBucket, inner: BoxService) -> BoxService {
        Arc::new(RateLimit::new(Some(bucket), inner))
    }
}

impl<S: Service> Service for RateLimit<S> {
    fn call(&self, call: Call) -> impl Future<Output = Result<Reply, Error>> + Send + '_ {
        let refused = self.take().err();
        let inner = &self.inner;
        async move {
            if let Some(e) = refused {
                return Err(e);
            }
            inner.call(call).await
        }
    }
}

/// Metrics and a tracing span per call.
pub struct Metered<S = BoxService> {
    /// None: the layer passes calls on (no metrics, no span).
    metrics: Option<Arc<Metrics>>,
    inner: S,
    /// The series of the plugin this layer's calls are for, resolved on the
    /// first call (a manager builds one stack per plugin).
    meter: std::sync::OnceLock<(Arc<str>, Meter)>,
}

/// What a metered call records under, prepared before it starts.
type Prepared<'a> = Option<(&'a Metrics, Cow<'a, Arc<str>>, Cow<'a, Meter>)>;

impl<S> Metered<S> {
    /// Record `inner`'s calls in `metrics` (none: pass them on).
    pub fn new(metrics: Option<Arc<Metrics>>, inner: S) -> Metered<S> {
        Metered {
            metrics,
            inner,
            meter: std::sync::OnceLock::new(),
        }
    }

    /// `plugin`'s name and series: the cached ones, borrowed, while they are
    /// `plugin`'s and current; else looked up (none for a plugin forgotten).
    fn meter(
        &self,
        metrics: &Metrics,
        plugin: &Arc<str>,
    ) -> Option<(Cow<'_, Arc<str>>, Cow<'_, Meter>)> {
        if let Some((name, m)) = self.meter.get() {
            if name == plugin && !m.is_stale() {
                return Some((Cow::Borrowed(name), Cow::Borrowed(m)));
            }
        }
        let m = metrics.meter(plugin)?;
        let _ = self.meter.set((Arc::clone(plugin), m.clone()));
        Some((Cow::Owned(Arc::clone(plugin)), Cow::Owned(m)))
    }

    /// The series `call` records under (none: not counted, no metrics or the
    /// plugin was forgotten) and its span, with the call's trace context
    /// started.
    fn prepare(&self, call: &mut Call) -> (Prepared<'_>, tracing::Span) {
        let Some(m) = self.metrics.as_deref() else {
            return (None, tracing::Span::none());
        };
        let meter = self.meter(m, &call.plugin);
        let tc = crate::context::TraceContext::start_call(&mut call.ctx);
        let span = tracing::info_span!(
            "plugin_call",
            plugin = %call.plugin,
            request_id = %call.ctx.request_id,
            trace_id = %crate::context::Hex { v: tc.trace_id, width: 32 },
            span_id = %crate::context::Hex { v: u128::from(tc.span_id), width: 16 },
        );
        (meter.map(|(p, mt)| (m, p, mt)), span)
    }
}

/// A call being recorded: started on creation, finished with its outcome,
/// or as cancelled when dropped before (the caller gave up on it).
struct Recording<'a> {
    m: &'a Metrics,
    plugin: Cow<'a, Arc<str>>,
    meter: Cow<'a, Meter>,
    t0: tokio::time::Instant,
    armed: bool,
}

impl<'a> Recording<'a> {
    fn start(prepared: Prepared<'a>) -> Option<Recording<'a>> {
        let (m, plugin, meter) = prepared?;
        m.started(&meter);
        Some(Recording {
            m,
            plugin,
            meter,
            t0: tokio::time::Instant::now(),
            armed: true,
        })
    }

    fn finish(mut self, r: &Result<Reply, Error>) {
        self.armed = false;
        let took = self.t0.elapsed();
        self.m
            .finished(&self.meter, &self.plugin, took, r.as_ref().map(|_| ()));
        if let Err(e) = r {
            tracing::debug!(error = %e, "plugin call failed");
        }
    }
}

impl Drop for Recording<'_> {
    fn drop(&mut self) {
        if self.armed {
            let e = Error::new(ErrorKind::Timeout, "cancelled by the caller");
            self.m
                .finished(&self.meter, &self.plugin, self.t0.elapsed(), Err(&e));
        }
    }
}

impl Metered {
    /// Record `inner`'s calls in `metrics`.
    pub fn layer(metrics: Arc<Metrics>, inner: BoxService) -> BoxService {
        Arc::new(Metered::new(Some(metrics), inner))
    }
}

impl<S: Service> Service for Metered<S> {
    fn call(&self, mut call: Call) -> impl Future<Output = Result<Reply, Error>> + Send + '_ {
        let (prepared, span) = self.prepare(&mut call);
        let inner = &self.inner;
        async move {
            let Some(rec) = Recording::start(prepared) else {
                return inner.call(call).await;
            };
            let r = inner.call(call).await;
            rec.finish(&r);
            r
        }
        .instrument(span)
    }
}

/// The policies of [`Metered`], [`RateLimit`], [`Retry`], [`CircuitBreak`]
/// and [`Timeout`], stacked in that order (outside in) around a leaf, as
/// one service whose call is one state machine. Stacked as separate layers,
/// every layer's future holds the next one's, each made and moved into
/// place as its layer starts: a call through five layers moved kilobytes of
/// future state and took five layers of polling. This does the same steps
/// in the same order, with the same code, in one future.
pub struct Policies<L> {
    metered: Metered<()>,
    rate: RateLimit<()>,
    retry: Retry<()>,
    breaker: CircuitBreak<()>,
    timeout: Timeout<()>,
    leaf: L,
}

impl<L: Service> Policies<L> {
    /// `leaf` under metrics (none: not recorded), a rate limit (none: no
    /// limit), retries per `retry`, `breaker` (its changes told to
    /// `listener`) and at most `per_attempt` per attempt.
    pub fn new(
        metrics: Option<Arc<Metrics>>,
        bucket: Option<TokenBucket>,
        retry: RetryConfig,
        breaker: Arc<CircuitBreaker>,
        listener: Option<BreakerListener>,
        per_attempt: Duration,
        leaf: L,
    ) -> Policies<L> {
        Policies {
            metered: Metered::new(metrics, ()),
            rate: RateLimit::new(bucket, ()),
            retry: Retry::new(retry, ()),
            breaker: CircuitBreak::new(breaker, listener, ()),
            timeout: Timeout {
                per_attempt,
                inner_ends: leaf.ends_at_timeout(),
                inner: (),
            },
            leaf,
        }
    }
}

impl<L: Service> Service for Policies<L> {
    fn call(&self, mut call: Call) -> impl Future<Output = Result<Reply, Error>> + Send + '_ {
        let (prepared, span) = self.metered.prepare(&mut call);
        async move {
            let rec = Recording::start(prepared);
            let r = match self.rate.take() {
                Err(e) => Err(e),
                Ok(()) => {
                    let cfg = self.retry.config_for(&call);
                    let mut n = 0u32;
                    loop {
                        n += 1;
                        let r = match self.breaker.admit(&call) {
                            Err(e) => Err(e),
                            Ok(attempt) => {
                                let mut this = call.clone();
                                let (t, timed) = self.timeout.arm(&mut this);
                                let r = if timed {
                                    match tokio::time::timeout(t, self.leaf.call(this)).await {
                                        Ok(r) => r,
                                        Err(_) => Err(attempt_timed_out(t)),
                                    }
                                } else {
                                    self.leaf.call(this).await
                                };
                                attempt.settle(&r);
                                r
                            }
                        };
                        let e = match r {
                            Ok(v) => break Ok(v),
                            Err(e) => e,
                        };
                        let Some(wait) = retry_wait(&cfg, n, &e, &call) else {
                            break Err(e);
                        };
                        tokio::time::sleep(wait).await;
                    }
                }
            };
            if let Some(rec) = rec {
                rec.finish(&r);
            }
            r
        }
        .instrument(span)
    }
}

/// The caller's overall deadline and cancellation.
pub struct Deadline<S = BoxService> {
    inner: S,
}

impl<S: Service> Deadline<S> {
    /// Bound `inner` by each call's `deadline` and `cancel`.
    pub fn new(inner: S) -> Deadline<S> {
        Deadline { inner }
    }
}

impl Deadline {
    /// [`Deadline::new`], shared.
    pub fn layer(inner: BoxService) -> BoxService {
        Arc::new(Deadline::new(inner))
    }
}

impl<S: Service> Service for Deadline<S> {
    fn call(&self, call: Call) -> impl Future<Output = Result<Reply, Error>> + Send + '_ {
        let deadline = call.deadline;
        let cancel = call.cancel.clone();
        let inner = &self.inner;
        async move {
            let timed = |d, call| async move {
                match tokio::time::timeout_at(d, inner.call(call)).await {
                    Ok(r) => r,
                    Err(_) => Err(timeout_err("the call's deadline passed".into())),
                }
            };
            match (deadline, cancel) {
                // Nothing bounds it here: no timer, no token.
                (None, None) => inner.call(call).await,
                // Nobody can cancel it: no token to wait on.
                (Some(d), None) => timed(d, call).await,
                (None, Some(cancel)) => tokio::select! {
                    r = inner.call(call) => r,
                    _ = cancel.cancelled() => Err(timeout_err("cancelled by the caller".into())),
                },
                (Some(d), Some(cancel)) => tokio::select! {
                    r = timed(d, call) => r,
                    _ = cancel.cancelled() => Err(timeout_err("cancelled by the caller".into())),
                },
            }
        }
    }
}

/// Resolves a member name to its service (the manager's plugin table).
pub type Resolver = Arc<dyn Fn(&str) -> Option<BoxService> + Send + Sync>;

/// Balanced calls with failover: the balancer's candidates in order, the next
/// tried when one fails (any error: another instance may succeed), until the
/// deadline or cancellation ends the call.
pub struct Failover {
    balancer: Arc<Balancer>,
    resolve: Resolver,
}

impl Failover {
    /// Over `balancer`'s members, found through `resolve`.
    pub fn layer(balancer: Arc<Balancer>, resolve: Resolver) -> BoxService {
        Arc::new(Failover { balancer, resolve })
    }
}

impl Service for Failover {
    fn call(&self, call: Call) -> impl Future<Output = Result<Reply, Error>> + Send + '_ {
        let (b, resolve) = (&self.balancer, &self.resolve);
        async move {
            let order = b.candidates(call.key.as_deref())?;
            let mut last: Option<Error> = None;
            let mut tried = 0usize;
            for name in order {
                let Some(svc) = resolve(&name) else { continue };
                if call.cancel.as_ref().is_some_and(|c| c.is_cancelled())
                    || call.remaining().is_some_and(|r| r.is_zero())
                {
                    break;
                }
                let mut c = call.clone();
                c.plugin = Arc::from(name.as_str());
                tried += 1;
                b.begin(&name);
                let t0 = tokio::time::Instant::now();
                let r = svc.call(c).await;
                b.end(&name, r.is_ok(), t0.elapsed());
                match r {
                    Ok(v) => return Ok(v),
                    Err(mut e) => {
                        tracing::debug!(plugin = %name, error = %e, "failing over");
                        if e.plugin.is_none() {
                            e.plugin = Some(name);
                        }
                        last = Some(e);
                    }
                }
            }
            Err(match last {
                Some(mut e) => {
                    e.message = format!("all {tried} plugin(s) tried failed; last: {}", e.message);
                    e
                }
                None => Error::new(
                    ErrorKind::NoAvailablePlugins,
                    "no plugin of the group could take the call",
                ),
            })
        }
    }
}
