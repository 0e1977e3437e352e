//! The HTTP/HTTPS transport: a pooled keep-alive HTTP/1.1 client
//! ([`HttpClient`]) and a server ([`serve`]) for a [`Handler`].
//!
//! **Routes** (relative to the endpoint URL, e.g. `https://host/v1/plugin`):
//! `POST <endpoint>` runs `execute` with the seed's `HTTPPluginRequest`
//! envelope `{"data", "request_id", "timeout", "headers", "metadata"}`
//! (`timeout` a Go duration such as `"1500ms"`); `GET <endpoint>/health`,
//! `/info` and `/ping` the control calls. Every answer is the seed's
//! `HTTPPluginResponse` `{"data", "error", "request_id", "metadata"}`; a
//! failure has a non-2xx status and its stable code in
//! `metadata["error_code"]` (401 for `AUTH_11xx`, 503 for `HEALTH_1601`, 504
//! for `PLUGIN_1204`, 500 otherwise). Credentials travel in HTTP headers
//! (`X-API-Key`, `Authorization`, custom ones), the request id in
//! `X-Request-ID` too.
//!
//! **Compression**: unless `disable_compression`, the client sends
//! `Accept-Encoding: gzip` and inflates gzip answers; the server gzips answers
//! of at least `compress_min_bytes` to clients that accept it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, ACCEPT_ENCODING, CONNECTION, CONTENT_ENCODING, CONTENT_TYPE, HOST,
};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::auth::{AuthConfig, AuthMethod, ServerAuth};
use crate::error::{Error, ErrorKind};
use crate::server::{stopped, Call, Handler, Served, Server};
use crate::tls::{ClientTls, ServerTls};
use crate::transport::{
    BoxFuture, CallContext, CallKind, Payload, Transport, TransportKind, WireHeaders,
};
use crate::unix::MAX_FRAME;

/// The seed's `HTTPPluginRequest` as it goes on the wire.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpRequestEnvelope {
    /// The payload.
    pub data: Value,
    /// The caller's request id.
    pub request_id: String,
    /// The caller's deadline as a Go duration (`"1500ms"`, `"30s"`); empty: none.
    pub timeout: String,
    /// Caller headers (trace context, metadata).
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub headers: HashMap<String, String>,
    /// Extra metadata.
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub metadata: HashMap<String, String>,
}

/// The seed's `HTTPPluginResponse`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpResponseEnvelope {
    /// The result.
    #[serde(skip_serializing_if = "Value::is_null")]
    pub data: Value,
    /// Why it failed; empty on success.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// The request's id.
    pub request_id: String,
    /// Metadata; `error_code` holds a failure's stable code.
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub metadata: HashMap<String, String>,
}

#[derive(Serialize)]
struct RequestRef<'a, D: ?Sized> {
    data: &'a D,
    request_id: &'a str,
    timeout: GoMillis,
    #[serde(skip_serializing_if = "WireHeaders::is_empty")]
    headers: WireHeaders<'a>,
}

/// An [`HttpRequestEnvelope`] as the server reads it: the data parsed as
/// the handler takes it (a [`Payload::Field`]), in the envelope's one pass.
#[derive(Deserialize)]
#[serde(default)]
struct RequestIn<'a, T> {
    data: Option<T>,
    #[serde(borrow)]
    request_id: Cow<'a, str>,
    #[serde(borrow)]
    timeout: Cow<'a, str>,
    headers: HashMap<String, String>,
    metadata: HashMap<String, String>,
}

// By hand: derived, it would ask for `T: Default`, which `&RawValue` is not.
impl<T> Default for RequestIn<'_, T> {
    fn default() -> Self {
        RequestIn {
            data: None,
            request_id: Cow::Borrowed(""),
            timeout: Cow::Borrowed(""),
            headers: HashMap::new(),
            metadata: HashMap::new(),
        }
    }
}

impl<'a, T> RequestIn<'a, T> {
    fn with_data<U>(self, data: Option<U>) -> RequestIn<'a, U> {
        RequestIn {
            data,
            request_id: self.request_id,
            timeout: self.timeout,
            headers: self.headers,
            metadata: self.metadata,
        }
    }
}

/// A request body as the handler's form `D` takes it: in one pass, the
/// payload parsed with the envelope. Where that fails, the body is read
/// again with the payload as text and the text parsed on its own, as the
/// other transports do: a payload at `serde_json`'s depth limit still goes
/// through (inside the envelope it is one level deeper), and one that `D`
/// cannot hold at all is refused under the envelope's request id (empty:
/// none could be read).
fn read_request<D: Payload>(body: &[u8]) -> Result<RequestIn<'_, D>, (Cow<'_, str>, Error)> {
    if body.is_empty() {
        return Ok(RequestIn::default());
    }
    if let Ok(mut env) = serde_json::from_slice::<RequestIn<'_, D::Field<'_>>>(body) {
        let data = env.data.take().map(D::from_field);
        return Ok(env.with_data(data));
    }
    match serde_json::from_slice::<RequestIn<'_, &RawValue>>(body) {
        Ok(mut env) => match env.data.take().map(D::from_raw).transpose() {
            Ok(data) => Ok(env.with_data(data)),
            Err(e) => Err((env.request_id, e)),
        },
        Err(e) => Err((
            Cow::Borrowed(""),
            Error::new(
                ErrorKind::ExecutionFailed,
                format!("the body is not an HTTPPluginRequest envelope: {e}"),
            ),
        )),
    }
}

