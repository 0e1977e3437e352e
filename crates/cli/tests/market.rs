//! The marketplace commands as a real binary: the built-in catalog works
//! offline, installs are verified and switch `current`, errors carry codes and
//! stable exit codes, and a catalog directory can replace the built-in one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "hangar-market-{tag}-{}-{}",
            std::process::id(),
            Instant::now().elapsed().subsec_nanos()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn hangar(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hangar"))
        .env_remove("HANGAR_CATALOG")
        .env_remove("HANGAR_LOG")
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .expect("run hangar")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

#[test]
fn built_in_catalog_installs_offline_and_switches_versions() {
    let t = TempDir::new("builtin");
    let data = t.0.join("data");

    let list = hangar(&data, &["catalog", "list", "--json"]);
    assert!(list.status.success(), "{}", stderr(&list));
    let ids: Vec<String> = json(&list)
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["demo", "sing-box", "tor", "xray"]);

    let search = hangar(&data, &["catalog", "search", "proxy"]);
    assert!(stdout(&search).contains("sing-box"), "{}", stdout(&search));
    let none = hangar(&data, &["catalog", "search", "no-such-word-anywhere"]);
    assert_eq!(none.status.code(), Some(4));

    // Progress goes to stderr as plain lines when it is not a terminal.
    let old = hangar(&data, &["install", "demo@1.0.0"]);
    assert!(old.status.success(), "{}", stderr(&old));
    assert!(stderr(&old).contains("downloaded"), "{}", stderr(&old));
    assert!(stderr(&old).contains("verifying"), "{}", stderr(&old));
    let new = hangar(&data, &["install", "demo", "--json"]);
    assert!(new.status.success(), "{}", stderr(&new));
    let rec = json(&new);
    assert_eq!(rec["version"], "1.1.0");
    assert_eq!(rec["verified"], true);
    let bin = PathBuf::from(rec["binary"].as_str().unwrap());
    // The demo binary is a long-running shell script: check that it is the
    // right version and executable rather than running it.
    let body = std::fs::read_to_string(&bin).unwrap();
    assert!(body.contains("hangar-demo 1.1.0"), "{body}");
    use std::os::unix::fs::PermissionsExt;
    assert_ne!(
        std::fs::metadata(&bin).unwrap().permissions().mode() & 0o111,
        0
    );

    let installed = json(&hangar(&data, &["installed", "--json"]));
    let rows: Vec<(String, bool)> = installed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["version"].as_str().unwrap().to_string(),
                r["current"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [("1.0.0".to_string(), false), ("1.1.0".to_string(), true)]
    );

    // Back to 1.0.0 without a download: it is installed already.
    let back = hangar(&data, &["install", "demo@1.0.0"]);
    assert!(back.status.success());
    assert!(!stderr(&back).contains("downloaded"), "{}", stderr(&back));
    assert_eq!(
        std::fs::read_link(data.join("features/demo/current")).unwrap(),
        Path::new("1.0.0")
    );

    let gone = hangar(&data, &["uninstall", "demo@1.0.0"]);
    assert!(gone.status.success(), "{}", stderr(&gone));
    assert_eq!(
        std::fs::read_link(data.join("features/demo/current")).unwrap(),
        Path::new("1.1.0"),
        "current moves to the version left"
    );
    let again = hangar(&data, &["uninstall", "demo@1.0.0"]);
    assert_eq!(again.status.code(), Some(4));
    assert!(
        stderr(&again).contains("INSTALL_NOT_FOUND"),
        "{}",
        stderr(&again)
    );
    assert!(hangar(&data, &["uninstall", "demo"]).status.success());
    assert!(!data.join("features/demo").exists());
}

