//! The scheduler: elected through etcd's election API among the nodes, it
//! places wanted instances on nodes and writes each assignment in a
//! transaction guarded by the assignment's revision and by its own leader
//! key, so a deposed leader's late write, or a second scheduler's, fails
//! instead of assigning twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, DeleteOptions, LeaderKey, Txn, TxnOp};
use tracing::{info, warn};

use crate::keys::{now_ms, Assignment, Keys};
use crate::place::{self, Need};
use crate::{json, Result, Shared, Snapshot};

/// Campaign while the node has a session; lead until the session or the
/// leadership ends; again.
pub(crate) async fn run(s: Arc<Shared>) {
    let mut session = s.session.subscribe();
    let mut stop = s.stop.subscribe();
    while !s.stopped() {
        let lease = *session.borrow_and_update();
        let Some(lease) = lease else {
            tokio::select! {
                _ = session.changed() => continue,
                () = crate::until_stop(&mut stop) => return,
            }
        };
        let (i, c) = s.client().await;
        let mut c = match c {
            Ok(c) => c,
            Err(e) => {
                s.bad(i);
                warn!(node = %s.cfg.node, "fleet election: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let won = tokio::select! {
            r = c.campaign(s.keys.election(), s.cfg.node.as_str(), lease) => r,
            _ = session.changed() => continue,
            () = crate::until_stop(&mut stop) => return,
        };
        let leader = match won {
            Ok(mut r) => r.take_leader(),
            Err(e) => {
                s.bad(i);
                warn!(node = %s.cfg.node, "fleet election: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let Some(leader) = leader else { continue };
        info!(node = %s.cfg.node, "elected the fleet's scheduler");
        let mut sched = Scheduler::new(Arc::clone(&s), leader.clone());
        tokio::select! {
            why = sched.lead() => info!(node = %s.cfg.node, "no longer the fleet's scheduler: {why}"),
            _ = session.changed() => {}
            () = crate::until_stop(&mut stop) => {}
        }
        let opts = etcd_client::ResignOptions::new().with_leader(leader);
        let _ = s
            .op(
                "resigning",
                |mut c| async move { c.resign(Some(opts)).await },
            )
            .await;
    }
}

/// What a guarded write of an assignment came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Written.
    Done,
    /// The assignment (or the want) changed since it was read: nothing
    /// written; the next pass reads again.
    Raced,
    /// The leader key is not this scheduler's any more: nothing written.
    Deposed,
}

/// Most moves in one transaction: each brings up to three compares, and
/// etcd takes at most 128 compares (and 128 operations) per transaction by
/// default.
pub const MAX_BATCH: usize = 40;

/// Write moves in one transaction that holds only if `leader` still holds
/// the election and, for each move, the assignment's mod revision is still
/// the one read with it (0: absent), its guard still holds, and (for a
/// placement) the instance is still wanted. All or nothing: `Raced` means
/// none was written (one of them changed), `Deposed` that the leader key is
/// not this one's any more. At most [`MAX_BATCH`] moves.
pub async fn write_guarded(
    c: &mut etcd_client::Client,
    keys: &Keys,
    leader: &LeaderKey,
    batch: &[(i64, &place::Move)],
) -> std::result::Result<Written, etcd_client::Error> {
    let mut when = vec![Compare::create_revision(
        leader.key(),
        CompareOp::Equal,
        leader.rev(),
    )];
    let mut ops = Vec::with_capacity(batch.len());
    for (seen, m) in batch {
        let key = keys.assign(&m.name);
        when.push(Compare::mod_revision(key.as_str(), CompareOp::Equal, *seen));
        match &m.guard {
            place::Guard::None => {}
            place::Guard::NodeGone(n) => {
                when.push(Compare::version(keys.node(n), CompareOp::Equal, 0));
            }
            place::Guard::Draining(n) => {
                when.push(Compare::version(keys.draining(n), CompareOp::Greater, 0));
            }
        }
        ops.push(match &m.to {
            Some(to) => {
                when.push(Compare::version(
                    keys.desired(&m.name),
                    CompareOp::Greater,
                    0,
                ));
                TxnOp::put(
                    key.as_str(),
                    json(&Assignment {
                        node: to.clone(),
                        at_ms: now_ms(),
                    }),
                    None,
                )
            }
            None => TxnOp::delete(key.as_str(), None::<DeleteOptions>),
        });
    }
    // On failure, tell why: is the leader key still this one's?
    let txn = Txn::new()
        .when(when)
        .and_then(ops)
        .or_else([TxnOp::get(leader.key(), None)]);
    let r = c.txn(txn).await?;
    if r.succeeded() {
        return Ok(Written::Done);
    }
    let still = r.op_responses().into_iter().any(|o| match o {
        etcd_client::TxnOpResponse::Get(g) => g
            .kvs()
            .iter()
            .any(|kv| kv.create_revision() == leader.rev()),
        _ => false,
    });
    Ok(if still {
        Written::Raced
    } else {
        Written::Deposed
    })
}

/// What the scheduler did, in its log.
fn log(moves: &[place::Move]) {
    for m in moves {
        match (&m.from, &m.to) {
            (None, Some(to)) => info!(instance = %m.name, node = %to, "placed"),
            (Some(from), Some(to)) => info!(instance = %m.name, from = %from, node = %to, "moved"),
            (Some(from), None) => info!(instance = %m.name, from = %from, "unassigned"),
            (None, None) => {}
        }
    }
}

/// One leader's term.
pub(crate) struct Scheduler {
    s: Arc<Shared>,
    leader: LeaderKey,
    /// Nodes that hold assignments but are not registered, since when (as
    /// this leader saw them).
    missing: HashMap<String, Instant>,
    /// What one instance of a feature takes, from its manifest.
    needs: HashMap<String, Need>,
}

impl Scheduler {
    pub(crate) fn new(s: Arc<Shared>, leader: LeaderKey) -> Scheduler {
        Scheduler {
            s,
            leader,
            missing: HashMap::new(),
            needs: HashMap::new(),
        }
    }

    /// Passes, when woken and twice a second (the grace of lost nodes runs
    /// out between events), until the leadership is lost.
    async fn lead(&mut self) -> String {
        loop {
            match self.pass().await {
                Ok(true) => {}
                Ok(false) => return "another leader holds the election key".into(),
                Err(e) => warn!(code = e.code(), "fleet scheduler: {}", e.message),
            }
            tokio::select! {
                () = self.s.sched_kick.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// One pass: read the fleet, plan, write the moves. `Ok(false)`: this
    /// scheduler is no longer the leader.
    pub(crate) async fn pass(&mut self) -> Result<bool> {
        let snap = self.s.snapshot().await?;
        let now = Instant::now();
        let held: BTreeSet<&String> = snap.assign.values().map(|(n, _)| n).collect();
        self.missing
            .retain(|n, _| held.contains(n) && !snap.nodes.contains_key(n));
        for n in held {
            if !snap.nodes.contains_key(n) {
                self.missing.entry(n.clone()).or_insert(now);
            }
        }
        let lost: BTreeSet<String> = self
            .missing
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= self.s.cfg.grace)
            .map(|(n, _)| n.clone())
            .collect();
        for w in snap.wants.values() {
            if !self.needs.contains_key(&w.feature) {
                let need = self.need_of(&w.feature).await;
                self.needs.insert(w.feature.clone(), need);
            }
        }
        let nodes: BTreeMap<String, place::Node<'_>> = snap
            .nodes
            .iter()
            .map(|(n, r)| {
                (
                    n.clone(),
                    place::Node {
                        record: r,
                        draining: snap.draining.contains(n),
                    },
                )
            })
            .collect();
        let current: BTreeMap<String, String> = snap
            .assign
            .iter()
            .map(|(k, (n, _))| (k.clone(), n.clone()))
            .collect();
        let mut reported: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (node, name) in snap.observed.keys() {
            if snap.nodes.contains_key(node) {
                reported
                    .entry(name.clone())
                    .or_default()
                    .insert(node.clone());
            }
        }
        let needs = &self.needs;
        let moves = place::plan(&nodes, &snap.wants, &current, &lost, &reported, &|f| {
            needs.get(f).copied().unwrap_or_default()
        });
        // In batches; a batch something raced is written move by move, so
        // the others still go in this pass.
        for chunk in moves.chunks(MAX_BATCH) {
            match self.write(&snap, chunk).await? {
                Written::Done => log(chunk),
                Written::Deposed => return Ok(false),
                Written::Raced => {
                    for m in chunk {
                        match self.write(&snap, std::slice::from_ref(m)).await? {
                            Written::Done => log(std::slice::from_ref(m)),
                            Written::Raced => {}
                            Written::Deposed => return Ok(false),
                        }
                    }
                }
            }
        }
        Ok(true)
    }

    /// Write moves in one guarded transaction.
    async fn write(&self, snap: &Snapshot, moves: &[place::Move]) -> Result<Written> {
        let batch: Vec<(i64, &place::Move)> = moves
            .iter()
            .map(|m| {
                (
                    snap.assign.get(&m.name).map(|(_, rev)| *rev).unwrap_or(0),
                    m,
                )
            })
            .collect();
        let keys = &self.s.keys;
        let leader = &self.leader;
        self.s
            .op("writing assignments", |mut c| async move {
                write_guarded(&mut c, keys, leader, &batch).await
            })
            .await
    }

    /// What one instance of `feature` takes: its manifest's memory and pids
    /// limits and its named ports. A feature this node's catalog lacks takes
    /// nothing measurable (its node reports the error).
    async fn need_of(&self, feature: &str) -> Need {
        match self.s.daemon.feature(feature).await {
            Ok(info) => {
                let m = &info.entry.manifest;
                Need {
                    memory: m
                        .resources
                        .memory_limit
                        .as_deref()
                        .and_then(|s| hangar_supervisor::Limits::parse_memory(s).ok())
                        .unwrap_or(0),
                    pids: m.resources.max_pids.unwrap_or(0),
                    ports: m.network.named_ports().len() as u32,
                }
            }
            Err(_) => Need::default(),
        }
    }
}
