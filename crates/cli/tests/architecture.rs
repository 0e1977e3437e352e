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

// ---------------------------------------------------------------------------
// Layers: arrows point down only.

/// Every workspace crate and its layer, top to bottom. A crate may depend only
/// on crates of a *lower* layer: not on its own layer (so the mechanisms stay
/// independent of each other; in particular the supervisor knows nothing of
/// networks and does not depend on `hangar-net`), and never upwards. This is
/// the one table of allowed dependencies: a new crate gets a row here.
const LAYERS: &[(&str, &[&str])] = &[
    ("edge: binary", &["hangar-cli"]),
    ("edge: API", &["hangar-api"]),
    ("fleet", &["hangar-fleet"]),
    ("service", &["hangar-core"]),
    ("features", &["hangar-feature"]),
    (
        "mechanisms",
        &[
            "hangar-supervisor",
            "hangar-net",
            "hangar-store",
            "hangar-fetch",
            "hangar-plugin",
        ],
    ),
    ("vocabulary", &["hangar-base"]),
];

/// (layer index, layer name) of a crate; 0 is the top.
fn layer_of(krate: &str) -> Option<(usize, &'static str)> {
    LAYERS
        .iter()
        .enumerate()
        .find(|(_, (_, crates))| crates.contains(&krate))
        .map(|(i, (name, _))| (i, *name))
}

/// Workspace crates and the workspace crates each depends on (normal and build
/// dependencies; dev-dependencies are test code, which may reach anywhere).
fn workspace_edges() -> Vec<(String, Vec<String>)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let members: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .expect("workspace_members")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    let packages: Vec<&serde_json::Value> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| p["id"].as_str().is_some_and(|id| members.contains(id)))
        .collect();
    let names: BTreeSet<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| d["kind"].as_str() != Some("dev"))
                .filter_map(|d| d["name"].as_str())
                .filter(|n| names.contains(n))
                .map(str::to_string)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            (p["name"].as_str().unwrap_or_default().to_string(), deps)
        })
        .collect()
}

