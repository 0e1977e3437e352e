//! The hangar.v1 gRPC services over a [`Daemon`], and the listeners that serve
//! them: the Unix socket (always; mode 0600 in a 0700 data dir) and, when
//! configured, TCP with a bearer token or mTLS. Server reflection is on, so
//! `grpcurl -unix $DATA/hangar.sock list` works.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hangar_core::{Daemon, Error};
use hangar_store::EventQuery;
use subtle::ConstantTimeEq;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::service::Interceptor;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

use crate::authority::UnixAuthority;
use crate::convert::{self, status};
use crate::page;
use crate::pb;
use crate::pb::catalog_server::{Catalog, CatalogServer};
use crate::pb::daemon_server::{Daemon as DaemonApi, DaemonServer};
use crate::pb::events_server::{Events, EventsServer};
use crate::pb::fleet_server::FleetServer;
use crate::pb::instances_server::{Instances, InstancesServer};
use crate::pb::processes_server::{Processes, ProcessesServer};

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The Processes service.
#[derive(Clone)]
pub struct ProcessesSvc {
    d: Daemon,
    /// True once the listeners stop: followed streams end at once.
    stop: watch::Receiver<bool>,
}

/// The Events service.
#[derive(Clone)]
pub struct EventsSvc {
    d: Daemon,
    /// True once the listeners stop: followed streams end at once.
    stop: watch::Receiver<bool>,
}

/// The Daemon service.
#[derive(Clone)]
pub struct DaemonSvc {
    d: Daemon,
}

/// The Instances service.
#[derive(Clone)]
pub struct InstancesSvc {
    d: Daemon,
}

/// The Catalog service: the daemon's catalog and installer.
#[derive(Clone)]
pub struct CatalogSvc {
    d: Daemon,
}

