//! The daemon's event pipeline end to end: supervisor events stored in SQLite,
//! then delivered to subscribers, against a floor of raw SQLite writes of the
//! same rows.
//!
//! ```sh
//! cargo build --release -p hangar-api --example event_bench
//! target/release/examples/event_bench [--n 1000] [--warmup 3] [--secs 10] \
//!     > bench/results/events-n1000.json
//! ```
//!
//! Run as root, like the daemon (it gives every process a cgroup of its own).
//!
//! Boots a daemon in this process on a temporary data dir with `--n` copies of
//! `/bin/true` under `restart.policy = "always"` and zero backoff (retried for
//! ever), so every copy exits at once and is started again: each restart is
//! three state events (running → exited, exited → starting, starting →
//! running), each also an observed-state write. Serves the API on the socket
//! and subscribes twice: `Events.Stream` through the gRPC client over that
//! socket, and the daemon's bus in process. After `--warmup` seconds, over
//! `--secs`:
//!
//! - **persisted**: rows added to the `events` table, counted with
//!   `SELECT max(id)` on a second, read-only SQLite connection to the store
//!   (WAL: it sees each committed batch);
//! - **published**: events received on `Events.Stream` and on the bus; bus
//!   receivers that lagged, and `events.lost` rows, are reported (both should
//!   be 0);
//! - **publish delay**: the event's own time (`at_ms`, the supervisor's clock)
//!   to its arrival on the gRPC stream, p50 / p99;
//! - **CPU**: this process's user + system time over the window (the daemon,
//!   its API server and the two subscribers; the subscribers only count).
//!
//! Then the pipeline's capacity, which the spawn rate hides: three times,
//! a second connection holds the store's write lock for 4 s (under the
//! store's 5 s busy timeout), so the persist task's write waits and the
//! supervisor's events queue in its channel; after the release, the drain is
//! timed from the first new row until the bus has published everything
//! produced before the release (events/s persisted and published while a
//! backlog drains). The lock holder and SQLite's busy handler are not the
//! pipeline's, so the time from release to the first row is reported apart.
//!
//! Then the floor, in the same run, on a copy of the run's store (same schema,
//! indexes, pragmas `journal_mode=WAL`, `synchronous=NORMAL`, and the same
//! process rows) with its events deleted: the last (up to) 20,000 rows the
//! daemon stored, replayed through a raw `rusqlite` connection in transactions
//! of 2,048 rows (the persist task's batch size) until `--floor-rows` rows are
//! written, once as inserts only and once with the observed-state `UPDATE`
//! the pipeline makes per state event. The ratio is persisted / floor.
//!
//! Prints one JSON object on stdout.

use std::error::Error;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hangar_api::client::Client;
use hangar_api::pb;
use hangar_core::{BootOptions, Daemon};
use rusqlite::{params, Connection, OpenFlags};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

type Res<T> = Result<T, Box<dyn Error>>;

