//! One etcd member on loopback for the fleet crate's tests (Debian's
//! `etcd-server`; a test without it says so and skips).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use etcd_client::Client;

/// An etcd member, killed on drop.
pub struct Etcd(Child);

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The `etcd` binary on PATH, or `None` after saying the test skips.
pub fn etcd_bin() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("etcd"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        eprintln!("skipped: no `etcd` on PATH (Debian: apt install etcd-server)");
    }
    found
}

/// A one-member cluster in `dir` serving clients on `client_url`, with
/// `extra` flags (TLS).
pub fn start(bin: &Path, dir: &Path, client_url: &str, extra: &[String]) -> Etcd {
    let pp = free_port();
    let child = Command::new(bin)
        .arg("--data-dir")
        .arg(dir.join("etcd"))
        .args([
            "--listen-client-urls",
            client_url,
            "--advertise-client-urls",
            client_url,
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{pp}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{pp}"),
            "--initial-cluster",
            &format!("default=http://127.0.0.1:{pp}"),
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("etcd.log")).expect("log"))
        .spawn()
        .expect("etcd starts");
    Etcd(child)
}

/// A client of a plain-HTTP member, once it answers.
pub async fn client(url: &str) -> Client {
    for _ in 0..600 {
        if let Ok(mut c) = Client::connect([url], None).await {
            if c.status().await.is_ok() {
                return c;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("etcd did not come up at {url}");
}
