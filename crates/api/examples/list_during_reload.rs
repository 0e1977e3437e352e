//! `Processes.List` latency while a reload is stopping slow processes, against
//! the same call with no reload, in one run.
//!
//! ```sh
//! cargo build --release -p hangar-api --example list_during_reload
//! target/release/examples/list_during_reload [--n 1000] [--slow 50] [--grace-secs 3] [--rounds 3]
//! ```
//!
//! Boots a daemon in this process on a temporary data dir (as `instance_bench`
//! does) with a configuration file of `--n` `sleep 3600` processes plus
//! `--slow` processes that ignore SIGTERM (`trap '' TERM`, inherited by their
//! `sleep`) with `stop_timeout = --grace-secs`, and serves its API on the
//! socket; every timed call is a gRPC call over that socket.
//!
//! - **idle**: `Processes.List` (all processes), one call at a time on one
//!   connection, for as long as one reload takes (at least 200 calls).
//! - **during reload**: the configuration file loses the slow processes and
//!   `Daemon.Reload` is called on a second connection; `Processes.List` is
//!   called in a loop on the first until the reload answers. The reload has to
//!   wait out the slow processes' grace before SIGKILL. Repeated `--rounds`
//!   times (the slow processes are added back, untimed, between rounds).
//!
//! Prints one JSON object on stdout: both latency summaries and the ratios
//! (during / idle) of p50 and p99. Progress goes to stderr.

use std::error::Error;
use std::time::{Duration, Instant};

use hangar_api::client::Client;
use hangar_api::pb;
use hangar_core::{BootOptions, Daemon};
use serde_json::{json, Value};

type Res<T> = Result<T, Box<dyn Error>>;

struct Args {
    n: usize,
    slow: usize,
    grace: u64,
    rounds: usize,
}

const USAGE: &str =
    "usage: list_during_reload [--n 1000] [--slow 50] [--grace-secs 3] [--rounds 3]";

