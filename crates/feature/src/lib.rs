//! `hangar_feature`: what a feature is, before anything runs.
//!
//! - [`catalog`]: manifests (JSON or YAML, checked against the JSON Schema and
//!   semantic rules), catalogs of them, and release resolution: which asset,
//!   checksum and signature to download for a version and platform, and the
//!   one install policy ([`catalog::install`]) the daemon and the CLI share.
//! - [`configgen`]: the option schema (every problem reported at once),
//!   config generators (tor, xray, sing-box, templates), staging and atomic
//!   commit, and the feature's own checker run before a config is accepted.
//!
//! It knows nothing of processes being supervised, instances or the daemon.
#![deny(missing_docs)]

pub mod catalog;
pub mod configgen;
mod error;

pub use error::{Category, Coded, Error, ErrorKind, Result};
