//! `hangar serve`'s configuration file: TOML with an optional `[daemon]` table and
//! the same `[env]` and `[[process]]` tables a process file has.
//!
//! ```toml
//! [daemon]
//! http = "127.0.0.1:9470"          # metrics; "" turns the listener off
//! reconcile_interval = "5s"
//!
//! [daemon.grpc]                     # optional TCP listener besides the socket
//! tcp = "127.0.0.1:9471"
//! token_file = "/etc/hangar/token"  # bearer token, or:
//! # tls_cert = "server.pem"  tls_key = "server.key"  client_ca = "ca.pem"   (mTLS)
//!
//! [daemon.connections]             # every TCP listener (metrics, gRPC TCP)
//! max_per_client = 100
//! max_total = 512
//! idle_timeout = "60s"
//!
//! [daemon.history]
//! max_age = "7d"
//! max_rows = 1000000
//!
//! [[daemon.sink]]
//! type = "file"
//! path = "/var/log/hangar/events.jsonl"
//!
//! [[process]]
//! name = "web"
//! command = "python3"
//! args = ["-m", "http.server"]
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hangar_supervisor::ProcessSpec;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::procfile::{self, FileKind};
use crate::sinks::SinkConfig;

/// Default address of the HTTP listener (metrics).
pub const DEFAULT_HTTP: &str = "127.0.0.1:9470";

/// A parsed configuration file.
#[derive(Debug, Clone, Default)]
pub struct DaemonConfig {
    /// `[daemon]` settings.
    pub settings: Settings,
    /// `[[process]]` tables, `instances` not expanded.
    pub processes: Vec<ProcessSpec>,
    /// `[env]` entries, `KEY=VALUE`.
    pub env: Vec<String>,
}

/// The `[daemon]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// HTTP listener for /metrics; empty to turn it off.
    pub http: String,
    /// How often desired and observed state are compared.
    #[serde(deserialize_with = "hangar_base::duration::deserialize_text")]
    pub reconcile_interval: Duration,
    /// Optional gRPC listener on TCP.
    pub grpc: GrpcSettings,
    /// Event history retention.
    pub history: HistorySettings,
    /// History sinks.
    pub sink: Vec<SinkConfig>,
    /// Ports handed to processes that ask for named ports, `"20000-29999"`.
    pub port_range: String,
    /// Feature instances.
    pub instances: InstanceSettings,
    /// Per-instance networks: `backend = "linux"` (default) or `"routeros"`.
    pub network: hangar_net::NetworkConfig,
    /// Caps and idle timeout of every TCP listener (metrics, gRPC TCP).
    pub connections: ConnectionSettings,
    /// `[daemon.fleet]`: join a fleet of nodes sharing state on etcd. Unset:
    /// this daemon is on its own and nothing fleet-related runs.
    pub fleet: Option<FleetSettings>,
}

/// `[daemon.fleet]`: this node's place in a fleet whose shared state lives
/// in etcd.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FleetSettings {
    /// etcd client URLs, `http://HOST:PORT` or `https://HOST:PORT`.
    pub endpoints: Vec<String>,
    /// This node's name, unique in the fleet.
    pub node: String,
    /// Labels instances can be placed by (`--on zone=a`).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// The node's lease: its registration and observed state vanish this
    /// long after it stops renewing, and a node cut from etcd this long
    /// stops its fleet instances (fencing).
    #[serde(
        default = "FleetSettings::default_lease_ttl",
        deserialize_with = "hangar_base::duration::deserialize_text"
    )]
    pub lease_ttl: Duration,
    /// How long after a node's lease expired its instances are placed
    /// elsewhere.
    #[serde(
        default = "FleetSettings::default_grace",
        deserialize_with = "hangar_base::duration::deserialize_text"
    )]
    pub grace: Duration,
    /// Key prefix of the fleet in etcd (several fleets can share a cluster).
    #[serde(default = "FleetSettings::default_prefix")]
    pub prefix: String,
    /// What the scheduler may place here.
    #[serde(default)]
    pub capacity: FleetCapacity,
    /// CA (PEM) the etcd servers' certificates chain to (https endpoints).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's client-cert auth.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Its key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// etcd user (auth); the password comes from `password_file`.
    #[serde(default)]
    pub user: Option<String>,
    /// File whose first line is the etcd user's password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

