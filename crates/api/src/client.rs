//! A client for the hangar.v1 API, over the Unix socket or TCP (bearer token).
//! Errors come back as [`hangar_core::Error`] with the daemon's code, context
//! and hint; a daemon that is not there is `DAEMON_NOT_RUNNING` with the socket
//! path and how to start one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hangar_core::Error;
use hyper_util::rt::TokioIo;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::pb::catalog_client::CatalogClient;
use crate::pb::daemon_client::DaemonClient;
use crate::pb::events_client::EventsClient;
use crate::pb::fleet_client::FleetClient;
use crate::pb::instances_client::InstancesClient;
use crate::pb::processes_client::ProcessesClient;

/// Adds the bearer token, when there is one, to every call.
#[derive(Clone)]
pub struct Token(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Token {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(t) = &self.0 {
            req.metadata_mut().insert("authorization", t.clone());
        }
        Ok(req)
    }
}

type Svc = InterceptedService<Channel, Token>;

/// HTTP/2 flow-control windows large enough that a listing of a thousand
/// processes (~80 KB) arrives without waiting for a WINDOW_UPDATE round trip.
fn windows(ep: Endpoint) -> Endpoint {
    ep.initial_stream_window_size(Some(1 << 20))
        .initial_connection_window_size(Some(2 << 20))
}

/// PEM files for a TLS connection.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// CA the server's certificate must chain to.
    pub ca: PathBuf,
    /// Client certificate (mTLS).
    pub cert: Option<PathBuf>,
    /// Client key (mTLS).
    pub key: Option<PathBuf>,
}

/// Connected clients of the services, sharing one connection.
#[derive(Clone)]
pub struct Client {
    /// Processes service.
    pub processes: ProcessesClient<Svc>,
    /// Events service.
    pub events: EventsClient<Svc>,
    /// Daemon service.
    pub daemon: DaemonClient<Svc>,
    /// Feature instances.
    pub instances: InstancesClient<Svc>,
    /// The daemon's catalog and installs.
    pub catalog: CatalogClient<Svc>,
    /// The fleet the daemon's node is in.
    pub fleet: FleetClient<Svc>,
}

fn make(ch: Channel, token: Token) -> Client {
    Client {
        processes: ProcessesClient::with_interceptor(ch.clone(), token.clone()),
        events: EventsClient::with_interceptor(ch.clone(), token.clone()),
        daemon: DaemonClient::with_interceptor(ch.clone(), token.clone()),
        instances: InstancesClient::with_interceptor(ch.clone(), token.clone()),
        catalog: CatalogClient::with_interceptor(ch.clone(), token.clone()),
        fleet: FleetClient::with_interceptor(ch, token),
    }
}

/// The kind of the I/O error somewhere in `e`'s chain of causes.
fn io_kind(e: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cur = err.source();
    }
    None
}

/// The socket refused us: say so, and who may connect (its owner, or the
/// owner of the first directory on the way that we cannot enter).
fn permission_denied(socket: &Path) -> Error {
    use std::os::unix::fs::MetadataExt;
    let owner = socket.ancestors().find_map(|p| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (p.to_path_buf(), m.uid()))
    });
    let mut e = Error::new(
        crate::ErrorKind::SocketPermissionDenied,
        format!(
            "permission denied on the control socket {}",
            socket.display()
        ),
    )
    .with("socket", socket.display())
    .with("uid", rustix::process::geteuid().as_raw());
    if let Some((path, uid)) = owner {
        e = e.with("owner_uid", uid).with("owned_path", path.display());
    }
    e.hint("only the daemon's user (and root) may use its socket: run hangar as that user (e.g. with sudo), or reach it over TCP with --addr and a token")
}

impl Client {
    /// Connect to the daemon's Unix socket.
    pub async fn unix(socket: &Path) -> Result<Client, Error> {
        let path: PathBuf = socket.to_path_buf();
        let not_running = |e: &dyn std::fmt::Display| {
            Error::new(
                crate::ErrorKind::DaemonNotRunning,
                format!("no daemon answers at {}: {e}", path.display()),
            )
            .with("socket", path.display())
            .hint("start it with `hangar serve` (same --data-dir / HANGAR_DATA_DIR)")
        };
        // The URI is required by the API but unused: the connector dials the socket.
        let ep = windows(Endpoint::from_static("http://hangar.sock"))
            .connect_timeout(Duration::from_secs(2));
        let p = path.clone();
        let ch = ep
            .connect_with_connector(tower::service_fn(move |_| {
                let p = p.clone();
                async move { tokio::net::UnixStream::connect(p).await.map(TokioIo::new) }
            }))
            .await
            .map_err(|e| {
                if io_kind(&e) == Some(std::io::ErrorKind::PermissionDenied) {
                    return permission_denied(&path);
                }
                let src = std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| e.to_string());
                not_running(&src)
            })?;
        Ok(make(ch, Token(None)))
    }

    /// Connect over TCP, e.g. `http://127.0.0.1:9471`, with an optional bearer
    /// token; with `tls`, over TLS (`https://…`), presenting a client
    /// certificate when one is given (mTLS).
    pub async fn tcp(
        url: &str,
        token: Option<&str>,
        tls: Option<&TlsFiles>,
    ) -> Result<Client, Error> {
        let mut ep = Endpoint::from_shared(url.to_string())
            .map(windows)
            .map_err(|e| {
                Error::new(
                    hangar_base::ErrorKind::Usage,
                    format!("invalid API address {url:?}: {e}"),
                )
                .hint("write it as http://HOST:PORT, or https://HOST:PORT with TLS")
            })?
            .connect_timeout(Duration::from_secs(2));
        if let Some(t) = tls {
            let read = |p: &PathBuf| {
                std::fs::read(p).map_err(|e| {
                    Error::new(
                        hangar_base::ErrorKind::Usage,
                        format!("cannot read TLS file: {e}"),
                    )
                    .with("path", p.display())
                    .hint("check the --tls-ca / --tls-cert / --tls-key paths")
                })
            };
            let mut cfg = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(read(&t.ca)?));
            if let (Some(c), Some(k)) = (&t.cert, &t.key) {
                cfg = cfg.identity(tonic::transport::Identity::from_pem(read(c)?, read(k)?));
            }
            ep = ep.tls_config(cfg).map_err(|e| {
                Error::new(
                    hangar_base::ErrorKind::Usage,
                    format!("TLS configuration: {e}"),
                )
                .hint("give a PEM CA, and a PEM certificate and key for mTLS")
            })?;
        }
        let ch = ep.connect().await.map_err(|e| {
            Error::new(
                crate::ErrorKind::DaemonNotRunning,
                format!("no daemon answers at {url}: {e}"),
            )
            .with("address", url)
            .hint("check the address and that the daemon listens on TCP (daemon.grpc.tcp)")
        })?;
        let token = match token {
            Some(t) => Some(MetadataValue::try_from(format!("Bearer {t}")).map_err(|_| {
                Error::new(
                    hangar_base::ErrorKind::Usage,
                    "the token holds characters a header cannot carry",
                )
                .hint("use a token of printable ASCII")
            })?),
            None => None,
        };
        Ok(make(ch, Token(token)))
    }
}
