//! Installs on disk: `{root}/{id}/{version}/…`, written in a staging directory
//! and moved in with one `rename`, a `current` symlink switched atomically
//! (a new link renamed over the old), earlier versions kept for rollback.
//!
//! One install per feature at a time: inside a process a second request for
//! the same version joins the first (one download); another version, or
//! another process (an `flock` on `{root}/{id}/.lock`), is refused with
//! `FETCH_IN_PROGRESS`. Interrupted downloads stay as `.part` files under
//! `{root}/{id}/.downloads/` and resume on the next try; a checksum or
//! signature failure deletes them.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::download::{Downloader, Progress};
use crate::error::{Error, ErrorKind, Result};
use crate::extract::{self, Format, Limits};
use crate::verify;

/// Where the expected digest comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    /// A digest given by the manifest (64 hex digits).
    Sha256(String),
    /// A digest pinned in the manifest for this version and platform: a
    /// mismatch means the asset changed since it was pinned.
    Pinned(String),
    /// A checksums file (GNU `sha256sum` format) at this URL, with a line for the asset.
    File(String),
    /// A checksums file whose detached OpenPGP signature, by the pinned key,
    /// is verified before any line of it is used.
    SignedFile(SignedChecksums),
    /// The asset's `digest` in the GitHub release at this API URL
    /// (`…/repos/{owner}/{repo}/releases/tags/{tag}`).
    GithubRelease(String),
}

/// A checksums file signed with OpenPGP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedChecksums {
    /// URL of the checksums file.
    pub url: String,
    /// URL of its detached, armored signature (`.asc`).
    pub signature_url: String,
    /// The signer's armored public key.
    pub public_key: String,
    /// Its primary key's fingerprint.
    pub fingerprint: String,
}

/// A minisign signature to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The public key (base64, the second line of `minisign.pub`).
    pub public_key: String,
    /// URL of the `.minisig` file.
    pub url: String,
}

/// Everything needed to install one version of one feature, resolved from a
/// manifest by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallRequest {
    /// Feature id (a directory name).
    pub id: String,
    /// Version (a directory name).
    pub version: String,
    /// URL of the release asset.
    pub url: String,
    /// The asset's file name (decides the archive format; the name looked up in
    /// a checksums file).
    pub asset: String,
    /// Expected digest; `None` installs unverified (the caller decides whether
    /// that is allowed).
    pub checksum: Option<Checksum>,
    /// Signature to verify, if the manifest declares a key.
    pub signature: Option<Signature>,
    /// The binary's path inside the install (made executable; must exist).
    pub binary: String,
}

/// What happens during an install, for progress displays and events.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Downloading the asset.
    Download(Progress),
    /// Checking the digest (and signature).
    Verify,
    /// Extracting into staging.
    Extract,
    /// Moved in and made current.
    Installed,
}

/// The record kept beside each installed version (`.hangar-install.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    /// Feature id.
    pub id: String,
    /// Version.
    pub version: String,
    /// Its directory.
    pub dir: PathBuf,
    /// The binary's absolute path.
    pub binary: PathBuf,
    /// Where it came from.
    pub url: String,
    /// SHA-256 of the downloaded asset.
    pub sha256: String,
    /// Whether a digest was checked.
    pub verified: bool,
    /// Whether a signature was checked.
    pub signed: bool,
    /// Bytes extracted.
    pub bytes: u64,
    /// When (Unix seconds).
    pub installed_at: u64,
    /// Whether `current` points here (filled in when listing).
    #[serde(default)]
    pub current: bool,
}

const RECORD: &str = ".hangar-install.json";

/// Validates an id or version for use as one directory name.
pub fn check_name(what: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'));
    if ok {
        Ok(())
    } else {
        Err(
            Error::new(ErrorKind::InvalidName, format!("invalid {what} {s:?}")).hint(
                "use letters, digits, '.', '_', '-', '+' (not starting with '.'), at most 128",
            ),
        )
    }
}

type Outcome = Option<std::result::Result<Installed, Error>>;
/// Installs in flight: feature id → (version, where its outcome will appear).
type Inflight = Arc<Mutex<HashMap<String, (String, watch::Receiver<Outcome>)>>>;

