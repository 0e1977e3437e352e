//! hangar's SQLite store: process records (desired and observed state) and the
//! event history. (Implementation in progress.)

use serde::{Deserialize, Serialize};

/// One event as it is kept in history, sent to sinks and served by the API.
///
/// `kind` is `"state"` or `"health"`; `from`/`to` are the state or health names
/// before and after; `detail` carries the rest (exit, error code/message, restarts,
/// probe) as a JSON object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Row id: increases by one per stored event, across restarts (0 before storing).
    pub id: i64,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Process name.
    pub name: String,
    /// The process's pid at the time, if it had one.
    pub pid: Option<u32>,
    /// `"state"` or `"health"`.
    pub kind: String,
    /// State or health before.
    pub from: String,
    /// State or health after.
    pub to: String,
    /// Everything else, as a JSON object (`{}` when there is nothing).
    pub detail: serde_json::Value,
}
