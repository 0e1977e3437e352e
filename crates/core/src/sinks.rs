//! History sinks: copy the event history to a JSON-lines file or an HTTP endpoint
//! (a webhook taking JSON arrays, or the OpenSearch / Elasticsearch `_bulk` API).
//!
//! # Delivery semantics
//!
//! The daemon stores every event in SQLite first and then [`Sinks::offer`]s it. The
//! store stays the source of truth; sinks are copies.
//!
//! - **Never blocks the daemon.** `offer` is a `try_send` per sink onto a bounded
//!   channel: no await, no lock held while sending, no I/O. Each sink is one tokio
//!   task that drains its channel.
//! - **Bounded memory.** A sink holds at most `buffer` queued events plus the batch
//!   it is sending. When the channel is full (the destination is down or slower
//!   than the event rate) the new event is dropped *for that sink only* and the
//!   sink's `dropped` counter increments; other sinks are unaffected.
//! - **At-least-once per sink while hangar runs.** A batch is retried with
//!   exponential backoff (100 ms doubling to 30 s, ±10 % jitter) until it is
//!   delivered, so an event that was accepted by `offer` is delivered unless it is
//!   dropped and counted. Retries may deliver an event twice: the file gets a
//!   duplicate line, the bulk API overwrites the same `_id` (the event id), a
//!   webhook should deduplicate on `id`. Events accepted by `offer` but still
//!   queued when the process dies are lost (they remain in the store).
//! - **Dropped, not retried:** an HTTP 4xx other than 429 (or a 3xx: redirects are
//!   not followed) drops the batch, and a bulk item the cluster rejects with a 4xx
//!   is dropped; both count in `dropped` and set `last_error`. Such a response
//!   means the request itself is wrong; retrying would block the sink for good.
//! - **Order.** Each sink delivers events in the order they were offered.
//! - **Shutdown.** [`Sinks::shutdown`] stops accepting, flushes what is queued
//!   (partial batches go at once) until a deadline, then abandons the rest and
//!   counts it as dropped.
//!
//! Every sink reports [`SinkStats`]: delivered, dropped, failed attempts, queued
//! and the last error.

use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hangar_store::EventRecord;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Default queue capacity of a sink, in events.
pub const DEFAULT_BUFFER: usize = 10_000;
/// Largest accepted `buffer`.
pub const MAX_BUFFER: usize = 1_000_000;
/// Default HTTP batch size, in events.
pub const DEFAULT_BATCH_SIZE: usize = 100;
/// Largest accepted `batch_size`.
pub const MAX_BATCH_SIZE: usize = 100_000;
/// Default time a partial HTTP batch waits for more events, in milliseconds.
pub const DEFAULT_FLUSH_INTERVAL_MS: u64 = 1_000;
/// Default per-request HTTP timeout, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Largest accepted `flush_interval_ms` and `timeout_ms` (one hour).
pub const MAX_INTERVAL_MS: u64 = 3_600_000;
/// Default index name for the bulk format.
pub const DEFAULT_INDEX: &str = "hangar-events";

/// First retry delay.
const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Most events the file sink writes in one go.
const FILE_BATCH_MAX: usize = 1_024;
/// Most bytes of a response body quoted in `last_error`.
const BODY_SNIPPET: usize = 200;

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// One history sink, as written in the configuration (TOML or JSON), tagged by
/// `type`:
///
/// ```json
/// {"type": "file", "path": "/var/log/hangar/events.jsonl"}
/// {"type": "http", "url": "https://search.example:9200/_bulk", "format": "bulk",
///  "headers": {"Authorization": "Basic ..."}, "batch_size": 500}
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SinkConfig {
    /// Append one JSON object per line to a file.
    File(FileSinkConfig),
    /// POST batches to an HTTP endpoint.
    Http(HttpSinkConfig),
}

/// A JSON-lines file sink (`type = "file"`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// Label in stats and logs; default `file:<path>`.
    #[serde(default)]
    pub name: Option<String>,
    /// The file to append to; created (mode 0600) with its parent directories.
    ///
    /// The file stays open; it is reopened only after a write error. Rotate it
    /// with copy-and-truncate (logrotate's `copytruncate`), not by renaming.
    pub path: PathBuf,
    /// Queue capacity in events; further events are dropped and counted.
    #[serde(default = "default_buffer")]
    pub buffer: usize,
}

