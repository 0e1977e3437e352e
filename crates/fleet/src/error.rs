//! The fleet's error kinds.

pub use hangar_base::{Coded, Error};

hangar_base::error_kinds! {
    /// What can go wrong with the fleet.
    pub enum ErrorKind {
        /// This daemon has no `[daemon.fleet]` section.
        FleetOff = "FLEET_OFF": Precondition,
        /// etcd did not answer (or refused) in time.
        FleetUnavailable = "FLEET_UNAVAILABLE": Unavailable,
        /// A fleet instance of this name exists.
        FleetExists = "FLEET_EXISTS": Conflict,
        /// No fleet instance of this name.
        FleetNotFound = "FLEET_NOT_FOUND": NotFound,
        /// No node of this name is registered or holds instances.
        FleetNodeNotFound = "FLEET_NODE_NOT_FOUND": NotFound,
        /// A fleet request that cannot be carried out as written.
        FleetInvalid = "FLEET_INVALID": Invalid,
        /// The etcd connection settings cannot be used (TLS files, password).
        FleetConfig = "FLEET_CONFIG": Invalid,
        /// What etcd holds under the fleet's prefix cannot be read.
        FleetCorrupt = "FLEET_CORRUPT": Internal,
    }
}

/// An etcd failure as the fleet reports it.
pub(crate) fn etcd(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::FleetUnavailable, format!("{what}: {e}"))
        .hint("check that etcd is up and that daemon.fleet.endpoints reach it")
}
