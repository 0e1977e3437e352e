//! The catalog and installs through the daemon: with `hangar serve` running,
//! `hangar install`, `uninstall`, `installed` and `catalog` go through its
//! `Catalog` service (its one installer, its event history), print what the
//! command prints without a daemon, and refuse what the daemon refuses.

mod common;

use std::path::Path;
use std::process::{Child, Output, Stdio};

use common::{hangar, json, run, stderr, stdout, wait_for, Scratch, Served, LONG};
use serde_json::Value;

/// A daemon with a port range of its own (tests run in parallel).
fn serve(s: &Scratch, ports: &str) -> (Served, std::path::PathBuf) {
    let data = s.path().join("data");
    let cfg = s.path().join("hangar.toml");
    std::fs::write(&cfg, format!("[daemon]\nport_range = \"{ports}\"\n")).unwrap();
    let d = Served::start(&data, &["-c", cfg.to_str().unwrap()]);
    (d, data)
}

/// The daemon's stored events as (name, kind, to, detail).
fn events(data: &Path) -> Vec<(String, String, String, Value)> {
    let o = run(data, &["events", "--json", "-n", "1000"]);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (s("name"), s("kind"), s("to"), e["detail"].clone())
        })
        .collect()
}

fn has_event(data: &Path, name: &str, kind: &str) -> bool {
    events(data)
        .iter()
        .any(|(n, k, _, _)| n == name && k == kind)
}

fn ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what}: exit {:?}\nstdout {}\nstderr {}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
}

