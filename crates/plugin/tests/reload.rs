//! Hot reload against real socket plugins: the diff, graceful swaps with calls
//! in flight completing on the old instance, rollback when the new instance
//! fails its health check, rolling stops at the first failure, recreate, the
//! concurrency cap, and an invalid configuration refused whole.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hangar_plugin::reload::diff;
use hangar_plugin::{Manager, ReloadOptions, ReloadStrategy};
use serde_json::json;
use support::{config, knobs, unix_plugin, Server};

fn opts(strategy: ReloadStrategy) -> ReloadOptions {
    ReloadOptions {
        strategy,
        drain_timeout: Duration::from_secs(10),
        health_check_timeout: Duration::from_secs(3),
        ..ReloadOptions::default()
    }
}

#[test]
fn the_diff_names_added_updated_fields_removed_and_unchanged() {
    let d = std::path::Path::new("/run");
    let old = config(json!({
        "default_retry": {"max_retries": 3},
        "plugins": [
            unix_plugin("same", d, json!({})),
            unix_plugin("moved", d, json!({"labels": {"a": "1"}})),
            unix_plugin("gone", d, json!({})),
        ]
    }));
    let mut new_plugins = vec![
        unix_plugin("same", d, json!({})),
        unix_plugin(
            "moved",
            d,
            json!({"labels": {"a": "2"}, "retry": {"initial_interval": "1s"}}),
        ),
        unix_plugin("fresh", d, json!({})),
    ];
    new_plugins[1]["endpoint"] = json!("/run/elsewhere.sock");
    let new = config(json!({"default_retry": {"max_retries": 3}, "plugins": new_plugins}));
    let df = diff(&old, &new);
    assert_eq!(df.unchanged, ["same"]);
    assert_eq!(df.removed, ["gone"]);
    assert_eq!(df.added.len(), 1);
    assert_eq!(df.added[0].name, "fresh");
    assert_eq!(df.updated.len(), 1);
    assert_eq!(df.updated[0].name, "moved");
    assert_eq!(
        df.updated[0].changes,
        ["endpoint", "labels", "retry.initial_interval"]
    );

    // A changed default block updates every plugin that inherits it.
    let mut new2 = old.clone();
    new2.default_retry.max_retries = Some(9);
    let df = diff(&old, &new2);
    assert_eq!(df.updated.len(), 3);
    assert!(df
        .updated
        .iter()
        .all(|u| u.changes == ["retry.max_retries"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_reload_swaps_while_calls_in_flight_complete_on_the_old_instance() {
    let dir = tempfile::tempdir().unwrap();
    let (k1, k2, kn) = (knobs("v1"), knobs("v2"), knobs("new"));
    let _s1 = Server::start(&dir.path().join("v1.sock"), Arc::clone(&k1)).await;
    let _s2 = Server::start(&dir.path().join("v2.sock"), Arc::clone(&k2)).await;
    let _sn = Server::start(&dir.path().join("new.sock"), Arc::clone(&kn)).await;
    let _sg = Server::start(&dir.path().join("gone.sock"), knobs("gone")).await;
    let m = Manager::new();
    let mut p = unix_plugin("svc", dir.path(), json!({}));
    p["endpoint"] = json!(dir.path().join("v1.sock").display().to_string());
    m.load(config(
        json!({"plugins": [p.clone(), unix_plugin("gone", dir.path(), json!({}))]}),
    ))
    .await
    .unwrap();

    let m2 = m.clone();
    let inflight = tokio::spawn(async move { m2.execute("svc", json!({"sleep_ms": 3000})).await });
    while k1.calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    p["endpoint"] = json!(dir.path().join("v2.sock").display().to_string());
    let new = config(json!({"plugins": [p, unix_plugin("new", dir.path(), json!({}))]}));
    let m3 = m.clone();
    let reload = tokio::spawn(async move { m3.reload(new, opts(ReloadStrategy::Graceful)).await });
    // New calls reach v2 while the old call is still running on v1.
    let mut on_v2 = false;
    for _ in 0..100 {
        if m.execute("svc", json!({})).await.unwrap()["plugin"] == "v2" {
            on_v2 = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(on_v2);
    assert!(
        !inflight.is_finished(),
        "the swap did not wait for the old call"
    );
    let old = inflight
        .await
        .unwrap()
        .expect("the call in flight completed");
    assert_eq!(old["plugin"], "v1");
    let report = reload.await.unwrap().unwrap();
    assert_eq!(report.applied, ["gone", "new", "svc"]);
    assert!(report.rolled_back.is_empty() && report.drain_timed_out.is_empty());
    assert_eq!(m.execute("new", json!({})).await.unwrap()["plugin"], "new");
    assert_eq!(
        m.execute("gone", json!({})).await.unwrap_err().code(),
        "PLUGIN_1201"
    );
    assert!(m.config().plugins[0].endpoint.ends_with("v2.sock"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_instance_failing_its_health_check_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let (k1, bad) = (knobs("v1"), knobs("bad"));
    bad.unhealthy.store(true, Ordering::SeqCst);
    let _s1 = Server::start(&dir.path().join("v1.sock"), Arc::clone(&k1)).await;
    let _sb = Server::start(&dir.path().join("bad.sock"), Arc::clone(&bad)).await;
    let m = Manager::new();
    let mut p = unix_plugin("svc", dir.path(), json!({}));
    p["endpoint"] = json!(dir.path().join("v1.sock").display().to_string());
    m.load(config(json!({"plugins": [p.clone()]})))
        .await
        .unwrap();

    let mut q = p.clone();
    q["endpoint"] = json!(dir.path().join("bad.sock").display().to_string());
    let new = config(json!({"plugins": [q.clone(), unix_plugin("nobody", dir.path(), json!({}))]}));
    let report = m
        .reload(new.clone(), opts(ReloadStrategy::Graceful))
        .await
        .unwrap();
    let mut rb: Vec<(&str, &str)> = report
        .rolled_back
        .iter()
        .map(|f| (f.name.as_str(), f.code.as_str()))
        .collect();
    rb.sort();
    assert_eq!(rb, [("nobody", "HEALTH_1601"), ("svc", "HEALTH_1601")]);
    assert_eq!(
        m.execute("svc", json!({})).await.unwrap()["plugin"],
        "v1",
        "old kept"
    );
    assert_eq!(
        m.execute("nobody", json!({})).await.unwrap_err().code(),
        "PLUGIN_1201"
    );
    let cfg = m.config();
    assert_eq!(cfg.plugins.len(), 1, "the failed addition is not in force");
    assert!(
        cfg.plugins[0].endpoint.ends_with("v1.sock"),
        "old config kept"
    );

    // Recreate: the old one was taken out first, and a fresh one of the old
    // config comes back.
    let report = m
        .reload(new.clone(), opts(ReloadStrategy::Recreate))
        .await
        .unwrap();
    assert_eq!(report.rolled_back.len(), 2);
    assert_eq!(m.execute("svc", json!({})).await.unwrap()["plugin"], "v1");

    // Without rollback the new (unhealthy) instance is installed and reported.
    let report = m
        .reload(
            config(json!({"plugins": [q]})),
            ReloadOptions {
                rollback_on_failure: false,
                ..opts(ReloadStrategy::Graceful)
            },
        )
        .await
        .unwrap();
    assert_eq!(report.unhealthy.len(), 1);
    assert_eq!(m.execute("svc", json!({})).await.unwrap()["plugin"], "bad");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_reload_stops_at_the_first_failure() {
    let dir = tempfile::tempdir().unwrap();
    let mut servers = Vec::new();
    for n in ["a1", "b1", "a2", "b2"] {
        servers.push(Server::start(&dir.path().join(format!("{n}.sock")), knobs(n)).await);
    }
    let bad = knobs("bad");
    bad.unhealthy.store(true, Ordering::SeqCst);
    servers.push(Server::start(&dir.path().join("bad.sock"), bad).await);
    let at = |name: &str, sock: &str| {
        let mut p = unix_plugin(name, dir.path(), json!({}));
        p["endpoint"] = json!(dir.path().join(sock).display().to_string());
        p
    };
    let m = Manager::new();
    m.load(config(
        json!({"plugins": [at("a", "a1.sock"), at("b", "b1.sock")]}),
    ))
    .await
    .unwrap();
    let report = m
        .reload(
            config(json!({"plugins": [at("a", "bad.sock"), at("b", "b2.sock")]})),
            opts(ReloadStrategy::Rolling),
        )
        .await
        .unwrap();
    assert_eq!(report.rolled_back.len(), 1);
    assert_eq!(report.rolled_back[0].name, "a");
    assert_eq!(report.skipped, ["b"]);
    assert_eq!(m.execute("a", json!({})).await.unwrap()["plugin"], "a1");
    assert_eq!(m.execute("b", json!({})).await.unwrap()["plugin"], "b1");

    let report = m
        .reload(
            config(json!({"plugins": [at("a", "a2.sock"), at("b", "b2.sock")]})),
            opts(ReloadStrategy::Rolling),
        )
        .await
        .unwrap();
    assert_eq!(report.applied, ["a", "b"]);
    assert_eq!(m.execute("a", json!({})).await.unwrap()["plugin"], "a2");
    assert_eq!(m.execute("b", json!({})).await.unwrap()["plugin"], "b2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reloads_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicU32::new(0));
    let max = Arc::new(AtomicU32::new(0));
    let mut servers = Vec::new();
    let mut plugins = Vec::new();
    for i in 0..4 {
        let name = format!("p{i}");
        let k = Arc::new(support::Knobs {
            name: name.clone(),
            health_now: Arc::clone(&now),
            health_max: Arc::clone(&max),
            ..support::Knobs::default()
        });
        k.health_delay_ms.store(300, Ordering::SeqCst);
        servers.push(Server::start(&dir.path().join(format!("{name}.sock")), k).await);
        plugins.push(unix_plugin(&name, dir.path(), json!({})));
    }
    for cap in [1usize, 4] {
        let m = Manager::new();
        m.load(config(json!({"plugins": plugins}))).await.unwrap();
        // Let the first checks after loading finish.
        while now.load(Ordering::SeqCst) > 0 || m.health().values().any(|h| h.last_check.is_none())
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        max.store(0, Ordering::SeqCst);
        let mut changed = plugins.clone();
        for p in &mut changed {
            p["labels"] = json!({"cap": cap.to_string()});
        }
        let report = m
            .reload(
                config(json!({"plugins": changed})),
                ReloadOptions {
                    max_concurrent_reloads: cap,
                    ..opts(ReloadStrategy::Graceful)
                },
            )
            .await
            .unwrap();
        assert_eq!(report.applied.len(), 4, "{report:?}");
        let seen = max.load(Ordering::SeqCst);
        if cap == 1 {
            assert_eq!(seen, 1, "one reload at a time");
        } else {
            assert!(seen > 1, "reloads ran side by side: {seen}");
        }
        m.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_configuration_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let _s = Server::start(&dir.path().join("a.sock"), knobs("a")).await;
    let m = Manager::new();
    m.load(config(
        json!({"plugins": [unix_plugin("a", dir.path(), json!({}))]}),
    ))
    .await
    .unwrap();
    let before = m.config();
    let e = m
        .reload(
            config(json!({"plugins": [
                unix_plugin("b", dir.path(), json!({})),
                {"name": "", "transport": "unix"}
            ]})),
            ReloadOptions::default(),
        )
        .await
        .unwrap_err();
    let hangar_plugin::LoadError::Config(errs) = e else {
        panic!("{e}")
    };
    assert_eq!(errs.codes(), ["PLUGIN_1001", "PLUGIN_1006"]);
    assert_eq!(m.config(), before);
    assert!(m.execute("a", json!({})).await.is_ok());
}
