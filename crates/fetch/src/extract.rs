//! Safe extraction of `.tar.gz`, `.tar.xz`, `.zip` and plain binaries into an
//! empty staging directory.
//!
//! Refused, with the entry named: absolute paths and `..` components, entries
//! that repeat a path, symbolic links that are absolute or resolve outside the
//! directory, hard links to anything but a regular file extracted before,
//! devices, FIFOs and other special files, and archives that expand beyond the
//! size or entry limit (counted on the bytes actually written, so a lying header
//! does not get past it). The size limit is at most the free space of the
//! destination's filesystem less [`KEEP_FREE`], so a bomb stops before the
//! disk is full. Files get mode 0755 when the archive marks them
//! executable and 0644 otherwise: no setuid, no world-writable files.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};

/// Archive formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// gzip-compressed tar.
    TarGz,
    /// xz-compressed tar.
    TarXz,
    /// Uncompressed tar.
    Tar,
    /// zip.
    Zip,
    /// Not an archive: the file is the binary.
    Plain,
}

impl Format {
    /// The format an asset name implies.
    pub fn from_name(name: &str) -> Format {
        let n = name.to_ascii_lowercase();
        if n.ends_with(".tar.gz") || n.ends_with(".tgz") {
            Format::TarGz
        } else if n.ends_with(".tar.xz") || n.ends_with(".txz") {
            Format::TarXz
        } else if n.ends_with(".tar") {
            Format::Tar
        } else if n.ends_with(".zip") {
            Format::Zip
        } else {
            Format::Plain
        }
    }
}

/// Limits on what an archive may expand to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most bytes written in all.
    pub max_bytes: u64,
    /// Most entries.
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 4 << 30,
            max_entries: 100_000,
        }
    }
}

/// What an extraction wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    /// Regular files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// The path of an entry inside `dest`, or why it cannot be one.
fn safe_relative(name: &Path) -> std::result::Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for c in name.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err("has a `..` component"),
            Component::RootDir | Component::Prefix(_) => return Err("is absolute"),
        }
    }
    if out.as_os_str().is_empty() {
        return Err("is empty");
    }
    Ok(out)
}

