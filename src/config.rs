//! The validated configuration, and how it is loaded.
//!
//! Sources, lowest to highest: built-in defaults < the TOML file <
//! environment variables < command-line flags. Every key is listed in
//! [`keys`] with its environment variable. Loading checks everything in one
//! pass and reports every error with its dotted key, so `check-config` and
//! `serve` agree and a user fixes a file in one round.

pub mod env;
pub mod keys;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use crate::event::checkpoint::{public_key_text, CheckpointSigner};
use crate::event::Level;
use crate::policy::PolicySet;

pub use env::{EnvSource, ProcessEnv};

/// Everything `serve` and the offline commands need, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub proxy: ProxyConfig,
    pub capture: CaptureConfig,
    pub admin: AdminConfig,
    pub audit: AuditConfig,
    pub queue: QueueConfig,
    pub instance: InstanceConfig,
    pub log: LogConfig,
    /// Where events are shipped besides the local store; off by default.
    pub shipping: ShippingConfig,
    /// Compliance policies from `policy_packs` and `[[policies]]`, plus the
    /// always-on secret detectors.
    pub policies: Arc<PolicySet>,
    pub inspection: InspectionConfig,
}

/// How much of an answer `block` policies may hold to inspect it.
#[derive(Debug, Clone)]
pub struct InspectionConfig {
    /// Most bytes of a request body, or of a non-streamed answer, read (and
    /// decoded) to inspect it whole while a `block` policy watches that
    /// direction; a longer one, or one that cannot be decoded, is refused
    /// (413/415 for requests, 502 for answers), never forwarded unchecked.
    /// At least `capture.max_body_bytes`.
    pub max_inspected_bytes: usize,
}

/// Default of `policy.max_inspected_bytes`: 8 MiB, well above the capture
/// cap's default and above any chat completion.
pub const DEFAULT_MAX_INSPECTED_BYTES: usize = 8 * 1024 * 1024;

/// Where this proxy runs (from the Kubernetes Downward API); recorded in
/// every event's metadata as `source` when any is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceConfig {
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
    pub node_name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub listen: SocketAddr,
    pub upstream: Upstream,
    /// Overrides the provider name derived from the upstream host.
    pub provider: Option<String>,
    /// Until upstream's response headers arrive.
    pub upstream_timeout: Duration,
    /// Longest silence between two chunks of a response body.
    pub stream_idle_timeout: Duration,
    /// How long in-flight calls may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Extra PEM CA certificates trusted for the upstream, besides the
    /// built-in web roots.
    pub ca_bundle: Option<PathBuf>,
    /// Most app connections open at once; further ones wait in the
    /// kernel's accept queue. Separate from the admin listener's cap, so
    /// admin load never stops app traffic.
    pub max_connections: usize,
}

/// The upstream base URL, split for request building.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// Path prefix without a trailing slash ("" for none).
    pub path_prefix: String,
}

#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// Bytes of each body copied for the event; the rest is forwarded and
    /// counted, not kept.
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Tokens with both scopes (`admin.tokens`).
    pub tokens: Vec<Secret>,
    /// Tokens that may read: query, export, verify, stats
    /// (`admin.read_tokens`, plus `read` lines of `admin.tokens_file`).
    pub read_tokens: Vec<Secret>,
    /// Tokens that may post custom events, and nothing else
    /// (`admin.write_tokens`, plus `write` lines of `admin.tokens_file`).
    pub write_tokens: Vec<Secret>,
    /// Most admin connections open at once; further ones wait in the
    /// kernel's accept queue.
    pub max_connections: usize,
    /// Longest a client may take to send a request head.
    pub header_read_timeout: Duration,
    /// A connection with no bytes moving either way for this long is
    /// closed.
    pub idle_timeout: Duration,
    /// Refused admin calls from one client within this interval are
    /// recorded as one AUTHENTICATION event with a count.
    pub refusal_interval: Duration,
    /// Most bytes of events in one `/api/events` page; a page stops early
    /// once it passes this, and `next_cursor` continues from there.
    pub page_max_bytes: usize,
}

// === impl AdminConfig ===

