//! What the fleet keeps in etcd, and where. Every key is under the
//! configured prefix (`/hangar/fleet/` by default):
//!
//! | key | value | lifetime |
//! | --- | --- | --- |
//! | `nodes/NODE` | [`NodeRecord`] | the node's lease |
//! | `observed/NODE/NAME` | [`Observed`] | the node's lease |
//! | `desired/NAME` | [`Want`] | until `fleet delete` |
//! | `assign/NAME` | [`Assignment`] | written by the elected scheduler only |
//! | `draining/NODE` | empty | until `fleet drain --undo` |
//! | `election/…` | the leader's node name | the leader's lease (etcd's election API) |
//!
//! One key per instance under `assign/` makes a double assignment impossible
//! by construction: an instance has at most one node. The scheduler writes it
//! in a transaction guarded by the key's revision and by its own leader key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The key layout under one prefix (each method names one key or prefix of
/// the table above).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
        }
    }
    pub fn all(&self) -> String {
        self.prefix.clone()
    }
    pub fn nodes(&self) -> String {
        format!("{}nodes/", self.prefix)
    }
    pub fn node(&self, node: &str) -> String {
        format!("{}nodes/{node}", self.prefix)
    }
    pub fn desired_all(&self) -> String {
        format!("{}desired/", self.prefix)
    }
    pub fn desired(&self, name: &str) -> String {
        format!("{}desired/{name}", self.prefix)
    }
    pub fn assign_all(&self) -> String {
        format!("{}assign/", self.prefix)
    }
    pub fn assign(&self, name: &str) -> String {
        format!("{}assign/{name}", self.prefix)
    }
    pub fn observed_all(&self) -> String {
        format!("{}observed/", self.prefix)
    }
    pub fn observed(&self, node: &str, name: &str) -> String {
        format!("{}observed/{node}/{name}", self.prefix)
    }
    pub fn draining_all(&self) -> String {
        format!("{}draining/", self.prefix)
    }
    pub fn draining(&self, node: &str) -> String {
        format!("{}draining/{node}", self.prefix)
    }
    pub fn election(&self) -> String {
        format!("{}election", self.prefix)
    }
    /// The last path segment of a key under `under`.
    pub fn tail<'a>(&self, under: &str, key: &'a [u8]) -> Option<&'a str> {
        std::str::from_utf8(key).ok()?.strip_prefix(under)
    }
}

/// A node as it registers itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Its name.
    pub name: String,
    /// Its labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Most fleet instances it takes.
    #[serde(default)]
    pub max_instances: Option<u32>,
    /// Memory for instance limits, bytes.
    #[serde(default)]
    pub memory: Option<u64>,
    /// Processes for instance limits.
    #[serde(default)]
    pub pids: Option<u64>,
    /// Ports of its range not held by an instance.
    #[serde(default)]
    pub ports_free: u32,
    /// When it registered, ms since the epoch.
    #[serde(default)]
    pub since_ms: i64,
    /// hangar's version on it.
    #[serde(default)]
    pub version: String,
}

/// A fleet instance as `fleet create` asked for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Want {
    /// Its name (also its name on the node that runs it).
    pub name: String,
    /// The feature.
    pub feature: String,
    /// Operation mode.
    #[serde(default)]
    pub mode: Option<String>,
    /// Options.
    #[serde(default)]
    pub options: serde_json::Map<String, serde_json::Value>,
    /// Only nodes with every one of these labels.
    #[serde(default)]
    pub on: BTreeMap<String, String>,
    /// Asked for, ms since the epoch.
    #[serde(default)]
    pub created_ms: i64,
}

/// Where the scheduler placed an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// The node.
    pub node: String,
    /// When, ms since the epoch.
    #[serde(default)]
    pub at_ms: i64,
}

/// What a node reports about one of its fleet instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// The instance's state on the node (`running`, `starting`, …).
    pub state: String,
    /// Its named ports there.
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
    /// Why it is in error, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
