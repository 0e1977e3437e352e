//! The exec transport against real child processes: the Python plugin from
//! docs/plugin-protocol.md (extracted from the document at test time) run by
//! the library over stdin/stdout; restarted after it is killed from outside;
//! calls in flight when it dies fail retryably; close kills its process group
//! and is idempotent.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hangar_plugin::exec::{ExecClient, ExecOptions};
use hangar_plugin::{CallContext, CallKind, ErrorKind, Transport, TransportExt};
use serde_json::json;

fn python_plugin(dir: &Path) -> Option<PathBuf> {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/plugin-protocol.md"
    ))
    .expect("read the protocol doc");
    let start = doc.find("```python\n").expect("a python block") + "```python\n".len();
    let end = start + doc[start..].find("```").expect("end of block");
    let script = dir.join("plugin.py");
    std::fs::write(&script, &doc[start..end]).expect("write script");
    let ok = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("skipping: python3 is not available");
        return None;
    }
    Some(script)
}

fn opts(script: &Path) -> ExecOptions {
    let mut o = ExecOptions::new("python3");
    o.args = vec![script.display().to_string()];
    o.env = vec!["PYTHONUNBUFFERED=1".into()];
    o.restart_initial = Duration::from_millis(50);
    o
}

fn ctx(ms: u64) -> CallContext {
    CallContext::with_timeout(Duration::from_millis(ms))
}

fn alive(pid: u32) -> bool {
    // A zombie is dead for our purpose.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_plugin_answers_every_request_type() {
    let dir = tempfile::tempdir().expect("tmp");
    let Some(script) = python_plugin(dir.path()) else {
        return;
    };
    let c = ExecClient::start(opts(&script)).await.expect("start");
    let mut cx = ctx(20_000);
    cx.request_id = "ex-1".into();
    let r = c
        .call(CallKind::Execute, json!({ "hello": "world" }), cx)
        .await
        .expect("execute");
    assert_eq!(
        r,
        json!({ "echo": { "hello": "world" }, "request_id": "ex-1" })
    );
    c.ping(Duration::from_secs(20)).await.expect("ping");
    c.health(Duration::from_secs(20)).await.expect("health");
    let info = c.info(Duration::from_secs(20)).await.expect("info");
    assert_eq!(info["name"], "py-echo");
    assert_eq!(info["pid"], json!(c.pid().expect("pid")));
    let e = c
        .call(CallKind::Execute, json!({ "fail": true }), ctx(20_000))
        .await
        .expect_err("fails");
    assert_eq!(e.code(), "PLUGIN_1203");
    let e = c
        .call(CallKind::Execute, json!({ "sleep_ms": 3000 }), ctx(300))
        .await
        .expect_err("slow");
    assert_eq!(e.kind, ErrorKind::Timeout);
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_killed_from_outside_is_restarted_and_calls_in_flight_fail_retryably() {
    let dir = tempfile::tempdir().expect("tmp");
    let Some(script) = python_plugin(dir.path()) else {
        return;
    };
    let c = ExecClient::start(opts(&script)).await.expect("start");
    c.ping(Duration::from_secs(20)).await.expect("first ping");
    let first = c.pid().expect("pid");
    let inflight = {
        let c = c.clone();
        tokio::spawn(async move {
            c.call(
                CallKind::Execute,
                json!({ "sleep_ms": 20_000 }),
                ctx(30_000),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    std::process::Command::new("kill")
        .args(["-KILL", &first.to_string()])
        .status()
        .expect("kill");
    let e = inflight.await.expect("join").expect_err("the child died");
    assert_eq!(e.kind, ErrorKind::ExecTransport);
    assert_eq!(e.code(), "TRANSPORT_1304");
    assert!(e.is_retryable());

    // The next call waits for the new process and succeeds.
    let r = c
        .call(CallKind::Execute, json!("again"), ctx(30_000))
        .await
        .expect("after restart");
    assert_eq!(r["echo"], "again");
    let second = c.pid().expect("new pid");
    assert_ne!(first, second);
    assert!(c.restarts() >= 1);
    assert!(!alive(first));
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_kills_the_process_group_and_is_idempotent() {
    let dir = tempfile::tempdir().expect("tmp");
    // A plugin that leaves a grandchild behind in its group: close must take
    // it too. The shell execs python after starting `sleep` in the background.
    let Some(script) = python_plugin(dir.path()) else {
        return;
    };
    let pidfile = dir.path().join("grandchild.pid");
    let mut o = ExecOptions::new("sh");
    o.args = vec![
        "-c".into(),
        format!(
            "sleep 300 & echo $! > {}; exec python3 {}",
            pidfile.display(),
            script.display()
        ),
    ];
    o.stop_grace = Duration::from_millis(500);
    let c = ExecClient::start(o).await.expect("start");
    c.ping(Duration::from_secs(20)).await.expect("ping");
    let pid = c.pid().expect("pid");
    let grandchild: u32 = std::fs::read_to_string(&pidfile)
        .expect("pidfile")
        .trim()
        .parse()
        .expect("pid");
    assert!(alive(pid) && alive(grandchild));
    c.close().await;
    c.close().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while (alive(pid) || alive(grandchild)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(pid), "the plugin survived close");
    assert!(!alive(grandchild), "its process group survived close");
    assert_eq!(c.pid(), None);
    let e = c
        .call(CallKind::Ping, json!(null), ctx(1000))
        .await
        .expect_err("closed");
    assert_eq!(e.kind, ErrorKind::ExecTransport);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_executable_is_refused_at_start() {
    let e = ExecClient::start(ExecOptions::new("/nonexistent/plugin"))
        .await
        .expect_err("no such program");
    assert_eq!(e.code(), "PLUGIN_1007");
    let mut o = ExecOptions::new("true");
    o.env = vec!["NOEQUALS".into()];
    assert_eq!(
        ExecClient::start(o).await.expect_err("bad env").code(),
        "PLUGIN_1011"
    );
}

/// The Rust side of the protocol: the `echo_exec` example is a plugin built
/// with `exec::serve_stdio`. `cargo test` builds examples next to the test
/// binaries; when it is not there (a filtered build), say so and skip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_plugin_built_with_serve_stdio() {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent()?.parent().map(|d| d.join("examples/echo_exec")));
    let Some(exe) = exe.filter(|p| p.exists()) else {
        eprintln!(
            "skipping: the echo_exec example is not built (run `cargo test -p hangar-plugin`)"
        );
        return;
    };
    let c = ExecClient::start(ExecOptions::new(&exe))
        .await
        .expect("start");
    let mut cx = ctx(20_000);
    cx.request_id = "rs-1".into();
    let r = c
        .call(CallKind::Execute, json!({ "n": 7 }), cx)
        .await
        .expect("execute");
    assert_eq!(r["echo"], json!({ "n": 7 }));
    assert_eq!(r["request_id"], "rs-1");
    assert_eq!(r["pid"], json!(c.pid().expect("pid")));
    assert_eq!(
        c.info(Duration::from_secs(20)).await.expect("info")["transport"],
        "exec"
    );
    let pid = c.pid().expect("pid");
    c.close().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(pid), "the plugin exits when closed");
}
