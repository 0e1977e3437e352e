//! `Installer` end to end against a real HTTP/1.1 server on 127.0.0.1: verify
//! (checksums files, digests, minisign), extract, move in, `current`, listing,
//! uninstall (refused while a real process runs the binary), nothing left
//! behind on failure, and concurrent installs.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use common::*;
use hangar_fetch::{
    Checksum, DownloadOptions, Downloader, ErrorKind, InstallRequest, Installed, Installer,
    Signature, Step,
};

struct Env {
    server: Server,
    tmp: tempfile::TempDir,
    root: PathBuf,
    inst: Installer,
}

async fn env() -> Env {
    env_with(opts()).await
}

async fn env_with(o: DownloadOptions) -> Env {
    let server = Server::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("features");
    let inst = Installer::new(&root, Downloader::new(o).unwrap());
    Env {
        server,
        tmp,
        root,
        inst,
    }
}

impl Env {
    /// A request for an asset served at `/{id}/{version}/{asset}`.
    fn req(
        &self,
        id: &str,
        version: &str,
        asset: &str,
        checksum: Option<Checksum>,
        binary: &str,
    ) -> InstallRequest {
        InstallRequest {
            id: id.into(),
            version: version.into(),
            url: self.server.url(&asset_path(id, version, asset)),
            asset: asset.into(),
            checksum,
            signature: None,
            binary: binary.into(),
        }
    }

    fn serve(&self, id: &str, version: &str, asset: &str, route: Route) {
        self.server.route(&asset_path(id, version, asset), route);
    }

    fn downloads_of(&self, id: &str, version: &str, asset: &str) -> usize {
        self.server.requests(&asset_path(id, version, asset)).len()
    }

    async fn install(&self, req: InstallRequest) -> hangar_fetch::Result<Installed> {
        self.inst.install(req, &|_: &Step| {}).await
    }

    fn current(&self, id: &str) -> Option<PathBuf> {
        std::fs::read_link(self.root.join(id).join("current")).ok()
    }

    /// A failed first install leaves nothing: no feature directory at all
    /// (no version, no staging, no part, no `current`, no lock).
    fn assert_nothing_installed(&self, id: &str, what: &str) {
        let dir = self.root.join(id);
        assert!(!dir.exists(), "{what}: {:?}", walk(&dir));
        // And nothing next to the root either.
        let outside: Vec<String> = walk(self.tmp.path())
            .into_iter()
            .filter(|p| !p.starts_with("features/"))
            .collect();
        assert!(outside.is_empty(), "{what}: {outside:?}");
    }
}

fn asset_path(id: &str, version: &str, asset: &str) -> String {
    format!("/{id}/{version}/{asset}")
}

fn script(version: &str) -> Vec<u8> {
    format!("#!/bin/sh\necho {version}\n").into_bytes()
}

fn sums(lines: &[(&[u8], &str, &str)]) -> String {
    lines
        .iter()
        .map(|(body, marker, name)| format!("{}{marker}{name}\n", sha256_hex(body)))
        .collect()
}

/// Run a freshly installed program; retry if a concurrent fork still held it open.
fn run_program(path: &Path) -> String {
    for _ in 0..50 {
        match std::process::Command::new(path).output() {
            Ok(out) => return String::from_utf8(out.stdout).unwrap(),
            Err(e) if e.raw_os_error() == Some(26) => std::thread::sleep(Duration::from_millis(20)), // ETXTBSY
            Err(e) => panic!("cannot run {}: {e}", path.display()),
        }
    }
    panic!("{} stayed busy", path.display())
}

