//! Instance latency with a real feature (Debian's `tor`), as an API client sees it.
//!
//! ```sh
//! cargo build --release -p hangar-api --example instance_bench
//! target/release/examples/instance_bench [--runs 20] [--launches 5000]
//! ```
//!
//! Packs `/usr/sbin/tor` into a release archive with a checksums file in a
//! temporary catalog (the repo's tor manifest, source pointed at the file),
//! boots a daemon in this process on a temporary data dir and serves its API on
//! the socket; every timed call goes through the gRPC client over that socket.
//!
//! - **create-to-running**: `Instances.Create` of a tor instance (already
//!   installed: one untimed create/delete installs it first) until
//!   `Instances.Get` says `running` (polled every 1 ms), `--runs` times;
//!   each is deleted, untimed, before the next.
//! - **launch with an existing key**: `Instances.Create` without a name for a
//!   tenant whose instance runs (answered from the reuse index), `--launches`
//!   times; the same number of `Daemon.Status` calls (the cheapest RPC) on the
//!   same connection are the baseline, and the ratio is printed.
//!
//! Tor runs with `DisableNetwork 1`: it listens on loopback and talks to nobody.
//! Prints one JSON object on stdout.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hangar_api::client::Client;
use hangar_api::pb;
use hangar_core::{BootOptions, Daemon};
use serde_json::{json, Value};

type Res<T> = Result<T, Box<dyn Error>>;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[i.clamp(1, v.len()) - 1]
}

fn summary(v: &mut [f64]) -> Value {
    json!({
        "n": v.len(),
        "min_ms": pct(v, 0.0),
        "p50_ms": pct(v, 50.0),
        "p95_ms": pct(v, 95.0),
        "p99_ms": pct(v, 99.0),
        "max_ms": pct(v, 100.0),
    })
}

fn catalog(dir: &Path, tor: &Path) -> Res<PathBuf> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => return Err(format!("no archive name for {a}").into()),
    };
    let cat = dir.join("catalog");
    let fdir = cat.join("tor");
    let stage = dir.join("stage").join("tor-0.4.9");
    std::fs::create_dir_all(&stage)?;
    std::fs::create_dir_all(fdir.join("releases"))?;
    std::fs::copy(tor, stage.join("tor"))?;
    let asset = format!("tor-0.4.9-linux-{arch}.tar.gz");
    let ok = Command::new("tar")
        .arg("czf")
        .arg(fdir.join("releases").join(&asset))
        .arg("-C")
        .arg(dir.join("stage"))
        .arg("tor-0.4.9")
        .status()?
        .success();
    if !ok {
        return Err("tar failed".into());
    }
    let sum = Command::new("sha256sum")
        .arg(&asset)
        .current_dir(fdir.join("releases"))
        .output()?;
    std::fs::write(fdir.join("releases").join("checksums.txt"), sum.stdout)?;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../catalog/tor/manifest.json");
    let mut m: Value = serde_json::from_slice(&std::fs::read(repo)?)?;
    m["version"] = json!("0.4.9");
    m["source"] = json!({
        "type": "file",
        "asset_pattern": "releases/tor-{{version}}-{{os}}-{{arch}}.tar.gz",
        "verification": {"type": "sha256", "checksums_asset": "checksums.txt"}
    });
    m["binary"]["path"] = json!("tor-{{version}}/tor");
    m["binary"]["architectures"] = json!(["amd64", "arm64"]);
    std::fs::write(fdir.join("manifest.json"), serde_json::to_vec_pretty(&m)?)?;
    Ok(cat)
}

