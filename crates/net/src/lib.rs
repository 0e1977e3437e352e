//! `hangar_net`: network mechanisms for hangar.
//!
//! - Per-instance networks behind one trait, [`NetworkBackend`]: the
//!   [`LinuxBackend`] (a network namespace, a veth pair, addresses, a routing
//!   table of the instance's own and a policy rule matching only the
//!   instance's firewall mark, all through netlink) and the [`RouterOsBackend`]
//!   (VLAN interface, address, routing table and default route on a MikroTik
//!   router over the RouterOS API). The [`NetAllocator`] hands out the
//!   per-instance number (the seed's VLAN id) every name and address derives
//!   from; [`NetworkConfig`] picks a backend from the daemon config.
//!
//! Creating a network runs steps in order and reports the [`NetRecord`] after
//! each one (store it: a crash mid-create is undone at the next start by
//! [`NetworkBackend::recover`] or [`NetworkBackend::teardown`]); a failing step
//! undoes the steps done, newest first.
//!
//! How the daemon uses it (the store calls are the caller's):
//!
//! ```no_run
//! use hangar_net::{NetAllocator, NetRecord, NetSpec, NetworkConfig};
//!
//! # async fn demo(stored: Vec<NetRecord>) -> Result<(), hangar_net::NetError> {
//! let cfg = NetworkConfig::default(); // from the `[network]` section
//! let backend = cfg.build()?;
//! let alloc = NetAllocator::new(cfg.pool().clone())?;
//! // At start: hold the stored numbers, then reconcile the host with the records.
//! alloc.restore(&stored);
//! let report = backend.recover(&stored).await?;
//! # let _ = report;
//! // Creating an instance that needs a network:
//! let n = alloc.allocate("inst-1")?;
//! let store = |r: &NetRecord| { let _json = r.to_json(); /* save it */ };
//! let rec = backend.create(&NetSpec::new("inst-1", n), &store).await?;
//! // The supervisor starts the instance inside `rec.namespace_path`
//! // (open_netns in the parent, enter_netns in pre_exec); it binds `rec.instance_addr`.
//! // Deleting the instance:
//! backend.teardown(&rec).await?;
//! alloc.release(n);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod alloc;
mod backend;
mod config;
mod error;
mod linux;
mod record;
mod routeros;

/// Entry points for the fuzz targets in `fuzz/`, not a stable API: the
/// RouterOS API's word and sentence codec, and one command's reply handling
/// over bytes a test supplies instead of a router.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::routeros::api::{
        encode_len, encode_sentence, read_sentence, replay_command, replay_login, ReplyMaps,
    };
}

pub use alloc::NetAllocator;
pub use backend::{no_progress, BoxFuture, NetworkBackend, Progress};
pub use config::NetworkConfig;
pub use error::{NetError, NetErrorKind};
pub use linux::{
    enter_netns, in_netns, netns_path, open_netns, spawn_in_netns, LinuxBackend, LinuxConfig,
    LINUX_STEPS, NETNS_DIR,
};
pub use record::{NetPool, NetRecord, NetSpec, NetState, RecoveryReport, Step, PREFIX_LEN};
pub use routeros::{RouterOsBackend, RouterOsConfig, ROUTEROS_STEPS};
