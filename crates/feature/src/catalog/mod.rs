//! The catalog: directories of `<id>/manifest.json` (or `manifest.yaml`),
//! listed, shown and searched; and the built-in catalog compiled into hangar
//! (tor, sing-box and xray with their real upstream sources, and an offline
//! `demo` feature whose release archives ship with hangar).
//!
//! With several directories the first that has an id wins, as in `PATH`.
//! Manifests with problems do not break the catalog: they are left out and
//! reported by [`Catalog::problems`].

pub mod install;
pub mod manifest;
pub mod options;
pub mod resolve;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use install::{known_versions, name_known_versions, plan, InstallPolicy};
pub use manifest::{Isolation, Manifest, Problem};
pub use resolve::{canonical_arch, latest_version, resolve, Platform};

use crate::{Error, Result};

/// A manifest and where it was found.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The manifest.
    pub manifest: Manifest,
    /// Its directory (anchors `file` sources and templates).
    pub dir: PathBuf,
    /// The manifest file.
    pub file: PathBuf,
}

/// Manifests by id.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    entries: BTreeMap<String, Entry>,
    problems: Vec<(PathBuf, Error)>,
    dirs: Vec<PathBuf>,
}

/// Files of the built-in catalog, embedded at build time.
const BUILTIN: &[(&str, &[u8])] = &[
    (
        "tor/manifest.json",
        include_bytes!("../../../../catalog/tor/manifest.json"),
    ),
    (
        "sing-box/manifest.json",
        include_bytes!("../../../../catalog/sing-box/manifest.json"),
    ),
    (
        "xray/manifest.json",
        include_bytes!("../../../../catalog/xray/manifest.json"),
    ),
    (
        "demo/manifest.json",
        include_bytes!("../../../../catalog/demo/manifest.json"),
    ),
    (
        "demo/releases/checksums.txt",
        include_bytes!("../../../../catalog/demo/releases/checksums.txt"),
    ),
    (
        "demo/releases/hangar-demo-1.0.0-linux-amd64.tar.gz",
        include_bytes!("../../../../catalog/demo/releases/hangar-demo-1.0.0-linux-amd64.tar.gz"),
    ),
    (
        "demo/releases/hangar-demo-1.0.0-linux-arm64.tar.gz",
        include_bytes!("../../../../catalog/demo/releases/hangar-demo-1.0.0-linux-arm64.tar.gz"),
    ),
    (
        "demo/releases/hangar-demo-1.1.0-linux-amd64.tar.gz",
        include_bytes!("../../../../catalog/demo/releases/hangar-demo-1.1.0-linux-amd64.tar.gz"),
    ),
    (
        "demo/releases/hangar-demo-1.1.0-linux-arm64.tar.gz",
        include_bytes!("../../../../catalog/demo/releases/hangar-demo-1.1.0-linux-arm64.tar.gz"),
    ),
];

/// Write the built-in catalog into `dir` (files that differ are replaced
/// atomically; others are left alone) and return `dir`.
pub fn materialize_builtin(dir: &Path) -> Result<PathBuf> {
    for (rel, bytes) in BUILTIN {
        let path = dir.join(rel);
        if std::fs::read(&path).is_ok_and(|b| b == *bytes) {
            continue;
        }
        let parent = path.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent)
            .map_err(|e| io_err("cannot create the built-in catalog", parent, e))?;
        // Unique per call, not just per process: a daemon's requests may
        // write the catalog from several threads at once.
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = parent.join(format!(".tmp-{}-{seq}", std::process::id()));
        std::fs::write(&tmp, bytes)
            .map_err(|e| io_err("cannot write the built-in catalog", &tmp, e))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| io_err("cannot write the built-in catalog", &path, e))?;
    }
    Ok(dir.to_path_buf())
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::new(crate::ErrorKind::CatalogIo, format!("{what}: {e}"))
        .with("path", path.display())
        .hint("check the path and its permissions")
}

