//! SHA-256 throughput the way `hangar_fetch`'s downloader computes it: a read
//! into a 1 MiB buffer, then `Sha256::update` on what was read (the same loop
//! as `Sink::open` and the `file://` copy in `download.rs`; over HTTP the
//! downloader calls `update` on each chunk as hyper delivers it, which
//! `--chunk` can imitate).
//!
//! ```sh
//! cargo build --release -p hangar-fetch --examples
//! target/release/examples/hash_bench --file app.tar.gz --runs 5 [--chunk 16384]
//! ```
//!
//! Prints one JSON object: per run the time to read and hash the whole file
//! (ms) and MB/s (MB = 10^6 bytes), the median, and the digest (hex) so the
//! caller can compare it with `sha256sum`'s.

use std::io::Read;
use std::time::Instant;

use sha2::{Digest, Sha256};

fn usage() -> ! {
    eprintln!("usage: hash_bench --file PATH [--runs N] [--buf BYTES] [--chunk BYTES]");
    std::process::exit(2)
}

fn main() {
    let mut file = None;
    let mut runs = 5usize;
    let mut buf_len = 1usize << 20;
    let mut chunk = 0usize;
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| usage());
        match k.as_str() {
            "--file" => file = Some(v()),
            "--runs" => runs = v().parse().unwrap_or_else(|_| usage()),
            "--buf" => buf_len = v().parse().unwrap_or_else(|_| usage()),
            "--chunk" => chunk = v().parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    let file = file.unwrap_or_else(|| usage());
    let mut buf = vec![0u8; buf_len.max(1)];
    let mut results = Vec::new();
    let mut digest_hex = String::new();
    for _ in 0..runs.max(1) {
        let t0 = Instant::now();
        let mut f = std::fs::File::open(&file).unwrap_or_else(|e| {
            eprintln!("cannot open {file}: {e}");
            std::process::exit(1)
        });
        let mut h = Sha256::new();
        let mut total = 0u64;
        loop {
            let n = f.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            if chunk == 0 {
                h.update(&buf[..n]);
            } else {
                for c in buf[..n].chunks(chunk) {
                    h.update(c);
                }
            }
            total += n as u64;
        }
        let d: [u8; 32] = h.finalize().into();
        let secs = t0.elapsed().as_secs_f64();
        digest_hex = d.iter().map(|b| format!("{b:02x}")).collect();
        results.push(serde_json::json!({
            "ms": (secs * 1e6).round() / 1e3,
            "bytes": total,
            "mb_per_s": (total as f64 / 1e6 / secs * 10.0).round() / 10.0,
        }));
    }
    let mut rates: Vec<f64> = results
        .iter()
        .map(|r| r["mb_per_s"].as_f64().unwrap())
        .collect();
    rates.sort_by(|a, b| a.total_cmp(b));
    let median = if rates.len() % 2 == 1 {
        rates[rates.len() / 2]
    } else {
        (rates[rates.len() / 2 - 1] + rates[rates.len() / 2]) / 2.0
    };
    println!(
        "{}",
        serde_json::json!({
            "bench": "hash_bench",
            "file": file,
            "buf": buf_len,
            "chunk": chunk,
            "runs": results,
            "median_mb_per_s": median,
            "sha256": digest_hex,
        })
    );
}
