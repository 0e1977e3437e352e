//! Install benchmark: `Installer::install` (download → verify → extract →
//! rename into place) of one archive, N times, each into a fresh root.
//!
//! ```sh
//! cargo build --release -p hangar-fetch --examples
//! target/release/examples/install_bench --url http://127.0.0.1:8080/app.tar.gz \
//!     --sha256 HEX --asset app.tar.gz --binary app/bin/app --root /tmp/ib --runs 3
//! ```
//!
//! Prints one JSON object: per run the wall time (ms) of the whole install
//! (the `Downloader` is built inside the timed region, as a one-shot
//! `hangar install` would), MB/s (archive bytes / wall time, MB = 10^6 bytes),
//! and the split taken from the `Step` callbacks:
//!
//! - `download_ms`: start → `Step::Verify` (the last byte written and hashed);
//! - `verify_ms`: `Step::Verify` → `Step::Extract` (digest comparison);
//! - `extract_move_ms`: `Step::Extract` → `Step::Installed` (extraction into
//!   staging, the install record, directory fsyncs, the rename, `current`).
//!
//! Diagnostics (not the product's code path end to end): `--only download`
//! times `Downloader::fetch_to` alone; `--only extract --file PATH` times
//! `extract::extract` of a local archive into an empty directory.
//!
//! The roots are left in place: the caller removes them (outside its timing).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use hangar_fetch::extract::{self, Format, Limits};
use hangar_fetch::{Checksum, DownloadOptions, Downloader, InstallRequest, Installer, Step};

struct Args {
    url: String,
    sha256: String,
    asset: String,
    binary: String,
    root: PathBuf,
    runs: usize,
    only: Option<String>,
    file: Option<PathBuf>,
}

fn usage() -> ! {
    eprintln!(
        "usage: install_bench --url URL --sha256 HEX --asset NAME --binary PATH --root DIR [--runs N] \
         [--only download|extract] [--file ARCHIVE]"
    );
    std::process::exit(2)
}