/// Where a symlink at `link` (relative to the root) pointing to `target` lands,
/// resolved lexically; `None` when it leaves the root.
///
/// `..` is only allowed before the target's first name: the kernel resolves
/// `x/..` by following `x`, which may itself be a link (to `..`, say), so
/// `x/../..` can leave the root although it looks one level deep. With leading
/// `..` only, each `..` climbs a real directory of the archive, and every link
/// followed afterwards is itself held to the same rule.
fn link_target_inside(link: &Path, target: &Path) -> Option<PathBuf> {
    if target.is_absolute() {
        return None;
    }
    let mut parts: Vec<&std::ffi::OsStr> = link
        .parent()
        .map(|p| {
            p.components()
                .filter_map(|c| match c {
                    Component::Normal(s) => Some(s),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let mut named = false;
    for c in target.components() {
        match c {
            Component::Normal(s) => {
                named = true;
                parts.push(s);
            }
            Component::CurDir => {}
            Component::ParentDir if named => return None,
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.iter().collect())
}

/// Free space an extraction leaves on its filesystem, for the store and the
/// rest of the data dir: an archive may fill the free space less this.
pub const KEEP_FREE: u64 = 64 << 20;

struct Writer<'a> {
    dest: &'a Path,
    limits: Limits,
    /// The free space on `dest`'s filesystem when it lowered the size limit.
    free: Option<u64>,
    seen: HashSet<PathBuf>,
    /// Regular files written, for hard links.
    files: HashSet<PathBuf>,
    /// Symbolic links created: no later entry may go through one, or a link to
    /// a directory could carry a lexically "inside" target outside.
    links: HashSet<PathBuf>,
    out: Extracted,
    entries: u64,
}

fn unsafe_path(name: &Path, why: &str) -> Error {
    Error::new(
        ErrorKind::UnsafePath,
        format!("archive entry {:?} {why}", name.display().to_string()),
    )
    .hint("the archive is malformed or malicious; nothing was installed")
}

impl<'a> Writer<'a> {
    fn new(dest: &'a Path, mut limits: Limits) -> Writer<'a> {
        // The size limit is also the free space (less what is kept free), so a
        // decompression bomb stops before the disk is full, not at 4 GiB.
        let mut free = None;
        if let Ok(st) = rustix::fs::statvfs(dest) {
            let avail = st.f_bavail.saturating_mul(st.f_frsize);
            let room = avail.saturating_sub(KEEP_FREE);
            if room < limits.max_bytes {
                limits.max_bytes = room;
                free = Some(avail);
            }
        }
        Writer {
            dest,
            limits,
            free,
            seen: HashSet::new(),
            files: HashSet::new(),
            links: HashSet::new(),
            out: Extracted::default(),
            entries: 0,
        }
    }

    /// Count one more entry against the limit.
    fn count(&mut self) -> Result<()> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!("archive has more than {} entries", self.limits.max_entries),
            )
            .hint("the archive is malformed or malicious; nothing was installed"));
        }
        Ok(())
    }

    fn claim(&mut self, name: &Path) -> Result<PathBuf> {
        self.count()?;
        let rel = safe_relative(name).map_err(|why| unsafe_path(name, why))?;
        self.not_through_link(name, &rel)?;
        if !self.seen.insert(rel.clone()) {
            return Err(unsafe_path(name, "appears twice"));
        }
        Ok(rel)
    }

    fn not_through_link(&self, name: &Path, rel: &Path) -> Result<()> {
        if rel.ancestors().skip(1).any(|a| self.links.contains(a)) {
            return Err(unsafe_path(
                name,
                "goes through a symbolic link in the archive",
            ));
        }
        Ok(())
    }

    fn parent(&self, rel: &Path) -> Result<()> {
        if let Some(p) = rel.parent() {
            let full = self.dest.join(p);
            fs::create_dir_all(&full)
                .map_err(|e| Error::io("cannot create a directory", &full, e))?;
        }
        Ok(())
    }

    fn dir(&mut self, name: &Path) -> Result<()> {
        self.count()?;
        let rel = safe_relative(name).map_err(|why| unsafe_path(name, why))?;
        self.not_through_link(name, &rel)?;
        if self.links.contains(&rel) {
            return Err(unsafe_path(name, "is a directory over a symbolic link"));
        }
        let full = self.dest.join(&rel);
        fs::create_dir_all(&full).map_err(|e| Error::io("cannot create a directory", &full, e))
    }

    fn file(&mut self, name: &Path, executable: bool, mut data: impl Read) -> Result<()> {
        let rel = self.claim(name)?;
        self.parent(&rel)?;
        let full = self.dest.join(&rel);
        let mode = if executable { 0o755 } else { 0o644 };
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&full)
            .map_err(|e| Error::io("cannot create a file", &full, e))?;
        let room = self.limits.max_bytes.saturating_sub(self.out.bytes);
        // Copy at most one byte past the room: enough to know it overflows.
        let n = io::copy(&mut (&mut data).take(room.saturating_add(1)), &mut f)
            .map_err(|e| bad_archive(name, e))?;
        if n > room {
            let e = match self.free {
                Some(free) => Error::new(
                    ErrorKind::TooLarge,
                    format!(
                        "archive expands beyond the free space: {free} bytes free where it is extracted, {KEEP_FREE} of them kept free"
                    ),
                )
                .with("dir", self.dest.display())
                .hint("free some space (or move the data dir), or the archive is a decompression bomb; nothing was installed"),
                None => Error::new(
                    ErrorKind::TooLarge,
                    format!("archive expands beyond {} bytes", self.limits.max_bytes),
                )
                .hint("the archive is malformed or malicious (a decompression bomb?); nothing was installed"),
            };
            return Err(e.with("entry", name.display()));
        }
        f.flush()
            .map_err(|e| Error::io("cannot write a file", &full, e))?;
        self.out.bytes += n;
        self.out.files += 1;
        self.files.insert(rel);
        Ok(())
    }

    fn symlink(&mut self, name: &Path, target: &Path) -> Result<()> {
        let rel = self.claim(name)?;
        if link_target_inside(&rel, target).is_none() {
            return Err(Error::new(
                ErrorKind::LinkOutside,
                format!(
                    "archive link {:?} points outside the install ({:?})",
                    name.display().to_string(),
                    target.display().to_string()
                ),
            )
            .hint("the archive is malformed or malicious; nothing was installed"));
        }
        self.parent(&rel)?;
        let full = self.dest.join(&rel);
        std::os::unix::fs::symlink(target, &full)
            .map_err(|e| Error::io("cannot create a link", &full, e))?;
        self.links.insert(rel);
        Ok(())
    }

    fn hardlink(&mut self, name: &Path, target: &Path) -> Result<()> {
        let rel = self.claim(name)?;
        let to = safe_relative(target)
            .ok()
            .filter(|t| self.files.contains(t))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::LinkOutside,
                    format!(
                        "archive hard link {:?} does not point at a file extracted before ({:?})",
                        name.display().to_string(),
                        target.display().to_string()
                    ),
                )
                .hint("the archive is malformed or malicious; nothing was installed")
            })?;
        self.parent(&rel)?;
        let full = self.dest.join(&rel);
        fs::hard_link(self.dest.join(&to), &full)
            .map_err(|e| Error::io("cannot create a hard link", &full, e))
    }
}

