//! One pass over every key: pick the highest-precedence source, parse it,
//! and collect every error with its key.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::keys::{self, Key};
use super::*;
use crate::policy::{load_pack, PolicyDef, PolicySet};

/// `queue.max_bytes` when unset: 64 MiB, a quarter of the 256 Mi memory
/// limit the shipped manifests set, beside the calls' own buffers.
const DEFAULT_QUEUE_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// `queue.full_wait_ms` when unset. A healthy writer that is merely behind
/// takes a batch off the queue at every commit: at saturation SQLite stored
/// 18,000-38,000 events/s on the benchmark machine, a full batch of 512
/// every 13-28 ms, so a waiting call is let on within a few commits and a
/// quarter of a second rides out the slowest ones (saturation ran without
/// a dropped event). A store that stalls without failing adds at most this
/// to each call; one that fails makes no call wait.
const DEFAULT_QUEUE_FULL_WAIT_MS: u64 = 250;
/// Shortest time between two writes of a busy writer. Each SQLite commit
/// rewrites every index, text-index and rollup page it touches (40 to 60
/// pages whatever its size), so at 1,000 calls/s a 5 ms interval wrote 5.7
/// WAL pages per call and 20 ms 4.1; but 20 ms commits took the added p99
/// latency at 1,000 calls/s from +1.4 ms to +2.6 ms (the commit's burst of
/// work competes with the calls for the cores), so 5 ms stays the default.
const DEFAULT_COMMIT_INTERVAL_MS: u64 = 5;
/// Most events in one write. Each commit pays for every index, text-index
/// and rollup page it touches and for a text-index segment, whatever its
/// size, so larger transactions cost less per event at saturation: against
/// 512, 2,048 took 9 % off the CPU of an audited call and halved the
/// clients' p99 at saturation, in twelve alternating pairs (bench/README). (With
/// 4 KiB pages, 2,048 events outgrew SQLite's 2 MiB page cache and spilled;
/// with 16 KiB pages a batch spills little, 0.74 `pread`s a call against
/// 0.58, and an 8 MiB cache measured no better.) Below saturation a batch
/// is what arrives in `commit_interval_ms`, far fewer events.
const DEFAULT_MAX_BATCH: usize = 2048;

/// A value as one of the sources gave it.
enum Raw<'a> {
    Toml(&'a toml::Value),
    Str(&'a str),
}

struct Layers<'a> {
    file_path: Option<PathBuf>,
    file: BTreeMap<String, toml::Value>,
    env: &'a dyn EnvSource,
    flags: &'a FlagValues,
    errors: Vec<ConfigError>,
}