/// `[daemon.fleet.capacity]`: limits the scheduler respects on this node.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FleetCapacity {
    /// Most fleet instances.
    pub instances: Option<u32>,
    /// Memory for the instances' limits (`"4Gi"`): the sum of the placed
    /// features' `resources.memory_limit` stays under it.
    pub memory: Option<String>,
    /// Processes for the instances' limits: the sum of the placed features'
    /// `resources.max_pids` stays under it.
    pub pids: Option<u64>,
}

impl FleetSettings {
    fn default_lease_ttl() -> Duration {
        Duration::from_secs(10)
    }
    fn default_grace() -> Duration {
        Duration::from_secs(10)
    }
    fn default_prefix() -> String {
        "/hangar/fleet/".to_string()
    }

    fn check(&self, out: &mut Vec<String>) {
        if self.endpoints.is_empty() {
            out.push(
                "daemon.fleet.endpoints: name at least one etcd endpoint, e.g. \"http://127.0.0.1:2379\""
                    .to_string(),
            );
        }
        for e in &self.endpoints {
            let ok = reqwest::Url::parse(e).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.path() == "/"
                    && u.query().is_none()
            });
            if !ok {
                out.push(format!(
                    "daemon.fleet.endpoints: {e:?} is not an etcd URL; write it as \"http://HOST:PORT\" or \"https://HOST:PORT\""
                ));
            }
        }
        let name_ok = !self.node.is_empty()
            && self.node.len() <= 63
            && self
                .node
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !name_ok {
            out.push(format!(
                "daemon.fleet.node: {:?} is not a node name; use 1 to 63 letters, digits, '-', '_' or '.'",
                self.node
            ));
        }
        for (k, v) in &self.labels {
            if k.is_empty() || k.contains('=') || k.contains(',') || v.contains(',') {
                out.push(format!(
                    "daemon.fleet.labels: {k:?} = {v:?}: a label's key is not empty and neither holds '=' or ','"
                ));
            }
        }
        if self.lease_ttl < Duration::from_secs(2) || self.lease_ttl.subsec_nanos() != 0 {
            out.push(
                "daemon.fleet.lease_ttl: etcd grants leases in whole seconds, at least 2s"
                    .to_string(),
            );
        }
        if self.grace < Duration::from_secs(1) {
            out.push(
                "daemon.fleet.grace: at least 1s, the time a fenced node has to stop its instances"
                    .to_string(),
            );
        }
        if !self.prefix.starts_with('/') || !self.prefix.ends_with('/') {
            out.push(format!(
                "daemon.fleet.prefix: {:?} must begin and end with '/'",
                self.prefix
            ));
        }
        if let Some(m) = &self.capacity.memory {
            if let Err(why) = hangar_supervisor::Limits::parse_memory(m) {
                out.push(format!("daemon.fleet.capacity.memory: {m:?}: {why}"));
            }
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            out.push("daemon.fleet: cert_file and key_file go together".to_string());
        }
        if self.user.is_some() != self.password_file.is_some() {
            out.push("daemon.fleet: user and password_file go together".to_string());
        }
    }
}

/// `[daemon.connections]`: what network clients may hold, on every TCP
/// listener. The Unix socket is not limited (only the daemon's user reaches
/// it).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionSettings {
    /// Most connections from one client address (Nomad's
    /// `http_max_conns_per_client`).
    pub max_per_client: usize,
    /// Most connections in all (also held under a quarter of the daemon's
    /// descriptor limit).
    pub max_total: usize,
    /// A connection that sends and receives nothing for this long is closed.
    #[serde(deserialize_with = "hangar_base::duration::deserialize_text")]
    pub idle_timeout: Duration,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        ConnectionSettings {
            max_per_client: 100,
            max_total: 512,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            http: DEFAULT_HTTP.to_string(),
            reconcile_interval: Duration::from_secs(5),
            grpc: GrpcSettings::default(),
            history: HistorySettings::default(),
            sink: Vec::new(),
            port_range: "20000-29999".to_string(),
            instances: InstanceSettings::default(),
            network: hangar_net::NetworkConfig::default(),
            connections: ConnectionSettings::default(),
            fleet: None,
        }
    }
}

