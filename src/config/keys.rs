//! Every configuration key, with its environment variable and flag.
//!
//! This table is the single list the loader, the unknown-key check and the
//! README's reference are kept in step with.

/// One configuration key.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// Dotted TOML path, e.g. `audit.log_level`.
    pub name: &'static str,
    pub env: &'static str,
    /// The `serve` flag that sets it, if any.
    pub flag: Option<&'static str>,
}

const fn key(name: &'static str, env: &'static str, flag: Option<&'static str>) -> Key {
    Key { name, env, flag }
}

pub const PROXY_LISTEN: Key = key("proxy.listen", "LLM_AUDIT_PROXY_LISTEN", Some("--listen"));
pub const PROXY_UPSTREAM: Key = key(
    "proxy.upstream",
    "LLM_AUDIT_PROXY_UPSTREAM",
    Some("--upstream"),
);
pub const PROXY_PROVIDER: Key = key("proxy.provider", "LLM_AUDIT_PROXY_PROVIDER", None);
pub const PROXY_UPSTREAM_TIMEOUT: Key = key(
    "proxy.upstream_timeout_secs",
    "LLM_AUDIT_PROXY_UPSTREAM_TIMEOUT",
    Some("--upstream-timeout"),
);
pub const PROXY_STREAM_IDLE_TIMEOUT: Key = key(
    "proxy.stream_idle_timeout_secs",
    "LLM_AUDIT_PROXY_STREAM_IDLE_TIMEOUT",
    Some("--stream-idle-timeout"),
);
pub const PROXY_SHUTDOWN_GRACE: Key = key(
    "proxy.shutdown_grace_secs",
    "LLM_AUDIT_PROXY_SHUTDOWN_GRACE",
    Some("--shutdown-grace"),
);
pub const PROXY_CA_BUNDLE: Key = key("proxy.ca_bundle", "LLM_AUDIT_PROXY_CA_BUNDLE", None);
pub const PROXY_MAX_CONNECTIONS: Key = key(
    "proxy.max_connections",
    "LLM_AUDIT_PROXY_MAX_CONNECTIONS",
    None,
);
pub const CAPTURE_MAX_BODY_BYTES: Key = key(
    "capture.max_body_bytes",
    "LLM_AUDIT_PROXY_CAPTURE_MAX_BODY_BYTES",
    None,
);
pub const POLICY_MAX_INSPECTED_BYTES: Key = key(
    "policy.max_inspected_bytes",
    "LLM_AUDIT_PROXY_POLICY_MAX_INSPECTED_BYTES",
    None,
);
pub const ADMIN_LISTEN: Key = key(
    "admin.listen",
    "LLM_AUDIT_PROXY_ADMIN_LISTEN",
    Some("--admin-listen"),
);
pub const ADMIN_TOKENS: Key = key(
    "admin.tokens",
    "LLM_AUDIT_PROXY_ADMIN_TOKEN",
    Some("--admin-token"),
);
pub const ADMIN_READ_TOKENS: Key = key(
    "admin.read_tokens",
    "LLM_AUDIT_PROXY_ADMIN_READ_TOKENS",
    None,
);
pub const ADMIN_WRITE_TOKENS: Key = key(
    "admin.write_tokens",
    "LLM_AUDIT_PROXY_ADMIN_WRITE_TOKENS",
    None,
);
pub const ADMIN_TOKENS_FILE: Key = key(
    "admin.tokens_file",
    "LLM_AUDIT_PROXY_ADMIN_TOKENS_FILE",
    None,
);
pub const ADMIN_MAX_CONNECTIONS: Key = key(
    "admin.max_connections",
    "LLM_AUDIT_PROXY_ADMIN_MAX_CONNECTIONS",
    None,
);
pub const ADMIN_HEADER_READ_TIMEOUT: Key = key(
    "admin.header_read_timeout_secs",
    "LLM_AUDIT_PROXY_ADMIN_HEADER_READ_TIMEOUT",
    None,
);
pub const ADMIN_IDLE_TIMEOUT: Key = key(
    "admin.idle_timeout_secs",
    "LLM_AUDIT_PROXY_ADMIN_IDLE_TIMEOUT",
    None,
);
pub const ADMIN_REFUSAL_INTERVAL: Key = key(
    "admin.refusal_interval_secs",
    "LLM_AUDIT_PROXY_ADMIN_REFUSAL_INTERVAL",
    None,
);
pub const ADMIN_PAGE_MAX_BYTES: Key = key(
    "admin.page_max_bytes",
    "LLM_AUDIT_PROXY_ADMIN_PAGE_MAX_BYTES",
    None,
);
pub const AUDIT_ENABLED: Key = key("audit.enabled", "LLM_AUDIT_PROXY_AUDIT_ENABLED", None);
pub const AUDIT_LOG_LEVEL: Key = key(
    "audit.log_level",
    "LLM_AUDIT_PROXY_LOG_LEVEL",
    Some("--log-level"),
);
pub const AUDIT_STORAGE: Key = key(
    "audit.storage",
    "LLM_AUDIT_PROXY_STORAGE",
    Some("--storage"),
);
pub const AUDIT_FILE_PATH: Key = key(
    "audit.file_path",
    "LLM_AUDIT_PROXY_FILE_PATH",
    Some("--file-path"),
);
pub const AUDIT_FILE_ROTATION: Key =
    key("audit.file_rotation", "LLM_AUDIT_PROXY_FILE_ROTATION", None);
