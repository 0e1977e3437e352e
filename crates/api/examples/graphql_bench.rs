//! The GraphQL API against gRPC, as a client on the same machine sees them.
//! Driven by `bench/graphql.py`, which starts the daemon; by hand:
//!
//! ```sh
//! cargo build --release -p hangar-api --example graphql_bench
//! B=target/release/examples/graphql_bench
//! COMMON="--socket $DATA/hangar.sock --http 127.0.0.1:PORT --token-file $DATA/api.token"
//! $B query  $COMMON --expect 1000 --iterations 2000
//! $B events $COMMON --expect 1000 --subscribers 1   --restart s-1      --bursts 200 --pause-ms 25
//! $B events $COMMON --expect 1000 --subscribers 100 --restart 's-[12]??' --bursts 1
//! ```
//!
//! Both modes first wait until gRPC `Processes.List` reports `--expect`
//! processes running.
//!
//! `query`: one HTTP/1.1 keep-alive connection to `POST /graphql` and one
//! gRPC connection to the Unix socket, `--warmup` untimed calls of each, then
//! `--iterations` timed calls of each, alternating one GraphQL and one gRPC
//! call (which goes first swaps every pair), so load on the shared machine
//! falls on both alike. A GraphQL call is timed from sending the request to
//! the response decoded into typed structs (as tonic decodes the protobuf
//! reply into `pb::ProcessList`): `{ processes { name state pid restarts
//! health ports { name port } } }`, the fields `Processes.List` returns. Every
//! reply is checked (status 200, no `errors`, `--expect` processes) outside
//! the timed part.
//!
//! `events`: `--subscribers` WebSocket connections, each `graphql-transport-ws`
//! (`connection_init`, `connection_ack`, then `subscribe` to `subscription {
//! events(kinds: ["state"]) { id atMs name kind to } }`). Once all are
//! acknowledged and `--settle-ms` has passed (the server subscribes to the
//! event bus when it gets `subscribe`, which has no reply), it calls gRPC
//! `Processes.Restart` of `--restart` `--bursts` times, `--pause-ms` apart,
//! then waits until all `--expect` run again, reads the stored `state`
//! events after the id `Daemon.Status` named before the first restart
//! (`Events.History`), and waits (at most `--drain-secs`) until every
//! subscriber has every one of them. Each frame's receive time (wall clock,
//! taken when the frame is read, before it is parsed) minus the event's
//! `atMs` (the supervisor's wall-clock stamp of the transition, truncated to
//! whole ms, so a latency here is 0 to 1 ms more than the true one) is one
//! latency sample. Reports lost events (stored but not received, summed over
//! subscribers), extra and duplicate frames, latency over all frames, the
//! spread of per-subscriber p99s, and per event the spread of receive times
//! across subscribers.
//!
//! Prints one JSON object on stdout (percentiles by nearest rank, in ms);
//! progress goes to stderr.

use std::collections::{BTreeSet, HashMap};
use std::error::Error;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hangar_api::client::Client;
use hangar_api::pb;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const LIST_QUERY: &str = "{ processes { name state pid restarts health ports { name port } } }";
const EVENTS_SUBSCRIPTION: &str =
    "subscription { events(kinds: [\"state\"]) { id atMs name kind to } }";

const USAGE: &str = "usage: graphql_bench query|events --socket PATH --http HOST:PORT \
--token-file PATH [--expect N (1000)] [--wait-secs S (120)]
  query:  [--iterations K (2000)] [--warmup W (100)] [--raw]
  events: [--subscribers S (1)] [--restart PATTERN (s-1)] [--bursts B (200)] \
[--pause-ms P (25)] [--settle-ms M (1000)] [--drain-secs D (20)] [--raw]";

struct Args {
    mode: String,
    socket: PathBuf,
    http: SocketAddr,
    token: String,
    expect: usize,
    wait: Duration,
    iterations: usize,
    warmup: usize,
    raw: bool,
    subscribers: usize,
    restart: String,
    bursts: usize,
    pause: Duration,
    settle: Duration,
    drain: Duration,
}

