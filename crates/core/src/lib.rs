//! `hangar_core`: the service layer of hangar.
//!
//! Today it holds the daemon behind `hangar serve` and what it reads:
//!
//! - [`procfile`] parses process files (`[[process]]` tables), with every mistake
//!   reported at once by line, column and key.
//! - [`config`] adds the `[daemon]` table on top, for `hangar serve`'s
//!   configuration file.
//! - [`Daemon`] owns the supervisor, the SQLite store and the event bus: boot is a
//!   reload from an empty state, events are stored before they are announced, and
//!   an earlier daemon's leftovers are ended ([`recovery`]) before anything starts.
//! - [`sinks`] copy the stored history to a JSON-lines file or an HTTP endpoint.
//!
//! ```no_run
//! # async fn demo() -> hangar_core::Result<()> {
//! use hangar_core::{BootOptions, Daemon};
//! let daemon = Daemon::boot(BootOptions {
//!     data_dir: "/tmp/hangar-demo".into(),
//!     config: Some("examples/sleepers.toml".into()),
//!     ..BootOptions::default()
//! })
//! .await?;
//! for p in daemon.list("*").await? {
//!     println!("{} {:?}", p.want.spec.name, p.status.map(|s| s.state));
//! }
//! daemon.shutdown().await;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod config;
mod daemon;
mod desired;
mod error;
mod events;
pub mod instances;
pub mod procfile;
pub mod recovery;
pub mod sinks;
mod spool;
mod util;

pub use daemon::{
    default_data_dir, socket_path, BootOptions, Booting, Daemon, DaemonInfo, ProcessView,
};
pub use desired::{ActionReport, ReloadReport, Want};
pub use error::{Category, Coded, Error, ErrorKind, Result};
pub use instances::{
    CreateRequest, Created, Export, ExportFormat, FeatureInfo, Instance, InstanceError,
    InstanceState, StepKind,
};
