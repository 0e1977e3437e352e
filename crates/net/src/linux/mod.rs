//! The Linux backend: a network namespace, a veth pair, addresses, a routing
//! table of the instance's own and a policy rule per instance, all through
//! netlink (rtnetlink), never by running `ip`.

mod netns;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use futures_util::TryStreamExt;
use netlink_packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::AddressFamily;
use rtnetlink::{IpVersion, LinkUnspec, RouteMessageBuilder};
use serde::{Deserialize, Serialize};

pub use netns::{enter_netns, in_netns, netns_path, open_netns, spawn_in_netns, NETNS_DIR};

use crate::backend::{BoxFuture, NetworkBackend, Progress};
use crate::error::{NetError, NetErrorKind};
use crate::record::{NetPool, NetRecord, NetSpec, NetState, RecoveryReport, Step, PREFIX_LEN};

/// The steps of the Linux backend, in order.
pub const LINUX_STEPS: [Step; 8] = [
    Step::Namespace,
    Step::Veth,
    Step::HostAddress,
    Step::HostUp,
    Step::InstanceAddress,
    Step::InstanceRoute,
    Step::TableRoute,
    Step::Rule,
];

/// Config of the Linux backend (`[network] backend = "linux"`).
///
/// Instance `n` gets namespace `{prefix}{n}`, veth `{prefix}{n}-h` (host) /
/// `{prefix}{n}-i` (instance), addresses from `pool`, routing table
/// `table_base + n`, firewall mark `fwmark_base + n`, and the rule
/// `priority rule_priority fwmark MARK lookup TABLE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinuxConfig {
    /// Name prefix of every namespace and link hangar makes; recovery only
    /// ever removes objects with this prefix.
    pub prefix: String,
    /// Addresses and the number range.
    pub pool: NetPool,
    /// Table of instance `n` is `table_base + n`.
    pub table_base: u32,
    /// Mark of instance `n` is `fwmark_base + n`.
    pub fwmark_base: u32,
    /// Priority of the policy rules (must be below 32766, the main table's).
    pub rule_priority: u32,
    /// Where the default route of the instance's table points. Unset (the
    /// default, as in the seed): via the instance's own address, so traffic
    /// carrying the instance's mark is handed to the instance (a proxy or VPN
    /// client). Set: via this gateway (an uplink), so the instance's marked
    /// traffic leaves through that uplink.
    pub uplink_gateway: Option<Ipv4Addr>,
}

impl Default for LinuxConfig {
    fn default() -> Self {
        LinuxConfig {
            prefix: "hg-".into(),
            pool: NetPool::default(),
            table_base: 4_200_000,
            fwmark_base: 0x0042_0000,
            rule_priority: 9000,
            uplink_gateway: None,
        }
    }
}

impl LinuxConfig {
    /// Checks names fit `IFNAMSIZ`, ids do not overflow and the rule comes
    /// before the main table.
    pub fn validate(&self) -> Result<(), NetError> {
        self.pool.validate()?;
        let bad = |m: String| Err(NetError::new(NetErrorKind::InvalidConfig, m));
        let ok_chars = self
            .prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if self.prefix.is_empty() || !ok_chars {
            return bad(format!(
                "network name prefix {:?} must be non-empty lowercase letters, digits, '-' or '_'",
                self.prefix
            ));
        }
        let longest = format!("{}{}-h", self.prefix, self.pool.last);
        if longest.len() > 15 {
            return bad(format!(
                "interface name {longest:?} is longer than the kernel's 15 characters; shorten the prefix"
            ));
        }
        if self.table_base.checked_add(self.pool.last).is_none()
            || self.fwmark_base.checked_add(self.pool.last).is_none()
        {
            return bad("table_base or fwmark_base + the last number overflows 32 bits".into());
        }
        if self.table_base + self.pool.first <= 255 {
            return bad(
                "table_base must leave the instance tables above 255 (the kernel's reserved ids)"
                    .into(),
            );
        }
        if self.fwmark_base + self.pool.first == 0 {
            return bad("fwmark 0 matches unmarked traffic; raise fwmark_base".into());
        }
        if self.rule_priority == 0 || self.rule_priority >= 32766 {
            return bad(format!(
                "rule_priority {} must be between 1 and 32765 (before the main table)",
                self.rule_priority
            ));
        }
        Ok(())
    }

