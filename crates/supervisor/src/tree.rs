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
//!   and records each live one on arrival, pinned by a pidfd, with the spawn
//!   it came from: the `HANGAR_SPAWN_ID` marker in its environment, inherited
//!   from the process hangar started. Children some task waits for itself
//!   are claimed ([`hangar_base::children`]) and left alone.
//! - **Stop.** The stop signal goes to the process group, and to every
//!   descendant that left it: found by walking the children lists down from
//!   the leader while it lives, and among the recorded orphans by marker.
//!   Each is pinned with a pidfd as it is found (and taken only if, pinned,
//!   its parent is still the process it was listed under), so no signal can
//!   reach a recycled pid, and the SIGKILL that follows the leader's exit
//!   reaches the same processes even after they were reparented.
//! - **Exit.** When the leader exits, what is left of its group, its pinned
//!   descendants and the orphans carrying its marker are killed before it is
//!   reaped.
//! - **Shutdown.** What no spawn claims (an orphan that cleared or rewrote
//!   its environment and left its session before anyone saw it) ends when
//!   the supervisor shuts down: nothing outlives it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};
use rustix::process::{WaitId, WaitIdOptions};

use crate::reap;

/// The variable naming the supervisor a child belongs to.
pub const SUPERVISOR_ID_ENV: &str = "HANGAR_SUPERVISOR_ID";
/// The variable naming the supervised process a child belongs to.
pub const PROCESS_NAME_ENV: &str = "HANGAR_PROCESS_NAME";
/// The variable naming the one spawn a child descends from:
/// `<supervisor id>.<n>`, unique per spawn, so orphans are told apart even
/// between a process and a one-shot command that share a name.
pub const SPAWN_ID_ENV: &str = "HANGAR_SPAWN_ID";

/// A process pinned by a pidfd: signals through it can only reach that
/// process, whatever happens to its pid.
#[derive(Clone)]
pub(crate) struct Pinned {
    pid: u32,
    start: u64,
    fd: Arc<OwnedFd>,
}

impl Pinned {
    /// Pin `pid` if it is alive and (when given) still a child of `parent`
    /// (checked after pinning, so a recycled pid is not taken for it).
    fn new(pid: u32, parent: Option<u32>) -> Option<Pinned> {
        let fd = pidfd_open(Pid::from_raw(pid as i32)?, PidfdFlags::empty()).ok()?;
        let st = reap::stat(pid)?;
        if matches!(st.state, 'Z' | 'X') || parent.is_some_and(|p| st.ppid != p) {
            return None;
        }
        Some(Pinned {
            pid,
            start: st.start,
            fd: Arc::new(fd),
        })
    }

    fn signal(&self, sig: Signal) {
        let _ = pidfd_send_signal(self.fd.as_fd(), sig);
    }

    /// Still the process that was pinned (its pid not reused since)?
    fn same(&self) -> bool {
        reap::stat(self.pid).is_some_and(|s| s.start == self.start)
    }
}

struct Orphan {
    pinned: Pinned,
    /// The spawn it descends from (its `HANGAR_SPAWN_ID`), when readable.
    owner: Option<Box<str>>,
}

/// The subreaper's record of orphans. One per program.
pub(crate) struct Reaper {
    me: u32,
    /// Our main thread's `/proc/PID/task/TID/children`, kept open and read
    /// from its start each time; `None` on a kernel without the file, where
    /// the sweep scans `/proc` for processes whose parent is us.
    children_file: Option<Mutex<fs::File>>,
    /// One sweep at a time: only a sweep reaps orphans, so a pid in the map
    /// stays valid (an unreaped child of ours) while the sweep looks at it.
    /// Callers that need a fresh look share sweeps ([`Reaper::sweep`]).
    turns: Mutex<Turns>,
    turn_done: Condvar,
    orphans: Mutex<HashMap<u32, Orphan>>,
    /// Spawns whose process has not yet been reaped. An orphan adopted from
    /// a spawn not in here came after its process's end (its parent died
    /// just after, say) and is killed on sight.
    live: Mutex<HashSet<Arc<str>>>,
}

