//! Verification sources for upstreams that publish no plain checksums file,
//! end to end through the `Installer` against a real HTTP/1.1 server on
//! 127.0.0.1:
//!
//! - GitHub's release API `digest` (`"sha256:<hex>"` on each entry of
//!   `assets`, as `GET /repos/{owner}/{repo}/releases/tags/{tag}` answers
//!   since GitHub started computing digests for uploaded assets);
//! - a digest pinned in the manifest, which an asset replaced upstream after
//!   release no longer matches;
//! - a checksums file with a detached OpenPGP signature (`.asc`) by a pinned
//!   key, made here with GnuPG (`gpg --batch`): like the Tor Browser
//!   Developers key, an RSA primary key that only certifies and a signing
//!   subkey. A changed file, a signature by another key and a key that is not
//!   the pinned fingerprint all fail, and so does a signature by a subkey
//!   revoked since.
//!
//! Every failure leaves nothing installed. Tests that need `gpg` say why
//! they skip where it is missing (`.ci/run` installs it).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use hangar_fetch::verify::{check_openpgp_key, find_in_github_release, verify_openpgp};
use hangar_fetch::{
    Checksum, DownloadOptions, Downloader, ErrorKind, InstallRequest, Installer, SignedChecksums,
    Step,
};

const ASSET: &str = "demo-1.0.0-linux-amd64.tar.gz";

fn archive(version: &str) -> Vec<u8> {
    tar_gz(&[
        dir("demo-1.0.0-linux-amd64/"),
        file(
            "demo-1.0.0-linux-amd64/demo",
            format!("#!/bin/sh\necho {version}\n").as_bytes(),
            0o755,
        ),
    ])
}

struct Env {
    server: Server,
    _tmp: tempfile::TempDir,
    root: PathBuf,
    inst: Installer,
}

async fn env() -> Env {
    let server = Server::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("features");
    let o = DownloadOptions { ..opts() };
    let inst = Installer::new(&root, Downloader::new(o).unwrap());
    Env {
        server,
        _tmp: tmp,
        root,
        inst,
    }
}

impl Env {
    fn req(&self, checksum: Checksum) -> InstallRequest {
        InstallRequest {
            id: "demo".into(),
            version: "1.0.0".into(),
            url: self
                .server
                .url(&format!("/o/r/releases/download/v1.0.0/{ASSET}")),
            asset: ASSET.into(),
            checksum: Some(checksum),
            signature: None,
            binary: "demo-1.0.0-linux-amd64/demo".into(),
        }
    }

    fn serve_asset(&self, body: &[u8]) {
        self.server.file(
            &format!("/o/r/releases/download/v1.0.0/{ASSET}"),
            body.to_vec(),
        );
    }

    /// The release as GitHub's REST API answers it (the fields hangar reads,
    /// plus the neighbours they sit among).
    fn serve_release(&self, digest: Option<String>) {
        let body = serde_json::json!({
            "tag_name": "v1.0.0",
            "assets": [
                {
                    "name": "demo-1.0.0-linux-arm64.tar.gz",
                    "browser_download_url": self.server.url("/o/r/releases/download/v1.0.0/demo-1.0.0-linux-arm64.tar.gz"),
                    "digest": format!("sha256:{}", "0".repeat(64)),
                    "size": 1, "content_type": "application/gzip", "state": "uploaded"
                },
                {
                    "name": ASSET,
                    "browser_download_url": self.server.url(&format!("/o/r/releases/download/v1.0.0/{ASSET}")),
                    "digest": digest,
                    "size": 1, "content_type": "application/gzip", "state": "uploaded"
                }
            ]
        });
        self.server
            .file("/repos/o/r/releases/tags/v1.0.0", body.to_string());
    }

    async fn install(&self, c: Checksum) -> hangar_fetch::Result<hangar_fetch::Installed> {
        self.inst.install(self.req(c), &|_: &Step| {}).await
    }

    /// No version, no `current`, no staging; and for a verification failure
    /// (`deleted`) no download either. A release that only lacks a digest
    /// keeps the complete download for a later, verifiable try, as a
    /// checksums file without the asset's line does.
    fn nothing_installed(&self, what: &str) {
        self.nothing_installed_but(what, false)
    }

