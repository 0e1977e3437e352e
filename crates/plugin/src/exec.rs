//! The exec transport: a plugin that is an executable, started and kept
//! alive by the library ([`ExecClient`]) and written in a few lines with
//! [`serve_stdio`].
//!
//! **Protocol**: the child reads requests on its stdin and writes responses
//! on its stdout, framed exactly like the Unix socket (4-byte big-endian
//! length, then JSON; see [`unix`](crate::unix) and
//! `docs/plugin-protocol.md`); it may answer in any order. Its stderr is
//! forwarded line by line to `tracing` (target `hangar_plugin::exec`), so a
//! plugin logs there and never prints anything else on stdout. The child
//! finds `HANGAR_PLUGIN_PROTOCOL=1` in its environment.
//!
//! **Lifecycle**: the child is started in its own process group. When it
//! exits or dies, calls in flight fail with `TRANSPORT_1304` (retryable), and
//! it is started again after a backoff (doubling from `restart_initial` to
//! `restart_max`, reset after a run of 10 s); calls made meanwhile wait for it
//! within their deadline. On close, stdin is closed (a well-behaved plugin
//! exits on EOF), the group gets SIGTERM, and SIGKILL after `stop_grace`.
//!
//! **A named exception** to "only `hangar_supervisor` spawns or signals
//! processes" (ARCHITECTURE.md): this module starts its child with
//! `tokio::process` and signals the child's group itself. The plugin library
//! is used without a supervisor (`hangar plugin call` has none), and its child
//! is long-lived, restarted here and spoken to over piped stdin and stdout,
//! which the supervisor's one-shot `Manager::run_once` does not offer. So the
//! child gets its own process group and is killed when its handle is dropped,
//! but no `PR_SET_PDEATHSIG` and no supervisor marker: if hangar is killed
//! with SIGKILL, the plugin sees end of file on its stdin (a plugin built on
//! [`serve_stdio`] then exits) and nothing else ends it.
//! `crates/cli/tests/architecture.rs` allows exactly these calls, in this file
//! only.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::Value;
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::auth::{AuthConfig, ServerAuth};
use crate::error::{Error, ErrorKind};
use crate::server::{stopped, Handler};
use crate::transport::{BoxFuture, CallContext, CallKind, Payload, Transport, TransportKind};
use crate::unix::{serve_stream, Mux};

/// How to run an exec plugin; the seed's `executable`, `args`, `env`,
/// `work_dir`.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// The program.
    pub executable: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment, `KEY=VALUE` each (added to the host's).
    pub env: Vec<String>,
    /// Its working directory (the host's without).
    pub work_dir: Option<PathBuf>,
    /// Deadline of a call whose context has none (`request_timeout`).
    pub request_timeout: Duration,
    /// First restart delay after the child dies.
    pub restart_initial: Duration,
    /// Longest restart delay.
    pub restart_max: Duration,
    /// Time between SIGTERM and SIGKILL on close.
    pub stop_grace: Duration,
    /// Credentials sent in every message's headers.
    pub auth: AuthConfig,
}

impl ExecOptions {
    /// Defaults for a program: no args, 30 s per call, restarts from 100 ms
    /// to 5 s, 2 s grace on close, no auth.
    pub fn new(executable: impl Into<PathBuf>) -> ExecOptions {
        ExecOptions {
            executable: executable.into(),
            args: Vec::new(),
            env: Vec::new(),
            work_dir: None,
            request_timeout: Duration::from_secs(30),
            restart_initial: Duration::from_millis(100),
            restart_max: Duration::from_secs(5),
            stop_grace: Duration::from_secs(2),
            auth: AuthConfig::default(),
        }
    }
}

/// A supervised plugin process and the calls to it (cheap to clone).
#[derive(Clone)]
pub struct ExecClient {
    inner: Arc<ExecInner>,
}

struct ExecInner {
    opts: ExecOptions,
    auth_headers: Vec<(String, String)>,
    cur: watch::Receiver<Option<Arc<Mux>>>,
    pid: Arc<AtomicI32>,
    restarts: Arc<AtomicU64>,
    closed: AtomicBool,
    stop: watch::Sender<bool>,
    supervisor: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for ExecInner {
    fn drop(&mut self) {
        // The supervisor kills the process group when told to stop.
        let _ = self.stop.send(true);
    }
}

impl std::fmt::Debug for ExecClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecClient")
            .field("executable", &self.inner.opts.executable)
            .field("pid", &self.pid())
            .finish()
    }
}

fn exec_err(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::ExecTransport, msg)
}