fn bad_archive(name: &Path, e: io::Error) -> Error {
    Error::new(
        ErrorKind::BadArchive,
        format!(
            "cannot read archive entry {:?}: {e}",
            name.display().to_string()
        ),
    )
    .hint("the download is corrupt or not the format its name says")
}

fn special(name: &Path, what: &str) -> Error {
    Error::new(
        ErrorKind::SpecialFile,
        format!("archive entry {:?} is a {what}", name.display().to_string()),
    )
    .hint("release archives hold files, directories and links only; nothing was installed")
}

/// Extract `archive` (of `format`) into `dest`, which must exist and be empty.
/// For [`Format::Plain`], the file is copied to `dest/plain_name`, executable.
/// Blocking: run it off the async threads.
pub fn extract(
    archive: &Path,
    format: Format,
    dest: &Path,
    plain_name: &str,
    limits: Limits,
) -> Result<Extracted> {
    let open = || File::open(archive).map_err(|e| Error::io("cannot open the archive", archive, e));
    let mut w = Writer::new(dest, limits);
    match format {
        Format::Plain => {
            let f = open()?;
            w.file(Path::new(plain_name), true, io::BufReader::new(f))?;
        }
        Format::Tar => untar(&mut w, open()?)?,
        Format::TarGz => untar(
            &mut w,
            flate2::read::GzDecoder::new(io::BufReader::new(open()?)),
        )?,
        Format::TarXz => untar(
            &mut w,
            lzma_rust2::XzReader::new(io::BufReader::new(open()?), true),
        )?,
        Format::Zip => unzip(&mut w, open()?)?,
    }
    Ok(w.out)
}

