//! Install: download, verify and install the feature, unless that version
//! is installed. Undo keeps it: installed features are shared by instances,
//! and `hangar uninstall` removes them.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hangar_fetch::Step as FetchStep;
use serde_json::json;

use super::super::{Instance, Instances};
use crate::error::{Error, Result};
use crate::util::{blocking, lock};
use hangar_feature::catalog::{self, Manifest};

pub(super) async fn apply(
    ins: &Instances,
    inst: &Instance,
    m: &Manifest,
    mdir: &Path,
) -> Result<()> {
    let installer = &ins.s.installer;
    let have = {
        let (d, id, version) = (ins.clone(), inst.feature.clone(), inst.version.clone());
        blocking(move || {
            Ok(d.s
                .installer
                .versions(&id)
                .unwrap_or_default()
                .into_iter()
                .find(|i| i.version == version))
        })
        .await?
    };
    let binary = match have {
        Some(i) => i.binary,
        None => {
            let policy = catalog::InstallPolicy {
                allow_unverified: ins.s.settings.allow_unverified,
                how_to_allow: "set [daemon.instances] allow_unverified = true",
            };
            let req = catalog::plan(installer, m, mdir, &inst.version, policy).await?;
            let name = inst.name.clone();
            let last = Mutex::new(None::<Instant>);
            let d = ins.clone();
            let progress = move |s: &FetchStep| {
                let detail = match s {
                    FetchStep::Download(p) => {
                        // At most one event every 100 ms, and the last.
                        let mut l = lock(&last);
                        if !p.done && l.is_some_and(|t| t.elapsed() < Duration::from_millis(100)) {
                            return;
                        }
                        *l = Some(Instant::now());
                        json!({"status": "downloading", "bytes": p.bytes, "total": p.total,
                               "percent": p.total.filter(|t| *t > 0).map(|t| (p.bytes as f64 * 100.0 / t as f64).min(100.0)),
                               "bytes_per_sec": p.bytes_per_sec})
                    }
                    FetchStep::Verify => json!({"status": "verifying"}),
                    FetchStep::Extract => json!({"status": "extracting"}),
                    FetchStep::Installed => json!({"status": "completed"}),
                };
                d.s.events.emit(&name, "install.progress", "", "", detail);
            };
            let done = installer
                .install(req, &progress)
                .await
                .map_err(Error::from)?;
            ins.s.events.emit(
                &inst.name,
                "install.done",
                "",
                &done.version,
                json!({"feature": done.id, "version": done.version, "sha256": done.sha256, "verified": done.verified}),
            );
            done.binary
        }
    };
    ins.update(&inst.id, |i| i.binary = Some(binary))
        .await
        .map(drop)
}

pub(super) async fn undo(_ins: &Instances, _inst: &Instance) -> Result<()> {
    Ok(())
}
