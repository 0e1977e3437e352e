//! The one install policy: the daemon's create flow and `hangar install` both
//! plan an install here (version, platform, asset, checksum, signature) and
//! hand the request to the one `hangar_fetch::Installer`, so the rule
//! "nothing unverified unless allowed" is written once.

use std::path::Path;

use hangar_fetch::{InstallRequest, Installer};

use super::manifest::Manifest;
use super::resolve::{latest_version, resolve, Platform};
use crate::{Error, ErrorKind, Result};

/// What an install may accept.
#[derive(Debug, Clone, Copy)]
pub struct InstallPolicy {
    /// Install a version the manifest gives nothing to verify against.
    pub allow_unverified: bool,
    /// How the caller's user allows that (the refusal's hint), e.g. "pass
    /// --allow-unverified".
    pub how_to_allow: &'static str,
}

/// The request for `version` (`"latest"` asks the release source) of the
/// manifest in `dir` on this platform, refused if nothing verifies it and the
/// policy does not allow that.
pub async fn plan(
    installer: &Installer,
    m: &Manifest,
    dir: &Path,
    version: &str,
    policy: InstallPolicy,
) -> Result<InstallRequest> {
    let latest;
    let version = if version == "latest" {
        latest = latest_version(m, installer.downloader()).await?;
        latest.as_str()
    } else {
        version
    };
    let req = resolve(m, dir, version, &Platform::current())?;
    if req.checksum.is_none() && !policy.allow_unverified {
        return Err(Error::new(
            ErrorKind::VerifyUnverified,
            format!("{} {version} has no checksum to verify against", m.id),
        )
        .hint(format!(
            "the manifest gives nothing to verify this version on this platform against (verification none, or no checksums file, pin or digest for it); {} to install it anyway",
            policy.how_to_allow
        )));
    }
    Ok(req)
}

/// The versions of a feature known to exist: the manifest's own, those it
/// pins digests for, those `installed`, and for a `file` source the versions
/// of the release files beside the manifest that match its asset pattern on
/// this platform. Sorted the way people expect, without repeats.
pub fn known_versions(m: &Manifest, dir: &Path, installed: &[String]) -> Vec<String> {
    let mut out: Vec<String> = vec![m.version.clone()];
    out.extend(m.source.verification.pinned.keys().cloned());
    out.extend(installed.iter().cloned());
    if m.source.kind == super::manifest::SourceKind::File {
        // The version as a marker no file name holds, then the file names
        // around it in the pattern's directory.
        const MARK: &str = "\u{1}version\u{1}";
        let p = super::resolve::expand(&m.source.asset_pattern, m, MARK, &Platform::current());
        let (parent, name) = match p.rsplit_once('/') {
            Some((d, n)) => (dir.join(d), n.to_string()),
            None => (dir.to_path_buf(), p.clone()),
        };
        if let (false, Some((pre, post))) = (
            parent.to_string_lossy().contains(MARK),
            name.split_once(MARK),
        ) {
            if let Ok(files) = std::fs::read_dir(&parent) {
                for f in files.flatten() {
                    let n = f.file_name().to_string_lossy().into_owned();
                    if let Some(v) = n
                        .strip_prefix(pre)
                        .and_then(|r| r.strip_suffix(post))
                        .filter(|v| {
                            !post.contains(MARK) && hangar_fetch::check_name("version", v).is_ok()
                        })
                    {
                        out.push(v.to_string());
                    }
                }
            }
        }
    }
    out.sort_by(|a, b| hangar_fetch::version_cmp(a, b));
    out.dedup();
    out
}

/// A failed install of a version that does not exist (the release source has
/// no such asset: `FETCH_NOT_FOUND`), told as such: the versions that exist in
/// the context and the hint. Other errors, and a version known to exist whose
/// download is missing, come back unchanged.
pub fn name_known_versions(
    e: Error,
    m: &Manifest,
    dir: &Path,
    version: &str,
    installed: &[String],
) -> Error {
    if e.code() != hangar_fetch::ErrorKind::NotFound.code() {
        return e;
    }
    let known = known_versions(m, dir, installed);
    if known.iter().any(|k| k == version) {
        return e;
    }
    let list = known.join(", ");
    let example = known.last().cloned().unwrap_or_else(|| m.version.clone());
    e.with("feature", &m.id)
        .with("version", version)
        .with("versions", &list)
        .hint(format!(
            "{} has no version {version}; versions: {list} (e.g. `hangar install {}@{example}`)",
            m.id, m.id
        ))
}