#[test]
fn errors_have_codes_hints_and_exit_codes() {
    let t = TempDir::new("errors");
    let data = t.0.join("data");
    let typo = hangar(&data, &["install", "sing-bx"]);
    assert_eq!(typo.status.code(), Some(4));
    assert!(
        stderr(&typo).contains("FEATURE_NOT_FOUND"),
        "{}",
        stderr(&typo)
    );
    assert!(
        stderr(&typo).contains("did you mean \"sing-box\""),
        "{}",
        stderr(&typo)
    );

    let missing = hangar(&data, &["install", "demo@9.9.9"]);
    assert_eq!(missing.status.code(), Some(4), "{}", stderr(&missing));
    assert!(
        stderr(&missing).contains("FETCH_NOT_FOUND"),
        "{}",
        stderr(&missing)
    );
    assert!(
        !data.join("features/demo").exists(),
        "a failed install leaves nothing"
    );

    let badver = hangar(&data, &["install", "demo@../../etc"]);
    assert_eq!(badver.status.code(), Some(2), "{}", stderr(&badver));

    let nodir = hangar(
        &data,
        &["--catalog", "/nonexistent/catalog", "catalog", "list"],
    );
    assert_eq!(nodir.status.code(), Some(2));
    assert!(
        stderr(&nodir).contains("CATALOG_UNREADABLE"),
        "{}",
        stderr(&nodir)
    );
}

#[test]
fn a_catalog_dir_replaces_the_built_in_one_and_bad_manifests_are_named() {
    let t = TempDir::new("dir");
    let data = t.0.join("data");
    let cat = t.0.join("cat");
    std::fs::create_dir_all(cat.join("mine")).unwrap();
    std::fs::create_dir_all(cat.join("broken")).unwrap();
    std::fs::write(
        cat.join("mine/manifest.yaml"),
        "id: mine\nname: Mine\nversion: '0.1'\ndescription: my own thing\n\
         source: {type: file, asset_pattern: mine.bin, verification: {type: none}}\n\
         binary: {path: mine}\n",
    )
    .unwrap();
    std::fs::write(cat.join("mine/mine.bin"), "#!/bin/sh\necho mine\n").unwrap();
    std::fs::write(
        cat.join("broken/manifest.json"),
        r#"{"id":"broken","name":"B","version":"1","source":{"type":"url","asset_pattern":"x"},"binary":{"path":"b"},"modes":[{"id":"a"},{"id":"a"}]}"#,
    )
    .unwrap();
    let list = hangar(
        &data,
        &["--catalog", cat.to_str().unwrap(), "catalog", "list"],
    );
    assert!(list.status.success(), "{}", stderr(&list));
    assert!(stdout(&list).contains("mine"));
    assert!(
        !stdout(&list).contains("sing-box"),
        "the built-in catalog is replaced"
    );
    assert!(
        stderr(&list).contains("broken/manifest.json"),
        "{}",
        stderr(&list)
    );
    assert!(stderr(&list).contains("/modes/1/id"), "{}", stderr(&list));

    // Unverified: refused unless allowed.
    let refused = hangar(
        &data,
        &["--catalog", cat.to_str().unwrap(), "install", "mine"],
    );
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("VERIFY_UNVERIFIED"),
        "{}",
        stderr(&refused)
    );
    let ok = Command::new(env!("CARGO_BIN_EXE_hangar"))
        .env("HANGAR_CATALOG", &cat)
        .arg("--data-dir")
        .arg(&data)
        .args(["install", "mine", "--allow-unverified", "--json"])
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", stderr(&ok));
    let rec = json(&ok);
    assert_eq!(rec["verified"], false);
    let run = Command::new(rec["binary"].as_str().unwrap())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&run.stdout), "mine\n");
}

/// `catalog show` names the verification each built-in feature's download
/// would get on this machine: the Tor Browser Developers' signature on tor's
/// sums, GitHub's digest for sing-box, Xray's `.dgst` file.
#[test]
fn catalog_show_names_each_built_in_features_verification() {
    let d = TempDir::new("show");
    let o = hangar(&d.0, &["catalog", "show", "sing-box"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(
            "digest:     GitHub's, from https://api.github.com/repos/SagerNet/sing-box/releases/tags/v1.12.8"
        ),
        "{}",
        stdout(&o)
    );
    let o = hangar(&d.0, &["catalog", "show", "xray"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(".zip.dgst"), "{}", stdout(&o));
    if std::env::consts::ARCH == "x86_64" {
        let o = hangar(&d.0, &["catalog", "show", "tor"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let out = stdout(&o);
        assert!(
            out.contains("/torbrowser/14.5.8/sha256sums-signed-build.txt\n"),
            "{out}"
        );
        assert!(
            out.contains("sha256sums-signed-build.txt.asc (OpenPGP, key EF6E286DDA85EA2A4BA7DE684E2C6E8793298290)"),
            "{out}"
        );
    }
}
