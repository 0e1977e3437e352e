//! The gRPC and gRPC-TLS transport: a client ([`GrpcClient`]) of the
//! `hangar.plugin.v1.PluginService` (`proto/plugin.proto`: Execute / Health /
//! Info carrying JSON bytes, the request id and headers) and a server
//! ([`serve`]) for a [`Handler`] that also answers the standard
//! `grpc.health.v1.Health` service (kept in step with the handler's health,
//! and left open to unauthenticated health probes).
//!
//! Credentials travel in gRPC metadata (`x-api-key`, `authorization`, custom
//! keys lowercased); a refusal is `UNAUTHENTICATED` with the stable code in
//! the `x-error-code` trailer. A plugin failure is not a gRPC error: it is
//! `ExecuteResponse.error` with `error_code`. `ping` is the standard health
//! check of the server as a whole.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::watch;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

use crate::auth::{AuthConfig, AuthMethod, ServerAuth};
use crate::error::{Error, ErrorKind};
use crate::server::{stopped, Call, Handler, Served, Server};
use crate::tls::ServerTls;
use crate::transport::{BoxFuture, CallContext, CallKind, Payload, Transport, TransportKind};

/// The message's header map: the call's, with its trace context as
/// `traceparent` (in place of one among them).
fn wire_headers(ctx: &CallContext) -> std::collections::HashMap<String, String> {
    let mut h = ctx.headers.clone();
    if let Some(t) = ctx.trace {
        h.retain(|k, _| !k.eq_ignore_ascii_case(crate::context::TRACEPARENT));
        h.insert(crate::context::TRACEPARENT.to_string(), t.to_header());
    }
    h
}

/// The generated `hangar.plugin.v1` messages, client and server.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("hangar.plugin.v1");
}

use pb::plugin_service_client::PluginServiceClient;
use pb::plugin_service_server::{PluginService, PluginServiceServer};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};

/// The metadata key carrying a refusal's stable code.
pub const ERROR_CODE_KEY: &str = "x-error-code";

/// How to reach a gRPC plugin.
#[derive(Debug, Clone)]
pub struct GrpcOptions {
    /// `host:port`, or a URL `http://host:port` / `https://host:port`
    /// (the seed's `endpoint`).
    pub endpoint: String,
    /// TLS (`grpc-tls`); forced on by an `https://` endpoint.
    pub tls: bool,
    /// The name the server's certificate must carry, when not the endpoint's host.
    pub server_name: Option<String>,
    /// HTTP/2 connections to spread calls over (`max_connections`, at least 1).
    pub max_connections: usize,
    /// Time to establish a connection (`connection_timeout`).
    pub connect_timeout: Duration,
    /// Deadline of a call whose context has none (`request_timeout`).
    pub request_timeout: Duration,
    /// HTTP/2 keep-alive pings every 30 s (`keep_alive`).
    pub keep_alive: bool,
    /// Credentials; `mtls` presents its certificate, `ca_file` is trusted.
    pub auth: AuthConfig,
}

impl GrpcOptions {
    /// Defaults: plain (TLS for `https://`), 1 connection, 10 s to connect,
    /// 30 s per call, keep-alive on, no auth.
    pub fn new(endpoint: impl Into<String>) -> GrpcOptions {
        GrpcOptions {
            endpoint: endpoint.into(),
            tls: false,
            server_name: None,
            max_connections: 1,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            keep_alive: true,
            auth: AuthConfig::default(),
        }
    }
}

/// A gRPC client of one plugin (cheap to clone). Connections are made
/// lazily and re-made by tonic after a failure.
#[derive(Clone)]
pub struct GrpcClient {
    inner: Arc<GrpcInner>,
}

struct GrpcInner {
    kind: TransportKind,
    channels: Mutex<Option<Vec<Channel>>>,
    next: AtomicUsize,
    meta: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
    opts: GrpcOptions,
    closed: AtomicBool,
    seq: AtomicU64,
}