/// `[daemon.instances]`: where features come from and how instances live.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct InstanceSettings {
    /// Catalog directories (first match wins); empty: the built-in catalog.
    /// `hangar serve --catalog` / `$HANGAR_CATALOG` take precedence.
    pub catalog: Vec<PathBuf>,
    /// Allow plain `http://` downloads from hosts that are not loopback.
    pub allow_http: bool,
    /// Install features whose manifest has no checksum.
    pub allow_unverified: bool,
    /// Per-session instances unused for this long are deleted.
    #[serde(deserialize_with = "hangar_base::duration::deserialize_text")]
    pub session_ttl: Duration,
    /// How long a new instance may take from process start to healthy.
    #[serde(deserialize_with = "hangar_base::duration::deserialize_text")]
    pub ready_timeout: Duration,
    /// Quick crashes in a row before an instance's process is given up on
    /// (and a create fails).
    pub start_retries: u32,
    /// Run instances as this user (name or uid); their directories are given
    /// to it. Needs hangar to run as root.
    pub user: Option<String>,
}

impl Default for InstanceSettings {
    fn default() -> Self {
        InstanceSettings {
            catalog: Vec::new(),
            allow_http: false,
            allow_unverified: false,
            session_ttl: Duration::from_secs(30 * 60),
            ready_timeout: Duration::from_secs(60),
            start_retries: 3,
            user: None,
        }
    }
}

/// `[daemon.grpc]`: the API on TCP, which needs a token or mTLS.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcSettings {
    /// Address to listen on, e.g. `127.0.0.1:9471`; unset: socket only.
    pub tcp: Option<SocketAddr>,
    /// Bearer token clients must send.
    pub token: Option<String>,
    /// File holding the bearer token (first line).
    pub token_file: Option<PathBuf>,
    /// Server certificate (PEM) for TLS.
    pub tls_cert: Option<PathBuf>,
    /// Server key (PEM) for TLS.
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) client certificates must chain to: turns on mTLS.
    pub client_ca: Option<PathBuf>,
}

/// `[daemon.history]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HistorySettings {
    /// Events older than this are pruned.
    #[serde(deserialize_with = "hangar_base::duration::deserialize_text")]
    pub max_age: Duration,
    /// At most this many events are kept.
    pub max_rows: u64,
}

impl Default for HistorySettings {
    fn default() -> Self {
        HistorySettings {
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_rows: 1_000_000,
        }
    }
}

impl Settings {
    /// The port range as numbers.
    pub fn ports(&self) -> Result<std::ops::RangeInclusive<u16>> {
        let bad =
            || {
                Error::new(
                crate::ErrorKind::ConfigInvalid,
                format!("daemon.port_range {:?} is not a port range", self.port_range),
            )
            .hint("write it as \"LOW-HIGH\", e.g. \"20000-29999\", with 1 <= LOW <= HIGH <= 65535")
            };
        let (lo, hi) = self.port_range.split_once('-').ok_or_else(bad)?;
        let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
        let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
        if lo == 0 || lo > hi {
            return Err(bad());
        }
        Ok(lo..=hi)
    }

