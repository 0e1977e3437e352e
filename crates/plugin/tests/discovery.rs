//! Discovery on real directories: a scan by glob patterns (configs in JSON
//! and YAML, executables, bad files reported), and watch mode adding,
//! updating and removing plugins of a live manager as files change.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use hangar_plugin::config::DiscoveryConfig;
use hangar_plugin::discovery::{scan, watch, SOURCE_ANNOTATION};
use hangar_plugin::{Manager, ManagerConfig};
use serde_json::json;
use support::{config, knobs, unix_plugin, Server};

fn write(path: &Path, text: &str) {
    // Write then rename, as deployment tools do, so a watcher never reads half a file.
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn a_scan_finds_configs_and_executables_by_pattern_and_reports_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("a.json"),
        r#"{"name": "a", "transport": "unix", "endpoint": "a.sock"}"#,
    )
    .unwrap();
    std::fs::write(
        d.join("b.yaml"),
        "plugins:\n  - name: b1\n    transport: unix\n    endpoint: /run/b1.sock\n  - name: b2\n    transport: unix\n    endpoint: /run/b2.sock\n",
    )
    .unwrap();
    std::fs::write(d.join("broken.json"), "{ not json").unwrap();
    std::fs::write(
        d.join("invalid.json"),
        r#"{"name": "", "transport": "unix"}"#,
    )
    .unwrap();
    std::fs::write(d.join("notes.txt"), "ignored").unwrap();
    let exe = d.join("plugin-resize");
    std::fs::write(&exe, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(d.join("plugin-readme"), "not executable").unwrap();

    let cfg = DiscoveryConfig {
        enabled: true,
        directories: vec![d.display().to_string(), "/nonexistent/dir".into()],
        patterns: vec!["*.json".into(), "*.yaml".into(), "plugin-*".into()],
        watch_mode: false,
    };
    let r = scan(&cfg, &ManagerConfig::default());
    let names: Vec<&str> = r.plugins.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["a", "b1", "b2", "plugin-resize"]);
    assert_eq!(
        r.plugins[0].endpoint,
        d.join("a.sock").display().to_string()
    );
    assert_eq!(
        r.plugins[0].annotations[SOURCE_ANNOTATION],
        d.join("a.json").display().to_string()
    );
    assert_eq!(r.plugins[3].transport, "exec");
    assert_eq!(r.plugins[3].executable, exe.display().to_string());
    let mut problems: Vec<(String, &str)> = r
        .problems
        .iter()
        .map(|p| {
            (
                p.path.file_name().unwrap().to_string_lossy().into_owned(),
                p.errors[0].code,
            )
        })
        .collect();
    problems.sort();
    assert_eq!(
        problems,
        [
            ("broken.json".to_string(), "PLUGIN_1011"),
            ("invalid.json".to_string(), "PLUGIN_1001")
        ]
    );
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(15), "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_mode_adds_updates_and_removes_plugins_as_files_change() {
    let socks = tempfile::tempdir().unwrap();
    let plugins = tempfile::tempdir().unwrap();
    let _s1 = Server::start(&socks.path().join("one.sock"), knobs("one")).await;
    let _s2 = Server::start(&socks.path().join("two.sock"), knobs("two")).await;
    let _sf = Server::start(&socks.path().join("fixed.sock"), knobs("fixed")).await;
    let disc = DiscoveryConfig {
        enabled: true,
        directories: vec![plugins.path().display().to_string()],
        patterns: vec![],
        watch_mode: true,
    };
    let m = Manager::new();
    let mut cfg = config(json!({"plugins": [unix_plugin("fixed", socks.path(), json!({}))]}));
    cfg.discovery = disc.clone();
    // Loading a configuration with discovery in watch mode starts the watch.
    m.load(cfg).await.unwrap();
    assert_eq!(m.names(), ["fixed"]);

    let file = plugins.path().join("dyn.json");
    let at = |sock: &str| {
        json!({"name": "dyn", "transport": "unix",
               "endpoint": socks.path().join(sock).display().to_string(),
               "health_check": {"interval": "1h", "timeout": "2s"}})
        .to_string()
    };
    write(&file, &at("one.sock"));
    wait_until("dyn added", || m.names().contains(&"dyn".to_string())).await;
    assert_eq!(m.execute("dyn", json!({})).await.unwrap()["plugin"], "one");

    write(&file, &at("two.sock"));
    let t0 = Instant::now();
    loop {
        if let Ok(v) = m.execute("dyn", json!({})).await {
            if v["plugin"] == "two" {
                break;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "dyn never moved to two"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // A file naming a configured plugin does not override it.
    write(
        &plugins.path().join("fixed.json"),
        &json!({"name": "fixed", "transport": "unix", "endpoint": "/nonexistent.sock"}).to_string(),
    );
    std::fs::remove_file(&file).unwrap();
    wait_until("dyn removed", || !m.names().contains(&"dyn".to_string())).await;
    assert_eq!(m.names(), ["fixed"]);
    assert_eq!(
        m.execute("fixed", json!({})).await.unwrap()["plugin"],
        "fixed"
    );
    assert_eq!(
        m.execute("dyn", json!({})).await.unwrap_err().code(),
        "PLUGIN_1201"
    );
    m.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_scans_once_and_watch_reports_its_last_scan() {
    let socks = tempfile::tempdir().unwrap();
    let plugins = tempfile::tempdir().unwrap();
    let _s = Server::start(&socks.path().join("found.sock"), knobs("found")).await;
    write(
        &plugins.path().join("found.yaml"),
        &format!(
            "name: found\ntransport: unix\nendpoint: {}\n",
            socks.path().join("found.sock").display()
        ),
    );
    let disc = DiscoveryConfig {
        enabled: true,
        directories: vec![plugins.path().display().to_string()],
        patterns: vec![],
        watch_mode: false,
    };
    let m = Manager::new();
    m.load(ManagerConfig {
        discovery: disc.clone(),
        ..ManagerConfig::default()
    })
    .await
    .unwrap();
    assert_eq!(m.names(), ["found"]);
    assert_eq!(
        m.execute("found", json!({})).await.unwrap()["plugin"],
        "found"
    );

    let m2 = Manager::new();
    let w = watch(m2.clone(), disc).await.unwrap();
    assert_eq!(m2.names(), ["found"]);
    assert_eq!(w.last_scan().unwrap().plugins.len(), 1);
}
