//! `hangar run` and `hangar check`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use hangar_supervisor::{Event, EventKind, ExitInfo, Manager, ManagerOptions, ProcessSpec, State};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::broadcast::error::RecvError;
use tracing::{error, info, warn};

use crate::{exit, render};
use hangar_core::procfile::{self, ProcessFile};

fn load(file: &Path, log_dir: Option<PathBuf>) -> Result<ProcessFile, u8> {
    let src = match std::fs::read_to_string(file) {
        Ok(s) => s,
        Err(e) => {
            errln!(
                "error[CONFIG_UNREADABLE]: cannot read process file {}: {e}\n  hint: check the path and its permissions",
                file.display()
            );
            return Err(exit::USAGE);
        }
    };
    procfile::parse(&src, log_dir).map_err(|errs| {
        errln!(
            "error[CONFIG_INVALID]: {} has {} error{}; nothing was started",
            file.display(),
            errs.len(),
            if errs.len() == 1 { "" } else { "s" }
        );
        for e in &errs {
            errln!("  {}:{e}", file.display());
        }
        exit::USAGE
    })
}

pub fn check(file: &Path) -> u8 {
    match load(file, None) {
        Ok(pf) => {
            for p in &pf.processes {
                let n = if p.instances > 1 {
                    format!(" ×{}", p.instances)
                } else {
                    String::new()
                };
                outln!(
                    "{}{n}: {} {} (restart {})",
                    p.name,
                    p.command,
                    p.args.join(" "),
                    p.restart.policy
                );
            }
            outln!("{}: ok", file.display());
            exit::OK
        }
        Err(code) => code,
    }
}

pub fn run(file: &Path, log_dir: Option<PathBuf>) -> u8 {
    let pf = match load(file, log_dir.clone()) {
        Ok(pf) => pf,
        Err(code) => return code,
    };
    let rt = match crate::runtime(true) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(supervise(pf, log_dir))
}

async fn supervise(pf: ProcessFile, log_dir: Option<PathBuf>) -> u8 {
    // hangar run is a supervisor: orphans of its processes reparent to it
    // and end with them.
    let opts = ManagerOptions {
        subreaper: true,
        cgroup_every_process: true,
        ..ManagerOptions::default()
    };
    let manager = match Manager::with_options(opts) {
        Ok(m) => m,
        Err(e) => {
            errln!("{}", render::error(&e));
            return exit::FAILURE;
        }
    };
    if let Err(e) = manager.set_global_env(&pf.env) {
        errln!("{}", render::error(&e));
        return exit::USAGE;
    }
    // A file that cannot be held whole starts nothing, and says so now.
    let total: usize = pf
        .processes
        .iter()
        .map(|p| p.instances.max(1) as usize)
        .sum();
    if let Err(e) = manager.check_capacity(total, total) {
        errln!("{}", render::error(&e));
        return exit::FAILURE;
    }
    let mut term = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            errln!("error[IO_ERROR]: cannot install signal handlers: {e}");
            return exit::FAILURE;
        }
    };
    // Logging runs on a thread of its own: if stderr blocks (a full pipe, a slow
    // terminal), only this thread waits, and the runtime keeps supervising.
    let events = manager.subscribe();
    // A second receiver tells, at the end, which event was emitted last, so
    // the final stop events are logged before hangar exits.
    let mut tally = manager.subscribe();
    let logged = Arc::new(AtomicU64::new(0));
    let logged_by_thread = Arc::clone(&logged);
    let _ = std::thread::Builder::new()
        .name("hangar-events".into())
        .spawn(move || log_events_counted(events, &logged_by_thread));

    // Subscribed before the first start: no exit can be missed.
    let mut changes = manager.subscribe();

    if let Some(dir) = &log_dir {
        info!(dir = %dir.display(), "process output goes to log files");
    }
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for spec in pf.processes {
        let m = manager.clone();
        set.spawn(async move { start_entry(&m, spec).await });
    }
    let (mut ok, mut failed) = (0usize, 0usize);
    while let Some(res) = set.join_next().await {
        if let Ok((o, f)) = res {
            ok += o;
            failed += f;
        }
    }
    info!(
        started = ok,
        failed,
        took_ms = t0.elapsed().as_millis() as u64,
        "all processes launched; SIGINT or SIGTERM stops them"
    );

    // Until a signal, or until every process has ended and none will start
    // again by itself (as foreman and process-compose do).
    let finished = 'wait: loop {
        if let Some(code) = finished(&manager, failed) {
            break Some(code);
        }
        loop {
            tokio::select! {
                _ = term.0.recv() => {
                    info!(signal = "SIGTERM", "stopping every process");
                    break 'wait None;
                }
                _ = term.1.recv() => {
                    info!(signal = "SIGINT", "stopping every process");
                    break 'wait None;
                }
                r = changes.recv() => match r {
                    // Only an end can leave nothing running: look again.
                    Ok(Event { kind: EventKind::State { to, .. }, .. }) if !to.is_active() => break,
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => break,
                    // The manager is gone: nothing runs any more.
                    Err(RecvError::Closed) => {
                        break 'wait Some(finished(&manager, failed).unwrap_or(exit::FAILURE));
                    }
                },
            }
        }
    };
    let t1 = Instant::now();
    let shutdown = manager.shutdown();
    tokio::select! {
        () = shutdown => {
            wait_logged(&mut tally, &logged).await;
            match finished {
                Some(code) => {
                    info!(exit_code = code, "every process has ended and none will restart; exiting");
                    code
                }
                None => {
                    info!(took_ms = t1.elapsed().as_millis() as u64, "all processes stopped");
                    exit::OK
                }
            }
        }
        _ = term.0.recv() => forced(&manager),
        _ = term.1.recv() => forced(&manager),
    }
}

