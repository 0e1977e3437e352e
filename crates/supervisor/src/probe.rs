//! Running probes: one small tokio task per probing process, executing checks with
//! shared clients and reporting each result to the process's task.
//!
//! A check never blocks anything but its own task: TCP and HTTP are async I/O on
//! the runtime (one pooled HTTP client per manager), exec checks are one-shot
//! commands (`once` module: spawned like any child, own process group, pidfd)
//! killed with their group on timeout.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_channel::mpsc;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use crate::event::EventKind;
use crate::health::{Check, HealthTracker, ProbeKind, ProbeSpec, Verdict};
use crate::manager::Ctx;
use crate::process::Shared;
use crate::spec::ProcessSpec;

/// A decisive probe outcome, sent to the process task. Everything else (health
/// bookkeeping, health events) the probe task does itself, so a passing check
/// costs no wake-up of the process task.
pub(crate) struct ProbeVerdict {
    pub generation: u64,
    pub verdict: Verdict,
    pub consecutive_failures: u32,
}

/// What a probe checks against, and where it reports.
#[derive(Clone)]
pub(crate) struct Target {
    /// The process's pid, for `Check::Process`.
    pub pid: u32,
    /// The process's resolved spec: exec checks run with its environment.
    pub spec: Arc<ProcessSpec>,
    /// Where the status snapshot lives.
    pub shared: Arc<Shared>,
    /// Process name, for events.
    pub name: Arc<str>,
}

/// Steady-state checks fire on a shared 20 ms grid, so a thousand probes with a
/// one-second interval wake the runtime 50 times a second, not a thousand.
const GRID: Duration = Duration::from_millis(20);

fn align_up(t: Instant) -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    let since = t.saturating_duration_since(epoch).as_nanos();
    let grid = GRID.as_nanos();
    let up = since.div_ceil(grid) * grid;
    epoch + Duration::from_nanos(up.min(u64::MAX as u128) as u64)
}

/// Run `probe` until the receiver is gone or the task is aborted.
pub(crate) async fn run(
    ctx: Arc<Ctx>,
    generation: u64,
    kind: ProbeKind,
    probe: ProbeSpec,
    mut tracker: HealthTracker,
    target: Target,
    tx: mpsc::UnboundedSender<ProbeVerdict>,
) {
    let mut done = 0u32;
    let mut ever_ok = false;
    // A top-level HTTP check is parsed once and cloned per check.
    let template = match &probe.check {
        Check::Http { url, headers, .. } => HttpPlan::new(url, headers).ok(),
        _ => None,
    };
    loop {
        let delay = probe.next_delay(done, ever_ok);
        if ever_ok && delay >= Duration::from_millis(500) {
            tokio::time::sleep_until(align_up(Instant::now() + delay)).await;
        } else {
            tokio::time::sleep(delay).await;
        }
        let start = Instant::now();
        let checking = async {
            match (&probe.check, template.as_ref()) {
                (
                    Check::Http {
                        url,
                        status,
                        body_contains,
                        ..
                    },
                    Some(plan),
                ) => http_send(&ctx, plan, url, *status, body_contains.as_deref()).await,
                _ => check(&ctx, &probe.check, &target, probe.timeout).await,
            }
        };
        let result = match tokio::time::timeout(probe.timeout, checking).await {
            Ok(r) => r,
            Err(_) => Err(format!("timed out after {:?}", probe.timeout)),
        };
        done = done.saturating_add(1);
        ever_ok |= result.is_ok();
        let before = tracker.status().status;
        let verdict = tracker.record(result, start.elapsed(), SystemTime::now());
        let health = tracker.status();
        {
            let Ok(mut st) = target.shared.status.lock() else {
                return;
            };
            // The process task bumps the generation (under this lock) when it
            // stops this probe: a late result must not overwrite its reset.
            if target.shared.probe_generation.load(Ordering::Acquire) != generation {
                return;
            }
            std::sync::Arc::make_mut(&mut st).health = health.clone();
        }
        if health.status != before {
            ctx.emit(
                &target.name,
                Some(target.pid),
                EventKind::Health {
                    probe: kind,
                    from: before,
                    to: health.status,
                    error: health
                        .last_error
                        .clone()
                        .filter(|_| health.consecutive_failures > 0),
                },
            );
        }
        if let Some(verdict) = verdict {
            let msg = ProbeVerdict {
                generation,
                verdict,
                consecutive_failures: health.consecutive_failures,
            };
            if tx.unbounded_send(msg).is_err() {
                return;
            }
        }
    }
}

