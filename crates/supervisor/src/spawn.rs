//! Spawning children: a small pool of dedicated threads that clone and exec.
//!
//! Why threads of our own: `PR_SET_PDEATHSIG` fires when the *thread* that forked
//! the child exits, not the process. Tokio's blocking pool retires idle threads, so
//! a child forked there would be killed minutes later for no reason. The spawner
//! threads live as long as any process handle does, and keep clone+exec off the
//! runtime.
//!
//! Why not `std::process::Command`: it can set the parent-death signal only in a
//! `pre_exec` hook, which forces a full `fork()`. Forking copies the page tables of
//! the whole supervisor, and the child then tears that copy down at exec; profiles
//! showed that as about half of all CPU spent starting 1000 processes. Here the
//! child is created with `CLONE_VM | CLONE_VFORK`, as `posix_spawn` does, and runs a
//! few raw syscalls (reset signals, setsid, prctl, dup2, chdir, execve) on a small
//! stack of its own: the cost no longer grows with the supervisor's size.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rustix::pipe::PipeFlags;
use rustix::process::{Pid, PidfdFlags, Signal};
use tokio::sync::oneshot;

use crate::cgroup::{Placement, ProcessCgroup, CGROUP_JOIN_FAILED};
use crate::logs::{LogPump, ProcessLog, Stream};
use crate::privs::{
    self, SetupError, NETNS_JOIN_FAILED, PRIVS_NO_NEW_PRIVS_FAILED, PRIVS_SETID_FAILED,
};
use crate::spec::ProcessSpec;
use crate::tree::{SpawnLife, PROCESS_NAME_ENV, SPAWN_ID_ENV, SUPERVISOR_ID_ENV};

/// What to spawn. Only shared references: a thousand queued requests must not hold
/// a thousand copies of the environment. The spawner thread builds argv and envp
/// from them right before clone, one request at a time.
#[derive(Clone)]
pub(crate) struct SpawnRequest {
    pub spec: Arc<ProcessSpec>,
    /// hangar's own environment, when the spec inherits it.
    pub base_env: Option<Arc<Vec<(String, String)>>>,
    /// The manager's global environment.
    pub global_env: Arc<Vec<(String, String)>>,
    pub output: Output,
}

/// Where a child's stdout and stderr go.
#[derive(Clone)]
pub(crate) enum Output {
    /// Two pipes the log thread drains into the process's log.
    Log(Arc<ProcessLog>),
    /// One pipe for both streams, so a reader sees them in the order they were
    /// written; its read end comes back in [`Spawned::output`].
    Capture,
}