fn untar(w: &mut Writer<'_>, r: impl Read) -> Result<()> {
    use tar::EntryType;
    let mut ar = tar::Archive::new(r);
    let entries = ar
        .entries()
        .map_err(|e| bad_archive(Path::new("(archive)"), e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad_archive(Path::new("(archive)"), e))?;
        let name = entry
            .path()
            .map_err(|e| bad_archive(Path::new("(entry name)"), e))?
            .into_owned();
        let kind = entry.header().entry_type();
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                let mode = entry.header().mode().unwrap_or(0o644);
                w.file(&name, mode & 0o111 != 0, &mut entry)?;
            }
            EntryType::Directory => w.dir(&name)?,
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| bad_archive(&name, e))?
                    .ok_or_else(|| {
                        bad_archive(&name, io::Error::other("symlink without a target"))
                    })?
                    .into_owned();
                w.symlink(&name, &target)?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| bad_archive(&name, e))?
                    .ok_or_else(|| {
                        bad_archive(&name, io::Error::other("hard link without a target"))
                    })?
                    .into_owned();
                w.hardlink(&name, &target)?;
            }
            EntryType::Char => return Err(special(&name, "character device")),
            EntryType::Block => return Err(special(&name, "block device")),
            EntryType::Fifo => return Err(special(&name, "FIFO")),
            // Metadata entries (pax, GNU long names) are consumed by the tar crate;
            // anything else unknown is refused rather than guessed at.
            EntryType::XGlobalHeader
            | EntryType::XHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink => {}
            other => return Err(special(&name, &format!("tar entry of type {other:?}"))),
        }
    }
    Ok(())
}

fn unzip(w: &mut Writer<'_>, f: File) -> Result<()> {
    let zerr = |e: zip::result::ZipError| {
        Error::new(
            ErrorKind::BadArchive,
            format!("cannot read the zip archive: {e}"),
        )
        .hint("the download is corrupt or not a zip file")
    };
    let mut z = zip::ZipArchive::new(io::BufReader::new(f)).map_err(zerr)?;
    for i in 0..z.len() {
        let mut file = z.by_index(i).map_err(zerr)?;
        let raw = PathBuf::from(file.name().map_err(zerr)?.into_owned());
        // enclosed_name() is the zip crate's own check; ours runs as well.
        if file.enclosed_name().is_none() {
            return Err(unsafe_path(&raw, "leaves the install directory"));
        }
        let mode = file.unix_mode().unwrap_or(0o644);
        if file.is_dir() {
            w.dir(&raw)?;
        } else if file.is_symlink() {
            let mut target = String::new();
            (&mut file)
                .take(4096)
                .read_to_string(&mut target)
                .map_err(|e| bad_archive(&raw, e))?;
            w.symlink(&raw, Path::new(&target))?;
        } else if mode & 0o170000 != 0 && mode & 0o170000 != 0o100000 {
            return Err(special(&raw, "special file"));
        } else {
            w.file(&raw, mode & 0o111 != 0, &mut file)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(
            safe_relative(Path::new("./a/b")).unwrap(),
            PathBuf::from("a/b")
        );
        assert!(safe_relative(Path::new("/etc/passwd")).is_err());
        assert!(safe_relative(Path::new("a/../../b")).is_err());
        assert!(safe_relative(Path::new(".")).is_err());
    }

    #[test]
    fn link_targets() {
        let l = |a: &str, b: &str| link_target_inside(Path::new(a), Path::new(b));
        assert_eq!(
            l("bin/tool", "../lib/tool"),
            Some(PathBuf::from("lib/tool"))
        );
        assert_eq!(l("tool", "tool-1.2"), Some(PathBuf::from("tool-1.2")));
        assert_eq!(l("tool", "../etc/passwd"), None);
        assert_eq!(l("a/b/c", "../../../x"), None);
        assert_eq!(l("a", "/etc/passwd"), None);
        // `x/..` follows `x`, which may be a link: refused after a name.
        assert_eq!(l("a/b/c", "d/../../x"), None);
        assert_eq!(l("a/b/c", "../x/./y"), Some(PathBuf::from("a/x/y")));
    }

    #[test]
    fn formats_by_name() {
        assert_eq!(Format::from_name("x-1.0-linux-amd64.tar.gz"), Format::TarGz);
        assert_eq!(Format::from_name("x.TGZ"), Format::TarGz);
        assert_eq!(Format::from_name("x.tar.xz"), Format::TarXz);
        assert_eq!(Format::from_name("x.zip"), Format::Zip);
        assert_eq!(Format::from_name("x-linux-amd64"), Format::Plain);
    }
}