fn parse() -> Args {
    let mut a = Args {
        url: String::new(),
        sha256: String::new(),
        asset: String::new(),
        binary: String::new(),
        root: PathBuf::new(),
        runs: 1,
        only: None,
        file: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| usage());
        match k.as_str() {
            "--url" => a.url = v(),
            "--sha256" => a.sha256 = v(),
            "--asset" => a.asset = v(),
            "--binary" => a.binary = v(),
            "--root" => a.root = PathBuf::from(v()),
            "--runs" => a.runs = v().parse().unwrap_or_else(|_| usage()),
            "--only" => a.only = Some(v()),
            "--file" => a.file = Some(PathBuf::from(v())),
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    if a.root.as_os_str().is_empty() || a.asset.is_empty() {
        usage();
    }
    a
}

/// A root directory for run `i` that does not exist yet.
fn fresh(root: &Path, i: usize) -> PathBuf {
    for n in 0.. {
        let p = root.join(format!("run-{i}-{n}"));
        if !p.exists() {
            return p;
        }
    }
    unreachable!()
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn main() {
    let args = parse();
    std::fs::create_dir_all(&args.root).expect("create --root");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut runs = Vec::new();
    for i in 0..args.runs {
        let dir = fresh(&args.root, i);
        let run = match args.only.as_deref() {
            None => rt.block_on(install_once(&args, &dir)),
            Some("download") => rt.block_on(download_once(&args, &dir)),
            Some("extract") => extract_once(&args, &dir),
            Some(_) => usage(),
        };
        runs.push(run);
    }
    let mut walls: Vec<f64> = runs
        .iter()
        .map(|r| r["wall_ms"].as_f64().unwrap_or(f64::NAN))
        .collect();
    walls.sort_by(|a, b| a.total_cmp(b));
    let median = if walls.is_empty() {
        f64::NAN
    } else if walls.len() % 2 == 1 {
        walls[walls.len() / 2]
    } else {
        (walls[walls.len() / 2 - 1] + walls[walls.len() / 2]) / 2.0
    };
    let out = serde_json::json!({
        "bench": "install_bench",
        "mode": args.only.as_deref().unwrap_or("install"),
        "url": args.url,
        "asset": args.asset,
        "runs": runs,
        "median_wall_ms": round(median),
    });
    println!("{out}");
}

async fn install_once(args: &Args, root: &Path) -> serde_json::Value {
    // (time of Verify, time of Extract, time of Installed, download bytes)
    let marks: Mutex<[Option<Instant>; 3]> = Mutex::new([None; 3]);
    let bytes = Mutex::new(0u64);
    let on_step = |s: &Step| {
        let now = Instant::now();
        let mut m = marks.lock().unwrap();
        match s {
            Step::Download(p) => *bytes.lock().unwrap() = p.bytes,
            Step::Verify => m[0] = Some(now),
            Step::Extract => m[1] = Some(now),
            Step::Installed => m[2] = Some(now),
        }
    };
    let t0 = Instant::now();
    let downloader = Downloader::new(DownloadOptions {
        allow_http: false, // loopback is allowed anyway
        ..DownloadOptions::default()
    })
    .expect("downloader");
    let installer = Installer::new(root, downloader);
    let req = InstallRequest {
        id: "bench".into(),
        version: "1.0.0".into(),
        url: args.url.clone(),
        asset: args.asset.clone(),
        checksum: Some(Checksum::Sha256(args.sha256.clone())),
        signature: None,
        binary: args.binary.clone(),
    };
    let res = installer.install(req, &on_step).await;
    let wall = t0.elapsed();
    let rec = match res {
        Ok(r) => r,
        Err(e) => {
            eprintln!("install failed: {e}");
            std::process::exit(1);
        }
    };
    let m = *marks.lock().unwrap();
    let at = |t: Option<Instant>| t.map(|t| t.duration_since(t0));
    let (v, x, done) = (at(m[0]), at(m[1]), at(m[2]));
    let bytes = *bytes.lock().unwrap();
    let span = |a: Option<std::time::Duration>, b: Option<std::time::Duration>| match (a, b) {
        (Some(a), Some(b)) => serde_json::json!(round(ms(b.saturating_sub(a)))),
        _ => serde_json::Value::Null,
    };
    serde_json::json!({
        "root": root.display().to_string(),
        "wall_ms": round(ms(wall)),
        "archive_bytes": bytes,
        "mb_per_s": round(bytes as f64 / 1e6 / wall.as_secs_f64()),
        "download_ms": v.map(|d| round(ms(d))),
        "verify_ms": span(v, x),
        "extract_move_ms": span(x, done),
        "extracted_bytes": rec.bytes,
        "verified": rec.verified,
        "sha256": rec.sha256,
    })
}

async fn download_once(args: &Args, root: &Path) -> serde_json::Value {
    std::fs::create_dir_all(root).expect("create root");
    let dest = root.join("download.part");
    let t0 = Instant::now();
    let downloader = Downloader::new(DownloadOptions::default()).expect("downloader");
    let dl = downloader
        .fetch_to(&args.url, &dest, &|_| {})
        .await
        .unwrap_or_else(|e| {
            eprintln!("download failed: {e}");
            std::process::exit(1)
        });
    let wall = t0.elapsed();
    let hex: String = dl.sha256.iter().map(|b| format!("{b:02x}")).collect();
    if !args.sha256.is_empty() && hex != args.sha256.to_ascii_lowercase() {
        eprintln!("digest mismatch: {hex}");
        std::process::exit(1);
    }
    serde_json::json!({
        "root": root.display().to_string(),
        "wall_ms": round(ms(wall)),
        "archive_bytes": dl.bytes,
        "mb_per_s": round(dl.bytes as f64 / 1e6 / wall.as_secs_f64()),
        "sha256": hex,
    })
}

fn extract_once(args: &Args, root: &Path) -> serde_json::Value {
    let file = args.file.clone().unwrap_or_else(|| usage());
    std::fs::create_dir_all(root).expect("create root");
    let bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    let t0 = Instant::now();
    let out = extract::extract(
        &file,
        Format::from_name(&args.asset),
        root,
        "bin",
        Limits::default(),
    )
    .unwrap_or_else(|e| {
        eprintln!("extract failed: {e}");
        std::process::exit(1)
    });
    let wall = t0.elapsed();
    serde_json::json!({
        "root": root.display().to_string(),
        "wall_ms": round(ms(wall)),
        "archive_bytes": bytes,
        "mb_per_s": round(bytes as f64 / 1e6 / wall.as_secs_f64()),
        "extracted_bytes": out.bytes,
        "files": out.files,
    })
}
