//! [`Store`]: one SQLite connection behind a mutex, opened, configured and
//! migrated; every public operation of the crate.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{
    params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};

use crate::error::{io_hint, Error, ErrorKind, Result};
use crate::history::{self, EventQuery, EventRecord};
use crate::records::{self, Desired, Observation, ProcessRecord, Source};
use crate::reserve::Reserve;
use crate::schema;

/// How long a statement waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements kept per connection: the fixed statements plus the up to
/// 64 shapes of the event query.
const STATEMENT_CACHE: usize = 96;

/// The store of one data directory: process records, the `supervisor_id` and the
/// event history, in one SQLite database.
///
/// Synchronous: the daemon calls it from a dedicated thread or `spawn_blocking`.
/// `Send + Sync`; calls are serialized on an internal mutex. Several `Store`s (in
/// one process or several) may open the same file: SQLite's WAL lets readers run
/// beside one writer, and a writer waits up to 5 s for another's lock.
pub struct Store {
    conn: Mutex<Connection>,
    path: Option<PathBuf>,
    supervisor_id: String,
    schema_version: i64,
    /// Space set aside for the writes that record a full disk (file stores).
    reserve: Option<Reserve>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("supervisor_id", &self.supervisor_id)
            .field("schema_version", &self.schema_version)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the database at `path`, creating the file (but not its directory) if
    /// it does not exist, and applies the migrations this build has that the file
    /// has not seen.
    ///
    /// The connection uses WAL journaling (unless the file system cannot share
    /// memory between processes, where SQLite keeps its rollback journal),
    /// `synchronous = NORMAL` (a power loss may lose the last commits, never
    /// consistency) and a 5 s busy timeout.
    ///
    /// Errors: `STORE_OPEN_FAILED` (missing directory, permissions, not a SQLite
    /// file, locked), `STORE_SCHEMA_TOO_NEW` (a newer hangar wrote the file; it is
    /// left untouched), `STORE_MIGRATION_FAILED`.
    pub fn open(path: &Path) -> Result<Store> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|e| open_failed(e, "could not open the database", Some(path)))?;
        Store::init(conn, Some(path.to_path_buf()))
    }

    /// A private, empty database in memory, migrated like a file; for tests and
    /// for running without a data directory.
    pub fn open_in_memory() -> Result<Store> {
        let conn = Connection::open_in_memory()
            .map_err(|e| open_failed(e, "could not open an in-memory database", None))?;
        Store::init(conn, None)
    }

    fn init(mut conn: Connection, path: Option<PathBuf>) -> Result<Store> {
        let p = path.as_deref();
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| open_failed(e, "could not set the busy timeout", p))?;
        // The first read: fails here if the file is not a database. Checked before
        // anything writes, so a file from a newer hangar stays untouched.
        let found = schema::user_version(&conn)
            .map_err(|e| open_failed(e, "could not read the schema version", p))?;
        if found > schema::CURRENT {
            return Err(schema::too_new(found, p));
        }
        if p.is_some() {
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))
                .map_err(|e| open_failed(e, "could not switch to WAL journaling", p))?;
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| open_failed(e, "could not set synchronous = NORMAL", p))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let schema_version = schema::migrate(&mut conn, found, p)?;
        let supervisor_id = ensure_supervisor_id(&mut conn).map_err(|e| e.at(p))?;
        let reserve = p.map(Reserve::open);
        Ok(Store {
            conn: Mutex::new(conn),
            path,
            supervisor_id,
            schema_version,
            reserve,
        })
    }

    /// The database file, or `None` for an in-memory store.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// This data directory's identity: 16 lowercase hex characters, generated at
    /// the first open and the same on every later one.
    pub fn supervisor_id(&self) -> &str {
        &self.supervisor_id
    }

    /// The schema version of the file after opening (the number of migrations
    /// applied).
    pub fn schema_version(&self) -> i64 {
        self.schema_version
    }

    /// Inserts a process record, or updates the source, spec and desired state of
    /// an existing one, leaving its observed columns (state, pid, pgid, pid_start,
    /// restarts, updated_ms) as they are. A new record starts as `"stopped"` with
    /// no pid, 0 restarts and `updated_ms` 0.
    ///
    /// `spec_json` must be JSON (`STORE_INVALID_INPUT` otherwise).
    pub fn put_process(
        &self,
        name: &str,
        source: Source,
        spec_json: &str,
        desired: Desired,
    ) -> Result<()> {
        self.spending_reserve(|| {
            records::put(&self.conn(), name, source, spec_json, desired).map_err(|e| self.at(e))
        })
    }

    /// Sets a process's desired state; `false` when there is no such record.
    pub fn set_desired(&self, name: &str, desired: Desired) -> Result<bool> {
        self.spending_reserve(|| {
            records::set_desired(&self.conn(), name, desired).map_err(|e| self.at(e))
        })
    }

    /// Deletes a process record; `false` when there was none. Its events stay in
    /// the history.
    pub fn remove_process(&self, name: &str) -> Result<bool> {
        self.spending_reserve(|| records::remove(&self.conn(), name).map_err(|e| self.at(e)))
    }

    /// One process record by name.
    pub fn process(&self, name: &str) -> Result<Option<ProcessRecord>> {
        records::get(&self.conn(), name).map_err(|e| self.at(e))
    }

    /// Every process record, ordered by name (byte order).
    pub fn processes(&self) -> Result<Vec<ProcessRecord>> {
        records::all(&self.conn()).map_err(|e| self.at(e))
    }

    /// Inserts or replaces an instance record (by id). `STORE_CONFLICT` when
    /// another instance has the name; `STORE_INVALID_INPUT` when the body is not
    /// JSON.
    pub fn put_instance(&self, row: &crate::InstanceRow) -> Result<()> {
        self.spending_reserve(|| crate::instances::put(&self.conn(), row).map_err(|e| self.at(e)))
    }

    /// One instance record by id.
    pub fn instance(&self, id: &str) -> Result<Option<crate::InstanceRow>> {
        crate::instances::get(&self.conn(), id).map_err(|e| self.at(e))
    }

    /// Every instance record, ordered by name.
    pub fn instances(&self) -> Result<Vec<crate::InstanceRow>> {
        crate::instances::all(&self.conn()).map_err(|e| self.at(e))
    }

    /// Deletes an instance record; `false` when there was none.
    pub fn remove_instance(&self, id: &str) -> Result<bool> {
        self.spending_reserve(|| crate::instances::remove(&self.conn(), id).map_err(|e| self.at(e)))
    }

    /// One transaction: update observed columns of each named process (rows that
    /// do not exist are skipped, not created), then insert the events, setting
    /// each event's `id` to its new row id. Either all or nothing: on error nothing
    /// is stored and no `id` is changed.
    ///
    /// Ids increase by one per event in slice order, and never repeat, even after
    /// pruning or deleting every event.
    pub fn apply(&self, observed: &[Observation], events: &mut [EventRecord]) -> Result<()> {
        if observed.is_empty() && events.is_empty() {
            return Ok(());
        }
        let ids = self.write("commit observations and events", |tx| {
            for o in observed {
                records::observe(tx, o)?;
            }
            history::insert(tx, events)
        })?;
        for (ev, id) in events.iter_mut().zip(ids) {
            ev.id = id;
        }
        Ok(())
    }

    /// The events matching `q`, always in ascending id order (see [`EventQuery`]).
    pub fn events(&self, q: &EventQuery) -> Result<Vec<EventRecord>> {
        history::query(&self.conn(), q).map_err(|e| self.at(e))
    }

    /// The highest event id assigned so far, also when pruning has since deleted
    /// that event; 0 when no event was ever stored. Events stored later have
    /// larger ids, so this is the `after_id` for "from now on".
    pub fn last_event_id(&self) -> Result<i64> {
        history::last_id(&self.conn()).map_err(|e| self.at(e))
    }

    /// Deletes events with `at_ms < now_ms - max_age_ms` (when `max_age_ms` is
    /// set) and then all but the newest (highest id) `max_rows` (when set), in one
    /// transaction. Returns the number of events deleted.
    pub fn prune_events(
        &self,
        max_age_ms: Option<i64>,
        max_rows: Option<u64>,
        now_ms: i64,
    ) -> Result<usize> {
        if max_age_ms.is_none() && max_rows.is_none() {
            return Ok(0);
        }
        self.write("commit the pruning", |tx| {
            history::prune(tx, max_age_ms, max_rows, now_ms)
        })
    }

    /// The connection. A panic while it was held cannot leave it mid-transaction
    /// (dropping a `Transaction` rolls back), so a poisoned lock is still usable.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction (taking the write lock up
    /// front, so it waits for other writers instead of failing to upgrade) and
    /// commits; on any error everything is rolled back. `what` names the commit in
    /// errors.
    /// A write that fails for lack of disk space releases the reserve and is
    /// tried once more.
    fn write<T>(&self, what: &str, mut f: impl FnMut(&Transaction<'_>) -> Result<T>) -> Result<T> {
        self.spending_reserve(|| {
            let mut conn = self.conn();
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| self.at(Error::sqlite(e, "begin a transaction")))?;
            let out = f(&tx).map_err(|e| self.at(e))?;
            tx.commit().map_err(|e| self.at(Error::sqlite(e, what)))?;
            Ok(out)
        })
    }

    /// Runs the write `f`; when the disk is full and the reserve is held,
    /// releases the reserve and runs `f` again.
    fn spending_reserve<T>(&self, mut f: impl FnMut() -> Result<T>) -> Result<T> {
        match f() {
            Err(e) if e.is_disk_full() && self.reserve.as_ref().is_some_and(Reserve::release) => {
                f()
            }
            r => r,
        }
    }

    /// `true` once after each time a full disk made the store release its
    /// reserve: the caller records that the disk filled (the reserve's space
    /// lets that record through).
    pub fn take_reserve_released(&self) -> bool {
        self.reserve.as_ref().is_some_and(Reserve::take_released)
    }

    /// Whether a released reserve is yet to be made again.
    pub fn reserve_missing(&self) -> bool {
        self.reserve.as_ref().is_some_and(|r| !r.held())
    }

    /// Make the reserve again once the file system has room for twice its
    /// size ([`RESERVE_BYTES`](crate::RESERVE_BYTES)); `true` when it is held
    /// afterwards (always for an in-memory store, which has none).
    pub fn restore_reserve(&self) -> bool {
        self.reserve.as_ref().is_none_or(Reserve::restore)
    }

    /// Adds this store's path to an error's context.
    fn at(&self, e: Error) -> Error {
        e.at(self.path())
    }
}

