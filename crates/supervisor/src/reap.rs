//! Ending processes that someone else proved are theirs: what an earlier
//! daemon left running, found by the daemon's recovery scan (its environment
//! marker, or a recorded process group whose leader is still the recorded
//! process).
//!
//! The caller decides *which* processes are its own and says so with each
//! one's pid and start time (field 22 of `/proc/PID/stat`). [`end_pinned`]
//! pins each with a pidfd, then re-checks its start time against the scan, so
//! a pid that was recycled between the scan and the signal is never hit
//! (a pidfd refers to one process, not to a number). The pinned ones get
//! SIGTERM through their pidfds, then SIGKILL after a grace period. Exit is
//! awaited by polling the pidfds (the kernel says when each process is gone),
//! not `/proc`.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};

/// What [`stat`] reads of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// State letter (field 3): `Z` (zombie) and `X` (dead) are already gone.
    pub state: char,
    /// Parent process.
    pub ppid: u32,
    /// Process group.
    pub pgrp: u32,
    /// Start time in clock ticks after boot.
    pub start: u64,
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
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// End these processes, each given as (pid, start time) by a scan that proved
/// it is the caller's: SIGTERM, up to `grace` to exit, then SIGKILL. Blocking;
/// run it off the async threads. Returns how many were signalled.
pub fn end_pinned(found: &[(u32, u64)], grace: Duration) -> usize {
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
pub(crate) fn wait_gone<F: AsFd>(mut fds: Vec<F>, within: Duration) -> Vec<F> {
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
                ppid: 1,
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
