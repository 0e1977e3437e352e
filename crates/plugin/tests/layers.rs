//! The layers one by one and composed, with paused time: retry budgets and
//! the deadline, the breaker's full cycle (closed → open → half-open → open →
//! half-open → closed), the rate limit outside retry, failover order, and
//! cancellation.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hangar_plugin::layers::{
    service_fn, BoxService, Call, CircuitBreak, Deadline, Failover, RateLimit, Reply, Retry,
    Service, Timeout,
};
use hangar_plugin::{
    Balancer, BreakerConfig, BreakerState, CircuitBreaker, Error, ErrorKind, RateLimitConfig,
    RetryConfig, Strategy, TokenBucket,
};
use serde_json::{json, Value};

fn failing(calls: &Arc<AtomicU32>, kind: ErrorKind) -> BoxService {
    let calls = Arc::clone(calls);
    service_fn(move |_c: Call| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move { Err::<Value, _>(Error::new(kind, "injected")) }
    })
}

/// A plugin that does what `mode` says when called (0: fails, retryably;
/// 1: never answers; else answers `"up"`), counting its calls in `reached`.
fn scripted(mode: &Arc<AtomicU32>, reached: &Arc<AtomicU32>) -> BoxService {
    let (mode, reached) = (Arc::clone(mode), Arc::clone(reached));
    service_fn(move |_c: Call| {
        reached.fetch_add(1, Ordering::SeqCst);
        let mode = mode.load(Ordering::SeqCst);
        async move {
            match mode {
                0 => Err(Error::new(ErrorKind::ConnectionFailed, "down")),
                1 => std::future::pending().await,
                _ => Ok(json!("up")),
            }
        }
    })
}

/// `leaf` behind breaker `b`, and the states its listener hears.
fn heard_by_a_listener(
    b: &Arc<CircuitBreaker>,
    leaf: BoxService,
) -> (BoxService, Arc<Mutex<Vec<BreakerState>>>) {
    let heard = Arc::new(Mutex::new(Vec::new()));
    let h2 = Arc::clone(&heard);
    let s = CircuitBreak::layer(
        Arc::clone(b),
        Some(Arc::new(move |_p: &str, st: BreakerState| {
            h2.lock().unwrap().push(st)
        })),
        leaf,
    );
    (s, heard)
}

fn retry(max: u32) -> RetryConfig {
    RetryConfig {
        max_retries: max,
        initial_interval: Duration::from_millis(100),
        multiplier: 2.0,
        max_interval: Duration::from_secs(1),
        jitter: 0.0,
    }
}

#[tokio::test(start_paused = true)]
async fn retry_honours_the_call_override_and_stops_before_the_deadline() {
    let calls = Arc::new(AtomicU32::new(0));
    let s = Retry::layer(retry(3), failing(&calls, ErrorKind::Transport));
    let mut c = Call::new("p", Value::Null);
    c.max_retries = Some(1);
    assert_eq!(s.call(c).await.unwrap_err().kind, ErrorKind::Transport);
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // Waits 100, 200, 400 ms: a 250 ms deadline leaves room for one retry.
    calls.store(0, Ordering::SeqCst);
    let s = Deadline::layer(Retry::layer(
        retry(3),
        failing(&calls, ErrorKind::Transport),
    ));
    let mut c = Call::new("p", Value::Null);
    c.deadline = Some(tokio::time::Instant::now() + Duration::from_millis(250));
    let t0 = tokio::time::Instant::now();
    let e = s.call(c).await.unwrap_err();
    assert_eq!(
        e.kind,
        ErrorKind::Transport,
        "the last real error, not a timeout"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(t0.elapsed() < Duration::from_millis(250));
}

#[tokio::test(start_paused = true)]
async fn the_per_attempt_timeout_is_cut_to_the_deadline_and_passed_to_the_wire() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = Arc::clone(&seen);
    let leaf = service_fn(move |c: Call| {
        s2.lock().unwrap().push(c.ctx.timeout);
        async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok(Value::Null)
        }
    });
    let s = Deadline::layer(Timeout::layer(Duration::from_secs(5), leaf));
    let mut c = Call::new("p", Value::Null);
    c.deadline = Some(tokio::time::Instant::now() + Duration::from_secs(2));
    let e = s.call(c).await.unwrap_err();
    assert_eq!(e.code(), "PLUGIN_1204");
    assert_eq!(*seen.lock().unwrap(), [Duration::from_secs(2)]);
}