/// Installs and uninstalls feature versions under one root.
#[derive(Clone)]
pub struct Installer {
    root: PathBuf,
    downloader: Downloader,
    limits: Limits,
    inflight: Inflight,
}

/// Takes a feature out of the in-flight map when its install ends, however it
/// ends: a result, an error, a panic, or the caller dropping the future (which
/// would otherwise leave the feature "being installed" until the process exits).
struct InflightGuard<'a> {
    map: &'a Inflight,
    id: &'a str,
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(self.id);
    }
}

/// Removes a directory when dropped, unless disarmed.
struct Cleanup(Option<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir_all(&p);
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Installer {
    /// An installer for `root` (e.g. `{data}/features`).
    pub fn new(root: impl Into<PathBuf>, downloader: Downloader) -> Installer {
        Installer {
            root: root.into(),
            downloader,
            limits: Limits::default(),
            inflight: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Change the extraction limits.
    pub fn with_limits(mut self, limits: Limits) -> Installer {
        self.limits = limits;
        self
    }

    /// The downloader it uses (for other fetches under the same policy, such
    /// as asking a releases API for the newest version).
    pub fn downloader(&self) -> &Downloader {
        &self.downloader
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of one version.
    pub fn version_dir(&self, id: &str, version: &str) -> PathBuf {
        self.root.join(id).join(version)
    }

    /// Install a version and make it current. A version already installed is
    /// only made current. Concurrent requests: see the module docs.
    pub async fn install(
        &self,
        req: InstallRequest,
        on_step: &(dyn Fn(&Step) + Send + Sync),
    ) -> Result<Installed> {
        check_name("feature id", &req.id)?;
        check_name("version", &req.version)?;
        check_binary_path(&req.binary)?;
        // Join an install of the same version in flight, or refuse another one.
        let (tx, joined) = {
            let mut map = self.inflight.lock().map_err(|_| poisoned())?;
            match map.get(&req.id) {
                Some((v, rx)) if *v == req.version => (None, Some(rx.clone())),
                Some((v, _)) => {
                    return Err(Error::new(
                        ErrorKind::InProgress,
                        format!("{} {v} is being installed right now", req.id),
                    )
                    .with("feature", &req.id)
                    .hint("wait for it to finish, then install the other version"))
                }
                None => {
                    let (tx, rx) = watch::channel(None);
                    map.insert(req.id.clone(), (req.version.clone(), rx));
                    (Some(tx), None)
                }
            }
        };
        if let Some(mut rx) = joined {
            let r = rx
                .wait_for(|o| o.is_some())
                .await
                .map_err(|_| Error::new(ErrorKind::Io, "the install being joined was cancelled"))?;
            return match r.clone() {
                Some(r) => r,
                None => Err(Error::new(
                    ErrorKind::Io,
                    "the install being joined ended without a result",
                )),
            };
        }
        let guard = InflightGuard {
            map: &self.inflight,
            id: &req.id,
        };
        let res = self.install_now(&req, on_step).await;
        if res.is_err() {
            let (this, id) = (self.clone(), req.id.clone());
            let _ = tokio::task::spawn_blocking(move || this.tidy(&id)).await;
        }
        drop(guard);
        if let Some(tx) = tx {
            let _ = tx.send(Some(res.clone()));
        }
        res
    }

    async fn install_now(
        &self,
        req: &InstallRequest,
        on_step: &(dyn Fn(&Step) + Send + Sync),
    ) -> Result<Installed> {
        let feature_dir = self.root.join(&req.id);
        std::fs::create_dir_all(feature_dir.join(".downloads"))
            .map_err(|e| Error::io("cannot create the feature directory", &feature_dir, e))?;
        let _lock = {
            let (fd, id) = (feature_dir.clone(), req.id.clone());
            blocking(move || {
                let l = lock(&fd, &id)?;
                // Under the lock no install of this feature runs: what a
                // crashed one left is only in the way.
                sweep(&fd);
                Ok(l)
            })
            .await?
        };
        let final_dir = feature_dir.join(&req.version);
        if let Some(mut rec) = read_record(&final_dir) {
            let (fd, ver) = (feature_dir.clone(), req.version.clone());
            blocking(move || switch_current(&fd, &ver)).await?;
            rec.current = true;
            on_step(&Step::Installed);
            return Ok(rec);
        }

        // The asset name comes from a manifest: keep it to one file name.
        let part_name: String = format!("{}-{}.part", req.version, req.asset)
            .chars()
            .map(|c| if c == '/' || c == '\0' { '_' } else { c })
            .collect();
        let part = feature_dir.join(".downloads").join(part_name);
        let dl = self
            .downloader
            .fetch_to(&req.url, &part, &|p: &Progress| {
                on_step(&Step::Download(p.clone()))
            })
            .await?;
        hangar_base::crash_point!(
            "install.downloaded",
            &[format!("{}@{}", req.id, req.version)]
        );

        on_step(&Step::Verify);
        let discard = |e: Error| {
            let _ = std::fs::remove_file(&part);
            e
        };
        let mut signed_sums = false;
        let verified = match &req.checksum {
            None => false,
            Some(Checksum::Sha256(hex)) | Some(Checksum::Pinned(hex)) => {
                let pinned = matches!(req.checksum, Some(Checksum::Pinned(_)));
                let want = verify::parse_sha256(hex).ok_or_else(|| {
                    Error::new(
                        ErrorKind::ChecksumInvalid,
                        format!("the manifest's sha256 {hex:?} is not 64 hex digits"),
                    )
                    .hint("fix the manifest")
                });
                verify::check_sha256(&want.map_err(discard)?, &dl.sha256, &req.asset)
                    .map_err(|e| {
                        let e = e.with("asset", &req.asset).with("url", &req.url);
                        discard(if pinned {
                            e.with("expected_from", "the digest pinned in the manifest")
                                .hint("the asset is not the one the manifest pinned for this version and platform: it was replaced upstream after release, or a mirror serves something else. It was deleted and nothing was installed; do not install it until the publisher explains the change, then update the pin")
                        } else {
                            e.with("expected_from", "the manifest")
                        })
                    })?;
                true
            }
            Some(Checksum::File(url)) => {
                let text = self.downloader.fetch_text(url, 1 << 20).await?;
                let want = verify::find_in_checksums(&text, &req.asset)
                    .map_err(|e| e.with("checksums", url))?;
                verify::check_sha256(&want, &dl.sha256, &req.asset).map_err(|e| {
                    discard(
                        e.with("asset", &req.asset)
                            .with("url", &req.url)
                            .with("expected_from", url),
                    )
                })?;
                true
            }
            Some(Checksum::SignedFile(sc)) => {
                let text = self.downloader.fetch_text(&sc.url, 1 << 20).await?;
                let sig = self
                    .downloader
                    .fetch_text(&sc.signature_url, 256 << 10)
                    .await?;
                let (t, k, f) = (text.clone(), sc.public_key.clone(), sc.fingerprint.clone());
                // RSA verification is CPU work: off the async threads.
                blocking(move || verify::verify_openpgp(t.as_bytes(), &sig, &k, &f))
                    .await
                    .map_err(|e| {
                        discard(
                            e.with("checksums", &sc.url)
                                .with("signature", &sc.signature_url),
                        )
                    })?;
                let want = verify::find_in_checksums(&text, &req.asset)
                    .map_err(|e| e.with("checksums", &sc.url))?;
                verify::check_sha256(&want, &dl.sha256, &req.asset).map_err(|e| {
                    discard(
                        e.with("asset", &req.asset)
                            .with("url", &req.url)
                            .with("expected_from", &sc.url),
                    )
                })?;
                signed_sums = true;
                true
            }
            Some(Checksum::GithubRelease(api)) => {
                let text = self.downloader.fetch_text(api, 4 << 20).await?;
                let want = verify::find_in_github_release(&text, &req.asset)
                    .map_err(|e| e.with("release", api))?;
                verify::check_sha256(&want, &dl.sha256, &req.asset).map_err(|e| {
                    discard(
                        e.with("asset", &req.asset)
                            .with("url", &req.url)
                            .with("expected_from", format!("GitHub's digest at {api}")),
                    )
                })?;
                true
            }
        };
        let signed = signed_sums
            || match &req.signature {
                None => false,
                Some(sig) => {
                    let text = self.downloader.fetch_text(&sig.url, 64 << 10).await?;
                    let (p, key) = (part.clone(), sig.public_key.clone());
                    blocking(move || verify::verify_minisign(&p, &key, &text))
                        .await
                        .map_err(|e| discard(e.with("signature", &sig.url)))?;
                    true
                }
            };

        hangar_base::crash_point!("install.verified", &[format!("{}@{}", req.id, req.version)]);

        on_step(&Step::Extract);
        let staging = feature_dir.join(format!(
            ".staging-{}-{}-{:08x}",
            req.version,
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir(&staging)
            .map_err(|e| Error::io("cannot create the staging directory", &staging, e))?;
        let mut cleanup = Cleanup(Some(staging.clone()));
        let (p, st, bin, limits) = (
            part.clone(),
            staging.clone(),
            req.binary.clone(),
            self.limits,
        );
        let format = Format::from_name(&req.asset);
        let plain_name = Path::new(&req.binary)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| req.binary.clone());
        let extracted = blocking(move || {
            let out = extract::extract(&p, format, &st, &plain_name, limits)?;
            let bin_path = if format == Format::Plain {
                st.join(&plain_name)
            } else {
                st.join(&bin)
            };
            let meta = std::fs::symlink_metadata(&bin_path)
                .ok()
                .filter(|m| m.is_file());
            if meta.is_none() {
                return Err(Error::new(
                    ErrorKind::BinaryMissing,
                    format!("the archive has no file {bin:?} (the manifest's binary.path)"),
                )
                .hint("fix binary.path in the manifest to the binary's path inside the archive"));
            }
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&bin_path, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| Error::io("cannot make the binary executable", &bin_path, e))?;
            Ok(out)
        })
        .await
        // The download is complete: a part that does not extract would only
        // fail the same way on the next try (416 → "already complete").
        .map_err(discard)?;
        hangar_base::crash_point!(
            "install.extracted",
            &[format!("{}@{}", req.id, req.version)]
        );

        let binary = if format == Format::Plain {
            final_dir.join(
                Path::new(&req.binary)
                    .file_name()
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from(&req.binary)),
            )
        } else {
            final_dir.join(&req.binary)
        };
        let rec = Installed {
            id: req.id.clone(),
            version: req.version.clone(),
            dir: final_dir.clone(),
            binary,
            url: req.url.clone(),
            sha256: verify::hex(&dl.sha256),
            verified,
            signed,
            bytes: extracted.bytes,
            installed_at: now_secs(),
            current: true,
        };
        let json = serde_json::to_vec_pretty(&rec)
            .map_err(|e| Error::new(ErrorKind::Io, e.to_string()))?;
        // Record, fsync, rename into place, switch `current`: file-system work,
        // off the async threads.
        let (st, fin, fd, p) = (
            staging.clone(),
            final_dir.clone(),
            feature_dir.clone(),
            part.clone(),
        );
        // The crash points' context: which install this is.
        #[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
        let what = format!("{}@{}", req.id, req.version);
        // From here the blocking job owns the staging directory (and removes
        // it on failure): a caller that drops this future mid-way must not have
        // the guard delete the tree while the job renames it into place.
        cleanup.0 = None;
        let ver = req.version.clone();
        blocking(move || {
            // The new `current` link is made before the version moves in: a
            // crash after the move finds it pointing at a whole version and
            // completes the switch (`sweep`); one before finds it pointing
            // at nothing and removes it. The download is spent once the
            // extraction succeeded: removed before the move, so an installed
            // version never leaves a `.part` behind.
            let finish = || {
                let rec_path = st.join(RECORD);
                std::fs::write(&rec_path, json)
                    .map_err(|e| Error::io("cannot write the install record", &rec_path, e))?;
                sync_dir(&st);
                let link = new_current(&fd, &ver)?;
                let _ = std::fs::remove_file(&p);
                if let Err(e) = std::fs::rename(&st, &fin) {
                    let _ = std::fs::remove_file(&link);
                    return Err(Error::io("cannot move the install in place", &fin, e));
                }
                Ok(link)
            };
            let link = match finish() {
                Ok(l) => l,
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&st);
                    return Err(e);
                }
            };
            sync_dir(&fd);
            hangar_base::crash_point!("install.moved", &[&what]);
            make_current(&fd, &link)
        })
        .await?;
        hangar_base::crash_point!("install.switched", &[format!("{}@{}", req.id, req.version)]);
        on_step(&Step::Installed);
        Ok(rec)
    }

    /// At a start after a crash: in every feature's directory, what an
    /// install, switch or uninstall that was cut short left is taken away
    /// or completed (see [`sweep`]), and a feature left with no version and
    /// no download to resume loses its directory. A feature another process
    /// is installing right now is left alone. Returns the features whose
    /// directory had something to clear.
    pub fn recover(&self) -> Vec<String> {
        let mut out = Vec::new();
        let Ok(ids) = std::fs::read_dir(&self.root) else {
            return out;
        };
        for e in ids.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if check_name("feature id", &id).is_err() || !e.path().is_dir() {
                continue;
            }
            let dir = e.path();
            let Ok(l) = lock(&dir, &id) else { continue };
            if sweep(&dir) {
                out.push(id.clone());
            }
            drop(l);
            self.tidy(&id);
        }
        out
    }

    /// After a failed install: a feature with no version and no partial
    /// download to resume leaves no directory behind.
    fn tidy(&self, id: &str) {
        let dir = self.root.join(id);
        if !dir.is_dir() {
            return;
        }
        let Ok(_lock) = lock(&dir, id) else { return };
        let downloads_empty =
            std::fs::read_dir(dir.join(".downloads")).map_or(true, |mut d| d.next().is_none());
        let has_version = self.versions(id).is_ok_and(|v| !v.is_empty());
        if downloads_empty && !has_version {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// Every installed version, by id then version.
    pub fn list(&self) -> Result<Vec<Installed>> {
        let mut out = Vec::new();
        let Ok(ids) = std::fs::read_dir(&self.root) else {
            return Ok(out);
        };
        for id in ids.flatten() {
            let name = id.file_name().to_string_lossy().into_owned();
            if name.starts_with('.')
                || !id.path().is_dir()
                || check_name("feature id", &name).is_err()
            {
                continue;
            }
            out.extend(self.versions(&name)?);
        }
        out.sort_by(|a, b| {
            a.id.cmp(&b.id)
                .then_with(|| version_cmp(&a.version, &b.version))
        });
        Ok(out)
    }

    /// Installed versions of one feature, oldest first.
    pub fn versions(&self, id: &str) -> Result<Vec<Installed>> {
        check_name("feature id", id)?;
        let dir = self.root.join(id);
        let current = current_version(&dir);
        let mut out = Vec::new();
        if let Ok(vs) = std::fs::read_dir(&dir) {
            for v in vs.flatten() {
                let name = v.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') || name == "current" {
                    continue;
                }
                if let Some(mut rec) = read_record(&v.path()) {
                    rec.current = current.as_deref() == Some(name.as_str());
                    out.push(rec);
                }
            }
        }
        out.sort_by(|a, b| version_cmp(&a.version, &b.version));
        Ok(out)
    }

    /// Remove one version (or, with `None`, every version) of a feature.
    /// Refused while a process runs from it. When the current version goes,
    /// `current` moves to the newest one left. Returns the versions removed.
    pub fn uninstall(&self, id: &str, version: Option<&str>) -> Result<Vec<String>> {
        check_name("feature id", id)?;
        if let Some(v) = version {
            check_name("version", v)?;
        }
        let feature_dir = self.root.join(id);
        if !feature_dir.is_dir() {
            // Not installed; and locking would create the directory.
            return Err(not_installed(id, version, &[]));
        }
        let _lock = lock(&feature_dir, id)?;
        let all = self.versions(id)?;
        let targets: Vec<Installed> = match version {
            Some(v) => {
                let t: Vec<Installed> = all.iter().filter(|r| r.version == v).cloned().collect();
                if t.is_empty() {
                    return Err(not_installed(id, Some(v), &all));
                }
                t
            }
            None if all.is_empty() => return Err(not_installed(id, None, &all)),
            None => all.clone(),
        };
        for t in &targets {
            if let Some((pid, what)) = in_use(&t.dir) {
                return Err(Error::new(
                    ErrorKind::InUse,
                    format!("{id} {} is in use by process {pid} ({what})", t.version),
                )
                .with("dir", t.dir.display())
                .hint("stop the processes that run it first (`hangar ps`), then uninstall"));
            }
        }
        let mut removed = Vec::new();
        for t in &targets {
            // Rename first so a half-removed tree never looks installed.
            let trash = feature_dir.join(format!(".trash-{}-{:08x}", t.version, fastrand::u32(..)));
            std::fs::rename(&t.dir, &trash)
                .map_err(|e| Error::io("cannot remove the version", &t.dir, e))?;
            let _ = std::fs::remove_dir_all(&trash);
            removed.push(t.version.clone());
        }
        let left: Vec<&Installed> = all
            .iter()
            .filter(|r| !removed.contains(&r.version))
            .collect();
        match left.last() {
            Some(newest) if current_version(&feature_dir).is_none_or(|c| removed.contains(&c)) => {
                switch_current(&feature_dir, &newest.version)?;
            }
            Some(_) => {}
            None => {
                let _ = std::fs::remove_dir_all(&feature_dir);
            }
        }
        Ok(removed)
    }
}

fn not_installed(id: &str, version: Option<&str>, all: &[Installed]) -> Error {
    let what = match version {
        Some(v) => format!("{id} {v} is not installed"),
        None => format!("{id} is not installed"),
    };
    let have: Vec<&str> = all.iter().map(|r| r.version.as_str()).collect();
    let mut e = Error::new(ErrorKind::NotInstalled, what)
        .hint("`hangar installed` lists what is installed");
    if !have.is_empty() {
        e = e.with("installed", have.join(", "));
    }
    e
}

/// The manifest's binary path: relative, inside the install (no `..`).
fn check_binary_path(binary: &str) -> Result<()> {
    let p = Path::new(binary);
    let ok = !binary.is_empty()
        && p.components()
            .any(|c| matches!(c, std::path::Component::Normal(_)))
        && p.components().all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        });
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidName,
            format!("invalid binary path {binary:?}"),
        )
        .hint("binary.path is a relative path inside the archive, without `..`"))
    }
}

