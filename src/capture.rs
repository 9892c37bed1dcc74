//! Capturing and interpreting bodies for the audit record.

pub mod tee;
