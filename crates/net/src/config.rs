//! Picking a backend from the daemon config.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::backend::NetworkBackend;
use crate::error::NetError;
use crate::linux::{LinuxBackend, LinuxConfig};
use crate::record::NetPool;
use crate::routeros::{RouterOsBackend, RouterOsConfig};

/// The `[network]` section of the daemon config: which backend makes the
/// per-instance networks, and its settings.
///
/// ```toml
/// [network]
/// backend = "linux"        # or "routeros"
/// prefix = "hg-"
/// pool = { base = "10.99.0.0", first = 1, last = 254 }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum NetworkConfig {
    /// Network namespaces on this host (the default).
    Linux(LinuxConfig),
    /// A MikroTik router over the RouterOS API.
    #[serde(rename = "routeros")]
    RouterOs(RouterOsConfig),
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig::Linux(LinuxConfig::default())
    }
}

impl NetworkConfig {
    /// The address pool (give it to [`NetAllocator::new`](crate::NetAllocator::new)).
    pub fn pool(&self) -> &NetPool {
        match self {
            NetworkConfig::Linux(c) => &c.pool,
            NetworkConfig::RouterOs(c) => &c.pool,
        }
    }

    /// Checks the config without building anything.
    pub fn validate(&self) -> Result<(), NetError> {
        match self {
            NetworkConfig::Linux(c) => c.validate(),
            NetworkConfig::RouterOs(c) => c.validate(),
        }
    }

    /// The backend (validates first). Does no I/O: the Linux backend opens its
    /// netlink socket and the RouterOS backend connects on first use.
    pub fn build(&self) -> Result<Arc<dyn NetworkBackend>, NetError> {
        Ok(match self {
            NetworkConfig::Linux(c) => Arc::new(LinuxBackend::new(c.clone())?),
            NetworkConfig::RouterOs(c) => Arc::new(RouterOsBackend::new(c.clone())?),
        })
    }
}