/// An HTTP sink (`type = "http"`).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// Label in stats and logs; default `http:<url>` without credentials or query.
    #[serde(default)]
    pub name: Option<String>,
    /// Where to POST, `http://` or `https://`. For `bulk`, the full `.../_bulk` URL.
    pub url: String,
    /// Body format; default `json`.
    #[serde(default)]
    pub format: HttpFormat,
    /// Target index for `bulk` (default `hangar-events`); not allowed with `json`.
    #[serde(default)]
    pub index: Option<String>,
    /// Extra request headers, e.g. `Authorization`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Most events per request.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// How long a partial batch waits for more events after its first one, in ms.
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// Per-request timeout (connect, send, response), in ms.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Queue capacity in events; further events are dropped and counted.
    #[serde(default = "default_buffer")]
    pub buffer: usize,
}

/// The body format of an HTTP sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpFormat {
    /// A JSON array of events, `Content-Type: application/json`.
    #[default]
    Json,
    /// The OpenSearch / Elasticsearch `_bulk` API: NDJSON action/document pairs,
    /// `Content-Type: application/x-ndjson`, `_id` = the event id.
    Bulk,
}

fn default_buffer() -> usize {
    DEFAULT_BUFFER
}
fn default_batch_size() -> usize {
    DEFAULT_BATCH_SIZE
}
fn default_flush_interval_ms() -> u64 {
    DEFAULT_FLUSH_INTERVAL_MS
}
fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

/// Header values are redacted: they often carry credentials.
impl fmt::Debug for HttpSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: BTreeMap<&str, &str> = self
            .headers
            .keys()
            .map(|k| (k.as_str(), "<redacted>"))
            .collect();
        f.debug_struct("HttpSinkConfig")
            .field("name", &self.name)
            .field("url", &redact_url(&self.url))
            .field("format", &self.format)
            .field("index", &self.index)
            .field("headers", &headers)
            .field("batch_size", &self.batch_size)
            .field("flush_interval_ms", &self.flush_interval_ms)
            .field("timeout_ms", &self.timeout_ms)
            .field("buffer", &self.buffer)
            .finish()
    }
}

impl HttpSinkConfig {
    /// The bulk index in effect: `index` or `hangar-events`.
    pub fn effective_index(&self) -> &str {
        self.index.as_deref().unwrap_or(DEFAULT_INDEX)
    }
}

impl SinkConfig {
    /// `"file"` or `"http"`.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::File(_) => "file",
            SinkConfig::Http(_) => "http",
        }
    }

    /// The label in stats and logs: `name`, or `file:<path>` / `http:<url>` (the URL
    /// without credentials, query or fragment).
    pub fn name(&self) -> String {
        match self {
            SinkConfig::File(c) => match &c.name {
                Some(n) => n.clone(),
                None => format!("file:{}", c.path.display()),
            },
            SinkConfig::Http(c) => match &c.name {
                Some(n) => n.clone(),
                None => format!("http:{}", redact_url(&c.url)),
            },
        }
    }

    /// Queue capacity in events.
    pub fn buffer(&self) -> usize {
        match self {
            SinkConfig::File(c) => c.buffer,
            SinkConfig::Http(c) => c.buffer,
        }
    }

    /// Checks every field; the first problem is returned as
    /// [`SinkError::InvalidConfig`] naming the field.
    pub fn validate(&self) -> Result<(), SinkError> {
        let sink = self.name();
        let bad = |field: &str, message: String, hint: &'static str| SinkError::InvalidConfig {
            sink: sink.clone(),
            field: field.to_owned(),
            message,
            hint,
        };
        let name = match self {
            SinkConfig::File(c) => &c.name,
            SinkConfig::Http(c) => &c.name,
        };
        if name.as_deref().is_some_and(|n| n.trim().is_empty()) {
            return Err(bad(
                "name",
                "must not be empty".into(),
                "remove `name` to use the default label, or give a non-empty one",
            ));
        }
        let buffer = self.buffer();
        if !(1..=MAX_BUFFER).contains(&buffer) {
            return Err(bad(
                "buffer",
                format!("must be between 1 and {MAX_BUFFER}, got {buffer}"),
                "the default, 10000 events, suits most hosts",
            ));
        }
        match self {
            SinkConfig::File(c) => {
                if c.path.as_os_str().is_empty() {
                    return Err(bad(
                        "path",
                        "must not be empty".into(),
                        "give the file to append to, e.g. /var/log/hangar/events.jsonl",
                    ));
                }
            }
            SinkConfig::Http(c) => validate_http(c, &bad)?,
        }
        Ok(())
    }
}

