//! The catalog and the installs as a service: the daemon's one catalog and
//! its one [`Installer`](hangar_fetch::Installer), the same the instances'
//! install step uses, so an install asked for through the API and one an
//! instance needs join (same version) or wait their turn, and never race two
//! installers on one feature directory.
//!
//! Events, named after the feature: `feature.installed` (to: the version),
//! `feature.install_failed` (detail: the error's code and message) and
//! `feature.uninstalled` (from: the versions removed).

use hangar_feature::catalog::{self, Entry, Platform};
use hangar_fetch::{InstallRequest, Installed, Step};
use serde_json::json;

use super::Instances;
use crate::error::{Error, Result};
use crate::util::blocking;

/// One feature as the daemon's catalog has it, with what this machine would
/// download and what is installed.
#[derive(Debug, Clone)]
pub struct FeatureInfo {
    /// The manifest and where it was found.
    pub entry: Entry,
    /// The download for the manifest's version on this platform, or why
    /// there is none here.
    pub resolved: std::result::Result<InstallRequest, Error>,
    /// Installed versions, oldest first.
    pub installed: Vec<Installed>,
}

impl Instances {
    /// Every feature of the catalog, or those matching every word of `query`
    /// (best first), as `hangar catalog search` finds them.
    pub(crate) async fn features(&self, query: &str) -> Result<Vec<Entry>> {
        let (d, q) = (self.clone(), query.trim().to_string());
        blocking(move || {
            let cat = d.catalog()?;
            Ok(if q.is_empty() {
                cat.list().cloned().collect()
            } else {
                cat.search(&q).into_iter().cloned().collect()
            })
        })
        .await
    }

    /// One feature with its resolved download and its installs.
    pub(crate) async fn feature(&self, id: &str) -> Result<FeatureInfo> {
        let (d, id) = (self.clone(), id.to_string());
        blocking(move || {
            let cat = d.catalog()?;
            let entry = cat.get(&id)?.clone();
            let installed = d.s.installer.versions(&id).unwrap_or_default();
            let resolved = catalog::resolve(
                &entry.manifest,
                &entry.dir,
                &entry.manifest.version,
                &Platform::current(),
            );
            Ok(FeatureInfo {
                entry,
                resolved,
                installed,
            })
        })
        .await
    }

    /// Install a version (`None`: the manifest's) and make it current, under
    /// the daemon's download policy; `allow_unverified` adds to the daemon's
    /// own setting, never takes from it.
    pub(crate) async fn install_feature(
        &self,
        id: &str,
        version: Option<&str>,
        allow_unverified: bool,
        on_step: &(dyn Fn(&Step) + Send + Sync),
    ) -> Result<Installed> {
        let (m, dir) = self.manifest_of(id).await?;
        let version = version.unwrap_or(&m.version).to_string();
        let r = self
            .install_planned(&m, &dir, &version, allow_unverified, on_step)
            .await;
        match &r {
            Ok(done) => self.s.events.emit(
                &m.id,
                "feature.installed",
                "",
                &done.version,
                json!({"feature": done.id, "version": done.version, "sha256": done.sha256,
                       "verified": done.verified, "signed": done.signed}),
            ),
            Err(e) => self.s.events.emit(
                &m.id,
                "feature.install_failed",
                "",
                "",
                json!({"feature": m.id, "version": version, "error_code": e.code(),
                       "error": e.message}),
            ),
        }
        r
    }

    async fn install_planned(
        &self,
        m: &catalog::Manifest,
        dir: &std::path::Path,
        version: &str,
        allow_unverified: bool,
        on_step: &(dyn Fn(&Step) + Send + Sync),
    ) -> Result<Installed> {
        let installer = &self.s.installer;
        let policy = catalog::InstallPolicy {
            allow_unverified: allow_unverified || self.s.settings.allow_unverified,
            how_to_allow: "pass --allow-unverified (allow_unverified in the API), or set [daemon.instances] allow_unverified = true",
        };
        let req = catalog::plan(installer, m, dir, version, policy).await?;
        let version = req.version.clone();
        match installer.install(req, on_step).await {
            Ok(done) => Ok(done),
            Err(e) => {
                let installed: Vec<String> = installer
                    .versions(&m.id)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|i| i.version)
                    .collect();
                Err(catalog::name_known_versions(
                    Error::from(e),
                    m,
                    dir,
                    &version,
                    &installed,
                ))
            }
        }
    }

    /// Remove a version (`None`: every version) of a feature. Refused while
    /// an instance exists that uses it, whether or not its process runs, and
    /// (by the installer) while any process runs from it.
    pub(crate) async fn uninstall_feature(
        &self,
        id: &str,
        version: Option<&str>,
    ) -> Result<Vec<String>> {
        let users: Vec<String> = self
            .list()
            .into_iter()
            .filter(|i| i.feature == id && version.is_none_or(|v| v == i.version))
            .map(|i| format!("{} ({})", i.name, i.version))
            .collect();
        if !users.is_empty() {
            let what = match version {
                Some(v) => format!("{id} {v}"),
                None => id.to_string(),
            };
            return Err(Error::new(
                crate::ErrorKind::FeatureInUse,
                format!("{what} is used by instance {}", users.join(", ")),
            )
            .with("feature", id)
            .with("instances", users.join(", "))
            .hint("delete those instances first (`hangar instance delete NAME`), then uninstall"));
        }
        let (d, i, v) = (self.clone(), id.to_string(), version.map(str::to_string));
        let removed = blocking(move || {
            d.s.installer
                .uninstall(&i, v.as_deref())
                .map_err(Error::from)
        })
        .await?;
        self.s.events.emit(
            id,
            "feature.uninstalled",
            &removed.join(","),
            "",
            json!({"feature": id, "removed": removed}),
        );
        Ok(removed)
    }

    /// Every installed version, by feature then version.
    pub(crate) async fn installed(&self) -> Result<Vec<Installed>> {
        let d = self.clone();
        blocking(move || d.s.installer.list().map_err(Error::from)).await
    }
}