    fn table_range(&self) -> std::ops::RangeInclusive<u32> {
        self.table_base + self.pool.first..=self.table_base + self.pool.last
    }

    /// The number in a name `{prefix}{n}{suffix}` if `n` is in range.
    fn number_in(&self, name: &str, suffix: &str) -> Option<u32> {
        let digits = name.strip_prefix(&self.prefix)?.strip_suffix(suffix)?;
        if digits.is_empty()
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || digits.starts_with('0')
        {
            return None;
        }
        let n: u32 = digits.parse().ok()?;
        self.pool.contains(n).then_some(n)
    }
}

/// A thread with its own small tokio runtime that drives the netlink
/// connections, so the backend works from any executor and outlives none.
struct Worker {
    rt: tokio::runtime::Handle,
    host: rtnetlink::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Worker {
    fn start() -> Result<Worker, NetError> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("hangar-netlink".into())
            .spawn(move || {
                // The host's netlink socket must live in the host namespace.
                netns::enter_process_netns();
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let host = rt.block_on(async {
                    let (conn, handle, _) = rtnetlink::new_connection()?;
                    tokio::spawn(conn);
                    Ok::<_, io::Error>(handle)
                });
                let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
                match host {
                    Ok(h) => {
                        let _ = tx.send(Ok((rt.handle().clone(), h, stop_tx)));
                        // Runs the connections until the backend is dropped.
                        rt.block_on(async {
                            let _ = stop_rx.await;
                        });
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| NetError::from_io(NetErrorKind::Io, "starting the netlink thread", &e))?;
        match rx.recv() {
            Ok(Ok((rt, host, stop))) => Ok(Worker {
                rt,
                host,
                _stop: stop,
            }),
            Ok(Err(e)) => Err(NetError::from_io(
                NetErrorKind::Netlink,
                "opening a netlink socket",
                &e,
            )),
            Err(_) => Err(NetError::new(
                NetErrorKind::Io,
                "the netlink thread died while starting",
            )),
        }
    }
}

/// The Linux backend. Cheap to make; the netlink thread starts on first use.
pub struct LinuxBackend {
    config: LinuxConfig,
    worker: Mutex<Option<Arc<Worker>>>,
    fail_after: Option<usize>,
}

impl std::fmt::Debug for LinuxBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinuxBackend")
            .field("config", &self.config)
            .field("fail_after", &self.fail_after)
            .finish()
    }
}

fn errno_of(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

fn nl_err(what: impl std::fmt::Display, e: rtnetlink::Error) -> NetError {
    match errno_of(&e) {
        Some(errno) => NetError::from_io(
            NetErrorKind::Netlink,
            what,
            &io::Error::from_raw_os_error(errno),
        ),
        None => NetError::new(NetErrorKind::Netlink, format!("{what}: {e}")),
    }
}

fn ns_err(what: impl std::fmt::Display, e: io::Error) -> NetError {
    NetError::from_io(NetErrorKind::Namespace, what, &e)
}

/// Ok if the request succeeded or failed only because the object is gone.
fn gone_ok(r: Result<(), rtnetlink::Error>, what: impl std::fmt::Display) -> Result<(), NetError> {
    const ENOENT: i32 = 2;
    const ESRCH: i32 = 3;
    const ENODEV: i32 = 19;
    const EADDRNOTAVAIL: i32 = 99;
    match r {
        Ok(()) => Ok(()),
        Err(e) if matches!(errno_of(&e), Some(ENOENT | ESRCH | ENODEV | EADDRNOTAVAIL)) => Ok(()),
        Err(e) => Err(nl_err(what, e)),
    }
}

fn link_name(m: &LinkMessage) -> Option<&str> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

fn route_table(m: &RouteMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table))
}

