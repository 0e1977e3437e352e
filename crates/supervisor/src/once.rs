//! One-shot commands: a config checker, an exec probe. Run to completion
//! through the spawner like any child (own session and process group,
//! `PR_SET_PDEATHSIG`, the manager's environment with its marker, and the
//! spec's cgroup, user, network namespace and `no_new_privs`), with stdout and
//! stderr captured (bounded), and the whole process group killed and reaped
//! when it exits, when it times out, or when the caller drops the future.

use std::sync::Arc;
use std::time::Duration;

use rustix::process::Signal;
use tokio::net::unix::pipe;

use crate::error::Result;
use crate::manager::Ctx;
use crate::process::{spawn_error, wait_exit, Child};
use crate::spawn::{kill_group, Output, SpawnRequest};
use crate::spec::ProcessSpec;
use crate::state::ExitInfo;

/// How much output a one-shot command keeps: the last this many bytes.
pub const ONCE_OUTPUT_LIMIT: usize = 16 * 1024;

/// After the command's group is gone, how long its output may take to reach
/// end of file (something that left the group, e.g. with `setsid`, may still
/// hold the pipe).
const DRAIN: Duration = Duration::from_secs(2);

/// What a one-shot command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutput {
    /// How it ended; after a timeout, the SIGKILL that ended it.
    pub exit: ExitInfo,
    /// It ran past its timeout, and its process group was killed.
    pub timed_out: bool,
    /// Its stdout and stderr, interleaved in the order written: the last
    /// [`ONCE_OUTPUT_LIMIT`] bytes.
    pub output: Vec<u8>,
    /// How many bytes of output were dropped from the front.
    pub dropped: u64,
}

/// Kills (and reaps, on a task of its own) a one-shot child if the future
/// running it is dropped midway: on timeout, or when the caller gives up.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.take() {
            let _ = kill_group(child.pid, Signal::KILL);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    wait_exit(Some(&child)).await;
                    release_cgroup(&child).await;
                });
            } else {
                // No runtime to wait on: reap it here (it was just SIGKILLed).
                if let Some(pid) = rustix::process::Pid::from_raw(child.pid as i32) {
                    let _ =
                        rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
                }
                if let Some(cg) = &child.cgroup {
                    let _ = cg.remove_blocking();
                }
            }
        }
    }
}

/// The last [`ONCE_OUTPUT_LIMIT`] bytes of what arrived.
#[derive(Default)]
struct Tail {
    buf: Vec<u8>,
    dropped: u64,
}

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        // Trim in batches, so a chatty command costs one copy per limit's worth.
        if self.buf.len() > 2 * ONCE_OUTPUT_LIMIT {
            self.trim();
        }
    }

    fn trim(&mut self) {
        if self.buf.len() > ONCE_OUTPUT_LIMIT {
            let cut = self.buf.len() - ONCE_OUTPUT_LIMIT;
            self.buf.drain(..cut);
            self.dropped += cut as u64;
        }
    }
}

/// Read what is there into `tail`; false at end of file (or on an error,
/// which ends the output just the same). Cancel-safe: nothing is lost when a
/// `select!` drops it.
async fn read_some(p: &pipe::Receiver, tail: &mut Tail) -> bool {
    loop {
        if p.readable().await.is_err() {
            return false;
        }
        let mut chunk = [0u8; 8192];
        match p.try_read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => {
                tail.push(&chunk[..n]);
                return true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}

/// The child and its group are gone: kill what is left in its cgroup and
/// remove it.
async fn release_cgroup(child: &Child) {
    if let Some(cg) = &child.cgroup {
        if let Err(e) = cg.remove().await {
            tracing::warn!(pid = child.pid, error = %e, "could not remove a one-shot command's cgroup");
        }
    }
}

/// Run `spec` once (see the module docs). Its restart policy, stop signal,
/// probes, ports, dependencies and log settings do not apply.
pub(crate) async fn run_once(
    ctx: &Ctx,
    spec: Arc<ProcessSpec>,
    timeout: Duration,
) -> Result<RunOutput> {
    let req = SpawnRequest {
        base_env: spec.inherit_env.then(|| Arc::clone(&ctx.base_env)),
        global_env: ctx.global_env(),
        spec: Arc::clone(&spec),
        output: Output::Capture,
    };
    let mut spawned = ctx
        .spawner
        .spawn(req)
        .await
        .map_err(|e| spawn_error(&spec.name, &spec, e))?;
    let reader = spawned.output.take();
    let child = Child::watch(spawned).map_err(|e| spawn_error(&spec.name, &spec, e))?;
    let mut guard = KillOnDrop(Some(child));
    // A pipe tokio cannot take (it always can: a fresh pipe) means no output.
    let mut reader = reader.and_then(|fd| pipe::Receiver::from_owned_fd(fd).ok());
    let mut tail = Tail::default();
    let deadline = tokio::time::Instant::now() + timeout;
    let Some(child) = guard.0.as_ref() else {
        let e = std::io::Error::other("the child vanished");
        return Err(spawn_error(&spec.name, &spec, e));
    };
    let finished = loop {
        tokio::select! {
            exit = wait_exit(Some(child)) => break Some(exit),
            more = async {
                match &reader {
                    Some(r) => read_some(r, &mut tail).await,
                    None => std::future::pending().await,
                }
            } => {
                if !more {
                    reader = None;
                }
            }
            () = tokio::time::sleep_until(deadline) => break None,
        }
    };
    let (exit, timed_out) = match finished {
        Some(exit) => (exit, false),
        None => {
            // The whole group, then reap (wait_exit kills the group again
            // before reaping, while the zombie still pins the group id).
            let _ = kill_group(child.pid, Signal::KILL);
            (wait_exit(Some(child)).await, true)
        }
    };
    // Reaped: nothing left for the guard to kill.
    if let Some(child) = guard.0.take() {
        release_cgroup(&child).await;
    }
    if let Some(r) = &reader {
        let _ = tokio::time::timeout(DRAIN, async { while read_some(r, &mut tail).await {} }).await;
    }
    tail.trim();
    Ok(RunOutput {
        exit,
        timed_out,
        output: tail.buf,
        dropped: tail.dropped,
    })
}
