//! `hangar serve`: the daemon in the foreground, as systemd and a terminal expect.
//!
//! Boot (lock the data dir, recover, apply the configuration), listen on the
//! control socket (and TCP and HTTP when configured), tell systemd READY=1, pet
//! its watchdog when it asks for one, reload on SIGHUP, stop gracefully on
//! SIGTERM/SIGINT (a second signal kills every process group at once).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use hangar_api::metrics::{self, Metrics};
use hangar_api::server::{self, ServeOptions};
use hangar_core::{socket_path, BootOptions, Daemon, Error};
use sd_notify::NotifyState;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use crate::{exit, render};

/// Options of `hangar serve`.
pub struct ServeArgs {
    pub data_dir: PathBuf,
    pub config: Option<PathBuf>,
    /// `Some("")` turns HTTP off; `None` takes the config's (default 127.0.0.1:9470).
    pub http: Option<String>,
    /// Catalog directories for instances (`--catalog`, `$HANGAR_CATALOG`).
    pub catalogs: Vec<PathBuf>,
}

pub fn serve(args: ServeArgs) -> u8 {
    let rt = match crate::runtime(true) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        match run(args).await {
            Ok(code) => code,
            Err(e) => {
                errln!("{}", render::core_error(&e));
                exit::code_for(&e)
            }
        }
    })
}