pub(super) fn load(
    file: Option<&Path>,
    env: &dyn EnvSource,
    flags: &FlagValues,
) -> Result<Config, ConfigErrors> {
    let mut layers = Layers {
        file_path: file.map(Path::to_path_buf),
        file: BTreeMap::new(),
        env,
        flags,
        errors: Vec::new(),
    };
    if let Some(path) = file {
        layers.read_file(path);
    }
    let l = &mut layers;

    let proxy = ProxyConfig {
        listen: l.get(keys::PROXY_LISTEN, default_addr(8080), parse_addr),
        upstream: l.get(keys::PROXY_UPSTREAM, default_upstream(), parse_upstream),
        provider: l.get(keys::PROXY_PROVIDER, None, |r| {
            parse_string(r).map(|s| Some(s).filter(|s| !s.is_empty()))
        }),
        upstream_timeout: l.get(
            keys::PROXY_UPSTREAM_TIMEOUT,
            Duration::from_secs(600),
            parse_secs,
        ),
        stream_idle_timeout: l.get(
            keys::PROXY_STREAM_IDLE_TIMEOUT,
            Duration::from_secs(300),
            parse_secs,
        ),
        shutdown_grace: l.get(
            keys::PROXY_SHUTDOWN_GRACE,
            Duration::from_secs(30),
            parse_secs,
        ),
        ca_bundle: l.get(keys::PROXY_CA_BUNDLE, None, parse_ca_bundle),
        max_connections: l.get(keys::PROXY_MAX_CONNECTIONS, 4096, |r| {
            parse_int(r, 1, 1_000_000).map(|n| n as usize)
        }),
    };
    let capture = CaptureConfig {
        max_body_bytes: l.get(keys::CAPTURE_MAX_BODY_BYTES, 1024 * 1024, |r| {
            parse_int(r, 0, 256 * 1024 * 1024).map(|n| n as usize)
        }),
    };
    let inspection = InspectionConfig {
        max_inspected_bytes: l.get(
            keys::POLICY_MAX_INSPECTED_BYTES,
            DEFAULT_MAX_INSPECTED_BYTES.max(capture.max_body_bytes),
            |r| parse_int(r, 1024, 1024 * 1024 * 1024).map(|n| n as usize),
        ),
    };
    if inspection.max_inspected_bytes < capture.max_body_bytes {
        let origin = l.origin_of(keys::POLICY_MAX_INSPECTED_BYTES);
        l.errors.push(ConfigError {
            key: keys::POLICY_MAX_INSPECTED_BYTES.name.to_owned(),
            message: format!(
                "must be at least capture.max_body_bytes ({}): an answer is inspected whole \
                 before its capped copy is stored",
                capture.max_body_bytes
            ),
            origin,
        });
    }
    let file_tokens = l.get(keys::ADMIN_TOKENS_FILE, ScopedTokens::default(), |r| {
        parse_tokens_file(&parse_string(r)?)
    });
    let mut admin = AdminConfig {
        listen: l.get(keys::ADMIN_LISTEN, default_addr(9090), parse_addr),
        tokens: l.get(keys::ADMIN_TOKENS, Vec::new(), parse_tokens),
        read_tokens: l.get(keys::ADMIN_READ_TOKENS, Vec::new(), parse_tokens),
        write_tokens: l.get(keys::ADMIN_WRITE_TOKENS, Vec::new(), parse_tokens),
        max_connections: l.get(keys::ADMIN_MAX_CONNECTIONS, 64, |r| {
            parse_int(r, 1, 100_000).map(|n| n as usize)
        }),
        header_read_timeout: l.get(
            keys::ADMIN_HEADER_READ_TIMEOUT,
            Duration::from_secs(10),
            parse_secs,
        ),
        idle_timeout: l.get(
            keys::ADMIN_IDLE_TIMEOUT,
            Duration::from_secs(60),
            parse_secs,
        ),
        refusal_interval: l.get(
            keys::ADMIN_REFUSAL_INTERVAL,
            Duration::from_secs(60),
            parse_secs,
        ),
        page_max_bytes: l.get(keys::ADMIN_PAGE_MAX_BYTES, 8 * 1024 * 1024, |r| {
            parse_int(r, 64 * 1024, 1024 * 1024 * 1024).map(|n| n as usize)
        }),
    };
    admin.read_tokens.extend(file_tokens.read);
    admin.write_tokens.extend(file_tokens.write);
    let audit = AuditConfig {
        enabled: l.get(keys::AUDIT_ENABLED, true, parse_bool),
        log_level: l.get(keys::AUDIT_LOG_LEVEL, Level::Info, |r| {
            parse_string(r)?
                .parse()
                .map_err(|_| "must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL".to_owned())
        }),
        storage: l.get(keys::AUDIT_STORAGE, StorageKind::Sqlite, parse_storage),
        file_path: l.get(keys::AUDIT_FILE_PATH, PathBuf::from("./audit_logs/"), |r| {
            let s = parse_string(r)?;
            if s.is_empty() {
                return Err("must not be empty".to_owned());
            }
            Ok(PathBuf::from(s))
        }),
        file_rotation: l.get(
            keys::AUDIT_FILE_ROTATION,
            Rotation::Daily,
            |r| match parse_string(r)?.to_ascii_lowercase().as_str() {
                "hourly" => Ok(Rotation::Hourly),
                "daily" => Ok(Rotation::Daily),
                "weekly" => Ok(Rotation::Weekly),
                _ => Err("must be one of hourly, daily, weekly".to_owned()),
            },
        ),
        retention_days: l.get(keys::AUDIT_RETENTION_DAYS, 90, |r| {
            parse_int(r, 0, 36_500).map(|n| n as u32)
        }),
        memory_limit: l.get(keys::AUDIT_MEMORY_LIMIT, 1000, |r| {
            parse_int(r, 1, 10_000_000).map(|n| n as usize)
        }),
        max_store_mb: l.get(keys::AUDIT_MAX_STORE_MB, 0, |r| {
            parse_int(r, 0, 16 * 1024 * 1024)
        }),
        on_store_failure: l.get(keys::AUDIT_ON_STORE_FAILURE, FailMode::FailOpen, |r| {
            match parse_string(r)?.to_ascii_lowercase().as_str() {
                "fail_open" => Ok(FailMode::FailOpen),
                "fail_closed" => Ok(FailMode::FailClosed),
                _ => Err("must be fail_open or fail_closed".to_owned()),
            }
        }),
        durability: l.get(
            keys::AUDIT_DURABILITY,
            Durability::Buffered,
            |r| match parse_string(r)?.to_ascii_lowercase().as_str() {
                "buffered" => Ok(Durability::Buffered),
                "strict" => Ok(Durability::Strict),
                _ => Err("must be buffered or strict".to_owned()),
            },
        ),
        sqlite_synchronous: l.get(
            keys::AUDIT_SQLITE_SYNCHRONOUS,
            SqliteSynchronous::Normal,
            |r| match parse_string(r)?.to_ascii_lowercase().as_str() {
                "normal" => Ok(SqliteSynchronous::Normal),
                "full" => Ok(SqliteSynchronous::Full),
                _ => Err("must be normal or full".to_owned()),
            },
        ),
        sqlite_search_index: l.get(keys::AUDIT_SQLITE_SEARCH_INDEX, true, parse_bool),
        record_compliance_checks: l.get(keys::AUDIT_RECORD_COMPLIANCE_CHECKS, false, parse_bool),
        signing_key: l.signing_key(),
        // A checkpoint costs one signature (~20 µs) and one small row: at
        // 1,000 events that is noise, and a rebuilt chain is pinned down
        // to within 1,000 events.
        checkpoint_every_events: l.get(keys::AUDIT_CHECKPOINT_EVERY_EVENTS, 1000, |r| {
            parse_int(r, 1, 10_000_000)
        }),
        // One minute: a lost or cut tail is noticed within a minute, and an
        // idle proxy adds 1,440 small rows a day.
        checkpoint_interval: l.get(
            keys::AUDIT_CHECKPOINT_INTERVAL,
            Duration::from_secs(60),
            |r| {
                let d = parse_secs(r)?;
                if d < Duration::from_secs(1) || d > Duration::from_secs(86_400) {
                    return Err("must be between 1 and 86400 seconds".to_owned());
                }
                Ok(d)
            },
        ),
    };
    let queue = QueueConfig {
        capacity: l.get(keys::QUEUE_CAPACITY, 10_000, |r| {
            parse_int(r, 1, 10_000_000).map(|n| n as usize)
        }),
        max_batch: l.get(keys::QUEUE_MAX_BATCH, DEFAULT_MAX_BATCH, |r| {
            parse_int(r, 1, 100_000).map(|n| n as usize)
        }),
        commit_interval: l.get(
            keys::QUEUE_COMMIT_INTERVAL_MS,
            Duration::from_millis(DEFAULT_COMMIT_INTERVAL_MS),
            |r| parse_int(r, 0, 1000).map(Duration::from_millis),
        ),
        max_bytes: l.get(keys::QUEUE_MAX_BYTES, DEFAULT_QUEUE_MAX_BYTES, |r| {
            parse_int(r, 1024 * 1024, 64 * 1024 * 1024 * 1024)
        }),
        full_wait: l.get(
            keys::QUEUE_FULL_WAIT_MS,
            Duration::from_millis(DEFAULT_QUEUE_FULL_WAIT_MS),
            |r| parse_int(r, 0, 60_000).map(Duration::from_millis),
        ),
    };
    let optional = |r: &Raw| parse_string(r).map(|s| Some(s).filter(|s| !s.is_empty()));
    let instance = InstanceConfig {
        pod_name: l.get(keys::INSTANCE_POD_NAME, None, optional),
        pod_namespace: l.get(keys::INSTANCE_POD_NAMESPACE, None, optional),
        node_name: l.get(keys::INSTANCE_NODE_NAME, None, optional),
    };
    let default_format = if std::io::stderr().is_terminal() {
        LogFormat::Text
    } else {
        LogFormat::Json
    };
    let log = LogConfig {
        format: l.get(keys::LOG_FORMAT, default_format, |r| {
            match parse_string(r)?.to_ascii_lowercase().as_str() {
                "json" => Ok(LogFormat::Json),
                "text" => Ok(LogFormat::Text),
                _ => Err("must be json or text".to_owned()),
            }
        }),
    };

    let shipping = ShippingConfig {
        postgres: l.postgres_target(),
        // Two batches are held at once (the one being written and the next,
        // read ahead): 5,000 events of a few KB each bounds that memory.
        // 1,000 keeps an `http` batch's body near a megabyte.
        batch_size: l.get(keys::SHIPPING_BATCH_SIZE, 1000, |r| {
            parse_int(r, 1, 5000).map(|n| n as usize)
        }),
        poll_interval: l.get(
            keys::SHIPPING_POLL_INTERVAL_MS,
            Duration::from_millis(500),
            |r| parse_int(r, 10, 60_000).map(Duration::from_millis),
        ),
        max_backoff: l.get(
            keys::SHIPPING_MAX_BACKOFF,
            Duration::from_secs(30),
            parse_secs,
        ),
        central_retention_days: l.get(keys::SHIPPING_CENTRAL_RETENTION_DAYS, 0, |r| {
            parse_int(r, 0, 36_500).map(|n| n as u32)
        }),
        http: l.http_target(),
    };

    let policies = l.policies();

    if !admin.has_tokens() && !admin.listen.ip().is_loopback() {
        let origin = l.origin_of(keys::ADMIN_LISTEN);
        l.errors.push(ConfigError {
            key: keys::ADMIN_LISTEN.name.to_owned(),
            message: format!(
                "{} is not a loopback address; set admin.tokens ({}) to expose the admin API",
                admin.listen,
                keys::ADMIN_TOKENS.env
            ),
            origin,
        });
    }
    l.check_unknown_keys();

    if layers.errors.is_empty() {
        Ok(Config {
            proxy,
            capture,
            admin,
            audit,
            queue,
            instance,
            log,
            shipping,
            policies,
            inspection,
        })
    } else {
        Err(ConfigErrors(layers.errors))
    }
}

