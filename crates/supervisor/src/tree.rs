//! A process's whole descendant tree, and the orphans that reparent to the
//! supervisor.
//!
//! A process group holds what a child forks, until something leaves it:
//! `setsid`, a double-forking daemon, `nohup cmd &` in a shell whose own exit
//! comes first. So on top of the group (and the cgroup, where there is one):
//!
//! - **Subreaper.** [`install`] makes this program the child subreaper
//!   (`PR_SET_CHILD_SUBREAPER`, as tini and s6-svscan are): an orphan of any
//!   descendant is reparented here instead of to init. The kernel hands it to
//!   the first live thread of the subreaper, the main thread, never to the
//!   spawner threads that are the parents of the supervised processes. A
//!   sweep, run on every SIGCHLD, lists the main thread's children
//!   (`/proc/self/task/PID/children`), reaps the dead ones (no zombie stays)
//!   and records each live one on arrival, with the process it came from: the
//!   `HANGAR_SUPERVISOR_ID` and `HANGAR_PROCESS_NAME` markers in its
//!   environment, inherited from the process that started it. Children some
//!   task waits for itself are claimed ([`hangar_base::children`]) and left
//!   alone.
//! - **Stop.** The stop signal goes to the process group, and to every
//!   descendant that left it: found by walking the children lists down from
//!   the leader while it lives, and among the recorded orphans by marker. Each
//!   is pinned with a pidfd, so the SIGKILL that follows the leader's exit
//!   reaches the same processes even after they were reparented.
//! - **Exit.** When the leader exits, what is left of its group, its pinned
//!   descendants and the orphans carrying its marker are killed before it is
//!   reaped.
//! - **Shutdown.** What no process claims (an orphan that cleared its
//!   environment and left its session before anyone saw it) ends when the
//!   supervisor shuts down: nothing outlives it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};
use rustix::process::{WaitId, WaitIdOptions};

use crate::reap;

/// The variable naming the supervisor a child belongs to.
pub const SUPERVISOR_ID_ENV: &str = "HANGAR_SUPERVISOR_ID";
/// The variable naming the supervised process a child belongs to.
pub const PROCESS_NAME_ENV: &str = "HANGAR_PROCESS_NAME";

/// Whom an orphan belongs to, read from its environment: (supervisor id,
/// process name).
type Owner = (Box<str>, Box<str>);

struct Orphan {
    /// Start time, so a recycled pid is not taken for the recorded orphan.
    start: u64,
    owner: Option<Owner>,
}

/// The subreaper's record of orphans. One per program.
pub(crate) struct Reaper {
    me: u32,
    orphans: Mutex<HashMap<u32, Orphan>>,
}

static REAPER: OnceLock<Reaper> = OnceLock::new();

/// The reaper, if this program became a subreaper through [`install`].
pub(crate) fn reaper() -> Option<&'static Reaper> {
    REAPER.get()
}

/// Become the child subreaper and start sweeping on SIGCHLD (once per
/// program), on a thread of its own, so the sweep outlives any one runtime.
/// Only for a program whose other children are claimed
/// ([`hangar_base::children`]): the sweep reaps every unclaimed child of the
/// main thread.
pub(crate) fn install() -> io::Result<&'static Reaper> {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _once = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(r) = REAPER.get() {
        return Ok(r);
    }
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    // The handler is in place before the first sweep: no SIGCHLD is missed.
    let mut sigchld = {
        let _enter = rt.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?
    };
    let reaper = REAPER.get_or_init(|| Reaper {
        me: std::process::id(),
        orphans: Mutex::new(HashMap::new()),
    });
    std::thread::Builder::new()
        .name("hangar-reaper".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            rt.block_on(async move {
                reaper.sweep();
                while sigchld.recv().await.is_some() {
                    reaper.sweep();
                }
            })
        })?;
    Ok(reaper)
}

