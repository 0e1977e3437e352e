//! The RouterOS backend: the seed's virtual interface factory on a MikroTik
//! router, over the RouterOS API (TCP 8728, or TLS 8729).
//!
//! Instance `n` gets, in order (seed 004, step 5):
//! 1. `/interface/vlan add name={prefix}{n} vlan-id={n} interface={parent}`
//! 2. `/ip/address add address={pool .1}/24 interface={prefix}{n}`
//! 3. `/routing/table add name={prefix}{n} fib` (sent as `=fib=yes`)
//! 4. `/ip/route add dst-address=0.0.0.0/0 gateway={pool .2} routing-table={prefix}{n}`
//!
//! each with `comment=hangar:{instance id}`. Removal looks objects up by name
//! (not by stored `.id`), so it also works for a record persisted before the
//! router answered. Each operation opens its own logged-in connection.
//!
//! Never run against a real router here: tested against a protocol-level test
//! server only.

pub(crate) mod api;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

use crate::backend::{BoxFuture, NetworkBackend, Progress};
use crate::error::{NetError, NetErrorKind};
use crate::record::{NetPool, NetRecord, NetSpec, NetState, RecoveryReport, Step, PREFIX_LEN};
use api::Client;

/// The steps of the RouterOS backend, in order.
pub const ROUTEROS_STEPS: [Step; 4] = [Step::Vlan, Step::Address, Step::RoutingTable, Step::Route];

/// Config of the RouterOS backend (`[network] backend = "routeros"`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterOsConfig {
    /// Router host name or address (no port).
    pub address: String,
    /// API port; default 8728, or 8729 with `tls`.
    #[serde(default)]
    pub port: Option<u16>,
    /// Use the TLS API service (`api-ssl`). The router needs a certificate on
    /// that service (rustls does not do the anonymous ciphers RouterOS uses
    /// without one).
    #[serde(default)]
    pub tls: bool,
    /// PEM file of the CA (or the router's self-signed certificate) to trust; required with `tls`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Name to check the router's certificate against; default `address`.
    #[serde(default)]
    pub server_name: Option<String>,
    /// API user (its group needs the `api`, `read` and `write` policies).
    pub username: String,
    /// API password.
    #[serde(default)]
    pub password: String,
    /// Interface the VLANs are made on (the seed's `ether1`).
    #[serde(default = "default_parent")]
    pub parent_interface: String,
    /// Name prefix of every VLAN and routing table hangar makes.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Addresses and the number range (numbers are VLAN ids: 1..=4094).
    #[serde(default)]
    pub pool: NetPool,
    /// Seconds to wait for the connection and for each answer.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_parent() -> String {
    "ether1".into()
}
fn default_prefix() -> String {
    "hg-".into()
}
fn default_timeout() -> u64 {
    10
}

impl std::fmt::Debug for RouterOsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterOsConfig")
            .field("address", &self.address)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("server_name", &self.server_name)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("parent_interface", &self.parent_interface)
            .field("prefix", &self.prefix)
            .field("pool", &self.pool)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

impl RouterOsConfig {
    /// A config for `address` with `username`/`password` and defaults otherwise.
    pub fn new(
        address: impl Into<String>,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        RouterOsConfig {
            address: address.into(),
            port: None,
            tls: false,
            ca_file: None,
            server_name: None,
            username: username.into(),
            password: password.into(),
            parent_interface: default_parent(),
            prefix: default_prefix(),
            pool: NetPool::default(),
            timeout_secs: default_timeout(),
        }
    }

    /// Checks the range fits VLAN ids and TLS has a CA file.
    pub fn validate(&self) -> Result<(), NetError> {
        self.pool.validate()?;
        let bad = |m: String| Err(NetError::new(NetErrorKind::InvalidConfig, m));
        if self.pool.last > 4094 {
            return bad(format!(
                "network numbers are VLAN ids: {} is above 4094",
                self.pool.last
            ));
        }
        if self.address.is_empty() || self.username.is_empty() {
            return bad("routeros backend needs `address` and `username`".into());
        }
        if self.prefix.is_empty() || self.prefix.contains(char::is_whitespace) {
            return bad(format!(
                "prefix {:?} must be non-empty without spaces",
                self.prefix
            ));
        }
        if self.tls && self.ca_file.is_none() {
            return bad("routeros backend with tls = true needs ca_file (the router's CA or certificate, PEM)".into());
        }
        Ok(())
    }