impl std::fmt::Debug for GrpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcClient")
            .field("endpoint", &self.inner.opts.endpoint)
            .finish()
    }
}

fn read_pem(p: &std::path::Path) -> Result<Vec<u8>, Error> {
    std::fs::read(p).map_err(|e| {
        Error::new(
            ErrorKind::MissingMtlsCerts,
            format!("cannot read {}: {e}", p.display()),
        )
        .with_hint("give a readable PEM file")
    })
}

fn native_roots_pem() -> Vec<Certificate> {
    rustls_native_certs::load_native_certs()
        .certs
        .into_iter()
        .map(|der| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
            let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
            for chunk in b64.as_bytes().chunks(64) {
                pem.push_str(&String::from_utf8_lossy(chunk));
                pem.push('\n');
            }
            pem.push_str("-----END CERTIFICATE-----\n");
            Certificate::from_pem(pem)
        })
        .collect()
}

impl GrpcClient {
    /// Build the client without connecting. Refuses a missing
    /// (`PLUGIN_1003`) or bad endpoint (`PLUGIN_1004`), bad auth (`AUTH_11xx`) or unreadable TLS files
    /// (`AUTH_1104`).
    pub fn new(opts: GrpcOptions) -> Result<GrpcClient, Error> {
        if opts.endpoint.trim().is_empty() {
            return Err(Error::new(ErrorKind::MissingEndpoint, "no endpoint given")
                .with_hint("set the endpoint to host:port"));
        }
        if let Err(mut errs) = opts.auth.validate() {
            return Err(errs.remove(0));
        }
        let tls = opts.tls || opts.endpoint.starts_with("https://");
        let url = if opts.endpoint.contains("://") {
            opts.endpoint.replacen("https://", "http://", 1)
        } else {
            format!("http://{}", opts.endpoint)
        };
        if opts.auth.method == AuthMethod::Mtls && !tls {
            return Err(
                Error::new(ErrorKind::MissingMtlsCerts, "mtls auth needs grpc-tls")
                    .with_hint("use transport grpc-tls or another auth method"),
            );
        }
        let bad = |e: String| {
            Error::new(
                ErrorKind::InvalidEndpointUrl,
                format!("bad endpoint {:?}: {e}", opts.endpoint),
            )
            .with_hint("give host:port or http(s)://host:port")
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(e.to_string()))?;
        let host = uri.host().ok_or_else(|| bad("no host".into()))?.to_string();
        let url = if tls {
            url.replacen("http://", "https://", 1)
        } else {
            url
        };
        let mut ep = Endpoint::from_shared(url)
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(opts.connect_timeout)
            .tcp_nodelay(true);
        if opts.keep_alive {
            ep = ep
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_while_idle(true);
        }
        if tls {
            let mut cfg =
                ClientTlsConfig::new().domain_name(opts.server_name.clone().unwrap_or(host));
            cfg = match &opts.auth.ca_file {
                Some(ca) => cfg.ca_certificate(Certificate::from_pem(read_pem(ca)?)),
                None => cfg.ca_certificates(native_roots_pem()),
            };
            if opts.auth.method == AuthMethod::Mtls {
                if let (Some(c), Some(k)) = (&opts.auth.cert_file, &opts.auth.key_file) {
                    cfg = cfg.identity(Identity::from_pem(read_pem(c)?, read_pem(k)?));
                }
            }
            ep = ep.tls_config(cfg).map_err(|e| {
                Error::new(ErrorKind::MissingMtlsCerts, format!("TLS setup: {e}"))
                    .with_hint("check the certificate files")
            })?;
        }
        let channels = (0..opts.max_connections.max(1))
            .map(|_| ep.connect_lazy())
            .collect();
        let mut meta = Vec::new();
        for (k, v) in opts.auth.header_pairs() {
            let key =
                AsciiMetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes()).map_err(|e| {
                    Error::new(
                        ErrorKind::UnsupportedAuthMethod,
                        format!("metadata key {k:?}: {e}"),
                    )
                })?;
            let val = AsciiMetadataValue::try_from(v.as_str()).map_err(|e| {
                Error::new(
                    ErrorKind::UnsupportedAuthMethod,
                    format!("metadata value of {k:?}: {e}"),
                )
            })?;
            meta.push((key, val));
        }
        Ok(GrpcClient {
            inner: Arc::new(GrpcInner {
                kind: if tls {
                    TransportKind::GrpcTls
                } else {
                    TransportKind::Grpc
                },
                channels: Mutex::new(Some(channels)),
                next: AtomicUsize::new(0),
                meta,
                opts,
                closed: AtomicBool::new(false),
                seq: AtomicU64::new(1),
            }),
        })
    }

    fn channel(&self) -> Result<Channel, Error> {
        let g = self
            .inner
            .channels
            .lock()
            .map_err(|_| Error::new(ErrorKind::GrpcTransport, "client state poisoned"))?;
        match g.as_ref() {
            Some(v) if !v.is_empty() => {
                let i = self.inner.next.fetch_add(1, Ordering::Relaxed) % v.len();
                Ok(v[i].clone())
            }
            _ => Err(
                Error::new(ErrorKind::GrpcTransport, "the transport is closed")
                    .with_hint("create a new client"),
            ),
        }
    }

    fn request<T>(&self, msg: T, ctx: &CallContext, timeout: Duration) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(timeout);
        let md = r.metadata_mut();
        for (k, v) in &self.inner.meta {
            md.insert(k.clone(), v.clone());
        }
        if let Ok(v) = AsciiMetadataValue::try_from(ctx.request_id.as_str()) {
            md.insert("x-request-id", v);
        }
        r
    }

    /// Send one call; at most `ctx.timeout` (the options' `request_timeout`
    /// when zero).
    pub async fn call(
        &self,
        kind: CallKind,
        data: impl std::borrow::Borrow<Value>,
        ctx: CallContext,
    ) -> Result<Value, Error> {
        self.call_any(kind, data.borrow(), ctx).await
    }

    /// [`GrpcClient::call`] with the payload and the answer as JSON text
    /// (see [`Transport::call_raw`]): the text is the message's `data` bytes
    /// as they are.
    pub async fn call_raw(
        &self,
        kind: CallKind,
        data: &RawValue,
        ctx: CallContext,
    ) -> Result<Box<RawValue>, Error> {
        self.call_any(kind, data, ctx).await
    }

    async fn call_any<D: serde::Serialize + ?Sized, A: Payload>(
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
        let ch = self.channel()?;
        let fut = async {
            match kind {
                CallKind::Execute => {
                    let request_id = if ctx.request_id.is_empty() {
                        format!("g{}", self.inner.seq.fetch_add(1, Ordering::Relaxed))
                    } else {
                        ctx.request_id.clone()
                    };
                    let body = serde_json::to_vec(data).map_err(|e| {
                        Error::new(
                            ErrorKind::ExecutionFailed,
                            format!("cannot encode the request: {e}"),
                        )
                    })?;
                    let msg = pb::ExecuteRequest {
                        request_id,
                        data: Bytes::from(body),
                        headers: wire_headers(&ctx),
                        timeout_ms: timeout.as_millis().min(u128::from(u64::MAX)) as u64,
                    };
                    let r = PluginServiceClient::new(ch)
                        .execute(self.request(msg, &ctx, timeout))
                        .await
                        .map_err(status_err)?
                        .into_inner();
                    if !r.error.is_empty() || !r.error_code.is_empty() {
                        let kind = ErrorKind::from_code(&r.error_code)
                            .unwrap_or(ErrorKind::ExecutionFailed);
                        return Err(Error::new(kind, r.error));
                    }
                    json_of(&r.data)
                }
                CallKind::Health => {
                    let r = PluginServiceClient::new(ch)
                        .health(self.request(
                            pb::HealthRequest {
                                request_id: ctx.request_id.clone(),
                            },
                            &ctx,
                            timeout,
                        ))
                        .await
                        .map_err(status_err)?
                        .into_inner();
                    if r.healthy {
                        A::from_value(&serde_json::json!({ "healthy": true }))
                    } else {
                        Err(Error::new(
                            ErrorKind::HealthCheckFailed,
                            if r.message.is_empty() {
                                "the plugin reports itself unhealthy".into()
                            } else {
                                r.message
                            },
                        ))
                    }
                }
                CallKind::Info => {
                    let r = PluginServiceClient::new(ch)
                        .info(self.request(
                            pb::InfoRequest {
                                request_id: ctx.request_id.clone(),
                            },
                            &ctx,
                            timeout,
                        ))
                        .await
                        .map_err(status_err)?
                        .into_inner();
                    json_of(&r.info)
                }
                CallKind::Ping => {
                    let r = HealthClient::new(ch)
                        .check(self.request(
                            HealthCheckRequest {
                                service: String::new(),
                            },
                            &ctx,
                            timeout,
                        ))
                        .await
                        .map_err(status_err)?
                        .into_inner();
                    if r.status == ServingStatus::Serving as i32 {
                        A::from_value("pong")
                    } else {
                        Err(Error::new(
                            ErrorKind::HealthCheckFailed,
                            "the server is not serving",
                        ))
                    }
                }
            }
        };
        let began = tokio::time::Instant::now();
        match tokio::time::timeout(timeout, fut).await {
            // The server enforces the same deadline (grpc-timeout) and may
            // answer CANCELLED first: past our deadline, that is a timeout.
            Ok(Err(e)) if e.kind == ErrorKind::GrpcTransport && began.elapsed() >= timeout => {
                Err(Error::new(
                    ErrorKind::Timeout,
                    format!("no answer within {timeout:?} ({})", e.message),
                ))
            }
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

    /// Drop the connections. Idempotent; later calls fail with `TRANSPORT_1302`.
    pub fn close_now(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        if let Ok(mut g) = self.inner.channels.lock() {
            g.take();
        }
    }
}

fn json_of<A: Payload>(b: &[u8]) -> Result<A, Error> {
    A::from_bytes(b).map_err(|e| {
        Error::new(
            ErrorKind::ExecutionFailed,
            format!("the plugin answered bytes that are not JSON: {e}"),
        )
    })
}

fn status_err(s: Status) -> Error {
    if let Some(k) = s
        .metadata()
        .get(ERROR_CODE_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(ErrorKind::from_code)
    {
        return Error::new(k, s.message().to_string());
    }
    let kind = match s.code() {
        Code::DeadlineExceeded => ErrorKind::Timeout,
        Code::Unauthenticated | Code::PermissionDenied => ErrorKind::AuthFailed,
        Code::NotFound | Code::Unimplemented => ErrorKind::PluginNotFound,
        Code::ResourceExhausted => ErrorKind::RateLimited,
        Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled | Code::Aborted => {
            ErrorKind::GrpcTransport
        }
        _ => ErrorKind::ExecutionFailed,
    };
    // The status as gRPC documents it (number and description), not as
    // tonic's Rust enum spells its variant.
    Error::new(
        kind,
        format!(
            "gRPC status {} ({}): {}",
            s.code() as i32,
            s.code().description(),
            s.message()
        ),
    )
}

impl Transport for GrpcClient {
    fn kind(&self) -> &'static str {
        self.inner.kind.as_str()
    }

    fn call(
        &self,
        kind: CallKind,
        data: Value,
        ctx: CallContext,
    ) -> BoxFuture<'_, Result<Value, Error>> {
        Box::pin(GrpcClient::call(self, kind, data, ctx))
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
        Box::pin(GrpcClient::call(self, kind, data, ctx))
    }

    fn call_raw<'a>(
        &'a self,
        kind: CallKind,
        data: &'a RawValue,
        ctx: CallContext,
    ) -> BoxFuture<'a, Result<Box<RawValue>, Error>> {
        Box::pin(GrpcClient::call_raw(self, kind, data, ctx))
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

