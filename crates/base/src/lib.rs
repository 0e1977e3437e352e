//! `hangar_base`: the small vocabulary every hangar crate shares, so that each
//! crate can say what kind of failure it had without knowing who reports it.
//!
//! Every crate has its own `ErrorKind` enum with a stable `code()` (the text a
//! user or a script sees, such as `PROCESS_NOT_FOUND`) and a [`Category`]. The
//! category alone decides how an edge reports the failure: the gRPC status
//! (in `hangar_api`), the HTTP status ([`Category::http_status`]) and the CLI's
//! exit code (in the binary), each decided in exactly one place.
//!
//! [`duration`] is the one serde helper for `Duration` fields: a humantime
//! string or integer milliseconds in, a humantime string (or milliseconds,
//! where that is the stored format) out.
#![deny(missing_docs)]

use std::fmt;

pub mod duration;

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
    /// A failure of the host or a bug: nothing the caller can fix.
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
}