    fn port(&self) -> u16 {
        self.port.unwrap_or(if self.tls { 8729 } else { 8728 })
    }

    fn number_in(&self, name: &str) -> Option<u32> {
        let digits = name.strip_prefix(&self.prefix)?;
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

/// The RouterOS backend.
pub struct RouterOsBackend {
    config: RouterOsConfig,
    tls: Option<tokio_rustls::TlsConnector>,
    fail_after: Option<usize>,
}

impl std::fmt::Debug for RouterOsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterOsBackend")
            .field("config", &self.config)
            .field("fail_after", &self.fail_after)
            .finish()
    }
}

fn w(k: &str, v: impl std::fmt::Display) -> String {
    format!("={k}={v}")
}

fn q(k: &str, v: impl std::fmt::Display) -> String {
    format!("?{k}={v}")
}

fn cmd(c: &str) -> String {
    c.to_string()
}

impl RouterOsBackend {
    /// A backend with `config` (validated; with TLS, the CA file is read now).
    pub fn new(config: RouterOsConfig) -> Result<Self, NetError> {
        config.validate()?;
        let tls = if config.tls {
            Some(Self::tls_connector(&config)?)
        } else {
            None
        };
        Ok(RouterOsBackend {
            config,
            tls,
            fail_after: None,
        })
    }

    /// For tests: every `create` fails with `NET_INJECTED_FAULT` right after
    /// `k` steps succeeded, and rolls back. Settable only from code.
    pub fn fail_after_step(mut self, k: usize) -> Self {
        self.fail_after = Some(k);
        self
    }

    /// The config.
    pub fn config(&self) -> &RouterOsConfig {
        &self.config
    }

