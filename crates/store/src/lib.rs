//! hangar's SQLite store: what the daemon (`hangar serve`) must remember across
//! its own crashes and restarts.
//!
//! One [`Store`] holds one database file (per data directory) with three parts:
//!
//! - **Process records** ([`ProcessRecord`]), one per process name: the spec as
//!   JSON, where it came from ([`Source`]), what the operator wants
//!   ([`Desired`], written by [`Store::put_process`] and [`Store::set_desired`]),
//!   and what the daemon last observed (state, pid, process group, the pid's start
//!   time, restarts). A restarted daemon reads them with [`Store::processes`] and
//!   uses `pid` + `pid_start` to tell whether a pid still belongs to its process
//!   or was reused.
//! - **The event history** ([`EventRecord`]), with ids that increase by one per
//!   event and never repeat, queried with an [`EventQuery`] and trimmed with
//!   [`Store::prune_events`].
//! - **Meta**: a random [`Store::supervisor_id`] that identifies the data
//!   directory, stable across reopens.
//!
//! The daemon writes observed state and events together: [`Store::apply`] takes
//! [`Observation`]s and events and stores both in one transaction, so after a
//! crash the records never disagree with the history.
//!
//! The API is synchronous (call it from a dedicated thread or `spawn_blocking`).
//! Every failure is an [`Error`] with a stable code ([`ErrorKind`]), context (the
//! database path, the process name) and a hint. The schema is an embedded list of
//! migrations applied at [`Store::open`]; a file written by a newer hangar is
//! refused (`STORE_SCHEMA_TOO_NEW`) and left untouched.
//!
//! ```
//! use hangar_store::{Desired, EventQuery, EventRecord, Observation, Source, Store};
//!
//! # fn main() -> hangar_store::Result<()> {
//! let dir = tempfile::tempdir().expect("temporary directory");
//! let store = Store::open(&dir.path().join("hangar.db"))?;
//! store.put_process("web", Source::Api, r#"{"command":"httpd"}"#, Desired::Running)?;
//!
//! // The daemon started it: record what it saw and the event, atomically.
//! let seen = Observation {
//!     name: "web".into(),
//!     state: "running".into(),
//!     pid: Some(4242),
//!     pgid: Some(4242),
//!     pid_start: Some(123_456),
//!     restarts: 0,
//!     at_ms: 1_700_000_000_000,
//! };
//! let mut events = [EventRecord {
//!     id: 0,
//!     at_ms: 1_700_000_000_000,
//!     name: "web".into(),
//!     pid: Some(4242),
//!     kind: "state".into(),
//!     from: "starting".into(),
//!     to: "running".into(),
//!     detail: serde_json::json!({}),
//! }];
//! store.apply(&[seen], &mut events)?;
//! assert_eq!(events[0].id, 1);
//!
//! // After a restart of the daemon, the same file tells it what to look for.
//! drop(store);
//! let store = Store::open(&dir.path().join("hangar.db"))?;
//! let web = store.process("web")?.expect("record kept");
//! assert_eq!((web.desired, web.pid), (Desired::Running, Some(4242)));
//! let history = store.events(&EventQuery { name_glob: Some("w*".into()), ..Default::default() })?;
//! assert_eq!(history, events);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod error;
mod history;
mod instances;
mod records;
mod reserve;
mod schema;
mod store;

pub use error::{Error, ErrorKind, Result};
pub use history::{EventQuery, EventRecord};
pub use instances::InstanceRow;
pub use records::{Desired, Observation, ParseEnumError, ProcessRecord, Source};
pub use reserve::RESERVE_BYTES;
pub use store::Store;
