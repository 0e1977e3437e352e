//! The Unix-socket transport against real sockets: a plugin served with the
//! server SDK and one written in Python from docs/plugin-protocol.md. Typed
//! calls, control messages, concurrent calls answered out of order, the pool
//! growing under load, timeouts, plugin errors, auth refusals, a server that
//! dies mid-call and comes back, and close.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hangar_plugin::unix::{self, UnixClient, UnixOptions};
use hangar_plugin::{
    AuthConfig, Call, CallContext, CallKind, ErrorKind, Handler, ServerAuth, Transport,
    TransportExt,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Add {
    a: i64,
    b: i64,
    /// Milliseconds to take.
    #[serde(default)]
    delay_ms: u64,
}

struct Calc {
    healthy: bool,
}

impl Handler for Calc {
    async fn execute(&self, call: Call) -> Result<Value, String> {
        if call.data.get("whoami").is_some() {
            if let Some(ms) = call.data.get("delay_ms").and_then(Value::as_u64) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let mut who = json!({
                "request_id": call.request_id,
                "trace": call.header("X-Trace-Id"),
                "has_deadline": call.deadline.is_some(),
            });
            if let Some(h) = call.header("x-request-id") {
                who["request_id_header"] = json!(h);
            }
            return Ok(who);
        }
        let add: Add = serde_json::from_value(call.data).map_err(|e| e.to_string())?;
        if add.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(add.delay_ms)).await;
        }
        if add.a < 0 {
            return Err("negative numbers are not supported".into());
        }
        Ok(json!(add.a + add.b))
    }

    fn info(&self) -> Value {
        json!({ "name": "calc", "version": "1.0.0" })
    }

    async fn health(&self) -> bool {
        self.healthy
    }
}

fn ctx(ms: u64) -> CallContext {
    CallContext::with_timeout(Duration::from_millis(ms))
}