impl Catalog {
    /// Load every `<id>/manifest.{json,yaml,yml}` under each directory.
    /// A directory that does not exist is an error; a bad manifest is not.
    pub fn load(dirs: &[PathBuf]) -> Result<Catalog> {
        let mut cat = Catalog {
            dirs: dirs.to_vec(),
            ..Catalog::default()
        };
        for dir in dirs {
            let rd = std::fs::read_dir(dir).map_err(|e| {
                Error::new(crate::ErrorKind::CatalogUnreadable, format!("cannot read catalog directory: {e}"))
                    .with("dir", dir.display())
                    .hint("pass an existing directory with --catalog, or unset HANGAR_CATALOG for the built-in one")
            })?;
            let mut subdirs: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect();
            subdirs.sort();
            for sub in subdirs {
                let Some(file) = ["manifest.json", "manifest.yaml", "manifest.yml"]
                    .iter()
                    .map(|f| sub.join(f))
                    .find(|f| f.is_file())
                else {
                    continue;
                };
                match load_one(&file) {
                    Ok(m) => {
                        let dir_name = sub
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        if m.id != dir_name {
                            cat.problems.push((
                                file.clone(),
                                Error::new(
                                    crate::ErrorKind::ManifestInvalid,
                                    format!(
                                        "id {:?} differs from its directory {dir_name:?}",
                                        m.id
                                    ),
                                )
                                .hint("rename the directory or the id so they match"),
                            ));
                            continue;
                        }
                        cat.entries.entry(m.id.clone()).or_insert(Entry {
                            manifest: m,
                            dir: sub.clone(),
                            file,
                        });
                    }
                    Err(e) => cat.problems.push((file, e)),
                }
            }
        }
        Ok(cat)
    }

    /// The directories searched, in order.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Every valid manifest, by id.
    pub fn list(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Manifests that were left out, with why.
    pub fn problems(&self) -> &[(PathBuf, Error)] {
        &self.problems
    }

    /// One feature, or `FEATURE_NOT_FOUND` with a did-you-mean.
    pub fn get(&self, id: &str) -> Result<&Entry> {
        if let Some(e) = self.entries.get(id) {
            return Ok(e);
        }
        let mut err = Error::new(
            crate::ErrorKind::FeatureNotFound,
            format!("no feature {id:?} in the catalog"),
        )
        .hint("`hangar catalog list` shows what there is; `hangar catalog search WORD` searches");
        if let Some(best) = self
            .entries
            .keys()
            .map(|k| (hangar_base::suggest::edit_distance(id, k), k))
            .filter(|(d, _)| *d <= 2)
            .min()
            .map(|(_, k)| k)
        {
            err = err.hint(format!(
                "did you mean {best:?}? `hangar catalog list` shows every feature"
            ));
        }
        if let Some((file, _)) = self.problems.iter().find(|(f, _)| {
            f.parent()
                .and_then(|p| p.file_name())
                .is_some_and(|n| n == id)
        }) {
            err = err.with("invalid_manifest", file.display());
        }
        Err(err)
    }

    /// Features matching every word of `query` (case-insensitive) in id, name,
    /// description, license or protocols; best matches first.
    pub fn search(&self, query: &str) -> Vec<&Entry> {
        let words: Vec<String> = query.split_whitespace().map(|w| w.to_lowercase()).collect();
        let mut scored: Vec<(u32, &Entry)> = self
            .entries
            .values()
            .filter_map(|e| {
                let m = &e.manifest;
                let id = m.id.to_lowercase();
                let name = m.name.to_lowercase();
                let rest = format!(
                    "{} {} {}",
                    m.description.to_lowercase(),
                    m.license.to_lowercase(),
                    m.network.protocols.join(" ").to_lowercase()
                );
                let mut score = 0;
                for w in &words {
                    score += if id == *w {
                        100
                    } else if id.starts_with(w.as_str()) {
                        50
                    } else if id.contains(w.as_str()) || name.contains(w.as_str()) {
                        20
                    } else if rest.contains(w.as_str()) {
                        5
                    } else {
                        return None;
                    };
                }
                Some((score, e))
            })
            .collect();
        scored.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then_with(|| a.1.manifest.id.cmp(&b.1.manifest.id))
        });
        scored.into_iter().map(|(_, e)| e).collect()
    }
}

