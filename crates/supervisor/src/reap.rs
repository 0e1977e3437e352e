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

use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
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
    parse_stat(&read_pseudo(format!("/proc/{pid}/stat")).ok()?)
}

/// The fields of a `/proc/PID/stat` after the command name, as text. The
/// name (field 2, in parentheses) is raw bytes that may hold anything,
/// ") " and invalid UTF-8 included (`prctl(PR_SET_NAME)`, or a cut at 15
/// bytes in the middle of a character): the fields start after the last
/// ')', and are ASCII.
pub(crate) fn stat_fields(stat: &[u8]) -> Option<&str> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    std::str::from_utf8(&stat[close + 1..]).ok()
}

/// The whole of a file the kernel makes up as it is read: `/proc`, a cgroup
/// mount.
///
/// `fs::read` and `fs::read_to_string` size their buffer by `statx`, which
/// says 0 for these files, then read in steps that start at 32 bytes: a
/// `/proc/PID/stat` cost a `statx` and six reads. The kernel fills a read
/// with all that fits, so here it is one read and the one that finds the end.
/// The stop of 1,000 processes read some 7,000 such files.
pub(crate) fn read_pseudo(path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    read_whole(|buf, _| f.read(buf))
}

/// [`read_pseudo`] of a file kept open, read afresh from its start: the
/// kernel makes a `/proc` list up again for a read at offset 0, and the
/// open (a path walk through `/proc`) is the dearer half of a small read.
pub(crate) fn reread_pseudo(f: &std::fs::File) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    read_whole(|buf, at| f.read_at(buf, at))
}

fn read_whole(mut read: impl FnMut(&mut [u8], u64) -> io::Result<usize>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 512];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
        match read(&mut buf[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    Ok(buf)
}

/// [`read_pseudo`] as text.
pub(crate) fn read_pseudo_string(path: impl AsRef<Path>) -> io::Result<String> {
    String::from_utf8(read_pseudo(path)?).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn parse_stat(s: &[u8]) -> Option<ProcStat> {
    let rest = stat_fields(s)?;
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
            parse_stat(line.as_bytes()),
            Some(ProcStat {
                state: 'S',
                ppid: 1,
                pgrp: 777,
                start: 123456
            })
        );
        assert_eq!(parse_stat(b"garbage"), None);
        // A name that is not UTF-8 (cut in the middle of a character).
        let mut cut = b"4243 (caf\xc3".to_vec();
        cut.extend_from_slice(b") S 1 778 778 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 654321 0 0");
        assert_eq!(
            parse_stat(&cut).map(|s| (s.pgrp, s.start)),
            Some((778, 654321))
        );
    }

    #[test]
    fn pseudo_files_read_whole_at_any_size() {
        // Under the first buffer, across it (an environment padded past 512
        // bytes, then past several doublings), and a cgroup-style one-liner.
        // Some kilobytes that do not change between two reads.
        let mounts = read_pseudo("/proc/self/mountinfo").unwrap();
        assert!(mounts.len() > 512, "{} bytes of mountinfo", mounts.len());
        assert_eq!(mounts, std::fs::read("/proc/self/mountinfo").unwrap());
        for pad in [600, 5_000, 70_000] {
            let mut child = std::process::Command::new("sleep")
                .arg("30")
                .env("HANGAR_PAD", "x".repeat(pad))
                .spawn()
                .unwrap();
            let environ = format!("/proc/{}/environ", child.id());
            let mut got = Vec::new();
            for _ in 0..500 {
                got = read_pseudo(&environ).unwrap();
                if got.windows(10).any(|w| w == b"HANGAR_PAD") {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                got.len() > pad,
                "{} bytes of environ for a {pad}-byte pad",
                got.len()
            );
            assert!(got.windows(pad).any(|w| w.iter().all(|&b| b == b'x')));
        }
        assert_eq!(
            read_pseudo_string("/proc/sys/kernel/pid_max").unwrap(),
            std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap()
        );
        assert_eq!(
            read_pseudo("/proc/no-such-file").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn a_list_kept_open_reads_afresh() {
        // This thread's children: the test's sleep is forked from it.
        let f = std::fs::File::open("/proc/thread-self/children").unwrap();
        let listed = |pid: u32| {
            String::from_utf8(reread_pseudo(&f).unwrap())
                .unwrap()
                .split_whitespace()
                .any(|p| p == pid.to_string())
        };
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let while_alive = (listed(pid), listed(pid));
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            while_alive,
            (true, true),
            "listed on every read while it lives"
        );
        assert!(!listed(pid), "gone from the list once reaped");
    }

    #[test]
    fn a_process_named_in_invalid_utf8_is_still_read() {
        // A child that names itself with a byte that is not UTF-8, then waits.
        let mut child = std::process::Command::new("python3")
            .args([
                "-c",
                "import ctypes,time; ctypes.CDLL(None).prctl(15, b'bad\\xff', 0, 0, 0); time.sleep(30)",
            ])
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut named = false;
        for _ in 0..500 {
            named = std::fs::read(format!("/proc/{pid}/comm")).is_ok_and(|c| c == b"bad\xff\n");
            if named {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let st = stat(pid);
        let _ = child.kill();
        let _ = child.wait();
        assert!(named, "the child never renamed itself");
        assert_eq!(st.map(|s| s.ppid), Some(std::process::id()));
    }

    #[test]
    fn own_stat_is_readable() {
        let st = stat(std::process::id()).expect("own stat");
        assert!(st.start > 0);
    }
}