#[tokio::test]
async fn install_switch_list_uninstall_reinstall() {
    let env = env().await;
    let (t1, t2) = (script("1.0.0"), script("1.1.0"));
    // The binary is not marked executable in 1.0.0's archive: the installer makes it so.
    let a1 = tar_gz(&good_entries(&t1, 0o644));
    let a2 = zip(&good_entries(&t2, 0o755));
    env.serve("demo", "1.0.0", "demo-1.0.0.tar.gz", Route::new(a1.clone()));
    env.serve("demo", "1.1.0", "demo-1.1.0.zip", Route::new(a2.clone()));
    // GNU format, text ("  ") and binary (" *") markers.
    env.server.file(
        "/checksums.txt",
        format!(
            "# release 1\n{}",
            sums(&[
                (&a1, "  ", "demo-1.0.0.tar.gz"),
                (&a2, " *", "demo-1.1.0.zip"),
                (b"x", "  ", "other.tar.gz")
            ])
        ),
    );
    let sums_url = Checksum::File(env.server.url("/checksums.txt"));

    // 1.0.0, with the steps reported in order.
    let steps = Mutex::new(Vec::new());
    let r1 = env
        .inst
        .install(
            env.req(
                "demo",
                "1.0.0",
                "demo-1.0.0.tar.gz",
                Some(sums_url.clone()),
                "pkg/bin/tool",
            ),
            &|s: &Step| steps.lock().unwrap().push(s.clone()),
        )
        .await
        .unwrap();
    let steps = steps.into_inner().unwrap();
    let downloads: Vec<_> = steps
        .iter()
        .take_while(|s| matches!(s, Step::Download(_)))
        .map(|s| match s {
            Step::Download(p) => p.clone(),
            _ => unreachable!(),
        })
        .collect();
    assert!(!downloads.is_empty());
    let last = downloads.last().unwrap();
    assert!(last.done && last.bytes == a1.len() as u64);
    assert_eq!(
        &steps[downloads.len()..],
        &[Step::Verify, Step::Extract, Step::Installed]
    );

    let v1 = env.root.join("demo/1.0.0");
    assert_eq!(r1.dir, v1);
    assert_eq!(r1.binary, v1.join("pkg/bin/tool"));
    assert_eq!((r1.id.as_str(), r1.version.as_str()), ("demo", "1.0.0"));
    assert_eq!(r1.sha256, sha256_hex(&a1));
    assert!(r1.verified && !r1.signed && r1.current);
    assert_eq!(r1.bytes, (t1.len() + 8 + 10) as u64);
    check_good_tree(&v1, &t1);
    assert_eq!(run_program(&r1.binary), "1.0.0\n");
    assert_eq!(env.current("demo"), Some(PathBuf::from("1.0.0")));
    // The part is gone, no staging left.
    assert_eq!(
        walk(&env.root.join("demo"))
            .iter()
            .filter(|p| !p.starts_with("1.0.0/"))
            .collect::<Vec<_>>(),
        vec![".downloads/", ".lock", "current"]
    );

    // 1.1.0 installs beside it and becomes current.
    let r2 = env
        .install(env.req(
            "demo",
            "1.1.0",
            "demo-1.1.0.zip",
            Some(sums_url.clone()),
            "pkg/bin/tool",
        ))
        .await
        .unwrap();
    assert!(r2.verified && r2.current);
    check_good_tree(&env.root.join("demo/1.1.0"), &t2);
    check_good_tree(&v1, &t1);
    assert_eq!(env.current("demo"), Some(PathBuf::from("1.1.0")));
    assert_eq!(
        run_program(&env.root.join("demo/current/pkg/bin/tool")),
        "1.1.0\n"
    );

    // Another feature, for the listing.
    env.serve(
        "other",
        "0.1.0",
        "other-linux-amd64",
        Route::new(script("0.1.0")),
    );
    let r3 = env
        .install(env.req("other", "0.1.0", "other-linux-amd64", None, "bin/other"))
        .await
        .unwrap();
    assert!(!r3.verified);
    assert_eq!(
        r3.binary,
        env.root.join("other/0.1.0/other"),
        "a plain binary sits at the top"
    );

    // Strays in the root do not break the listing.
    std::fs::create_dir(env.root.join("not a feature")).unwrap();
    std::fs::write(env.root.join("stray-file"), b"x").unwrap();

    let vs = env.inst.versions("demo").unwrap();
    let brief = |v: &[Installed]| -> Vec<(String, String, bool)> {
        v.iter()
            .map(|r| (r.id.clone(), r.version.clone(), r.current))
            .collect()
    };
    let row = |id: &str, v: &str, c: bool| (id.to_string(), v.to_string(), c);
    assert_eq!(
        brief(&vs),
        vec![row("demo", "1.0.0", false), row("demo", "1.1.0", true)]
    );
    assert_eq!(vs[1].sha256, sha256_hex(&a2));
    assert_eq!(
        brief(&env.inst.list().unwrap()),
        vec![
            row("demo", "1.0.0", false),
            row("demo", "1.1.0", true),
            row("other", "0.1.0", true)
        ]
    );

    // Installing an installed version only switches to it: no download.
    let again = env
        .install(env.req(
            "demo",
            "1.0.0",
            "demo-1.0.0.tar.gz",
            Some(sums_url.clone()),
            "pkg/bin/tool",
        ))
        .await
        .unwrap();
    assert!(again.current);
    assert_eq!(again.sha256, r1.sha256);
    assert_eq!(env.current("demo"), Some(PathBuf::from("1.0.0")));
    assert_eq!(env.downloads_of("demo", "1.0.0", "demo-1.0.0.tar.gz"), 1);
    env.install(env.req(
        "demo",
        "1.1.0",
        "demo-1.1.0.zip",
        Some(sums_url.clone()),
        "pkg/bin/tool",
    ))
    .await
    .unwrap();
    assert_eq!(env.current("demo"), Some(PathBuf::from("1.1.0")));
    assert_eq!(env.downloads_of("demo", "1.1.0", "demo-1.1.0.zip"), 1);

    // Removing the current version moves `current` to the one left.
    assert_eq!(
        env.inst.uninstall("demo", Some("1.1.0")).unwrap(),
        vec!["1.1.0"]
    );
    assert!(!env.root.join("demo/1.1.0").exists());
    assert_eq!(env.current("demo"), Some(PathBuf::from("1.0.0")));
    assert_eq!(
        brief(&env.inst.versions("demo").unwrap()),
        vec![row("demo", "1.0.0", true)]
    );

    // Reinstall downloads it again.
    env.install(env.req(
        "demo",
        "1.1.0",
        "demo-1.1.0.zip",
        Some(sums_url.clone()),
        "pkg/bin/tool",
    ))
    .await
    .unwrap();
    assert_eq!(env.downloads_of("demo", "1.1.0", "demo-1.1.0.zip"), 2);
    assert_eq!(env.current("demo"), Some(PathBuf::from("1.1.0")));
    check_good_tree(&env.root.join("demo/1.1.0"), &t2);

    // Not installed.
    let e = env.inst.uninstall("demo", Some("9.9.9")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotInstalled);
    assert_eq!(e.code(), "INSTALL_NOT_FOUND");
    assert_eq!(
        has_context(&e, "installed").as_deref(),
        Some("1.0.0, 1.1.0")
    );

    // Removing a version that is not current leaves `current` alone.
    assert_eq!(
        env.inst.uninstall("demo", Some("1.0.0")).unwrap(),
        vec!["1.0.0"]
    );
    assert_eq!(env.current("demo"), Some(PathBuf::from("1.1.0")));

    // Everything: the feature directory goes.
    env.install(env.req(
        "demo",
        "1.0.0",
        "demo-1.0.0.tar.gz",
        Some(sums_url.clone()),
        "pkg/bin/tool",
    ))
    .await
    .unwrap();
    let mut gone = env.inst.uninstall("demo", None).unwrap();
    gone.sort();
    assert_eq!(gone, vec!["1.0.0", "1.1.0"]);
    assert!(!env.root.join("demo").exists());
    let e = env.inst.uninstall("demo", None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotInstalled);
    assert!(
        !env.root.join("demo").exists(),
        "uninstall does not create the feature directory"
    );
    assert!(env.inst.versions("demo").unwrap().is_empty());
    assert_eq!(
        brief(&env.inst.list().unwrap()),
        vec![row("other", "0.1.0", true)]
    );
}

