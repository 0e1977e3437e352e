//! Shared by the integration tests: a tiny HTTP/1.1 server on 127.0.0.1 that
//! serves files from memory (with `Range`, dropped connections, stalls and
//! 503s on request, and a request log), archive builders (tar.gz, tar.xz,
//! zip, including entries the `tar` crate's own builder refuses to write), and
//! the malicious archives the extractor must refuse.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hangar_fetch::extract::Limits;
use hangar_fetch::{DownloadOptions, ErrorKind};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------
// HTTP server
// ---------------------------------------------------------------------------

/// How one path is served.
#[derive(Clone, Debug, Default)]
pub struct Route {
    /// The file.
    pub body: Vec<u8>,
    /// On the first request that gets a body: close the connection after this
    /// many body bytes (the head announces the full length).
    pub drop_after: Option<usize>,
    /// Answer 200 with the whole file even to a `Range` request.
    pub ignore_range: bool,
    /// Send the head, then nothing for this long, then close.
    pub stall: Option<Duration>,
    /// Read the request, then answer nothing for this long, then close.
    pub stall_head: Option<Duration>,
    /// Answer 503 to this many requests first.
    pub fail_first: u32,
    /// Send the body in pieces of this size with this pause before each.
    pub trickle: Option<(usize, Duration)>,
}

impl Route {
    /// A plain file.
    pub fn new(body: impl Into<Vec<u8>>) -> Route {
        Route {
            body: body.into(),
            ..Route::default()
        }
    }
}

/// One request as the server saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
}

struct RouteState {
    route: Route,
    hits: u32,
    dropped: bool,
}

#[derive(Default)]
struct Inner {
    routes: Mutex<HashMap<String, RouteState>>,
    log: Mutex<Vec<Req>>,
}