    /// The bearer token, from `token` or `token_file`.
    pub fn grpc_token(&self) -> Result<Option<String>> {
        if let Some(t) = &self.grpc.token {
            return Ok(Some(t.clone()));
        }
        match &self.grpc.token_file {
            None => Ok(None),
            Some(p) => {
                let s = std::fs::read_to_string(p).map_err(|e| {
                    Error::new(
                        crate::ErrorKind::ConfigInvalid,
                        format!("cannot read daemon.grpc.token_file: {e}"),
                    )
                    .with("path", p.display())
                    .hint("check the path and its permissions")
                })?;
                let t = s.lines().next().unwrap_or("").trim().to_string();
                if t.is_empty() {
                    return Err(Error::new(
                        crate::ErrorKind::ConfigInvalid,
                        "daemon.grpc.token_file is empty",
                    )
                    .with("path", p.display())
                    .hint("write the token on the file's first line"));
                }
                Ok(Some(t))
            }
        }
    }

    fn check(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.http.is_empty() && self.http.parse::<SocketAddr>().is_err() {
            out.push(format!(
                "daemon.http: {:?} is not an address; write e.g. \"127.0.0.1:9470\", or \"\" for none",
                self.http
            ));
        }
        if let Err(e) = self.ports() {
            out.push(e.message);
        }
        if self.reconcile_interval < Duration::from_millis(100) {
            out.push("daemon.reconcile_interval: must be at least 100ms".to_string());
        }
        let c = &self.connections;
        if c.max_per_client == 0 || c.max_total == 0 {
            out.push(
                "daemon.connections: max_per_client and max_total must be at least 1".to_string(),
            );
        }
        if c.idle_timeout < Duration::from_secs(1) {
            out.push("daemon.connections.idle_timeout: must be at least 1s".to_string());
        }
        let g = &self.grpc;
        if g.tcp.is_some() {
            let token = g.token.is_some() || g.token_file.is_some();
            let tls = g.tls_cert.is_some() && g.tls_key.is_some() && g.client_ca.is_some();
            if !token && !tls {
                out.push(
                    "daemon.grpc.tcp: plain TCP without credentials is refused; set token or \
                     token_file (bearer), or tls_cert, tls_key and client_ca (mTLS)"
                        .to_string(),
                );
            }
        }
        if let Some(addr) = g.tcp {
            let token = g.token.is_some() || g.token_file.is_some();
            if token && g.tls_cert.is_none() && !addr.ip().is_loopback() {
                out.push(format!(
                    "daemon.grpc.tcp: a bearer token would cross the network in clear text to {addr}; \
                     add tls_cert and tls_key, or listen on a loopback address"
                ));
            }
        }
        if g.tls_cert.is_some() != g.tls_key.is_some() {
            out.push("daemon.grpc: tls_cert and tls_key go together".to_string());
        }
        if g.client_ca.is_some() && g.tls_cert.is_none() {
            out.push("daemon.grpc.client_ca: needs tls_cert and tls_key".to_string());
        }
        for (i, s) in self.sink.iter().enumerate() {
            if let Err(e) = s.validate() {
                out.push(format!("daemon.sink[{i}]: {e}"));
            }
        }
        if let Some(f) = &self.fleet {
            f.check(&mut out);
        }
        out
    }
}

impl DaemonConfig {
    /// Parse a configuration file's text. Every mistake is reported at once, each
    /// as `line:col: key: message` where the position is known.
    pub fn parse(
        src: &str,
        default_log_dir: Option<PathBuf>,
    ) -> std::result::Result<DaemonConfig, Vec<String>> {
        let text = |errs: Vec<procfile::FileError>| -> Vec<String> {
            errs.iter().map(|e| e.to_string()).collect()
        };
        // One parse for both readers: the processes and `[daemon]`.
        let doc = procfile::Document::parse(src).map_err(text)?;
        let mut errors: Vec<String> = Vec::new();
        let pf = match doc.processes(default_log_dir, FileKind::DaemonConfig) {
            Ok(pf) => Some(pf),
            Err(errs) => {
                errors.extend(text(errs));
                None
            }
        };
        let settings = match doc.get::<Settings>("daemon") {
            Ok(s) => {
                let s = s.unwrap_or_default();
                errors.extend(s.check());
                s
            }
            Err(errs) => {
                errors.extend(text(errs));
                Settings::default()
            }
        };
        match pf {
            Some(pf) if errors.is_empty() => Ok(DaemonConfig {
                settings,
                processes: pf.processes,
                env: pf.env,
            }),
            _ => Err(errors),
        }
    }

