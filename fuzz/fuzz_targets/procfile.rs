//! The process file (`hangar run FILE`, `hangar serve -c FILE`): any text either
//! parses into valid, uniquely named processes, or gives errors that each point
//! at a real line and column with a message. Never a panic.
#![no_main]

use std::collections::HashSet;

use hangar_core::procfile::{parse_as, FileKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let lines: Vec<&str> = src.split('\n').collect();
    for kind in [FileKind::ProcessFile, FileKind::DaemonConfig] {
        match parse_as(src, None, kind) {
            Ok(file) => {
                if kind == FileKind::ProcessFile {
                    assert!(
                        !file.processes.is_empty(),
                        "a process file without processes"
                    );
                }
                let mut names = HashSet::new();
                for p in &file.processes {
                    assert!(names.insert(&p.name), "name {:?} twice", p.name);
                    assert!(p.problems().is_empty(), "{:?}: {:?}", p.name, p.problems());
                }
            }
            Err(errors) => {
                assert!(!errors.is_empty(), "refused without an error");
                for e in &errors {
                    assert!(!e.message.trim().is_empty(), "{e:?}");
                    if e.line == 0 {
                        continue;
                    }
                    let line = lines.get(e.line - 1).unwrap_or_else(|| {
                        panic!("{e:?} points past the last line ({})", lines.len())
                    });
                    assert!(e.col >= 1, "{e:?}");
                    assert!(
                        e.col <= line.len() + 1,
                        "{e:?} points past the end of line {:?}",
                        line
                    );
                }
            }
        }
    }
});
