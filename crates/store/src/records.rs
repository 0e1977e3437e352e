//! Process records: where a process came from, its spec, what it should be doing
//! (desired) and what it was last seen doing (observed).

use std::fmt;
use std::str::FromStr;

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// Where a process record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Declared in the configuration file; replaced when the file is reloaded.
    Config,
    /// Created through the API; kept until removed through the API.
    Api,
    /// The process of a feature instance; it lives and dies with the instance.
    Instance,
}

impl Source {
    /// The stored and serialized form: `"config"` or `"api"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::Api => "api",
            Source::Instance => "instance",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Source {
    type Err = ParseEnumError;

    /// Parses `"config"`, `"api"` or `"instance"` (exactly, lowercase).
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "config" => Ok(Source::Config),
            "api" => Ok(Source::Api),
            "instance" => Ok(Source::Instance),
            _ => Err(ParseEnumError::new("source", s, "config, api, instance")),
        }
    }
}

/// What the operator wants a process to be doing; survives daemon restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    /// Keep it running (start it after a daemon restart).
    Running,
    /// Leave it stopped.
    Stopped,
}

impl Desired {
    /// The stored and serialized form: `"running"` or `"stopped"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Desired::Running => "running",
            Desired::Stopped => "stopped",
        }
    }
}

impl fmt::Display for Desired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Desired {
    type Err = ParseEnumError;

    /// Parses `"running"` or `"stopped"` (exactly, lowercase).
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "running" => Ok(Desired::Running),
            "stopped" => Ok(Desired::Stopped),
            _ => Err(ParseEnumError::new("desired state", s, "running, stopped")),
        }
    }
}

/// Text that is not one of an enum's names ([`Source`], [`Desired`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {got:?} (expected one of: {expected})")]
pub struct ParseEnumError {
    what: &'static str,
    got: String,
    expected: &'static str,
}

impl ParseEnumError {
    fn new(what: &'static str, got: &str, expected: &'static str) -> Self {
        ParseEnumError {
            what,
            got: got.to_string(),
            expected,
        }
    }

    /// The text that was refused.
    pub fn got(&self) -> &str {
        &self.got
    }
}

/// One process as stored: its identity and spec, desired state, and the state the
/// daemon last observed (which a restarted daemon uses to find and verify the
/// process it left running).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessRecord {
    /// Unique process name (primary key).
    pub name: String,
    /// Where the record came from.
    pub source: Source,
    /// The process spec, serialized as JSON by the caller; the store only checks
    /// that it is JSON.
    pub spec_json: String,
    /// What the process should be doing.
    pub desired: Desired,
    /// Observed state name as last written by [`crate::Store::apply`]; `"stopped"`
    /// for a record never observed.
    pub state: String,
    /// Observed pid, if the process had one.
    pub pid: Option<u32>,
    /// Observed process group id.
    pub pgid: Option<u32>,
    /// Start time of `pid` (field 22 of `/proc/PID/stat`, clock ticks since boot),
    /// so a restarted daemon can tell whether the pid was reused.
    pub pid_start: Option<u64>,
    /// Observed restart count.
    pub restarts: u64,
    /// When the observed columns were last written (the [`Observation::at_ms`],
    /// milliseconds since the Unix epoch); 0 for a record never observed.
    pub updated_ms: i64,
}

/// The observed state of one process, written by [`crate::Store::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The process's name; an observation of a name with no record is skipped.
    pub name: String,
    /// Observed state name.
    pub state: String,
    /// Pid, if the process has one.
    pub pid: Option<u32>,
    /// Process group id.
    pub pgid: Option<u32>,
    /// Start time of `pid` (field 22 of `/proc/PID/stat`).
    pub pid_start: Option<u64>,
    /// Restart count.
    pub restarts: u64,
    /// When this was observed, milliseconds since the Unix epoch; becomes
    /// [`ProcessRecord::updated_ms`].
    pub at_ms: i64,
}

