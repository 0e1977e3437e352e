//! Followed streams, shared by every API that streams (gRPC `Events.Stream`
//! and `Processes.Logs`, GraphQL queries and subscriptions).
//!
//! Events: history after an id, then live events, with no gap and no event
//! twice; a stream that falls behind ends with `EVENTS_LOST` naming the id to
//! resume from, and one the daemon's shutdown cuts ends with `DAEMON_GONE`.
//!
//! Logs: the recent lines of each process named, merged by time, then (when
//! followed) new lines as they come, with a gap marker (`skipped`) where the
//! reader fell behind the output.

use std::sync::Arc;
use std::time::Duration;

use hangar_core::{Daemon, Error};
use hangar_store::{EventQuery, EventRecord};
use tokio::sync::{mpsc, watch};

use crate::pb;

/// Events per history page when a stream replays from an id.
pub(crate) const REPLAY_PAGE: u32 = 10_000;

/// Which events a stream carries.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// A glob over event names (process or instance names; `hangar` for the
    /// daemon's own); empty: all.
    pub name: String,
    /// Event kinds (`state`, `health`, `instance.state`, …); empty: all.
    pub kinds: Vec<String>,
    /// Replay stored events after this id first; 0: live events only
    /// (unless `since_ms` is set).
    pub after_id: i64,
    /// Replay stored events from this time (ms since the epoch) first; 0: no
    /// time bound.
    pub since_ms: i64,
}

impl EventFilter {
    fn glob(&self) -> Result<Option<glob::Pattern>, Error> {
        if self.name.is_empty() {
            return Ok(None);
        }
        glob::Pattern::new(&self.name).map(Some).map_err(|e| {
            Error::new(
                hangar_supervisor::ErrorKind::InvalidPattern,
                format!("invalid pattern {:?}: {e}", self.name),
            )
            .with("name", &self.name)
            .hint("use *, ? and [..] as in shell globs")
        })
    }
}

fn matches(pat: &Option<glob::Pattern>, kinds: &[String], r: &EventRecord) -> bool {
    pat.as_ref().is_none_or(|p| p.matches(&r.name)) && (kinds.is_empty() || kinds.contains(&r.kind))
}

/// Resolves once the listeners stop (or their owner is gone).
pub(crate) async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// What a followed stream ends with when the daemon stops: a client sees
/// why, and how to take up where it left off.
pub(crate) fn stopping(context: (&str, String), resume: String) -> Error {
    Error::new(
        crate::ErrorKind::DaemonGone,
        "the daemon is stopping; this stream ends here",
    )
    .with(context.0, context.1)
    .hint(resume)
}

/// The error a stream ends with when it fell `n` events behind after `sent`.
pub(crate) fn lost(n: u64, sent: i64) -> Error {
    Error::new(
        crate::ErrorKind::EventsLost,
        format!("this stream fell {n} events behind"),
    )
    .with("after_id", sent)
    .hint(format!(
        "resume with after_id={sent} to replay them from history"
    ))
}

/// Follow the events `f` selects until the receiver is dropped, the daemon
/// stops (`stop` turns true) or the stream falls behind. An invalid filter is
/// refused at once.
pub fn events(
    d: &Daemon,
    f: EventFilter,
    stop: watch::Receiver<bool>,
) -> Result<mpsc::Receiver<Result<Arc<EventRecord>, Error>>, Error> {
    let pat = f.glob()?;
    // Subscribe before reading history, then skip live events already sent.
    let mut live = d.subscribe();
    let mut sent = f.after_id;
    // Replay is paged forward, oldest first, so a long outage is replayed
    // whole rather than its newest part only.
    let replay_from = (f.after_id > 0 || f.since_ms > 0).then_some(f.after_id.max(0));
    let page_query = {
        let f = f.clone();
        move |after: i64| EventQuery {
            name_glob: (!f.name.is_empty()).then(|| f.name.clone()),
            kinds: f.kinds.clone(),
            after_id: Some(after),
            since_ms: (f.since_ms > 0).then_some(f.since_ms),
            limit: Some(REPLAY_PAGE),
            oldest: true,
            ..EventQuery::default()
        }
    };
    let d = d.clone();
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        if let Some(mut after) = replay_from {
            loop {
                let page = match d.history(page_query(after)).await {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                let n = page.len();
                for r in page {
                    after = r.id;
                    sent = sent.max(r.id);
                    if tx.send(Ok(Arc::new(r))).await.is_err() {
                        return;
                    }
                }
                if n < REPLAY_PAGE as usize {
                    break;
                }
            }
        }
        loop {
            tokio::select! {
                r = live.recv() => match r {
                    Ok(r) => {
                        if r.id <= sent || !matches(&pat, &f.kinds, &r) {
                            continue;
                        }
                        sent = r.id;
                        if tx.send(Ok(r)).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let _ = tx.send(Err(lost(n, sent))).await;
                        return;
                    }
                    Err(_) => return,
                },
                _ = tx.closed() => return,
                () = stopped(stop.clone()) => {
                    let _ = tx.send(Err(stopping(
                        ("last_event_id", sent.to_string()),
                        format!("follow again once the daemon is back: hangar events -f --after {sent}"),
                    ))).await;
                    return;
                }
            }
        }
    });
    Ok(rx)
}