fn poisoned() -> Error {
    Error::new(
        ErrorKind::Io,
        "installer state poisoned by an earlier panic",
    )
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("blocking task failed: {e}")))?
}

/// Tries at taking a feature's lock: 5, 10, 20, 40, then 80 ms apart, about
/// 2 s in all.
const LOCK_TRIES: u32 = 28;

fn lock(feature_dir: &Path, id: &str) -> Result<OwnedFd> {
    use rustix::fs::{flock, open, FlockOperation, Mode, OFlags};
    std::fs::create_dir_all(feature_dir)
        .map_err(|e| Error::io("cannot create the feature directory", feature_dir, e))?;
    let path = feature_dir.join(".lock");
    let fd = open(
        &path,
        OFlags::CREATE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| Error::io("cannot open the lock file", &path, e.into()))?;
    // A held lock may be only a moment's: a child the daemon forks (to exec
    // a supervised process) shares our descriptor until its exec closes it,
    // and on a loaded machine a forked child may wait well over 100 ms to
    // run. Look again for up to 2 s before calling it another installer's.
    for attempt in 0..LOCK_TRIES {
        if flock(&fd, FlockOperation::NonBlockingLockExclusive).is_ok() {
            return Ok(fd);
        }
        if attempt + 1 < LOCK_TRIES {
            std::thread::sleep(std::time::Duration::from_millis(5 << attempt.min(4)));
        }
    }
    Err(Error::new(
        ErrorKind::InProgress,
        format!("another process is installing or removing {id}"),
    )
    .with("lock", path.display())
    .hint("wait for it to finish and try again"))
}

