//! Config generators: from an instance (bind address, named ports, directories)
//! and its options to the feature's native configuration, written atomically
//! and checked by the feature's own checker.
//!
//! The instance flow calls, in this order:
//!
//! 1. [`GeneratorRegistry::validate_options`] (before anything is allocated):
//!    unknown mode, unknown key, wrong type, out of range, not in the enum,
//!    missing — all reported at once with the keys named.
//! 2. allocate ports (named by [`Network::named_ports`]), the network, dirs.
//! 3. [`GeneratorRegistry::render`] with an [`InstanceContext`].
//! 4. [`stage`] the files in the config dir, [`check()`] the staged main file
//!    with the feature's checker, then [`Staged::commit`] (or [`write_atomic`]
//!    then [`check()`] when there is no old config to keep).
//!
//! Built-in generators: `tor` (torrc), `sing-box` (JSON), `xray` (JSON that
//! Xray-core and v2ray 4.x both accept) and `template` (minijinja, for any
//! manifest without Rust code).
//!
//! [`Network::named_ports`]: crate::catalog::manifest::Network::named_ports

pub mod check;
/// The option schema lives with the manifest; the generators read it.
pub use crate::catalog::options;
mod singbox;
mod template;
mod tor;
mod xray;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::catalog::manifest::Manifest;
use crate::{Error, Result};

pub use check::{
    check, check_in, check_with, check_with_env, check_with_timeout, remove_stale_temps, stage,
    write_atomic, Staged, DEFAULT_CHECK_TIMEOUT,
};
pub use options::{
    check_options, options_error, parse_sets, redact, resolve_mode, secret_keys, OptionProblem,
};

/// [`GeneratorRegistry::validate_options`] with the built-in generators: the
/// option schema, the mode, and the named generator's own checks, every
/// problem at once. Call before anything is allocated.
pub fn validate_options(
    m: &Manifest,
    mode: Option<&str>,
    user: &Map<String, Value>,
) -> Result<Map<String, Value>> {
    GeneratorRegistry::builtin().validate_options(m, mode, user)
}
pub use singbox::SingBox;
pub use template::Template;
pub use tor::Tor;
pub use xray::Xray;

/// A manifest without a generator (no `config` or no `config.generator`).
pub const NO_GENERATOR: crate::ErrorKind = crate::ErrorKind::ConfigNoGenerator;
/// A generator id the registry does not have.
pub const UNKNOWN_GENERATOR: crate::ErrorKind = crate::ErrorKind::ConfigUnknownGenerator;
/// The instance has no port of a name the generator needs.
pub const PORT_MISSING: crate::ErrorKind = crate::ErrorKind::ConfigPortMissing;
/// A template that cannot be read, parsed or rendered.
pub const TEMPLATE_ERROR: crate::ErrorKind = crate::ErrorKind::ConfigTemplateError;
/// Output that is not valid in its own format, or an unusable context value.
pub const RENDER_FAILED: crate::ErrorKind = crate::ErrorKind::ConfigRenderFailed;
/// A file path that would leave the config dir, or a path a format cannot hold.
pub const BAD_PATH: crate::ErrorKind = crate::ErrorKind::ConfigBadPath;

/// What the instance flow knows about the instance when it renders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceContext {
    /// Instance id.
    pub instance_id: String,
    /// Instance name.
    pub name: String,
    /// Feature id.
    pub feature: String,
    /// The mode chosen ([`resolve_mode`]), if the feature has modes.
    pub mode: Option<String>,
    /// Address to listen on: 127.0.0.1, or the instance's network address.
    pub bind: IpAddr,
    /// Allocated ports by name (`network.port_names`).
    pub ports: BTreeMap<String, u16>,
    /// The instance's data dir.
    pub data_dir: PathBuf,
    /// The instance's log dir.
    pub log_dir: PathBuf,
    /// Where its config files go.
    pub config_dir: PathBuf,
    /// The install dir of the feature's binary.
    pub install_dir: PathBuf,
}

impl InstanceContext {
    /// A context with the default bind address (127.0.0.1), no ports, and the
    /// dirs `data`, `logs` and `config` under `instance_dir`.
    pub fn new(
        instance_id: impl Into<String>,
        name: impl Into<String>,
        feature: impl Into<String>,
        instance_dir: &Path,
        install_dir: &Path,
    ) -> InstanceContext {
        InstanceContext {
            instance_id: instance_id.into(),
            name: name.into(),
            feature: feature.into(),
            mode: None,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ports: BTreeMap::new(),
            data_dir: instance_dir.join("data"),
            log_dir: instance_dir.join("logs"),
            config_dir: instance_dir.join("config"),
            install_dir: install_dir.to_path_buf(),
        }
    }

