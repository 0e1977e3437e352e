//! Archive extraction into a fresh directory. Input: one byte choosing the
//! format (tar, tar that this target gzips, raw tar.gz, raw tar.xz, zip,
//! plain), then the bytes. Whether it succeeds or not, everything written is
//! inside the destination: nothing appears beside it (a canary directory
//! next to it stays empty), no device, FIFO or socket exists, no symbolic
//! link is absolute or resolves outside, and the limits hold.
#![no_main]

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use hangar_fetch::extract::{extract, Format, Limits};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits {
    max_bytes: 256 << 10,
    max_entries: 64,
};

/// Where the temporary directories go: memory when the host has it.
fn tmp_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Whether `link`'s target, resolved lexically from the link's directory,
/// stays inside `dest`.
fn resolves_inside(dest: &Path, link: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let rel = link.strip_prefix(dest).expect("walked under dest");
    let mut depth: Vec<Component<'_>> = rel.parent().map_or(vec![], |p| p.components().collect());
    for c in target.components() {
        match c {
            Component::Normal(_) => depth.push(c),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

fn walk(dest: &Path, dir: &Path, files: &mut u64) {
    use std::os::unix::fs::FileTypeExt;
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let e = e.expect("entry");
        let path = e.path();
        let meta = std::fs::symlink_metadata(&path).expect("lstat");
        let ft = meta.file_type();
        assert!(
            !(ft.is_block_device() || ft.is_char_device() || ft.is_fifo() || ft.is_socket()),
            "special file {path:?}"
        );
        if ft.is_symlink() {
            let target = std::fs::read_link(&path).expect("readlink");
            assert!(
                resolves_inside(dest, &path, &target),
                "symlink {path:?} -> {target:?} leaves the directory"
            );
        } else if ft.is_dir() {
            walk(dest, &path, files);
        } else {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode();
            assert_eq!(mode & 0o7022, 0, "{path:?} has mode {mode:o}");
            *files += 1;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let base = tempfile::Builder::new()
        .prefix("hangar-fuzz-")
        .tempdir_in(tmp_root())
        .expect("tempdir");
    let dest = base.path().join("dest");
    let canary = base.path().join("canary");
    std::fs::create_dir(&dest).expect("dest");
    std::fs::create_dir(&canary).expect("canary");
    let (format, bytes): (Format, Vec<u8>) = match sel % 6 {
        0 => (Format::Tar, body.to_vec()),
        1 => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(body).expect("gzip");
            (Format::TarGz, gz.finish().expect("gzip"))
        }
        2 => (Format::TarGz, body.to_vec()),
        3 => (Format::TarXz, body.to_vec()),
        4 => (Format::Zip, body.to_vec()),
        _ => (Format::Plain, body.to_vec()),
    };
    let archive = base.path().join("archive");
    std::fs::write(&archive, &bytes).expect("write archive");

    let result = extract(&archive, format, &dest, "binary", LIMITS);

    let mut beside: Vec<String> = std::fs::read_dir(base.path())
        .expect("base")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    beside.sort();
    assert_eq!(
        beside,
        ["archive", "canary", "dest"],
        "something appeared beside dest"
    );
    assert_eq!(
        std::fs::read_dir(&canary).expect("canary").count(),
        0,
        "the canary directory beside dest got an entry"
    );
    let mut files = 0;
    walk(&dest, &dest, &mut files);
    if let Ok(out) = result {
        assert!(out.bytes <= LIMITS.max_bytes, "{out:?}");
        assert!(out.files <= files, "{out:?} but {files} files on disk");
    }
});
