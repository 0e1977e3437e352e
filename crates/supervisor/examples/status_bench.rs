//! Time `Manager::status_all("*")` with N supervised `sleep 3600` processes.
//!
//! `cargo run --release -p hangar-supervisor --example status_bench -- --n 1000`
//! prints one JSON line: {"n":1000,"start_ms":…,"status_all_median_us":…,"status_all_p99_us":…}

use std::time::{Duration, Instant};

use hangar_supervisor::{Manager, ManagerOptions, ProcessSpec, RestartMode, RestartPolicy};

fn main() {
    let mut n: u32 = 1000;
    let mut threads: usize = ManagerOptions::default().spawn_threads;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--n" => n = args.next().and_then(|v| v.parse().ok()).unwrap_or(n),
            "--spawn-threads" => {
                threads = args.next().and_then(|v| v.parse().ok()).unwrap_or(threads)
            }
            _ => {}
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let m = Manager::with_options(ManagerOptions {
            spawn_threads: threads,
            ..ManagerOptions::default()
        })
        .expect("manager");
        let mut spec = ProcessSpec::new("bench", "sleep")
            .args(["3600"])
            .restart(RestartPolicy {
                policy: RestartMode::Always,
                initial_interval: Duration::ZERO,
                ..RestartPolicy::default()
            });
        spec.instances = n;
        let t = Instant::now();
        let started = m.start_n(spec).await;
        let start_ms = t.elapsed().as_secs_f64() * 1e3;
        let ok = started.iter().filter(|(_, r)| r.is_ok()).count();
        assert_eq!(ok, n as usize, "not all started");
        let mut samples = Vec::with_capacity(500);
        for _ in 0..500 {
            let t = Instant::now();
            let all = m.status_all("*").expect("status");
            samples.push(t.elapsed().as_secs_f64() * 1e6);
            assert_eq!(all.len(), n as usize);
        }
        samples.sort_by(|a, b| a.total_cmp(b));
        let median = samples[samples.len() / 2];
        let p99 = samples[samples.len() * 99 / 100];
        println!(
            "{{\"n\":{n},\"start_ms\":{start_ms:.1},\"status_all_median_us\":{median:.1},\"status_all_p99_us\":{p99:.1}}}"
        );
        m.shutdown().await;
    });
}