#[tonic::async_trait]
impl Catalog for CatalogSvc {
    async fn list(
        &self,
        req: Request<pb::ListFeaturesRequest>,
    ) -> Result<Response<pb::FeatureList>, Status> {
        let found = self
            .d
            .features(&req.into_inner().query)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::FeatureList {
            features: found
                .iter()
                .map(|e| convert::feature(e, None, &[]))
                .collect(),
        }))
    }

    async fn get(&self, req: Request<pb::FeatureRef>) -> Result<Response<pb::Feature>, Status> {
        let f = self.d.feature(&req.into_inner().id).await.map_err(status)?;
        Ok(Response::new(convert::feature(
            &f.entry,
            Some(&f.resolved),
            &f.installed,
        )))
    }

    type InstallStream = Stream_<pb::InstallProgress>;

    async fn install(
        &self,
        req: Request<pb::InstallRequest>,
    ) -> Result<Response<Self::InstallStream>, Status> {
        let r = req.into_inner();
        let (tx, rx) = mpsc::channel::<Result<pb::InstallProgress, Status>>(64);
        let d = self.d.clone();
        tokio::spawn(async move {
            let progress = tx.clone();
            let last = std::sync::Mutex::new(None::<std::time::Instant>);
            let on_step = move |s: &hangar_fetch::Step| {
                match s {
                    // The last message carries the install instead.
                    hangar_fetch::Step::Installed => return,
                    // At most one every 100 ms, and the last.
                    hangar_fetch::Step::Download(p) => {
                        let mut l = last.lock().unwrap_or_else(|e| e.into_inner());
                        if !p.done && l.is_some_and(|t| t.elapsed() < Duration::from_millis(100)) {
                            return;
                        }
                        *l = Some(std::time::Instant::now());
                    }
                    _ => {}
                }
                // A slow client loses progress lines, never the install.
                let _ = progress.try_send(Ok(convert::install_step(s)));
            };
            let version = some(r.version);
            let done = d
                .install_feature(&r.id, version.as_deref(), r.allow_unverified, on_step)
                .await;
            let last = match done {
                Ok(i) => Ok(pb::InstallProgress {
                    step: "installed".into(),
                    installed: Some(convert::installed(&i)),
                    ..Default::default()
                }),
                Err(e) => Err(status(e)),
            };
            let _ = tx.send(last).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn uninstall(
        &self,
        req: Request<pb::UninstallRequest>,
    ) -> Result<Response<pb::UninstallReply>, Status> {
        let r = req.into_inner();
        let version = some(r.version);
        let removed = self
            .d
            .uninstall_feature(&r.id, version.as_deref())
            .await
            .map_err(status)?;
        Ok(Response::new(pb::UninstallReply { removed }))
    }

    async fn list_installed(
        &self,
        _req: Request<pb::ListInstalledRequest>,
    ) -> Result<Response<pb::InstalledList>, Status> {
        let all = self.d.installed_features().await.map_err(status)?;
        Ok(Response::new(pb::InstalledList {
            installed: all.iter().map(convert::installed).collect(),
        }))
    }
}

/// The options of a create or update: the `options` Struct, or the older
/// `options_json` text; not both.
fn options(
    structured: Option<&prost_types::Struct>,
    json: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, Status> {
    let bad = |what: String| {
        status(
            Error::new(hangar_feature::ErrorKind::ConfigBadOptions, what)
                .with("field", "options_json")
                .hint("pass options as key=value pairs, or as the options Struct"),
        )
    };
    if json.trim().is_empty() {
        return Ok(structured.map(convert::object).unwrap_or_default());
    }
    if structured.is_some_and(|s| !s.fields.is_empty()) {
        return Err(bad("both options and options_json are set".into()));
    }
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad("options must be a JSON object".into())),
        Err(e) => Err(bad(format!("options are not JSON: {e}"))),
    }
}

fn some(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

#[tonic::async_trait]
impl Instances for InstancesSvc {
    #[allow(deprecated)] // `options_json` is still accepted from older clients.
    async fn create(
        &self,
        req: Request<pb::CreateInstanceRequest>,
    ) -> Result<Response<pb::CreateInstanceReply>, Status> {
        let r = req.into_inner();
        let c = self
            .d
            .create_instance(hangar_core::CreateRequest {
                options: options(r.options.as_ref(), &r.options_json)?,
                feature: r.feature,
                name: some(r.name),
                mode: some(r.mode),
                tenant: some(r.tenant),
                session: some(r.session),
                fleet: false,
            })
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CreateInstanceReply {
            instance: Some(convert::instance(&c.instance)),
            reused: c.reused,
        }))
    }

    async fn get(&self, req: Request<pb::InstanceRef>) -> Result<Response<pb::Instance>, Status> {
        let i = self
            .d
            .instance(&req.into_inner().id_or_name)
            .map_err(status)?;
        Ok(Response::new(convert::instance(&i)))
    }

    async fn list(
        &self,
        req: Request<pb::ListInstancesRequest>,
    ) -> Result<Response<pb::InstanceList>, Status> {
        let r = req.into_inner();
        // Already by name (names are unique).
        let all = self.d.instance_list();
        let (page, next_page_token) = page::cut(all, |i| &i.name, r.page_size, &r.page_token)?;
        Ok(Response::new(pb::InstanceList {
            instances: page.iter().map(convert::instance).collect(),
            next_page_token,
        }))
    }

    async fn start(&self, req: Request<pb::InstanceRef>) -> Result<Response<pb::Instance>, Status> {
        let i = self
            .d
            .start_instance(&req.into_inner().id_or_name)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::instance(&i)))
    }

    async fn stop(&self, req: Request<pb::InstanceRef>) -> Result<Response<pb::Instance>, Status> {
        let i = self
            .d
            .stop_instance(&req.into_inner().id_or_name)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::instance(&i)))
    }

    async fn restart(
        &self,
        req: Request<pb::InstanceRef>,
    ) -> Result<Response<pb::Instance>, Status> {
        let i = self
            .d
            .restart_instance(&req.into_inner().id_or_name)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::instance(&i)))
    }

    async fn delete(
        &self,
        req: Request<pb::InstanceRef>,
    ) -> Result<Response<pb::DeleteInstanceReply>, Status> {
        self.d
            .delete_instance(&req.into_inner().id_or_name)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteInstanceReply {}))
    }

    #[allow(deprecated)] // `options_json` is still accepted from older clients.
    async fn update(
        &self,
        req: Request<pb::UpdateInstanceRequest>,
    ) -> Result<Response<pb::Instance>, Status> {
        let r = req.into_inner();
        let i = self
            .d
            .update_instance(
                &r.id_or_name,
                some(r.mode),
                options(r.options.as_ref(), &r.options_json)?,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(convert::instance(&i)))
    }

    async fn export(
        &self,
        req: Request<pb::ExportInstanceRequest>,
    ) -> Result<Response<pb::ExportInstanceReply>, Status> {
        let r = req.into_inner();
        let e = self
            .d
            .export_instance(&r.id_or_name, &r.format)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::export(e)))
    }
}

