//! The instance record as stored, and the types of its create flow.

use std::collections::BTreeMap;
use std::path::PathBuf;

use hangar_net::NetRecord;
use hangar_store::{Desired, InstanceRow};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use hangar_feature::catalog::Isolation;

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Accepted; its create task has not begun.
    Queued,
    /// Its feature is being downloaded and installed.
    Installing,
    /// Ports, network and config are being made.
    Creating,
    /// Its process started; waiting for it to be healthy.
    Starting,
    /// Healthy and serving.
    Running,
    /// Created and meant to run, but its process is not well: it crashed and
    /// is backing off before a restart, or its probe says unhealthy.
    Degraded,
    /// Created and meant to run, but its process failed for good (the restart
    /// circuit opened): `instance start` or `restart` tries again.
    Failed,
    /// Stopped on request; everything it owns is kept.
    Stopped,
    /// A step failed (see the error); everything the steps made was taken back.
    Error,
    /// Being deleted.
    Deleting,
}

impl InstanceState {
    /// Lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            InstanceState::Queued => "queued",
            InstanceState::Installing => "installing",
            InstanceState::Creating => "creating",
            InstanceState::Starting => "starting",
            InstanceState::Running => "running",
            InstanceState::Degraded => "degraded",
            InstanceState::Failed => "failed",
            InstanceState::Stopped => "stopped",
            InstanceState::Error => "error",
            InstanceState::Deleting => "deleting",
        }
    }

    /// Made, and meant to run: its process is registered (running,
    /// degraded or failed).
    pub const fn is_up(self) -> bool {
        matches!(
            self,
            InstanceState::Running | InstanceState::Degraded | InstanceState::Failed
        )
    }

    /// A create (or start) is under way.
    pub const fn in_progress(self) -> bool {
        matches!(
            self,
            InstanceState::Queued
                | InstanceState::Installing
                | InstanceState::Creating
                | InstanceState::Starting
        )
    }
}

/// The steps from a record to a healthy process, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    /// Download, verify and install the feature (skipped when installed).
    Install,
    /// Allocate the instance's ports.
    Ports,
    /// Make its private network, when the manifest asks for one.
    Network,
    /// Render, write and check its config.
    Config,
    /// Register and start its process.
    Process,
    /// Wait until the process is running and its probe passes.
    Ready,
}

impl StepKind {
    /// Every step, in order.
    pub const ALL: [StepKind; 6] = [
        StepKind::Install,
        StepKind::Ports,
        StepKind::Network,
        StepKind::Config,
        StepKind::Process,
        StepKind::Ready,
    ];

    /// Lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            StepKind::Install => "install",
            StepKind::Ports => "ports",
            StepKind::Network => "network",
            StepKind::Config => "config",
            StepKind::Process => "process",
            StepKind::Ready => "ready",
        }
    }

    pub(crate) const fn state(self) -> InstanceState {
        match self {
            StepKind::Install => InstanceState::Installing,
            StepKind::Ports | StepKind::Network | StepKind::Config => InstanceState::Creating,
            StepKind::Process | StepKind::Ready => InstanceState::Starting,
        }
    }
}

/// Why an instance is in the error state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceError {
    /// The step that failed, if a step did.
    pub step: Option<StepKind>,
    /// Stable code.
    pub code: String,
    /// What went wrong.
    pub message: String,
    /// How to fix it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Where it happened (the checker's output, the path, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<(String, String)>,
}

