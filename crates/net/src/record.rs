//! What a backend is asked for ([`NetSpec`]) and what it keeps ([`NetRecord`]).

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{NetError, NetErrorKind};

/// The address pool: instance number `n` gets the /24 at `base + n * 256`, the
/// host (or router) side `.1` and the instance side `.2`.
///
/// The default is the seed's `10.99.{n}.0/24` with `n` in `1..=254`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetPool {
    /// The first address of the pool; must end in `.0.0`-style /24 alignment
    /// (its last octet is 0).
    pub base: Ipv4Addr,
    /// First instance number, inclusive (at least 1).
    pub first: u32,
    /// Last instance number, inclusive.
    pub last: u32,
}

impl Default for NetPool {
    fn default() -> Self {
        NetPool {
            base: Ipv4Addr::new(10, 99, 0, 0),
            first: 1,
            last: 254,
        }
    }
}

/// The prefix length of every instance network.
pub const PREFIX_LEN: u8 = 24;

impl NetPool {
    /// A pool of `first..=last` at `base`.
    pub fn new(base: Ipv4Addr, first: u32, last: u32) -> Self {
        NetPool { base, first, last }
    }

    /// Checks the range is non-empty, starts at 1 or more, the base is /24
    /// aligned and the last network does not run past 255.255.255.0.
    pub fn validate(&self) -> Result<(), NetError> {
        let bad = |m: String| Err(NetError::new(NetErrorKind::InvalidConfig, m));
        if self.first == 0 || self.first > self.last {
            return bad(format!(
                "network number range {}..={} is empty or starts at 0",
                self.first, self.last
            ));
        }
        if u32::from(self.base) & 0xff != 0 {
            return bad(format!(
                "pool base {} is not /24 aligned (its last octet must be 0)",
                self.base
            ));
        }
        let top = u64::from(u32::from(self.base)) + (u64::from(self.last) << 8) + 255;
        if top > u64::from(u32::MAX) {
            return bad(format!(
                "pool base {} with number {} runs past 255.255.255.255",
                self.base, self.last
            ));
        }
        Ok(())
    }

    /// Whether `n` is inside the range.
    pub fn contains(&self, n: u32) -> bool {
        (self.first..=self.last).contains(&n)
    }

    /// The network address of instance `n` (e.g. `10.99.7.0`). `n` must be in range.
    pub fn network(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base).wrapping_add(n << 8))
    }

    /// The host (or router) side address of instance `n` (`…​.1`).
    pub fn host_addr(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network(n)) + 1)
    }

    /// The instance side address of instance `n` (`….2`); the instance binds it.
    pub fn instance_addr(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network(n)) + 2)
    }
}

/// What the caller asks a backend for: one network for one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetSpec {
    /// The owner (hangar's instance id).
    pub instance_id: String,
    /// The number the [`NetAllocator`](crate::NetAllocator) gave the instance
    /// (the seed's VLAN id); names, addresses, table and mark derive from it.
    pub number: u32,
}

impl NetSpec {
    /// A spec for `instance_id` with allocated `number`.
    pub fn new(instance_id: impl Into<String>, number: u32) -> Self {
        NetSpec {
            instance_id: instance_id.into(),
            number,
        }
    }
}

/// One step of creating a network. Each backend uses its own subset, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Linux: the network namespace (`/run/netns/NAME`).
    Namespace,
    /// Linux: the veth pair, instance end created inside the namespace.
    Veth,
    /// Linux: the host side address (`.1/24`).
    HostAddress,
    /// Linux: the host side link up.
    HostUp,
    /// Linux: the instance side address (`.2/24`) and the instance side + `lo` up.
    InstanceAddress,
    /// Linux: the default route inside the namespace via the host side.
    InstanceRoute,
    /// Linux: the default route in the instance's own routing table on the host.
    TableRoute,
    /// Linux: the policy rule `fwmark MARK lookup TABLE`.
    Rule,
    /// RouterOS: `/interface/vlan add`.
    Vlan,
    /// RouterOS: `/ip/address add`.
    Address,
    /// RouterOS: `/routing/table add`.
    RoutingTable,
    /// RouterOS: `/ip/route add` (default route in the table).
    Route,
}

