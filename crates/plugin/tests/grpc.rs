//! The gRPC transport against real tonic servers on loopback: PluginService
//! calls with context, the standard grpc.health.v1 service following the
//! handler's health, plugin errors, timeouts, a server that is not there,
//! and close.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hangar_plugin::grpc::{self, GrpcClient, GrpcOptions, GrpcServeOptions};
use hangar_plugin::{Call, CallContext, CallKind, ErrorKind, Handler, Transport, TransportExt};
use serde_json::{json, Value};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

struct Echo {
    healthy: AtomicBool,
}

impl Handler for Echo {
    async fn execute(&self, call: Call) -> Result<Value, String> {
        if let Some(ms) = call.data.get("sleep_ms").and_then(Value::as_u64) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if call.data.get("fail").is_some() {
            return Err("asked to fail".into());
        }
        Ok(json!({
            "echo": call.data,
            "request_id": call.request_id,
            "trace": call.header("x-trace-id"),
            "has_deadline": call.deadline.is_some(),
            "header_names": header_names(&call),
        }))
    }

    fn info(&self) -> Value {
        json!({ "name": "echo", "version": "1.0.0" })
    }

    async fn health(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }
}

/// The names of the headers a handler was given, sorted.
fn header_names(call: &Call) -> Vec<&str> {
    let mut names: Vec<&str> = call.headers.keys().map(String::as_str).collect();
    names.sort_unstable();
    names
}

fn ctx(ms: u64) -> CallContext {
    CallContext::with_timeout(Duration::from_millis(ms))
}

async fn server(h: Arc<Echo>) -> (hangar_plugin::Server, String) {
    let mut o = GrpcServeOptions::new("127.0.0.1:0".parse().expect("addr"));
    o.health_interval = Duration::from_millis(100);
    let s = grpc::serve(h, o).await.expect("serve");
    let ep = format!("127.0.0.1:{}", s.local_addr().expect("addr").port());
    (s, ep)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_service_calls_carry_context_and_errors() {
    let (_s, ep) = server(Arc::new(Echo {
        healthy: AtomicBool::new(true),
    }))
    .await;
    let c = GrpcClient::new(GrpcOptions::new(&ep)).expect("client");
    assert_eq!(c.kind(), "grpc");
    let mut cx = ctx(10_000);
    cx.request_id = "g-abc".into();
    cx.headers.insert("x-trace-id".into(), "t-7".into());
    let r = c
        .call(CallKind::Execute, json!({ "n": 1 }), cx)
        .await
        .expect("execute");
    assert_eq!(
        r,
        json!({
            "echo": { "n": 1 },
            "request_id": "g-abc",
            "trace": "t-7",
            "has_deadline": true,
            // The caller's headers and the request id, not gRPC's own
            // (`te`, `content-type`, `user-agent`, `grpc-timeout`).
            "header_names": ["x-request-id", "x-trace-id"],
        })
    );
    c.ping(Duration::from_secs(10)).await.expect("ping");
    c.health(Duration::from_secs(10)).await.expect("health");
    assert_eq!(
        c.info(Duration::from_secs(10)).await.expect("info")["name"],
        "echo"
    );
    let e = c
        .call(CallKind::Execute, json!({ "fail": true }), ctx(10_000))
        .await
        .expect_err("fails");
    assert_eq!(e.kind, ErrorKind::ExecutionFailed);
    assert_eq!(e.message, "asked to fail");
    let e = c
        .call(CallKind::Execute, json!({ "sleep_ms": 3000 }), ctx(300))
        .await
        .expect_err("slow");
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    assert!(e.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_health_service_follows_the_handler() {
    let h = Arc::new(Echo {
        healthy: AtomicBool::new(true),
    });
    let (_s, ep) = server(Arc::clone(&h)).await;
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{ep}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut hc = HealthClient::new(ch);
    let check = |svc: &str| HealthCheckRequest {
        service: svc.to_string(),
    };
    let st = hc
        .check(check(""))
        .await
        .expect("check")
        .into_inner()
        .status;
    assert_eq!(st, ServingStatus::Serving as i32);
    let svc = "hangar.plugin.v1.PluginService";
    let st = hc
        .check(check(svc))
        .await
        .expect("check")
        .into_inner()
        .status;
    assert_eq!(st, ServingStatus::Serving as i32);

    h.healthy.store(false, Ordering::SeqCst);
    let mut st = 0;
    for _ in 0..100 {
        st = hc
            .check(check(svc))
            .await
            .expect("check")
            .into_inner()
            .status;
        if st == ServingStatus::NotServing as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(st, ServingStatus::NotServing as i32);
    let c = GrpcClient::new(GrpcOptions::new(&ep)).expect("client");
    let e = c
        .health(Duration::from_secs(10))
        .await
        .expect_err("unhealthy");
    assert_eq!(e.code(), "HEALTH_1601");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_server_is_a_retryable_error_and_close_is_idempotent() {
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let c = GrpcClient::new(GrpcOptions::new(free.to_string())).expect("client");
    let e = c
        .call(CallKind::Execute, json!(1), ctx(5000))
        .await
        .expect_err("nobody there");
    assert!(e.is_retryable(), "{e}");
    assert_eq!(e.code(), "TRANSPORT_1302", "{e}");

    let (_s, ep) = server(Arc::new(Echo {
        healthy: AtomicBool::new(true),
    }))
    .await;
    let c = GrpcClient::new(GrpcOptions::new(&ep)).expect("client");
    c.ping(Duration::from_secs(10)).await.expect("ping");
    c.close().await;
    c.close().await;
    let e = c
        .call(CallKind::Ping, Value::Null, ctx(1000))
        .await
        .expect_err("closed");
    assert_eq!(e.code(), "TRANSPORT_1302");
}

/// A TCP proxy to `upstream` whose connections all die when the returned
/// sender is dropped: the server "dies" from the client's point of view.
async fn proxy(upstream: String) -> (String, tokio::sync::watch::Sender<bool>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((mut down, _)) = l.accept().await {
            let up = upstream.clone();
            let mut rx = rx.clone();
            tokio::spawn(async move {
                let Ok(mut upc) = tokio::net::TcpStream::connect(up).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut down, &mut upc) => {}
                    _ = rx.changed() => {}
                }
            });
        }
    });
    (addr, tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_dies_mid_call_is_a_retryable_transport_error() {
    let (_s, ep) = server(Arc::new(Echo {
        healthy: AtomicBool::new(true),
    }))
    .await;
    let (front, kill) = proxy(ep).await;
    let c = GrpcClient::new(GrpcOptions::new(&front)).expect("client");
    c.ping(Duration::from_secs(10)).await.expect("ping");
    let inflight = {
        let c = c.clone();
        tokio::spawn(async move {
            c.call(
                CallKind::Execute,
                json!({ "sleep_ms": 10_000 }),
                ctx(30_000),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    drop(kill);
    let e = inflight
        .await
        .expect("join")
        .expect_err("the connection died");
    assert_eq!(e.kind, ErrorKind::GrpcTransport, "{e}");
    assert_eq!(e.code(), "TRANSPORT_1302");
    assert!(e.is_retryable());
}
