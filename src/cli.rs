//! Command-line definitions. Every `serve` flag has an environment variable
//! (shown in `--help`) and a config key; see `config::keys`. The variables
//! are read by the config loader, not by clap, so an error names the
//! variable a bad value came from.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{keys, FlagValues};

/// Audit sidecar for OpenAI-compatible LLM APIs.
#[derive(Debug, Parser)]
#[command(name = "llm-audit-proxy", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy and the admin endpoint.
    Serve(Box<ServeArgs>),
    /// Query the configured store offline; a table, or JSON with --json.
    Events(EventsArgs),
    /// Export events to a file with the API's filters; prints the path.
    Export(ExportArgs),
    /// Check the store's (or an export's) hash chain and signed
    /// checkpoints; exits 1 naming the first seq at fault.
    Verify(VerifyArgs),
    /// Make an Ed25519 key pair for signed checkpoints; prints the public
    /// key and its key id.
    Keygen(KeygenArgs),
    /// Apply retention and the size cap now; with --central, drop the
    /// central store's months older than shipping.central_retention_days.
    Purge(StoreArgs),
    /// Serve the admin API (/api/events, /api/export, /api/stats,
    /// /api/verify) over the central store that shipping fills, for the
    /// whole fleet; `source`, `pod` and `namespace` filter by origin.
    FleetAdmin(FleetAdminArgs),
    /// Validate a config file and print every error with its key.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Work with compliance policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Run the policies over a text or a JSON request body: prints each
    /// finding (type, place, span, policies), the verdict and the copy the
    /// store would keep. Exits 0 when nothing is found, 1 otherwise.
    Test(PolicyTestArgs),
}