/// An [`HttpResponseEnvelope`] as the client reads it: the data parsed as
/// the caller takes it, in the envelope's one pass.
#[derive(Deserialize)]
#[serde(default)]
struct ResponseIn<T> {
    data: Option<T>,
    error: String,
    metadata: HashMap<String, String>,
}

impl<T> Default for ResponseIn<T> {
    fn default() -> Self {
        ResponseIn {
            data: None,
            error: String::new(),
            metadata: HashMap::new(),
        }
    }
}

impl<T> ResponseIn<T> {
    fn map_data<U>(self, f: impl FnOnce(T) -> U) -> ResponseIn<U> {
        ResponseIn {
            data: self.data.map(f),
            error: self.error,
            metadata: self.metadata,
        }
    }
}

/// The wire form of an [`HttpResponseEnvelope`], written from borrowed parts.
#[derive(Serialize)]
struct ResponseOut<'a, D> {
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a D>,
    #[serde(skip_serializing_if = "str::is_empty")]
    error: &'a str,
    request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<HashMap<&'static str, &'static str>>,
}

/// Parse a Go duration (`"300ms"`, `"1.5s"`, `"1m30s"`, `"0"`).
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).ok()
}

/// A duration as the Go duration the envelope's `timeout` carries, in whole
/// milliseconds (at least 1); zero is `""` (none). Written straight into the
/// envelope.
struct GoMillis(Duration);

impl Serialize for GoMillis {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_zero() {
            s.serialize_str("")
        } else {
            s.collect_str(&format_args!("{}ms", self.0.as_millis().max(1)))
        }
    }
}

/// Room to encode a body in one allocation: about the size of the bodies
/// encoded lately (see [`saw_body`]), plus some slack.
fn body_room(seen: &AtomicUsize) -> usize {
    seen.load(Ordering::Relaxed) + 64
}

/// Remember a body of `len` bytes as the size to expect: taken when it is
/// larger than the last one remembered, or less than half of it (so that one
/// large body does not make every later small one reserve its room), and at
/// most 64 KiB. Bodies of about the same size write nothing, so concurrent
/// calls rarely write the shared counter.
fn saw_body(seen: &AtomicUsize, len: usize) {
    let len = len.min(64 << 10);
    let was = seen.load(Ordering::Relaxed);
    if len > was || len < was / 2 {
        seen.store(len, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------- client

/// How to reach an HTTP plugin; the seed's `ConnectionConfig` fields.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// The execute URL (`http://…` or `https://…`; the seed's `endpoint`).
    pub endpoint: String,
    /// Calls (hence HTTP/1.1 connections) in flight at once (`max_connections`);
    /// further calls wait for a slot within their deadline. 0: no limit.
    pub max_connections: usize,
    /// Idle connections kept for reuse (`max_idle_connections`).
    pub max_idle_connections: usize,
    /// How long an idle connection is kept (`idle_timeout`); zero: no limit.
    pub idle_timeout: Duration,
    /// Time to establish a connection, TLS included (`connection_timeout`).
    pub connect_timeout: Duration,
    /// Deadline of a call whose context has none (`request_timeout`).
    pub request_timeout: Duration,
    /// Reuse connections and enable TCP keep-alive (`keep_alive`); off, every
    /// call opens a new connection.
    pub keep_alive: bool,
    /// Do not ask for gzip answers (`disable_compression`).
    pub disable_compression: bool,
    /// Credentials; `mtls` presents its certificate, `ca_file` is trusted for
    /// the server's certificate.
    pub auth: AuthConfig,
}

impl HttpOptions {
    /// The seed's defaults for an endpoint: 100 connections, 10 idle for 90 s,
    /// 10 s to connect, 30 s per call, keep-alive and compression on, no auth.
    pub fn new(endpoint: impl Into<String>) -> HttpOptions {
        HttpOptions {
            endpoint: endpoint.into(),
            max_connections: 100,
            max_idle_connections: 10,
            idle_timeout: Duration::from_secs(90),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            keep_alive: true,
            disable_compression: false,
            auth: AuthConfig::default(),
        }
    }
}

/// A pooled HTTP/HTTPS client for one plugin endpoint (cheap to clone).
///
/// It keeps its own pool of hyper's connection-level HTTP/1.1 senders: a call
/// takes the most recently returned idle connection (or opens one), sends,
/// reads the whole answer and puts the connection back. A request that a
/// pooled connection closed before sending is sent again on a new one.
#[derive(Clone)]
pub struct HttpClient {
    inner: Arc<HttpInner>,
}

struct HttpInner {
    kind: TransportKind,
    target: Target,
    execute: Uri,
    health: Uri,
    info: Uri,
    ping: Uri,
    host: HeaderValue,
    auth_headers: Vec<(HeaderName, HeaderValue)>,
    limit: Option<Semaphore>,
    opts: HttpOptions,
    closed: AtomicBool,
    seq: AtomicU64,
    /// The largest request body so far (see [`body_room`]).
    body_len: AtomicUsize,
    /// Idle connections, the most recently returned last.
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    reaper: AtomicBool,
}

/// Where the connections go: the endpoint's host and port, and TLS for https.
struct Target {
    host: String,
    port: u16,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

type Sender = SendRequest<Full<Bytes>>;

struct Idle {
    tx: Sender,
    since: Instant,
}

impl HttpInner {
    /// Pool a ready connection, unless the client is closed or the pool full;
    /// start the reaper if it is not running.
    fn put_back(self: &Arc<Self>, tx: Sender) {
        {
            let Ok(mut g) = self.idle.lock() else { return };
            // Read under the pool's lock, which `close_now` sets it under.
            if self.closed.load(Ordering::Acquire) || g.len() >= self.max_idle {
                return;
            }
            g.push(Idle {
                tx,
                since: Instant::now(),
            });
        }
        if !self.opts.idle_timeout.is_zero() && !self.reaper.swap(true, Ordering::AcqRel) {
            self.start_reaper();
        }
    }

    /// Close connections left idle past the idle timeout even when no call
    /// comes to notice. It ends when the pool is empty (the next put-back
    /// starts it again) or the client is gone.
    fn start_reaper(self: &Arc<Self>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.reaper.store(false, Ordering::Release);
            return;
        };
        let weak = Arc::downgrade(self);
        let every = (self.opts.idle_timeout / 2).max(Duration::from_millis(10));
        rt.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(inner) = weak.upgrade() else { return };
                inner.prune(Instant::now());
                let Ok(g) = inner.idle.lock() else { return };
                if g.is_empty() {
                    // Under the pool's lock: a put-back after this sees the
                    // flag down and starts a new reaper.
                    inner.reaper.store(false, Ordering::Release);
                    return;
                }
            }
        });
    }

    /// Drop idle connections older than the idle timeout (the oldest are first).
    fn prune(&self, now: Instant) {
        if self.opts.idle_timeout.is_zero() {
            return;
        }
        if let Ok(mut g) = self.idle.lock() {
            let old = g
                .iter()
                .take_while(|i| now.duration_since(i.since) >= self.opts.idle_timeout)
                .count();
            g.drain(..old);
        }
    }
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("endpoint", &self.inner.opts.endpoint)
            .finish()
    }
}

