//! The feature manifest: types, parsing from JSON or YAML, validation against
//! the JSON Schema kept in the repo (`schemas/manifest.schema.json`), and the
//! semantic checks a schema cannot express.

use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::Error;

/// The schema, as shipped in the repo for editors.
pub const SCHEMA: &str = include_str!("../../../../schemas/manifest.schema.json");

/// Architectures a manifest may name (Go's spelling, as release assets mostly use).
pub const ARCHITECTURES: &[&str] = &[
    "amd64", "arm64", "armv7", "386", "riscv64", "ppc64le", "s390x",
];

/// Placeholders allowed in asset patterns.
pub const PLACEHOLDERS: &[&str] = &["version", "os", "arch"];

/// A feature manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Stable identifier; also the catalog directory's name.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Version installed when none is asked for.
    pub version: String,
    /// One-line description.
    #[serde(default)]
    pub description: String,
    /// SPDX license expression.
    #[serde(default)]
    pub license: String,
    /// Project home page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homepage: Option<String>,
    /// Where releases come from and how they are verified.
    pub source: Source,
    /// The binary inside the release.
    pub binary: Binary,
    /// How to check the service is healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// How its configuration is produced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigSpec>,
    /// What network it needs.
    #[serde(default)]
    pub network: Network,
    /// Resource limits.
    #[serde(default)]
    pub resources: Resources,
    /// Operation modes with their default options.
    #[serde(default)]
    pub modes: Vec<Mode>,
    /// How instances are shared.
    #[serde(default)]
    pub isolation_level: Isolation,
    /// Give the health port to the process as `HEALTH_PORT`.
    #[serde(default)]
    pub health_port: bool,
}

/// Kinds of release sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// A GitHub release asset.
    GithubRelease,
    /// Any URL.
    Url,
    /// A file beside the manifest (offline catalogs).
    File,
}

/// Where releases come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// Kind of source.
    #[serde(rename = "type")]
    pub kind: SourceKind,
    /// GitHub owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// GitHub repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The asset: file name, URL or relative path, with placeholders.
    pub asset_pattern: String,
    /// Release tag (github-release); default `v{{version}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_pattern: Option<String>,
    /// GitHub API base; default `https://api.github.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base: Option<String>,
    /// Download base; default `https://github.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_base: Option<String>,
    /// The project's own spelling of architectures.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub arch_names: BTreeMap<String, String>,
    /// How downloads are verified.
    #[serde(default)]
    pub verification: Verification,
}

/// Verification kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyKind {
    /// SHA-256 against a checksums file or a digest in the manifest.
    #[default]
    Sha256,
    /// Not verified (refused unless the user allows it).
    None,
}

/// An expected digest: one, or one per architecture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Sha256Spec {
    /// The same for every architecture (a plain or arch-independent asset).
    One(String),
    /// By architecture.
    PerArch(BTreeMap<String, String>),
}

/// How downloads are verified.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Verification {
    /// sha256 or none.
    #[serde(rename = "type", default)]
    pub kind: VerifyKind,
    /// Checksums file: full URL, or a name beside the asset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksums_asset: Option<String>,
    /// Digest(s) for the manifest's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Sha256Spec>,
    /// minisign public key (base64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minisign_public_key: Option<String>,
    /// Signature file; default `<asset>.minisig` beside the asset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_asset: Option<String>,
    /// github-release: the `digest` GitHub's releases API gives each asset
    /// (`sha256:<hex>`, computed when the asset was uploaded).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub github_digest: bool,
    /// Digests pinned per version, then per platform (`linux-amd64`, …): a
    /// pinned asset that changes upstream fails verification.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pinned: BTreeMap<String, BTreeMap<String, String>>,
    /// The checksums file is signed with OpenPGP by this pinned key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksums_openpgp: Option<OpenPgp>,
}

/// A pinned OpenPGP signer of a checksums file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct OpenPgp {
    /// The primary key's fingerprint (40 hex digits, spaces allowed).
    pub fingerprint: String,
    /// The armored public key (`-----BEGIN PGP PUBLIC KEY BLOCK-----`).
    pub public_key: String,
    /// The detached signature; default `<checksums_asset>.asc` beside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_asset: Option<String>,
}

