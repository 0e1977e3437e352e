//! From a manifest, a version and a platform to the URLs of the asset, its
//! checksums and its signature: an [`InstallRequest`] for `hangar_fetch`.

use std::path::Path;

use hangar_fetch::{Checksum, InstallRequest, Signature, SignedChecksums};

use super::manifest::{Manifest, Sha256Spec, SourceKind, VerifyKind};
use crate::{Error, Result};

/// The machine a release is picked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// Canonical architecture (`amd64`, `arm64`, `armv7`, …).
    pub arch: String,
}

/// The canonical name of an architecture, from any usual spelling
/// (`x86_64`/`amd64`, `aarch64`/`arm64`, `armv7l`/`armhf`/`armv7`, …).
pub fn canonical_arch(s: &str) -> Option<&'static str> {
    Some(match s.to_ascii_lowercase().as_str() {
        "x86_64" | "amd64" | "x64" | "x86-64" => "amd64",
        "aarch64" | "arm64" | "armv8" => "arm64",
        "armv7" | "armv7l" | "armhf" | "arm" | "arm32" => "armv7",
        "i386" | "i686" | "386" | "x86" => "386",
        "riscv64" | "riscv64gc" => "riscv64",
        "ppc64le" | "powerpc64le" | "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        _ => return None,
    })
}

impl Platform {
    /// This machine.
    pub fn current() -> Platform {
        let arch = canonical_arch(std::env::consts::ARCH).unwrap_or(std::env::consts::ARCH);
        Platform {
            os: std::env::consts::OS.to_string(),
            arch: arch.to_string(),
        }
    }
}