    /// Create the data, log and config dirs (mode 0700) if missing. Do this
    /// before [`check()`]: some checkers open their log files (`v2ray -test`
    /// fails when the log dir is missing) and tor wants a private data dir.
    pub fn create_dirs(&self) -> Result<()> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        for d in [&self.data_dir, &self.log_dir, &self.config_dir] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
                .and_then(|()| std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)))
                .map_err(|e| {
                    Error::new(
                        check::WRITE_FAILED,
                        format!("cannot create the instance dir: {e}"),
                    )
                    .with("path", d.display())
                    .with("instance", &self.instance_id)
                    .hint("check the data dir is writable and its disk is not full")
                })?;
        }
        Ok(())
    }

    /// The port named `name`, or `CONFIG_PORT_MISSING`.
    pub fn port(&self, name: &str) -> Result<u16> {
        self.ports.get(name).copied().ok_or_else(|| {
            let have: Vec<&str> = self.ports.keys().map(String::as_str).collect();
            Error::new(
                PORT_MISSING,
                format!("the {} config needs a port named {name:?}", self.feature),
            )
            .with("instance", &self.instance_id)
            .with("ports", have.join(", "))
            .hint("allocate one port per network.default_ports entry, named by network.port_names")
        })
    }

    /// `bind:port` of the port named `name` (IPv6 in brackets).
    pub fn addr(&self, name: &str) -> Result<String> {
        Ok(host_port(self.bind, self.port(name)?))
    }

    /// The bind address as text.
    pub fn bind_str(&self) -> String {
        self.bind.to_string()
    }
}

/// `ip:port`, with IPv6 in brackets.
pub fn host_port(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// One file of a rendered config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderedFile {
    /// Path relative to the config dir (no `..`, not absolute).
    pub rel_path: String,
    /// The file's contents.
    pub contents: String,
    /// Its format: `json`, `yaml`, `toml`, `torrc` or `text`.
    pub format: String,
}

/// A rendered config: its files, and which one the feature is started with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendered {
    /// Every file.
    pub files: Vec<RenderedFile>,
    /// `rel_path` of the main file (what `{{config}}` names).
    pub main: String,
}

impl Rendered {
    /// A config of one file.
    pub fn single(
        rel_path: impl Into<String>,
        format: impl Into<String>,
        contents: String,
    ) -> Self {
        let rel_path = rel_path.into();
        Rendered {
            main: rel_path.clone(),
            files: vec![RenderedFile {
                rel_path,
                contents,
                format: format.into(),
            }],
        }
    }

    /// The main file.
    pub fn main_file(&self) -> Option<&RenderedFile> {
        self.files.iter().find(|f| f.rel_path == self.main)
    }
}

/// What a generator renders from.
#[derive(Debug, Clone, Copy)]
pub struct RenderInput<'a> {
    /// The feature's manifest.
    pub manifest: &'a Manifest,
    /// The manifest's directory (templates are relative to it).
    pub manifest_dir: &'a Path,
    /// The instance.
    pub ctx: &'a InstanceContext,
    /// The merged, validated options ([`validate_options`]).
    pub options: &'a Map<String, Value>,
}

impl RenderInput<'_> {
    /// The config file name: the manifest's `config.path`, else `default`.
    pub fn file_name(&self, default: &str) -> String {
        self.manifest
            .config
            .as_ref()
            .and_then(|c| c.path.clone())
            .unwrap_or_else(|| default.to_string())
    }

    /// Typed access to the options.
    pub fn opts(&self) -> Opts<'_> {
        Opts(self.options)
    }
}

/// Typed, forgiving access to validated options (a missing or mistyped key
/// reads as absent).
#[derive(Debug, Clone, Copy)]
pub struct Opts<'a>(pub &'a Map<String, Value>);

