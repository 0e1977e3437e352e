//! The manager's transport factories: a plugin's configuration (defaults
//! already merged) into a live [`Transport`] for each transport name. A
//! [`crate::Manager`] starts with [`builtin`] for every [`TransportKind`];
//! a host registers its own with [`crate::Manager::register_factory`].

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::PluginConfig;
use crate::error::Error;
use crate::transport::{BoxFuture, Transport, TransportKind};

/// Makes a transport from a plugin's (defaults-merged) configuration.
pub type TransportFactory = Arc<
    dyn Fn(&PluginConfig) -> BoxFuture<'static, Result<Arc<dyn Transport>, Error>> + Send + Sync,
>;

/// The factory of one of the library's transports.
pub fn builtin(kind: TransportKind) -> TransportFactory {
    match kind {
        TransportKind::Unix => unix(),
        TransportKind::Http | TransportKind::Https => http(),
        TransportKind::Grpc => grpc(false),
        TransportKind::GrpcTls => grpc(true),
        TransportKind::Exec => exec(),
    }
}

fn to_usize(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// `unix`: a lazily connecting pool of Unix-socket connections.
pub fn unix() -> TransportFactory {
    Arc::new(|p: &PluginConfig| {
        let c = p.connection.resolve();
        let opts = crate::unix::UnixOptions {
            path: PathBuf::from(&p.endpoint),
            max_connections: to_usize(c.max_connections).clamp(1, 64),
            connect_timeout: c.connection_timeout,
            request_timeout: c.request_timeout,
            auth: p.auth.clone(),
        };
        Box::pin(
            async move { Ok(Arc::new(crate::unix::UnixClient::new(opts)?) as Arc<dyn Transport>) },
        )
    })
}

/// `http` and `https`: pooled keep-alive HTTP/1.1, TLS and mTLS from the auth block.
pub fn http() -> TransportFactory {
    Arc::new(|p: &PluginConfig| {
        let c = p.connection.resolve();
        let opts = crate::http::HttpOptions {
            endpoint: p.endpoint.clone(),
            max_connections: to_usize(c.max_connections),
            max_idle_connections: to_usize(c.max_idle_connections),
            idle_timeout: c.idle_timeout,
            connect_timeout: c.connection_timeout,
            request_timeout: c.request_timeout,
            keep_alive: c.keep_alive,
            disable_compression: c.disable_compression,
            auth: p.auth.clone(),
        };
        Box::pin(
            async move { Ok(Arc::new(crate::http::HttpClient::new(opts)?) as Arc<dyn Transport>) },
        )
    })
}

/// `grpc` (plain) or `grpc-tls`.
pub fn grpc(tls: bool) -> TransportFactory {
    Arc::new(move |p: &PluginConfig| {
        let c = p.connection.resolve();
        let opts = crate::grpc::GrpcOptions {
            endpoint: p.endpoint.clone(),
            tls,
            server_name: None,
            max_connections: to_usize(c.max_connections),
            connect_timeout: c.connection_timeout,
            request_timeout: c.request_timeout,
            keep_alive: c.keep_alive,
            auth: p.auth.clone(),
        };
        Box::pin(
            async move { Ok(Arc::new(crate::grpc::GrpcClient::new(opts)?) as Arc<dyn Transport>) },
        )
    })
}

/// `exec`: an executable started and kept alive by the library.
pub fn exec() -> TransportFactory {
    Arc::new(|p: &PluginConfig| {
        let c = p.connection.resolve();
        let mut opts = crate::exec::ExecOptions::new(PathBuf::from(&p.executable));
        opts.args = p.args.clone();
        opts.env = p.env.clone();
        opts.work_dir = (!p.work_dir.is_empty()).then(|| PathBuf::from(&p.work_dir));
        opts.request_timeout = c.request_timeout;
        opts.auth = p.auth.clone();
        Box::pin(async move {
            Ok(Arc::new(crate::exec::ExecClient::start(opts).await?) as Arc<dyn Transport>)
        })
    })
}