#[tokio::test(start_paused = true)]
async fn the_breaker_goes_through_every_transition() {
    let b = Arc::new(CircuitBreaker::new(BreakerConfig {
        enabled: true,
        failure_threshold: 3,
        recovery_timeout: Duration::from_secs(10),
        min_request_threshold: 3,
        success_threshold: 2,
    }));
    let down = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(AtomicU32::new(0));
    let (d2, c2) = (Arc::clone(&down), Arc::clone(&calls));
    let leaf = service_fn(move |_c: Call| {
        c2.fetch_add(1, Ordering::SeqCst);
        let down = d2.load(Ordering::SeqCst);
        async move {
            if down {
                Err(Error::new(ErrorKind::ConnectionFailed, "down"))
            } else {
                Ok(json!("up"))
            }
        }
    });
    let (s, transitions) = heard_by_a_listener(&b, leaf);
    let call = || s.call(Call::new("p", Value::Null));
    for _ in 0..3 {
        assert_eq!(call().await.unwrap_err().code(), "PLUGIN_1205");
    }
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(call().await.unwrap_err().code(), "CIRCUIT_1401");
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // Half-open trial fails: open again.
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(call().await.unwrap_err().code(), "PLUGIN_1205");
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(call().await.unwrap_err().code(), "CIRCUIT_1401");

    // Half-open, two successes close it.
    tokio::time::advance(Duration::from_secs(10)).await;
    down.store(false, Ordering::SeqCst);
    assert!(call().await.is_ok());
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert!(call().await.is_ok());
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(
        *transitions.lock().unwrap(),
        [
            BreakerState::Open,
            BreakerState::HalfOpen,
            BreakerState::Open,
            BreakerState::HalfOpen,
            BreakerState::Closed
        ]
    );
    assert_eq!(b.stats().opened, 2);
}

#[tokio::test(start_paused = true)]
async fn the_rate_limit_takes_one_token_per_call_not_per_retry() {
    let calls = Arc::new(AtomicU32::new(0));
    let bucket = TokenBucket::new_at(
        RateLimitConfig {
            enabled: true,
            requests_per_second: 1.0,
            burst: 1,
        },
        tokio::time::Instant::now().into_std(),
    );
    let s = RateLimit::layer(
        bucket,
        Retry::layer(retry(2), failing(&calls, ErrorKind::Timeout)),
    );
    assert_eq!(
        s.call(Call::new("p", Value::Null))
            .await
            .unwrap_err()
            .code(),
        "PLUGIN_1204"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "1 + 2 retries on one token"
    );
    assert_eq!(
        s.call(Call::new("p", Value::Null))
            .await
            .unwrap_err()
            .code(),
        "RATELIMIT_1501"
    );
}

#[tokio::test(start_paused = true)]
async fn failover_tries_the_strategy_order_and_reports_the_last_error() {
    let b = Arc::new(Balancer::new(Strategy::Priority));
    // Priority: the highest number first.
    b.add("first", 1, 30);
    b.add("second", 1, 20);
    b.add("third", 1, 10);
    let tried = Arc::new(Mutex::new(Vec::new()));
    let t2 = Arc::clone(&tried);
    let ok_on = Arc::new(Mutex::new("third".to_string()));
    let o2 = Arc::clone(&ok_on);
    let s = Failover::layer(
        Arc::clone(&b),
        Arc::new(move |name: &str| {
            let (t, o, name) = (Arc::clone(&t2), Arc::clone(&o2), name.to_string());
            Some(service_fn(move |c: Call| {
                assert_eq!(&*c.plugin, name.as_str());
                t.lock().unwrap().push(name.clone());
                let ok = *o.lock().unwrap() == name;
                let name = name.clone();
                async move {
                    if ok {
                        Ok(json!(name))
                    } else {
                        Err(Error::new(
                            ErrorKind::ConnectionFailed,
                            format!("{name} down"),
                        ))
                    }
                }
            }))
        }),
    );
    assert_eq!(
        s.call(Call::new("g", Value::Null))
            .await
            .and_then(Reply::into_value)
            .unwrap(),
        json!("third")
    );
    assert_eq!(*tried.lock().unwrap(), ["first", "second", "third"]);
    let stats = b.stats();
    let first = stats.iter().find(|m| m.name == "first").unwrap();
    assert_eq!((first.requests, first.success_rate), (1, 0.0));

    *ok_on.lock().unwrap() = "nobody".into();
    let e = s.call(Call::new("g", Value::Null)).await.unwrap_err();
    assert_eq!(e.code(), "PLUGIN_1205");
    assert_eq!(e.plugin.as_deref(), Some("third"));
    assert!(e.message.starts_with("all 3 plugin(s) tried failed"), "{e}");

    for n in ["first", "second", "third"] {
        b.set_enabled(n, false);
    }
    assert_eq!(
        s.call(Call::new("g", Value::Null))
            .await
            .unwrap_err()
            .code(),
        "LOADBALANCER_1701"
    );
}