    fn nothing_installed_but(&self, what: &str, part_kept: bool) {
        let dir = self.root.join("demo");
        let left: Vec<String> = walk(&dir)
            .into_iter()
            .filter(|p| !p.starts_with(".lock"))
            .collect();
        assert!(
            !dir.join("1.0.0").exists() && !dir.join("current").exists(),
            "{what}: {left:?}"
        );
        assert!(
            left.iter()
                .all(|p| !p.contains(".staging-") && (part_kept || !p.ends_with(".part"))),
            "{what}: {left:?}"
        );
    }
}

#[tokio::test]
async fn github_release_digest_verifies_the_asset() {
    let e = env().await;
    let body = archive("1.0.0");
    e.serve_asset(&body);
    e.serve_release(Some(format!("sha256:{}", sha256_hex(&body))));
    let api = e.server.url("/repos/o/r/releases/tags/v1.0.0");
    let done = e.install(Checksum::GithubRelease(api)).await.unwrap();
    assert!(done.verified);
    assert_eq!(done.sha256, sha256_hex(&body));
    assert!(done.binary.is_file());
}

#[tokio::test]
async fn an_asset_that_is_not_what_github_digested_is_refused() {
    let e = env().await;
    let body = archive("1.0.0");
    e.serve_asset(&archive("evil"));
    e.serve_release(Some(format!("sha256:{}", sha256_hex(&body))));
    let api = e.server.url("/repos/o/r/releases/tags/v1.0.0");
    let err = e
        .install(Checksum::GithubRelease(api.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ChecksumMismatch, "{err}");
    assert_eq!(has_context(&err, "asset").as_deref(), Some(ASSET));
    assert_eq!(
        has_context(&err, "expected").as_deref(),
        Some(sha256_hex(&body).as_str())
    );
    assert_eq!(
        has_context(&err, "actual").as_deref(),
        Some(sha256_hex(&archive("evil")).as_str())
    );
    assert!(has_context(&err, "expected_from").unwrap().contains(&api));
    e.nothing_installed("digest mismatch");
}

#[tokio::test]
async fn a_release_without_a_digest_is_missing_not_trusted() {
    let e = env().await;
    e.serve_asset(&archive("1.0.0"));
    e.serve_release(None);
    let api = e.server.url("/repos/o/r/releases/tags/v1.0.0");
    let err = e.install(Checksum::GithubRelease(api)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ChecksumMissing, "{err}");
    assert!(err.hint_text().unwrap().contains("pinned"), "{err:?}");
    e.nothing_installed_but("no digest", true);
}

#[test]
fn github_release_json_shapes() {
    let d = sha256_hex(b"x");
    let json = format!(
        r#"{{"assets":[{{"name":"a.zip","digest":"sha256:{d}"}},{{"name":"b.zip","digest":"sha512:00"}}]}}"#
    );
    assert_eq!(
        hangar_fetch::verify::hex(&find_in_github_release(&json, "a.zip").unwrap()),
        d
    );
    let e = find_in_github_release(&json, "b.zip").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ChecksumInvalid);
    let e = find_in_github_release(&json, "c.zip").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ChecksumMissing);
    let e = find_in_github_release("<html>rate limited</html>", "a.zip").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ChecksumInvalid);
}

/// An asset replaced upstream after release: GitHub digests the new upload,
/// so its API agrees with the new bytes; only the manifest's pin remembers
/// what was released.
#[tokio::test]
async fn an_asset_replaced_after_release_fails_its_pin() {
    let e = env().await;
    let released = archive("1.0.0");
    let pin = sha256_hex(&released);
    e.serve_asset(&released);
    let first = e.install(Checksum::Pinned(pin.clone())).await.unwrap();
    assert!(first.verified);
    e.inst.uninstall("demo", Some("1.0.0")).unwrap();

    let replaced = archive("1.0.0-rebuilt");
    e.serve_asset(&replaced);
    e.serve_release(Some(format!("sha256:{}", sha256_hex(&replaced))));
    let err = e.install(Checksum::Pinned(pin.clone())).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ChecksumMismatch, "{err}");
    assert_eq!(err.code(), "VERIFY_CHECKSUM_MISMATCH");
    assert_eq!(has_context(&err, "asset").as_deref(), Some(ASSET));
    assert_eq!(has_context(&err, "expected").as_deref(), Some(pin.as_str()));
    assert_eq!(
        has_context(&err, "actual").as_deref(),
        Some(sha256_hex(&replaced).as_str())
    );
    assert!(
        err.hint_text().unwrap().contains("replaced upstream"),
        "{err:?}"
    );
    e.nothing_installed("replaced asset");
}

