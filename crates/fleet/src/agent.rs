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
    s.session.send_replace(None);
    // `Fleet::leave` revokes it once the daemon stopped the instances.
    *lock(&s.leaving) = held.map(|h| h.lease);
}

/// A lease this node registered under, and what it published under it.
struct Held {
    lease: i64,
    rec: NodeRecord,
    published: BTreeMap<String, Vec<u8>>,
}

/// Register: under the lease an earlier run of this node recorded in its
/// data dir when etcd still holds the node's key under it (a restart takes
/// its registration over instead of waiting out the old lease), else under
/// a new lease, and only if no other lease holds the name.
async fn register(s: &Arc<Shared>) -> Result<Held> {
    let key = s.keys.node(&s.cfg.node);
    let rec = record(s);
    let file = s.daemon.data_dir().join(LEASE_FILE);
    let earlier = std::fs::read_to_string(&file)
        .ok()
        .and_then(|t| t.trim().parse::<i64>().ok());
    let mut lease = None;
    if let Some(old) = earlier {
        let txn = Txn::new()
            .when([Compare::lease(key.as_str(), CompareOp::Equal, old)])
            .and_then([TxnOp::put(
                key.as_str(),
                json(&rec),
                Some(PutOptions::new().with_lease(old)),
            )]);
        // An expired lease makes the put fail: then a new one.
        let r = s
            .op("registering again", |mut c| async move { c.txn(txn).await })
            .await;
        if matches!(r, Ok(ref r) if r.succeeded()) {
            info!(node = %s.cfg.node, lease = old, "registered again under the lease of its earlier run");
            lease = Some(old);
        }
    }
    let lease = match lease {
        Some(l) => l,
        None => {
            let l = grant_and_register(s, &key, &rec).await?;
            // Written after the registration: a crash in between leaves the
            // older id, which no key carries, so the next start grants anew.
            let tmp = file.with_extension("tmp");
            if let Err(e) =
                std::fs::write(&tmp, l.to_string()).and_then(|()| std::fs::rename(&tmp, &file))
            {
                warn!(node = %s.cfg.node, "cannot record the fleet lease in the data dir: {e}");
            }
            l
        }
    };
    // What an earlier run published under this node may name instances it
    // no longer has; the session publishes what is here now.
    let prefix = s.keys.observed(&s.cfg.node, "");
    s.op("clearing old observed state", |mut c| async move {
        c.delete(
            prefix,
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
    })
    .await?;
    Ok(Held {
        lease,
        rec,
        published: BTreeMap::new(),
    })
}

/// The data dir's file holding the lease id of the node's registration.
const LEASE_FILE: &str = "fleet-lease";

async fn grant_and_register(s: &Arc<Shared>, key: &str, rec: &NodeRecord) -> Result<i64> {
    let ttl = s.cfg.lease_ttl.as_secs().max(2) as i64;
    let lease = s
        .op("granting the node's lease", |mut c| async move {
            c.lease_grant(ttl, None).await
        })
        .await?
        .id();
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key,
            json(rec),
            Some(PutOptions::new().with_lease(lease)),
        )])
        .or_else([TxnOp::get(key, None)]);
    let r = s
        .op(
            "registering the node",
            |mut c| async move { c.txn(txn).await },
        )
        .await;
    // Refused, but the key is under this very lease: an earlier try whose
    // answer was lost did register.
    let ours = |r: &etcd_client::TxnResponse| {
        r.op_responses().into_iter().any(|o| match o {
            etcd_client::TxnOpResponse::Get(g) => g.kvs().iter().any(|kv| kv.lease() == lease),
            _ => false,
        })
    };
    if !matches!(r, Ok(ref r) if r.succeeded() || ours(r)) {
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
        .hint("another node has this name, or an earlier run of this node holds it until its lease expires"));
    }
    info!(node = %s.cfg.node, lease, "registered in the fleet");
    Ok(lease)
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
    let (i, c) = s.client().await;
    let mut c = c.map_err(|e| {
        s.bad(i);
        crate::error::etcd("renewing the node's lease", e)
    })?;
    // Opening the renewals renews once: it fails when the lease is gone.
    let sent = Instant::now();
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
            lease_gone(s);
            return Err(Error::new(
                ErrorKind::FleetUnavailable,
                format!("the node's lease expired ({e})"),
            ));
        }
        Ok(Err(e)) => return Err(crate::error::etcd("renewing the node's lease", e)),
        Err(_) => return Err(crate::error::etcd("renewing the node's lease", "timed out")),
    };
    renewed(s, sent);
    if *s.session.borrow() != Some(lease) {
        s.session.send_replace(Some(lease));
    }
    // Renewals are answered in order: the answer to the oldest one sent.
    let mut in_flight: std::collections::VecDeque<Instant> = std::collections::VecDeque::new();
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
                if in_flight.front().is_some_and(|t| t.elapsed() >= s.cfg.lease_ttl / 3) {
                    s.bad(i);
                    return Err(Error::new(
                        ErrorKind::FleetUnavailable,
                        "a lease renewal went unanswered; trying the next endpoint",
                    ));
                }
                in_flight.push_back(Instant::now());
                if let Err(e) = keeper.keep_alive().await {
                    s.bad(i);
                    return Err(crate::error::etcd("renewing the node's lease", e));
                }
            }
            m = renewals.message() => match m {
                Ok(Some(r)) if r.ttl() > 0 => {
                    let sent = in_flight.pop_front().unwrap_or_else(Instant::now);
                    renewed(s, sent);
                }
                Ok(Some(_)) => {
                    *held = None;
                    lease_gone(s);
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

/// A renewal sent at `sent` was answered: etcd keeps the lease at least
/// `lease_ttl` from `sent` (it renewed after the request left). A fenced
/// node resumes, unless the answer came too late to count.
fn renewed(s: &Shared, sent: Instant) {
    {
        let mut last = lock(&s.last_ok);
        if sent > *last {
            *last = sent;
        }
    }
    if sent.elapsed() < s.fence_after() && s.fenced.swap(false, Ordering::SeqCst) {
        info!(node = %s.cfg.node, "in the fleet: its fleet instances follow the assignments again");
        s.agent_kick.notify_one();
    }
}

/// etcd says the node's lease is gone: no session, and fencing at once.
fn lease_gone(s: &Shared) {
    s.session.send_replace(None);
    *lock(&s.last_ok) = long_ago(s);
}

/// An instant old enough to fence on (the clock's start if it is younger).
pub(crate) fn long_ago(s: &Shared) -> Instant {
    let now = Instant::now();
    now.checked_sub(s.cfg.lease_ttl * 2).unwrap_or(now)
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

/// Fencing: a node that has not had a renewal answered for
/// [`Shared::fence_after`] (measured from when that renewal was sent) is
/// fenced: every step while it is, each of its fleet instances that runs or
/// is being made is stopped (a create under way is deleted, which cancels
/// it), so nothing an operation started before the fence runs on after it.
/// A node starts fenced: what its daemon's boot restarted waits for the
/// fleet to confirm it.
pub(crate) async fn fence_loop(s: Arc<Shared>) {
    let mut stop = s.stop.subscribe();
    let step = (s.cfg.lease_ttl / 20).clamp(Duration::from_millis(20), Duration::from_millis(250));
    loop {
        let late = lock(&s.last_ok).elapsed() >= s.fence_after();
        if late && !s.fenced.swap(true, Ordering::SeqCst) {
            let n = local(&s).len();
            if n > 0 {
                warn!(
                    node = %s.cfg.node, instances = n,
                    "no lease renewal answered in time: stopping this node's fleet instances (fencing)"
                );
            }
        }
        if s.fenced.load(Ordering::SeqCst) {
            for i in local(&s).into_values() {
                if i.state.in_progress() && i.state != InstanceState::Deleting {
                    fence_op(&s, &i.name, Op::Delete);
                } else if i.desired == Desired::Running {
                    fence_op(&s, &i.name, Op::Stop);
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(step) => {}
            () = crate::until_stop(&mut stop) => return,
        }
    }
}

/// A fencing operation, at most one per name at a time, apart from the
/// agent's (a stop must not wait behind a start).
fn fence_op(s: &Arc<Shared>, name: &str, op: Op) {
    let key = format!("fence:{name}");
    if !lock(&s.busy).insert(key.clone()) {
        return;
    }
    let s = Arc::clone(s);
    let name = name.to_string();
    tokio::spawn(async move {
        let r = match op {
            Op::Delete => s.daemon.delete_instance(&name).await,
            _ => s.daemon.stop_instance(&name).await.map(|_| ()),
        };
        if let Err(e) = r {
            warn!(instance = %name, code = e.code(), "fencing: {}", e.message);
        }
        lock(&s.busy).remove(&key);
    });
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
        let (i, c) = s.client().await;
        let stream = match c {
            Ok(mut c) => tokio::time::timeout(
                s.op_timeout(),
                c.watch(k.all(), Some(WatchOptions::new().with_prefix())),
            )
            .await
            .ok()
            .and_then(|r| r.ok()),
            Err(_) => None,
        };
        if stream.is_none() {
            s.bad(i);
        }
        if let Some(mut w) = stream {
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
    if s.fenced.load(Ordering::SeqCst) {
        return Ok(());
    }
    for (name, inst) in &local {
        // Not assigned here, or assigned here as something else (deleted
        // and asked for again with another feature, mode or options).
        let differs = mine.get(name).is_some_and(|w| {
            // The record holds the mode it resolved when none was asked for.
            let mode = w.mode.is_some() && w.mode != inst.mode;
            w.feature != inst.feature || mode || w.options != inst.options
        });
        if (!mine.contains_key(name) || differs) && inst.state != InstanceState::Deleting {
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
    Stop,
    Delete,
}

/// Run one operation on a local instance in a task of its own, at most one
/// per name at a time; the agent is woken when it ends.
fn spawn_op(s: &Arc<Shared>, name: &str, op: Op) {
    // A delete does not wait behind a create or start of the same name (the
    // instance's own lock orders them; a delete cancels a create).
    let key = match op {
        Op::Delete => format!("delete:{name}"),
        _ => name.to_string(),
    };
    if !lock(&s.busy).insert(key.clone()) {
        return;
    }
    let s = Arc::clone(s);
    let name = name.to_string();
    tokio::spawn(async move {
        let d = &s.daemon;
        // Fenced since it was planned: fencing owns the instance now.
        if s.fenced.load(Ordering::SeqCst) && !matches!(op, Op::Delete) {
            lock(&s.busy).remove(&key);
            return;
        }
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
            Op::Stop => d.stop_instance(&name).await.map(|_| ()),
            Op::Delete => d.delete_instance(&name).await,
        };
        if let Err(e) = r {
            warn!(instance = %name, code = e.code(), "fleet agent: {}", e.message);
            lock(&s.failed).insert(
                name.clone(),
                (format!("{}: {}", e.code(), e.message), Instant::now()),
            );
        }
        lock(&s.busy).remove(&key);
        s.agent_kick.notify_one();
    });
}
