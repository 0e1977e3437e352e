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
    /// The request itself is malformed (a bad argument or address).
    Usage = "USAGE": Invalid,
    /// A failure that is nobody's input: a task that died, a bug.
    Internal = "INTERNAL": Internal,
    /// The data dir cannot be created, locked or used.
    DataDirUnusable = "DATA_DIR_UNUSABLE": Precondition,
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
    /// Reading a catalog file failed.
    CatalogIo = "CATALOG_IO": Internal,
    /// The catalog directory cannot be read.
    CatalogUnreadable = "CATALOG_UNREADABLE": Precondition,
    /// A manifest breaks the schema or its rules.
    ManifestInvalid = "MANIFEST_INVALID": Invalid,
    /// No feature with this id in the catalog.
    FeatureNotFound = "FEATURE_NOT_FOUND": NotFound,
    /// The feature publishes nothing for this platform.
    FeatureUnsupportedPlatform = "FEATURE_UNSUPPORTED_PLATFORM": Precondition,
    /// A release server answered with something unusable.
    FetchBadResponse = "FETCH_BAD_RESPONSE": Unavailable,
    /// Nothing verifies the download and unverified installs are not allowed.
    VerifyUnverified = "VERIFY_UNVERIFIED": Precondition,
    /// An option the feature does not declare.
    ConfigUnknownOption = "CONFIG_UNKNOWN_OPTION": Invalid,
    /// An option of the wrong type.
    ConfigBadOptionType = "CONFIG_BAD_OPTION_TYPE": Invalid,
    /// A number outside its range.
    ConfigOptionOutOfRange = "CONFIG_OPTION_OUT_OF_RANGE": Invalid,
    /// A value not in the option's enum.
    ConfigOptionNotInEnum = "CONFIG_OPTION_NOT_IN_ENUM": Invalid,
    /// A required option is missing.
    ConfigMissingOption = "CONFIG_MISSING_OPTION": Invalid,
    /// A value breaks the option's pattern, length or format.
    ConfigBadOptionValue = "CONFIG_BAD_OPTION_VALUE": Invalid,
    /// The options as a whole are invalid (every problem in the context).
    ConfigOptionsInvalid = "CONFIG_OPTIONS_INVALID": Invalid,
    /// A mode the feature does not have.
    ConfigUnknownMode = "CONFIG_UNKNOWN_MODE": Invalid,
    /// A `--set key=value` that cannot be read.
    ConfigBadSet = "CONFIG_BAD_SET": Invalid,
    /// Options that are not a JSON object.
    ConfigBadOptions = "CONFIG_BAD_OPTIONS": Invalid,
    /// The feature has no config generator.
    ConfigNoGenerator = "CONFIG_NO_GENERATOR": Invalid,
    /// The manifest names a generator hangar does not have.
    ConfigUnknownGenerator = "CONFIG_UNKNOWN_GENERATOR": Invalid,
    /// The config needs a port the instance does not have.
    ConfigPortMissing = "CONFIG_PORT_MISSING": Invalid,
    /// A template cannot be read or rendered.
    ConfigTemplateError = "CONFIG_TEMPLATE_ERROR": Invalid,
    /// The generated config is not valid in its format.
    ConfigRenderFailed = "CONFIG_RENDER_FAILED": Invalid,
    /// A config path leaves the instance's directory.
    ConfigBadPath = "CONFIG_BAD_PATH": Invalid,
    /// The feature's checker refused the config.
    ConfigCheckFailed = "CONFIG_CHECK_FAILED": Invalid,
    /// The feature's checker did not finish in time.
    ConfigCheckTimeout = "CONFIG_CHECK_TIMEOUT": Timeout,
    /// The feature's checker cannot be run.
    ConfigCheckerUnavailable = "CONFIG_CHECKER_UNAVAILABLE": Precondition,
    /// Writing the config failed.
    ConfigWriteFailed = "CONFIG_WRITE_FAILED": Internal,
    /// The network number pool is misconfigured.
    NetPoolInvalid = "NET_POOL_INVALID": Invalid,
    /// A stored network record cannot be read.
    NetRecordUnreadable = "NET_RECORD_UNREADABLE": Internal,
    /// No port range is configured for instances.
    PortsNoRange = "PORTS_NO_RANGE": Precondition,
    /// An instance record cannot be encoded.
    InstanceEncode = "INSTANCE_ENCODE": Internal,
    /// No instance with this id or name.
    InstanceNotFound = "INSTANCE_NOT_FOUND": NotFound,
    /// A delete cancelled the create in progress.
    InstanceCancelled = "INSTANCE_CANCELLED": Conflict,
    /// Another instance holds this isolation key.
    InstanceKeyTaken = "INSTANCE_KEY_TAKEN": Conflict,
    /// The instance name is not allowed.
    InstanceInvalidName = "INSTANCE_INVALID_NAME": Invalid,
    /// An instance with this name exists.
    InstanceExists = "INSTANCE_EXISTS": Conflict,
    /// Undoing a step failed; the next boot tries again.
    InstanceCleanup = "INSTANCE_CLEANUP": Internal,
    /// The instance directory cannot be made or removed.
    InstanceDir = "INSTANCE_DIR": Internal,
    /// The feature's version is not installed.
    InstanceNotInstalled = "INSTANCE_NOT_INSTALLED": Precondition,
    /// The instance's process did not start.
    InstanceStartFailed = "INSTANCE_START_FAILED": Unavailable,
    /// The instance is not running.
    InstanceNotRunning = "INSTANCE_NOT_RUNNING": Precondition,
    /// The instance is in the middle of another operation.
    InstanceBusy = "INSTANCE_BUSY": Precondition,
    /// A daemon was stopped in the middle of creating it.
    InstanceInterrupted = "INSTANCE_INTERRUPTED": Precondition,
    /// The instance's bind address is invalid.
    InstanceBadBind = "INSTANCE_BAD_BIND": Invalid,
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
