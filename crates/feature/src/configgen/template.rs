//! The `template` generator: renders `config.template` (a minijinja file beside
//! the manifest) so any manifest gets a config without Rust code.
//!
//! The template sees `instance` (`id`, `name`, `feature`, `mode`), `bind`,
//! `ports` (by name), `options` (merged and validated), `dirs` (`data`, `log`,
//! `config`, `install`) and the helper `addr(name)` → `bind:port`. Undefined
//! names are errors, so a typo fails at render time, not in the service.
//! The format is `config.format`, else what the output file's name says
//! (`app.json.j2` and a `path` of `conf/app.json` both render JSON).
//! In `json`, `yaml` and `toml` templates every `{{ … }}` is JSON-escaped
//! (write `"listen": {{ addr("web") }}`, not `"{{ bind }}:…"`), so no option
//! can break out of its value; the output must parse as its format. In `text`
//! and `torrc` templates values go in as they are, but no value (option or
//! context) can hold a newline or other control character, and no torrc line
//! may end with `\` (tor would join the next line to it).

use std::path::Path;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde_json::json;

use super::{safe_rel_path, Generator, RenderInput, Rendered, TEMPLATE_ERROR};
use crate::{Error, Result};

/// The template generator.
#[derive(Debug, Clone, Copy, Default)]
pub struct Template;

/// Upper bound on template work (instructions), against runaway loops.
const FUEL: u64 = 5_000_000;

fn template_err(what: &str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::new(TEMPLATE_ERROR, format!("{what}: {e}"))
        .with("template", path.display())
        .hint("fix the template named; it sees instance, bind, ports, options, dirs and addr(name)")
}

/// The format a file name says (`x.json`, `x.yaml`, `x.toml`), else `text`.
fn format_of(name: &str) -> &'static str {
    match Path::new(name).extension().and_then(|x| x.to_str()) {
        Some("json") => "json",
        Some("yaml" | "yml") => "yaml",
        Some("toml") => "toml",
        _ => "text",
    }
}

impl Generator for Template {
    fn id(&self) -> &str {
        "template"
    }

    fn render(&self, input: &RenderInput<'_>) -> Result<Rendered> {
        let cfg = input.manifest.config.as_ref();
        let Some(rel) = cfg.and_then(|c| c.template.as_deref()) else {
            return Err(Error::new(
                TEMPLATE_ERROR,
                format!(
                    "feature {} uses the template generator but names no template",
                    input.manifest.id
                ),
            )
            .hint("set config.template to a file beside the manifest"));
        };
        let path = input.manifest_dir.join(safe_rel_path(rel)?);
        let source = std::fs::read_to_string(&path)
            .map_err(|e| template_err("cannot read the template", &path, e))?;
        let default_name = Path::new(rel)
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .trim_end_matches(".j2")
                    .trim_end_matches(".jinja")
                    .to_string()
            })
            .unwrap_or_else(|| "config".into());
        let out_name = input.file_name(&default_name);
        // The format is the output's: `app.json.j2` renders JSON. Taken from
        // the template's own name, it was `text`, which escapes nothing, so an
        // option could close its quotes and add keys.
        let format = cfg
            .and_then(|c| c.format.clone())
            .unwrap_or_else(|| format_of(&out_name).into());

        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL));
        // JSON scalars and lists are valid YAML and TOML values too, so
        // escaping as JSON keeps every value in its place in all three.
        let json_escape = matches!(format.as_str(), "json" | "yaml" | "toml");
        env.set_auto_escape_callback(move |_| {
            if json_escape {
                AutoEscape::Json
            } else {
                AutoEscape::None
            }
        });
        let ctx = input.ctx;
        let ports = ctx.ports.clone();
        let bind = ctx.bind;
        env.add_function(
            "addr",
            move |name: String| -> std::result::Result<String, minijinja::Error> {
                ports
                    .get(&name)
                    .map(|p| super::host_port(bind, *p))
                    .ok_or_else(|| {
                        minijinja::Error::new(
                            minijinja::ErrorKind::InvalidOperation,
                            format!("no port named {name:?}"),
                        )
                    })
            },
        );
        let value = json!({
            "instance": { "id": ctx.instance_id, "name": ctx.name, "feature": ctx.feature, "mode": ctx.mode },
            "bind": ctx.bind_str(),
            "ports": ctx.ports,
            "options": input.options,
            "dirs": {
                "data": ctx.data_dir.to_string_lossy(),
                "log": ctx.log_dir.to_string_lossy(),
                "config": ctx.config_dir.to_string_lossy(),
                "install": ctx.install_dir.to_string_lossy(),
            },
        });
        let tmpl = env
            .template_from_named_str(rel, &source)
            .map_err(|e| template_err("the template does not parse", &path, e))?;
        let mut text = tmpl
            .render(minijinja::value::Serde(&value))
            .map_err(|e| template_err("the template does not render", &path, e))?;
        if !text.ends_with('\n') {
            text.push('\n');
        }
        Ok(Rendered::single(out_name, format, text))
    }
}