/// What `policy test` reads and with which policies.
#[derive(Debug, Args, Clone)]
pub struct PolicyTestArgs {
    /// The text or JSON body to test; `-` or none reads standard input.
    pub file: Option<PathBuf>,
    /// Test this shipped pack (pci, pii-basic, secrets) or pack file
    /// instead of the configured policies; repeatable.
    #[arg(long = "pack")]
    pub packs: Vec<String>,
    /// Which side of a call the input is: request or response.
    #[arg(long, default_value = "request")]
    pub direction: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// TOML configuration file whose policies are tested (with the
    /// environment's). [env: LLM_AUDIT_PROXY_CONFIG]
    #[arg(long, env = "LLM_AUDIT_PROXY_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Where the offline commands find the store.
#[derive(Debug, Args, Default, Clone)]
pub struct StoreArgs {
    /// TOML configuration file. [env: LLM_AUDIT_PROXY_CONFIG]
    #[arg(long, env = "LLM_AUDIT_PROXY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Store kind: sqlite or file [default: sqlite]. [env: LLM_AUDIT_PROXY_STORAGE]
    #[arg(long)]
    pub storage: Option<String>,
    /// Folder of the store [default: ./audit_logs/]. [env: LLM_AUDIT_PROXY_FILE_PATH]
    #[arg(long)]
    pub file_path: Option<String>,
    /// Read the central store (the PostgreSQL database of
    /// shipping.postgres_dsn or shipping.postgres_dsn_file) instead of the
    /// local one: every source's events.
    #[arg(long)]
    pub central: bool,
    /// The central store's connection string, from this file; implies
    /// --central. [env: LLM_AUDIT_PROXY_SHIPPING_POSTGRES_DSN_FILE]
    #[arg(long, value_name = "FILE")]
    pub postgres_dsn_file: Option<String>,
}

/// What `fleet-admin` serves, and where.
#[derive(Debug, Args, Default, Clone)]
pub struct FleetAdminArgs {
    /// TOML configuration file: its `admin.*` and `shipping.postgres_dsn*`
    /// keys apply.
    #[arg(long, env = "LLM_AUDIT_PROXY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Admin API address [default: 127.0.0.1:9090]. [env: LLM_AUDIT_PROXY_ADMIN_LISTEN]
    #[arg(long)]
    pub admin_listen: Option<String>,
    /// Bearer token for the admin API (repeat, or comma-separate, for
    /// several). [env: LLM_AUDIT_PROXY_ADMIN_TOKEN]
    #[arg(long, value_delimiter = ',')]
    pub admin_token: Vec<String>,
    /// The central store's connection string, from this file. [env:
    /// LLM_AUDIT_PROXY_SHIPPING_POSTGRES_DSN_FILE]
    #[arg(long, value_name = "FILE")]
    pub postgres_dsn_file: Option<String>,
    /// Diagnostic log format: json or text [default: json, text on a
    /// terminal]. [env: LLM_AUDIT_PROXY_LOG_FORMAT]
    #[arg(long)]
    pub log_format: Option<String>,
}

/// The filters `GET /api/events` takes, as flags.
#[derive(Debug, Args, Default, Clone)]
pub struct FilterArgs {
    /// Comma list of event types (alias: --event-types).
    #[arg(long, alias = "event-types")]
    pub event_type: Option<String>,
    /// Inclusive lower bound, RFC 3339.
    #[arg(long)]
    pub start_time: Option<String>,
    /// Exclusive upper bound, RFC 3339.
    #[arg(long)]
    pub end_time: Option<String>,
    /// One call's events.
    #[arg(long)]
    pub request_id: Option<String>,
    /// Minimum level: DEBUG, INFO, WARNING, ERROR, CRITICAL.
    #[arg(long)]
    pub level: Option<String>,
    /// Compliance events of one policy.
    #[arg(long)]
    pub policy_name: Option<String>,
    /// Events of one source (a store's source_id); on a local store, its
    /// own id matches every event and any other none.
    #[arg(long)]
    pub source: Option<String>,
    /// Events shipped from one pod (instance.pod_name).
    #[arg(long)]
    pub pod: Option<String>,
    /// Events shipped from one namespace (instance.pod_namespace).
    #[arg(long)]
    pub namespace: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct EventsArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Events per page (1 to 10000) [default: 100].
    #[arg(long)]
    pub limit: Option<String>,
    /// The next_cursor of the previous page.
    #[arg(long)]
    pub cursor: Option<String>,
    /// Print the API's JSON (`{"events": [...], "next_cursor": ...}`).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct ExportArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// json, ndjson or csv.
    #[arg(long, default_value = "json")]
    pub format: String,
    /// Add the checkpoints and chain links `verify --file` needs (JSON and
    /// NDJSON) [default: true when audit.signing_key(_file) is set].
    #[arg(long, value_name = "true|false")]
    pub verifiable: Option<bool>,
    /// The file to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args, Clone, Default)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Check this JSON or NDJSON export instead of the store (no store or
    /// network needed).
    #[arg(long, value_name = "EXPORT")]
    pub file: Option<PathBuf>,
    /// A trusted public key (base64), or a file of them, one per line:
    /// every checkpoint's signature is checked. Repeat for rotated keys
    /// (the variable takes a comma list).
    #[arg(
        long = "public-key",
        value_name = "KEY",
        env = "LLM_AUDIT_PROXY_VERIFY_PUBLIC_KEYS",
        value_delimiter = ','
    )]
    pub public_keys: Vec<String>,
    /// A checkpoint recorded elsewhere (its own `seq:hash`, as
    /// `/api/verify` reports it as `checkpoints.latest`) that the record
    /// must still reach: a cut tail fails. Repeatable.
    #[arg(long = "expect-checkpoint", value_name = "SEQ:HASH")]
    pub expect_checkpoints: Vec<String>,
    /// Verify one source's chain (a store's source_id): on the central
    /// store, the one an --expect-checkpoint belongs to; on a local store,
    /// its own id.
    #[arg(long, value_name = "SOURCE_ID")]
    pub source: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct KeygenArgs {
    /// Where to write the private key (mode 0600); the public key goes to
    /// the same path plus `.pub`.
    #[arg(long, env = "LLM_AUDIT_PROXY_SIGNING_KEY_FILE")]
    pub out: PathBuf,
    /// Replace an existing key file.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// TOML configuration file (see config/llm-audit-proxy.toml).
    #[arg(long, env = "LLM_AUDIT_PROXY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address the app's calls arrive on [default: 127.0.0.1:8080]. [env: LLM_AUDIT_PROXY_LISTEN]
    #[arg(long)]
    pub listen: Option<String>,
    /// Upstream base URL [default: `https://api.openai.com`]. [env: LLM_AUDIT_PROXY_UPSTREAM]
    #[arg(long)]
    pub upstream: Option<String>,
    /// Admin API address [default: 127.0.0.1:9090]. [env: LLM_AUDIT_PROXY_ADMIN_LISTEN]
    #[arg(long)]
    pub admin_listen: Option<String>,
    /// Bearer token for the admin API (repeat, or comma-separate, for
    /// several). [env: LLM_AUDIT_PROXY_ADMIN_TOKEN]
    #[arg(long, value_delimiter = ',')]
    pub admin_token: Vec<String>,
    /// Store kind: sqlite, memory or file [default: sqlite]. [env: LLM_AUDIT_PROXY_STORAGE]
    #[arg(long)]
    pub storage: Option<String>,
    /// Folder for the file and sqlite stores [default: ./audit_logs/]. [env: LLM_AUDIT_PROXY_FILE_PATH]
    #[arg(long)]
    pub file_path: Option<String>,
    /// Minimum audit level stored: DEBUG, INFO, WARNING, ERROR, CRITICAL
    /// [default: INFO]. [env: LLM_AUDIT_PROXY_LOG_LEVEL]
    #[arg(long)]
    pub log_level: Option<String>,
    /// Seconds to wait for upstream's response headers [default: 600]. [env: LLM_AUDIT_PROXY_UPSTREAM_TIMEOUT]
    #[arg(long)]
    pub upstream_timeout: Option<String>,
    /// Longest silence, in seconds, inside a response body [default: 300]. [env: LLM_AUDIT_PROXY_STREAM_IDLE_TIMEOUT]
    #[arg(long)]
    pub stream_idle_timeout: Option<String>,
    /// Seconds in-flight calls get to finish after SIGTERM [default: 30]. [env: LLM_AUDIT_PROXY_SHUTDOWN_GRACE]
    #[arg(long)]
    pub shutdown_grace: Option<String>,
    /// Diagnostic log format: json or text [default: json, text on a
    /// terminal]. [env: LLM_AUDIT_PROXY_LOG_FORMAT]
    #[arg(long)]
    pub log_format: Option<String>,
}

