//! `hangar catalog list|show|search`, `hangar install`, `hangar uninstall`,
//! `hangar installed`: the marketplace.
//!
//! Through the daemon (its `Catalog` service, so its one installer and lock,
//! with events) when one answers on the data dir's socket or at `--addr`
//! and no `--catalog` (or `$HANGAR_CATALOG`) was given; otherwise here, with
//! a catalog and installer of the command's own (`hangar install` before
//! `hangar serve`). Both paths print the same tables and JSON.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use hangar_api::client::Client;
use hangar_api::{convert, pb};
use hangar_core::Error;
use hangar_feature::catalog::{self, Catalog, Entry, Manifest, Platform};
use hangar_fetch::{DownloadOptions, Downloader, InstallRequest, Installed, Installer, Step};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tokio_stream::StreamExt;

use crate::{client, exit, render};

/// Where features come from and go to.
pub struct Market {
    pub data_dir: PathBuf,
    /// `--catalog` / `HANGAR_CATALOG`; empty: the daemon's catalog when a
    /// daemon answers, else the built-in catalog.
    pub catalogs: Vec<PathBuf>,
    /// Where a daemon may answer.
    pub target: client::Target,
}

pub enum Cmd {
    List {
        json: bool,
    },
    Show {
        id: String,
        json: bool,
    },
    Search {
        query: String,
        json: bool,
    },
    Install {
        spec: String,
        allow_http: bool,
        allow_unverified: bool,
        json: bool,
    },
    Uninstall {
        spec: String,
        json: bool,
    },
    Installed {
        json: bool,
    },
}

pub fn run(m: Market, cmd: Cmd) -> u8 {
    let rt = match crate::runtime(false) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(go(m, cmd)) {
        Ok(code) => code,
        Err(e) => {
            errln!("{}", render::core_error(&e));
            exit::code_for(&e)
        }
    }
}

fn catalog(m: &Market) -> Result<Catalog, Error> {
    let dirs = if m.catalogs.is_empty() {
        vec![catalog::materialize_builtin(
            &m.data_dir.join("catalog").join("builtin"),
        )?]
    } else {
        m.catalogs.clone()
    };
    let cat = Catalog::load(&dirs)?;
    for (file, e) in cat.problems() {
        errln!(
            "warning: skipped {}: {}",
            file.display(),
            render::core_error(e)
        );
    }
    Ok(cat)
}

fn installer(m: &Market, allow_http: bool) -> Result<Installer, Error> {
    let d = Downloader::new(DownloadOptions {
        allow_http,
        ..DownloadOptions::default()
    })
    .map_err(Error::from)?;
    Ok(Installer::new(m.data_dir.join("features"), d))
}

fn split_spec(spec: &str) -> (&str, Option<&str>) {
    match spec.split_once('@') {
        Some((id, v)) if !v.is_empty() => (id, Some(v)),
        Some((id, _)) => (id, None),
        None => (spec, None),
    }
}

fn manifest_json(e: &Entry) -> serde_json::Value {
    let mut v = serde_json::to_value(&e.manifest).unwrap_or(serde_json::Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("manifest_file".into(), json!(e.file.display().to_string()));
    }
    v
}

fn installed_json(i: &Installed) -> serde_json::Value {
    serde_json::to_value(i).unwrap_or(serde_json::Value::Null)
}

async fn go(m: Market, cmd: Cmd) -> Result<u8, Error> {
    if m.catalogs.is_empty() {
        if let Some(c) = daemon(&m.target).await? {
            if let Some(code) = remote(c, &m, &cmd).await? {
                return Ok(code);
            }
        }
    }
    local(m, cmd).await
}

/// The daemon, when one answers: at `--addr` it must (an error otherwise);
/// on the data dir's socket it may not, and then the command runs here.
async fn daemon(t: &client::Target) -> Result<Option<Client>, Error> {
    match &t.addr {
        Some(_) => client::connect(t).await.map(Some),
        None => Ok(client::connect(t).await.ok()),
    }
}

/// A daemon too old to have the Catalog service: the command runs here.
fn unsupported(e: &Error) -> bool {
    e.code() == "UNSUPPORTED"
}