impl SpawnRequest {
    /// `KEY=VALUE` strings, highest precedence first wins: the markers (the
    /// process name, the supervisor id `sid` and this spawn's id, which
    /// descendants inherit and which tell whom an orphan belongs to), the
    /// spec's env, the global env, hangar's env.
    fn envp(&self, sid: &str, spawn_id: &str) -> io::Result<Vec<CString>> {
        let spec = &self.spec;
        let base = self.base_env.as_deref().map(Vec::as_slice).unwrap_or(&[]);
        let mut seen = std::collections::HashSet::with_capacity(base.len() + 8);
        let mut out = Vec::with_capacity(base.len() + spec.env.len() + 1);
        let name = (PROCESS_NAME_ENV, spec.name.as_str());
        let layers = [name, (SUPERVISOR_ID_ENV, sid), (SPAWN_ID_ENV, spawn_id)]
            .into_iter()
            .chain(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .chain(
                self.global_env
                    .iter()
                    .rev()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .chain(base.iter().rev().map(|(k, v)| (k.as_str(), v.as_str())));
        for (k, v) in layers {
            if seen.insert(k) {
                out.push(cstring(&format!("{k}={v}"))?);
            }
        }
        Ok(out)
    }

    /// The child's PATH, for the executable search.
    fn path(&self) -> Option<&str> {
        let spec = &self.spec;
        if let Some(p) = spec.env.get("PATH") {
            return Some(p);
        }
        find_path(&self.global_env).or_else(|| self.base_env.as_deref().and_then(|b| find_path(b)))
    }
}

/// A child that was spawned: its pid (= its process group and session id) and a
/// pidfd that becomes readable when it exits.
pub(crate) struct Spawned {
    pub pid: u32,
    pub pidfd: OwnedFd,
    /// Keeps the subreaper's orphan sweep off this child until it is reaped.
    pub claim: hangar_base::children::Claim,
    /// Its `HANGAR_SPAWN_ID` (what its orphans are known by), live until the
    /// child is reaped.
    pub spawn: SpawnLife,
    /// The child's cgroup, when its spec has `limits` and the host has cgroups.
    pub cgroup: Option<ProcessCgroup>,
    /// The read end of the child's stdout and stderr, for [`Output::Capture`].
    pub output: Option<OwnedFd>,
}

type Reply = oneshot::Sender<io::Result<Spawned>>;

/// Handle to the spawner threads. Cloning is cheap; the threads stop when the last
/// handle is dropped.
#[derive(Clone)]
pub(crate) struct Spawner {
    tx: mpsc::Sender<(SpawnRequest, Reply)>,
}

impl Spawner {
    pub(crate) fn new(
        threads: usize,
        logs: LogPump,
        placement: Arc<Placement>,
    ) -> io::Result<Spawner> {
        let (tx, rx) = mpsc::channel::<(SpawnRequest, Reply)>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            let logs = logs.clone();
            let placement = Arc::clone(&placement);
            let mut thread = SpawnerThread::new()?;
            std::thread::Builder::new()
                .name(format!("hangar-spawn-{i}"))
                .stack_size(256 * 1024)
                .spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok((req, reply)) = job else { return };
                    // If the requester is gone (its task was cancelled), nobody will
                    // supervise this child: kill and reap it rather than leak it.
                    let limited = req.spec.limits.is_some();
                    let mut res = spawn_one(req.clone(), &logs, &placement, &mut thread, true);
                    // A cgroup the process did not ask for must not cost it
                    // its start: without one, it is still tracked by its tree.
                    if !limited && res.as_ref().err().and_then(SetupError::find).is_some_and(|e| e.code == CGROUP_JOIN_FAILED) {
                        tracing::warn!(process = %req.spec.name, "could not join a cgroup; starting without one");
                        res = spawn_one(req, &logs, &placement, &mut thread, false);
                    }
                    if let Err(Ok(orphan)) = reply.send(res) {
                        let _ = kill_group(orphan.pid, Signal::KILL);
                        // Blocking wait by pid: the pidfd is non-blocking, and this
                        // thread may block.
                        let _ = rustix::process::waitpid(
                            Pid::from_raw(orphan.pid as i32),
                            rustix::process::WaitOptions::empty(),
                        );
                        if let Some(cg) = orphan.cgroup {
                            let _ = cg.remove_blocking();
                        }
                    }
                })?;
        }
        Ok(Spawner { tx })
    }

    pub(crate) async fn spawn(&self, req: SpawnRequest) -> io::Result<Spawned> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((req, reply))
            .map_err(|_| io::Error::other("spawner threads are gone"))?;
        rx.await
            .map_err(|_| io::Error::other("spawner thread dropped the request"))?
    }
}

/// Per-thread spawning resources, allocated once.
///
/// The child shares our descriptor table (CLONE_FILES) and, as its first act,
/// takes a private copy of only its low end with `close_range(…, UNSHARE)`. Copying
/// the whole table (a pidfd and two pipes per supervised process) and closing it
/// again at exec made every spawn cost O(processes). So the three descriptors the
/// child needs are parked in `slots`, low-numbered descriptors this thread reserved
/// when it started, and only `0..=max(slots)` is copied.
struct SpawnerThread {
    /// The child's stack while it runs between clone and exec (it shares our memory).
    stack: Vec<u8>,
    /// /dev/null, to park in the slots between spawns.
    dev_null: OwnedFd,
    /// Reserved descriptors: the child's stdin, stdout and stderr during a spawn,
    /// /dev/null otherwise.
    slots: [OwnedFd; 3],
    /// Whether the kernel has close_range with CLOSE_RANGE_UNSHARE (Linux 5.9);
    /// without it the child gets a full copy of the table (CLONE_FILES unset).
    unshare: bool,
}

