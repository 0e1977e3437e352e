//! Benchmark of the plugin transports against minimal raw baselines on the
//! same transport, in one run: 1 KB JSON request and response; latency p50 /
//! p99 with one caller, throughput with 64 concurrent callers.
//!
//! ```text
//! cargo run --release -p hangar-plugin --example plugin_bench [-- SECONDS ROUNDS [ONLY…]]
//! ```
//!
//! `ONLY` names the rows to run (`unix`, `http`, `grpc`, `reqwest`, `go`);
//! all of them when none is named.
//!
//! - **unix raw**: a length-prefixed echo over a Unix socket written directly
//!   on tokio (no JSON), one connection per caller.
//! - **unix json**, **http json**, **grpc json**: the same raw clients
//!   and servers, doing the JSON work a call of a `serde_json::Value` cannot
//!   avoid: the caller encodes the value and parses the answer, the server
//!   parses the request and encodes it back. The library rows do that too,
//!   so these are what the library's own machinery is measured against.
//! - **unix lib**: [`UnixClient`] (default options: a pool of 4 multiplexed
//!   connections) against [`unix::serve`] with an echo [`Handler`].
//! - **http raw**: a hyper HTTP/1 echo server and hyper's connection-level
//!   client, one keep-alive connection per caller, body echoed as bytes.
//! - **http lib**: [`HttpClient`] (default options) against [`http::serve`].
//! - **grpc raw**: tonic with the same proto, an Execute that returns the
//!   request bytes, called with pre-encoded bytes on one channel.
//! - **grpc lib**: [`GrpcClient`] (default options) against [`grpc::serve`].
//!
//! - **unix lib raw**, **http lib raw**, **grpc lib raw**: the same
//!   clients calling [`Transport::call_raw`] (payload and answer as JSON
//!   text, parsed by neither side) against servers of a handler that sets
//!   [`Handler::RAW`] and echoes the text: what a caller with its own types,
//!   or passing bytes through, pays. Measured against the raw (bytes) rows.
//!
//! - **http reqwest**: reqwest (the other candidate client) posting the same
//!   envelope to the same library server, to show why the library drives
//!   hyper directly.
//!
//! - **go-plugin**: the peer, HashiCorp go-plugin's gRPC plugin and host
//!   answering the same 1 KB echo (`bench/goplugin`, built with Debian's Go
//!   packages), run as a child process in each round when `PLUGIN_BENCH_GO`
//!   names its binary; it reports its own figures.
//!
//! The rows of a transport are measured interleaved, latency (see
//! [`latencies`]) and throughput (see [`throughputs`]) alike, so that their
//! ratios compare like with like on a shared machine.
//!
//! Servers run on their own 2-thread runtime, callers on another
//! (`PLUGIN_BENCH_SERVER_THREADS`, `PLUGIN_BENCH_CLIENT_THREADS` change
//! either).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hangar_plugin::grpc::pb::plugin_service_client::PluginServiceClient;
use hangar_plugin::grpc::pb::plugin_service_server::{PluginService, PluginServiceServer};
use hangar_plugin::grpc::pb::{self, ExecuteRequest};
use hangar_plugin::grpc::{GrpcClient, GrpcOptions, GrpcServeOptions};
use hangar_plugin::http::{HttpClient, HttpOptions, HttpServeOptions};
use hangar_plugin::unix::UnixClient;
use hangar_plugin::{grpc, http, unix, Call, CallContext, CallKind, Handler, RawValue, Transport};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONCURRENCY: usize = 64;
const LAT_CALLS: usize = 5000;
const LAT_BATCHES: usize = 20;
const TP_SLICES: usize = 10;

struct Echo;

/// The echo, taking and answering JSON text.
struct RawEcho;

impl Handler for RawEcho {
    const RAW: bool = true;
    async fn execute(&self, call: Call) -> Result<Value, String> {
        Ok(call.data)
    }
    async fn execute_raw(&self, call: Call<Box<RawValue>>) -> Result<Box<RawValue>, String> {
        Ok(call.data)
    }
    fn info(&self) -> Value {
        json!({ "name": "bench" })
    }
}

