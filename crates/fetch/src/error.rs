//! Typed errors with a stable code, context and a hint.

use std::fmt;

/// What went wrong, as a stable code ([`ErrorKind::code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Plain HTTP to a host that is not loopback, without permission.
    InsecureUrl,
    /// A URL that cannot be used (bad syntax, unsupported scheme).
    InvalidUrl,
    /// The server answered 404/410.
    NotFound,
    /// The server answered with another error status.
    HttpStatus,
    /// No byte arrived for too long, or connecting took too long.
    Timeout,
    /// The connection failed or broke, after every retry.
    Network,
    /// The same feature is being installed already (another version, or another process).
    InProgress,
    /// The file's SHA-256 is not the expected one.
    ChecksumMismatch,
    /// The checksums file has no line for the asset.
    ChecksumMissing,
    /// The checksums file or an expected digest is malformed.
    ChecksumInvalid,
    /// The minisign signature does not verify (or the key/signature is malformed).
    SignatureInvalid,
    /// An archive entry's path is absolute, has `..`, or repeats.
    UnsafePath,
    /// A link in the archive points outside the install directory.
    LinkOutside,
    /// A device, FIFO or other special file in the archive.
    SpecialFile,
    /// The archive expands beyond the size or entry limit.
    TooLarge,
    /// The archive is corrupt or of an unknown format.
    BadArchive,
    /// The binary the manifest names is not in the install.
    BinaryMissing,
    /// A process still runs the version being uninstalled.
    InUse,
    /// The version (or feature) is not installed.
    NotInstalled,
    /// An id or version that cannot be a directory name.
    InvalidName,
    /// A file-system operation failed.
    Io,
}

impl ErrorKind {
    /// The stable code, e.g. `VERIFY_CHECKSUM_MISMATCH`.
    pub const fn code(self) -> &'static str {
        match self {
            ErrorKind::InsecureUrl => "FETCH_INSECURE_URL",
            ErrorKind::InvalidUrl => "FETCH_INVALID_URL",
            ErrorKind::NotFound => "FETCH_NOT_FOUND",
            ErrorKind::HttpStatus => "FETCH_HTTP_STATUS",
            ErrorKind::Timeout => "FETCH_TIMEOUT",
            ErrorKind::Network => "FETCH_NETWORK",
            ErrorKind::InProgress => "FETCH_IN_PROGRESS",
            ErrorKind::ChecksumMismatch => "VERIFY_CHECKSUM_MISMATCH",
            ErrorKind::ChecksumMissing => "VERIFY_CHECKSUM_MISSING",
            ErrorKind::ChecksumInvalid => "VERIFY_CHECKSUM_INVALID",
            ErrorKind::SignatureInvalid => "VERIFY_SIGNATURE_INVALID",
            ErrorKind::UnsafePath => "EXTRACT_UNSAFE_PATH",
            ErrorKind::LinkOutside => "EXTRACT_LINK_OUTSIDE",
            ErrorKind::SpecialFile => "EXTRACT_SPECIAL_FILE",
            ErrorKind::TooLarge => "EXTRACT_TOO_LARGE",
            ErrorKind::BadArchive => "EXTRACT_BAD_ARCHIVE",
            ErrorKind::BinaryMissing => "INSTALL_BINARY_MISSING",
            ErrorKind::InUse => "INSTALL_IN_USE",
            ErrorKind::NotInstalled => "INSTALL_NOT_FOUND",
            ErrorKind::InvalidName => "INSTALL_INVALID_NAME",
            ErrorKind::Io => "FETCH_IO",
        }
    }

    /// What kind of failure this is; edges map it to a gRPC status, an HTTP
    /// status and an exit code.
    pub const fn category(self) -> hangar_base::Category {
        use hangar_base::Category as C;
        match self {
            ErrorKind::InsecureUrl | ErrorKind::InvalidUrl | ErrorKind::InvalidName => C::Invalid,
            ErrorKind::NotFound | ErrorKind::NotInstalled => C::NotFound,
            ErrorKind::HttpStatus | ErrorKind::Network => C::Unavailable,
            ErrorKind::Timeout => C::Timeout,
            ErrorKind::InProgress | ErrorKind::InUse => C::Conflict,
            // What the publisher shipped is not what the catalog promised.
            ErrorKind::ChecksumMismatch
            | ErrorKind::ChecksumMissing
            | ErrorKind::ChecksumInvalid
            | ErrorKind::SignatureInvalid
            | ErrorKind::UnsafePath
            | ErrorKind::LinkOutside
            | ErrorKind::SpecialFile
            | ErrorKind::BadArchive
            | ErrorKind::BinaryMissing => C::Precondition,
            ErrorKind::TooLarge => C::Exhausted,
            ErrorKind::Io => C::Internal,
        }
    }

    /// Worth another attempt (a transient network condition).
    pub const fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Timeout | ErrorKind::Network)
    }
}

/// An error: kind (stable code), message, context and hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    context: Vec<(&'static str, String)>,
    hint: Option<String>,
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error of this kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            context: Vec::new(),
            hint: None,
        }
    }

    /// Add context.
    pub fn with(mut self, key: &'static str, value: impl fmt::Display) -> Error {
        self.context.push((key, value.to_string()));
        self
    }

    /// Set the hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = Some(hint.into());
        self
    }

    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    /// What kind of failure this is (see [`hangar_base::Category`]).
    pub fn category(&self) -> hangar_base::Category {
        self.kind.category()
    }

    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Where it went wrong.
    pub fn context(&self) -> &[(&'static str, String)] {
        &self.context
    }

    /// How to fix it.
    pub fn hint_text(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    pub(crate) fn io(what: &str, path: &std::path::Path, e: std::io::Error) -> Error {
        Error::new(ErrorKind::Io, format!("{what}: {e}"))
            .with("path", path.display())
            .hint("check the data dir's permissions and free space")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.message)
    }
}

impl std::error::Error for Error {}

impl hangar_base::Coded for ErrorKind {
    fn code(self) -> &'static str {
        ErrorKind::code(self)
    }
    fn category(self) -> hangar_base::Category {
        ErrorKind::category(self)
    }
}

/// The same error for the service layer: code, category, context and hint
/// unchanged.
impl From<Error> for hangar_base::Error {
    fn from(e: Error) -> hangar_base::Error {
        let context = e
            .context()
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        hangar_base::Error::from_parts(
            e.code(),
            e.category(),
            e.message().to_string(),
            context,
            e.hint_text().map(str::to_string),
        )
    }
}
