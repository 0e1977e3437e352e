//! How errors look to a person: code, message, context, hint.

use hangar_supervisor::Error;

/// Multi-line rendering for the terminal.
pub fn error(e: &Error) -> String {
    let mut s = format!("error[{}]: {}", e.code(), e.message());
    if let Some(src) = std::error::Error::source(e) {
        s.push_str(&format!(": {src}"));
    }
    for (k, v) in e.context() {
        s.push_str(&format!("\n  {k}: {v}"));
    }
    if let Some(h) = e.hint() {
        s.push_str(&format!("\n  hint: {h}"));
    }
    s
}

/// Multi-line rendering of a service-layer (or API) error.
pub fn core_error(e: &hangar_core::Error) -> String {
    let mut s = format!("error[{}]: {}", e.code(), e.message);
    for (k, v) in &e.context {
        s.push_str(&format!("\n  {k}: {v}"));
    }
    if let Some(h) = &e.hint {
        s.push_str(&format!("\n  hint: {h}"));
    }
    s
}