pub const AUDIT_RETENTION_DAYS: Key = key(
    "audit.retention_days",
    "LLM_AUDIT_PROXY_RETENTION_DAYS",
    None,
);
pub const AUDIT_MEMORY_LIMIT: Key = key("audit.memory_limit", "LLM_AUDIT_PROXY_MEMORY_LIMIT", None);
pub const AUDIT_MAX_STORE_MB: Key = key("audit.max_store_mb", "LLM_AUDIT_PROXY_MAX_STORE_MB", None);
pub const AUDIT_ON_STORE_FAILURE: Key = key(
    "audit.on_store_failure",
    "LLM_AUDIT_PROXY_ON_STORE_FAILURE",
    None,
);
pub const AUDIT_SIGNING_KEY_FILE: Key = key(
    "audit.signing_key_file",
    "LLM_AUDIT_PROXY_SIGNING_KEY_FILE",
    None,
);
pub const AUDIT_SIGNING_KEY: Key = key("audit.signing_key", "LLM_AUDIT_PROXY_SIGNING_KEY", None);
pub const AUDIT_CHECKPOINT_EVERY_EVENTS: Key = key(
    "audit.checkpoint_every_events",
    "LLM_AUDIT_PROXY_CHECKPOINT_EVERY_EVENTS",
    None,
);
pub const AUDIT_CHECKPOINT_INTERVAL: Key = key(
    "audit.checkpoint_interval_secs",
    "LLM_AUDIT_PROXY_CHECKPOINT_INTERVAL_SECS",
    None,
);
pub const AUDIT_DURABILITY: Key = key("audit.durability", "LLM_AUDIT_PROXY_DURABILITY", None);
pub const AUDIT_SQLITE_SYNCHRONOUS: Key = key(
    "audit.sqlite_synchronous",
    "LLM_AUDIT_PROXY_SQLITE_SYNCHRONOUS",
    None,
);
pub const AUDIT_SQLITE_SEARCH_INDEX: Key = key(
    "audit.sqlite_search_index",
    "LLM_AUDIT_PROXY_SQLITE_SEARCH_INDEX",
    None,
);
pub const QUEUE_CAPACITY: Key = key("queue.capacity", "LLM_AUDIT_PROXY_QUEUE_CAPACITY", None);
pub const QUEUE_MAX_BATCH: Key = key("queue.max_batch", "LLM_AUDIT_PROXY_QUEUE_MAX_BATCH", None);
pub const QUEUE_COMMIT_INTERVAL_MS: Key = key(
    "queue.commit_interval_ms",
    "LLM_AUDIT_PROXY_QUEUE_COMMIT_INTERVAL_MS",
    None,
);
pub const QUEUE_MAX_BYTES: Key = key("queue.max_bytes", "LLM_AUDIT_PROXY_QUEUE_MAX_BYTES", None);
pub const QUEUE_FULL_WAIT_MS: Key = key(
    "queue.full_wait_ms",
    "LLM_AUDIT_PROXY_QUEUE_FULL_WAIT_MS",
    None,
);
pub const INSTANCE_POD_NAME: Key = key("instance.pod_name", "LLM_AUDIT_PROXY_POD_NAME", None);
pub const INSTANCE_POD_NAMESPACE: Key = key(
    "instance.pod_namespace",
    "LLM_AUDIT_PROXY_POD_NAMESPACE",
    None,
);
pub const INSTANCE_NODE_NAME: Key = key("instance.node_name", "LLM_AUDIT_PROXY_NODE_NAME", None);
pub const AUDIT_RECORD_COMPLIANCE_CHECKS: Key = key(
    "audit.record_compliance_checks",
    "LLM_AUDIT_PROXY_RECORD_COMPLIANCE_CHECKS",
    None,
);
pub const SHIPPING_POSTGRES_DSN: Key = key(
    "shipping.postgres_dsn",
    "LLM_AUDIT_PROXY_SHIPPING_POSTGRES_DSN",
    None,
);
pub const SHIPPING_POSTGRES_DSN_FILE: Key = key(
    "shipping.postgres_dsn_file",
    "LLM_AUDIT_PROXY_SHIPPING_POSTGRES_DSN_FILE",
    None,
);
pub const SHIPPING_BATCH_SIZE: Key = key(
    "shipping.batch_size",
    "LLM_AUDIT_PROXY_SHIPPING_BATCH_SIZE",
    None,
);
pub const SHIPPING_POLL_INTERVAL_MS: Key = key(
    "shipping.poll_interval_ms",
    "LLM_AUDIT_PROXY_SHIPPING_POLL_INTERVAL_MS",
    None,
);
pub const SHIPPING_MAX_BACKOFF: Key = key(
    "shipping.max_backoff_secs",
    "LLM_AUDIT_PROXY_SHIPPING_MAX_BACKOFF",
    None,
);
pub const SHIPPING_CENTRAL_RETENTION_DAYS: Key = key(
    "shipping.central_retention_days",
    "LLM_AUDIT_PROXY_SHIPPING_CENTRAL_RETENTION_DAYS",
    None,
);
pub const SHIPPING_HTTP_URL: Key = key(
    "shipping.http_url",
    "LLM_AUDIT_PROXY_SHIPPING_HTTP_URL",
    None,
);
pub const SHIPPING_HTTP_TOKEN: Key = key(
    "shipping.http_token",
    "LLM_AUDIT_PROXY_SHIPPING_HTTP_TOKEN",
    None,
);
pub const SHIPPING_HTTP_TOKEN_FILE: Key = key(
    "shipping.http_token_file",
    "LLM_AUDIT_PROXY_SHIPPING_HTTP_TOKEN_FILE",
    None,
);
pub const SHIPPING_HTTP_TIMEOUT: Key = key(
    "shipping.http_timeout_secs",
    "LLM_AUDIT_PROXY_SHIPPING_HTTP_TIMEOUT",
    None,
);
pub const POLICY_PACKS: Key = key("policy_packs", "LLM_AUDIT_PROXY_POLICY_PACKS", None);
pub const POLICIES: Key = key("policies", "LLM_AUDIT_PROXY_POLICIES", None);
pub const LOG_FORMAT: Key = key(
    "log.format",
    "LLM_AUDIT_PROXY_LOG_FORMAT",
    Some("--log-format"),
);

