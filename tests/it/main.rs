//! Integration tests: the real server in-process (and the real binary where
//! the process itself matters) against a mock upstream on loopback.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "test code: a failed step should stop the test loudly"
)]

mod support;

mod admin_api;
mod backpressure;
mod binary;
mod central;
mod central_fleet;
mod central_http;
mod central_origin;
mod console;
mod console_browser;
mod durability;
mod evidence;
mod hardening;
mod leaks;
mod manifests;
mod offline;
mod policies;
mod policy_cli;
mod proxy_calls;
mod record_golden;
mod scenarios;
mod sdk;
mod stored_bodies;