fn rule_table(m: &RuleMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            RuleAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table))
}

fn rule_attr(m: &RuleMessage, pick: fn(&RuleAttribute) -> Option<u32>) -> Option<u32> {
    m.attributes.iter().find_map(pick)
}

/// Deletes link `name` (fine if it is gone) on a thread of its own with a
/// socket of its own: the kernel answers a link deletion only after an RCU
/// barrier (tens of milliseconds), in the sender's context, so doing it on
/// the shared netlink thread would hold up every other network's requests,
/// and parallel teardowns would queue instead of waiting out their barriers
/// together.
async fn del_link(name: &str) -> Result<(), NetError> {
    let owned = name.to_string();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("hangar-nl-del".into())
        .spawn(move || {
            netns::enter_process_netns();
            let _ = tx.send(del_link_blocking(&owned));
        })
        .map_err(|e| NetError::from_io(NetErrorKind::Io, "starting a netlink thread", &e))?;
    let res = rx
        .await
        .unwrap_or_else(|_| Err(io::Error::other("netlink thread panicked")));
    match res {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(19) => Ok(()), // ENODEV: already gone
        Err(e) => Err(NetError::from_io(
            NetErrorKind::Netlink,
            format!("removing link {name}"),
            &e,
        )),
    }
}

fn del_link_blocking(name: &str) -> io::Result<()> {
    use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};
    use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    let mut msg = NetlinkMessage::from(netlink_packet_route::RouteNetlinkMessage::DelLink(
        LinkUnspec::new_with_name(name).build(),
    ));
    msg.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    msg.header.sequence_number = 1;
    msg.finalize();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    sock.send(&buf, 0)?;
    loop {
        let mut rbuf: Vec<u8> = Vec::with_capacity(16 * 1024);
        let n = sock.recv(&mut rbuf, 0)?;
        let mut off = 0;
        while off < n {
            let reply = NetlinkMessage::<netlink_packet_route::RouteNetlinkMessage>::deserialize(
                &rbuf[off..n],
            )
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let len = reply.header.length as usize;
            if reply.header.sequence_number == 1 {
                if let NetlinkPayload::Error(e) = reply.payload {
                    return match e.code {
                        None => Ok(()),
                        Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                    };
                }
            }
            if len == 0 {
                break;
            }
            off += (len + 3) & !3;
        }
    }
}

/// What create's steps pass along.
#[derive(Default)]
struct Ctx {
    ns: Option<rtnetlink::Handle>,
    host_index: Option<u32>,
}

/// What recovery found on the host, by instance number.
#[derive(Default)]
struct Found {
    netns: BTreeSet<u32>,
    links: BTreeMap<u32, Vec<String>>,
    rules: Vec<(u32, RuleMessage)>,
    routes: Vec<(u32, RouteMessage)>,
}

impl LinuxBackend {
    /// A backend with `config` (validated).
    pub fn new(config: LinuxConfig) -> Result<Self, NetError> {
        config.validate()?;
        Ok(LinuxBackend {
            config,
            worker: Mutex::new(None),
            fail_after: None,
        })
    }

    /// For tests: every `create` fails with `NET_INJECTED_FAULT` right after
    /// `k` steps succeeded (0 = before the first), and rolls back. Settable
    /// only from code, never from a config file.
    pub fn fail_after_step(mut self, k: usize) -> Self {
        self.fail_after = Some(k);
        self
    }

    /// The config.
    pub fn config(&self) -> &LinuxConfig {
        &self.config
    }

    fn worker(&self) -> Result<Arc<Worker>, NetError> {
        let mut w = self.worker.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = w.as_ref() {
            return Ok(w.clone());
        }
        let started = Arc::new(Worker::start()?);
        *w = Some(started.clone());
        Ok(started)
    }

