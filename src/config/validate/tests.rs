use std::collections::HashMap;
use std::io::Write;

use super::*;

fn env(pairs: &[(&'static str, &'static str)]) -> HashMap<&'static str, &'static str> {
    pairs.iter().copied().collect()
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn errors(r: Result<Config, ConfigErrors>) -> Vec<ConfigError> {
    r.unwrap_err().0
}

#[test]
fn defaults_match_the_contract() {
    let c = load(None, &env(&[]), &FlagValues::new()).unwrap();
    assert_eq!(c.proxy.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.proxy.upstream.to_string(), "https://api.openai.com");
    assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9090");
    assert_eq!(c.audit.storage, StorageKind::Sqlite);
    assert_eq!(c.audit.file_path, PathBuf::from("./audit_logs/"));
    assert_eq!(c.audit.log_level, Level::Info);
    assert_eq!(c.audit.retention_days, 90);
    assert_eq!(c.audit.memory_limit, 1000);
    assert_eq!(c.audit.on_store_failure, FailMode::FailOpen);
    assert_eq!(c.proxy.shutdown_grace, Duration::from_secs(30));
    assert!(c.audit.enabled);
}

#[test]
fn flag_beats_env_beats_file() {
    let f = file("[proxy]\nlisten = \"127.0.0.1:1000\"\nupstream = \"http://127.0.0.1:1\"\n[audit]\nlog_level = \"ERROR\"\n");
    let e = env(&[
        ("LLM_AUDIT_PROXY_LISTEN", "127.0.0.1:2000"),
        ("LLM_AUDIT_PROXY_LOG_LEVEL", "warning"),
    ]);
    let mut flags = FlagValues::new();
    flags.insert("proxy.listen", "127.0.0.1:3000".into());
    let c = load(Some(f.path()), &e, &flags).unwrap();
    assert_eq!(c.proxy.listen.port(), 3000);
    assert_eq!(c.audit.log_level, Level::Warning);
    assert_eq!(c.proxy.upstream.to_string(), "http://127.0.0.1:1");
}

#[test]
fn every_error_is_reported_with_its_key() {
    let f = file(
        "[proxy]\nlisten = \"nowhere\"\nupstream = \"ftp://x\"\nupstream_timeout_secs = -1\n\
         [audit]\nlog_level = \"LOUD\"\nstorage = \"postgres\"\nretention_days = \"x\"\nfile_rotation = \"monthly\"\n\
         [bogus]\nthing = 1\n",
    );
    let errs = errors(load(Some(f.path()), &env(&[]), &FlagValues::new()));
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    for k in [
        "proxy.listen",
        "proxy.upstream",
        "proxy.upstream_timeout_secs",
        "audit.log_level",
        "audit.storage",
        "audit.retention_days",
        "audit.file_rotation",
        "bogus.thing",
    ] {
        assert!(keys.contains(&k), "{k} missing from {keys:?}");
    }
    let text = ConfigErrors(errs).to_string();
    assert!(text.contains("audit.log_level: must be one of"), "{text}");
}

#[test]
fn env_errors_name_the_variable() {
    let errs = errors(load(
        None,
        &env(&[("LLM_AUDIT_PROXY_MEMORY_LIMIT", "lots")]),
        &FlagValues::new(),
    ));
    assert_eq!(errs[0].key, "audit.memory_limit");
    assert!(errs[0].to_string().contains("LLM_AUDIT_PROXY_MEMORY_LIMIT"));
}

#[test]
fn admin_off_loopback_needs_a_token() {
    let e = env(&[("LLM_AUDIT_PROXY_ADMIN_LISTEN", "0.0.0.0:9090")]);
    let errs = errors(load(None, &e, &FlagValues::new()));
    assert_eq!(errs[0].key, "admin.listen");
    let e = env(&[
        ("LLM_AUDIT_PROXY_ADMIN_LISTEN", "0.0.0.0:9090"),
        ("LLM_AUDIT_PROXY_ADMIN_TOKEN", "0123456789abcdef0123"),
    ]);
    let c = load(None, &e, &FlagValues::new()).unwrap();
    assert_eq!(c.admin.tokens.len(), 1);
    assert!(!format!("{c:?}").contains("0123456789abcdef0123"));
}

#[test]
fn short_tokens_are_refused() {
    let errs = errors(load(
        None,
        &env(&[("LLM_AUDIT_PROXY_ADMIN_TOKEN", "short")]),
        &FlagValues::new(),
    ));
    assert_eq!(errs[0].key, "admin.tokens");
}

#[test]
fn upstream_prefix_is_kept() {
    let e = env(&[(
        "LLM_AUDIT_PROXY_UPSTREAM",
        "http://127.0.0.1:8000/gateway/v1/",
    )]);
    let c = load(None, &e, &FlagValues::new()).unwrap();
    let uri = c.proxy.upstream.uri_for("/chat/completions?x=1").unwrap();
    assert_eq!(
        uri.to_string(),
        "http://127.0.0.1:8000/gateway/v1/chat/completions?x=1"
    );
}

#[test]
fn unreadable_and_malformed_files_are_errors() {
    let errs = errors(load(
        Some(Path::new("/nonexistent/llm-audit-proxy.toml")),
        &env(&[]),
        &FlagValues::new(),
    ));
    assert_eq!(errs[0].key, "config");
    let f = file("[proxy\nlisten=");
    let errs = errors(load(Some(f.path()), &env(&[]), &FlagValues::new()));
    assert!(errs[0].message.contains("not valid TOML"));
}

#[test]
fn masked_json_hides_tokens() {
    let e = env(&[("LLM_AUDIT_PROXY_ADMIN_TOKEN", "0123456789abcdef0123")]);
    let c = load(None, &e, &FlagValues::new()).unwrap();
    let json = c.to_masked_json().to_string();
    assert!(!json.contains("0123456789abcdef0123"));
    assert!(json.contains("[MASKED]"));
}

#[test]
fn max_batch_defaults_to_2048_events() {
    let c = load(None, &env(&[]), &FlagValues::new()).unwrap();
    assert_eq!(c.queue.max_batch, 2048);
    let c = load(
        None,
        &env(&[("LLM_AUDIT_PROXY_QUEUE_MAX_BATCH", "512")]),
        &FlagValues::new(),
    )
    .unwrap();
    assert_eq!(c.queue.max_batch, 512);
}

#[test]
fn commit_interval_defaults_to_5_ms_and_refuses_what_is_out_of_range() {
    let c = load(None, &env(&[]), &FlagValues::new()).unwrap();
    assert_eq!(c.queue.commit_interval, Duration::from_millis(5));
    let f = file("[queue]\ncommit_interval_ms = 0\n");
    let c = load(Some(f.path()), &env(&[]), &FlagValues::new()).unwrap();
    assert_eq!(c.queue.commit_interval, Duration::ZERO);
    for bad in ["-1", "1001", "soon"] {
        let errs = errors(load(
            None,
            &env(&[("LLM_AUDIT_PROXY_QUEUE_COMMIT_INTERVAL_MS", bad)]),
            &FlagValues::new(),
        ));
        assert_eq!(errs[0].key, "queue.commit_interval_ms", "{bad}");
        assert!(
            errs[0]
                .to_string()
                .contains("LLM_AUDIT_PROXY_QUEUE_COMMIT_INTERVAL_MS"),
            "{bad}"
        );
    }
}

#[test]
fn scoped_tokens_come_from_lists_and_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    // `env` takes static strings; a test may leak one.
    let path: &'static str = Box::leak(file.to_str().unwrap().to_owned().into_boxed_str());
    std::fs::write(
        &file,
        "# rotated 2026-12\nread reader-from-file-0123\nread,write both-from-file-01234\n\nwrite writer-from-file-0123\n",
    )
    .unwrap();
    let e = env(&[
        ("LLM_AUDIT_PROXY_ADMIN_LISTEN", "0.0.0.0:9090"),
        (
            "LLM_AUDIT_PROXY_ADMIN_READ_TOKENS",
            "reader-one-0123456789,reader-two-0123456789",
        ),
        (
            "LLM_AUDIT_PROXY_ADMIN_WRITE_TOKENS",
            "writer-one-0123456789",
        ),
        ("LLM_AUDIT_PROXY_ADMIN_TOKENS_FILE", path),
    ]);
    let c = load(None, &e, &FlagValues::new()).unwrap();
    assert!(c.admin.tokens.is_empty() && c.admin.has_tokens());
    let read: Vec<&str> = c.admin.read_tokens.iter().map(|t| t.expose()).collect();
    let write: Vec<&str> = c.admin.write_tokens.iter().map(|t| t.expose()).collect();
    assert_eq!(
        read,
        [
            "reader-one-0123456789",
            "reader-two-0123456789",
            "reader-from-file-0123",
            "both-from-file-01234"
        ]
    );
    assert_eq!(
        write,
        [
            "writer-one-0123456789",
            "both-from-file-01234",
            "writer-from-file-0123"
        ]
    );
    assert!(!format!("{c:?}").contains("reader-one"));

    // Errors name the key and the line, never the token.
    std::fs::write(
        &file,
        "read reader-from-file-0123\nadmin secret-token-0123456789\n",
    )
    .unwrap();
    let e = env(&[("LLM_AUDIT_PROXY_ADMIN_TOKENS_FILE", path)]);
    let errs = errors(load(None, &e, &FlagValues::new()));
    assert_eq!(errs[0].key, "admin.tokens_file");
    assert!(errs[0].message.contains("line 2"), "{}", errs[0].message);
    assert!(!errs[0].message.contains("secret-token"));
    std::fs::write(&file, "read short\n").unwrap();
    let errs = errors(load(None, &e, &FlagValues::new()));
    assert!(errs[0].message.contains("at least 16"));
}