fn url_err(msg: String) -> Error {
    Error::new(ErrorKind::InvalidEndpointUrl, msg)
        .with_hint("give an absolute http:// or https:// URL")
}

/// The origin-form target (`/path?query`) of the endpoint with `suffix`
/// appended to its path (none: the endpoint's own).
fn origin_uri(endpoint: &Uri, suffix: Option<&str>) -> Result<Uri, Error> {
    let path = endpoint.path();
    let mut s = match suffix {
        None if path.is_empty() => "/".to_string(),
        None => path.to_string(),
        Some(x) => format!("{}/{x}", path.trim_end_matches('/')),
    };
    if let Some(q) = endpoint.query() {
        s.push('?');
        s.push_str(q);
    }
    s.parse()
        .map_err(|e| url_err(format!("bad endpoint {endpoint}: {e}")))
}

impl HttpClient {
    /// Build the client (no connection is made until the first call). Refuses
    /// a missing endpoint (`PLUGIN_1003`), a bad URL (`PLUGIN_1004`), bad auth (`AUTH_11xx`) or unreadable TLS
    /// files (`AUTH_1104`).
    pub fn new(opts: HttpOptions) -> Result<HttpClient, Error> {
        if opts.endpoint.trim().is_empty() {
            return Err(Error::new(ErrorKind::MissingEndpoint, "no endpoint given")
                .with_hint("set the endpoint to the plugin's URL"));
        }
        let endpoint: Uri = opts
            .endpoint
            .parse()
            .map_err(|e| url_err(format!("bad endpoint {:?}: {e}", opts.endpoint)))?;
        let https = match endpoint.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(url_err(format!(
                    "endpoint {:?} is neither http:// nor https://",
                    opts.endpoint
                )))
            }
        };
        let Some(authority) = endpoint.authority().filter(|a| !a.host().is_empty()) else {
            return Err(url_err(format!("endpoint {:?} has no host", opts.endpoint)));
        };
        // `Authority::host` keeps an IPv6 address's brackets; a socket address
        // and a TLS server name take it without them.
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let host_header = HeaderValue::from_str(match authority.as_str().rsplit_once('@') {
            Some((_, h)) => h,
            None => authority.as_str(),
        })
        .map_err(|e| url_err(format!("bad host in {:?}: {e}", opts.endpoint)))?;
        if let Err(mut errs) = opts.auth.validate() {
            return Err(errs.remove(0));
        }
        if opts.auth.method == AuthMethod::Mtls && !https {
            return Err(Error::new(
                ErrorKind::MissingMtlsCerts,
                "mtls auth needs an https:// endpoint",
            )
            .with_hint("use https:// or another auth method"));
        }
        let tls = if https {
            let cfg = ClientTls::from_auth(&opts.auth).rustls_config(&[b"http/1.1"])?;
            let name = ServerName::try_from(host.clone())
                .map_err(|e| url_err(format!("bad host in {:?}: {e}", opts.endpoint)))?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(cfg)), name))
        } else {
            None
        };
        let mut auth_headers = Vec::new();
        for (k, v) in opts.auth.header_pairs() {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| {
                Error::new(
                    ErrorKind::UnsupportedAuthMethod,
                    format!("header {k:?}: {e}"),
                )
            })?;
            let value = HeaderValue::from_str(&v).map_err(|e| {
                Error::new(
                    ErrorKind::UnsupportedAuthMethod,
                    format!("header {k:?}: {e}"),
                )
            })?;
            auth_headers.push((name, value));
        }
        Ok(HttpClient {
            inner: Arc::new(HttpInner {
                kind: if https {
                    TransportKind::Https
                } else {
                    TransportKind::Http
                },
                target: Target { host, port, tls },
                execute: origin_uri(&endpoint, None)?,
                health: origin_uri(&endpoint, Some("health"))?,
                info: origin_uri(&endpoint, Some("info"))?,
                ping: origin_uri(&endpoint, Some("ping"))?,
                host: host_header,
                auth_headers,
                limit: (opts.max_connections > 0).then(|| Semaphore::new(opts.max_connections)),
                max_idle: if opts.keep_alive {
                    opts.max_idle_connections.max(opts.max_connections).max(1)
                } else {
                    0
                },
                opts,
                closed: AtomicBool::new(false),
                seq: AtomicU64::new(1),
                body_len: AtomicUsize::new(0),
                idle: Mutex::new(Vec::new()),
                reaper: AtomicBool::new(false),
            }),
        })
    }

    fn err(&self, msg: String) -> Error {
        Error::new(ErrorKind::HttpTransport, msg)
    }

    fn closed_err(&self) -> Error {
        self.err("the transport is closed".into())
            .with_hint("create a new client")
    }

    /// Send one call; at most `ctx.timeout` (the options' `request_timeout`
    /// when zero), waiting for a connection slot included.
    pub async fn call(
        &self,
        kind: CallKind,
        data: impl std::borrow::Borrow<Value>,
        ctx: CallContext,
    ) -> Result<Value, Error> {
        self.call_any(kind, data.borrow(), ctx).await
    }

    /// [`HttpClient::call`] with the payload and the answer as JSON text
    /// (see [`Transport::call_raw`]).
    pub async fn call_raw(
        &self,
        kind: CallKind,
        data: &RawValue,
        ctx: CallContext,
    ) -> Result<Box<RawValue>, Error> {
        self.call_any(kind, data, ctx).await
    }

    async fn call_any<D: Serialize + ?Sized, A: Payload>(
        &self,
        kind: CallKind,
        data: &D,
        ctx: CallContext,
    ) -> Result<A, Error> {
        let timeout = if ctx.timeout.is_zero() {
            self.inner.opts.request_timeout
        } else {
            ctx.timeout
        };
        match tokio::time::timeout(timeout, self.call_inner(kind, data, ctx, timeout)).await {
            Ok(r) => r,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "no answer from {} within {timeout:?}",
                    self.inner.opts.endpoint
                ),
            )),
        }
    }

    async fn call_inner<D: Serialize + ?Sized, A: Payload>(
        &self,
        kind: CallKind,
        data: &D,
        ctx: CallContext,
        timeout: Duration,
    ) -> Result<A, Error> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(self.closed_err());
        }
        let _permit = match &self.inner.limit {
            Some(s) => Some(s.acquire().await.map_err(|_| self.closed_err())?),
            None => None,
        };
        let request_id: Cow<'_, str> = if ctx.request_id.is_empty() {
            Cow::Owned(format!(
                "h{}",
                self.inner.seq.fetch_add(1, Ordering::Relaxed)
            ))
        } else {
            Cow::Borrowed(&ctx.request_id)
        };
        let (method, uri, body) = match kind {
            CallKind::Execute => {
                let mut body = Vec::with_capacity(body_room(&self.inner.body_len));
                let env = RequestRef {
                    data,
                    request_id: &request_id,
                    timeout: GoMillis(timeout),
                    headers: WireHeaders::of(&ctx),
                };
                serde_json::to_writer(&mut body, &env).map_err(|e| {
                    Error::new(
                        ErrorKind::ExecutionFailed,
                        format!("cannot encode the request: {e}"),
                    )
                })?;
                saw_body(&self.inner.body_len, body.len());
                (Method::POST, &self.inner.execute, Bytes::from(body))
            }
            CallKind::Health => (Method::GET, &self.inner.health, Bytes::new()),
            CallKind::Info => (Method::GET, &self.inner.info, Bytes::new()),
            CallKind::Ping => (Method::GET, &self.inner.ping, Bytes::new()),
        };
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri.clone();
        let h = req.headers_mut();
        h.reserve(6 + self.inner.auth_headers.len());
        h.insert(HOST, self.inner.host.clone());
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if !self.inner.opts.disable_compression {
            h.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        }
        if !self.inner.opts.keep_alive {
            h.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            h.insert("x-request-id", v);
        }
        for (k, v) in &self.inner.auth_headers {
            h.insert(k.clone(), v.clone());
        }
        let (mut tx, pooled) = self.checkout().await?;
        let resp = match tx.try_send_request(req).await {
            Ok(r) => r,
            Err(mut e) => match e.take_message() {
                // The pooled connection was closed under us before the
                // request went out: nothing was sent, so a new one may carry it.
                Some(req) if pooled => {
                    tx = self.connect().await?;
                    tx.send_request(req).await.map_err(|e| self.mid_call(&e))?
                }
                _ => return Err(self.mid_call(&e.into_error())),
            },
        };
        let status = resp.status();
        let gz = resp
            .headers()
            .get(CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        let body = Limited::new(resp.into_body(), MAX_FRAME)
            .collect()
            .await
            .map_err(|e| self.err(format!("reading the answer failed: {e}")))?
            .to_bytes();
        self.checkin(tx);
        let body = if gz {
            Bytes::from(gunzip(&body).map_err(|e| self.err(format!("bad gzip answer: {e}")))?)
        } else {
            body
        };
        decode_answer(status, &body)
    }

    fn mid_call(&self, e: &hyper::Error) -> Error {
        self.err(format!("{} failed mid-call: {e}", self.inner.opts.endpoint))
    }

    /// An idle connection that is still open (and whether it was pooled), or
    /// a new one.
    async fn checkout(&self) -> Result<(Sender, bool), Error> {
        loop {
            let idle = match self.inner.idle.lock() {
                Ok(mut g) => g.pop(),
                Err(_) => None,
            };
            let Some(Idle { mut tx, since }) = idle else {
                return Ok((self.connect().await?, false));
            };
            let idle_limit = self.inner.opts.idle_timeout;
            if tx.is_closed() || (!idle_limit.is_zero() && since.elapsed() >= idle_limit) {
                continue;
            }
            // Ready at once unless the server is closing it; either way it
            // does not wait on the network.
            if tx.ready().await.is_ok() {
                return Ok((tx, true));
            }
        }
    }

    /// Put a connection whose exchange is complete back in the pool. One
    /// that is not ready for another request yet (a request body still going
    /// out after an early answer) goes back only once it is, so that no call
    /// waits on it.
    fn checkin(&self, tx: Sender) {
        if self.inner.max_idle == 0 {
            return;
        }
        if tx.is_ready() {
            self.inner.put_back(tx);
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        let wait = match self.inner.opts.idle_timeout {
            d if d.is_zero() => Duration::from_secs(90),
            d => d,
        };
        rt.spawn(async move {
            let mut tx = tx;
            if let Ok(Ok(())) = tokio::time::timeout(wait, tx.ready()).await {
                if let Some(inner) = weak.upgrade() {
                    inner.put_back(tx);
                }
            }
        });
    }

    /// Open a connection (TCP, then TLS for https) within the connect timeout.
    async fn connect(&self) -> Result<Sender, Error> {
        let inner = &self.inner;
        let endpoint = &inner.opts.endpoint;
        let t = &inner.target;
        let failed = |what: String| {
            Error::new(
                ErrorKind::ConnectionFailed,
                format!("cannot connect to {endpoint}: {what}"),
            )
            .with_hint("is the plugin running and listening there?")
        };
        let open = async {
            let addrs = tokio::net::lookup_host((t.host.as_str(), t.port))
                .await
                .map_err(|e| failed(format!("cannot resolve {}: {e}", t.host)))?;
            let tcp = dial(addrs.collect()).await.map_err(|e| match e {
                Some(e) => failed(e),
                None => failed(format!("{} resolves to no address", t.host)),
            })?;
            let _ = tcp.set_nodelay(true);
            if inner.opts.keep_alive {
                let ka = socket2::TcpKeepalive::new().with_time(Duration::from_secs(30));
                let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&ka);
            }
            match &t.tls {
                None => handshake(TokioIo::new(tcp)).await,
                Some((c, name)) => {
                    let tls = c.connect(name.clone(), tcp).await.map_err(|e| {
                        failed(format!("TLS handshake failed: {e}"))
                            .with_hint("check auth.ca_file and the server's certificate")
                    })?;
                    handshake(TokioIo::new(tls)).await
                }
            }
        };
        let tx = tokio::time::timeout(inner.opts.connect_timeout, open)
            .await
            .map_err(|_| {
                failed(format!(
                    "no connection within {:?}",
                    inner.opts.connect_timeout
                ))
            })??;
        Ok(tx)
    }

    /// Drop the connection pool. Idempotent; later calls fail with
    /// `TRANSPORT_1301` (calls in flight finish on their connections).
    pub fn close_now(&self) {
        if let Ok(mut g) = self.inner.idle.lock() {
            self.inner.closed.store(true, Ordering::Release);
            g.clear();
        } else {
            self.inner.closed.store(true, Ordering::Release);
        }
        if let Some(s) = &self.inner.limit {
            s.close();
        }
    }
}