/// The command through the daemon; `None` when the daemon does not serve
/// the catalog (nothing was done, nothing printed).
async fn remote(mut c: Client, m: &Market, cmd: &Cmd) -> Result<Option<u8>, Error> {
    let api = |s: tonic::Status| convert::error(&s);
    match cmd {
        Cmd::List { json } | Cmd::Search { json, .. } => {
            let query = match cmd {
                Cmd::Search { query, .. } => query.clone(),
                _ => String::new(),
            };
            let list = match c
                .catalog
                .list(pb::ListFeaturesRequest {
                    query: query.clone(),
                })
                .await
            {
                Ok(r) => r.into_inner(),
                Err(s) if unsupported(&api(s.clone())) => return Ok(None),
                Err(s) => return Err(api(s)),
            };
            let entries = list
                .features
                .into_iter()
                .map(entry_from)
                .collect::<Result<Vec<_>, _>>()?;
            let refs: Vec<&Entry> = entries.iter().collect();
            print_entries(&refs, *json);
            Ok(Some(if refs.is_empty() && !query.is_empty() {
                exit::NOT_FOUND
            } else {
                exit::OK
            }))
        }
        Cmd::Show { id, json } => {
            let f = match c.catalog.get(pb::FeatureRef { id: id.clone() }).await {
                Ok(r) => r.into_inner(),
                Err(s) if unsupported(&api(s.clone())) => return Ok(None),
                Err(s) => return Err(api(s)),
            };
            let resolved = match (f.asset.clone(), f.asset_error.clone()) {
                (Some(a), _) => Ok(InstallRequest {
                    id: f.id.clone(),
                    version: a.version,
                    url: a.url,
                    asset: a.asset,
                    checksum: a.checksum.and_then(convert::checksum_from),
                    signature: (!a.minisign_url.is_empty()).then(|| hangar_fetch::Signature {
                        public_key: String::new(),
                        url: a.minisign_url,
                    }),
                    binary: a.binary,
                }),
                // Only its message is shown.
                (None, e) => {
                    let e = e.unwrap_or_default();
                    Err(Error::remote(
                        &e.code,
                        hangar_core::Category::Precondition,
                        e.message,
                    ))
                }
            };
            let versions: Vec<Installed> = f
                .installed
                .clone()
                .into_iter()
                .map(convert::installed_from)
                .collect();
            let e = entry_from(f)?;
            show(&e, &resolved, &versions, *json);
            Ok(Some(exit::OK))
        }
        Cmd::Install {
            spec,
            allow_http,
            allow_unverified,
            json,
        } => {
            if *allow_http {
                return Err(Error::new(
                    hangar_base::ErrorKind::Usage,
                    "--allow-http is for installs without a daemon; a daemon answers, and its configuration decides",
                )
                .with("socket", hangar_core::socket_path(&m.target.data_dir).display())
                .hint("set allow_http = true in [daemon.instances] of the daemon's configuration and restart it, or give --catalog DIR to install here without the daemon"));
            }
            let (id, version) = split_spec(spec);
            let mut stream = match c
                .catalog
                .install(pb::InstallRequest {
                    id: id.to_string(),
                    version: version.unwrap_or_default().to_string(),
                    allow_unverified: *allow_unverified,
                })
                .await
            {
                Ok(r) => r.into_inner(),
                Err(s) if unsupported(&api(s.clone())) => return Ok(None),
                Err(s) => return Err(api(s)),
            };
            // The label names the version, as here: the one asked for, else
            // the manifest's.
            let label = match version {
                Some(v) => format!("{id} {v}"),
                None => match c.catalog.get(pb::FeatureRef { id: id.to_string() }).await {
                    Ok(f) => format!("{id} {}", f.into_inner().version),
                    Err(_) => id.to_string(),
                },
            };
            let bar = Bar::new(&label, *json);
            let mut done = None;
            let mut failed = None;
            while let Some(msg) = stream.next().await {
                match msg {
                    Ok(p) => match (p.step.as_str(), p.installed) {
                        ("installed", Some(i)) => done = Some(convert::installed_from(i)),
                        ("download", _) => bar.step(&Step::Download(hangar_fetch::Progress {
                            bytes: p.bytes,
                            total: p.total,
                            bytes_per_sec: p.bytes_per_sec,
                            done: p.total.is_some_and(|t| p.bytes >= t),
                        })),
                        ("verify", _) => bar.step(&Step::Verify),
                        ("extract", _) => bar.step(&Step::Extract),
                        _ => {}
                    },
                    Err(s) => {
                        failed = Some(api(s));
                        break;
                    }
                }
            }
            bar.finish(done.is_some());
            match (done, failed) {
                (Some(d), _) => {
                    print_installed_one(id, &d, *json);
                    Ok(Some(exit::OK))
                }
                (None, Some(e)) if unsupported(&e) => Ok(None),
                (None, Some(e)) => Err(e),
                (None, None) => Err(Error::new(
                    hangar_base::ErrorKind::Internal,
                    "the daemon ended the install without a result",
                )
                .with("feature", id)
                .hint("`hangar events --name ID` shows what the daemon recorded; `hangar installed` what is installed")),
            }
        }
        Cmd::Uninstall { spec, json } => {
            let (id, version) = split_spec(spec);
            let removed = match c
                .catalog
                .uninstall(pb::UninstallRequest {
                    id: id.to_string(),
                    version: version.unwrap_or_default().to_string(),
                })
                .await
            {
                Ok(r) => r.into_inner().removed,
                Err(s) if unsupported(&api(s.clone())) => return Ok(None),
                Err(s) => return Err(api(s)),
            };
            print_uninstalled(id, &removed, *json);
            Ok(Some(exit::OK))
        }
        Cmd::Installed { json } => {
            let all = match c.catalog.list_installed(pb::ListInstalledRequest {}).await {
                Ok(r) => r.into_inner().installed,
                Err(s) if unsupported(&api(s.clone())) => return Ok(None),
                Err(s) => return Err(api(s)),
            };
            let all: Vec<Installed> = all.into_iter().map(convert::installed_from).collect();
            print_installed(&all, *json, m);
            Ok(Some(exit::OK))
        }
    }
}