fn action_reply(r: hangar_core::ActionReport) -> pb::ActionReply {
    pb::ActionReply {
        names: r.names,
        errors: convert::process_errors(r.errors),
    }
}

fn timeout(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

#[tonic::async_trait]
impl Processes for ProcessesSvc {
    async fn add(&self, req: Request<pb::AddRequest>) -> Result<Response<pb::ProcessList>, Status> {
        let req = req.into_inner();
        let names = self.d.add(&req.toml, !req.no_start).await.map_err(status)?;
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            if let Ok(v) = self.d.get(&n).await {
                out.push(convert::process(&v));
            }
        }
        Ok(Response::new(pb::ProcessList {
            processes: out,
            next_page_token: String::new(),
        }))
    }

    async fn remove(
        &self,
        req: Request<pb::NameRequest>,
    ) -> Result<Response<pb::ActionReply>, Status> {
        let name = req.into_inner().name;
        self.d.remove(&name).await.map_err(status)?;
        Ok(Response::new(pb::ActionReply {
            names: vec![name],
            errors: Vec::new(),
        }))
    }

    async fn start(
        &self,
        req: Request<pb::SelectRequest>,
    ) -> Result<Response<pb::ActionReply>, Status> {
        let r = self
            .d
            .start(&req.into_inner().pattern)
            .await
            .map_err(status)?;
        Ok(Response::new(action_reply(r)))
    }

    async fn stop(
        &self,
        req: Request<pb::SelectRequest>,
    ) -> Result<Response<pb::ActionReply>, Status> {
        let req = req.into_inner();
        let r = self
            .d
            .stop(&req.pattern, timeout(req.timeout_ms))
            .await
            .map_err(status)?;
        Ok(Response::new(action_reply(r)))
    }

    async fn restart(
        &self,
        req: Request<pb::SelectRequest>,
    ) -> Result<Response<pb::ActionReply>, Status> {
        let r = self
            .d
            .restart(&req.into_inner().pattern)
            .await
            .map_err(status)?;
        Ok(Response::new(action_reply(r)))
    }

    async fn get(&self, req: Request<pb::NameRequest>) -> Result<Response<pb::Process>, Status> {
        let v = self.d.get(&req.into_inner().name).await.map_err(status)?;
        let ports = instance_ports(&self.d, std::slice::from_ref(&v));
        let usage = self.d.manager().usage_sample().await;
        Ok(Response::new(with_instance_ports(
            &ports,
            with_usage(&usage, convert::process(&v)),
        )))
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ProcessList>, Status> {
        let r = req.into_inner();
        let pattern = r.pattern;
        let mut views = self.d.list(&pattern).await.map_err(status)?;
        // A pattern the caller typed that matches nothing is "not found", as
        // for start, stop, logs and signal; an empty pattern lists all.
        if views.is_empty() && !pattern.is_empty() {
            return Err(status(not_found(&pattern)));
        }
        views.sort_by(|a, b| a.want.spec.name.cmp(&b.want.spec.name));
        let (views, next_page_token) =
            page::cut(views, |v| &v.want.spec.name, r.page_size, &r.page_token)?;
        let ports = instance_ports(&self.d, &views);
        let usage = self.d.manager().usage_sample().await;
        let processes = views
            .iter()
            .map(|v| with_instance_ports(&ports, with_usage(&usage, convert::process(v))))
            .collect();
        Ok(Response::new(pb::ProcessList {
            processes,
            next_page_token,
        }))
    }

    async fn signal(
        &self,
        req: Request<pb::SignalRequest>,
    ) -> Result<Response<pb::ActionReply>, Status> {
        let r = req.into_inner();
        let report = self
            .d
            .signal(&r.pattern, &r.signal, r.group)
            .await
            .map_err(status)?;
        Ok(Response::new(action_reply(report)))
    }

    type LogsStream = Stream_<pb::LogLine>;

    async fn logs(
        &self,
        req: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let req = req.into_inner();
        let patterns: Vec<String> = std::iter::once(req.name)
            .chain(req.names)
            .filter(|p| !p.is_empty())
            .collect();
        let rx = crate::watch::logs(&self.d, &patterns, req.lines, req.follow, self.stop.clone())
            .await
            .map_err(status)?;
        Ok(Response::new(Box::pin(
            ReceiverStream::new(rx).map(|r| r.map_err(status)),
        )))
    }
}

pub(crate) fn not_found(pattern: &str) -> Error {
    Error::new(
        hangar_supervisor::ErrorKind::ProcessNotFound,
        format!("no process matches {pattern:?}"),
    )
    .with("process", pattern)
    .hint("`hangar ps` lists the processes")
}

/// The ports of the instances whose processes are among `views`, by process
/// name: an instance allocates its ports itself and hands them to its process
/// in its arguments and config, so the process's own status has none.
pub(crate) fn instance_ports(
    d: &Daemon,
    views: &[hangar_core::ProcessView],
) -> std::collections::HashMap<String, std::collections::HashMap<String, u32>> {
    if !views
        .iter()
        .any(|v| v.want.source == hangar_store::Source::Instance)
    {
        return Default::default();
    }
    d.instance_list()
        .into_iter()
        .filter(|i| !i.ports.is_empty())
        .map(|i| {
            let ports = i
                .ports
                .iter()
                .map(|(k, v)| (k.clone(), u32::from(*v)))
                .collect();
            (i.process, ports)
        })
        .collect()
}

pub(crate) fn with_instance_ports(
    ports: &std::collections::HashMap<String, std::collections::HashMap<String, u32>>,
    mut p: pb::Process,
) -> pb::Process {
    if p.ports.is_empty() && p.source == "instance" {
        if let Some(m) = ports.get(&p.name) {
            p.ports.clone_from(m);
        }
    }
    p
}

/// A usage figure of the process's running child, when `usage` has one.
pub(crate) fn with_usage(
    usage: &hangar_supervisor::usage::UsageSample,
    mut p: pb::Process,
) -> pb::Process {
    if p.pid > 0 {
        if let Some(u) = crate::usage::read_one(usage, &p.name, p.pid) {
            p.cpu_seconds = u.cpu_seconds;
            p.memory_bytes = u.memory_bytes;
        }
    }
    p
}

#[tonic::async_trait]
impl Events for EventsSvc {
    type StreamStream = Stream_<pb::Event>;

    async fn stream(
        &self,
        req: Request<pb::EventFilter>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let f = req.into_inner();
        let rx = crate::watch::events(
            &self.d,
            crate::watch::EventFilter {
                name: f.name,
                kinds: f.kinds,
                after_id: f.after_id,
                since_ms: 0,
            },
            self.stop.clone(),
        )
        .map_err(status)?;
        let out = ReceiverStream::new(rx).map(|r| match r {
            Ok(ev) => Ok(convert::event(&ev)),
            // A stream that fell behind is DATA_LOSS, with the hangar code
            // and the id to resume from in its details as usual.
            Err(e) if e.is(crate::ErrorKind::EventsLost) => {
                let st = status(e);
                Err(Status::with_details(
                    tonic::Code::DataLoss,
                    st.message(),
                    st.details().to_vec().into(),
                ))
            }
            Err(e) => Err(status(e)),
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn history(
        &self,
        req: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::EventList>, Status> {
        let q = req.into_inner();
        let nz = |v: i64| (v > 0).then_some(v);
        let events = self
            .d
            .history(EventQuery {
                name_glob: (!q.name.is_empty()).then_some(q.name),
                kinds: q.kinds,
                after_id: nz(q.after_id),
                since_ms: nz(q.since_ms),
                until_ms: nz(q.until_ms),
                limit: (q.limit > 0).then_some(q.limit),
                oldest: false,
                ..EventQuery::default()
            })
            .await
            .map_err(status)?;
        Ok(Response::new(pb::EventList {
            events: events.iter().map(convert::event).collect(),
        }))
    }
}

#[tonic::async_trait]
impl DaemonApi for DaemonSvc {
    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::DaemonStatus>, Status> {
        let i = self.d.info().await;
        Ok(Response::new(pb::DaemonStatus {
            version: env!("CARGO_PKG_VERSION").into(),
            pid: i.pid,
            started_at_ms: i
                .started_at
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            data_dir: i.data_dir.display().to_string(),
            config_file: i
                .config
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            supervisor_id: i.supervisor_id,
            processes: i.by_state.into_iter().collect(),
            last_event_id: i.last_event_id,
            sinks: i
                .sinks
                .into_iter()
                .map(|s| pb::SinkStatus {
                    name: s.name,
                    kind: s.kind.to_string(),
                    delivered: s.delivered,
                    dropped: s.dropped,
                    failed_attempts: s.failed_attempts,
                    queued: s.queued as u64,
                    last_error: s.last_error.unwrap_or_default(),
                })
                .collect(),
            recovered_killed: i.recovered_killed as u32,
            http_addr: i.http_addr.map(|a| a.to_string()).unwrap_or_default(),
        }))
    }

    async fn reload(
        &self,
        _: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ReloadReply>, Status> {
        let r = self.d.reload().await.map_err(status)?;
        Ok(Response::new(pb::ReloadReply {
            added: r.added,
            removed: r.removed,
            changed: r.changed,
            unchanged: r.unchanged,
            errors: convert::process_errors(r.errors),
        }))
    }
}

/// Checks `authorization: Bearer <token>` in constant time.
#[derive(Clone)]
pub struct BearerAuth {
    token: Arc<[u8]>,
}

impl BearerAuth {
    /// An interceptor that accepts this token.
    pub fn new(token: &str) -> BearerAuth {
        BearerAuth {
            token: Arc::from(token.as_bytes()),
        }
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(t) if bool::from(t.as_bytes().ct_eq(&self.token)) => Ok(req),
            _ => Err(status(
                Error::new(
                    crate::ErrorKind::Unauthenticated,
                    "missing or wrong bearer token",
                )
                .hint("pass the daemon's token with --token or HANGAR_TOKEN"),
            )),
        }
    }
}

/// Where to listen.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The Unix socket path.
    pub socket: PathBuf,
    /// TCP listener, when wanted.
    pub tcp: Option<SocketAddr>,
    /// Bearer token for TCP.
    pub token: Option<String>,
    /// Server certificate and key (PEM) for TLS on TCP.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// CA (PEM) for client certificates (mTLS).
    pub client_ca: Option<PathBuf>,
    /// Connection caps and idle timeout of the TCP listener.
    pub limits: crate::conn::ConnLimits,
}

/// The running listeners.
pub struct Serving {
    /// Bound TCP address, when listening on TCP.
    pub tcp_addr: Option<SocketAddr>,
    socket: PathBuf,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Serving {
    /// Stop accepting, let calls in flight finish, remove the socket file.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn io_err(what: &str, path: impl std::fmt::Display, e: std::io::Error) -> Error {
    Error::new(crate::ErrorKind::ListenFailed, format!("{what}: {e}"))
        .with("address", path)
        .hint("check that the address is free and the directory writable")
}

fn bind_socket(path: &Path) -> Result<UnixListener, Error> {
    if path.exists() {
        // A socket file without a listener is left over from a crash.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(Error::new(
                hangar_core::ErrorKind::DaemonAlreadyRunning,
                "a daemon already listens on the socket",
            )
            .with("socket", path.display())
            .hint("stop it first, or use another --data-dir"));
        }
        std::fs::remove_file(path)
            .map_err(|e| io_err("cannot remove stale socket", path.display(), e))?;
    }
    let l = UnixListener::bind(path)
        .map_err(|e| io_err("cannot bind the control socket", path.display(), e))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io_err("cannot set socket permissions", path.display(), e))?;
    Ok(l)
}

/// Server reflection as both versions clients speak: `grpc.reflection.v1`
/// (grpcurl, grpc-go) and `grpc.reflection.v1alpha` (grpcio-reflection,
/// older grpcurl, Postman).
fn reflection() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    Error,
> {
    let failed = |e: tonic_reflection::server::Error| {
        Error::new(hangar_base::ErrorKind::Internal, format!("reflection: {e}"))
    };
    // Each version lists the other too, so a client of either sees both.
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
    };
    Ok((
        builder().build_v1().map_err(failed)?,
        builder().build_v1alpha().map_err(failed)?,
    ))
}

