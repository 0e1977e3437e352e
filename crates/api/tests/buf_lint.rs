//! hangar.v1 through buf's linter, the tool protobuf users check APIs with.
//!
//! `buf lint` with `proto/buf.yaml` (STANDARD, less the rules that file
//! explains). buf comes from npm (`@bufbuild/buf`); `.ci/run` installs it and
//! names it in `$HANGAR_TEST_BUF`. Without it the test says so and skips.

use std::path::PathBuf;
use std::process::Command;

fn buf() -> Option<PathBuf> {
    let candidate = std::env::var_os("HANGAR_TEST_BUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("buf"));
    match Command::new(&candidate).arg("--version").output() {
        Ok(o) if o.status.success() => Some(candidate),
        _ => {
            eprintln!(
                "skipped: no buf (npm install @bufbuild/buf, or set HANGAR_TEST_BUF); .ci/run installs it"
            );
            None
        }
    }
}

#[test]
fn buf_lint_accepts_hangar_v1() {
    let Some(buf) = buf() else { return };
    let proto = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto");
    let o = Command::new(buf)
        .arg("lint")
        .current_dir(&proto)
        .output()
        .expect("buf runs");
    assert!(
        o.status.success(),
        "buf lint:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