/// A catalog entry from the daemon's answer: its manifest as the daemon's
/// catalog read it.
fn entry_from(f: pb::Feature) -> Result<Entry, Error> {
    let manifest: Manifest = serde_json::from_str(&f.manifest_json).map_err(|e| {
        Error::new(
            hangar_base::ErrorKind::Internal,
            format!("the daemon sent a manifest this hangar cannot read: {e}"),
        )
        .with("feature", &f.id)
        .hint("use the same hangar version for the command and the daemon")
    })?;
    let file = PathBuf::from(&f.manifest_file);
    Ok(Entry {
        manifest,
        dir: file.parent().map(PathBuf::from).unwrap_or_default(),
        file,
    })
}

/// The command here, with a catalog and an installer of its own.
async fn local(m: Market, cmd: Cmd) -> Result<u8, Error> {
    match cmd {
        Cmd::List { json } => {
            let cat = catalog(&m)?;
            let entries: Vec<&Entry> = cat.list().collect();
            print_entries(&entries, json);
            Ok(exit::OK)
        }
        Cmd::Search { query, json } => {
            let cat = catalog(&m)?;
            let found = cat.search(&query);
            print_entries(&found, json);
            Ok(if found.is_empty() {
                exit::NOT_FOUND
            } else {
                exit::OK
            })
        }
        Cmd::Show { id, json } => {
            let cat = catalog(&m)?;
            let e = cat.get(&id)?;
            let inst = installer(&m, false)?;
            let versions = inst.versions(&id).unwrap_or_default();
            let platform = Platform::current();
            let resolved = catalog::resolve(&e.manifest, &e.dir, &e.manifest.version, &platform);
            show(e, &resolved, &versions, json);
            Ok(exit::OK)
        }
        Cmd::Install {
            spec,
            allow_http,
            allow_unverified,
            json,
        } => {
            let (id, version) = split_spec(&spec);
            let cat = catalog(&m)?;
            let e = cat.get(id)?;
            let inst = installer(&m, allow_http)?;
            let version = version.unwrap_or(e.manifest.version.as_str());
            let policy = catalog::InstallPolicy {
                allow_unverified,
                how_to_allow: "pass --allow-unverified",
            };
            let req = catalog::plan(&inst, &e.manifest, &e.dir, version, policy).await?;
            let version = req.version.clone();
            let bar = Bar::new(&format!("{id} {version}"), json);
            let done = inst.install(req, &|s| bar.step(s)).await.map_err(|err| {
                let have: Vec<String> = inst
                    .versions(id)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|i| i.version)
                    .collect();
                catalog::name_known_versions(Error::from(err), &e.manifest, &e.dir, &version, &have)
            });
            bar.finish(done.is_ok());
            print_installed_one(id, &done?, json);
            Ok(exit::OK)
        }
        Cmd::Uninstall { spec, json } => {
            let (id, version) = split_spec(&spec);
            let inst = installer(&m, false)?;
            let removed = inst.uninstall(id, version).map_err(Error::from)?;
            print_uninstalled(id, &removed, json);
            Ok(exit::OK)
        }
        Cmd::Installed { json } => {
            let inst = installer(&m, false)?;
            let all = inst.list().map_err(Error::from)?;
            print_installed(&all, json, &m);
            Ok(exit::OK)
        }
    }
}