impl AdminConfig {
    /// Whether any token of any scope is configured (the API then requires
    /// one).
    pub fn has_tokens(&self) -> bool {
        !(self.tokens.is_empty() && self.read_tokens.is_empty() && self.write_tokens.is_empty())
    }
}

#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub enabled: bool,
    pub log_level: Level,
    pub storage: StorageKind,
    pub file_path: PathBuf,
    pub file_rotation: Rotation,
    pub retention_days: u32,
    pub memory_limit: usize,
    pub max_store_mb: u64,
    pub on_store_failure: FailMode,
    /// When a call's REQUEST must be on disk (`audit.durability`).
    pub durability: Durability,
    /// How hard the SQLite store syncs each commit (`audit.sqlite_synchronous`).
    pub sqlite_synchronous: SqliteSynchronous,
    /// Keep the console's search index in the SQLite store
    /// (`audit.sqlite_search_index`).
    pub sqlite_search_index: bool,
    /// Record one COMPLIANCE_CHECK per call and direction listing the
    /// policies that passed (violations are always recorded).
    pub record_compliance_checks: bool,
    /// The key checkpoints are signed with (`audit.signing_key_file` or
    /// `audit.signing_key`); `None` writes no checkpoints.
    pub signing_key: Option<CheckpointSigner>,
    /// A checkpoint after this many events.
    pub checkpoint_every_events: u64,
    /// A checkpoint at least this often, written even when idle.
    pub checkpoint_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub capacity: usize,
    pub max_batch: usize,
    /// Shortest time between two store writes while events keep coming.
    pub commit_interval: Duration,
    /// Bytes of queued events (their metadata and message) before offers
    /// are dropped, so a stalled store cannot grow memory past a limit.
    pub max_bytes: u64,
    /// Longest a new call waits for room while the queue is full, before
    /// `fail_open` serves it anyway or `fail_closed` refuses it; zero
    /// never waits.
    pub full_wait: Duration,
}

/// Central targets the local store's events are shipped to, at least once,
/// in `seq` order (`[shipping]`). No target means no shipping.
#[derive(Debug, Clone, Default)]
pub struct ShippingConfig {
    /// The PostgreSQL target (`shipping.postgres_dsn` or
    /// `shipping.postgres_dsn_file`), when set.
    pub postgres: Option<PostgresTarget>,
    /// Events read from the local store and written per batch.
    pub batch_size: usize,
    /// How often a caught-up shipper looks for new events.
    pub poll_interval: Duration,
    /// The longest wait between two tries after a failure.
    pub max_backoff: Duration,
    /// Monthly partitions of the central table wholly older than this many
    /// days are dropped (0: kept for ever).
    pub central_retention_days: u32,
    /// The HTTP target (`shipping.http_url` with its token), when set.
    pub http: Option<HttpTarget>,
}

/// An HTTP endpoint that takes batches of events as gzip-compressed NDJSON.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    /// `http://` or `https://`, where each batch is POSTed.
    pub url: http::Uri,
    /// The bearer token (`shipping.http_token` or `shipping.http_token_file`).
    pub token: Secret,
    /// The longest one POST may take (`shipping.http_timeout_secs`).
    pub timeout: Duration,
}

/// A PostgreSQL database events are shipped to.
#[derive(Debug, Clone)]
pub struct PostgresTarget {
    /// The connection string (URL or `key=value` form). It carries the
    /// password, so it is a [`Secret`]: never logged nor recorded.
    pub dsn: Secret,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageKind {
    Memory,
    File,
    Sqlite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    Hourly,
    Daily,
    Weekly,
}

/// What the proxy does with LLM calls while the store cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Keep serving; count and report the events that could not be stored.
    FailOpen,
    /// Refuse new calls with 503 until the store accepts writes again.
    FailClosed,
}

/// When a call's REQUEST is committed relative to forwarding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Events are queued and written in the background: the call never
    /// waits on the store.
    Buffered,
    /// The REQUEST is committed to the store before the call is forwarded
    /// upstream; a call whose REQUEST cannot be committed is refused.
    Strict,
}