fn validate_http(
    c: &HttpSinkConfig,
    bad: &dyn Fn(&str, String, &'static str) -> SinkError,
) -> Result<(), SinkError> {
    const URL_HINT: &str =
        "use an absolute http:// or https:// URL, e.g. https://search.example:9200/_bulk";
    let url = Url::parse(&c.url).map_err(|e| bad("url", format!("is not a URL: {e}"), URL_HINT))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(bad(
            "url",
            format!("must use http or https, got {:?}", url.scheme()),
            URL_HINT,
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("url", "has no host".into(), URL_HINT));
    }
    if !(1..=MAX_BATCH_SIZE).contains(&c.batch_size) {
        return Err(bad(
            "batch_size",
            format!(
                "must be between 1 and {MAX_BATCH_SIZE}, got {}",
                c.batch_size
            ),
            "the default is 100 events per request",
        ));
    }
    if c.flush_interval_ms > MAX_INTERVAL_MS {
        return Err(bad(
            "flush_interval_ms",
            format!(
                "must be at most {MAX_INTERVAL_MS} (one hour), got {}",
                c.flush_interval_ms
            ),
            "milliseconds a partial batch waits; the default is 1000",
        ));
    }
    if !(1..=MAX_INTERVAL_MS).contains(&c.timeout_ms) {
        return Err(bad(
            "timeout_ms",
            format!(
                "must be between 1 and {MAX_INTERVAL_MS}, got {}",
                c.timeout_ms
            ),
            "milliseconds per request; the default is 10000",
        ));
    }
    match (c.format, &c.index) {
        (HttpFormat::Json, Some(_)) => {
            return Err(bad(
                "index",
                "applies only to format \"bulk\"".into(),
                "remove `index`, or set format = \"bulk\" for the OpenSearch/Elasticsearch _bulk API",
            ));
        }
        (HttpFormat::Bulk, Some(index)) => {
            if let Some(problem) = index_problem(index) {
                return Err(bad(
                    "index",
                    problem,
                    "index names are lowercase, without \\ / * ? \" < > | , # : or spaces",
                ));
            }
        }
        _ => {}
    }
    for (name, value) in &c.headers {
        let field = format!("headers.{name}");
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            bad(
                &field,
                "is not a valid header name".into(),
                "header names are ASCII tokens, e.g. Authorization",
            )
        })?;
        if [
            CONTENT_TYPE,
            reqwest::header::CONTENT_LENGTH,
            reqwest::header::TRANSFER_ENCODING,
            reqwest::header::HOST,
        ]
        .contains(&header)
        {
            return Err(bad(
                &field,
                "is set by hangar".into(),
                "remove this header; the format decides the content type",
            ));
        }
        HeaderValue::from_str(value).map_err(|_| {
            bad(
                &field,
                "has an invalid value (control characters or non-visible bytes)".into(),
                "header values are visible ASCII on one line",
            )
        })?;
    }
    Ok(())
}

/// Why `index` is not a valid OpenSearch / Elasticsearch index name, if it is not.
fn index_problem(index: &str) -> Option<String> {
    if index.is_empty() {
        return Some("must not be empty".into());
    }
    if index.len() > 255 {
        return Some("must be at most 255 bytes".into());
    }
    if index == "." || index == ".." {
        return Some(format!("must not be {index:?}"));
    }
    if index.starts_with(['-', '_', '+']) {
        return Some("must not start with -, _ or +".into());
    }
    if let Some(ch) = index.chars().find(|ch| {
        ch.is_uppercase() || ch.is_whitespace() || ch.is_control() || "\\/*?\"<>|,#:".contains(*ch)
    }) {
        return Some(format!("must not contain {ch:?}"));
    }
    None
}