/// How to serve a [`Handler`] over gRPC.
#[derive(Debug, Clone)]
pub struct GrpcServeOptions {
    /// Where to listen (port 0: any; see [`Server::local_addr`]).
    pub addr: SocketAddr,
    /// Credentials every PluginService call must carry.
    pub auth: ServerAuth,
    /// Serve TLS; with `client_ca_file`, require client certificates (mTLS).
    pub tls: Option<ServerTls>,
    /// How often the standard health service re-asks the handler.
    pub health_interval: Duration,
}

impl GrpcServeOptions {
    /// Plain gRPC on `addr`, no auth, health refreshed every 5 s.
    pub fn new(addr: SocketAddr) -> GrpcServeOptions {
        GrpcServeOptions {
            addr,
            auth: ServerAuth::none(),
            tls: None,
            health_interval: Duration::from_secs(5),
        }
    }
}

struct Svc<H> {
    handler: Arc<H>,
    auth: Arc<ServerAuth>,
}

fn refusal(e: Error) -> Status {
    let mut s = if e.kind.is_auth() {
        Status::unauthenticated(e.message)
    } else {
        Status::internal(e.message)
    };
    if let Ok(v) = AsciiMetadataValue::try_from(e.kind.code()) {
        s.metadata_mut().insert(ERROR_CODE_KEY, v);
    }
    s
}