#[tokio::test]
async fn every_format_installs_with_an_executable_binary() {
    let env = env().await;
    let tool = script("2.0.0");
    let entries = good_entries(&tool, 0o755);
    for (id, asset, bytes) in [
        ("gz", "x-2.0.0.tar.gz", tar_gz(&entries)),
        ("xz", "x-2.0.0.tar.xz", tar_xz(&entries)),
        ("zip", "x-2.0.0.zip", zip(&entries)),
    ] {
        env.serve(id, "2.0.0", asset, Route::new(bytes.clone()));
        let checksum = Some(Checksum::Sha256(sha256_hex(&bytes).to_uppercase()));
        let r = env
            .install(env.req(id, "2.0.0", asset, checksum, "pkg/bin/tool"))
            .await
            .unwrap_or_else(|e| panic!("{asset}: {e} {:?}", e.context()));
        assert!(r.verified);
        check_good_tree(&r.dir, &tool);
        assert_eq!(run_program(&r.binary), "2.0.0\n");
    }
    env.serve(
        "plain",
        "2.0.0",
        "tool-linux-amd64",
        Route::new(tool.clone()),
    );
    let r = env
        .install(env.req(
            "plain",
            "2.0.0",
            "tool-linux-amd64",
            Some(Checksum::Sha256(sha256_hex(&tool))),
            "tool",
        ))
        .await
        .unwrap();
    assert_eq!(r.binary, env.root.join("plain/2.0.0/tool"));
    assert_eq!(
        std::fs::metadata(&r.binary).unwrap().permissions().mode() & 0o111,
        0o111
    );
    assert_eq!(run_program(&r.binary), "2.0.0\n");
    assert_eq!(r.bytes, tool.len() as u64);
}