/// The binary inside the release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Binary {
    /// Path inside the archive (placeholders allowed).
    pub path: String,
    /// Architectures the release exists for (empty: any).
    #[serde(default)]
    pub architectures: Vec<String>,
    /// Default arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment for the process and its config checker; values take
    /// `{{install_dir}}`, `{{instance_dir}}` and `{{config}}` ([`ENV_PLACEHOLDERS`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// Placeholders allowed in `binary.env` values.
pub const ENV_PLACEHOLDERS: &[&str] = &["install_dir", "instance_dir", "config"];

/// Where `binary.env`'s placeholders point.
#[derive(Debug, Clone, Copy)]
pub struct EnvPlaces<'a> {
    /// The installed version's directory (where the release was unpacked).
    pub install_dir: &'a std::path::Path,
    /// The instance's directory.
    pub instance_dir: &'a std::path::Path,
    /// The config file (for the checker: the file it checks).
    pub config: Option<&'a std::path::Path>,
}

impl Manifest {
    /// `binary.env` with its placeholders replaced. A `{{config}}` without a
    /// config file becomes empty.
    pub fn env_for(&self, at: EnvPlaces<'_>) -> BTreeMap<String, String> {
        let config = at
            .config
            .map(|c| c.display().to_string())
            .unwrap_or_default();
        self.binary
            .env
            .iter()
            .map(|(k, v)| {
                let v = v
                    .replace("{{install_dir}}", &at.install_dir.display().to_string())
                    .replace("{{instance_dir}}", &at.instance_dir.display().to_string())
                    .replace("{{config}}", &config);
                (k.clone(), v)
            })
            .collect()
    }
}

/// Health check kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    /// HTTP GET on a port.
    Http,
    /// TCP connect to a port.
    Tcp,
    /// The process is alive.
    Process,
    /// A command exits 0.
    Exec,
}

/// How to check health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// Kind of check.
    #[serde(rename = "type")]
    pub kind: HealthKind,
    /// Which of `network.default_ports` (0-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_index: Option<usize>,
    /// HTTP path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Command (exec).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Timeout per check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<f64>,
    /// Time between checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<f64>,
}

/// How configuration is produced (used by instances).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ConfigSpec {
    /// Built-in generator or `template`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<String>,
    /// File format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// File name under the instance's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Template, relative to the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Checker: arguments to the feature's own binary, `{{config}}` being the
    /// config file (e.g. `["--verify-config", "-f", "{{config}}"]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validate: Vec<String>,
    /// Longest the checker may run (default 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate_timeout_seconds: Option<f64>,
    /// The options a user may set, by key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, OptionSpec>,
}

/// Types of options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptionType {
    /// A string without control characters.
    String,
    /// A whole number.
    #[serde(alias = "int")]
    Integer,
    /// Any number.
    Number,
    /// true or false.
    #[serde(alias = "bool")]
    Boolean,
    /// A TCP/UDP port, 1 to 65535.
    Port,
    /// One of `enum`.
    Enum,
    /// An array whose items follow `items` (strings by default).
    List,
}

impl OptionType {
    /// The name used in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            OptionType::String => "string",
            OptionType::Integer => "integer",
            OptionType::Number => "number",
            OptionType::Boolean => "boolean",
            OptionType::Port => "port",
            OptionType::Enum => "enum",
            OptionType::List => "list",
        }
    }
}

/// One option a user may set on an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptionSpec {
    /// Its type.
    #[serde(rename = "type")]
    pub kind: OptionType,
    /// What it does.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Value when neither the user nor the mode sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
    /// Smallest value (integer, number, port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<f64>,
    /// Largest value (integer, number, port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<f64>,
    /// Allowed values (required for `enum`; restricts any scalar type).
    #[serde(rename = "enum", default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<serde_json::Value>,
    /// Longest string, or most items of a list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    /// Type of a list's items (default: string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Box<OptionSpec>>,
    /// Must end up set (by the user, the mode or a default).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// A secret (password, key): front ends should not echo it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secret: bool,
}