/// The URL without user info, query and fragment (which may carry credentials).
fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) => {
            // Both only fail for URLs that cannot have credentials.
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "<invalid url>".into(),
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// An error from configuring or starting history sinks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// A configuration field is invalid (`SINK_INVALID_CONFIG`).
    #[error("sink {sink:?}: {field}: {message}")]
    InvalidConfig {
        /// The sink's label.
        sink: String,
        /// The field at fault, e.g. `url`, `batch_size`, `headers.Authorization`.
        field: String,
        /// What is wrong.
        message: String,
        /// How to fix it.
        hint: &'static str,
    },
    /// The sink's file could not be created or opened (`SINK_IO`).
    #[error("sink {sink:?}: cannot open {}: {source}", path.display())]
    Io {
        /// The sink's label.
        sink: String,
        /// The file or directory at fault.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The HTTP client could not be built (`SINK_HTTP_CLIENT`).
    #[error("sink {sink:?}: cannot build the HTTP client: {message}")]
    HttpClient {
        /// The sink's label.
        sink: String,
        /// What failed.
        message: String,
    },
    /// [`Sinks::start`] was called outside a tokio runtime (`SINK_NO_RUNTIME`).
    #[error("history sinks must be started inside a tokio runtime")]
    NoRuntime,
}

impl SinkError {
    /// The stable code: `SINK_INVALID_CONFIG`, `SINK_IO`, `SINK_HTTP_CLIENT` or
    /// `SINK_NO_RUNTIME`.
    pub fn code(&self) -> &'static str {
        match self {
            SinkError::InvalidConfig { .. } => "SINK_INVALID_CONFIG",
            SinkError::Io { .. } => "SINK_IO",
            SinkError::HttpClient { .. } => "SINK_HTTP_CLIENT",
            SinkError::NoRuntime => "SINK_NO_RUNTIME",
        }
    }

    /// What kind of failure it is.
    pub fn category(&self) -> crate::Category {
        match self {
            SinkError::InvalidConfig { .. } => crate::Category::Invalid,
            SinkError::Io { .. } | SinkError::HttpClient { .. } | SinkError::NoRuntime => {
                crate::Category::Internal
            }
        }
    }

    /// A suggestion for the fix.
    pub fn hint(&self) -> &str {
        match self {
            SinkError::InvalidConfig { hint, .. } => hint,
            SinkError::Io { .. } => {
                "check that the directory exists or can be created, and that hangar's user may write the file"
            }
            SinkError::HttpClient { .. } => "check the TLS setup of the host (certificate store)",
            SinkError::NoRuntime => "call Sinks::start from within the daemon's tokio runtime",
        }
    }

    /// The configuration field at fault, for `SINK_INVALID_CONFIG`.
    pub fn field(&self) -> Option<&str> {
        match self {
            SinkError::InvalidConfig { field, .. } => Some(field),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Stats and shared counters
// ---------------------------------------------------------------------------

/// A snapshot of one sink's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkStats {
    /// The sink's label.
    pub name: String,
    /// `"file"` or `"http"`.
    pub kind: String,
    /// Events written or acknowledged by the destination.
    pub delivered: u64,
    /// Events given up: buffer full, rejected by the destination (4xx), or still
    /// queued when shutdown's deadline passed.
    pub dropped: u64,
    /// Failed write or request attempts (each is retried).
    pub failed_attempts: u64,
    /// Events accepted and not yet delivered or dropped, including the batch in
    /// flight.
    pub queued: usize,
    /// The most recent failure, kept after later successes.
    pub last_error: Option<String>,
}

/// Counters shared by a sink's task and [`Sinks`].
struct Shared {
    name: String,
    kind: &'static str,
    delivered: AtomicU64,
    dropped: AtomicU64,
    failed_attempts: AtomicU64,
    queued: AtomicUsize,
    /// Set on the first drop of an overflow episode (to warn once), cleared by the
    /// task when a batch goes through.
    overflowing: AtomicBool,
    /// Set when the destination rejects a batch (to warn once), cleared when one
    /// goes through.
    rejecting: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    fn new(name: String, kind: &'static str) -> Shared {
        Shared {
            name,
            kind,
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            overflowing: AtomicBool::new(false),
            rejecting: AtomicBool::new(false),
            last_error: Mutex::new(None),
        }
    }

    fn stats(&self) -> SinkStats {
        SinkStats {
            name: self.name.clone(),
            kind: self.kind.to_owned(),
            delivered: self.delivered.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            failed_attempts: self.failed_attempts.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    fn set_error(&self, message: String) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(message);
    }

    fn delivered(&self, n: usize) {
        self.delivered.fetch_add(n as u64, Ordering::Relaxed);
        self.queued.fetch_sub(n, Ordering::Relaxed);
        self.overflowing.store(false, Ordering::Relaxed);
        self.rejecting.store(false, Ordering::Relaxed);
    }

    /// Gives up on `n` events; warns on the first rejection in a row, debug after.
    fn dropped(&self, n: usize, why: String) {
        self.dropped.fetch_add(n as u64, Ordering::Relaxed);
        self.queued.fetch_sub(n, Ordering::Relaxed);
        if self.rejecting.swap(true, Ordering::Relaxed) {
            tracing::debug!(sink = %self.name, events = n, error = %why, "history sink dropped events");
        } else {
            tracing::warn!(sink = %self.name, events = n, error = %why, "history sink dropped events");
        }
        self.set_error(why);
    }

    /// Records a failed attempt; warns on the first of a batch, debug after.
    fn failed(&self, attempt: u32, why: String) {
        self.failed_attempts.fetch_add(1, Ordering::Relaxed);
        if attempt == 1 {
            tracing::warn!(sink = %self.name, error = %why, "history sink delivery failed; retrying");
        } else {
            tracing::debug!(sink = %self.name, attempt, error = %why, "history sink delivery failed again");
        }
        self.set_error(why);
    }
}

// ---------------------------------------------------------------------------
// Sinks
// ---------------------------------------------------------------------------

/// The running history sinks: one tokio task per sink, each fed by a bounded
/// channel.
pub struct Sinks {
    sinks: Vec<Running>,
}

struct Running {
    tx: mpsc::Sender<Arc<EventRecord>>,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl fmt::Debug for Sinks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.sinks.iter().map(|s| &s.shared.name))
            .finish()
    }
}

impl Sinks {
    /// Validates every configuration, opens file sinks (creating their parent
    /// directories and files) and builds HTTP clients, then spawns one task per
    /// sink on the current tokio runtime. Nothing is started unless everything is
    /// valid. Labels must be unique.
    pub fn start(configs: Vec<SinkConfig>) -> Result<Sinks, SinkError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| SinkError::NoRuntime)?;
        let mut names = std::collections::HashSet::new();
        for config in &configs {
            config.validate()?;
            let name = config.name();
            if !names.insert(name.clone()) {
                return Err(SinkError::InvalidConfig {
                    sink: name,
                    field: "name".into(),
                    message: "is used by another sink".into(),
                    hint: "give each sink a distinct `name`",
                });
            }
        }
        let mut prepared = Vec::with_capacity(configs.len());
        for config in configs {
            let name = config.name();
            let worker = match &config {
                SinkConfig::File(c) => Worker::File(FileWorker::open(&name, &c.path)?),
                SinkConfig::Http(c) => Worker::Http(HttpWorker::new(&name, c)?),
            };
            prepared.push((
                Arc::new(Shared::new(name, config.kind())),
                config.buffer(),
                worker,
            ));
        }
        let sinks = prepared
            .into_iter()
            .map(|(shared, buffer, worker)| {
                let (tx, rx) = mpsc::channel(buffer);
                let task = match worker {
                    Worker::File(w) => runtime.spawn(w.run(rx, Arc::clone(&shared))),
                    Worker::Http(w) => runtime.spawn(w.run(rx, Arc::clone(&shared))),
                };
                Running { tx, shared, task }
            })
            .collect();
        Ok(Sinks { sinks })
    }

    /// Hands an event to every sink without blocking or awaiting. A sink whose
    /// buffer is full drops the event and counts it.
    pub fn offer(&self, ev: &Arc<EventRecord>) {
        for sink in &self.sinks {
            let shared = &sink.shared;
            // Count before sending, so the task never decrements below zero.
            shared.queued.fetch_add(1, Ordering::Relaxed);
            if sink.tx.try_send(Arc::clone(ev)).is_err() {
                shared.queued.fetch_sub(1, Ordering::Relaxed);
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                if !shared.overflowing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        sink = %shared.name,
                        "history sink buffer full; dropping events until it drains"
                    );
                }
            }
        }
    }

    /// A snapshot of every sink's counters, in configuration order.
    pub fn stats(&self) -> Vec<SinkStats> {
        self.sinks.iter().map(|s| s.shared.stats()).collect()
    }

    /// The number of sinks.
    pub fn len(&self) -> usize {
        self.sinks.len()
    }

    /// Whether there are no sinks.
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Stops accepting events, flushes what is queued (partial batches go at once,
    /// failed ones are retried) until `deadline` has passed, then abandons the
    /// rest, counting it as dropped. Returns the final stats.
    pub async fn shutdown(self, deadline: Duration) -> Vec<SinkStats> {
        let until = Instant::now().checked_add(deadline);
        let mut tasks = Vec::with_capacity(self.sinks.len());
        let mut shared = Vec::with_capacity(self.sinks.len());
        for sink in self.sinks {
            // Dropping the sender closes the channel: the task drains it and ends.
            drop(sink.tx);
            tasks.push(sink.task);
            shared.push(sink.shared);
        }
        for task in &mut tasks {
            let finished = match until {
                Some(until) => tokio::time::timeout_at(until, &mut *task).await.is_ok(),
                None => {
                    let _ = (&mut *task).await;
                    true
                }
            };
            if !finished {
                task.abort();
                // Wait for the abort so the counters no longer move.
                let _ = (&mut *task).await;
            }
        }
        for s in &shared {
            let left = s.queued.swap(0, Ordering::Relaxed);
            if left > 0 {
                s.dropped.fetch_add(left as u64, Ordering::Relaxed);
                tracing::warn!(sink = %s.name, events = left, "history sink shut down with undelivered events");
            }
        }
        shared.iter().map(|s| s.stats()).collect()
    }
}

