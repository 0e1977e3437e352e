//! History sinks against real destinations: a small HTTP/1.1 server on 127.0.0.1
//! and files in a temporary directory (and /dev/full for write errors).

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hangar_core::sinks::{HttpFormat, SinkConfig, SinkError, SinkStats, Sinks};
use hangar_store::EventRecord;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------
// A tiny HTTP/1.1 server
// ---------------------------------------------------------------------------

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the server answers to the n-th request (0-based, across connections).
enum Reply {
    Status(u16, &'static str),
    /// Never answer; hold the connection open.
    Hang,
}

struct Server {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start(reply: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let reply: Arc<dyn Fn(usize) -> Reply + Send + Sync> = Arc::new(reply);
        let log = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                connections.spawn(serve(stream, Arc::clone(&log), Arc::clone(&reply)));
            }
        });
        Server {
            addr,
            requests,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

/// Serves one keep-alive connection.
async fn serve(
    stream: TcpStream,
    log: Arc<Mutex<Vec<Request>>>,
    reply: Arc<dyn Fn(usize) -> Reply + Send + Sync>,
) {
    let mut stream = BufReader::new(stream);
    while let Some(request) = read_request(&mut stream).await {
        let n = {
            let mut log = log.lock().unwrap();
            log.push(request);
            log.len() - 1
        };
        match reply(n) {
            Reply::Hang => std::future::pending::<()>().await,
            Reply::Status(code, body) => {
                let response = format!(
                    "HTTP/1.1 {code} Whatever\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if stream
                    .get_mut()
                    .write_all(response.as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Reads a request line, headers and a Content-Length body; `None` at EOF.
async fn read_request(stream: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if stream.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await.ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn event(id: i64) -> Arc<EventRecord> {
    Arc::new(EventRecord {
        id,
        at_ms: 1_700_000_000_000 + id,
        name: format!("web-{}", id % 3),
        pid: if id % 2 == 0 {
            Some(1000 + id as u32)
        } else {
            None
        },
        kind: "state".into(),
        from: "starting".into(),
        to: "running".into(),
        detail: serde_json::json!({ "restarts": id, "note": "line\nbreak \"quoted\"" }),
    })
}

fn config(json: serde_json::Value) -> SinkConfig {
    serde_json::from_value(json).expect("valid sink config")
}

fn stats(sinks: &Sinks) -> SinkStats {
    sinks.stats().into_iter().next().expect("one sink")
}

/// Polls `cond` every 5 ms until it holds; panics after `timeout`.
async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn within<T>(limit: Duration, f: impl Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let out = tokio::time::timeout(limit, f)
        .await
        .expect("finished in time");
    (out, start.elapsed())
}

fn ids(events: &[EventRecord]) -> Vec<i64> {
    events.iter().map(|e| e.id).collect()
}

const LONG: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// HTTP, json format
// ---------------------------------------------------------------------------

#[tokio::test]
async fn webhook_retries_503_then_delivers_everything_in_order() {
    let server = Server::start(|n| {
        if n < 2 {
            Reply::Status(503, "busy")
        } else {
            Reply::Status(200, "{}")
        }
    })
    .await;
    let sinks = Sinks::start(vec![config(serde_json::json!({
        "type": "http",
        "url": server.url("/hook"),
        "headers": { "Authorization": "Bearer t0ken" },
        "batch_size": 4,
        "flush_interval_ms": 20,
    }))])
    .unwrap();
    let sent: Vec<_> = (1..=10).map(event).collect();
    for ev in &sent {
        sinks.offer(ev);
    }
    wait_for("10 delivered", LONG, || stats(&sinks).delivered == 10).await;

    let s = stats(&sinks);
    assert_eq!(s.kind, "http");
    assert_eq!(s.failed_attempts, 2, "{s:?}");
    assert_eq!((s.dropped, s.queued), (0, 0), "{s:?}");
    assert!(
        s.last_error.as_deref().unwrap_or("").contains("503"),
        "{s:?}"
    );

    let requests = server.requests();
    assert_eq!(requests.len(), 5, "3 batches, the first one tried 3 times");
    for r in &requests {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/hook"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("authorization"), Some("Bearer t0ken"));
    }
    // The failed batch is retried as it was.
    assert_eq!(requests[0].body, requests[2].body);
    assert_eq!(requests[1].body, requests[2].body);
    let delivered: Vec<EventRecord> = requests[2..]
        .iter()
        .flat_map(|r| serde_json::from_slice::<Vec<EventRecord>>(&r.body).expect("JSON array"))
        .collect();
    assert_eq!(ids(&delivered), (1..=10).collect::<Vec<_>>());
    let expected: Vec<EventRecord> = sent.iter().map(|e| (**e).clone()).collect();
    assert_eq!(delivered, expected);
    sinks.shutdown(LONG).await;
}

#[tokio::test]
async fn status_429_is_retried() {
    let server = Server::start(|n| {
        if n == 0 {
            Reply::Status(429, "slow down")
        } else {
            Reply::Status(204, "")
        }
    })
    .await;
    let sinks = Sinks::start(vec![config(serde_json::json!({
        "type": "http", "url": server.url("/"), "flush_interval_ms": 10,
    }))])
    .unwrap();
    sinks.offer(&event(1));
    wait_for("delivered", LONG, || stats(&sinks).delivered == 1).await;
    let s = stats(&sinks);
    assert_eq!((s.failed_attempts, s.dropped), (1, 0));
    assert!(s.last_error.unwrap().contains("429"));
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn status_400_drops_the_batch_without_retrying() {
    let server = Server::start(|_| Reply::Status(400, r#"{"error":"bad payload"}"#)).await;
    let sinks = Sinks::start(vec![config(serde_json::json!({
        "type": "http", "url": server.url("/hook"), "batch_size": 3, "flush_interval_ms": 10,
    }))])
    .unwrap();
    for id in 1..=3 {
        sinks.offer(&event(id));
    }
    wait_for("first batch dropped", LONG, || stats(&sinks).dropped == 3).await;
    let s = stats(&sinks);
    assert_eq!(
        (s.delivered, s.failed_attempts, s.queued),
        (0, 0, 0),
        "{s:?}"
    );
    let err = s.last_error.unwrap();
    assert!(err.contains("400") && err.contains("bad payload"), "{err}");

    // The sink is sequential: had it retried the first batch, that retry would
    // reach the server before the next batch.
    sinks.offer(&event(4));
    wait_for("second batch dropped", LONG, || stats(&sinks).dropped == 4).await;
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "each batch sent once");
    let second: Vec<EventRecord> = serde_json::from_slice(&requests[1].body).unwrap();
    assert_eq!(ids(&second), vec![4]);
    sinks.shutdown(LONG).await;
}

// ---------------------------------------------------------------------------
// HTTP, bulk format
// ---------------------------------------------------------------------------

#[tokio::test]
async fn bulk_sends_ndjson_pairs_and_retries_errors_true() {
    let server = Server::start(|n| {
        if n == 0 {
            Reply::Status(200, r#"{"took":3,"errors":true}"#)
        } else {
            Reply::Status(200, r#"{"took":3,"errors":false,"items":[]}"#)
        }
    })
    .await;
    let sinks = Sinks::start(vec![config(serde_json::json!({
        "type": "http",
        "url": server.url("/_bulk"),
        "format": "bulk",
        "index": "audit-log",
        "batch_size": 10,
        "flush_interval_ms": 20,
    }))])
    .unwrap();
    let sent: Vec<_> = (41..=43).map(event).collect();
    for ev in &sent {
        sinks.offer(ev);
    }
    wait_for("3 delivered", LONG, || stats(&sinks).delivered == 3).await;
    let s = stats(&sinks);
    assert_eq!((s.failed_attempts, s.dropped, s.queued), (1, 0, 0), "{s:?}");
    assert!(s.last_error.unwrap().contains("errors"));

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].body, requests[1].body, "whole batch retried");
    let r = &requests[1];
    assert_eq!(r.path, "/_bulk");
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    let body = String::from_utf8(r.body.clone()).unwrap();
    assert!(body.ends_with('\n'));
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 6);
    for (pair, ev) in lines.chunks(2).zip(&sent) {
        let action: serde_json::Value = serde_json::from_str(pair[0]).unwrap();
        assert_eq!(
            action,
            serde_json::json!({ "index": { "_index": "audit-log", "_id": ev.id.to_string() } })
        );
        let doc: EventRecord = serde_json::from_str(pair[1]).unwrap();
        assert_eq!(&doc, &**ev);
    }
    sinks.shutdown(LONG).await;
}

#[tokio::test]
async fn bulk_item_errors_retry_429_and_drop_4xx_items() {
    let server = Server::start(|n| {
        if n == 0 {
            Reply::Status(
                200,
                r#"{"errors":true,"items":[{"index":{"status":201}},{"index":{"status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}}]}"#,
            )
        } else {
            Reply::Status(
                200,
                r#"{"errors":true,"items":[{"index":{"status":200}},{"index":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field"}}}]}"#,
            )
        }
    })
    .await;
    let sinks = Sinks::start(vec![config(serde_json::json!({
        "type": "http", "url": server.url("/_bulk"), "format": "bulk", "flush_interval_ms": 20,
    }))])
    .unwrap();
    sinks.offer(&event(1));
    sinks.offer(&event(2));
    wait_for("batch settled", LONG, || stats(&sinks).queued == 0).await;
    let s = stats(&sinks);
    assert_eq!(
        (s.delivered, s.dropped, s.failed_attempts),
        (1, 1, 1),
        "{s:?}"
    );
    assert!(s.last_error.unwrap().contains("mapper_parsing_exception"));
    assert_eq!(server.count(), 2);
    let body = String::from_utf8(server.requests()[0].body.clone()).unwrap();
    assert!(
        body.contains(r#""_index":"hangar-events""#),
        "default index: {body}"
    );
    sinks.shutdown(LONG).await;
}

// ---------------------------------------------------------------------------
// A destination that never answers
// ---------------------------------------------------------------------------

#[tokio::test]
async fn hanging_server_times_out_and_a_full_buffer_drops_without_blocking() {
    let server = Server::start(|_| Reply::Hang).await;
    let sinks = Sinks::start(vec![config(serde_json::json!({
        "type": "http",
        "url": server.url("/hook"),
        "timeout_ms": 100,
        "buffer": 4,
        "batch_size": 2,
        "flush_interval_ms": 0,
    }))])
    .unwrap();

    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    for id in 1..=1000 {
        let t = Instant::now();
        sinks.offer(&event(id));
        slowest = slowest.max(t.elapsed());
    }
    let total = start.elapsed();
    // A blocking offer would wait at least one request timeout (100 ms).
    assert!(
        slowest < Duration::from_millis(50),
        "slowest offer took {slowest:?}"
    );
    assert!(
        total < Duration::from_millis(500),
        "1000 offers took {total:?}"
    );
    let s = stats(&sinks);
    assert!(s.dropped >= 1000 - 4 - 2, "{s:?}");
    assert_eq!(s.dropped + s.queued as u64, 1000, "{s:?}");

    wait_for("2 failed attempts", LONG, || {
        stats(&sinks).failed_attempts >= 2
    })
    .await;
    let s = stats(&sinks);
    assert_eq!(s.delivered, 0);
    assert!(s.queued >= 1 && s.queued <= 4 + 2, "{s:?}");
    assert_eq!(s.dropped + s.queued as u64, 1000, "{s:?}");
    let err = s.last_error.clone().unwrap_or_default();
    assert!(err.contains("timed out"), "{s:?}");
    assert!(server.count() >= 2, "each attempt reached the server");

    // Shutdown gives up at its deadline and counts what was left as dropped.
    let (last, took) = within(LONG, sinks.shutdown(Duration::from_millis(150))).await;
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    assert_eq!(
        (last[0].delivered, last[0].dropped, last[0].queued),
        (0, 1000, 0),
        "{last:?}"
    );
}

// ---------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------

#[tokio::test]
async fn shutdown_flushes_partial_batches_and_retries_within_the_deadline() {
    let server = Server::start(|n| {
        if n == 0 {
            Reply::Status(502, "")
        } else {
            Reply::Status(200, "{}")
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let sinks = Sinks::start(vec![
        config(serde_json::json!({
            "type": "http",
            "url": server.url("/hook"),
            "batch_size": 1000,
            "flush_interval_ms": 60_000,
        })),
        config(serde_json::json!({ "type": "file", "path": path })),
    ])
    .unwrap();
    for id in 1..=5 {
        sinks.offer(&event(id));
    }
    // The flush interval is a minute: only shutdown sends this batch now.
    let (last, took) = within(LONG, sinks.shutdown(Duration::from_secs(5))).await;
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    assert_eq!(last.len(), 2);
    for s in &last {
        assert_eq!((s.delivered, s.dropped, s.queued), (5, 0, 0), "{s:?}");
    }
    assert_eq!(last[0].failed_attempts, 1);
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let got: Vec<EventRecord> = serde_json::from_slice(&requests[1].body).unwrap();
    assert_eq!(ids(&got), vec![1, 2, 3, 4, 5]);
    assert_eq!(read_jsonl(&path).len(), 5);
}

// ---------------------------------------------------------------------------
// File sink
// ---------------------------------------------------------------------------

fn read_jsonl(path: &Path) -> Vec<EventRecord> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect()
}

#[tokio::test]
async fn file_sink_appends_json_lines_across_instances() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/events.jsonl");
    let cfg = config(serde_json::json!({ "type": "file", "path": path }));

    let first = Sinks::start(vec![cfg.clone()]).unwrap();
    for id in 1..=3 {
        first.offer(&event(id));
    }
    wait_for("3 written", LONG, || stats(&first).delivered == 3).await;
    assert_eq!(stats(&first).name, format!("file:{}", path.display()));
    assert_eq!(stats(&first).kind, "file");
    first.shutdown(LONG).await;

    let second = Sinks::start(vec![cfg]).unwrap();
    second.offer(&event(4));
    second.offer(&event(5));
    wait_for("2 written", LONG, || stats(&second).delivered == 2).await;
    let last = second.shutdown(LONG).await;
    assert_eq!((last[0].failed_attempts, last[0].dropped), (0, 0));

    let events = read_jsonl(&path);
    assert_eq!(ids(&events), vec![1, 2, 3, 4, 5]);
    assert_eq!(events[4], *event(5));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test]
async fn file_write_errors_are_counted_and_retried() {
    if !Path::new("/dev/full").exists() {
        return;
    }
    let sinks = Sinks::start(vec![config(
        serde_json::json!({ "type": "file", "path": "/dev/full" }),
    )])
    .unwrap();
    sinks.offer(&event(1));
    sinks.offer(&event(2));
    wait_for("2 failed writes", LONG, || {
        stats(&sinks).failed_attempts >= 2
    })
    .await;
    let s = stats(&sinks);
    assert_eq!(
        (s.delivered, s.dropped, s.queued),
        (0, 0, 2),
        "batch kept: {s:?}"
    );
    assert!(s.last_error.unwrap().contains("/dev/full"));
    let last = sinks.shutdown(Duration::from_millis(50)).await;
    assert_eq!((last[0].dropped, last[0].queued), (2, 0));
}

#[tokio::test]
async fn unopenable_file_fails_start_with_sink_io() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"").unwrap();
    let err = Sinks::start(vec![config(
        serde_json::json!({ "type": "file", "path": blocker.join("events.jsonl") }),
    )])
    .unwrap_err();
    assert_eq!(err.code(), "SINK_IO");
    assert!(!err.hint().is_empty());
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

#[test]
fn config_parses_from_json_with_defaults() {
    let file =
        config(serde_json::json!({ "type": "file", "path": "/var/log/hangar/events.jsonl" }));
    let SinkConfig::File(f) = &file else {
        panic!("{file:?}")
    };
    assert_eq!((f.buffer, f.name.as_deref()), (10_000, None));
    assert_eq!(file.name(), "file:/var/log/hangar/events.jsonl");
    assert_eq!(file.kind(), "file");

    let http = config(serde_json::json!({
        "type": "http", "url": "https://user:secret@search.example:9200/_bulk?token=abc",
    }));
    let SinkConfig::Http(h) = &http else {
        panic!("{http:?}")
    };
    assert_eq!(h.format, HttpFormat::Json);
    assert_eq!(h.index, None);
    assert_eq!(
        (h.batch_size, h.flush_interval_ms, h.timeout_ms, h.buffer),
        (100, 1000, 10_000, 10_000)
    );
    assert!(h.headers.is_empty());
    assert_eq!(http.name(), "http:https://search.example:9200/_bulk");
    http.validate().unwrap();

    let full = config(serde_json::json!({
        "type": "http",
        "name": "search",
        "url": "http://127.0.0.1:9200/_bulk",
        "format": "bulk",
        "index": "hangar-prod",
        "headers": { "Authorization": "ApiKey s3cret" },
        "batch_size": 500,
        "flush_interval_ms": 250,
        "timeout_ms": 2000,
        "buffer": 50,
    }));
    full.validate().unwrap();
    let SinkConfig::Http(h) = &full else { panic!() };
    assert_eq!(
        (h.format, h.effective_index()),
        (HttpFormat::Bulk, "hangar-prod")
    );
    assert_eq!(
        (
            h.batch_size,
            h.flush_interval_ms,
            h.timeout_ms,
            full.buffer()
        ),
        (500, 250, 2000, 50)
    );
    assert_eq!(full.name(), "search");
    let debug = format!("{full:?}");
    assert!(
        !debug.contains("s3cret"),
        "header values are redacted: {debug}"
    );

    let err = serde_json::from_value::<SinkConfig>(
        serde_json::json!({ "type": "http", "url": "http://x", "batchsize": 5 }),
    )
    .unwrap_err();
    assert!(err.to_string().contains("batchsize"), "{err}");
    assert!(serde_json::from_value::<SinkConfig>(serde_json::json!({ "type": "kafka" })).is_err());
    assert!(serde_json::from_value::<SinkConfig>(serde_json::json!({ "type": "file" })).is_err());
}

#[test]
fn validation_names_the_field() {
    let cases = [
        (
            serde_json::json!({ "type": "http", "url": "ftp://host/x" }),
            "url",
        ),
        (
            serde_json::json!({ "type": "http", "url": "not a url" }),
            "url",
        ),
        (
            serde_json::json!({ "type": "http", "url": "http://h", "batch_size": 0 }),
            "batch_size",
        ),
        (
            serde_json::json!({ "type": "http", "url": "http://h", "buffer": 0 }),
            "buffer",
        ),
        (
            serde_json::json!({ "type": "http", "url": "http://h", "timeout_ms": 0 }),
            "timeout_ms",
        ),
        (
            serde_json::json!({ "type": "http", "url": "http://h", "flush_interval_ms": 86_400_000u64 }),
            "flush_interval_ms",
        ),
        (
            serde_json::json!({ "type": "http", "url": "http://h", "index": "x" }),
            "index",
        ),
        (
            serde_json::json!({ "type": "http", "url": "http://h", "format": "bulk", "index": "Bad Index" }),
            "index",
        ),
        (
            serde_json::json!({ "type": "http", "url": "http://h", "headers": { "Content-Type": "text/plain" } }),
            "headers.Content-Type",
        ),
        (
            serde_json::json!({ "type": "http", "url": "http://h", "headers": { "bad header": "x" } }),
            "headers.bad header",
        ),
        (
            serde_json::json!({ "type": "http", "url": "http://h", "headers": { "X-Token": "a\nb" } }),
            "headers.X-Token",
        ),
        (
            serde_json::json!({ "type": "http", "url": "http://h", "name": " " }),
            "name",
        ),
        (serde_json::json!({ "type": "file", "path": "" }), "path"),
        (
            serde_json::json!({ "type": "file", "path": "/tmp/x", "buffer": 0 }),
            "buffer",
        ),
    ];
    for (json, field) in cases {
        let cfg = config(json.clone());
        let err = cfg.validate().expect_err(&json.to_string());
        assert_eq!(err.code(), "SINK_INVALID_CONFIG", "{json}");
        assert_eq!(err.field(), Some(field), "{json}: {err}");
        assert!(
            err.to_string().contains(field),
            "message names {field}: {err}"
        );
        assert!(!err.hint().is_empty(), "{json}");
    }
}

#[tokio::test]
async fn start_rejects_invalid_and_duplicate_sinks() {
    let err = Sinks::start(vec![
        config(serde_json::json!({ "type": "file", "path": "/tmp/unused.jsonl" })),
        config(serde_json::json!({ "type": "http", "url": "ftp://h" })),
    ])
    .unwrap_err();
    assert!(
        matches!(&err, SinkError::InvalidConfig { field, .. } if field == "url"),
        "{err}"
    );

    let err = Sinks::start(vec![
        config(serde_json::json!({ "type": "http", "url": "http://127.0.0.1:1/a", "name": "x" })),
        config(serde_json::json!({ "type": "http", "url": "http://127.0.0.1:1/b", "name": "x" })),
    ])
    .unwrap_err();
    assert_eq!(
        (err.code(), err.field()),
        ("SINK_INVALID_CONFIG", Some("name"))
    );

    let none = Sinks::start(Vec::new()).unwrap();
    assert!(none.is_empty());
    none.offer(&event(1));
    assert!(none.shutdown(LONG).await.is_empty());
}

#[test]
fn start_outside_a_runtime_is_an_error() {
    let err = Sinks::start(Vec::new()).unwrap_err();
    assert_eq!(err.code(), "SINK_NO_RUNTIME");
}