#[tokio::test(start_paused = true)]
async fn cancellation_ends_the_call_at_once() {
    let leaf = service_fn(|_c: Call| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(Value::Null)
    });
    let s = Deadline::layer(leaf);
    let mut c = Call::new("p", Value::Null);
    let cancel = tokio_util::sync::CancellationToken::new();
    c.cancel = Some(cancel.clone());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        cancel.cancel();
    });
    let t0 = tokio::time::Instant::now();
    let e = s.call(c).await.unwrap_err();
    assert!(e.message.contains("cancelled"));
    assert!(t0.elapsed() < Duration::from_secs(1));
}

/// A call let through a half-open circuit and then dropped (its caller gave
/// up) gives its trial place back: the circuit does not stay half-open,
/// refusing every call, for good.
#[tokio::test(start_paused = true)]
async fn a_half_open_trial_that_is_dropped_gives_its_place_back() {
    let b = Arc::new(CircuitBreaker::new(BreakerConfig {
        enabled: true,
        failure_threshold: 1,
        recovery_timeout: Duration::from_secs(5),
        min_request_threshold: 1,
        success_threshold: 1,
    }));
    // 0: fail, 1: never answer, 2: answer.
    let mode = Arc::new(AtomicU32::new(0));
    let leaf = scripted(&mode, &Arc::new(AtomicU32::new(0)));
    let s = CircuitBreak::layer(Arc::clone(&b), None, leaf);
    let call = || s.call(Call::new("p", Value::Null));
    assert!(call().await.is_err());
    assert_eq!(b.state(), BreakerState::Open);
    tokio::time::advance(Duration::from_secs(6)).await;
    mode.store(1, Ordering::SeqCst);
    // The one trial place is taken while the trial waits…
    let mut trial = Box::pin(call());
    assert!(tokio::time::timeout(Duration::from_millis(10), &mut trial)
        .await
        .is_err());
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert_eq!(call().await.unwrap_err().code(), "CIRCUIT_1401");
    // … then its caller gives up.
    drop(trial);
    mode.store(2, Ordering::SeqCst);
    assert_eq!(call().await.unwrap().into_value().unwrap(), json!("up"));
    assert_eq!(b.state(), BreakerState::Closed);
}

/// Calls in flight when the circuit opens do not each report the opening:
/// the listener (which counts trips in the metrics) hears one change of
/// state per change.
#[tokio::test(start_paused = true)]
async fn the_listener_hears_each_change_of_state_once() {
    let b = Arc::new(CircuitBreaker::new(BreakerConfig {
        enabled: true,
        failure_threshold: 5,
        recovery_timeout: Duration::from_secs(5),
        min_request_threshold: 3,
        success_threshold: 1,
    }));
    // Every call fails after a while, so all ten are let through first.
    let leaf = service_fn(|_c: Call| async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Err::<Value, _>(Error::new(ErrorKind::ConnectionFailed, "down"))
    });
    let (s, heard) = heard_by_a_listener(&b, leaf);
    let calls: Vec<_> = (0..10)
        .map(|_| s.call(Call::new("p", Value::Null)))
        .collect();
    for r in futures_util::future::join_all(calls).await {
        assert!(r.is_err());
    }
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(b.stats().opened, 1);
    assert_eq!(*heard.lock().unwrap(), vec![BreakerState::Open]);
}