/// `STORE_OPEN_FAILED` with the most precise hint available.
fn open_failed(e: rusqlite::Error, message: &str, path: Option<&Path>) -> Error {
    let err = Error::new(ErrorKind::OpenFailed, message);
    let err = match io_hint(&e) {
        Some(h) => err.with_hint(h),
        None => err,
    };
    err.at(path).with_source(e)
}

/// Reads the `supervisor_id` from `meta`, generating and storing one the first
/// time. Another process opening the same new file at once may win the race; both
/// then read the value that was stored first.
fn ensure_supervisor_id(conn: &mut Connection) -> Result<String> {
    let stored =
        match read_supervisor_id(conn).map_err(|e| Error::sqlite(e, "read the supervisor id"))? {
            Some(id) => Some(id),
            None => store_supervisor_id(conn, &format!("{:016x}", fastrand::u64(..)))
                .map_err(|e| Error::sqlite(e, "store the supervisor id"))?,
        };
    let id = stored.ok_or_else(|| {
        Error::new(
            ErrorKind::Corrupt,
            "the supervisor id vanished after storing it",
        )
    })?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::new(
            ErrorKind::Corrupt,
            "the stored supervisor id is not hexadecimal",
        )
        .ctx("supervisor_id", id));
    }
    Ok(id)
}

fn read_supervisor_id(conn: &Connection) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT value FROM meta WHERE key = 'supervisor_id'",
        [],
        |r| r.get(0),
    )
    .optional()
}

/// Stores `fresh` unless an id is there already; returns the stored id.
fn store_supervisor_id(conn: &mut Connection, fresh: &str) -> rusqlite::Result<Option<String>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('supervisor_id', ?1)",
        params![fresh],
    )?;
    let id = read_supervisor_id(&tx)?;
    tx.commit()?;
    Ok(id)
}