    fn plan_record(&self, spec: &NetSpec) -> Result<NetRecord, NetError> {
        let c = &self.config;
        let n = spec.number;
        if !c.pool.contains(n) {
            return Err(NetError::new(
                NetErrorKind::NumberUnavailable,
                format!(
                    "network number {n} of {:?} is outside the configured range {}..={}",
                    spec.instance_id, c.pool.first, c.pool.last
                ),
            ));
        }
        let ns = format!("{}{n}", c.prefix);
        Ok(NetRecord {
            backend: "linux".into(),
            instance_id: spec.instance_id.clone(),
            number: n,
            namespace_path: netns_path(&ns),
            host_if: format!("{ns}-h"),
            instance_if: format!("{ns}-i"),
            namespace: ns,
            host_addr: c.pool.host_addr(n),
            instance_addr: c.pool.instance_addr(n),
            prefix_len: PREFIX_LEN,
            table: c.table_base + n,
            routing_mark: (c.table_base + n).to_string(),
            fwmark: c.fwmark_base + n,
            rule_priority: c.rule_priority,
            state: NetState::Creating,
            steps_done: Vec::new(),
        })
    }

    /// Checks a stored record was made by this backend with this config.
    fn check_record(&self, rec: &NetRecord) -> Result<(), NetError> {
        let want = self.plan_record(&NetSpec::new(rec.instance_id.clone(), rec.number))?;
        let same = rec.backend == want.backend
            && rec.namespace == want.namespace
            && rec.host_if == want.host_if
            && rec.table == want.table
            && rec.fwmark == want.fwmark
            && rec.rule_priority == want.rule_priority;
        if same {
            Ok(())
        } else {
            Err(NetError::new(
                NetErrorKind::InvalidRecord,
                format!(
                    "network record of {:?} (backend {}, namespace {}) does not match this backend's config",
                    rec.instance_id, rec.backend, rec.namespace
                ),
            ))
        }
    }

    async fn link_index(h: &rtnetlink::Handle, name: &str) -> Result<Option<u32>, NetError> {
        let mut s = h.link().get().match_name(name.to_string()).execute();
        match s.try_next().await {
            Ok(Some(m)) => Ok(Some(m.header.index)),
            Ok(None) => Ok(None),
            Err(e) if errno_of(&e) == Some(19) => Ok(None),
            Err(e) => Err(nl_err(format!("looking up link {name}"), e)),
        }
    }

    fn default_route(&self, rec: &NetRecord, oif: Option<u32>) -> RouteMessage {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
            .table_id(rec.table);
        match (self.config.uplink_gateway, oif) {
            (Some(gw), _) => b = b.gateway(gw),
            (None, Some(idx)) => b = b.gateway(rec.instance_addr).output_interface(idx),
            (None, None) => b = b.gateway(rec.instance_addr),
        }
        b.build()
    }

    fn rule_message(&self, rec: &NetRecord) -> RuleMessage {
        let mut m = RuleMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.action = RuleAction::ToTable;
        m.header.table = 252; // RT_TABLE_COMPAT: the real id is in FRA_TABLE
        m.attributes.push(RuleAttribute::Table(rec.table));
        m.attributes
            .push(RuleAttribute::Priority(rec.rule_priority));
        m.attributes.push(RuleAttribute::FwMark(rec.fwmark));
        m.attributes.push(RuleAttribute::FwMask(u32::MAX));
        m
    }