impl Reaper {
    /// Reap the dead orphans and record the live ones. Returns how many were
    /// reaped in this pass.
    pub(crate) fn sweep(&self) -> usize {
        let guard = hangar_base::children::sweep();
        let kids = thread_children(self.me, self.me);
        let mut orphans = self.orphans.lock().unwrap_or_else(|p| p.into_inner());
        let mut live = HashSet::with_capacity(kids.len());
        let mut reaped = 0;
        for pid in kids {
            if guard.is_claimed(pid) {
                continue;
            }
            let Some(p) = Pid::from_raw(pid as i32) else {
                continue;
            };
            match rustix::process::waitid(
                WaitId::Pid(p),
                WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
            ) {
                Ok(Some(_)) => {
                    reaped += 1;
                    continue;
                }
                Ok(None) => {}
                // Not ours to wait for (any more): leave it.
                Err(_) => continue,
            }
            let Some(st) = reap::stat(pid) else { continue };
            live.insert(pid);
            let known = orphans.get(&pid).is_some_and(|o| o.start == st.start);
            if !known {
                let owner = owner_of(pid);
                if owner.is_none() {
                    tracing::debug!(
                        pid,
                        "an orphan without hangar's markers reparented to hangar"
                    );
                }
                orphans.insert(
                    pid,
                    Orphan {
                        start: st.start,
                        owner,
                    },
                );
            }
        }
        orphans.retain(|pid, _| live.contains(pid));
        drop(orphans);
        drop(guard);
        reaped
    }

    /// The live orphans that carry process `name` of supervisor `sid`, after a
    /// fresh sweep.
    fn orphans_of(&self, sid: &str, name: &str) -> Vec<u32> {
        self.sweep();
        let orphans = self.orphans.lock().unwrap_or_else(|p| p.into_inner());
        orphans
            .iter()
            .filter(|(_, o)| {
                o.owner
                    .as_ref()
                    .is_some_and(|(s, n)| &**s == sid && &**n == name)
            })
            .map(|(pid, _)| *pid)
            .collect()
    }

    /// The live orphans of supervisor `sid` and those nobody can be told
    /// apart by (no markers), after a fresh sweep.
    fn unclaimed_orphans(&self, sid: &str) -> Vec<u32> {
        self.sweep();
        let orphans = self.orphans.lock().unwrap_or_else(|p| p.into_inner());
        orphans
            .iter()
            .filter(|(_, o)| o.owner.as_ref().is_none_or(|(s, _)| &**s == sid))
            .map(|(pid, _)| *pid)
            .collect()
    }

    /// End the orphans of supervisor `sid` and the unmarked ones, with their
    /// descendants: SIGTERM, up to `grace`, then SIGKILL. For the
    /// supervisor's shutdown, once its processes are gone (another
    /// supervisor in this program keeps its own). Blocking. Returns how many
    /// were signalled.
    pub(crate) fn end_all(&self, sid: &str, grace: Duration) -> usize {
        let roots = self.unclaimed_orphans(sid);
        if roots.is_empty() {
            return 0;
        }
        let found: Vec<(u32, u64)> = descendants(&roots, true)
            .into_iter()
            .filter_map(|pid| Some((pid, reap::stat(pid)?.start)))
            .collect();
        tracing::info!(
            processes = found.len(),
            "ending processes that outlived the process that started them"
        );
        let n = reap::end_pinned(&found, grace);
        self.sweep();
        n
    }
}

impl Reaper {
    /// SIGKILL the orphans [`Reaper::end_all`] would end, now.
    pub(crate) fn kill_all_now(&self, sid: &str) {
        for pid in descendants(&self.unclaimed_orphans(sid), true) {
            if let Some(p) = Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(p, Signal::KILL);
            }
        }
    }
}