async fn run(args: ServeArgs) -> Result<u8, Error> {
    let mut sigs = Signals::new()?;
    // Everything that can refuse the configuration is checked before boot
    // starts a single process.
    let pre = match &args.config {
        Some(p) => hangar_core::config::DaemonConfig::load(p, None)?.settings,
        None => hangar_core::config::Settings::default(),
    };
    let token = pre.grpc_token()?;
    let http_addr = args.http.clone().unwrap_or(pre.http.clone());
    let http_addr: Option<SocketAddr> = if http_addr.is_empty() {
        None
    } else {
        Some(http_addr.parse().map_err(|_| {
            Error::new(
                hangar_core::ErrorKind::ConfigInvalid,
                format!("--http {http_addr:?} is not an address"),
            )
            .hint("write it as 127.0.0.1:9470, or '' to turn HTTP off")
        })?)
    };
    let booting = Daemon::open(BootOptions {
        data_dir: args.data_dir.clone(),
        config: args.config.clone(),
        catalogs: args.catalogs.clone(),
    })
    .await?;
    // Every listener is bound before the first process starts: a taken
    // address refuses the start with nothing started (and nothing to stop).
    let settings = booting.daemon().settings().clone();
    let limits = hangar_api::conn::ConnLimits {
        max_per_client: settings.connections.max_per_client,
        max_total: settings.connections.max_total,
        idle_timeout: settings.connections.idle_timeout,
    };
    let socket = socket_path(&args.data_dir);
    let http_listener = match http_addr {
        None => None,
        Some(addr) => match metrics::bind_http(addr).await {
            Ok(l) => Some(l),
            Err(e) => {
                booting.daemon().shutdown().await;
                return Err(e);
            }
        },
    };
    let bound = server::bind(ServeOptions {
        socket: socket.clone(),
        tcp: settings.grpc.tcp,
        token,
        tls: settings
            .grpc
            .tls_cert
            .clone()
            .zip(settings.grpc.tls_key.clone()),
        client_ca: settings.grpc.client_ca.clone(),
        limits,
    })
    .await;
    let bound = match bound {
        Ok(b) => b,
        Err(e) => {
            booting.daemon().shutdown().await;
            return Err(e);
        }
    };
    // Process events go to hangar's own log, from a thread of its own (as in
    // `hangar run`): a blocked stderr never holds up supervision.
    let events = booting.daemon().manager().subscribe();
    let _ = std::thread::Builder::new()
        .name("hangar-events".into())
        .spawn(move || crate::run::log_events(events));
    let daemon = booting.start().await;
    // The fleet starts with the daemon: it does not wait for etcd (a node
    // that cannot reach it for lease_ttl fences its fleet instances).
    let fleet = match settings.fleet.clone() {
        None => None,
        Some(cfg) => match hangar_fleet::Fleet::start(daemon.clone(), cfg).await {
            Ok(f) => Some(f),
            Err(e) => {
                daemon.shutdown().await;
                return Err(e);
            }
        },
    };
    let listening = match bound.serve(daemon.clone(), fleet.clone()) {
        Ok(l) => l,
        Err(e) => {
            if let Some(f) = &fleet {
                f.stop().await;
            }
            daemon.shutdown().await;
            if let Some(f) = &fleet {
                f.leave().await;
            }
            return Err(e);
        }
    };
    let metrics = Arc::new(Metrics::new());
    let feeder = metrics::feed(&daemon, Arc::clone(&metrics));
    let http = http_listener
        .map(|l| metrics::serve_http_on(daemon.clone(), Arc::clone(&metrics), l, limits));
    daemon.set_http_addr(http.as_ref().map(|h| h.addr));
    info!(
        socket = %socket.display(),
        tcp = listening.tcp_addr.map(tracing::field::display),
        http = http.as_ref().map(|h| tracing::field::display(h.addr)),
        "hangar daemon ready"
    );
    let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status("supervising")]);
    let watchdog = sd_notify::watchdog_enabled();

    let mut pet = tokio::time::interval(
        watchdog
            .map(|w| w / 2)
            .unwrap_or(std::time::Duration::from_secs(3600)),
    );
    loop {
        tokio::select! {
            _ = sigs.hup.recv() => {
                info!(signal = "SIGHUP", "reloading the configuration");
                if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
                    let _ = sd_notify::notify(&[NotifyState::Reloading, now]);
                }
                // In a task of its own: the loop keeps petting the watchdog and
                // hearing signals while the reload waits for starts.
                let d = daemon.clone();
                tokio::spawn(async move {
                    match d.reload().await {
                        Ok(r) => info!(
                            added = r.added.len(), removed = r.removed.len(),
                            changed = r.changed.len(), unchanged = r.unchanged.len(),
                            errors = r.errors.len(), "reloaded"
                        ),
                        Err(e) => warn!(code = e.code(), "reload refused: {}", render::core_error(&e)),
                    }
                    let _ = sd_notify::notify(&[NotifyState::Ready]);
                });
            }
            _ = pet.tick(), if watchdog.is_some() => {
                let _ = sd_notify::notify(&[NotifyState::Watchdog]);
            }
            _ = sigs.term.recv() => { info!(signal = "SIGTERM", "shutting down"); break; }
            _ = sigs.int.recv() => { info!(signal = "SIGINT", "shutting down"); break; }
        }
    }
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
    let t0 = std::time::Instant::now();
    let graceful = async {
        listening.stop().await;
        // The fleet stops acting first (nothing is created or started while
        // the daemon stops), the instances stop, and only then does the node
        // leave (its lease revoked): no other node starts an instance of it
        // while this one still runs it.
        if let Some(f) = &fleet {
            f.stop().await;
        }
        daemon.shutdown().await;
        if let Some(f) = &fleet {
            f.leave().await;
        }
        if let Some(h) = http {
            h.stop().await;
        }
        feeder.abort();
    };
    tokio::select! {
        () = graceful => {
            info!(took_ms = t0.elapsed().as_millis() as u64, "daemon stopped");
            Ok(exit::OK)
        }
        _ = sigs.term.recv() => Ok(forced(&daemon)),
        _ = sigs.int.recv() => Ok(forced(&daemon)),
    }
}

fn forced(d: &Daemon) -> u8 {
    warn!("second signal: killing every process group and exiting");
    d.kill_all();
    exit::FORCED
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals, Error> {
        let mk = |k| {
            signal(k).map_err(|e| {
                Error::new(
                    hangar_supervisor::ErrorKind::Io,
                    format!("cannot install signal handlers: {e}"),
                )
            })
        };
        Ok(Signals {
            term: mk(SignalKind::terminate())?,
            int: mk(SignalKind::interrupt())?,
            hup: mk(SignalKind::hangup())?,
        })
    }
}
