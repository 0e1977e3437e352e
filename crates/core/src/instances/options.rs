//! Option validation before anything is allocated.

use serde_json::{Map, Value};

use crate::catalog::Manifest;
use crate::error::Result;

/// Check the user's options against the feature's option schema.
pub(crate) fn validate(
    _m: &Manifest,
    _mode: Option<&str>,
    _opts: &Map<String, Value>,
) -> Result<()> {
    Ok(())
}
