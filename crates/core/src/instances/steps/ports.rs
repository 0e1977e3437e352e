//! Ports: the instance's named ports, from the supervisor's port registry
//! (or the manifest's defaults inside its own network namespace).

use std::collections::BTreeMap;

use super::super::{port_names, Instance, Instances};
use crate::error::{Error, Result};
use hangar_feature::catalog::Manifest;

pub(super) async fn apply(ins: &Instances, inst: &Instance, m: &Manifest) -> Result<()> {
    let names = port_names(m);
    let reg = ins.s.manager.ports();
    let mut ports = BTreeMap::new();
    if inst.network.is_some() || m.network.requires_vlan {
        // Its own namespace: the manifest's ports are free there.
        for (n, p) in names.iter().zip(&m.network.default_ports) {
            ports.insert(n.clone(), *p);
        }
    } else {
        let Some(range) = reg.ranges().first().map(|r| r.purpose.clone()) else {
            return Err(Error::new(
                crate::ErrorKind::PortsNoRange,
                "no port range is configured",
            )
            .hint("set [daemon] port_range"));
        };
        for n in &names {
            match reg.allocate(&range, &inst.id) {
                Ok(p) => {
                    ports.insert(n.clone(), p);
                }
                Err(e) => {
                    reg.release_all(&inst.id);
                    return Err(Error::new(e.kind, e.message.clone())
                        .with("instance", &inst.name)
                        .hint(e.hint));
                }
            }
        }
    }
    ins.update(&inst.id, |i| i.ports = ports).await.map(drop)
}

pub(super) async fn undo(ins: &Instances, inst: &Instance) -> Result<()> {
    ins.s.manager.ports().release_all(&inst.id);
    if inst.ports.is_empty() {
        return Ok(());
    }
    ins.update(&inst.id, |i| i.ports.clear()).await.map(drop)
}
