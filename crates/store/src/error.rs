//! Typed errors with a stable code, context and a hint for the fix.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rusqlite::ErrorCode;

/// What went wrong, as a stable machine-readable code.
///
/// The string form ([`ErrorKind::code`]) is part of the public contract: scripts and
/// the API match on it, so it never changes once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The database file could not be opened or configured: missing directory,
    /// permissions, not a SQLite file, locked by another program.
    OpenFailed,
    /// The file's schema version is higher than this build knows: a newer hangar
    /// wrote it.
    SchemaTooNew,
    /// A schema migration failed; the file is left at the last version that applied.
    MigrationFailed,
    /// A query or write failed (I/O error, disk full, lock timeout, read-only file).
    Io,
    /// A row holds data this build cannot read: unparsable spec or detail JSON,
    /// unknown enum text, a value of the wrong type or range, or SQLite reports the
    /// file corrupt.
    Corrupt,
    /// The caller passed a value the store cannot keep: spec text that is not JSON,
    /// a number beyond SQLite's signed 64-bit range.
    InvalidInput,
    /// A write would break a uniqueness rule (an instance name already taken).
    Conflict,
}

impl ErrorKind {
    /// The stable code, e.g. `STORE_OPEN_FAILED`.
    pub const fn code(self) -> &'static str {
        match self {
            ErrorKind::OpenFailed => "STORE_OPEN_FAILED",
            ErrorKind::SchemaTooNew => "STORE_SCHEMA_TOO_NEW",
            ErrorKind::MigrationFailed => "STORE_MIGRATION_FAILED",
            ErrorKind::Io => "STORE_IO",
            ErrorKind::Corrupt => "STORE_CORRUPT",
            ErrorKind::InvalidInput => "STORE_INVALID_INPUT",
            ErrorKind::Conflict => "STORE_CONFLICT",
        }
    }

    /// What kind of failure this is; edges map it to a gRPC status, an HTTP
    /// status and an exit code.
    pub const fn category(self) -> hangar_base::Category {
        use hangar_base::Category as C;
        match self {
            ErrorKind::OpenFailed | ErrorKind::Io => C::Unavailable,
            ErrorKind::SchemaTooNew => C::Precondition,
            ErrorKind::MigrationFailed | ErrorKind::Corrupt => C::Internal,
            ErrorKind::InvalidInput => C::Invalid,
            ErrorKind::Conflict => C::Conflict,
        }
    }

    /// The hint given when nothing more specific is known.
    const fn default_hint(self) -> &'static str {
        match self {
            ErrorKind::OpenFailed => {
                "check that the data directory exists and that hangar may read and write it"
            }
            ErrorKind::SchemaTooNew => {
                "a newer hangar wrote this database; run that version, or point this one at another data directory"
            }
            ErrorKind::MigrationFailed => {
                "the database was left at its previous schema version; check the file and free disk space, then retry"
            }
            ErrorKind::Io => "check free disk space and the permissions of the database file",
            ErrorKind::Corrupt => {
                "the database holds data this hangar cannot read; restore it from a backup or move it away to start afresh"
            }
            ErrorKind::InvalidInput => "this is a bug in the caller; the store was not changed",
            ErrorKind::Conflict => "pick another name; the store was not changed",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An error from the store: a kind (stable code), a message, the context it
/// happened in (database path, process name, migration version, …), a hint for the
/// fix and, when there is one, the underlying SQLite or JSON error as its source.
///
/// Cheap to clone.
#[derive(Clone, thiserror::Error)]
#[error("[{code}] {message}{tail}", code = .kind.code(), tail = Tail(self))]
pub struct Error {
    kind: ErrorKind,
    message: String,
    context: Vec<(&'static str, String)>,
    hint: String,
    #[source]
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

/// Renders what follows the message: source, context, hint.
struct Tail<'a>(&'a Error);

impl fmt::Display for Tail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        if let Some(src) = &e.source {
            write!(f, ": {src}")?;
        }
        for (k, v) in &e.context {
            write!(f, " {k}={v:?}")?;
        }
        write!(f, " (hint: {})", e.hint)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("code", &self.code())
            .field("message", &self.message)
            .field("context", &self.context)
            .field("hint", &self.hint)
            .field("source", &self.source)
            .finish()
    }
}

