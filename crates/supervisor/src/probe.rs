//! Running probes: one small tokio task per probing process, executing checks with
//! shared clients and reporting each result to the process's task.
//!
//! A check never blocks anything but its own task: TCP and HTTP are async I/O on
//! the runtime (one pooled HTTP client per manager), exec checks are spawned like
//! any child (own process group, pidfd) and killed with their group on timeout.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rustix::process::Signal;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::health::{Check, ProbeKind, ProbeSpec};
use crate::logs::ProcessLog;
use crate::manager::Ctx;
use crate::process::{wait_exit, Child};
use crate::spawn::{kill_group, SpawnRequest};
use crate::spec::{LogSpec, ProcessSpec};

/// One check's outcome, sent to the process task.
pub(crate) struct ProbeResult {
    pub generation: u64,
    pub kind: ProbeKind,
    pub result: Result<(), String>,
    pub took: Duration,
}

/// What a probe checks against.
#[derive(Clone)]
pub(crate) struct Target {
    /// The process's pid, for `Check::Process`.
    pub pid: u32,
    /// The process's resolved spec: exec checks run with its environment.
    pub spec: Arc<ProcessSpec>,
}

/// Run `probe` until the receiver is gone or the task is aborted.
pub(crate) async fn run(
    ctx: Arc<Ctx>,
    generation: u64,
    kind: ProbeKind,
    probe: ProbeSpec,
    target: Target,
    tx: mpsc::UnboundedSender<ProbeResult>,
) {
    let mut done = 0u32;
    let mut ever_ok = false;
    loop {
        tokio::time::sleep(probe.next_delay(done, ever_ok)).await;
        let start = Instant::now();
        let result = match tokio::time::timeout(
            probe.timeout,
            check(&ctx, &probe.check, &target, probe.timeout),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(format!("timed out after {:?}", probe.timeout)),
        };
        done = done.saturating_add(1);
        ever_ok |= result.is_ok();
        let took = start.elapsed();
        if tx
            .send(ProbeResult {
                generation,
                kind,
                result,
                took,
            })
            .is_err()
        {
            return;
        }
    }
}

type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

fn check<'a>(
    ctx: &'a Ctx,
    check: &'a Check,
    target: &'a Target,
    timeout: Duration,
) -> CheckFuture<'a> {
    Box::pin(async move {
        match check {
            Check::Tcp { address } => tokio::net::TcpStream::connect(address.as_str())
                .await
                .map(drop)
                .map_err(|e| format!("tcp {address}: {e}")),
            Check::Http {
                url,
                status,
                headers,
                body_contains,
            } => {
                http(
                    ctx,
                    url,
                    *status,
                    headers,
                    body_contains.as_deref(),
                    timeout,
                )
                .await
            }
            Check::Exec { command } => exec(ctx, command, target, timeout).await,
            Check::Process => {
                if process_alive(target.pid) {
                    Ok(())
                } else {
                    Err(format!("process {} is not running", target.pid))
                }
            }
            Check::All(checks) => {
                let results = join_all(ctx, checks, target, timeout).await;
                let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
                if errors.is_empty() {
                    Ok(())
                } else {
                    Err(errors.join("; "))
                }
            }
            Check::Any(checks) => {
                let results = join_all(ctx, checks, target, timeout).await;
                if results.iter().any(Result::is_ok) {
                    Ok(())
                } else {
                    let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
                    Err(format!("none passed: {}", errors.join("; ")))
                }
            }
        }
    })
}

/// Run checks concurrently on this task (no spawning: they borrow the target).
async fn join_all(
    ctx: &Ctx,
    checks: &[Check],
    target: &Target,
    timeout: Duration,
) -> Vec<Result<(), String>> {
    let mut futs: Vec<Option<CheckFuture<'_>>> = checks
        .iter()
        .map(|c| Some(check(ctx, c, target, timeout)))
        .collect();
    let mut out: Vec<Option<Result<(), String>>> = vec![None; checks.len()];
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, slot) in futs.iter_mut().enumerate() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(r) => {
                        out[i] = Some(r);
                        *slot = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err("not run".into())))
        .collect()
}