fn add(a: i64, b: i64, delay_ms: u64) -> Value {
    json!({ "a": a, "b": b, "delay_ms": delay_ms })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_calls_control_messages_and_context() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("calc.sock");
    let _server = unix::serve(&path, Arc::new(Calc { healthy: true }))
        .await
        .expect("serve");
    let c = UnixClient::connect(&path).await.expect("connect");
    let sum: i64 = c
        .execute_typed(
            &Add {
                a: 2,
                b: 40,
                delay_ms: 0,
            },
            ctx(5000),
        )
        .await
        .expect("execute");
    assert_eq!(sum, 42);
    c.ping(Duration::from_secs(5)).await.expect("ping");
    assert_eq!(
        c.info(Duration::from_secs(5)).await.expect("info")["name"],
        "calc"
    );
    c.health(Duration::from_secs(5)).await.expect("healthy");

    // The handler sees the caller's request id, headers and deadline.
    let mut cx = ctx(5000);
    cx.request_id = "req-abc".into();
    cx.headers.insert("x-trace-id".into(), "t-1".into());
    let who = c
        .call(CallKind::Execute, json!({ "whoami": true }), cx)
        .await
        .expect("whoami");
    assert_eq!(
        who,
        json!({ "request_id": "req-abc", "trace": "t-1", "has_deadline": true })
    );

    // A plugin failure keeps its message and is not retryable.
    let e = c
        .call(CallKind::Execute, add(-1, 1, 0), ctx(5000))
        .await
        .expect_err("plugin error");
    assert_eq!(e.kind, ErrorKind::ExecutionFailed);
    assert!(e.message.contains("negative"), "{e}");
    assert!(!e.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_plugin_answers_health_1601() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("sick.sock");
    let _server = unix::serve(&path, Arc::new(Calc { healthy: false }))
        .await
        .expect("serve");
    let c = UnixClient::connect(&path).await.expect("connect");
    let e = c
        .health(Duration::from_secs(5))
        .await
        .expect_err("unhealthy");
    assert_eq!(e.code(), "HEALTH_1601");
    c.ping(Duration::from_secs(5))
        .await
        .expect("still answers ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_answers_out_of_order_and_the_pool_grows_under_load() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("calc.sock");
    let _server = unix::serve(&path, Arc::new(Calc { healthy: true }))
        .await
        .expect("serve");
    let mut o = UnixOptions::new(&path);
    o.max_connections = 1;
    let single = UnixClient::connect_with(o).await.expect("connect");
    let slow = {
        let c = single.clone();
        tokio::spawn(async move {
            c.call(CallKind::Execute, add(1, 1, 5000), ctx(10_000))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    let fast = single
        .call(CallKind::Execute, add(2, 2, 0), ctx(10_000))
        .await
        .expect("fast");
    assert_eq!(fast, json!(4));
    assert!(
        !slow.is_finished(),
        "the fast call ({:?}) overtook the slow one on the same connection",
        t.elapsed()
    );
    assert_eq!(slow.await.expect("join").expect("slow"), json!(2));
    assert_eq!(single.connections(), 1);

    let mut o = UnixOptions::new(&path);
    o.max_connections = 3;
    let pooled = UnixClient::connect_with(o).await.expect("connect");
    let calls: Vec<_> = (0..24)
        .map(|i| {
            let c = pooled.clone();
            tokio::spawn(async move {
                c.call(CallKind::Execute, add(i, 1, 1000), ctx(10_000))
                    .await
            })
        })
        .collect();
    for (i, h) in calls.into_iter().enumerate() {
        assert_eq!(h.await.expect("join").expect("call"), json!(i as i64 + 1));
    }
    assert_eq!(
        pooled.connections(),
        3,
        "busy connections make the pool grow to its size"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_plugin_times_out_and_the_connection_survives() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("calc.sock");
    let _server = unix::serve(&path, Arc::new(Calc { healthy: true }))
        .await
        .expect("serve");
    let c = UnixClient::connect(&path).await.expect("connect");
    let e = c
        .call(CallKind::Execute, add(1, 1, 3000), ctx(200))
        .await
        .expect_err("too slow");
    assert_eq!(e.kind, ErrorKind::Timeout);
    assert!(e.is_retryable());
    let ok = c
        .call(CallKind::Execute, add(1, 2, 0), ctx(5000))
        .await
        .expect("next call");
    assert_eq!(ok, json!(3));
}

/// A calculator plugin on a socket in `dir`, and a client of one connection.
async fn calc_on_one_connection(dir: &std::path::Path) -> (hangar_plugin::Server, UnixClient) {
    let path = dir.join("calc.sock");
    let server = unix::serve(&path, Arc::new(Calc { healthy: true }))
        .await
        .expect("serve");
    let c = UnixClient::connect_with(UnixOptions {
        max_connections: 1,
        ..UnixOptions::new(&path)
    })
    .await
    .expect("connect");
    (server, c)
}

/// One timer serves every call of a connection: a call with a short timeout
/// that starts while one with a long timeout waits must still end at its
/// own deadline, and the long one must not be cut short by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_deadline_behind_a_long_one_on_one_connection_is_kept() {
    let dir = tempfile::tempdir().expect("tmp");
    let (_server, c) = calc_on_one_connection(dir.path()).await;
    let long = tokio::spawn({
        let c = c.clone();
        async move {
            let t = Instant::now();
            let r = c
                .call(CallKind::Execute, add(2, 3, 1500), ctx(30_000))
                .await;
            (r, t.elapsed())
        }
    });
    // The long call is on the wire before the short one starts.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    let e = c
        .call(CallKind::Execute, add(1, 1, 30_000), ctx(200))
        .await
        .expect_err("too slow");
    let took = t.elapsed();
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    assert!(e.message.contains("200ms"), "{e}");
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(1200),
        "the short call ended after {took:?}"
    );
    let (r, took) = long.await.expect("join");
    assert_eq!(r.expect("the long call is answered"), json!(5));
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    assert_eq!(c.connections(), 1);
}

/// Two calls with the same request id at once on one connection: the
/// second goes out under a unique id, and the plugin still learns the
/// caller's from the `x-request-id` header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_in_flight_twice_still_reaches_the_plugin() {
    let dir = tempfile::tempdir().expect("tmp");
    let (_server, c) = calc_on_one_connection(dir.path()).await;
    let call = |c: UnixClient| async move {
        c.call(
            CallKind::Execute,
            json!({"whoami": true, "delay_ms": 300}),
            CallContext {
                request_id: "dup-1".into(),
                ..ctx(10_000)
            },
        )
        .await
        .expect("call")
    };
    let (a, b) = tokio::join!(call(c.clone()), call(c.clone()));
    let mut ids = [a, b].map(|v| {
        (
            v["request_id"].as_str().expect("id").to_string(),
            v["request_id_header"].clone(),
        )
    });
    ids.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(ids[0], ("dup-1".to_string(), Value::Null), "{ids:?}");
    assert!(ids[1].0.starts_with("dup-1#"), "{ids:?}");
    assert_eq!(ids[1].1, json!("dup-1"), "{ids:?}");
}

/// A connection whose tasks died with the runtime that made them (a client
/// shared between runtimes) counts as gone: the next call, on another
/// runtime, gets a new connection rather than the dead one.
#[test]
fn a_connection_whose_runtime_shut_down_is_replaced() {
    let rt = |n| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()
            .expect("runtime")
    };
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("calc.sock");
    let server_rt = rt(1);
    let _server = server_rt
        .block_on(unix::serve(&path, Arc::new(Calc { healthy: true })))
        .expect("serve");
    let first = rt(1);
    let c = first
        .block_on(UnixClient::connect_with(UnixOptions {
            max_connections: 1,
            ..UnixOptions::new(&path)
        }))
        .expect("connect");
    let v = first
        .block_on(c.call(CallKind::Execute, add(1, 2, 0), ctx(5000)))
        .expect("first call");
    assert_eq!(v, json!(3));
    first.shutdown_timeout(Duration::from_secs(5));
    let second = rt(1);
    let t = Instant::now();
    let v = second
        .block_on(c.call(CallKind::Execute, add(2, 2, 0), ctx(5000)))
        .expect("a call after the first runtime is gone");
    assert_eq!(v, json!(4));
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_dies_mid_call_is_a_retryable_transport_error_and_it_can_come_back() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("calc.sock");
    let server = unix::serve(&path, Arc::new(Calc { healthy: true }))
        .await
        .expect("serve");
    let c = UnixClient::connect(&path).await.expect("connect");
    let inflight = {
        let c = c.clone();
        tokio::spawn(async move {
            c.call(CallKind::Execute, add(1, 1, 10_000), ctx(20_000))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    server.shutdown().await;
    let e = inflight.await.expect("join").expect_err("the server died");
    assert_eq!(e.kind, ErrorKind::UnixTransport);
    assert_eq!(e.code(), "TRANSPORT_1303");
    assert!(e.is_retryable());

    // Nobody listens: connecting fails, retryable.
    let e = c
        .call(CallKind::Execute, add(1, 1, 0), ctx(2000))
        .await
        .expect_err("gone");
    assert_eq!(e.kind, ErrorKind::ConnectionFailed);
    assert!(e.is_retryable());

    // It comes back: the pool reconnects on the next call.
    let _server = unix::serve(&path, Arc::new(Calc { healthy: true }))
        .await
        .expect("serve again");
    let ok = c
        .call(CallKind::Execute, add(20, 22, 0), ctx(5000))
        .await
        .expect("back");
    assert_eq!(ok, json!(42));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_is_idempotent_and_fails_calls_in_flight_and_after() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("calc.sock");
    let _server = unix::serve(&path, Arc::new(Calc { healthy: true }))
        .await
        .expect("serve");
    let c = UnixClient::connect(&path).await.expect("connect");
    let inflight = {
        let c = c.clone();
        tokio::spawn(async move {
            c.call(CallKind::Execute, add(1, 1, 10_000), ctx(20_000))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    Transport::close(&c).await;
    Transport::close(&c).await;
    let e = inflight.await.expect("join").expect_err("closed");
    assert_eq!(e.kind, ErrorKind::UnixTransport);
    let e = c
        .call(CallKind::Execute, add(1, 1, 0), ctx(2000))
        .await
        .expect_err("closed");
    assert_eq!(e.kind, ErrorKind::UnixTransport);
    assert_eq!(c.connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_wrong_credentials_are_refused_with_auth_codes() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("calc.sock");
    let auth = AuthConfig::bearer("s3cret");
    let _server = unix::serve_with(
        &path,
        Arc::new(Calc { healthy: true }),
        ServerAuth::new(&auth).expect("auth"),
    )
    .await
    .expect("serve");
    let client = |a: AuthConfig| {
        let mut o = UnixOptions::new(&path);
        o.auth = a;
        UnixClient::connect_with(o)
    };
    let good = client(auth.clone()).await.expect("connect");
    assert_eq!(
        good.call(CallKind::Execute, add(1, 1, 0), ctx(5000))
            .await
            .expect("authorised"),
        json!(2)
    );
    let none = client(AuthConfig::none()).await.expect("connect");
    let e = none
        .call(CallKind::Execute, add(1, 1, 0), ctx(5000))
        .await
        .expect_err("no token");
    assert_eq!(e.code(), "AUTH_1102");
    assert!(!e.is_retryable());
    let wrong = client(AuthConfig::bearer("guess")).await.expect("connect");
    let e = wrong
        .call(CallKind::Execute, add(1, 1, 0), ctx(5000))
        .await
        .expect_err("wrong token");
    assert_eq!(e.code(), "AUTH_1106");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_socket_is_connection_failed_until_the_plugin_is_up() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("late.sock");
    let e = UnixClient::connect(&path).await.expect_err("nothing there");
    assert_eq!(e.code(), "PLUGIN_1205");
    // A lazy client fails its calls until the plugin is up, then works.
    let c = UnixClient::new(UnixOptions::new(&path)).expect("lazy client");
    let e = c
        .call(CallKind::Ping, Value::Null, ctx(2000))
        .await
        .expect_err("not up yet");
    assert_eq!(e.code(), "PLUGIN_1205");
    assert!(e.is_retryable());
    let _server = unix::serve(&path, Arc::new(Calc { healthy: true }))
        .await
        .expect("serve");
    c.ping(Duration::from_secs(5)).await.expect("up now");
    assert_eq!(
        UnixClient::new(UnixOptions::new(""))
            .expect_err("no path")
            .code(),
        "PLUGIN_1006"
    );
}

fn python_plugin(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/plugin-protocol.md"
    ))
    .expect("read the protocol doc");
    let start = doc.find("```python\n").expect("a python block") + "```python\n".len();
    let end = start + doc[start..].find("```").expect("end of block");
    let script = dir.join("plugin.py");
    std::fs::write(&script, &doc[start..end]).expect("write script");
    let ok = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("skipping: python3 is not available");
        return None;
    }
    Some(script)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_plugin_from_the_protocol_doc_works_over_a_unix_socket() {
    let dir = tempfile::tempdir().expect("tmp");
    let Some(script) = python_plugin(dir.path()) else {
        return;
    };
    let sock = dir.path().join("py.sock");
    let mut child = tokio::process::Command::new("python3")
        .arg(&script)
        .arg("--socket")
        .arg(&sock)
        .kill_on_drop(true)
        .spawn()
        .expect("start python");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sock.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut o = UnixOptions::new(&sock);
    o.max_connections = 1;
    let c = UnixClient::connect_with(o).await.expect("connect");
    let mut cx = ctx(10_000);
    cx.request_id = "py-1".into();
    let r = c
        .call(CallKind::Execute, json!({ "x": [1, 2, 3] }), cx)
        .await
        .expect("execute");
    assert_eq!(
        r,
        json!({ "echo": { "x": [1, 2, 3] }, "request_id": "py-1" })
    );
    c.ping(Duration::from_secs(10)).await.expect("ping");
    assert_eq!(
        c.info(Duration::from_secs(10)).await.expect("info")["name"],
        "py-echo"
    );
    let e = c
        .call(CallKind::Execute, json!({ "fail": true }), ctx(10_000))
        .await
        .expect_err("asked to fail");
    assert_eq!(e.code(), "PLUGIN_1203");
    assert_eq!(e.message, "asked to fail");
    let _ = child.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_calls_on_one_connection_each_get_their_own_answer() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("calc.sock");
    let _server = unix::serve(&path, Arc::new(Calc { healthy: true }))
        .await
        .expect("serve");
    let mut o = UnixOptions::new(&path);
    o.max_connections = 1;
    let c = UnixClient::connect_with(o).await.expect("connect");
    // Callers give up at random (some mid-flight): the frames of the others
    // still arrive whole and answers reach the right caller.
    let calls: Vec<_> = (0..400i64)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                let timeout = if i % 7 == 0 { 1 } else { 20_000 };
                let r = c
                    .call(
                        CallKind::Execute,
                        add(i, 1000, (i % 5) as u64),
                        ctx(timeout),
                    )
                    .await;
                (i, r)
            })
        })
        .collect();
    let mut ok = 0;
    for h in calls {
        let (i, r) = h.await.expect("join");
        match r {
            Ok(v) => {
                assert_eq!(v, json!(i + 1000));
                ok += 1;
            }
            Err(e) => {
                assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
                assert_eq!(i % 7, 0, "only the impatient callers time out");
            }
        }
    }
    assert!(ok >= 340, "{ok} answers");
    assert_eq!(
        c.call(CallKind::Execute, add(1, 2, 0), ctx(5000))
            .await
            .expect("the connection is still sound"),
        json!(3)
    );
}

/// The public framing functions (what the transports and the fuzz target
/// `plugin_frames` use): frames read back as written, a clean end is `None`,
/// a cut frame and an oversized length are errors, bodies decode.
#[tokio::test]
async fn frames_read_back_and_bad_lengths_are_refused() {
    let req = unix::Request {
        kind: "execute".into(),
        request_id: "r1".into(),
        data: json!({"a": 1}),
        headers: Default::default(),
        timeout_ms: 5,
    };
    let mut wire = unix::encode_frame(&req).unwrap();
    wire.extend(unix::encode_frame(&json!({"request_id": "r1", "success": true})).unwrap());
    let mut r = &wire[..];
    let body = unix::read_frame(&mut r).await.unwrap().unwrap();
    assert_eq!(unix::decode_request(&body).unwrap(), req);
    let body = unix::read_frame(&mut r).await.unwrap().unwrap();
    let resp = unix::decode_response(&body).unwrap();
    assert!(resp.success && resp.kind.is_empty());
    assert!(unix::read_frame(&mut r).await.unwrap().is_none());

    let mut cut = &wire[..wire.len() - 1];
    unix::read_frame(&mut cut).await.unwrap();
    assert!(
        unix::read_frame(&mut cut).await.is_err(),
        "a frame cut short"
    );
    let huge = ((unix::MAX_FRAME + 1) as u32).to_be_bytes();
    assert!(unix::read_frame(&mut &huge[..]).await.is_err());
}

/// A reader that hands out at most `chunk` bytes per read (a socket under
/// load delivers frames in pieces like this).
struct Trickle<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl tokio::io::AsyncRead for Trickle<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = self.chunk.min(self.data.len()).min(buf.remaining());
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        std::task::Poll::Ready(Ok(()))
    }
}

/// The buffered reader both sides of the transport read with: frames come
/// back whole however the bytes arrive (one at a time, or a frame bigger
/// than its buffer), and it ends as `read_frame` does except that bytes
/// left over after the last frame are an error, not a clean end.
#[tokio::test]
async fn the_frame_reader_reads_frames_however_they_arrive() {
    let big = json!({"blob": "y".repeat(200_000)});
    let bodies: Vec<Vec<u8>> = vec![
        serde_json::to_vec(&json!({"a": 1})).unwrap(),
        Vec::new(),
        serde_json::to_vec(&big).unwrap(),
        serde_json::to_vec(&json!("last")).unwrap(),
    ];
    let mut wire = Vec::new();
    for b in &bodies {
        wire.extend_from_slice(&(b.len() as u32).to_be_bytes());
        wire.extend_from_slice(b);
    }
    for chunk in [1, 3, 4, 7, 1000, 65536, usize::MAX] {
        let mut r = unix::FrameReader::new(Trickle { data: &wire, chunk });
        for b in &bodies {
            assert!(!r.has_frame() || chunk > 4);
            let got = r.next().await.unwrap().expect("a frame");
            assert_eq!(got, &b[..], "chunk {chunk}");
        }
        assert!(
            r.next().await.unwrap().is_none(),
            "clean end, chunk {chunk}"
        );
    }
    for cut in [1, 3, 5, wire.len() - 1] {
        let mut r = unix::FrameReader::new(Trickle {
            data: &wire[..wire.len() - cut],
            chunk: 4096,
        });
        let mut n = 0;
        let end = loop {
            match r.next().await {
                Ok(Some(_)) => n += 1,
                other => break other.map(|o| o.is_some()),
            }
        };
        assert!(n < bodies.len());
        assert_eq!(
            end.unwrap_err().kind(),
            std::io::ErrorKind::UnexpectedEof,
            "cut {cut}"
        );
    }
    let huge = ((unix::MAX_FRAME + 1) as u32).to_be_bytes();
    let mut r = unix::FrameReader::new(&huge[..]);
    assert_eq!(
        r.next().await.unwrap_err().kind(),
        std::io::ErrorKind::InvalidData
    );
}

/// A plugin that stops reading: the call still ends at its timeout, even
/// while its request is stuck in the socket (the manager's timeout layer
/// relies on the transport for this).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_stops_reading_times_the_call_out_while_it_sends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deaf.sock");
    let l = tokio::net::UnixListener::bind(&path).unwrap();
    // Accepts and holds the connection, never reads.
    let held = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(s);
    });
    let c = UnixClient::connect(&path).await.unwrap();
    let big = json!({ "blob": "z".repeat(8 << 20) });
    let t0 = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        c.call(CallKind::Execute, big, ctx(300)),
    )
    .await
    .expect("the call ends at its own timeout, not never");
    let e = r.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    held.abort();
}
