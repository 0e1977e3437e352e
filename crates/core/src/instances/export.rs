//! `hangar export nomad|kubernetes INSTANCE`: what a team moving an instance
//! to another scheduler needs, written from what hangar knows of it.
//!
//! [`Instances::export`] gathers the facts ([`ExportFacts`]: the install's
//! URL and verified digest, the command line and environment the process
//! really gets, its ports, probe, limits and restart policy, the config file
//! as it is on disk) and hands them to pure functions, [`nomad`] and
//! [`kubernetes`], which only write text. Paths on this machine are carried
//! as markers (`{{install_dir}}`, `{{config}}`, `{{config_dir}}`, `{{data}}`,
//! `{{dir}}`) that each target replaces with its own places.
//!
//! Secret options never appear: the config is rendered again with a
//! stand-in for each secret option that is set, and each target turns the
//! stand-in into a reference it resolves itself (a Nomad variable read by the
//! `template`; a Kubernetes `Secret` substituted by the init container). A
//! last check refuses any output that still holds a secret's value.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::{render, steps, Instance, InstanceState, Instances};
use crate::error::{Error, Result};
use crate::util::blocking;
use hangar_feature::catalog::manifest::{EnvPlaces, HealthKind};
use hangar_feature::catalog::Manifest;
use hangar_supervisor::RestartPolicy;

/// The schedulers `hangar export` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// A Nomad job in HCL.
    Nomad,
    /// Kubernetes objects as a YAML stream.
    Kubernetes,
}

impl ExportFormat {
    /// Every format, by its name.
    pub const ALL: [ExportFormat; 2] = [ExportFormat::Nomad, ExportFormat::Kubernetes];

    /// Its name on the command line and in the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Nomad => "nomad",
            ExportFormat::Kubernetes => "kubernetes",
        }
    }

    /// A file name for an instance's export (`web.nomad.hcl`, `web.k8s.yaml`).
    pub fn file_name(self, instance: &str) -> String {
        match self {
            ExportFormat::Nomad => format!("{instance}.nomad.hcl"),
            ExportFormat::Kubernetes => format!("{instance}.k8s.yaml"),
        }
    }

    /// `nomad`, `kubernetes` (or `k8s`), any case; anything else is
    /// `EXPORT_UNKNOWN_FORMAT` with the names and a did-you-mean.
    pub fn parse(s: &str) -> Result<ExportFormat> {
        let l = s.trim().to_ascii_lowercase();
        match l.as_str() {
            "nomad" => Ok(ExportFormat::Nomad),
            "kubernetes" | "k8s" => Ok(ExportFormat::Kubernetes),
            _ => {
                let names = ["nomad", "kubernetes", "k8s"];
                let mut e = Error::new(
                    crate::ErrorKind::ExportUnknownFormat,
                    format!("no export format {s:?}"),
                )
                .with("format", s)
                .with("formats", "nomad, kubernetes");
                e = match hangar_base::suggest::closest(&l, names) {
                    Some(c) => e.hint(format!("did you mean {c:?}?")),
                    None => e.hint(
                        "write `hangar export nomad NAME` or `hangar export kubernetes NAME`",
                    ),
                };
                Err(e)
            }
        }
    }
}

/// An export: its format and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// What it is written for.
    pub format: ExportFormat,
    /// The job (HCL) or the objects (YAML).
    pub text: String,
    /// A file name for it.
    pub file_name: String,
}

/// The instance's main config file, as exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigExport {
    /// Its path under the config directory.
    pub rel_path: String,
    /// Its contents: the file on disk, or, when secret options are set, the
    /// config rendered with a stand-in ([`SecretRef::token`]) for each.
    pub text: String,
    /// The secret options set, each with its stand-in in `text`.
    pub secrets: Vec<SecretRef>,
}

/// A secret option and the stand-in that holds its place in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    /// The option's key.
    pub option: String,
    /// The stand-in: shaped like a UUID, so options checked as one accept it.
    pub token: String,
}

/// The probe, as the manifest's `health` says.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthExport {
    /// http, tcp, exec or process.
    pub kind: HealthKind,
    /// The port's name (http, tcp).
    pub port: Option<String>,
    /// HTTP path.
    pub path: String,
    /// Command (exec), with path markers.
    pub command: Vec<String>,
    /// Time between checks.
    pub interval: Duration,
    /// Timeout per check.
    pub timeout: Duration,
}

/// Everything an export is written from. Paths of this machine appear as
/// markers only (see the module's doc).
#[derive(Debug, Clone, PartialEq)]
pub struct ExportFacts {
    /// Instance name (the job's, the objects').
    pub name: String,
    /// Instance id.
    pub id: String,
    /// Feature id.
    pub feature: String,
    /// Installed version.
    pub version: String,
    /// The release URL the install downloaded.
    pub url: String,
    /// Its verified SHA-256 (hex).
    pub sha256: String,
    /// Whether a digest (or signature) was checked at install.
    pub verified: bool,
    /// The binary's path inside the unpacked release.
    pub binary_rel: String,
    /// Arguments, with markers.
    pub args: Vec<String>,
    /// Environment, with markers.
    pub env: BTreeMap<String, String>,
    /// Named ports, in the manifest's order, with the instance's numbers.
    pub ports: Vec<(String, u16)>,
    /// The main config file, when the feature has one.
    pub config: Option<ConfigExport>,
    /// The probe.
    pub health: Option<HealthExport>,
    /// Memory limit in bytes.
    pub memory_bytes: Option<u64>,
    /// CPUs.
    pub cpus: Option<f64>,
    /// Most processes.
    pub max_pids: Option<u64>,
    /// hangar's restart policy for the process.
    pub restart: RestartPolicy,
    /// Files of the config other than the main one (not exported).
    pub other_config_files: Vec<String>,
    /// The config names a path of this machine (the instance's directory).
    pub config_names_host_paths: bool,
}

/// Where the markers point in a target.
struct Places<'a> {
    install_dir: &'a str,
    config_dir: &'a str,
    data: &'a str,
    dir: &'a str,
}

impl ExportFacts {
    fn config_path(&self, p: &Places<'_>) -> String {
        match &self.config {
            Some(c) => format!("{}/{}", p.config_dir, c.rel_path),
            None => format!("{}/config", p.config_dir),
        }
    }

