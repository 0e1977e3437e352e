//! `hangar_base`: the small vocabulary every hangar crate shares, so that each
//! crate can say what kind of failure it had without knowing who reports it.
//!
//! Every crate has its own `ErrorKind` enum with a stable `code()` (the text a
//! user or a script sees, such as `PROCESS_NOT_FOUND`) and a [`Category`]. The
//! category alone decides how an edge reports the failure: the gRPC status
//! (in `hangar_api`), the HTTP status ([`Category::http_status`]) and the CLI's
//! exit code (in the binary), each decided in exactly one place.
//!
//! [`Error`] is the error of the service layer and the edges (the feature
//! library, the daemon, the API, the CLI): a code with its category, a message,
//! context and a hint. The mechanism crates below keep their own richer error
//! types; each converts into [`Error`] unchanged in code, category, context and
//! hint through [`Error::from_parts`].
//!
//! [`duration`] is the one serde helper for `Duration` fields: a humantime
//! string or integer milliseconds in, a humantime string (or milliseconds,
//! where that is the stored format) out. [`suggest`] finds the did-you-mean
//! for a misspelt key or value. [`children`] is the registry of children this
//! program waits for itself, which a subreaper's orphan sweep leaves alone.
//! [`failpoint`] holds the crash points a crash test arms ([`crash_point!`]),
//! compiled in only with the `failpoints` feature.
#![deny(missing_docs)]

use std::borrow::Cow;
use std::fmt;

pub mod backoff;
pub mod children;
pub mod duration;
pub mod failpoint;
pub mod suggest;

pub use backoff::Backoff;

/// What kind of failure an error is, independent of where it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    /// The named thing does not exist (a process, an instance, a feature).
    NotFound,
    /// The input is wrong; the same input fails the same way again.
    Invalid,
    /// It clashes with something that exists (a name taken, a duplicate), or
    /// a concurrent change won.
    Conflict,
    /// The system is not in a state that allows it now (busy, shutting down,
    /// owned by the config file, not installed).
    Precondition,
    /// A limit was reached (ports, descriptors, a rate limit, an open circuit).
    Exhausted,
    /// Something it needs did not answer; the same request may work later.
    Unavailable,
    /// It took longer than it was allowed to.
    Timeout,
    /// Credentials are missing or wrong.
    Unauthenticated,
    /// Nothing the caller's request could fix: the host failed, a bug, or
    /// the service hangar runs failed (a crash at start, a failed probe).
    Internal,
}

impl Category {
    /// Every category, for tables and tests.
    pub const ALL: [Category; 9] = [
        Category::NotFound,
        Category::Invalid,
        Category::Conflict,
        Category::Precondition,
        Category::Exhausted,
        Category::Unavailable,
        Category::Timeout,
        Category::Unauthenticated,
        Category::Internal,
    ];