    async fn run_step(
        &self,
        w: &Worker,
        step: Step,
        rec: &NetRecord,
        ctx: &mut Ctx,
    ) -> Result<(), NetError> {
        let host = &w.host;
        match step {
            Step::Namespace => {
                let rt = w.rt.clone();
                let handle = netns::create_netns(&rec.namespace, move || {
                    // Opened on the creating thread, so the socket lives in the new namespace.
                    let _g = rt.enter();
                    let (conn, handle, _) = rtnetlink::new_connection()?;
                    rt.spawn(conn);
                    Ok(handle)
                })
                .await
                .map_err(|e| ns_err(format!("creating namespace {}", rec.namespace), e))?;
                ctx.ns = Some(handle);
            }
            Step::Veth => {
                let fd = netns::open_netns(&rec.namespace_path)
                    .map_err(|e| ns_err(format!("opening {}", rec.namespace_path.display()), e))?;
                let peer = LinkUnspec::new_with_name(&rec.instance_if)
                    .setns_by_fd(std::os::fd::AsRawFd::as_raw_fd(&fd))
                    .build();
                let msg = rtnetlink::LinkVeth::new(&rec.host_if, &rec.instance_if)
                    .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                    .build();
                host.link().add(msg).execute().await.map_err(|e| {
                    nl_err(
                        format!("adding veth {} / {}", rec.host_if, rec.instance_if),
                        e,
                    )
                })?;
                drop(fd);
                ctx.host_index = Self::link_index(host, &rec.host_if).await?;
                if ctx.host_index.is_none() {
                    return Err(NetError::new(
                        NetErrorKind::Netlink,
                        format!("veth {} vanished right after it was made", rec.host_if),
                    ));
                }
            }
            Step::HostAddress => {
                let idx = self.host_index(host, rec, ctx).await?;
                host.address()
                    .add(idx, IpAddr::V4(rec.host_addr), rec.prefix_len)
                    .execute()
                    .await
                    .map_err(|e| {
                        nl_err(
                            format!(
                                "adding {}/{} to {}",
                                rec.host_addr, rec.prefix_len, rec.host_if
                            ),
                            e,
                        )
                    })?;
            }
            Step::HostUp => {
                let idx = self.host_index(host, rec, ctx).await?;
                host.link()
                    .set(LinkUnspec::new_with_index(idx).up().build())
                    .execute()
                    .await
                    .map_err(|e| nl_err(format!("setting {} up", rec.host_if), e))?;
            }
            Step::InstanceAddress => {
                let ns = self.ns_handle(w, rec, ctx).await?;
                let idx = Self::link_index(&ns, &rec.instance_if)
                    .await?
                    .ok_or_else(|| {
                        NetError::new(
                            NetErrorKind::Netlink,
                            format!(
                                "{} is missing inside namespace {}",
                                rec.instance_if, rec.namespace
                            ),
                        )
                    })?;
                ns.address()
                    .add(idx, IpAddr::V4(rec.instance_addr), rec.prefix_len)
                    .execute()
                    .await
                    .map_err(|e| {
                        nl_err(
                            format!(
                                "adding {}/{} in {}",
                                rec.instance_addr, rec.prefix_len, rec.namespace
                            ),
                            e,
                        )
                    })?;
                for (i, what) in [(1u32, "lo"), (idx, rec.instance_if.as_str())] {
                    ns.link()
                        .set(LinkUnspec::new_with_index(i).up().build())
                        .execute()
                        .await
                        .map_err(|e| {
                            nl_err(format!("setting {what} up in {}", rec.namespace), e)
                        })?;
                }
            }
            Step::InstanceRoute => {
                let ns = self.ns_handle(w, rec, ctx).await?;
                let route = RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
                    .gateway(rec.host_addr)
                    .build();
                ns.route().add(route).execute().await.map_err(|e| {
                    nl_err(
                        format!(
                            "adding the default route via {} in {}",
                            rec.host_addr, rec.namespace
                        ),
                        e,
                    )
                })?;
            }
            Step::TableRoute => {
                let idx = self.host_index(host, rec, ctx).await?;
                host.route()
                    .add(self.default_route(rec, Some(idx)))
                    .execute()
                    .await
                    .map_err(|e| {
                        nl_err(
                            format!("adding the default route of table {}", rec.table),
                            e,
                        )
                    })?;
            }
            Step::Rule => {
                let mut req = host.rule().add().v4();
                *req.message_mut() = self.rule_message(rec);
                req.execute().await.map_err(|e| {
                    nl_err(
                        format!(
                            "adding rule fwmark {:#x} lookup {} priority {}",
                            rec.fwmark, rec.table, rec.rule_priority
                        ),
                        e,
                    )
                })?;
            }
            other => {
                return Err(NetError::new(
                    NetErrorKind::InvalidRecord,
                    format!("step {other} is not a Linux step"),
                ))
            }
        }
        Ok(())
    }

