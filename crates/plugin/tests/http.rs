//! The HTTP transport against real servers on loopback: the server SDK
//! serving a handler, raw HTTP requests that check the seed's envelopes on
//! the wire, a capture server that shows what the client sends, gzip both
//! ways, timeouts, plugin errors, a server that dies mid-call, and close.

use std::sync::Arc;
use std::time::Duration;

use hangar_plugin::http::{self, HttpClient, HttpOptions, HttpServeOptions};
use hangar_plugin::{Call, CallContext, CallKind, ErrorKind, Handler, Transport, TransportExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Echo;

impl Handler for Echo {
    async fn execute(&self, call: Call) -> Result<Value, String> {
        if let Some(ms) = call.data.get("sleep_ms").and_then(Value::as_u64) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if call.data.get("fail").is_some() {
            return Err("asked to fail".into());
        }
        if let Some(n) = call.data.get("big").and_then(Value::as_u64) {
            return Ok(json!("x".repeat(n as usize)));
        }
        Ok(json!({
            "echo": call.data,
            "request_id": call.request_id,
            "trace": call.header("x-trace-id"),
            "has_deadline": call.deadline.is_some(),
        }))
    }

    fn info(&self) -> Value {
        json!({ "name": "echo", "version": "1.0.0" })
    }
}

async fn server() -> (hangar_plugin::Server, String) {
    let s = http::serve(
        Arc::new(Echo),
        HttpServeOptions::new("127.0.0.1:0".parse().expect("addr")),
    )
    .await
    .expect("serve");
    let url = format!("http://{}/", s.local_addr().expect("addr"));
    (s, url)
}

fn ctx(ms: u64) -> CallContext {
    CallContext::with_timeout(Duration::from_millis(ms))
}

/// One raw HTTP/1.1 exchange; returns (head, body).
async fn raw(addr: std::net::SocketAddr, req: &str) -> (String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head end");
    (
        String::from_utf8_lossy(&out[..split]).into_owned(),
        out[split + 4..].to_vec(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_carry_the_seed_envelopes_and_context() {
    let (_s, url) = server().await;
    let c = HttpClient::new(HttpOptions::new(&url)).expect("client");
    assert_eq!(c.kind(), "http");
    let mut cx = ctx(5000);
    cx.request_id = "req-abc-123".into();
    cx.headers.insert("X-Trace-Id".into(), "trace-xyz".into());
    let r = c
        .call(CallKind::Execute, json!({ "user_id": "12345" }), cx)
        .await
        .expect("execute");
    assert_eq!(
        r,
        json!({
            "echo": { "user_id": "12345" },
            "request_id": "req-abc-123",
            "trace": "trace-xyz",
            "has_deadline": true,
        })
    );
    c.ping(Duration::from_secs(5)).await.expect("ping");
    c.health(Duration::from_secs(5)).await.expect("health");
    assert_eq!(
        c.info(Duration::from_secs(5)).await.expect("info")["name"],
        "echo"
    );
    let e = c
        .call(CallKind::Execute, json!({ "fail": true }), ctx(5000))
        .await
        .expect_err("fails");
    assert_eq!(e.kind, ErrorKind::ExecutionFailed);
    assert_eq!(e.message, "asked to fail");
    assert!(!e.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_speaks_the_seed_envelopes_on_the_wire() {
    let (s, _url) = server().await;
    let addr = s.local_addr().expect("addr");
    let body = r#"{"data":{"action":"authenticate"},"request_id":"req-1","timeout":"30s","headers":{"X-Source-Service":"gw"},"metadata":{"trace_id":"t-9"}}"#;
    let (head, out) = raw(
        addr,
        &format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let v: Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(v["request_id"], "req-1");
    assert_eq!(v["data"]["echo"], json!({ "action": "authenticate" }));
    assert_eq!(v["data"]["has_deadline"], true);
    assert!(v.get("error").is_none());

    let body = r#"{"data":{"fail":1},"request_id":"req-2"}"#;
    let (head, out) = raw(
        addr,
        &format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 500"), "{head}");
    let v: Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(
        v,
        json!({ "error": "asked to fail", "request_id": "req-2", "metadata": { "error_code": "PLUGIN_1203" } })
    );

    // A payload the handler's form cannot hold (a lone surrogate is no
    // string) is refused under the envelope's request id (the header's
    // without one), and says so; an envelope that is not one is refused
    // under the header's.
    for (body, id, what) in [
        (
            r#"{"data":{"s":"\ud800"},"request_id":"req-4"}"#,
            "req-4",
            "cannot parse the JSON payload",
        ),
        (
            r#"{"data":{"s":"\ud800"}}"#,
            "hdr-5",
            "cannot parse the JSON payload",
        ),
        (
            r#"{"data":1,"request_id":7}"#,
            "hdr-5",
            "the body is not an HTTPPluginRequest envelope",
        ),
    ] {
        let (head, out) = raw(
            addr,
            &format!(
                "POST / HTTP/1.1\r\nHost: x\r\nX-Request-ID: hdr-5\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 500"), "{head}");
        let v: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["request_id"], id, "{v}");
        assert_eq!(v["metadata"]["error_code"], "PLUGIN_1203", "{v}");
        let e = v["error"].as_str().unwrap_or_default();
        assert!(e.starts_with(what), "{e}");
    }

    let (head, _) = raw(
        addr,
        "GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    // A large answer is gzipped for a client that accepts it.
    let body = r#"{"data":{"big":20000},"request_id":"req-3"}"#;
    let (head, out) = raw(
        addr,
        &format!(
            "POST / HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!(
        head.to_ascii_lowercase().contains("content-encoding: gzip"),
        "{head}"
    );
    assert!(
        out.len() < 5000,
        "gzip shrinks 20 kB of x to {} bytes",
        out.len()
    );
}

/// A server that records the first request's head and answers a canned envelope.
async fn capture() -> (std::net::SocketAddr, tokio::sync::oneshot::Receiver<String>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.expect("accept");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut chunk).await.expect("read");
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
        answer(&mut s, r#""ok""#).await;
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compression_switch_and_auth_headers_reach_the_wire() {
    for disable in [false, true] {
        let (addr, head) = capture().await;
        let mut o = HttpOptions::new(format!("http://{addr}/v1/plugin"));
        o.disable_compression = disable;
        o.auth = hangar_plugin::AuthConfig::api_key("k-123");
        let c = HttpClient::new(o).expect("client");
        let r = c
            .call(CallKind::Execute, json!(1), ctx(5000))
            .await
            .expect("call");
        assert_eq!(r, json!("ok"));
        let head = head.await.expect("head").to_ascii_lowercase();
        assert!(head.starts_with("post /v1/plugin http/1.1"), "{head}");
        assert!(head.contains(&format!("host: {addr}\r\n")), "{head}");
        assert!(head.contains("x-api-key: k-123"), "{head}");
        assert_eq!(head.contains("accept-encoding: gzip"), !disable, "{head}");
    }

    // And gzip answers are inflated by the client.
    let (_s, url) = server().await;
    let c = HttpClient::new(HttpOptions::new(&url)).expect("client");
    let r = c
        .call(CallKind::Execute, json!({ "big": 50_000 }), ctx(5000))
        .await
        .expect("big");
    assert_eq!(r.as_str().map(str::len), Some(50_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_plugin_times_out() {
    let (_s, url) = server().await;
    let c = HttpClient::new(HttpOptions::new(&url)).expect("client");
    let e = c
        .call(CallKind::Execute, json!({ "sleep_ms": 3000 }), ctx(200))
        .await
        .expect_err("slow");
    assert_eq!(e.kind, ErrorKind::Timeout);
    assert!(e.is_retryable());
    // The request timeout of the options applies when the context has none.
    let mut o = HttpOptions::new(&url);
    o.request_timeout = Duration::from_millis(200);
    let c = HttpClient::new(o).expect("client");
    let e = c
        .call(
            CallKind::Execute,
            json!({ "sleep_ms": 3000 }),
            CallContext::default(),
        )
        .await
        .expect_err("slow");
    assert_eq!(e.kind, ErrorKind::Timeout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_dies_mid_call_is_a_retryable_transport_error() {
    let (s, url) = server().await;
    let c = HttpClient::new(HttpOptions::new(&url)).expect("client");
    let inflight = {
        let c = c.clone();
        tokio::spawn(async move {
            c.call(
                CallKind::Execute,
                json!({ "sleep_ms": 10_000 }),
                ctx(20_000),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    s.shutdown().await;
    let e = inflight.await.expect("join").expect_err("died");
    assert_eq!(e.kind, ErrorKind::HttpTransport, "{e}");
    assert_eq!(e.code(), "TRANSPORT_1301");
    assert!(e.is_retryable());
    let e = c
        .call(CallKind::Execute, json!(1), ctx(5000))
        .await
        .expect_err("nobody listens");
    assert_eq!(e.kind, ErrorKind::ConnectionFailed, "{e}");
    assert!(e.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_is_idempotent_and_later_calls_fail() {
    let (_s, url) = server().await;
    let c = HttpClient::new(HttpOptions::new(&url)).expect("client");
    c.ping(Duration::from_secs(5)).await.expect("ping");
    c.close().await;
    c.close().await;
    let e = c
        .call(CallKind::Ping, Value::Null, ctx(1000))
        .await
        .expect_err("closed");
    assert_eq!(e.code(), "TRANSPORT_1301");
}

#[test]
fn bad_endpoints_are_refused_with_plugin_1004() {
    for bad in ["ftp://x/", "not a url", "/relative"] {
        let e = HttpClient::new(HttpOptions::new(bad)).expect_err(bad);
        assert_eq!(e.code(), "PLUGIN_1004", "{bad}");
    }
    let e = HttpClient::new(HttpOptions::new("")).expect_err("empty");
    assert_eq!(e.code(), "PLUGIN_1003");
}

/// What a proxy in front of the server saw on one client connection.
#[derive(Default)]
struct ConnSeen {
    /// Request lines (`... HTTP/1.1\r\n`) the client sent on it.
    requests: std::sync::atomic::AtomicUsize,
    /// The client closed its side.
    closed: std::sync::atomic::AtomicBool,
}

/// A TCP proxy that records every client connection and the requests it carried,
/// so keep-alive is judged by what went over the wire.
async fn recording_proxy(
    upstream: std::net::SocketAddr,
) -> (
    std::net::SocketAddr,
    Arc<std::sync::Mutex<Vec<Arc<ConnSeen>>>>,
) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let conns: Arc<std::sync::Mutex<Vec<Arc<ConnSeen>>>> = Arc::default();
    let all = Arc::clone(&conns);
    tokio::spawn(async move {
        while let Ok((down, _)) = l.accept().await {
            let seen = Arc::new(ConnSeen::default());
            all.lock().expect("lock").push(Arc::clone(&seen));
            tokio::spawn(async move {
                let Ok(up) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut down_r, mut down_w) = down.into_split();
                let (mut up_r, mut up_w) = up.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut up_r, &mut down_w).await;
                });
                const LINE_END: &[u8] = b" HTTP/1.1\r\n";
                let mut buf = vec![0u8; 64 * 1024];
                // The last bytes of the previous read, so a request line split
                // across two reads is still counted once.
                let mut carry: Vec<u8> = Vec::new();
                loop {
                    let n = match down_r.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    carry.extend_from_slice(&buf[..n]);
                    let hits = carry
                        .windows(LINE_END.len())
                        .filter(|w| *w == LINE_END)
                        .count();
                    seen.requests
                        .fetch_add(hits, std::sync::atomic::Ordering::SeqCst);
                    let keep = carry.len().min(LINE_END.len() - 1);
                    carry.drain(..carry.len() - keep);
                    if up_w.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                seen.closed.store(true, std::sync::atomic::Ordering::SeqCst);
                let _ = up_w.shutdown().await;
            });
        }
    });
    (addr, conns)
}

/// Keep-alive is judged by requests per connection, not by how many connections
/// were opened: hyper's pool races a fresh connect against the return of the idle
/// one, so the number opened depends on scheduling, but the number that *carried*
/// requests on one thread does not. The whole exchange (client, proxy, server)
/// runs on one thread and loopback delivers a write before the write returns, so
/// no other program on the machine can reorder it.
#[tokio::test(flavor = "current_thread")]
async fn keep_alive_reuses_one_connection_and_its_absence_does_not() {
    use std::sync::atomic::Ordering::SeqCst;
    let (s, _url) = server().await;
    for keep_alive in [true, false] {
        let (front, conns) = recording_proxy(s.local_addr().expect("addr")).await;
        let mut o = HttpOptions::new(format!("http://{front}/"));
        o.keep_alive = keep_alive;
        let c = HttpClient::new(o).expect("client");
        for i in 0..10 {
            let r = c
                .call(CallKind::Execute, json!(i), ctx(5000))
                .await
                .expect("call");
            assert_eq!(r["echo"], json!(i));
        }
        let seen: Vec<Arc<ConnSeen>> = conns.lock().expect("lock").clone();
        let per_conn: Vec<usize> = seen.iter().map(|c| c.requests.load(SeqCst)).collect();
        assert_eq!(
            per_conn.iter().sum::<usize>(),
            10,
            "requests seen: {per_conn:?}"
        );
        let used = per_conn.iter().filter(|n| **n > 0).count();
        if keep_alive {
            assert_eq!(
                used, 1,
                "keep_alive = true: requests per connection {per_conn:?}"
            );
            assert!(
                seen.iter().all(|c| !c.closed.load(SeqCst)),
                "keep_alive = true closed a pooled connection"
            );
        } else {
            assert_eq!(
                used, 10,
                "keep_alive = false: requests per connection {per_conn:?}"
            );
            assert!(per_conn.iter().all(|n| *n == 1), "{per_conn:?}");
            // Every connection is closed once its one exchange is done.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !seen.iter().all(|c| c.closed.load(SeqCst)) {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "keep_alive = false left a connection open"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

/// A pooled connection left idle past `idle_timeout` is closed even when no
/// call comes along to notice, and the next call opens a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    use std::sync::atomic::Ordering::SeqCst;
    let (s, _url) = server().await;
    let (front, conns) = recording_proxy(s.local_addr().expect("addr")).await;
    let mut o = HttpOptions::new(format!("http://{front}/"));
    o.idle_timeout = Duration::from_millis(300);
    let c = HttpClient::new(o).expect("client");
    c.call(CallKind::Execute, json!(1), ctx(5000))
        .await
        .expect("call");
    let first = Arc::clone(&conns.lock().expect("lock")[0]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !first.closed.load(SeqCst) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "an idle connection outlived idle_timeout by 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.call(CallKind::Execute, json!(2), ctx(5000))
        .await
        .expect("a call after the idle close");
    let per_conn: Vec<usize> = conns
        .lock()
        .expect("lock")
        .iter()
        .map(|c| c.requests.load(SeqCst))
        .collect();
    assert_eq!(per_conn, vec![1, 1], "requests per connection");
}

/// Read a request's head, byte by byte so that nothing of the body is
/// taken; its `Content-Length` (`None`: the peer closed first).
async fn read_head(s: &mut tokio::net::TcpStream) -> Option<usize> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => head.push(b[0]),
        }
    }
    Some(
        String::from_utf8_lossy(&head)
            .to_ascii_lowercase()
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0),
    )
}

/// Read and drop `len` bytes of body; false if the peer closed first.
async fn skip_body(s: &mut tokio::net::TcpStream, len: usize) -> bool {
    let mut left = len;
    let mut chunk = [0u8; 4096];
    while left > 0 {
        match s.read(&mut chunk[..left.min(4096)]).await {
            Ok(0) | Err(_) => return false,
            Ok(k) => left -= k,
        }
    }
    true
}

/// Answer with an envelope whose `data` is `data` (JSON), keep-alive.
async fn answer(s: &mut tokio::net::TcpStream, data: &str) {
    let body = format!(r#"{{"data":{data},"request_id":"x"}}"#);
    let _ = s
        .write_all(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await;
}

/// A server that answers one request per connection with the connection's
/// number in `data` (keep-alive, no `Connection: close`) and closes it 20 ms
/// later, as a server's own idle timeout does.
async fn one_answer_per_connection() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut n = 0u32;
        while let Ok((mut s, _)) = l.accept().await {
            n += 1;
            tokio::spawn(async move {
                let Some(len) = read_head(&mut s).await else {
                    return;
                };
                if !skip_body(&mut s, len).await {
                    return;
                }
                answer(&mut s, &n.to_string()).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            });
        }
    });
    addr
}

/// A pooled connection that the server has since closed is never handed to
/// a call: each call after the server's close goes out on a new connection
/// and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_server_closed_is_not_reused() {
    let addr = one_answer_per_connection().await;
    let c = HttpClient::new(HttpOptions::new(format!("http://{addr}/"))).expect("client");
    for i in 1..=5 {
        let r = c
            .call(CallKind::Execute, json!(i), ctx(5000))
            .await
            .unwrap_or_else(|e| panic!("call {i} after the server closed the last: {e}"));
        assert_eq!(r, json!(i), "call {i} went out on connection {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A `timeout` too long to add to the clock (about 295 billion years) is
/// no deadline: the server answers instead of panicking on the overflow,
/// which with `panic = "abort"` took the whole plugin down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_past_the_end_of_the_clock_is_answered() {
    let (s, _url) = server().await;
    let addr = s.local_addr().expect("addr");
    let body = r#"{"data":{"n":1},"request_id":"far","timeout":"9300000000000000000s"}"#;
    let req = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (head, out) = tokio::time::timeout(Duration::from_secs(10), raw(addr, &req))
        .await
        .expect("an answer in time");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let v: Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(v["request_id"], "far");
    assert_eq!(v["data"]["echo"], json!({ "n": 1 }));
    assert_eq!(v["data"]["has_deadline"], false);
}

/// An IPv6 literal endpoint (`http://[::1]:port/`) is dialled without its
/// brackets and named with them in `Host`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_literal_endpoint_is_reached() {
    let s = match http::serve(
        Arc::new(Echo),
        HttpServeOptions::new("[::1]:0".parse().expect("addr")),
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("skipped: this machine has no IPv6 loopback ({e})");
            return;
        }
    };
    let url = format!("http://{}/", s.local_addr().expect("addr"));
    assert!(url.starts_with("http://[::1]:"), "{url}");
    let c = HttpClient::new(HttpOptions::new(&url)).expect("client");
    let r = c
        .call(CallKind::Execute, json!("v6"), ctx(5000))
        .await
        .expect("call over IPv6");
    assert_eq!(r["echo"], json!("v6"));
}

/// A server that answers a large request at once, without reading its body,
/// and keeps the connection open: the client's request body is still going
/// out when the answer is in. That connection must not be handed to the next
/// call, which would wait on it until its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_still_sending_is_not_handed_to_the_next_call() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = l.accept().await {
            let len = read_head(&mut s).await.unwrap_or(0);
            let big = len > 1 << 20;
            if !big {
                skip_body(&mut s, len).await;
            }
            answer(&mut s, &big.to_string()).await;
            // Neither read nor closed: the client's body stays unsent.
            held.push(s);
        }
    });
    let c = HttpClient::new(HttpOptions::new(format!("http://{addr}/"))).expect("client");
    let r = c
        .call(CallKind::Execute, json!("x".repeat(16 << 20)), ctx(10_000))
        .await
        .expect("the early answer");
    assert_eq!(r, json!(true));
    let t0 = std::time::Instant::now();
    let r = c
        .call(CallKind::Execute, json!("small"), ctx(3000))
        .await
        .expect("the next call, on a connection of its own");
    assert_eq!(r, json!(false));
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
}

/// The answer's request id is the envelope's, escapes and all; an envelope
/// without one takes the `X-Request-ID` header's, and the handler sees the
/// same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_id_is_the_envelopes_else_the_headers() {
    let (s, _url) = server().await;
    let addr = s.local_addr().expect("addr");
    for (body, header, want) in [
        (r#"{"data":{"n":1}}"#, "hdr-7", "hdr-7"),
        (r#"{"data":{"n":1},"request_id":""}"#, "hdr-8", "hdr-8"),
        (
            r#"{"data":{"n":1},"request_id":"a\"b\\c\u00e9"}"#,
            "hdr-9",
            "a\"b\\c\u{e9}",
        ),
    ] {
        let (head, out) = raw(
            addr,
            &format!(
                "POST / HTTP/1.1\r\nHost: x\r\nX-Request-ID: {header}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let v: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["request_id"], want, "{body}");
        assert_eq!(v["data"]["request_id"], want, "the handler's, {body}");
    }
}

/// A failure's error and code (one its status does not imply) come through
/// whatever data rides with it (here a lone surrogate, which no `Value`
/// holds); a success whose data no `Value` holds fails at once, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_is_read_whatever_its_data() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        for (status, body) in [
            (
                "500 Internal Server Error",
                r#"{"data":{"s":"\ud800"},"error":"slow down","request_id":"x","metadata":{"error_code":"RATELIMIT_1501"}}"#,
            ),
            ("200 OK", r#"{"data":{"s":"\ud800"},"request_id":"x"}"#),
        ] {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let Some(len) = read_head(&mut s).await else {
                return;
            };
            skip_body(&mut s, len).await;
            let _ = s
                .write_all(
                    format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
        }
    });
    let c = HttpClient::new(HttpOptions::new(format!("http://{addr}/"))).expect("client");
    let e = c
        .call(CallKind::Execute, json!(1), ctx(5000))
        .await
        .expect_err("a failure");
    assert_eq!(e.kind, ErrorKind::RateLimited, "{e}");
    assert_eq!(e.message, "slow down", "{e}");
    let e = c
        .call(CallKind::Execute, json!(1), ctx(5000))
        .await
        .expect_err("no Value holds the data");
    assert_eq!(e.kind, ErrorKind::ExecutionFailed, "{e}");
    assert!(
        e.message.starts_with("cannot parse the JSON payload"),
        "{e}"
    );
}
