//! http transport (in progress).