impl<H> Svc<H> {
    fn check<T>(&self, r: &tonic::Request<T>) -> Result<(), Status> {
        self.auth
            .check_with(|name| r.metadata().get(name).and_then(|v| v.to_str().ok()))
            .map_err(refusal)
    }
}

/// A call's metadata as the handler's headers: what the caller sent, less
/// what HTTP/2 and gRPC themselves carry (as the HTTP transport leaves out
/// its own), which is no handler's business and was copied, two strings an
/// entry, on every call.
fn meta_headers<T>(r: &tonic::Request<T>) -> std::collections::HashMap<String, String> {
    r.metadata()
        .iter()
        .filter_map(|kv| match kv {
            tonic::metadata::KeyAndValueRef::Ascii(k, v) if !is_transport_header(k.as_str()) => v
                .to_str()
                .ok()
                .map(|v| (k.as_str().to_string(), v.to_string())),
            _ => None,
        })
        .collect()
}

/// Headers of the protocol, not of the call (names arrive lower-case).
fn is_transport_header(name: &str) -> bool {
    matches!(name, "te" | "content-type" | "user-agent") || name.starts_with("grpc-")
}

impl<H: Handler> Svc<H> {
    /// Answer an execute call, its payload in the form the handler takes.
    async fn execute_as<D: Served>(
        &self,
        m: pb::ExecuteRequest,
        headers: std::collections::HashMap<String, String>,
    ) -> Result<tonic::Response<pb::ExecuteResponse>, Status> {
        let data = match json_of::<D>(&m.data) {
            Ok(v) => v,
            Err(e) => {
                return Ok(tonic::Response::new(pb::ExecuteResponse {
                    request_id: m.request_id,
                    error: e.message,
                    error_code: e.kind.code().into(),
                    ..Default::default()
                }))
            }
        };
        let call = Call {
            kind: CallKind::Execute,
            request_id: m.request_id.clone(),
            headers,
            deadline: Call::deadline_in(m.timeout_ms),
            data,
        };
        let resp = match D::answer(&*self.handler, call).await {
            Ok(v) => pb::ExecuteResponse {
                request_id: m.request_id,
                data: Bytes::from(
                    serde_json::to_vec(&v).map_err(|e| Status::internal(e.to_string()))?,
                ),
                ..Default::default()
            },
            Err(e) => pb::ExecuteResponse {
                request_id: m.request_id,
                error: e.message,
                error_code: e.kind.code().into(),
                ..Default::default()
            },
        };
        Ok(tonic::Response::new(resp))
    }
}