#[test]
fn listener_limits_have_defaults_and_bounds() {
    let c = load(None, &env(&[]), &FlagValues::new()).unwrap();
    assert_eq!(c.proxy.max_connections, 4096);
    assert_eq!(c.admin.max_connections, 64);
    assert_eq!(c.admin.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.admin.idle_timeout, Duration::from_secs(60));
    assert_eq!(c.admin.refusal_interval, Duration::from_secs(60));
    assert_eq!(c.admin.page_max_bytes, 8 * 1024 * 1024);
    let errs = errors(load(
        None,
        &env(&[
            ("LLM_AUDIT_PROXY_ADMIN_MAX_CONNECTIONS", "0"),
            ("LLM_AUDIT_PROXY_ADMIN_PAGE_MAX_BYTES", "10"),
        ]),
        &FlagValues::new(),
    ));
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["admin.max_connections", "admin.page_max_bytes"]);
}

#[test]
fn full_wait_defaults_to_250_ms_allows_0_and_refuses_what_is_out_of_range() {
    let c = load(None, &env(&[]), &FlagValues::new()).unwrap();
    assert_eq!(c.queue.full_wait, Duration::from_millis(250));
    let f = file("[queue]\nfull_wait_ms = 0\n");
    let c = load(Some(f.path()), &env(&[]), &FlagValues::new()).unwrap();
    assert_eq!(c.queue.full_wait, Duration::ZERO);
    let c = load(
        None,
        &env(&[("LLM_AUDIT_PROXY_QUEUE_FULL_WAIT_MS", "1000")]),
        &FlagValues::new(),
    )
    .unwrap();
    assert_eq!(c.queue.full_wait, Duration::from_secs(1));
    for bad in ["-1", "60001", "a while"] {
        let errs = errors(load(
            None,
            &env(&[("LLM_AUDIT_PROXY_QUEUE_FULL_WAIT_MS", bad)]),
            &FlagValues::new(),
        ));
        assert_eq!(errs[0].key, "queue.full_wait_ms", "{bad}");
        assert!(
            errs[0]
                .to_string()
                .contains("LLM_AUDIT_PROXY_QUEUE_FULL_WAIT_MS"),
            "{bad}"
        );
    }
}