    /// Stable snake_case name, as it travels on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::NotFound => "not_found",
            Category::Invalid => "invalid",
            Category::Conflict => "conflict",
            Category::Precondition => "precondition",
            Category::Exhausted => "exhausted",
            Category::Unavailable => "unavailable",
            Category::Timeout => "timeout",
            Category::Unauthenticated => "unauthenticated",
            Category::Internal => "internal",
        }
    }

    /// The category named by [`Category::as_str`].
    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The HTTP status an HTTP edge answers with (the mapping Google's API
    /// design guide gives for the matching gRPC codes).
    pub fn http_status(self) -> u16 {
        match self {
            Category::NotFound => 404,
            Category::Invalid | Category::Precondition => 400,
            Category::Conflict => 409,
            Category::Exhausted => 429,
            Category::Unavailable => 503,
            Category::Timeout => 504,
            Category::Unauthenticated => 401,
            Category::Internal => 500,
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind of error with a stable code and a category: every crate's
/// `ErrorKind` enum implements it.
pub trait Coded: Copy {
    /// The stable, machine-readable code (`PROCESS_NOT_FOUND`).
    fn code(self) -> &'static str;
    /// What kind of failure it is.
    fn category(self) -> Category;
}

/// An error with a stable code, its category, a message, context and a hint.
///
/// Made from a [`Coded`] kind ([`Error::new`]); logic asks [`Error::is`] with
/// a kind, never compares code strings. A code received over the wire, which
/// no enum of this binary may know, is kept as text with the category that
/// came with it ([`Error::remote`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    code: Cow<'static, str>,
    category: Category,
    /// What went wrong.
    pub message: String,
    /// Where: `(key, value)` pairs such as `("process", "web")`.
    pub context: Vec<(String, String)>,
    /// How to fix it.
    pub hint: Option<String>,
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error of `kind` with a message.
    pub fn new(kind: impl Coded, message: impl Into<String>) -> Error {
        Error {
            code: Cow::Borrowed(kind.code()),
            category: kind.category(),
            message: message.into(),
            context: Vec::new(),
            hint: None,
        }
    }

    /// An error as another crate or a remote daemon described it.
    pub fn from_parts(
        code: impl Into<Cow<'static, str>>,
        category: Category,
        message: impl Into<String>,
        context: Vec<(String, String)>,
        hint: Option<String>,
    ) -> Error {
        Error {
            code: code.into(),
            category,
            message: message.into(),
            context,
            hint,
        }
    }

    /// An error received over the wire: its code as text (upper case, digits
    /// and `_`, at most 64 bytes; anything else becomes `API_ERROR`, and the
    /// message keeps the detail) and the category that came with it.
    pub fn remote(code: &str, category: Category, message: impl Into<String>) -> Error {
        let ok = !code.is_empty()
            && code.len() <= 64
            && code
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        let code = if ok {
            code.to_string()
        } else {
            "API_ERROR".to_string()
        };
        Error::from_parts(code, category, message, Vec::new(), None)
    }

    /// The stable code.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// What kind of failure it is.
    pub fn category(&self) -> Category {
        self.category
    }

    /// Whether this is an error of `kind`.
    pub fn is(&self, kind: impl Coded) -> bool {
        self.code == kind.code()
    }

    /// Add a context entry.
    pub fn with(mut self, key: &str, value: impl fmt::Display) -> Error {
        self.context.push((key.to_string(), value.to_string()));
        self
    }

    /// Set the hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

/// Declares a crate's `ErrorKind` enum: each kind with its stable code and
/// category, `ALL`, `code()`, `category()`, `Display` (the code) and
/// [`Coded`].
///
/// ```
/// hangar_base::error_kinds! {
///     /// What went wrong.
///     pub enum ErrorKind {
///         /// No such thing.
///         ThingNotFound = "THING_NOT_FOUND": NotFound,
///     }
/// }
/// assert_eq!(ErrorKind::ThingNotFound.code(), "THING_NOT_FOUND");
/// ```
#[macro_export]
macro_rules! error_kinds {
    (
        $(#[$edoc:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$doc:meta])* $kind:ident = $code:literal : $cat:ident, )*
        }
    ) => {
        $(#[$edoc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        $vis enum $name {
            $( $(#[$doc])* $kind, )*
        }

        impl $name {
            /// Every kind, for tables and tests.
            pub const ALL: &'static [$name] = &[$($name::$kind),*];

            /// The stable code.
            pub const fn code(self) -> &'static str {
                match self { $($name::$kind => $code,)* }
            }

            /// What kind of failure it is.
            pub const fn category(self) -> $crate::Category {
                match self { $($name::$kind => $crate::Category::$cat,)* }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.code())
            }
        }

        impl $crate::Coded for $name {
            fn code(self) -> &'static str {
                $name::code(self)
            }
            fn category(self) -> $crate::Category {
                $name::category(self)
            }
        }
    };
}

error_kinds! {
    /// Kinds any crate may use: a malformed request, or a failure that is
    /// nobody's input.
    pub enum ErrorKind {
        /// The request itself is malformed (a bad argument or address).
        Usage = "USAGE": Invalid,
        /// A failure that is nobody's input: a task that died, a bug.
        Internal = "INTERNAL": Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for c in Category::ALL {
            assert_eq!(Category::parse(c.as_str()), Some(c));
            assert!(seen.insert(c.as_str()), "{c} twice");
        }
        assert_eq!(Category::parse("NOT_FOUND"), None);
    }

    #[derive(Clone, Copy)]
    enum K {
        Gone,
        Bad,
    }
    impl Coded for K {
        fn code(self) -> &'static str {
            match self {
                K::Gone => "THING_GONE",
                K::Bad => "THING_BAD",
            }
        }
        fn category(self) -> Category {
            match self {
                K::Gone => Category::NotFound,
                K::Bad => Category::Invalid,
            }
        }
    }

    #[test]
    fn an_error_knows_its_kind_and_category() {
        let e = Error::new(K::Gone, "no thing")
            .with("thing", "a")
            .hint("make it");
        assert!(e.is(K::Gone) && !e.is(K::Bad));
        assert_eq!((e.code(), e.category()), ("THING_GONE", Category::NotFound));
        assert_eq!(e.to_string(), "THING_GONE: no thing");
        let r = Error::remote("THING_GONE", Category::NotFound, "no thing");
        assert!(r.is(K::Gone));
        assert_eq!(
            Error::remote("not a code", Category::Internal, "x").code(),
            "API_ERROR"
        );
        assert_eq!(
            Error::remote(&"A".repeat(65), Category::Internal, "x").code(),
            "API_ERROR"
        );
    }
}