/// Longest body read when looking for `body_contains`.
const MAX_BODY: usize = 64 * 1024;

async fn http(
    ctx: &Ctx,
    url: &str,
    status: Option<u16>,
    headers: &std::collections::BTreeMap<String, String>,
    body_contains: Option<&str>,
    timeout: Duration,
) -> Result<(), String> {
    let mut req = ctx.http.get(url).timeout(timeout);
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let mut resp = req
        .send()
        .await
        .map_err(|e| format!("GET {url}: {}", error_chain(&e)))?;
    let code = resp.status().as_u16();
    match status {
        Some(want) if code != want => {
            return Err(format!("GET {url}: status {code}, expected {want}"))
        }
        None if !(200..300).contains(&code) => {
            return Err(format!("GET {url}: status {code}, expected 2xx"))
        }
        _ => {}
    }
    if let Some(needle) = body_contains {
        let mut body = Vec::new();
        while body.len() < MAX_BODY {
            match resp.chunk().await {
                Ok(Some(c)) => body.extend_from_slice(&c),
                Ok(None) => break,
                Err(e) => return Err(format!("GET {url}: reading body: {e}")),
            }
        }
        if !String::from_utf8_lossy(&body).contains(needle) {
            return Err(format!("GET {url}: body does not contain {needle:?}"));
        }
    }
    Ok(())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Kills (and reaps, on a task of its own) an exec check's child if the check is
/// dropped midway: on timeout, or when the probe is cancelled.
struct ExecGuard(Option<Child>);

impl Drop for ExecGuard {
    fn drop(&mut self) {
        if let Some(child) = self.0.take() {
            let _ = kill_group(child.pid, Signal::KILL);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    wait_exit(Some(&child)).await;
                });
            }
        }
    }
}

async fn exec(
    ctx: &Ctx,
    command: &[String],
    target: &Target,
    timeout: Duration,
) -> Result<(), String> {
    let Some((program, args)) = command.split_first() else {
        return Err("empty exec command".into());
    };
    let parent = &target.spec;
    let spec = Arc::new(ProcessSpec {
        name: format!("{}.probe", parent.name),
        command: program.clone(),
        args: args.to_vec(),
        env: parent.env.clone(),
        inherit_env: parent.inherit_env,
        working_dir: parent.working_dir.clone(),
        die_with_supervisor: true,
        ..ProcessSpec::default()
    });
    let log = ProcessLog::new(
        Arc::from(spec.name.as_str()),
        LogSpec {
            dir: None,
            tail_bytes: 2048,
            ..LogSpec::default()
        },
    );
    let req = SpawnRequest {
        spec: Arc::clone(&spec),
        base_env: spec.inherit_env.then(|| Arc::clone(&ctx.base_env)),
        global_env: ctx.global_env(),
        log: Arc::clone(&log),
    };
    let spawned = ctx
        .spawner
        .spawn(req)
        .await
        .map_err(|e| format!("exec {program}: {e}"))?;
    let child = Child::watch(spawned).map_err(|e| format!("exec {program}: {e}"))?;
    let mut guard = ExecGuard(Some(child));
    let exit = match guard.0.as_ref() {
        Some(c) => tokio::time::timeout(timeout, wait_exit(Some(c))).await,
        None => return Err("exec child vanished".into()),
    };
    match exit {
        Ok(exit) => {
            // Reaped: nothing left for the guard to kill.
            guard.0 = None;
            if exit.success() {
                Ok(())
            } else {
                // Output arrives through the log thread; give it a moment.
                tokio::time::sleep(Duration::from_millis(5)).await;
                let last = log
                    .tail(1)
                    .pop()
                    .map(|l| format!(": {}", l.text))
                    .unwrap_or_default();
                Err(format!("exec {program}: {exit}{last}"))
            }
        }
        Err(_) => Err(format!(
            "exec {program}: timed out after {timeout:?}; killed"
        )),
    }
}

/// The pid exists and is not a zombie.
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.trim().chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        }
        Err(_) => false,
    }
}