impl<'a> Opts<'a> {
    /// A string option.
    pub fn str(&self, key: &str) -> Option<&'a str> {
        self.0.get(key).and_then(Value::as_str)
    }
    /// A non-empty string option.
    pub fn nonempty(&self, key: &str) -> Option<&'a str> {
        self.str(key).filter(|s| !s.is_empty())
    }
    /// A boolean option, or `default`.
    pub fn bool(&self, key: &str, default: bool) -> bool {
        self.0.get(key).and_then(Value::as_bool).unwrap_or(default)
    }
    /// An integer option.
    pub fn int(&self, key: &str) -> Option<i64> {
        self.0.get(key).and_then(Value::as_i64)
    }
    /// A port option.
    pub fn port(&self, key: &str) -> Option<u16> {
        self.int(key)
            .and_then(|i| u16::try_from(i).ok())
            .filter(|p| *p != 0)
    }
    /// A list of strings (non-strings are skipped).
    pub fn strs(&self, key: &str) -> Vec<&'a str> {
        self.0
            .get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }
    /// A required string, or a `CONFIG_MISSING_OPTION` problem.
    pub fn need(&self, key: &str, why: &str, problems: &mut Vec<OptionProblem>) {
        if self.nonempty(key).is_none() && self.int(key).is_none() {
            problems.push(OptionProblem::new(
                key,
                options::MISSING_OPTION,
                format!("{key} is required {why}"),
            ));
        }
    }
}

/// Makes a feature's native config.
pub trait Generator: Send + Sync {
    /// The id manifests name in `config.generator`.
    fn id(&self) -> &str;

    /// Problems the option schema cannot express (fields one choice makes
    /// required, formats such as UUIDs), on the merged options. Runs before
    /// anything is allocated.
    fn check_options(
        &self,
        _manifest: &Manifest,
        _options: &Map<String, Value>,
    ) -> Vec<OptionProblem> {
        Vec::new()
    }

    /// Render the config.
    fn render(&self, input: &RenderInput<'_>) -> Result<Rendered>;
}

/// Generators by id.
#[derive(Clone, Default)]
pub struct GeneratorRegistry {
    generators: HashMap<String, Arc<dyn Generator>>,
}

impl std::fmt::Debug for GeneratorRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratorRegistry")
            .field("ids", &self.ids())
            .finish()
    }
}

impl GeneratorRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// `tor`, `sing-box`, `xray` and `template`.
    pub fn builtin() -> Self {
        let mut r = Self::new();
        r.register(Arc::new(Tor));
        r.register(Arc::new(SingBox));
        r.register(Arc::new(Xray));
        r.register(Arc::new(Template));
        r
    }

    /// Add (or replace) a generator under its id.
    pub fn register(&mut self, g: Arc<dyn Generator>) {
        self.generators.insert(g.id().to_string(), g);
    }

    /// Ids, sorted.
    pub fn ids(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.generators.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// The generator `id`, or `CONFIG_UNKNOWN_GENERATOR`.
    pub fn get(&self, id: &str) -> Result<Arc<dyn Generator>> {
        self.generators.get(id).cloned().ok_or_else(|| {
            Error::new(UNKNOWN_GENERATOR, format!("no config generator {id:?}"))
                .with("generator", id)
                .hint(format!(
                    "config.generator must be one of: {} (template renders a minijinja file beside the manifest)",
                    self.ids().join(", ")
                ))
        })
    }

    /// The generator a manifest names (`template` when it only names a
    /// template), or `CONFIG_NO_GENERATOR`.
    pub fn for_manifest(&self, m: &Manifest) -> Result<Arc<dyn Generator>> {
        let c = m.config.as_ref();
        let id = c
            .and_then(|c| c.generator.as_deref())
            .or_else(|| c.and_then(|c| c.template.as_ref()).map(|_| "template"));
        match id {
            Some(id) => self.get(id).map_err(|e| e.with("feature", &m.id)),
            None => Err(Error::new(
                NO_GENERATOR,
                format!("feature {} declares no config generator", m.id),
            )
            .with("feature", &m.id)
            .hint("set config.generator in the manifest (tor, sing-box, xray or template)")),
        }
    }

    /// [`validate_options`] plus the generator's own checks (when the manifest
    /// has a generator), all problems reported at once. Call before allocating.
    pub fn validate_options(
        &self,
        m: &Manifest,
        mode: Option<&str>,
        user: &Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        let mode = resolve_mode(m, mode)?;
        let named = m
            .config
            .as_ref()
            .is_some_and(|c| c.generator.is_some() || c.template.is_some());
        let gen = if named {
            Some(self.for_manifest(m)?)
        } else {
            None
        };
        match check_options(m, mode, user) {
            Ok(merged) => {
                let mut problems = gen.map(|g| g.check_options(m, &merged)).unwrap_or_default();
                if problems.is_empty() {
                    Ok(merged)
                } else {
                    problems.sort_by(|a, b| a.key.cmp(&b.key));
                    Err(options_error(m, &problems))
                }
            }
            Err(p) => Err(options_error(m, &p)),
        }
    }

    /// Render with the manifest's generator, then check the result: paths stay
    /// in the config dir, the main file exists, JSON, YAML and TOML files
    /// parse, and no torrc line continues into the next (`CONFIG_RENDER_FAILED`
    /// otherwise).
    pub fn render(&self, input: &RenderInput<'_>) -> Result<Rendered> {
        let g = self.for_manifest(input.manifest)?;
        check_context(input.ctx)?;
        let r = g.render(input).map_err(|e| {
            e.with("feature", &input.manifest.id)
                .with("instance", &input.ctx.instance_id)
        })?;
        verify_rendered(&r)?;
        Ok(r)
    }
}