/// SQLite's `synchronous` setting for the store's writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqliteSynchronous {
    /// Commits survive a crash of the process; a power loss may lose the
    /// last commits (never corrupts the file).
    Normal,
    /// Every commit is synced to disk before it returns: it survives a
    /// power loss too.
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// A credential from the configuration: never printed, never serialised.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// Where a configuration value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(PathBuf),
    Env(&'static str),
    Flag(&'static str),
}

/// One problem with the configuration, naming its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
    pub origin: Origin,
}

/// Every problem found in one load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// Values given on the command line, by key name (see [`keys`]).
pub type FlagValues = BTreeMap<&'static str, String>;

/// Loads the configuration from `file` (if any), `env` and `flags`.
pub fn load(
    file: Option<&Path>,
    env: &dyn EnvSource,
    flags: &FlagValues,
) -> Result<Config, ConfigErrors> {
    validate::load(file, env, flags)
}

/// Checks a file alone (with the environment and no flags), as
/// `check-config` does.
pub fn check_file(file: &Path, env: &dyn EnvSource) -> Result<Config, ConfigErrors> {
    validate::load(Some(file), env, &FlagValues::new())
}

// === impl Config ===

impl Config {
    /// The effective configuration as JSON with credentials masked, for the
    /// CONFIGURATION event.
    pub fn to_masked_json(&self) -> serde_json::Value {
        use serde_json::json;
        json!({
            "proxy": {
                "listen": self.proxy.listen.to_string(),
                "upstream": self.proxy.upstream.to_string(),
                "provider": self.proxy.provider,
                "upstream_timeout_secs": self.proxy.upstream_timeout.as_secs_f64(),
                "stream_idle_timeout_secs": self.proxy.stream_idle_timeout.as_secs_f64(),
                "shutdown_grace_secs": self.proxy.shutdown_grace.as_secs_f64(),
                "ca_bundle": self.proxy.ca_bundle.as_ref().map(|p| p.display().to_string()),
                "max_connections": self.proxy.max_connections,
            },
            "capture": {"max_body_bytes": self.capture.max_body_bytes},
            "admin": {
                "listen": self.admin.listen.to_string(),
                "tokens": self.admin.tokens.iter().map(|_| "[MASKED]").collect::<Vec<_>>(),
                "read_tokens": self.admin.read_tokens.iter().map(|_| "[MASKED]").collect::<Vec<_>>(),
                "write_tokens": self.admin.write_tokens.iter().map(|_| "[MASKED]").collect::<Vec<_>>(),
                "max_connections": self.admin.max_connections,
                "header_read_timeout_secs": self.admin.header_read_timeout.as_secs_f64(),
                "idle_timeout_secs": self.admin.idle_timeout.as_secs_f64(),
                "refusal_interval_secs": self.admin.refusal_interval.as_secs_f64(),
                "page_max_bytes": self.admin.page_max_bytes,
            },
            "audit": {
                "enabled": self.audit.enabled,
                "log_level": self.audit.log_level.as_str(),
                "storage": self.audit.storage.as_str(),
                "file_path": self.audit.file_path.display().to_string(),
                "file_rotation": self.audit.file_rotation.as_str(),
                "retention_days": self.audit.retention_days,
                "memory_limit": self.audit.memory_limit,
                "max_store_mb": self.audit.max_store_mb,
                "on_store_failure": self.audit.on_store_failure.as_str(),
                "signing_key": self.audit.signing_key.as_ref().map(|k| json!({
                    "key_id": k.key_id(),
                    "public_key": public_key_text(&k.public_key()),
                })),
                "checkpoint_every_events": self.audit.checkpoint_every_events,
                "checkpoint_interval_secs": self.audit.checkpoint_interval.as_secs_f64(),
                "durability": self.audit.durability.as_str(),
                "sqlite_synchronous": self.audit.sqlite_synchronous.as_str(),
                "sqlite_search_index": self.audit.sqlite_search_index,
            },
            "queue": {
                "capacity": self.queue.capacity,
                "max_batch": self.queue.max_batch,
                "commit_interval_ms": self.queue.commit_interval.as_millis() as u64,
                "max_bytes": self.queue.max_bytes,
                "full_wait_ms": self.queue.full_wait.as_millis() as u64,
            },
            "instance": {
                "pod_name": self.instance.pod_name,
                "pod_namespace": self.instance.pod_namespace,
                "node_name": self.instance.node_name,
            },
            "log": {"format": self.log.format.as_str()},
            "shipping": {
                "postgres_dsn": self.shipping.postgres.as_ref().map(|_| "[MASKED]"),
                "batch_size": self.shipping.batch_size,
                "poll_interval_ms": self.shipping.poll_interval.as_millis() as u64,
                "max_backoff_secs": self.shipping.max_backoff.as_secs_f64(),
                "central_retention_days": self.shipping.central_retention_days,
                "http_url": self.shipping.http.as_ref().map(|h| h.url.to_string()),
                "http_token": self.shipping.http.as_ref().map(|_| "[MASKED]"),
            },
            "policies": self.policies.policies().iter().map(|p| json!({
                "name": p.name(),
                "action": p.action().as_str(),
                "severity": p.severity().as_str(),
                "redact_upstream": p.redact_upstream(),
                "keep_matches": p.keep_matches(),
            })).collect::<Vec<_>>(),
        })
    }
}