// ---------------------------------------------------------------------------
// OpenPGP
// ---------------------------------------------------------------------------

/// A throwaway GnuPG home with its keys.
struct Gpg {
    home: tempfile::TempDir,
}

impl Gpg {
    fn new() -> Option<Gpg> {
        if Command::new("gpg").arg("--version").output().is_err() {
            eprintln!("skipped: gpg is not installed (apt-get install gpg); .ci/run installs it");
            return None;
        }
        Some(Gpg {
            home: tempfile::tempdir().unwrap(),
        })
    }

    fn gpg(&self, args: &[&str]) -> Vec<u8> {
        let o = Command::new("gpg")
            .env("GNUPGHOME", self.home.path())
            .args([
                "--batch",
                "--no-tty",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o.stdout
    }

    /// A new key; its primary fingerprint.
    fn key(&self, uid: &str, algo: &str, usage: &str) -> String {
        self.gpg(&["--quick-gen-key", uid, algo, usage, "1y"]);
        let out = String::from_utf8(self.gpg(&["--with-colons", "--list-keys", uid])).unwrap();
        out.lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .unwrap()
            .to_string()
    }

    /// Add a signing subkey; its fingerprint.
    fn signing_subkey(&self, primary: &str, algo: &str) -> String {
        self.gpg(&["--quick-add-key", primary, algo, "sign", "1y"]);
        let out = String::from_utf8(self.gpg(&["--with-colons", "--list-keys", primary])).unwrap();
        out.lines()
            .rev()
            .filter(|l| l.starts_with("fpr:"))
            .find_map(|l| l.split(':').nth(9))
            .unwrap()
            .to_string()
    }

    /// Revoke the primary's first subkey (`gpg --edit-key`: key 1, revkey).
    fn revoke_first_subkey(&self, primary: &str) {
        use std::io::Write;
        let mut child = Command::new("gpg")
            .env("GNUPGHOME", self.home.path())
            .args([
                "--batch",
                "--no-tty",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                "--command-fd",
                "0",
                "--edit-key",
                primary,
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"key 1\nrevkey\ny\n0\n\ny\nsave\n")
            .unwrap();
        assert!(child.wait().unwrap().success());
    }

    fn export(&self, fpr: &str) -> String {
        String::from_utf8(self.gpg(&["--armor", "--export", fpr])).unwrap()
    }

    /// A detached armored signature of `file` by exactly `signer` (`!`).
    fn sign(&self, signer: &str, file: &Path) -> String {
        let out = self.home.path().join("sig.asc");
        let _ = std::fs::remove_file(&out);
        self.gpg(&[
            "--local-user",
            &format!("{signer}!"),
            "--armor",
            "--detach-sign",
            "--output",
            out.to_str().unwrap(),
            file.to_str().unwrap(),
        ]);
        std::fs::read_to_string(out).unwrap()
    }
}

/// The signer (an RSA primary that certifies, an RSA subkey that signs) and
/// a stranger (Ed25519).
struct Keys {
    gpg: Gpg,
    primary: String,
    subkey: String,
    public: String,
    stranger: String,
}

fn keys() -> Option<Keys> {
    let gpg = Gpg::new()?;
    let primary = gpg.key("Release Signer <signer@example.invalid>", "rsa2048", "cert");
    let subkey = gpg.signing_subkey(&primary, "rsa2048");
    let public = gpg.export(&primary);
    let stranger = gpg.key("Stranger <stranger@example.invalid>", "ed25519", "sign");
    Some(Keys {
        gpg,
        primary,
        subkey,
        public,
        stranger,
    })
}

#[test]
fn openpgp_signatures_by_the_pinned_key_only() {
    let Some(k) = keys() else { return };
    let sums = format!("{}  {ASSET}\n", sha256_hex(b"x"));
    let path = k.gpg.home.path().join("sums.txt");
    std::fs::write(&path, &sums).unwrap();
    check_openpgp_key(&k.public, &k.primary).unwrap();
    // The fingerprint as people write it (groups of four, lower case).
    let spaced: String = k
        .primary
        .to_lowercase()
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(" ");
    check_openpgp_key(&k.public, &spaced).unwrap();

    // By the signing subkey, as Tor Browser's sums are.
    let by_subkey = k.gpg.sign(&k.subkey, &path);
    verify_openpgp(sums.as_bytes(), &by_subkey, &k.public, &k.primary).unwrap();

    // One byte changed after signing.
    let changed = sums.replacen(&sha256_hex(b"x")[..1], "f", 1);
    let e = verify_openpgp(changed.as_bytes(), &by_subkey, &k.public, &k.primary).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SignatureInvalid, "{e}");
    assert!(e.message().contains("does not verify"), "{e}");

    // Signed by someone else.
    let by_stranger = k.gpg.sign(&k.stranger, &path);
    let e = verify_openpgp(sums.as_bytes(), &by_stranger, &k.public, &k.primary).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SignatureInvalid, "{e}");
    assert!(e.message().contains("does not pin"), "{e}");
    assert!(
        has_context(&e, "signed_by").is_some_and(|s| !s.is_empty()),
        "{e:?}"
    );

    // The stranger's key pinned under the signer's fingerprint.
    let e = check_openpgp_key(&k.gpg.export(&k.stranger), &k.primary).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SignatureInvalid, "{e}");
    // A signature by the subkey once it is revoked.
    k.gpg.revoke_first_subkey(&k.primary);
    let revoked = k.gpg.export(&k.primary);
    let e = verify_openpgp(sums.as_bytes(), &by_subkey, &revoked, &k.primary).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SignatureInvalid, "{e}");
    assert!(e.message().contains("revoked"), "{e}");

    // Not a key, not a signature.
    assert!(check_openpgp_key("hello", &k.primary).is_err());
    let e = verify_openpgp(sums.as_bytes(), "hello", &k.public, &k.primary).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SignatureInvalid, "{e}");
}

