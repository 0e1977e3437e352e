//! Resource limits and privileges from the manifest, onto the process spec.

use hangar_supervisor::ProcessSpec;

use super::Instance;
use crate::catalog::Manifest;
use crate::error::Result;

/// Apply the manifest's `resources` to the spec.
pub(crate) fn apply(_spec: &mut ProcessSpec, _m: &Manifest, _inst: &Instance) -> Result<()> {
    Ok(())
}