fn default_addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn default_upstream() -> Upstream {
    Upstream {
        scheme: http::uri::Scheme::HTTPS,
        authority: http::uri::Authority::from_static("api.openai.com"),
        path_prefix: String::new(),
    }
}

// === impl Layers ===

impl Layers<'_> {
    fn read_file(&mut self, path: &Path) {
        let origin = Origin::File(path.to_path_buf());
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                self.errors.push(ConfigError {
                    key: "config".to_owned(),
                    message: format!("cannot read {}: {e}", path.display()),
                    origin: Origin::Flag("--config"),
                });
                return;
            }
        };
        let table: toml::Table = match text.parse() {
            Ok(t) => t,
            Err(e) => {
                self.errors.push(ConfigError {
                    key: "config".to_owned(),
                    message: format!("not valid TOML: {}", e.message()),
                    origin,
                });
                return;
            }
        };
        for (section, value) in table {
            match value {
                toml::Value::Table(inner) => {
                    for (k, v) in inner {
                        self.file.insert(format!("{section}.{k}"), v);
                    }
                }
                other => {
                    self.file.insert(section, other);
                }
            }
        }
    }

    /// The value of `key` from the highest-precedence source that has it,
    /// parsed; `default` when none has it or it fails to parse (the error
    /// is recorded).
    fn get<T>(&mut self, key: Key, default: T, parse: impl Fn(&Raw) -> Result<T, String>) -> T {
        let (raw_owned, origin);
        let raw = if let Some(v) = self.flags.get(key.name) {
            origin = Origin::Flag(key.flag.unwrap_or(key.name));
            Raw::Str(v.as_str())
        } else if let Some(v) = self.env.get(key.env) {
            origin = Origin::Env(key.env);
            raw_owned = v;
            Raw::Str(raw_owned.as_str())
        } else if let Some(v) = self.file.get(key.name) {
            origin = self.file_origin();
            Raw::Toml(v)
        } else {
            return default;
        };
        match parse(&raw) {
            Ok(v) => v,
            Err(message) => {
                self.errors.push(ConfigError {
                    key: key.name.to_owned(),
                    message,
                    origin,
                });
                default
            }
        }
    }

    /// Packs, then inline policies, compiled together so names are unique
    /// across both and every mistake is reported with its key.
    fn policies(&mut self) -> Arc<PolicySet> {
        let packs = self.get(keys::POLICY_PACKS, Vec::new(), parse_string_list);
        let inline = self.get(keys::POLICIES, Vec::new(), parse_policy_defs);
        let mut labeled: Vec<(String, PolicyDef)> = Vec::new();
        for (i, pack) in packs.iter().enumerate() {
            match load_pack(pack) {
                Ok(defs) => labeled.extend(
                    defs.into_iter()
                        .enumerate()
                        .map(|(j, d)| (format!("policy_packs[{i}].policies[{j}]"), d)),
                ),
                Err(e) => {
                    let origin = self.origin_of(keys::POLICY_PACKS);
                    self.errors.push(ConfigError {
                        key: format!("policy_packs[{i}]"),
                        message: e.message,
                        origin,
                    });
                }
            }
        }
        labeled.extend(
            inline
                .into_iter()
                .enumerate()
                .map(|(j, d)| (format!("policies[{j}]"), d)),
        );
        match PolicySet::compile_labeled(&labeled) {
            Ok(set) => Arc::new(set),
            Err(errors) => {
                let origin = self.origin_of(keys::POLICIES);
                for e in errors {
                    let origin = if e.key.starts_with("policy_packs") {
                        self.origin_of(keys::POLICY_PACKS)
                    } else {
                        origin.clone()
                    };
                    self.errors.push(ConfigError {
                        key: e.key,
                        message: e.message,
                        origin,
                    });
                }
                Arc::new(PolicySet::compile_labeled(&[]).unwrap_or_else(|_| PolicySet::empty()))
            }
        }
    }

    /// The checkpoint signing key, from `audit.signing_key_file` or
    /// `audit.signing_key` (never both).
    fn signing_key(&mut self) -> Option<CheckpointSigner> {
        self.secret(
            keys::AUDIT_SIGNING_KEY_FILE,
            keys::AUDIT_SIGNING_KEY,
            |text| {
                CheckpointSigner::from_text(text)
                    .map_err(|e| format!("{e} (make one with `llm-audit-proxy keygen`)"))
            },
        )
    }

    /// The PostgreSQL shipping target, from `shipping.postgres_dsn_file`
    /// (a mounted Secret) or `shipping.postgres_dsn` (never both). The DSN
    /// is checked here, so `check-config` names a malformed one.
    fn postgres_target(&mut self) -> Option<PostgresTarget> {
        self.secret(
            keys::SHIPPING_POSTGRES_DSN_FILE,
            keys::SHIPPING_POSTGRES_DSN,
            parse_postgres_dsn,
        )
        .map(|dsn| PostgresTarget { dsn })
    }

    /// A secret given either in a file named by `file_key` (a mounted
    /// Secret) or inline in `inline_key`, never both; an empty value is
    /// unset. `parse` reads the trimmed text, and its messages must not
    /// repeat it: neither do the ones made here.
    fn secret<T>(
        &mut self,
        file_key: Key,
        inline_key: Key,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        let from_file = self.get(file_key, None, |r| {
            let path = parse_string(r)?;
            if path.is_empty() {
                return Ok(None);
            }
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
            parse(text.trim())
                .map(Some)
                .map_err(|e| format!("{path}: {e}"))
        });
        let inline = self.get(inline_key, None, |r| {
            let text = parse_string(r)?;
            if text.trim().is_empty() {
                return Ok(None);
            }
            parse(text.trim()).map(Some)
        });
        if from_file.is_some() && inline.is_some() {
            let origin = self.origin_of(inline_key);
            self.errors.push(ConfigError {
                key: inline_key.name.to_owned(),
                message: format!(
                    "set either {} ({}) or {} ({}), not both",
                    inline_key.name, inline_key.env, file_key.name, file_key.env
                ),
                origin,
            });
        }
        from_file.or(inline)
    }

    /// The HTTP shipping target: `shipping.http_url`, and its bearer token
    /// from `shipping.http_token_file` (a mounted Secret) or
    /// `shipping.http_token` (one of them, required with a URL). Messages
    /// never repeat the token.
    fn http_target(&mut self) -> Option<HttpTarget> {
        let url = self.get(keys::SHIPPING_HTTP_URL, None, |r| {
            let s = parse_string(r)?;
            if s.trim().is_empty() {
                return Ok(None);
            }
            parse_http_target_url(s.trim()).map(Some)
        });
        let token = self.secret(
            keys::SHIPPING_HTTP_TOKEN_FILE,
            keys::SHIPPING_HTTP_TOKEN,
            parse_token,
        );
        let timeout = self.get(
            keys::SHIPPING_HTTP_TIMEOUT,
            Duration::from_secs(30),
            parse_secs,
        );
        let url = url?;
        let Some(token) = token else {
            // A token given but refused has its own error already.
            let token_keys = [keys::SHIPPING_HTTP_TOKEN, keys::SHIPPING_HTTP_TOKEN_FILE];
            if self
                .errors
                .iter()
                .any(|e| token_keys.iter().any(|k| k.name == e.key))
            {
                return None;
            }
            let origin = self.origin_of(keys::SHIPPING_HTTP_URL);
            self.errors.push(ConfigError {
                key: keys::SHIPPING_HTTP_TOKEN.name.to_owned(),
                message: format!(
                    "shipping.http_url is set: give its bearer token in shipping.http_token_file \
                     ({}) or shipping.http_token ({})",
                    keys::SHIPPING_HTTP_TOKEN_FILE.env,
                    keys::SHIPPING_HTTP_TOKEN.env
                ),
                origin,
            });
            return None;
        };
        Some(HttpTarget {
            url,
            token,
            timeout,
        })
    }

    fn origin_of(&self, key: Key) -> Origin {
        if self.flags.contains_key(key.name) {
            Origin::Flag(key.flag.unwrap_or(key.name))
        } else if self.env.get(key.env).is_some() {
            Origin::Env(key.env)
        } else if self.file.contains_key(key.name) {
            self.file_origin()
        } else {
            Origin::Default
        }
    }

    fn file_origin(&self) -> Origin {
        self.file_path.clone().map_or(Origin::Default, Origin::File)
    }

    fn check_unknown_keys(&mut self) {
        let unknown: Vec<String> = self
            .file
            .keys()
            .filter(|k| !keys::ALL.iter().any(|key| key.name == k.as_str()))
            .cloned()
            .collect();
        for key in unknown {
            self.errors.push(ConfigError {
                message: "unknown key".to_owned(),
                key,
                origin: self.file_origin(),
            });
        }
    }
}

