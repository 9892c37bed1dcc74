//! The offline commands: `events`, `export`, `verify`, `purge`, and
//! `keygen`. The store commands open
//! the configured store directly, without the server, and are safe while
//! `serve` writes the same SQLite store (reads go through a read-only
//! connection; a purge deletes in short transactions and its SYSTEM event
//! joins the chain through the writer, which re-seals on a concurrent
//! append).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::task::TaskTracker;

use crate::admin::export::{encode_items, items, CsvColumns, Format};
use crate::admin::params::{encode_cursor, Params, FILTER_PARAMS};
use crate::cli::{EventsArgs, ExportArgs, KeygenArgs, VerifyArgs};
use crate::config::{AuditConfig, Config, StorageKind};
use crate::event::checkpoint::{public_key_text, CheckpointSigner, TrustedKeys};
use crate::event::EventRecord;
use crate::pipeline::maintenance::{self, MaintenanceConfig};
use crate::pipeline::{spawn_writer, WriterConfig};
use crate::store::file::FileStore;
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::verify::fleet::{verify_fleet, verify_source, FleetVerifyReport};
use crate::store::verify::{verify_any, Verification, VerifyOptions, VerifyReport};
use crate::store::{scope_filter, EventPage, EventQuery, PurgeReport, SharedStore, StoreError};

mod export_file;

