//! The fleet: hangar nodes that share desired and observed state in etcd.
//!
//! Each node with a `[daemon.fleet]` section runs a [`Fleet`]:
//!
//! - **the session** ([`agent`]): the node registers under a lease
//!   (`nodes/NODE`) and renews it every third of `lease_ttl`; its observed
//!   state (`observed/NODE/NAME`) is written under the same lease, so both
//!   vanish with the node. A node that has not renewed its lease for
//!   `lease_ttl` (cut from etcd, or etcd without quorum) **fences itself**:
//!   it stops every fleet instance it runs, before the scheduler may place
//!   them elsewhere (`grace` after the lease expired), so an instance never
//!   runs on two nodes for longer than the lease TTL;
//! - **the agent** ([`agent`]): watches the assignments and makes the local
//!   fleet instances match them through the daemon's own instance API (the
//!   same `apply` path as the config file and the APIs): creates what is
//!   assigned here, deletes what is not, starts what fencing stopped;
//! - **the scheduler** ([`scheduler`]): every node campaigns through etcd's
//!   election API; the leader places wanted instances on nodes
//!   ([`place::plan`]) and writes each assignment in a transaction guarded by
//!   the assignment's revision and its own leader key, so two schedulers can
//!   never assign one instance twice.
//!
//! The API ([`Fleet::nodes`], [`Fleet::create`], [`Fleet::list`],
//! [`Fleet::delete`], [`Fleet::drain`]) reads and writes etcd directly, so any
//! node's daemon answers for the whole fleet.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse,
};
use hangar_core::config::FleetSettings;
use hangar_core::Daemon;
use serde::de::DeserializeOwned;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

mod agent;
mod error;
mod keys;
mod place;
mod scheduler;

pub use error::ErrorKind;
pub use hangar_base::{Error, Result};
pub use keys::{Assignment, Keys, NodeRecord, Observed, Want};
pub use place::{Guard, Move};
pub use scheduler::{write_guarded, Written, MAX_BATCH};

use error::etcd;

/// How long an API call waits for etcd in all (over an etcd leader election,
/// say) before it answers `FLEET_UNAVAILABLE`.
pub(crate) const API_BUDGET: Duration = Duration::from_secs(8);
use keys::now_ms;

/// A node as `fleet nodes` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    /// Its name.
    pub name: String,
    /// Its registration; `None` when it holds assignments or a drain mark but
    /// is not registered (down, or cut from etcd).
    pub record: Option<NodeRecord>,
    /// Marked draining: nothing new goes there, what can move moves.
    pub draining: bool,
    /// The elected scheduler runs on it.
    pub leader: bool,
    /// Fleet instances assigned to it.
    pub instances: u32,
}

/// A fleet instance as `fleet ls` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetInstance {
    /// What was asked for.
    pub want: Want,
    /// The node it is assigned to.
    pub node: Option<String>,
    /// `pending` (no node fits yet), `assigned` (its node has not reported
    /// it yet), `lost` (its node is gone; it moves after the grace), or the
    /// state its node reports (`running`, `starting`, `error`, …).
    pub state: String,
    /// Its named ports on its node.
    pub ports: BTreeMap<String, u16>,
    /// Why it is in error, as its node says.
    pub error: Option<String>,
}

/// What `fleet create` asks for.
#[derive(Debug, Clone, Default)]
pub struct CreateFleetInstance {
    /// The feature.
    pub feature: String,
    /// Its name, unique in the fleet.
    pub name: String,
    /// Operation mode.
    pub mode: Option<String>,
    /// Options.
    pub options: serde_json::Map<String, serde_json::Value>,
    /// Only nodes with all these labels.
    pub on: BTreeMap<String, String>,
}

