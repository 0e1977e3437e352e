//! The create flow's steps, one file each: `apply` makes what the step
//! makes; `undo` takes it back, idempotently, from the stored record alone
//! (so it also cleans up after a daemon killed mid-step).

use std::path::Path;

use super::{not_found, Instances, StepKind};
use crate::error::Result;
use hangar_feature::catalog::Manifest;

mod config;
mod install;
mod network;
mod ports;
pub(super) mod process;
pub(super) mod ready;

/// Apply one step to the instance `id`.
pub(super) async fn apply(
    ins: &Instances,
    id: &str,
    step: StepKind,
    manifest: &Manifest,
    mdir: &Path,
) -> Result<()> {
    let inst = ins.get(id).ok_or_else(|| not_found(id))?;
    match step {
        StepKind::Install => install::apply(ins, &inst, manifest, mdir).await,
        StepKind::Ports => ports::apply(ins, &inst, manifest).await,
        StepKind::Network => network::apply(ins, &inst, manifest).await,
        StepKind::Config => config::apply(ins, &inst, manifest, mdir).await,
        StepKind::Process => process::apply(ins, &inst, manifest).await,
        StepKind::Ready => ready::apply(ins, &inst).await,
    }
}

/// Undo one step of the instance `id` (nothing when it is gone).
pub(super) async fn undo(ins: &Instances, id: &str, step: StepKind) -> Result<()> {
    let Some(inst) = ins.get(id) else {
        return Ok(());
    };
    match step {
        StepKind::Install => install::undo(ins, &inst).await,
        StepKind::Ports => ports::undo(ins, &inst).await,
        StepKind::Network => network::undo(ins, &inst).await,
        StepKind::Config => config::undo(ins, &inst).await,
        StepKind::Process => process::undo(ins, &inst).await,
        StepKind::Ready => ready::undo(ins, &inst).await,
    }
}