    fn place(&self, s: &str, p: &Places<'_>) -> String {
        s.replace("{{config}}", &self.config_path(p))
            .replace("{{config_dir}}", p.config_dir)
            .replace("{{install_dir}}", p.install_dir)
            .replace("{{data}}", p.data)
            .replace("{{dir}}", p.dir)
    }

    /// The secret options that must be provided.
    fn secret_names(&self) -> Vec<&str> {
        self.config
            .iter()
            .flat_map(|c| c.secrets.iter().map(|s| s.option.as_str()))
            .collect()
    }

    /// Whether the release is an archive the target unpacks, and which.
    fn archive(&self) -> Option<&'static str> {
        let name = self
            .url
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let name = name.split(['?', '#']).next().unwrap_or("");
        [
            (".tar.gz", "tar.gz"),
            (".tgz", "tar.gz"),
            (".tar.xz", "tar.xz"),
            (".txz", "tar.xz"),
            (".tar.bz2", "tar.bz2"),
            (".tar", "tar"),
            (".zip", "zip"),
        ]
        .into_iter()
        .find(|(ext, _)| name.ends_with(ext))
        .map(|(_, k)| k)
    }
}

// ---------------------------------------------------------------- gathering

/// Stand-in for the `i`th secret option: a UUID-shaped word ("HANGARSECRET"
/// in hex, then the index) that no config holds by chance and that options
/// checked as UUIDs accept.
fn token(i: usize) -> String {
    format!("48414e47-4152-5345-4352-4554{i:08x}")
}

/// A value of this machine with its paths replaced by markers, longest first.
fn mark(v: &str, inst: &Instance, install_dir: &Path) -> String {
    let mut pairs: Vec<(String, &str)> = Vec::new();
    if let Some(c) = &inst.config_file {
        pairs.push((c.display().to_string(), "{{config}}"));
    }
    pairs.push((
        inst.dir.join("config").display().to_string(),
        "{{config_dir}}",
    ));
    pairs.push((inst.dir.join("data").display().to_string(), "{{data}}"));
    pairs.push((install_dir.display().to_string(), "{{install_dir}}"));
    pairs.push((inst.dir.display().to_string(), "{{dir}}"));
    let mut out = v.to_string();
    for (from, to) in pairs {
        if !from.is_empty() {
            out = out.replace(&from, to);
        }
    }
    out
}

/// A manifest argument (or exec probe word) for another scheduler: the
/// config and the directory as markers, the address as every interface
/// (a scheduler routes to the task's address), the ports as the instance has
/// them.
fn target_arg(arg: &str, inst: &Instance) -> String {
    let mut out = arg.replace("{{bind}}", "0.0.0.0");
    for (n, p) in &inst.ports {
        out = out.replace(&format!("{{{{port.{n}}}}}"), &p.to_string());
    }
    out
}

impl Instances {
    /// Write an instance as a Nomad job or Kubernetes objects. Changes
    /// nothing. `INSTANCE_NOT_FOUND`, `EXPORT_UNKNOWN_FORMAT`,
    /// `INSTANCE_NOT_CREATED` for an instance not fully made.
    pub(crate) async fn export(&self, id_or_name: &str, format: &str) -> Result<Export> {
        let format = ExportFormat::parse(format)?;
        let inst = self.instance(id_or_name)?;
        if !(inst.state.is_up() || inst.state == InstanceState::Stopped) || inst.config_pending {
            return Err(Error::new(
                crate::ErrorKind::InstanceNotCreated,
                format!(
                    "{} is {}: only a made instance can be exported",
                    inst.name,
                    inst.state.as_str()
                ),
            )
            .with("instance", &inst.name)
            .with("state", inst.state.as_str())
            .hint(if inst.state == InstanceState::Error {
                "`hangar instance start NAME` makes it again; export it once it runs"
            } else {
                "wait until it is running (or stopped), then export it"
            }));
        }
        let (m, mdir) = self.manifest_of(&inst.feature).await?;
        let spec = steps::process::spec(self, &inst, &m)?;
        let install_dir = render::install_dir(self, &inst);
        let (d, i2, m2) = (self.clone(), inst.clone(), m.clone());
        let facts = blocking(move || gather(&d, &i2, &m2, &mdir, &spec, &install_dir)).await?;
        let text = match format {
            ExportFormat::Nomad => nomad(&facts),
            ExportFormat::Kubernetes => kubernetes(&facts),
        };
        refuse_leaks(&inst, &m, &text)?;
        Ok(Export {
            format,
            file_name: format.file_name(&inst.name),
            text,
        })
    }
}