/// The persist task's batch size (`BATCH` in `crates/core/src/daemon.rs`).
const FLOOR_BATCH: usize = 2048;

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let i = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[i.clamp(1, v.len()) - 1]
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// User + system CPU seconds of this process.
fn cpu_s() -> f64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = 100.0; // USER_HZ on Linux
    let ut: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let st: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    (ut + st) / tick
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The highest stored event id (the rowid's b-tree end: cheap enough to poll).
fn max_id(db: &Connection) -> Res<i64> {
    Ok(db.query_row("SELECT coalesce(max(id), 0) FROM events", [], |r| r.get(0))?)
}

/// The highest stored event id and the `events.lost` rows (a scan: not for
/// polling).
fn stored(db: &Connection) -> Res<(i64, i64)> {
    let lost = db.query_row(
        "SELECT count(*) FROM events WHERE kind = 'events.lost'",
        [],
        |r| r.get(0),
    )?;
    Ok((max_id(db)?, lost))
}

type Row = (i64, String, Option<i64>, String, String, String, String);

/// Rows/s of raw batched writes of `rows` (cycled up to `total`) into `db`,
/// with the observed-state update per state row when `observe`.
fn floor(db: &Path, rows: &[Row], total: usize, observe: bool) -> Res<f64> {
    let mut c = Connection::open(db)?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "NORMAL")?;
    c.execute("DELETE FROM events", [])?;
    let t = Instant::now();
    let mut written = 0usize;
    while written < total {
        let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO events (at_ms, name, pid, kind, from_value, to_value, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut upd = tx.prepare_cached(
                "UPDATE processes
                 SET state = ?2, pid = ?3, pgid = ?4, pid_start = ?5, restarts = ?6, updated_ms = ?7
                 WHERE name = ?1",
            )?;
            for i in 0..FLOOR_BATCH.min(total - written) {
                let r = &rows[(written + i) % rows.len()];
                ins.execute(params![r.0, r.1, r.2, r.3, r.4, r.5, r.6])?;
                if observe && r.3 == "state" {
                    upd.execute(params![r.1, r.5, r.2, r.2, Option::<i64>::None, 1i64, r.0])?;
                }
            }
        }
        tx.commit()?;
        written += FLOOR_BATCH.min(total - written);
    }
    Ok(total as f64 / t.elapsed().as_secs_f64())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res<()> {
    let mut n = 1000usize;
    let mut warmup = 3.0f64;
    let mut secs = 10.0f64;
    let mut floor_rows = 200_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--n" => n = val()?.parse()?,
            "--warmup" => warmup = val()?.parse()?,
            "--secs" => secs = val()?.parse()?,
            "--floor-rows" => floor_rows = val()?.parse()?,
            _ => {
                return Err(
                    "usage: event_bench [--n N] [--warmup S] [--secs S] [--floor-rows N]".into(),
                )
            }
        }
    }
    let truebin = ["/usr/bin/true", "/bin/true"]
        .iter()
        .find(|p| Path::new(p).is_file())
        .ok_or("no true(1)")?;
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("hangar.toml");
    std::fs::write(
        &cfg,
        format!(
            "[daemon]\nhttp = \"\"\n\n[[process]]\nname = \"ev\"\ncommand = \"{truebin}\"\n\
             instances = {n}\n\n[process.restart]\npolicy = \"always\"\ninitial_interval = \"0s\"\n\
             max_retries = 0\n"
        ),
    )?;
    let boot = Instant::now();
    let d = Daemon::boot(BootOptions {
        data_dir: data.clone(),
        config: Some(cfg),
        catalogs: vec![],
    })
    .await
    .map_err(|e| e.message)?;
    let boot_s = boot.elapsed().as_secs_f64();
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

    // Subscriber 1: the daemon's bus, in process.
    let bus_count = Arc::new(AtomicU64::new(0));
    let bus_lagged = Arc::new(AtomicU64::new(0));
    {
        let mut rx = d.subscribe();
        let (count, lagged) = (Arc::clone(&bus_count), Arc::clone(&bus_lagged));
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(_) => {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(RecvError::Lagged(k)) => {
                        lagged.fetch_add(k, Ordering::Relaxed);
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        });
    }
    // What the supervisor produced (its own channel; a lag counts what it
    // skipped, which was produced all the same).
    let produced = Arc::new(AtomicU64::new(0));
    {
        let mut rx = d.manager().subscribe();
        let count = Arc::clone(&produced);
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(_) => {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(RecvError::Lagged(k)) => {
                        count.fetch_add(k, Ordering::Relaxed);
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        });
    }
    // Subscriber 2: Events.Stream over the socket.
    let grpc_count = Arc::new(AtomicU64::new(0));
    // When and how the stream ended, if it did before the daemon stopped.
    let grpc_end: Arc<Mutex<Option<(i64, String)>>> = Arc::new(Mutex::new(None));
    let delays: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::new()));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let mut c = Client::unix(&socket).await.map_err(|e| e.message)?;
        let mut stream = c
            .events
            .stream(pb::EventFilter::default())
            .await?
            .into_inner();
        let (count, delays, sampling) = (
            Arc::clone(&grpc_count),
            Arc::clone(&delays),
            Arc::clone(&sampling),
        );
        let ended = Arc::clone(&grpc_end);
        tokio::spawn(async move {
            let end = loop {
                match stream.message().await {
                    Ok(Some(ev)) => {
                        count.fetch_add(1, Ordering::Relaxed);
                        if sampling.load(Ordering::Relaxed) {
                            if let Ok(mut d) = delays.lock() {
                                d.push((now_ms() - ev.at_ms) as f64);
                            }
                        }
                    }
                    Ok(None) => break "ended".to_string(),
                    Err(e) => break format!("{:?}: {}", e.code(), e.message()),
                }
            };
            if let Ok(mut g) = ended.lock() {
                *g = Some((now_ms(), end));
            }
        });
    }
    let db_path = data.join("hangar.db");
    let reader = Connection::open_with_flags(&db_path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;

    eprintln!("{n} × true, restart always, zero backoff: warming up {warmup} s…");
    tokio::time::sleep(Duration::from_secs_f64(warmup)).await;
    if bus_count.load(Ordering::Relaxed) == 0 {
        // Nothing runs: the daemon refused the set (at 10,000 on a host whose
        // descriptor limit cannot hold it). Say why, as the daemon does.
        let r = d.reload().await.map_err(|e| e.message)?;
        let why: Vec<String> = r
            .errors
            .iter()
            .map(|(_, e)| format!("{}: {}", e.code(), e.message))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"n": n, "refused": why, "persisted_per_s": 0}))?
        );
        serving.stop().await;
        d.shutdown().await;
        return Ok(());
    }
    let (id0, lost0) = stored(&reader)?;
    let (g0, b0, c0) = (
        grpc_count.load(Ordering::Relaxed),
        bus_count.load(Ordering::Relaxed),
        cpu_s(),
    );
    let t0 = Instant::now();
    sampling.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    sampling.store(false, Ordering::Relaxed);
    let (id1, lost1) = stored(&reader)?;
    let (g1, b1, c1) = (
        grpc_count.load(Ordering::Relaxed),
        bus_count.load(Ordering::Relaxed),
        cpu_s(),
    );
    let window = t0.elapsed().as_secs_f64();
    let rss = rss_kb();
    let kinds: Vec<(String, String, i64)> = reader
        .prepare(
            "SELECT from_value, to_value, count(*) FROM events WHERE id > ?1 AND id <= ?2
             GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 8",
        )?
        .query_map(params![id0, id1], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    // The pipeline's capacity, which the spawn rate above hides: hold the
    // store's write lock from a second connection for `hold` (under the
    // store's 5 s busy timeout), so the persist task's write waits and the
    // supervisor's events queue in its channel (8,192 slots); then let go
    // and time the drain, from the first new row (SQLite's busy handler
    // sleeps up to 100 ms between tries, which is not the pipeline's) until
    // the bus has published everything produced before the release.
    let hold = Duration::from_millis(4000);
    let mut drains = Vec::new();
    for _ in 0..3 {
        let p = db_path.clone();
        let (locked_tx, locked_rx) = tokio::sync::oneshot::channel();
        let holder = tokio::task::spawn_blocking(move || -> rusqlite::Result<()> {
            let c = Connection::open(&p)?;
            c.busy_timeout(Duration::from_secs(5))?;
            c.execute_batch("BEGIN IMMEDIATE")?;
            let _ = locked_tx.send(());
            std::thread::sleep(hold);
            c.execute_batch("COMMIT")
        });
        let _ = locked_rx.await;
        let lost_before = stored(&reader)?.1;
        holder.await??;
        let released = Instant::now();
        let id_r = max_id(&reader)?;
        let target = produced.load(Ordering::Relaxed);
        let pub_r = bus_count.load(Ordering::Relaxed);
        let backlog = target.saturating_sub(pub_r);
        // First progress.
        let (t_first, id_first, pub_first) = loop {
            let id = max_id(&reader)?;
            if id > id_r {
                break (Instant::now(), id, bus_count.load(Ordering::Relaxed));
            }
            if released.elapsed() > Duration::from_secs(5) {
                return Err("the persist task did not resume in 5 s".into());
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        let (t_done, id_done, pub_done) = loop {
            let b = bus_count.load(Ordering::Relaxed);
            if b >= target {
                break (Instant::now(), max_id(&reader)?, b);
            }
            if released.elapsed() > Duration::from_secs(30) {
                return Err("the backlog did not drain in 30 s".into());
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        let secs = (t_done - t_first).as_secs_f64().max(1e-6);
        drains.push(json!({
            "backlog_events": backlog,
            "resume_after_release_ms": (t_first - released).as_secs_f64() * 1e3,
            "drain_ms": secs * 1e3,
            "persisted_per_s": (id_done - id_first) as f64 / secs,
            "published_bus_per_s": (pub_done - pub_first) as f64 / secs,
            "events_lost_rows": stored(&reader)?.1 - lost_before,
        }));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let bus_lagged_after_drains = bus_lagged.load(Ordering::Relaxed);

    let mut states = std::collections::BTreeMap::<String, u64>::new();
    for p in d.list("*").await.map_err(|e| e.message)? {
        let st = p
            .status
            .as_ref()
            .map_or("never started", |s| s.state.as_str());
        *states.entry(st.to_string()).or_default() += 1;
    }

    let stream_end = grpc_end.lock().map(|g| g.clone()).unwrap_or_default();
    serving.stop().await;
    let stop = Instant::now();
    d.shutdown().await;
    let shutdown_s = stop.elapsed().as_secs_f64();
    drop(d);

    // The floor: the same rows, raw, on a copy of the run's store.
    let rows: Vec<Row> = reader
        .prepare(
            "SELECT at_ms, name, pid, kind, from_value, to_value, detail FROM events
             ORDER BY id DESC LIMIT 20000",
        )?
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    drop(reader);
    let fdir = tmp.path().join("floor");
    std::fs::create_dir_all(&fdir)?;
    let fdb = fdir.join("hangar.db");
    {
        let src = Connection::open_with_flags(&db_path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        src.execute("VACUUM INTO ?1", params![fdb.to_string_lossy()])?;
    }
    eprintln!("floor: {floor_rows} rows from {} stored…", rows.len());
    let floor_inserts = floor(&fdb, &rows, floor_rows, false)?;
    let floor_observed = floor(&fdb, &rows, floor_rows, true)?;

    let persisted = (id1 - id0) as f64 / window;
    let mut delays = delays.lock().map(|d| d.clone()).unwrap_or_default();
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "machine": {
                "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            },
            "n": n,
            "boot_s": boot_s,
            "window_s": window,
            "persisted_per_s": persisted,
            "published_grpc_per_s": (g1 - g0) as f64 / window,
            "published_bus_per_s": (b1 - b0) as f64 / window,
            "grpc_stream_ended_early": stream_end.map(|(at, why)| json!({"at_ms": at, "why": why})),
            "bus_lagged": bus_lagged.load(Ordering::Relaxed),
            "events_lost_rows": lost1 - lost0,
            "publish_delay_ms": {"p50": pct(&mut delays, 50.0), "p99": pct(&mut delays, 99.0), "n": delays.len()},
            "cpu_cores": (c1 - c0) / window,
            "cpu_us_per_event": if id1 > id0 { (c1 - c0) * 1e6 / (id1 - id0) as f64 } else { 0.0 },
            "rss_kb": rss,
            "states_at_end": states,
            "transitions": kinds.iter().map(|(f, t, c)| json!({"from": f, "to": t, "count": c})).collect::<Vec<Value>>(),
            "backlog_drains": drains,
            "bus_lagged_after_drains": bus_lagged_after_drains,
            "floor_rows": floor_rows,
            "floor_inserts_per_s": floor_inserts,
            "floor_inserts_and_updates_per_s": floor_observed,
            "ratio_to_floor": persisted / floor_observed,
            "shutdown_s": shutdown_s,
        }))?
    );
    Ok(())
}