    async fn host_index(
        &self,
        host: &rtnetlink::Handle,
        rec: &NetRecord,
        ctx: &mut Ctx,
    ) -> Result<u32, NetError> {
        if let Some(i) = ctx.host_index {
            return Ok(i);
        }
        let i = Self::link_index(host, &rec.host_if).await?.ok_or_else(|| {
            NetError::new(
                NetErrorKind::Netlink,
                format!("link {} is missing", rec.host_if),
            )
        })?;
        ctx.host_index = Some(i);
        Ok(i)
    }

    async fn ns_handle(
        &self,
        w: &Worker,
        rec: &NetRecord,
        ctx: &mut Ctx,
    ) -> Result<rtnetlink::Handle, NetError> {
        if let Some(h) = &ctx.ns {
            return Ok(h.clone());
        }
        let rt = w.rt.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let joined = netns::spawn_in_netns(&rec.namespace_path, move || {
            let _g = rt.enter();
            let (conn, handle, _) = rtnetlink::new_connection()?;
            rt.spawn(conn);
            let _ = tx.send(handle);
            Ok(())
        });
        let h = match joined {
            Ok(_) => rx.await.ok(),
            Err(e) => return Err(ns_err(format!("entering {}", rec.namespace), e)),
        };
        let h = h.ok_or_else(|| {
            NetError::new(
                NetErrorKind::Namespace,
                format!("could not open a netlink socket inside {}", rec.namespace),
            )
        })?;
        ctx.ns = Some(h.clone());
        Ok(h)
    }