/// A host's transport written before trace context had its own field still
/// gets it in its headers: a child of the caller's `traceparent`.
#[tokio::test]
async fn a_host_transport_gets_the_trace_context_in_its_headers() {
    struct Recorder;
    impl hangar_plugin::Transport for Recorder {
        fn kind(&self) -> &'static str {
            "recorder"
        }
        fn call(
            &self,
            _: hangar_plugin::CallKind,
            _: Value,
            ctx: hangar_plugin::CallContext,
        ) -> hangar_plugin::BoxFuture<'_, Result<Value, hangar_plugin::Error>> {
            Box::pin(async move { Ok(json!(ctx.headers)) })
        }
        fn close(&self) -> hangar_plugin::BoxFuture<'_, ()> {
            Box::pin(async {})
        }
    }
    let s = hangar_plugin::layers::Metered::layer(
        Arc::new(hangar_plugin::Metrics::new()),
        hangar_plugin::layers::TransportService::layer(Arc::new(Recorder)),
    );
    let parent = hangar_plugin::TraceContext::new_root();
    let mut c = Call::new("p", Value::Null);
    c.ctx
        .headers
        .insert("traceparent".into(), parent.to_header());
    let got = s.call(c).await.unwrap().into_value().unwrap();
    let sent = hangar_plugin::TraceContext::parse(got["traceparent"].as_str().unwrap()).unwrap();
    assert_eq!(sent.trace_id, parent.trace_id);
    assert_ne!(sent.span_id, parent.span_id);
    assert_eq!(got.as_object().map(|o| o.len()), Some(1));
}

/// A transport that ends its calls at `ctx.timeout` (and waits an hour when
/// given none, as "use your default").
struct EndsAtTimeout;

impl hangar_plugin::Transport for EndsAtTimeout {
    fn kind(&self) -> &'static str {
        "test"
    }
    fn call(
        &self,
        _: hangar_plugin::CallKind,
        _: Value,
        ctx: hangar_plugin::CallContext,
    ) -> hangar_plugin::BoxFuture<'_, Result<Value, hangar_plugin::Error>> {
        Box::pin(async move {
            let t = if ctx.timeout.is_zero() {
                Duration::from_secs(3600)
            } else {
                ctx.timeout
            };
            tokio::time::sleep(t).await;
            Err(hangar_plugin::Error::new(ErrorKind::Timeout, "timed out"))
        })
    }
    fn ends_at_timeout(&self) -> bool {
        true
    }
    fn close(&self) -> hangar_plugin::BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Over a transport that times its own calls the timeout layer only passes
/// the timeout on; a deadline already reached is still timed at once, not
/// handed down as a zero ("default") timeout.
#[tokio::test(start_paused = true)]
async fn the_timeout_layer_leans_on_a_transport_that_ends_its_calls_but_not_at_zero() {
    let leaf = hangar_plugin::layers::TransportService::layer(Arc::new(EndsAtTimeout));
    let s = Timeout::layer(Duration::from_millis(200), leaf);
    let t0 = tokio::time::Instant::now();
    let e = s.call(Call::new("p", Value::Null)).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout);
    assert_eq!(t0.elapsed(), Duration::from_millis(200));

    let mut c = Call::new("p", Value::Null);
    c.deadline = Some(tokio::time::Instant::now());
    let t0 = tokio::time::Instant::now();
    let e = s.call(c).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout);
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
}

