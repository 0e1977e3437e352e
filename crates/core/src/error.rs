//! The service layer's error codes. The error itself is [`hangar_base::Error`]:
//! a code with its category, a message, context and a hint. It carries the
//! mechanism crates' codes through unchanged (so a client sees
//! `PROCESS_NOT_FOUND` whether it ran `hangar run` or asked the daemon), and the
//! service layer's own codes are the [`ErrorKind`] below.

pub use hangar_base::{Category, Coded, Error, Result};

hangar_base::error_kinds! {
    /// The service layer's error kinds, each with a stable code (part of the
    /// public contract: scripts and the API match on it) and a category.
    pub enum ErrorKind {
    /// The data dir cannot be created, locked or used.
    DataDirUnusable = "DATA_DIR_UNUSABLE": Precondition,
    /// The data dir, its store or the configuration file is owned by another
    /// user or writable by others, so someone else could plant what the daemon runs.
    DataDirUnsafe = "DATA_DIR_UNSAFE": Precondition,
    /// Another daemon holds the data dir (a data dir admits one daemon, and
    /// that one place is taken).
    DaemonAlreadyRunning = "DAEMON_ALREADY_RUNNING": Exhausted,
    /// A configuration or process file (or a spec sent over the API) is invalid.
    ConfigInvalid = "CONFIG_INVALID": Invalid,
    /// A configuration file cannot be read.
    ConfigUnreadable = "CONFIG_UNREADABLE": Precondition,
    /// The process comes from the config file; change it there.
    ProcessFromConfig = "PROCESS_FROM_CONFIG": Precondition,
    /// The process belongs to an instance; change the instance.
    ProcessOfInstance = "PROCESS_OF_INSTANCE": Precondition,
    /// The network number pool is misconfigured.
    NetPoolInvalid = "NET_POOL_INVALID": Invalid,
    /// No port range is configured for instances.
    PortsNoRange = "PORTS_NO_RANGE": Precondition,
    /// An instance record cannot be encoded.
    InstanceEncode = "INSTANCE_ENCODE": Internal,
    /// No instance with this id or name.
    InstanceNotFound = "INSTANCE_NOT_FOUND": NotFound,
    /// A delete cancelled the create in progress.
    InstanceCancelled = "INSTANCE_CANCELLED": Conflict,
    /// The instance name is not allowed.
    InstanceInvalidName = "INSTANCE_INVALID_NAME": Invalid,
    /// An instance with this name exists.
    InstanceExists = "INSTANCE_EXISTS": Conflict,
    /// A create that an existing instance answers asked for other options
    /// or another mode than that instance has.
    InstanceOptionsDiffer = "INSTANCE_OPTIONS_DIFFER": Conflict,
    /// Undoing a step failed; the next boot tries again.
    InstanceCleanup = "INSTANCE_CLEANUP": Internal,
    /// The instance directory cannot be made or removed.
    InstanceDir = "INSTANCE_DIR": Internal,
    /// The feature's version is not installed.
    InstanceNotInstalled = "INSTANCE_NOT_INSTALLED": Precondition,
    /// The instance's process did not start.
    InstanceStartFailed = "INSTANCE_START_FAILED": Internal,
    /// The instance is not running.
    InstanceNotRunning = "INSTANCE_NOT_RUNNING": Precondition,
    /// The instance is in the middle of another operation.
    InstanceBusy = "INSTANCE_BUSY": Precondition,
    /// A daemon was stopped in the middle of creating it.
    InstanceInterrupted = "INSTANCE_INTERRUPTED": Precondition,
    /// The instance's bind address is invalid.
    InstanceBadBind = "INSTANCE_BAD_BIND": Invalid,
    /// An instance uses the feature version to be uninstalled.
    FeatureInUse = "FEATURE_IN_USE": Precondition,
    /// The instance is not fully made (queued, being made, in error or being
    /// deleted), so there is nothing whole to export.
    InstanceNotCreated = "INSTANCE_NOT_CREATED": Precondition,
    /// `hangar export` was asked for a format it does not write.
    ExportUnknownFormat = "EXPORT_UNKNOWN_FORMAT": Invalid,
    /// A secret option cannot be replaced by a reference in the exported
    /// config (its stand-in does not fit the option or the generator).
    ExportSecretUnmapped = "EXPORT_SECRET_UNMAPPED": Precondition,
    /// An export would have held a secret option's value; nothing was written.
    ExportSecretLeak = "EXPORT_SECRET_LEAK": Internal,
    /// The instance's config file cannot be read for the export.
    ExportConfigUnreadable = "EXPORT_CONFIG_UNREADABLE": Internal,
    /// `hangar export -o FILE` cannot write FILE.
    ExportWriteFailed = "EXPORT_WRITE_FAILED": Precondition,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_upper_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for k in ErrorKind::ALL {
            let c = k.code();
            assert!(seen.insert(c), "{c} twice");
            assert!(c
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'));
        }
    }
}