/// Why an offline command failed; `exit_code` maps it for the shell.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// A flag's value is wrong; names the flag.
    #[error("--{param}: {message}")]
    BadFlag { param: String, message: String },
    #[error("audit.storage: {0}")]
    Unsupported(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How `verify` ended.
#[derive(Debug)]
pub enum Verified {
    Intact(VerifyReport),
    Broken(VerifyReport),
    /// The central store's report, source by source (`ok` false when a
    /// source was tampered with or misses seqs).
    Fleet(FleetVerifyReport),
}

/// Opens the configured store for reading.
pub async fn open_for_reading(audit: &AuditConfig) -> Result<SharedStore, OfflineError> {
    match audit.storage {
        StorageKind::Sqlite => Ok(Arc::new(
            SqliteStore::open_read_only(&audit.file_path).await?,
        )),
        StorageKind::File => Ok(Arc::new(FileStore::open_for_reading(
            &audit.file_path,
            crate::app::rotation(audit.file_rotation),
        )?)),
        StorageKind::Memory => Err(memory_unsupported()),
    }
}

/// Opens the store an offline command reads: the central store with
/// `central` (the database `shipping.postgres_dsn(_file)` names), else the
/// configured local one.
pub async fn open_reader(config: &Config, central: bool) -> Result<SharedStore, OfflineError> {
    if !central {
        return open_for_reading(&config.audit).await;
    }
    let Some(target) = &config.shipping.postgres else {
        return Err(no_central_dsn());
    };
    Ok(Arc::new(PostgresStore::open(&target.dsn).await?))
}

fn no_central_dsn() -> OfflineError {
    OfflineError::BadFlag {
        param: "central".into(),
        message: "the central store is the database of shipping.postgres_dsn or \
                  shipping.postgres_dsn_file; set one (or pass --postgres-dsn-file)"
            .into(),
    }
}

async fn open_for_writing(audit: &AuditConfig) -> Result<SharedStore, OfflineError> {
    match audit.storage {
        StorageKind::Sqlite => Ok(Arc::new(SqliteStore::open(&audit.file_path).await?)),
        StorageKind::File => Ok(Arc::new(FileStore::open(
            &audit.file_path,
            crate::app::rotation(audit.file_rotation),
        )?)),
        StorageKind::Memory => Err(memory_unsupported()),
    }
}

fn memory_unsupported() -> OfflineError {
    OfflineError::Unsupported(
        "the memory store lives inside the running server; query it through the admin API".into(),
    )
}

/// `events`: one page, newest first, as a table or as the API's JSON.
pub async fn events(
    config: &Config,
    args: &EventsArgs,
    out: &mut dyn Write,
) -> Result<(), OfflineError> {
    let mut pairs = args.filter.query_pairs();
    if let Some(limit) = &args.limit {
        pairs.push(("limit", limit.clone()));
    }
    if let Some(cursor) = &args.cursor {
        pairs.push(("cursor", cursor.clone()));
    }
    let mut allowed = FILTER_PARAMS.to_vec();
    allowed.extend(["limit", "cursor"]);
    let params = parse_params(&pairs, &allowed)?;
    let filter = params.filter().map_err(bad_flag)?;
    let limit = params.limit().map_err(bad_flag)?;
    let before_seq = params.cursor().map_err(bad_flag)?;
    let store = open_reader(config, args.store.central()).await?;
    let instance = config.instance.source();
    let page = match scope_filter(store.as_ref(), filter, instance.as_ref()).await? {
        Some(filter) => {
            store
                .query_records(&EventQuery {
                    filter,
                    limit,
                    before_seq,
                })
                .await?
        }
        None => EventPage {
            events: Vec::new(),
            next_before_seq: None,
        },
    };
    let next_cursor = page.next_before_seq.map(encode_cursor);
    let written = if args.json {
        let body = serde_json::json!({"events": page.events, "next_cursor": next_cursor});
        writeln!(out, "{body}")
    } else {
        write_table(out, &page.events, next_cursor.as_deref())
    };
    written.map_err(|source| OfflineError::Write {
        path: PathBuf::from("<stdout>"),
        source,
    })
}

/// `export`: every matching event, oldest first, written to `args.out`
/// through the same encoder as `/api/export`. Returns the path written.
pub async fn export(config: &Config, args: &ExportArgs) -> Result<PathBuf, OfflineError> {
    let format = Format::parse(&args.format).ok_or_else(|| OfflineError::BadFlag {
        param: "format".into(),
        message: format!("must be json, ndjson or csv, not {:?}", args.format),
    })?;
    let params = parse_params(&args.filter.query_pairs(), &FILTER_PARAMS)?;
    let store = open_reader(config, args.store.central()).await?;
    let instance = config.instance.source();
    let filter = scope_filter(
        store.as_ref(),
        params.filter().map_err(bad_flag)?,
        instance.as_ref(),
    )
    .await?;
    let write_err = |source| OfflineError::Write {
        path: args.out.clone(),
        source,
    };
    // Written beside the target and renamed at the end, so a failed export
    // never leaves a plausible-looking short file.
    let partial = partial_path(&args.out);
    let file = std::fs::File::create(&partial).map_err(write_err)?;
    let mut file = std::io::BufWriter::new(file);
    let verifiable = args
        .verifiable
        .unwrap_or(config.audit.signing_key.is_some());
    let events = match filter {
        Some(filter) => items(&store, format, filter, verifiable),
        None => crate::admin::export::cover::plain(futures_util::stream::empty().boxed()),
    };
    let columns = CsvColumns::of(store.as_ref());
    let mut body = Box::pin(encode_items(format, columns, events));
    let mut failed = None;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(bytes) => file.write_all(&bytes).map_err(write_err)?,
            Err(_) => {
                failed = Some(StoreError::Other(
                    "the store failed while exporting; nothing was written".into(),
                ));
                break;
            }
        }
    }
    if let Some(error) = failed {
        drop(file);
        let _ = std::fs::remove_file(&partial);
        return Err(error.into());
    }
    file.flush().map_err(write_err)?;
    drop(file);
    std::fs::rename(&partial, &args.out).map_err(write_err)?;
    Ok(args.out.clone())
}

/// `verify`: walks the store's chain and checkpoints.
pub async fn verify(config: &Config, args: &VerifyArgs) -> Result<Verified, OfflineError> {
    let options = verify_options(args)?;
    let store = open_reader(config, args.store.central()).await?;
    let source = args.source.as_deref();
    if source.is_some_and(|s| s.trim().is_empty()) {
        return Err(OfflineError::BadFlag {
            param: "source".into(),
            message: "must name a source_id".into(),
        });
    }
    if store.holds_many_sources() {
        // Each source has its own chain: a checkpoint names one of them.
        return Ok(Verified::Fleet(match source {
            Some(source) => verify_source(store.as_ref(), source, &options).await?,
            None if !options.expect_checkpoints.is_empty() => {
                return Err(OfflineError::BadFlag {
                    param: "expect-checkpoint".into(),
                    message: "the central store holds one chain per source: name the source \
                              the checkpoint belongs to with --source <source_id>"
                        .into(),
                })
            }
            None => verify_fleet(store.as_ref(), &options).await?,
        }));
    }
    if let Some(source) = source {
        let own = store.source_id().await?;
        if own.as_deref() != Some(source) {
            return Err(OfflineError::BadFlag {
                param: "source".into(),
                message: format!(
                    "this store is source {}, not {source}",
                    own.as_deref().unwrap_or("(none recorded)")
                ),
            });
        }
    }
    Ok(match verify_any(store.as_ref(), options).await? {
        Verification::Chain(report) => Verified::from(*report),
        Verification::Fleet(report) => Verified::Fleet(report),
    })
}

