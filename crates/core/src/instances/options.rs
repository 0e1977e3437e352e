//! Option validation before anything is allocated.

use serde_json::{Map, Value};

use crate::error::Result;
use hangar_feature::catalog::Manifest;
use hangar_feature::configgen;

/// Check the user's options against the feature's option schema (and its
/// generator's own rules), every problem at once; returns the mode to record
/// (the first when none is asked for and the feature has modes).
pub(crate) fn validate(
    m: &Manifest,
    mode: Option<&str>,
    opts: &Map<String, Value>,
) -> Result<Option<String>> {
    let mode = configgen::resolve_mode(m, mode)?.map(|x| x.id.clone());
    // Also without a `config` block: a feature that declares no options
    // refuses every option given.
    configgen::validate_options(m, mode.as_deref(), opts)?;
    Ok(mode)
}
