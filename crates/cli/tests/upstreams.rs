//! The built-in catalog's tor, sing-box and xray manifests, as shipped,
//! installed and started through the real binary from loopback mirrors that
//! lay releases out as each upstream publishes them. Only the mirror's
//! address changes (and, for tor, the signing key: the mirror's sums file is
//! signed with a throwaway key, since nobody here holds the Tor Browser
//! Developers' secret key; and sing-box/xray instances bind loopback instead
//! of a per-instance network, which `instances.rs` tests).
//!
//! Where each layout comes from:
//! - **tor**: Tor Browser's expert bundle, `tor-expert-bundle-linux-x86_64-<v>.tar.gz`
//!   beside `sha256sums-signed-build.txt` and its detached signature
//!   `sha256sums-signed-build.txt.asc` in `torbrowser/<v>/` (dist.torproject.org,
//!   archive.torproject.org/tor-package-archive). Inside, per tor-browser-build's
//!   `projects/tor/build` and `projects/tor-expert-bundle/build`: `tor/tor` with
//!   the shared libraries it loads beside it (`libevent-2.1.so.7`, `libssl.so.3`,
//!   `libcrypto.so.3`; no RPATH, "to make RPATH unavailable"), and `data/` with
//!   `geoip` and `geoip6`. Here `tor/` holds Debian's `/usr/sbin/tor` and every
//!   non-glibc library `ldd` says it loads; pluggable transports and `debug/`
//!   are left out (hangar uses neither).
//! - **sing-box**: SagerNet/sing-box's `.github/workflows/build.yml` ("Set name",
//!   "Archive") and `.goreleaser.yaml` (`wrap_in_directory`, `checksum: disable:
//!   true`): `sing-box-<v>-linux-<arch>.tar.gz` holding the directory
//!   `sing-box-<v>-linux-<arch>/` with `sing-box` and `LICENSE`, no checksums
//!   file; GitHub's release API gives each asset a `digest`.
//! - **xray**: XTLS/Xray-core's `.github/workflows/release.yml` ("Create ZIP
//!   archive": `zip -9vr Xray-<friendly name>.zip .` over `xray`, `geoip.dat`,
//!   `geosite.dat`, `README.md`, `LICENSE`, and `Xray-<name>.zip.dgst` from
//!   `openssl dgst -md5/-sha1/-sha256/-sha512 … | sed 's/([^)]*)//g'`) and
//!   `.github/build/friendly-filenames.json` (`linux-amd64` → `linux-64`). The
//!   `.dat` files here are stand-ins: the generated config uses neither.
//!
//! Real binaries: Debian's `tor`, Debian's `v2ray` (as `xray`; the generator
//! keeps to fields both read), and a real `sing-box` when one is found
//! (`$HANGAR_TEST_SING_BOX` or `sing-box` on the PATH; `.ci/run` provides it).
//! Tests that lack one say why they skip.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;
use serde_json::{json, Value};

fn find(bin: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.is_file())
}

/// `python3 -m http.server` on loopback over a directory tree; killed on drop.
struct Mirror {
    child: Child,
    root: PathBuf,
    port: u16,
}