/// Sweeps started and finished, counted, so that callers can share them.
#[derive(Default)]
struct Turns {
    started: u64,
    finished: u64,
    running: bool,
}

/// A spawn, live from before its clone until its process is reaped (the
/// [`Lineage`] that holds it is dropped).
pub(crate) struct SpawnLife(Arc<str>);

impl SpawnLife {
    pub(crate) fn begin(id: Arc<str>) -> SpawnLife {
        if let Some(r) = reaper() {
            r.live
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(Arc::clone(&id));
        }
        SpawnLife(id)
    }

    pub(crate) fn id(&self) -> &Arc<str> {
        &self.0
    }
}

impl Drop for SpawnLife {
    fn drop(&mut self) {
        if let Some(r) = reaper() {
            r.live
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&self.0);
        }
    }
}

static REAPER: OnceLock<&'static Reaper> = OnceLock::new();

/// Tree work running at once on tokio's blocking threads.
const TREE_WORKERS: usize = 4;
static TREE_WORK: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(TREE_WORKERS);

/// Run tree work (reading other processes' `/proc` files, which can block,
/// and waiting for killed descendants to go) on tokio's blocking threads, at
/// most [`TREE_WORKERS`] at once. Unbounded, a stop of 1,000 processes started
/// 130 blocking threads, and spent its time creating them and switching
/// between them.
pub(crate) async fn off_runtime<F: FnOnce() + Send + 'static>(f: F) {
    let _permit = TREE_WORK.acquire().await;
    let _ = tokio::task::spawn_blocking(f).await;
}

/// The reaper, if this program became a subreaper through [`install`].
pub(crate) fn reaper() -> Option<&'static Reaper> {
    REAPER.get().copied()
}

/// Become the child subreaper and start sweeping on SIGCHLD (once per
/// program), on a thread of its own, so the sweep outlives any one runtime.
/// Only for a program whose other children are claimed
/// ([`hangar_base::children`]): the sweep reaps every unclaimed child of the
/// main thread.
pub(crate) fn install() -> io::Result<&'static Reaper> {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _once = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(r) = reaper() {
        return Ok(r);
    }
    let me = std::process::id();
    let children_file = match fs::File::open(format!("/proc/{me}/task/{me}/children")) {
        Ok(f) => Some(Mutex::new(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::warn!(
                "this kernel has no /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN): \
                 hangar finds the orphans it adopts by scanning /proc, which costs more"
            );
            None
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                "could not open this process's children list: hangar finds the orphans it \
                 adopts by scanning /proc, which costs more"
            );
            None
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    // The handler is in place before the first sweep: no SIGCHLD is missed.
    let mut sigchld = {
        let _enter = rt.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?
    };
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))?;
    let reaper: &'static Reaper = Box::leak(Box::new(Reaper {
        me,
        children_file,
        turns: Mutex::new(Turns::default()),
        turn_done: Condvar::new(),
        orphans: Mutex::new(HashMap::new()),
        live: Mutex::new(HashSet::new()),
    }));
    let spawned = std::thread::Builder::new()
        .name("hangar-reaper".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            rt.block_on(async move {
                reaper.sweep();
                while sigchld.recv().await.is_some() {
                    reaper.sweep();
                }
            })
        });
    if let Err(e) = spawned {
        let _ = rustix::process::set_child_subreaper(None);
        return Err(e);
    }
    let _ = REAPER.set(reaper);
    Ok(reaper)
}

