//! Config generation with hostile option values: the template generator
//! renders a JSON, YAML, TOML or torrc template whose options the fuzzer
//! picks. Whatever the values, a config that renders parses in its format,
//! holds exactly the keys (JSON, YAML, TOML: top-level keys; torrc: the
//! sequence of directives as tor reads them) the template wrote, and each
//! value is the one given.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hangar_feature::catalog::manifest::{self, Manifest};
use hangar_feature::configgen::{GeneratorRegistry, InstanceContext, RenderInput};
use libfuzzer_sys::arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

/// (template file name, body) per format.
const TEMPLATES: [(&str, &str); 4] = [
    (
        "app.json.j2",
        "{\"greeting\": {{ options.greeting }}, \"workers\": {{ options.workers }}, \
         \"tags\": {{ options.tags }}, \"admin\": false}\n",
    ),
    (
        "app.yaml.j2",
        "greeting: {{ options.greeting }}\nworkers: {{ options.workers }}\n\
         tags: {{ options.tags }}\nadmin: false\n",
    ),
    (
        "app.toml.j2",
        "greeting = {{ options.greeting }}\nworkers = {{ options.workers }}\n\
         tags = {{ options.tags }}\nadmin = false\n",
    ),
    (
        "torrc.j2",
        "Nickname {{ options.greeting }}\nSocksPort {{ options.workers }}\n\
         {% for t in options.tags %}ExitPolicy {{ t }}\n{% endfor %}Log notice stdout\n",
    ),
];

struct Setup {
    dir: PathBuf,
    manifests: Vec<Manifest>,
    ctx: InstanceContext,
    reg: GeneratorRegistry,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tmp").keep();
        let manifests = TEMPLATES
            .iter()
            .map(|(name, body)| {
                std::fs::write(dir.join(name), body).expect("template");
                let mut config = json!({"generator": "template", "template": name, "options": {
                    "greeting": {"type": "string", "default": "hello"},
                    "workers": {"type": "integer", "minimum": 1, "default": 2},
                    "tags": {"type": "list"}
                }});
                if name.starts_with("torrc") {
                    config["format"] = json!("torrc");
                }
                manifest::from_value(json!({
                    "id": "tpl", "name": "Templated", "version": "1",
                    "source": {"type": "file", "asset_pattern": "x.tgz", "verification": {"type": "none"}},
                    "binary": {"path": "x"},
                    "config": config,
                    "network": {"default_ports": [8080, 8081], "port_names": ["web", "admin"]}
                }))
                .unwrap_or_else(|p| panic!("{p:?}"))
            })
            .collect();
        let mut ctx = InstanceContext::new("inst1", "my-inst", "tpl", &dir, &dir.join("bin"));
        ctx.ports = [("web".to_string(), 18080), ("admin".to_string(), 18081)]
            .into_iter()
            .collect();
        ctx.create_dirs().expect("dirs");
        Setup {
            dir,
            manifests,
            ctx,
            reg: GeneratorRegistry::builtin(),
        }
    })
}

/// The directives of a torrc as tor reads it (`confline.c`: a key, then a
/// value to the end of the line, where `\` + newline continues the line and
/// `#` starts a comment; or a quoted value), `None` where tor refuses it.
fn torrc_directives(text: &str) -> Option<Vec<String>> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut keys = Vec::new();
    let space = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    loop {
        while i < b.len() && space(b[i]) {
            i += 1;
        }
        if i == b.len() {
            return Some(keys);
        }
        if b[i] == b'#' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        while i < b.len() && !space(b[i]) && b[i] != b'#' {
            i += 1;
        }
        keys.push(text[start..i].to_string());
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
            i += 1;
        }
        if i < b.len() && b[i] == b'"' {
            i += 1;
            loop {
                match b.get(i) {
                    None | Some(b'\n') | Some(b'\r') => return None,
                    Some(b'"') => break,
                    Some(b'\\') => i += 2,
                    Some(_) => i += 1,
                }
            }
            i += 1;
            // Only blanks or a comment may follow a quoted value.
            while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
                i += 1;
            }
            if i < b.len() && b[i] == b'#' {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            if i < b.len() && b[i] != b'\n' {
                return None;
            }
            continue;
        }
        let mut continued = false;
        while i < b.len() && b[i] != b'\n' && (b[i] != b'#' || continued) {
            if b[i] == b'\\' && b.get(i + 1) == Some(&b'\n') {
                continued = true;
                i += 2;
            } else if b[i] == b'#' {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                i += 1;
            } else {
                i += 1;
            }
        }
    }
}

fn top_keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("a map").keys().cloned().collect();
    k.sort();
    k
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(format) = u.int_in_range(0..=3usize) else {
        return;
    };
    let Ok(greeting) = String::arbitrary(&mut u) else {
        return;
    };
    let Ok(workers) = i64::arbitrary(&mut u) else {
        return;
    };
    let Ok(tags) = Vec::<String>::arbitrary(&mut u) else {
        return;
    };
    let s = setup();
    let m = &s.manifests[format];
    let user: Map<String, Value> = json!({"greeting": greeting, "workers": workers, "tags": tags})
        .as_object()
        .cloned()
        .expect("map");
    let Ok(merged) = s.reg.validate_options(m, None, &user) else {
        return;
    };
    let input = RenderInput {
        manifest: m,
        manifest_dir: Path::new(&s.dir),
        ctx: &s.ctx,
        options: &merged,
    };
    let Ok(r) = s.reg.render(&input) else {
        return;
    };
    let text = &r.main_file().expect("main file").contents;
    let expect = ["admin", "greeting", "tags", "workers"];
    let parsed: Value = match format {
        0 => serde_json::from_str(text).expect("rendered JSON parses"),
        1 => serde_yaml_ng::from_str(text).expect("rendered YAML parses"),
        2 => {
            let doc: toml_edit::DocumentMut = text.parse().expect("rendered TOML parses");
            let keys: Vec<&str> = doc.iter().map(|(k, _)| k).collect();
            let mut keys: Vec<String> = keys.into_iter().map(str::to_string).collect();
            keys.sort();
            assert_eq!(keys, expect, "TOML keys changed:\n{text}");
            assert_eq!(doc["admin"].as_bool(), Some(false), "{text}");
            assert_eq!(doc["greeting"].as_str(), Some(greeting.as_str()), "{text}");
            assert_eq!(doc["workers"].as_integer(), Some(workers), "{text}");
            let got: Vec<&str> = doc["tags"]
                .as_array()
                .expect("tags array")
                .iter()
                .map(|v| v.as_str().expect("a string"))
                .collect();
            assert_eq!(got, tags, "{text}");
            return;
        }
        _ => {
            let Some(got) = torrc_directives(text) else {
                return; // tor refuses the file: nothing injected
            };
            let mut want = vec!["Nickname", "SocksPort"];
            want.extend(tags.iter().map(|_| "ExitPolicy"));
            want.push("Log");
            assert_eq!(got, want, "torrc directives changed:\n{text}");
            return;
        }
    };
    assert_eq!(top_keys(&parsed), expect, "keys changed:\n{text}");
    assert_eq!(parsed["admin"], json!(false), "{text}");
    assert_eq!(parsed["greeting"], json!(greeting), "{text}");
    assert_eq!(parsed["workers"], json!(workers), "{text}");
    assert_eq!(parsed["tags"], json!(tags), "{text}");
});
