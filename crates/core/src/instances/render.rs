//! Config rendering, writing and checking for an instance.

use std::path::{Path, PathBuf};

use super::Instance;
use crate::catalog::Manifest;
use crate::error::{Error, Result};

/// Render the instance's config into its directory and run the feature's
/// checker; the main file's path, or `None` when the feature has no config.
pub(crate) fn render_and_check(
    _inst: &Instance,
    m: &Manifest,
    _mdir: &Path,
) -> Result<Option<PathBuf>> {
    match &m.config {
        None => Ok(None),
        Some(_) => Err(Error::new(
            "CONFIG_NO_GENERATOR",
            "config generators are not wired yet",
        )),
    }
}