/// A feature instance, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// Stable id, `i-` and 12 hex digits.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// The feature (catalog id).
    pub feature: String,
    /// The feature's version.
    pub version: String,
    /// Operation mode, if the feature has modes.
    #[serde(default)]
    pub mode: Option<String>,
    /// The options given (before defaults are merged).
    #[serde(default)]
    pub options: Map<String, Value>,
    /// The names of the options the manifest marks secret, recorded at create
    /// and update so replies can hide them without reading the catalog.
    /// `None` (a record older than the field): every option is hidden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_options: Option<std::collections::BTreeSet<String>>,
    /// Tenant key, for per-tenant isolation.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Session key, for per-session isolation.
    #[serde(default)]
    pub session: Option<String>,
    /// The feature's isolation level.
    pub isolation: Isolation,
    /// Made by the fleet agent for an instance the fleet placed here.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fleet: bool,
    /// The isolation key: requests with the same key share this instance.
    pub key: String,
    /// Lifecycle state.
    pub state: InstanceState,
    /// Should it run (a stopped instance stays stopped across restarts).
    pub desired: Desired,
    /// The step reached (stored before it runs).
    #[serde(default)]
    pub step: Option<StepKind>,
    /// Steps applied (undone newest first on failure).
    #[serde(default)]
    pub done: Vec<StepKind>,
    /// Why it is in error.
    #[serde(default)]
    pub error: Option<InstanceError>,
    /// Named ports.
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
    /// Address it binds.
    pub bind: String,
    /// Its private network's record, when it has one.
    #[serde(default)]
    pub network: Option<NetRecord>,
    /// Its supervised process's name.
    pub process: String,
    /// Its directory (config, data).
    pub dir: PathBuf,
    /// Its main config file, once written.
    #[serde(default)]
    pub config_file: Option<PathBuf>,
    /// An update stored its options but may not have written its config
    /// file yet: until this is cleared the file may be the old one, and the
    /// next start of the daemon writes it from this record.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub config_pending: bool,
    /// The feature's binary, once installed.
    #[serde(default)]
    pub binary: Option<PathBuf>,
    /// Created (ms since the epoch).
    pub created_ms: i64,
    /// Last changed (ms since the epoch).
    pub updated_ms: i64,
}

/// What a secret option shows as outside the daemon.
pub const REDACTED: &str = "********";

impl Instance {
    /// The instance as it may leave the daemon: every secret option's value
    /// (every option's, for a record that does not say which are secret)
    /// replaced by [`REDACTED`]. Only the config file holds the values.
    /// Borrowed when there is nothing to hide, so listing a thousand
    /// instances without secrets copies none of them.
    pub fn redacted(&self) -> std::borrow::Cow<'_, Instance> {
        let secret = |k: &String, v: &Value| {
            !v.is_null() && self.secret_options.as_ref().is_none_or(|s| s.contains(k))
        };
        if !self.options.iter().any(|(k, v)| secret(k, v)) {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut out = self.clone();
        for (k, v) in out.options.iter_mut() {
            if secret(k, v) {
                *v = Value::String(REDACTED.into());
            }
        }
        std::borrow::Cow::Owned(out)
    }

    pub(crate) fn row(&self) -> Result<InstanceRow> {
        Ok(InstanceRow {
            id: self.id.clone(),
            name: self.name.clone(),
            feature: self.feature.clone(),
            state: self.state.as_str().to_string(),
            body: serde_json::to_string(self).map_err(|e| {
                Error::new(
                    crate::ErrorKind::InstanceEncode,
                    format!("cannot encode the instance: {e}"),
                )
            })?,
            updated_ms: self.updated_ms,
        })
    }
}

/// What `create` asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateRequest {
    /// Catalog id.
    pub feature: String,
    /// Name; generated from the feature and key when empty.
    pub name: Option<String>,
    /// Operation mode.
    pub mode: Option<String>,
    /// Options over the mode's defaults.
    pub options: Map<String, Value>,
    /// Tenant key.
    pub tenant: Option<String>,
    /// Session key.
    pub session: Option<String>,
    /// Made by the fleet agent, which alone deletes it (and the session
    /// reaper leaves it alone).
    pub fleet: bool,
}