/// How long a connection attempt runs alone before the next address is
/// tried beside it (RFC 8305's "connection attempt delay").
const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Connect to the first of `addrs` that answers. Attempts start in order,
/// each `ATTEMPT_DELAY` after the last unless that one failed first, so an
/// address that drops connection attempts (an IPv6 route that goes nowhere)
/// delays the call by that much, not by the whole connect timeout. The error
/// names the last address that failed (`None`: there was none).
async fn dial(addrs: Vec<SocketAddr>) -> Result<TcpStream, Option<String>> {
    let mut next = addrs.into_iter();
    // Dropped (the call ended or another attempt won): the rest are aborted.
    let mut running = tokio::task::JoinSet::new();
    let mut last = None;
    let start = |set: &mut tokio::task::JoinSet<_>, a: SocketAddr| {
        set.spawn(async move { (a, TcpStream::connect(a).await) });
    };
    loop {
        if running.is_empty() {
            match next.next() {
                Some(a) => start(&mut running, a),
                None => return Err(last),
            }
        }
        tokio::select! {
            Some(done) = running.join_next() => match done {
                Ok((_, Ok(s))) => return Ok(s),
                Ok((a, Err(e))) => last = Some(format!("{a}: {e}")),
                Err(e) => last = Some(format!("a connection attempt failed: {e}")),
            },
            _ = tokio::time::sleep(ATTEMPT_DELAY), if next.len() > 0 => {
                if let Some(a) = next.next() {
                    start(&mut running, a);
                }
            }
        }
    }
}