/// The server; it stops with the test's runtime.
pub struct Server {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl Server {
    pub async fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Inner::default());
        let i = inner.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let i = i.clone();
                tokio::spawn(async move {
                    let _ = handle(&i, stream).await;
                });
            }
        });
        Server { addr, inner }
    }

    /// Serve `route` at `path` (which starts with `/`).
    pub fn route(&self, path: &str, route: Route) {
        self.inner.routes.lock().unwrap().insert(
            path.to_string(),
            RouteState {
                route,
                hits: 0,
                dropped: false,
            },
        );
    }

    /// Serve a plain file at `path`.
    pub fn file(&self, path: &str, body: impl Into<Vec<u8>>) {
        self.route(path, Route::new(body));
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Req> {
        self.inner.log.lock().unwrap().clone()
    }

    /// The requests for one path.
    pub fn requests(&self, path: &str) -> Vec<Req> {
        self.log().into_iter().filter(|r| r.path == path).collect()
    }

    /// Wait until `path` was requested `n` times (panics after 5 s).
    pub async fn wait_for(&self, path: &str, n: usize) {
        let start = Instant::now();
        while self.requests(path).len() < n {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{path} was not requested {n} times"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn handle(inner: &Inner, stream: TcpStream) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut line = String::new();
    rd.read_line(&mut line).await?;
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or("").to_string();
    let path = words.next().unwrap_or("").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if rd.read_line(&mut h).await? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    inner.log.lock().unwrap().push(Req {
        method,
        path: path.clone(),
        range: range.clone(),
    });

    // Decide under the lock, write without it.
    let (route, fail, drop_now) = {
        let mut routes = inner.routes.lock().unwrap();
        match routes.get_mut(&path) {
            None => (None, false, false),
            Some(st) => {
                st.hits += 1;
                let fail = st.hits <= st.route.fail_first;
                let drop_now = !fail && st.route.drop_after.is_some() && !st.dropped;
                if drop_now {
                    st.dropped = true;
                }
                (Some(st.route.clone()), fail, drop_now)
            }
        }
    };
    let Some(route) = route else {
        return respond(&mut wr, "404 Not Found", &[], b"not found\n").await;
    };
    if fail {
        return respond(&mut wr, "503 Service Unavailable", &[], b"busy\n").await;
    }
    if let Some(d) = route.stall_head {
        tokio::time::sleep(d).await;
        return Ok(());
    }

    let len = route.body.len();
    let mut status = "200 OK";
    let mut start = 0usize;
    let mut extra = Vec::new();
    if let (Some(r), false) = (&range, route.ignore_range) {
        let from = r
            .strip_prefix("bytes=")
            .and_then(|r| r.split_once('-'))
            .and_then(|(a, _)| a.trim().parse::<usize>().ok())
            .expect("the tests only send `bytes=N-`");
        if from >= len {
            let cr = format!("Content-Range: bytes */{len}");
            return respond(&mut wr, "416 Range Not Satisfiable", &[cr], b"").await;
        }
        status = "206 Partial Content";
        start = from;
        extra.push(format!("Content-Range: bytes {from}-{}/{len}", len - 1));
    }
    let body = &route.body[start..];
    head(&mut wr, status, &extra, body.len()).await?;
    if let Some(d) = route.stall {
        wr.flush().await?;
        tokio::time::sleep(d).await;
        return Ok(());
    }
    let body = match (drop_now, route.drop_after) {
        (true, Some(n)) => &body[..n.min(body.len())],
        _ => body,
    };
    match route.trickle {
        Some((piece, pause)) => {
            for c in body.chunks(piece.max(1)) {
                tokio::time::sleep(pause).await;
                wr.write_all(c).await?;
                wr.flush().await?;
            }
        }
        None => wr.write_all(body).await?,
    }
    wr.flush().await?;
    wr.shutdown().await
}

async fn head(
    wr: &mut (impl AsyncWriteExt + Unpin),
    status: &str,
    extra: &[String],
    len: usize,
) -> std::io::Result<()> {
    let mut h = format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n");
    for e in extra {
        h.push_str(e);
        h.push_str("\r\n");
    }
    h.push_str("\r\n");
    wr.write_all(h.as_bytes()).await
}

async fn respond(
    wr: &mut (impl AsyncWriteExt + Unpin),
    status: &str,
    extra: &[String],
    body: &[u8],
) -> std::io::Result<()> {
    head(wr, status, extra, body.len()).await?;
    wr.write_all(body).await?;
    wr.flush().await?;
    wr.shutdown().await
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Short backoff for tests. The idle timeout is 1 s: short, yet long enough
/// that a loaded 2-core machine does not time out a healthy transfer; the
/// tests of timeouts use [`stall_opts`].
pub fn opts() -> DownloadOptions {
    DownloadOptions {
        allow_http: false,
        connect_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(1),
        attempts: 3,
        backoff: Duration::from_millis(20),
        progress_interval: Duration::from_millis(50),
    }
}

/// [`opts`] with a 300 ms idle timeout, for servers that stall.
pub fn stall_opts() -> DownloadOptions {
    DownloadOptions {
        idle_timeout: Duration::from_millis(300),
        ..opts()
    }
}

pub fn sha256_hex(b: &[u8]) -> String {
    hangar_fetch::verify::hex(&Sha256::digest(b))
}

/// Deterministic, not very compressible bytes.
pub fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Every path under `dir`, relative, sorted (directories end with `/`).
pub fn walk(dir: &Path) -> Vec<String> {
    fn go(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                out.push(format!("{rel}/"));
                go(root, &p, out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    go(dir, dir, &mut out);
    out.sort();
    out
}

pub fn has_context(e: &hangar_fetch::Error, key: &str) -> Option<String> {
    e.context()
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.clone())
}

// ---------------------------------------------------------------------------
// Archives
// ---------------------------------------------------------------------------

/// An archive entry. Names and link targets are written raw: `..` and
/// absolute paths included.
#[derive(Clone, Debug)]
pub enum Entry {
    File(String, Vec<u8>, u32),
    Dir(String),
    Symlink(String, String),
    Hardlink(String, String),
    Special(String, tar::EntryType),
}

pub fn file(name: &str, data: &[u8], mode: u32) -> Entry {
    Entry::File(name.into(), data.to_vec(), mode)
}
pub fn dir(name: &str) -> Entry {
    Entry::Dir(name.into())
}
pub fn symlink(name: &str, target: &str) -> Entry {
    Entry::Symlink(name.into(), target.into())
}
pub fn hardlink(name: &str, target: &str) -> Entry {
    Entry::Hardlink(name.into(), target.into())
}

/// Put `name` in the header as is (the builder's `set_path` refuses `..`).
fn raw_name(h: &mut tar::Header, name: &str) {
    let slot = &mut h.as_old_mut().name;
    assert!(name.len() < slot.len(), "test names fit the old header");
    slot.fill(0);
    slot[..name.len()].copy_from_slice(name.as_bytes());
}

pub fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        let data: &[u8] = match e {
            Entry::File(name, data, mode) => {
                raw_name(&mut h, name);
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                data
            }
            Entry::Dir(name) => {
                raw_name(&mut h, name);
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                &[]
            }
            Entry::Symlink(name, target) => {
                raw_name(&mut h, name);
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_link_name(target).unwrap();
                h.set_mode(0o777);
                &[]
            }
            Entry::Hardlink(name, target) => {
                raw_name(&mut h, name);
                h.set_entry_type(tar::EntryType::Link);
                h.set_link_name(target).unwrap();
                h.set_mode(0o644);
                &[]
            }
            Entry::Special(name, kind) => {
                raw_name(&mut h, name);
                h.set_entry_type(*kind);
                h.set_mode(0o644);
                &[]
            }
        };
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn xz(data: &[u8]) -> Vec<u8> {
    let mut w =
        lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(1)).unwrap();
    w.write_all(data).unwrap();
    w.finish().unwrap()
}

pub fn tar_gz(entries: &[Entry]) -> Vec<u8> {
    gz(&tar(entries))
}

pub fn tar_xz(entries: &[Entry]) -> Vec<u8> {
    xz(&tar(entries))
}

pub fn zip(entries: &[Entry]) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for e in entries {
        match e {
            Entry::File(name, data, mode) => {
                let o = SimpleFileOptions::default();
                // unix_permissions keeps 0o777 only: setuid or a file type
                // goes in the external attributes.
                let o = if *mode & !0o777 == 0 {
                    o.unix_permissions(*mode)
                } else if *mode & 0o170000 == 0 {
                    o.external_attributes((*mode | 0o100000) << 16)
                } else {
                    o.external_attributes(*mode << 16)
                };
                z.start_file(name.as_str(), o).unwrap();
                z.write_all(data).unwrap();
            }
            Entry::Dir(name) => z
                .add_directory(name.as_str(), SimpleFileOptions::default())
                .unwrap(),
            Entry::Symlink(name, target) => z
                .add_symlink(name.as_str(), target.as_str(), SimpleFileOptions::default())
                .unwrap(),
            other => panic!("no {other:?} in zip tests"),
        }
    }
    z.finish().unwrap().into_inner()
}

// ---------------------------------------------------------------------------
// The archives the extractor must refuse
// ---------------------------------------------------------------------------

pub struct Bad {
    /// What it tries.
    pub label: &'static str,
    /// The asset name (decides the format).
    pub asset: &'static str,
    pub bytes: Vec<u8>,
    pub kind: ErrorKind,
    pub limits: Limits,
}

/// A path outside any test directory that a bad archive names; must never appear.
pub const ABSOLUTE_EVIL: &str = "/tmp/hangar-fetch-test-absolute-evil";

pub fn bad_archives() -> Vec<Bad> {
    let ok = b"#!/bin/sh\nexit 0\n";
    let lim = Limits::default();
    let bad = |label, asset, bytes, kind| Bad {
        label,
        asset,
        bytes,
        kind,
        limits: lim,
    };
    vec![
        bad(
            "path traversal",
            "a.tar.gz",
            tar_gz(&[file("tool", ok, 0o755), file("../evil", b"x", 0o644)]),
            ErrorKind::UnsafePath,
        ),
        bad(
            "traversal in the middle",
            "a.tar.gz",
            tar_gz(&[dir("sub/"), file("sub/../../evil", b"x", 0o644)]),
            ErrorKind::UnsafePath,
        ),
        bad(
            "path traversal (xz)",
            "a.tar.xz",
            tar_xz(&[file("tool", ok, 0o755), file("../evil", b"x", 0o644)]),
            ErrorKind::UnsafePath,
        ),
        bad(
            "absolute path",
            "a.tar.gz",
            tar_gz(&[file("tool", ok, 0o755), file(ABSOLUTE_EVIL, b"x", 0o644)]),
            ErrorKind::UnsafePath,
        ),
        bad(
            "symlink out",
            "a.tar.gz",
            tar_gz(&[file("tool", ok, 0o755), symlink("link", "../../etc/passwd")]),
            ErrorKind::LinkOutside,
        ),
        bad(
            "nested symlink out",
            "a.tar.gz",
            tar_gz(&[file("tool", ok, 0o755), symlink("a/b/link", "../../../x")]),
            ErrorKind::LinkOutside,
        ),
        bad(
            "absolute symlink",
            "a.tar.gz",
            tar_gz(&[file("tool", ok, 0o755), symlink("link", "/etc/passwd")]),
            ErrorKind::LinkOutside,
        ),
        bad(
            "file written through a symlink to a directory",
            "a.tar.gz",
            tar_gz(&[
                dir("sub/"),
                symlink("d", "sub"),
                file("d/file", b"x", 0o644),
            ]),
            ErrorKind::UnsafePath,
        ),
        bad(
            "directory over a symlink",
            "a.tar.gz",
            tar_gz(&[dir("sub/"), symlink("d", "sub"), dir("d/")]),
            ErrorKind::UnsafePath,
        ),
        bad(
            // `a/l -> ..` looks like the root; `a/l/../..` is then two levels up.
            "`..` after a link in a link target",
            "a.tar.gz",
            tar_gz(&[
                file("tool", ok, 0o755),
                symlink("a/l", ".."),
                symlink("x", "a/l/../../etc/passwd"),
            ]),
            ErrorKind::LinkOutside,
        ),
        bad(
            "hard link to a path not extracted before",
            "a.tar.gz",
            tar_gz(&[
                file("tool", ok, 0o755),
                hardlink("h", "later"),
                file("later", b"x", 0o644),
            ]),
            ErrorKind::LinkOutside,
        ),
        bad(
            "hard link out",
            "a.tar.gz",
            tar_gz(&[file("tool", ok, 0o755), hardlink("h", "/etc/passwd")]),
            ErrorKind::LinkOutside,
        ),
        bad(
            "character device",
            "a.tar.gz",
            tar_gz(&[
                file("tool", ok, 0o755),
                Entry::Special("dev".into(), tar::EntryType::Char),
            ]),
            ErrorKind::SpecialFile,
        ),
        bad(
            "block device",
            "a.tar.gz",
            tar_gz(&[
                file("tool", ok, 0o755),
                Entry::Special("dev".into(), tar::EntryType::Block),
            ]),
            ErrorKind::SpecialFile,
        ),
        bad(
            "FIFO",
            "a.tar.gz",
            tar_gz(&[
                file("tool", ok, 0o755),
                Entry::Special("fifo".into(), tar::EntryType::Fifo),
            ]),
            ErrorKind::SpecialFile,
        ),
        bad(
            "duplicate entry",
            "a.tar.gz",
            tar_gz(&[
                file("tool", ok, 0o755),
                file("tool", b"#!/bin/sh\necho evil\n", 0o755),
            ]),
            ErrorKind::UnsafePath,
        ),
        Bad {
            label: "gzip bomb",
            asset: "a.tar.gz",
            // 4 MiB of zeros gzip to a few KiB; the limit is 256 KiB.
            bytes: tar_gz(&[
                file("tool", ok, 0o755),
                file("zeros", &vec![0u8; 4 << 20], 0o644),
            ]),
            kind: ErrorKind::TooLarge,
            limits: Limits {
                max_bytes: 256 << 10,
                max_entries: 100,
            },
        },
        Bad {
            label: "too many files",
            asset: "a.tar.gz",
            bytes: tar_gz(
                &(0..20)
                    .map(|i| file(&format!("f{i}"), b"x", 0o644))
                    .collect::<Vec<_>>(),
            ),
            kind: ErrorKind::TooLarge,
            limits: Limits {
                max_bytes: 1 << 20,
                max_entries: 10,
            },
        },
        Bad {
            label: "too many directories",
            asset: "a.tar.gz",
            bytes: tar_gz(&(0..20).map(|i| dir(&format!("d{i}/"))).collect::<Vec<_>>()),
            kind: ErrorKind::TooLarge,
            limits: Limits {
                max_bytes: 1 << 20,
                max_entries: 10,
            },
        },
        bad(
            "zip path traversal",
            "a.zip",
            zip(&[file("tool", ok, 0o755), file("../evil", b"x", 0o644)]),
            ErrorKind::UnsafePath,
        ),
        bad(
            "zip absolute path",
            "a.zip",
            zip(&[file("tool", ok, 0o755), file(ABSOLUTE_EVIL, b"x", 0o644)]),
            ErrorKind::UnsafePath,
        ),
        bad(
            "zip symlink out",
            "a.zip",
            zip(&[file("tool", ok, 0o755), symlink("link", "../../etc/passwd")]),
            ErrorKind::LinkOutside,
        ),
        bad(
            "zip FIFO",
            "a.zip",
            zip(&[file("tool", ok, 0o755), file("fifo", b"", 0o010644)]),
            ErrorKind::SpecialFile,
        ),
        bad(
            "not an archive",
            "a.tar.gz",
            b"this is not gzip".to_vec(),
            ErrorKind::BadArchive,
        ),
    ]
}

/// A well-formed archive's entries: nested directories, an executable, inside
/// links (to a file, to a directory), and a file marked setuid and world-writable.
pub fn good_entries(tool: &[u8], tool_mode: u32) -> Vec<Entry> {
    vec![
        dir("pkg/"),
        dir("pkg/bin/"),
        file("pkg/bin/tool", tool, tool_mode),
        symlink("pkg/bin/tool-link", "tool"),
        symlink("pkg/doc", "share/doc"),
        file("pkg/share/doc/README.txt", b"read me\n", 0o644),
        file("pkg/bin/suid", b"#!/bin/sh\n", 0o4777),
    ]
}

/// Check an extracted good archive under `root`.
pub fn check_good_tree(root: &Path, tool: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    let bin = root.join("pkg/bin/tool");
    assert_eq!(std::fs::read(&bin).unwrap(), tool);
    let mode = std::fs::metadata(&bin).unwrap().permissions().mode();
    assert_ne!(mode & 0o111, 0, "the binary is executable: {mode:o}");
    assert_eq!(
        std::fs::read_link(root.join("pkg/bin/tool-link")).unwrap(),
        PathBuf::from("tool")
    );
    assert_eq!(std::fs::read(root.join("pkg/bin/tool-link")).unwrap(), tool);
    assert_eq!(
        std::fs::read(root.join("pkg/doc/README.txt")).unwrap(),
        b"read me\n"
    );
    assert!(std::fs::metadata(root.join("pkg/share/doc"))
        .unwrap()
        .is_dir());
    let suid = std::fs::metadata(root.join("pkg/bin/suid"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        suid & 0o7777,
        0o755,
        "no setuid, not world-writable: {suid:o}"
    );
}
