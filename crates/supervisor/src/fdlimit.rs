//! How many processes the descriptor limit lets a supervisor hold.
//!
//! Every supervised process holds three descriptors for as long as it is
//! registered and running: the read ends of its stdout and stderr pipes and its
//! pidfd. Log files come from a bounded pool (an eighth of the limit, at most
//! 1024, see the `logs` module), and
//! the supervisor keeps a reserve for its own work (the store, the control
//! socket, API connections, probes, spawns). So the number of processes a
//! limit holds is known before any of them starts, and a request for more is
//! refused at once with the numbers, instead of spawns failing with EMFILE one
//! by one for ever.
//!
//! [`raise`] lifts the soft limit to the hard one (and, with the privilege,
//! the hard limit up to `fs.nr_open`), as Go programs and systemd do for
//! themselves. Children get the soft limit hangar started with back before
//! they exec ([`child_soft_limit`]): a program that `select()`s or closes
//! every descriptor up to its limit must not meet a million.

use std::sync::OnceLock;

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

use crate::error::{Error, ErrorKind};

/// Descriptors each registered process holds: two output pipes and a pidfd.
pub const FDS_PER_PROCESS: u64 = 3;

/// The descriptor limit before and after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit hangar was started with.
    pub original_soft: u64,
    /// The hard limit hangar was started with.
    pub original_hard: u64,
    /// The soft limit now.
    pub soft: u64,
    /// The hard limit now.
    pub hard: u64,
}

/// The soft limit to give children back, once [`raise`] changed ours.
static ORIGINAL_SOFT: OnceLock<u64> = OnceLock::new();

fn read() -> (u64, u64) {
    let l = getrlimit(Resource::Nofile);
    (l.current.unwrap_or(u64::MAX), l.maximum.unwrap_or(u64::MAX))
}

/// `fs.nr_open`: the most any process's hard limit can be.
fn nr_open() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Raise this process's descriptor limit as far as it may: the hard limit to
/// `fs.nr_open` where it has the privilege (`CAP_SYS_RESOURCE`), then the
/// soft limit to the hard one. Never lowers anything. Children started from
/// now on get the original soft limit back (see [`child_soft_limit`]).
pub fn raise() -> FdLimit {
    let (original_soft, original_hard) = read();
    let mut hard = original_hard;
    if let Some(max) = nr_open() {
        if max > hard
            && setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(original_soft),
                    maximum: Some(max),
                },
            )
            .is_ok()
        {
            hard = max;
        }
    }
    let mut soft = original_soft;
    if hard > soft
        && setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            },
        )
        .is_ok()
    {
        soft = hard;
    }
    if soft != original_soft {
        let _ = ORIGINAL_SOFT.set(original_soft);
    }
    FdLimit {
        original_soft,
        original_hard,
        soft,
        hard,
    }
}

/// The soft limit a child is to be given before exec, when [`raise`] changed
/// this process's own: the one hangar was started with (never above the hard
/// limit now in force).
pub(crate) fn child_soft_limit() -> Option<u64> {
    let original = *ORIGINAL_SOFT.get()?;
    let (soft, hard) = read();
    (soft != original).then_some(original.min(hard))
}

/// Descriptors the supervisor keeps for itself under a soft limit of `limit`:
/// a quarter of it, between 64 and 2048, plus the log file pool.
pub fn reserve(limit: u64) -> u64 {
    (limit / 4).clamp(64, 2048) + crate::logs::max_open_log_files(limit) as u64
}

/// How many processes a soft limit of `limit` holds.
pub fn capacity(limit: u64) -> u64 {
    limit.saturating_sub(reserve(limit)) / FDS_PER_PROCESS
}

/// The processes the kernel can still create: the smaller of `kernel.pid_max`
/// and `kernel.threads-max`, less the tasks that exist now (`/proc/loadavg`).
/// `None` where /proc does not say.
fn free_pids() -> Option<u64> {
    // Read once: they are set at boot, and /proc/loadavg is all a start reads.
    static MAX: OnceLock<Option<u64>> = OnceLock::new();
    let max = (*MAX.get_or_init(|| {
        let num = |p: &str| -> Option<u64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
        Some(num("/proc/sys/kernel/pid_max")?.min(num("/proc/sys/kernel/threads-max")?))
    }))?;
    let loadavg = std::fs::read_to_string("/proc/loadavg").ok()?;
    let tasks: u64 = loadavg
        .split_whitespace()
        .nth(3)?
        .split_once('/')?
        .1
        .parse()
        .ok()?;
    Some(max.saturating_sub(tasks))
}

