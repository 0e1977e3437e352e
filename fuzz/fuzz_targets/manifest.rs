//! Feature manifests (a catalog's `manifest.json` / `.yaml`): any text is
//! either refused with problems or parses; a manifest that parses writes out
//! as JSON and as YAML and reads back to the same manifest.
#![no_main]

use hangar_feature::catalog::manifest::{self, Manifest};
use libfuzzer_sys::fuzz_target;

fn check_problems(p: &[manifest::Problem]) {
    assert!(!p.is_empty(), "refused without a problem");
    for p in p {
        assert!(!p.message.is_empty(), "{p:?}");
        assert!(p.pointer.is_empty() || p.pointer.starts_with('/'), "{p:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let yaml = sel & 1 == 1;
    let m: Manifest = match manifest::parse(text, yaml) {
        Ok(m) => m,
        Err(p) => return check_problems(&p),
    };
    let json = serde_json::to_string(&m).expect("a parsed manifest serializes");
    let again = manifest::parse(&json, false)
        .unwrap_or_else(|p| panic!("written back as JSON it is refused: {p:?}\n{json}"));
    assert_eq!(m, again, "JSON round trip changed the manifest\n{json}");
    let value = serde_json::to_value(&m).expect("to a value");
    let again = manifest::from_value(value).expect("from its own value");
    assert_eq!(m, again, "value round trip changed the manifest");
    let y = serde_yaml_ng::to_string(&m).expect("a parsed manifest writes as YAML");
    let again = manifest::parse(&y, true)
        .unwrap_or_else(|p| panic!("written back as YAML it is refused: {p:?}\n{y}"));
    assert_eq!(m, again, "YAML round trip changed the manifest\n{y}");
});