/// `verify --file`: checks an export alone, with no store and no network.
pub fn verify_file(args: &VerifyArgs) -> Result<Verified, OfflineError> {
    let options = verify_options(args)?;
    let path = args.file.clone().unwrap_or_default();
    Ok(Verified::from(export_file::verify(&path, options)?))
}

/// The keys and expectations the flags name.
fn verify_options(args: &VerifyArgs) -> Result<VerifyOptions, OfflineError> {
    let bad = |param: &str, message: String| OfflineError::BadFlag {
        param: param.into(),
        message,
    };
    let mut keys = TrustedKeys::new();
    for value in args
        .public_keys
        .iter()
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
    {
        let path = Path::new(value);
        let added = if path.is_file() {
            let text = std::fs::read_to_string(path)
                .map_err(|e| bad("public-key", format!("cannot read {value}: {e}")))?;
            keys.add_lines(&text)
                .map_err(|e| bad("public-key", format!("{value}: {e}")))?
        } else {
            keys.add_lines(value)
                .map_err(|e| bad("public-key", format!("{e}, or a file of such keys")))?
        };
        if added == 0 {
            return Err(bad("public-key", format!("{value} holds no key")));
        }
    }
    let expect_checkpoints = args
        .expect_checkpoints
        .iter()
        .map(|v| {
            v.split_once(':')
                .and_then(|(seq, hash)| {
                    let hash = hash.trim().to_ascii_lowercase();
                    let hex = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
                    Some((seq.trim().parse::<i64>().ok()?, hash)).filter(|_| hex)
                })
                .ok_or_else(|| {
                    bad(
                        "expect-checkpoint",
                        format!("must be SEQ:HASH (a seq and 64 hex digits), not {v:?}"),
                    )
                })
        })
        .collect::<Result<_, _>>()?;
    Ok(VerifyOptions {
        keys,
        tolerate_unknown_keys: false,
        expect_checkpoints,
    })
}

/// What `keygen` made.
#[derive(Debug, serde::Serialize)]
pub struct KeygenReport {
    pub private_key_file: PathBuf,
    pub public_key_file: PathBuf,
    /// Base64 of the 32-byte Ed25519 public key.
    pub public_key: String,
    pub key_id: String,
}

/// `keygen`: a fresh Ed25519 key pair; the private key is written with
/// mode 0600 (never over an existing file unless `--force`), the public
/// key beside it with `.pub`.
pub fn keygen(args: &KeygenArgs) -> Result<KeygenReport, OfflineError> {
    let signer = CheckpointSigner::generate().map_err(|e| OfflineError::BadFlag {
        param: "out".into(),
        message: e.to_string(),
    })?;
    let public_key = public_key_text(&signer.public_key());
    let mut public_path = args.out.clone().into_os_string();
    public_path.push(".pub");
    let public_path = PathBuf::from(public_path);
    write_private(&args.out, &signer.private_key_text(), args.force)?;
    std::fs::write(&public_path, format!("{public_key}\n")).map_err(|source| {
        OfflineError::Write {
            path: public_path.clone(),
            source,
        }
    })?;
    Ok(KeygenReport {
        private_key_file: args.out.clone(),
        public_key_file: public_path,
        public_key,
        key_id: signer.key_id().to_owned(),
    })
}

