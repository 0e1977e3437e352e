//! The event history: append in batches, query with filters, prune by age and
//! count.

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, Row};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::records::from_sql_opt;

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

/// Which events [`crate::Store::events`] returns. Every filter that is set must
/// match; the default matches everything and returns the newest
/// [`EventQuery::DEFAULT_LIMIT`] events.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Process names matching this SQLite `GLOB` pattern (`*`, `?`, `[...]`;
    /// case-sensitive).
    pub name_glob: Option<String>,
    /// Only these kinds (`"state"`, `"health"`); empty means all.
    pub kinds: Vec<String>,
    /// Only events with `id > after_id`: resume after the last event seen.
    pub after_id: Option<i64>,
    /// Only events with `id < before_id`: page back from the oldest one seen.
    pub before_id: Option<i64>,
    /// Only events with `at_ms >= since_ms`.
    pub since_ms: Option<i64>,
    /// Only events with `at_ms < until_ms`.
    pub until_ms: Option<i64>,
    /// Keep the newest `limit` matches (still returned oldest first). `None` means
    /// [`EventQuery::DEFAULT_LIMIT`]; larger values are capped at
    /// [`EventQuery::MAX_LIMIT`].
    pub limit: Option<u32>,
    /// Keep the oldest `limit` matches instead of the newest: for paging
    /// forward through history with `after_id` without skipping any.
    pub oldest: bool,
}

impl EventQuery {
    /// The limit when [`EventQuery::limit`] is `None`.
    pub const DEFAULT_LIMIT: u32 = 1000;
    /// The largest limit honoured.
    pub const MAX_LIMIT: u32 = 100_000;

    /// The limit this query applies.
    pub fn effective_limit(&self) -> u32 {
        self.limit
            .unwrap_or(Self::DEFAULT_LIMIT)
            .min(Self::MAX_LIMIT)
    }
}

/// Inserts events in the caller's transaction; returns their new ids, in order.
pub(crate) fn insert(conn: &Connection, events: &[EventRecord]) -> Result<Vec<i64>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut st = conn
        .prepare_cached(
            "INSERT INTO events (at_ms, name, pid, kind, from_value, to_value, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .map_err(|e| Error::sqlite(e, "insert events"))?;
    let mut ids = Vec::with_capacity(events.len());
    for ev in events {
        let detail = serde_json::to_string(&ev.detail).map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                "the event detail is not serializable",
            )
            .ctx("name", &ev.name)
            .with_source(e)
        })?;
        let id = st
            .insert(params![
                ev.at_ms, ev.name, ev.pid, ev.kind, ev.from, ev.to, detail
            ])
            .map_err(|e| Error::sqlite(e, "insert events").ctx("name", &ev.name))?;
        ids.push(id);
    }
    Ok(ids)
}

const COLUMNS: &str = "id, at_ms, name, pid, kind, from_value, to_value, detail";

/// The raw columns of one event row; see `RawRecord` in `records.rs`.
struct RawEvent {
    id: i64,
    at_ms: i64,
    name: String,
    pid: Option<i64>,
    kind: String,
    from: String,
    to: String,
    detail: String,
}

impl RawEvent {
    fn read(row: &Row<'_>) -> rusqlite::Result<RawEvent> {
        Ok(RawEvent {
            id: row.get(0)?,
            at_ms: row.get(1)?,
            name: row.get(2)?,
            pid: row.get(3)?,
            kind: row.get(4)?,
            from: row.get(5)?,
            to: row.get(6)?,
            detail: row.get(7)?,
        })
    }

    fn into_event(self) -> Result<EventRecord> {
        let detail = serde_json::from_str(&self.detail).map_err(|e| {
            Error::new(
                ErrorKind::Corrupt,
                "the stored event detail is not valid JSON",
            )
            .ctx("name", &self.name)
            .ctx("id", self.id)
            .with_source(e)
        })?;
        Ok(EventRecord {
            id: self.id,
            at_ms: self.at_ms,
            pid: from_sql_opt(self.pid, "pid", &self.name)?,
            name: self.name,
            kind: self.kind,
            from: self.from,
            to: self.to,
            detail,
        })
    }
}

