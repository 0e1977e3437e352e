//! exec transport (in progress).
