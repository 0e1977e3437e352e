//! This node's side of the fleet: the session (registration, lease renewal,
//! observed state), fencing, the watch that wakes the agent and the
//! scheduler, and the agent's reconcile of the local fleet instances.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, DeleteOptions, PutOptions, Txn, TxnOp, WatchOptions};
use hangar_core::{Instance, InstanceState};
use hangar_store::Desired;
use tracing::{info, warn};

use crate::keys::{now_ms, NodeRecord, Observed, Want};
use crate::{json, lock, Error, ErrorKind, Result, Shared};

/// How long after a failed create the agent tries it again.
const RETRY_FAILED: Duration = Duration::from_secs(30);

/// The node's membership, until the fleet stops: a lease and the
/// registration under it, kept alive. A broken connection (an etcd member
/// gone, a stream reset) resumes renewing the *same* lease through the next
/// endpoint, for as long as etcd keeps it (a new etcd leader extends every
/// lease, so it can outlive `lease_ttl` of silence; fencing does not wait
/// for that). Only a lease etcd says is gone makes a new registration.
pub(crate) async fn session_loop(s: Arc<Shared>) {
    let mut pause = Duration::from_millis(50);
    let mut stop = s.stop.subscribe();
    let mut held: Option<Held> = None;
    while !s.stopped() {
        match session(&s, &mut held).await {
            Ok(()) => break,
            Err(e) => {
                warn!(node = %s.cfg.node, code = e.code(), "fleet session: {}", e.message);
                pause = (pause * 2).min(s.cfg.lease_ttl / 6);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = crate::until_stop(&mut stop) => {}
        }
    }
    let _ = s.session.send(None);
    if let Some(h) = held {
        // Leaving: the registration and observed state go now, not at expiry.
        let _ = s
            .op("revoking the lease", |mut c| async move {
                c.lease_revoke(h.lease).await
            })
            .await;
    }
}

/// A lease this node registered under, and what it published under it.
struct Held {
    lease: i64,
    rec: NodeRecord,
    published: BTreeMap<String, Vec<u8>>,
}

/// Grant a lease and register under it.
async fn register(s: &Arc<Shared>) -> Result<Held> {
    let ttl = s.cfg.lease_ttl.as_secs().max(2) as i64;
    let lease = s
        .op("granting the node's lease", |mut c| async move {
            c.lease_grant(ttl, None).await
        })
        .await?
        .id();
    let key = s.keys.node(&s.cfg.node);
    let rec = record(s);
    let txn = Txn::new()
        .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key.as_str(),
            json(&rec),
            Some(PutOptions::new().with_lease(lease)),
        )]);
    let r = s
        .op(
            "registering the node",
            |mut c| async move { c.txn(txn).await },
        )
        .await;
    if !matches!(r, Ok(ref r) if r.succeeded()) {
        let _ = s
            .op("revoking the lease", |mut c| async move {
                c.lease_revoke(lease).await
            })
            .await;
        r?;
        return Err(Error::new(
            ErrorKind::FleetExists,
            format!("node name {:?} is registered under another lease", s.cfg.node),
        )
        .hint("an earlier run of this node holds it until its lease expires; or two nodes share the name"));
    }
    info!(node = %s.cfg.node, lease, "registered in the fleet");
    Ok(Held {
        lease,
        rec,
        published: BTreeMap::new(),
    })
}