fn spawn_child(opts: &ExecOptions, env: &[(String, String)]) -> std::io::Result<Child> {
    let mut cmd = Command::new(&opts.executable);
    cmd.args(&opts.args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("HANGAR_PLUGIN_PROTOCOL", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(d) = &opts.work_dir {
        cmd.current_dir(d);
    }
    cmd.spawn()
}

fn signal_group(pid: i32, sig: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process_group(p, sig);
    }
}

struct Running {
    child: Child,
    mux: Arc<Mux>,
    pid: i32,
    /// Keeps a subreaper's orphan sweep (`hangar serve`) from reaping the
    /// child that `child.wait()` waits for; dropped after `child`.
    _claim: Option<hangar_base::children::Claim>,
}

fn start(opts: &ExecOptions, env: &[(String, String)], name: &str) -> std::io::Result<Running> {
    let spawning = hangar_base::children::spawning();
    let mut child = spawn_child(opts, env)?;
    let claim = child.id().map(hangar_base::children::claim);
    drop(spawning);
    let pid = child.id().map(|p| p as i32).unwrap_or(0);
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(std::io::Error::other("the child has no stdin/stdout pipes"));
    };
    if let Some(stderr) = child.stderr.take() {
        let name = name.to_string();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(target: "hangar_plugin::exec", plugin = %name, pid, "{line}");
            }
        });
    }
    let mux = Arc::new(Mux::new(stdout, stdin, ErrorKind::ExecTransport));
    Ok(Running {
        child,
        mux,
        pid,
        _claim: claim,
    })
}

async fn stop_child(r: &mut Running, grace: Duration) {
    // Closing stdin is the polite request; the group gets SIGTERM, then SIGKILL.
    r.mux.shutdown();
    signal_group(r.pid, rustix::process::Signal::TERM);
    if tokio::time::timeout(grace, r.child.wait()).await.is_err() {
        signal_group(r.pid, rustix::process::Signal::KILL);
        let _ = r.child.wait().await;
    }
    // Leftovers of the group (grandchildren) go too.
    signal_group(r.pid, rustix::process::Signal::KILL);
}

impl ExecClient {
    /// Start the plugin and supervise it. Fails (`PLUGIN_1007`) when the
    /// program cannot be started at all.
    pub async fn start(opts: ExecOptions) -> Result<ExecClient, Error> {
        if opts.executable.as_os_str().is_empty() {
            return Err(
                Error::new(ErrorKind::MissingExecutable, "no executable given")
                    .with_hint("set executable"),
            );
        }
        if let Err(mut errs) = opts.auth.validate() {
            return Err(errs.remove(0));
        }
        let mut env = Vec::new();
        for e in &opts.env {
            match e.split_once('=') {
                Some((k, v)) if !k.is_empty() => env.push((k.to_string(), v.to_string())),
                _ => {
                    return Err(Error::new(
                        ErrorKind::InvalidJsonConfig,
                        format!("env entry {e:?} is not KEY=VALUE"),
                    )
                    .with_hint("write each env entry as KEY=VALUE"))
                }
            }
        }
        let name = opts
            .executable
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let first = start(&opts, &env, &name).map_err(|e| {
            Error::new(
                ErrorKind::MissingExecutable,
                format!("cannot start {}: {e}", opts.executable.display()),
            )
            .with_hint("check the executable path and its permissions")
        })?;
        let pid = Arc::new(AtomicI32::new(first.pid));
        let restarts = Arc::new(AtomicU64::new(0));
        let (cur_tx, cur) = watch::channel(Some(Arc::clone(&first.mux)));
        let (stop_tx, stop) = watch::channel(false);
        let sup = tokio::spawn(supervise(
            first,
            opts.clone(),
            env,
            name,
            cur_tx,
            stop,
            Arc::clone(&pid),
            Arc::clone(&restarts),
        ));
        Ok(ExecClient {
            inner: Arc::new(ExecInner {
                auth_headers: opts.auth.header_pairs(),
                opts,
                cur,
                pid,
                restarts,
                closed: AtomicBool::new(false),
                stop: stop_tx,
                supervisor: Mutex::new(Some(sup)),
            }),
        })
    }

    /// The running child's pid (`None` while it is being restarted or after close).
    pub fn pid(&self) -> Option<u32> {
        match self.inner.pid.load(Ordering::SeqCst) {
            p if p > 0 => Some(p as u32),
            _ => None,
        }
    }

    /// How many times the child was restarted.
    pub fn restarts(&self) -> u64 {
        self.inner.restarts.load(Ordering::SeqCst)
    }

    /// Send one call; waits for a (re)starting child within the deadline.
    pub async fn call(
        &self,
        kind: CallKind,
        data: impl std::borrow::Borrow<Value>,
        ctx: CallContext,
    ) -> Result<Value, Error> {
        self.call_any(kind, data.borrow(), ctx).await
    }

    /// [`ExecClient::call`] with the payload and the answer as JSON text
    /// (see [`Transport::call_raw`]).
    pub async fn call_raw(
        &self,
        kind: CallKind,
        data: &RawValue,
        ctx: CallContext,
    ) -> Result<Box<RawValue>, Error> {
        self.call_any(kind, data, ctx).await
    }