fn read_record(dir: &Path) -> Option<Installed> {
    let bytes = std::fs::read(dir.join(RECORD)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn current_version(feature_dir: &Path) -> Option<String> {
    std::fs::read_link(feature_dir.join("current"))
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
}

/// Point `current` at `version`: a new symlink renamed over the old one, so a
/// reader sees the old target or the new one, never none.
fn switch_current(feature_dir: &Path, version: &str) -> Result<()> {
    let tmp = new_current(feature_dir, version)?;
    make_current(feature_dir, &tmp)
}

/// The link that will become `current` (`.current-*`, pointing at `version`),
/// not yet in place.
fn new_current(feature_dir: &Path, version: &str) -> Result<PathBuf> {
    let tmp = feature_dir.join(format!(".current-{:08x}", fastrand::u32(..)));
    std::os::unix::fs::symlink(version, &tmp)
        .map_err(|e| Error::io("cannot create the current link", &tmp, e))?;
    Ok(tmp)
}

/// Rename a link made by [`new_current`] over `current`.
fn make_current(feature_dir: &Path, tmp: &Path) -> Result<()> {
    let cur = feature_dir.join("current");
    std::fs::rename(tmp, &cur).map_err(|e| {
        let _ = std::fs::remove_file(tmp);
        Error::io("cannot switch the current link", &cur, e)
    })?;
    sync_dir(feature_dir);
    Ok(())
}

/// Clear what an install, switch or uninstall cut short by a crash left in
/// a feature's directory; the caller holds its lock, so none is under way.
/// Staging and trash directories go. A `.current-*` link pointing at a
/// whole version (its record in place) is a switch that got as far as
/// moving the version in: it is completed; one pointing at anything else
/// goes. Then `current`, if it points at no whole version, points at the
/// newest one (as after an uninstall of the current one), or goes when
/// there is none. Downloads stay: they resume. Returns whether anything
/// was there to clear.
fn sweep(feature_dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(feature_dir) else {
        return false;
    };
    let mut cleared = false;
    let mut links: Vec<PathBuf> = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".staging-") || name.starts_with(".trash-") {
            tracing::warn!(path = %e.path().display(), "removing what an interrupted install or uninstall left");
            let _ = std::fs::remove_dir_all(e.path());
            cleared = true;
        } else if name.starts_with(".current-") {
            links.push(e.path());
        }
    }
    links.sort();
    for l in links {
        cleared = true;
        let whole = std::fs::read_link(&l)
            .ok()
            .is_some_and(|t| read_record(&feature_dir.join(t)).is_some());
        if whole && make_current(feature_dir, &l).is_ok() {
            tracing::warn!(link = %l.display(), "completed an interrupted switch of `current`");
        } else {
            let _ = std::fs::remove_file(&l);
        }
    }
    let cur = feature_dir.join("current");
    let current_whole = std::fs::read_link(&cur)
        .ok()
        .is_some_and(|t| read_record(&feature_dir.join(t)).is_some());
    if !current_whole {
        let mut versions: Vec<String> = std::fs::read_dir(feature_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.') && n != "current")
            .filter(|n| read_record(&feature_dir.join(n)).is_some())
            .collect();
        versions.sort_by(|a, b| version_cmp(a, b));
        match versions.last() {
            Some(newest) => {
                cleared = true;
                let _ = switch_current(feature_dir, newest);
            }
            None if std::fs::symlink_metadata(&cur).is_ok() => {
                cleared = true;
                let _ = std::fs::remove_file(&cur);
            }
            None => {}
        }
    }
    cleared
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// A process whose executable, working directory or arguments lie under `dir`.
fn in_use(dir: &Path) -> Option<(u32, String)> {
    // `exe` and `cwd` are canonical; arguments are as the caller wrote them,
    // usually through the (maybe not canonical) root: match both forms.
    let given = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let canon = std::fs::canonicalize(dir).unwrap_or_else(|_| given.clone());
    let under = |p: &Path| p.starts_with(&canon) || p.starts_with(&given);
    let me = std::process::id();
    for ent in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let base = ent.path();
        for link in ["exe", "cwd"] {
            if let Ok(t) = std::fs::read_link(base.join(link)) {
                if under(&t) {
                    return Some((pid, format!("{link} {}", t.display())));
                }
            }
        }
        if let Some(cmd) = cmdline_after_exec(&base) {
            for arg in cmd.split(|&b| b == 0) {
                let arg = Path::new(std::ffi::OsStr::new(std::str::from_utf8(arg).unwrap_or("")));
                if arg.is_absolute() && under(arg) {
                    return Some((pid, format!("argument {}", arg.display())));
                }
            }
        }
    }
    None
}

/// A process's arguments. A process in the middle of an exec (the kernel
/// lets a vfork parent go on before the new program's arguments are mapped)
/// reads an empty command line for a moment: read it again, briefly, so a
/// program started just now is not missed. Kernel threads, which have no
/// command line at all, have no `exe` either.
fn cmdline_after_exec(base: &Path) -> Option<Vec<u8>> {
    for _ in 0..50 {
        let cmd = std::fs::read(base.join("cmdline")).ok()?;
        if !cmd.is_empty() || std::fs::read_link(base.join("exe")).is_err() {
            return Some(cmd);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    None
}

/// Order versions the way people expect: numeric parts as numbers.
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |s: &str| -> Vec<(u64, String)> {
        s.split(['.', '-', '+', '_'])
            .map(|p| {
                let digits: String = p.chars().take_while(|c| c.is_ascii_digit()).collect();
                (digits.parse().unwrap_or(0), p[digits.len()..].to_string())
            })
            .collect()
    };
    parts(a).cmp(&parts(b)).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("v", "1.2.3").is_ok());
        assert!(check_name("v", "sing-box").is_ok());
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", &"x".repeat(129)] {
            assert!(check_name("v", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn binary_paths() {
        for ok in ["tool", "bin/tool", "./bin/tool"] {
            assert!(check_binary_path(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", ".", "/bin/sh", "../tool", "bin/../../tool"] {
            assert_eq!(
                check_binary_path(bad).unwrap_err().kind(),
                ErrorKind::InvalidName,
                "{bad:?}"
            );
        }
    }

    /// A version directory with its record, as an install leaves it.
    fn whole(feature_dir: &Path, version: &str) {
        let d = feature_dir.join(version);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join(RECORD),
            serde_json::json!({"id": "f", "version": version, "dir": d, "binary": d.join("b"),
                "url": "file:///x", "sha256": "", "verified": true, "signed": false,
                "bytes": 0, "installed_at": 0})
            .to_string(),
        )
        .unwrap();
    }

    fn current(feature_dir: &Path) -> Option<String> {
        current_version(feature_dir)
    }

    #[test]
    fn sweep_completes_a_switch_to_a_whole_version_and_drops_the_rest() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path();
        whole(f, "1.0.0");
        switch_current(f, "1.0.0").unwrap();
        // Moved in, not yet current: the switch completes.
        whole(f, "1.1.0");
        std::os::unix::fs::symlink("1.1.0", f.join(".current-1")).unwrap();
        // Cut short before the move: the link and staging go.
        std::os::unix::fs::symlink("2.0.0", f.join(".current-0")).unwrap();
        std::fs::create_dir_all(f.join(".staging-2.0.0-1-2/x")).unwrap();
        std::fs::create_dir_all(f.join(".trash-0.9-3")).unwrap();
        assert!(sweep(f));
        assert_eq!(current(f).as_deref(), Some("1.1.0"));
        let left: Vec<String> = std::fs::read_dir(f)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        assert!(!sweep(f), "nothing left to clear");
    }

    #[test]
    fn sweep_points_current_at_a_whole_version_or_removes_it() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path();
        // An uninstall cut short: current names a version in the trash.
        whole(f, "1.0.0");
        whole(f, "1.2.0");
        std::os::unix::fs::symlink("1.3.0", f.join("current")).unwrap();
        assert!(sweep(f));
        assert_eq!(current(f).as_deref(), Some("1.2.0"), "the newest whole one");
        // No version left at all: no current.
        std::fs::remove_dir_all(f.join("1.0.0")).unwrap();
        std::fs::remove_dir_all(f.join("1.2.0")).unwrap();
        assert!(sweep(f));
        assert!(std::fs::symlink_metadata(f.join("current")).is_err());
    }

    #[test]
    fn versions_sort_numerically() {
        let mut v = vec!["1.10.0", "1.9.2", "1.9.10", "0.4.8"];
        v.sort_by(|a, b| version_cmp(a, b));
        assert_eq!(v, ["0.4.8", "1.9.2", "1.9.10", "1.10.0"]);
    }
}
