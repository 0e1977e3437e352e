//! The network step: a private network per instance when the manifest asks
//! (`network.requires_vlan`), made by the configured [`NetworkBackend`]: a
//! namespace with a veth pair, addresses from the pool, a routing table of its
//! own and a rule for the instance's mark (Linux), or the same on a RouterOS
//! router. The record is stored before each of the backend's steps, so a
//! crash mid-way is rolled back from it at the next boot.

use std::sync::{Arc, Mutex, OnceLock};

use hangar_net::{NetAllocator, NetRecord, NetworkBackend, NetworkConfig};
use tracing::warn;

use super::Instances;
use crate::error::{Error, Result};
use crate::util::{lock, now_ms};

/// The backend, built on first use (it needs netlink, and root), and the
/// allocator of per-instance numbers.
pub(crate) struct Net {
    config: NetworkConfig,
    backend: OnceLock<std::result::Result<Arc<dyn NetworkBackend>, Error>>,
    pub(crate) alloc: Mutex<Option<NetAllocator>>,
}

pub(super) fn net_err(e: hangar_net::NetError) -> Error {
    Error::new(e.kind, e.message.clone()).hint(e.hint)
}

impl Net {
    pub(crate) fn new(config: NetworkConfig) -> Net {
        Net {
            alloc: Mutex::new(NetAllocator::new(config.pool().clone()).ok()),
            config,
            backend: OnceLock::new(),
        }
    }

    pub(super) fn backend(&self) -> Result<Arc<dyn NetworkBackend>> {
        self.backend
            .get_or_init(|| self.config.build().map_err(net_err))
            .clone()
    }

    pub(super) fn allocate(&self, owner: &str) -> Result<u32> {
        match lock(&self.alloc).as_ref() {
            Some(a) => a.allocate(owner).map_err(net_err),
            None => Err(Error::new(
                crate::ErrorKind::NetPoolInvalid,
                "the [daemon.network] pool is not usable",
            )
            .hint("check pool = { base, first, last } in [daemon.network]")),
        }
    }

    pub(super) fn release(&self, n: u32) {
        if let Some(a) = lock(&self.alloc).as_ref() {
            a.release(n);
        }
    }
}

impl Instances {
    pub(super) fn net(&self) -> &Net {
        &self.s.net
    }

    /// Store the network record in the instance, synchronously: the backend
    /// calls this before each of its steps.
    pub(super) fn store_net(&self, id: &str, rec: &NetRecord) {
        let row = {
            let mut t = self.table();
            let Some(inst) = t.records.get_mut(id) else {
                return;
            };
            inst.network = Some(rec.clone());
            inst.bind = rec.instance_addr.to_string();
            inst.updated_ms = now_ms();
            inst.row()
        };
        match row {
            Ok(row) => {
                if let Err(e) = self.s.store.put_instance(&row) {
                    warn!(
                        instance = id,
                        code = e.code(),
                        "cannot store the network record: {e}"
                    );
                }
            }
            Err(e) => warn!(instance = id, code = e.code(), "{}", e.message),
        }
    }

    /// At boot, after the records are loaded: hold every stored number, and
    /// have the backend remove its leftovers without a record, re-create
    /// ACTIVE networks whose objects are gone and roll back interrupted ones.
    pub(super) async fn recover_networks(&self) {
        let recs: Vec<NetRecord> = self
            .table()
            .records
            .values()
            .filter_map(|i| i.network.clone())
            .collect();
        if let Some(a) = lock(&self.net().alloc).as_ref() {
            for (r, e) in a.restore(&recs) {
                warn!(instance = %r.instance_id, code = e.code(), "network number not held: {}", e.message);
            }
        }
        // Only a host that has instance networks (or leftovers of them) needs
        // the backend; building it needs root.
        if recs.is_empty() && !std::path::Path::new("/run/netns").is_dir() {
            return;
        }
        let Ok(backend) = self.net().backend() else {
            if !recs.is_empty() {
                warn!("instance networks cannot be checked: the network backend is unusable");
            }
            return;
        };
        match backend.recover(&recs).await {
            Ok(report) => {
                for r in report.recreated.iter().chain(&report.rolled_back) {
                    self.store_net(&r.instance_id, r);
                }
                for (id, why) in &report.failed {
                    warn!(instance = %id, "network recovery failed: {why}");
                }
                if !report.removed.is_empty() {
                    warn!(objects = ?report.removed, "removed network leftovers without a record");
                }
            }
            Err(e) => warn!(code = e.code(), "network recovery failed: {}", e.message),
        }
    }
}
