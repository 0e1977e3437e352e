//! ARCHITECTURE.md's code map must name exactly the crates under `crates/`.

use std::collections::BTreeSet;

#[test]
fn code_map_matches_the_crates_directory() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let doc = std::fs::read_to_string(format!("{root}/ARCHITECTURE.md")).unwrap();
    let documented: BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("### `crates/"))
        .filter_map(|l| l.strip_suffix('`'))
        .map(str::to_string)
        .collect();
    let actual: BTreeSet<String> = std::fs::read_dir(format!("{root}/crates"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        documented, actual,
        "ARCHITECTURE.md's code map (### `crates/NAME` headings) and crates/* disagree"
    );
}