/// The manager's stack ([`Guard`], one future for every policy) and the same
/// policies stacked layer by layer answer a scripted run alike: each call's
/// outcome, how often the plugin was reached, when (backoff), the breaker's
/// states as its listener hears them, a trial dropped half-way, and what the
/// metrics recorded.
#[tokio::test(start_paused = true)]
async fn the_one_future_stack_behaves_as_the_layers_stacked_one_by_one() {
    use hangar_plugin::layers::Metered;
    use hangar_plugin::{Guard, GuardConfig, Metrics};
    let cfg = GuardConfig {
        breaker: BreakerConfig {
            enabled: true,
            failure_threshold: 2,
            recovery_timeout: Duration::from_secs(5),
            min_request_threshold: 1,
            success_threshold: 1,
        },
        rate_limit: RateLimitConfig {
            enabled: true,
            requests_per_second: 1.0,
            burst: 4,
        },
        retry: retry(1),
        timeout: Duration::from_millis(300),
    };
    // What a run saw: per call its outcome, the calls that reached the
    // plugin, and the time; then the states heard and the metrics.
    async fn run(s: BoxService, mode: Arc<AtomicU32>) -> Vec<String> {
        let t0 = tokio::time::Instant::now();
        let mut seen = Vec::new();
        let call = || s.call(Call::new("p", Value::Null));
        for m in [0, 0, 9, 2, 2, 1, 2, 2, 10] {
            if m == 10 {
                // Its own retry budget, and a deadline that ends the
                // retries before the budget does.
                tokio::time::advance(Duration::from_secs(30)).await;
                mode.store(0, Ordering::SeqCst);
                let mut c = Call::new("p", Value::Null);
                c.max_retries = Some(5);
                c.deadline = Some(tokio::time::Instant::now() + Duration::from_millis(250));
                let r = s.call(c).await.map(|_| ()).map_err(|e| e.code());
                seen.push(format!("{r:?} at {:?}", t0.elapsed()));
                continue;
            }
            if m == 9 {
                // Past the recovery timeout, a trial that never answers is
                // dropped by its caller.
                tokio::time::advance(Duration::from_secs(6)).await;
                mode.store(1, Ordering::SeqCst);
                let mut trial = Box::pin(call());
                let _ = tokio::time::timeout(Duration::from_millis(10), &mut trial).await;
                drop(trial);
                seen.push("dropped".into());
                continue;
            }
            mode.store(m, Ordering::SeqCst);
            let r = match call().await {
                Ok(v) => format!("ok {}", v.into_value().unwrap()),
                Err(e) => e.code().to_string(),
            };
            seen.push(format!("{r} at {:?}", t0.elapsed()));
        }
        seen
    }
    let mut runs = Vec::new();
    for fused in [true, false] {
        let mode = Arc::new(AtomicU32::new(0));
        let reached = Arc::new(AtomicU32::new(0));
        let leaf = scripted(&mode, &reached);
        let metrics = Arc::new(Metrics::new());
        metrics.track("p");
        let heard = Arc::new(Mutex::new(Vec::new()));
        let h2 = Arc::clone(&heard);
        let listener: hangar_plugin::layers::BreakerListener =
            Arc::new(move |_p: &str, st: BreakerState| h2.lock().unwrap().push(st));
        let s: BoxService = if fused {
            Guard::build(cfg, leaf, Some(Arc::clone(&metrics)), Some(listener)).service()
        } else {
            let breaker = Arc::new(CircuitBreaker::new(cfg.breaker));
            let bucket =
                TokenBucket::new_at(cfg.rate_limit, tokio::time::Instant::now().into_std());
            let attempt =
                CircuitBreak::new(breaker, Some(listener), Timeout::new(cfg.timeout, leaf));
            Arc::new(Metered::new(
                Some(Arc::clone(&metrics)),
                RateLimit::new(Some(bucket), Retry::new(cfg.retry, attempt)),
            ))
        };
        let mut seen = run(s, mode).await;
        seen.push(format!("reached {}", reached.load(Ordering::SeqCst)));
        seen.push(format!("heard {:?}", heard.lock().unwrap()));
        let p = &metrics.report().plugins["p"];
        seen.push(format!(
            "metrics: {} calls, {} ok, {} failed, {} active, {} timeouts, {} connection errors, {} refused",
            p.total_requests,
            p.successful_requests,
            p.failed_requests,
            p.active_requests,
            p.timeout_errors,
            p.connection_errors,
            p.refused
        ));
        runs.push(seen);
    }
    assert_eq!(runs[0], runs[1]);
    // And the run is the one meant: retried, opened, a dropped trial, the
    // rate limit reached.
    let all = runs[0].join("\n");
    for want in ["CIRCUIT_1401", "dropped", "ok \"up\"", "RATELIMIT_1501"] {
        assert!(all.contains(want), "{want} missing from\n{all}");
    }
}