/// A `u64` as SQLite's signed INTEGER, refusing values beyond `i64::MAX`.
pub(crate) fn to_sql_u64(v: u64, field: &'static str, name: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("{field} {v} is beyond the range the store can keep (i64::MAX)"),
        )
        .ctx("name", name)
    })
}

/// A stored integer as `T`, or `STORE_CORRUPT` naming the column.
pub(crate) fn from_sql_int<T: TryFrom<i64>>(v: i64, column: &'static str, name: &str) -> Result<T> {
    T::try_from(v).map_err(|_| {
        Error::new(
            ErrorKind::Corrupt,
            format!("column {column} holds {v}, which is out of range"),
        )
        .ctx("name", name)
        .ctx("column", column)
    })
}

/// Like [`from_sql_int`] for a nullable column.
pub(crate) fn from_sql_opt<T: TryFrom<i64>>(
    v: Option<i64>,
    column: &'static str,
    name: &str,
) -> Result<Option<T>> {
    v.map(|v| from_sql_int(v, column, name)).transpose()
}

fn corrupt_enum(column: &'static str, name: &str, e: ParseEnumError) -> Error {
    Error::new(
        ErrorKind::Corrupt,
        format!("column {column} holds an unknown value"),
    )
    .ctx("name", name)
    .ctx("column", column)
    .with_source(e)
}

const COLUMNS: &str =
    "name, source, spec, desired, state, pid, pgid, pid_start, restarts, updated_ms";

/// The raw columns of one row; converted outside of rusqlite's row closure so
/// conversion errors become [`ErrorKind::Corrupt`] with context.
struct RawRecord {
    name: String,
    source: String,
    spec: String,
    desired: String,
    state: String,
    pid: Option<i64>,
    pgid: Option<i64>,
    pid_start: Option<i64>,
    restarts: i64,
    updated_ms: i64,
}

impl RawRecord {
    fn read(row: &Row<'_>) -> rusqlite::Result<RawRecord> {
        Ok(RawRecord {
            name: row.get(0)?,
            source: row.get(1)?,
            spec: row.get(2)?,
            desired: row.get(3)?,
            state: row.get(4)?,
            pid: row.get(5)?,
            pgid: row.get(6)?,
            pid_start: row.get(7)?,
            restarts: row.get(8)?,
            updated_ms: row.get(9)?,
        })
    }

    fn into_record(self) -> Result<ProcessRecord> {
        let name = self.name;
        let source = self
            .source
            .parse()
            .map_err(|e| corrupt_enum("source", &name, e))?;
        let desired = self
            .desired
            .parse()
            .map_err(|e| corrupt_enum("desired", &name, e))?;
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&self.spec) {
            return Err(
                Error::new(ErrorKind::Corrupt, "the stored spec is not valid JSON")
                    .ctx("name", &name)
                    .ctx("column", "spec")
                    .with_source(e),
            );
        }
        Ok(ProcessRecord {
            source,
            spec_json: self.spec,
            desired,
            state: self.state,
            pid: from_sql_opt(self.pid, "pid", &name)?,
            pgid: from_sql_opt(self.pgid, "pgid", &name)?,
            pid_start: from_sql_opt(self.pid_start, "pid_start", &name)?,
            restarts: from_sql_int(self.restarts, "restarts", &name)?,
            updated_ms: self.updated_ms,
            name,
        })
    }
}

/// Inserts a record, or updates source, spec and desired of an existing one.
pub(crate) fn put(
    conn: &Connection,
    name: &str,
    source: Source,
    spec_json: &str,
    desired: Desired,
) -> Result<()> {
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(spec_json) {
        return Err(
            Error::new(ErrorKind::InvalidInput, "the spec is not valid JSON")
                .ctx("name", name)
                .with_source(e),
        );
    }
    conn.prepare_cached(
        "INSERT INTO processes (name, source, spec, desired) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (name) DO UPDATE
         SET source = excluded.source, spec = excluded.spec, desired = excluded.desired",
    )
    .and_then(|mut st| st.execute(params![name, source.as_str(), spec_json, desired.as_str()]))
    .map_err(|e| Error::sqlite(e, "write the process record").ctx("name", name))?;
    Ok(())
}