/// Network needs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Network {
    /// Needs a private network per instance.
    #[serde(default)]
    pub requires_vlan: bool,
    /// Ports it listens on by default.
    #[serde(default)]
    pub default_ports: Vec<u16>,
    /// Protocols it speaks.
    #[serde(default)]
    pub protocols: Vec<String>,
    /// Can serve.
    #[serde(default)]
    pub supports_server: bool,
    /// Can be a client.
    #[serde(default)]
    pub supports_client: bool,
    /// A name for each of `default_ports` (same order), used by config
    /// generators (`socks`, `control`, …); unnamed ports are `port0`, `port1`, ….
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_names: Vec<String>,
}

impl Network {
    /// Each default port with its name (`port_names`, else `port<i>`).
    pub fn named_ports(&self) -> Vec<(String, u16)> {
        self.default_ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let name = self
                    .port_names
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("port{i}"));
                (name, *p)
            })
            .collect()
    }
}

/// Resource limits.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Resources {
    /// Memory, e.g. `256Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<String>,
    /// CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit: Option<f64>,
    /// Most processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pids: Option<u64>,
}

/// An operation mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mode {
    /// Identifier.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Default options.
    #[serde(default)]
    pub defaults: serde_json::Map<String, serde_json::Value>,
    /// Options that must be set in this mode (e.g. a server's password).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required: Vec<String>,
}

/// How instances are shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// One instance per feature.
    #[default]
    #[serde(alias = "none")]
    Shared,
    /// One per tenant.
    #[serde(alias = "namespace")]
    PerTenant,
    /// One per session, reaped when idle.
    #[serde(alias = "session")]
    PerSession,
}

impl Isolation {
    /// The name as written in a manifest: `per-tenant`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Isolation::Shared => "shared",
            Isolation::PerTenant => "per-tenant",
            Isolation::PerSession => "per-session",
        }
    }
}

/// As written in a manifest (`per-tenant`), for people.
impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn validator() -> &'static Result<jsonschema::Validator, String> {
    static V: OnceLock<Result<jsonschema::Validator, String>> = OnceLock::new();
    V.get_or_init(|| {
        let schema: serde_json::Value = serde_json::from_str(SCHEMA).map_err(|e| e.to_string())?;
        jsonschema::validator_for(&schema).map_err(|e| e.to_string())
    })
}

/// One problem with a manifest: where (a JSON pointer) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// JSON pointer into the manifest, e.g. `/network/default_ports/0`.
    pub pointer: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = if self.pointer.is_empty() {
            "/"
        } else {
            &self.pointer
        };
        write!(f, "{at}: {}", self.message)
    }
}

