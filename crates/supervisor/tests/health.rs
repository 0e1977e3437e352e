//! Probes, ports and dependencies against real servers on loopback.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use hangar_supervisor::{
    Check, Condition, EventKind, Health, Manager, ManagerOptions, ProbeSpec, ProcessSpec,
    RestartMode, RestartPolicy, State,
};

/// A manager with a port range of its own, so tests running in parallel never
/// hand out the same port.
fn manager(slot: u16) -> Manager {
    let base = 42000 + (std::process::id() % 40) as u16 * 400 + slot * 20;
    Manager::with_options(ManagerOptions {
        port_range: base..=base + 19,
        ..ManagerOptions::default()
    })
    .unwrap()
}

fn fast(check: Check) -> ProbeSpec {
    ProbeSpec {
        check,
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(500),
        failure_threshold: 2,
        ..ProbeSpec::default()
    }
}

fn http_check(path: &str) -> Check {
    Check::Http {
        url: format!("http://127.0.0.1:{{port.http}}{path}"),
        status: None,
        headers: BTreeMap::new(),
        body_contains: None,
    }
}

/// A Python HTTP server on $HANGAR_PORT_HTTP that answers 200 to the first
/// `healthy_for` requests and 500 afterwards, after an optional start delay.
fn py_server(name: &str, delay: &str, healthy_for: u32) -> ProcessSpec {
    let code = format!(
        r#"
import http.server, os, time
time.sleep({delay})
n = 0
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global n
        n += 1
        code = 200 if n <= {healthy_for} else 500
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"hello from hangar test")
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["HANGAR_PORT_HTTP"])), H).serve_forever()
"#
    );
    let mut spec = ProcessSpec::new(name, "python3").args(["-c", &code]);
    spec.ports = vec!["http".into()];
    spec.stop_timeout = Duration::from_secs(2);
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_gates_running() {
    let m = manager(0);
    let mut spec = py_server("web", "0.5", 1_000_000);
    let mut probe = fast(http_check("/"));
    probe.check = Check::Http {
        url: "http://127.0.0.1:{port.http}/".into(),
        status: Some(200),
        headers: [("X-Probe".to_string(), "1".to_string())].into(),
        body_contains: Some("hello".into()),
    };
    spec.readiness = Some(probe);
    let mut rx = m.subscribe();
    let t = Instant::now();
    let pid = m.start(spec).await.unwrap();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(500),
        "running before the server listened: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    let st = m.status("web").unwrap();
    assert_eq!(st.state, State::Running);
    assert_eq!(st.pid, Some(pid));
    assert_eq!(st.health.status, Health::Healthy);
    assert!(st.health.last_check.is_some() && st.health.response_time.is_some());
    // Starting lasted the whole wait; Running came after a healthy event.
    let mut seen = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        match ev.kind {
            EventKind::State { to, .. } => seen.push(to.to_string()),
            EventKind::Health { to, .. } => seen.push(format!("health:{to}")),
            _ => {}
        }
    }
    assert_eq!(seen, ["starting", "health:healthy", "running"], "{seen:?}");
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_failure_restarts_through_the_policy() {
    let m = manager(1);
    let mut spec = py_server("flaky-web", "0", 3);
    spec.liveness = Some(fast(http_check("/")));
    spec.restart = RestartPolicy {
        policy: RestartMode::OnFailure,
        initial_interval: Duration::from_millis(100),
        max_retries: 1,
        jitter: 0.0,
        ..RestartPolicy::default()
    };
    let mut rx = m.subscribe();
    let first = m.start(spec).await.unwrap();
    // 3 good answers, then 500s: degraded, unhealthy, stopped, restarted.
    let ev = wait_state(&mut rx, "flaky-web", State::Backoff).await;
    match ev.kind {
        EventKind::State { error, .. } => {
            let e = error.unwrap();
            assert_eq!(e.code(), "HEALTH_CHECK_FAILED");
            assert!(e.message().contains("status 500"), "{e}");
        }
        _ => unreachable!(),
    }
    let ev = wait_state(&mut rx, "flaky-web", State::Running).await;
    assert_ne!(ev.pid, Some(first));
    // The second failure opens the circuit (max_retries = 1).
    let ev = wait_state(&mut rx, "flaky-web", State::Failed).await;
    match ev.kind {
        EventKind::State { error, .. } => assert_eq!(error.unwrap().code(), "MAX_ERRORS_EXCEEDED"),
        _ => unreachable!(),
    }
    let st = m.status("flaky-web").unwrap();
    assert_eq!(st.restarts, 1);
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_never_gets_ready_and_times_out() {
    let m = manager(2);
    let mk = marker();
    let mut spec = never("deaf", "sleep", &[&mk]);
    spec.ports = vec!["http".into()];
    spec.readiness = Some(fast(Check::Tcp {
        address: "127.0.0.1:{port.http}".into(),
    }));
    spec.start_timeout = Duration::from_millis(600);
    let mut rx = m.subscribe();
    let t = Instant::now();
    let err = m.start(spec).await.unwrap_err();
    assert!(t.elapsed() >= Duration::from_millis(600));
    assert_eq!(err.code(), "READINESS_TIMEOUT", "{err}");
    let st = m.status("deaf").unwrap();
    assert_eq!(st.state, State::Exited, "policy never: not restarted");
    assert!(eventually(Duration::from_secs(2), || pids_with(&mk).is_empty()).await);
    // Not being up yet is not unhealthy: no health change was announced.
    while let Ok(ev) = rx.try_recv() {
        assert!(!matches!(ev.kind, EventKind::Health { .. }), "{ev:?}");
    }
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_probes_time_out_and_leave_nothing_behind() {
    let m = manager(3);
    let mk = marker();
    let probe_mk = marker().replace("3600", "3599");
    let mut spec = never("exec-slow", "sleep", &[&mk]);
    let mut probe = fast(Check::Exec {
        command: vec!["sleep".into(), probe_mk.clone()],
    });
    probe.timeout = Duration::from_millis(200);
    spec.liveness = Some(probe);
    // Liveness failures before a first success are tolerated this long.
    spec.start_timeout = Duration::from_millis(300);
    let mut rx = m.subscribe();
    m.start(spec).await.unwrap();
    let ev = wait_state(&mut rx, "exec-slow", State::Exited).await;
    match ev.kind {
        EventKind::State { error, .. } => {
            let e = error.unwrap();
            assert_eq!(e.code(), "HEALTH_CHECK_FAILED");
            assert!(e.message().contains("timed out"), "{e}");
        }
        _ => unreachable!(),
    }
    assert!(
        eventually(Duration::from_secs(2), || pids_with(&probe_mk).is_empty()).await,
        "probe commands left running: {:?}",
        pids_with(&probe_mk)
    );

    // An exec readiness probe that passes once a file appears.
    let flag = std::env::temp_dir().join(format!("hangar-ready-{}", std::process::id()));
    let _ = std::fs::remove_file(&flag);
    let mut spec = never("exec-ready", "sleep", &[&mk]);
    spec.readiness = Some(fast(Check::Exec {
        command: vec!["test".into(), "-f".into(), flag.display().to_string()],
    }));
    let m2 = m.clone();
    let starting = tokio::spawn(async move { m2.start(spec).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(m.status("exec-ready").unwrap().state, State::Starting);
    std::fs::write(&flag, "").unwrap();
    starting.await.unwrap().unwrap();
    assert_eq!(m.status("exec-ready").unwrap().state, State::Running);
    let _ = std::fs::remove_file(&flag);
    m.shutdown().await;
    assert!(eventually(Duration::from_secs(2), || pids_with(&mk).is_empty()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_all_and_any() {
    let m = manager(4);
    let mk = marker();
    // A port nobody listens on: a listener bound then dropped.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let tcp_closed = Check::Tcp {
        address: closed.to_string(),
    };
    let mut any = never("any", "sleep", &[&mk]);
    any.readiness = Some(fast(Check::Any(vec![tcp_closed.clone(), Check::Process])));
    m.start(any).await.unwrap();
    assert_eq!(m.status("any").unwrap().health.status, Health::Healthy);

    let mut all = never("all", "sleep", &[&mk]);
    all.readiness = Some(fast(Check::All(vec![tcp_closed, Check::Process])));
    all.start_timeout = Duration::from_millis(400);
    let err = m.start(all).await.unwrap_err();
    assert_eq!(err.code(), "READINESS_TIMEOUT");
    let h = m.status("all").unwrap().health;
    // The health of a process that is gone is reset; the failing reason was in the
    // probe error while it ran.
    assert_eq!(h.status, Health::Unknown);
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_are_allocated_given_and_released() {
    let m = manager(5);
    let mk = marker();
    let mut spec = never(
        "ported",
        "sh",
        &["-c", &format!("echo $HANGAR_PORT_HTTP $HANGAR_PORT_ADMIN $HEALTH_PORT {{port.admin}}; exec sleep {mk}")],
    );
    spec.args[1] = format!(
        "echo $HANGAR_PORT_HTTP $HANGAR_PORT_ADMIN $HEALTH_PORT {{port.admin}} $X; exec sleep {mk}"
    );
    spec.ports = vec!["http".into(), "admin".into()];
    spec.health_port = true;
    spec.env.insert("X".into(), "x{port.http}".into());
    spec.restart.policy = RestartMode::Always;
    spec.restart.initial_interval = Duration::ZERO;
    m.start(spec).await.unwrap();
    let st = m.status("ported").unwrap();
    assert_eq!(st.ports.len(), 2);
    let (http, admin) = (st.ports[0].1, st.ports[1].1);
    assert_ne!(http, admin);
    assert_eq!(m.ports().ports_of("ported"), vec![http, admin]);
    assert!(
        eventually(Duration::from_secs(2), || !m
            .tail("ported", 1)
            .unwrap()
            .is_empty())
        .await
    );
    assert_eq!(
        m.tail("ported", 1).unwrap()[0].text,
        format!("{http} {admin} {http} {admin} x{http}")
    );
    // Kept across restarts.
    let mut rx = m.subscribe();
    rustix::process::kill_process_group(
        rustix::process::Pid::from_raw(st.pid.unwrap() as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    wait_state(&mut rx, "ported", State::Running).await;
    assert_eq!(m.status("ported").unwrap().ports, st.ports);
    // Released on removal.
    m.remove("ported", None).await.unwrap();
    assert!(m.ports().ports_of("ported").is_empty());
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_gate_start_and_order_stop() {
    let m = manager(6);
    let mut rx = m.subscribe();
    let mut web = py_server("web", "0.3", 1_000_000);
    web.readiness = Some(fast(http_check("/")));
    let mk = marker();
    let mut client = never("client", "sleep", &[&mk]);
    client.depends_on.insert("web".into(), Condition::Healthy);
    // Start the dependent first: it must wait.
    let m2 = m.clone();
    let client_start = tokio::spawn(async move { m2.start(client).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(m.status("client").unwrap().state, State::Waiting);
    m.start(web).await.unwrap();
    client_start.await.unwrap().unwrap();
    let mut order = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        if let EventKind::State { to, .. } = ev.kind {
            order.push(format!("{}:{to}", ev.name));
        }
    }
    let web_running = order.iter().position(|s| s == "web:running").unwrap();
    let client_starting = order.iter().position(|s| s == "client:starting").unwrap();
    assert!(web_running < client_starting, "{order:?}");

    // A cycle is refused.
    let mut a = never("cyc-a", "true", &[]);
    a.depends_on.insert("cyc-b".into(), Condition::Started);
    let mut b = never("cyc-b", "true", &[]);
    b.depends_on.insert("cyc-a".into(), Condition::Started);
    let m3 = m.clone();
    let a_start = tokio::spawn(async move { m3.start(a).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let err = m.start(b).await.unwrap_err();
    assert_eq!(err.code(), "DEPENDENCY_CYCLE", "{err}");
    m.stop("cyc-a", None).await.unwrap();
    let _ = a_start.await;

    // Restarting the dependency does not disturb the running dependent.
    let client_pid = m.status("client").unwrap().pid;
    m.restart("web").await.unwrap();
    assert_eq!(m.status("client").unwrap().pid, client_pid);

    // Shutdown stops the dependent before its dependency.
    let mut rx = m.subscribe();
    m.shutdown().await;
    let mut stopped = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        if let EventKind::State {
            to: State::Stopped, ..
        } = ev.kind
        {
            stopped.push(ev.name.to_string());
        }
    }
    let c = stopped.iter().position(|n| n == "client").unwrap();
    let w = stopped.iter().position(|n| n == "web").unwrap();
    assert!(c < w, "{stopped:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_successfully_and_broken_dependencies() {
    let m = manager(7);
    let mk = marker();
    let mut main = never("main", "sleep", &[&mk]);
    main.depends_on
        .insert("init".into(), Condition::CompletedSuccessfully);
    let m2 = m.clone();
    let main_start = tokio::spawn(async move { m2.start(main).await });
    m.start(never("init", "sh", &["-c", "sleep 0.2; exit 0"]))
        .await
        .unwrap();
    main_start.await.unwrap().unwrap();
    assert_eq!(m.status("main").unwrap().state, State::Running);

    let mut main2 = never("main2", "sleep", &[&mk]);
    main2
        .depends_on
        .insert("init2".into(), Condition::CompletedSuccessfully);
    let m3 = m.clone();
    let main2_start = tokio::spawn(async move { m3.start(main2).await });
    m.start(never("init2", "sh", &["-c", "exit 4"]))
        .await
        .unwrap();
    let err = main2_start.await.unwrap().unwrap_err();
    assert_eq!(err.code(), "DEPENDENCY_FAILED", "{err}");
    assert!(err.message().contains("exit code 4"), "{err}");
    assert_eq!(m.status("main2").unwrap().state, State::Failed);
    m.shutdown().await;
    assert!(eventually(Duration::from_secs(2), || pids_with(&mk).is_empty()).await);
}