// === parsers ===

fn parse_string(raw: &Raw) -> Result<String, String> {
    match raw {
        Raw::Str(s) => Ok((*s).to_owned()),
        Raw::Toml(toml::Value::String(s)) => Ok(s.clone()),
        Raw::Toml(other) => Err(format!("must be a string, not {}", other.type_str())),
    }
}

fn parse_int(raw: &Raw, min: u64, max: u64) -> Result<u64, String> {
    let n: i64 = match raw {
        Raw::Str(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("must be a whole number from {min} to {max}"))?,
        Raw::Toml(toml::Value::Integer(i)) => *i,
        Raw::Toml(other) => {
            return Err(format!(
                "must be a whole number from {min} to {max}, not {}",
                other.type_str()
            ))
        }
    };
    u64::try_from(n)
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("must be a whole number from {min} to {max}, not {n}"))
}

fn parse_secs(raw: &Raw) -> Result<Duration, String> {
    let secs: f64 = match raw {
        Raw::Str(s) => s
            .trim()
            .parse()
            .map_err(|_| "must be a number of seconds".to_owned())?,
        Raw::Toml(toml::Value::Integer(i)) => *i as f64,
        Raw::Toml(toml::Value::Float(f)) => *f,
        Raw::Toml(other) => {
            return Err(format!(
                "must be a number of seconds, not {}",
                other.type_str()
            ))
        }
    };
    if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(format!(
            "must be more than 0 and at most 86400 seconds, not {secs}"
        ))
    }
}

