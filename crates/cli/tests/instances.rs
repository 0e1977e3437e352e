//! Feature instances end to end through the real binary: catalog → install →
//! ports → config → process → healthy, and back, with every failure leaving
//! nothing allocated.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("no test archive for {other}"),
    }
}

/// A catalog feature whose release is `script` (as `bin/run`), packed into a
/// tar.gz with a checksums file, as a real release is.
fn feature(cat: &Path, id: &str, script: &str, extra: Value) -> PathBuf {
    let dir = cat.join(id);
    let stage = dir.join("stage").join(format!("{id}-1.0.0"));
    std::fs::create_dir_all(stage.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("releases")).unwrap();
    let bin = stage.join("bin").join("run");
    std::fs::write(&bin, script).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let asset = format!("{id}-1.0.0-linux-{}.tar.gz", arch());
    let st = Command::new("tar")
        .arg("czf")
        .arg(dir.join("releases").join(&asset))
        .arg("-C")
        .arg(dir.join("stage"))
        .arg(format!("{id}-1.0.0"))
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::remove_dir_all(dir.join("stage")).unwrap();
    let sum = Command::new("sha256sum")
        .arg(&asset)
        .current_dir(dir.join("releases"))
        .output()
        .unwrap();
    std::fs::write(dir.join("releases").join("checksums.txt"), &sum.stdout).unwrap();
    let mut m = json!({
        "id": id,
        "name": id,
        "version": "1.0.0",
        "description": "test feature",
        "license": "MIT",
        "source": {
            "type": "file",
            "asset_pattern": "releases/{{name}}-{{version}}-{{os}}-{{arch}}.tar.gz".replace("{{name}}", id),
            "verification": {"type": "sha256", "checksums_asset": "checksums.txt"}
        },
        "binary": {"path": format!("{id}-{{{{version}}}}/bin/run"), "architectures": ["amd64", "arm64"]},
        "network": {"default_ports": [8080], "protocols": ["http"], "port_names": ["http"]},
        "isolation_level": "shared"
    });
    if let (Some(o), Some(e)) = (m.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_string_pretty(&m).unwrap(),
    )
    .unwrap();
    dir
}

/// A daemon with `daemon_toml` as its configuration and `cat` as its catalog;
/// its data dir and the running daemon.
fn serve_catalog(s: &Scratch, cat: &Path, daemon_toml: &str) -> (PathBuf, Served) {
    let cfg = s.path().join("hangar.toml");
    std::fs::write(&cfg, daemon_toml).unwrap();
    let data = s.path().join("data");
    let d = Served::start(
        &data,
        &[
            "-c",
            cfg.to_str().unwrap(),
            "--catalog",
            cat.to_str().unwrap(),
        ],
    );
    (data, d)
}

fn show(data: &Path, name: &str) -> Option<Value> {
    let o = run(data, &["instance", "show", name, "--json"]);
    o.status.success().then(|| json(&o))
}

fn port_of(v: &Value, name: &str) -> u16 {
    v["ports"][name].as_u64().expect("a port") as u16
}

fn bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn answers(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )
    .is_ok()
}

/// Live processes whose command line contains `needle`.
fn procs_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
        if !zombie && String::from_utf8_lossy(&cmd).contains(needle) {
            out.push(pid);
        }
    }
    out
}

