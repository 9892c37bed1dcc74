//! What the proxy keeps of a call's bodies, and how it makes them safe to
//! store: naming the operation from the request line, undoing
//! `Content-Encoding`, reassembling Server-Sent Event streams into the object
//! the same call returns without streaming, summarising usage, turning raw
//! bytes into an event value, and redacting credentials and secret-shaped
//! strings. Everything but [`tee`] (the body wrapper that makes the copy) is
//! pure: no I/O, no async, no clock.

pub mod body;
pub mod bounded;
pub mod decode;
pub mod json_view;
pub mod operation;
pub mod recorded_headers;
pub mod sanitize;
pub mod short_text;
pub mod sse;
pub mod stored_body;
pub mod summary;
pub mod tee;