fn parse_args() -> Res<Args> {
    let mut it = std::env::args().skip(1);
    let mode = it.next().unwrap_or_default();
    if mode == "-h" || mode == "--help" {
        println!("{USAGE}");
        std::process::exit(0);
    }
    if mode != "query" && mode != "events" {
        return Err(format!("first argument must be `query` or `events`\n{USAGE}").into());
    }
    let (mut socket, mut http, mut token_file) = (None, None, None);
    let mut a = Args {
        mode,
        socket: PathBuf::new(),
        http: "127.0.0.1:9470".parse()?,
        token: String::new(),
        expect: 1000,
        wait: Duration::from_secs(120),
        iterations: 2000,
        warmup: 100,
        raw: false,
        subscribers: 1,
        restart: "s-1".into(),
        bursts: 200,
        pause: Duration::from_millis(25),
        settle: Duration::from_millis(1000),
        drain: Duration::from_secs(20),
    };
    while let Some(flag) = it.next() {
        if flag == "--raw" {
            a.raw = true;
            continue;
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let num = |v: &str| -> Res<usize> {
            v.parse::<usize>()
                .map_err(|e| format!("{flag} {v:?}: not a count: {e}").into())
        };
        match flag.as_str() {
            "--socket" => socket = Some(PathBuf::from(value)),
            "--http" => http = Some(value.parse::<SocketAddr>()?),
            "--token-file" => token_file = Some(PathBuf::from(value)),
            "--expect" => a.expect = num(&value)?,
            "--wait-secs" => a.wait = Duration::from_secs(num(&value)? as u64),
            "--iterations" => a.iterations = num(&value)?,
            "--warmup" => a.warmup = num(&value)?,
            "--subscribers" => a.subscribers = num(&value)?,
            "--restart" => a.restart = value,
            "--bursts" => a.bursts = num(&value)?,
            "--pause-ms" => a.pause = Duration::from_millis(num(&value)? as u64),
            "--settle-ms" => a.settle = Duration::from_millis(num(&value)? as u64),
            "--drain-secs" => a.drain = Duration::from_secs(num(&value)? as u64),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
        }
    }
    a.socket = socket.ok_or_else(|| format!("--socket is required\n{USAGE}"))?;
    a.http = http.ok_or_else(|| format!("--http is required\n{USAGE}"))?;
    let tf = token_file.ok_or_else(|| format!("--token-file is required\n{USAGE}"))?;
    a.token = std::fs::read_to_string(&tf)
        .map_err(|e| format!("{}: {e}", tf.display()))?
        .trim()
        .to_string();
    if a.iterations == 0 || a.subscribers == 0 {
        return Err("--iterations and --subscribers must be at least 1".into());
    }
    Ok(a)
}

/// min, p50, p90, p99, max (ms) and the mean, by nearest rank; with `raw`,
/// the samples in the order taken.
fn summary(samples: &[f64], raw: bool) -> serde_json::Value {
    if samples.is_empty() {
        return json!({ "n": 0 });
    }
    let mut ms = samples.to_vec();
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let rank = |q: f64| ms[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
    let mean = ms.iter().sum::<f64>() / n as f64;
    let r = |v: f64| (v * 1000.0).round() / 1000.0;
    let mut out = json!({
        "n": n,
        "min_ms": r(ms[0]),
        "p50_ms": r(rank(0.50)),
        "p90_ms": r(rank(0.90)),
        "p99_ms": r(rank(0.99)),
        "max_ms": r(ms[n - 1]),
        "mean_ms": r(mean),
    });
    if raw {
        out["samples_ms"] = samples.iter().map(|&v| r(v)).collect();
    }
    out
}

fn p99(samples: &[f64]) -> f64 {
    let mut ms = samples.to_vec();
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    ms[((0.99 * n as f64).ceil() as usize).clamp(1, n) - 1]
}

fn api(s: tonic::Status) -> Box<dyn Error + Send + Sync> {
    Box::new(hangar_api::convert::error(&s))
}

fn running(list: &pb::ProcessList) -> usize {
    list.processes
        .iter()
        .filter(|p| p.state == "running")
        .count()
}

fn now_epoch_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or(0.0)
}

async fn wait_running(c: &Client, expect: usize, wait: Duration) -> Res<pb::ProcessList> {
    let t0 = Instant::now();
    loop {
        let l = c
            .processes
            .clone()
            .list(pb::ListRequest::default())
            .await
            .map_err(api)?
            .into_inner();
        if running(&l) >= expect {
            return Ok(l);
        }
        if t0.elapsed() > wait {
            return Err(format!(
                "after {wait:?}: {} of {} processes running, expected {expect}",
                running(&l),
                l.processes.len()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------- query

#[derive(Deserialize)]
#[allow(dead_code)] // decoded as a client would, read only for the check
struct GqlPort {
    name: String,
    port: i64,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct GqlProcess {
    name: String,
    state: String,
    pid: Option<i64>,
    restarts: i64,
    health: Option<String>,
    ports: Vec<GqlPort>,
}

#[derive(Deserialize)]
struct GqlData {
    processes: Vec<GqlProcess>,
}

#[derive(Deserialize)]
struct GqlReply {
    data: Option<GqlData>,
    #[serde(default)]
    errors: Option<serde_json::Value>,
}

struct Http {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
    auth: String,
}

impl Http {
    async fn connect(addr: SocketAddr, token: &str) -> Res<Http> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                eprintln!("graphql_bench: HTTP connection: {e}");
            }
        });
        Ok(Http {
            send,
            host: format!("127.0.0.1:{}", addr.port()),
            auth: format!("Bearer {token}"),
        })
    }

    /// POST a query; the status and the whole body.
    async fn post(&mut self, body: &Bytes) -> Res<(u16, Bytes)> {
        self.send.ready().await?;
        let req = http::Request::post("/graphql")
            .header(http::header::HOST, &self.host)
            .header(http::header::AUTHORIZATION, &self.auth)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()))?;
        let resp = self.send.send_request(req).await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }
}

async fn query(a: Args) -> Res<()> {
    let c = Client::unix(&a.socket).await?;
    let first = wait_running(&c, a.expect, a.wait).await?;
    eprintln!(
        "graphql_bench: {} running; {} warm-up + {} timed calls of each, alternating",
        running(&first),
        a.warmup,
        a.iterations
    );
    let mut h = Http::connect(a.http, &a.token).await?;
    let body = Bytes::from(json!({ "query": LIST_QUERY }).to_string());

    let mut gql_ms = Vec::with_capacity(a.iterations);
    let mut grpc_ms = Vec::with_capacity(a.iterations);
    let (mut gql_bytes, mut grpc_bytes) = (0usize, 0usize);
    let (mut gql_n, mut grpc_n) = (0usize, 0usize);
    for i in 0..a.warmup + a.iterations {
        let timed = i >= a.warmup;
        for turn in 0..2 {
            // GraphQL first on even i, gRPC first on odd i.
            if (turn == 0) == (i % 2 == 0) {
                let t = Instant::now();
                let (status, bytes) = h.post(&body).await?;
                let reply: Result<GqlReply, _> = serde_json::from_slice(&bytes);
                let dt = t.elapsed().as_secs_f64() * 1e3;
                let reply = match (status, reply) {
                    (200, Ok(r)) => r,
                    (s, _) => {
                        return Err(format!(
                            "GraphQL answered {s}: {}",
                            String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
                        )
                        .into())
                    }
                };
                if let Some(e) = reply.errors {
                    return Err(format!("GraphQL errors: {e}").into());
                }
                gql_n = reply.data.map(|d| d.processes.len()).unwrap_or(0);
                if gql_n != first.processes.len() {
                    return Err(format!(
                        "GraphQL listed {gql_n} processes, gRPC {}",
                        first.processes.len()
                    )
                    .into());
                }
                gql_bytes = bytes.len();
                if timed {
                    gql_ms.push(dt);
                }
            } else {
                let t = Instant::now();
                let l = c
                    .processes
                    .clone()
                    .list(pb::ListRequest::default())
                    .await
                    .map_err(api)?
                    .into_inner();
                let dt = t.elapsed().as_secs_f64() * 1e3;
                grpc_n = l.processes.len();
                if grpc_n != first.processes.len() {
                    return Err(format!("gRPC listed {grpc_n} processes").into());
                }
                grpc_bytes = prost::Message::encoded_len(&l);
                if timed {
                    grpc_ms.push(dt);
                }
            }
        }
    }
    let ratio = |q: &str| {
        let g = summary(&gql_ms, false)[q].as_f64().unwrap_or(0.0);
        let r = summary(&grpc_ms, false)[q].as_f64().unwrap_or(1.0);
        ((g / r) * 1000.0).round() / 1000.0
    };
    let out = json!({
        "mode": "query",
        "expect": a.expect,
        "iterations": a.iterations,
        "warmup": a.warmup,
        "graphql": {
            "query": LIST_QUERY,
            "processes": gql_n,
            "response_bytes": gql_bytes,
            "latency": summary(&gql_ms, a.raw),
        },
        "grpc": {
            "call": "Processes.List (all)",
            "processes": grpc_n,
            "response_bytes": grpc_bytes,
            "latency": summary(&grpc_ms, a.raw),
        },
        "ratio_graphql_over_grpc": { "p50": ratio("p50_ms"), "p99": ratio("p99_ms") },
    });
    println!("{out}");
    Ok(())
}

// ---------------------------------------------------------------- events

/// One frame: event id, its atMs, the receive time (epoch ms).
#[derive(Clone, Copy)]
struct Frame {
    id: i64,
    at_ms: i64,
    recv_ms: f64,
}

#[derive(Default)]
struct SubResult {
    frames: Vec<Frame>,
    errors: Vec<String>,
}

async fn subscriber(
    addr: SocketAddr,
    token: String,
    ready: tokio::sync::mpsc::Sender<Res<()>>,
    mut done: watch::Receiver<bool>,
    out: Arc<Mutex<SubResult>>,
) {
    let r = async {
        let mut req = format!("ws://127.0.0.1:{}/graphql", addr.port()).into_client_request()?;
        let hd = req.headers_mut();
        hd.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse()?,
        );
        hd.insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            "graphql-transport-ws".parse()?,
        );
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (mut ws, _) = tokio_tungstenite::client_async(req, tcp).await?;
        ws.send(Message::text(
            json!({"type": "connection_init", "payload": {}}).to_string(),
        ))
        .await?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: serde_json::Value = serde_json::from_str(&t)?;
                    if v["type"] == "connection_ack" {
                        break;
                    }
                    return Err(format!("expected connection_ack, got {t}").into());
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => return Err(format!("expected connection_ack, got {other:?}").into()),
            }
        }
        ws.send(Message::text(
            json!({"id": "1", "type": "subscribe", "payload": {"query": EVENTS_SUBSCRIPTION}})
                .to_string(),
        ))
        .await?;
        Ok::<_, Box<dyn Error + Send + Sync>>(ws)
    }
    .await;
    let mut ws = match r {
        Ok(ws) => {
            let _ = ready.send(Ok(())).await;
            ws
        }
        Err(e) => {
            let _ = ready.send(Err(e)).await;
            return;
        }
    };
    loop {
        tokio::select! {
            m = ws.next() => {
                let recv_ms = now_epoch_ms();
                let push_err = |e: String| out.lock().unwrap_or_else(|p| p.into_inner()).errors.push(e);
                match m {
                    Some(Ok(Message::Text(t))) => {
                        let v: serde_json::Value = match serde_json::from_str(&t) {
                            Ok(v) => v,
                            Err(e) => { push_err(format!("bad frame: {e}")); continue; }
                        };
                        if v["type"] == "next" {
                            let e = &v["payload"]["data"]["events"];
                            match (e["id"].as_i64(), e["atMs"].as_i64()) {
                                (Some(id), Some(at_ms)) => out
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .frames
                                    .push(Frame { id, at_ms, recv_ms }),
                                _ => push_err(format!("frame without an event: {t}")),
                            }
                        } else if v["type"] != "ping" && v["type"] != "pong" {
                            push_err(t.to_string());
                        }
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(other)) => { push_err(format!("{other:?}")); break; }
                    Some(Err(e)) => { push_err(e.to_string()); break; }
                    None => { push_err("connection closed".into()); break; }
                }
            }
            _ = done.changed() => break,
        }
    }
    let _ = ws.close(None).await;
}