fn parse_args() -> Res<Args> {
    let mut a = Args {
        n: 1000,
        slow: 50,
        grace: 3,
        rounds: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let num = value
            .parse::<usize>()
            .map_err(|e| format!("{flag} {value:?}: not a count: {e}"))?;
        match flag.as_str() {
            "--n" => a.n = num,
            "--slow" => a.slow = num,
            "--grace-secs" => a.grace = num as u64,
            "--rounds" => a.rounds = num.max(1),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
        }
    }
    Ok(a)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

fn summary(v: &[f64]) -> Value {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    json!({
        "n": s.len(),
        "min_ms": r(pct(&s, 0.0)),
        "p50_ms": r(pct(&s, 50.0)),
        "p99_ms": r(pct(&s, 99.0)),
        "max_ms": r(pct(&s, 100.0)),
    })
}

fn config(a: &Args, with_slow: bool) -> String {
    let mut s = String::from("[daemon]\nhttp = \"\"\n\n");
    s.push_str(&format!(
        "[[process]]\nname = \"sleeper\"\ncommand = \"sleep\"\nargs = [\"3600\"]\ninstances = {}\n\n",
        a.n
    ));
    if with_slow && a.slow > 0 {
        s.push_str(&format!(
            "[[process]]\nname = \"slow\"\ncommand = \"sh\"\nargs = [\"-c\", \"trap '' TERM; sleep 3600\"]\n\
             instances = {}\nstop_timeout = \"{}s\"\n\n",
            a.slow, a.grace
        ));
    }
    s
}

fn api(s: tonic::Status) -> Box<dyn Error> {
    Box::new(hangar_api::convert::error(&s))
}

async fn list(c: &Client) -> Res<pb::ProcessList> {
    Ok(c.processes
        .clone()
        .list(pb::ListRequest::default())
        .await
        .map_err(api)?
        .into_inner())
}

async fn until_running(c: &Client, want: usize) -> Res<()> {
    let t0 = Instant::now();
    loop {
        let l = list(c).await?;
        let up = l.processes.iter().filter(|p| p.state == "running").count();
        if up >= want {
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(180) {
            return Err(format!("{up} of {want} processes running after 180 s").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn reload(c: &Client) -> Res<pb::ReloadReply> {
    Ok(c.daemon
        .clone()
        .reload(pb::ReloadRequest {})
        .await
        .map_err(api)?
        .into_inner())
}

async fn bench(a: Args) -> Res<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("hangar.toml");
    std::fs::write(&cfg, config(&a, true))?;
    let d = Daemon::boot(BootOptions {
        data_dir: data.clone(),
        config: Some(cfg.clone()),
        catalogs: Vec::new(),
    })
    .await
    .map_err(|e| e.message)?;
    let socket = hangar_core::socket_path(&data);
    let serving = hangar_api::server::serve(
        d.clone(),
        hangar_api::server::ServeOptions {
            socket: socket.clone(),
            tcp: None,
            token: None,
            tls: None,
            client_ca: None,
            limits: Default::default(),
        },
    )
    .await
    .map_err(|e| e.message)?;
    let lister = Client::unix(&socket).await.map_err(|e| e.message)?;
    let reloader = Client::unix(&socket).await.map_err(|e| e.message)?;
    let total = a.n + a.slow;
    eprintln!("list_during_reload: waiting for {total} processes…");
    until_running(&lister, total).await?;

    let mut during = Vec::new();
    let mut reload_ms = Vec::new();
    for round in 0..a.rounds {
        if round > 0 {
            std::fs::write(&cfg, config(&a, true))?;
            reload(&reloader).await?;
            until_running(&lister, total).await?;
        }
        // Warm the connection, untimed.
        for _ in 0..20 {
            list(&lister).await?;
        }
        std::fs::write(&cfg, config(&a, false))?;
        let t = Instant::now();
        let r = {
            let c = reloader.clone();
            tokio::spawn(async move { reload(&c).await.map_err(|e| e.to_string()) })
        };
        while !r.is_finished() {
            let t1 = Instant::now();
            list(&lister).await?;
            during.push(t1.elapsed().as_secs_f64() * 1e3);
        }
        let rep = r.await??;
        let took = t.elapsed().as_secs_f64() * 1e3;
        reload_ms.push(took);
        eprintln!(
            "round {round}: reload removed {} in {took:.0} ms; {} List calls during it",
            rep.removed.len(),
            during.len()
        );
    }

    // Idle: the same loop for as long as one reload took, at least 200 calls.
    let span =
        Duration::from_secs_f64(reload_ms.iter().sum::<f64>() / reload_ms.len() as f64 / 1e3);
    let mut idle = Vec::new();
    let t = Instant::now();
    while t.elapsed() < span || idle.len() < 200 {
        let t1 = Instant::now();
        list(&lister).await?;
        idle.push(t1.elapsed().as_secs_f64() * 1e3);
    }

    let (si, sd) = (summary(&idle), summary(&during));
    let ratio = |k: &str| {
        let (x, y) = (sd[k].as_f64().unwrap_or(0.0), si[k].as_f64().unwrap_or(0.0));
        if y > 0.0 {
            ((x / y) * 100.0).round() / 100.0
        } else {
            0.0
        }
    };
    let out = json!({
        "processes": total,
        "slow_stopped_per_reload": a.slow,
        "grace_s": a.grace,
        "rounds": a.rounds,
        "reload_ms": reload_ms.iter().map(|v| v.round()).collect::<Vec<_>>(),
        "idle": si,
        "during_reload": sd,
        "ratio_p50": ratio("p50_ms"),
        "ratio_p99": ratio("p99_ms"),
    });
    println!("{out}");
    serving.stop().await;
    d.shutdown().await;
    Ok(())
}

fn run() -> Res<()> {
    let args = parse_args()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(bench(args))
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("list_during_reload: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
