//! From a manifest to an install, end to end, against a real HTTP server on
//! loopback: the issue's `url` source shape, a `github-release` source whose API
//! and download bases point at the server (with `latest`), and a catalog on disk
//! with a broken manifest beside good ones.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use hangar_feature::catalog::{self, manifest, Catalog, Platform};
use hangar_fetch::{DownloadOptions, Downloader, Installer};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A loopback HTTP/1.1 server that serves fixed bodies by path and logs paths.
struct Server {
    base: String,
    log: Arc<Mutex<Vec<String>>>,
}

async fn serve(files: HashMap<String, Vec<u8>>) -> Server {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", l.local_addr().expect("addr"));
    let log = Arc::new(Mutex::new(Vec::new()));
    let files = Arc::new(files);
    let log2 = Arc::clone(&log);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let files = Arc::clone(&files);
            let log = Arc::clone(&log2);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                log.lock().unwrap().push(path.clone());
                let resp = match files.get(&path) {
                    Some(body) => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(body);
                        r
                    }
                    None => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = s.write_all(&resp).await;
            });
        }
    });
    Server { base, log }
}

fn tar_gz(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, body, mode) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(*mode);
        h.set_cksum();
        b.append_data(&mut h, name, *body).expect("append");
    }
    let raw = b.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw).expect("gz");
    gz.finish().expect("gz")
}

fn sha(b: &[u8]) -> String {
    hangar_fetch::verify::hex(&Sha256::digest(b))
}

fn linux_amd64() -> Platform {
    Platform {
        os: "linux".into(),
        arch: "amd64".into(),
    }
}

fn installer(root: &Path) -> Installer {
    Installer::new(
        root,
        Downloader::new(DownloadOptions::default()).expect("downloader"),
    )
}

#[tokio::test]
async fn the_issue_url_source_shape_installs_from_loopback() {
    let archive = tar_gz(&[("demo", b"#!/bin/sh\necho demo\n", 0o755)]);
    let name = "demo-1.0.0-linux-amd64.tar.gz";
    let sums = format!("{}  {name}\n{}  other.tar.gz\n", sha(&archive), sha(b"x"));
    let mut files = HashMap::new();
    files.insert(format!("/{name}"), archive.clone());
    files.insert("/checksums.txt".to_string(), sums.into_bytes());
    let srv = serve(files).await;
    let port = srv.base.rsplit(':').next().unwrap_or_default().to_string();
    // The exact shape the issue gives, with the port of our server.
    let m = manifest::parse(
        &format!(
            r#"{{
              "id": "demo", "name": "Demo", "version": "1.0.0",
              "source": {{
                "type": "url",
                "asset_pattern": "http://127.0.0.1:{port}/demo-{{{{version}}}}-{{{{os}}}}-{{{{arch}}}}.tar.gz",
                "verification": {{ "type": "sha256", "checksums_asset": "checksums.txt" }}
              }},
              "binary": {{ "path": "demo" }}
            }}"#
        ),
        false,
    )
    .expect("manifest");
    let req = catalog::resolve(&m, Path::new("/unused"), "1.0.0", &linux_amd64()).expect("resolve");
    let tmp = tempfile::tempdir().expect("tmp");
    let done = installer(tmp.path())
        .install(req, &|_| {})
        .await
        .expect("install");
    assert!(done.verified);
    assert_eq!(done.sha256, sha(&archive));
    let meta = std::fs::metadata(&done.binary).expect("binary");
    use std::os::unix::fs::PermissionsExt;
    assert_ne!(
        meta.permissions().mode() & 0o111,
        0,
        "binary must be executable"
    );
    assert_eq!(
        std::fs::read_link(tmp.path().join("demo/current")).expect("current"),
        Path::new("1.0.0")
    );
    let log = srv.log.lock().unwrap().clone();
    assert_eq!(log, [format!("/{name}"), "/checksums.txt".to_string()]);
}

