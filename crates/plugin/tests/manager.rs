//! The manager against real Unix-socket plugins (served with the server SDK,
//! each on its own runtime so a test can kill it mid-call and bring it back):
//! calls through the whole stack, retry on a slow or dying plugin, breaker
//! transitions, rate limit, failover, deadlines, cancellation, health gating,
//! metrics, and shutdown draining calls in flight.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hangar_plugin::{
    BreakerState, ExecOptions, ExecutionContext, Manager, Plugin, PluginStatus, TraceContext,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use support::{config, knobs, unix_plugin, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_goes_through_the_stack_with_auth_trace_and_request_id_headers() {
    let dir = tempfile::tempdir().unwrap();
    let k = knobs("echo");
    let _s = Server::start(&dir.path().join("echo.sock"), Arc::clone(&k)).await;
    let m = Manager::new();
    m.load(config(
        json!({"plugins": [unix_plugin("echo", dir.path(), json!({
            "auth": {"method": "api-key", "api_key": "s3cret"}
        }))]}),
    ))
    .await
    .unwrap();

    let parent = TraceContext::new_root();
    let out = m
        .execute_with(
            "echo",
            json!({"x": 1}),
            ExecOptions {
                request_id: Some("req-42".into()),
                headers: [("traceparent".to_string(), parent.to_header())].into(),
                ..ExecOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(out["echo"], json!({"x": 1}));
    let h = &out["headers"];
    assert_eq!(h["X-API-Key"], "s3cret");
    assert_eq!(out["request_id"], "req-42");
    // It travels in the envelope, not twice.
    assert!(h.get(hangar_plugin::REQUEST_ID_HEADER).is_none(), "{h}");
    let tc = TraceContext::parse(h["traceparent"].as_str().unwrap()).unwrap();
    assert_eq!(tc.trace_id, parent.trace_id, "same trace");
    assert_ne!(tc.span_id, parent.span_id, "a child span");

    // Typed, through the manager.
    #[derive(Serialize)]
    struct Req {
        x: u32,
    }
    #[derive(Deserialize)]
    struct Resp {
        plugin: String,
        n: u32,
    }
    let p = m.plugin::<Req, Resp>("echo").unwrap();
    let r = p
        .execute(&ExecutionContext::new(), Req { x: 2 })
        .await
        .unwrap();
    assert_eq!(r.plugin, "echo");
    assert_eq!(r.n, 2);
    assert_eq!(p.health().await.status, PluginStatus::Healthy);

    // Unknown and disabled plugins.
    assert_eq!(
        m.execute("nope", json!({})).await.unwrap_err().code(),
        "PLUGIN_1201"
    );
    let report = m.metrics().report();
    assert_eq!(report.plugins["echo"].total_requests, 2);
    assert_eq!(report.plugins["echo"].success_rate_percent, 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_attempt_times_out_and_the_retry_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let k = knobs("slow");
    k.delay_first_ms.store(3000, Ordering::SeqCst);
    let _s = Server::start(&dir.path().join("slow.sock"), Arc::clone(&k)).await;
    let m = Manager::new();
    m.load(config(
        json!({"plugins": [unix_plugin("slow", dir.path(), json!({
            "connection": {"request_timeout": "300ms"},
            "retry": {"initial_interval": "20ms"}
        }))]}),
    ))
    .await
    .unwrap();
    let t0 = Instant::now();
    let out = m.execute("slow", json!({})).await.unwrap();
    assert_eq!(out["n"], 2, "the second attempt answered");
    assert!(
        t0.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_errors_are_not_retried_but_reported_with_their_code() {
    let dir = tempfile::tempdir().unwrap();
    let k = knobs("bad");
    k.fail_next.store(1, Ordering::SeqCst);
    let _s = Server::start(&dir.path().join("bad.sock"), Arc::clone(&k)).await;
    let m = Manager::new();
    m.load(config(
        json!({"plugins": [unix_plugin("bad", dir.path(), json!({}))]}),
    ))
    .await
    .unwrap();
    let e = m.execute("bad", json!({})).await.unwrap_err();
    assert_eq!(e.code(), "PLUGIN_1203");
    assert!(e.message.contains("injected failure"), "{e}");
    assert_eq!(e.plugin.as_deref(), Some("bad"));
    assert_eq!(k.calls.load(Ordering::SeqCst), 1);
    assert!(m.execute("bad", json!({})).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_dies_mid_call_and_comes_back_is_reached_again_by_retry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("phoenix.sock");
    let k1 = knobs("phoenix-1");
    let mut s1 = Server::start(&path, Arc::clone(&k1)).await;
    let m = Manager::new();
    m.load(config(
        json!({"plugins": [unix_plugin("phoenix", dir.path(), json!({
            "retry": {"max_retries": 8, "initial_interval": "100ms", "max_interval": "200ms"},
            "connection": {"request_timeout": "5s"},
            "circuit_breaker": {"enabled": false}
        }))]}),
    ))
    .await
    .unwrap();
    assert_eq!(
        m.execute("phoenix", json!({})).await.unwrap()["plugin"],
        "phoenix-1"
    );

    let m2 = m.clone();
    let call = tokio::spawn(async move { m2.execute("phoenix", json!({"sleep_ms": 2000})).await });
    // Let the call reach the server, then kill it mid-call.
    for _ in 0..200 {
        if k1.calls.load(Ordering::SeqCst) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        k1.calls.load(Ordering::SeqCst),
        2,
        "the call reached the server"
    );
    s1.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let k2 = knobs("phoenix-2");
    let _s2 = Server::start(&path, Arc::clone(&k2)).await;
    let out = call.await.unwrap().expect("retried onto the new server");
    assert_eq!(out["plugin"], "phoenix-2");
    let r = m.metrics().report();
    assert_eq!(r.plugins["phoenix"].successful_requests, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_on_a_dead_plugin_refuses_fast_then_closes_when_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let m = Manager::new();
    m.load(config(
        json!({"plugins": [unix_plugin("flaky", dir.path(), json!({
            "retry": {"max_retries": 0},
            "circuit_breaker": {"failure_threshold": 3, "min_request_threshold": 3,
                                "recovery_timeout": "3s", "success_threshold": 1}
        }))]}),
    ))
    .await
    .unwrap();
    for _ in 0..3 {
        let e = m.execute("flaky", json!({})).await.unwrap_err();
        assert_eq!(e.code(), "PLUGIN_1205", "{e}");
    }
    assert_eq!(m.breaker("flaky").unwrap().state(), BreakerState::Open);
    let e = m.execute("flaky", json!({})).await.unwrap_err();
    assert_eq!(e.code(), "CIRCUIT_1401");

    let k = knobs("flaky");
    let _s = Server::start(&dir.path().join("flaky.sock"), Arc::clone(&k)).await;
    assert_eq!(
        m.execute("flaky", json!({})).await.unwrap_err().code(),
        "CIRCUIT_1401",
        "still open before the recovery timeout"
    );
    assert_eq!(k.calls.load(Ordering::SeqCst), 0, "refused without a call");
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert!(
        m.execute("flaky", json!({})).await.is_ok(),
        "half-open trial"
    );
    assert_eq!(m.breaker("flaky").unwrap().state(), BreakerState::Closed);
    let r = m.metrics().report();
    assert_eq!(r.plugins["flaky"].circuit_breaker_trips, 1);
    assert_eq!(r.plugins["flaky"].refused, 2);
    let text = m.metrics().encode();
    assert!(
        text.contains("hangar_plugin_circuit_breaker_trips_total{plugin=\"flaky\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("hangar_plugin_circuit_breaker_state{plugin=\"flaky\"} 0"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_refuses_past_the_burst_and_refills() {
    let dir = tempfile::tempdir().unwrap();
    let k = knobs("limited");
    let _s = Server::start(&dir.path().join("limited.sock"), Arc::clone(&k)).await;
    let m = Manager::new();
    m.load(config(
        json!({"plugins": [unix_plugin("limited", dir.path(), json!({
            "rate_limit": {"enabled": true, "requests_per_second": 1, "burst_size": 2}
        }))]}),
    ))
    .await
    .unwrap();
    assert!(m.execute("limited", json!({})).await.is_ok());
    assert!(m.execute("limited", json!({})).await.is_ok());
    let e = m.execute("limited", json!({})).await.unwrap_err();
    assert_eq!(e.code(), "RATELIMIT_1501");
    assert_eq!(k.calls.load(Ordering::SeqCst), 2, "refused without a call");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(m.execute("limited", json!({})).await.is_ok(), "refilled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_call_fails_over_past_a_dead_member_and_health_takes_it_out() {
    let dir = tempfile::tempdir().unwrap();
    let (ka, kc) = (knobs("a"), knobs("c"));
    let _sa = Server::start(&dir.path().join("a.sock"), Arc::clone(&ka)).await;
    let _sc = Server::start(&dir.path().join("c.sock"), Arc::clone(&kc)).await;
    // b never starts.
    let hc = json!({"interval": "100ms", "timeout": "100ms", "failure_limit": 2});
    let m = Manager::new();
    m.load(config(json!({
        "load_balancing": "round-robin",
        "default_retry": {"max_retries": 0},
        "default_connection": {"request_timeout": "1s"},
        "plugins": [
            unix_plugin("a", dir.path(), json!({"type": "kv", "health_check": hc})),
            unix_plugin("b", dir.path(), json!({"type": "kv", "health_check": hc})),
            unix_plugin("c", dir.path(), json!({"type": "kv", "health_check": hc})),
        ]
    })))
    .await
    .unwrap();
    for _ in 0..12 {
        let out = m
            .execute_group("kv", json!({}), ExecOptions::default())
            .await
            .unwrap();
        assert_ne!(out["plugin"], "b");
    }
    let (a, c) = (
        ka.calls.load(Ordering::SeqCst),
        kc.calls.load(Ordering::SeqCst),
    );
    assert_eq!(a + c, 12);
    assert!(
        a >= 4 && c >= 4,
        "round-robin with b's turns failing over: a={a} c={c}"
    );

    // The health checker takes b out of rotation.
    let t0 = Instant::now();
    loop {
        let h = m.health();
        if h["b"].status == PluginStatus::Offline {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{h:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = m.balancer("kv").unwrap().stats();
    let b = stats.iter().find(|s| s.name == "b").unwrap();
    assert!(!b.healthy);
    let failed_before = b.requests;
    for _ in 0..6 {
        m.execute_group("kv", json!({}), ExecOptions::default())
            .await
            .unwrap();
    }
    let stats = m.balancer("kv").unwrap().stats();
    assert_eq!(
        stats.iter().find(|s| s.name == "b").unwrap().requests,
        failed_before,
        "an offline member is not tried"
    );
    assert_eq!(m.overall_health().status, PluginStatus::Unhealthy);

    // b comes up: healthy again, back in rotation.
    let kb = knobs("b");
    let _sb = Server::start(&dir.path().join("b.sock"), Arc::clone(&kb)).await;
    let t0 = Instant::now();
    while m.health()["b"].status != PluginStatus::Healthy {
        assert!(t0.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..6 {
        m.execute_group("kv", json!({}), ExecOptions::default())
            .await
            .unwrap();
    }
    assert!(kb.calls.load(Ordering::SeqCst) >= 1);
    assert_eq!(m.overall_health().status, PluginStatus::Healthy);

    // Every member down: the last error, after trying them all.
    drop((_sa, _sb, _sc));
    let e = m
        .execute_group("kv", json!({}), ExecOptions::default())
        .await
        .unwrap_err();
    assert!(e.message.contains("tried failed"), "{e}");
    assert_eq!(
        m.execute_group("nope", json!({}), ExecOptions::default())
            .await
            .unwrap_err()
            .code(),
        "LOADBALANCER_1701"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overall_deadline_and_cancellation_end_a_call() {
    let dir = tempfile::tempdir().unwrap();
    let k = knobs("sleepy");
    k.delay_ms.store(5000, Ordering::SeqCst);
    let _s = Server::start(&dir.path().join("sleepy.sock"), Arc::clone(&k)).await;
    let m = Manager::new();
    m.load(config(
        json!({"plugins": [unix_plugin("sleepy", dir.path(), json!({}))]}),
    ))
    .await
    .unwrap();
    let t0 = Instant::now();
    let e = m
        .execute_with(
            "sleepy",
            json!({}),
            ExecOptions {
                timeout: Some(Duration::from_millis(300)),
                ..ExecOptions::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), "PLUGIN_1204");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());

    let cancel = tokio_util::sync::CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        c2.cancel();
    });
    let t0 = Instant::now();
    let e = m
        .execute_with(
            "sleepy",
            json!({}),
            ExecOptions {
                cancel: Some(cancel),
                ..ExecOptions::default()
            },
        )
        .await
        .unwrap_err();
    assert!(e.message.contains("cancelled"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert_eq!(m.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_calls_in_flight_then_refuses_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let k = knobs("drain");
    let _s = Server::start(&dir.path().join("drain.sock"), Arc::clone(&k)).await;
    let m = Manager::new();
    m.load(config(
        json!({"plugins": [unix_plugin("drain", dir.path(), json!({}))]}),
    ))
    .await
    .unwrap();
    let m2 = m.clone();
    let slow = tokio::spawn(async move { m2.execute("drain", json!({"sleep_ms": 600})).await });
    while m.in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let report = m.shutdown(Duration::from_secs(10)).await;
    assert!(report.drained, "{report:?}");
    assert_eq!(report.abandoned, 0);
    assert_eq!(report.closed, 1);
    assert!(slow.await.unwrap().is_ok(), "the call in flight completed");
    assert_eq!(
        m.execute("drain", json!({})).await.unwrap_err().code(),
        "PLUGIN_1202"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_up_on_calls_past_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let k = knobs("stuck");
    let _s = Server::start(&dir.path().join("stuck.sock"), Arc::clone(&k)).await;
    let m = Manager::new();
    m.load(config(
        json!({"plugins": [unix_plugin("stuck", dir.path(), json!({}))]}),
    ))
    .await
    .unwrap();
    let m2 = m.clone();
    let slow = tokio::spawn(async move { m2.execute("stuck", json!({"sleep_ms": 20000})).await });
    while m.in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t0 = Instant::now();
    let report = m.shutdown(Duration::from_millis(200)).await;
    assert!(!report.drained);
    assert_eq!(report.abandoned, 1);
    assert!(t0.elapsed() < Duration::from_secs(5));
    slow.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_unregister_disabled_and_listing() {
    let dir = tempfile::tempdir().unwrap();
    let k = knobs("one");
    let _s = Server::start(&dir.path().join("one.sock"), Arc::clone(&k)).await;
    let m = Manager::new();
    m.load(config(json!({"plugins": [
        unix_plugin("one", dir.path(), json!({"labels": {"team": "x"}})),
        unix_plugin("off", dir.path(), json!({"enabled": false})),
    ]})))
    .await
    .unwrap();
    assert_eq!(
        m.execute("off", json!({})).await.unwrap_err().code(),
        "PLUGIN_1202"
    );
    let dup: hangar_plugin::PluginConfig =
        serde_json::from_value(unix_plugin("one", dir.path(), json!({}))).unwrap();
    assert_eq!(m.register(dup).await.unwrap_err().code(), "PLUGIN_1010");
    let two: hangar_plugin::PluginConfig =
        serde_json::from_value(unix_plugin("two", dir.path(), json!({}))).unwrap();
    m.register(two).await.unwrap();
    m.check_health().await;
    let l = m.list();
    let names: Vec<&str> = l.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["off", "one", "two"]);
    assert_eq!(l[1].health.status, PluginStatus::Healthy);
    assert_eq!(l[1].labels["team"], "x");
    assert!(!l[0].enabled);
    assert_eq!(
        l[2].health.status,
        PluginStatus::Degraded,
        "two has no server"
    );
    m.unregister("two").await.unwrap();
    assert_eq!(
        m.execute("two", json!({})).await.unwrap_err().code(),
        "PLUGIN_1201"
    );
    assert_eq!(m.unregister("two").await.unwrap_err().code(), "PLUGIN_1201");
    assert_eq!(m.config().plugins.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_calls_share_one_connection() {
    let dir = tempfile::tempdir().unwrap();
    let k = knobs("busy");
    k.delay_ms.store(20, Ordering::SeqCst);
    let _s = Server::start(&dir.path().join("busy.sock"), Arc::clone(&k)).await;
    let m = Manager::new();
    m.load(config(
        json!({"plugins": [unix_plugin("busy", dir.path(), json!({}))]}),
    ))
    .await
    .unwrap();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..64 {
        let m = m.clone();
        set.spawn(async move { m.execute("busy", json!({"i": i})).await });
    }
    let mut n = 0;
    while let Some(r) = set.join_next().await {
        assert!(r.unwrap().is_ok());
        n += 1;
    }
    assert_eq!(n, 64);
    assert_eq!(m.metrics().report().plugins["busy"].total_requests, 64);
}

/// CPU time of this process (every thread: the callers, the client's
/// runtime and the plugin's), from `/proc/self/stat`, in seconds.
fn process_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command (which may hold spaces) closed by ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

/// Overhead of the whole stack over the bare client on the same socket:
/// `cargo test --release -p hangar-plugin --test manager -- --ignored --nocapture bench`
/// (`HANGAR_BENCH_SECS`, default 2, per measurement; 3 rounds, raw and
/// manager interleaved, medians printed). Every caller warms up first.
/// "raw text+hdrs" is the bare client sending the headers the manager's
/// calls carry (trace context and request id, made per call), to tell the
/// layers' cost from that of what they put on the wire;
/// `HANGAR_BENCH_ONLY=<row>` runs one row alone, for a profiler;
/// `HANGAR_BENCH_PLUGIN=<json>` sets top-level keys of the plugins'
/// configuration. Each row
/// also shows the CPU time of the whole process (client and plugin) per
/// call: on a machine shared with other work, calls per second follow the
/// share of the CPU the bench gets, the CPU a call costs does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn bench_manager_against_the_raw_client() {
    let secs: f64 = std::env::var("HANGAR_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    // A plain echo (the test plugin echoes the headers too, which the
    // manager's calls carry and the bare client's do not), on a runtime of
    // its own as a plugin would be.
    struct Echo;
    impl hangar_plugin::Handler for Echo {
        async fn execute(&self, call: hangar_plugin::Call) -> Result<serde_json::Value, String> {
            Ok(call.data)
        }
        fn info(&self) -> serde_json::Value {
            json!({"name": "b"})
        }
    }
    // The same echo taking and answering JSON text, for the text rows.
    struct TextEcho;
    impl hangar_plugin::Handler for TextEcho {
        const RAW: bool = true;
        async fn execute(&self, call: hangar_plugin::Call) -> Result<serde_json::Value, String> {
            Ok(call.data)
        }
        async fn execute_raw(
            &self,
            call: hangar_plugin::Call<Box<hangar_plugin::RawValue>>,
        ) -> Result<Box<hangar_plugin::RawValue>, String> {
            Ok(call.data)
        }
        fn info(&self) -> serde_json::Value {
            json!({"name": "t"})
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (sock, tsock) = (dir.path().join("b.sock"), dir.path().join("t.sock"));
    let _s = server_rt
        .spawn({
            let (sock, tsock) = (sock.clone(), tsock.clone());
            async move {
                (
                    hangar_plugin::unix::serve(&sock, Arc::new(Echo)).await,
                    hangar_plugin::unix::serve(&tsock, Arc::new(TextEcho)).await,
                )
            }
        })
        .await
        .unwrap();
    let raw = hangar_plugin::unix::UnixClient::connect(&sock)
        .await
        .unwrap();
    let traw = hangar_plugin::unix::UnixClient::connect(&tsock)
        .await
        .unwrap();
    let m = Manager::new();
    let mut conn = json!({"connection": {"max_connections": 4, "max_idle_connections": 4}});
    // `HANGAR_BENCH_PLUGIN='{"retry": {"max_retries": 0}}'` (say) sets
    // top-level keys of both plugins' configuration (replacing any given
    // here), to take a layer's cost apart.
    if let Ok(extra) = std::env::var("HANGAR_BENCH_PLUGIN") {
        let extra: serde_json::Value = serde_json::from_str(&extra).expect("HANGAR_BENCH_PLUGIN");
        for (k, v) in extra.as_object().expect("an object") {
            conn[k] = v.clone();
        }
    }
    m.load(config(json!({"plugins": [
        unix_plugin("b", dir.path(), conn.clone()),
        unix_plugin("t", dir.path(), conn),
    ]})))
    .await
    .unwrap();
    let payload = json!({"blob": "x".repeat(1000)});
    let text: Arc<Box<hangar_plugin::RawValue>> =
        Arc::new(serde_json::value::to_raw_value(&payload).unwrap());
    // (conc, which) -> per round: (p50, p99, calls/s, CPU µs per call)
    type Round = (Duration, Duration, f64, f64);
    // `HANGAR_BENCH_ONLY=<row>` measures that row alone (for a profiler).
    let only = std::env::var("HANGAR_BENCH_ONLY").ok();
    let mut out: std::collections::BTreeMap<(usize, &str), Vec<Round>> = Default::default();
    for _round in 0..3 {
        for conc in [1usize, 64] {
            for which in [
                "raw",
                "manager",
                "raw text",
                "raw text+hdrs",
                "manager text",
            ] {
                if only.as_deref().is_some_and(|o| o != which) {
                    continue;
                }
                let start = Arc::new(tokio::sync::Barrier::new(conc + 1));
                let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let mut set = tokio::task::JoinSet::new();
                for _ in 0..conc {
                    let (raw, m, p) = (raw.clone(), m.clone(), payload.clone());
                    let (traw, text) = (traw.clone(), Arc::clone(&text));
                    let (start, stop) = (Arc::clone(&start), Arc::clone(&stop));
                    set.spawn(async move {
                        let call = || async {
                            if which == "raw text" {
                                traw.call_raw(
                                    hangar_plugin::CallKind::Execute,
                                    &text,
                                    hangar_plugin::CallContext {
                                        timeout: Duration::from_secs(10),
                                        ..Default::default()
                                    },
                                )
                                .await
                                .unwrap();
                            } else if which == "raw text+hdrs" {
                                // What the manager adds to every call: a request
                                // id, and trace context (the `traceparent`
                                // header), made per call.
                                traw.call_raw(
                                    hangar_plugin::CallKind::Execute,
                                    &text,
                                    hangar_plugin::CallContext {
                                        request_id: hangar_plugin::new_request_id(),
                                        trace: Some(TraceContext::new_root()),
                                        timeout: Duration::from_secs(10),
                                        ..Default::default()
                                    },
                                )
                                .await
                                .unwrap();
                            } else if which == "manager text" {
                                m.execute_raw("t", &text, Default::default()).await.unwrap();
                            } else if which == "raw" {
                                raw.call(
                                    hangar_plugin::CallKind::Execute,
                                    p.clone(),
                                    hangar_plugin::CallContext {
                                        timeout: Duration::from_secs(10),
                                        ..Default::default()
                                    },
                                )
                                .await
                                .unwrap();
                            } else {
                                m.execute("b", p.clone()).await.unwrap();
                            }
                        };
                        for _ in 0..200 {
                            call().await;
                        }
                        start.wait().await;
                        let mut lat = Vec::new();
                        while !stop.load(Ordering::Relaxed) {
                            let t = Instant::now();
                            call().await;
                            lat.push(t.elapsed());
                        }
                        lat
                    });
                }
                start.wait().await;
                let t0 = Instant::now();
                let cpu0 = process_cpu_secs();
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                stop.store(true, Ordering::Relaxed);
                let cpu = process_cpu_secs() - cpu0;
                let mut all = Vec::new();
                while let Some(r) = set.join_next().await {
                    all.extend(r.unwrap());
                }
                let took = t0.elapsed().as_secs_f64();
                let n = all.len();
                out.entry((conc, which)).or_default().push((
                    percentile(&mut all, 0.5),
                    percentile(&mut all, 0.99),
                    n as f64 / took,
                    cpu * 1e6 / n as f64,
                ));
            }
        }
    }
    let med = |v: &[Round]| {
        let mut a: Vec<_> = v.iter().map(|x| x.0).collect();
        let mut b: Vec<_> = v.iter().map(|x| x.1).collect();
        let mut c: Vec<_> = v.iter().map(|x| x.2).collect();
        let mut d: Vec<_> = v.iter().map(|x| x.3).collect();
        a.sort();
        b.sort();
        c.sort_by(f64::total_cmp);
        d.sort_by(f64::total_cmp);
        (
            a[a.len() / 2],
            b[b.len() / 2],
            c[c.len() / 2],
            d[d.len() / 2],
        )
    };
    for (k, v) in &out {
        let x = med(v);
        println!(
            "{:>13} c={:<2} p50={:?} p99={:?} {:.0} calls/s {:.2} µs CPU/call",
            k.1, k.0, x.0, x.1, x.2, x.3
        );
    }
    for conc in [1usize, 64] {
        for (bare, managed) in [
            ("raw", "manager"),
            ("raw text", "manager text"),
            ("raw text+hdrs", "manager text"),
        ] {
            let (Some(r), Some(m)) = (out.get(&(conc, bare)), out.get(&(conc, managed))) else {
                continue;
            };
            let (r, m) = (med(r), med(m));
            println!(
                "{managed} / {bare} c={conc}: p50 {:.2}x, p99 {:.2}x, throughput {:.2}x, CPU/call {:.2}x",
                m.0.as_secs_f64() / r.0.as_secs_f64(),
                m.1.as_secs_f64() / r.1.as_secs_f64(),
                m.2 / r.2,
                m.3 / r.3
            );
        }
    }
    drop((raw, traw, m));
    server_rt.shutdown_background();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_plugin_over_a_transport_honours_deadline_cancel_and_close() {
    use hangar_plugin::TransportPlugin;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typed.sock");
    let _s = Server::start(&path, knobs("typed")).await;
    #[derive(Serialize)]
    struct Req {
        sleep_ms: u64,
    }
    #[derive(Deserialize, Debug)]
    struct Resp {
        plugin: String,
    }
    let t = Arc::new(
        hangar_plugin::unix::UnixClient::new(hangar_plugin::unix::UnixOptions::new(path)).unwrap(),
    );
    let mut p = TransportPlugin::<Req, Resp>::new("typed", t);
    assert_eq!(
        p.fetch_info(Duration::from_secs(2)).await.unwrap().version,
        "1.2.3"
    );
    assert_eq!(p.info().name, "typed");
    let r = p
        .execute(&ExecutionContext::new(), Req { sleep_ms: 0 })
        .await
        .unwrap();
    assert_eq!(r.plugin, "typed");

    let ctx = ExecutionContext::new().with_timeout(Duration::from_millis(200));
    let e = p.execute(&ctx, Req { sleep_ms: 3000 }).await.unwrap_err();
    assert_eq!(e.code(), "PLUGIN_1204");

    let ctx = ExecutionContext::new();
    let cancel = ctx.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        cancel.cancel();
    });
    let t0 = Instant::now();
    let e = p.execute(&ctx, Req { sleep_ms: 3000 }).await.unwrap_err();
    assert!(e.message.contains("cancelled"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(2));

    assert_eq!(p.health().await.status, PluginStatus::Healthy);
    p.close().await;
    p.close().await;
    let e = p
        .execute(&ExecutionContext::new(), Req { sleep_ms: 0 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), "TRANSPORT_1301");
}
