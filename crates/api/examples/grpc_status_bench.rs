//! Latency of the daemon's status calls over its Unix socket, as a client sees it.
//!
//! ```sh
//! cargo build --release -p hangar-api --example status_bench
//! target/release/examples/status_bench --socket "$DATA/hangar.sock" --expect 1000 --iterations 2000
//! ```
//!
//! Connects once with [`hangar_api::client::Client::unix`] (the CLI's client),
//! waits until `Processes.List` reports `--expect` processes running, then times,
//! one call at a time on that one connection, after `--warmup` untimed calls each:
//!
//! - `Processes.List` with an empty pattern (all processes),
//! - `Processes.Get` of one process (the first name in the list),
//! - `Daemon.Status`,
//! - and, `--connect-iterations` times, a fresh connection plus one
//!   `Daemon.Status` (what every CLI invocation pays before its own call).
//!
//! Prints one JSON object on stdout: min/p50/p90/p99/max in milliseconds per call
//! (percentiles by nearest rank over the samples); with `--raw`, also every
//! sample in the order taken. Progress goes to stderr.
//!
//! Note: `hangar-supervisor` has an example of the same name (the in-process
//! `Manager::status_all` figure used by `bench/supervisors.py`); both build to
//! `target/release/examples/status_bench`, so the one built last wins.

use std::error::Error;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hangar_api::client::Client;
use hangar_api::pb;
use prost::Message;
use serde_json::json;

type Res<T> = Result<T, Box<dyn Error>>;

struct Args {
    socket: PathBuf,
    expect: usize,
    iterations: usize,
    warmup: usize,
    connect_iterations: usize,
    wait: Duration,
    raw: bool,
}

const USAGE: &str =
    "usage: status_bench --socket PATH [--expect N (1000)] [--iterations K (2000)] \
[--warmup W (100)] [--connect-iterations C (200)] [--wait-secs S (120)] [--raw]";

