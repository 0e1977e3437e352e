//! Config rendering, writing and checking for an instance.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::Instance;
use crate::error::{Error, Result};
use hangar_feature::catalog::manifest::EnvPlaces;
use hangar_feature::catalog::Manifest;
use hangar_feature::configgen::{self, GeneratorRegistry, InstanceContext, RenderInput};

fn context(inst: &Instance) -> Result<InstanceContext> {
    let binary = inst.binary.as_deref().ok_or_else(|| {
        Error::new(
            crate::ErrorKind::InstanceNotInstalled,
            format!("{} is not installed", inst.feature),
        )
    })?;
    let install_dir = binary.parent().unwrap_or(Path::new("/"));
    let mut ctx = InstanceContext::new(&inst.id, &inst.name, &inst.feature, &inst.dir, install_dir);
    ctx.mode = inst.mode.clone();
    ctx.bind = inst.bind.parse::<IpAddr>().map_err(|e| {
        Error::new(
            crate::ErrorKind::InstanceBadBind,
            format!("bind address {:?}: {e}", inst.bind),
        )
    })?;
    ctx.ports = inst.ports.clone();
    ctx.create_dirs()?;
    Ok(ctx)
}

/// The installed version's directory an instance runs from (`binary.env`'s
/// `{{install_dir}}`).
pub(crate) fn install_dir(ins: &super::Instances, inst: &Instance) -> PathBuf {
    ins.s.installer.version_dir(&inst.feature, &inst.version)
}

/// Render the instance's config into its directory and have the feature's
/// own checker accept it. Writes only once the checker said yes: a config it
/// refuses never replaces the one in place (update keeps the old config). The
/// main file's path, or `None` when the feature has no config. The checker is
/// a one-shot command of the daemon's `manager`. Blocks: call it from a
/// blocking thread.
pub(crate) fn render_and_check(
    manager: &hangar_supervisor::Manager,
    inst: &Instance,
    m: &Manifest,
    mdir: &Path,
    install_dir: &Path,
) -> Result<Option<PathBuf>> {
    match render_checked(manager, inst, m, mdir, install_dir)? {
        Some(staged) => staged.commit().map(Some),
        None => Ok(None),
    }
}

/// [`render_and_check`] up to the commit: the files the checker accepted,
/// staged beside the ones in place (temp names), which they replace on
/// [`Staged::commit`](configgen::Staged::commit) and which dropping removes.
/// `None` when the feature has no config. Blocks.
pub(crate) fn render_checked(
    manager: &hangar_supervisor::Manager,
    inst: &Instance,
    m: &Manifest,
    mdir: &Path,
    install_dir: &Path,
) -> Result<Option<configgen::Staged>> {
    let ctx = context(inst)?;
    if m.config.is_none() {
        return Ok(None);
    }
    let options = configgen::validate_options(m, inst.mode.as_deref(), &inst.options)?;
    let r = GeneratorRegistry::builtin().render(&RenderInput {
        manifest: m,
        manifest_dir: mdir,
        ctx: &ctx,
        options: &options,
    })?;
    let staged = configgen::stage(&ctx.config_dir, &r)?;
    if let Some(bin) = &inst.binary {
        // The checker runs with the environment the process gets (the
        // manifest's `binary.env`), its `{{config}}` being the staged file.
        let env = m.env_for(EnvPlaces {
            install_dir,
            instance_dir: &inst.dir,
            config: Some(staged.main_path()),
        });
        configgen::check_with_env(manager, m, &r, bin, staged.main_path(), &env)?;
    }
    Ok(Some(staged))
}

/// Render the instance's config in memory from `options` (already merged
/// with the mode's and the manifest's defaults), without checking or writing
/// it: what `hangar export` uses to render a config whose secret options are
/// stand-ins. `None` when the feature has no config. Blocks.
pub(crate) fn render_with(
    inst: &Instance,
    m: &Manifest,
    mdir: &Path,
    options: &serde_json::Map<String, serde_json::Value>,
) -> Result<Option<configgen::Rendered>> {
    if m.config.is_none() {
        return Ok(None);
    }
    let ctx = context(inst)?;
    GeneratorRegistry::builtin()
        .render(&RenderInput {
            manifest: m,
            manifest_dir: mdir,
            ctx: &ctx,
            options,
        })
        .map(Some)
}