#[test]
fn durability_keys_default_to_buffered_normal_and_64_mib_and_name_themselves_when_bad() {
    let c = load(None, &env(&[]), &FlagValues::new()).unwrap();
    assert_eq!(c.audit.durability, Durability::Buffered);
    assert_eq!(c.audit.sqlite_synchronous, SqliteSynchronous::Normal);
    assert_eq!(c.queue.max_bytes, 64 * 1024 * 1024);
    let f = file("[audit]\ndurability = \"strict\"\nsqlite_synchronous = \"FULL\"\n[queue]\nmax_bytes = 2097152\n");
    let c = load(Some(f.path()), &env(&[]), &FlagValues::new()).unwrap();
    assert_eq!(c.audit.durability, Durability::Strict);
    assert_eq!(c.audit.sqlite_synchronous, SqliteSynchronous::Full);
    assert_eq!(c.queue.max_bytes, 2 * 1024 * 1024);
    for (var, key, bad) in [
        (
            "LLM_AUDIT_PROXY_DURABILITY",
            "audit.durability",
            "sometimes",
        ),
        (
            "LLM_AUDIT_PROXY_SQLITE_SYNCHRONOUS",
            "audit.sqlite_synchronous",
            "off",
        ),
        ("LLM_AUDIT_PROXY_QUEUE_MAX_BYTES", "queue.max_bytes", "1000"),
    ] {
        let errs = errors(load(None, &env(&[(var, bad)]), &FlagValues::new()));
        assert_eq!(errs[0].key, key, "{bad}");
        assert!(errs[0].to_string().contains(var), "{bad}");
    }
}