#[tokio::test]
async fn github_release_latest_through_a_configured_api_base() {
    let archive = tar_gz(&[
        ("tool-2.1.0/tool", b"#!/bin/sh\n", 0o755),
        ("tool-2.1.0/README", b"hi\n", 0o644),
    ]);
    let asset = "tool-linux-x86_64.tar.gz";
    let mut files = HashMap::new();
    files.insert(
        "/api/repos/acme/tool/releases/latest".to_string(),
        br#"{"tag_name": "release-2.1.0", "name": "2.1.0"}"#.to_vec(),
    );
    files.insert(
        format!("/dl/acme/tool/releases/download/release-2.1.0/{asset}"),
        archive.clone(),
    );
    files.insert(
        "/dl/acme/tool/releases/download/release-2.1.0/SHA256SUMS".to_string(),
        format!("{} *{asset}\n", sha(&archive)).into_bytes(),
    );
    let srv = serve(files).await;
    let m = manifest::from_value(serde_json::json!({
        "id": "tool", "name": "Tool", "version": "2.0.0",
        "source": {
            "type": "github-release", "owner": "acme", "repo": "tool",
            "api_base": format!("{}/api", srv.base),
            "download_base": format!("{}/dl", srv.base),
            "tag_pattern": "release-{{version}}",
            "asset_pattern": "tool-{{os}}-{{arch}}.tar.gz",
            "arch_names": { "amd64": "x86_64" },
            "verification": { "type": "sha256", "checksums_asset": "SHA256SUMS" }
        },
        "binary": { "path": "tool-{{version}}/tool", "architectures": ["amd64"] }
    }))
    .expect("manifest");
    let dl = Downloader::new(DownloadOptions::default()).expect("downloader");
    let latest = catalog::latest_version(&m, &dl).await.expect("latest");
    assert_eq!(latest, "2.1.0");
    let req = catalog::resolve(&m, Path::new("/unused"), &latest, &linux_amd64()).expect("resolve");
    let tmp = tempfile::tempdir().expect("tmp");
    let done = installer(tmp.path())
        .install(req, &|_| {})
        .await
        .expect("install");
    assert!(
        done.binary.ends_with("tool/2.1.0/tool-2.1.0/tool"),
        "{}",
        done.binary.display()
    );
    assert!(done.binary.is_file());
}

#[tokio::test]
async fn a_wrong_checksum_leaves_nothing_behind() {
    let archive = tar_gz(&[("demo", b"#!/bin/sh\n", 0o755)]);
    let mut files = HashMap::new();
    files.insert("/demo.tar.gz".to_string(), archive);
    files.insert(
        "/sums".to_string(),
        format!("{}  demo.tar.gz\n", sha(b"something else")).into_bytes(),
    );
    let srv = serve(files).await;
    let m = manifest::from_value(serde_json::json!({
        "id": "demo", "name": "Demo", "version": "1.0.0",
        "source": { "type": "url", "asset_pattern": format!("{}/demo.tar.gz", srv.base),
                    "verification": { "type": "sha256", "checksums_asset": format!("{}/sums", srv.base) } },
        "binary": { "path": "demo" }
    }))
    .expect("manifest");
    let req = catalog::resolve(&m, Path::new("/unused"), "1.0.0", &linux_amd64()).expect("resolve");
    let tmp = tempfile::tempdir().expect("tmp");
    let err = installer(tmp.path())
        .install(req, &|_| {})
        .await
        .expect_err("must fail");
    assert_eq!(err.code(), "VERIFY_CHECKSUM_MISMATCH");
    assert!(err
        .context()
        .iter()
        .any(|(k, v)| *k == "expected" && *v == sha(b"something else")));
    // Nothing remains: no version, no staging, no part file, no feature dir.
    let left: Vec<String> = walk(tmp.path());
    assert!(left.is_empty(), "{left:?}");
}

fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap_or(&p).display().to_string());
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            }
        }
    }
    out
}

