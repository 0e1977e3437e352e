//! Network: a private network for the instance when its manifest asks
//! (`network.requires_vlan`), made by the configured backend, its record
//! stored before each of the backend's steps. Undo tears it down from the
//! stored record and releases its number.

use hangar_net::{NetRecord, NetSpec};

use super::super::network::net_err;
use super::super::{Instance, Instances};
use crate::error::Result;
use hangar_feature::catalog::Manifest;

pub(super) async fn apply(ins: &Instances, inst: &Instance, m: &Manifest) -> Result<()> {
    if !m.network.requires_vlan {
        return Ok(());
    }
    let backend = ins.net().backend()?;
    let n = ins.net().allocate(&inst.id)?;
    let spec = NetSpec::new(&inst.id, n);
    let id = inst.id.clone();
    let progress = |r: &NetRecord| ins.store_net(&id, r);
    match backend.create(&spec, &progress).await {
        Ok(rec) => {
            ins.store_net(&inst.id, &rec);
            Ok(())
        }
        Err(e) => {
            // The backend rolled its own steps back.
            ins.net().release(n);
            Err(net_err(e).with("instance", &inst.name))
        }
    }
}

pub(super) async fn undo(ins: &Instances, inst: &Instance) -> Result<()> {
    let Some(rec) = &inst.network else {
        return Ok(());
    };
    ins.net().backend()?.teardown(rec).await.map_err(net_err)?;
    ins.net().release(rec.number);
    ins.update(&inst.id, |i| {
        i.network = None;
        i.bind = "127.0.0.1".into();
    })
    .await
    .map(drop)
}