/// The facts of one instance. Blocks (reads the install record and the
/// config file, renders).
fn gather(
    ins: &Instances,
    inst: &Instance,
    m: &Manifest,
    mdir: &Path,
    spec: &hangar_supervisor::ProcessSpec,
    install_dir: &Path,
) -> Result<ExportFacts> {
    let not_installed = || {
        Error::new(
            crate::ErrorKind::InstanceNotInstalled,
            format!("{} {} is not installed", inst.feature, inst.version),
        )
        .with("instance", &inst.name)
        .hint("`hangar install FEATURE@VERSION` installs it again")
    };
    let installed = ins
        .s
        .installer
        .versions(&inst.feature)
        .unwrap_or_default()
        .into_iter()
        .find(|i| i.version == inst.version)
        .ok_or_else(not_installed)?;
    let binary_rel = installed
        .binary
        .strip_prefix(&installed.dir)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| {
            installed
                .binary
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        });

    // The config: the file on disk, or rendered again with stand-ins when a
    // secret option is set.
    let mut other_config_files = Vec::new();
    let config = match &inst.config_file {
        None => None,
        Some(file) => {
            let rel_path = file
                .strip_prefix(inst.dir.join("config"))
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| {
                    file.file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "config".into())
                });
            let merged = hangar_feature::configgen::validate_options(
                m,
                inst.mode.as_deref(),
                &inst.options,
            )?;
            let secret_keys = hangar_feature::configgen::secret_keys(m);
            let mut stand_in = merged.clone();
            let mut secrets = Vec::new();
            for (k, v) in stand_in.iter_mut() {
                if !secret_keys.contains(k) || v.is_null() || v.as_str() == Some("") {
                    continue;
                }
                if !v.is_string() {
                    return Err(unmapped(inst, k, "it is not a string"));
                }
                let t = token(secrets.len());
                *v = Value::String(t.clone());
                secrets.push(SecretRef {
                    option: k.clone(),
                    token: t,
                });
            }
            // Only a config with a secret set is rendered again; any other
            // is exported as the file on disk.
            let rendered = if secrets.is_empty() {
                None
            } else {
                render::render_with(inst, m, mdir, &stand_in)
                    .map_err(|e| unmapped(inst, &secrets_list(&secrets), &e.message))?
            };
            other_config_files = match &rendered {
                Some(r) => r
                    .files
                    .iter()
                    .filter(|f| f.rel_path != r.main)
                    .map(|f| f.rel_path.clone())
                    .collect(),
                None => other_files(&inst.dir.join("config"), file),
            };
            let text = match rendered.as_ref().and_then(|r| r.main_file()) {
                Some(f) => f.contents.clone(),
                None => std::fs::read_to_string(file).map_err(|e| {
                    Error::new(
                        crate::ErrorKind::ExportConfigUnreadable,
                        format!("cannot read {}: {e}", file.display()),
                    )
                    .with("instance", &inst.name)
                })?,
            };
            // A stand-in the generator did not copy through (it hashed or
            // dropped the option) is no reference: say so.
            if let Some(s) = secrets.iter().find(|s| !text.contains(&s.token)) {
                if merged.get(&s.option).is_some_and(|v| !v.is_null()) {
                    return Err(unmapped(
                        inst,
                        &s.option,
                        "the generator does not copy it into the config as it is",
                    ));
                }
            }
            Some(ConfigExport {
                rel_path,
                text,
                secrets,
            })
        }
    };
    let config_names_host_paths = config
        .as_ref()
        .is_some_and(|c| c.text.contains(&inst.dir.display().to_string()));

    let args = m.binary.args.iter().map(|a| target_arg(a, inst)).collect();
    let mut env: BTreeMap<String, String> = spec
        .env
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "USER" | "HOME"))
        .map(|(k, v)| (k.clone(), mark(v, inst, install_dir)))
        .collect();
    // The manifest's own environment with the target's places, not this
    // machine's.
    env.extend(m.env_for(EnvPlaces {
        install_dir: Path::new("{{install_dir}}"),
        instance_dir: Path::new("{{dir}}"),
        config: inst.config_file.as_ref().map(|_| Path::new("{{config}}")),
    }));
    env.insert("HANGAR_BIND".into(), "0.0.0.0".into());
    if inst.config_file.is_some() {
        env.insert("HANGAR_CONFIG".into(), "{{config}}".into());
    }

    let names = super::port_names(m);
    let ports: Vec<(String, u16)> = names
        .iter()
        .filter_map(|n| inst.ports.get(n).map(|p| (n.clone(), *p)))
        .collect();
    let health = m.health.as_ref().map(|h| {
        let port = names.get(h.port_index.unwrap_or(0)).cloned();
        let secs = |s: Option<f64>, d: f64| {
            Duration::from_secs_f64(s.filter(|t| t.is_finite() && *t > 0.0).unwrap_or(d))
        };
        HealthExport {
            kind: h.kind,
            port,
            path: h.path.clone().unwrap_or_else(|| "/".into()),
            command: h
                .command
                .iter()
                .map(|a| {
                    let a = a.replace("{{config}}", "\u{0}CONFIG\u{0}");
                    let a = target_arg(&a, inst).replace("\u{0}CONFIG\u{0}", "{{config}}");
                    mark(&a, inst, install_dir)
                })
                .collect(),
            interval: secs(h.interval_seconds, 10.0),
            timeout: secs(h.timeout_seconds, 5.0),
        }
    });
    let limits = spec.limits.as_ref();
    Ok(ExportFacts {
        name: inst.name.clone(),
        id: inst.id.clone(),
        feature: inst.feature.clone(),
        version: inst.version.clone(),
        url: installed.url,
        sha256: installed.sha256,
        verified: installed.verified,
        binary_rel,
        args,
        env,
        ports,
        config,
        health,
        memory_bytes: limits.and_then(|l| l.memory_max),
        cpus: limits.and_then(|l| l.cpu_max),
        max_pids: limits.and_then(|l| l.pids_max),
        restart: spec.restart,
        other_config_files,
        config_names_host_paths,
    })
}

/// The files of the config directory besides the main one (hangar's temp
/// files left out), by path under it.
fn other_files(config_dir: &Path, main: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![config_dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.contains(".hangar-tmp-") || name.starts_with(".tmp-") {
                continue;
            }
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(_) if p != main => {
                    if let Ok(r) = p.strip_prefix(config_dir) {
                        out.push(r.display().to_string());
                    }
                }
                _ => {}
            }
        }
    }
    out.sort();
    out
}