enum Worker {
    File(FileWorker),
    Http(HttpWorker),
}

/// A failing batch's retries: doubling with ±10 % jitter.
struct Backoff {
    attempt: u32,
    seed: RandomState,
}

const BACKOFF: hangar_base::Backoff =
    hangar_base::Backoff::doubling(BACKOFF_INITIAL, BACKOFF_MAX).with_jitter(0.1);

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            attempt: 0,
            seed: RandomState::new(),
        }
    }

    /// Counts a failure and returns its number (1 for the first).
    fn fail(&mut self) -> u32 {
        self.attempt += 1;
        self.attempt
    }

    async fn sleep(&mut self) {
        let mut h = self.seed.build_hasher();
        h.write_u32(self.attempt);
        // A uniform sample in [0, 1].
        let unit = (h.finish() % 10_001) as f64 / 10_000.0;
        tokio::time::sleep(BACKOFF.delay(self.attempt.saturating_sub(1), unit)).await;
    }
}

/// An error and its sources, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    s
}

/// Appends `ev` as JSON to `buf`; on failure leaves `buf` as it was.
fn push_json(buf: &mut Vec<u8>, ev: &EventRecord) -> Result<(), serde_json::Error> {
    let len = buf.len();
    serde_json::to_writer(&mut *buf, ev).inspect_err(|_| buf.truncate(len))
}