fn parse_bool(raw: &Raw) -> Result<bool, String> {
    match raw {
        Raw::Toml(toml::Value::Boolean(b)) => Ok(*b),
        Raw::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err("must be true or false".to_owned()),
        },
        Raw::Toml(other) => Err(format!("must be true or false, not {}", other.type_str())),
    }
}

fn parse_addr(raw: &Raw) -> Result<SocketAddr, String> {
    let s = parse_string(raw)?;
    let s = s.trim();
    if let Some(port) = s.strip_prefix("localhost:") {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(default_addr(port));
        }
    }
    s.parse()
        .map_err(|_| format!("must be an IP address and port such as 127.0.0.1:8080, not {s:?}"))
}

fn parse_upstream(raw: &Raw) -> Result<Upstream, String> {
    let s = parse_string(raw)?;
    let uri: http::Uri = s
        .trim()
        .parse()
        .map_err(|_| format!("must be an http:// or https:// URL, not {s:?}"))?;
    let scheme = uri
        .scheme()
        .filter(|s| **s == http::uri::Scheme::HTTP || **s == http::uri::Scheme::HTTPS)
        .cloned()
        .ok_or_else(|| format!("must start with http:// or https://, not {s:?}"))?;
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("must name a host, not {s:?}"))?;
    if authority.as_str().contains('@') {
        return Err("must not carry credentials; the app's own headers are forwarded".to_owned());
    }
    if uri.query().is_some() {
        return Err("must not have a query string".to_owned());
    }
    Ok(Upstream {
        scheme,
        authority,
        path_prefix: uri.path().trim_end_matches('/').to_owned(),
    })
}