/// `hangar installed`.
fn print_installed(all: &[Installed], json: bool, m: &Market) {
    if json {
        outln!(
            "{}",
            serde_json::Value::Array(all.iter().map(installed_json).collect())
        );
    } else if all.is_empty() {
        outln!("nothing installed (data dir {})", m.data_dir.display());
    } else {
        let w = all.iter().map(|i| i.id.len()).max().unwrap_or(2).max(7);
        outln!(
            "{:w$}  {:12}  {:8}  {:10}  BINARY",
            "FEATURE",
            "VERSION",
            "CURRENT",
            "VERIFIED"
        );
        for i in all {
            outln!(
                "{:w$}  {:12}  {:8}  {:10}  {}",
                i.id,
                i.version,
                if i.current { "*" } else { "" },
                if i.signed {
                    "signed"
                } else if i.verified {
                    "sha256"
                } else {
                    "no"
                },
                i.binary.display()
            );
        }
    }
}

/// `hangar install`'s result.
fn print_installed_one(id: &str, done: &Installed, json: bool) {
    if json {
        outln!("{}", installed_json(done));
    } else {
        outln!(
            "installed {id} {} ({}, sha256 {}) → {}",
            done.version,
            if done.verified {
                "verified"
            } else {
                "unverified"
            },
            done.sha256.get(..16).unwrap_or(&done.sha256),
            done.binary.display()
        );
    }
}

/// `hangar uninstall`'s result.
fn print_uninstalled(id: &str, removed: &[String], json: bool) {
    if json {
        outln!("{}", json!({"id": id, "removed": removed}));
    } else {
        for v in removed {
            outln!("uninstalled {id} {v}");
        }
    }
}

/// `catalog show`: the manifest, this machine's download, the installs.
fn show(e: &Entry, resolved: &Result<InstallRequest, Error>, versions: &[Installed], json: bool) {
    if json {
        let mut v = manifest_json(e);
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "installed".into(),
                json!(versions.iter().map(installed_json).collect::<Vec<_>>()),
            );
            if let Ok(r) = &resolved {
                o.insert(
                    "resolved".into(),
                    json!({"url": r.url, "asset": r.asset,
                    "checksum": checksum_json(r.checksum.as_ref()), "binary": r.binary}),
                );
            }
        }
        outln!("{v}");
    } else {
        let mf = &e.manifest;
        outln!("{} ({}) {}", mf.name, mf.id, mf.version);
        if !mf.description.is_empty() {
            outln!("  {}", mf.description);
        }
        outln!("  license:    {}", mf.license);
        if let Some(h) = &mf.homepage {
            outln!("  homepage:   {h}");
        }
        outln!("  manifest:   {}", e.file.display());
        outln!("  isolation:  {}", mf.isolation_level);
        if !mf.network.default_ports.is_empty() {
            outln!("  ports:      {:?}", mf.network.default_ports);
        }
        if !mf.network.protocols.is_empty() {
            outln!("  protocols:  {}", mf.network.protocols.join(", "));
        }
        for mode in &mf.modes {
            outln!("  mode {:12} {}", mode.id, mode.name);
        }
        match &resolved {
            Ok(r) => {
                outln!("  asset:      {}", r.url);
                match &r.checksum {
                    Some(hangar_fetch::Checksum::File(u)) => outln!("  checksums:  {u}"),
                    Some(hangar_fetch::Checksum::Sha256(h)) => {
                        outln!("  sha256:     {h}")
                    }
                    Some(hangar_fetch::Checksum::Pinned(h)) => {
                        outln!("  sha256:     {h} (pinned for this version and platform)")
                    }
                    Some(hangar_fetch::Checksum::SignedFile(sc)) => {
                        outln!("  checksums:  {}", sc.url);
                        outln!(
                            "  signature:  {} (OpenPGP, key {})",
                            sc.signature_url,
                            hangar_fetch::verify::normalize_fingerprint(&sc.fingerprint)
                        );
                    }
                    Some(hangar_fetch::Checksum::GithubRelease(api)) => {
                        outln!("  digest:     GitHub's, from {api}")
                    }
                    None => outln!("  checksums:  none (unverified)"),
                }
                if let Some(s) = &r.signature {
                    outln!("  signature:  {} (minisign)", s.url);
                }
            }
            Err(e) => outln!("  asset:      unavailable here: {}", e.message),
        }
        if versions.is_empty() {
            outln!("  installed:  no");
        }
        for v in versions {
            outln!(
                "  installed:  {}{} at {}",
                v.version,
                if v.current { " (current)" } else { "" },
                v.dir.display()
            );
        }
    }
}