async fn handshake<I>(io: I) -> Result<Sender, Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (tx, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| Error::new(ErrorKind::ConnectionFailed, format!("HTTP/1.1 setup: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("plugin HTTP connection ended: {e}");
        }
    });
    Ok(tx)
}

fn gunzip(b: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(b.len() * 4);
    flate2::read::GzDecoder::new(b)
        .take(MAX_FRAME as u64 + 1)
        .read_to_end(&mut out)?;
    if out.len() > MAX_FRAME {
        return Err(std::io::Error::other("answer too large"));
    }
    Ok(out)
}

fn decode_answer<A: Payload>(status: StatusCode, body: &[u8]) -> Result<A, Error> {
    // In one pass, the payload parsed with the envelope; where that fails,
    // read again with the payload as text, parsed on its own (see
    // `read_request`), so that a failure's error and code still come through
    // whatever its data.
    let env: Option<ResponseIn<Result<A, Error>>> =
        match serde_json::from_slice::<ResponseIn<A::Field<'_>>>(body) {
            Ok(e) => Some(e.map_data(|d| Ok(A::from_field(d)))),
            Err(_) => serde_json::from_slice::<ResponseIn<&RawValue>>(body)
                .ok()
                .map(|e| e.map_data(A::from_raw)),
        };
    let env_code = env
        .as_ref()
        .and_then(|e| e.metadata.get("error_code"))
        .and_then(|c| ErrorKind::from_code(c));
    match env {
        Some(e) if status.is_success() && e.error.is_empty() => {
            e.data.unwrap_or_else(|| Ok(A::null()))
        }
        Some(e) if !e.error.is_empty() => Err(Error::new(
            env_code.unwrap_or_else(|| kind_of_status(status)),
            e.error,
        )),
        _ if status.is_success() => Err(Error::new(
            ErrorKind::ExecutionFailed,
            "the answer is not an HTTPPluginResponse envelope",
        )),
        _ => Err(Error::new(
            env_code.unwrap_or_else(|| kind_of_status(status)),
            format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ),
        )),
    }
}

