//! The feature library's error kinds: the catalog, manifests, release
//! resolution, options, config generators and checkers.

pub use hangar_base::{Category, Coded, Error, Result};

hangar_base::error_kinds! {
    /// What can go wrong with a feature, its options or its config.
    pub enum ErrorKind {
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
    }
}