impl SpawnerThread {
    fn new() -> io::Result<SpawnerThread> {
        let dev_null = rustix::fs::open(
            "/dev/null",
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        let slot = || rustix::io::fcntl_dupfd_cloexec(&dev_null, 3);
        let slots = [slot()?, slot()?, slot()?];
        // SAFETY: close_range on a range holding no descriptor closes nothing; it
        // only tells whether the syscall exists.
        let unshare =
            unsafe { libc::syscall(libc::SYS_close_range, u32::MAX - 1, u32::MAX, 0u32) == 0 };
        Ok(SpawnerThread {
            stack: vec![0u8; CHILD_STACK],
            dev_null,
            slots,
            unshare,
        })
    }
}

const CHILD_STACK: usize = 64 * 1024;

/// What the child needs between clone and exec, prepared entirely beforehand. The
/// child writes `err`/`stage` when something fails; the parent reads them after
/// clone returns (CLONE_VFORK suspends it until the child has exec'd or exited).
#[repr(C)]
struct ChildArgs {
    paths: *const *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    fds: [libc::c_int; 3],
    /// With a shared descriptor table: unshare keeping descriptors below this.
    unshare_from: libc::c_uint,
    parent: libc::pid_t,
    die_with_parent: bool,
    /// `cgroup.procs` of each cgroup to join (the first `cgroup_n`).
    cgroup_fds: [libc::c_int; MAX_CGROUP_FDS],
    cgroup_n: usize,
    /// Network namespace to join, or -1.
    netns_fd: libc::c_int,
    /// Switch to `uid`/`gid`/`groups`.
    set_ids: bool,
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: *const libc::gid_t,
    ngroups: usize,
    no_new_privs: bool,
    /// Give the child this soft descriptor limit (the one hangar started
    /// with, before `fdlimit::raise`), or leave it when negative.
    nofile_soft: i64,
    err: libc::c_int,
    stage: libc::c_int,
}

/// A clone into a cgroup failed and the spawner fell back to the join: said once.
static TOLD_FALLBACK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// At most this many cgroup hierarchies are joined (v1: memory, cpu, cpuacct, pids).
const MAX_CGROUP_FDS: usize = 5;

const STAGE_SETSID: libc::c_int = 1;
const STAGE_PDEATHSIG: libc::c_int = 2;
const STAGE_STDIO: libc::c_int = 3;
const STAGE_CHDIR: libc::c_int = 4;
const STAGE_EXEC: libc::c_int = 5;
const STAGE_CGROUP: libc::c_int = 6;
const STAGE_NETNS: libc::c_int = 7;
const STAGE_SETGROUPS: libc::c_int = 8;
const STAGE_SETGID: libc::c_int = 9;
const STAGE_SETUID: libc::c_int = 10;
const STAGE_NO_NEW_PRIVS: libc::c_int = 11;
const STAGE_RLIMIT: libc::c_int = 12;

/// The child side of the spawn: runs on `SpawnerThread::stack`, in our address
/// space, while the spawning thread is suspended.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildArgs` the parent passed to clone; the parent is
    // suspended (CLONE_VFORK) until we exec or exit, so nothing else touches it.
    // Every call below is a plain syscall wrapper that is async-signal-safe: no
    // allocation, no locks, no stdio. All signals are blocked (the parent blocked
    // them before clone) until handlers are reset to default, so no handler of the
    // parent can run on this stack.
    unsafe {
        let a = &mut *(arg as *mut ChildArgs);
        let fail = |a: &mut ChildArgs, stage: libc::c_int| -> ! {
            std::ptr::write_volatile(&mut a.err, *libc::__errno_location());
            std::ptr::write_volatile(&mut a.stage, stage);
            libc::_exit(127)
        };
        // Into the cgroup first, so that nothing this child does or runs escapes
        // its limits. The descriptors are the parent's, opened for this spawn and
        // still open (the table is shared until the unshare below), so they are
        // used before that unshare closes the high end. "0" means "myself".
        for fd in &a.cgroup_fds[..a.cgroup_n.min(MAX_CGROUP_FDS)] {
            if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                fail(a, STAGE_CGROUP);
            }
        }
        if a.netns_fd >= 0
            && libc::syscall(
                libc::SYS_setns,
                a.netns_fd as libc::c_long,
                libc::CLONE_NEWNET as libc::c_long,
            ) < 0
        {
            fail(a, STAGE_NETNS);
        }
        // Then stop sharing the descriptor table (see SpawnerThread), before
        // anything below changes a descriptor.
        if a.unshare_from > 0
            && libc::syscall(
                libc::SYS_close_range,
                a.unshare_from,
                u32::MAX,
                libc::CLOSE_RANGE_UNSHARE,
            ) < 0
        {
            fail(a, STAGE_STDIO);
        }
        // Default dispositions for every signal: handlers belong to hangar, and
        // ignored signals (SIGPIPE in every Rust program, whatever the parent of
        // hangar ignored) would be inherited. The raw syscall reaches the signals
        // glibc reserves for itself, which its sigaction() refuses. A zeroed kernel
        // `struct sigaction` is SIG_DFL with no flags and an empty mask.
        let dfl = [0u64; 4];
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(libc::SYS_rt_sigaction, sig, dfl.as_ptr(), 0usize, 8usize);
            }
        }
        if libc::setsid() < 0 {
            fail(a, STAGE_SETSID);
        }
        // Drop to the target user: groups, then group, then user (after setuid
        // nothing else could be changed). Raw syscalls: glibc's wrappers would
        // broadcast the change to every thread of hangar, which shares our memory.
        // Before PR_SET_PDEATHSIG, because any change of credentials clears it.
        if a.set_ids {
            if libc::syscall(libc::SYS_setgroups, a.ngroups as libc::c_long, a.groups) < 0 {
                fail(a, STAGE_SETGROUPS);
            }
            if libc::syscall(
                libc::SYS_setresgid,
                a.gid as libc::c_long,
                a.gid as libc::c_long,
                a.gid as libc::c_long,
            ) < 0
            {
                fail(a, STAGE_SETGID);
            }
            if libc::syscall(
                libc::SYS_setresuid,
                a.uid as libc::c_long,
                a.uid as libc::c_long,
                a.uid as libc::c_long,
            ) < 0
            {
                fail(a, STAGE_SETUID);
            }
        }
        if a.die_with_parent {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) < 0
            {
                fail(a, STAGE_PDEATHSIG);
            }
            // The parent may have died before prctl: then no signal would come.
            if libc::getppid() != a.parent {
                *libc::__errno_location() = libc::ESRCH;
                fail(a, STAGE_PDEATHSIG);
            }
        }
        for (target, fd) in a.fds.iter().enumerate() {
            let target = target as libc::c_int;
            let ok = if *fd == target {
                libc::fcntl(*fd, libc::F_SETFD, 0) >= 0
            } else {
                libc::dup2(*fd, target) >= 0
            };
            if !ok {
                fail(a, STAGE_STDIO);
            }
        }
        // Nothing but stdio crosses into the child: not hangar's descriptors (those
        // are close-on-exec anyway) and not ones hangar itself inherited without
        // the flag. Ignored where close_range is missing (Linux < 5.9).
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        if !a.cwd.is_null() && libc::chdir(a.cwd) < 0 {
            fail(a, STAGE_CHDIR);
        }
        if a.no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
            fail(a, STAGE_NO_NEW_PRIVS);
        }
        // The soft descriptor limit hangar started with, under the hard limit
        // it raised (which stays, so the program may raise its own).
        if a.nofile_soft >= 0 {
            let mut lim: libc::rlimit64 = std::mem::zeroed();
            if libc::syscall(
                libc::SYS_prlimit64,
                0 as libc::c_long,
                libc::RLIMIT_NOFILE as libc::c_long,
                std::ptr::null::<libc::rlimit64>(),
                &mut lim as *mut libc::rlimit64,
            ) < 0
            {
                fail(a, STAGE_RLIMIT);
            }
            lim.rlim_cur = (a.nofile_soft as u64).min(lim.rlim_max);
            if libc::syscall(
                libc::SYS_prlimit64,
                0 as libc::c_long,
                libc::RLIMIT_NOFILE as libc::c_long,
                &lim as *const libc::rlimit64,
                std::ptr::null_mut::<libc::rlimit64>(),
            ) < 0
            {
                fail(a, STAGE_RLIMIT);
            }
        }
        let empty: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        // PATH search, as execvp would do it, over candidates built by the parent.
        let mut saw_eacces = false;
        let mut p = a.paths;
        while !(*p).is_null() {
            libc::execve(*p, a.argv, a.envp);
            match *libc::__errno_location() {
                libc::EACCES => saw_eacces = true,
                libc::ENOENT | libc::ENOTDIR => {}
                _ => fail(a, STAGE_EXEC),
            }
            p = p.add(1);
        }
        if saw_eacces {
            *libc::__errno_location() = libc::EACCES;
        }
        fail(a, STAGE_EXEC)
    }
}

fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in argument"))
}

/// Null-terminated pointer array over `strings` (which must outlive it).
fn ptrs(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

fn find_path(vars: &[(String, String)]) -> Option<&str> {
    vars.iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
}

/// Where to look for `program`: itself if it has a slash, else each PATH entry.
fn candidates(program: &str, path: Option<&str>) -> io::Result<Vec<CString>> {
    if program.contains('/') {
        return Ok(vec![cstring(program)?]);
    }
    let path = path.unwrap_or("/usr/local/bin:/usr/bin:/bin");
    path.split(':')
        .map(|dir| {
            let dir = if dir.is_empty() { "." } else { dir };
            cstring(&format!("{dir}/{program}"))
        })
        .collect()
}

/// Removes a cgroup created for a spawn that then failed (blocking: this is a
/// spawner thread). Disarmed by taking the cgroup out.
struct CgroupGuard(Option<ProcessCgroup>);

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        if let Some(cg) = self.0.take() {
            if let Err(e) = cg.remove_blocking() {
                tracing::warn!(error = %e, "could not remove the cgroup of a failed spawn");
            }
        }
    }
}

fn spawn_one(
    req: SpawnRequest,
    logs: &LogPump,
    placement: &Placement,
    t: &mut SpawnerThread,
    grouping: bool,
) -> io::Result<Spawned> {
    // Everything the child needs is built here, before clone.
    let spec = &req.spec;
    let paths = candidates(&spec.command, req.path())?;
    let mut argv_s = Vec::with_capacity(spec.args.len() + 1);
    argv_s.push(cstring(&spec.command)?);
    for a in &spec.args {
        argv_s.push(cstring(a)?);
    }
    let n = placement
        .spawns
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let spawn = SpawnLife::begin(Arc::from(format!("{}.{n}", placement.supervisor_id)));
    let env_s = req.envp(&placement.supervisor_id, spawn.id())?;
    let cwd = match &spec.working_dir {
        Some(d) => Some(CString::new(d.as_os_str().as_bytes()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in working directory")
        })?),
        None => None,
    };
    let (paths_p, argv_p, env_p) = (ptrs(&paths), ptrs(&argv_s), ptrs(&env_s));
    let (out_r, out_w) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?;
    // Captured output shares stdout's pipe; a log gets a pipe per stream.
    let (err_r, err_w) = match &req.output {
        Output::Log(_) => {
            let (r, w) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?;
            (Some(r), Some(w))
        }
        Output::Capture => (None, None),
    };
    let err_w_fd = err_w.as_ref().unwrap_or(&out_w);
    // Privileges and namespace, then the cgroup: the last fallible preparation,
    // and from here on every failure removes it (the guard).
    let prepared = privs::prepare(spec).map_err(SetupError::into_io)?;
    let mut cgroup = CgroupGuard(match &spec.limits {
        Some(limits) => placement
            .host
            .create(&placement.group, &spec.name, limits)
            .map_err(SetupError::into_io)?,
        None if placement.every_process && grouping => {
            placement.host.create_grouping(&placement.group, &spec.name)
        }
        None => None,
    });
    let mut cgroup_fds = [-1; MAX_CGROUP_FDS];
    let mut cgroup_n = 0;
    if let Some(cg) = &cgroup.0 {
        for (slot, fd) in cgroup_fds.iter_mut().zip(cg.join_fds()) {
            *slot = fd;
            cgroup_n += 1;
        }
    }
    let (set_ids, uid, gid, groups) = match &prepared.ids {
        Some(ids) => (true, ids.uid, ids.gid, ids.groups.as_slice()),
        None => (false, 0, 0, &[][..]),
    };
    let fds = if t.unshare {
        rustix::io::dup3(&out_w, &mut t.slots[1], rustix::io::DupFlags::CLOEXEC)?;
        rustix::io::dup3(err_w_fd, &mut t.slots[2], rustix::io::DupFlags::CLOEXEC)?;
        [
            t.slots[0].as_raw_fd(),
            t.slots[1].as_raw_fd(),
            t.slots[2].as_raw_fd(),
        ]
    } else {
        [
            t.dev_null.as_raw_fd(),
            out_w.as_raw_fd(),
            err_w_fd.as_raw_fd(),
        ]
    };
    let (unshare_from, flags) = if t.unshare {
        let top = fds.iter().copied().max().unwrap_or(2) as libc::c_uint + 1;
        let f = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_FILES | libc::SIGCHLD;
        (top, f)
    } else {
        (0, libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD)
    };
    // Cloned straight into its (v2) cgroup where the kernel can, so the child
    // has nothing to join; else it writes itself into each `cgroup.procs`.
    let into = cgroup.0.as_ref().and_then(ProcessCgroup::clone_into_fd);
    let mut args = ChildArgs {
        paths: paths_p.as_ptr(),
        argv: argv_p.as_ptr(),
        envp: env_p.as_ptr(),
        cwd: cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
        fds,
        unshare_from,
        parent: rustix::process::getpid().as_raw_nonzero().get(),
        die_with_parent: spec.die_with_supervisor,
        cgroup_fds,
        cgroup_n: if into.is_some() { 0 } else { cgroup_n },
        netns_fd: prepared.netns_fd(),
        set_ids,
        uid,
        gid,
        groups: groups.as_ptr(),
        ngroups: groups.len(),
        no_new_privs: prepared.no_new_privs,
        nofile_soft: crate::fdlimit::child_soft_limit()
            .and_then(|n| i64::try_from(n).ok())
            .unwrap_or(-1),
        err: 0,
        stage: 0,
    };
    // No orphan sweep may run between the clone and the claim (it would reap
    // a child that exited at once, stealing its status).
    let spawning = hangar_base::children::spawning();
    // SAFETY: CLONE_VM | CLONE_VFORK is what posix_spawn does: the child borrows
    // our memory (and, with CLONE_FILES, our descriptor table until its first
    // syscall unshares it) and a stack of its own (`t.stack`, unused by anyone else while
    // this thread is suspended in clone) and runs only `child_main`, which makes
    // async-signal-safe syscalls, then execs or _exits. All signals are blocked
    // around clone so no handler runs in the child before it resets them. `args`
    // and every buffer it points to live on this frame until clone returns, which
    // CLONE_VFORK delays until the child has exec'd or exited. The same holds for
    // `clone3::clone_vfork_into`, which differs only in where the child starts;
    // when it fails no child exists, and `clone` is tried on the same stack.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let arg = &mut args as *mut ChildArgs as *mut libc::c_void;
        let cloned_into = into.map(|dir| {
            let extra = if t.unshare {
                libc::CLONE_FILES as u64
            } else {
                0
            };
            crate::clone3::clone_vfork_into(extra, dir, &mut t.stack, child_main, arg)
        });
        let res = match cloned_into {
            Some(Ok(pid)) => Ok(pid),
            // Out of processes or memory (the cgroup's own limits refusing
            // the fork among them): the spawn fails as a fork would.
            Some(Err(e)) if !crate::clone3::fall_back_after(&e) => Err(e),
            other => {
                if let Some(Err(e)) = other {
                    // The kernel will not clone into this cgroup: the child
                    // joins it (and reports the cgroup's error if it cannot).
                    if !TOLD_FALLBACK.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        tracing::warn!(
                            error = %e,
                            "could not start a child inside its cgroup (clone3); children join \
                             their cgroup after the clone instead, which waits for the kernel \
                             unless a cgroup mount has favordynmods (shown once)"
                        );
                    }
                }
                (*arg.cast::<ChildArgs>()).cgroup_n = cgroup_n;
                let top = t.stack.as_mut_ptr().add(t.stack.len());
                let top = (top as usize & !15) as *mut libc::c_void;
                let pid = libc::clone(child_main, top, flags, arg);
                if pid < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(pid)
                }
            }
        };
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        res?
    };
    let claim = hangar_base::children::claim(pid as u32);
    drop(spawning);
    // Our ends of the child's stdout/stderr must close, or its pipes never reach
    // end of file: drop the originals and park /dev/null in the slots again.
    drop((out_w, err_w));
    if t.unshare {
        let (stdout_slot, stderr_slot) = t.slots.split_at_mut(2);
        let parked = rustix::io::dup3(
            &t.dev_null,
            &mut stdout_slot[1],
            rustix::io::DupFlags::CLOEXEC,
        )
        .and_then(|()| {
            rustix::io::dup3(
                &t.dev_null,
                &mut stderr_slot[0],
                rustix::io::DupFlags::CLOEXEC,
            )
        });
        if let Err(e) = parked {
            // Whatever it is doing, it must not run unwatched.
            let _ = kill_group(pid as u32, Signal::KILL);
            if let Some(child) = Pid::from_raw(pid) {
                let _ =
                    rustix::process::waitpid(Some(child), rustix::process::WaitOptions::empty());
            }
            return Err(e.into());
        }
    }
    // SAFETY: the child has exec'd or exited (CLONE_VFORK); it no longer writes.
    let (err, stage) = unsafe {
        (
            std::ptr::read_volatile(&args.err),
            std::ptr::read_volatile(&args.stage),
        )
    };
    let child = Pid::from_raw(pid).ok_or_else(|| io::Error::other("clone returned pid 0"))?;
    if stage != 0 {
        let _ = rustix::process::waitpid(Some(child), rustix::process::WaitOptions::empty());
        let e = io::Error::from_raw_os_error(err);
        let what = match stage {
            STAGE_SETSID => "setsid",
            STAGE_PDEATHSIG => "set parent-death signal",
            STAGE_STDIO => "set up stdio",
            STAGE_CHDIR => "change to the working directory",
            STAGE_RLIMIT => "restore the descriptor limit",
            STAGE_CGROUP | STAGE_NETNS | STAGE_SETGROUPS | STAGE_SETGID | STAGE_SETUID
            | STAGE_NO_NEW_PRIVS => {
                return Err(stage_error(stage, spec, e).into_io());
            }
            _ => return Err(e),
        };
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    // The child cannot be reaped by anyone but us, so its pid stays valid (a zombie
    // at worst) until we wait on it: pidfd_open cannot race a pid reuse here.
    let pidfd = match rustix::process::pidfd_open(child, PidfdFlags::NONBLOCK) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = kill_group(pid as u32, Signal::KILL);
            let _ = rustix::process::waitpid(Some(child), rustix::process::WaitOptions::empty());
            return Err(e.into());
        }
    };
    let output = match req.output {
        Output::Log(log) => {
            logs.add(out_r, Arc::clone(&log), Stream::Stdout);
            if let Some(err_r) = err_r {
                logs.add(err_r, log, Stream::Stderr);
            }
            None
        }
        Output::Capture => Some(out_r),
    };
    let mut cgroup = cgroup.0.take();
    if let Some(cg) = &mut cgroup {
        cg.close_join_fds();
    }
    Ok(Spawned {
        pid: pid as u32,
        pidfd,
        claim,
        spawn,
        cgroup,
        output,
    })
}