/// The children of thread `tid` of process `pid`.
fn thread_children(pid: u32, tid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/task/{tid}/children"))
        .map(|s| {
            s.split_ascii_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The children of process `pid`, across its threads.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in tasks.flatten() {
        if let Some(tid) = t.file_name().to_str().and_then(|s| s.parse().ok()) {
            out.extend(thread_children(pid, tid));
        }
    }
    out
}

/// The processes below `roots` (and the roots themselves, with `with_roots`),
/// walking the children lists down. Each pid once.
pub(crate) fn descendants(roots: &[u32], with_roots: bool) -> Vec<u32> {
    let mut seen: HashSet<u32> = roots.iter().copied().collect();
    let mut out: Vec<u32> = if with_roots {
        roots.to_vec()
    } else {
        Vec::new()
    };
    let mut queue: VecDeque<u32> = roots.iter().copied().collect();
    while let Some(p) = queue.pop_front() {
        for c in children(p) {
            if seen.insert(c) {
                out.push(c);
                queue.push_back(c);
            }
        }
    }
    out
}

/// Supervisor id and process name from a process's environment.
fn owner_of(pid: u32) -> Option<Owner> {
    let env = fs::read(format!("/proc/{pid}/environ")).ok()?;
    let (mut sid, mut name) = (None, None);
    for kv in env.split(|&b| b == 0) {
        let Some(eq) = kv.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (k, v) = (&kv[..eq], &kv[eq + 1..]);
        if k == SUPERVISOR_ID_ENV.as_bytes() && sid.is_none() {
            sid = std::str::from_utf8(v).ok().map(Box::from);
        } else if k == PROCESS_NAME_ENV.as_bytes() && name.is_none() {
            name = std::str::from_utf8(v).ok().map(Box::from);
        }
    }
    Some((sid?, name?))
}

/// The descendants of one supervised process that left its process group,
/// pinned by pidfd as they are found.
pub(crate) struct Lineage {
    sid: std::sync::Arc<str>,
    name: std::sync::Arc<str>,
    pinned: Mutex<Vec<OwnedFd>>,
}

impl Lineage {
    pub(crate) fn new(sid: std::sync::Arc<str>, name: std::sync::Arc<str>) -> Lineage {
        Lineage {
            sid,
            name,
            pinned: Mutex::new(Vec::new()),
        }
    }

    /// Find what of `leader`'s tree is outside its process group (the group
    /// itself is signalled as a group), pin it, and send it `sig`. `leader`
    /// must not have been reaped yet.
    pub(crate) fn signal_escaped(&self, leader: u32, sig: Signal) {
        let mut found = descendants(&[leader], false);
        if let Some(r) = reaper() {
            let orphans = r.orphans_of(&self.sid, &self.name);
            found.extend(descendants(&orphans, true));
        }
        let mut pinned = self.pinned.lock().unwrap_or_else(|p| p.into_inner());
        for pid in found {
            let Some(st) = reap::stat(pid) else { continue };
            if st.pgrp == leader || matches!(st.state, 'Z' | 'X') {
                continue;
            }
            let Some(p) = Pid::from_raw(pid as i32) else {
                continue;
            };
            let Ok(fd) = pidfd_open(p, PidfdFlags::empty()) else {
                continue;
            };
            // Pinned now; still the process found (not a recycled pid)?
            if reap::stat(pid).map(|s| s.start) != Some(st.start) {
                continue;
            }
            let _ = pidfd_send_signal(fd.as_fd(), sig);
            let _ = pidfd_send_signal(fd.as_fd(), Signal::CONT);
            pinned.push(fd);
        }
    }

    /// SIGKILL what was pinned, and every orphan carrying this process's
    /// markers with its descendants. For when the leader has exited (its
    /// group is killed by the caller).
    pub(crate) fn kill_escaped(&self) {
        let pinned = std::mem::take(&mut *self.pinned.lock().unwrap_or_else(|p| p.into_inner()));
        for fd in &pinned {
            let _ = pidfd_send_signal(fd.as_fd(), Signal::KILL);
        }
        let Some(r) = reaper() else { return };
        let orphans = r.orphans_of(&self.sid, &self.name);
        if orphans.is_empty() {
            return;
        }
        for pid in descendants(&orphans, true) {
            let Some(st) = reap::stat(pid) else { continue };
            let Some(p) = Pid::from_raw(pid as i32) else {
                continue;
            };
            let Ok(fd) = pidfd_open(p, PidfdFlags::empty()) else {
                continue;
            };
            if reap::stat(pid).map(|s| s.start) == Some(st.start) {
                let _ = pidfd_send_signal(fd.as_fd(), Signal::KILL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_walk_down_the_tree() {
        let mut sh = std::process::Command::new("sh")
            .args(["-c", "sleep 100 & sleep 100 & (sleep 100 & wait) & wait"])
            .spawn()
            .unwrap();
        let pid = sh.id();
        let mut d = Vec::new();
        for _ in 0..200 {
            d = descendants(&[pid], false);
            if d.len() == 4 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(d.len(), 4, "two sleeps, a subshell and its sleep: {d:?}");
        assert_eq!(descendants(&[pid], true).len(), 5);
        let _ =
            rustix::process::kill_process_group(Pid::from_raw(pid as i32).unwrap(), Signal::KILL);
        let _ = sh.kill();
        let _ = sh.wait();
        for p in d {
            let _ = rustix::process::kill_process(Pid::from_raw(p as i32).unwrap(), Signal::KILL);
        }
    }
}