    fn tls_connector(c: &RouterOsConfig) -> Result<tokio_rustls::TlsConnector, NetError> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::CertificateDer;
        use tokio_rustls::rustls;
        let bad = |m: String| NetError::new(NetErrorKind::InvalidConfig, m);
        let path = c
            .ca_file
            .as_ref()
            .ok_or_else(|| bad("tls needs ca_file".into()))?;
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(format!("reading CA file {}: {e}", path.display())))?;
        for cert in certs {
            let cert = cert.map_err(|e| bad(format!("CA file {}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| bad(format!("CA file {}: {e}", path.display())))?;
        }
        if roots.is_empty() {
            return Err(bad(format!(
                "CA file {} holds no certificate",
                path.display()
            )));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(format!("TLS setup: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
    }

    async fn connect(&self) -> Result<Client, NetError> {
        let c = &self.config;
        let peer = format!("{}:{}", c.address, c.port());
        let timeout = Duration::from_secs(c.timeout_secs.max(1));
        let conn_err = |e: std::io::Error| {
            NetError::new(
                NetErrorKind::RouterConnect,
                format!("connecting to router {peer}: {e}"),
            )
        };
        let tcp = tokio::time::timeout(timeout, TcpStream::connect((c.address.as_str(), c.port())))
            .await
            .map_err(|_| {
                conn_err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "timed out",
                ))
            })?
            .map_err(conn_err)?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn api::Io> = match &self.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let name = c.server_name.clone().unwrap_or_else(|| c.address.clone());
                let server_name =
                    rustls_pki_types::ServerName::try_from(name.clone()).map_err(|e| {
                        NetError::new(
                            NetErrorKind::InvalidConfig,
                            format!("server name {name:?}: {e}"),
                        )
                    })?;
                let s = tokio::time::timeout(timeout, tls.connect(server_name, tcp))
                    .await
                    .map_err(|_| {
                        conn_err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "TLS handshake timed out",
                        ))
                    })?
                    .map_err(|e| conn_err(std::io::Error::other(format!("TLS handshake: {e}"))))?;
                Box::new(s)
            }
        };
        let mut client = Client::new(io, timeout, peer);
        client.login(&c.username, &c.password).await?;
        Ok(client)
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
        let name = format!("{}{n}", c.prefix);
        Ok(NetRecord {
            backend: "routeros".into(),
            instance_id: spec.instance_id.clone(),
            number: n,
            namespace: String::new(),
            namespace_path: PathBuf::new(),
            host_if: name.clone(),
            instance_if: String::new(),
            host_addr: c.pool.host_addr(n),
            instance_addr: c.pool.instance_addr(n),
            prefix_len: PREFIX_LEN,
            table: 0,
            routing_mark: name,
            fwmark: 0,
            rule_priority: 0,
            state: NetState::Creating,
            steps_done: Vec::new(),
        })
    }

    fn check_record(&self, rec: &NetRecord) -> Result<(), NetError> {
        let want = self.plan_record(&NetSpec::new(rec.instance_id.clone(), rec.number))?;
        if rec.backend == want.backend
            && rec.host_if == want.host_if
            && rec.routing_mark == want.routing_mark
        {
            Ok(())
        } else {
            Err(NetError::new(
                NetErrorKind::InvalidRecord,
                format!(
                    "network record of {:?} (backend {}, interface {}) does not match this backend's config",
                    rec.instance_id, rec.backend, rec.host_if
                ),
            ))
        }
    }

    async fn run_step(&self, cl: &mut Client, step: Step, rec: &NetRecord) -> Result<(), NetError> {
        let comment = w("comment", format!("hangar:{}", rec.instance_id));
        let words = match step {
            Step::Vlan => vec![
                cmd("/interface/vlan/add"),
                w("name", &rec.host_if),
                w("vlan-id", rec.number),
                w("interface", &self.config.parent_interface),
                comment,
            ],
            Step::Address => vec![
                cmd("/ip/address/add"),
                w("address", format!("{}/{}", rec.host_addr, rec.prefix_len)),
                w("interface", &rec.host_if),
                comment,
            ],
            Step::RoutingTable => vec![
                cmd("/routing/table/add"),
                w("name", &rec.routing_mark),
                w("fib", "yes"),
                comment,
            ],
            Step::Route => vec![
                cmd("/ip/route/add"),
                w("dst-address", "0.0.0.0/0"),
                w("gateway", rec.instance_addr),
                w("routing-table", &rec.routing_mark),
                comment,
            ],
            other => {
                return Err(NetError::new(
                    NetErrorKind::InvalidRecord,
                    format!("step {other} is not a RouterOS step"),
                ))
            }
        };
        cl.run(&words).await.map(|_| ())
    }

    /// Removes every item `print` finds with `queries` under `menu`; returns how many.
    async fn remove_where(
        &self,
        cl: &mut Client,
        menu: &str,
        queries: Vec<String>,
    ) -> Result<usize, NetError> {
        let mut words = vec![format!("{menu}/print"), w(".proplist", ".id")];
        words.extend(queries);
        let found = cl.run(&words).await?;
        let mut n = 0;
        for item in found.re {
            if let Some(id) = item.get(".id") {
                match cl.run(&[format!("{menu}/remove"), w(".id", id)]).await {
                    Ok(_) => n += 1,
                    // Gone meanwhile: fine.
                    Err(e) if e.message.contains("no such item") => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(n)
    }

    async fn undo_step(
        &self,
        cl: &mut Client,
        step: Step,
        rec: &NetRecord,
    ) -> Result<(), NetError> {
        match step {
            Step::Route => self
                .remove_where(cl, "/ip/route", vec![q("routing-table", &rec.routing_mark)])
                .await
                .map(|_| ()),
            Step::RoutingTable => self
                .remove_where(cl, "/routing/table", vec![q("name", &rec.routing_mark)])
                .await
                .map(|_| ()),
            Step::Address => self
                .remove_where(
                    cl,
                    "/ip/address",
                    vec![
                        q("address", format!("{}/{}", rec.host_addr, rec.prefix_len)),
                        q("interface", &rec.host_if),
                    ],
                )
                .await
                .map(|_| ()),
            Step::Vlan => self
                .remove_where(cl, "/interface/vlan", vec![q("name", &rec.host_if)])
                .await
                .map(|_| ()),
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
        let mut cl = match self.connect().await {
            Ok(c) => c,
            Err(e) => {
                rec.state = NetState::Error {
                    step: Step::Vlan.to_string(),
                    cause: format!("[{}] {}", e.code(), e.message),
                };
                progress(&rec);
                return Err(e);
            }
        };
        for (i, step) in ROUTEROS_STEPS.into_iter().enumerate() {
            let res = if self.fail_after == Some(i) {
                Err(NetError::new(
                    NetErrorKind::InjectedFault,
                    format!("fault injected after {i} steps, before step {step}"),
                ))
            } else {
                self.run_step(&mut cl, step, &rec).await
            };
            match res {
                Ok(()) => {
                    rec.steps_done.push(step);
                    progress(&rec);
                }
                Err(e) => {
                    let e = e.context(format!("network of {:?}, step {step}", rec.instance_id));
                    let mut cause = format!("[{}] {}", e.code(), e.message);
                    while let Some(done) = rec.steps_done.last().copied() {
                        if let Err(u) = self.undo_step(&mut cl, done, &rec).await {
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

    async fn teardown_with(&self, cl: &mut Client, rec: &NetRecord) -> Result<(), NetError> {
        for step in ROUTEROS_STEPS.into_iter().rev() {
            self.undo_step(cl, step, rec).await.map_err(|e| {
                e.context(format!("tearing down the network of {:?}", rec.instance_id))
            })?;
        }
        Ok(())
    }

    async fn teardown_inner(&self, rec: &NetRecord) -> Result<(), NetError> {
        self.check_record(rec)?;
        let mut cl = self.connect().await?;
        self.teardown_with(&mut cl, rec).await
    }

    async fn names(&self, cl: &mut Client, menu: &str, key: &str) -> Result<Vec<String>, NetError> {
        let r = cl
            .run(&[format!("{menu}/print"), w(".proplist", key)])
            .await?;
        Ok(r.re.into_iter().filter_map(|mut m| m.remove(key)).collect())
    }

    async fn recover_inner(&self, known: &[NetRecord]) -> Result<RecoveryReport, NetError> {
        let mut cl = self.connect().await?;
        let mut report = RecoveryReport::default();
        let vlans: BTreeSet<u32> = self
            .names(&mut cl, "/interface/vlan", "name")
            .await?
            .iter()
            .filter_map(|n| self.config.number_in(n))
            .collect();
        let tables: BTreeSet<u32> = self
            .names(&mut cl, "/routing/table", "name")
            .await?
            .iter()
            .filter_map(|n| self.config.number_in(n))
            .collect();
        let routes: BTreeSet<u32> = self
            .names(&mut cl, "/ip/route", "routing-table")
            .await?
            .iter()
            .filter_map(|n| self.config.number_in(n))
            .collect();
        let addrs: BTreeSet<u32> = self
            .names(&mut cl, "/ip/address", "interface")
            .await?
            .iter()
            .filter_map(|n| self.config.number_in(n))
            .collect();
        let mut keep = BTreeSet::new();
        for rec in known {
            if let Err(e) = self.check_record(rec) {
                report.failed.push((rec.instance_id.clone(), e.to_string()));
                continue;
            }
            let n = rec.number;
            if rec.is_active() {
                keep.insert(n);
                let complete = vlans.contains(&n)
                    && tables.contains(&n)
                    && routes.contains(&n)
                    && addrs.contains(&n);
                if complete {
                    continue;
                }
                let again = async {
                    self.teardown_with(&mut cl, rec).await?;
                    self.create_inner(
                        &NetSpec::new(rec.instance_id.clone(), n),
                        &crate::backend::no_progress,
                    )
                    .await
                };
                match again.await {
                    Ok(r) => report.recreated.push(r),
                    Err(e) => report.failed.push((rec.instance_id.clone(), e.to_string())),
                }
            } else {
                match self.teardown_with(&mut cl, rec).await {
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
                        keep.insert(n);
                        report.failed.push((rec.instance_id.clone(), e.to_string()));
                    }
                }
            }
        }
        let leftovers: BTreeSet<u32> = vlans
            .iter()
            .chain(&tables)
            .chain(&routes)
            .chain(&addrs)
            .copied()
            .filter(|n| !keep.contains(n))
            .collect();
        for n in leftovers {
            let rec = self.plan_record(&NetSpec::new(String::new(), n))?;
            for step in ROUTEROS_STEPS.into_iter().rev() {
                let present = match step {
                    Step::Route => routes.contains(&n),
                    Step::RoutingTable => tables.contains(&n),
                    Step::Address => addrs.contains(&n),
                    _ => vlans.contains(&n),
                };
                if present {
                    self.undo_step(&mut cl, step, &rec)
                        .await
                        .map_err(|e| e.context("recovery could not remove a leftover"))?;
                    report.removed.push(format!("{step} {}", rec.host_if));
                }
            }
        }
        Ok(report)
    }
}

impl NetworkBackend for RouterOsBackend {
    fn name(&self) -> &'static str {
        "routeros"
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
