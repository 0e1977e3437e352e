//! `hangar_api`: hangar's edges. Only this crate knows protobuf.
//!
//! - [`pb`]: the hangar.v1 messages and services, generated from
//!   `proto/hangar/v1/hangar.proto`.
//! - [`server`]: the gRPC services over a [`hangar_core::Daemon`], served on the
//!   Unix socket (and optionally TCP with a bearer token or mTLS), with reflection.
//! - [`authority`]: what grpc-core and grpc-java clients send as `:authority`
//!   over the Unix socket, made acceptable to h2.
//! - [`conn`]: connection caps and idle timeout of the TCP listeners.
//! - [`client`]: the client the CLI uses; errors come back with the daemon's code,
//!   context and hint ([`convert`]).
//! - [`page`]: pages of List replies (`page_size`, `page_token`).
//! - [`graphql`]: the GraphQL API (queries, mutations, subscriptions) on the
//!   HTTP listener, behind the API token, `Host` and `Origin` checks.
//! - [`metrics`]: Prometheus families fed by stored events, and the HTTP listener
//!   for `/metrics` and `/metrics.json`.
//! - [`exposition`]: which text format a scraper gets (OpenMetrics when it asks,
//!   Prometheus 0.0.4 otherwise) and the 0.0.4 encoding.
//! - [`watch`]: followed event streams (history after an id, then live),
//!   shared by gRPC and GraphQL.
//! - [`usage`]: the daemon's own `process_*` metrics and the supervised
//!   processes' CPU and memory (cgroup, else `/proc`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), hangar_core::Error> {
//! let mut c = hangar_api::client::Client::unix("/tmp/hangar-demo/hangar.sock".as_ref()).await?;
//! let list = c.processes.list(hangar_api::pb::ListRequest::default()).await
//!     .map_err(|s| hangar_api::convert::error(&s))?;
//! for p in list.into_inner().processes {
//!     println!("{} {}", p.name, p.state);
//! }
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod authority;
pub mod client;
pub mod conn;
pub mod convert;
mod error;
pub mod exposition;
pub mod fleet;
pub mod graphql;
pub mod metrics;
pub mod page;
pub mod server;
pub mod usage;
pub mod watch;
mod web;

pub use error::ErrorKind;

/// Generated hangar.v1 code.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("hangar.v1");
    /// Encoded descriptors of hangar.v1, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("hangar_v1_descriptor");
}