fn parse_ca_bundle(raw: &Raw) -> Result<Option<PathBuf>, String> {
    let s = parse_string(raw)?;
    if s.is_empty() {
        return Ok(None);
    }
    let path = PathBuf::from(&s);
    if path.is_file() {
        Ok(Some(path))
    } else {
        Err(format!("{s} is not a readable file"))
    }
}

fn parse_tokens(raw: &Raw) -> Result<Vec<Secret>, String> {
    let list: Vec<String> = match raw {
        Raw::Str(s) => s.split(',').map(|t| t.trim().to_owned()).collect(),
        Raw::Toml(toml::Value::String(s)) => vec![s.clone()],
        Raw::Toml(toml::Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| "must be a list of strings".to_owned())
            })
            .collect::<Result<_, _>>()?,
        Raw::Toml(other) => {
            return Err(format!(
                "must be a list of strings, not {}",
                other.type_str()
            ))
        }
    };
    let list: Vec<String> = list.into_iter().filter(|t| !t.is_empty()).collect();
    if let Some(short) = list.iter().find(|t| t.len() < 16) {
        return Err(format!(
            "each token must be at least 16 characters (one has {})",
            short.len()
        ));
    }
    Ok(list.into_iter().map(Secret::new).collect())
}

/// Tokens read from `admin.tokens_file`, by scope.
#[derive(Default)]
struct ScopedTokens {
    read: Vec<Secret>,
    write: Vec<Secret>,
}