#[test]
fn install_goes_through_the_daemon_and_prints_what_the_local_path_prints() {
    let s = Scratch::new("catapi-install");
    let (d, data) = serve(&s, "21300-21349");

    let o = run(&data, &["install", "demo", "--json"]);
    ok(&o, "install demo");
    let rec = json(&o);
    assert_eq!(rec["version"], "1.1.0", "{rec}");
    assert_eq!(rec["verified"], true, "{rec}");
    assert_eq!(rec["current"], true, "{rec}");
    // Progress still reaches stderr as plain lines off a terminal.
    let o = run(&data, &["install", "demo@1.0.0"]);
    ok(&o, "install demo@1.0.0");
    assert!(
        stderr(&o).contains("demo 1.0.0: downloaded"),
        "{}",
        stderr(&o)
    );
    assert!(
        stdout(&o).starts_with("installed demo 1.0.0 (verified, sha256 "),
        "{}",
        stdout(&o)
    );

    // The daemon did it: its history has both installs, named after the feature.
    assert!(
        wait_for(LONG, || {
            events(&data)
                .iter()
                .filter(|(n, k, _, _)| n == "demo" && k == "feature.installed")
                .count()
                == 2
        }),
        "no feature.installed events: {:?}",
        events(&data)
    );
    let ev = events(&data);
    let (_, _, to, detail) = ev
        .iter()
        .find(|(n, k, to, _)| n == "demo" && k == "feature.installed" && to == "1.1.0")
        .expect("the 1.1.0 install event");
    assert_eq!(to, "1.1.0");
    assert_eq!(detail["sha256"], rec["sha256"], "{detail}");

    let by_daemon = |args: &[&str]| {
        let o = run(&data, args);
        ok(&o, &args.join(" "));
        json(&o)
    };
    let installed = by_daemon(&["installed", "--json"]);
    let show = by_daemon(&["catalog", "show", "demo", "--json"]);
    let list = by_daemon(&["catalog", "list", "--json"]);
    let search = by_daemon(&["catalog", "search", "demo", "--json"]);
    let o = run(&data, &["catalog", "search", "no-such-word-anywhere"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let table = run(&data, &["installed"]);
    ok(&table, "installed");

    // The same commands without a daemon print the same.
    drop(d);
    let local = |args: &[&str]| {
        let o = run(&data, args);
        ok(&o, &args.join(" "));
        json(&o)
    };
    assert_eq!(installed, local(&["installed", "--json"]));
    assert_eq!(show, local(&["catalog", "show", "demo", "--json"]));
    assert_eq!(list, local(&["catalog", "list", "--json"]));
    assert_eq!(search, local(&["catalog", "search", "demo", "--json"]));
    assert_eq!(stdout(&table), stdout(&run(&data, &["installed"])));
    let versions: Vec<(&str, bool)> = installed
        .as_array()
        .expect("an array")
        .iter()
        .map(|r| (r["version"].as_str().unwrap_or(""), r["current"] == true))
        .collect();
    assert_eq!(versions, [("1.0.0", true), ("1.1.0", false)]);
    assert_eq!(show["installed"], installed, "{show}");
    assert!(show["resolved"]["url"].as_str().is_some(), "{show}");
    assert_eq!(show["resolved"]["checksum"]["type"], "file", "{show}");
}

#[test]
fn a_version_that_does_not_exist_is_not_found_and_names_those_that_do() {
    let s = Scratch::new("catapi-missing");
    let (_d, data) = serve(&s, "21350-21399");
    let o = run(&data, &["install", "demo@9.9"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("FETCH_NOT_FOUND"), "{err}");
    assert!(err.contains("versions: 1.0.0, 1.1.0"), "{err}");
    assert!(!data.join("features/demo/9.9").exists());
    // The daemon tried, and says so in its history.
    assert!(
        wait_for(LONG, || has_event(&data, "demo", "feature.install_failed")),
        "{:?}",
        events(&data)
    );
    let o = run(&data, &["install", "no-such-feature"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("FEATURE_NOT_FOUND"), "{}", stderr(&o));
}

#[test]
fn uninstall_of_a_version_an_instance_uses_is_refused() {
    let s = Scratch::new("catapi-inuse");
    let (_d, data) = serve(&s, "21400-21449");
    let o = run(&data, &["instance", "create", "demo", "x", "--json"]);
    ok(&o, "instance create");
    assert_eq!(json(&o)["state"], "running");
    // Stopped, nothing runs from the version; the instance still uses it.
    ok(&run(&data, &["instance", "stop", "x"]), "instance stop");

    for spec in ["demo@1.1.0", "demo"] {
        let o = run(&data, &["uninstall", spec]);
        assert_eq!(o.status.code(), Some(2), "{spec}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains("FEATURE_IN_USE"), "{spec}: {err}");
        assert!(err.contains("x (1.1.0)"), "{spec}: {err}");
        assert!(err.contains("hangar instance delete"), "{spec}: {err}");
    }
    let o = run(&data, &["installed", "--json"]);
    ok(&o, "installed");
    assert_eq!(json(&o)[0]["version"], "1.1.0", "{}", stdout(&o));
    assert!(data.join("features/demo/1.1.0").is_dir());
    assert!(!has_event(&data, "demo", "feature.uninstalled"));
    // Once the instance is gone, the version goes too.
    ok(&run(&data, &["instance", "start", "x"]), "instance start");
    ok(&run(&data, &["instance", "delete", "x"]), "instance delete");
    let o = run(&data, &["uninstall", "demo", "--json"]);
    ok(&o, "uninstall");
    assert_eq!(json(&o)["removed"], serde_json::json!(["1.1.0"]));
    assert!(!data.join("features/demo").exists());
    assert!(wait_for(LONG, || has_event(
        &data,
        "demo",
        "feature.uninstalled"
    )));
}

fn spawn(data: &Path, args: &[&str]) -> Child {
    hangar()
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hangar runs")
}

#[test]
fn installs_and_an_instance_create_at_once_share_one_installer() {
    let s = Scratch::new("catapi-race");
    let (_d, data) = serve(&s, "21450-21499");
    // All at once: two installs of the version the instance needs, and the
    // instance.
    let children = [
        spawn(&data, &["install", "demo", "--json"]),
        spawn(&data, &["instance", "create", "demo", "x", "--json"]),
        spawn(&data, &["install", "demo", "--json"]),
    ];
    let outs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().expect("hangar ends"))
        .collect();
    for o in &outs {
        ok(o, "concurrent command");
    }
    assert_eq!(json(&outs[1])["state"], "running", "{}", stdout(&outs[1]));
    for o in [&outs[0], &outs[2]] {
        assert_eq!(json(o)["version"], "1.1.0");
    }
    // One version, current, whole; nothing half-made left beside it.
    let o = run(&data, &["installed", "--json"]);
    ok(&o, "installed");
    let rows = json(&o);
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    assert_eq!(rows[0]["current"], true, "{rows}");
    let names: Vec<String> = std::fs::read_dir(data.join("features/demo"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for n in &names {
        assert!(
            !n.starts_with(".staging") && !n.starts_with(".trash") && !n.starts_with(".current-"),
            "{names:?}"
        );
    }
    let part_left = std::fs::read_dir(data.join("features/demo/.downloads"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(part_left, 0, "a download left behind");
    assert_eq!(
        std::fs::read_link(data.join("features/demo/current")).unwrap(),
        Path::new("1.1.0")
    );
    // Both installs were the daemon's.
    assert!(
        wait_for(LONG, || events(&data)
            .iter()
            .filter(|(n, k, _, _)| n == "demo" && k == "feature.installed")
            .count()
            == 2),
        "{:?}",
        events(&data)
    );
    // The instance's binary is the installed one and it still serves.
    let o = run(&data, &["instance", "show", "x", "--json"]);
    ok(&o, "instance show");
    assert_eq!(json(&o)["state"], "running", "{}", stdout(&o));
}

/// Over TCP the Catalog service sits behind the same token as the others, and
/// a daemon named with `--addr` must answer: no quiet fallback to the local
/// path with its own data dir.
#[test]
fn over_tcp_the_catalog_needs_the_token_and_addr_must_answer() {
    let s = Scratch::new("catapi-tcp");
    let data = s.path().join("data");
    let cfg = s.path().join("hangar.toml");
    let port = common::free_port();
    std::fs::write(
        &cfg,
        format!("[daemon.grpc]\ntcp = \"127.0.0.1:{port}\"\ntoken = \"s3cret\"\n"),
    )
    .unwrap();
    let _d = Served::start(&data, &["-c", cfg.to_str().unwrap()]);
    // A client elsewhere: its own data dir has no daemon and nothing installed.
    let elsewhere = s.path().join("client");
    let addr = format!("http://127.0.0.1:{port}");
    let over_tcp = |token: &str, args: &[&str]| {
        let mut all = vec!["--addr", &addr, "--token", token];
        all.extend(args);
        run(&elsewhere, &all)
    };
    let o = over_tcp("s3cret", &["install", "demo", "--json"]);
    ok(&o, "install over TCP");
    assert!(
        Path::new(json(&o)["binary"].as_str().unwrap_or_default()).starts_with(&data),
        "installed into the daemon's data dir: {}",
        stdout(&o)
    );
    assert!(!elsewhere.join("features").exists());
    let o = over_tcp("s3cret", &["catalog", "show", "demo", "--json"]);
    ok(&o, "catalog show over TCP");
    assert_eq!(
        json(&o)["installed"][0]["version"],
        "1.1.0",
        "{}",
        stdout(&o)
    );
    for args in [
        &["installed"][..],
        &["catalog", "list"],
        &["install", "demo"],
        &["uninstall", "demo"],
    ] {
        let o = over_tcp("wrong", args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("UNAUTHENTICATED"), "{}", stderr(&o));
    }
    assert!(data.join("features/demo/1.1.0").is_dir());
    let nobody = format!("http://127.0.0.1:{}", common::free_port());
    let o = run(&elsewhere, &["--addr", &nobody, "installed"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
}