/// Parse a manifest's text (`yaml` selects YAML; JSON otherwise), validate it
/// against the schema, then run the semantic checks. Every problem is reported.
pub fn parse(text: &str, yaml: bool) -> Result<Manifest, Vec<Problem>> {
    let value: serde_json::Value = if yaml {
        serde_yaml_ng::from_str(text).map_err(|e| {
            vec![Problem {
                pointer: String::new(),
                message: format!("not valid YAML: {e}"),
            }]
        })?
    } else {
        serde_json::from_str(text).map_err(|e| {
            vec![Problem {
                pointer: String::new(),
                message: format!(
                    "not valid JSON: {e} (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            }]
        })?
    };
    from_value(value)
}

/// [`parse`] for an already-parsed value.
pub fn from_value(value: serde_json::Value) -> Result<Manifest, Vec<Problem>> {
    let v = match validator() {
        Ok(v) => v,
        Err(e) => {
            return Err(vec![Problem {
                pointer: String::new(),
                message: format!("the manifest schema itself is broken: {e}"),
            }])
        }
    };
    let mut problems: Vec<Problem> = v
        .iter_errors(&value)
        .map(|e| Problem {
            pointer: e.instance_path().to_string(),
            message: e.to_string(),
        })
        .collect();
    if !problems.is_empty() {
        problems.sort_by(|a, b| a.pointer.cmp(&b.pointer));
        return Err(problems);
    }
    let m: Manifest = serde_json::from_value(value).map_err(|e| {
        vec![Problem {
            pointer: String::new(),
            message: e.to_string(),
        }]
    })?;
    problems = semantic(&m);
    if problems.is_empty() {
        Ok(m)
    } else {
        Err(problems)
    }
}

fn placeholders(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        match after.find("}}") {
            Some(j) => {
                out.push(after[..j].trim().to_string());
                rest = &after[j + 2..];
            }
            None => {
                out.push(after.to_string());
                break;
            }
        }
    }
    out
}

/// What the schema cannot say.
fn semantic(m: &Manifest) -> Vec<Problem> {
    let mut p = Vec::new();
    let mut push = |pointer: &str, message: String| {
        p.push(Problem {
            pointer: pointer.to_string(),
            message,
        })
    };
    for (ptr, pat) in [
        ("/source/asset_pattern", Some(&m.source.asset_pattern)),
        ("/source/tag_pattern", m.source.tag_pattern.as_ref()),
        (
            "/source/verification/checksums_asset",
            m.source.verification.checksums_asset.as_ref(),
        ),
        (
            "/source/verification/signature_asset",
            m.source.verification.signature_asset.as_ref(),
        ),
        ("/binary/path", Some(&m.binary.path)),
    ] {
        let Some(pat) = pat else { continue };
        for ph in placeholders(pat) {
            if !PLACEHOLDERS.contains(&ph.as_str()) {
                push(
                    ptr,
                    format!("unknown placeholder {{{{{ph}}}}}; known: {{{{version}}}}, {{{{os}}}}, {{{{arch}}}}"),
                );
            }
        }
    }
    if m.source.kind == SourceKind::Url && !m.source.asset_pattern.contains("://") {
        push(
            "/source/asset_pattern",
            "a url source needs a full URL (https://…)".to_string(),
        );
    }
    if m.source.kind == SourceKind::File && m.source.asset_pattern.starts_with('/') {
        push(
            "/source/asset_pattern",
            "a file source is relative to the manifest's directory".to_string(),
        );
    }
    if m.source.kind == SourceKind::File && m.source.asset_pattern.split('/').any(|c| c == "..") {
        push(
            "/source/asset_pattern",
            "a file source may not leave the catalog (`..`)".to_string(),
        );
    }
    let ver = &m.source.verification;
    if ver.kind == VerifyKind::Sha256
        && ver.checksums_asset.is_none()
        && ver.sha256.is_none()
        && ver.pinned.is_empty()
        && !ver.github_digest
    {
        push(
            "/source/verification",
            "sha256 verification needs checksums_asset, sha256, pinned or github_digest"
                .to_string(),
        );
    }
    if ver.github_digest && m.source.kind != SourceKind::GithubRelease {
        push(
            "/source/verification/github_digest",
            "github_digest needs a github-release source".to_string(),
        );
    }
    for (version, platforms) in &ver.pinned {
        for platform in platforms.keys() {
            let arch = platform.split_once('-').map(|(_, a)| a).unwrap_or("");
            if !ARCHITECTURES.contains(&arch) {
                push(
                    &format!("/source/verification/pinned/{version}"),
                    format!("{platform:?} is not <os>-<arch> with a known architecture (e.g. linux-amd64)"),
                );
            } else if !m.binary.architectures.is_empty()
                && !m.binary.architectures.iter().any(|a| a == arch)
            {
                push(
                    &format!("/source/verification/pinned/{version}"),
                    format!("digest for {platform}, whose architecture binary.architectures does not list"),
                );
            }
        }
    }
    if let Some(pgp) = &ver.checksums_openpgp {
        if ver.checksums_asset.is_none() {
            push(
                "/source/verification/checksums_openpgp",
                "an OpenPGP-signed checksums file needs checksums_asset".to_string(),
            );
        }
        if let Err(e) = hangar_fetch::verify::check_openpgp_key(&pgp.public_key, &pgp.fingerprint) {
            push(
                "/source/verification/checksums_openpgp/public_key",
                e.message().to_string(),
            );
        }
        if let Some(a) = &pgp.signature_asset {
            for ph in placeholders(a) {
                if !PLACEHOLDERS.contains(&ph.as_str()) {
                    push(
                        "/source/verification/checksums_openpgp/signature_asset",
                        format!("unknown placeholder {{{{{ph}}}}}; known: {{{{version}}}}, {{{{os}}}}, {{{{arch}}}}"),
                    );
                }
            }
        }
    }
    for (k, v) in &m.binary.env {
        for ph in placeholders(v) {
            if !ENV_PLACEHOLDERS.contains(&ph.as_str()) {
                push(
                    &format!("/binary/env/{k}"),
                    format!("unknown placeholder {{{{{ph}}}}}; known: {{{{install_dir}}}}, {{{{instance_dir}}}}, {{{{config}}}}"),
                );
            }
        }
    }
    if let Some(Sha256Spec::PerArch(map)) = &ver.sha256 {
        for a in map.keys() {
            if !m.binary.architectures.is_empty() && !m.binary.architectures.contains(a) {
                push(
                    "/source/verification/sha256",
                    format!("digest for {a}, which binary.architectures does not list"),
                );
            }
        }
    }
    if let Some(k) = &ver.minisign_public_key {
        if hangar_fetch::verify::check_public_key(k).is_err() {
            push(
                "/source/verification/minisign_public_key",
                "not a minisign public key (the base64 line of minisign.pub)".to_string(),
            );
        }
    }
    for a in m.source.arch_names.keys() {
        if !ARCHITECTURES.contains(&a.as_str()) {
            push("/source/arch_names", format!("unknown architecture {a:?}"));
        }
    }
    if let Some(h) = &m.health {
        match (h.kind, h.port_index) {
            (HealthKind::Http | HealthKind::Tcp, None) if m.network.default_ports.is_empty() => {
                push(
                    "/health",
                    "an http or tcp health check needs a port: set network.default_ports"
                        .to_string(),
                )
            }
            (_, Some(i)) if i >= m.network.default_ports.len() => push(
                "/health/port_index",
                format!(
                    "port_index {i} but network.default_ports has {} port(s)",
                    m.network.default_ports.len()
                ),
            ),
            (HealthKind::Exec, _) if h.command.is_empty() => push(
                "/health/command",
                "an exec health check needs a command".to_string(),
            ),
            _ => {}
        }
    }
    let mut seen = HashSet::new();
    for (i, port) in m.network.default_ports.iter().enumerate() {
        if !seen.insert(port) {
            push(
                &format!("/network/default_ports/{i}"),
                format!("port {port} is listed twice"),
            );
        }
    }
    let mut ids = HashSet::new();
    for (i, mode) in m.modes.iter().enumerate() {
        if !ids.insert(mode.id.as_str()) {
            push(
                &format!("/modes/{i}/id"),
                format!("mode id {:?} is used twice", mode.id),
            );
        }
    }
    if !m.network.port_names.is_empty() {
        if m.network.port_names.len() != m.network.default_ports.len() {
            push(
                "/network/port_names",
                format!(
                    "{} name(s) for {} default port(s): name each port of network.default_ports",
                    m.network.port_names.len(),
                    m.network.default_ports.len()
                ),
            );
        }
        let mut names = HashSet::new();
        for (i, n) in m.network.port_names.iter().enumerate() {
            if !names.insert(n.as_str()) {
                push(
                    &format!("/network/port_names/{i}"),
                    format!("port name {n:?} is used twice"),
                );
            }
        }
    }
    for (pointer, message) in super::options::spec_problems(m) {
        push(&pointer, message);
    }
    p
}

/// Turn parse problems into one error.
pub fn problems_error(what: &str, problems: Vec<Problem>) -> Error {
    let n = problems.len();
    let mut e = Error::new(
        crate::ErrorKind::ManifestInvalid,
        format!("{what} has {n} problem{}", if n == 1 { "" } else { "s" }),
    )
    .hint("fix the fields named (JSON pointers); the schema is schemas/manifest.schema.json");
    for p in problems {
        e = e.with("problem", p);
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> serde_json::Value {
        serde_json::json!({
            "id": "demo", "name": "Demo", "version": "1.0.0",
            "source": {
                "type": "url",
                "asset_pattern": "http://127.0.0.1:8000/demo-{{version}}-{{os}}-{{arch}}.tar.gz",
                "verification": { "type": "sha256", "checksums_asset": "checksums.txt" }
            },
            "binary": { "path": "demo", "architectures": ["amd64", "arm64"] },
            "health": { "type": "http", "port_index": 0, "path": "/" },
            "network": { "default_ports": [8080] },
            "modes": [{ "id": "a" }, { "id": "b" }]
        })
    }

    #[test]
    fn the_issue_example_parses() {
        let m = from_value(good()).expect("valid");
        assert_eq!(m.source.kind, SourceKind::Url);
        assert_eq!(m.isolation_level, Isolation::Shared);
    }

    #[test]
    fn schema_errors_name_the_pointer() {
        let mut v = good();
        v["network"]["default_ports"][0] = serde_json::json!(70000);
        v["source"]["type"] = serde_json::json!("ftp");
        let errs = from_value(v).unwrap_err();
        assert!(
            errs.iter().any(|p| p.pointer == "/network/default_ports/0"),
            "{errs:?}"
        );
        assert!(errs.iter().any(|p| p.pointer == "/source/type"), "{errs:?}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut v = good();
        v["binray"] = serde_json::json!({});
        let errs = from_value(v).unwrap_err();
        assert!(
            errs.iter().any(|p| p.message.contains("binray")),
            "{errs:?}"
        );
    }

    #[test]
    fn semantic_checks() {
        let mut v = good();
        v["source"]["asset_pattern"] = serde_json::json!("http://127.0.0.1/x-{{verison}}.tgz");
        v["modes"] = serde_json::json!([{ "id": "a" }, { "id": "a" }]);
        v["health"]["port_index"] = serde_json::json!(3);
        let errs = from_value(v).unwrap_err();
        let msg: Vec<String> = errs.iter().map(|p| p.to_string()).collect();
        assert!(msg.iter().any(|m| m.contains("verison")), "{msg:?}");
        assert!(msg.iter().any(|m| m.starts_with("/modes/1/id")), "{msg:?}");
        assert!(
            msg.iter().any(|m| m.starts_with("/health/port_index")),
            "{msg:?}"
        );
    }

    #[test]
    fn yaml_and_aliases() {
        let y = "id: p\nname: P\nversion: '1'\nisolation_level: namespace\nsource:\n  type: file\n  asset_pattern: p.tar.gz\n  verification: {type: none}\nbinary: {path: p}\n";
        let m = parse(y, true).expect("yaml");
        assert_eq!(m.isolation_level, Isolation::PerTenant);
    }

    #[test]
    fn github_needs_owner_and_repo() {
        let mut v = good();
        v["source"]["type"] = serde_json::json!("github-release");
        v["source"]["asset_pattern"] = serde_json::json!("x-{{version}}.tar.gz");
        let errs = from_value(v).unwrap_err();
        assert!(errs.iter().any(|p| p.message.contains("owner")), "{errs:?}");
    }

    #[test]
    fn verification_sources_and_env_are_checked() {
        let mut v = good();
        v["source"]["verification"] = serde_json::json!({
            "type": "sha256", "github_digest": true,
            "pinned": { "1.0.0": { "linux-sparc": "a".repeat(64), "linux-armv7": "a".repeat(64) } }
        });
        v["binary"]["env"] =
            serde_json::json!({ "LD_LIBRARY_PATH": "{{install_dir}}/lib:{{instal_dir}}" });
        let errs = from_value(v).unwrap_err();
        let msg: Vec<String> = errs.iter().map(|p| p.to_string()).collect();
        assert!(
            msg.iter()
                .any(|m| m.starts_with("/source/verification/github_digest")),
            "{msg:?}"
        );
        assert!(msg.iter().any(|m| m.contains("linux-sparc")), "{msg:?}");
        assert!(
            msg.iter()
                .any(|m| m.contains("linux-armv7") && m.contains("binary.architectures")),
            "{msg:?}"
        );
        assert!(
            msg.iter()
                .any(|m| m.starts_with("/binary/env/LD_LIBRARY_PATH") && m.contains("instal_dir")),
            "{msg:?}"
        );
    }

    #[test]
    fn env_placeholders_expand() {
        let mut v = good();
        v["binary"]["env"] = serde_json::json!({
            "LD_LIBRARY_PATH": "{{install_dir}}/tor", "STATE": "{{instance_dir}}/data", "CONF": "{{config}}"
        });
        let m = from_value(v).expect("valid");
        let env = m.env_for(EnvPlaces {
            install_dir: std::path::Path::new("/f/tor/1.0"),
            instance_dir: std::path::Path::new("/i/x"),
            config: Some(std::path::Path::new("/i/x/config/torrc")),
        });
        assert_eq!(env["LD_LIBRARY_PATH"], "/f/tor/1.0/tor");
        assert_eq!(env["STATE"], "/i/x/data");
        assert_eq!(env["CONF"], "/i/x/config/torrc");
    }
}
