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
//! This module decides which processes are leftovers; the supervisor ends them
//! ([`hangar_supervisor::reap`]): SIGTERM, then SIGKILL after a grace period,
//! through pidfds opened after each process was identified and re-checked
//! against the scan, so a pid that is recycled between the scan and the kill
//! is never hit.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

pub use hangar_supervisor::reap::{stat, ProcStat};

/// The environment variable every daemon child carries.
pub use hangar_supervisor::SUPERVISOR_ID_ENV;

/// A process group the store remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedGroup {
    /// Process group id (the leader's pid).
    pub pgid: u32,
    /// The leader's start time (field 22 of /proc/PID/stat) when it was recorded.
    pub leader_start: Option<u64>,
}

/// This boot's id: start times (clock ticks since boot) and process group
/// numbers from another boot mean nothing.
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
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

/// End these processes (as [`find_leftovers`] found them): SIGTERM, up to
/// `grace` to exit, then SIGKILL. The supervisor signals
/// ([`hangar_supervisor::reap::end_pinned`]): it pins each with a pidfd and
/// re-checks its start time against the scan before any signal. Blocking; run
/// it off the async threads. Returns how many were signalled.
pub fn kill_leftovers(found: &[(u32, u64)], grace: Duration) -> usize {
    hangar_supervisor::reap::end_pinned(found, grace)
}
