//! Helpers shared by the integration tests: real processes, found through /proc.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use hangar_supervisor::{Event, EventKind, ProcessSpec, RestartMode, RestartPolicy, State};
use tokio::sync::broadcast;

/// A `sleep` argument unique to one test, so /proc scans find only its processes
/// even when tests share a process.
pub fn marker() -> String {
    format!("3600.{:06}", fastrand_u32() % 1_000_000)
}

fn fastrand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.subsec_nanos() ^ std::process::id().rotate_left(16)) | 1
}

/// Pids of live (non-zombie) processes whose command line contains `needle`.
pub fn pids_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if !String::from_utf8_lossy(&cmd).contains(needle) {
            continue;
        }
        if alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// True if `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the ")" that closes the command name.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.trim().chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        }
        Err(_) => false,
    }
}

/// Wait (really) until `f` holds, up to `limit`.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

/// Receive events until one for `name` reaches `state`.
pub async fn wait_state(rx: &mut broadcast::Receiver<Event>, name: &str, state: State) -> Event {
    loop {
        let ev = rx.recv().await.expect("event stream closed");
        if &*ev.name == name {
            if let EventKind::State { to, .. } = &ev.kind {
                if *to == state {
                    return ev;
                }
            }
        }
    }
}

pub fn never(name: &str, cmd: &str, args: &[&str]) -> ProcessSpec {
    ProcessSpec::new(name, cmd)
        .args(args.iter().copied())
        .restart(RestartPolicy {
            policy: RestartMode::Never,
            ..RestartPolicy::default()
        })
}

pub fn always_now(name: &str, cmd: &str, args: &[&str]) -> ProcessSpec {
    ProcessSpec::new(name, cmd)
        .args(args.iter().copied())
        .restart(RestartPolicy {
            policy: RestartMode::Always,
            initial_interval: Duration::ZERO,
            max_retries: 0,
            ..RestartPolicy::default()
        })
}
