//! The network step: a private network per instance when the manifest asks.

use super::Instance;
use crate::catalog::Manifest;
use crate::daemon::Daemon;
use crate::error::{Error, Result};

impl Daemon {
    pub(super) async fn step_network(&self, _inst: &Instance, m: &Manifest) -> Result<()> {
        if !m.network.requires_vlan {
            return Ok(());
        }
        Err(Error::new(
            "NETWORK_UNAVAILABLE",
            "per-instance networks are not wired yet",
        ))
    }

    pub(super) async fn undo_network(&self, _inst: &Instance) -> Result<()> {
        Ok(())
    }

    pub(super) async fn recover_networks(&self) {}
}