#[test]
fn a_catalog_skips_a_broken_manifest_and_reports_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let good = tmp.path().join("good");
    let bad = tmp.path().join("bad");
    let yaml = tmp.path().join("yml");
    std::fs::create_dir_all(&good).unwrap();
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::create_dir_all(&yaml).unwrap();
    std::fs::write(
        good.join("manifest.json"),
        r#"{"id":"good","name":"Good","version":"1","source":{"type":"file","asset_pattern":"x","verification":{"type":"none"}},"binary":{"path":"x"}}"#,
    )
    .unwrap();
    std::fs::write(
        bad.join("manifest.json"),
        r#"{"id":"bad","name":"Bad","version":"1","source":{"type":"file","asset_pattern":"x-{{arhc}}"},"binary":{"path":"x"},"network":{"default_ports":[0]}}"#,
    )
    .unwrap();
    std::fs::write(
        yaml.join("manifest.yaml"),
        "id: yml\nname: From YAML\nversion: '2'\nsource: {type: file, asset_pattern: y, verification: {type: none}}\nbinary: {path: y}\n",
    )
    .unwrap();
    let cat = Catalog::load(&[tmp.path().to_path_buf()]).expect("load");
    let ids: Vec<&str> = cat.list().map(|e| e.manifest.id.as_str()).collect();
    assert_eq!(ids, ["good", "yml"]);
    assert_eq!(cat.problems().len(), 1);
    let (file, e) = &cat.problems()[0];
    assert!(file.ends_with("bad/manifest.json"));
    let text: Vec<String> = e.context.iter().map(|(_, v)| v.clone()).collect();
    assert!(
        text.iter()
            .any(|t| t.starts_with("/network/default_ports/0")),
        "{text:?}"
    );
    // Missing catalog directory: an error, not an empty catalog.
    let e = Catalog::load(&[tmp.path().join("nope")]).expect_err("missing dir");
    assert_eq!(e.code(), "CATALOG_UNREADABLE");
    // get() on a skipped manifest points at it.
    let e = cat.get("bad").expect_err("bad is skipped");
    assert!(
        e.context.iter().any(|(k, _)| k == "invalid_manifest"),
        "{e:?}"
    );
}

/// A GitHub-like mirror of one sing-box release, laid out as upstream
/// publishes it. Asset names and inner layout come from SagerNet/sing-box's
/// `.github/workflows/build.yml` ("Set name": `sing-box-<version>-<os>-<arch>`,
/// `v<goarm>` for arm; "Archive": that directory holding `LICENSE` and
/// `sing-box`, packed with `tar -czvf <dir>.tar.gz <dir>`) and `.goreleaser.yaml`
/// (`wrap_in_directory: true`, the same name template, `checksum: disable:
/// true`): no checksums file is published. The API answer is GitHub's
/// "Get a release by tag name" (`GET /repos/{owner}/{repo}/releases/tags/{tag}`)
/// with each asset's `name`, `browser_download_url` (github.com's, as the
/// real API answers; hangar builds its own URL from `download_base`) and
/// `digest`.
fn sing_box_mirror(version: &str, served: &[u8], digest_of: &[u8]) -> HashMap<String, Vec<u8>> {
    let tag = format!("v{version}");
    let dl = format!("/dl/SagerNet/sing-box/releases/download/{tag}");
    let mut files = HashMap::new();
    let mut assets = Vec::new();
    for arch in ["amd64", "arm64", "armv7", "386"] {
        let name = format!("sing-box-{version}-linux-{arch}.tar.gz");
        let body = if arch == "amd64" {
            served.to_vec()
        } else {
            tar_gz(&[])
        };
        let digest = if arch == "amd64" {
            sha(digest_of)
        } else {
            sha(&body)
        };
        assets.push(serde_json::json!({
            "name": name,
            "browser_download_url": format!("https://github.com/SagerNet/sing-box/releases/download/{tag}/{name}"),
            "content_type": "application/gzip",
            "state": "uploaded",
            "size": body.len(),
            "digest": format!("sha256:{digest}"),
        }));
        files.insert(format!("{dl}/{name}"), body);
    }
    files.insert(
        format!("/api/repos/SagerNet/sing-box/releases/tags/{tag}"),
        serde_json::json!({ "tag_name": tag, "name": tag, "draft": false, "assets": assets })
            .to_string()
            .into_bytes(),
    );
    files
}