/// Sets the desired state; `false` when there is no such record.
pub(crate) fn set_desired(conn: &Connection, name: &str, desired: Desired) -> Result<bool> {
    let n = conn
        .prepare_cached("UPDATE processes SET desired = ?2 WHERE name = ?1")
        .and_then(|mut st| st.execute(params![name, desired.as_str()]))
        .map_err(|e| Error::sqlite(e, "set the desired state").ctx("name", name))?;
    Ok(n > 0)
}

/// Deletes a record; `false` when there was none.
pub(crate) fn remove(conn: &Connection, name: &str) -> Result<bool> {
    let n = conn
        .prepare_cached("DELETE FROM processes WHERE name = ?1")
        .and_then(|mut st| st.execute(params![name]))
        .map_err(|e| Error::sqlite(e, "remove the process record").ctx("name", name))?;
    Ok(n > 0)
}

/// One record by name.
pub(crate) fn get(conn: &Connection, name: &str) -> Result<Option<ProcessRecord>> {
    let raw = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM processes WHERE name = ?1"))
        .and_then(|mut st| st.query_row(params![name], RawRecord::read).optional())
        .map_err(|e| Error::sqlite(e, "read the process record").ctx("name", name))?;
    raw.map(RawRecord::into_record).transpose()
}

/// Every record, ordered by name.
pub(crate) fn all(conn: &Connection) -> Result<Vec<ProcessRecord>> {
    let raws = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM processes ORDER BY name"))
        .and_then(|mut st| {
            st.query_map([], RawRecord::read)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(|e| Error::sqlite(e, "read the process records"))?;
    raws.into_iter().map(RawRecord::into_record).collect()
}

/// Writes the observed columns of one record (none if the name has no record).
pub(crate) fn observe(conn: &Connection, o: &Observation) -> Result<()> {
    let pid_start = o
        .pid_start
        .map(|v| to_sql_u64(v, "pid_start", &o.name))
        .transpose()?;
    let restarts = to_sql_u64(o.restarts, "restarts", &o.name)?;
    conn.prepare_cached(
        "UPDATE processes
         SET state = ?2, pid = ?3, pgid = ?4, pid_start = ?5, restarts = ?6, updated_ms = ?7
         WHERE name = ?1",
    )
    .and_then(|mut st| {
        st.execute(params![
            o.name, o.state, o.pid, o.pgid, pid_start, restarts, o.at_ms
        ])
    })
    .map_err(|e| Error::sqlite(e, "write the observed state").ctx("name", &o.name))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip_through_text_and_serde() {
        for s in [Source::Config, Source::Api] {
            assert_eq!(s.as_str().parse::<Source>().unwrap(), s);
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        for d in [Desired::Running, Desired::Stopped] {
            assert_eq!(d.as_str().parse::<Desired>().unwrap(), d);
            assert_eq!(d.to_string(), d.as_str());
            assert_eq!(
                serde_json::from_str::<Desired>(&format!("\"{d}\"")).unwrap(),
                d
            );
        }
        let err = "Running".parse::<Desired>().unwrap_err();
        assert_eq!(err.got(), "Running");
        assert!(err.to_string().contains("running, stopped"), "{err}");
    }

    #[test]
    fn out_of_range_integers_are_refused_both_ways() {
        assert_eq!(
            to_sql_u64(u64::MAX, "restarts", "a").unwrap_err().code(),
            "STORE_INVALID_INPUT"
        );
        assert_eq!(to_sql_u64(7, "restarts", "a").unwrap(), 7);
        assert_eq!(
            from_sql_int::<u32>(-1, "pid", "a").unwrap_err().code(),
            "STORE_CORRUPT"
        );
        assert_eq!(from_sql_opt::<u32>(None, "pid", "a").unwrap(), None);
    }
}