impl Error {
    /// A new error of `kind` with the kind's default hint.
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            context: Vec::new(),
            hint: kind.default_hint().to_string(),
            source: None,
        }
    }

    /// Adds a key/value pair to the context.
    pub(crate) fn ctx(mut self, key: &'static str, value: impl fmt::Display) -> Error {
        self.context.push((key, value.to_string()));
        self
    }

    /// Adds the database path to the context, when there is one.
    pub(crate) fn at(self, path: Option<&Path>) -> Error {
        match path {
            Some(p) => self.ctx("path", p.display()),
            None => self,
        }
    }

    /// Replaces the default hint.
    pub(crate) fn with_hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = hint.into();
        self
    }

    /// Sets the underlying error.
    pub(crate) fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        self.source = Some(Arc::new(source));
        self
    }

    /// A failed query or write: `STORE_CORRUPT` when SQLite could not convert a
    /// stored value or reports the file corrupt, `STORE_IO` otherwise. `what` says
    /// what the store was doing ("insert events").
    pub(crate) fn sqlite(e: rusqlite::Error, what: &str) -> Error {
        let corrupt = matches!(
            e,
            rusqlite::Error::FromSqlConversionFailure(..)
                | rusqlite::Error::IntegralValueOutOfRange(..)
                | rusqlite::Error::InvalidColumnType(..)
        ) || matches!(
            e.sqlite_error_code(),
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
        );
        let err = if corrupt {
            Error::new(
                ErrorKind::Corrupt,
                format!("could not {what}: unreadable data"),
            )
        } else {
            let err = Error::new(ErrorKind::Io, format!("could not {what}"));
            match io_hint(&e) {
                Some(h) => err.with_hint(h),
                None => err,
            }
        };
        err.with_source(e)
    }

    /// Whether SQLite failed for lack of disk space.
    pub fn is_disk_full(&self) -> bool {
        self.source
            .as_deref()
            .and_then(|s| s.downcast_ref::<rusqlite::Error>())
            .and_then(rusqlite::Error::sqlite_error_code)
            == Some(ErrorCode::DiskFull)
    }

    /// The kind of error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The stable code, e.g. `STORE_SCHEMA_TOO_NEW`.
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    /// What kind of failure this is (see [`hangar_base::Category`]).
    pub fn category(&self) -> hangar_base::Category {
        self.kind.category()
    }

    /// The human-readable message, without code, context or hint.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Key/value context: the database path, process name, migration version.
    pub fn context(&self) -> &[(&'static str, String)] {
        &self.context
    }

    /// A suggestion for the fix; never empty.
    pub fn hint(&self) -> &str {
        &self.hint
    }
}

/// A more precise hint than [`ErrorKind::Io`]'s default for some SQLite codes.
pub(crate) fn io_hint(e: &rusqlite::Error) -> Option<&'static str> {
    Some(match e.sqlite_error_code()? {
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
            "another program held the database locked for more than 5 s; check that only one hangar uses this data directory"
        }
        ErrorCode::DiskFull => "the disk is full; free some space",
        ErrorCode::ReadOnly | ErrorCode::PermissionDenied => {
            "the database file or its directory is read-only; check permissions"
        }
        ErrorCode::CannotOpen => {
            "check that the data directory exists and that hangar may read and write it"
        }
        ErrorCode::NotADatabase => {
            "the file is not a SQLite database; move it away or point hangar at another data directory"
        }
        _ => return None,
    })
}

/// Shorthand for results in this crate.
pub type Result<T> = std::result::Result<T, Error>;

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
            Some(e.hint().to_string()).filter(|h| !h.is_empty()),
        )
    }
}