// ---------------------------------------------------------------------------
// File sink
// ---------------------------------------------------------------------------

struct FileWorker {
    path: PathBuf,
    /// `None` after a failed write: reopened on the next attempt.
    file: Arc<Mutex<Option<File>>>,
}

fn open_append(path: &Path) -> io::Result<File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Writes `buf` in one go. On failure the file is cut back to its previous length
/// (best effort, so no half line stays behind) and closed, to be reopened.
fn write_batch(path: &Path, slot: &mut Option<File>, buf: &[u8]) -> io::Result<()> {
    let file = match slot {
        Some(file) => file,
        None => slot.insert(open_append(path)?),
    };
    let before = file.metadata().map(|m| m.len()).ok();
    let result = file.write_all(buf).and_then(|()| file.flush());
    if result.is_err() {
        if let Some(len) = before {
            let _ = file.set_len(len);
        }
        *slot = None;
    }
    result
}

impl FileWorker {
    fn open(name: &str, path: &Path) -> Result<FileWorker, SinkError> {
        let file = open_append(path).map_err(|source| SinkError::Io {
            sink: name.to_owned(),
            path: path.to_owned(),
            source,
        })?;
        Ok(FileWorker {
            path: path.to_owned(),
            file: Arc::new(Mutex::new(Some(file))),
        })
    }

