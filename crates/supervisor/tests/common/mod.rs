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
///
/// A child is visible in /proc before its `execve` has finished: the kernel
/// lets a vfork parent (our spawner) go on as soon as the old address space is
/// released, before the new program's arguments are mapped, so for a moment the
/// child's cmdline reads empty. Such a process is read again until its exec is
/// done, so a count taken right after `start` returns is exact.
pub fn pids_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Some(cmd) = cmdline_after_exec(pid) else {
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

/// `pid`'s command line, waiting (at most 2 s) while it is in the middle of an
/// exec; `None` when it is gone.
fn cmdline_after_exec(pid: u32) -> Option<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        if !cmd.is_empty() || !alive(pid) || is_kernel_thread(pid) || Instant::now() > deadline {
            return Some(cmd);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Kernel threads have no command line at all (PF_KTHREAD in stat's flags).
fn is_kernel_thread(pid: u32) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = stat.rsplit_once(')')?.1;
            // Fields after the name: state, ppid, pgrp, session, tty, tpgid, flags.
            rest.split_whitespace().nth(6)?.parse::<u64>().ok()
        })
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
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
