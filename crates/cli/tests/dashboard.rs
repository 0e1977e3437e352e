//! The dashboard in a real browser: `tests/browser/dashboard.mjs` drives
//! Debian's Chromium through Playwright (`playwright-core` from npm) against
//! a real daemon, logging in with the URL `hangar dashboard` prints. Here the
//! daemon is started, the script run, and what it left behind checked: the
//! instance it deleted is gone with its process, and the process the refused
//! requests tried to stop still runs. `.ci/run` installs Chromium and
//! playwright-core and names the package in `$HANGAR_TEST_PLAYWRIGHT`; where
//! either is missing the test says so and skips the browser part (the login
//! URL, `status`'s address and the hand-off to `$BROWSER` are checked
//! first, everywhere).
//!
//! Screenshots of every page go to `CARGO_TARGET_TMPDIR/dashboard-screenshots`
//! (kept after the run: they are the test's artifacts).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{free_port, hangar, json, run, stdout, wait_for, Scratch, Served, LONG};
use serde_json::{json, Value};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/dashboard.mjs");

fn chromium() -> PathBuf {
    std::env::var_os("HANGAR_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// The playwright-core package, or why the test cannot run.
fn playwright() -> Result<PathBuf, String> {
    let Some(p) = std::env::var_os("HANGAR_TEST_PLAYWRIGHT") else {
        return Err(
            "HANGAR_TEST_PLAYWRIGHT does not name playwright-core (.ci/run installs it from npm)"
                .into(),
        );
    };
    let p = PathBuf::from(p);
    if !p.join("package.json").exists() {
        return Err(format!(
            "{} is not the playwright-core package",
            p.display()
        ));
    }
    if !chromium().exists() {
        return Err(format!(
            "{} is missing (apt-get install chromium; .ci/run does)",
            chromium().display()
        ));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Err("node is missing".into());
    }
    Ok(p)
}

/// The demo feature as the built-in catalog has it, and `democonf`: the demo
/// with options of every kind a form draws differently, and a config file
/// that shows them (the secret too, to prove it is masked).
fn catalog(dir: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../catalog/demo");
    for id in ["demo", "democonf"] {
        let f = dir.join(id).join("releases");
        std::fs::create_dir_all(&f).unwrap();
        for e in std::fs::read_dir(src.join("releases")).unwrap().flatten() {
            std::fs::copy(e.path(), f.join(e.file_name())).unwrap();
        }
    }
    std::fs::copy(src.join("manifest.json"), dir.join("demo/manifest.json")).unwrap();
    let mut m: Value =
        serde_json::from_slice(&std::fs::read(src.join("manifest.json")).unwrap()).unwrap();
    let o = m.as_object_mut().unwrap();
    o.remove("$schema");
    o.insert("id".into(), json!("democonf"));
    o.insert("name".into(), json!("Configurable demo"));
    o.insert(
        "config".into(),
        json!({"generator": "template", "template": "demo.conf.j2", "options": {
            "greeting": {"type": "string", "default": "hello", "description": "What it says", "max_length": 64},
            "style": {"type": "enum", "enum": ["plain", "fancy"], "default": "plain", "description": "How it says it"},
            "verbose": {"type": "boolean", "default": false, "description": "Say more"},
            "token": {"type": "string", "secret": true, "description": "A key it never shows"},
            "admin_port": {"type": "port", "description": "Where an admin would connect"},
            "workers": {"type": "integer", "minimum": 1, "maximum": 8, "default": 2}
        }}),
    );
    std::fs::write(
        dir.join("democonf/manifest.json"),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("democonf/demo.conf.j2"),
        "greeting {{ options.greeting }}\nstyle {{ options.style }}\nverbose {{ options.verbose }}\n\
         token {{ options.token }}\nworkers {{ options.workers }}\n",
    )
    .unwrap();
}

#[test]
fn the_dashboard_in_chromium_installs_creates_follows_and_deletes() {
    let s = Scratch::new("dashboard");
    let data = s.path().join("data");
    let cat = s.path().join("catalog");
    catalog(&cat);
    let cfg = s.path().join("hangar.toml");
    std::fs::write(
        &cfg,
        format!(
            "[daemon]\nport_range = \"23250-23269\"\n[daemon.instances]\ncatalog = [{:?}]\n\n\
             [[process]]\nname = \"talker\"\ncommand = \"sh\"\n\
             args = [\"-c\", \"i=0; while true; do i=$((i+1)); echo tick $i; sleep 1; done\"]\n",
            cat.display().to_string()
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let _d = Served::start_http(&data, &addr, &["-c", cfg.to_str().unwrap()]);

    // `hangar dashboard` prints the login URL (no browser to open here).
    let o = hangar()
        .arg("--data-dir")
        .arg(&data)
        .args(["dashboard", "--no-open"])
        .env_remove("BROWSER")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let url = stdout(&o).trim().to_string();
    let token = std::fs::read_to_string(data.join("api.token")).unwrap();
    assert_eq!(
        url,
        format!("http://{addr}/login?token={}", token.trim()),
        "the login URL"
    );
    // The status names the listener too.
    let st = json(&run(&data, &["status", "--json"]));
    assert_eq!(st["http_addr"], json!(addr));
    // Without --no-open, the URL goes to $BROWSER.
    let opened = s.path().join("opened");
    let browser = s.path().join("browser.sh");
    std::fs::write(
        &browser,
        format!("#!/bin/sh\nprintf '%s' \"$1\" > {}\n", opened.display()),
    )
    .unwrap();
    std::fs::set_permissions(
        &browser,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let o = hangar()
        .arg("--data-dir")
        .arg(&data)
        .arg("dashboard")
        .env("BROWSER", &browser)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    assert!(
        wait_for(LONG, || std::fs::read_to_string(&opened)
            .is_ok_and(|u| u == url)),
        "$BROWSER was not given the URL: {:?}",
        std::fs::read_to_string(&opened)
    );

    let pw = match playwright() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("skipped the browser part: {why}");
            return;
        }
    };

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let o = Command::new("node")
        .arg(SCRIPT)
        .env("HANGAR_PLAYWRIGHT", &pw)
        .env("HANGAR_LOGIN_URL", &url)
        .env("HANGAR_SHOTS", &shots)
        .env("HANGAR_CHROMIUM", chromium())
        .output()
        .expect("node runs");
    assert!(
        o.status.success(),
        "the browser test failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    let seen: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "the browser test printed no JSON ({e}): {}",
            String::from_utf8_lossy(&o.stdout)
        )
    });
    println!("the browser saw: {seen}");
    assert_eq!(seen["foreign_origin"]["code"], "FOREIGN_ORIGIN");
    assert_eq!(seen["no_token"]["code"], "UNAUTHENTICATED");
    assert_eq!(seen["steps"].as_array().map(Vec::len), Some(6));
    for page in [
        "processes",
        "catalog",
        "instance-form",
        "instance",
        "logs",
        "events",
        "processes-phone",
        "graphiql",
        "login",
    ] {
        let p = shots.join(format!("{page}.png"));
        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(len > 1000, "no screenshot of {page} at {}", p.display());
    }

    // What the browser did is what the daemon did: the instance is gone with
    // its process, demo is installed, and talker, which the refused requests
    // tried to stop, still runs.
    let inst = json(&run(&data, &["instance", "ls", "--json"]));
    assert_eq!(inst, json!([]), "an instance was left");
    assert!(
        wait_for(LONG, || {
            let ps = json(&run(&data, &["ps", "--json"]));
            let names: Vec<&str> = ps
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["name"].as_str())
                .collect();
            names == ["talker"]
        }),
        "processes left: {}",
        stdout(&run(&data, &["ps"]))
    );
    let ps = json(&run(&data, &["ps", "--json"]));
    assert_eq!(ps[0]["state"], "running", "{ps}");
    assert_eq!(ps[0]["restarts"], 0, "{ps}");
    let installed = stdout(&run(&data, &["installed"]));
    assert!(installed.contains("demo"), "{installed}");
}
