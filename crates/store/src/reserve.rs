//! [`Reserve`]: disk space set aside beside the database, so that when the disk
//! fills, the store can still record that it did.
//!
//! At open, `hangar.db-reserve` is allocated with real blocks (`fallocate`, not
//! a sparse file). A write that fails because the disk is full deletes it and
//! is tried once more: the freed space lets that write, and the daemon's record
//! of the full disk, through. The reserve is made again once the file system
//! has room for twice its size.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::FallocateFlags;
use rustix::io::Errno;

/// Bytes set aside: room for thousands of events and the records that change
/// with them.
pub const RESERVE_BYTES: u64 = 4 << 20;

/// The reserve file of one store.
#[derive(Debug)]
pub(crate) struct Reserve {
    path: PathBuf,
    /// The file exists at its full size.
    held: AtomicBool,
    /// Released since the last [`Reserve::take_released`].
    released: AtomicBool,
}

impl Reserve {
    /// The reserve of the database at `db`, made now if there is room (a
    /// disk already full leaves the store without one until there is).
    pub(crate) fn open(db: &Path) -> Reserve {
        let mut name = db.as_os_str().to_owned();
        name.push("-reserve");
        let r = Reserve {
            path: PathBuf::from(name),
            held: AtomicBool::new(false),
            released: AtomicBool::new(false),
        };
        if r.make().is_ok() {
            r.held.store(true, Ordering::SeqCst);
        }
        r
    }

    /// Whether the reserve is on disk.
    pub(crate) fn held(&self) -> bool {
        self.held.load(Ordering::SeqCst)
    }

    /// Delete the reserve to free its space; `true` when it was held (the
    /// caller may try its write again).
    pub(crate) fn release(&self) -> bool {
        if !self.held.swap(false, Ordering::SeqCst) {
            return false;
        }
        let _ = std::fs::remove_file(&self.path);
        self.released.store(true, Ordering::SeqCst);
        true
    }

    /// `true` once after each release.
    pub(crate) fn take_released(&self) -> bool {
        self.released.swap(false, Ordering::SeqCst)
    }

    /// Make the reserve again when the file system has room for twice its
    /// size; `true` when it is held afterwards.
    pub(crate) fn restore(&self) -> bool {
        if self.held() {
            return true;
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let room = rustix::fs::statvfs(dir)
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
            .unwrap_or(0);
        if room < 2 * RESERVE_BYTES || self.make().is_err() {
            return false;
        }
        self.held.store(true, Ordering::SeqCst);
        true
    }

    /// Allocate the file at full size; a file that could not be is removed.
    fn make(&self) -> io::Result<()> {
        let made = (|| {
            let f: File = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&self.path)?;
            let meta = f.metadata()?;
            if meta.len() == RESERVE_BYTES && meta.blocks() * 512 >= RESERVE_BYTES {
                return Ok(());
            }
            match rustix::fs::fallocate(&f, FallocateFlags::empty(), 0, RESERVE_BYTES) {
                Ok(()) => Ok(()),
                Err(e) if e == Errno::OPNOTSUPP => write_zeros(f),
                Err(e) => Err(e.into()),
            }
        })();
        if made.is_err() {
            let _ = std::fs::remove_file(&self.path);
        }
        made
    }
}

/// Where `fallocate` is not supported: write the blocks.
fn write_zeros(mut f: File) -> io::Result<()> {
    use std::io::Write;
    let chunk = vec![0u8; 64 << 10];
    let mut left = RESERVE_BYTES;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_allocated_released_once_and_restored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("hangar.db");
        let r = Reserve::open(&db);
        let file = dir.path().join("hangar.db-reserve");
        let meta = std::fs::metadata(&file).expect("reserve made");
        assert_eq!(meta.len(), RESERVE_BYTES);
        // Real blocks, not a sparse file: deleting it frees space.
        assert!(meta.blocks() * 512 >= RESERVE_BYTES);
        assert!(r.held());
        assert!(!r.take_released());
        assert!(r.release());
        assert!(!file.exists());
        assert!(!r.release(), "released twice");
        assert!(r.take_released());
        assert!(!r.take_released(), "reported once");
        assert!(r.restore());
        assert!(r.held());
        assert_eq!(
            std::fs::metadata(&file).expect("remade").len(),
            RESERVE_BYTES
        );
        // A second store on the same file keeps the one reserve.
        let again = Reserve::open(&db);
        assert!(again.held());
        assert_eq!(std::fs::metadata(&file).expect("kept").len(), RESERVE_BYTES);
    }
}