#[test]
fn crates_depend_only_on_lower_layers() {
    let mut problems = Vec::new();
    for (krate, deps) in workspace_edges() {
        let Some((from, from_name)) = layer_of(&krate) else {
            problems.push(format!(
                "workspace crate {krate} has no layer: place it in LAYERS in \
                 crates/cli/tests/architecture.rs (and in ARCHITECTURE.md's layer picture)"
            ));
            continue;
        };
        for dep in deps {
            // A crate without a layer is reported as such above.
            let Some((to, to_name)) = layer_of(&dep) else {
                continue;
            };
            if to <= from {
                problems.push(format!(
                    "{krate} -> {dep}: {krate} ({from_name}) may depend only on lower \
                     layers, but {dep} is {}",
                    if to == from {
                        format!("in the same layer ({to_name})")
                    } else {
                        format!("in a higher layer ({to_name})")
                    }
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "dependency arrows must point down (see ARCHITECTURE.md, Layers):\n  {}",
        problems.join("\n  ")
    );
}

// ---------------------------------------------------------------------------
// Only the supervisor spawns or signals processes.

/// What spawns or signals a process, as it appears in code.
const PROCESS_CALLS: &[&str] = &[
    "Command::new",
    "std::process::Command",
    "tokio::process",
    "kill(",
    "killpg",
    "kill_process",
    "kill_process_group",
    "pidfd_send_signal",
    "fork",
    "clone(",
    "execv",
];

/// Justified exceptions, as (file, call). Each needs a reason here and in the
/// file itself.
const ALLOWED: &[(&str, &str)] = &[
    // The plugin library's exec transport keeps a long-lived plugin process
    // speaking a framed protocol over its stdin/stdout, restarts it, and ends
    // its process group on close. It is a library usable without a supervisor
    // (`hangar plugin call` has none), and the supervisor's one-shot
    // `run_once` does not fit a long-lived bidirectional child. The module docs
    // of crates/plugin/src/exec.rs say so.
    ("crates/plugin/src/exec.rs", "tokio::process"),
    ("crates/plugin/src/exec.rs", "Command::new"),
    ("crates/plugin/src/exec.rs", "kill_process"),
    ("crates/plugin/src/exec.rs", "kill_process_group"),
    // Crash points, compiled in only for tests (the `failpoints` feature): a
    // crash test has the daemon SIGKILL itself at a persisted step, since a
    // panic or an exit would run destructors and flush, which a crash does
    // not. The module docs of crates/base/src/failpoint.rs say so.
    ("crates/base/src/failpoint.rs", "kill_process"),
    // `hangar dashboard` hands the login URL to the user's browser
    // (`$BROWSER` or `xdg-open`) and leaves it running: a desktop program the
    // user asked to open, not a supervised process. The module docs of
    // crates/cli/src/browser.rs say so.
    ("crates/cli/src/browser.rs", "Command::new"),
    ("crates/cli/src/browser.rs", "std::process::Command"),
];

/// `code` with comments removed and string and char literals blanked, line
/// structure kept, so words in docs and messages ("forked", "kill(") do not
/// count.
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let mut depth = 0usize; // block comment nesting
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if depth > 0 {
            if c == b'*' && next == Some(b'/') {
                depth -= 1;
                i += 2;
            } else if c == b'/' && next == Some(b'*') {
                depth += 1;
                i += 2;
            } else {
                if c == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            continue;
        }
        match c {
            b'/' if next == Some(b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if next == Some(b'*') => {
                depth = 1;
                i += 2;
            }
            b'r' if matches!(next, Some(b'"') | Some(b'#'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                // Raw string: r"…" or r#"…"#.
                let mut j = i + 1;
                let mut hashes = 0;
                while b.get(j) == Some(&b'#') {
                    hashes += 1;
                    j += 1;
                }
                if b.get(j) != Some(&b'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                j += 1;
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                while j < b.len() && !b[j..].starts_with(&close) {
                    if b[j] == b'\n' {
                        out.push('\n');
                    }
                    j += 1;
                }
                out.push_str("\"\"");
                i = j + close.len();
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    if b.get(i) == Some(&b'\n') {
                        out.push('\n');
                    }
                    i += 1;
                }
                out.push_str("\"\"");
                i += 1;
            }
            b'\'' => {
                // A char literal ('x', '\n', '\''), or a lifetime ('a).
                if next == Some(b'\\') {
                    // Skip the escaped character itself: it may be a quote.
                    let mut j = i + 3;
                    while j < b.len() && b[j] != b'\'' {
                        j += 1;
                    }
                    out.push_str("' '");
                    i = j + 1;
                } else if b.get(i + 2) == Some(&b'\'') {
                    out.push_str("' '");
                    i += 3;
                } else {
                    out.push('\'');
                    i += 1;
                }
            }
            _ => {
                // Copy one whole UTF-8 character.
                let len = match c {
                    0x00..=0x7f => 1,
                    0xc0..=0xdf => 2,
                    0xe0..=0xef => 3,
                    _ => 4,
                };
                let end = (i + len).min(b.len());
                out.push_str(std::str::from_utf8(&b[i..end]).unwrap_or(" "));
                i = end;
            }
        }
    }
    out
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Whether `line` (code only) makes `call`.
fn makes(line: &str, call: &str) -> bool {
    let b = line.as_bytes();
    line.match_indices(call).any(|(at, _)| {
        let before = at.checked_sub(1).map(|i| b[i]);
        let after = b.get(at + call.len()).copied();
        match call {
            // The word, not "forked" or "fork_join".
            "fork" => !before.is_some_and(is_ident) && !after.is_some_and(is_ident),
            // The syscall, not `x.clone()`, `Arc::clone(&x)` or `T::clone(..)`:
            // bare, or through libc / nix.
            "clone(" => {
                let head = &line[..at];
                head.ends_with("libc::")
                    || head.ends_with("nix::sched::")
                    || (before.is_none_or(|c| !is_ident(c) && c != b'.' && c != b':'))
            }
            _ => true,
        }
    })
}

fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn only_the_supervisor_spawns_or_signals() {
    let root = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let mut files = Vec::new();
    for krate in std::fs::read_dir(root.join("crates")).unwrap().flatten() {
        if krate.file_name() == "supervisor" {
            continue;
        }
        // Only library and binary code: tests/, benches/ and examples/ are exempt.
        rust_files(&krate.path().join("src"), &mut files);
    }
    files.sort();
    assert!(files.len() > 20, "found only {} source files", files.len());
    let mut used = BTreeSet::new();
    let mut problems = Vec::new();
    for f in &files {
        let rel = f
            .strip_prefix(&root)
            .unwrap_or(f)
            .to_string_lossy()
            .into_owned();
        let src = std::fs::read_to_string(f).unwrap();
        for (n, line) in code_only(&src).lines().enumerate() {
            let mut found = Vec::new();
            for call in PROCESS_CALLS {
                if !makes(line, call) {
                    continue;
                }
                if ALLOWED.contains(&(rel.as_str(), *call)) {
                    used.insert((rel.clone(), *call));
                    continue;
                }
                found.push(*call);
            }
            if !found.is_empty() {
                problems.push(format!(
                    "{rel}:{}: {}: {}",
                    n + 1,
                    found.join(", "),
                    line.trim()
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "only hangar_supervisor spawns or signals processes (ARCHITECTURE.md, \
         Invariants); ask the supervisor (Manager::run_once, hangar_supervisor::reap) or, \
         if it is justified, add a commented entry to ALLOWED:\n  {}",
        problems.join("\n  ")
    );
    let stale: Vec<String> = ALLOWED
        .iter()
        .filter(|(f, c)| !used.contains(&(f.to_string(), *c)))
        .map(|(f, c)| format!("{f}: {c}"))
        .collect();
    assert!(
        stale.is_empty(),
        "ALLOWED names calls that no longer happen; remove them: {stale:?}"
    );
}

#[test]
fn the_scanner_sees_what_it_should() {
    let src = "let c = std::process::Command::new(\"x\"); // fork(\n\
               /* kill( */ let s = \"clone( fork\"; let a = Arc::clone(&b); x.clone();\n\
               unsafe { libc::clone(f, s, 0, p) }; let pid = fork();\n\
               let ch = 'x'; let q = '\\''; let forked = 1; fn f<'a>(x: &'a str) {}\n";
    let code = code_only(src);
    let lines: Vec<&str> = code.lines().collect();
    assert_eq!(lines.len(), 4, "{code}");
    assert!(makes(lines[0], "Command::new") && makes(lines[0], "std::process::Command"));
    assert!(!makes(lines[0], "fork"), "comment: {}", lines[0]);
    assert!(!makes(lines[1], "kill(") && !makes(lines[1], "clone(") && !makes(lines[1], "fork"));
    assert!(makes(lines[2], "clone(") && makes(lines[2], "fork"));
    assert!(!makes(lines[3], "fork"), "{}", lines[3]);
}

/// Every source file is named in ARCHITECTURE.md's code map, under its crate's
/// section, by its path inside `src/` (`spawn.rs`, `catalog/options.rs`) or by
/// its directory (`linux/`) when the section describes the directory as one.
#[test]
fn code_map_names_every_source_file() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let doc = std::fs::read_to_string(format!("{root}/ARCHITECTURE.md")).unwrap();
    // Each crate's section: from its heading to the next heading of any level.
    let mut sections: std::collections::BTreeMap<String, String> = Default::default();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        if let Some(name) = line
            .strip_prefix("### `crates/")
            .and_then(|l| l.strip_suffix('`'))
        {
            current = Some(name.to_string());
            continue;
        }
        if line.starts_with('#') {
            current = None;
            continue;
        }
        if let Some(c) = &current {
            let s = sections.entry(c.clone()).or_default();
            s.push_str(line);
            s.push('\n');
        }
    }
    let mut missing = Vec::new();
    for (krate, text) in &sections {
        let src = std::path::PathBuf::from(format!("{root}/crates/{krate}/src"));
        let mut stack = vec![src.clone()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                if p.extension().is_none_or(|x| x != "rs") {
                    continue;
                }
                let rel = p.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
                // The crate root is the section itself.
                if rel == "lib.rs" || rel == "main.rs" {
                    continue;
                }
                let file = p.file_name().unwrap().to_string_lossy().into_owned();
                let parent = rel.rsplit_once('/').map(|(d, _)| format!("{d}/"));
                let named = text.contains(&format!("`{rel}`"))
                    || text.contains(&format!("`{file}`"))
                    || parent.is_some_and(|d| text.contains(&format!("`{d}`")));
                if !named {
                    missing.push(format!("crates/{krate}/src/{rel}"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's code map does not name these files (add them to their \
         crate's section): {missing:#?}"
    );
}

/// The instances never reach into the daemon: they get the desired set, the
/// event sink, the store and the supervisor, and the daemon owns them.
#[test]
fn instances_do_not_import_the_daemon() {
    let root = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../crates/core/src/instances"
    );
    let mut stack = vec![std::path::PathBuf::from(root)];
    let mut found = Vec::new();
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                for (i, line) in text.lines().enumerate() {
                    if line.contains("crate::daemon") || line.contains("Daemon") {
                        found.push(format!("{}:{}: {}", p.display(), i + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "instances reach into the daemon: {found:#?}"
    );
}

/// Nothing prints with `print!`/`println!`/`eprint!`/`eprintln!` outside
/// tests: they panic on a closed descriptor (`hangar ps | head -1`), and the
/// release build aborts on a panic. The binary prints through its `output`
/// module (`out!`, `outln!`, `errln!`); libraries never print.
#[test]
fn nothing_prints_with_the_panicking_macros() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../crates");
    let mut stack = vec![std::path::PathBuf::from(root)];
    let mut found = Vec::new();
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                // Only library and binary sources: tests, examples and
                // benchmarks may print.
                if !matches!(name.as_str(), "tests" | "examples" | "benches" | "target") {
                    stack.push(p);
                }
                continue;
            }
            if !name.ends_with(".rs") || !p.components().any(|c| c.as_os_str() == "src") {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            for (i, line) in text.lines().enumerate() {
                // Unit tests sit at the end of a file, after `#[cfg(test)]`.
                if line.trim_start().starts_with("#[cfg(test)]") {
                    break;
                }
                let code = line.split("//").next().unwrap_or("");
                for m in ["println!(", "eprintln!(", "print!(", "eprint!("] {
                    let hit = code.match_indices(m).any(|(at, _)| {
                        // `eprintln!(` also contains `println!(`: match whole names.
                        at == 0 || !code.as_bytes()[at - 1].is_ascii_alphanumeric()
                    });
                    if hit {
                        found.push(format!("{}:{}: {}", p.display(), i + 1, line.trim()));
                        break;
                    }
                }
            }
        }
    }
    assert!(found.is_empty(), "panicking print macros: {found:#?}");
}