#[tonic::async_trait]
impl<H: Handler> PluginService for Svc<H> {
    async fn execute(
        &self,
        req: tonic::Request<pb::ExecuteRequest>,
    ) -> Result<tonic::Response<pb::ExecuteResponse>, Status> {
        self.check(&req)?;
        let mut headers = meta_headers(&req);
        let mut m = req.into_inner();
        headers.extend(std::mem::take(&mut m.headers));
        if H::RAW {
            self.execute_as::<Box<RawValue>>(m, headers).await
        } else {
            self.execute_as::<Value>(m, headers).await
        }
    }

    async fn health(
        &self,
        req: tonic::Request<pb::HealthRequest>,
    ) -> Result<tonic::Response<pb::HealthResponse>, Status> {
        self.check(&req)?;
        let healthy = self.handler.health().await;
        Ok(tonic::Response::new(pb::HealthResponse {
            healthy,
            message: if healthy {
                String::new()
            } else {
                "the plugin reports itself unhealthy".into()
            },
        }))
    }

    async fn info(
        &self,
        req: tonic::Request<pb::InfoRequest>,
    ) -> Result<tonic::Response<pb::InfoResponse>, Status> {
        self.check(&req)?;
        let info = serde_json::to_vec(&self.handler.info())
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(tonic::Response::new(pb::InfoResponse {
            info: Bytes::from(info),
        }))
    }
}