impl Handler for Echo {
    async fn execute(&self, call: Call) -> Result<Value, String> {
        Ok(call.data)
    }
    fn info(&self) -> Value {
        json!({ "name": "bench" })
    }
}

fn payload() -> Value {
    // About 1 KB of JSON.
    json!({
        "id": 42,
        "user": "bench-user",
        "tags": ["a", "b", "c"],
        "payload": "x".repeat(940),
    })
}

#[derive(Clone, Copy)]
struct Stats {
    p50: Duration,
    p99: Duration,
    rps: f64,
}

/// A caller: one call of the thing under test.
type CallFn =
    Arc<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>;

async fn latency(call: &CallFn) -> (Duration, Duration) {
    latencies(std::slice::from_ref(call)).await[0]
}

/// p50 and p99 of each caller over [`LAT_CALLS`] sequential calls, taken in
/// [`LAT_BATCHES`] turns of each caller in order, so that every row of a
/// comparison sees the same spells of the machine: on this shared VM one
/// caller's p50 moves between about 12 and 130 µs from one second to the
/// next with nothing changed, which made rows measured one after the other
/// incomparable.
///
/// The calls are made from a task on the client runtime, as a caller in an
/// async program makes them (and as the throughput rows do).
/// `PLUGIN_BENCH_BLOCK_ON=1` makes them from the thread in `block_on`
/// instead, outside the runtime's workers: there the raw clients do their
/// own I/O on that thread, while every answer the library's multiplexed
/// connections read on a worker has to wake it across threads.
async fn latencies(calls: &[CallFn]) -> Vec<(Duration, Duration)> {
    if std::env::var_os("PLUGIN_BENCH_BLOCK_ON").is_some_and(|v| v == "1") {
        return measure_latencies(calls.to_vec()).await;
    }
    tokio::spawn(measure_latencies(calls.to_vec()))
        .await
        .expect("latency task")
}

async fn measure_latencies(calls: Vec<CallFn>) -> Vec<(Duration, Duration)> {
    for c in &calls {
        for _ in 0..500 {
            c().await;
        }
    }
    let per = LAT_CALLS / LAT_BATCHES;
    let mut v: Vec<Vec<Duration>> = vec![Vec::with_capacity(LAT_CALLS); calls.len()];
    for _ in 0..LAT_BATCHES {
        for (c, out) in calls.iter().zip(&mut v) {
            for _ in 0..per {
                let t = Instant::now();
                c().await;
                out.push(t.elapsed());
            }
        }
    }
    v.into_iter()
        .map(|mut v| {
            v.sort();
            (v[v.len() / 2], v[v.len() * 99 / 100])
        })
        .collect()
}

/// One transport's four rows: raw and raw JSON (`rows`: a caller for
/// latency and [`CONCURRENCY`] for throughput each), then the library's
/// client with `Value` and with text, all interleaved.
async fn group(
    rows: &[(CallFn, Vec<CallFn>)],
    lib: &Arc<dyn Transport>,
    rawlib: &Arc<dyn Transport>,
    secs: f64,
) -> [Stats; 4] {
    let singles = [
        Arc::clone(&rows[0].0),
        Arc::clone(&rows[1].0),
        lib_caller(Arc::clone(lib)),
        lib_raw_caller(Arc::clone(rawlib)),
    ];
    // `PLUGIN_BENCH_ROW=<0..3>` (raw, json, lib, lib raw) measures that
    // row's throughput alone, for a profiler.
    let only: Option<usize> = std::env::var("PLUGIN_BENCH_ROW").ok().map(|v| {
        v.parse()
            .ok()
            .filter(|k| *k < 4)
            .expect("PLUGIN_BENCH_ROW is a row: 0 (raw), 1 (json), 2 (lib) or 3 (lib raw)")
    });
    let lat = match only {
        None => latencies(&singles).await,
        Some(_) => vec![(Duration::ZERO, Duration::ZERO); 4],
    };
    let sets: Vec<Vec<CallFn>> = (0..4)
        .filter(|k| only.is_none_or(|o| o == *k))
        .map(|k| match k {
            0 | 1 => rows[k].1.clone(),
            2 => (0..CONCURRENCY)
                .map(|_| lib_caller(Arc::clone(lib)))
                .collect(),
            _ => (0..CONCURRENCY)
                .map(|_| lib_raw_caller(Arc::clone(rawlib)))
                .collect(),
        })
        .collect();
    let mut measured = throughputs(sets, secs).await.into_iter();
    let mut rps = [0.0; 4];
    for (k, r) in rps.iter_mut().enumerate() {
        if only.is_none_or(|o| o == k) {
            *r = measured.next().unwrap_or(0.0);
        }
    }
    std::array::from_fn(|k| Stats {
        p50: lat[k].0,
        p99: lat[k].1,
        rps: rps[k],
    })
}