impl Mirror {
    fn serve(root: &Path) -> Mirror {
        std::fs::create_dir_all(root).unwrap();
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        assert!(wait_for(LONG, || TcpStream::connect(("127.0.0.1", port)).is_ok()));
        Mirror {
            child,
            root: root.to_path_buf(),
            port,
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A file at `path` (below the root) on the mirror.
    fn put(&self, path: &str, body: &[u8]) -> PathBuf {
        let p = self.root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, body).unwrap();
        p
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sh(cmd: &mut Command) -> Vec<u8> {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

fn sha256_hex(p: &Path) -> String {
    let out = sh(Command::new("sha256sum").arg(p));
    String::from_utf8(out).unwrap()[..64].to_string()
}

/// The repo's manifest for `id`, as shipped.
fn shipped(id: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../catalog/{id}/manifest.json"));
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn catalog(s: &Path, id: &str, m: &Value) -> PathBuf {
    let dir = s.join("catalog").join(id);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec_pretty(m).unwrap(),
    )
    .unwrap();
    s.join("catalog")
}

fn config(s: &Path, range: &str) -> PathBuf {
    let cfg = s.join("hangar.toml");
    std::fs::write(&cfg, format!("[daemon]\nport_range = \"{range}\"\n")).unwrap();
    cfg
}

/// Create an instance; it must run and be healthy. Its JSON.
fn create(data: &Path, id: &str, sets: &[&str]) -> Value {
    let mut args = vec!["instance", "create", id, "one", "--json"];
    for set in sets {
        args.push("--set");
        args.push(set);
    }
    let o = run(data, &args);
    assert!(o.status.success(), "create: {}\n{}", stderr(&o), stdout(&o));
    let v = json(&o);
    assert_eq!(v["state"], "running", "{v}");
    let process = v["process"].as_str().unwrap().to_string();
    assert!(
        wait_for(LONG, || json(&run(data, &["ps", &process, "--json"]))[0]
            ["health"]
            == "healthy"),
        "{process} becomes healthy: {}",
        json(&run(data, &["ps", &process, "--json"]))
    );
    v
}

fn pid_of(data: &Path, v: &Value) -> u32 {
    let process = v["process"].as_str().unwrap();
    let ps = json(&run(data, &["ps", process, "--json"]));
    ps[0]["pid"].as_u64().expect("a pid") as u32
}

fn delete(data: &Path, v: &Value) {
    let o = run(data, &["instance", "delete", "one"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!Path::new(v["dir"].as_str().unwrap()).exists());
    assert_eq!(json(&run(data, &["ps", "--json"])), json!([]));
}

fn installed(data: &Path) -> Value {
    json(&run(data, &["installed", "--json"]))[0].clone()
}

// ---------------------------------------------------------------------------
// tor
// ---------------------------------------------------------------------------

/// A throwaway GnuPG home: a signer with an RSA primary key that certifies and
/// a signing subkey (the Tor Browser Developers key's shape).
struct Gpg {
    home: Scratch,
}

impl Gpg {
    fn new() -> Option<Gpg> {
        if Command::new("gpg").arg("--version").output().is_err() {
            eprintln!("skipped: gpg is not installed (apt-get install gpg); .ci/run installs it");
            return None;
        }
        Some(Gpg {
            home: Scratch::new("gpg"),
        })
    }

    fn gpg(&self, args: &[&str]) -> Vec<u8> {
        sh(Command::new("gpg")
            .env("GNUPGHOME", self.home.path())
            .args([
                "--batch",
                "--no-tty",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ])
            .args(args))
    }

    /// The signer's (primary fingerprint, armored public key); signatures
    /// are made by its subkey.
    fn signer(&self) -> (String, String) {
        let uid = "Mirror Test Signer <signer@example.invalid>";
        self.gpg(&["--quick-gen-key", uid, "rsa2048", "cert", "1y"]);
        let list = String::from_utf8(self.gpg(&["--with-colons", "--list-keys", uid])).unwrap();
        let fpr = list
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .unwrap()
            .to_string();
        self.gpg(&["--quick-add-key", &fpr, "rsa2048", "sign", "1y"]);
        let public = String::from_utf8(self.gpg(&["--armor", "--export", &fpr])).unwrap();
        (fpr, public)
    }

    fn detach_sign(&self, file: &Path, out: &Path) {
        self.gpg(&[
            "--armor",
            "--detach-sign",
            "--output",
            out.to_str().unwrap(),
            file.to_str().unwrap(),
        ]);
    }
}

/// `ldd`'s resolved libraries of `bin`, glibc's own left out (the bundle
/// ships what the host may lack, not the C library).
fn loaded_libraries(bin: &Path) -> Option<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(bin).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let glibc = [
        "libc.so",
        "libm.so",
        "libpthread.so",
        "libdl.so",
        "librt.so",
        "libresolv.so",
    ];
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(" => ").map(|(_, r)| r.trim()))
            .filter_map(|r| r.split(" (").next())
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                !glibc.iter().any(|g| n.starts_with(g))
            })
            .collect(),
    )
}

/// The three libraries the real bundle ships (tor-browser-build's
/// `projects/tor/build`), as this host has them.
fn bundled_by_upstream(libs: &[PathBuf]) -> Vec<PathBuf> {
    libs.iter()
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            ["libevent-2.1.so.7", "libssl.so.3", "libcrypto.so.3"].contains(&n.as_ref())
        })
        .cloned()
        .collect()
}

/// Whether this process may make a mount namespace (root, `unshare` present).
fn can_hide_libraries() -> bool {
    rustix::process::geteuid().is_root()
        && Command::new("unshare")
            .args(["--mount", "--propagation", "private", "true"])
            .status()
            .is_ok_and(|s| s.success())
}