async fn history_ids(c: &Client, after: i64) -> Res<Vec<(i64, i64)>> {
    let mut ids = Vec::new();
    let mut after_id = after;
    loop {
        let page = c
            .events
            .clone()
            .history(pb::HistoryRequest {
                kinds: vec!["state".into()],
                after_id,
                limit: 10_000,
                ..Default::default()
            })
            .await
            .map_err(api)?
            .into_inner()
            .events;
        let n = page.len();
        // History keeps the newest `limit`; page forward from the oldest.
        let mut page: Vec<(i64, i64)> = page.iter().map(|e| (e.id, e.at_ms)).collect();
        page.sort();
        if let Some(&(last, _)) = page.last() {
            after_id = last;
        }
        ids.extend(page);
        if n < 10_000 {
            break;
        }
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

async fn events(a: Args) -> Res<()> {
    let c = Client::unix(&a.socket).await?;
    wait_running(&c, a.expect, a.wait).await?;
    let (done_tx, done_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(a.subscribers);
    let mut results = Vec::with_capacity(a.subscribers);
    let mut tasks = Vec::with_capacity(a.subscribers);
    let t_sub = Instant::now();
    for _ in 0..a.subscribers {
        let out = Arc::new(Mutex::new(SubResult::default()));
        results.push(Arc::clone(&out));
        tasks.push(tokio::spawn(subscriber(
            a.http,
            a.token.clone(),
            ready_tx.clone(),
            done_rx.clone(),
            out,
        )));
    }
    drop(ready_tx);
    for _ in 0..a.subscribers {
        match ready_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(format!("a subscriber could not subscribe: {e}").into()),
            None => return Err("subscribers ended before subscribing".into()),
        }
    }
    let subscribed_ms = t_sub.elapsed().as_secs_f64() * 1e3;
    tokio::time::sleep(a.settle).await;
    let start_id = c
        .daemon
        .clone()
        .status(pb::StatusRequest {})
        .await
        .map_err(api)?
        .into_inner()
        .last_event_id;
    eprintln!(
        "graphql_bench: {} subscribers in {subscribed_ms:.0} ms; restarting {:?} {} times, last event id {start_id}",
        a.subscribers, a.restart, a.bursts
    );
    let t_trig = Instant::now();
    let mut restarted = 0usize;
    for i in 0..a.bursts {
        if i > 0 {
            tokio::time::sleep(a.pause).await;
        }
        let r = c
            .processes
            .clone()
            .restart(pb::SelectRequest {
                pattern: a.restart.clone(),
                timeout_ms: 0,
            })
            .await
            .map_err(api)?
            .into_inner();
        if !r.errors.is_empty() {
            return Err(format!("restart {:?}: {:?}", a.restart, r.errors).into());
        }
        restarted += r.names.len();
    }
    let trigger_ms = t_trig.elapsed().as_secs_f64() * 1e3;
    // All back up, and a moment for the last transitions to be stored.
    wait_running(&c, a.expect, a.wait).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stored = history_ids(&c, start_id).await?;
    let want: BTreeSet<i64> = stored.iter().map(|&(id, _)| id).collect();
    eprintln!(
        "graphql_bench: {restarted} restarts in {trigger_ms:.0} ms; {} state events stored; draining",
        want.len()
    );
    // Wait until every subscriber has them all (or the drain time is up).
    let t_drain = Instant::now();
    loop {
        let behind = results
            .iter()
            .filter(|r| {
                let r = r.lock().unwrap_or_else(|p| p.into_inner());
                let got: BTreeSet<i64> = r.frames.iter().map(|f| f.id).collect();
                !want.is_subset(&got)
            })
            .count();
        if behind == 0 || t_drain.elapsed() >= a.drain {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain_ms = t_drain.elapsed().as_secs_f64() * 1e3;
    let _ = done_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let mut lost_total = 0usize;
    let mut extra_total = 0usize;
    let mut dup_total = 0usize;
    let mut out_of_order = 0usize;
    let mut errors = Vec::new();
    let mut all_lat = Vec::new();
    let mut per_sub_p99 = Vec::new();
    let mut per_sub_received = Vec::new();
    let mut recv_by_event: HashMap<i64, Vec<f64>> = HashMap::new();
    let mut lost_examples = Vec::new();
    for (i, r) in results.iter().enumerate() {
        let r = r.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen = BTreeSet::new();
        let mut lat = Vec::new();
        let mut prev = i64::MIN;
        for f in &r.frames {
            if f.id <= prev {
                out_of_order += 1;
            }
            prev = f.id;
            if !seen.insert(f.id) {
                dup_total += 1;
                continue;
            }
            if want.contains(&f.id) {
                let l = f.recv_ms - f.at_ms as f64;
                lat.push(l);
                all_lat.push(l);
                recv_by_event.entry(f.id).or_default().push(f.recv_ms);
            } else {
                extra_total += 1;
            }
        }
        let missing: Vec<i64> = want.difference(&seen).copied().collect();
        lost_total += missing.len();
        if !missing.is_empty() && lost_examples.len() < 5 {
            lost_examples.push(json!({"subscriber": i, "lost": missing.len(),
                "first_ids": missing.iter().take(10).collect::<Vec<_>>()}));
        }
        per_sub_received.push(lat.len());
        if !lat.is_empty() {
            per_sub_p99.push(p99(&lat));
        }
        for e in &r.errors {
            if errors.len() < 10 {
                errors.push(format!("subscriber {i}: {e}"));
            }
        }
    }
    // Per event: the last subscriber's receive time minus the first's.
    let spread: Vec<f64> = recv_by_event
        .values()
        .filter(|v| v.len() > 1)
        .map(|v| {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            hi - lo
        })
        .collect();
    let min_recv = per_sub_received.iter().copied().min().unwrap_or(0);
    let max_recv = per_sub_received.iter().copied().max().unwrap_or(0);
    let out = json!({
        "mode": "events",
        "expect": a.expect,
        "subscribers": a.subscribers,
        "subscription": EVENTS_SUBSCRIPTION,
        "restart_pattern": a.restart,
        "bursts": a.bursts,
        "pause_ms": a.pause.as_millis() as u64,
        "restarted": restarted,
        "trigger_ms": (trigger_ms * 10.0).round() / 10.0,
        "subscribe_all_ms": (subscribed_ms * 10.0).round() / 10.0,
        "drain_ms": (drain_ms * 10.0).round() / 10.0,
        "start_event_id": start_id,
        "stored_events": want.len(),
        "expected_frames": want.len() * a.subscribers,
        "lost_events": lost_total,
        "lost_examples": lost_examples,
        "extra_frames": extra_total,
        "duplicate_frames": dup_total,
        "out_of_order_frames": out_of_order,
        "received_per_subscriber": { "min": min_recv, "max": max_recv },
        "errors": errors,
        "latency": summary(&all_lat, a.raw),
        "latency_note": "frame receive time minus the event's atMs (wall clock; atMs is truncated to whole ms, so 0..1 ms above the true latency)",
        "per_subscriber_p99": summary(&per_sub_p99, false),
        "per_event_spread": summary(&spread, false),
        "per_event_spread_note": "per event: last subscriber's receive time minus the first's",
    });
    println!("{out}");
    Ok(())
}

fn run() -> Res<()> {
    let args = parse_args()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if args.mode == "query" {
        rt.block_on(query(args))
    } else {
        rt.block_on(events(args))
    }
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("graphql_bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