/// Largest manifest read. The shipped ones are under 8 KiB; anything near
/// this is a mistake or an attack, and is refused without being read whole.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

fn load_one(file: &Path) -> Result<Manifest> {
    use std::io::Read;
    let f = std::fs::File::open(file).map_err(|e| io_err("cannot read manifest", file, e))?;
    let mut text = String::new();
    f.take(MAX_MANIFEST_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| io_err("cannot read manifest", file, e))?;
    if text.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(Error::new(
            crate::ErrorKind::ManifestInvalid,
            format!("the manifest is larger than {MAX_MANIFEST_BYTES} bytes"),
        )
        .with("file", file.display())
        .hint("a manifest describes a feature in a few KiB; check the file"));
    }
    let yaml = file.extension().is_some_and(|x| x == "yaml" || x == "yml");
    manifest::parse(&text, yaml).map_err(|p| {
        manifest::problems_error(&file.display().to_string(), p).with("file", file.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A huge manifest is refused after reading one byte past the cap, and
    /// the rest of the catalog still loads.
    #[test]
    fn an_oversized_manifest_is_refused_unread() {
        let dir = std::env::temp_dir().join(format!("hangar-bigmf-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("big")).expect("dir");
        let f = std::fs::File::create(dir.join("big").join("manifest.json")).expect("file");
        // Sparse: 100 MiB that cost no disk.
        f.set_len(100 << 20).expect("sparse file");
        let e = load_one(&dir.join("big").join("manifest.json")).unwrap_err();
        assert_eq!(e.code(), "MANIFEST_INVALID", "{e:?}");
        assert!(e.message.contains("larger than"), "{e:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn builtin_catalog_is_valid() {
        let dir = std::env::temp_dir().join(format!("hangar-builtin-{}", std::process::id()));
        let d = materialize_builtin(&dir).expect("materialize");
        let cat = Catalog::load(&[d]).expect("load");
        assert!(cat.problems().is_empty(), "{:?}", cat.problems());
        let ids: Vec<&str> = cat.list().map(|e| e.manifest.id.as_str()).collect();
        assert_eq!(ids, ["demo", "sing-box", "tor", "xray"]);
        assert_eq!(
            cat.search("proxy").first().map(|e| e.manifest.id.as_str()),
            Some("sing-box")
        );
        let e = cat.get("sing-bx").unwrap_err();
        assert!(
            e.hint.as_deref().unwrap_or("").contains("sing-box"),
            "{e:?}"
        );
        // Writing it again changes nothing.
        materialize_builtin(&dir).expect("again");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A daemon loads its catalog once per request, so requests at the same
    /// moment write the built-in catalog from several threads of one process:
    /// each must write through a temporary file of its own.
    #[test]
    fn threads_of_one_process_materialize_the_builtin_catalog_at_once() {
        for round in 0..20 {
            let dir = std::env::temp_dir().join(format!(
                "hangar-builtin-race-{}-{round}",
                std::process::id()
            ));
            let results: Vec<Result<PathBuf>> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..4)
                    .map(|_| s.spawn(|| materialize_builtin(&dir)))
                    .collect();
                hs.into_iter().map(|h| h.join().expect("thread")).collect()
            });
            for r in results {
                r.expect("every concurrent materialize succeeds");
            }
            for (rel, bytes) in BUILTIN {
                assert_eq!(std::fs::read(dir.join(rel)).expect(rel), *bytes, "{rel}");
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
