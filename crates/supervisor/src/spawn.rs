//! Spawning children: a small pool of dedicated threads that fork and exec.
//!
//! Why threads of our own: `PR_SET_PDEATHSIG` fires when the *thread* that forked
//! the child exits, not the process. Tokio's blocking pool retires idle threads, so
//! a child forked there would be killed minutes later for no reason. The spawner
//! threads live as long as any process handle does. Forking off the async workers
//! also keeps the (short, but not free) fork+exec off the runtime.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rustix::process::{Pid, PidfdFlags, Signal};
use tokio::sync::oneshot;

use crate::logs::{LogPump, ProcessLog, Stream};

/// Everything needed to spawn, prepared before it reaches the spawner so the child
/// side of fork does only async-signal-safe work.
pub(crate) struct SpawnRequest {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub die_with_supervisor: bool,
    pub log: Arc<ProcessLog>,
}

/// A child that was spawned: its pid (= its process group and session id) and a
/// pidfd that becomes readable when it exits.
pub(crate) struct Spawned {
    pub pid: u32,
    pub pidfd: OwnedFd,
}

type Reply = oneshot::Sender<io::Result<Spawned>>;

/// Handle to the spawner threads. Cloning is cheap; the threads stop when the last
/// handle is dropped.
#[derive(Clone)]
pub(crate) struct Spawner {
    tx: mpsc::Sender<(SpawnRequest, Reply)>,
}

impl Spawner {
    pub(crate) fn new(threads: usize, logs: LogPump) -> io::Result<Spawner> {
        let (tx, rx) = mpsc::channel::<(SpawnRequest, Reply)>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            let logs = logs.clone();
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
                    let res = spawn_one(req, &logs);
                    if let Err(Ok(orphan)) = reply.send(res) {
                        let _ = kill_group(orphan.pid, Signal::KILL);
                        // Blocking wait by pid: the pidfd is non-blocking, and this
                        // thread may block.
                        let _ = rustix::process::waitpid(
                            Pid::from_raw(orphan.pid as i32),
                            rustix::process::WaitOptions::empty(),
                        );
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

fn spawn_one(req: SpawnRequest, logs: &LogPump) -> io::Result<Spawned> {
    let mut cmd = Command::new(&req.program);
    cmd.args(&req.args)
        .env_clear()
        .envs(req.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(cwd) = &req.cwd {
        cmd.current_dir(cwd);
    }
    let parent = rustix::process::getpid();
    let die = req.die_with_supervisor;
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed. It makes three raw syscalls through rustix
    // (setsid, prctl, getppid), allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            // Own session and process group, so a signal to the group reaches every
            // descendant that did not leave it, and nothing else.
            rustix::process::setsid()?;
            if die {
                rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
                // The parent may have died between fork and prctl; then no signal
                // will ever come. Refuse to run as an orphan.
                if rustix::process::getppid() != Some(parent) {
                    return Err(io::Error::from(rustix::io::Errno::SRCH));
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let pid = child.id();
    let stdout = child.stdout.take().map(OwnedFd::from);
    let stderr = child.stderr.take().map(OwnedFd::from);
    // The child cannot be reaped by anyone but us, so its pid stays valid (a zombie
    // at worst) until we wait on it: pidfd_open cannot race a pid reuse here.
    let pidfd = match Pid::from_raw(pid as i32)
        .ok_or_else(|| io::Error::other("spawned child has pid 0"))
        .and_then(|p| Ok(rustix::process::pidfd_open(p, PidfdFlags::NONBLOCK)?))
    {
        Ok(fd) => fd,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    if let Some(fd) = stdout {
        logs.add(fd, Arc::clone(&req.log), Stream::Stdout);
    }
    if let Some(fd) = stderr {
        logs.add(fd, req.log, Stream::Stderr);
    }
    // Dropping std's Child neither kills nor waits: the pidfd owns the child now.
    drop(child);
    Ok(Spawned { pid, pidfd })
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