/// Serve `handler` over gRPC (or gRPC-TLS), with the standard health service,
/// until the returned [`Server`] is shut down or dropped.
pub async fn serve<H: Handler>(handler: Arc<H>, opts: GrpcServeOptions) -> Result<Server, Error> {
    if opts.auth.requires_client_cert()
        && opts.tls.as_ref().is_none_or(|t| t.client_ca_file.is_none())
    {
        return Err(Error::new(
            ErrorKind::MissingMtlsCerts,
            "mtls auth without TLS and a client CA",
        )
        .with_hint("set tls with client_ca_file"));
    }
    let mut builder = tonic::transport::Server::builder();
    if let Some(t) = &opts.tls {
        let (cert, key, ca) = t.pem()?;
        let mut cfg =
            tonic::transport::ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if let Some(ca) = ca {
            cfg = cfg.client_ca_root(Certificate::from_pem(ca));
        }
        builder = builder
            .tls_config(cfg)
            .map_err(|e| Error::new(ErrorKind::MissingMtlsCerts, format!("TLS setup: {e}")))?;
    }
    let incoming = tonic::transport::server::TcpIncoming::bind(opts.addr)
        .map_err(|e| {
            Error::new(
                ErrorKind::ConnectionFailed,
                format!("cannot listen on {}: {e}", opts.addr),
            )
        })?
        .with_nodelay(Some(true));
    let addr = incoming.local_addr().ok();
    let (reporter, health_svc) = tonic_health::server::health_reporter();
    let svc = PluginServiceServer::new(Svc {
        handler: Arc::clone(&handler),
        auth: Arc::new(opts.auth),
    });
    let (stop_tx, stop) = watch::channel(false);
    let router = builder.add_service(health_svc).add_service(svc);
    let interval = opts.health_interval.max(Duration::from_millis(100));
    let task = tokio::spawn(async move {
        let health = async {
            loop {
                let status = if handler.health().await {
                    tonic_health::ServingStatus::Serving
                } else {
                    tonic_health::ServingStatus::NotServing
                };
                reporter
                    .set_service_status("hangar.plugin.v1.PluginService", status)
                    .await;
                tokio::time::sleep(interval).await;
            }
        };
        tokio::select! {
            r = router.serve_with_incoming_shutdown(incoming, stopped(stop)) => {
                if let Err(e) = r {
                    tracing::warn!("gRPC plugin server stopped: {e}");
                }
            }
            _ = health => {}
        }
    });
    Ok(Server::new(stop_tx, task, addr))
}