/// `Some(exit code)` once no process runs or will run again by itself
/// (exited, failed, stopped): the worst end among them. A death by signal
/// is worst (128 + signal, as a shell reports it), then a non-zero exit
/// code, then a process that could not be started at all (1, as are the
/// `launch_failures` that never got a name); else 0. Among ends of the same
/// kind, the higher number.
fn finished(manager: &Manager, launch_failures: usize) -> Option<u8> {
    if manager.states().iter().any(|(_, s)| s.is_active()) {
        return None;
    }
    let all = manager.status_all("*").ok()?;
    if all.iter().any(|s| s.state.is_active()) {
        return None;
    }
    let mut worst: (u8, u8) = (0, 0);
    if launch_failures > 0 {
        worst = (1, exit::FAILURE);
    }
    for s in &all {
        let end = match s.last_exit {
            Some(ExitInfo {
                signal: Some(sig), ..
            }) => (3, u8::try_from(128 + sig.clamp(1, 127)).unwrap_or(255)),
            Some(ExitInfo { code: Some(c), .. }) if c != 0 => (2, (c & 0xff) as u8),
            _ if s.state == State::Failed => (1, exit::FAILURE),
            _ => (0, 0),
        };
        worst = worst.max(end);
    }
    Some(worst.1)
}

fn forced(manager: &Manager) -> u8 {
    warn!("second signal: killing every process group and exiting");
    manager.kill_all();
    exit::FORCED
}

/// Start one `[[process]]` entry (all its instances). Returns (started, failed).
async fn start_entry(m: &Manager, spec: ProcessSpec) -> (usize, usize) {
    let results = if spec.instances > 1 {
        m.start_n(spec).await
    } else {
        let name = spec.name.clone();
        vec![(name, m.start(spec).await)]
    };
    let mut counts = (0, 0);
    for (name, r) in results {
        match r {
            Ok(_) => counts.0 += 1,
            Err(e) => {
                counts.1 += 1;
                error!(process = %name, code = e.code(), hint = e.hint().unwrap_or(""), "{}", e.message());
            }
        }
    }
    counts
}

pub(crate) fn log_events(rx: tokio::sync::broadcast::Receiver<Event>) {
    log_events_counted(rx, &AtomicU64::new(0));
}

/// Log events; `logged` holds one more than the last sequence number logged.
fn log_events_counted(mut rx: tokio::sync::broadcast::Receiver<Event>, logged: &AtomicU64) {
    loop {
        match rx.blocking_recv() {
            Ok(ev) => {
                log_event(&ev);
                logged.store(ev.seq + 1, Ordering::Release);
            }
            Err(RecvError::Lagged(n)) => warn!(lost = n, "event log fell behind; events skipped"),
            Err(RecvError::Closed) => return,
        }
    }
}

/// Wait (briefly) until the log thread has logged every event emitted so far.
async fn wait_logged(tally: &mut tokio::sync::broadcast::Receiver<Event>, logged: &AtomicU64) {
    use tokio::sync::broadcast::error::TryRecvError;
    let mut last = None;
    loop {
        match tally.try_recv() {
            Ok(ev) => last = Some(ev.seq),
            Err(TryRecvError::Lagged(_)) => continue,
            Err(_) => break,
        }
    }
    let Some(last) = last else { return };
    let deadline = Instant::now() + std::time::Duration::from_secs(2);
    while logged.load(Ordering::Acquire) <= last && Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

fn log_event(ev: &Event) {
    let name = &*ev.name;
    let (from, to, exit, error, restarts) = match &ev.kind {
        EventKind::State {
            from,
            to,
            exit,
            error,
            restarts,
            ..
        } => (from, to, exit, error, restarts),
        EventKind::Health {
            probe,
            from,
            to,
            error,
        } => {
            let probe = probe.to_string();
            let (from, to) = (from.to_string(), to.to_string());
            match (to.as_str(), error) {
                ("healthy", _) => info!(process = name, probe, from, "healthy"),
                (_, Some(e)) => warn!(
                    process = name,
                    probe,
                    from,
                    health = to,
                    "probe failing: {e}"
                ),
                (_, None) => info!(process = name, probe, from, health = to, "health changed"),
            }
            return;
        }
        _ => return,
    };
    let pid = ev.pid.unwrap_or(0);
    let exit = exit.map(|e| e.to_string()).unwrap_or_default();
    match to {
        State::Running => info!(process = name, pid, "running"),
        State::Stopped if exit.is_empty() => info!(process = name, "stopped"),
        State::Stopped => info!(process = name, exit, "stopped"),
        State::Starting if *from == State::Running => {
            warn!(process = name, exit, restarts, "exited; restarting now")
        }
        State::Backoff => match error {
            Some(e) => warn!(
                process = name,
                code = e.code(),
                restarts,
                "start failed; retrying after backoff: {}",
                e.message()
            ),
            None => warn!(
                process = name,
                exit, restarts, "exited; restarting after backoff"
            ),
        },
        State::Exited => info!(process = name, exit, "exited; not restarted by policy"),
        State::Failed => match error {
            Some(e) => error!(
                process = name,
                code = e.code(),
                hint = e.hint().unwrap_or(""),
                "failed: {}",
                render::error(e).lines().next().unwrap_or("")
            ),
            None => error!(process = name, "failed"),
        },
        State::Waiting => info!(process = name, "waiting for dependencies"),
        State::Starting | State::Stopping => {}
    }
}
