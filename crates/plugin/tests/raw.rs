//! Payloads as JSON text (`Transport::call_raw`, `Handler::RAW`) over real
//! Unix-socket, HTTP and gRPC servers on loopback: the text crosses both
//! sides byte for byte (a parse and re-encode anywhere would normalise its
//! spacing and escapes), mixes with `Value` callers and handlers both ways,
//! keeps error codes, and bytes that are not JSON are refused with a code
//! where they enter (a gRPC message from a foreign peer). A `Value` as deep
//! as `serde_json` takes crosses every transport too, though an envelope
//! puts it one level deeper.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hangar_plugin::grpc::pb::plugin_service_client::PluginServiceClient;
use hangar_plugin::grpc::pb::plugin_service_server::{PluginService, PluginServiceServer};
use hangar_plugin::grpc::pb::{self, ExecuteRequest};
use hangar_plugin::grpc::{self, GrpcClient, GrpcOptions, GrpcServeOptions};
use hangar_plugin::http::{self, HttpClient, HttpOptions, HttpServeOptions};
use hangar_plugin::unix::{self, UnixClient};
use hangar_plugin::{
    Call, CallContext, CallKind, ErrorKind, ExecOptions, ExecutionContext, Handler, Manager,
    ManagerConfig, Plugin, RawValue, Transport, TransportExt,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Odd but valid JSON: spacing, an escaped letter, keys out of order. A
/// `Value` in between would print it as `{"a":[1,2],"z":"é"}`.
const ODD: &str = r#"{ "z" : "\u00e9",  "a" : [1,2] }"#;
/// What the raw handler answers: odd in its own way.
const ODD_ANSWER: &str = r#"[ "ok" ,	{"n":1e2} ]"#;

/// Valid JSON text that a `Value` will not hold: a lone surrogate.
const LONE: &str = r#"["\ud800"]"#;

/// Takes and answers text; keeps the last text it was given.
#[derive(Default)]
struct RawHandler {
    seen: Mutex<Vec<String>>,
    slowed: std::sync::atomic::AtomicBool,
}

impl Handler for RawHandler {
    const RAW: bool = true;
    async fn execute(&self, _call: Call) -> Result<Value, String> {
        Err("the raw handler was called with a parsed payload".into())
    }
    async fn execute_raw(&self, call: Call<Box<RawValue>>) -> Result<Box<RawValue>, String> {
        let text = call.data.get().to_string();
        if let Ok(mut s) = self.seen.lock() {
            s.push(text.clone());
        }
        match text.as_str() {
            r#""fail""# => Err("asked to fail".into()),
            r#""echo""# => Ok(call.data),
            r#""slow first""# => {
                if self.slowed.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    Ok(call.data)
                } else {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Err("too late".into())
                }
            }
            r#""lone""# => RawValue::from_string(LONE.into()).map_err(|e| e.to_string()),
            _ => RawValue::from_string(ODD_ANSWER.into()).map_err(|e| e.to_string()),
        }
    }
    fn info(&self) -> Value {
        json!({ "name": "raw" })
    }
}

/// The ordinary kind: parsed payloads.
struct ValueHandler;

impl Handler for ValueHandler {
    async fn execute(&self, call: Call) -> Result<Value, String> {
        Ok(json!({ "got": call.data }))
    }
    fn info(&self) -> Value {
        json!({ "name": "value" })
    }
}

/// Answers what it was given.
struct EchoValue;

impl Handler for EchoValue {
    async fn execute(&self, call: Call) -> Result<Value, String> {
        Ok(call.data)
    }
    fn info(&self) -> Value {
        json!({ "name": "echo" })
    }
}

fn ctx() -> CallContext {
    CallContext::with_timeout(Duration::from_secs(10))
}

fn raw(s: &str) -> Box<RawValue> {
    RawValue::from_string(s.to_string()).expect("valid JSON")
}