/// Renew the held lease (registering first when none is held) and publish
/// the observed state, until the fleet stops (`Ok`) or something breaks.
async fn session(s: &Arc<Shared>, held: &mut Option<Held>) -> Result<()> {
    if held.is_none() {
        *held = Some(register(s).await?);
    }
    let Some(h) = held.as_mut() else {
        return Ok(());
    };
    let lease = h.lease;
    let (i, mut c) = s.client();
    // Opening the renewals renews once: it fails when the lease is gone.
    let opened = tokio::time::timeout(s.op_timeout(), c.lease_keep_alive(lease)).await;
    if !matches!(
        opened,
        Ok(Ok(_)) | Ok(Err(etcd_client::Error::LeaseKeepAliveError(_)))
    ) {
        s.bad(i);
    }
    let (mut keeper, mut renewals) = match opened {
        Ok(Ok(k)) => k,
        Ok(Err(etcd_client::Error::LeaseKeepAliveError(e))) => {
            *held = None;
            let _ = s.session.send(None);
            return Err(Error::new(
                ErrorKind::FleetUnavailable,
                format!("the node's lease expired ({e})"),
            ));
        }
        Ok(Err(e)) => return Err(crate::error::etcd("renewing the node's lease", e)),
        Err(_) => return Err(crate::error::etcd("renewing the node's lease", "timed out")),
    };
    renewed(s);
    if *s.session.borrow() != Some(lease) {
        let _ = s.session.send(Some(lease));
    }
    s.agent_kick.notify_one();
    s.sched_kick.notify_one();

    let mut renew = tokio::time::interval(s.cfg.lease_ttl / 3);
    renew.tick().await;
    let mut observe = tokio::time::interval(Duration::from_millis(500));
    observe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop = s.stop.subscribe();
    loop {
        tokio::select! {
            () = crate::until_stop(&mut stop) => return Ok(()),
            _ = renew.tick() => {
                // The last renewal went unanswered for a third of the TTL:
                // this member is gone or cut off; renew through the next.
                if lock(&s.last_ok).elapsed() > s.cfg.lease_ttl / 2 {
                    s.bad(i);
                    return Err(Error::new(
                        ErrorKind::FleetUnavailable,
                        "a lease renewal went unanswered; trying the next endpoint",
                    ));
                }
                if let Err(e) = keeper.keep_alive().await {
                    s.bad(i);
                    return Err(crate::error::etcd("renewing the node's lease", e));
                }
            }
            m = renewals.message() => match m {
                Ok(Some(r)) if r.ttl() > 0 => renewed(s),
                Ok(Some(_)) => {
                    *held = None;
                    let _ = s.session.send(None);
                    return Err(Error::new(ErrorKind::FleetUnavailable, "the node's lease expired"));
                }
                Ok(None) => {
                    s.bad(i);
                    return Err(Error::new(ErrorKind::FleetUnavailable, "etcd closed the lease renewals"));
                }
                Err(e) => {
                    s.bad(i);
                    return Err(crate::error::etcd("renewing the node's lease", e));
                }
            },
            _ = observe.tick() => {
                // A failed write is tried again at the next tick; the lease,
                // not this, decides whether the node is in the fleet.
                if let Err(e) = publish(s, lease, &mut h.published, &mut h.rec).await {
                    warn!(node = %s.cfg.node, code = e.code(), "fleet: {}", e.message);
                }
            }
        }
    }
}