#[tokio::test]
async fn a_wrong_checksum_leaves_nothing_behind() {
    let env = env().await;
    let body = tar_gz(&good_entries(&script("1.0.0"), 0o755));
    env.serve("demo", "1.0.0", "demo.tar.gz", Route::new(body.clone()));
    let wrong = sha256_hex(b"something else");
    env.server.file(
        "/checksums.txt",
        format!(
            "{wrong} *demo.tar.gz\n{} *other.tar.gz\n",
            sha256_hex(&body)
        ),
    );

    let e = env
        .install(env.req(
            "demo",
            "1.0.0",
            "demo.tar.gz",
            Some(Checksum::File(env.server.url("/checksums.txt"))),
            "pkg/bin/tool",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ChecksumMismatch);
    assert_eq!(e.code(), "VERIFY_CHECKSUM_MISMATCH");
    assert_eq!(has_context(&e, "expected"), Some(wrong.clone()));
    assert_eq!(has_context(&e, "actual"), Some(sha256_hex(&body)));
    assert!(has_context(&e, "url")
        .unwrap()
        .ends_with("/demo/1.0.0/demo.tar.gz"));
    env.assert_nothing_installed("demo", "checksums file mismatch");

    // The same with a digest from the manifest.
    let e = env
        .install(env.req(
            "demo",
            "1.0.0",
            "demo.tar.gz",
            Some(Checksum::Sha256(wrong.clone())),
            "pkg/bin/tool",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ChecksumMismatch);
    assert_eq!(has_context(&e, "expected"), Some(wrong));
    assert_eq!(has_context(&e, "actual"), Some(sha256_hex(&body)));
    env.assert_nothing_installed("demo", "digest mismatch");
    // Downloaded afresh each time: the bad part was deleted.
    let log = env.server.requests("/demo/1.0.0/demo.tar.gz");
    assert_eq!(log.len(), 2);
    assert!(log.iter().all(|r| r.range.is_none()), "{log:?}");

    // A malformed digest is refused as such.
    let e = env
        .install(env.req(
            "demo",
            "1.0.0",
            "demo.tar.gz",
            Some(Checksum::Sha256("abc".into())),
            "pkg/bin/tool",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ChecksumInvalid);
    env.assert_nothing_installed("demo", "malformed digest");

    // And the right one installs.
    let r = env
        .install(env.req(
            "demo",
            "1.0.0",
            "demo.tar.gz",
            Some(Checksum::Sha256(sha256_hex(&body))),
            "pkg/bin/tool",
        ))
        .await
        .unwrap();
    assert!(r.verified);
}

#[tokio::test]
async fn a_checksums_file_without_the_asset_is_checksum_missing() {
    let env = env().await;
    let body = tar_gz(&good_entries(&script("1.0.0"), 0o755));
    env.serve("demo", "1.0.0", "demo.tar.gz", Route::new(body.clone()));
    env.server.file(
        "/checksums.txt",
        sums(&[(&body, "  ", "demo-other.tar.gz")]),
    );
    let e = env
        .install(env.req(
            "demo",
            "1.0.0",
            "demo.tar.gz",
            Some(Checksum::File(env.server.url("/checksums.txt"))),
            "pkg/bin/tool",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ChecksumMissing);
    assert_eq!(e.code(), "VERIFY_CHECKSUM_MISSING");
    assert_eq!(has_context(&e, "asset").as_deref(), Some("demo.tar.gz"));
    assert!(!env.root.join("demo/1.0.0").exists());
    assert!(env.current("demo").is_none());

    // A checksums file that is not there.
    let e = env
        .install(env.req(
            "demo",
            "1.0.0",
            "demo.tar.gz",
            Some(Checksum::File(env.server.url("/no-such-checksums.txt"))),
            "pkg/bin/tool",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(!env.root.join("demo/1.0.0").exists());
}

// The prehashed test vector of minisign-verify 0.3.0 (its `verify_prehashed`
// test): key, signature of the 4 bytes "test".
const PK: &str = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3";
const SIG_PREHASHED: &str = "untrusted comment: signature from minisign secret key
RUQf6LRCGA9i559r3g7V1qNyJDApGip8MfqcadIgT9CuhV3EMhHoN1mGTkUidF/z7SrlQgXdy8ofjb7bNJJylDOocrCo8KLzZwo=
trusted comment: timestamp:1556193335\tfile:test
y/rUw2y8/hOUYjZU71eHp/Wo1KZ40fGy2VJEDl34XMJM+TX48Ss/17u3IvIfbVR1FkZZSNCisQbuQY+bHwhEBg==
";

#[tokio::test]
async fn minisign_signatures_are_checked() {
    let env = env().await;
    env.server.file("/tool.minisig", SIG_PREHASHED);
    let signed = |id: &str, body: &[u8]| {
        env.serve(id, "1.0.0", "tool", Route::new(body.to_vec()));
        let mut r = env.req(
            id,
            "1.0.0",
            "tool",
            Some(Checksum::Sha256(sha256_hex(body))),
            "tool",
        );
        r.signature = Some(Signature {
            public_key: PK.into(),
            url: env.server.url("/tool.minisig"),
        });
        r
    };

    // The signed message installs.
    let r = env.install(signed("good", b"test")).await.unwrap();
    assert!(r.signed && r.verified);
    assert_eq!(std::fs::read(&r.binary).unwrap(), b"test");

    // One byte changed (and its digest with it): the signature does not verify.
    let e = env.install(signed("tampered", b"Test")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SignatureInvalid);
    assert_eq!(e.code(), "VERIFY_SIGNATURE_INVALID");
    assert!(has_context(&e, "signature")
        .unwrap()
        .ends_with("/tool.minisig"));
    env.assert_nothing_installed("tampered", "bad signature");

    // A key that is not the signer's.
    let mut r = signed("otherkey", b"test");
    r.signature.as_mut().unwrap().public_key =
        "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3".replace("i53", "i54");
    let e = env.install(r).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SignatureInvalid);
    env.assert_nothing_installed("otherkey", "wrong key");

    // A signature file that is not there.
    let mut r = signed("nosig", b"test");
    r.signature.as_mut().unwrap().url = env.server.url("/missing.minisig");
    assert_eq!(
        env.install(r).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(!env.root.join("nosig/1.0.0").exists());
}

#[tokio::test]
async fn malicious_archives_leave_nothing_behind() {
    let env = env().await;
    for (i, b) in bad_archives().into_iter().enumerate() {
        let id = format!("bad{i}");
        env.serve(&id, "1.0.0", b.asset, Route::new(b.bytes.clone()));
        let inst = env.inst.clone().with_limits(b.limits);
        let e = inst
            .install(
                env.req(
                    &id,
                    "1.0.0",
                    b.asset,
                    Some(Checksum::Sha256(sha256_hex(&b.bytes))),
                    "tool",
                ),
                &|_: &Step| {},
            )
            .await
            .expect_err(b.label);
        assert_eq!(e.kind(), b.kind, "{}: {e}", b.label);
        env.assert_nothing_installed(&id, b.label);
        assert!(!Path::new(ABSOLUTE_EVIL).exists());
    }
}

#[tokio::test]
async fn a_missing_binary_or_a_bad_binary_path_is_refused() {
    let env = env().await;
    let body = tar_gz(&good_entries(&script("1.0.0"), 0o755));
    env.serve("demo", "1.0.0", "demo.tar.gz", Route::new(body.clone()));
    let e = env
        .install(env.req("demo", "1.0.0", "demo.tar.gz", None, "pkg/bin/nope"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BinaryMissing);
    env.assert_nothing_installed("demo", "binary missing");

    // A directory or a link is not the binary either.
    for bin in ["pkg/bin", "pkg/bin/tool-link"] {
        let e = env
            .install(env.req("demo", "1.0.0", "demo.tar.gz", None, bin))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BinaryMissing, "{bin}");
    }

    // Paths out of the install are refused before any download (they would
    // have been chmod-ed 0755 outside the staging directory).
    let before = env.server.log().len();
    for bin in ["../../../../etc/passwd", "/etc/passwd", "pkg/../../x", ""] {
        let e = env
            .install(env.req("demo", "1.0.0", "demo.tar.gz", None, bin))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidName, "{bin:?}");
    }
    for (id, v) in [
        ("../x", "1.0.0"),
        ("demo", ".."),
        ("demo", "1/2"),
        ("", "1"),
    ] {
        let e = env
            .install(env.req(id, v, "demo.tar.gz", None, "tool"))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidName, "{id:?} {v:?}");
    }
    assert_eq!(env.server.log().len(), before);
}

#[tokio::test]
async fn an_interrupted_install_resumes_on_the_next_try() {
    let env = env_with(DownloadOptions {
        attempts: 1,
        ..opts()
    })
    .await;
    let body = pseudo_random(80_000, 11);
    env.serve(
        "demo",
        "1.0.0",
        "tool-linux-amd64",
        Route {
            drop_after: Some(20_000),
            ..Route::new(body.clone())
        },
    );
    let req = env.req(
        "demo",
        "1.0.0",
        "tool-linux-amd64",
        Some(Checksum::Sha256(sha256_hex(&body))),
        "tool",
    );
    let e = env.install(req.clone()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Network, "{e}");
    let part = env.root.join("demo/.downloads/1.0.0-tool-linux-amd64.part");
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 20_000);
    assert!(!env.root.join("demo/1.0.0").exists());

    let r = env.install(req).await.unwrap();
    assert_eq!(std::fs::read(&r.binary).unwrap(), body);
    let log = env.server.requests("/demo/1.0.0/tool-linux-amd64");
    assert_eq!(log.len(), 2);
    assert_eq!(log[1].range.as_deref(), Some("bytes=20000-"));
    assert!(!part.exists());
}

/// Kills the child if the test fails before it does (a live child would keep
/// the test's output pipes open).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn uninstall_is_refused_while_the_binary_runs() {
    let mut env = env().await;
    // The root is reached through a symbolic link, as with a data dir under a
    // linked /var or home: the process's arguments name that path, not the
    // canonical one.
    std::fs::create_dir(env.tmp.path().join("real")).unwrap();
    std::os::unix::fs::symlink("real", env.tmp.path().join("via")).unwrap();
    env.root = env.tmp.path().join("via/features");
    env.inst = Installer::new(&env.root, Downloader::new(opts()).unwrap());
    // A plain "binary": a script that keeps running without forking (it waits
    // on its stdin with the shell's own `read`), so killing the shell leaves
    // nothing behind. A loop of `sleep`s did not: a child forked but not yet
    // exec'd still carries the script's arguments after the shell is killed.
    let body = b"#!/bin/sh\nread line\n".to_vec();
    env.serve("svc", "1.0.0", "svc-linux-amd64", Route::new(body.clone()));
    env.serve("svc", "2.0.0", "svc-linux-amd64", Route::new(body.clone()));
    let r1 = env
        .install(env.req("svc", "1.0.0", "svc-linux-amd64", None, "svc"))
        .await
        .unwrap();
    let r2 = env
        .install(env.req("svc", "2.0.0", "svc-linux-amd64", None, "svc"))
        .await
        .unwrap();

    let mut child = None;
    for _ in 0..50 {
        match std::process::Command::new(&r1.binary)
            .stdin(std::process::Stdio::piped())
            .spawn()
        {
            Ok(c) => {
                child = Some(c);
                break;
            }
            Err(e) if e.raw_os_error() == Some(26) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("spawn: {e}"),
        }
    }
    let mut child = KillOnDrop(child.expect("the installed script runs"));

    let e = env.inst.uninstall("svc", Some("1.0.0")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InUse, "{e}");
    assert_eq!(e.code(), "INSTALL_IN_USE");
    assert!(
        e.message().contains(&child.0.id().to_string()),
        "{}",
        e.message()
    );
    assert!(r1.dir.join("svc").exists());
    let e = env.inst.uninstall("svc", None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InUse);
    assert!(
        r2.dir.exists(),
        "all or nothing: 2.0.0 was not removed either"
    );
    // The other version is not in use.
    assert_eq!(
        env.inst.uninstall("svc", Some("2.0.0")).unwrap(),
        vec!["2.0.0"]
    );

    child.0.kill().unwrap();
    child.0.wait().unwrap();
    assert_eq!(
        env.inst.uninstall("svc", Some("1.0.0")).unwrap(),
        vec!["1.0.0"]
    );
    assert!(!env.root.join("svc").exists());
}

/// An archive served slowly (about 400 ms), so other calls land mid-download.
fn slow(body: &[u8]) -> Route {
    Route {
        trickle: Some((body.len() / 16 + 1, Duration::from_millis(25))),
        ..Route::new(body.to_vec())
    }
}

/// A child forked while the lock was held shares it until it execs; on a
/// loaded machine that moment can last. Such a lock is waited for, not
/// taken for another installer's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_a_child_shares_for_a_moment_is_waited_for() {
    let env = env().await;
    let body = tar_gz(&good_entries(&script("1.0.0"), 0o755));
    env.serve("demo", "1.0.0", "demo.tar.gz", Route::new(body));
    let req = env.req("demo", "1.0.0", "demo.tar.gz", None, "pkg/bin/tool");
    let dir = env.root.join("demo");
    std::fs::create_dir_all(&dir).unwrap();
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".lock"))
        .unwrap();
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).unwrap();
    // The child's stdin is the same open file description: it holds the lock
    // after ours is closed, for 0.6 s.
    let mut child = std::process::Command::new("sleep")
        .arg("0.6")
        .stdin(f)
        .spawn()
        .unwrap();
    let r = env.install(req).await;
    let _ = child.wait();
    let done = r.unwrap_or_else(|e| panic!("{e} {:?}", e.context()));
    assert_eq!(done.version, "1.0.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_installs_of_one_version_share_one_download() {
    let env = env().await;
    let body = tar_gz(&good_entries(&script("1.0.0"), 0o755));
    env.serve("demo", "1.0.0", "demo.tar.gz", slow(&body));
    env.serve("demo", "2.0.0", "demo.tar.gz", Route::new(body.clone()));
    env.server
        .file("/sums.txt", sums(&[(&body, "  ", "demo.tar.gz")]));
    let req = env.req(
        "demo",
        "1.0.0",
        "demo.tar.gz",
        Some(Checksum::File(env.server.url("/sums.txt"))),
        "pkg/bin/tool",
    );

    let first = tokio::spawn({
        let (inst, req) = (env.inst.clone(), req.clone());
        async move { inst.install(req, &|_: &Step| {}).await }
    });
    env.server.wait_for("/demo/1.0.0/demo.tar.gz", 1).await;

    // Mid-download: the same version joins, another version is refused.
    let other = env
        .install(env.req("demo", "2.0.0", "demo.tar.gz", None, "pkg/bin/tool"))
        .await
        .unwrap_err();
    assert_eq!(other.kind(), ErrorKind::InProgress, "{other}");
    assert_eq!(other.code(), "FETCH_IN_PROGRESS");
    let (a, b) = tokio::join!(env.install(req.clone()), env.install(req.clone()));
    let first = first
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e} {:?}", e.context()));
    assert_eq!(a.unwrap(), first);
    assert_eq!(b.unwrap(), first);
    assert_eq!(env.downloads_of("demo", "1.0.0", "demo.tar.gz"), 1);
    assert_eq!(env.server.requests("/sums.txt").len(), 1);
    assert_eq!(env.downloads_of("demo", "2.0.0", "demo.tar.gz"), 0);

    // Once done, the other version can go in.
    env.install(env.req("demo", "2.0.0", "demo.tar.gz", None, "pkg/bin/tool"))
        .await
        .unwrap();
    assert_eq!(env.current("demo"), Some(PathBuf::from("2.0.0")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_installer_on_the_same_root_is_locked_out() {
    let env = env().await;
    let body = tar_gz(&good_entries(&script("1.0.0"), 0o755));
    // The first install holds the lock for about 10 s: longer than the two
    // tries of about 2 s each (a lock may be a forked child's moment) that
    // the second installer makes below.
    env.serve(
        "demo",
        "1.0.0",
        "demo.tar.gz",
        Route {
            trickle: Some((body.len() / 16 + 1, Duration::from_millis(600))),
            ..Route::new(body.clone())
        },
    );
    let req = env.req("demo", "1.0.0", "demo.tar.gz", None, "pkg/bin/tool");
    // Another Installer (another process, as far as the lock goes): its own
    // in-flight map, its own open file description for the flock.
    let second = Installer::new(&env.root, Downloader::new(opts()).unwrap());

    let first = tokio::spawn({
        let (inst, req) = (env.inst.clone(), req.clone());
        async move { inst.install(req, &|_: &Step| {}).await }
    });
    env.server.wait_for("/demo/1.0.0/demo.tar.gz", 1).await;

    let e = second
        .install(req.clone(), &|_: &Step| {})
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InProgress, "{e}");
    assert!(has_context(&e, "lock").unwrap().ends_with("demo/.lock"));
    let e = second.uninstall("demo", None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InProgress);

    let r = first
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e} {:?}", e.context()));
    // Free again: the second one finds it installed (no second download).
    assert_eq!(
        second.install(req, &|_: &Step| {}).await.unwrap().sha256,
        r.sha256
    );
    assert_eq!(env.downloads_of("demo", "1.0.0", "demo.tar.gz"), 1);
    assert_eq!(second.versions("demo").unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_install_does_not_block_the_feature() {
    let env = env().await;
    env.serve(
        "demo",
        "1.0.0",
        "tool-linux-amd64",
        Route {
            stall: Some(Duration::from_secs(10)),
            ..Route::new(script("1.0.0"))
        },
    );
    env.serve(
        "demo",
        "2.0.0",
        "tool-linux-amd64",
        Route::new(script("2.0.0")),
    );
    let task = tokio::spawn({
        let (inst, req) = (
            env.inst.clone(),
            env.req("demo", "1.0.0", "tool-linux-amd64", None, "tool"),
        );
        async move { inst.install(req, &|_: &Step| {}).await }
    });
    env.server.wait_for("/demo/1.0.0/tool-linux-amd64", 1).await;
    // Give up on it (a client hung up, a request timed out).
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());

    // Neither the in-flight entry nor the lock outlives it.
    let r = env
        .install(env.req("demo", "2.0.0", "tool-linux-amd64", None, "tool"))
        .await
        .unwrap();
    assert_eq!(run_program(&r.binary), "2.0.0\n");
}