fn sing_box_archive(version: &str, binary: &[u8]) -> Vec<u8> {
    let dir = format!("sing-box-{version}-linux-amd64");
    tar_gz(&[
        (
            &format!("{dir}/LICENSE"),
            b"GNU GENERAL PUBLIC LICENSE\n",
            0o644,
        ),
        (&format!("{dir}/sing-box"), binary, 0o755),
    ])
}

/// The built-in sing-box manifest, pointed at a mirror (as a user would with
/// `api_base` and `download_base`), everything else as shipped.
fn real_sing_box(base: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../catalog/sing-box/manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("manifest")).expect("json");
    m["source"]["api_base"] = serde_json::json!(format!("{base}/api"));
    m["source"]["download_base"] = serde_json::json!(format!("{base}/dl"));
    m
}

#[tokio::test]
async fn the_real_sing_box_manifest_installs_from_a_github_like_mirror() {
    let released = sing_box_archive("1.12.8", b"#!/bin/sh\necho sing-box\n");
    let files = sing_box_mirror("1.12.8", &released, &released);
    let srv = serve(files).await;
    let m = manifest::from_value(real_sing_box(&srv.base)).expect("the real manifest is valid");
    assert_eq!(m.version, "1.12.8");
    let req =
        catalog::resolve(&m, Path::new("/unused"), &m.version, &linux_amd64()).expect("resolve");
    let tmp = tempfile::tempdir().expect("tmp");
    let done = installer(tmp.path())
        .install(req, &|_| {})
        .await
        .expect("sing-box installs from its mirror");
    assert!(done.verified, "verified against GitHub's digest");
    assert_eq!(done.sha256, sha(&released));
    assert!(done
        .binary
        .ends_with("sing-box/1.12.8/sing-box-1.12.8-linux-amd64/sing-box"));
    let log = srv.log.lock().unwrap().clone();
    assert!(
        log.contains(&"/api/repos/SagerNet/sing-box/releases/tags/v1.12.8".to_string()),
        "{log:?}"
    );
    assert!(!log.iter().any(|p| p.contains("checksums")), "{log:?}");
}

#[tokio::test]
async fn a_sing_box_asset_replaced_after_release_fails_its_pin_and_leaves_nothing() {
    let released = sing_box_archive("1.12.8", b"#!/bin/sh\necho released\n");
    let rebuilt = sing_box_archive("1.12.8", b"#!/bin/sh\necho rebuilt\n");
    // GitHub digests the new upload: its API agrees with the rebuilt asset.
    let srv = serve(sing_box_mirror("1.12.8", &rebuilt, &rebuilt)).await;
    let mut v = real_sing_box(&srv.base);
    v["source"]["verification"]["pinned"] =
        serde_json::json!({ "1.12.8": { "linux-amd64": sha(&released) } });
    let m = manifest::from_value(v).expect("manifest");
    let req =
        catalog::resolve(&m, Path::new("/unused"), "1.12.8", &linux_amd64()).expect("resolve");
    let tmp = tempfile::tempdir().expect("tmp");
    let err = installer(tmp.path())
        .install(req, &|_| {})
        .await
        .expect_err("a replaced asset must not install");
    assert_eq!(err.code(), "VERIFY_CHECKSUM_MISMATCH", "{err}");
    let ctx = |k: &str| {
        err.context()
            .iter()
            .find(|(key, _)| *key == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        ctx("asset").as_deref(),
        Some("sing-box-1.12.8-linux-amd64.tar.gz")
    );
    assert_eq!(ctx("expected"), Some(sha(&released)));
    assert_eq!(ctx("actual"), Some(sha(&rebuilt)));
    assert!(
        err.hint_text()
            .unwrap_or_default()
            .contains("replaced upstream"),
        "{err:?}"
    );
    let left: Vec<String> = walk(tmp.path());
    assert!(left.is_empty(), "{left:?}");
}
