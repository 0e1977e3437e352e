//! Probe costs, measured on the real thing.
//!
//! `cargo run --release -p hangar-supervisor --example probe_bench -- [--n 1000] [--secs 30] [--starts 100]`
//!
//! 1. CPU: N `sleep` processes, each with an HTTP liveness probe every second
//!    against a keep-alive HTTP server running in a separate process (so its CPU is
//!    not counted). The supervisor's own CPU (getrusage of this process) is
//!    measured over `--secs`, and compared with the same N processes without
//!    probes in the same run.
//! 2. Readiness latency: `--starts` times, a process that binds its port after a
//!    random 0–200 ms prints the wall-clock time of its listen(); the time from
//!    there to the Running event (readiness: TCP probe) is the latency.
//!
//! Prints one JSON line. Run as any user; traffic stays on 127.0.0.1.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hangar_supervisor::{
    Check, EventKind, Manager, ManagerOptions, ProbeSpec, ProcessSpec, RestartMode, RestartPolicy,
    State,
};

/// CPU time of this process, all threads (utime + stime from /proc, 100 Hz ticks).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    // After the command name: state is field 3, utime 14, stime 15 (1-based).
    let tick = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(14) + tick(15)) / 100.0
}

/// `--serve`: a minimal keep-alive HTTP/1.1 server, one thread per connection.
fn serve() -> ! {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    println!("{}", l.local_addr().expect("addr").port());
    std::io::stdout().flush().ok();
    for conn in l.incoming().flatten() {
        std::thread::spawn(move || {
            let mut conn = conn;
            let mut buf = [0u8; 4096];
            let mut pending = Vec::new();
            loop {
                let n = match conn.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                pending.extend_from_slice(&buf[..n]);
                while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                    pending.drain(..end + 4);
                    let resp = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if conn.write_all(resp).is_err() {
                        return;
                    }
                }
            }
        });
    }
    std::process::exit(0)
}

/// `--listen-after MS PORT`: sleep, listen, print the listen time, accept forever.
fn listen_after(ms: u64, port: u16) -> ! {
    std::thread::sleep(Duration::from_millis(ms));
    let l = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    println!("{}", now.as_nanos());
    std::io::stdout().flush().ok();
    for c in l.incoming() {
        drop(c);
    }
    std::process::exit(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    if args.iter().any(|a| a == "--serve") {
        serve();
    }
    if let Some(ms) = arg("--listen-after") {
        let port = args.last().and_then(|p| p.parse().ok()).unwrap_or(0);
        listen_after(ms.parse().unwrap_or(0), port);
    }
    let n: u32 = arg("--n").and_then(|v| v.parse().ok()).unwrap_or(1000);
    let secs: u64 = arg("--secs").and_then(|v| v.parse().ok()).unwrap_or(30);
    let starts: u32 = arg("--starts").and_then(|v| v.parse().ok()).unwrap_or(100);
    let kind = arg("--check").cloned().unwrap_or_else(|| "http".into());
    let me = std::env::current_exe().expect("own path");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        // The server, outside the supervisor's CPU accounting.
        let mut server = std::process::Command::new(&me)
            .arg("--serve")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("server");
        let mut line = String::new();
        {
            use std::io::BufRead;
            let out = server.stdout.take().expect("stdout");
            std::io::BufReader::new(out).read_line(&mut line).expect("port");
        }
        let port: u16 = line.trim().parse().expect("port number");

        let always = RestartPolicy {
            policy: RestartMode::Always,
            initial_interval: Duration::ZERO,
            ..RestartPolicy::default()
        };
        let measure = |m: Manager, label: &'static str| async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let c0 = cpu_seconds();
            let t0 = Instant::now();
            tokio::time::sleep(Duration::from_secs(secs)).await;
            let pct = (cpu_seconds() - c0) / t0.elapsed().as_secs_f64() * 100.0;
            let healthy = m
                .status_all("*")
                .map(|v| v.iter().filter(|s| s.health.status == hangar_supervisor::Health::Healthy).count())
                .unwrap_or(0);
            m.shutdown().await;
            eprintln!("{label}: {pct:.2}% of a core, {healthy} healthy");
            (pct, healthy)
        };

        // Baseline: N processes, no probes.
        let m = Manager::new().expect("manager");
        let mut spec = ProcessSpec::new("plain", "sleep").args(["3600"]).restart(always);
        spec.instances = n;
        assert!(m.start_n(spec).await.iter().all(|(_, r)| r.is_ok()));
        let (idle_pct, _) = measure(m, "no probes").await;

        // N processes, an HTTP liveness probe each, every second.
        let m = Manager::new().expect("manager");
        let mut spec = ProcessSpec::new("probed", "sleep").args(["3600"]).restart(always);
        spec.instances = n;
        let check = match kind.as_str() {
            "process" => Check::Process,
            "tcp" => Check::Tcp {
                address: format!("127.0.0.1:{port}"),
            },
            _ => Check::Http {
                url: format!("http://127.0.0.1:{port}/health"),
                status: None,
                headers: Default::default(),
                body_contains: None,
            },
        };
        spec.liveness = Some(ProbeSpec {
            check,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            ..ProbeSpec::default()
        });
        assert!(m.start_n(spec).await.iter().all(|(_, r)| r.is_ok()));
        let (probe_pct, healthy) = measure(m, "http probes").await;
        let _ = server.kill();
        let _ = server.wait();

        // Readiness latency: listen() to Running.
        let m = Manager::with_options(ManagerOptions::default()).expect("manager");
        let mut latencies = Vec::new();
        for i in 0..starts {
            let delay = fastrand::u64(0..200);
            let mut spec = ProcessSpec::new(format!("ready-{i}"), me.display().to_string())
                .args(["--listen-after".to_string(), delay.to_string(), "{port.p}".to_string()]);
            spec.ports = vec!["p".into()];
            spec.restart.policy = RestartMode::Never;
            spec.readiness = Some(ProbeSpec {
                check: Check::Tcp {
                    address: "127.0.0.1:{port.p}".into(),
                },
                interval: Duration::from_secs(1),
                ..ProbeSpec::default()
            });
            let mut rx = m.subscribe();
            m.start(spec).await.expect("start");
            let name = format!("ready-{i}");
            let running_at = loop {
                let ev = rx.recv().await.expect("events");
                if *ev.name == *name {
                    if let EventKind::State { to: State::Running, .. } = ev.kind {
                        break ev.at;
                    }
                }
            };
            let mut listened = None;
            for _ in 0..200 {
                if let Some(l) = m.tail(&name, 1).ok().and_then(|t| t.first().and_then(|l| l.text.parse::<u128>().ok())) {
                    listened = Some(l);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let running = running_at.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
            if let Some(l) = listened {
                latencies.push((running.saturating_sub(l)) as f64 / 1e6);
            }
            m.remove(&name, None).await.expect("remove");
        }
        m.shutdown().await;
        latencies.sort_by(|a, b| a.total_cmp(b));
        let median = latencies.get(latencies.len() / 2).copied().unwrap_or(f64::NAN);
        let p90 = latencies.get(latencies.len() * 9 / 10).copied().unwrap_or(f64::NAN);
        println!(
            "{{\"check\":\"{kind}\",\"n\":{n},\"secs\":{secs},\"cpu_no_probes_pct\":{idle_pct:.3},\"cpu_http_probes_pct\":{probe_pct:.3},\"healthy\":{healthy},\"starts\":{},\"ready_latency_median_ms\":{median:.2},\"ready_latency_p90_ms\":{p90:.2}}}",
            latencies.len()
        );
    });
}