    async fn run(self, mut rx: mpsc::Receiver<Arc<EventRecord>>, shared: Arc<Shared>) {
        let mut batch = Vec::new();
        loop {
            batch.clear();
            if rx.recv_many(&mut batch, FILE_BATCH_MAX).await == 0 {
                return;
            }
            let mut buf = Vec::with_capacity(batch.len() * 256);
            let mut lines = 0;
            for ev in &batch {
                match push_json(&mut buf, ev) {
                    Ok(()) => {
                        buf.push(b'\n');
                        lines += 1;
                    }
                    Err(e) => {
                        shared.dropped(1, format!("event {} cannot be serialised: {e}", ev.id))
                    }
                }
            }
            if lines == 0 {
                continue;
            }
            let buf = Arc::new(buf);
            let mut backoff = Backoff::new();
            loop {
                let (path, slot, data) =
                    (self.path.clone(), Arc::clone(&self.file), Arc::clone(&buf));
                let result = tokio::task::spawn_blocking(move || {
                    let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
                    write_batch(&path, &mut slot, &data)
                })
                .await;
                let error = match result {
                    Ok(Ok(())) => break,
                    Ok(Err(e)) => format!("writing {}: {e}", self.path.display()),
                    Err(e) => format!("writing {}: {e}", self.path.display()),
                };
                let attempt = backoff.fail();
                shared.failed(attempt, error);
                backoff.sleep().await;
            }
            if backoff.attempt > 0 {
                tracing::info!(sink = %shared.name, attempts = backoff.attempt + 1, "history sink recovered");
            }
            shared.delivered(lines);
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP sink
// ---------------------------------------------------------------------------

struct HttpWorker {
    client: reqwest::Client,
    url: Url,
    format: HttpFormat,
    index: String,
    batch_size: usize,
    flush_interval: Duration,
}

/// What one request attempt came to.
enum Outcome {
    /// Everything acknowledged.
    Delivered,
    /// Acknowledged except `rejected` bulk items, which the cluster refused for good.
    Partial { rejected: usize, why: String },
    /// Retry the whole batch.
    Retry(String),
    /// The request is wrong; drop the batch.
    Reject(String),
}

impl HttpWorker {
    fn new(name: &str, c: &HttpSinkConfig) -> Result<HttpWorker, SinkError> {
        let invalid = |field: &str, message: String| SinkError::InvalidConfig {
            sink: name.to_owned(),
            field: field.to_owned(),
            message,
            hint: "see SinkConfig::validate",
        };
        // Validated already; these maps only fail on what validate() rejects.
        let url = Url::parse(&c.url).map_err(|e| invalid("url", e.to_string()))?;
        let mut headers = HeaderMap::new();
        for (k, v) in &c.headers {
            let field = format!("headers.{k}");
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| invalid(&field, "is not a valid header name".into()))?;
            let mut value = HeaderValue::from_str(v)
                .map_err(|_| invalid(&field, "has an invalid value".into()))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let timeout = Duration::from_millis(c.timeout_ms);
        let client = reqwest::Client::builder()
            .user_agent(concat!("hangar/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| SinkError::HttpClient {
                sink: name.to_owned(),
                message: chain(&e),
            })?;
        Ok(HttpWorker {
            client,
            url,
            format: c.format,
            index: c.effective_index().to_owned(),
            batch_size: c.batch_size,
            flush_interval: Duration::from_millis(c.flush_interval_ms),
        })
    }

    async fn run(self, mut rx: mpsc::Receiver<Arc<EventRecord>>, shared: Arc<Shared>) {
        let mut batch = Vec::new();
        loop {
            batch.clear();
            if !self.next_batch(&mut rx, &mut batch).await {
                return;
            }
            let (body, count) = self.body(&batch, &shared);
            if count == 0 {
                continue;
            }
            let mut backoff = Backoff::new();
            loop {
                match self.attempt(body.clone()).await {
                    Outcome::Delivered => {
                        shared.delivered(count);
                        break;
                    }
                    Outcome::Partial { rejected, why } => {
                        let rejected = rejected.min(count);
                        shared.delivered(count - rejected);
                        if rejected > 0 {
                            shared.dropped(rejected, why);
                        }
                        break;
                    }
                    Outcome::Reject(why) => {
                        shared.dropped(count, why);
                        break;
                    }
                    Outcome::Retry(why) => {
                        let attempt = backoff.fail();
                        shared.failed(attempt, why);
                        backoff.sleep().await;
                    }
                }
            }
            if backoff.attempt > 0 {
                tracing::info!(sink = %shared.name, attempts = backoff.attempt + 1, "history sink recovered");
            }
        }
    }

    /// Waits for a first event, then gathers more until the batch is full, the
    /// flush interval has passed since the first, or the channel is closed (then at
    /// once). Returns false when the channel is closed and empty.
    async fn next_batch(
        &self,
        rx: &mut mpsc::Receiver<Arc<EventRecord>>,
        batch: &mut Vec<Arc<EventRecord>>,
    ) -> bool {
        if rx.recv_many(batch, self.batch_size).await == 0 {
            return false;
        }
        let deadline = Instant::now() + self.flush_interval;
        while batch.len() < self.batch_size {
            let room = self.batch_size - batch.len();
            tokio::select! {
                n = rx.recv_many(batch, room) => if n == 0 { break },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        true
    }

    /// The request body for `batch` and the number of events in it (events that
    /// cannot be serialised are dropped and counted).
    fn body(&self, batch: &[Arc<EventRecord>], shared: &Shared) -> (Vec<u8>, usize) {
        let mut buf = Vec::with_capacity(batch.len() * 320);
        let mut count = 0;
        if self.format == HttpFormat::Json {
            buf.push(b'[');
        }
        for ev in batch {
            let mark = buf.len();
            let result = match self.format {
                HttpFormat::Json => {
                    if count > 0 {
                        buf.push(b',');
                    }
                    push_json(&mut buf, ev)
                }
                HttpFormat::Bulk => {
                    let action = serde_json::json!({
                        "index": { "_index": self.index, "_id": ev.id.to_string() }
                    });
                    serde_json::to_writer(&mut buf, &action)
                        .map(|()| buf.push(b'\n'))
                        .and_then(|()| push_json(&mut buf, ev))
                        .map(|()| buf.push(b'\n'))
                }
            };
            match result {
                Ok(()) => count += 1,
                Err(e) => {
                    buf.truncate(mark);
                    shared.dropped(1, format!("event {} cannot be serialised: {e}", ev.id));
                }
            }
        }
        if self.format == HttpFormat::Json {
            buf.push(b']');
        }
        (buf, count)
    }

    async fn attempt(&self, body: Vec<u8>) -> Outcome {
        let content_type = match self.format {
            HttpFormat::Json => "application/json",
            HttpFormat::Bulk => "application/x-ndjson",
        };
        let sent = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => return Outcome::Retry(chain(&e.without_url())),
        };
        let status = response.status();
        let bytes = match response.bytes().await {
            Ok(b) => b,
            Err(e) if status.is_success() => {
                return Outcome::Retry(format!(
                    "HTTP {status}, reading the response: {}",
                    chain(&e.without_url())
                ))
            }
            Err(_) => Default::default(),
        };
        if status.is_success() {
            return match self.format {
                HttpFormat::Json => Outcome::Delivered,
                HttpFormat::Bulk => bulk_outcome(&bytes),
            };
        }
        let why = format!("HTTP {status}{}", snippet(&bytes));
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Outcome::Retry(why)
        } else {
            Outcome::Reject(why)
        }
    }
}

/// `": <first bytes of the body>"`, or nothing for an empty body.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    let mut end = text.len().min(BODY_SNIPPET);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let dots = if end < text.len() { "…" } else { "" };
    format!(": {}{dots}", text[..end].replace(['\n', '\r'], " "))
}

/// Reads a 2xx `_bulk` response. `errors: true` is retried as a whole, unless
/// every failed item has a 4xx status other than 429: those items are dropped
/// (retrying cannot help) and the rest counts as delivered.
fn bulk_outcome(body: &[u8]) -> Outcome {
    let value: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => {
            return Outcome::Retry(format!("bulk response is not JSON{}", snippet(body)));
        }
    };
    if value.get("errors") != Some(&serde_json::Value::Bool(true)) {
        return Outcome::Delivered;
    }
    let items = value.get("items").and_then(|i| i.as_array());
    let mut rejected = 0;
    let mut first: Option<String> = None;
    let mut retry = items.is_none_or(|i| i.is_empty());
    for item in items.into_iter().flatten() {
        // Each item is {"<action>": {"status": ..., "error": ...}}.
        let Some(result) = item.as_object().and_then(|o| o.values().next()) else {
            retry = true;
            continue;
        };
        let Some(error) = result.get("error") else {
            continue;
        };
        let status = result.get("status").and_then(|s| s.as_u64()).unwrap_or(0);
        if !(400..500).contains(&status) || status == 429 {
            retry = true;
        } else {
            rejected += 1;
        }
        if first.is_none() {
            let kind = error
                .get("type")
                .and_then(|t| t.as_str())
                .unwrap_or("error");
            let reason = error.get("reason").and_then(|t| t.as_str()).unwrap_or("");
            first = Some(format!("status {status}, {kind}: {reason}"));
        }
    }
    let first = first.unwrap_or_else(|| "no item details".into());
    if retry {
        Outcome::Retry(format!("bulk response reports errors ({first})"))
    } else {
        Outcome::Partial {
            rejected,
            why: format!("bulk items rejected ({first})"),
        }
    }
}