/// This node's part of the fleet. Cheap to clone.
#[derive(Clone)]
pub struct Fleet {
    s: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) cfg: FleetSettings,
    pub(crate) keys: Keys,
    pub(crate) daemon: Daemon,
    /// One client per endpoint, and the one in use: a request that fails
    /// moves the fleet to the next endpoint (a balanced channel would keep
    /// sending some requests to a member that is gone).
    clients: Vec<tokio::sync::OnceCell<Client>>,
    /// How each client connects (TLS, user).
    opts: ConnectOptions,
    cur: AtomicUsize,
    /// The lease of the current session, `None` between sessions.
    pub(crate) session: watch::Sender<Option<i64>>,
    /// When the lease was last confirmed renewed (or the fleet started).
    pub(crate) last_ok: Mutex<Instant>,
    /// No renewal answered within `fence_after`: the node's fleet
    /// instances are kept stopped.
    pub(crate) fenced: AtomicBool,
    /// The lease to revoke when the node leaves (after its instances stop).
    pub(crate) leaving: Mutex<Option<i64>>,
    /// Wakes the agent's reconcile.
    pub(crate) agent_kick: Notify,
    /// Wakes the scheduler's pass.
    pub(crate) sched_kick: Notify,
    /// Names with an operation of the agent under way.
    pub(crate) busy: Mutex<HashSet<String>>,
    /// Creates that failed here: name → (why, when), retried after a pause.
    pub(crate) failed: Mutex<HashMap<String, (String, Instant)>>,
    pub(crate) stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// How long one etcd request may take before the fleet gives up on it.
    pub(crate) fn op_timeout(&self) -> Duration {
        (self.cfg.lease_ttl / 3).clamp(Duration::from_millis(500), Duration::from_secs(5))
    }

    /// The client in use, and its index (for [`Shared::bad`]), connected
    /// on first use (with a user, connecting authenticates: etcd must
    /// answer, which it need not at start), within the op timeout.
    pub(crate) async fn client(&self) -> (usize, std::result::Result<Client, String>) {
        let i = self.cur.load(Ordering::Relaxed) % self.clients.len();
        let ep = &self.cfg.endpoints[i];
        let made = self.clients[i].get_or_try_init(|| async {
            match tokio::time::timeout(
                self.op_timeout(),
                Client::connect([ep], Some(self.opts.clone())),
            )
            .await
            {
                Ok(Ok(c)) => Ok(c),
                Ok(Err(e)) => Err(format!("connecting to {ep}: {e}")),
                Err(_) => Err(format!("connecting to {ep}: timed out")),
            }
        });
        (i, made.await.cloned())
    }

    /// A request through client `i` failed: use the next endpoint (unless
    /// another failure moved on already).
    pub(crate) fn bad(&self, i: usize) {
        let next = (i + 1) % self.clients.len();
        let _ = self
            .cur
            .compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// How long after the last answered renewal was sent the node fences
    /// itself: five sixths of the TTL, so its instances are stopping before
    /// etcd can expire the lease (no sooner than a TTL after that send).
    pub(crate) fn fence_after(&self) -> Duration {
        self.cfg.lease_ttl * 5 / 6
    }

    pub(crate) fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// One etcd request, bounded by [`Shared::op_timeout`]; a failure moves
    /// to the next endpoint.
    pub(crate) async fn op<T, E, Fut>(&self, what: &str, f: impl FnOnce(Client) -> Fut) -> Result<T>
    where
        E: std::fmt::Display,
        Fut: std::future::Future<Output = std::result::Result<T, E>>,
    {
        let (i, c) = self.client().await;
        let c = c.map_err(|e| {
            self.bad(i);
            etcd(what, e)
        })?;
        match tokio::time::timeout(self.op_timeout(), f(c)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.bad(i);
                Err(etcd(what, e))
            }
            Err(_) => {
                self.bad(i);
                Err(etcd(what, "timed out"))
            }
        }
    }

    /// An etcd request made for an API call: tried again on failure (an etcd
    /// member gone, a leader election under way) until [`API_BUDGET`] has
    /// passed, each try bounded by what is left of it.
    pub(crate) async fn api<T, E, F, Fut>(&self, what: &str, mut f: F) -> Result<T>
    where
        E: std::fmt::Display,
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, E>>,
    {
        let t0 = Instant::now();
        loop {
            let left = API_BUDGET.saturating_sub(t0.elapsed());
            // One try may not take all of it: a member that hangs is left
            // for the next one.
            let (i, c) = self.client().await;
            let e = match c {
                Err(e) => etcd(what, e),
                Ok(c) => match tokio::time::timeout(left.min(self.op_timeout() * 2), f(c)).await {
                    Ok(Ok(v)) => return Ok(v),
                    Ok(Err(e)) => etcd(what, e),
                    Err(_) => etcd(what, "timed out"),
                },
            };
            self.bad(i);
            if t0.elapsed() + Duration::from_millis(100) >= API_BUDGET {
                return Err(e);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every key under each prefix, read in one transaction (one revision).
    pub(crate) async fn read(
        &self,
        prefixes: &[String],
    ) -> Result<Vec<Vec<etcd_client::KeyValue>>> {
        let ops: Vec<TxnOp> = prefixes
            .iter()
            .map(|p| TxnOp::get(p.as_str(), Some(GetOptions::new().with_prefix())))
            .collect();
        let r = self
            .api("reading the fleet", |mut c: Client| {
                let txn = Txn::new().and_then(ops.clone());
                async move { c.txn(txn).await }
            })
            .await?;
        Ok(r.op_responses()
            .into_iter()
            .map(|o| match o {
                TxnOpResponse::Get(g) => g.kvs().to_vec(),
                _ => Vec::new(),
            })
            .collect())
    }

    /// The fleet as stored: nodes, drain marks, wants, assignments (with
    /// their mod revisions), observed states by (node, name).
    pub(crate) async fn snapshot(&self) -> Result<Snapshot> {
        let k = &self.keys;
        let [nodes, draining, desired, assign, observed]: [Vec<etcd_client::KeyValue>; 5] = self
            .read(&[
                k.nodes(),
                k.draining_all(),
                k.desired_all(),
                k.assign_all(),
                k.observed_all(),
            ])
            .await?
            .try_into()
            .map_err(|_| {
                Error::new(ErrorKind::FleetCorrupt, "etcd answered a short transaction")
            })?;
        let mut s = Snapshot::default();
        for kv in &nodes {
            if let Some(n) = k.tail(&k.nodes(), kv.key()) {
                s.nodes.insert(n.to_string(), parse(kv)?);
            }
        }
        for kv in &draining {
            if let Some(n) = k.tail(&k.draining_all(), kv.key()) {
                s.draining.insert(n.to_string());
            }
        }
        for kv in &desired {
            if let Some(n) = k.tail(&k.desired_all(), kv.key()) {
                s.wants.insert(n.to_string(), parse(kv)?);
            }
        }
        for kv in &assign {
            if let Some(n) = k.tail(&k.assign_all(), kv.key()) {
                let a: Assignment = parse(kv)?;
                s.assign.insert(n.to_string(), (a.node, kv.mod_revision()));
            }
        }
        for kv in &observed {
            if let Some((node, name)) = k
                .tail(&k.observed_all(), kv.key())
                .and_then(|t| t.split_once('/'))
            {
                s.observed
                    .insert((node.to_string(), name.to_string()), parse(kv)?);
            }
        }
        Ok(s)
    }
}

/// The fleet at one revision.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) nodes: BTreeMap<String, NodeRecord>,
    pub(crate) draining: std::collections::BTreeSet<String>,
    pub(crate) wants: BTreeMap<String, Want>,
    /// name → (node, mod revision of the assignment).
    pub(crate) assign: BTreeMap<String, (String, i64)>,
    pub(crate) observed: BTreeMap<(String, String), Observed>,
}

fn parse<T: DeserializeOwned>(kv: &etcd_client::KeyValue) -> Result<T> {
    serde_json::from_slice(kv.value()).map_err(|e| {
        Error::new(
            ErrorKind::FleetCorrupt,
            format!("cannot read {}: {e}", String::from_utf8_lossy(kv.key())),
        )
        .hint("something other than hangar wrote under the fleet's prefix; remove the key")
    })
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Serializing these plain records cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

impl Fleet {
    /// Check the settings, make the etcd client and start the session, the
    /// agent and the scheduler. Returns at once: etcd need not be up; until it
    /// answers the node is not in the fleet (and fences what it runs after
    /// `lease_ttl`).
    pub async fn start(daemon: Daemon, cfg: FleetSettings) -> Result<Fleet> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(cfg.lease_ttl / 3)
            .with_keep_alive(Duration::from_secs(1), cfg.lease_ttl / 3)
            .with_keep_alive_while_idle(true)
            // A member cut off from the quorum fails calls and streams
            // instead of holding them silently.
            .with_require_leader(true)
            // An auth token lost with a restarted member is fetched again.
            .with_auto_token_refresh(true);
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| {
                Error::new(
                    ErrorKind::FleetConfig,
                    format!("cannot read {}: {e}", p.display()),
                )
                .hint("check the path and its permissions in [daemon.fleet]")
            })
        };
        if cfg.ca_file.is_some() || cfg.cert_file.is_some() {
            let mut tls = etcd_client::TlsOptions::new();
            if let Some(ca) = &cfg.ca_file {
                tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
            }
            if let (Some(c), Some(k)) = (&cfg.cert_file, &cfg.key_file) {
                tls = tls.identity(etcd_client::Identity::from_pem(read(c)?, read(k)?));
            }
            opts = opts.with_tls(tls);
        }
        if let (Some(user), Some(pf)) = (&cfg.user, &cfg.password_file) {
            let text = String::from_utf8(read(pf)?).map_err(|_| {
                Error::new(
                    ErrorKind::FleetConfig,
                    "daemon.fleet.password_file is not UTF-8",
                )
                .with("path", pf.display())
            })?;
            let pass = text.lines().next().unwrap_or("").to_string();
            opts = opts.with_user(user.clone(), pass);
        }
        let clients = cfg
            .endpoints
            .iter()
            .map(|_| tokio::sync::OnceCell::new())
            .collect();
        let cfg_ttl = cfg.lease_ttl;
        let (session, _) = watch::channel(None);
        let (stop, _) = watch::channel(false);
        let s = Arc::new(Shared {
            keys: Keys::new(&cfg.prefix),
            cfg,
            daemon,
            clients,
            opts,
            cur: AtomicUsize::new(0),
            session,
            // Not confirmed yet: fenced until the first renewal is answered.
            last_ok: Mutex::new({
                let now = Instant::now();
                now.checked_sub(cfg_ttl * 2).unwrap_or(now)
            }),
            fenced: AtomicBool::new(false),
            leaving: Mutex::new(None),
            agent_kick: Notify::new(),
            sched_kick: Notify::new(),
            busy: Mutex::new(HashSet::new()),
            failed: Mutex::new(HashMap::new()),
            stop,
            tasks: Mutex::new(Vec::new()),
        });
        let tasks = vec![
            tokio::spawn(agent::session_loop(Arc::clone(&s))),
            tokio::spawn(agent::fence_loop(Arc::clone(&s))),
            tokio::spawn(agent::watch_loop(Arc::clone(&s))),
            tokio::spawn(agent::reconcile_loop(Arc::clone(&s))),
            tokio::spawn(scheduler::run(Arc::clone(&s))),
        ];
        *lock(&s.tasks) = tasks;
        Ok(Fleet { s })
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.s.cfg.node
    }

    /// Registered in etcd right now, with its lease's renewals running.
    /// The node's record shows in [`Fleet::nodes`] a moment earlier: it is
    /// written before the renewals open.
    pub fn registered(&self) -> bool {
        self.s.session.borrow().is_some()
    }

    /// Fenced: cut from etcd for longer than the lease, its fleet instances
    /// stopped.
    pub fn fenced(&self) -> bool {
        self.s.fenced.load(Ordering::SeqCst)
    }

    /// Stop taking part: the scheduler resigns, the agent and the session
    /// end; the lease is kept (the node still counts as present) until
    /// [`Fleet::leave`], which comes after the daemon stopped the instances,
    /// so no other node starts one while this one still runs it.
    pub async fn stop(&self) {
        self.s.stop.send_replace(true);
        let tasks = std::mem::take(&mut *lock(&self.s.tasks));
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
        }
    }

    /// Revoke the lease: the node's registration and observed state go at
    /// once, and its instances move after the grace. Call after
    /// [`Fleet::stop`] and after the instances stopped.
    pub async fn leave(&self) {
        let lease = lock(&self.s.leaving).take();
        if let Some(lease) = lease {
            let _ = self
                .s
                .op("revoking the lease", |mut c| async move {
                    c.lease_revoke(lease).await
                })
                .await;
        }
    }

    /// Every node: registered ones, and those that still hold assignments or
    /// a drain mark.
    pub async fn nodes(&self) -> Result<Vec<NodeView>> {
        let snap = self.s.snapshot().await?;
        let election = self.s.keys.election();
        let leader = match self
            .s
            .op("asking for the leader", |mut c| async move {
                c.leader(election).await
            })
            .await
        {
            Ok(r) => r
                .kv()
                .and_then(|kv| kv.value_str().ok())
                .map(str::to_string),
            // No leader elected yet (etcd answers "no leader" as an error).
            Err(_) => None,
        };
        let mut names: std::collections::BTreeSet<String> = snap.nodes.keys().cloned().collect();
        names.extend(snap.draining.iter().cloned());
        names.extend(snap.assign.values().map(|(n, _)| n.clone()));
        Ok(names
            .into_iter()
            .map(|n| NodeView {
                record: snap.nodes.get(&n).cloned(),
                draining: snap.draining.contains(&n),
                leader: leader.as_deref() == Some(n.as_str()),
                instances: snap.assign.values().filter(|(a, _)| *a == n).count() as u32,
                name: n,
            })
            .collect())
    }

    /// Ask for a fleet instance. Checked here as a local create would be
    /// (feature, mode, options, name), then stored; the scheduler places it.
    pub async fn create(&self, req: CreateFleetInstance) -> Result<FleetInstance> {
        self.s
            .daemon
            .check_instance(&hangar_core::CreateRequest {
                feature: req.feature.clone(),
                name: Some(req.name.clone()),
                mode: req.mode.clone(),
                options: req.options.clone(),
                ..Default::default()
            })
            .await?;
        for (k, v) in &req.on {
            if k.is_empty() || v.is_empty() {
                return Err(Error::new(
                    ErrorKind::FleetInvalid,
                    format!("--on {k}={v}: a constraint needs a label and a value"),
                )
                .hint("write it as --on zone=a"));
            }
        }
        let want = Want {
            name: req.name.clone(),
            feature: req.feature,
            mode: req.mode,
            options: req.options,
            on: req.on,
            created_ms: now_ms(),
        };
        let key = self.s.keys.desired(&want.name);
        let value = json(&want);
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.as_str(), value.clone(), None)])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let r = self
            .s
            .api("storing the fleet instance", |mut c: Client| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        // A try whose answer was lost may have stored it: then the key holds
        // exactly this request (its creation time included).
        let ours = r.op_responses().into_iter().any(|o| match o {
            TxnOpResponse::Get(g) => g.kvs().iter().any(|kv| kv.value() == value.as_slice()),
            _ => false,
        });
        if !r.succeeded() && !ours {
            return Err(Error::new(
                ErrorKind::FleetExists,
                format!("a fleet instance named {:?} exists", want.name),
            )
            .with("name", &want.name)
            .hint("pick another name, or `hangar fleet delete` the existing one first"));
        }
        self.s.sched_kick.notify_one();
        Ok(FleetInstance {
            want,
            node: None,
            state: "pending".into(),
            ports: BTreeMap::new(),
            error: None,
        })
    }

    /// Every fleet instance with its node and state, by name.
    pub async fn list(&self) -> Result<Vec<FleetInstance>> {
        let snap = self.s.snapshot().await?;
        Ok(snap
            .wants
            .values()
            .map(|w| {
                let node = snap.assign.get(&w.name).map(|(n, _)| n.clone());
                let obs = node
                    .as_ref()
                    .and_then(|n| snap.observed.get(&(n.clone(), w.name.clone())));
                let state = match (&node, obs) {
                    (None, _) => "pending".to_string(),
                    (Some(n), _) if !snap.nodes.contains_key(n) => "lost".to_string(),
                    (Some(_), Some(o)) => o.state.clone(),
                    (Some(_), None) => "assigned".to_string(),
                };
                FleetInstance {
                    want: w.clone(),
                    node,
                    state,
                    ports: obs.map(|o| o.ports.clone()).unwrap_or_default(),
                    error: obs.and_then(|o| o.error.clone()),
                }
            })
            .collect())
    }

    /// Delete a fleet instance: what was asked for and its assignment, in one
    /// transaction; its node deletes the local instance.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let want = self.s.keys.desired(name);
        let found = self
            .s
            .api("reading the fleet instance", |mut c: Client| {
                let key = want.clone();
                async move { c.get(key, Some(GetOptions::new().with_count_only())).await }
            })
            .await?;
        if found.count() == 0 {
            return Err(not_found(name));
        }
        // No compare: a try whose answer was lost and a delete racing this
        // one end the same way, and the second finds nothing to delete.
        let txn = Txn::new().and_then([
            TxnOp::delete(want.as_str(), None),
            TxnOp::delete(self.s.keys.assign(name), None),
        ]);
        self.s
            .api("deleting the fleet instance", |mut c: Client| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        self.s.sched_kick.notify_one();
        Ok(())
    }

    /// Mark a node draining (its instances move where they can, nothing new
    /// goes there), or clear the mark with `undo`.
    pub async fn drain(&self, node: &str, undo: bool) -> Result<NodeView> {
        let known = self.nodes().await?.into_iter().any(|n| n.name == node);
        if !known {
            return Err(Error::new(
                ErrorKind::FleetNodeNotFound,
                format!("no node named {node:?} is in the fleet"),
            )
            .with("node", node)
            .hint("`hangar fleet nodes` lists them"));
        }
        let key = self.s.keys.draining(node);
        if undo {
            self.s
                .api("clearing the drain mark", |mut c: Client| {
                    let key = key.clone();
                    async move { c.delete(key, None::<DeleteOptions>).await }
                })
                .await?;
        } else {
            self.s
                .api("marking the node draining", |mut c: Client| {
                    let key = key.clone();
                    async move { c.put(key, "", None::<PutOptions>).await }
                })
                .await?;
        }
        self.s.sched_kick.notify_one();
        self.nodes()
            .await?
            .into_iter()
            .find(|n| n.name == node)
            .ok_or_else(|| not_found(node))
    }
}

fn not_found(name: &str) -> Error {
    Error::new(
        ErrorKind::FleetNotFound,
        format!("no fleet instance named {name:?}"),
    )
    .with("name", name)
    .hint("`hangar fleet ls` lists them")
}

/// The error an API answers when this daemon has no `[daemon.fleet]`.
pub fn off() -> Error {
    Error::new(ErrorKind::FleetOff, "this daemon is not in a fleet")
        .hint("add a [daemon.fleet] section (endpoints, node) to its configuration file")
}

/// Resolves once the fleet stops (holds no lock across awaits, unlike the
/// guard `wait_for` returns).
pub(crate) async fn until_stop(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