/// Every key, in reference order.
pub const ALL: &[Key] = &[
    PROXY_LISTEN,
    PROXY_UPSTREAM,
    PROXY_PROVIDER,
    PROXY_UPSTREAM_TIMEOUT,
    PROXY_STREAM_IDLE_TIMEOUT,
    PROXY_SHUTDOWN_GRACE,
    PROXY_CA_BUNDLE,
    PROXY_MAX_CONNECTIONS,
    CAPTURE_MAX_BODY_BYTES,
    POLICY_MAX_INSPECTED_BYTES,
    ADMIN_LISTEN,
    ADMIN_TOKENS,
    ADMIN_READ_TOKENS,
    ADMIN_WRITE_TOKENS,
    ADMIN_TOKENS_FILE,
    ADMIN_MAX_CONNECTIONS,
    ADMIN_HEADER_READ_TIMEOUT,
    ADMIN_IDLE_TIMEOUT,
    ADMIN_REFUSAL_INTERVAL,
    ADMIN_PAGE_MAX_BYTES,
    AUDIT_ENABLED,
    AUDIT_LOG_LEVEL,
    AUDIT_STORAGE,
    AUDIT_FILE_PATH,
    AUDIT_FILE_ROTATION,
    AUDIT_RETENTION_DAYS,
    AUDIT_MEMORY_LIMIT,
    AUDIT_MAX_STORE_MB,
    AUDIT_ON_STORE_FAILURE,
    AUDIT_SIGNING_KEY_FILE,
    AUDIT_SIGNING_KEY,
    AUDIT_CHECKPOINT_EVERY_EVENTS,
    AUDIT_CHECKPOINT_INTERVAL,
    AUDIT_DURABILITY,
    AUDIT_SQLITE_SYNCHRONOUS,
    AUDIT_SQLITE_SEARCH_INDEX,
    QUEUE_CAPACITY,
    QUEUE_MAX_BATCH,
    QUEUE_COMMIT_INTERVAL_MS,
    QUEUE_MAX_BYTES,
    QUEUE_FULL_WAIT_MS,
    INSTANCE_POD_NAME,
    INSTANCE_POD_NAMESPACE,
    INSTANCE_NODE_NAME,
    AUDIT_RECORD_COMPLIANCE_CHECKS,
    SHIPPING_POSTGRES_DSN,
    SHIPPING_POSTGRES_DSN_FILE,
    SHIPPING_BATCH_SIZE,
    SHIPPING_POLL_INTERVAL_MS,
    SHIPPING_MAX_BACKOFF,
    SHIPPING_CENTRAL_RETENTION_DAYS,
    SHIPPING_HTTP_URL,
    SHIPPING_HTTP_TOKEN,
    SHIPPING_HTTP_TOKEN_FILE,
    SHIPPING_HTTP_TIMEOUT,
    POLICY_PACKS,
    POLICIES,
    LOG_FORMAT,
];
