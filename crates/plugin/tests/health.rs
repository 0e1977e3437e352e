//! Health checkers against real socket plugins (healthy, reporting unhealthy,
//! slow, gone, back), periodic checks, and the monitor's overall status.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hangar_plugin::config::HealthCheckSettings;
use hangar_plugin::health::overall_of;
use hangar_plugin::{HealthChecker, HealthMonitor, HealthStatus, PluginStatus};
use support::{knobs, Server};

fn settings(limit: u32) -> HealthCheckSettings {
    HealthCheckSettings {
        enabled: true,
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(300),
        failure_limit: limit,
        ping: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checker_follows_the_plugin_through_unhealthy_slow_offline_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.sock");
    let k = knobs("h");
    let mut s = Server::start(&path, Arc::clone(&k)).await;
    let t = Arc::new(
        hangar_plugin::unix::UnixClient::new(hangar_plugin::unix::UnixOptions::new(path.clone()))
            .unwrap(),
    );
    let heard = Arc::new(Mutex::new(Vec::new()));
    let h2 = Arc::clone(&heard);
    let c = HealthChecker::new(
        "h",
        t,
        settings(3),
        Some(Arc::new(move |n: &str, st: &HealthStatus| {
            h2.lock().unwrap().push((n.to_string(), st.status))
        })),
    );
    assert_eq!(c.status().status, PluginStatus::Unknown);
    assert_eq!(c.check().await.status, PluginStatus::Healthy);

    k.unhealthy.store(true, Ordering::SeqCst);
    let st = c.check().await;
    assert_eq!(st.status, PluginStatus::Unhealthy);
    assert_eq!(st.metadata["code"], "HEALTH_1601");
    assert_eq!(c.consecutive_failures(), 1);

    k.unhealthy.store(false, Ordering::SeqCst);
    k.health_delay_ms.store(1000, Ordering::SeqCst);
    let st = c.check().await;
    assert_eq!(st.status, PluginStatus::Degraded, "late: degraded");
    assert_eq!(st.metadata["code"], "HEALTH_1602");
    k.health_delay_ms.store(0, Ordering::SeqCst);

    s.kill();
    let st = c.check().await;
    assert_eq!(st.status, PluginStatus::Offline, "third failure in a row");
    assert_eq!(c.consecutive_failures(), 3);

    let _s2 = Server::start(&path, Arc::clone(&k)).await;
    assert_eq!(c.check().await.status, PluginStatus::Healthy);
    assert_eq!(c.consecutive_failures(), 0);
    let heard: Vec<PluginStatus> = heard.lock().unwrap().iter().map(|x| x.1).collect();
    assert_eq!(
        heard,
        [
            PluginStatus::Healthy,
            PluginStatus::Unhealthy,
            PluginStatus::Degraded,
            PluginStatus::Offline,
            PluginStatus::Healthy
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_checks_run_until_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.sock");
    let mut s = Server::start(&path, knobs("p")).await;
    let t = Arc::new(
        hangar_plugin::unix::UnixClient::new(hangar_plugin::unix::UnixOptions::new(path.clone()))
            .unwrap(),
    );
    let c = HealthChecker::new("p", t, settings(2), None);
    c.start();
    c.start();
    assert!(c.is_running());
    let t0 = Instant::now();
    while c.status().status != PluginStatus::Healthy {
        assert!(t0.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.kill();
    while c.status().status != PluginStatus::Offline {
        assert!(t0.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.stop();
    assert!(!c.is_running());
    let last = c.status().last_check;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.status().last_check, last, "no check after stop");
}

fn st(s: PluginStatus) -> HealthStatus {
    HealthStatus::new(s, "")
}

#[test]
fn the_overall_status_is_the_worst_with_offline_only_when_all_are() {
    use PluginStatus::*;
    let all = |v: &[PluginStatus]| -> BTreeMap<String, HealthStatus> {
        v.iter()
            .enumerate()
            .map(|(i, s)| (format!("p{i}"), st(*s)))
            .collect()
    };
    assert_eq!(overall_of(&BTreeMap::new()).status, Unknown);
    assert_eq!(overall_of(&all(&[Unknown, Unknown])).status, Unknown);
    assert_eq!(overall_of(&all(&[Healthy, Unknown])).status, Healthy);
    assert_eq!(overall_of(&all(&[Healthy, Degraded])).status, Degraded);
    assert_eq!(
        overall_of(&all(&[Healthy, Unhealthy, Degraded])).status,
        Unhealthy
    );
    assert_eq!(overall_of(&all(&[Healthy, Offline])).status, Unhealthy);
    assert_eq!(overall_of(&all(&[Offline, Offline])).status, Offline);
    let o = overall_of(&all(&[Healthy, Offline]));
    assert_eq!(o.message, "p1 offline");

    let m = HealthMonitor::new();
    assert_eq!(m.overall().status, Unknown);
    m.update_status("db", st(Healthy));
    m.update_status("cache", st(Degraded));
    assert_eq!(m.overall().status, Degraded);
    assert_eq!(m.status("cache").unwrap().status, Degraded);
    m.remove_checker("cache");
    assert_eq!(m.overall().status, Healthy);
    assert_eq!(m.all_status().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_mode_checks_liveness_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.sock");
    let k = knobs("l");
    k.unhealthy.store(true, Ordering::SeqCst);
    let _s = Server::start(&path, Arc::clone(&k)).await;
    let t = Arc::new(
        hangar_plugin::unix::UnixClient::new(hangar_plugin::unix::UnixOptions::new(path.clone()))
            .unwrap(),
    );
    let health = HealthChecker::new("l", t.clone(), settings(3), None);
    assert_eq!(health.check().await.status, PluginStatus::Unhealthy);
    let ping = HealthChecker::new(
        "l",
        t,
        HealthCheckSettings {
            ping: true,
            ..settings(3)
        },
        None,
    );
    assert_eq!(ping.check().await.status, PluginStatus::Healthy);
    let s: hangar_plugin::config::HealthCheckSection =
        serde_json::from_str(r#"{"endpoint": "ping"}"#).unwrap();
    assert!(s.resolve().ping);
}
