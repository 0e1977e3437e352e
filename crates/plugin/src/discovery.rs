//! Discovery: find plugins in directories ([`scan`]) and, in watch mode
//! ([`watch`]), add, update and remove them as files change (the `notify`
//! crate; inotify on Linux).
//!
//! In each directory (not recursively), every file whose name matches one of
//! the glob `patterns` (default `*.json`, `*.yaml`, `*.yml`) is taken:
//!
//! - a `.json`, `.yaml` or `.yml` file is a plugin configuration: one plugin
//!   (the [`PluginConfig`] fields), or `{"plugins": [...]}` for several. A
//!   relative `endpoint` (unix) or `executable` is taken relative to the file;
//! - any other matching file that is executable becomes an `exec` plugin named
//!   after the file.
//!
//! Each discovered plugin carries the annotation
//! [`SOURCE_ANNOTATION`] = its file. Plugins named in the manager's own
//! configuration win over discovered ones of the same name. A file that does
//! not parse or validate is skipped and reported; the others still apply.
//! Changes are applied through a graceful [`Manager::reload`], so calls in
//! flight complete.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::config::{is_yaml, ConfigError, DiscoveryConfig, ManagerConfig, PluginConfig};
use crate::manager::Manager;
use crate::reload::{ReloadOptions, ReloadReport};
use crate::transport::TransportKind;

/// Annotation naming the file a plugin was discovered in.
pub const SOURCE_ANNOTATION: &str = "hangar.discovery/source";

/// A file that could not be used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiscoveryProblem {
    /// The file.
    pub path: PathBuf,
    /// Its errors (codes as in [`crate::config`]).
    pub errors: Vec<ConfigError>,
}

/// What a scan found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ScanResult {
    /// Plugins, by name (the first file, in name order, wins a name).
    pub plugins: Vec<PluginConfig>,
    /// Files skipped.
    pub problems: Vec<DiscoveryProblem>,
}

fn patterns(cfg: &DiscoveryConfig) -> Vec<glob::Pattern> {
    let raw: Vec<String> = if cfg.patterns.is_empty() {
        vec!["*.json".into(), "*.yaml".into(), "*.yml".into()]
    } else {
        cfg.patterns.clone()
    };
    raw.iter()
        .filter_map(|p| glob::Pattern::new(p).ok())
        .collect()
}

fn problem(path: &Path, code: &'static str, message: String) -> DiscoveryProblem {
    DiscoveryProblem {
        path: path.to_path_buf(),
        errors: vec![ConfigError {
            code,
            path: path.display().to_string(),
            message,
            hint: "fix or remove the file".into(),
        }],
    }
}