fn kind_of_status(s: StatusCode) -> ErrorKind {
    match s.as_u16() {
        401 | 403 => ErrorKind::AuthFailed,
        404 => ErrorKind::PluginNotFound,
        408 | 504 => ErrorKind::Timeout,
        429 => ErrorKind::RateLimited,
        502 | 503 => ErrorKind::HttpTransport,
        _ => ErrorKind::ExecutionFailed,
    }
}

impl Transport for HttpClient {
    fn kind(&self) -> &'static str {
        self.inner.kind.as_str()
    }

    fn call(
        &self,
        kind: CallKind,
        data: Value,
        ctx: CallContext,
    ) -> BoxFuture<'_, Result<Value, Error>> {
        Box::pin(HttpClient::call(self, kind, data, ctx))
    }

    fn ends_at_timeout(&self) -> bool {
        true
    }

    fn call_shared(
        &self,
        kind: CallKind,
        data: Arc<Value>,
        ctx: CallContext,
    ) -> BoxFuture<'_, Result<Value, Error>> {
        Box::pin(HttpClient::call(self, kind, data, ctx))
    }

    fn call_raw<'a>(
        &'a self,
        kind: CallKind,
        data: &'a RawValue,
        ctx: CallContext,
    ) -> BoxFuture<'a, Result<Box<RawValue>, Error>> {
        Box::pin(HttpClient::call_raw(self, kind, data, ctx))
    }

    fn writes_trace(&self) -> bool {
        true
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        self.close_now();
        Box::pin(async {})
    }
}

// ---------------------------------------------------------------- server

/// How to serve a [`Handler`] over HTTP.
#[derive(Debug, Clone)]
pub struct HttpServeOptions {
    /// Where to listen (port 0: any; see [`Server::local_addr`]).
    pub addr: SocketAddr,
    /// The execute path (`/` by default); control calls are under it.
    pub path: String,
    /// Credentials every call must carry.
    pub auth: ServerAuth,
    /// Serve HTTPS; with `client_ca_file`, require client certificates (mTLS).
    pub tls: Option<ServerTls>,
    /// Answers at least this large are gzipped for clients that accept it.
    pub compress_min_bytes: usize,
}

impl HttpServeOptions {
    /// Plain HTTP on `addr` at `/`, no auth, gzip from 4 KiB.
    pub fn new(addr: SocketAddr) -> HttpServeOptions {
        HttpServeOptions {
            addr,
            path: "/".into(),
            auth: ServerAuth::none(),
            tls: None,
            compress_min_bytes: 4096,
        }
    }
}