fn check_context(ctx: &InstanceContext) -> Result<()> {
    let texts = [
        ("instance_id", ctx.instance_id.as_str().into()),
        ("name", ctx.name.as_str().into()),
        ("feature", ctx.feature.as_str().into()),
        ("data_dir", ctx.data_dir.to_string_lossy()),
        ("log_dir", ctx.log_dir.to_string_lossy()),
        ("config_dir", ctx.config_dir.to_string_lossy()),
        ("install_dir", ctx.install_dir.to_string_lossy()),
    ];
    for (k, v) in texts {
        if let Some(c) = options::control_char(&v) {
            return Err(Error::new(
                RENDER_FAILED,
                format!("the instance's {k} contains the control character {c:?}"),
            )
            .with("instance", &ctx.instance_id)
            .hint("names and paths may not contain newlines or other control characters"));
        }
    }
    Ok(())
}

/// Check a relative path stays inside its directory.
pub fn safe_rel_path(p: &str) -> Result<&Path> {
    let path = Path::new(p);
    let ok = !p.is_empty()
        && path.is_relative()
        && path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if ok {
        Ok(path)
    } else {
        Err(Error::new(
            BAD_PATH,
            format!("config file path {p:?} leaves the config dir"),
        )
        .hint("config file paths are relative, without `..`"))
    }
}

fn verify_rendered(r: &Rendered) -> Result<()> {
    if r.main_file().is_none() {
        return Err(Error::new(
            RENDER_FAILED,
            format!("the rendered config has no main file {:?}", r.main),
        ));
    }
    for f in &r.files {
        safe_rel_path(&f.rel_path)?;
        let bad = match f.format.as_str() {
            "json" => serde_json::from_str::<Value>(&f.contents)
                .err()
                .map(|e| e.to_string()),
            "yaml" => serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&f.contents)
                .err()
                .map(|e| e.to_string()),
            "toml" => f
                .contents
                .parse::<toml_edit::DocumentMut>()
                .err()
                .map(|e| e.to_string()),
            // tor joins a line ending in `\` with the next one: a value ending
            // so would swallow the directive the template wrote after it.
            "torrc" => f.contents.lines().position(|l| l.ends_with('\\')).map(|i| {
                format!(
                    "line {} ends with `\\`, which continues it into the next",
                    i + 1
                )
            }),
            _ => None,
        };
        if let Some(e) = bad {
            return Err(Error::new(
                RENDER_FAILED,
                format!("the rendered {} is not valid {}: {e}", f.rel_path, f.format),
            )
            .with("file", &f.rel_path)
            .hint("fix the template so it produces valid output (in JSON templates values are JSON-escaped: write {{ options.x }} without quotes)"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_paths() {
        assert!(safe_rel_path("config.json").is_ok());
        assert!(safe_rel_path("sub/x.toml").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "./x"] {
            assert_eq!(
                safe_rel_path(bad).unwrap_err().code(),
                BAD_PATH.code(),
                "{bad}"
            );
        }
    }

    #[test]
    fn addr_brackets_v6() {
        assert_eq!(host_port("::1".parse().unwrap(), 9), "[::1]:9");
        assert_eq!(host_port("10.0.0.1".parse().unwrap(), 9), "10.0.0.1:9");
    }
}