fn parse_file(path: &Path) -> Result<Vec<PluginConfig>, DiscoveryProblem> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| problem(path, "PLUGIN_1011", format!("cannot read: {e}")))?;
    let v: Value = if is_yaml(path) {
        serde_yaml_ng::from_str(&text)
            .map_err(|e| problem(path, "PLUGIN_1011", format!("invalid YAML: {e}")))?
    } else {
        serde_json::from_str(&text)
            .map_err(|e| problem(path, "PLUGIN_1011", format!("invalid JSON: {e}")))?
    };
    let list: Vec<PluginConfig> = if v.get("plugins").is_some() {
        serde_json::from_value::<ManagerConfig>(v)
            .map(|m| m.plugins)
            .map_err(|e| problem(path, "PLUGIN_1011", format!("invalid configuration: {e}")))?
    } else {
        vec![serde_json::from_value(v)
            .map_err(|e| problem(path, "PLUGIN_1011", format!("invalid plugin: {e}")))?]
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    Ok(list
        .into_iter()
        .map(|mut p| {
            if p.transport_kind() == Some(TransportKind::Unix)
                && !p.endpoint.is_empty()
                && Path::new(&p.endpoint).is_relative()
            {
                p.endpoint = dir.join(&p.endpoint).display().to_string();
            }
            if !p.executable.is_empty() && Path::new(&p.executable).is_relative() {
                p.executable = dir.join(&p.executable).display().to_string();
            }
            p.annotations
                .insert(SOURCE_ANNOTATION.into(), path.display().to_string());
            p
        })
        .collect())
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn exec_plugin(path: &Path) -> PluginConfig {
    let stem = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut p = PluginConfig {
        name,
        transport: TransportKind::Exec.to_string(),
        executable: path.display().to_string(),
        ..PluginConfig::default()
    };
    p.annotations
        .insert(SOURCE_ANNOTATION.into(), path.display().to_string());
    p
}

/// Scan the directories once. Each plugin is validated with `defaults`'
/// default blocks merged in; invalid ones are reported, not returned.
pub fn scan(cfg: &DiscoveryConfig, defaults: &ManagerConfig) -> ScanResult {
    let pats = patterns(cfg);
    let mut out = ScanResult::default();
    let mut names = BTreeMap::new();
    for dir in &cfg.directories {
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for path in files {
            let Some(fname) = path.file_name().and_then(|f| f.to_str()) else {
                continue;
            };
            if fname.starts_with('.') || !pats.iter().any(|p| p.matches(fname)) || !path.is_file() {
                continue;
            }
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            let found = if matches!(ext, "json" | "yaml" | "yml") {
                match parse_file(&path) {
                    Ok(ps) => ps,
                    Err(p) => {
                        out.problems.push(p);
                        continue;
                    }
                }
            } else if is_executable(&path) {
                vec![exec_plugin(&path)]
            } else {
                continue;
            };
            for p in found {
                let mut errs = Vec::new();
                p.with_defaults(defaults)
                    .validate_into(&path.display().to_string(), &mut errs);
                if !errs.is_empty() {
                    out.problems.push(DiscoveryProblem {
                        path: path.clone(),
                        errors: errs,
                    });
                    continue;
                }
                if names.insert(p.name.clone(), path.clone()).is_some() {
                    out.problems.push(problem(
                        &path,
                        "PLUGIN_1010",
                        format!("plugin name {:?} is also discovered elsewhere", p.name),
                    ));
                    continue;
                }
                out.plugins.push(p);
            }
        }
    }
    out
}

fn is_discovered(p: &PluginConfig) -> bool {
    p.annotations.contains_key(SOURCE_ANNOTATION)
}

/// Scan once and make the manager's discovered plugins match: new ones
/// added, changed ones replaced, vanished ones removed (graceful reload).
pub async fn sync(
    manager: &Manager,
    cfg: &DiscoveryConfig,
) -> Result<(ScanResult, ReloadReport), crate::manager::LoadError> {
    let current = manager.config();
    let scanned = scan(cfg, &current);
    let mut plugins: Vec<PluginConfig> = current
        .plugins
        .iter()
        .filter(|p| !is_discovered(p))
        .cloned()
        .collect();
    for p in &scanned.plugins {
        if plugins.iter().any(|q| q.name == p.name) {
            continue; // configured explicitly: that one wins
        }
        // Factories are checked by the reload; skip what it would refuse.
        if !manager.transports().contains(&p.transport) {
            continue;
        }
        plugins.push(p.clone());
    }
    let next = ManagerConfig {
        plugins,
        discovery: DiscoveryConfig {
            enabled: true,
            ..current.discovery.clone()
        },
        ..current
    };
    let report = manager.reload(next, ReloadOptions::default()).await?;
    Ok((scanned, report))
}

/// A running watch; dropping it stops watching (plugins stay).
pub struct DiscoveryWatcher {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
    last: Arc<Mutex<Option<ScanResult>>>,
}

impl std::fmt::Debug for DiscoveryWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscoveryWatcher").finish_non_exhaustive()
    }
}

impl DiscoveryWatcher {
    /// The last scan's result.
    pub fn last_scan(&self) -> Option<ScanResult> {
        self.last.lock().ok().and_then(|g| g.clone())
    }
}

impl Drop for DiscoveryWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sync once, then keep watching the directories and sync again after each
/// burst of changes (debounced by 150 ms).
pub async fn watch(
    manager: Manager,
    cfg: DiscoveryConfig,
) -> Result<DiscoveryWatcher, crate::error::Error> {
    use notify::Watcher;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok() {
            let _ = tx.send(());
        }
    })
    .map_err(|e| {
        crate::error::Error::new(
            crate::error::ErrorKind::ConnectionFailed,
            format!("cannot watch plugin directories: {e}"),
        )
    })?;
    for d in &cfg.directories {
        watcher
            .watch(Path::new(d), notify::RecursiveMode::NonRecursive)
            .map_err(|e| {
                crate::error::Error::new(
                    crate::error::ErrorKind::ConnectionFailed,
                    format!("cannot watch {d}: {e}"),
                )
            })?;
    }
    let last = Arc::new(Mutex::new(None));
    let first = sync(&manager, &cfg).await;
    if let Ok((s, _)) = &first {
        if let Ok(mut g) = last.lock() {
            *g = Some(s.clone());
        }
    }
    let l2 = Arc::clone(&last);
    let task = tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Debounce: let the burst (create + write + rename) settle.
            tokio::time::sleep(Duration::from_millis(150)).await;
            while rx.try_recv().is_ok() {}
            match sync(&manager, &cfg).await {
                Ok((s, report)) => {
                    tracing::info!(
                        added = report.diff.added.len(),
                        updated = report.diff.updated.len(),
                        removed = report.diff.removed.len(),
                        problems = s.problems.len(),
                        "plugin discovery applied changes"
                    );
                    if let Ok(mut g) = l2.lock() {
                        *g = Some(s);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "plugin discovery could not apply changes"),
            }
        }
    });
    Ok(DiscoveryWatcher {
        _watcher: watcher,
        task,
        last,
    })
}