struct Shared<H> {
    handler: Arc<H>,
    auth: ServerAuth,
    base: String,
    compress_min: usize,
    /// The largest answer body so far (see [`body_room`]).
    reply_len: AtomicUsize,
}

/// Serve `handler` over HTTP (or HTTPS) until the returned [`Server`] is
/// shut down or dropped.
pub async fn serve<H: Handler>(handler: Arc<H>, opts: HttpServeOptions) -> Result<Server, Error> {
    if opts.auth.requires_client_cert()
        && opts.tls.as_ref().is_none_or(|t| t.client_ca_file.is_none())
    {
        return Err(Error::new(
            ErrorKind::MissingMtlsCerts,
            "mtls auth without TLS and a client CA",
        )
        .with_hint("set tls with client_ca_file"));
    }
    let acceptor = match &opts.tls {
        Some(t) => Some(tokio_rustls::TlsAcceptor::from(
            t.rustls_config(&[b"http/1.1"])?,
        )),
        None => None,
    };
    let listener = TcpListener::bind(opts.addr).await.map_err(|e| {
        Error::new(
            ErrorKind::ConnectionFailed,
            format!("cannot listen on {}: {e}", opts.addr),
        )
    })?;
    let addr = listener.local_addr().ok();
    let shared = Arc::new(Shared {
        handler,
        auth: opts.auth,
        base: opts.path.trim_end_matches('/').to_string(),
        compress_min: opts.compress_min_bytes,
        reply_len: AtomicUsize::new(0),
    });
    let (stop_tx, stop) = watch::channel(false);
    let task = tokio::spawn(async move {
        let accept = async {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let (shared, stop, acceptor) =
                    (Arc::clone(&shared), stop.clone(), acceptor.clone());
                tokio::spawn(async move {
                    match acceptor {
                        None => serve_conn(tcp, shared, stop).await,
                        Some(a) => {
                            let hs = tokio::time::timeout(Duration::from_secs(10), a.accept(tcp));
                            match hs.await {
                                Ok(Ok(tls)) => serve_conn(tls, shared, stop).await,
                                Ok(Err(e)) => tracing::debug!("TLS handshake refused: {e}"),
                                Err(_) => tracing::debug!("TLS handshake timed out"),
                            }
                        }
                    }
                });
            }
        };
        tokio::select! {
            _ = accept => {}
            _ = stopped(stop.clone()) => {}
        }
    });
    Ok(Server::new(stop_tx, task, addr))
}