#[tokio::test]
async fn an_openpgp_signed_checksums_file_gates_the_install() {
    let Some(k) = keys() else { return };
    let e = env().await;
    let body = archive("1.0.0");
    e.serve_asset(&body);
    let sums = format!(
        "{}  other.tar.gz\n{}  {ASSET}\n",
        sha256_hex(b"other"),
        sha256_hex(&body)
    );
    let path = k.gpg.home.path().join("sums.txt");
    std::fs::write(&path, &sums).unwrap();
    let sig = k.gpg.sign(&k.subkey, &path);
    e.server.file("/sums.txt", sums.clone());
    e.server.file("/sums.txt.asc", sig.clone());
    let signed = |public: &str| {
        Checksum::SignedFile(SignedChecksums {
            url: e.server.url("/sums.txt"),
            signature_url: e.server.url("/sums.txt.asc"),
            public_key: public.to_string(),
            fingerprint: k.primary.clone(),
        })
    };

    // A changed sums file (the asset's line rewritten to match other bytes).
    let forged = sums.replace(&sha256_hex(&body), &sha256_hex(&archive("evil")));
    e.server.file("/sums.txt", forged);
    e.serve_asset(&archive("evil"));
    let err = e.install(signed(&k.public)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SignatureInvalid, "{err}");
    assert!(has_context(&err, "signature").is_some(), "{err:?}");
    e.nothing_installed("forged sums");

    // Signed by a key that is not the pinned one.
    e.server.file("/sums.txt", sums.clone());
    e.serve_asset(&body);
    e.server
        .file("/sums.txt.asc", k.gpg.sign(&k.stranger, &path));
    let err = e.install(signed(&k.public)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SignatureInvalid, "{err}");
    e.nothing_installed("stranger's signature");

    // The real thing.
    e.server.file("/sums.txt.asc", sig);
    let done = e.install(signed(&k.public)).await.unwrap();
    assert!(done.verified && done.signed, "{done:?}");
}
