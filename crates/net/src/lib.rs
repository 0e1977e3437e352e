//! `hangar_net`: network mechanisms for hangar.
//!
//! Today: the [`PortRegistry`], which hands out TCP ports from named ranges to
//! owners, checks that a port is really bindable on the host before handing it
//! out, and never gives one port to two owners. Owners are plain strings (a process
//! name, an instance id); `release_all(owner)` frees everything an owner held, so
//! cleanup after a failure is one call.
//!
//! ```
//! use hangar_net::{PortRange, PortRegistry};
//!
//! let reg = PortRegistry::new([PortRange::new("web", 41000, 41099)]).unwrap();
//! let port = reg.allocate("web", "my-process").unwrap();
//! assert_eq!(reg.owner(port).as_deref(), Some("my-process"));
//! assert_eq!(reg.release_all("my-process"), vec![port]);
//! ```
#![deny(missing_docs)]

mod ports;

pub use ports::{PortError, PortErrorKind, PortRange, PortRegistry};