async fn serve_conn<I, H>(io: I, shared: Arc<Shared<H>>, stop: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let svc = hyper::service::service_fn(move |req| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(handle(shared, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), svc);
    tokio::select! {
        _ = conn => {}
        _ = stopped(stop) => {}
    }
}

fn status_of(kind: ErrorKind) -> StatusCode {
    if kind.is_auth() {
        return StatusCode::UNAUTHORIZED;
    }
    match kind {
        ErrorKind::HealthCheckFailed => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::PluginNotFound => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn handle<H: Handler>(
    shared: Arc<Shared<H>>,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let gzip_ok = parts
        .headers
        .get(ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let path = parts.uri.path();
    let rest = path.strip_prefix(shared.base.as_str()).unwrap_or("\u{0}");
    let kind = match (&parts.method, rest) {
        (&Method::POST, "" | "/" | "/execute") => Some(CallKind::Execute),
        (&Method::GET | &Method::POST, "/health") => Some(CallKind::Health),
        (&Method::GET | &Method::POST, "/info") => Some(CallKind::Info),
        (&Method::GET | &Method::POST, "/ping") => Some(CallKind::Ping),
        _ => None,
    };
    let hdr_id = parts
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(kind) = kind else {
        return reply::<_, Value>(
            &shared,
            gzip_ok,
            hdr_id,
            Err(Error::new(
                ErrorKind::PluginNotFound,
                format!("no route for {} {path}", parts.method),
            )),
        );
    };
    if let Err(e) = shared
        .auth
        .check_with(|name| parts.headers.get(name).and_then(|v| v.to_str().ok()))
    {
        return reply::<_, Value>(&shared, gzip_ok, hdr_id, Err(e));
    }
    let mut headers: HashMap<String, String> = HashMap::new();
    for (k, v) in &parts.headers {
        // Transport-level headers are not the handler's business.
        if matches!(
            *k,
            http::header::HOST
                | http::header::CONTENT_LENGTH
                | http::header::CONTENT_TYPE
                | http::header::ACCEPT_ENCODING
                | http::header::CONNECTION
                | http::header::ACCEPT
                | http::header::USER_AGENT
        ) {
            continue;
        }
        if let Ok(v) = v.to_str() {
            headers.insert(k.as_str().to_string(), v.to_string());
        }
    }
    let body = match Limited::new(body, MAX_FRAME).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return reply::<_, Value>(
                &shared,
                gzip_ok,
                hdr_id,
                Err(Error::new(
                    ErrorKind::HttpTransport,
                    format!("reading the request: {e}"),
                )),
            )
        }
    };
    if H::RAW {
        answer_as::<H, Box<RawValue>>(&shared, gzip_ok, hdr_id, kind, headers, &body).await
    } else {
        answer_as::<H, Value>(&shared, gzip_ok, hdr_id, kind, headers, &body).await
    }
}

/// Read the request envelope with its payload in the form the handler takes
/// (in one pass), run the call, and reply.
async fn answer_as<H: Handler, D: Served>(
    shared: &Shared<H>,
    gzip_ok: bool,
    hdr_id: &str,
    kind: CallKind,
    mut headers: HashMap<String, String>,
    body: &[u8],
) -> Response<Full<Bytes>> {
    let env = match read_request::<D>(body) {
        Ok(env) => env,
        Err((id, e)) => {
            let id = if id.is_empty() { hdr_id } else { &id };
            return reply::<_, Value>(shared, gzip_ok, id, Err(e));
        }
    };
    // The answer's id, borrowed from the request for as long as it is read.
    let request_id: &str = if env.request_id.is_empty() {
        hdr_id
    } else {
        &env.request_id
    };
    headers.extend(env.metadata);
    headers.extend(env.headers);
    let deadline = parse_go_duration(&env.timeout).and_then(Call::deadline_after);
    let call = Call {
        kind,
        request_id: request_id.to_owned(),
        headers,
        deadline,
        data: env.data.unwrap_or_else(D::null),
    };
    let r = D::answer(&*shared.handler, call).await;
    reply(shared, gzip_ok, request_id, r)
}

fn reply<H, D: Serialize>(
    shared: &Shared<H>,
    gzip_ok: bool,
    request_id: &str,
    r: Result<D, Error>,
) -> Response<Full<Bytes>> {
    let (status, env) = match &r {
        Ok(data) => (
            StatusCode::OK,
            ResponseOut {
                data: Some(data),
                error: "",
                request_id,
                metadata: None,
            },
        ),
        Err(e) => (
            status_of(e.kind),
            ResponseOut {
                data: None,
                error: &e.message,
                request_id,
                metadata: Some(HashMap::from([("error_code", e.kind.code())])),
            },
        ),
    };
    let mut body = Vec::with_capacity(body_room(&shared.reply_len));
    if serde_json::to_writer(&mut body, &env).is_err() {
        body = b"{}".to_vec();
    }
    saw_body(&shared.reply_len, body.len());
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let body = if gzip_ok && body.len() >= shared.compress_min {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        match enc.write_all(&body).and_then(|_| enc.finish()) {
            Ok(z) => {
                h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                z
            }
            Err(_) => body,
        }
    } else {
        body
    };
    *resp.body_mut() = Full::new(Bytes::from(body));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(
            parse_go_duration("1500ms"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_go_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(parse_go_duration("5 parsecs"), None);
        let go = |d| serde_json::to_string(&GoMillis(d)).unwrap();
        assert_eq!(go(Duration::from_secs(2)), r#""2000ms""#);
        assert_eq!(go(Duration::from_micros(10)), r#""1ms""#);
        assert_eq!(go(Duration::ZERO), r#""""#);
    }

    /// An address that drops connection attempts (here a listener whose
    /// accept queue is full, so the kernel drops the SYNs) delays the
    /// connection by one attempt delay, not by the kernel's retransmissions.
    #[test]
    fn the_body_room_follows_the_bodies_both_ways() {
        let seen = AtomicUsize::new(0);
        saw_body(&seen, 1000);
        assert_eq!(body_room(&seen), 1064);
        // About the same size: nothing written.
        saw_body(&seen, 900);
        assert_eq!(body_room(&seen), 1064);
        // One large body, then small ones again.
        saw_body(&seen, 1 << 20);
        assert_eq!(body_room(&seen), (64 << 10) + 64, "capped");
        saw_body(&seen, 200);
        assert_eq!(body_room(&seen), 264);
    }

    #[tokio::test]
    async fn a_silent_address_does_not_stall_the_next() {
        let silent = tokio::net::TcpSocket::new_v4().expect("socket");
        silent
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let silent = silent.listen(1).expect("listen");
        let hole = silent.local_addr().expect("addr");
        // Fill the accept queue; the first attempt that hangs proves it full.
        let mut held = Vec::new();
        loop {
            let attempt =
                tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(hole));
            match attempt.await {
                Ok(Ok(s)) => held.push(s),
                Ok(Err(e)) => panic!("connect to the silent listener: {e}"),
                Err(_) => break,
            }
            assert!(held.len() < 64, "the accept queue never filled");
        }
        let good = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let good_addr = good.local_addr().expect("addr");
        let t0 = Instant::now();
        let s = tokio::time::timeout(Duration::from_secs(5), dial(vec![hole, good_addr]))
            .await
            .expect("dial waited on the silent address")
            .expect("dial");
        assert_eq!(s.peer_addr().expect("peer"), good_addr);
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        assert_eq!(dial(vec![]).await.err(), Some(None));
    }

    #[test]
    fn control_urls_hang_under_the_endpoint() {
        let at = |base: &str, suffix: Option<&str>| {
            let u: Uri = base.parse().expect("uri");
            origin_uri(&u, suffix).map(|u| u.to_string())
        };
        assert_eq!(
            at("http://h:1/v1/plugin?x=1", Some("health")),
            Ok("/v1/plugin/health?x=1".to_string())
        );
        assert_eq!(at("http://h:1", Some("info")), Ok("/info".to_string()));
        assert_eq!(at("http://h:1", None), Ok("/".to_string()));
        assert_eq!(
            at("https://u:p@h/v1/?x=1", None),
            Ok("/v1/?x=1".to_string())
        );
    }
}