fn print_entries(entries: &[&Entry], json: bool) {
    if json {
        outln!(
            "{}",
            serde_json::Value::Array(entries.iter().map(|e| manifest_json(e)).collect())
        );
        return;
    }
    let w = entries
        .iter()
        .map(|e| e.manifest.id.len())
        .max()
        .unwrap_or(2)
        .max(2);
    outln!("{:w$}  {:10}  DESCRIPTION", "ID", "VERSION");
    for e in entries {
        outln!(
            "{:w$}  {:10}  {}",
            e.manifest.id,
            e.manifest.version,
            e.manifest.description
        );
    }
}

/// Install progress: a bar with bytes, rate and ETA on a terminal; plain lines
/// (at most one per second) otherwise; nothing with `--json`.
pub(crate) struct Bar {
    bar: Option<ProgressBar>,
    plain: bool,
    label: String,
    last_line: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Bar {
    pub(crate) fn new(label: &str, quiet: bool) -> Bar {
        let tty = std::io::stderr().is_terminal();
        let bar = (!quiet && tty).then(|| {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_message(label.to_string());
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        Bar {
            bar,
            plain: !quiet && !tty,
            label: label.to_string(),
            last_line: std::sync::Mutex::new(None),
        }
    }

    pub(crate) fn step(&self, s: &Step) {
        match s {
            Step::Download(p) => {
                if let Some(b) = &self.bar {
                    if let Some(t) = p.total {
                        b.set_length(t);
                    }
                    b.set_position(p.bytes);
                } else if self.plain {
                    let mut last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
                    if p.done || last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        *last = Some(std::time::Instant::now());
                        let total = p.total.map(|t| format!("/{t}")).unwrap_or_default();
                        errln!(
                            "{}: downloaded {}{total} bytes ({:.1} MB/s)",
                            self.label,
                            p.bytes,
                            p.bytes_per_sec / 1e6
                        );
                    }
                }
            }
            Step::Verify => self.note("verifying"),
            Step::Extract => self.note("extracting"),
            Step::Installed => {}
        }
    }

    fn note(&self, what: &str) {
        if let Some(b) = &self.bar {
            b.set_message(format!("{} ({what})", self.label));
        } else if self.plain {
            errln!("{}: {what}", self.label);
        }
    }

    pub(crate) fn finish(&self, ok: bool) {
        if let Some(b) = &self.bar {
            if ok {
                b.finish_and_clear();
            } else {
                b.abandon();
            }
        }
    }
}

/// `HANGAR_CATALOG` holds directories separated by `:`.
pub fn catalogs_from_env(flag: Vec<PathBuf>) -> Vec<PathBuf> {
    if !flag.is_empty() {
        return flag;
    }
    std::env::var_os("HANGAR_CATALOG")
        .map(|v| {
            std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Where the expected digest comes from, as `catalog show --json` gives it:
/// `{"type": "sha256" | "pinned" | "file" | "signed-file" | "github-release", …}`.
fn checksum_json(c: Option<&hangar_fetch::Checksum>) -> serde_json::Value {
    use hangar_fetch::Checksum;
    match c {
        None => serde_json::Value::Null,
        Some(Checksum::Sha256(h)) => json!({"type": "sha256", "sha256": h}),
        Some(Checksum::Pinned(h)) => json!({"type": "pinned", "sha256": h}),
        Some(Checksum::File(u)) => json!({"type": "file", "url": u}),
        Some(Checksum::SignedFile(sc)) => json!({"type": "signed-file", "url": sc.url,
            "signature_url": sc.signature_url,
            "fingerprint": hangar_fetch::verify::normalize_fingerprint(&sc.fingerprint)}),
        Some(Checksum::GithubRelease(api)) => json!({"type": "github-release", "url": api}),
    }
}