/// Reads a tokens file: one `<scopes> <token>` per line, scopes being
/// `read`, `write` or `read,write`; blank lines and `#` comments skipped.
/// Errors name the line, never the token.
fn parse_tokens_file(path: &str) -> Result<ScopedTokens, String> {
    if path.is_empty() {
        return Ok(ScopedTokens::default());
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path} cannot be read: {e}"))?;
    let mut tokens = ScopedTokens::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line_no = n + 1;
        let Some((scopes, token)) = line.split_once(char::is_whitespace) else {
            return Err(format!(
                "{path} line {line_no}: expected `<scopes> <token>`, scopes read, write or read,write"
            ));
        };
        let token = token.trim();
        if token.len() < 16 {
            return Err(format!(
                "{path} line {line_no}: each token must be at least 16 characters (this one has {})",
                token.len()
            ));
        }
        for scope in scopes.split(',') {
            match scope.trim() {
                "read" => tokens.read.push(Secret::new(token)),
                "write" => tokens.write.push(Secret::new(token)),
                other => {
                    return Err(format!(
                    "{path} line {line_no}: unknown scope {other:?}; use read, write or read,write"
                ))
                }
            }
        }
    }
    Ok(tokens)
}

fn parse_string_list(raw: &Raw) -> Result<Vec<String>, String> {
    match raw {
        Raw::Str(s) => Ok(s
            .split(',')
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect()),
        Raw::Toml(toml::Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| "must be a list of strings".to_owned())
            })
            .collect(),
        Raw::Toml(other) => Err(format!(
            "must be a list of strings, not {}",
            other.type_str()
        )),
    }
}

