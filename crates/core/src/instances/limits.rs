//! Resource limits from the manifest, onto the process spec.

use hangar_supervisor::{Limits, ProcessSpec};

use super::Instance;
use crate::error::{Error, Result};
use hangar_feature::catalog::Manifest;

/// Apply the manifest's `resources` to the spec: a cgroup with memory, CPU
/// and process limits (v2 where the host has it, v1 otherwise; the supervisor
/// warns once and runs unlimited when neither can be used).
pub(crate) fn apply(spec: &mut ProcessSpec, m: &Manifest, inst: &Instance) -> Result<()> {
    let r = &m.resources;
    if r.memory_limit.is_none() && r.cpu_limit.is_none() && r.max_pids.is_none() {
        return Ok(());
    }
    let memory_max = match r.memory_limit.as_deref() {
        Some(s) => Some(Limits::parse_memory(s).map_err(|why| {
            Error::new(
                hangar_feature::ErrorKind::ManifestInvalid,
                format!("resources.memory_limit {s:?}: {why}"),
            )
            .with("feature", &inst.feature)
            .hint("write it as e.g. \"512Mi\" or \"1G\"")
        })?),
        None => None,
    };
    spec.limits = Some(Limits {
        memory_max,
        cpu_max: r.cpu_limit,
        pids_max: r.max_pids,
    });
    Ok(())
}
