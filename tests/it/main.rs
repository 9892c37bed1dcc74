//! Integration tests: the real server in-process (and the real binary where
//! the process itself matters) against a mock upstream on loopback.

mod support;

mod proxy_calls;
mod sdk;
