//! `hangar plugin call` and `hangar plugin ls` as the real binary against real
//! Unix-socket plugins served by this test (with the library's server SDK):
//! answers as JSON, errors with their codes and exit codes, every
//! configuration error listed, group calls, and the health listing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Instant;

use hangar_plugin::unix;
use hangar_plugin::{Call, Handler};
use serde_json::{json, Value};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "hangar-plugin-{tag}-{}-{}",
            std::process::id(),
            Instant::now().elapsed().subsec_nanos()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Echo(&'static str);

impl Handler for Echo {
    async fn execute(&self, req: Call) -> Result<Value, String> {
        if req.data.get("fail").is_some() {
            return Err("refusing on purpose".into());
        }
        Ok(json!({ "from": self.0, "echo": req.data }))
    }

    fn info(&self) -> Value {
        json!({ "name": self.0, "version": "0.1.0" })
    }
}

/// Plugins served on a runtime of their own while the binary runs.
fn serve(dir: &Path, names: &[&'static str]) -> tokio::runtime::Runtime {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    for n in names {
        let path = dir.join(format!("{n}.sock"));
        let h = rt.block_on(unix::serve(&path, Arc::new(Echo(n)))).unwrap();
        // It serves until the runtime is dropped.
        rt.spawn(h.wait());
    }
    rt
}

fn hangar(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hangar"))
        .env_remove("HANGAR_LOG")
        .args(args)
        .output()
        .expect("run hangar")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn yaml_config(dir: &Path) -> PathBuf {
    let p = dir.join("plugins.yaml");
    let d = dir.display();
    std::fs::write(
        &p,
        format!(
            "default_retry:\n  max_retries: 1\n  initial_interval: 10ms\n\
             default_connection:\n  request_timeout: 2s\n\
             plugins:\n\
             \x20 - name: alpha\n    type: echo\n    transport: unix\n    endpoint: {d}/alpha.sock\n\
             \x20 - name: beta\n    type: echo\n    transport: unix\n    endpoint: {d}/beta.sock\n\
             \x20 - name: ghost\n    transport: unix\n    endpoint: {d}/ghost.sock\n\
             \x20 - name: off\n    transport: unix\n    endpoint: {d}/off.sock\n    enabled: false\n"
        ),
    )
    .unwrap();
    p
}

#[test]
fn call_prints_the_answer_as_json_and_errors_with_codes() {
    let t = TempDir::new("call");
    let _rt = serve(&t.0, &["alpha", "beta"]);
    let cfg = yaml_config(&t.0);
    let cfg = cfg.to_str().unwrap();

    let o = hangar(&[
        "plugin",
        "call",
        "--config",
        cfg,
        "alpha",
        "--data",
        r#"{"x": 1}"#,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v, json!({"from": "alpha", "echo": {"x": 1}}));

    // A group: balanced over alpha and beta.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..2 {
        let o = hangar(&["plugin", "call", "-c", cfg, "echo", "-d", "{}"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        seen.insert(v["from"].as_str().unwrap().to_string());
    }
    assert!(!seen.is_empty());

    let o = hangar(&[
        "plugin",
        "call",
        "-c",
        cfg,
        "alpha",
        "-d",
        r#"{"fail": true}"#,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("error[PLUGIN_1203]"), "{}", stderr(&o));
    assert!(stderr(&o).contains("refusing on purpose"), "{}", stderr(&o));

    let o = hangar(&["plugin", "call", "-c", cfg, "ghost"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("error[PLUGIN_1205]"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("hint: is the plugin running?"),
        "{}",
        stderr(&o)
    );

    let o = hangar(&["plugin", "call", "-c", cfg, "off"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("error[PLUGIN_1202]"), "{}", stderr(&o));

    let o = hangar(&["plugin", "call", "-c", cfg, "nobody"]);
    assert_eq!(o.status.code(), Some(4));
    assert!(stderr(&o).contains("error[PLUGIN_1201]"), "{}", stderr(&o));

    let o = hangar(&["plugin", "call", "-c", cfg, "alpha", "-d", "{not json"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stdout(&o).is_empty());
}

#[test]
fn an_invalid_configuration_lists_every_error_and_exits_2() {
    let t = TempDir::new("invalid");
    let p = t.0.join("bad.json");
    std::fs::write(
        &p,
        r#"{"plugins": [
            {"name": "a b", "transport": "unix", "endpoint": "/x.sock"},
            {"name": "k", "transport": "unix", "endpoint": "/k.sock", "auth": {"method": "bearer"}}
        ]}"#,
    )
    .unwrap();
    let o = hangar(&["plugin", "call", "-c", p.to_str().unwrap(), "k"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("has 2 problem(s)"), "{e}");
    assert!(e.contains("PLUGIN_1001 at plugins[0].name"), "{e}");
    assert!(e.contains("AUTH_1102 at plugins[1].auth.token"), "{e}");
    assert!(e.contains("hint: set auth.token"), "{e}");

    std::fs::write(&p, "{").unwrap();
    let o = hangar(&["plugin", "ls", "-c", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("PLUGIN_1011"), "{}", stderr(&o));
}

#[test]
fn ls_shows_every_plugin_with_its_health() {
    let t = TempDir::new("ls");
    let _rt = serve(&t.0, &["alpha", "beta"]);
    let cfg = yaml_config(&t.0);
    let cfg = cfg.to_str().unwrap();

    let o = hangar(&["plugin", "ls", "--config", cfg]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{out}");
    let row = |name: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {out}"))
            .to_string()
    };
    assert!(row("alpha").contains("healthy"), "{out}");
    assert!(row("beta").contains("healthy"), "{out}");
    assert!(row("ghost").contains("degraded"), "{out}");
    assert!(row("off").contains("disabled"), "{out}");
    assert!(out.contains("overall: degraded"), "{out}");

    let o = hangar(&["plugin", "ls", "--config", cfg, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let ps = v["plugins"].as_array().unwrap();
    assert_eq!(ps.len(), 4);
    assert_eq!(ps[0]["name"], "alpha");
    assert_eq!(ps[0]["health"]["status"], "healthy");
    assert_eq!(ps[0]["group"], "echo");
    assert_eq!(ps[1]["circuit"], "closed");
    assert_eq!(ps[2]["name"], "ghost");
    assert_eq!(ps[2]["health"]["metadata"]["code"], "HEALTH_1601");
    assert_eq!(v["overall"]["status"], "degraded");
}