fn parse_args() -> Res<Args> {
    let mut socket = None;
    let mut a = Args {
        socket: PathBuf::new(),
        expect: 1000,
        iterations: 2000,
        warmup: 100,
        connect_iterations: 200,
        wait: Duration::from_secs(120),
        raw: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        if flag == "--raw" {
            a.raw = true;
            continue;
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let num = |v: &str| -> Res<usize> {
            v.parse::<usize>()
                .map_err(|e| format!("{flag} {v:?}: not a count: {e}").into())
        };
        match flag.as_str() {
            "--socket" => socket = Some(PathBuf::from(value)),
            "--expect" => a.expect = num(&value)?,
            "--iterations" => a.iterations = num(&value)?,
            "--warmup" => a.warmup = num(&value)?,
            "--connect-iterations" => a.connect_iterations = num(&value)?,
            "--wait-secs" => a.wait = Duration::from_secs(num(&value)? as u64),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
        }
    }
    a.socket = socket.ok_or_else(|| format!("--socket is required\n{USAGE}"))?;
    if a.iterations == 0 {
        return Err("--iterations must be at least 1".into());
    }
    Ok(a)
}

/// min, p50, p90, p99, max (ms) and the mean, by nearest rank; with `raw`,
/// the samples in the order taken.
fn summary(samples: Vec<f64>, raw: bool) -> serde_json::Value {
    let mut ms = samples.clone();
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let rank = |q: f64| ms[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
    let mean = ms.iter().sum::<f64>() / n as f64;
    let r = |v: f64| (v * 1000.0).round() / 1000.0;
    let mut out = json!({
        "n": n,
        "min_ms": r(ms[0]),
        "p50_ms": r(rank(0.50)),
        "p90_ms": r(rank(0.90)),
        "p99_ms": r(rank(0.99)),
        "max_ms": r(ms[n - 1]),
        "mean_ms": r(mean),
    });
    if raw {
        out["samples_ms"] = samples.iter().map(|&v| r(v)).collect();
    }
    out
}

fn api(s: tonic::Status) -> Box<dyn Error> {
    Box::new(hangar_api::convert::error(&s))
}

fn running(list: &pb::ProcessList) -> usize {
    list.processes
        .iter()
        .filter(|p| p.state == "running")
        .count()
}

/// Time `warmup + k` calls of `call`, keeping the last `k`.
async fn timed<F, Fut, T>(warmup: usize, k: usize, mut call: F) -> Res<(Vec<f64>, T)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Res<T>>,
{
    let mut out = Vec::with_capacity(k);
    let mut last = None;
    for i in 0..warmup + k {
        let t = Instant::now();
        let v = call().await?;
        let dt = t.elapsed().as_secs_f64() * 1e3;
        if i >= warmup {
            out.push(dt);
        }
        last = Some(v);
    }
    let last = last.ok_or("no calls were made")?;
    Ok((out, last))
}

async fn bench(a: Args) -> Res<()> {
    let t0 = Instant::now();
    let c = Client::unix(&a.socket).await?;

    // Wait until the daemon reports the expected number running.
    let mut polls = 0u32;
    let first_list = loop {
        let l = c
            .processes
            .clone()
            .list(pb::ListRequest::default())
            .await
            .map_err(api)?
            .into_inner();
        polls += 1;
        let (total, up) = (l.processes.len(), running(&l));
        if up >= a.expect {
            break l;
        }
        if t0.elapsed() > a.wait {
            return Err(format!(
                "after {:?}: {up} of {total} processes running, expected {}",
                a.wait, a.expect
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ready_ms = t0.elapsed().as_secs_f64() * 1e3;
    eprintln!(
        "status_bench: {} running after {ready_ms:.0} ms ({polls} polls); timing {} calls each",
        running(&first_list),
        a.iterations
    );
    let one = first_list
        .processes
        .first()
        .map(|p| p.name.clone())
        .ok_or("the daemon lists no processes")?;

    let (list_ms, last) = timed(a.warmup, a.iterations, || {
        let mut p = c.processes.clone();
        async move {
            let l = p
                .list(pb::ListRequest::default())
                .await
                .map_err(api)?
                .into_inner();
            Ok(l)
        }
    })
    .await?;
    let list_len = last.processes.len();
    let list_running = running(&last);
    let list_bytes = last.encoded_len();

    let (get_ms, got) = timed(a.warmup, a.iterations, || {
        let mut p = c.processes.clone();
        let name = one.clone();
        async move {
            let g = p
                .get(pb::NameRequest { name })
                .await
                .map_err(api)?
                .into_inner();
            Ok(g)
        }
    })
    .await?;

    let (status_ms, st) = timed(a.warmup, a.iterations, || {
        let mut d = c.daemon.clone();
        async move {
            let s = d
                .status(pb::StatusRequest {})
                .await
                .map_err(api)?
                .into_inner();
            Ok(s)
        }
    })
    .await?;

    let mut connect = serde_json::Value::Null;
    if a.connect_iterations > 0 {
        let socket = a.socket.clone();
        let (ms, _) = timed(a.warmup.min(10), a.connect_iterations, || {
            let socket = socket.clone();
            async move {
                let mut fresh = Client::unix(&socket).await?;
                let s = fresh
                    .daemon
                    .status(pb::StatusRequest {})
                    .await
                    .map_err(api)?;
                Ok(s.into_inner().pid)
            }
        })
        .await?;
        connect = summary(ms, a.raw);
    }

    let out = json!({
        "socket": a.socket.display().to_string(),
        "expect": a.expect,
        "iterations": a.iterations,
        "warmup": a.warmup,
        "ready_ms": (ready_ms * 10.0).round() / 10.0,
        "list": {
            "processes": list_len,
            "running": list_running,
            "response_bytes": list_bytes,
            "latency": summary(list_ms, a.raw),
        },
        "get": { "name": got.name, "state": got.state, "latency": summary(get_ms, a.raw) },
        "daemon_status": {
            "processes": st.processes,
            "latency": summary(status_ms, a.raw),
        },
        "connect_and_status": connect,
    });
    println!("{out}");
    Ok(())
}

fn run() -> Res<()> {
    let args = parse_args()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(bench(args))
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("status_bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