/// `sh -c` inside a private mount namespace where `hide`'s files read as
/// empty (a host without those libraries), then `exec` of `argv`.
fn without_libraries(hide: &[PathBuf], argv: &[&str]) -> Command {
    let mut script = String::new();
    for h in hide {
        script.push_str(&format!(
            "mount --bind /dev/null '{}' || exit 97; ",
            h.display()
        ));
    }
    script.push_str("exec \"$@\"");
    let mut c = Command::new("unshare");
    c.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "sh",
    ]);
    c.args(argv);
    c
}

#[test]
fn the_tor_expert_bundle_installs_signed_and_runs_on_its_own_libraries() {
    if std::env::consts::ARCH != "x86_64" {
        eprintln!(
            "skipped: the catalog's tor bundle test builds linux-x86_64 from this host's tor"
        );
        return;
    }
    let Some(tor) = find("tor") else {
        eprintln!("skipped: tor is not installed (apt-get install tor); .ci/run installs it");
        return;
    };
    let Some(libs) = loaded_libraries(&tor) else {
        eprintln!("skipped: ldd cannot list tor's libraries");
        return;
    };
    let Some(gpg) = Gpg::new() else { return };
    let s = Scratch::new("up-tor");
    let mirror = Mirror::serve(&s.path().join("mirror"));

    // The bundle: tor/ with the binary and its libraries, data/ with geoip.
    let version = shipped("tor")["version"].as_str().unwrap().to_string();
    let stage = s.path().join("stage");
    std::fs::create_dir_all(stage.join("tor")).unwrap();
    std::fs::create_dir_all(stage.join("data")).unwrap();
    std::fs::copy(&tor, stage.join("tor/tor")).unwrap();
    for l in &libs {
        // Copied as the file the link names, under the soname tor asks for.
        std::fs::copy(l, stage.join("tor").join(l.file_name().unwrap())).unwrap();
    }
    for g in ["geoip", "geoip6"] {
        let from = Path::new("/usr/share/tor").join(g);
        if from.is_file() {
            std::fs::copy(&from, stage.join("data").join(g)).unwrap();
        }
    }
    let dir = format!("tor-package-archive/torbrowser/{version}");
    let bundle = format!("tor-expert-bundle-linux-x86_64-{version}.tar.gz");
    let tarball = mirror.root.join(&dir).join(&bundle);
    std::fs::create_dir_all(tarball.parent().unwrap()).unwrap();
    sh(Command::new("tar")
        .arg("czf")
        .arg(&tarball)
        .arg("-C")
        .arg(&stage)
        .args(["tor", "data"]));
    // The signed sums list every file of the release directory; a few
    // neighbours of the bundle's line stand for the rest.
    let sums = format!(
        "{}  tor-browser-linux-x86_64-{version}.tar.xz\n{}  {bundle}\n{}  tor-expert-bundle-windows-x86_64-{version}.tar.gz\n",
        "1".repeat(64),
        sha256_hex(&tarball),
        "2".repeat(64),
    );
    let sums_path = mirror.put(
        &format!("{dir}/sha256sums-signed-build.txt"),
        sums.as_bytes(),
    );
    let (fpr, public) = gpg.signer();
    gpg.detach_sign(
        &sums_path,
        &mirror
            .root
            .join(&dir)
            .join("sha256sums-signed-build.txt.asc"),
    );

    // The shipped manifest, pointed at the mirror and the mirror's signer.
    let mut m = shipped("tor");
    let pattern = m["source"]["asset_pattern"].as_str().unwrap().to_string();
    assert!(
        pattern.starts_with("https://archive.torproject.org/"),
        "{pattern}"
    );
    m["source"]["asset_pattern"] =
        json!(pattern.replace("https://archive.torproject.org", &mirror.base()));
    m["source"]["verification"]["checksums_openpgp"]["fingerprint"] = json!(fpr);
    m["source"]["verification"]["checksums_openpgp"]["public_key"] = json!(public);
    assert_eq!(m["binary"]["env"]["LD_LIBRARY_PATH"], "{{install_dir}}/tor");
    let cat = catalog(s.path(), "tor", &m);
    let cfg = config(s.path(), "21800-21899");
    let data = s.path().join("data");

    // Where the host's libraries can be hidden (root: a mount namespace), the
    // bundle runs only through the manifest's environment, as on a host
    // without them; show that first.
    let hide = if can_hide_libraries() {
        let hide = bundled_by_upstream(&libs);
        assert!(
            !hide.is_empty(),
            "tor loads libevent, libssl and libcrypto: {libs:?}"
        );
        let bare = stage.join("tor/tor");
        let o = without_libraries(&hide, &[bare.to_str().unwrap(), "--version"])
            .output()
            .unwrap();
        assert!(
            !o.status.success(),
            "the bundle's tor runs without its libraries?"
        );
        assert_ne!(
            o.status.code(),
            Some(97),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let o = without_libraries(&hide, &[bare.to_str().unwrap(), "--version"])
            .env("LD_LIBRARY_PATH", stage.join("tor"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        hide
    } else {
        eprintln!(
            "note: not root or no unshare: the host's libevent/libssl/libcrypto stay visible; \
             the test still checks tor loaded the bundle's copies"
        );
        Vec::new()
    };
    let _d = if hide.is_empty() {
        Served::start(
            &data,
            &[
                "-c",
                cfg.to_str().unwrap(),
                "--catalog",
                cat.to_str().unwrap(),
            ],
        )
    } else {
        let hangar = env!("CARGO_BIN_EXE_hangar");
        let child = without_libraries(
            &hide,
            &[
                hangar,
                "--data-dir",
                data.to_str().unwrap(),
                "serve",
                "--http",
                "",
                "-c",
                cfg.to_str().unwrap(),
                "--catalog",
                cat.to_str().unwrap(),
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
        Served::adopt(child, &data)
    };

    // Installed from the mirror, its sums file's signature checked.
    let v = create(&data, "tor", &["disable_network=true"]);
    let inst = installed(&data);
    assert_eq!(inst["id"], "tor", "{inst}");
    assert_eq!(inst["verified"], true, "{inst}");
    assert_eq!(inst["signed"], true, "{inst}");
    let install_dir = data.join("features/tor").join(&version);
    assert!(install_dir.join("tor/libevent-2.1.so.7").is_file());
    assert!(install_dir.join("data").is_dir());

    // The running tor got the manifest's environment and loaded the
    // bundle's libraries, not the host's.
    let pid = pid_of(&data, &v);
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let want = format!("LD_LIBRARY_PATH={}", install_dir.join("tor").display());
    assert!(
        environ.split(|b| *b == 0).any(|e| e == want.as_bytes()),
        "tor's environment has {want}"
    );
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    for lib in ["libevent-2.1.so.7", "libssl.so.3", "libcrypto.so.3"] {
        let from_bundle = install_dir.join("tor").join(lib);
        assert!(
            maps.contains(from_bundle.to_str().unwrap()),
            "tor maps {} from the bundle",
            from_bundle.display()
        );
    }
    delete(&data, &v);
}

/// A sums file signed by another key than the pinned one is refused before
/// anything is installed or allocated.
#[test]
fn a_tor_bundle_signed_by_another_key_is_refused() {
    if std::env::consts::ARCH != "x86_64" {
        eprintln!("skipped: the catalog's tor manifest has no bundle for this host here");
        return;
    }
    let Some(gpg) = Gpg::new() else { return };
    let s = Scratch::new("up-tor-key");
    let mirror = Mirror::serve(&s.path().join("mirror"));
    let version = shipped("tor")["version"].as_str().unwrap().to_string();
    let dir = format!("tor-package-archive/torbrowser/{version}");
    let bundle = format!("tor-expert-bundle-linux-x86_64-{version}.tar.gz");
    let tarball = mirror.put(&format!("{dir}/{bundle}"), b"not reached");
    let sums = format!("{}  {bundle}\n", sha256_hex(&tarball));
    let sums_path = mirror.put(
        &format!("{dir}/sha256sums-signed-build.txt"),
        sums.as_bytes(),
    );
    gpg.signer();
    gpg.detach_sign(
        &sums_path,
        &mirror
            .root
            .join(&dir)
            .join("sha256sums-signed-build.txt.asc"),
    );
    // The shipped manifest, pinning the real Tor Browser Developers key.
    let mut m = shipped("tor");
    let pattern = m["source"]["asset_pattern"].as_str().unwrap().to_string();
    m["source"]["asset_pattern"] =
        json!(pattern.replace("https://archive.torproject.org", &mirror.base()));
    let cat = catalog(s.path(), "tor", &m);
    let data = s.path().join("data");
    let o = hangar()
        .arg("--data-dir")
        .arg(&data)
        .args(["--catalog", cat.to_str().unwrap(), "install", "tor"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", stdout(&o));
    let err = stderr(&o) + &stdout(&o);
    assert!(err.contains("VERIFY_SIGNATURE_INVALID"), "{err}");
    assert!(err.contains("does not pin"), "{err}");
    assert!(!data.join("features/tor").join(&version).exists());
}

// ---------------------------------------------------------------------------
// sing-box and xray: GitHub releases
// ---------------------------------------------------------------------------

/// Debian's `go` arch for this host, and the canonical one.
fn go_arch() -> Option<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => Some("amd64"),
        "aarch64" => Some("arm64"),
        _ => None,
    }
}

/// A release on the mirror: its assets under
/// `/{owner}/{repo}/releases/download/{tag}/` and GitHub's answer for
/// `GET /api/repos/{owner}/{repo}/releases/tags/{tag}` naming each with its
/// `digest`.
fn github_release(
    mirror: &Mirror,
    owner: &str,
    repo: &str,
    tag: &str,
    assets: &[(String, PathBuf)],
) {
    let mut listed = Vec::new();
    for (name, file) in assets {
        let path = format!("{owner}/{repo}/releases/download/{tag}/{name}");
        let dest = mirror.root.join(&path);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(file, &dest).unwrap();
        listed.push(json!({
            "name": name,
            "browser_download_url": format!("https://github.com/{path}"),
            "state": "uploaded",
            "size": std::fs::metadata(file).unwrap().len(),
            "digest": format!("sha256:{}", sha256_hex(file)),
        }));
    }
    let release = json!({ "tag_name": tag, "name": tag, "draft": false, "prerelease": false, "assets": listed });
    mirror.put(
        &format!("api/repos/{owner}/{repo}/releases/tags/{tag}"),
        release.to_string().as_bytes(),
    );
}

fn sing_box_binary() -> Option<PathBuf> {
    std::env::var_os("HANGAR_TEST_SING_BOX")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| find("sing-box"))
}

#[test]
fn the_sing_box_release_installs_by_github_digest_and_runs() {
    let Some(arch) = go_arch() else {
        eprintln!("skipped: no sing-box release layout for this architecture here");
        return;
    };
    let Some(bin) = sing_box_binary() else {
        eprintln!("skipped: no sing-box binary (set HANGAR_TEST_SING_BOX or put sing-box on the PATH); .ci/run provides one");
        return;
    };
    let s = Scratch::new("up-sing-box");
    let mirror = Mirror::serve(&s.path().join("mirror"));
    let version = shipped("sing-box")["version"].as_str().unwrap().to_string();
    let name = format!("sing-box-{version}-linux-{arch}");
    let stage = s.path().join("stage").join(&name);
    std::fs::create_dir_all(&stage).unwrap();
    std::fs::copy(&bin, stage.join("sing-box")).unwrap();
    std::fs::write(stage.join("LICENSE"), "GNU GENERAL PUBLIC LICENSE\n").unwrap();
    let tarball = s.path().join(format!("{name}.tar.gz"));
    sh(Command::new("tar")
        .arg("czf")
        .arg(&tarball)
        .arg("-C")
        .arg(s.path().join("stage"))
        .arg(&name));
    github_release(
        &mirror,
        "SagerNet",
        "sing-box",
        &format!("v{version}"),
        &[(format!("{name}.tar.gz"), tarball)],
    );

    let mut m = shipped("sing-box");
    assert_eq!(m["source"]["verification"]["github_digest"], true);
    m["source"]["api_base"] = json!(format!("{}/api", mirror.base()));
    m["source"]["download_base"] = json!(mirror.base());
    m["network"]["requires_vlan"] = json!(false);
    let cat = catalog(s.path(), "sing-box", &m);
    let cfg = config(s.path(), "21900-21999");
    let data = s.path().join("data");
    let _d = Served::start(
        &data,
        &[
            "-c",
            cfg.to_str().unwrap(),
            "--catalog",
            cat.to_str().unwrap(),
        ],
    );
    let v = create(&data, "sing-box", &[]);
    let inst = installed(&data);
    assert_eq!(inst["verified"], true, "{inst}");
    assert!(
        inst["binary"]
            .as_str()
            .unwrap()
            .ends_with(&format!("{name}/sing-box")),
        "{inst}"
    );
    delete(&data, &v);
}

#[test]
fn the_xray_zip_installs_by_its_dgst_file_and_runs() {
    let (Some(arch), Some(v2ray)) = (go_arch(), find("v2ray")) else {
        eprintln!("skipped: v2ray is not installed (apt-get install v2ray); .ci/run installs it");
        return;
    };
    let s = Scratch::new("up-xray");
    let mirror = Mirror::serve(&s.path().join("mirror"));
    let m0 = shipped("xray");
    let version = m0["version"].as_str().unwrap().to_string();
    let friendly = m0["source"]["arch_names"][arch]
        .as_str()
        .unwrap()
        .to_string();
    let zip_name = format!("Xray-linux-{friendly}.zip");
    let stage = s.path().join("build_assets");
    std::fs::create_dir_all(&stage).unwrap();
    std::fs::copy(&v2ray, stage.join("xray")).unwrap();
    std::fs::write(
        stage.join("geoip.dat"),
        b"stand-in: not read by the generated config\n",
    )
    .unwrap();
    std::fs::write(
        stage.join("geosite.dat"),
        b"stand-in: not read by the generated config\n",
    )
    .unwrap();
    std::fs::write(stage.join("README.md"), b"# Project X\n").unwrap();
    std::fs::write(
        stage.join("LICENSE"),
        b"Mozilla Public License Version 2.0\n",
    )
    .unwrap();
    let zip = s.path().join(&zip_name);
    // `zip -9vr ../Xray-<name>.zip .` from inside build_assets, with Python's
    // zipfile where zip is missing.
    let packed = Command::new("zip")
        .arg("-9qr")
        .arg(&zip)
        .arg(".")
        .current_dir(&stage)
        .status()
        .is_ok_and(|s| s.success());
    if !packed {
        sh(Command::new("python3")
            .args([
                "-c",
                "import os,sys,zipfile\nz=zipfile.ZipFile(sys.argv[1],'w',zipfile.ZIP_DEFLATED)\nfor n in sorted(os.listdir(sys.argv[2])):\n  z.write(os.path.join(sys.argv[2],n),n)\nz.close()",
            ])
            .arg(&zip)
            .arg(&stage));
    }
    // The .dgst as the workflow writes it.
    let mut dgst = String::new();
    for method in ["md5", "sha1", "sha256", "sha512"] {
        let out = Command::new("openssl")
            .args(["dgst", &format!("-{method}")])
            .arg(format!("./{zip_name}"))
            .current_dir(s.path())
            .output();
        match out {
            Ok(o) if o.status.success() => {
                let line = String::from_utf8(o.stdout).unwrap();
                // sed 's/([^)]*)//g'
                let (head, tail) = line.split_once('(').unwrap();
                let (_, rest) = tail.split_once(')').unwrap();
                dgst.push_str(&format!("{head}{rest}"));
            }
            _ if method == "sha256" => dgst.push_str(&format!("SHA2-256= {}\n", sha256_hex(&zip))),
            _ => {}
        }
    }
    assert!(
        dgst.contains(&format!("SHA2-256= {}", sha256_hex(&zip))),
        "{dgst}"
    );
    let dgst_file = s.path().join(format!("{zip_name}.dgst"));
    std::fs::write(&dgst_file, &dgst).unwrap();
    github_release(
        &mirror,
        "XTLS",
        "Xray-core",
        &format!("v{version}"),
        &[
            (zip_name.clone(), zip),
            (format!("{zip_name}.dgst"), dgst_file),
        ],
    );

    let mut m = m0.clone();
    m["source"]["api_base"] = json!(format!("{}/api", mirror.base()));
    m["source"]["download_base"] = json!(mirror.base());
    m["network"]["requires_vlan"] = json!(false);
    let cat = catalog(s.path(), "xray", &m);
    let cfg = config(s.path(), "22000-22099");
    let data = s.path().join("data");
    let _d = Served::start(
        &data,
        &[
            "-c",
            cfg.to_str().unwrap(),
            "--catalog",
            cat.to_str().unwrap(),
        ],
    );
    let v = create(&data, "xray", &[]);
    let inst = installed(&data);
    assert_eq!(inst["verified"], true, "{inst}");
    let dir = data.join("features/xray").join(&version);
    for f in ["xray", "geoip.dat", "geosite.dat", "LICENSE", "README.md"] {
        assert!(dir.join(f).is_file(), "{f} installed");
    }
    delete(&data, &v);
}