async fn until_running(c: &mut Client, id: &str) -> Res<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let i = c
            .instances
            .get(pb::InstanceRef {
                id_or_name: id.to_string(),
            })
            .await?
            .into_inner();
        match i.state.as_str() {
            "running" => return Ok(()),
            "error" => return Err(format!("instance failed: {:?}", i.error).into()),
            _ if Instant::now() > deadline => return Err("not running in 120 s".into()),
            _ => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

fn create(name: &str, tenant: &str) -> pb::CreateInstanceRequest {
    pb::CreateInstanceRequest {
        feature: "tor".into(),
        name: name.into(),
        mode: String::new(),
        options: Some(hangar_api::convert::structure(
            serde_json::json!({"disable_network": true})
                .as_object()
                .expect("an object literal"),
        )),
        tenant: tenant.into(),
        session: String::new(),
        ..Default::default()
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res<()> {
    let mut runs = 20usize;
    let mut launches = 5000usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().ok_or("--runs N")?.parse()?,
            "--launches" => launches = args.next().ok_or("--launches N")?.parse()?,
            _ => return Err("usage: instance_bench [--runs N] [--launches N]".into()),
        }
    }
    let tor = ["/usr/sbin/tor", "/usr/bin/tor"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or("tor is not installed (apt-get install tor)")?;
    let tmp = tempfile::tempdir()?;
    let cat = catalog(tmp.path(), &tor)?;
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("hangar.toml");
    std::fs::write(
        &cfg,
        "[daemon]\nhttp = \"\"\nport_range = \"42000-42999\"\n",
    )?;
    let d = Daemon::boot(BootOptions {
        data_dir: data.clone(),
        config: Some(cfg),
        catalogs: vec![cat],
    })
    .await
    .map_err(|e| e.message)?;
    let socket = hangar_core::socket_path(&data);
    let serving = hangar_api::server::serve(
        d.clone(),
        hangar_api::server::ServeOptions {
            socket: socket.clone(),
            tcp: None,
            token: None,
            tls: None,
            client_ca: None,
            limits: Default::default(),
        },
    )
    .await
    .map_err(|e| e.message)?;
    let mut c = Client::unix(&socket).await.map_err(|e| e.message)?;

    // Install once, untimed.
    eprintln!("installing tor…");
    let r = c
        .instances
        .create(create("warm", "warm"))
        .await?
        .into_inner();
    let id = r.instance.ok_or("no instance")?.id;
    until_running(&mut c, &id).await?;
    c.instances
        .delete(pb::InstanceRef { id_or_name: id })
        .await?;

    eprintln!("create-to-running ×{runs}…");
    let mut starts = Vec::with_capacity(runs);
    for i in 0..runs {
        let t = Instant::now();
        let r = c
            .instances
            .create(create(&format!("b{i}"), &format!("t{i}")))
            .await?
            .into_inner();
        let id = r.instance.ok_or("no instance")?.id;
        until_running(&mut c, &id).await?;
        starts.push(t.elapsed().as_secs_f64() * 1e3);
        c.instances
            .delete(pb::InstanceRef { id_or_name: id })
            .await?;
    }

    eprintln!("launch with an existing key ×{launches}…");
    let r = c.instances.create(create("", "shared")).await?.into_inner();
    let id = r.instance.ok_or("no instance")?.id;
    until_running(&mut c, &id).await?;
    for _ in 0..200 {
        c.instances.create(create("", "shared")).await?;
        c.daemon.status(pb::StatusRequest {}).await?;
    }
    let mut reuse = Vec::with_capacity(launches);
    let mut status = Vec::with_capacity(launches);
    for _ in 0..launches {
        let t = Instant::now();
        let r = c.instances.create(create("", "shared")).await?.into_inner();
        reuse.push(t.elapsed().as_secs_f64() * 1e3);
        if !r.reused {
            return Err("a launch with a running key was not reused".into());
        }
        let t = Instant::now();
        c.daemon.status(pb::StatusRequest {}).await?;
        status.push(t.elapsed().as_secs_f64() * 1e3);
    }
    // The same lookup in process, without the API.
    let mut inproc = Vec::with_capacity(launches);
    for _ in 0..launches {
        let t = Instant::now();
        let r = d
            .create_instance(hangar_core::CreateRequest {
                feature: "tor".into(),
                tenant: Some("shared".into()),
                ..Default::default()
            })
            .await
            .map_err(|e| e.message)?;
        inproc.push(t.elapsed().as_secs_f64() * 1e3);
        if !r.reused {
            return Err("not reused in process".into());
        }
    }
    c.instances
        .delete(pb::InstanceRef { id_or_name: id })
        .await?;

    let reuse_s = summary(&mut reuse);
    let status_s = summary(&mut status);
    let ratio =
        reuse_s["p99_ms"].as_f64().unwrap_or(0.0) / status_s["p99_ms"].as_f64().unwrap_or(1.0);
    println!(
        "{}",
        json!({
            "machine": {"cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
            "create_to_running": summary(&mut starts),
            "launch_reuse_grpc": reuse_s,
            "status_grpc_baseline": status_s,
            "launch_reuse_p99_over_status_p99": ratio,
            "launch_reuse_in_process": summary(&mut inproc),
        })
    );
    serving.stop().await;
    d.shutdown().await;
    Ok(())
}
