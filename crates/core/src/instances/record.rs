//! The instance record as stored, and the types of its create flow.

use std::collections::BTreeMap;
use std::path::PathBuf;

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
            InstanceState::Stopped => "stopped",
            InstanceState::Error => "error",
            InstanceState::Deleting => "deleting",
        }
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
    /// Tenant key, for per-tenant isolation.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Session key, for per-session isolation.
    #[serde(default)]
    pub session: Option<String>,
    /// The feature's isolation level.
    pub isolation: Isolation,
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
    pub network: Option<Value>,
    /// Its supervised process's name.
    pub process: String,
    /// Its directory (config, data).
    pub dir: PathBuf,
    /// Its main config file, once written.
    #[serde(default)]
    pub config_file: Option<PathBuf>,
    /// The feature's binary, once installed.
    #[serde(default)]
    pub binary: Option<PathBuf>,
    /// Created (ms since the epoch).
    pub created_ms: i64,
    /// Last changed (ms since the epoch).
    pub updated_ms: i64,
}

impl Instance {
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
}

/// What `create` answers.
#[derive(Debug, Clone)]
pub struct Created {
    /// The instance (queued when new).
    pub instance: Instance,
    /// An existing instance for the same isolation key was returned.
    pub reused: bool,
}