#[test]
fn the_sqlite_search_index_is_on_by_default_and_its_key_names_itself_when_bad() {
    let c = load(None, &env(&[]), &FlagValues::new()).unwrap();
    assert!(c.audit.sqlite_search_index);
    let f = file("[audit]\nsqlite_search_index = false\n");
    let c = load(Some(f.path()), &env(&[]), &FlagValues::new()).unwrap();
    assert!(!c.audit.sqlite_search_index);
    let c = load(
        Some(f.path()),
        &env(&[("LLM_AUDIT_PROXY_SQLITE_SEARCH_INDEX", "true")]),
        &FlagValues::new(),
    )
    .unwrap();
    assert!(c.audit.sqlite_search_index, "the environment wins");
    for bad in ["sometimes", "2"] {
        let errs = errors(load(
            None,
            &env(&[("LLM_AUDIT_PROXY_SQLITE_SEARCH_INDEX", bad)]),
            &FlagValues::new(),
        ));
        assert_eq!(errs[0].key, "audit.sqlite_search_index", "{bad:?}");
        assert!(
            errs[0]
                .to_string()
                .contains("LLM_AUDIT_PROXY_SQLITE_SEARCH_INDEX"),
            "{bad:?}"
        );
    }
    let f = file("[audit]\nsqlite_search_index = \"no\"\n");
    let errs = errors(load(Some(f.path()), &env(&[]), &FlagValues::new()));
    assert_eq!(errs[0].key, "audit.sqlite_search_index");
}

#[test]
fn shipping_is_off_by_default() {
    let c = load(None, &env(&[]), &FlagValues::new()).unwrap();
    assert!(!c.shipping.is_enabled());
    assert_eq!(c.shipping.batch_size, 1000);
    assert_eq!(c.shipping.max_backoff, Duration::from_secs(30));
}

#[test]
fn postgres_dsn_comes_from_env_or_file_and_is_never_printed() {
    let dsn = "postgres://audit:s3cr3t-pw@db.example:5432/audit";
    let c = load(
        None,
        &env(&[("LLM_AUDIT_PROXY_SHIPPING_POSTGRES_DSN", dsn)]),
        &FlagValues::new(),
    )
    .unwrap();
    let target = c.shipping.postgres.as_ref().unwrap();
    assert_eq!(target.dsn.expose(), dsn);
    assert!(!format!("{c:?}").contains("s3cr3t-pw"));
    assert!(!c.to_masked_json().to_string().contains("s3cr3t-pw"));

    let secret = file(&format!("{dsn}\n"));
    let path = secret.path().to_str().unwrap().to_owned();
    let toml = file(&format!("[shipping]\npostgres_dsn_file = {path:?}\n"));
    let c = load(Some(toml.path()), &env(&[]), &FlagValues::new()).unwrap();
    assert_eq!(c.shipping.postgres.unwrap().dsn.expose(), dsn);
}

#[test]
fn malformed_postgres_dsn_names_the_key_and_hides_the_value() {
    for bad in [
        "postgres://audit:s3cr3t-pw@db.example:notaport/audit",
        "mysql://audit:s3cr3t-pw@db.example/audit",
        "postgres://:s3cr3t-pw@/audit",
    ] {
        let errs = errors(load(
            None,
            &env(&[("LLM_AUDIT_PROXY_SHIPPING_POSTGRES_DSN", bad)]),
            &FlagValues::new(),
        ));
        assert_eq!(errs.len(), 1, "{bad}: {errs:?}");
        assert_eq!(errs[0].key, "shipping.postgres_dsn");
        let text = errs[0].to_string();
        assert!(
            text.contains("LLM_AUDIT_PROXY_SHIPPING_POSTGRES_DSN"),
            "{text}"
        );
        assert!(!text.contains("s3cr3t-pw"), "{text}");
    }
}

#[test]
fn postgres_dsn_and_dsn_file_together_are_refused() {
    let secret = file("postgres://a@h/db");
    let path = secret.path().to_str().unwrap();
    let errs = errors(load(
        None,
        &env(&[
            ("LLM_AUDIT_PROXY_SHIPPING_POSTGRES_DSN", "postgres://a@h/db"),
            (
                "LLM_AUDIT_PROXY_SHIPPING_POSTGRES_DSN_FILE",
                Box::leak(path.to_owned().into_boxed_str()),
            ),
        ]),
        &FlagValues::new(),
    ));
    assert_eq!(errs[0].key, "shipping.postgres_dsn");
    let errs = errors(load(
        None,
        &env(&[("LLM_AUDIT_PROXY_SHIPPING_BATCH_SIZE", "0")]),
        &FlagValues::new(),
    ));
    assert_eq!(errs[0].key, "shipping.batch_size");
}

/// What a loaded config holds of one secret, as text to compare.
type SecretOf = fn(&Config) -> Option<String>;