/// `[[policies]]` from the file, or a JSON array from the environment.
fn parse_policy_defs(raw: &Raw) -> Result<Vec<PolicyDef>, String> {
    match raw {
        Raw::Str(s) => {
            serde_json::from_str(s).map_err(|e| format!("must be a JSON array of policies: {e}"))
        }
        Raw::Toml(toml::Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.clone()
                    .try_into::<PolicyDef>()
                    .map_err(|e| format!("[{i}]: {}", e.message()))
            })
            .collect(),
        Raw::Toml(other) => Err(format!(
            "must be an array of tables ([[policies]]), not {}",
            other.type_str()
        )),
    }
}

/// Checks a PostgreSQL connection string (URL or `key=value` form) and
/// that it names a host and a user. The error never repeats the string.
/// An `http://` or `https://` URL with a host and no credentials.
fn parse_http_target_url(s: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = s
        .parse()
        .map_err(|_| format!("must be an http:// or https:// URL, not {s:?}"))?;
    let web = uri
        .scheme()
        .is_some_and(|s| *s == http::uri::Scheme::HTTP || *s == http::uri::Scheme::HTTPS);
    if !web {
        return Err(format!("must start with http:// or https://, not {s:?}"));
    }
    match uri.authority() {
        None => Err(format!("must name a host, not {s:?}")),
        Some(a) if a.as_str().contains('@') => {
            Err("must not carry credentials; the token goes in shipping.http_token_file".to_owned())
        }
        Some(_) => Ok(uri),
    }
}

/// A bearer token: visible ASCII, no spaces. The message never shows it.
fn parse_token(text: &str) -> Result<Secret, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be a token of visible ASCII characters without spaces".to_owned());
    }
    Ok(Secret::new(text))
}

fn parse_postgres_dsn(text: &str) -> Result<Secret, String> {
    const FORM: &str = "postgres://user:password@host:5432/database";
    let config: tokio_postgres::Config = text.parse().map_err(|e: tokio_postgres::Error| {
        // The cause names the option at fault (`port`), never its value.
        let cause = std::error::Error::source(&e)
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        format!("is not a valid PostgreSQL connection string (expected e.g. {FORM}): {e}{cause}")
    })?;
    if config.get_hosts().is_empty() {
        return Err(format!("must name a host (e.g. {FORM})"));
    }
    if config.get_user().is_none_or(str::is_empty) {
        return Err(format!("must name a user (e.g. {FORM})"));
    }
    Ok(Secret::new(text))
}

fn parse_storage(raw: &Raw) -> Result<StorageKind, String> {
    match parse_string(raw)?.to_ascii_lowercase().as_str() {
        "sqlite" => Ok(StorageKind::Sqlite),
        "memory" => Ok(StorageKind::Memory),
        "file" => Ok(StorageKind::File),
        "postgres" | "api" => Err(
            "postgres and api stores are not available in this build; use sqlite, file or memory"
                .to_owned(),
        ),
        other => Err(format!(
            "must be one of sqlite, file, memory, not {other:?}"
        )),
    }
}

#[cfg(test)]
#[path = "validate/tests.rs"]
mod tests;