    /// Read and parse a configuration file.
    pub fn load(path: &Path, default_log_dir: Option<PathBuf>) -> Result<DaemonConfig> {
        let src = std::fs::read_to_string(path).map_err(|e| {
            Error::new(
                crate::ErrorKind::ConfigUnreadable,
                format!("cannot read configuration file: {e}"),
            )
            .with("path", path.display())
            .hint("check the path and its permissions")
        })?;
        DaemonConfig::parse(&src, default_log_dir).map_err(|errs| {
            let n = errs.len();
            let mut e = Error::new(
                crate::ErrorKind::ConfigInvalid,
                format!(
                    "{} has {n} error{}",
                    path.display(),
                    if n == 1 { "" } else { "s" }
                ),
            )
            .hint("fix the errors listed and try again; nothing was changed");
            for err in errs {
                e = e.with("error", err);
            }
            e
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        let c = DaemonConfig::parse("", None).unwrap();
        assert!(c.processes.is_empty());
        assert_eq!(c.settings, Settings::default());
    }

    #[test]
    fn daemon_table_and_processes() {
        let src = r#"
[daemon]
http = ""
reconcile_interval = "250ms"
port_range = "30000-30010"
[daemon.history]
max_age = "1h"
max_rows = 50
[[process]]
name = "a"
command = "sleep"
args = ["5"]
"#;
        let c = DaemonConfig::parse(src, None).unwrap();
        assert_eq!(c.settings.http, "");
        assert_eq!(c.settings.reconcile_interval, Duration::from_millis(250));
        assert_eq!(c.settings.history.max_rows, 50);
        assert_eq!(c.settings.ports().unwrap(), 30000..=30010);
        assert_eq!(c.processes.len(), 1);
    }

    #[test]
    fn mistakes_are_all_reported_with_keys() {
        let src = r#"
[daemon]
htp = "x"
[[process]]
name = "a"
"#;
        let errs = DaemonConfig::parse(src, None).unwrap_err();
        assert!(errs.iter().any(|e| e.contains("htp")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("command")), "{errs:?}");
    }

    #[test]
    fn every_daemon_mistake_is_listed_with_its_line() {
        let src = "[daemon]\nhtp = \"x\"\nreconcile_interval = \"soon\"\n[daemon.history]\nmax_rows = \"many\"\n";
        let errs = DaemonConfig::parse(src, None).unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(
            errs[0].starts_with("2:1: daemon.htp: unknown key `htp`; did you mean `http`?"),
            "{errs:?}"
        );
        assert!(
            errs[1].starts_with("3:22: daemon.reconcile_interval:"),
            "{errs:?}"
        );
        assert!(
            errs[2].starts_with("5:12: daemon.history.max_rows:"),
            "{errs:?}"
        );
    }

    #[test]
    fn plain_tcp_is_refused() {
        let src = "[daemon.grpc]\ntcp = \"127.0.0.1:9999\"\n";
        let errs = DaemonConfig::parse(src, None).unwrap_err();
        assert!(errs[0].contains("refused"), "{errs:?}");
        let ok = "[daemon.grpc]\ntcp = \"127.0.0.1:9999\"\ntoken = \"s3cret\"\n";
        assert!(DaemonConfig::parse(ok, None).is_ok());
    }

    #[test]
    fn a_token_in_clear_text_off_loopback_is_refused() {
        let src = "[daemon.grpc]\ntcp = \"0.0.0.0:9471\"\ntoken = \"s3cret\"\n";
        let errs = DaemonConfig::parse(src, None).unwrap_err();
        assert!(errs[0].contains("clear text"), "{errs:?}");
    }

    #[test]
    fn bad_duration_names_the_value() {
        let errs =
            DaemonConfig::parse("[daemon]\nreconcile_interval = \"soon\"\n", None).unwrap_err();
        assert!(errs[0].contains("soon"), "{errs:?}");
        assert!(errs[0].starts_with("2:"), "{errs:?}");
    }
}