impl Reaper {
    /// Our children: the main thread's (where the kernel puts orphans).
    fn list(&self) -> Vec<u32> {
        if let Some(f) = &self.children_file {
            // One reader at a time: a read at offset 0 starts the kernel's
            // listing over for every reader of the open file.
            let f = f.lock().unwrap_or_else(|p| p.into_inner());
            return pids_in(reap::reread_pseudo(&f));
        }
        let Ok(dir) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| reap::stat(*pid).is_some_and(|s| s.ppid == self.me))
            .collect()
    }

    /// Reap the dead orphans and record the live ones, by a sweep that
    /// starts after this call: the caller's own, or, when a sweep is running,
    /// the next one, which every caller waiting meanwhile shares. A stop of
    /// 1,000 processes asked for 2,000 sweeps, each reading the same list;
    /// what a caller needs is only that the list was read after it asked.
    pub(crate) fn sweep(&self) {
        let mut t = self.turns.lock().unwrap_or_else(|p| p.into_inner());
        // The first sweep to start from now on: one already running may
        // have read the list before an orphan this caller looks for arrived.
        let wanted = t.started + 1;
        loop {
            if t.finished >= wanted {
                return;
            }
            if !t.running {
                t.running = true;
                t.started += 1;
                let mine = t.started;
                drop(t);
                // The turn ends however the sweep ends; one that panicked
                // counts for nobody, and a waiter sweeps in its place.
                let end = EndTurn(self, mine);
                self.sweep_once();
                drop(end);
                return;
            }
            t = self.turn_done.wait(t).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// One pass over our children: reap the dead, record the new. Only
    /// through [`Reaper::sweep`], which runs one at a time.
    fn sweep_once(&self) {
        let mut live = HashSet::new();
        let mut fresh = Vec::new();
        {
            // Only the syscalls that must not race a spawner run under the
            // lock: list, check claims, reap, pin.
            let guard = hangar_base::children::sweep();
            let known = self.orphans.lock().unwrap_or_else(|p| p.into_inner());
            for pid in self.list() {
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
                    Ok(Some(_)) => continue,
                    Ok(None) => {}
                    // Not ours to wait for (any more): leave it.
                    Err(_) => continue,
                }
                live.insert(pid);
                if !known.contains_key(&pid) {
                    if let Some(pinned) = Pinned::new(pid, Some(self.me)) {
                        fresh.push(pinned);
                    }
                }
            }
        }
        // The rest reads other processes' /proc files (which can be slow)
        // with no spawner waiting. The pids stay valid: only a sweep reaps.
        let fresh: Vec<(u32, Orphan)> = fresh
            .into_iter()
            .map(|pinned| {
                let owner = owner_of(pinned.pid);
                if owner.is_none() {
                    tracing::debug!(
                        pid = pinned.pid,
                        "an orphan without hangar's markers reparented to hangar"
                    );
                }
                (pinned.pid, Orphan { pinned, owner })
            })
            .collect();
        // Orphans of a spawn whose process is gone already: too late for its
        // exit to have found them; they end now.
        let late: Vec<Pinned> = {
            let spawns = self.live.lock().unwrap_or_else(|p| p.into_inner());
            fresh
                .iter()
                .filter(|(_, o)| o.owner.as_deref().is_some_and(|id| !spawns.contains(id)))
                .map(|(_, o)| o.pinned.clone())
                .collect()
        };
        {
            let mut orphans = self.orphans.lock().unwrap_or_else(|p| p.into_inner());
            orphans.retain(|pid, _| live.contains(pid));
            orphans.extend(fresh);
        }
        if !late.is_empty() {
            for p in pinned_tree(late) {
                p.signal(Signal::KILL);
            }
        }
    }

    /// No orphan has reparented to us: none recorded, and none listed now
    /// (nor any child of ours waited for elsewhere: those, too, send the
    /// caller the long way). Reads our own children list, which does not
    /// block.
    fn none_adopted(&self) -> bool {
        use std::os::unix::fs::FileExt;
        let Some(f) = &self.children_file else {
            return false;
        };
        if !self
            .orphans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
        {
            return false;
        }
        // Empty is all this asks: a byte read says it.
        let f = f.lock().unwrap_or_else(|p| p.into_inner());
        let mut byte = [0u8; 1];
        matches!(f.read_at(&mut byte, 0), Ok(0))
    }

    /// The live orphans of spawn `spawn_id`, pinned, after a fresh sweep.
    /// An orphan recorded without an owner (its environment read empty, as
    /// in the middle of an exec that outlasted the retries) is read again
    /// now, so a late read does not let it outlive its process.
    fn orphans_of(&self, spawn_id: &str) -> Vec<Pinned> {
        self.sweep();
        let unknown: Vec<u32> = {
            let orphans = self.orphans.lock().unwrap_or_else(|p| p.into_inner());
            orphans
                .iter()
                .filter(|(_, o)| o.owner.is_none())
                .map(|(pid, _)| *pid)
                .collect()
        };
        let found: Vec<(u32, Box<str>)> = unknown
            .into_iter()
            .filter_map(|pid| owner_of(pid).map(|o| (pid, o)))
            .collect();
        let mut orphans = self.orphans.lock().unwrap_or_else(|p| p.into_inner());
        for (pid, owner) in found {
            if let Some(o) = orphans.get_mut(&pid) {
                o.owner = Some(owner);
            }
        }
        orphans
            .values()
            .filter(|o| o.owner.as_deref() == Some(spawn_id))
            .map(|o| o.pinned.clone())
            .collect()
    }

    /// The live orphans of supervisor `sid` and those nobody can be told
    /// apart by (no markers), pinned, after a fresh sweep.
    fn unclaimed_orphans(&self, sid: &str) -> Vec<Pinned> {
        self.sweep();
        let orphans = self.orphans.lock().unwrap_or_else(|p| p.into_inner());
        orphans
            .values()
            .filter(|o| {
                o.owner
                    .as_deref()
                    .is_none_or(|s| s.strip_prefix(sid).is_some_and(|r| r.starts_with('.')))
            })
            .map(|o| o.pinned.clone())
            .collect()
    }

    /// End the orphans of supervisor `sid` and the unmarked ones, with their
    /// descendants: SIGTERM, up to `grace`, then SIGKILL. For the
    /// supervisor's shutdown, once its processes are gone (another
    /// supervisor in this program keeps its own). Blocking. Returns how many
    /// were signalled.
    pub(crate) fn end_all(&self, sid: &str, grace: Duration) -> usize {
        let all = pinned_tree(self.unclaimed_orphans(sid));
        if all.is_empty() {
            return 0;
        }
        tracing::info!(
            processes = all.len(),
            "ending processes that outlived the process that started them"
        );
        for p in &all {
            p.signal(Signal::TERM);
            p.signal(Signal::CONT);
        }
        let left = reap::wait_gone(all.iter().map(|p| Arc::clone(&p.fd)).collect(), grace);
        for fd in &left {
            let _ = pidfd_send_signal(fd.as_fd(), Signal::KILL);
        }
        self.sweep();
        all.len()
    }

    /// SIGKILL the orphans [`Reaper::end_all`] would end, now.
    pub(crate) fn kill_all_now(&self, sid: &str) {
        for p in pinned_tree(self.unclaimed_orphans(sid)) {
            p.signal(Signal::KILL);
        }
    }
}

