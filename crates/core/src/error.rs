//! The service layer's error: a stable code, a message, context and a hint. It
//! carries the supervisor's and the store's codes through unchanged, so a client
//! sees `PROCESS_NOT_FOUND` whether it ran `hangar run` or asked the daemon.

use std::fmt;

/// An error with a stable code (`CONFIG_INVALID`, `PROCESS_NOT_FOUND`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Stable, machine-readable code.
    pub code: &'static str,
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
    /// An error with a code and message.
    pub fn new(code: &'static str, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
            context: Vec::new(),
            hint: None,
        }
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

impl From<hangar_supervisor::Error> for Error {
    fn from(e: hangar_supervisor::Error) -> Error {
        let mut message = e.message().to_string();
        if let Some(src) = std::error::Error::source(&e) {
            message.push_str(&format!(": {src}"));
        }
        Error {
            code: e.code(),
            message,
            context: e
                .context()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            hint: e.hint().map(str::to_string),
        }
    }
}

impl From<hangar_store::Error> for Error {
    fn from(e: hangar_store::Error) -> Error {
        Error {
            code: e.code(),
            message: e.message().to_string(),
            context: e
                .context()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            hint: Some(e.hint().to_string()).filter(|h| !h.is_empty()),
        }
    }
}

impl From<hangar_fetch::Error> for Error {
    fn from(e: hangar_fetch::Error) -> Error {
        Error {
            code: e.code(),
            message: e.message().to_string(),
            context: e
                .context()
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            hint: e.hint_text().map(str::to_string),
        }
    }
}
