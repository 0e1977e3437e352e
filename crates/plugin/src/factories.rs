//! The manager's transport factories: a plugin's configuration (defaults
//! already merged) into a live [`Transport`] for each transport name.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::PluginConfig;
use crate::error::{Error, ErrorKind};
use crate::manager::TransportFactory;
use crate::transport::Transport;

/// The configuration's auth block in the wire crate's type (same field names).
fn wire_auth(p: &PluginConfig) -> Result<crate::auth::AuthConfig, Error> {
    serde_json::to_value(&p.auth)
        .and_then(serde_json::from_value)
        .map_err(|e| {
            Error::new(
                ErrorKind::UnsupportedAuthMethod,
                format!("auth settings of {:?}: {e}", p.name),
            )
        })
}

fn to_usize(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// `unix`: a lazily connecting pool of Unix-socket connections.
pub fn unix() -> TransportFactory {
    Arc::new(|p: &PluginConfig| {
        let c = p.connection.resolve();
        let opts = wire_auth(p).map(|auth| crate::unix::UnixOptions {
            path: PathBuf::from(&p.endpoint),
            max_connections: to_usize(c.max_connections).clamp(1, 64),
            connect_timeout: c.connection_timeout,
            request_timeout: c.request_timeout,
            auth,
        });
        Box::pin(
            async move { Ok(Arc::new(crate::unix::UnixClient::new(opts?)?) as Arc<dyn Transport>) },
        )
    })
}

/// `http` and `https`: pooled keep-alive HTTP/1.1, TLS and mTLS from the auth block.
pub fn http() -> TransportFactory {
    Arc::new(|p: &PluginConfig| {
        let c = p.connection.resolve();
        let opts = wire_auth(p).map(|auth| crate::http::HttpOptions {
            endpoint: p.endpoint.clone(),
            max_connections: to_usize(c.max_connections),
            max_idle_connections: to_usize(c.max_idle_connections),
            idle_timeout: c.idle_timeout,
            connect_timeout: c.connection_timeout,
            request_timeout: c.request_timeout,
            keep_alive: c.keep_alive,
            disable_compression: c.disable_compression,
            auth,
        });
        Box::pin(
            async move { Ok(Arc::new(crate::http::HttpClient::new(opts?)?) as Arc<dyn Transport>) },
        )
    })
}

/// `grpc` (plain) or `grpc-tls`.
pub fn grpc(tls: bool) -> TransportFactory {
    Arc::new(move |p: &PluginConfig| {
        let c = p.connection.resolve();
        let opts = wire_auth(p).map(|auth| crate::grpc::GrpcOptions {
            endpoint: p.endpoint.clone(),
            tls,
            server_name: None,
            max_connections: to_usize(c.max_connections),
            connect_timeout: c.connection_timeout,
            request_timeout: c.request_timeout,
            keep_alive: c.keep_alive,
            auth,
        });
        Box::pin(
            async move { Ok(Arc::new(crate::grpc::GrpcClient::new(opts?)?) as Arc<dyn Transport>) },
        )
    })
}

/// `exec`: an executable started and kept alive by the library.
pub fn exec() -> TransportFactory {
    Arc::new(|p: &PluginConfig| {
        let c = p.connection.resolve();
        let opts = wire_auth(p).map(|auth| {
            let mut o = crate::exec::ExecOptions::new(PathBuf::from(&p.executable));
            o.args = p.args.clone();
            o.env = p.env.clone();
            o.work_dir = (!p.work_dir.is_empty()).then(|| PathBuf::from(&p.work_dir));
            o.request_timeout = c.request_timeout;
            o.auth = auth;
            o
        });
        Box::pin(async move {
            Ok(Arc::new(crate::exec::ExecClient::start(opts?).await?) as Arc<dyn Transport>)
        })
    })
}