/// The error for a failure of the child in one of the privilege stages.
fn stage_error(stage: libc::c_int, spec: &ProcessSpec, e: io::Error) -> SetupError {
    let (code, message, hint) = match stage {
        STAGE_CGROUP => (
            CGROUP_JOIN_FAILED,
            "the child could not move itself into its cgroup".to_string(),
            "check the kernel log; on cgroup v2 the target must be a leaf cgroup",
        ),
        STAGE_NETNS => (
            NETNS_JOIN_FAILED,
            format!(
                "the child could not join network namespace {}",
                spec.netns
                    .as_deref()
                    .unwrap_or(std::path::Path::new("?"))
                    .display()
            ),
            "joining a network namespace needs CAP_SYS_ADMIN (run hangar as root)",
        ),
        STAGE_SETGROUPS | STAGE_SETGID | STAGE_SETUID => {
            let call = match stage {
                STAGE_SETGROUPS => "setgroups",
                STAGE_SETGID => "setresgid",
                _ => "setresuid",
            };
            let who = spec
                .user
                .as_ref()
                .map(|u| format!("uid {} gid {}", u.uid, u.gid))
                .unwrap_or_default();
            (
                PRIVS_SETID_FAILED,
                format!("the child could not switch to {who} ({call})"),
                "switching users needs hangar to run as root (CAP_SETUID, CAP_SETGID)",
            )
        }
        _ => (
            PRIVS_NO_NEW_PRIVS_FAILED,
            "the child could not set no_new_privs".to_string(),
            "the kernel refused PR_SET_NO_NEW_PRIVS (Linux >= 3.5 has it)",
        ),
    };
    SetupError::new(code, message, hint).source(e)
}

/// Send `sig` to the process group `pgid`. ESRCH (group already empty) is success.
pub(crate) fn kill_group(pgid: u32, sig: Signal) -> io::Result<()> {
    let Some(pid) = Pid::from_raw(pgid as i32) else {
        return Ok(());
    };
    match rustix::process::kill_process_group(pid, sig) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
