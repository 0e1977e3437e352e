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