/// Expand `{{version}}`, `{{os}}` and `{{arch}}` (spelt as the manifest's
/// `arch_names` say, else canonically).
pub fn expand(pattern: &str, m: &Manifest, version: &str, p: &Platform) -> String {
    let arch = m
        .source
        .arch_names
        .get(&p.arch)
        .cloned()
        .unwrap_or_else(|| p.arch.clone());
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut rest = pattern;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match after.find("}}") {
            Some(j) => {
                match after[..j].trim() {
                    "version" => out.push_str(version),
                    "os" => out.push_str(&p.os),
                    "arch" => out.push_str(&arch),
                    other => {
                        // Validation refuses unknown placeholders; keep them visible.
                        out.push_str("{{");
                        out.push_str(other);
                        out.push_str("}}");
                    }
                }
                rest = &after[j + 2..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The URL of a file beside `asset_url` (same directory), or `name` itself
/// when it is a full URL.
/// A path relative to the manifest's directory (or a name beside the asset)
/// that stays there once expanded: not absolute, no `..`.
fn inside(field: &str, rel: &str) -> Result<()> {
    if rel.starts_with('/') || rel.contains('\\') || rel.split('/').any(|c| c == "..") {
        return Err(Error::new(
            crate::ErrorKind::ManifestInvalid,
            format!("{rel:?} leaves the catalog once its placeholders are expanded"),
        )
        .with("field", field)
        .with("path", rel)
        .hint("asset and checksum names stay in the manifest's directory: no `..` or absolute paths, in the pattern or in what arch_names and the version put there"));
    }
    Ok(())
}

fn beside(asset_url: &str, name: &str) -> String {
    if name.contains("://") {
        return name.to_string();
    }
    match asset_url.rfind('/') {
        Some(i) => format!("{}/{}", &asset_url[..i], name),
        None => name.to_string(),
    }
}

/// The newest release's version of a `github-release` source, from the GitHub
/// API (`{api_base}/repos/{owner}/{repo}/releases/latest`), with the manifest's
/// tag pattern taken off the tag (`v1.2.3` → `1.2.3`).
pub async fn latest_version(m: &Manifest, dl: &hangar_fetch::Downloader) -> Result<String> {
    if m.source.kind != SourceKind::GithubRelease {
        return Err(Error::new(
            hangar_base::ErrorKind::Usage,
            format!(
                "{} is not a github-release source: it has no `latest`",
                m.id
            ),
        )
        .hint(format!("install a version, e.g. {}@{}", m.id, m.version)));
    }
    let base = m
        .source
        .api_base
        .as_deref()
        .unwrap_or("https://api.github.com")
        .trim_end_matches('/');
    let url = format!(
        "{base}/repos/{}/{}/releases/latest",
        m.source.owner.as_deref().unwrap_or_default(),
        m.source.repo.as_deref().unwrap_or_default()
    );
    let text = dl.fetch_text(&url, 4 << 20).await.map_err(Error::from)?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        Error::new(
            crate::ErrorKind::FetchBadResponse,
            format!("the releases API answered something else than JSON: {e}"),
        )
        .with("url", &url)
        .hint("check source.api_base")
    })?;
    let tag = v.get("tag_name").and_then(|t| t.as_str()).ok_or_else(|| {
        Error::new(
            crate::ErrorKind::FetchBadResponse,
            "the releases API answer has no tag_name",
        )
        .with("url", &url)
        .hint("check source.api_base")
    })?;
    let pattern = m.source.tag_pattern.as_deref().unwrap_or("v{{version}}");
    let (pre, post) = pattern.split_once("{{version}}").unwrap_or(("", ""));
    let version = tag.strip_prefix(pre).unwrap_or(tag);
    let version = version.strip_suffix(post).unwrap_or(version);
    hangar_fetch::check_name("version", version).map_err(|e| {
        Error::new(
            e.kind(),
            format!("latest release tag {tag:?}: {}", e.message()),
        )
        .hint("set source.tag_pattern to match the project's tags")
    })?;
    Ok(version.to_string())
}

/// Resolve what to download for `version` on `platform`.
/// `manifest_dir` anchors `file` sources.
pub fn resolve(
    m: &Manifest,
    manifest_dir: &Path,
    version: &str,
    platform: &Platform,
) -> Result<InstallRequest> {
    if !m.binary.architectures.is_empty() && !m.binary.architectures.contains(&platform.arch) {
        return Err(Error::new(
            crate::ErrorKind::FeatureUnsupportedPlatform,
            format!("{} has no release for {}/{}", m.id, platform.os, platform.arch),
        )
        .with("architectures", m.binary.architectures.join(", "))
        .hint("pick another feature, or add the architecture to the manifest if upstream publishes it"));
    }
    // Placeholders (the version asked for, `arch_names`) are expanded before
    // the containment checks, so no value can lead a path out of the catalog.
    let x = |s: &str| expand(s, m, version, platform);
    let asset_expanded = x(&m.source.asset_pattern);
    if m.source.kind == SourceKind::File {
        inside("/source/asset_pattern", &asset_expanded)?;
    }
    let (url, asset) = match m.source.kind {
        SourceKind::GithubRelease => {
            let base = m
                .source
                .download_base
                .as_deref()
                .unwrap_or("https://github.com")
                .trim_end_matches('/');
            let tag = x(m.source.tag_pattern.as_deref().unwrap_or("v{{version}}"));
            let owner = m.source.owner.as_deref().unwrap_or_default();
            let repo = m.source.repo.as_deref().unwrap_or_default();
            (
                format!("{base}/{owner}/{repo}/releases/download/{tag}/{asset_expanded}"),
                asset_expanded.clone(),
            )
        }
        SourceKind::Url => {
            let name = asset_expanded
                .rsplit('/')
                .next()
                .unwrap_or(&asset_expanded)
                .split(['?', '#'])
                .next()
                .unwrap_or_default()
                .to_string();
            (asset_expanded.clone(), name)
        }
        SourceKind::File => {
            let path = manifest_dir.join(&asset_expanded);
            let abs = std::path::absolute(&path).unwrap_or(path);
            let url = reqwest::Url::from_file_path(&abs).map_err(|()| {
                Error::new(
                    crate::ErrorKind::ManifestInvalid,
                    format!("cannot make a file URL of {}", abs.display()),
                )
                .hint("file sources are paths relative to the manifest's directory")
            })?;
            let name = abs
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (url.to_string(), name)
        }
    };
    let v = &m.source.verification;
    // Files named beside the asset stay beside it.
    for name in [
        v.checksums_asset.as_deref(),
        v.checksums_openpgp
            .as_ref()
            .and_then(|p| p.signature_asset.as_deref()),
    ]
    .into_iter()
    .flatten()
    {
        if !name.contains("://") {
            inside("/source/verification", &x(name))?;
        }
    }
    // A checksums file, OpenPGP-signed when the manifest pins a signer.
    let sums = |c: &str| {
        let url_of = beside(&url, &x(c));
        match &v.checksums_openpgp {
            Some(pgp) => Checksum::SignedFile(SignedChecksums {
                signature_url: match &pgp.signature_asset {
                    Some(s) => beside(&url, &x(s)),
                    None => format!("{url_of}.asc"),
                },
                url: url_of,
                public_key: pgp.public_key.clone(),
                fingerprint: pgp.fingerprint.clone(),
            }),
            None => Checksum::File(url_of),
        }
    };
    // GitHub's own digest of the asset, from the release's API answer.
    let github = match (v.github_digest, m.source.kind) {
        (true, SourceKind::GithubRelease) => {
            let base = m
                .source
                .api_base
                .as_deref()
                .unwrap_or("https://api.github.com")
                .trim_end_matches('/');
            let tag = x(m.source.tag_pattern.as_deref().unwrap_or("v{{version}}"));
            Some(Checksum::GithubRelease(format!(
                "{base}/repos/{}/{}/releases/tags/{tag}",
                m.source.owner.as_deref().unwrap_or_default(),
                m.source.repo.as_deref().unwrap_or_default()
            )))
        }
        _ => None,
    };
    let pin = v
        .pinned
        .get(version)
        .and_then(|p| p.get(&format!("{}-{}", platform.os, platform.arch)));
    let checksum = match (v.kind, pin) {
        (VerifyKind::None, _) => None,
        // A pin for this version and platform is the strongest: it wins.
        (VerifyKind::Sha256, Some(h)) => Some(Checksum::Pinned(h.clone())),
        (VerifyKind::Sha256, None) => match (&v.sha256, &v.checksums_asset) {
            (Some(spec), _) if version == m.version => {
                let hex = match spec {
                    Sha256Spec::One(h) => Some(h.clone()),
                    Sha256Spec::PerArch(map) => map.get(&platform.arch).cloned(),
                };
                match (hex, &v.checksums_asset, github) {
                    (Some(h), _, _) => Some(Checksum::Sha256(h)),
                    (None, Some(c), _) => Some(sums(c)),
                    (None, None, Some(g)) => Some(g),
                    (None, None, None) => {
                        return Err(Error::new(
                            hangar_fetch::ErrorKind::ChecksumMissing,
                            format!("the manifest has no sha256 for {}", platform.arch),
                        )
                        .hint("add the digest for this architecture to source.verification.sha256"))
                    }
                }
            }
            (_, Some(c)) => Some(sums(c)),
            (_, None) if github.is_some() => github,
            (Some(_), None) => {
                return Err(Error::new(
                    hangar_fetch::ErrorKind::ChecksumMissing,
                    format!(
                        "the manifest's sha256 is for version {}, not {version}, and it names no checksums file",
                        m.version
                    ),
                )
                .hint(format!("install {}@{} or add source.verification.checksums_asset", m.id, m.version)))
            }
            (None, None) => None,
        },
    };
    let signature = v.minisign_public_key.as_ref().map(|key| Signature {
        public_key: key.clone(),
        url: match &v.signature_asset {
            Some(s) => beside(&url, &x(s)),
            None => format!("{url}.minisig"),
        },
    });
    Ok(InstallRequest {
        id: m.id.clone(),
        version: version.to_string(),
        url,
        asset,
        checksum,
        signature,
        binary: x(&m.binary.path),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::manifest::from_value;

    fn linux(arch: &str) -> Platform {
        Platform {
            os: "linux".into(),
            arch: arch.into(),
        }
    }

    #[test]
    fn aliases() {
        assert_eq!(canonical_arch("x86_64"), Some("amd64"));
        assert_eq!(canonical_arch("aarch64"), Some("arm64"));
        assert_eq!(canonical_arch("armv7l"), Some("armv7"));
        assert_eq!(canonical_arch("sparc"), None);
    }

    /// A `file` source cannot leave its catalog through what placeholders
    /// put in the path: `arch_names`, the version asked for, or the checksums
    /// file's name.
    #[test]
    fn expanded_paths_stay_in_the_catalog() {
        let m = |arch: &str, sums: &str| {
            from_value(serde_json::json!({
                "id": "demo", "name": "Demo", "version": "1.0.0",
                "source": {
                    "type": "file",
                    "asset_pattern": "releases/{{arch}}/demo-{{version}}.tar.gz",
                    "arch_names": { "amd64": arch },
                    "verification": { "type": "sha256", "checksums_asset": sums }
                },
                "binary": { "path": "demo" }
            }))
            .expect("the manifest itself is valid")
        };
        let dir = Path::new("/cat/demo");
        let ok = resolve(
            &m("x86_64", "sums-{{arch}}.txt"),
            dir,
            "1.0.0",
            &linux("amd64"),
        );
        assert!(ok.is_ok(), "{ok:?}");
        for (manifest, version) in [
            (m("../../../../etc", "sums.txt"), "1.0.0"),
            (m("x86_64", "sums.txt"), "../../../../../etc/passwd#"),
            (m("x86_64", "../{{arch}}/../../sums.txt"), "1.0.0"),
        ] {
            let e = resolve(&manifest, dir, version, &linux("amd64")).unwrap_err();
            assert_eq!(e.code(), "MANIFEST_INVALID", "{e:?}");
            assert!(e.message.contains("leaves the catalog"), "{e:?}");
        }
    }

    #[test]
    fn url_source_with_sibling_checksums() {
        let m = from_value(serde_json::json!({
            "id": "demo", "name": "Demo", "version": "1.0.0",
            "source": {
                "type": "url",
                "asset_pattern": "http://127.0.0.1:8000/demo-{{version}}-{{os}}-{{arch}}.tar.gz",
                "verification": { "type": "sha256", "checksums_asset": "checksums.txt" }
            },
            "binary": { "path": "demo" }
        }))
        .unwrap();
        let r = resolve(&m, Path::new("/cat/demo"), "1.2.0", &linux("arm64")).unwrap();
        assert_eq!(r.url, "http://127.0.0.1:8000/demo-1.2.0-linux-arm64.tar.gz");
        assert_eq!(r.asset, "demo-1.2.0-linux-arm64.tar.gz");
        assert_eq!(
            r.checksum,
            Some(Checksum::File("http://127.0.0.1:8000/checksums.txt".into()))
        );
    }

    #[test]
    fn github_release_with_arch_names_and_base() {
        let m = from_value(serde_json::json!({
            "id": "x", "name": "X", "version": "2.0.0",
            "source": {
                "type": "github-release", "owner": "o", "repo": "r",
                "download_base": "http://127.0.0.1:9/",
                "asset_pattern": "x-{{os}}-{{arch}}.zip",
                "arch_names": { "amd64": "64" },
                "verification": { "type": "sha256", "checksums_asset": "{{version}}.sums",
                                  "minisign_public_key": "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3" }
            },
            "binary": { "path": "x-{{version}}/x" }
        }))
        .unwrap();
        let r = resolve(&m, Path::new("/"), "2.0.0", &linux("amd64")).unwrap();
        assert_eq!(
            r.url,
            "http://127.0.0.1:9/o/r/releases/download/v2.0.0/x-linux-64.zip"
        );
        assert_eq!(
            r.checksum,
            Some(Checksum::File(
                "http://127.0.0.1:9/o/r/releases/download/v2.0.0/2.0.0.sums".into()
            ))
        );
        assert_eq!(r.signature.unwrap().url, format!("{}.minisig", r.url));
        assert_eq!(r.binary, "x-2.0.0/x");
    }

    #[test]
    fn manifest_digest_only_for_its_version_and_arch() {
        let m = from_value(serde_json::json!({
            "id": "p", "name": "P", "version": "1.0",
            "source": { "type": "file", "asset_pattern": "p-{{arch}}",
                        "verification": { "type": "sha256", "sha256": { "amd64": "a".repeat(64) } } },
            "binary": { "path": "p", "architectures": ["amd64", "arm64"] }
        }))
        .unwrap();
        let ok = resolve(&m, Path::new("/c/p"), "1.0", &linux("amd64")).unwrap();
        assert_eq!(ok.checksum, Some(Checksum::Sha256("a".repeat(64))));
        assert!(ok.url.starts_with("file:///c/p/p-amd64"));
        let e = resolve(&m, Path::new("/c/p"), "1.0", &linux("arm64")).unwrap_err();
        assert_eq!(e.code(), "VERIFY_CHECKSUM_MISSING");
        let e = resolve(&m, Path::new("/c/p"), "2.0", &linux("amd64")).unwrap_err();
        assert_eq!(e.code(), "VERIFY_CHECKSUM_MISSING");
        let e = resolve(&m, Path::new("/c/p"), "1.0", &linux("riscv64")).unwrap_err();
        assert_eq!(e.code(), "FEATURE_UNSUPPORTED_PLATFORM");
    }

    #[test]
    fn a_pin_wins_then_checksums_then_github_digest() {
        let m = from_value(serde_json::json!({
            "id": "sb", "name": "SB", "version": "1.2.0",
            "source": {
                "type": "github-release", "owner": "o", "repo": "r",
                "api_base": "http://127.0.0.1:9/api/",
                "asset_pattern": "sb-{{version}}-{{os}}-{{arch}}.tar.gz",
                "verification": { "type": "sha256", "github_digest": true,
                                  "pinned": { "1.1.0": { "linux-amd64": "b".repeat(64) } } }
            },
            "binary": { "path": "sb", "architectures": ["amd64", "arm64"] }
        }))
        .unwrap();
        let pinned = resolve(&m, Path::new("/"), "1.1.0", &linux("amd64")).unwrap();
        assert_eq!(pinned.checksum, Some(Checksum::Pinned("b".repeat(64))));
        // Another platform, or another version: GitHub's digest for its tag.
        for (v, arch) in [("1.1.0", "arm64"), ("1.2.0", "amd64")] {
            let r = resolve(&m, Path::new("/"), v, &linux(arch)).unwrap();
            assert_eq!(
                r.checksum,
                Some(Checksum::GithubRelease(format!(
                    "http://127.0.0.1:9/api/repos/o/r/releases/tags/v{v}"
                ))),
                "{v} {arch}"
            );
        }
    }

    #[test]
    fn a_signed_checksums_file_names_its_signature() {
        let key = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n...\n-----END PGP PUBLIC KEY BLOCK-----";
        let mut v = serde_json::json!({
            "id": "t", "name": "T", "version": "1.0",
            "source": { "type": "url",
                        "asset_pattern": "https://example.invalid/{{version}}/t-{{arch}}.tar.gz",
                        "verification": { "type": "sha256", "checksums_asset": "sums.txt",
                                          "checksums_openpgp": { "fingerprint": "A".repeat(40), "public_key": key } } },
            "binary": { "path": "t" }
        });
        // A key that does not parse is a problem of the manifest, named.
        let e = from_value(v.clone()).unwrap_err();
        assert!(
            e.iter()
                .any(|p| p.pointer == "/source/verification/checksums_openpgp/public_key"),
            "{e:?}"
        );
        // Resolution itself only builds the URLs (the key is checked at install).
        v["source"]["verification"]["checksums_openpgp"]["signature_asset"] =
            serde_json::json!("sums-{{version}}.asc");
        let m: Manifest = serde_json::from_value(v).unwrap();
        let r = resolve(&m, Path::new("/"), "1.0", &linux("amd64")).unwrap();
        match r.checksum {
            Some(Checksum::SignedFile(sc)) => {
                assert_eq!(sc.url, "https://example.invalid/1.0/sums.txt");
                assert_eq!(sc.signature_url, "https://example.invalid/1.0/sums-1.0.asc");
                assert_eq!(sc.fingerprint, "A".repeat(40));
            }
            other => panic!("{other:?}"),
        }
    }
}
