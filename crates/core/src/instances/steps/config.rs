//! Config: the instance's directory, its config rendered and accepted by the
//! feature's own checker, then handed to the user it runs as. Undo removes
//! the directory.

use std::path::Path;

use super::super::{render, Instance, Instances};
use crate::error::{Error, Result};
use crate::util::blocking;
use hangar_feature::catalog::Manifest;

pub(super) async fn apply(
    ins: &Instances,
    inst: &Instance,
    m: &Manifest,
    mdir: &Path,
) -> Result<()> {
    let dir = inst.dir.clone();
    let (inst2, m2, mdir2) = (inst.clone(), m.clone(), mdir.to_path_buf());
    let manager = ins.s.manager.clone();
    let install_dir = render::install_dir(ins, inst);
    let file = blocking(move || {
        for sub in ["config", "data"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| {
                Error::new(
                    crate::ErrorKind::InstanceDir,
                    format!("cannot create {}: {e}", dir.join(sub).display()),
                )
            })?;
        }
        render::render_and_check(&manager, &inst2, &m2, &mdir2, &install_dir)
    })
    .await?;
    if let Some(u) = &ins.s.settings.user {
        let run_as = hangar_supervisor::RunAs::from_name(u).map_err(Error::from)?;
        let dir = inst.dir.clone();
        blocking(move || give_to(&dir, run_as.uid, run_as.gid)).await?;
    }
    ins.update(&inst.id, |i| i.config_file = file)
        .await
        .map(drop)
}

pub(super) async fn undo(ins: &Instances, inst: &Instance) -> Result<()> {
    let dir = inst.dir.clone();
    blocking(move || match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::new(
            crate::ErrorKind::InstanceCleanup,
            format!("cannot remove {}: {e}", dir.display()),
        )),
        _ => Ok(()),
    })
    .await?;
    if inst.config_file.is_none() && !inst.config_pending {
        return Ok(());
    }
    ins.update(&inst.id, |i| {
        i.config_file = None;
        i.config_pending = false;
    })
    .await
    .map(drop)
}

/// `chown -R` without following links: the instance's files to the user it runs as.
fn give_to(dir: &Path, uid: u32, gid: u32) -> Result<()> {
    let fail = |p: &Path, e: std::io::Error| {
        Error::new(
            crate::ErrorKind::InstanceDir,
            format!("cannot give {} to uid {uid}: {e}", p.display()),
        )
        .hint("run hangar as root to run instances as another user")
    };
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid)).map_err(|e| fail(dir, e))?;
    for e in std::fs::read_dir(dir).map_err(|e| fail(dir, e))? {
        let e = e.map_err(|e| fail(dir, e))?;
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            give_to(&p, uid, gid)?;
        } else {
            std::os::unix::fs::lchown(&p, Some(uid), Some(gid)).map_err(|e| fail(&p, e))?;
        }
    }
    Ok(())
}