/// Writes the private key: created with mode 0600 (never readable by
/// others, not even for a moment), refusing an existing file unless
/// `force`.
fn write_private(path: &Path, text: &str, force: bool) -> Result<(), OfflineError> {
    let write_err = |source| OfflineError::Write {
        path: path.to_owned(),
        source,
    };
    if path.exists() && !force {
        return Err(OfflineError::BadFlag {
            param: "out".into(),
            message: format!("{} exists; pass --force to replace it", path.display()),
        });
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(write_err)?;
    #[cfg(unix)]
    {
        // An existing file (with --force) keeps its old mode on open.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(write_err)?;
    }
    file.write_all(format!("{text}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(write_err)
}

/// `purge`: retention and the size cap, now. Each purge that removed
/// something is recorded as a SYSTEM event in the store itself.
pub async fn purge(config: &Config) -> Result<Vec<PurgeReport>, OfflineError> {
    let store = open_for_writing(&config.audit).await?;
    let tracker = TaskTracker::new();
    let (events, _health) = spawn_writer(
        store.clone(),
        WriterConfig {
            enabled: config.audit.enabled,
            min_level: config.audit.log_level,
            queue_capacity: 64,
            max_batch: 64,
            commit_interval: Duration::ZERO,
            health_interval: Duration::from_secs(60),
            shutdown_attempts: 3,
            source: config.instance.source(),
            checkpoints: None,
            queue_max_bytes: u64::MAX / 2,
            ledger: None,
        },
        &tracker,
    )
    .await?;
    let reports = maintenance::run_once(
        &store,
        &events,
        &MaintenanceConfig {
            retention_days: config.audit.retention_days,
            max_store_bytes: config.audit.max_store_mb.saturating_mul(1024 * 1024),
            interval: Duration::from_secs(3600),
            ship_targets: config.shipping.target_names(),
        },
    )
    .await?;
    events.flush().await;
    Ok(reports)
}

/// `purge --central`: central retention now, by whole months
/// (`shipping.central_retention_days`). Returns the partitions dropped.
pub async fn purge_central(config: &Config) -> Result<Vec<String>, OfflineError> {
    let days = config.shipping.central_retention_days;
    if days == 0 {
        return Err(OfflineError::BadFlag {
            param: "central".into(),
            message: "shipping.central_retention_days is 0 (keep every month); set the days \
                      after which whole months are dropped"
                .into(),
        });
    }
    let Some(target) = &config.shipping.postgres else {
        return Err(no_central_dsn());
    };
    let store = PostgresStore::open(&target.dsn).await?;
    let cutoff = chrono::Utc::now() - chrono::Duration::days(i64::from(days));
    Ok(store.drop_months_before(cutoff).await?)
}

// === impl Verified ===

impl From<VerifyReport> for Verified {
    fn from(report: VerifyReport) -> Self {
        if report.ok {
            Verified::Intact(report)
        } else {
            Verified::Broken(report)
        }
    }
}

fn parse_params(pairs: &[(&str, String)], allowed: &[&str]) -> Result<Params, OfflineError> {
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())))
        .finish();
    Params::parse(Some(&query), allowed).map_err(bad_flag)
}

fn bad_flag(error: crate::admin::AdminError) -> OfflineError {
    match error {
        crate::admin::AdminError::InvalidParameter { param, message } => OfflineError::BadFlag {
            param: param.replace('_', "-"),
            message: message.replace('`', ""),
        },
        other => OfflineError::BadFlag {
            param: "filter".into(),
            message: other.to_string(),
        },
    }
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    out.with_file_name(name)
}

/// The page as a table; central records get a POD column (the source's
/// pod, or its source_id when it ran outside Kubernetes).
fn write_table(
    out: &mut dyn Write,
    events: &[EventRecord],
    next_cursor: Option<&str>,
) -> std::io::Result<()> {
    let central = events.iter().any(|e| e.origin.is_some());
    let pod_header = if central { "POD  " } else { "" };
    writeln!(
        out,
        "{pod_header}{:>8}  {:<27}  {:<20}  {:<8}  {:<36}  MESSAGE",
        "SEQ", "TIMESTAMP", "TYPE", "LEVEL", "REQUEST_ID"
    )?;
    for e in events {
        let pod = match &e.origin {
            Some(o) => format!("{}  ", o.pod.as_deref().unwrap_or(&o.source_id)),
            None => String::new(),
        };
        writeln!(
            out,
            "{pod}{:>8}  {:<27}  {:<20}  {:<8}  {:<36}  {}",
            e.seq,
            e.timestamp,
            e.event_type.as_str(),
            e.level.as_str(),
            e.request_id.as_deref().unwrap_or("-"),
            e.message.replace(['\n', '\r'], " ")
        )?;
    }
    if let Some(cursor) = next_cursor {
        writeln!(out, "(more: --cursor {cursor})")?;
    }
    Ok(())
}