/// Large HTTP/2 windows: a big listing or log batch is not throttled by
/// WINDOW_UPDATE round trips.
fn windows(b: Server) -> Server {
    b.initial_stream_window_size(Some(1 << 20))
        .initial_connection_window_size(Some(2 << 20))
}

/// Serve the API on the socket (and TCP when asked). Returns once listening.
pub async fn serve(d: Daemon, opts: ServeOptions) -> Result<Serving, Error> {
    bind(opts).await?.serve(d, None)
}

/// The listeners, bound but not answering yet: a client that connects
/// waits in the backlog until [`Bound::serve`]. Binding first lets a daemon
/// refuse a taken address before it starts anything.
pub struct Bound {
    socket: PathBuf,
    unix: UnixListener,
    /// The TCP listener with its server (TLS already configured) and token.
    tcp: Option<(tokio::net::TcpListener, Server, Option<String>)>,
    limits: crate::conn::ConnLimits,
}

/// Bind the socket (and TCP when asked), read the TLS files and check the
/// credentials; serve nothing yet.
pub async fn bind(opts: ServeOptions) -> Result<Bound, Error> {
    let mut tcp = None;
    if let Some(addr) = opts.tcp {
        if opts.token.is_none() && opts.client_ca.is_none() {
            return Err(Error::new(
                crate::ErrorKind::Insecure,
                "refusing plain TCP without credentials",
            )
            .with("address", addr)
            .hint("set daemon.grpc.token (bearer) or tls_cert, tls_key and client_ca (mTLS)"));
        }
        let mut builder = windows(Server::builder());
        if let Some((cert, key)) = &opts.tls {
            let read = |p: &PathBuf| {
                std::fs::read(p).map_err(|e| io_err("cannot read TLS file", p.display(), e))
            };
            let mut tls = tonic::transport::ServerTlsConfig::new().identity(
                tonic::transport::Identity::from_pem(read(cert)?, read(key)?),
            );
            if let Some(ca) = &opts.client_ca {
                tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?));
            }
            builder = builder.tls_config(tls).map_err(|e| {
                Error::new(
                    crate::ErrorKind::TlsInvalid,
                    format!("TLS configuration: {e}"),
                )
            })?;
        }
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| io_err("cannot listen on TCP", addr, e))?;
        // Pings more often than the idle timeout, so a quiet stream is not
        // taken for an idle connection.
        let ping = (opts.limits.idle_timeout / 3).max(Duration::from_secs(1));
        builder = builder
            .http2_keepalive_interval(Some(ping))
            .http2_keepalive_timeout(Some(ping));
        tcp = Some((l, builder, opts.token.clone()));
    }
    // The socket last: nothing else can fail after it is made.
    let unix = bind_socket(&opts.socket)?;
    Ok(Bound {
        socket: opts.socket,
        unix,
        tcp,
        limits: opts.limits,
    })
}