    /// Undoes one step. Objects inside the namespace (instance address and
    /// route, links up) and on the host veth (its address, its state) go away
    /// with the namespace or the link, whose own undo comes later in LIFO order.
    async fn undo_step(&self, w: &Worker, step: Step, rec: &NetRecord) -> Result<(), NetError> {
        let host = &w.host;
        match step {
            Step::Rule => {
                let msg = self.rule_message(rec);
                gone_ok(
                    host.rule().del(msg).execute().await,
                    format!("removing rule fwmark {:#x}", rec.fwmark),
                )
            }
            Step::TableRoute => gone_ok(
                host.route()
                    .del(self.default_route(rec, None))
                    .execute()
                    .await,
                format!("removing the default route of table {}", rec.table),
            ),
            Step::Veth => del_link(&rec.host_if).await,
            Step::Namespace => netns::delete_netns_async(&rec.namespace)
                .await
                .map(|_| ())
                .map_err(|e| ns_err(format!("removing namespace {}", rec.namespace), e)),
            Step::HostAddress | Step::HostUp | Step::InstanceAddress | Step::InstanceRoute => {
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn create_inner(
        &self,
        spec: &NetSpec,
        progress: Progress<'_>,
    ) -> Result<NetRecord, NetError> {
        let mut rec = self.plan_record(spec)?;
        progress(&rec);
        let w = match self.worker() {
            Ok(w) => w,
            Err(e) => {
                rec.state = NetState::Error {
                    step: Step::Namespace.to_string(),
                    cause: e.to_string(),
                };
                progress(&rec);
                return Err(e);
            }
        };
        let mut ctx = Ctx::default();
        for (i, step) in LINUX_STEPS.into_iter().enumerate() {
            let res = if self.fail_after == Some(i) {
                Err(NetError::new(
                    NetErrorKind::InjectedFault,
                    format!("fault injected after {i} steps, before step {step}"),
                ))
            } else {
                self.run_step(&w, step, &rec, &mut ctx).await
            };
            match res {
                Ok(()) => {
                    rec.steps_done.push(step);
                    progress(&rec);
                }
                Err(e) => {
                    let e = e.context(format!("network of {:?}, step {step}", rec.instance_id));
                    drop(ctx);
                    let mut cause = format!("[{}] {}", e.code(), e.message);
                    while let Some(done) = rec.steps_done.last().copied() {
                        if let Err(u) = self.undo_step(&w, done, &rec).await {
                            cause.push_str(&format!("; rollback of {done} failed: {u}"));
                            break;
                        }
                        rec.steps_done.pop();
                    }
                    rec.state = NetState::Error {
                        step: step.to_string(),
                        cause,
                    };
                    progress(&rec);
                    return Err(e);
                }
            }
        }
        rec.state = NetState::Active;
        progress(&rec);
        Ok(rec)
    }

    /// Removes every object the record names, newest first, whatever its
    /// steps say (a crash may have come between a step and its record).
    async fn teardown_inner(&self, rec: &NetRecord) -> Result<(), NetError> {
        self.check_record(rec)?;
        let w = self.worker()?;
        // The four objects do not depend on each other once the network is
        // going away, so they are removed at once: the kernel's RCU waits
        // for the link and the namespace mount then overlap.
        let (rule, route, link, ns) = futures_util::join!(
            self.undo_step(&w, Step::Rule, rec),
            self.undo_step(&w, Step::TableRoute, rec),
            self.undo_step(&w, Step::Veth, rec),
            self.undo_step(&w, Step::Namespace, rec),
        );
        match rule.and(route).and(link).and(ns) {
            Ok(()) => Ok(()),
            Err(e) => Err(e.context(format!("tearing down the network of {:?}", rec.instance_id))),
        }
    }

    async fn scan(&self, w: &Worker) -> Result<Found, NetError> {
        let c = &self.config;
        let mut found = Found::default();
        for name in netns::list_netns().map_err(|e| ns_err("listing /run/netns", e))? {
            if let Some(n) = c.number_in(&name, "") {
                found.netns.insert(n);
            }
        }
        let mut links = w.host.link().get().execute();
        while let Some(m) = links
            .try_next()
            .await
            .map_err(|e| nl_err("listing links", e))?
        {
            if let Some(name) = link_name(&m) {
                if let Some(n) = c.number_in(name, "-h").or_else(|| c.number_in(name, "-i")) {
                    found.links.entry(n).or_default().push(name.to_string());
                }
            }
        }
        let tables = c.table_range();
        let mut rules = w.host.rule().get(IpVersion::V4).execute();
        while let Some(m) = rules
            .try_next()
            .await
            .map_err(|e| nl_err("listing rules", e))?
        {
            let prio = rule_attr(&m, |a| match a {
                RuleAttribute::Priority(p) => Some(*p),
                _ => None,
            });
            let table = rule_table(&m);
            if prio == Some(c.rule_priority) && tables.contains(&table) {
                found.rules.push((table - c.table_base, m));
            }
        }
        let mut routes = w
            .host
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        while let Some(m) = routes
            .try_next()
            .await
            .map_err(|e| nl_err("listing routes", e))?
        {
            let table = route_table(&m);
            if tables.contains(&table) {
                found.routes.push((table - c.table_base, m));
            }
        }
        Ok(found)
    }

    fn is_complete(found: &Found, n: u32) -> bool {
        found.netns.contains(&n)
            && found.links.contains_key(&n)
            && found.rules.iter().any(|(m, _)| *m == n)
            && found.routes.iter().any(|(m, _)| *m == n)
    }

    async fn recover_inner(&self, known: &[NetRecord]) -> Result<RecoveryReport, NetError> {
        let w = self.worker()?;
        let mut report = RecoveryReport::default();
        let found = self.scan(&w).await?;
        let mut keep = BTreeSet::new();
        for rec in known {
            if let Err(e) = self.check_record(rec) {
                report.failed.push((rec.instance_id.clone(), e.to_string()));
                continue;
            }
            if rec.is_active() {
                keep.insert(rec.number);
                if Self::is_complete(&found, rec.number) {
                    continue;
                }
                let spec = NetSpec::new(rec.instance_id.clone(), rec.number);
                let again = async {
                    self.teardown_inner(rec).await?;
                    self.create_inner(&spec, &crate::backend::no_progress).await
                };
                match again.await {
                    Ok(r) => report.recreated.push(r),
                    Err(e) => report.failed.push((rec.instance_id.clone(), e.to_string())),
                }
            } else {
                match self.teardown_inner(rec).await {
                    Ok(()) => {
                        let mut r = rec.clone();
                        r.steps_done.clear();
                        if r.state == NetState::Creating {
                            r.state = NetState::Error {
                                step: "recovery".into(),
                                cause:
                                    "create was interrupted (daemon stopped); rolled back at start"
                                        .into(),
                            };
                        }
                        report.rolled_back.push(r);
                    }
                    Err(e) => {
                        keep.insert(rec.number);
                        report.failed.push((rec.instance_id.clone(), e.to_string()));
                    }
                }
            }
        }
        // Leftovers: hangar-owned objects whose number no ACTIVE record holds.
        // Rules first, then routes, links, namespaces (LIFO of create).
        let host = &w.host;
        let mut first_err: Option<NetError> = None;
        for (n, m) in found.rules {
            if keep.contains(&n) {
                continue;
            }
            let fw = rule_attr(&m, |a| match a {
                RuleAttribute::FwMark(f) => Some(*f),
                _ => None,
            })
            .unwrap_or(0);
            match gone_ok(
                host.rule().del(m).execute().await,
                "removing a leftover rule",
            ) {
                Ok(()) => report.removed.push(format!(
                    "rule fwmark {fw:#x} lookup {}",
                    self.config.table_base + n
                )),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        for (n, m) in found.routes {
            if keep.contains(&n) {
                continue;
            }
            let dst = m.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(RouteAddress::Inet(d)) => Some(*d),
                _ => None,
            });
            let dst = format!(
                "{}/{}",
                dst.unwrap_or(Ipv4Addr::UNSPECIFIED),
                m.header.destination_prefix_length
            );
            match gone_ok(
                host.route().del(m).execute().await,
                "removing a leftover route",
            ) {
                Ok(()) => report
                    .removed
                    .push(format!("route {dst} table {}", self.config.table_base + n)),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        for (n, names) in found.links {
            if keep.contains(&n) {
                continue;
            }
            for name in names {
                let msg = LinkUnspec::new_with_name(&name).build();
                match gone_ok(
                    host.link().del_with_message(msg).execute().await,
                    format!("removing link {name}"),
                ) {
                    Ok(()) => report.removed.push(format!("link {name}")),
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        for n in found.netns {
            if keep.contains(&n) {
                continue;
            }
            let name = format!("{}{n}", self.config.prefix);
            match netns::delete_netns(&name) {
                Ok(_) => report.removed.push(format!("netns {name}")),
                Err(e) => {
                    first_err.get_or_insert(ns_err(format!("removing namespace {name}"), e));
                }
            }
        }
        match first_err {
            Some(e) => Err(e.context("recovery could not remove every leftover")),
            None => Ok(report),
        }
    }
}

impl NetworkBackend for LinuxBackend {
    fn name(&self) -> &'static str {
        "linux"
    }

    fn plan(&self, spec: &NetSpec) -> Result<NetRecord, NetError> {
        self.plan_record(spec)
    }

    fn create<'a>(
        &'a self,
        spec: &'a NetSpec,
        progress: Progress<'a>,
    ) -> BoxFuture<'a, Result<NetRecord, NetError>> {
        Box::pin(self.create_inner(spec, progress))
    }

    fn teardown<'a>(&'a self, rec: &'a NetRecord) -> BoxFuture<'a, Result<(), NetError>> {
        Box::pin(self.teardown_inner(rec))
    }

    fn recover<'a>(
        &'a self,
        known: &'a [NetRecord],
    ) -> BoxFuture<'a, Result<RecoveryReport, NetError>> {
        Box::pin(self.recover_inner(known))
    }
}
