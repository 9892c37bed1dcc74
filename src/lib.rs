//! llm-audit-proxy: an audit sidecar for OpenAI-compatible LLM APIs.
//!
//! Data flow: the [`proxy`] accepts the app's call, keeps or assigns its
//! request id, names the operation and forwards it upstream, teeing request
//! and response bodies through [`capture`] without holding back a byte. When
//! a body ends, fails or is dropped, the captured copy is decoded, parsed
//! (JSON or SSE), sanitised and turned into REQUEST, RESPONSE and ERROR
//! events by the [`pipeline`], which offers them to a bounded queue. A single
//! writer stamps `seq` and the hash chain ([`event::chain`]), signs
//! checkpoints over it when a key is configured ([`event::checkpoint`]), and
//! appends batches to the configured [`store`]. The [`admin`] listener queries and
//! exports through the same store interface, as do the [`offline`]
//! commands. Compliance [`policy`] decisions that must hold a call back
//! (request `block`, `redact_upstream`, response `block`) run in the proxy;
//! everything else is recorded after the fact. [`config`] loads and checks
//! the settings, [`app`] starts and stops the parts in order, and
//! [`telemetry`] carries diagnostics and metrics. Each [`listener`] has its
//! own connection cap, so admin load never stops app traffic. Shipping
//! targets copy the store's events to a central PostgreSQL, which the
//! [`fleet`] admin serves through the same admin API.

pub mod admin;
pub mod app;
pub mod capture;
pub mod cli;
pub mod config;
pub mod event;
pub mod fleet;
pub mod listener;
pub mod offline;
pub mod pipeline;
pub mod policy;
pub mod proxy;
pub mod readiness;
pub mod store;
pub mod telemetry;