#[test]
fn demo_instance_runs_healthy_and_delete_leaves_nothing() {
    let s = Scratch::new("inst-demo");
    let data = s.path().join("data");
    let cfg = s.path().join("hangar.toml");
    std::fs::write(&cfg, "[daemon]\nport_range = \"21000-21099\"\n").unwrap();
    let _d = Served::start(&data, &["-c", cfg.to_str().unwrap()]);

    // Not installed yet: create installs it from the built-in catalog first.
    let o = run(&data, &["instance", "create", "demo", "web", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["state"], "running", "{v}");
    assert_eq!(v["feature"], "demo");
    let port = port_of(&v, "http");
    let (status, body) = http_get(SocketAddr::from(([127, 0, 0, 1], port)), "/");
    assert_eq!(status, 200, "{body}");
    let dir = PathBuf::from(v["dir"].as_str().unwrap());
    assert!(dir.is_dir());
    // The history tells the story, in order.
    let ev = run(&data, &["events", "--name", "web", "--json", "-n", "100"]);
    let kinds: Vec<String> = stdout(&ev)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|e| {
            format!(
                "{}:{}",
                e["kind"].as_str().unwrap_or(""),
                e["to"].as_str().unwrap_or("")
            )
        })
        .collect();
    for want in [
        "instance.state:queued",
        "instance.state:installing",
        "install.done:1.1.0",
        "instance.state:creating",
        "instance.state:starting",
        "instance.state:running",
    ] {
        assert!(
            kinds.iter().any(|k| k == want),
            "{want} missing from {kinds:?}"
        );
    }

    // Stop keeps the port reserved but nobody listens; start brings it back.
    let o = run(&data, &["instance", "stop", "web", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["state"], "stopped");
    assert!(wait_for(LONG, || !answers(port)));
    let o = run(&data, &["instance", "start", "web", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["state"], "running");
    assert!(answers(port));

    // The same create again is answered with the same instance.
    let o = run(&data, &["instance", "create", "demo", "web", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["id"], v["id"]);
    assert_eq!(json(&o)["reused"], true);
    // The name is taken for another key.
    let o = run(
        &data,
        &["instance", "create", "demo", "web", "--session", "x"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("INSTANCE_EXISTS"), "{}", stderr(&o));

    let o = run(&data, &["instance", "delete", "web"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(show(&data, "web").is_none());
    assert!(!dir.exists(), "the instance directory is gone");
    assert!(wait_for(LONG, || bindable(port)), "the port is free again");
    let ps = json(&run(&data, &["ps", "--json"]));
    assert_eq!(ps.as_array().map(Vec::len), Some(0), "{ps}");
    let o = run(&data, &["instance", "show", "web"]);
    assert_eq!(o.status.code(), Some(4));
    assert!(stderr(&o).contains("INSTANCE_NOT_FOUND"), "{}", stderr(&o));
}

#[test]
fn failures_are_refused_or_rolled_back_leaving_nothing() {
    let s = Scratch::new("inst-fail");
    let cat = s.path().join("catalog");
    feature(
        &cat,
        "crashy",
        "#!/bin/sh\necho starting; exit 3\n",
        json!({"health": {"type": "tcp", "port_index": 0, "timeout_seconds": 1, "interval_seconds": 1},
               "modes": [{"id": "fast", "defaults": {}}]}),
    );
    let (data, _d) = serve_catalog(
        &s,
        &cat,
        "[daemon]\nport_range = \"21100-21199\"\n[daemon.instances]\nstart_retries = 1\nready_timeout = \"30s\"\n",
    );

    let o = run(&data, &["instance", "create", "nope", "x"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("FEATURE_NOT_FOUND"), "{}", stderr(&o));

    // A feature that declares no options refuses every option, as one that
    // declares some refuses those it does not know.
    let o = run(
        &data,
        &["instance", "create", "crashy", "x", "--set", "colour=red"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("CONFIG_UNKNOWN_OPTION"),
        "{}",
        stderr(&o)
    );

    let o = run(
        &data,
        &["instance", "create", "crashy", "x", "--mode", "slow"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("CONFIG_UNKNOWN_MODE"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("fast"),
        "the hint lists the modes: {}",
        stderr(&o)
    );

    let o = run(&data, &["instance", "create", "crashy", "Bad Name"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("INSTANCE_INVALID_NAME"),
        "{}",
        stderr(&o)
    );

    // Refused requests left no record.
    let ls = json(&run(&data, &["instance", "ls", "--json"]));
    assert_eq!(ls.as_array().map(Vec::len), Some(0), "{ls}");

    // A binary that crashes at start: backoff, then error, everything undone.
    let o = run(&data, &["instance", "create", "crashy", "boom", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["state"], "error", "{v}");
    assert_eq!(v["error"]["code"], "INSTANCE_START_FAILED", "{v}");
    assert_eq!(v["error"]["step"], "ready", "{v}");
    assert_eq!(v["ports"], json!({}), "ports released: {v}");
    assert_eq!(v["done"], json!([]), "{v}");
    assert!(!Path::new(v["dir"].as_str().unwrap()).exists());
    let ps = json(&run(&data, &["ps", "--json"]));
    assert_eq!(
        ps.as_array().map(Vec::len),
        Some(0),
        "no process stays: {ps}"
    );
    // `start` makes a failed instance again from the first step (and it fails
    // the same way, taking everything back again).
    let o = run(&data, &["instance", "start", "boom", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["error"]["code"], "INSTANCE_START_FAILED", "{v}");
    assert_eq!(v["ports"], json!({}), "{v}");
    let o = run(&data, &["instance", "delete", "boom"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ls = json(&run(&data, &["instance", "ls", "--json"]));
    assert_eq!(ls.as_array().map(Vec::len), Some(0), "{ls}");
}

#[test]
fn kill_9_mid_create_is_rolled_back_at_the_next_boot() {
    let s = Scratch::new("inst-kill");
    let cat = s.path().join("catalog");
    let marker = format!("hangar-sleepy-{}", std::process::id());
    // Never listens, so it stays in `starting` until the probe gives up.
    feature(
        &cat,
        "sleepy",
        &format!("#!/bin/sh\nexec sh -c 'sleep 600; :' {marker}\n"),
        json!({"health": {"type": "tcp", "port_index": 0, "timeout_seconds": 1, "interval_seconds": 1}}),
    );
    let cfg = s.path().join("hangar.toml");
    std::fs::write(
        &cfg,
        "[daemon]\nport_range = \"21200-21299\"\n[daemon.instances]\nready_timeout = \"10m\"\n",
    )
    .unwrap();
    let data = s.path().join("data");
    let args = [
        "-c",
        cfg.to_str().unwrap(),
        "--catalog",
        cat.to_str().unwrap(),
    ];
    let mut d = Served::start(&data, &args);
    let o = run(
        &data,
        &["instance", "create", "sleepy", "zz", "--detach", "--json"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let mut port = 0;
    let mut last = Value::Null;
    assert!(
        wait_for(LONG, || {
            last = show(&data, "zz").unwrap_or_default();
            port = last["ports"]["http"].as_u64().unwrap_or(0) as u16;
            last["state"] == "starting" && last["step"] == "ready"
        }),
        "it reaches the ready step: {last}"
    );
    assert!(wait_for(LONG, || procs_with(&marker).len() == 1));
    let dir = PathBuf::from(show(&data, "zz").unwrap()["dir"].as_str().unwrap());
    d.kill9();
    drop(d);

    let _d = Served::start(&data, &args);
    let v = show(&data, "zz").expect("the record survives");
    assert_eq!(v["state"], "error", "{v}");
    assert_eq!(v["error"]["code"], "INSTANCE_INTERRUPTED", "{v}");
    assert_eq!(v["ports"], json!({}), "{v}");
    assert!(!dir.exists(), "its directory was taken back");
    assert!(
        wait_for(LONG, || procs_with(&marker).is_empty()),
        "no process of it runs"
    );
    let ps = json(&run(&data, &["ps", "--json"]));
    assert_eq!(ps.as_array().map(Vec::len), Some(0), "{ps}");
    assert!(port == 0 || bindable(port));
    let o = run(&data, &["instance", "delete", "zz"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(wait_for(LONG, || procs_with(&marker).is_empty()));
}

#[test]
fn per_session_instances_are_reused_by_key_and_reaped_when_idle() {
    let s = Scratch::new("inst-session");
    let cfg = s.path().join("hangar.toml");
    std::fs::write(
        &cfg,
        // Long enough for two CLI calls in a row on a loaded machine.
        "[daemon]\nport_range = \"21300-21399\"\n[daemon.instances]\nsession_ttl = \"10s\"\n",
    )
    .unwrap();
    let data = s.path().join("data");
    let _d = Served::start(&data, &["-c", cfg.to_str().unwrap()]);

    let a = json(&run(
        &data,
        &["instance", "create", "demo", "--session", "s1", "--json"],
    ));
    assert_eq!(a["state"], "running", "{a}");
    assert_eq!(a["reused"], false);
    let again = json(&run(
        &data,
        &["instance", "create", "demo", "--session", "s1", "--json"],
    ));
    assert_eq!(again["id"], a["id"], "same key, same instance");
    assert_eq!(again["reused"], true);
    let b = json(&run(
        &data,
        &["instance", "create", "demo", "--session", "s2", "--json"],
    ));
    assert_ne!(b["id"], a["id"]);
    assert_eq!(b["reused"], false);
    let pa = port_of(&a, "http");
    let pb = port_of(&b, "http");
    assert_ne!(pa, pb);

    // Unused past the TTL: both deleted, their ports freed.
    assert!(
        wait_for(LONG, || json(&run(&data, &["instance", "ls", "--json"]))
            .as_array()
            .is_some_and(Vec::is_empty)),
        "idle sessions are reaped"
    );
    assert!(wait_for(LONG, || bindable(pa) && bindable(pb)));
}

#[test]
fn an_instance_with_its_own_network_serves_on_its_address_and_leaves_nothing() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: per-instance networks need root (CI runs as root)");
        return;
    }
    let s = Scratch::new("inst-net");
    let cat = s.path().join("catalog");
    feature(
        &cat,
        "netted",
        "#!/bin/sh\nexec python3 -m http.server \"$HANGAR_PORT_HTTP\" --bind \"$HANGAR_BIND\"\n",
        json!({"health": {"type": "http", "port_index": 0, "path": "/", "timeout_seconds": 2, "interval_seconds": 5},
               "network": {"requires_vlan": true, "default_ports": [8080], "protocols": ["http"], "port_names": ["http"]},
               "isolation_level": "per-tenant"}),
    );
    let cfg = s.path().join("hangar.toml");
    std::fs::write(
        &cfg,
        "[daemon]\nport_range = \"21800-21899\"\n\
         [daemon.network]\nbackend = \"linux\"\nprefix = \"hgi-\"\n\
         pool = { base = \"10.99.0.0\", first = 231, last = 232 }\n",
    )
    .unwrap();
    let data = s.path().join("data");
    let _d = Served::start(
        &data,
        &[
            "-c",
            cfg.to_str().unwrap(),
            "--catalog",
            cat.to_str().unwrap(),
        ],
    );
    let o = run(&data, &["instance", "create", "netted", "n1", "--json"]);
    assert!(o.status.success(), "{}\n{}", stderr(&o), stdout(&o));
    let v = json(&o);
    assert_eq!(v["state"], "running", "{v}");
    let bind = v["bind"].as_str().unwrap().to_string();
    assert!(
        bind.starts_with("10.99.23"),
        "it binds its own address: {v}"
    );
    let ns = v["network"]["namespace"].as_str().unwrap().to_string();
    assert!(Path::new("/run/netns").join(&ns).exists(), "{v}");
    // The host reaches it through the veth, on the manifest's own port.
    let addr: SocketAddr = format!("{bind}:8080").parse().unwrap();
    let (status, _) = http_get(addr, "/");
    assert_eq!(status, 200);
    // `show` prints the namespace, addresses and table.
    let show = stdout(&run(&data, &["instance", "show", "n1"]));
    for want in ["namespace", "instance_addr", "table"] {
        assert!(show.contains(want), "{want} in {show}");
    }
    // A second instance gets the next number; the pool of two is then full.
    let o = run(
        &data,
        &[
            "instance", "create", "netted", "n2", "--tenant", "b", "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(
        &data,
        &[
            "instance", "create", "netted", "n3", "--tenant", "c", "--json",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v3 = json(&o);
    assert_eq!(v3["error"]["code"], "NET_RANGE_EXHAUSTED", "{v3}");
    assert_eq!(v3["error"]["step"], "network", "{v3}");
    for n in ["n1", "n2", "n3"] {
        let o = run(&data, &["instance", "delete", n]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert!(
        !Path::new("/run/netns").join(&ns).exists(),
        "the namespace is gone"
    );
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains("hgi-"),
        "no link of ours is left"
    );
}

#[test]
fn instances_can_run_as_an_unprivileged_user() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: running instances as another user needs root (CI runs as root)");
        return;
    }
    let s = Scratch::new("inst-user");
    // `nobody` must be able to reach the instance's directory.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(s.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let cfg = s.path().join("hangar.toml");
    std::fs::write(
        &cfg,
        "[daemon]\nport_range = \"21900-21999\"\n[daemon.instances]\nuser = \"nobody\"\n",
    )
    .unwrap();
    let data = s.path().join("data");
    let _d = Served::start(&data, &["-c", cfg.to_str().unwrap()]);
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let o = run(&data, &["instance", "create", "demo", "low", "--json"]);
    assert!(o.status.success(), "{}\n{}", stderr(&o), stdout(&o));
    let v = json(&o);
    assert_eq!(v["state"], "running", "{v}");
    let ps = json(&run(
        &data,
        &["ps", v["process"].as_str().unwrap(), "--json"],
    ));
    let pid = ps[0]["pid"].as_u64().expect("a pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap();
    assert_eq!(uid, "65534", "it runs as nobody");
    assert!(status.lines().any(|l| l == "NoNewPrivs:\t1"), "{status}");
    let o = run(&data, &["instance", "delete", "low"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A named create makes that instance, whatever the isolation key: two named
/// instances of one feature run side by side with their own ports. The
/// isolation level governs launches (no name): the first instance serves the
/// key, and a launch is answered with it.
#[test]
fn named_creates_make_new_instances_whatever_the_isolation_key() {
    let s = Scratch::new("inst-named");
    let cfg = s.path().join("hangar.toml");
    std::fs::write(&cfg, "[daemon]\nport_range = \"21500-21599\"\n").unwrap();
    let data = s.path().join("data");
    let _d = Served::start(&data, &["-c", cfg.to_str().unwrap()]);

    let home = run(&data, &["instance", "create", "demo", "home", "--json"]);
    assert!(home.status.success(), "{}", stderr(&home));
    let home = json(&home);
    let work = run(&data, &["instance", "create", "demo", "work", "--json"]);
    assert!(work.status.success(), "{}", stderr(&work));
    let work = json(&work);
    assert_eq!(
        (&home["state"], &work["state"]),
        (&json!("running"), &json!("running"))
    );
    assert_ne!(home["id"], work["id"]);
    let (ph, pw) = (port_of(&home, "http"), port_of(&work, "http"));
    assert_ne!(ph, pw, "each has its own port");
    assert!(answers(ph) && answers(pw), "both serve");

    // A launch (no name) for that key is answered by the instance serving it.
    let launch = json(&run(&data, &["instance", "create", "demo", "--json"]));
    assert_eq!(launch["reused"], true, "{launch}");
    assert_eq!(launch["id"], home["id"], "{launch}");

    for n in ["home", "work"] {
        let o = run(&data, &["instance", "delete", n]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert!(wait_for(LONG, || bindable(ph) && bindable(pw)));
}

/// An instance whose process crashes after it ran shows it in its own state:
/// `degraded` while the process backs off before a restart, `failed` once the
/// restart circuit opens; each change is an `instance.state` event.
#[test]
fn an_instance_whose_process_crashes_later_shows_it() {
    let s = Scratch::new("inst-crash-later");
    let cat = s.path().join("catalog");
    // Serves long enough to be found healthy, then dies (every time).
    feature(
        &cat,
        "flaky",
        "#!/bin/sh\npython3 -m http.server --bind 127.0.0.1 \"$HANGAR_PORT_HTTP\" >/dev/null 2>&1 &\n\
         sleep 2\nexit 1\n",
        json!({"health": {"type": "tcp", "port_index": 0, "timeout_seconds": 1, "interval_seconds": 1}}),
    );
    let (data, _d) = serve_catalog(
        &s,
        &cat,
        "[daemon]\nport_range = \"21600-21699\"\n[daemon.instances]\nstart_retries = 1\nready_timeout = \"30s\"\n",
    );
    let o = run(&data, &["instance", "create", "flaky", "f", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["state"], "running");

    assert!(
        wait_for(LONG, || show(&data, "f")
            .is_some_and(|v| v["state"] == "failed")),
        "never failed: {:?}",
        show(&data, "f")
    );
    let ev = run(&data, &["events", "--name", "f", "--json", "-n", "200"]);
    let states: Vec<String> = stdout(&ev)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["kind"] == "instance.state")
        .map(|e| e["to"].as_str().unwrap_or("").to_string())
        .collect();
    let after_running: Vec<&String> = states.iter().skip_while(|s| *s != "running").collect();
    assert!(
        after_running.iter().any(|s| *s == "degraded"),
        "no degraded after running: {states:?}"
    );
    assert_eq!(
        after_running.last().map(|s| s.as_str()),
        Some("failed"),
        "{states:?}"
    );

    // A failed instance starts again on request, and can be deleted.
    let o = run(&data, &["instance", "delete", "f"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Options a manifest marks `secret` (passwords, keys) reach the config file
/// and nothing else: not the create, show, ls or update replies (CLI or
/// API), not events, not the daemon's log.
#[test]
fn secret_options_never_leave_the_daemon() {
    let s = Scratch::new("inst-secret");
    let cat = s.path().join("catalog");
    let dir = feature(
        &cat,
        "vault",
        "#!/bin/sh\nexec sleep 1000\n",
        json!({"config": {"generator": "template", "template": "app.conf.j2", "options": {
            "password": {"type": "string", "secret": true},
            "greeting": {"type": "string", "default": "hello"}
        }}}),
    );
    std::fs::write(
        dir.join("app.conf.j2"),
        "password {{ options.password }}\ngreeting {{ options.greeting }}\n",
    )
    .unwrap();
    let cfg = s.path().join("hangar.toml");
    std::fs::write(&cfg, "[daemon]\nport_range = \"21400-21499\"\n").unwrap();
    let data = s.path().join("data");
    let log = s.path().join("daemon.log");
    let child = hangar()
        .arg("--data-dir")
        .arg(&data)
        .args(["serve", "--http", "", "--log-level", "debug", "-c"])
        .arg(&cfg)
        .arg("--catalog")
        .arg(&cat)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("hangar serve starts");
    let _d = Served::adopt(child, &data);

    const SECRET: &str = "hunter2-do-not-echo";
    const NEXT: &str = "correct-horse-battery";
    let mut seen = Vec::new();
    let o = run(
        &data,
        &[
            "instance",
            "create",
            "vault",
            "v",
            "--json",
            "--set",
            &format!("password={SECRET}"),
            "--set",
            "greeting=hi",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["options"]["password"], "********", "{v}");
    assert_eq!(v["options"]["greeting"], "hi", "{v}");
    seen.push(o);
    // The config file has it: the service needs it.
    let conf = std::fs::read_to_string(v["config_file"].as_str().expect("config file")).unwrap();
    assert!(conf.contains(SECRET), "{conf}");

    seen.push(run(&data, &["instance", "show", "v", "--json"]));
    seen.push(run(&data, &["instance", "show", "v"]));
    seen.push(run(&data, &["instance", "ls", "--json"]));
    seen.push(run(&data, &["instance", "ls"]));
    let o = run(
        &data,
        &[
            "instance",
            "update",
            "v",
            "--json",
            "--set",
            &format!("password={NEXT}"),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["options"]["password"], "********");
    seen.push(o);
    seen.push(run(&data, &["events", "--json", "-n", "1000"]));
    seen.push(run(&data, &["ps", "--json"]));
    for o in &seen {
        for out in [stdout(o), stderr(o)] {
            assert!(
                !out.contains(SECRET) && !out.contains(NEXT),
                "a secret was echoed: {out}"
            );
        }
    }
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !log_text.contains(SECRET) && !log_text.contains(NEXT),
        "a secret reached the daemon's log"
    );
}

/// A launch that an existing instance answers, asking for other options or
/// another mode, is refused and says which settings differ (by name only),
/// instead of answering `reused` and dropping them.
#[test]
fn a_launch_with_other_options_is_refused_not_dropped() {
    let s = Scratch::new("inst-differ");
    let cat = s.path().join("catalog");
    let dir = feature(
        &cat,
        "tuned",
        "#!/bin/sh\nexec sleep 1000\n",
        json!({"config": {"generator": "template", "template": "t.conf.j2", "options": {
            "level": {"type": "string", "default": "low"},
            "token": {"type": "string", "secret": true}
        }}, "modes": [{"id": "a", "defaults": {}}, {"id": "b", "defaults": {}}]}),
    );
    std::fs::write(dir.join("t.conf.j2"), "level {{ options.level }}\n").unwrap();
    let (data, _d) = serve_catalog(&s, &cat, "[daemon]\nport_range = \"22100-22199\"\n");
    let first = run(
        &data,
        &[
            "instance",
            "create",
            "tuned",
            "--json",
            "--mode",
            "a",
            "--set",
            "level=high",
            "--set",
            "token=s3cr3t-value",
        ],
    );
    assert!(first.status.success(), "{}", stderr(&first));
    // The same ask, or one that asks for nothing: the same instance.
    for args in [
        &[
            "instance",
            "create",
            "tuned",
            "--json",
            "--mode",
            "a",
            "--set",
            "level=high",
        ][..],
        &["instance", "create", "tuned", "--json"][..],
    ] {
        let o = run(&data, args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert_eq!(json(&o)["reused"], true, "{args:?}");
    }
    // Another value or mode: refused, nothing changed, no value echoed.
    for (args, differ) in [
        (
            &["instance", "create", "tuned", "--set", "level=max"][..],
            "level",
        ),
        (
            &["instance", "create", "tuned", "--set", "token=other-secret"][..],
            "token",
        ),
        (&["instance", "create", "tuned", "--mode", "b"][..], "mode"),
    ] {
        let o = run(&data, args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("INSTANCE_OPTIONS_DIFFER"), "{err}");
        assert!(err.contains(&format!("differ: {differ}")), "{err}");
        assert!(
            !err.contains("other-secret") && !err.contains("s3cr3t"),
            "{err}"
        );
    }
    let ls = json(&run(&data, &["instance", "ls", "--json"]));
    let all = ls.as_array().expect("a list");
    assert_eq!(all.len(), 1, "{ls}");
    assert_eq!(all[0]["options"]["level"], "high");
    assert_eq!(all[0]["mode"], "a");
}
