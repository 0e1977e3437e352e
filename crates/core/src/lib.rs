//! placeholder
pub mod procfile;