/// Calls per second of each set of [`CONCURRENCY`] callers, measured in
/// [`TP_SLICES`] turns of every set (each `secs / TP_SLICES` long, the
/// first set of a turn rotating), so that every row of a comparison sees the
/// same spells of the shared machine and none always runs first or last;
/// one row after the other, the ratio between two rows moved by ±15 % from
/// run to run with nothing changed.
async fn throughputs(sets: Vec<Vec<CallFn>>, secs: f64) -> Vec<f64> {
    // Warm up every caller (connections, pools).
    for callers in &sets {
        let warm: Vec<_> = callers
            .iter()
            .map(|c| {
                let c = Arc::clone(c);
                tokio::spawn(async move {
                    for _ in 0..20 {
                        c().await;
                    }
                })
            })
            .collect();
        for w in warm {
            let _ = w.await;
        }
    }
    let slice = Duration::from_secs_f64(secs / TP_SLICES as f64);
    let mut calls = vec![0u64; sets.len()];
    let mut took = vec![Duration::ZERO; sets.len()];
    for turn in 0..TP_SLICES {
        for i in 0..sets.len() {
            let k = (i + turn) % sets.len();
            let callers = &sets[k];
            let start = Instant::now();
            let end = start + slice;
            let tasks: Vec<_> = callers
                .iter()
                .map(|c| {
                    let c = Arc::clone(c);
                    tokio::spawn(async move {
                        let mut n = 0u64;
                        while Instant::now() < end {
                            c().await;
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            for t in tasks {
                calls[k] += t.await.unwrap_or(0);
            }
            took[k] += start.elapsed();
        }
    }
    calls
        .iter()
        .zip(&took)
        .map(|(&n, t)| n as f64 / t.as_secs_f64())
        .collect()
}

async fn throughput(make: &(dyn Fn(usize) -> CallFn + Sync), secs: f64) -> f64 {
    let callers: Vec<CallFn> = (0..CONCURRENCY).map(make).collect();
    throughputs(vec![callers], secs).await[0]
}

async fn measure(single: CallFn, make: &(dyn Fn(usize) -> CallFn + Sync), secs: f64) -> Stats {
    let (p50, p99) = latency(&single).await;
    let rps = throughput(make, secs).await;
    Stats { p50, p99, rps }
}

/// What the `json` baselines do to a body on each side: parse it into a
/// `Value` and write it back out (the least a JSON call costs on top of the
/// bytes).
fn json_round(body: &[u8]) -> Vec<u8> {
    let v: Value = serde_json::from_slice(body).expect("json");
    serde_json::to_vec(&v).expect("json")
}

// ------------------------------------------------------------------ unix raw

async fn raw_unix_server(path: std::path::PathBuf, json: bool) {
    let _ = std::fs::remove_file(&path);
    let l = tokio::net::UnixListener::bind(&path).expect("bind");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let mut buf = Vec::new();
                loop {
                    let mut len = [0u8; 4];
                    if r.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let n = u32::from_be_bytes(len) as usize;
                    buf.resize(4 + n, 0);
                    buf[..4].copy_from_slice(&len);
                    if r.read_exact(&mut buf[4..]).await.is_err() {
                        return;
                    }
                    if json {
                        let out = json_round(&buf[4..]);
                        buf.truncate(4);
                        buf[..4].copy_from_slice(&(out.len() as u32).to_be_bytes());
                        buf.extend_from_slice(&out);
                    }
                    if w.write_all(&buf).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

async fn raw_unix_caller(path: &std::path::Path, json: bool) -> CallFn {
    let s = tokio::net::UnixStream::connect(path)
        .await
        .expect("connect");
    let s = Arc::new(tokio::sync::Mutex::new(s));
    let data = Arc::new(payload());
    let body = serde_json::to_vec(&*data).expect("json");
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    let frame = Arc::new(frame);
    Arc::new(move || {
        let (s, frame, data) = (Arc::clone(&s), Arc::clone(&frame), Arc::clone(&data));
        Box::pin(async move {
            let mut s = s.lock().await;
            if json {
                let body = serde_json::to_vec(&*data).expect("json");
                let mut f = (body.len() as u32).to_be_bytes().to_vec();
                f.extend_from_slice(&body);
                s.write_all(&f).await.expect("write");
            } else {
                s.write_all(&frame).await.expect("write");
            }
            let mut len = [0u8; 4];
            s.read_exact(&mut len).await.expect("read");
            let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
            s.read_exact(&mut buf).await.expect("read");
            if json {
                let _: Value = serde_json::from_slice(&buf).expect("json");
            }
        })
    })
}

fn lib_caller(t: Arc<dyn Transport>) -> CallFn {
    let data = payload();
    Arc::new(move || {
        let (t, data) = (Arc::clone(&t), data.clone());
        Box::pin(async move {
            let r = t
                .call(
                    CallKind::Execute,
                    data,
                    CallContext::with_timeout(Duration::from_secs(10)),
                )
                .await;
            if let Err(e) = r {
                panic!("call failed: {e}");
            }
        })
    })
}

fn lib_raw_caller(t: Arc<dyn Transport>) -> CallFn {
    let data: Arc<Box<RawValue>> =
        Arc::new(serde_json::value::to_raw_value(&payload()).expect("json"));
    Arc::new(move || {
        let (t, data) = (Arc::clone(&t), Arc::clone(&data));
        Box::pin(async move {
            let r = t
                .call_raw(
                    CallKind::Execute,
                    &data,
                    CallContext::with_timeout(Duration::from_secs(10)),
                )
                .await;
            if let Err(e) = r {
                panic!("call failed: {e}");
            }
        })
    })
}

fn reqwest_caller(client: reqwest::Client, url: String) -> CallFn {
    let data = payload();
    Arc::new(move || {
        let (client, url, data) = (client.clone(), url.clone(), data.clone());
        Box::pin(async move {
            let env = json!({ "data": data, "request_id": "r", "timeout": "10000ms" });
            let r = client.post(&url).json(&env).send().await.expect("send");
            let v: Value = r.json().await.expect("json");
            assert!(v.get("error").is_none());
        })
    })
}

// ------------------------------------------------------------------ http raw

async fn raw_http_server(json: bool) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| async move {
                        let mut body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        if json {
                            body = Bytes::from(json_round(&body));
                        }
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(body))
                                .expect("response"),
                        )
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

async fn raw_http_caller(addr: std::net::SocketAddr, json: bool) -> CallFn {
    let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = s.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let sender = Arc::new(tokio::sync::Mutex::new(sender));
    let data = Arc::new(payload());
    let body = Bytes::from(serde_json::to_vec(&*data).expect("json"));
    Arc::new(move || {
        let (sender, data) = (Arc::clone(&sender), Arc::clone(&data));
        let body = if json {
            Bytes::from(serde_json::to_vec(&*data).expect("json"))
        } else {
            body.clone()
        };
        Box::pin(async move {
            let mut s = sender.lock().await;
            s.ready().await.expect("ready");
            let req = hyper::Request::post("/")
                .header("host", "bench")
                .header("content-type", "application/json")
                .body(Full::new(body))
                .expect("request");
            let resp = s.send_request(req).await.expect("send");
            let b = resp.into_body().collect().await.expect("body").to_bytes();
            if json {
                let _: Value = serde_json::from_slice(&b).expect("json");
            }
        })
    })
}

// ------------------------------------------------------------------ grpc raw

struct RawGrpc {
    json: bool,
}

#[tonic::async_trait]
impl PluginService for RawGrpc {
    async fn execute(
        &self,
        req: tonic::Request<ExecuteRequest>,
    ) -> Result<tonic::Response<pb::ExecuteResponse>, tonic::Status> {
        let m = req.into_inner();
        let data = if self.json {
            Bytes::from(json_round(&m.data))
        } else {
            m.data
        };
        Ok(tonic::Response::new(pb::ExecuteResponse {
            request_id: m.request_id,
            data,
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

async fn raw_grpc_server(json: bool) -> std::net::SocketAddr {
    let inc = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind")
        .with_nodelay(Some(true));
    let addr = inc.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(PluginServiceServer::new(RawGrpc { json }))
            .serve_with_incoming(inc),
    );
    addr
}

async fn raw_grpc_caller(ch: tonic::transport::Channel, json: bool) -> CallFn {
    let data = Arc::new(payload());
    let body = Bytes::from(serde_json::to_vec(&*data).expect("json"));
    Arc::new(move || {
        let ch = ch.clone();
        let body = if json {
            Bytes::from(serde_json::to_vec(&*data).expect("json"))
        } else {
            body.clone()
        };
        Box::pin(async move {
            let r = PluginServiceClient::new(ch)
                .execute(ExecuteRequest {
                    request_id: "r".into(),
                    data: body,
                    ..Default::default()
                })
                .await
                .expect("execute");
            let r = r.into_inner();
            if json {
                let _: Value = serde_json::from_slice(&r.data).expect("json");
            }
        })
    })
}

// ------------------------------------------------------------------ main

fn row(name: &str, s: &Stats) {
    println!(
        "| {name:<12} | {:>8.1} | {:>8.1} | {:>10.0} |",
        s.p50.as_secs_f64() * 1e6,
        s.p99.as_secs_f64() * 1e6,
        s.rps
    );
}

fn median(mut v: Vec<Stats>) -> Stats {
    let mid = v.len() / 2;
    let mut p50: Vec<_> = v.iter().map(|s| s.p50).collect();
    let mut p99: Vec<_> = v.iter().map(|s| s.p99).collect();
    p50.sort();
    p99.sort();
    v.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    Stats {
        p50: p50[mid],
        p99: p99[mid],
        rps: v[mid].rps,
    }
}

/// Worker threads of a runtime: the variable's number, else 2.
fn threads(var: &str) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(2)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let rounds: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(3);
    // Transports to measure (`unix`, `http`, `grpc`, `reqwest`, `go`); all when none named.
    let only: Vec<String> = args.collect();
    let want = |g: &str| only.is_empty() || only.iter().any(|o| o == g);
    let go_bench = std::env::var_os("PLUGIN_BENCH_GO").map(std::path::PathBuf::from);
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads("PLUGIN_BENCH_SERVER_THREADS"))
        .thread_name("bench-server")
        .enable_all()
        .build()
        .expect("server runtime");
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads("PLUGIN_BENCH_CLIENT_THREADS"))
        .thread_name("bench-client")
        .enable_all()
        .build()
        .expect("client runtime");
    let dir = tempfile::tempdir().expect("tmp");
    let lib_sock = dir.path().join("lib.sock");

    // Servers: raw (bytes), raw with JSON work on both sides, and the library's.
    let raw_sock = dir.path().join("raw.sock");
    let json_sock = dir.path().join("json.sock");
    let rawlib_sock = dir.path().join("rawlib.sock");
    let (rawlib_http, rawlib_grpc, _keep_raw) = servers.block_on(async {
        let u = unix::serve(&rawlib_sock, Arc::new(RawEcho))
            .await
            .expect("unix serve");
        let h = http::serve(
            Arc::new(RawEcho),
            HttpServeOptions::new("127.0.0.1:0".parse().expect("addr")),
        )
        .await
        .expect("http serve");
        let g = grpc::serve(
            Arc::new(RawEcho),
            GrpcServeOptions::new("127.0.0.1:0".parse().expect("addr")),
        )
        .await
        .expect("grpc serve");
        let (ha, ga) = (h.local_addr().expect("addr"), g.local_addr().expect("addr"));
        (ha, ga, (u, h, g))
    });
    let (raw_http, json_http, lib_http, raw_grpc, json_grpc, lib_grpc, _keep) =
        servers.block_on(async {
            raw_unix_server(raw_sock.clone(), false).await;
            raw_unix_server(json_sock.clone(), true).await;
            let u = unix::serve(&lib_sock, Arc::new(Echo))
                .await
                .expect("unix serve");
            let (rh, jh) = (raw_http_server(false).await, raw_http_server(true).await);
            let h = http::serve(
                Arc::new(Echo),
                HttpServeOptions::new("127.0.0.1:0".parse().expect("addr")),
            )
            .await
            .expect("http serve");
            let (rg, jg) = (raw_grpc_server(false).await, raw_grpc_server(true).await);
            let g = grpc::serve(
                Arc::new(Echo),
                GrpcServeOptions::new("127.0.0.1:0".parse().expect("addr")),
            )
            .await
            .expect("grpc serve");
            let (ha, ga) = (h.local_addr().expect("addr"), g.local_addr().expect("addr"));
            (rh, jh, ha, rg, jg, ga, (u, h, g))
        });

    let body_len = serde_json::to_vec(&payload()).map(|v| v.len()).unwrap_or(0);
    println!(
        "payload {body_len} bytes of JSON each way; latency over {LAT_CALLS} sequential calls; throughput {CONCURRENCY} concurrent callers for {secs} s; median of {rounds} rounds"
    );
    const NAMES: [&str; 14] = [
        "unix raw",
        "unix json",
        "unix lib",
        "http raw",
        "http json",
        "http lib",
        "grpc raw",
        "grpc json",
        "grpc lib",
        "http reqwest",
        "go-plugin",
        "unix lib raw",
        "http lib raw",
        "grpc lib raw",
    ];
    let mut results: Vec<Vec<Stats>> = vec![Vec::new(); NAMES.len()];
    clients.block_on(async {
        let unix_lib: Arc<dyn Transport> =
            Arc::new(UnixClient::connect(&lib_sock).await.expect("unix client"));
        let http_lib: Arc<dyn Transport> = Arc::new(
            HttpClient::new(HttpOptions::new(format!("http://{lib_http}/"))).expect("http client"),
        );
        let grpc_lib: Arc<dyn Transport> =
            Arc::new(GrpcClient::new(GrpcOptions::new(lib_grpc.to_string())).expect("grpc client"));
        let unix_rawlib: Arc<dyn Transport> = Arc::new(
            UnixClient::connect(&rawlib_sock)
                .await
                .expect("unix client"),
        );
        let http_rawlib: Arc<dyn Transport> = Arc::new(
            HttpClient::new(HttpOptions::new(format!("http://{rawlib_http}/")))
                .expect("http client"),
        );
        let grpc_rawlib: Arc<dyn Transport> = Arc::new(
            GrpcClient::new(GrpcOptions::new(rawlib_grpc.to_string())).expect("grpc client"),
        );
        let channel = |addr: std::net::SocketAddr| async move {
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .expect("endpoint")
                .tcp_nodelay(true)
                .connect()
                .await
                .expect("connect")
        };
        let (raw_ch, json_ch) = (channel(raw_grpc).await, channel(json_grpc).await);

        for round in 0..rounds {
            eprintln!("round {}/{rounds}", round + 1);
            if want("unix") {
                let mut rows = Vec::new();
                for sock in [&raw_sock, &json_sock] {
                    let json = sock == &json_sock;
                    let mut callers = Vec::new();
                    for _ in 0..CONCURRENCY {
                        callers.push(raw_unix_caller(sock, json).await);
                    }
                    rows.push((raw_unix_caller(sock, json).await, callers));
                }
                let st = group(&rows, &unix_lib, &unix_rawlib, secs).await;
                for (k, row) in [0, 1, 2, 11].into_iter().enumerate() {
                    results[row].push(st[k]);
                }
            }
            if want("http") {
                let mut rows = Vec::new();
                for (addr, json) in [(raw_http, false), (json_http, true)] {
                    let mut callers = Vec::new();
                    for _ in 0..CONCURRENCY {
                        callers.push(raw_http_caller(addr, json).await);
                    }
                    rows.push((raw_http_caller(addr, json).await, callers));
                }
                let st = group(&rows, &http_lib, &http_rawlib, secs).await;
                for (k, row) in [3, 4, 5, 12].into_iter().enumerate() {
                    results[row].push(st[k]);
                }
            } else if want("reqwest") {
                // reqwest is measured against the raw HTTP row alone.
                let mut callers = Vec::new();
                for _ in 0..CONCURRENCY {
                    callers.push(raw_http_caller(raw_http, false).await);
                }
                let single = raw_http_caller(raw_http, false).await;
                let s = measure(single, &|i| Arc::clone(&callers[i]), secs).await;
                results[3].push(s);
            }
            if want("grpc") {
                let mut rows = Vec::new();
                for (ch, json) in [(&raw_ch, false), (&json_ch, true)] {
                    let single = raw_grpc_caller(ch.clone(), json).await;
                    let mut callers = Vec::new();
                    for _ in 0..CONCURRENCY {
                        callers.push(raw_grpc_caller(ch.clone(), json).await);
                    }
                    rows.push((single, callers));
                }
                let st = group(&rows, &grpc_lib, &grpc_rawlib, secs).await;
                for (k, row) in [6, 7, 8, 13].into_iter().enumerate() {
                    results[row].push(st[k]);
                }
            }
            if want("reqwest") {
                let rq = reqwest::Client::builder()
                    .tcp_nodelay(true)
                    .pool_max_idle_per_host(100)
                    .build()
                    .expect("reqwest");
                let url = format!("http://{lib_http}/");
                let s = measure(
                    reqwest_caller(rq.clone(), url.clone()),
                    &|_| reqwest_caller(rq.clone(), url.clone()),
                    secs,
                )
                .await;
                results[9].push(s);
            }
            if want("go") {
                if let Some(go) = &go_bench {
                    results[10].push(go_plugin(go, secs).await);
                }
            }
        }
    });

    println!();
    println!("| transport    | p50 µs   | p99 µs   | calls/s @64 |");
    println!("|--------------|----------|----------|-------------|");
    let med: Vec<Option<Stats>> = results
        .into_iter()
        .map(|v| (!v.is_empty()).then(|| median(v)))
        .collect();
    for (n, s) in NAMES.iter().zip(&med) {
        if let Some(s) = s {
            row(n, s);
        }
    }
    println!();
    // (measured, baseline): each library row against raw bytes and raw
    // JSON, reqwest against raw HTTP, and our unix and gRPC against the peer.
    for (a, b) in [
        (2, 0),
        (2, 1),
        (11, 0),
        (5, 3),
        (5, 4),
        (12, 3),
        (8, 6),
        (8, 7),
        (13, 6),
        (9, 3),
        (2, 10),
        (11, 10),
        (8, 10),
    ] {
        if let (Some(x), Some(y)) = (&med[a], &med[b]) {
            println!(
                "{} / {}: p50 {:.2}x, p99 {:.2}x, throughput {:.2}x",
                NAMES[a],
                NAMES[b],
                x.p50.as_secs_f64() / y.p50.as_secs_f64(),
                x.p99.as_secs_f64() / y.p99.as_secs_f64(),
                x.rps / y.rps
            );
        }
    }
}

/// One run of the go-plugin peer (bench/goplugin): it prints its own p50,
/// p99 and calls/s at 64 callers as one JSON line.
async fn go_plugin(bin: &std::path::Path, secs: f64) -> Stats {
    let out = tokio::process::Command::new(bin)
        .arg(secs.to_string())
        .output()
        .await
        .expect("run the go-plugin bench");
    assert!(
        out.status.success(),
        "go-plugin bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("go-plugin bench output");
    let us = |k: &str| Duration::from_secs_f64(v[k].as_f64().unwrap_or(0.0) / 1e6);
    Stats {
        p50: us("p50_us"),
        p99: us("p99_us"),
        rps: v["rps"].as_f64().unwrap_or(0.0),
    }
}