/// The events matching `q`, oldest first.
pub(crate) fn query(conn: &Connection, q: &EventQuery) -> Result<Vec<EventRecord>> {
    let limit = q.effective_limit();
    if limit == 0 {
        return Ok(Vec::new());
    }
    // The SQL text depends only on which filters are set, so the statement cache
    // holds at most 64 shapes.
    let mut conds: Vec<String> = Vec::new();
    let mut args: Vec<Value> = Vec::new();
    let mut cond = |sql: &str, v: Value| {
        args.push(v);
        conds.push(sql.replace('?', &format!("?{}", args.len())));
    };
    if let Some(glob) = &q.name_glob {
        cond("name GLOB ?", Value::Text(glob.clone()));
    }
    if !q.kinds.is_empty() {
        let kinds = serde_json::to_string(&q.kinds).map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                "the kinds filter is not serializable",
            )
            .with_source(e)
        })?;
        cond(
            "kind IN (SELECT value FROM json_each(?))",
            Value::Text(kinds),
        );
    }
    if let Some(id) = q.after_id {
        cond("id > ?", Value::Integer(id));
    }
    if let Some(id) = q.before_id {
        cond("id < ?", Value::Integer(id));
    }
    if let Some(ms) = q.since_ms {
        cond("at_ms >= ?", Value::Integer(ms));
    }
    if let Some(ms) = q.until_ms {
        cond("at_ms < ?", Value::Integer(ms));
    }
    let mut sql = format!("SELECT {COLUMNS} FROM events");
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    args.push(Value::Integer(i64::from(limit)));
    let order = if q.oldest { "ASC" } else { "DESC" };
    sql.push_str(&format!(" ORDER BY id {order} LIMIT ?{}", args.len()));

    let raws = conn
        .prepare_cached(&sql)
        .and_then(|mut st| {
            st.query_map(params_from_iter(args), RawEvent::read)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(|e| Error::sqlite(e, "query events"))?;
    let mut out = raws
        .into_iter()
        .map(RawEvent::into_event)
        .collect::<Result<Vec<_>>>()?;
    if !q.oldest {
        out.reverse();
    }
    Ok(out)
}

/// The highest event id ever assigned (AUTOINCREMENT keeps it across pruning); 0
/// when no event was ever stored.
pub(crate) fn last_id(conn: &Connection) -> Result<i64> {
    conn.prepare_cached(
        "SELECT max(
             coalesce((SELECT max(id) FROM events), 0),
             coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0))",
    )
    .and_then(|mut st| st.query_row([], |r| r.get(0)))
    .map_err(|e| Error::sqlite(e, "read the last event id"))
}

/// Deletes events older than `now_ms - max_age_ms` and all but the newest
/// `max_rows`, in the caller's transaction; returns the number deleted.
pub(crate) fn prune(
    conn: &Connection,
    max_age_ms: Option<i64>,
    max_rows: Option<u64>,
    now_ms: i64,
) -> Result<usize> {
    let mut deleted = 0;
    if let Some(age) = max_age_ms {
        let cutoff = now_ms.saturating_sub(age);
        deleted += conn
            .prepare_cached("DELETE FROM events WHERE at_ms < ?1")
            .and_then(|mut st| st.execute(params![cutoff]))
            .map_err(|e| Error::sqlite(e, "prune events by age"))?;
    }
    if let Some(rows) = max_rows {
        // Beyond i64::MAX rows cannot exist; clamping keeps everything.
        let keep = i64::try_from(rows).unwrap_or(i64::MAX);
        deleted += conn
            .prepare_cached(
                "DELETE FROM events WHERE id <=
                 (SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?1)",
            )
            .and_then(|mut st| st.execute(params![keep]))
            .map_err(|e| Error::sqlite(e, "prune events by count"))?;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_defaults_and_caps() {
        let mut q = EventQuery::default();
        assert_eq!(q.effective_limit(), 1000);
        q.limit = Some(u32::MAX);
        assert_eq!(q.effective_limit(), 100_000);
        q.limit = Some(3);
        assert_eq!(q.effective_limit(), 3);
    }
}