// === impl StoreArgs ===

impl StoreArgs {
    /// The flags given, by config key.
    pub fn flag_values(&self) -> FlagValues {
        let mut flags = FlagValues::new();
        if let Some(v) = &self.storage {
            flags.insert(keys::AUDIT_STORAGE.name, v.clone());
        }
        if let Some(v) = &self.file_path {
            flags.insert(keys::AUDIT_FILE_PATH.name, v.clone());
        }
        if let Some(v) = &self.postgres_dsn_file {
            flags.insert(keys::SHIPPING_POSTGRES_DSN_FILE.name, v.clone());
        }
        flags
    }

    /// Whether the command reads the central store.
    pub fn central(&self) -> bool {
        self.central || self.postgres_dsn_file.is_some()
    }
}

// === impl FleetAdminArgs ===

impl FleetAdminArgs {
    /// The flags given, by config key.
    pub fn flag_values(&self) -> FlagValues {
        let mut flags = FlagValues::new();
        if let Some(v) = &self.admin_listen {
            flags.insert(keys::ADMIN_LISTEN.name, v.clone());
        }
        if let Some(v) = &self.postgres_dsn_file {
            flags.insert(keys::SHIPPING_POSTGRES_DSN_FILE.name, v.clone());
        }
        if let Some(v) = &self.log_format {
            flags.insert(keys::LOG_FORMAT.name, v.clone());
        }
        if !self.admin_token.is_empty() {
            flags.insert(keys::ADMIN_TOKENS.name, self.admin_token.join(","));
        }
        flags
    }
}

// === impl FilterArgs ===

impl FilterArgs {
    /// The filters as the API's query parameters, so both are parsed and
    /// checked by the same code.
    pub fn query_pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        let mut put = |name: &'static str, value: &Option<String>| {
            if let Some(v) = value {
                pairs.push((name, v.clone()));
            }
        };
        put("event_type", &self.event_type);
        put("start_time", &self.start_time);
        put("end_time", &self.end_time);
        put("request_id", &self.request_id);
        put("level", &self.level);
        put("policy_name", &self.policy_name);
        put("source", &self.source);
        put("pod", &self.pod);
        put("namespace", &self.namespace);
        pairs
    }
}

// === impl ServeArgs ===

impl ServeArgs {
    /// The flags given, by config key.
    pub fn flag_values(&self) -> FlagValues {
        let mut flags = FlagValues::new();
        let mut put = |key: keys::Key, value: &Option<String>| {
            if let Some(v) = value {
                flags.insert(key.name, v.clone());
            }
        };
        put(keys::PROXY_LISTEN, &self.listen);
        put(keys::PROXY_UPSTREAM, &self.upstream);
        put(keys::ADMIN_LISTEN, &self.admin_listen);
        put(keys::AUDIT_STORAGE, &self.storage);
        put(keys::AUDIT_FILE_PATH, &self.file_path);
        put(keys::AUDIT_LOG_LEVEL, &self.log_level);
        put(keys::PROXY_UPSTREAM_TIMEOUT, &self.upstream_timeout);
        put(keys::PROXY_STREAM_IDLE_TIMEOUT, &self.stream_idle_timeout);
        put(keys::PROXY_SHUTDOWN_GRACE, &self.shutdown_grace);
        put(keys::LOG_FORMAT, &self.log_format);
        if !self.admin_token.is_empty() {
            flags.insert(keys::ADMIN_TOKENS.name, self.admin_token.join(","));
        }
        flags
    }
}
