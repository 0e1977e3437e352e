//! Observability through the manager against a real plugin: Prometheus text
//! with per-plugin labels, the report's numbers, and a `plugin_call` span
//! carrying the request id and the trace id that reaches the plugin.

mod support;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use hangar_plugin::{ExecOptions, Manager, TraceContext};
use serde_json::json;
use support::{config, knobs, unix_plugin, Server};

/// tracing caches each callsite's interest process-wide, computed by the
/// first thread to reach it: a test without a subscriber that reaches
/// `plugin_call` first would cache "never", and the span test would see no
/// span. A global subscriber that answers "sometimes" for every callsite,
/// installed before any test reaches one, keeps the choice to each call's
/// own (thread-local) subscriber.
fn callsites_stay_open() {
    struct Quiet;
    impl tracing::Subscriber for Quiet {
        fn register_callsite(
            &self,
            _: &'static tracing::Metadata<'static>,
        ) -> tracing::subscriber::Interest {
            tracing::subscriber::Interest::sometimes()
        }
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            false
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, _: &tracing::Event<'_>) {}
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing::subscriber::set_global_default(Quiet);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_text_and_the_report_count_per_plugin() {
    callsites_stay_open();
    let dir = tempfile::tempdir().unwrap();
    let k = knobs("m");
    k.fail_next.store(1, Ordering::SeqCst);
    let _s = Server::start(&dir.path().join("m.sock"), Arc::clone(&k)).await;
    let m = Manager::new();
    m.load(config(
        json!({"plugins": [unix_plugin("m", dir.path(), json!({}))]}),
    ))
    .await
    .unwrap();
    assert!(m.execute("m", json!({})).await.is_err());
    assert!(m.execute("m", json!({})).await.is_ok());
    assert!(m.execute("m", json!({})).await.is_ok());
    m.check_health().await;

    let text = m.metrics().encode();
    for line in [
        "hangar_plugin_requests_total{plugin=\"m\",outcome=\"ok\"} 2",
        "hangar_plugin_requests_total{plugin=\"m\",outcome=\"PLUGIN_1203\"} 1",
        "hangar_plugin_request_duration_seconds_count{plugin=\"m\"} 3",
        "hangar_plugin_active_requests{plugin=\"m\"} 0",
        "hangar_plugin_health_status{plugin=\"m\"} 1",
        "# TYPE hangar_plugin_request_duration_seconds histogram",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(text.contains("hangar_plugin_health_checks_total{plugin=\"m\",outcome=\"ok\"}"));

    let r = m.metrics().report();
    let p = &r.plugins["m"];
    assert_eq!(p.total_requests, 3);
    assert_eq!(p.successful_requests, 2);
    assert_eq!(p.failed_requests, 1);
    assert_eq!(p.other_errors, 1);
    assert!((p.success_rate_percent - 66.666).abs() < 0.1);
    assert!(p.min_latency_ms > 0.0 && p.min_latency_ms <= p.avg_latency_ms);
    assert!(p.avg_latency_ms <= p.max_latency_ms);
    assert!(p.health_check_total >= 1);
    assert_eq!(r.global.total_requests, 3);
    assert_eq!(r.global.total_errors, 1);
    let j = serde_json::to_value(&r).unwrap();
    assert_eq!(j["plugins"]["m"]["total_requests"], 3);

    m.unregister("m").await.unwrap();
    assert!(!m
        .metrics()
        .encode()
        .contains("active_requests{plugin=\"m\"}"));
}

/// A subscriber that records the fields of `plugin_call` spans.
type SpanFields = Vec<(String, String)>;

#[derive(Default, Clone)]
struct Spans(Arc<Mutex<Vec<SpanFields>>>);

struct Fields<'a>(&'a mut Vec<(String, String)>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
        self.0.push((f.name().to_string(), format!("{v:?}")));
    }
    fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
        self.0.push((f.name().to_string(), v.to_string()));
    }
}

