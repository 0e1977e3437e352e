//! Feature instance records. The store keeps the caller's JSON body opaque and
//! indexes what lookups need: id, unique name, feature and state.

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{Error, ErrorKind, Result};

/// One stored instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRow {
    /// Stable id (primary key).
    pub id: String,
    /// Unique name.
    pub name: String,
    /// The feature it is an instance of.
    pub feature: String,
    /// Its lifecycle state, as the caller names it.
    pub state: String,
    /// The caller's record, as JSON.
    pub body: String,
    /// When it was last written (ms since the Unix epoch).
    pub updated_ms: i64,
}

pub(crate) fn put(conn: &Connection, row: &InstanceRow) -> Result<()> {
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&row.body) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "the instance body is not valid JSON",
        )
        .ctx("instance", &row.id)
        .with_source(e));
    }
    conn.prepare_cached(
        "INSERT INTO instances (id, name, feature, state, body, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (id) DO UPDATE
         SET name = excluded.name, feature = excluded.feature, state = excluded.state,
             body = excluded.body, updated_ms = excluded.updated_ms",
    )
    .and_then(|mut st| {
        st.execute(params![
            row.id,
            row.name,
            row.feature,
            row.state,
            row.body,
            row.updated_ms
        ])
    })
    .map_err(|e| match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Error::new(
                ErrorKind::Conflict,
                format!("another instance is named {:?}", row.name),
            )
            .ctx("instance", &row.id)
        }
        e => Error::sqlite(e, "write the instance record").ctx("instance", &row.id),
    })?;
    Ok(())
}

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<InstanceRow> {
    Ok(InstanceRow {
        id: r.get(0)?,
        name: r.get(1)?,
        feature: r.get(2)?,
        state: r.get(3)?,
        body: r.get(4)?,
        updated_ms: r.get(5)?,
    })
}

pub(crate) fn get(conn: &Connection, id: &str) -> Result<Option<InstanceRow>> {
    conn.prepare_cached(
        "SELECT id, name, feature, state, body, updated_ms FROM instances WHERE id = ?1",
    )
    .and_then(|mut st| st.query_row([id], from_row).optional())
    .map_err(|e| Error::sqlite(e, "read the instance record").ctx("instance", id))
}

pub(crate) fn all(conn: &Connection) -> Result<Vec<InstanceRow>> {
    let mut st = conn
        .prepare_cached(
            "SELECT id, name, feature, state, body, updated_ms FROM instances ORDER BY name",
        )
        .map_err(|e| Error::sqlite(e, "list instance records"))?;
    let rows = st
        .query_map([], from_row)
        .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| Error::sqlite(e, "list instance records"))?;
    Ok(rows)
}

pub(crate) fn remove(conn: &Connection, id: &str) -> Result<bool> {
    conn.prepare_cached("DELETE FROM instances WHERE id = ?1")
        .and_then(|mut st| st.execute([id]))
        .map(|n| n > 0)
        .map_err(|e| Error::sqlite(e, "delete the instance record").ctx("instance", id))
}
