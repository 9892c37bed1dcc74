//! Command-line definitions. Every `serve` flag has an environment variable
//! (shown in `--help`) and a config key; see `config::keys`.

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
    /// Validate a config file and print every error with its key.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
}

#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// TOML configuration file (see config/llm-audit-proxy.toml).
    #[arg(long, env = "LLM_AUDIT_PROXY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address the app's calls arrive on [default: 127.0.0.1:8080].
    #[arg(long, env = "LLM_AUDIT_PROXY_LISTEN")]
    pub listen: Option<String>,
    /// Upstream base URL [default: https://api.openai.com].
    #[arg(long, env = "LLM_AUDIT_PROXY_UPSTREAM")]
    pub upstream: Option<String>,
    /// Admin API address [default: 127.0.0.1:9090].
    #[arg(long, env = "LLM_AUDIT_PROXY_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// Bearer token for the admin API (repeat, or comma-separate, for
    /// several).
    #[arg(
        long,
        env = "LLM_AUDIT_PROXY_ADMIN_TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub admin_token: Vec<String>,
    /// Store kind: sqlite, memory or file [default: sqlite].
    #[arg(long, env = "LLM_AUDIT_PROXY_STORAGE")]
    pub storage: Option<String>,
    /// Folder for the file and sqlite stores [default: ./audit_logs/].
    #[arg(long, env = "LLM_AUDIT_PROXY_FILE_PATH")]
    pub file_path: Option<String>,
    /// Minimum audit level stored: DEBUG, INFO, WARNING, ERROR, CRITICAL
    /// [default: INFO].
    #[arg(long, env = "LLM_AUDIT_PROXY_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Seconds to wait for upstream's response headers [default: 600].
    #[arg(long, env = "LLM_AUDIT_PROXY_UPSTREAM_TIMEOUT")]
    pub upstream_timeout: Option<String>,
    /// Longest silence, in seconds, inside a response body [default: 300].
    #[arg(long, env = "LLM_AUDIT_PROXY_STREAM_IDLE_TIMEOUT")]
    pub stream_idle_timeout: Option<String>,
    /// Seconds in-flight calls get to finish after SIGTERM [default: 30].
    #[arg(long, env = "LLM_AUDIT_PROXY_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<String>,
    /// Diagnostic log format: json or text [default: json, text on a
    /// terminal].
    #[arg(long, env = "LLM_AUDIT_PROXY_LOG_FORMAT")]
    pub log_format: Option<String>,
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