// === impl ShippingConfig ===

impl ShippingConfig {
    /// Whether any target is configured.
    pub fn is_enabled(&self) -> bool {
        self.postgres.is_some() || self.http.is_some()
    }

    /// The names of the configured targets (their cursors' keys).
    pub fn target_names(&self) -> Vec<&'static str> {
        let postgres = self.postgres.iter().map(|_| "postgres");
        postgres.chain(self.http.iter().map(|_| "http")).collect()
    }
}

// === impl InstanceConfig ===

impl InstanceConfig {
    /// The `source` object events carry, or `None` when nothing is set.
    pub fn source(&self) -> Option<serde_json::Value> {
        let mut source = serde_json::Map::new();
        for (key, value) in [
            ("pod", &self.pod_name),
            ("namespace", &self.pod_namespace),
            ("node", &self.node_name),
        ] {
            if let Some(v) = value {
                source.insert(key.to_owned(), serde_json::Value::String(v.clone()));
            }
        }
        (!source.is_empty()).then_some(serde_json::Value::Object(source))
    }
}

// === impl Upstream ===

impl Upstream {
    /// The upstream URI for an incoming `path_and_query`.
    pub fn uri_for(&self, path_and_query: &str) -> Result<http::Uri, http::Error> {
        let pq = if path_and_query.is_empty() {
            "/"
        } else {
            path_and_query
        };
        http::Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query({
                // One allocation of the exact size, once per call.
                let mut joined = String::with_capacity(self.path_prefix.len() + pq.len());
                joined.push_str(&self.path_prefix);
                joined.push_str(pq);
                joined
            })
            .build()
    }

    pub fn host(&self) -> &str {
        self.authority.host()
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme, self.authority, self.path_prefix
        )
    }
}

// === impl Secret ===

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([MASKED])")
    }
}

// === impl StorageKind, Rotation, FailMode, LogFormat ===

impl StorageKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            StorageKind::Memory => "memory",
            StorageKind::File => "file",
            StorageKind::Sqlite => "sqlite",
        }
    }
}

impl Rotation {
    pub fn as_str(&self) -> &'static str {
        match self {
            Rotation::Hourly => "hourly",
            Rotation::Daily => "daily",
            Rotation::Weekly => "weekly",
        }
    }
}

impl Durability {
    pub fn as_str(&self) -> &'static str {
        match self {
            Durability::Buffered => "buffered",
            Durability::Strict => "strict",
        }
    }
}

impl SqliteSynchronous {
    pub fn as_str(&self) -> &'static str {
        match self {
            SqliteSynchronous::Normal => "normal",
            SqliteSynchronous::Full => "full",
        }
    }
}

impl FailMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            FailMode::FailOpen => "fail_open",
            FailMode::FailClosed => "fail_closed",
        }
    }
}

impl LogFormat {
    pub fn as_str(&self) -> &'static str {
        match self {
            LogFormat::Json => "json",
            LogFormat::Text => "text",
        }
    }
}

// === impl ConfigError ===

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)?;
        match &self.origin {
            Origin::Default => Ok(()),
            Origin::File(p) => write!(f, " (in {})", p.display()),
            Origin::Env(name) => write!(f, " (from environment variable {name})"),
            Origin::Flag(flag) => write!(f, " (from flag {flag})"),
        }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
