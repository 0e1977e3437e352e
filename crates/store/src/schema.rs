//! The schema: an embedded, ordered list of migrations tracked with
//! `PRAGMA user_version`.
//!
//! Migration `i` (0-based) takes the file from version `i` to version `i + 1`. Each
//! runs in its own `BEGIN IMMEDIATE` transaction together with the `user_version`
//! bump, so a crash or error leaves the file at the last version that applied.
//! Migrations are append-only: once released, an entry never changes.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use crate::error::{Error, ErrorKind, Result};

/// The migrations, oldest first. `MIGRATIONS.len()` is the schema version this
/// build writes.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: meta, process records, event history.
    "CREATE TABLE meta (
        key   TEXT PRIMARY KEY NOT NULL,
        value TEXT NOT NULL
    );
    CREATE TABLE processes (
        name       TEXT PRIMARY KEY NOT NULL,
        source     TEXT NOT NULL,
        spec       TEXT NOT NULL,
        desired    TEXT NOT NULL,
        state      TEXT NOT NULL DEFAULT 'stopped',
        pid        INTEGER,
        pgid       INTEGER,
        pid_start  INTEGER,
        restarts   INTEGER NOT NULL DEFAULT 0,
        updated_ms INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE events (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms      INTEGER NOT NULL,
        name       TEXT NOT NULL,
        pid        INTEGER,
        kind       TEXT NOT NULL,
        from_value TEXT NOT NULL,
        to_value   TEXT NOT NULL,
        detail     TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_name_id ON events (name, id);
    CREATE INDEX events_at_ms ON events (at_ms);",
    // 2: feature instances. The record body is the caller's JSON; the columns
    // beside it are what lookups and uniqueness need.
    "CREATE TABLE instances (
        id         TEXT PRIMARY KEY NOT NULL,
        name       TEXT NOT NULL UNIQUE,
        feature    TEXT NOT NULL,
        state      TEXT NOT NULL,
        body       TEXT NOT NULL,
        updated_ms INTEGER NOT NULL DEFAULT 0
    );",
];

/// The schema version this build writes and understands.
pub(crate) const CURRENT: i64 = MIGRATIONS.len() as i64;

/// Reads `PRAGMA user_version`.
pub(crate) fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// The error for a file written by a newer schema.
pub(crate) fn too_new(found: i64, path: Option<&Path>) -> Error {
    Error::new(
        ErrorKind::SchemaTooNew,
        format!(
            "the database has schema version {found}, this hangar knows versions up to {CURRENT}"
        ),
    )
    .ctx("found", found)
    .ctx("supported", CURRENT)
    .at(path)
}

/// Applies every migration the file has not seen yet; returns the resulting
/// version. `found` is the `user_version` read before: migrations up to it are
/// skipped without taking the write lock. `path` is only used for error context.
pub(crate) fn migrate(conn: &mut Connection, found: i64, path: Option<&Path>) -> Result<i64> {
    if found > CURRENT {
        return Err(too_new(found, path));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let target = i as i64 + 1;
        if found >= target {
            continue;
        }
        let failed = |e: rusqlite::Error| {
            Error::new(
                ErrorKind::MigrationFailed,
                format!("could not migrate the database to schema version {target}"),
            )
            .ctx("version", target)
            .at(path)
            .with_source(e)
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed)?;
        // Read inside the write lock: another process may have migrated meanwhile.
        let current = user_version(&tx).map_err(failed)?;
        if current > CURRENT {
            return Err(too_new(current, path));
        }
        if current >= target {
            continue; // dropping `tx` rolls back the empty transaction
        }
        tx.execute_batch(sql).map_err(failed)?;
        tx.pragma_update(None, "user_version", target)
            .map_err(failed)?;
        tx.commit().map_err(failed)?;
    }
    Ok(CURRENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_to_an_empty_database_and_are_idempotent() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut conn, 0, None).unwrap(), CURRENT);
        assert_eq!(user_version(&conn).unwrap(), CURRENT);
        // A second run sees the version and applies nothing (CREATE TABLE would
        // fail), also when told the file is older: it re-reads inside the lock.
        assert_eq!(migrate(&mut conn, CURRENT, None).unwrap(), CURRENT);
        assert_eq!(migrate(&mut conn, 0, None).unwrap(), CURRENT);
    }

    #[test]
    fn a_newer_version_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        let err = migrate(&mut conn, CURRENT + 1, None).unwrap_err();
        assert_eq!(err.code(), "STORE_SCHEMA_TOO_NEW");
        assert!(err.hint().contains("newer hangar"), "{err}");
    }

    #[test]
    fn a_failing_migration_leaves_the_previous_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE events (x)").unwrap();
        let err = migrate(&mut conn, 0, None).unwrap_err();
        assert_eq!(err.code(), "STORE_MIGRATION_FAILED");
        assert_eq!(user_version(&conn).unwrap(), 0);
        // Nothing of the failed migration remains.
        let meta: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'meta'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(meta, 0);
    }
}