/// Ends a sweep's turn, even if the sweep panicked.
struct EndTurn<'a>(&'a Reaper, u64);

impl Drop for EndTurn<'_> {
    fn drop(&mut self) {
        let mut t = self.0.turns.lock().unwrap_or_else(|p| p.into_inner());
        t.running = false;
        if !std::thread::panicking() {
            t.finished = self.1;
        }
        self.0.turn_done.notify_all();
    }
}

/// The children of thread `tid` of process `pid`.
fn thread_children(pid: u32, tid: u32) -> Vec<u32> {
    pids_in(reap::read_pseudo(format!(
        "/proc/{pid}/task/{tid}/children"
    )))
}

/// The pids of a children list (none if it could not be read).
fn pids_in(list: io::Result<Vec<u8>>) -> Vec<u32> {
    list.map(|b| {
        b.split(u8::is_ascii_whitespace)
            .filter_map(|p| std::str::from_utf8(p).ok()?.parse().ok())
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

/// [`children`], failing where any list could not be read (a thread that
/// ended between the listing and the read included).
fn try_children(pid: u32) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    for t in fs::read_dir(format!("/proc/{pid}/task"))? {
        let t = t?;
        let tid = t.file_name();
        let list = reap::read_pseudo(format!(
            "/proc/{pid}/task/{}/children",
            tid.to_string_lossy()
        ));
        out.extend(pids_in(Ok(list?)));
    }
    Ok(out)
}

/// The pinned `roots` and every process below them, each pinned as it is
/// found: a child is taken only if, once pinned, its parent is still the
/// process it was listed under, and a parent's list only while the parent
/// is still the process that was pinned. Each process once.
pub(crate) fn pinned_tree(roots: Vec<Pinned>) -> Vec<Pinned> {
    let mut seen: HashSet<u32> = roots.iter().map(|p| p.pid).collect();
    let mut out = roots;
    let mut i = 0;
    let mut queue: VecDeque<usize> = (0..out.len()).collect();
    while let Some(at) = queue.pop_front() {
        i += 1;
        if i > 100_000 {
            break;
        }
        let parent = out[at].clone();
        let kids = children(parent.pid);
        if !parent.same() {
            continue;
        }
        for c in kids {
            if !seen.insert(c) {
                continue;
            }
            if let Some(p) = Pinned::new(c, Some(parent.pid)) {
                out.push(p);
                queue.push_back(out.len() - 1);
            }
        }
    }
    out
}

/// `HANGAR_SPAWN_ID` from a process's environment. A process in the middle
/// of an exec reads an empty environment (and command line) for a moment,
/// until the new program's are mapped: read it again, briefly.
fn owner_of(pid: u32) -> Option<Box<str>> {
    let mut env = Vec::new();
    for _ in 0..50 {
        env = reap::read_pseudo(format!("/proc/{pid}/environ")).ok()?;
        let mid_exec = env.is_empty()
            && reap::read_pseudo(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.is_empty());
        if !mid_exec {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let prefix = format!("{SPAWN_ID_ENV}=");
    env.split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(prefix.as_bytes()))
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(Box::from)
}

/// How long the end of a process waits for the descendants it SIGKILLed to
/// exit. SIGKILL is not refused; only a process in uninterruptible sleep
/// (a hung NFS read) can take longer.
pub(crate) const ESCAPED_EXIT_WAIT: Duration = Duration::from_secs(5);

/// The descendants of one spawn that left its process group, pinned by pidfd
/// as they are found.
pub(crate) struct Lineage {
    spawn: SpawnLife,
    pinned: Mutex<Vec<Pinned>>,
}

impl Lineage {
    pub(crate) fn new(spawn: SpawnLife) -> Lineage {
        Lineage {
            spawn,
            pinned: Mutex::new(Vec::new()),
        }
    }

    /// Nothing of this spawn can be outside its process group: `leader`
    /// (when given; an unreaped child of ours) has no child, nothing was
    /// pinned, and no orphan has reparented to us. Children lists only (the
    /// leader's, one per thread, then ours), which do not block, so the
    /// usual stop and exit (a leader alone in its group) skip the trip off
    /// the runtime that [`Lineage::pin_escaped`] and [`Lineage::kill_escaped`]
    /// take. The leader's list is read first: a child of it that exits
    /// between the two reads hands its own children to us, where the second
    /// read sees them. A list that cannot be read counts as not alone.
    pub(crate) fn alone(&self, leader: Option<u32>) -> bool {
        self.pinned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
            && leader.is_none_or(|l| try_children(l).is_ok_and(|c| c.is_empty()))
            && reaper().is_none_or(Reaper::none_adopted)
    }

    /// Find what of `leader`'s tree is outside its process group (the group
    /// itself is signalled as a group) and pin it. Before the group is
    /// signalled: a leader that dies first hands its children to us, and an
    /// orphan without markers could no longer be told apart. `leader` must
    /// be an unreaped child of ours. Blocking (reads /proc).
    pub(crate) fn pin_escaped(&self, leader: u32) {
        // The leader needs no pin: unreaped, its pid cannot be reused, so
        // its children's list is its own.
        let mut roots: Vec<Pinned> = children(leader)
            .into_iter()
            .filter_map(|c| Pinned::new(c, Some(leader)))
            .collect();
        if let Some(r) = reaper() {
            roots.extend(r.orphans_of(self.spawn.id()));
        }
        if roots.is_empty() {
            return;
        }
        let found = pinned_tree(roots);
        let mut pinned = self.pinned.lock().unwrap_or_else(|p| p.into_inner());
        for p in found {
            // Its group now: an orphan adopted in the group may have left it
            // since (daemon(3): fork, exit, setsid).
            if reap::stat(p.pid).is_some_and(|s| s.pgrp == leader) {
                continue;
            }
            if !pinned.iter().any(|q| q.pid == p.pid && q.start == p.start) {
                pinned.push(p);
            }
        }
    }

    /// Send `sig` (and SIGCONT) to what [`Lineage::pin_escaped`] pinned.
    pub(crate) fn signal_pinned(&self, sig: Signal) {
        for p in self.pinned.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            p.signal(sig);
            p.signal(Signal::CONT);
        }
    }

    /// SIGKILL what was pinned, and every orphan of this spawn with its
    /// descendants. For when the leader has exited (its group is killed by
    /// the caller). Blocking (reads /proc).
    ///
    /// Returns once every process it killed has exited (or, for one stuck in
    /// uninterruptible sleep, after [`ESCAPED_EXIT_WAIT`], with a warning):
    /// a restart that follows never overlaps the old tree, as systemd waits
    /// for a unit's cgroup to empty before starting it again.
    pub(crate) fn kill_escaped(&self) {
        let mut killed =
            std::mem::take(&mut *self.pinned.lock().unwrap_or_else(|p| p.into_inner()));
        for p in &killed {
            p.signal(Signal::KILL);
        }
        if let Some(r) = reaper() {
            let orphans = r.orphans_of(self.spawn.id());
            if !orphans.is_empty() {
                for p in pinned_tree(orphans) {
                    p.signal(Signal::KILL);
                    killed.push(p);
                }
            }
        }
        if killed.is_empty() {
            return;
        }
        let left = reap::wait_gone(
            killed.iter().map(|p| Arc::clone(&p.fd)).collect(),
            ESCAPED_EXIT_WAIT,
        );
        if !left.is_empty() {
            tracing::warn!(
                spawn = %self.spawn.id(),
                left = left.len(),
                "escaped descendants did not exit within {ESCAPED_EXIT_WAIT:?} of SIGKILL \
                 (uninterruptible sleep?); going on without them"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_with_a_child_is_not_alone() {
        let lineage = Lineage::new(SpawnLife::begin(Arc::from("tree-test.1")));
        let mut lone = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .unwrap();
        let mut sh = std::process::Command::new("sh")
            .args(["-c", "sleep 100 & wait"])
            .spawn()
            .unwrap();
        let (lone_pid, sh_pid) = (lone.id(), sh.id());
        let mut forked = false;
        for _ in 0..500 {
            forked = !children(sh_pid).is_empty();
            if forked {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let kids = children(sh_pid);
        let (lone_alone, sh_alone) = (lineage.alone(Some(lone_pid)), lineage.alone(Some(sh_pid)));
        for p in kids {
            let _ = rustix::process::kill_process(Pid::from_raw(p as i32).unwrap(), Signal::KILL);
        }
        for c in [&mut lone, &mut sh] {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert!(forked, "the shell never forked its sleep");
        assert!(lone_alone, "a sleep with no child is alone in its group");
        assert!(!sh_alone, "a shell with a child must take the long way");
    }

    #[test]
    fn descendants_walk_down_the_tree() {
        let mut sh = std::process::Command::new("sh")
            .args(["-c", "sleep 100 & sleep 100 & (sleep 100 & wait) & wait"])
            .spawn()
            .unwrap();
        let pid = sh.id();
        let mut d = Vec::new();
        for _ in 0..200 {
            d = pinned_tree(Pinned::new(pid, None).into_iter().collect())
                .into_iter()
                .skip(1)
                .map(|p| p.pid)
                .collect();
            if d.len() == 4 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(d.len(), 4, "two sleeps, a subshell and its sleep: {d:?}");
        let _ =
            rustix::process::kill_process_group(Pid::from_raw(pid as i32).unwrap(), Signal::KILL);
        let _ = sh.kill();
        let _ = sh.wait();
        for p in d {
            let _ = rustix::process::kill_process(Pid::from_raw(p as i32).unwrap(), Signal::KILL);
        }
    }
}