    async fn call_any<D: serde::Serialize + ?Sized, A: Payload>(
        &self,
        kind: CallKind,
        data: &D,
        ctx: CallContext,
    ) -> Result<A, Error> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(exec_err("the transport is closed").with_hint("create a new client"));
        }
        let timeout = if ctx.timeout.is_zero() {
            self.inner.opts.request_timeout
        } else {
            ctx.timeout
        };
        // A timeout too long to add to the clock waits as long as tokio's own
        // (30 years).
        let now = tokio::time::Instant::now();
        let deadline = now
            .checked_add(timeout)
            .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86400));
        let mut rx = self.inner.cur.clone();
        let mux = crate::transport::within(|| Some(deadline), async {
            loop {
                let cur = rx.borrow_and_update().clone();
                if let Some(m) = cur.filter(|m| m.is_alive()) {
                    return Some(m);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        let m = match mux {
            Ok(Some(m)) => m,
            Ok(None) => return Err(exec_err("the transport is closed")),
            Err(_) => {
                return Err(exec_err(format!(
                    "the plugin process did not come up within {timeout:?}"
                ))
                .with_hint("see the plugin's stderr in the logs"))
            }
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        m.call(
            kind,
            data,
            &ctx,
            &self.inner.auth_headers,
            left.max(Duration::from_millis(1)),
            Some(deadline),
        )
        .await
    }

    /// Stop the child (its whole process group) and the supervisor.
    /// Idempotent; later calls fail with `TRANSPORT_1304`.
    pub async fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        let _ = self.inner.stop.send(true);
        let sup = self.inner.supervisor.lock().ok().and_then(|mut g| g.take());
        if let Some(s) = sup {
            let _ = s.await;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn supervise(
    first: Running,
    opts: ExecOptions,
    env: Vec<(String, String)>,
    name: String,
    cur: watch::Sender<Option<Arc<Mux>>>,
    stop: watch::Receiver<bool>,
    pid: Arc<AtomicI32>,
    restarts: Arc<AtomicU64>,
) {
    let backoff = hangar_base::Backoff::doubling(opts.restart_initial, opts.restart_max);
    // Restarts since the child last stayed up; the next wait is its backoff.
    let mut failures: u32 = 0;
    let mut running = Some(first);
    loop {
        let mut r = match running.take() {
            Some(r) => r,
            None => match start(&opts, &env, &name) {
                Ok(r) => {
                    pid.store(r.pid, Ordering::SeqCst);
                    let _ = cur.send(Some(Arc::clone(&r.mux)));
                    r
                }
                Err(e) => {
                    tracing::warn!(target: "hangar_plugin::exec", plugin = %name, "cannot restart: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.base_delay(failures)) => {}
                        _ = stopped(stop.clone()) => break,
                    }
                    failures = failures.saturating_add(1);
                    continue;
                }
            },
        };
        let began = tokio::time::Instant::now();
        tokio::select! {
            st = r.child.wait() => {
                tracing::warn!(target: "hangar_plugin::exec", plugin = %name, pid = r.pid, "exited: {st:?}; restarting");
            }
            _ = stopped(stop.clone()) => {
                pid.store(0, Ordering::SeqCst);
                let _ = cur.send(None);
                stop_child(&mut r, opts.stop_grace).await;
                return;
            }
        }
        pid.store(0, Ordering::SeqCst);
        let _ = cur.send(None);
        r.mux.shutdown();
        signal_group(r.pid, rustix::process::Signal::KILL);
        if began.elapsed() > Duration::from_secs(10) {
            failures = 0;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.base_delay(failures)) => {}
            _ = stopped(stop.clone()) => break,
        }
        failures = failures.saturating_add(1);
        restarts.fetch_add(1, Ordering::SeqCst);
    }
    pid.store(0, Ordering::SeqCst);
    let _ = cur.send(None);
}

impl Transport for ExecClient {
    fn kind(&self) -> &'static str {
        TransportKind::Exec.as_str()
    }

    fn call(
        &self,
        kind: CallKind,
        data: Value,
        ctx: CallContext,
    ) -> BoxFuture<'_, Result<Value, Error>> {
        Box::pin(ExecClient::call(self, kind, data, ctx))
    }

    fn ends_at_timeout(&self) -> bool {
        true
    }

    fn call_shared(
        &self,
        kind: CallKind,
        data: Arc<Value>,
        ctx: CallContext,
    ) -> BoxFuture<'_, Result<Value, Error>> {
        Box::pin(ExecClient::call(self, kind, data, ctx))
    }

    fn call_raw<'a>(
        &'a self,
        kind: CallKind,
        data: &'a RawValue,
        ctx: CallContext,
    ) -> BoxFuture<'a, Result<Box<RawValue>, Error>> {
        Box::pin(ExecClient::call_raw(self, kind, data, ctx))
    }

    fn writes_trace(&self) -> bool {
        true
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.shutdown())
    }
}

/// Serve `handler` over this process's stdin/stdout (the plugin side of the
/// exec transport) until stdin closes. Log to stderr, never to stdout.
pub async fn serve_stdio<H: Handler>(handler: Arc<H>) {
    serve_stdio_with(handler, ServerAuth::none()).await
}

/// [`serve_stdio`], checking every call's headers with `auth`.
pub async fn serve_stdio_with<H: Handler>(handler: Arc<H>, auth: ServerAuth) {
    let (_stop_tx, stop) = watch::channel(false);
    serve_stream(
        tokio::io::stdin(),
        tokio::io::stdout(),
        handler,
        Arc::new(auth),
        stop,
    )
    .await
}