/// The recent `lines` of every process the `patterns` (names or globs) match,
/// merged by the time hangar read them, then, when `follow`, each one's new
/// lines as they come. Every pattern must match something.
pub async fn logs(
    d: &Daemon,
    patterns: &[String],
    lines: u32,
    follow: bool,
    stop: watch::Receiver<bool>,
) -> Result<mpsc::Receiver<Result<pb::LogLine, Error>>, Error> {
    // Every name or glob must match: a typo is an error, not an empty stream.
    let mut names: Vec<String> = Vec::new();
    for pat in patterns.iter().filter(|p| !p.is_empty()) {
        let found = d.list(pat).await?;
        if found.is_empty() {
            return Err(crate::server::not_found(pat));
        }
        names.extend(found.into_iter().map(|v| v.want.spec.name.clone()));
    }
    if names.is_empty() {
        return Err(Error::new(
            hangar_base::ErrorKind::Usage,
            "no process named in the request",
        )
        .hint("name a process or a glob, e.g. `hangar logs web` or `hangar logs 'web-*'`"));
    }
    names.sort();
    names.dedup();
    let mgr = d.manager().clone();
    let (tx, rx) = mpsc::channel::<Result<pb::LogLine, Error>>(256);
    // Recent lines of every process first, merged by the time hangar read
    // them (the line number orders lines read in the same chunk).
    let mut backlog: Vec<pb::LogLine> = Vec::new();
    let mut cursors = Vec::with_capacity(names.len());
    for name in &names {
        let last = mgr
            .tail_since(name, u64::MAX, 0)
            .map(|(n, _)| n)
            .unwrap_or(0);
        let mut cursor = last.saturating_sub(u64::from(lines));
        if lines > 0 {
            while let Ok((upto, got)) = mgr.tail_since(name, cursor, 1024) {
                let full = got.len() == 1024;
                backlog.extend(log_lines(name, upto, &got));
                cursor = upto;
                if !full {
                    break;
                }
            }
        }
        cursors.push((name.clone(), cursor));
    }
    backlog.sort_by(|a, b| (a.at_ms, &a.process, a.number).cmp(&(b.at_ms, &b.process, b.number)));
    tokio::spawn(async move {
        for l in backlog {
            if tx.send(Ok(l)).await.is_err() {
                return;
            }
        }
        if !follow {
            return;
        }
        // Then each process's new lines as they come, one follower each,
        // until the client goes or the daemon stops (dropping the set
        // ends the followers).
        let mut tasks = tokio::task::JoinSet::new();
        let asked = cursors
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        for (name, cursor) in cursors {
            tasks.spawn(follow_one(mgr.clone(), name, cursor, tx.clone()));
        }
        tokio::select! {
            () = async { while tasks.join_next().await.is_some() {} } => {}
            () = stopped(stop) => {
                drop(tasks);
                let resume =
                    format!("follow again once the daemon is back: hangar logs {asked} -f");
                let _ = tx.send(Err(stopping(("process", asked), resume))).await;
            }
        }
    });
    Ok(rx)
}

/// Lines of `name` as messages, the last numbered `upto`.
fn log_lines<'a>(
    name: &'a str,
    upto: u64,
    lines: &'a [hangar_supervisor::LogLine],
) -> impl Iterator<Item = pb::LogLine> + 'a {
    let first = upto + 1 - lines.len() as u64;
    lines.iter().enumerate().map(move |(i, l)| pb::LogLine {
        stream: match l.stream {
            hangar_supervisor::Stream::Stdout => "stdout".into(),
            _ => "stderr".into(),
        },
        text: l.text.clone(),
        number: first + i as u64,
        at_ms: l
            .at
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
        process: name.to_string(),
        skipped: 0,
    })
}

/// Follow one process's output after line `cursor` until the client goes.
async fn follow_one(
    mgr: hangar_supervisor::Manager,
    name: String,
    mut cursor: u64,
    tx: mpsc::Sender<Result<pb::LogLine, Error>>,
) {
    loop {
        let (upto, lines) = match mgr.tail_since(&name, cursor, 1024) {
            Ok(x) => x,
            Err(_) => {
                // Not started yet, or removed: wait for it to appear.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => continue,
                    _ = tx.closed() => return,
                }
            }
        };
        let more = lines.len() == 1024;
        // Lines numbered after the cursor that the tail no longer holds: the
        // process wrote faster than this follower read. Said, not hidden.
        let first = upto + 1 - lines.len() as u64;
        let skipped = if lines.is_empty() {
            upto.saturating_sub(cursor)
        } else {
            first.saturating_sub(cursor + 1)
        };
        if skipped > 0 {
            let gap = pb::LogLine {
                process: name.clone(),
                number: cursor + 1,
                skipped,
                at_ms: lines.first().map_or(0, |l| {
                    l.at.duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as i64)
                        .unwrap_or(0)
                }),
                ..Default::default()
            };
            if tx.send(Ok(gap)).await.is_err() {
                return;
            }
        }
        for l in log_lines(&name, upto, &lines) {
            if tx.send(Ok(l)).await.is_err() {
                return;
            }
        }
        cursor = upto;
        if more {
            continue;
        }
        tokio::select! {
            r = mgr.wait_output(&name, cursor) => if r.is_err() {
                // Removed, or replaced by a reload: follow the new
                // process from its first line once it is registered.
                cursor = 0;
                tokio::time::sleep(Duration::from_millis(250)).await;
            },
            _ = tx.closed() => return,
        }
    }
}