/// Whether `total` registered processes fit, `adding` of them new: the
/// descriptors under the soft limit now in force, and the pids the kernel has
/// left. The error says what is short, by how much, and how to raise it.
pub(crate) fn check(total: u64, adding: u64) -> Result<(), Error> {
    if adding == 0 {
        return Ok(());
    }
    let (soft, hard) = read();
    let cap = capacity(soft);
    if total > cap {
        let hint = if hard > soft {
            format!("raise the soft limit (ulimit -n {hard}); hangar run and hangar serve do so themselves")
        } else if rustix::process::geteuid().is_root() {
            // Root, and still the hard limit did not move: no CAP_SYS_RESOURCE.
            "raise the hard limit before hangar starts (LimitNOFILE= in the systemd unit, \
             prlimit or `ulimit -Hn` where CAP_SYS_RESOURCE is held): hangar runs as root \
             without CAP_SYS_RESOURCE (a container that drops it?), so it cannot raise it itself"
                .to_string()
        } else {
            let max = nr_open().map_or_else(|| "fs.nr_open".to_string(), |n| n.to_string());
            format!(
                "raise the hard limit: LimitNOFILE= in the systemd unit, `ulimit -Hn` in a root shell, \
                 or run hangar as root, which raises its own limit up to fs.nr_open ({max})"
            )
        };
        return Err(Error::of(
            ErrorKind::CapacityExceeded,
            format!(
                "{total} processes need {} file descriptors ({FDS_PER_PROCESS} each) besides the {} \
                 the supervisor keeps for itself, and its limit is {soft}: it holds {cap} at most",
                total.saturating_mul(FDS_PER_PROCESS),
                reserve(soft),
            ),
        )
        .ctx("processes", total.to_string())
        .ctx("new", adding.to_string())
        .ctx("fd_soft_limit", soft.to_string())
        .ctx("fd_hard_limit", hard.to_string())
        .ctx("capacity", cap.to_string())
        .hint(hint)
        .build());
    }
    if let Some(free) = free_pids() {
        if adding > free {
            return Err(Error::of(
                ErrorKind::CapacityExceeded,
                format!(
                    "{adding} new processes, and the kernel can create {free} more tasks \
                     (kernel.pid_max and kernel.threads-max, less the tasks that exist)"
                ),
            )
            .ctx("new", adding.to_string())
            .ctx("free_pids", free.to_string())
            .hint(
                "raise kernel.pid_max (sysctl -w kernel.pid_max=4194304), or start fewer processes",
            )
            .build());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_leaves_the_reserve_and_counts_three_per_process() {
        // This machine's default: 20,000 holds 5,642 processes.
        assert_eq!(reserve(20_000), 2048 + 1024);
        assert_eq!(capacity(20_000), (20_000 - 3072) / 3);
        // A small limit keeps a small reserve and still holds some.
        assert!(capacity(1024) >= 200, "{}", capacity(1024));
        assert_eq!(capacity(10), 0);
        // Root's limit holds far more than pid_max allows.
        assert!(capacity(1 << 20) > 340_000);
    }

    #[test]
    fn the_check_names_the_numbers_and_the_fix() {
        let (soft, _) = read();
        let too_many = capacity(soft) + 1;
        let e = check(too_many, too_many).expect_err("over the limit");
        assert_eq!(e.code(), "CAPACITY_EXCEEDED");
        assert!(e.message().contains(&soft.to_string()), "{}", e.message());
        assert!(e.hint().unwrap_or("").contains("limit"), "{:?}", e.hint());
        // Nothing new is always fine, and a handful fits anywhere.
        check(too_many, 0).expect("nothing added");
        check(10, 10).expect("ten fit");
    }
}