impl tracing::Subscriber for Spans {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, a: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        if a.metadata().name() == "plugin_call" {
            let mut v = Vec::new();
            a.record(&mut Fields(&mut v));
            self.0.lock().unwrap().push(v);
        }
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn each_call_has_a_span_with_the_request_and_trace_ids_the_plugin_receives() {
    callsites_stay_open();
    let dir = tempfile::tempdir().unwrap();
    let _s = Server::start(&dir.path().join("t.sock"), knobs("t")).await;
    let m = Manager::new();
    m.load(config(
        json!({"plugins": [unix_plugin("t", dir.path(), json!({}))]}),
    ))
    .await
    .unwrap();
    let spans = Spans::default();
    let _g = tracing::subscriber::set_default(spans.clone());
    let out = m
        .execute_with(
            "t",
            json!({}),
            ExecOptions {
                request_id: Some("req-span".into()),
                ..ExecOptions::default()
            },
        )
        .await
        .unwrap();
    let sent = TraceContext::parse(out["headers"]["traceparent"].as_str().unwrap()).unwrap();
    let recorded = spans.0.lock().unwrap().clone();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let f: std::collections::HashMap<_, _> = recorded[0].iter().cloned().collect();
    assert_eq!(f["plugin"], "t");
    assert_eq!(f["request_id"], "req-span");
    assert_eq!(f["trace_id"], format!("{:032x}", sent.trace_id));
    assert_eq!(f["span_id"], format!("{:016x}", sent.span_id));
}

/// A call or a health check that ends after its plugin was removed (a call
/// still draining, a check that was running) does not bring the plugin's
/// series back; a plugin added again under that name is counted again.
#[test]
fn a_removed_plugin_stays_gone_from_the_metrics_until_it_is_added_back() {
    use hangar_plugin::{BreakerState, Metrics, PluginStatus};
    use std::time::Duration;

    let m = Metrics::new();
    m.call_started("gone");
    m.forget("gone");
    m.call_finished("gone", Duration::from_millis(3), Ok(()));
    m.health_checked("gone", PluginStatus::Healthy);
    m.breaker("gone", BreakerState::Open, true);
    m.call_started("gone");
    let text = m.encode();
    assert!(!text.contains("plugin=\"gone\""), "{text}");
    assert!(!m.report().plugins.contains_key("gone"));

    m.track("gone");
    m.call_started("gone");
    m.call_finished("gone", Duration::from_millis(3), Ok(()));
    assert!(m
        .encode()
        .contains("hangar_plugin_requests_total{plugin=\"gone\",outcome=\"ok\"} 1"));
    assert_eq!(m.report().plugins["gone"].total_requests, 1);
}

/// A call that started before its plugin was removed and added back ends on
/// the series it started on: the new series neither sees it end (which
/// would leave it at -1 calls in flight) nor counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_flight_across_a_remove_and_add_back_leaves_the_new_series_balanced() {
    use hangar_plugin::layers::{service_fn, Call, Metered, Service};
    use hangar_plugin::Metrics;

    let m = Arc::new(Metrics::new());
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = Arc::clone(&gate);
    let svc = Metered::layer(
        Arc::clone(&m),
        service_fn(move |_c: Call| {
            let g = Arc::clone(&g);
            async move {
                g.notified().await;
                Ok::<_, hangar_plugin::Error>(json!(1))
            }
        }),
    );
    let call = tokio::spawn({
        let svc = Arc::clone(&svc);
        async move { svc.call(Call::new("p", json!({}))).await }
    });
    let t0 = std::time::Instant::now();
    while m.report().global.active_requests != 1 {
        assert!(t0.elapsed().as_secs() < 10, "the call never started");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    m.forget("p");
    m.track("p");
    gate.notify_one();
    call.await.expect("join").expect("call");
    let r = m.report();
    assert_eq!(r.global.active_requests, 0, "{r:?}");
    assert_eq!(
        r.plugins.get("p").map_or(0, |p| p.total_requests),
        0,
        "{r:?}"
    );

    // Calls after the add back are counted on the new series.
    gate.notify_one();
    svc.call(Call::new("p", json!({}))).await.expect("call");
    let r = m.report();
    assert_eq!(r.plugins["p"].total_requests, 1, "{r:?}");
    assert_eq!(r.plugins["p"].active_requests, 0, "{r:?}");
}
