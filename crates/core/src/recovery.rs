//! Crash recovery: find what an earlier daemon on this data dir left running and
//! end it, before anything is started again.
//!
//! A process is a leftover when either
//! - its environment carries this data dir's `HANGAR_SUPERVISOR_ID` (every child
//!   the daemon starts gets it, and descendants inherit it), or
//! - it is in a process group the store recorded during this boot, and the
//!   group's leader is still the recorded process (its start time matches, so
//!   the pid was not reused, and a group id cannot be reused while its leader
//!   lives). A group whose leader is gone proves nothing by its number alone.
//!
//! Leftovers get SIGTERM, then SIGKILL after a grace period. Signals go through
//! pidfds opened after the process was identified and re-checked, so a pid that
//! is recycled between the scan and the kill is never hit. Exit is awaited by
//! polling the pidfds (the kernel says when each process is gone), not `/proc`.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};

/// The environment variable every daemon child carries.
pub const SUPERVISOR_ID_ENV: &str = "HANGAR_SUPERVISOR_ID";

/// A process group the store remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedGroup {
    /// Process group id (the leader's pid).
    pub pgid: u32,
    /// The leader's start time (field 22 of /proc/PID/stat) when it was recorded.
    pub leader_start: Option<u64>,
}

/// What [`stat`] reads of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// State letter (field 3): `Z` (zombie) and `X` (dead) are already gone.
    pub state: char,
    /// Process group.
    pub pgrp: u32,
    /// Start time in clock ticks after boot.
    pub start: u64,
}

/// This boot's id: start times (clock ticks since boot) and process group
/// numbers from another boot mean nothing.
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// Fields of `/proc/PID/stat`, or `None` when the process is gone.
pub fn stat(pid: u32) -> Option<ProcStat> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&s)
}

fn parse_stat(s: &str) -> Option<ProcStat> {
    // The command name (field 2) is in parentheses and may hold anything,
    // including ") ": the fields that follow start after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // rest starts at field 3 (state): field N is fields[N - 3].
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

fn has_marker(pid: u32, marker: &[u8]) -> bool {
    match std::fs::read(format!("/proc/{pid}/environ")) {
        Ok(env) => env.split(|&b| b == 0).any(|kv| kv == marker),
        Err(_) => false,
    }
}

/// Leftovers, per the rules in the module docs, as (pid, start time). Skips
/// this process.
pub fn find_leftovers(supervisor_id: &str, groups: &[RecordedGroup]) -> Vec<(u32, u64)> {
    let me = std::process::id();
    let marker = format!("{SUPERVISOR_ID_ENV}={supervisor_id}").into_bytes();
    let mut procs: HashMap<u32, ProcStat> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for ent in dir.flatten() {
            let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if pid == me {
                continue;
            }
            if let Some(st) = stat(pid) {
                procs.insert(pid, st);
            }
        }
    }
    // A recorded group is provably ours only while its leader is the recorded
    // process (same start time, same boot): the group id cannot be reused while
    // the leader lives. Once the leader is gone the number proves nothing (the
    // group may have died out and the number gone to someone else), so members
    // of such a group are found by the environment marker alone.
    let live_groups: HashSet<u32> = groups
        .iter()
        .filter(|g| {
            g.leader_start
                .is_some_and(|start| procs.get(&g.pgid).is_some_and(|l| l.start == start))
        })
        .map(|g| g.pgid)
        .collect();
    let in_our_group = |st: &ProcStat| live_groups.contains(&st.pgrp);
    let mut out: Vec<(u32, u64)> = procs
        .iter()
        .filter(|(_, st)| !matches!(st.state, 'Z' | 'X'))
        .filter(|(pid, st)| in_our_group(st) || has_marker(**pid, &marker))
        .map(|(pid, st)| (*pid, st.start))
        .collect();
    out.sort_unstable();
    out
}

/// End these processes: SIGTERM, up to `grace` to exit, then SIGKILL. Blocking;
/// run it off the async threads. Returns how many were signalled.
pub fn kill_leftovers(found: &[(u32, u64)], grace: Duration) -> usize {
    // Pin each process with a pidfd, then check it is still the one the scan
    // found (same start time): a pid recycled since is left alone.
    let mut fds: Vec<OwnedFd> = Vec::new();
    for &(pid, start) in found {
        let Some(p) = Pid::from_raw(pid as i32) else {
            continue;
        };
        let Ok(fd) = pidfd_open(p, PidfdFlags::empty()) else {
            continue;
        };
        if stat(pid).map(|s| s.start) != Some(start) {
            continue;
        }
        fds.push(fd);
    }
    let n = fds.len();
    for fd in &fds {
        let _ = pidfd_send_signal(fd.as_fd(), Signal::TERM);
    }
    let fds = wait_gone(fds, grace);
    for fd in &fds {
        let _ = pidfd_send_signal(fd.as_fd(), Signal::KILL);
    }
    let _ = wait_gone(fds, Duration::from_secs(5));
    n
}

/// Wait until every pidfd reports its process gone, or the deadline passes.
/// Returns the ones still alive.
fn wait_gone(mut fds: Vec<OwnedFd>, within: Duration) -> Vec<OwnedFd> {
    use rustix::event::{poll, PollFd, PollFlags};
    let deadline = Instant::now() + within;
    while !fds.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let ready: Vec<bool> = {
            let mut pfds: Vec<PollFd<'_>> =
                fds.iter().map(|f| PollFd::new(f, PollFlags::IN)).collect();
            let ts = rustix::event::Timespec {
                tv_sec: left.as_secs() as i64,
                tv_nsec: i64::from(left.subsec_nanos()),
            };
            if poll(&mut pfds, Some(&ts)).is_err() {
                break;
            }
            pfds.iter().map(|p| !p.revents().is_empty()).collect()
        };
        let mut i = 0;
        fds.retain(|_| {
            let keep = !ready[i];
            i += 1;
            keep
        });
    }
    fds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_tricky_name() {
        let line = "4242 (a) b (c)) S 1 777 777 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 123456 0 0";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                state: 'S',
                pgrp: 777,
                start: 123456
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_stat_is_readable() {
        let st = stat(std::process::id()).expect("own stat");
        assert!(st.start > 0);
    }
}
