//! `hangar_fetch`: turn a URL into a verified install on disk.
//!
//! - [`Downloader`] fetches over HTTPS (plain HTTP only to loopback or when
//!   allowed) or from `file://`, resumes with `Range` after an interruption,
//!   retries transient failures with backoff, reports [`Progress`] at most every
//!   100 ms, and hashes (SHA-256) on a blocking thread as the bytes arrive.
//! - [`verify`] checks the digest against the manifest's or a GNU `sha256sum`
//!   checksums file in constant time, and minisign signatures.
//! - [`extract`] unpacks `.tar.gz`, `.tar.xz`, `.zip` or a plain binary into a
//!   staging directory, refusing path traversal, links out, special files and
//!   archive bombs.
//! - [`Installer`] ties them together: `{root}/{id}/{version}/` moved in with
//!   one rename, a `current` link switched atomically, one install per feature
//!   at a time, uninstall refused while a process runs the version.
//!
//! It knows nothing of manifests or catalogs: the caller resolves those into an
//! [`InstallRequest`].
//!
//! ```no_run
//! # async fn demo() -> hangar_fetch::Result<()> {
//! use hangar_fetch::{Checksum, DownloadOptions, Downloader, InstallRequest, Installer};
//! let installer = Installer::new("/var/lib/hangar/features", Downloader::new(DownloadOptions::default())?);
//! let done = installer
//!     .install(
//!         InstallRequest {
//!             id: "demo".into(),
//!             version: "1.0.0".into(),
//!             url: "https://example.com/demo-1.0.0-linux-amd64.tar.gz".into(),
//!             asset: "demo-1.0.0-linux-amd64.tar.gz".into(),
//!             checksum: Some(Checksum::File("https://example.com/checksums.txt".into())),
//!             signature: None,
//!             binary: "demo".into(),
//!         },
//!         &|step| println!("{step:?}"),
//!     )
//!     .await?;
//! println!("installed {}", done.binary.display());
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod download;
mod error;
pub mod extract;
mod install;
pub mod verify;

pub use download::{check_url, is_loopback, DownloadOptions, Downloaded, Downloader, Progress};
pub use error::{Error, ErrorKind, Result};
pub use install::{
    check_name, version_cmp, Checksum, InstallRequest, Installed, Installer, Signature,
    SignedChecksums, Step,
};