/// A client of each transport against a server of `h`, kept alive together.
struct Served {
    clients: Vec<(&'static str, Arc<dyn Transport>)>,
    _servers: Vec<hangar_plugin::Server>,
    _dir: tempfile::TempDir,
}

async fn serve_all<H: Handler>(h: Arc<H>) -> Served {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("p.sock");
    let u = unix::serve(&sock, Arc::clone(&h)).await.expect("unix");
    let hs = http::serve(
        Arc::clone(&h),
        HttpServeOptions::new("127.0.0.1:0".parse().expect("addr")),
    )
    .await
    .expect("http");
    let g = grpc::serve(
        h,
        GrpcServeOptions::new("127.0.0.1:0".parse().expect("addr")),
    )
    .await
    .expect("grpc");
    let http_url = format!("http://{}/", hs.local_addr().expect("addr"));
    let grpc_ep = g.local_addr().expect("addr").to_string();
    let clients: Vec<(&'static str, Arc<dyn Transport>)> = vec![
        (
            "unix",
            Arc::new(UnixClient::connect(&sock).await.expect("unix client")),
        ),
        (
            "http",
            Arc::new(HttpClient::new(HttpOptions::new(http_url)).expect("http client")),
        ),
        (
            "grpc",
            Arc::new(GrpcClient::new(GrpcOptions::new(grpc_ep)).expect("grpc client")),
        ),
    ];
    Served {
        clients,
        _servers: vec![u, hs, g],
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_crosses_every_transport_byte_for_byte() {
    let h = Arc::new(RawHandler::default());
    let s = serve_all(Arc::clone(&h)).await;
    for (name, t) in &s.clients {
        let out = t
            .call_raw(CallKind::Execute, &raw(ODD), ctx())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            out.get(),
            ODD_ANSWER,
            "{name}: the answer as the handler wrote it"
        );
        let seen = h.seen.lock().expect("lock").pop();
        assert_eq!(seen.as_deref(), Some(ODD), "{name}: the payload as sent");

        // A failure keeps its code; the control calls still answer.
        let e = t
            .call_raw(CallKind::Execute, &raw(r#""fail""#), ctx())
            .await
            .expect_err("fails");
        assert_eq!(e.kind, ErrorKind::ExecutionFailed, "{name}: {e}");
        assert!(e.message.contains("asked to fail"), "{name}: {e}");
        t.ping(Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("{name}: ping: {e}"));

        // A `Value` caller of a raw handler gets the answer parsed.
        let v = t
            .call(CallKind::Execute, json!("echo"), ctx())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(v, json!("echo"), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_callers_and_value_handlers_mix() {
    let s = serve_all(Arc::new(ValueHandler)).await;
    for (name, t) in &s.clients {
        let out = t
            .call_raw(CallKind::Execute, &raw(ODD), ctx())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        // The handler saw the payload parsed, and its answer is text again.
        let v: Value = serde_json::from_str(out.get()).expect("JSON");
        assert_eq!(v, json!({ "got": { "z": "é", "a": [1, 2] } }), "{name}");
    }
}

/// Fields in an order a `Value` (a sorted map here) would not keep.
#[derive(Serialize)]
struct Ask {
    zone: String,
    amount: u32,
}

#[derive(Deserialize, Debug, PartialEq)]
struct Answer(String, Value);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_calls_encode_straight_to_text() {
    let h = Arc::new(RawHandler::default());
    let s = serve_all(Arc::clone(&h)).await;
    for (name, t) in &s.clients {
        let ask = Ask {
            zone: "eu".into(),
            amount: 3,
        };
        let a: Answer = t
            .execute_typed(&ask, ctx())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(a, Answer("ok".into(), json!({ "n": 100.0 })), "{name}");
        let seen = h.seen.lock().expect("lock").pop();
        assert_eq!(
            seen.as_deref(),
            Some(r#"{"zone":"eu","amount":3}"#),
            "{name}: serde's own encoding of the request, in field order"
        );
    }
}

/// A gRPC peer that is not hangar: answers whatever bytes it is told to.
struct Foreign(Bytes);

#[tonic::async_trait]
impl PluginService for Foreign {
    async fn execute(
        &self,
        req: tonic::Request<ExecuteRequest>,
    ) -> Result<tonic::Response<pb::ExecuteResponse>, tonic::Status> {
        Ok(tonic::Response::new(pb::ExecuteResponse {
            request_id: req.into_inner().request_id,
            data: self.0.clone(),
            ..Default::default()
        }))
    }
    async fn health(
        &self,
        _: tonic::Request<pb::HealthRequest>,
    ) -> Result<tonic::Response<pb::HealthResponse>, tonic::Status> {
        Ok(tonic::Response::new(pb::HealthResponse {
            healthy: true,
            message: String::new(),
        }))
    }
    async fn info(
        &self,
        _: tonic::Request<pb::InfoRequest>,
    ) -> Result<tonic::Response<pb::InfoResponse>, tonic::Status> {
        Ok(tonic::Response::new(pb::InfoResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_bytes_that_are_not_json_are_refused_where_they_enter() {
    // Client side: a foreign server answering bytes that are not JSON.
    let inc = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let addr = inc.local_addr().expect("addr");
    let srv = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(PluginServiceServer::new(Foreign(Bytes::from_static(
                b"{not json",
            ))))
            .serve_with_incoming(inc),
    );
    let c = GrpcClient::new(GrpcOptions::new(addr.to_string())).expect("client");
    let e = c
        .call_raw(CallKind::Execute, &raw("1"), ctx())
        .await
        .expect_err("not JSON");
    assert_eq!(e.kind, ErrorKind::ExecutionFailed, "{e}");
    assert!(e.message.contains("not JSON"), "{e}");
    srv.abort();

    // Server side: a foreign client sending bytes that are not JSON to a
    // raw handler, which never sees them.
    let h = Arc::new(RawHandler::default());
    let g = grpc::serve(
        Arc::clone(&h),
        GrpcServeOptions::new("127.0.0.1:0".parse().expect("addr")),
    )
    .await
    .expect("grpc");
    let ch = tonic::transport::Endpoint::from_shared(format!(
        "http://{}",
        g.local_addr().expect("addr")
    ))
    .expect("endpoint")
    .connect()
    .await
    .expect("connect");
    let r = PluginServiceClient::new(ch)
        .execute(ExecuteRequest {
            request_id: "r1".into(),
            data: Bytes::from_static(b"[1,"),
            ..Default::default()
        })
        .await
        .expect("answered")
        .into_inner();
    assert_eq!(r.error_code, "PLUGIN_1203", "{r:?}");
    assert!(r.data.is_empty(), "{r:?}");
    assert!(h.seen.lock().expect("lock").is_empty());
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_a_value_cannot_hold_passes_through_or_fails_the_call_at_once() {
    assert!(
        serde_json::from_str::<Value>(LONE).is_err(),
        "a Value takes it"
    );
    // A raw handler gets it as sent; a `Value` caller of its answer fails
    // at once, not at its deadline.
    let h = Arc::new(RawHandler::default());
    let s = serve_all(Arc::clone(&h)).await;
    for (name, t) in &s.clients {
        t.call_raw(CallKind::Execute, &raw(LONE), ctx())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(h.seen.lock().expect("lock").pop().as_deref(), Some(LONE));
        let t0 = Instant::now();
        let e = t
            .call(CallKind::Execute, json!("lone"), ctx())
            .await
            .expect_err("no Value holds it");
        assert_eq!(e.kind, ErrorKind::ExecutionFailed, "{name}: {e}");
        assert!(t0.elapsed() < Duration::from_secs(5), "{name}: {e}");
    }
    // A `Value` handler cannot take it: the call is answered, by id, with
    // why, well before its deadline.
    let s = serve_all(Arc::new(ValueHandler)).await;
    for (name, t) in &s.clients {
        let t0 = Instant::now();
        let e = t
            .call_raw(CallKind::Execute, &raw(LONE), ctx())
            .await
            .expect_err("refused");
        assert_eq!(e.kind, ErrorKind::ExecutionFailed, "{name}: {e}");
        assert!(t0.elapsed() < Duration::from_secs(5), "{name}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_goes_through_the_managers_whole_stack_retries_included() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("raw.sock");
    let h = Arc::new(RawHandler::default());
    let _s = unix::serve(&sock, Arc::clone(&h)).await.expect("unix");
    let cfg: ManagerConfig = serde_json::from_value(json!({"plugins": [{
        "name": "raw",
        "transport": "unix",
        "endpoint": sock.display().to_string(),
        "health_check": {"interval": "1h", "timeout": "2s"},
        "connection": {"request_timeout": "1s"},
        "retry": {"max_retries": 3, "initial_interval": "20ms"},
    }]}))
    .expect("config");
    let m = Manager::new();
    m.load(cfg).await.expect("load");

    let out = m
        .execute_raw("raw", &raw(ODD), ExecOptions::default())
        .await
        .expect("call");
    assert_eq!(out.get(), ODD_ANSWER);
    assert_eq!(h.seen.lock().expect("lock").pop().as_deref(), Some(ODD));

    // The first attempt times out; the retry sends the same text again.
    let out = m
        .execute_raw("raw", &raw(r#""slow first""#), ExecOptions::default())
        .await
        .expect("the retry answers");
    assert_eq!(out.get(), r#""slow first""#);
    let seen: Vec<String> = std::mem::take(&mut *h.seen.lock().expect("lock"));
    assert_eq!(seen, [r#""slow first""#, r#""slow first""#]);

    // Typed calls, both ways in, are encoded straight to text.
    let ask = Ask {
        zone: "eu".into(),
        amount: 3,
    };
    let a: Answer = m
        .execute_typed("raw", &ask, ExecOptions::default())
        .await
        .expect("typed");
    assert_eq!(a, Answer("ok".into(), json!({ "n": 100.0 })));
    let p = m.plugin::<Ask, Answer>("raw").expect("plugin");
    let b = p
        .execute(&ExecutionContext::new(), ask)
        .await
        .expect("typed");
    assert_eq!(b, a);
    let seen: Vec<String> = std::mem::take(&mut *h.seen.lock().expect("lock"));
    assert_eq!(seen, [r#"{"zone":"eu","amount":3}"#; 2]);

    // A `Value` call of the same plugin still works, and its answer parses.
    let v = m.execute("raw", json!("echo")).await.expect("value call");
    assert_eq!(v, json!("echo"));
    m.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_as_deep_as_serde_json_takes_crosses_every_transport() {
    // The deepest array a `Value` holds on its own. Inside an envelope it
    // is one level deeper, which a read of the whole envelope in one pass
    // refuses: each side must then take the payload on its own.
    let deep = |d: usize| format!("{}{}", "[".repeat(d), "]".repeat(d));
    let max = (1..1000)
        .take_while(|d| serde_json::from_str::<Value>(&deep(*d)).is_ok())
        .last()
        .expect("some depth parses");
    let v: Value = serde_json::from_str(&deep(max)).expect("parses");
    let s = serve_all(Arc::new(EchoValue)).await;
    for (name, t) in &s.clients {
        let got = t
            .call(CallKind::Execute, v.clone(), ctx())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, v, "{name}");
        // One level more, no `Value` holds: refused, with why, at once.
        let t0 = Instant::now();
        let e = t
            .call_raw(CallKind::Execute, &raw(&deep(max + 1)), ctx())
            .await
            .expect_err("no Value holds it");
        assert_eq!(e.kind, ErrorKind::ExecutionFailed, "{name}: {e}");
        assert!(t0.elapsed() < Duration::from_secs(5), "{name}: {e}");
    }
}