/// Each secret that may come inline or from a file (a mounted Secret):
/// its file key, its inline key, a valid value, and what a config loaded
/// with that value holds.
fn secrets_given_inline_or_in_a_file() -> Vec<(Key, Key, String, String, SecretOf)> {
    let signer = CheckpointSigner::generate().unwrap();
    vec![
        (
            keys::AUDIT_SIGNING_KEY_FILE,
            keys::AUDIT_SIGNING_KEY,
            signer.private_key_text(),
            signer.key_id().to_owned(),
            |c| c.audit.signing_key.as_ref().map(|k| k.key_id().to_owned()),
        ),
        (
            keys::SHIPPING_POSTGRES_DSN_FILE,
            keys::SHIPPING_POSTGRES_DSN,
            "postgres://audit:s3cr3t-pw@db.example:5432/audit".to_owned(),
            "postgres://audit:s3cr3t-pw@db.example:5432/audit".to_owned(),
            |c| {
                c.shipping
                    .postgres
                    .as_ref()
                    .map(|t| t.dsn.expose().to_owned())
            },
        ),
        (
            keys::SHIPPING_HTTP_TOKEN_FILE,
            keys::SHIPPING_HTTP_TOKEN,
            "tok-s3cr3t-0123456789abcdef".to_owned(),
            "tok-s3cr3t-0123456789abcdef".to_owned(),
            |c| {
                c.shipping
                    .http
                    .as_ref()
                    .map(|t| t.token.expose().to_owned())
            },
        ),
    ]
}

/// The HTTP token is read only beside a URL.
fn with_its_companions(file_key: Key, pairs: &mut Vec<(&'static str, &'static str)>) {
    if file_key.name == keys::SHIPPING_HTTP_TOKEN_FILE.name {
        pairs.push((keys::SHIPPING_HTTP_URL.env, "http://127.0.0.1:9/ingest"));
    }
}

fn leak(text: &str) -> &'static str {
    Box::leak(text.to_owned().into_boxed_str())
}

#[test]
fn every_secret_comes_from_its_file_or_inline_and_both_at_once_are_refused_without_the_value() {
    for (file_key, inline_key, value, held, held_of) in secrets_given_inline_or_in_a_file() {
        let secret = file(&format!("{value}\n"));
        let path = leak(secret.path().to_str().unwrap());

        // Either alone is taken, the file's text without its newline.
        for pair in [(file_key.env, path), (inline_key.env, leak(&value))] {
            let mut pairs = vec![pair];
            with_its_companions(file_key, &mut pairs);
            let loaded = load(None, &env(&pairs), &FlagValues::new());
            let config = loaded.unwrap_or_else(|e| panic!("{}: {e:?}", pair.0));
            assert_eq!(
                held_of(&config).as_deref(),
                Some(held.as_str()),
                "{}",
                pair.0
            );
        }

        // Both: one error, on the inline key, naming both variables.
        let mut pairs = vec![(file_key.env, path), (inline_key.env, leak(&value))];
        with_its_companions(file_key, &mut pairs);
        let errs = errors(load(None, &env(&pairs), &FlagValues::new()));
        assert_eq!(errs.len(), 1, "{}: {errs:?}", inline_key.name);
        assert_eq!(errs[0].key, inline_key.name);
        let text = errs[0].to_string();
        assert!(text.contains("not both"), "{text}");
        assert!(
            text.contains(inline_key.env) && text.contains(file_key.env),
            "{text}"
        );
        assert!(!text.contains(&value), "{text}");

        // A file that cannot be read names its key and its path.
        let mut pairs = vec![(file_key.env, "/nonexistent/secret")];
        with_its_companions(file_key, &mut pairs);
        let errs = errors(load(None, &env(&pairs), &FlagValues::new()));
        assert_eq!(errs.len(), 1, "{}: {errs:?}", file_key.name);
        assert_eq!(errs[0].key, file_key.name);
        assert!(
            errs[0].to_string().contains("/nonexistent/secret"),
            "{errs:?}"
        );

        // A malformed value in the file names the file key, not the value.
        let bad = file("not a valid secret value, s3cr3t\n");
        let mut pairs = vec![(file_key.env, leak(bad.path().to_str().unwrap()))];
        with_its_companions(file_key, &mut pairs);
        let errs = errors(load(None, &env(&pairs), &FlagValues::new()));
        assert_eq!(errs.len(), 1, "{}: {errs:?}", file_key.name);
        assert_eq!(errs[0].key, file_key.name);
        assert!(!errs[0].to_string().contains("s3cr3t"), "{errs:?}");
    }
}