impl Step {
    /// The step's name as stored (`snake_case`).
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Namespace => "namespace",
            Step::Veth => "veth",
            Step::HostAddress => "host_address",
            Step::HostUp => "host_up",
            Step::InstanceAddress => "instance_address",
            Step::InstanceRoute => "instance_route",
            Step::TableRoute => "table_route",
            Step::Rule => "rule",
            Step::Vlan => "vlan",
            Step::Address => "address",
            Step::RoutingTable => "routing_table",
            Step::Route => "route",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a record is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum NetState {
    /// Steps are running (or a crash stopped them): tear it down at start.
    Creating,
    /// Every step ran; the network is up.
    Active,
    /// A step failed; the steps done were rolled back (those still listed in
    /// `steps_done` could not be and need a `teardown`).
    Error {
        /// The step that failed.
        step: String,
        /// Why (the error's code and message).
        cause: String,
    },
}

/// Everything a backend made for one instance, as the caller stores it (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetRecord {
    /// Which backend made it: `linux` or `routeros`.
    pub backend: String,
    /// The owner.
    pub instance_id: String,
    /// The allocated number (the seed's VLAN id).
    pub number: u32,
    /// Linux: the namespace name (`hg-7`); empty for RouterOS.
    pub namespace: String,
    /// Linux: the namespace path (`/run/netns/hg-7`), to `setns` into before exec.
    pub namespace_path: PathBuf,
    /// Host side interface (Linux veth end, or the RouterOS VLAN interface).
    pub host_if: String,
    /// Instance side interface, inside the namespace (Linux); empty for RouterOS.
    pub instance_if: String,
    /// Host (router) side address, `.1`.
    pub host_addr: Ipv4Addr,
    /// Instance side address, `.2`: the address the instance binds.
    pub instance_addr: Ipv4Addr,
    /// Prefix length of both addresses (24).
    pub prefix_len: u8,
    /// Linux: the instance's own routing table id on the host.
    pub table: u32,
    /// RouterOS: the routing table name (the seed's routing mark); Linux: the
    /// same id as text.
    pub routing_mark: String,
    /// Linux: the firewall mark the policy rule matches (0 for RouterOS).
    pub fwmark: u32,
    /// Linux: the policy rule's priority.
    pub rule_priority: u32,
    /// Where it is in its life.
    pub state: NetState,
    /// The steps done so far, in order (what a rollback or teardown undoes).
    pub steps_done: Vec<Step>,
}

impl NetRecord {
    /// The record as JSON, for storing as a blob.
    pub fn to_json(&self) -> String {
        // A record holds only strings, numbers and addresses: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A record from its stored JSON.
    pub fn from_json(text: &str) -> Result<NetRecord, NetError> {
        serde_json::from_str(text).map_err(|e| {
            NetError::new(
                NetErrorKind::InvalidRecord,
                format!("stored network record is not valid JSON: {e}"),
            )
        })
    }

    /// Whether the network is up.
    pub fn is_active(&self) -> bool {
        self.state == NetState::Active
    }
}

/// What [`recover`](crate::NetworkBackend::recover) did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryReport {
    /// Hangar-owned objects that had no record and were removed (descriptions,
    /// e.g. `netns hg-9`, `link hg-9-h`, `rule fwmark 0x68670009`).
    pub removed: Vec<String>,
    /// ACTIVE records whose objects were missing and were made again; store them.
    pub recreated: Vec<NetRecord>,
    /// Records found CREATING or ERROR (a crash or failure mid-create): their
    /// objects were removed; they come back in state ERROR with no steps done.
    pub rolled_back: Vec<NetRecord>,
    /// Records that could not be handled (instance id, error text).
    pub failed: Vec<(String, String)>,
}