impl Bound {
    /// The bound TCP address, when listening on TCP.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|(l, _, _)| l.local_addr().ok())
    }

    /// Answer on the bound listeners; `fleet` is this node's fleet, if it
    /// is in one.
    pub fn serve(self, d: Daemon, fleet: Option<hangar_fleet::Fleet>) -> Result<Serving, Error> {
        let tcp_addr = self.tcp_addr();
        let Bound {
            socket,
            unix,
            tcp,
            limits,
        } = self;
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let shutdown = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let processes = ProcessesSvc {
            d: d.clone(),
            stop: stop_rx.clone(),
        };
        let events = EventsSvc {
            d: d.clone(),
            stop: stop_rx.clone(),
        };
        let daemon = DaemonSvc { d: d.clone() };
        let instances = InstancesSvc { d: d.clone() };
        let catalog = CatalogSvc { d: d.clone() };
        let fleet = crate::fleet::FleetSvc::new(fleet);

        let (reflection_v1, reflection_v1alpha) = reflection()?;
        let router = windows(Server::builder())
            .add_service(ProcessesServer::new(processes.clone()))
            .add_service(EventsServer::new(events.clone()))
            .add_service(DaemonServer::new(daemon.clone()))
            .add_service(InstancesServer::new(instances.clone()))
            .add_service(CatalogServer::new(catalog.clone()))
            .add_service(FleetServer::new(fleet.clone()))
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
        let rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            // grpc-core and grpc-java clients send the socket path as :authority.
            let incoming = UnixListenerStream::new(unix).map(|c| c.map(UnixAuthority::new));
            if let Err(e) = router
                .serve_with_incoming_shutdown(incoming, shutdown(rx))
                .await
            {
                tracing::error!("control socket server failed: {e}");
            }
        }));

        if let Some((l, mut builder, token)) = tcp {
            let auth = token.as_deref().map(BearerAuth::new);
            let allow = |req: Request<()>| -> Result<Request<()>, Status> { Ok(req) };
            let rx = stop_rx.clone();
            // Admission caps and the idle timeout before any call is
            // authenticated; a task accepts, tonic serves what it lets in.
            let admission = crate::conn::Admission::new(limits);
            let (conn_tx, conn_rx) = mpsc::channel::<
                Result<crate::conn::Guarded<tokio::net::TcpStream>, std::io::Error>,
            >(16);
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        (io, _) = admission.accept(&l) => {
                            if conn_tx.send(Ok(io)).await.is_err() {
                                return;
                            }
                        }
                        () = conn_tx.closed() => return,
                    }
                }
            }));
            let incoming = ReceiverStream::new(conn_rx);
            // mTLS alone authenticates at the handshake; a token adds a check per call.
            // Reflection is served on the socket only, not to the network.
            let task = match auth {
                Some(a) => {
                    let router = builder
                        .add_service(ProcessesServer::with_interceptor(processes, a.clone()))
                        .add_service(EventsServer::with_interceptor(events, a.clone()))
                        .add_service(DaemonServer::with_interceptor(daemon, a.clone()))
                        .add_service(InstancesServer::with_interceptor(instances, a.clone()))
                        .add_service(CatalogServer::with_interceptor(catalog, a.clone()))
                        .add_service(FleetServer::with_interceptor(fleet, a));
                    tokio::spawn(async move {
                        if let Err(e) = router
                            .serve_with_incoming_shutdown(incoming, shutdown(rx))
                            .await
                        {
                            tracing::error!("TCP API server failed: {e}");
                        }
                    })
                }
                None => {
                    let router = builder
                        .add_service(ProcessesServer::with_interceptor(processes, allow))
                        .add_service(EventsServer::with_interceptor(events, allow))
                        .add_service(DaemonServer::with_interceptor(daemon, allow))
                        .add_service(InstancesServer::with_interceptor(instances, allow))
                        .add_service(CatalogServer::with_interceptor(catalog, allow))
                        .add_service(FleetServer::with_interceptor(fleet, allow));
                    tokio::spawn(async move {
                        if let Err(e) = router
                            .serve_with_incoming_shutdown(incoming, shutdown(rx))
                            .await
                        {
                            tracing::error!("TCP API server failed: {e}");
                        }
                    })
                }
            };
            tasks.push(task);
        }
        Ok(Serving {
            tcp_addr,
            socket,
            stop,
            tasks,
        })
    }
}