/// A TCP connect to a port in the ephemeral range with nothing listening can
/// succeed by connecting to itself: the kernel picks that same port as the
/// source and the two SYNs meet (a simultaneous open). Such a connection is
/// proof of nothing; a TCP probe must not count it as a listener.
pub(crate) fn self_connected(s: &tokio::net::TcpStream) -> bool {
    matches!((s.local_addr(), s.peer_addr()), (Ok(l), Ok(p)) if l == p)
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
            Check::Tcp { address } => {
                let s = tokio::net::TcpStream::connect(address.as_str())
                    .await
                    .map_err(|e| format!("tcp {address}: {e}"))?;
                if self_connected(&s) {
                    return Err(format!(
                        "tcp {address}: nothing listens (the connection reached itself)"
                    ));
                }
                Ok(())
            }
            Check::Http {
                url,
                status,
                headers,
                body_contains,
            } => http(ctx, url, *status, headers, body_contains.as_deref()).await,
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

/// The HTTP client probes share: hyper's pooled HTTP/1.1 client. Plain HTTP only;
/// probes target loopback or the instance's own network.
pub(crate) type HttpClient = hyper_util::client::legacy::Client<HttpConnector, Empty<Bytes>>;

pub(crate) fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

/// A parsed HTTP check, built once per probe task and reused for every check.
#[derive(Clone)]
pub(crate) struct HttpPlan {
    uri: http::Uri,
    headers: http::HeaderMap,
}

impl HttpPlan {
    fn new(
        url: &str,
        headers: &std::collections::BTreeMap<String, String>,
    ) -> Result<HttpPlan, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("GET {url}: {e}"))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(format!("GET {url}: only http://host URLs can be probed"));
        }
        let mut map = http::HeaderMap::with_capacity(headers.len() + 1);
        for (k, v) in headers {
            let name = http::HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| format!("header {k:?}: {e}"))?;
            let value = http::HeaderValue::from_str(v).map_err(|e| format!("header {k:?}: {e}"))?;
            map.insert(name, value);
        }
        map.insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_static(concat!("hangar-probe/", env!("CARGO_PKG_VERSION"))),
        );
        Ok(HttpPlan { uri, headers: map })
    }
}

/// One HTTP check. The caller's timeout bounds it.
async fn http(
    ctx: &Ctx,
    url: &str,
    status: Option<u16>,
    headers: &std::collections::BTreeMap<String, String>,
    body_contains: Option<&str>,
) -> Result<(), String> {
    let plan = HttpPlan::new(url, headers)?;
    http_send(ctx, &plan, url, status, body_contains).await
}

async fn http_send(
    ctx: &Ctx,
    plan: &HttpPlan,
    url: &str,
    status: Option<u16>,
    body_contains: Option<&str>,
) -> Result<(), String> {
    let mut req = http::Request::new(Empty::<Bytes>::new());
    *req.uri_mut() = plan.uri.clone();
    *req.headers_mut() = plan.headers.clone();
    let resp = ctx
        .http
        .request(req)
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
    // Read the body to the end (bounded) so the connection goes back to the pool.
    let mut body = resp.into_body();
    let mut seen = Vec::new();
    let mut total = 0usize;
    while total < MAX_BODY {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    total += data.len();
                    if body_contains.is_some() {
                        seen.extend_from_slice(&data);
                    }
                }
            }
            Some(Err(e)) => return Err(format!("GET {url}: reading body: {e}")),
            None => break,
        }
    }
    if let Some(needle) = body_contains {
        if !String::from_utf8_lossy(&seen).contains(needle) {
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
    // Killed with its group on timeout, and when this check is dropped (the
    // probe's own timeout, or the probe stopped).
    let out = crate::once::run_once(ctx, spec, timeout)
        .await
        .map_err(|e| format!("exec {program}: {}", cause(&e)))?;
    if out.timed_out {
        return Err(format!(
            "exec {program}: timed out after {timeout:?}; killed"
        ));
    }
    if out.exit.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.output);
    let last = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| format!(": {l}"))
        .unwrap_or_default();
    Err(format!("exec {program}: {}{last}", out.exit))
}

/// What went wrong underneath a start failure (the I/O error), as a probe
/// error says it.
fn cause(e: &crate::Error) -> String {
    match std::error::Error::source(e) {
        Some(src) => src.to_string(),
        None => e.message().to_string(),
    }
}

/// The pid exists and is not a zombie.
fn process_alive(pid: u32) -> bool {
    match crate::reap::read_pseudo(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = crate::reap::stat_fields(&stat).and_then(|r| r.trim().chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    /// A socket bound to a port and connected to that same port is connected
    /// to itself (Linux's simultaneous open): the probe must see it.
    #[tokio::test]
    async fn a_connection_to_itself_is_seen() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.bind(addr).expect("bind the port it connects to");
        let s = sock.connect(addr).await.expect("self-connect");
        assert!(super::self_connected(&s));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listen");
        let other = tokio::net::TcpStream::connect(l.local_addr().expect("addr"))
            .await
            .expect("connect");
        assert!(!super::self_connected(&other));
    }
}