fn secrets_list(s: &[SecretRef]) -> String {
    s.iter()
        .map(|s| s.option.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn unmapped(inst: &Instance, option: &str, why: &str) -> Error {
    Error::new(
        crate::ErrorKind::ExportSecretUnmapped,
        format!(
            "the secret option {option} of {} cannot be exported as a reference: {why}",
            inst.name
        ),
    )
    .with("instance", &inst.name)
    .with("option", option)
    .hint("export an instance without this secret set, then add it to the exported config by hand")
}

/// The last guard: no secret option's value (as written, or JSON-escaped)
/// may be in the output. Short values (under 4 characters) are not looked
/// for: they would match anywhere.
fn refuse_leaks(inst: &Instance, m: &Manifest, text: &str) -> Result<()> {
    let secret_keys: BTreeSet<String> = hangar_feature::configgen::secret_keys(m);
    let merged =
        hangar_feature::configgen::validate_options(m, inst.mode.as_deref(), &inst.options)
            .unwrap_or_else(|_| inst.options.clone());
    for (k, v) in merged.iter().chain(inst.options.iter()) {
        if !secret_keys.contains(k) && inst.secret_options.as_ref().is_none_or(|s| !s.contains(k)) {
            continue;
        }
        let raw = match v {
            Value::String(s) => s.clone(),
            Value::Null => continue,
            other => other.to_string(),
        };
        if raw.chars().count() < 4 {
            continue;
        }
        let escaped = serde_json::to_string(&raw).unwrap_or_default();
        let escaped = escaped.trim_matches('"');
        if text.contains(&raw) || text.contains(escaped) || text.contains(&hcl_escape(&raw)) {
            return Err(Error::new(
                crate::ErrorKind::ExportSecretLeak,
                format!(
                    "the export of {} would hold the value of the secret option {k}",
                    inst.name
                ),
            )
            .with("instance", &inst.name)
            .with("option", k)
            .hint("nothing was written; this is a bug in hangar's export, please report it"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- escaping

/// The inside of an HCL quoted string: `\` `"` and control characters
/// escaped, and `${` / `%{` written `$${` / `%%{` so HCL reads them as text,
/// not as an interpolation or a directive.
pub fn hcl_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' | '%' if it.peek() == Some(&'{') => {
                out.push(c);
                out.push(c);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// An HCL quoted string.
pub fn hcl_string(s: &str) -> String {
    format!("\"{}\"", hcl_escape(s))
}

/// An HCL string expression for a long text: a heredoc when the text allows
/// one (it ends with a newline and holds no other control character than
/// newline and tab), else a quoted string. Both read back as `s` exactly.
pub fn hcl_text(s: &str, indent: &str) -> String {
    let heredoc_ok =
        s.ends_with('\n') && !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t');
    if !heredoc_ok {
        return hcl_string(s);
    }
    let mut marker = "EOT".to_string();
    let mut n = 0;
    while s.lines().any(|l| l.trim() == marker) {
        n += 1;
        marker = format!("EOT{n}");
    }
    let mut body = String::with_capacity(s.len() + 8);
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if matches!(c, '$' | '%') && it.peek() == Some(&'{') {
            body.push(c);
        }
        body.push(c);
    }
    format!("<<{marker}\n{body}{indent}{marker}")
}

/// Text for a Go template (Nomad's `template`): every `{{` written as an
/// action that prints `{{`, so nothing in the text is read as an action.
pub fn go_template_literal(s: &str) -> String {
    s.replace("{{", "{{ \"{{\" }}")
}

fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A name as a DNS label: lower case letters, digits and `-`, starting with
/// a letter, at most `max` long (Kubernetes object and port names, Nomad
/// service names).
pub fn dns_label(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    out = out.trim_matches('-').to_string();
    if !out.starts_with(|c: char| c.is_ascii_lowercase()) {
        out = format!("h-{out}");
    }
    out.truncate(max);
    out.trim_end_matches('-').to_string()
}

fn is_ident(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn comment_lines(out: &mut String, lines: &[String]) {
    for l in lines {
        for part in l.lines() {
            let _ = writeln!(out, "# {part}");
        }
    }
}

fn memory_mib(bytes: u64) -> u64 {
    bytes.div_ceil(1024 * 1024).max(1)
}

fn attempts_and_interval(r: &RestartPolicy) -> (u32, Duration, &'static str) {
    if r.max_retries == 0 {
        // hangar retries forever: Nomad's "delay" mode waits out the
        // interval and tries again, without end.
        (3, Duration::from_secs(60), "delay")
    } else {
        // hangar opens its circuit after max_retries failures in a row, a
        // run of min_uptime resetting the count: the interval covers that
        // many backoffs and runs.
        let mut total = Duration::ZERO;
        let mut wait = r.initial_interval;
        for _ in 0..r.max_retries {
            total += wait.min(r.max_interval) + r.min_uptime;
            wait = wait.mul_f64(r.multiplier.max(1.0));
        }
        (r.max_retries, total.max(Duration::from_secs(5)), "fail")
    }
}

// ---------------------------------------------------------------- Nomad

const NOMAD_PLACES: Places<'static> = Places {
    install_dir: "/local/release",
    config_dir: "/local/config",
    data: "/alloc/data",
    dir: "/alloc",
};

/// The instance as a Nomad job (HCL): one group, one `exec` task.
pub fn nomad(f: &ExportFacts) -> String {
    let p = &NOMAD_PLACES;
    let mut out = String::new();
    let secrets = f.secret_names();
    let mut head = vec![
        format!(
            "Nomad job for the hangar instance {:?} ({} {}, {}), written by `hangar export nomad`.",
            f.name, f.feature, f.version, f.id
        ),
        format!("Run it with: nomad job run {}", ExportFormat::Nomad.file_name(&f.name)),
        format!(
            "The artifact is the release hangar installed from {}, checked by Nomad against the SHA-256 hangar {}.",
            f.url,
            if f.verified { "verified" } else { "computed (the install was not verified)" }
        ),
    ];
    if f.url.starts_with("file:") {
        head.push("That URL is a file on the machine hangar runs on: serve it where your Nomad clients can fetch it and change `source`.".into());
    }
    if secrets.is_empty() {
        head.push("Secrets: none to provide.".into());
    } else {
        head.push(format!(
            "Secrets: none are in this file. Provide them as the Nomad variable the template reads, before running the job:\n  nomad var put nomad/jobs/{} {}\nEach is written into the config as it is given (escape it as the config's format needs).",
            f.name,
            secrets.iter().map(|s| format!("{s}=...")).collect::<Vec<_>>().join(" ")
        ));
    }
    head.push("Ports: the instance's, as static ports; arguments that named hangar's bind address get 0.0.0.0 (HANGAR_BIND too).".into());
    if f.config_names_host_paths {
        head.push("The config names paths of the hangar machine (the instance's directory): adjust them to the task's (/local, /alloc).".into());
    }
    if !f.other_config_files.is_empty() {
        head.push(format!(
            "Not exported: the config's other files ({}).",
            f.other_config_files.join(", ")
        ));
    }
    let (attempts, interval, mode) = attempts_and_interval(&f.restart);
    head.push(format!(
        "Restart: hangar backs off from {} to {} between restarts; Nomad waits a fixed delay.",
        go_duration(f.restart.initial_interval),
        go_duration(f.restart.max_interval)
    ));
    if let Some(c) = f.cpus {
        head.push(format!("CPU: hangar limits it to {c} CPUs; Nomad reserves MHz: cpu below assumes 1000 MHz per CPU."));
    }
    if let Some(n) = f.max_pids {
        head.push(format!("Not mapped: hangar's limit of {n} processes (Nomad's exec driver has no per-task pids limit in the job)."));
    }
    if matches!(f.health.as_ref().map(|h| h.kind), Some(HealthKind::Process)) {
        head.push(
            "Health: hangar only watches the process; Nomad does that itself, so no check.".into(),
        );
    }
    comment_lines(&mut out, &head);

    let q = hcl_string;
    let _ = writeln!(out, "job {} {{", q(&f.name));
    out.push_str("  type = \"service\"\n\n");
    let _ = writeln!(out, "  group {} {{", q(&f.name));
    out.push_str("    count = 1\n\n");
    if !f.ports.is_empty() {
        out.push_str("    network {\n");
        for (n, port) in &f.ports {
            let _ = writeln!(
                out,
                "      port {} {{\n        static = {port}\n      }}",
                q(n)
            );
        }
        out.push_str("    }\n\n");
    }
    let _ = writeln!(
        out,
        "    restart {{\n      attempts = {attempts}\n      interval = {}\n      delay    = {}\n      mode     = {}\n    }}\n",
        q(&go_duration(interval)),
        q(&go_duration(f.restart.initial_interval)),
        q(mode)
    );
    let _ = writeln!(out, "    task {} {{", q(&f.feature));
    out.push_str("      driver = \"exec\"\n\n");
    // The release, unpacked by Nomad (go-getter) when it is an archive.
    out.push_str("      artifact {\n");
    let _ = writeln!(out, "        source      = {}", q(&f.url));
    match f.archive() {
        Some(_) => {
            let _ = writeln!(out, "        destination = {}", q("local/release"));
        }
        None => {
            let _ = writeln!(
                out,
                "        destination = {}\n        mode        = \"file\"",
                q(&format!("local/release/{}", f.binary_rel))
            );
        }
    }
    let _ = writeln!(
        out,
        "        options {{\n          checksum = {}\n        }}\n      }}\n",
        q(&format!("sha256:{}", f.sha256))
    );
    if let Some(c) = &f.config {
        let mut data = go_template_literal(&c.text);
        for s in &c.secrets {
            let field = if is_ident(&s.option) && !s.option.contains('-') {
                format!(".{}", s.option)
            } else {
                format!(
                    "index . {}",
                    serde_json::to_string(&s.option).unwrap_or_default()
                )
            };
            data = data.replace(
                &s.token,
                &format!(
                    "{{{{ with nomadVar \"nomad/jobs/{}\" }}}}{{{{ {field} }}}}{{{{ end }}}}",
                    f.name
                ),
            );
        }
        out.push_str("      template {\n");
        let _ = writeln!(
            out,
            "        destination = {}",
            q(&format!("local/config/{}", c.rel_path))
        );
        out.push_str("        perms       = \"0600\"\n        change_mode = \"restart\"\n");
        let _ = writeln!(
            out,
            "        data        = {}\n      }}\n",
            hcl_text(&data, "")
        );
    }
    out.push_str("      config {\n");
    let _ = writeln!(
        out,
        "        command  = {}",
        q(&format!("{}/{}", p.install_dir, f.binary_rel))
    );
    let args: Vec<String> = f.args.iter().map(|a| q(&f.place(a, p))).collect();
    let _ = writeln!(out, "        args     = [{}]", args.join(", "));
    let _ = writeln!(out, "        work_dir = {}\n      }}\n", q(p.data));
    let env: Vec<(&String, &String)> = f.env.iter().filter(|(k, _)| is_ident(k)).collect();
    // (Names HCL cannot write as attributes are listed in the header.)
    if !env.is_empty() {
        out.push_str("      env {\n");
        for (k, v) in env {
            let _ = writeln!(out, "        {k} = {}", q(&f.place(v, p)));
        }
        out.push_str("      }\n\n");
    }
    out.push_str("      resources {\n");
    let _ = writeln!(
        out,
        "        memory = {}",
        f.memory_bytes.map_or(256, memory_mib)
    );
    if let Some(c) = f.cpus {
        let _ = writeln!(
            out,
            "        cpu    = {}",
            ((c * 1000.0).round() as u64).max(1)
        );
    }
    out.push_str("      }\n");
    if let Some(h) = &f.health {
        if h.kind != HealthKind::Process {
            let script = h.kind == HealthKind::Exec;
            out.push_str("\n      service {\n");
            let _ = writeln!(out, "        name     = {}", q(&dns_label(&f.name, 63)));
            if let Some(port) = h.port.as_ref().filter(|_| !f.ports.is_empty()) {
                let _ = writeln!(out, "        port     = {}", q(port));
            }
            // Nomad's own service catalog runs http and tcp checks; script
            // checks need Consul.
            let _ = writeln!(
                out,
                "        provider = {}\n",
                q(if script { "consul" } else { "nomad" })
            );
            out.push_str("        check {\n");
            match h.kind {
                HealthKind::Http => {
                    out.push_str("          type     = \"http\"\n");
                    let _ = writeln!(out, "          path     = {}", q(&h.path));
                }
                HealthKind::Tcp => out.push_str("          type     = \"tcp\"\n"),
                _ => {
                    out.push_str("          type     = \"script\"\n");
                    let cmd = h.command.first().map(|c| f.place(c, p)).unwrap_or_default();
                    let _ = writeln!(out, "          command  = {}", q(&cmd));
                    let args: Vec<String> = h
                        .command
                        .iter()
                        .skip(1)
                        .map(|a| q(&f.place(a, p)))
                        .collect();
                    let _ = writeln!(out, "          args     = [{}]", args.join(", "));
                }
            }
            let at_least_1s = |d: Duration| d.max(Duration::from_secs(1));
            let _ = writeln!(
                out,
                "          interval = {}",
                q(&go_duration(at_least_1s(h.interval)))
            );
            let _ = writeln!(
                out,
                "          timeout  = {}",
                q(&go_duration(at_least_1s(h.timeout)))
            );
            out.push_str("        }\n      }\n");
        }
    }
    out.push_str("    }\n  }\n}\n");
    out
}

// ---------------------------------------------------------------- Kubernetes

const K8S_PLACES: Places<'static> = Places {
    install_dir: "/hangar/app",
    config_dir: "/hangar/config",
    data: "/hangar/data",
    dir: "/hangar",
};

/// The image of the init container: busybox has `wget`, `sha256sum`, `tar`,
/// `unzip` and `awk`.
pub const INIT_IMAGE: &str = "busybox:1.36";
/// The image the binary runs in: a small glibc system; change it to what the
/// binary needs.
pub const RUN_IMAGE: &str = "debian:bookworm-slim";

/// The init container's script: fetch the release, check its SHA-256,
/// unpack it, and write the config with the secrets put in.
fn init_script(f: &ExportFacts) -> String {
    let mut s = String::from(
        "set -eu\n\
         cd /hangar/app\n\
         wget -q -O release.download \"$HANGAR_RELEASE_URL\"\n\
         echo \"$HANGAR_RELEASE_SHA256  release.download\" | sha256sum -c -\n",
    );
    s.push_str(match f.archive() {
        Some("tar.gz") => "tar -xzf release.download\nrm release.download\n",
        Some("tar.xz") => "tar -xJf release.download\nrm release.download\n",
        Some("tar.bz2") => "tar -xjf release.download\nrm release.download\n",
        Some("tar") => "tar -xf release.download\nrm release.download\n",
        Some(_) => "unzip -q release.download\nrm release.download\n",
        None => {
            "mkdir -p \"$(dirname \"$HANGAR_BINARY\")\"\nmv release.download \"$HANGAR_BINARY\"\n"
        }
    });
    s.push_str("chmod 0755 \"$HANGAR_BINARY\"\n");
    if f.config.as_ref().is_some_and(|c| !c.secrets.is_empty()) {
        // Each stand-in replaced, as text, by its Secret's value.
        let _ = write!(
            s,
            "mkdir -p \"$(dirname \"/hangar/config/$HANGAR_CONFIG_REL\")\"\n\
             awk 'BEGIN {{ n = split(ENVIRON[\"HANGAR_SECRET_TOKENS\"], pairs, \" \") }}\n\
             {{ line = $0\n\
               for (i = 1; i <= n; i++) {{\n\
                 split(pairs[i], kv, \"=\"); t = kv[1]; v = ENVIRON[kv[2]]; out = \"\"\n\
                 while ((p = index(line, t)) > 0) {{ out = out substr(line, 1, p - 1) v; line = substr(line, p + length(t)) }}\n\
                 line = out line\n\
               }}\n\
               print line }}' \"/hangar/config-template/$HANGAR_CONFIG_REL\" > \"/hangar/config/$HANGAR_CONFIG_REL\"\n"
        );
    }
    s
}

/// The instance as Kubernetes objects: a YAML stream (each document JSON,
/// which YAML reads as it is) of a Secret (when secret options are set), a
/// ConfigMap (when it has a config), a Deployment and a Service.
pub fn kubernetes(f: &ExportFacts) -> String {
    let p = &K8S_PLACES;
    let name = dns_label(&f.name, 63);
    let container = dns_label(&f.feature, 63);
    let labels = json!({
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/managed-by": "hangar-export",
    });
    let secrets = f.secret_names();
    let mut docs: Vec<Value> = Vec::new();
    let secret_name = format!("{name}-secrets");
    let config_name = format!("{name}-config");
    let port_names: Vec<(String, u16)> = f
        .ports
        .iter()
        .enumerate()
        .map(|(i, (n, port))| {
            let l = dns_label(n, 15);
            let ok = l.len() >= 2 && l.chars().any(|c| c.is_ascii_lowercase());
            (if ok { l } else { format!("port{i}") }, *port)
        })
        .collect();
    let k8s_port = |n: &str| -> String {
        f.ports
            .iter()
            .position(|(m, _)| m == n)
            .and_then(|i| port_names.get(i))
            .map(|(l, _)| l.clone())
            .unwrap_or_else(|| n.to_string())
    };

    if let Some(c) = &f.config {
        if !c.secrets.is_empty() {
            let mut data = Map::new();
            for s in &c.secrets {
                data.insert(s.option.clone(), Value::String("REPLACE-ME".into()));
            }
            docs.push(json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": secret_name, "labels": labels},
                "type": "Opaque",
                "stringData": data,
            }));
        }
        let key = config_key(&c.rel_path);
        docs.push(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": config_name, "labels": labels},
            "data": {key: c.text},
        }));
    }

    let binary = format!("{}/{}", p.install_dir, f.binary_rel);
    let mut init_env = vec![
        json!({"name": "HANGAR_RELEASE_URL", "value": f.url}),
        json!({"name": "HANGAR_RELEASE_SHA256", "value": f.sha256}),
        json!({"name": "HANGAR_BINARY", "value": binary}),
    ];
    let mut init_mounts = vec![json!({"name": "app", "mountPath": p.install_dir})];
    let mut volumes = vec![
        json!({"name": "app", "emptyDir": {}}),
        json!({"name": "data", "emptyDir": {}}),
    ];
    let mut mounts = vec![
        json!({"name": "app", "mountPath": p.install_dir, "readOnly": true}),
        json!({"name": "data", "mountPath": p.data}),
    ];
    if let Some(c) = &f.config {
        let items = json!([{"key": config_key(&c.rel_path), "path": c.rel_path}]);
        if c.secrets.is_empty() {
            volumes.push(
                json!({"name": "config", "configMap": {"name": config_name, "items": items}}),
            );
        } else {
            volumes.push(json!({"name": "config-template", "configMap": {"name": config_name, "items": items}}));
            volumes.push(json!({"name": "config", "emptyDir": {"medium": "Memory"}}));
            init_mounts.push(json!({"name": "config-template", "mountPath": "/hangar/config-template", "readOnly": true}));
            init_mounts.push(json!({"name": "config", "mountPath": p.config_dir}));
            let mut pairs = Vec::new();
            for (i, s) in c.secrets.iter().enumerate() {
                let var = format!("HANGAR_SECRET_{i}");
                pairs.push(format!("{}={var}", s.token));
                init_env.push(json!({"name": var, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": s.option}}}));
            }
            init_env.push(json!({"name": "HANGAR_SECRET_TOKENS", "value": pairs.join(" ")}));
            init_env.push(json!({"name": "HANGAR_CONFIG_REL", "value": c.rel_path}));
        }
        mounts.push(json!({"name": "config", "mountPath": p.config_dir, "readOnly": true}));
    }

    let env: Vec<Value> = f
        .env
        .iter()
        .map(|(k, v)| json!({"name": k, "value": f.place(v, p)}))
        .collect();
    let mut main = json!({
        "name": container,
        "image": RUN_IMAGE,
        "command": [binary],
        "args": f.args.iter().map(|a| f.place(a, p)).collect::<Vec<_>>(),
        "workingDir": p.data,
        "env": env,
        "ports": port_names.iter().map(|(n, port)| json!({"name": n, "containerPort": port, "protocol": "TCP"})).collect::<Vec<_>>(),
        "volumeMounts": mounts,
    });
    let mut limits = Map::new();
    if let Some(b) = f.memory_bytes {
        limits.insert("memory".into(), Value::String(quantity(b)));
    }
    if let Some(c) = f.cpus {
        limits.insert(
            "cpu".into(),
            Value::String(format!("{}m", ((c * 1000.0).round() as u64).max(1))),
        );
    }
    if !limits.is_empty() {
        main["resources"] = json!({"limits": limits});
    }
    if let Some(h) = &f.health {
        let secs = |d: Duration| (d.as_secs_f64().ceil() as u64).max(1);
        let handler = match h.kind {
            HealthKind::Http => h
                .port
                .as_ref()
                .map(|port| json!({"httpGet": {"path": h.path, "port": k8s_port(port)}})),
            HealthKind::Tcp => h
                .port
                .as_ref()
                .map(|port| json!({"tcpSocket": {"port": k8s_port(port)}})),
            HealthKind::Exec => Some(
                json!({"exec": {"command": h.command.iter().map(|a| f.place(a, p)).collect::<Vec<_>>()}}),
            ),
            HealthKind::Process => None,
        };
        if let Some(handler) = handler {
            let probe = |failures: u64| {
                let mut v = handler.clone();
                v["periodSeconds"] = json!(secs(h.interval));
                v["timeoutSeconds"] = json!(secs(h.timeout));
                v["failureThreshold"] = json!(failures);
                v
            };
            main["readinessProbe"] = probe(1);
            main["livenessProbe"] = probe(3);
        }
    }
    let init = json!({
        "name": "fetch-release",
        "image": INIT_IMAGE,
        "command": ["sh", "-c", init_script(f)],
        "env": init_env,
        "volumeMounts": init_mounts,
    });
    docs.push(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "initContainers": [init],
                    "containers": [main],
                    "restartPolicy": "Always",
                    "volumes": volumes,
                },
            },
        },
    }));
    if !port_names.is_empty() {
        docs.push(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "selector": {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": name},
                "ports": port_names.iter().map(|(n, port)| json!({"name": n, "port": port, "targetPort": n, "protocol": "TCP"})).collect::<Vec<_>>(),
            },
        }));
    }

    let mut head = vec![
        format!(
            "Kubernetes objects for the hangar instance {:?} ({} {}, {}), written by `hangar export kubernetes`.",
            f.name, f.feature, f.version, f.id
        ),
        format!("Apply them with: kubectl apply -f {}", ExportFormat::Kubernetes.file_name(&f.name)),
        "Each document is JSON, which YAML reads as it is.".into(),
        format!(
            "The binary comes from a release archive, not an image: the init container (image {INIT_IMAGE}) downloads {} into an emptyDir, checks its SHA-256 ({}) and unpacks it; the main container (image {RUN_IMAGE}: change it to what the binary needs) runs it from there.",
            f.url, f.sha256
        ),
    ];
    if f.url.starts_with("file:") {
        head.push("That URL is a file on the machine hangar runs on: serve it over HTTP(S) where the cluster can fetch it and change HANGAR_RELEASE_URL.".into());
    }
    if secrets.is_empty() {
        head.push("Secrets: none to provide.".into());
    } else {
        head.push(format!(
            "Secrets: none are in this file. Put each value into the Secret {secret_name} (its keys: {}; each holds REPLACE-ME until you do), e.g.\n  kubectl create secret generic {secret_name} {}\nThe init container writes them into the config as they are given.",
            secrets.join(", "),
            secrets.iter().map(|s| format!("--from-literal={s}=...")).collect::<Vec<_>>().join(" ")
        ));
    }
    head.push("Restart: the Deployment restarts the container always, with Kubernetes' own backoff (10 s doubling to 5 min); hangar's circuit (give up after some failures) has no equivalent.".into());
    if let Some(n) = f.max_pids {
        head.push(format!("Not mapped: hangar's limit of {n} processes. A pod spec cannot limit pids: the kubelet's podPidsLimit does, per node."));
    }
    if matches!(f.health.as_ref().map(|h| h.kind), Some(HealthKind::Process)) {
        head.push(
            "Health: hangar only watches the process; Kubernetes does that itself, so no probe."
                .into(),
        );
    }
    if f.config_names_host_paths {
        head.push("The config names paths of the hangar machine (the instance's directory): adjust them to the container's (/hangar/...).".into());
    }
    if !f.other_config_files.is_empty() {
        head.push(format!(
            "Not exported: the config's other files ({}).",
            f.other_config_files.join(", ")
        ));
    }
    let mut out = String::new();
    comment_lines(&mut out, &head);
    for d in docs {
        out.push_str("---\n");
        out.push_str(&serde_json::to_string_pretty(&d).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// A ConfigMap key for a config path (keys are `[-._a-zA-Z0-9]+`).
fn config_key(rel: &str) -> String {
    let k: String = rel
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if k.is_empty() || k == "." || k == ".." {
        "config".into()
    } else {
        k
    }
}

/// Bytes as a Kubernetes quantity: `64Mi` when whole mebibytes, else bytes.
fn quantity(b: u64) -> String {
    const MI: u64 = 1024 * 1024;
    if b % (1024 * MI) == 0 {
        format!("{}Gi", b / (1024 * MI))
    } else if b % MI == 0 {
        format!("{}Mi", b / MI)
    } else {
        b.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> ExportFacts {
        ExportFacts {
            name: "web".into(),
            id: "i-0123456789ab".into(),
            feature: "demo".into(),
            version: "1.1.0".into(),
            url: "https://example.org/demo-1.1.0-linux-amd64.tar.gz".into(),
            sha256: "ab".repeat(32),
            verified: true,
            binary_rel: "demo-1.1.0/demo".into(),
            args: vec![
                "--config".into(),
                "{{config}}".into(),
                "--data={{data}}".into(),
            ],
            env: [
                ("HANGAR_PORT_HTTP".to_string(), "21000".to_string()),
                ("HANGAR_CONFIG".to_string(), "{{config}}".to_string()),
            ]
            .into(),
            ports: vec![("http".into(), 21000)],
            config: Some(ConfigExport {
                rel_path: "demo.conf".into(),
                text: "greeting ${x} %{y} {{z}} \"q\" \\ 48414e47-4152-5345-4352-455400000000\n"
                    .into(),
                secrets: vec![SecretRef {
                    option: "password".into(),
                    token: token(0),
                }],
            }),
            health: Some(HealthExport {
                kind: HealthKind::Http,
                port: Some("http".into()),
                path: "/healthz".into(),
                command: vec![],
                interval: Duration::from_secs(10),
                timeout: Duration::from_millis(1500),
            }),
            memory_bytes: Some(64 * 1024 * 1024),
            cpus: Some(0.5),
            max_pids: Some(16),
            restart: RestartPolicy {
                initial_interval: Duration::from_millis(500),
                max_retries: 3,
                ..RestartPolicy::default()
            },
            other_config_files: vec![],
            config_names_host_paths: false,
        }
    }

    #[test]
    fn hcl_strings_escape_quotes_backslashes_and_interpolations() {
        assert_eq!(hcl_escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(
            hcl_escape("${x} %{if} $x %x $${y}"),
            "$${x} %%{if} $x %x $$${y}"
        );
        assert_eq!(hcl_escape("l1\nl2\t\r\u{1}"), "l1\\nl2\\t\\r\\u0001");
        assert_eq!(hcl_text("no newline", ""), "\"no newline\"");
        assert_eq!(hcl_text("a ${b}\n", ""), "<<EOT\na $${b}\nEOT");
        assert_eq!(hcl_text("EOT\n", ""), "<<EOT1\nEOT\nEOT1");
        assert_eq!(hcl_text("a\u{7}\n", ""), "\"a\\u0007\\n\"");
    }

    #[test]
    fn go_template_text_keeps_braces_literal() {
        assert_eq!(go_template_literal("a {{b}} }}"), "a {{ \"{{\" }}b}} }}");
    }

    #[test]
    fn formats_parse_with_a_did_you_mean() {
        assert_eq!(ExportFormat::parse("Nomad").ok(), Some(ExportFormat::Nomad));
        assert_eq!(
            ExportFormat::parse("k8s").ok(),
            Some(ExportFormat::Kubernetes)
        );
        let e = ExportFormat::parse("nomda").expect_err("refused");
        assert!(e.is(crate::ErrorKind::ExportUnknownFormat));
        assert!(e.hint.as_deref().unwrap_or("").contains("nomad"), "{e:?}");
    }

    #[test]
    fn names_become_dns_labels() {
        assert_eq!(dns_label("My_Web.1", 63), "my-web-1");
        assert_eq!(dns_label("1web", 63), "h-1web");
        assert_eq!(dns_label("socks-inbound-port", 15), "socks-inbound-p");
    }

    #[test]
    fn nomad_job_has_the_artifact_template_check_and_limits() {
        let f = facts();
        let j = nomad(&f);
        assert!(j.contains("job \"web\" {"), "{j}");
        assert!(
            j.contains(&format!("checksum = \"sha256:{}\"", "ab".repeat(32))),
            "{j}"
        );
        assert!(
            j.contains("destination = \"local/config/demo.conf\""),
            "{j}"
        );
        assert!(
            j.contains("{{ with nomadVar \"nomad/jobs/web\" }}{{ .password }}{{ end }}"),
            "{j}"
        );
        assert!(!j.contains(&token(0)), "the stand-in is replaced: {j}");
        assert!(j.contains("greeting $${x} %%{y} {{ \"{{\" }}z}}"), "{j}");
        assert!(
            j.contains(
                "args     = [\"--config\", \"/local/config/demo.conf\", \"--data=/alloc/data\"]"
            ),
            "{j}"
        );
        assert!(j.contains("memory = 64"), "{j}");
        assert!(j.contains("cpu    = 500"), "{j}");
        assert!(j.contains("path     = \"/healthz\""), "{j}");
        assert!(j.contains("timeout  = \"1500ms\""), "{j}");
        assert!(j.contains("static = 21000"), "{j}");
        assert!(j.contains("mode     = \"fail\""), "{j}");
        assert!(
            j.contains("nomad var put nomad/jobs/web password=..."),
            "{j}"
        );
    }

    #[test]
    fn kubernetes_objects_hold_the_config_probes_and_limits() {
        let f = facts();
        let y = kubernetes(&f);
        let docs: Vec<Value> = y
            .split("\n---\n")
            .skip(1)
            .map(|d| serde_json::from_str(d).expect("each document is JSON"))
            .collect();
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        assert_eq!(kinds, ["Secret", "ConfigMap", "Deployment", "Service"]);
        assert_eq!(docs[0]["stringData"]["password"], "REPLACE-ME");
        assert_eq!(
            docs[1]["data"]["demo.conf"],
            f.config
                .as_ref()
                .map(|c| c.text.clone())
                .unwrap_or_default()
        );
        let pod = &docs[2]["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(c["resources"]["limits"]["memory"], "64Mi");
        assert_eq!(c["resources"]["limits"]["cpu"], "500m");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(c["livenessProbe"]["httpGet"]["port"], "http");
        assert_eq!(c["livenessProbe"]["timeoutSeconds"], 2);
        assert_eq!(c["args"][1], "/hangar/config/demo.conf");
        assert_eq!(docs[3]["spec"]["ports"][0]["port"], 21000);
        assert!(y.contains("kubelet's podPidsLimit"), "{y}");
    }

    #[test]
    fn a_plain_binary_release_is_fetched_as_a_file() {
        let mut f = facts();
        f.url = "https://example.org/demo-linux-amd64".into();
        f.binary_rel = "demo".into();
        let j = nomad(&f);
        assert!(
            j.contains("destination = \"local/release/demo\"\n        mode        = \"file\""),
            "{j}"
        );
        assert!(init_script(&f).contains("mv release.download"));
    }

    #[test]
    fn restart_maps_hangars_circuit_to_a_nomad_interval_it_can_keep() {
        let r = RestartPolicy {
            initial_interval: Duration::from_millis(500),
            max_retries: 3,
            ..RestartPolicy::default()
        };
        let (attempts, interval, mode) = attempts_and_interval(&r);
        assert_eq!((attempts, mode), (3, "fail"));
        assert!(interval >= Duration::from_secs(5));
        assert!(
            r.initial_interval * attempts <= interval,
            "Nomad refuses attempts × delay > interval"
        );
        let forever = RestartPolicy {
            max_retries: 0,
            ..r
        };
        assert_eq!(attempts_and_interval(&forever).2, "delay");
    }
}