/// What `create` answers.
#[derive(Debug, Clone)]
pub struct Created {
    /// The instance (queued when new).
    pub instance: Instance,
    /// An existing instance for the same isolation key was returned.
    pub reused: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as the code before the typed network field stored it (the
    /// network record as a JSON object in the body).
    const OLD_ROW: &str = r#"{
        "id": "i-0123456789ab", "name": "vpn", "feature": "sing-box",
        "version": "1.2.3", "mode": null, "options": {}, "tenant": "t1",
        "session": null, "isolation": "per-tenant", "key": "sing-box/t1",
        "state": "running", "desired": "running", "step": null,
        "done": ["install", "ports", "network", "config", "process", "ready"],
        "error": null, "ports": {"socks": 1080}, "bind": "10.99.7.2",
        "network": {
            "backend": "linux", "instance_id": "i-0123456789ab", "number": 7,
            "namespace": "hg-7", "namespace_path": "/run/netns/hg-7",
            "host_if": "hg-7-h", "instance_if": "hg-7-i",
            "host_addr": "10.99.7.1", "instance_addr": "10.99.7.2",
            "prefix_len": 24, "table": 1007, "routing_mark": "",
            "fwmark": 65543, "rule_priority": 10007,
            "state": {"state": "active"},
            "steps_done": ["namespace", "veth", "host_address", "host_up",
                           "instance_address", "instance_route", "table_route", "rule"]
        },
        "process": "sing-box.vpn", "dir": "/var/lib/hangar/instances/i-0123456789ab",
        "config_file": "/var/lib/hangar/instances/i-0123456789ab/config/config.json",
        "binary": "/var/lib/hangar/features/sing-box/1.2.3/sing-box",
        "created_ms": 1, "updated_ms": 2
    }"#;

    #[test]
    fn an_old_record_with_a_network_loads_and_stores_the_same_json() {
        let inst: Instance = serde_json::from_str(OLD_ROW).expect("the old row loads");
        let net = inst.network.as_ref().expect("a network record");
        assert_eq!(net.number, 7);
        assert_eq!(net.namespace_path, PathBuf::from("/run/netns/hg-7"));
        assert!(net.is_active());
        let old: Value = serde_json::from_str(OLD_ROW).expect("valid JSON");
        let new = serde_json::to_value(&inst).expect("encodes");
        assert_eq!(new["network"], old["network"]);
        assert_eq!(new, old);
    }

    /// Secret options are hidden by name; a record from before the names were
    /// kept hides every option rather than guess.
    #[test]
    fn redacted_hides_secret_options_and_all_of_an_old_records() {
        let mut old: Value = serde_json::from_str(OLD_ROW).expect("valid JSON");
        old["options"] = serde_json::json!({"password": "p4ss", "port": 9, "empty": null});
        let inst: Instance = serde_json::from_value(old).expect("loads");
        let r = inst.redacted();
        assert_eq!(r.options["password"], REDACTED);
        assert_eq!(r.options["port"], REDACTED);
        assert_eq!(r.options["empty"], Value::Null);
        let mut known = inst.clone();
        known.secret_options = Some(["password".to_string()].into());
        let r = known.redacted();
        assert_eq!(r.options["password"], REDACTED);
        assert_eq!(r.options["port"], 9);
        let mut plain = known.clone();
        plain.options.remove("password");
        assert!(
            matches!(plain.redacted(), std::borrow::Cow::Borrowed(_)),
            "nothing to hide: no copy"
        );
        assert_eq!(
            inst.options["password"], "p4ss",
            "the record itself keeps it"
        );
    }

    #[test]
    fn an_old_record_without_a_network_loads() {
        let mut old: Value = serde_json::from_str(OLD_ROW).expect("valid JSON");
        old["network"] = Value::Null;
        let inst: Instance = serde_json::from_value(old.clone()).expect("loads");
        assert!(inst.network.is_none());
        if let Some(o) = old.as_object_mut() {
            o.remove("network");
        }
        let inst: Instance = serde_json::from_value(old).expect("loads without the field");
        assert!(inst.network.is_none());
    }
}