/// The node's record as it registers it now.
fn record(s: &Shared) -> NodeRecord {
    let c = &s.cfg.capacity;
    let used: usize = s.daemon.instance_list().iter().map(|i| i.ports.len()).sum();
    let range = s
        .daemon
        .settings()
        .ports()
        .map(|r| (*r.end() as usize) - (*r.start() as usize) + 1)
        .unwrap_or(0);
    NodeRecord {
        name: s.cfg.node.clone(),
        labels: s.cfg.labels.clone(),
        max_instances: c.instances,
        memory: c
            .memory
            .as_deref()
            .and_then(|m| hangar_supervisor::Limits::parse_memory(m).ok()),
        pids: c.pids,
        ports_free: range.saturating_sub(used) as u32,
        since_ms: now_ms(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// A renewal was answered: the node is in the fleet; a fenced node resumes.
fn renewed(s: &Shared) {
    *lock(&s.last_ok) = Instant::now();
    if s.fenced.swap(false, Ordering::SeqCst) {
        info!(node = %s.cfg.node, "back in the fleet: its fleet instances follow the assignments again");
        s.agent_kick.notify_one();
    }
}

/// Write what changed in the node's record and its instances' observed
/// state, under the lease.
async fn publish(
    s: &Shared,
    lease: i64,
    published: &mut BTreeMap<String, Vec<u8>>,
    rec: &mut NodeRecord,
) -> Result<()> {
    let mut now = record(s);
    now.since_ms = rec.since_ms;
    if now != *rec {
        let (key, value) = (s.keys.node(&s.cfg.node), json(&now));
        s.op("updating the node's record", |mut c| async move {
            c.put(key, value, Some(PutOptions::new().with_lease(lease)))
                .await
        })
        .await?;
        *rec = now;
    }
    let mut want: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for i in local(s).values() {
        let o = Observed {
            state: i.state.as_str().to_string(),
            ports: i.ports.clone(),
            error: i
                .error
                .as_ref()
                .map(|e| format!("{}: {}", e.code, e.message)),
        };
        want.insert(i.name.clone(), json(&o));
    }
    for (name, (why, _)) in lock(&s.failed).iter() {
        want.entry(name.clone()).or_insert_with(|| {
            json(&Observed {
                state: "error".into(),
                ports: BTreeMap::new(),
                error: Some(why.clone()),
            })
        });
    }
    let mut ops = Vec::new();
    for (name, v) in &want {
        if published.get(name) != Some(v) {
            ops.push(TxnOp::put(
                s.keys.observed(&s.cfg.node, name),
                v.clone(),
                Some(PutOptions::new().with_lease(lease)),
            ));
        }
    }
    for name in published.keys() {
        if !want.contains_key(name) {
            ops.push(TxnOp::delete(
                s.keys.observed(&s.cfg.node, name),
                None::<DeleteOptions>,
            ));
        }
    }
    // etcd takes at most 128 operations per transaction by default.
    for chunk in ops.chunks(100) {
        let txn = Txn::new().and_then(chunk.to_vec());
        s.op("publishing observed state", |mut c| async move {
            c.txn(txn).await
        })
        .await?;
    }
    *published = want;
    Ok(())
}

/// The fleet instances this daemon holds, by name.
fn local(s: &Shared) -> BTreeMap<String, Instance> {
    s.daemon
        .instance_list()
        .into_iter()
        .filter(|i| i.fleet)
        .map(|i| (i.name.clone(), i))
        .collect()
}

/// Fencing: a node whose lease has not been renewed for `lease_ttl` stops
/// every fleet instance it runs (etcd has expired, or is about to expire,
/// its lease, and the scheduler will place them elsewhere after `grace`).
pub(crate) async fn fence_loop(s: Arc<Shared>) {
    let mut stop = s.stop.subscribe();
    let step = (s.cfg.lease_ttl / 20).clamp(Duration::from_millis(20), Duration::from_millis(250));
    loop {
        tokio::select! {
            () = tokio::time::sleep(step) => {}
            () = crate::until_stop(&mut stop) => return,
        }
        let late = lock(&s.last_ok).elapsed() >= s.cfg.lease_ttl;
        if !late || s.fenced.load(Ordering::SeqCst) {
            continue;
        }
        s.fenced.store(true, Ordering::SeqCst);
        let running: Vec<String> = local(&s)
            .into_values()
            .filter(|i| i.desired == Desired::Running)
            .map(|i| i.name)
            .collect();
        warn!(
            node = %s.cfg.node, instances = running.len(),
            "cut from etcd for longer than lease_ttl: stopping this node's fleet instances (fencing)"
        );
        let mut set = tokio::task::JoinSet::new();
        for name in running {
            let d = s.daemon.clone();
            set.spawn(async move {
                if let Err(e) = d.stop_instance(&name).await {
                    warn!(instance = %name, code = e.code(), "fencing could not stop it: {}", e.message);
                }
            });
        }
        while set.join_next().await.is_some() {}
    }
}

/// Watch the fleet's prefix and wake the agent (assignments, wants) and the
/// scheduler (nodes, drain marks, wants, assignments). Both re-read what
/// they need, so a lost watch loses nothing: it is made again.
pub(crate) async fn watch_loop(s: Arc<Shared>) {
    let mut stop = s.stop.subscribe();
    let k = &s.keys;
    let (nodes, draining, desired, assign) =
        (k.nodes(), k.draining_all(), k.desired_all(), k.assign_all());
    while !s.stopped() {
        let (i, mut c) = s.client();
        let stream = tokio::time::timeout(
            s.op_timeout(),
            c.watch(k.all(), Some(WatchOptions::new().with_prefix())),
        )
        .await;
        if !matches!(stream, Ok(Ok(_))) {
            s.bad(i);
        }
        if let Ok(Ok(mut w)) = stream {
            // Events written while no watch ran are caught by this re-read.
            s.agent_kick.notify_one();
            s.sched_kick.notify_one();
            loop {
                let m = tokio::select! {
                    m = w.message() => m,
                    () = crate::until_stop(&mut stop) => return,
                };
                let Ok(Some(r)) = m else {
                    s.bad(i);
                    break;
                };
                if r.canceled() {
                    break;
                }
                let (mut agent, mut sched) = (false, false);
                for e in r.events() {
                    let Some(key) = e.kv().and_then(|kv| std::str::from_utf8(kv.key()).ok()) else {
                        continue;
                    };
                    if key.starts_with(&assign) || key.starts_with(&desired) {
                        agent = true;
                        sched = true;
                    } else if key.starts_with(&nodes) || key.starts_with(&draining) {
                        sched = true;
                    }
                }
                if agent {
                    s.agent_kick.notify_one();
                }
                if sched {
                    s.sched_kick.notify_one();
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            () = crate::until_stop(&mut stop) => return,
        }
    }
}

/// The agent: make this node's fleet instances what the assignments say,
/// when woken and every two seconds.
pub(crate) async fn reconcile_loop(s: Arc<Shared>) {
    let mut stop = s.stop.subscribe();
    loop {
        tokio::select! {
            () = s.agent_kick.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
            () = crate::until_stop(&mut stop) => return,
        }
        if s.session.borrow().is_none() || s.fenced.load(Ordering::SeqCst) {
            continue;
        }
        if let Err(e) = reconcile(&s).await {
            warn!(node = %s.cfg.node, code = e.code(), "fleet agent: {}", e.message);
        }
    }
}

async fn reconcile(s: &Arc<Shared>) -> Result<()> {
    let snap = s.snapshot().await?;
    let me = s.cfg.node.as_str();
    let mine: BTreeMap<&String, &Want> = snap
        .assign
        .iter()
        .filter(|(_, (n, _))| n == me)
        .filter_map(|(name, _)| snap.wants.get(name).map(|w| (name, w)))
        .collect();
    let local = local(s);
    let others: std::collections::BTreeSet<String> = s
        .daemon
        .instance_list()
        .into_iter()
        .filter(|i| !i.fleet)
        .map(|i| i.name)
        .collect();
    lock(&s.failed).retain(|name, (_, at)| mine.contains_key(name) && at.elapsed() < RETRY_FAILED);
    for (name, inst) in &local {
        if !mine.contains_key(name) && !inst.state.in_progress() {
            spawn_op(s, name, Op::Delete);
        }
    }
    for (name, want) in mine {
        match local.get(name) {
            None if others.contains(name) => {
                lock(&s.failed).insert(
                    name.clone(),
                    (
                        format!("INSTANCE_EXISTS: an instance named {name:?} that is not the fleet's exists on this node"),
                        Instant::now(),
                    ),
                );
            }
            None if !lock(&s.failed).contains_key(name) => {
                spawn_op(s, name, Op::Create(want.clone()))
            }
            Some(i) if i.desired == Desired::Stopped && !i.state.in_progress() => {
                spawn_op(s, name, Op::Start)
            }
            Some(i) if i.state == InstanceState::Error => {
                // A create that failed on this node: delete it, so the next
                // reconcile after the pause tries again from the start.
                let why = i
                    .error
                    .as_ref()
                    .map(|e| format!("{}: {}", e.code, e.message))
                    .unwrap_or_else(|| "error".into());
                lock(&s.failed).insert(name.clone(), (why, Instant::now()));
                spawn_op(s, name, Op::Delete);
            }
            _ => {}
        }
    }
    Ok(())
}

enum Op {
    Create(Want),
    Start,
    Delete,
}

/// Run one operation on a local instance in a task of its own, at most one
/// per name at a time; the agent is woken when it ends.
fn spawn_op(s: &Arc<Shared>, name: &str, op: Op) {
    if !lock(&s.busy).insert(name.to_string()) {
        return;
    }
    let s = Arc::clone(s);
    let name = name.to_string();
    tokio::spawn(async move {
        let d = &s.daemon;
        let r = match op {
            Op::Create(w) => d
                .create_instance(hangar_core::CreateRequest {
                    feature: w.feature,
                    name: Some(w.name),
                    mode: w.mode,
                    options: w.options,
                    fleet: true,
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            Op::Start => d.start_instance(&name).await.map(|_| ()),
            Op::Delete => d.delete_instance(&name).await,
        };
        if let Err(e) = r {
            warn!(instance = %name, code = e.code(), "fleet agent: {}", e.message);
            lock(&s.failed).insert(
                name.clone(),
                (format!("{}: {}", e.code(), e.message), Instant::now()),
            );
        }
        lock(&s.busy).remove(&name);
        s.agent_kick.notify_one();
    });
}
