//! The `llm-audit-proxy` binary: parse the command line, set up tracing,
//! run the command, map failures to exit codes.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use llm_audit_proxy::app;
use llm_audit_proxy::cli::{Cli, Command, PolicyCommand, PolicyTestArgs, StoreArgs};
use llm_audit_proxy::config::{self, Config, FlagValues, LogFormat, ProcessEnv};
use llm_audit_proxy::offline::{self, OfflineError, Verified};
use llm_audit_proxy::telemetry;

// The proxy allocates many short-lived buffers and JSON trees across
// threads; glibc's allocator spent about a third of the CPU at load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `verify` found the chain broken.
const EX_TAMPERED: u8 = 1;
/// `policy test` found something.
const EX_FOUND: u8 = 1;
/// Bad configuration or usage (sysexits EX_USAGE).
const EX_USAGE: u8 = 64;
/// A runtime failure such as a port already in use or a failing store.
const EX_SOFTWARE: u8 = 70;
/// An output file could not be written (EX_IOERR).
const EX_IOERR: u8 = 74;
/// `serve` stopped, but audit events were lost during the run.
const EX_EVENTS_LOST: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match config::check_file(&file, &ProcessEnv) {
            Ok(_) => {
                eprintln!("{}: OK", file.display());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::from(EX_USAGE)
            }
        },
        Command::Serve(args) => {
            let config = match load(args.config.as_deref(), &args.flag_values()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            telemetry::init(config.log.format);
            run_async(async move {
                match app::run(config).await {
                    Ok(stopped) if stopped.events_lost > 0 => {
                        eprintln!(
                            "{} audit events were lost during this run ({} not recorded in the store)",
                            stopped.events_lost, stopped.unrecorded
                        );
                        ExitCode::from(EX_EVENTS_LOST)
                    }
                    Ok(_) => ExitCode::SUCCESS,
                    Err(error) => {
                        tracing::error!(%error, "Audit proxy failed to start.");
                        eprintln!("{error}");
                        ExitCode::from(EX_SOFTWARE)
                    }
                }
            })
        }
        Command::FleetAdmin(args) => {
            let config = match load(args.config.as_deref(), &args.flag_values()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            telemetry::init(config.log.format);
            run_async(async move {
                match llm_audit_proxy::fleet::run(config).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(error) => {
                        tracing::error!(%error, "Fleet admin failed to start.");
                        eprintln!("{error}");
                        ExitCode::from(EX_SOFTWARE)
                    }
                }
            })
        }
        Command::Events(args) => offline_command(&args.store.clone(), move |config| async move {
            let mut stdout = std::io::stdout().lock();
            offline::events(&config, &args, &mut stdout).await?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::Export(args) => offline_command(&args.store.clone(), move |config| async move {
            let path = offline::export(&config, &args).await?;
            print_line(&path.display().to_string());
            Ok(ExitCode::SUCCESS)
        }),
        Command::Verify(args) if args.file.is_some() => {
            // An export needs no configuration, store or network.
            match offline::verify_file(&args) {
                Ok(verified) => verified_exit(verified),
                Err(error) => offline_error(error),
            }
        }
        Command::Verify(args) => offline_command(&args.store.clone(), |config| async move {
            Ok(verified_exit(offline::verify(&config, &args).await?))
        }),
        Command::Policy(PolicyCommand::Test(args)) => policy_test(&args),
        Command::Keygen(args) => match offline::keygen(&args) {
            Ok(report) => {
                print_line(&serde_json::to_string(&report).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Err(error) => offline_error(error),
        },
        Command::Purge(store) if store.central() => offline_command(&store, |config| async move {
            let dropped = offline::purge_central(&config).await?;
            print_line(&serde_json::json!({ "dropped_partitions": dropped }).to_string());
            Ok(ExitCode::SUCCESS)
        }),
        Command::Purge(store) => offline_command(&store, |config| async move {
            let reports = offline::purge(&config).await?;
            print_line(&serde_json::json!({ "purges": reports }).to_string());
            Ok(ExitCode::SUCCESS)
        }),
    }
}

/// `policy test`: the report on stdout; 0 when nothing was found, 1
/// otherwise.
fn policy_test(args: &PolicyTestArgs) -> ExitCode {
    use llm_audit_proxy::policy::{self, Direction, PolicySet};
    use std::io::Read;

    let direction = match args.direction.trim().to_ascii_lowercase().as_str() {
        "request" => Direction::Request,
        "response" => Direction::Response,
        other => {
            eprintln!("--direction: {other:?} is not a direction: use request or response");
            return ExitCode::from(EX_USAGE);
        }
    };
    let set = if args.packs.is_empty() {
        match load(args.config.as_deref(), &FlagValues::new()) {
            Ok(config) => config.policies,
            Err(code) => return code,
        }
    } else {
        let mut defs = Vec::new();
        for (i, pack) in args.packs.iter().enumerate() {
            match policy::load_pack(pack) {
                Ok(pack_defs) => defs.extend(
                    pack_defs
                        .into_iter()
                        .enumerate()
                        .map(|(j, d)| (format!("--pack[{i}].policies[{j}]"), d)),
                ),
                Err(error) => {
                    eprintln!("--pack: {}", error.message);
                    return ExitCode::from(EX_USAGE);
                }
            }
        }
        match PolicySet::compile_labeled(&defs) {
            Ok(set) => std::sync::Arc::new(set),
            Err(errors) => {
                for e in errors {
                    eprintln!("{e}");
                }
                return ExitCode::from(EX_USAGE);
            }
        }
    };
    let mut input = Vec::new();
    let read = match args.file.as_deref() {
        None => std::io::stdin().read_to_end(&mut input).map(|_| ()),
        Some(path) if path.as_os_str() == "-" => {
            std::io::stdin().read_to_end(&mut input).map(|_| ())
        }
        Some(path) => std::fs::read(path).map(|bytes| input = bytes),
    };
    if let Err(error) = read {
        eprintln!("cannot read the input: {error}");
        return ExitCode::from(EX_IOERR);
    }
    let report = policy::tester::test_input(&set, &input, direction);
    if args.json {
        print_line(&serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(report.render().as_bytes());
    }
    if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EX_FOUND)
    }
}

fn load(file: Option<&std::path::Path>, flags: &FlagValues) -> Result<Config, ExitCode> {
    config::load(file, &ProcessEnv, flags).map_err(|errors| {
        eprintln!("invalid configuration:\n{errors}");
        ExitCode::from(EX_USAGE)
    })
}

/// Loads the configuration for an offline command and runs it.
fn offline_command<F, Fut>(store: &StoreArgs, run: F) -> ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = Result<ExitCode, OfflineError>>,
{
    let config = match load(store.config.as_deref(), &store.flag_values()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Offline output is for people and scripts; diagnostics stay terse.
    telemetry::init(LogFormat::Text);
    run_async(async move {
        match run(config).await {
            Ok(code) => code,
            Err(error) => offline_error(error),
        }
    })
}

/// Prints a failed offline command's error and maps it to an exit code.
fn offline_error(error: OfflineError) -> ExitCode {
    eprintln!("{error}");
    ExitCode::from(match error {
        OfflineError::BadFlag { .. } | OfflineError::Unsupported(_) => EX_USAGE,
        OfflineError::Write { .. } => EX_IOERR,
        OfflineError::Store(_) => EX_SOFTWARE,
    })
}

/// Prints a verify report; a fault goes to stderr too, and exits 1.
fn verified_exit(verified: Verified) -> ExitCode {
    match verified {
        Verified::Fleet(report) => {
            print_line(&serde_json::to_string(&report).unwrap_or_default());
            for t in &report.tampered {
                eprintln!(
                    "verify failed ({}) in source {} at seq {}: {}",
                    t.fault.as_str(),
                    t.source_id,
                    t.seq,
                    t.reason
                );
            }
            for m in &report.missing {
                eprintln!(
                    "source {} misses seq {}..={} (deleted centrally, or not shipped)",
                    m.source_id, m.first_seq, m.last_seq
                );
            }
            if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EX_TAMPERED)
            }
        }
        Verified::Intact(report) => {
            print_line(&serde_json::to_string(&report).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Verified::Broken(report) => {
            print_line(&serde_json::to_string(&report).unwrap_or_default());
            eprintln!(
                "verify failed ({}) at seq {}: {}",
                report.fault.map_or("chain", |f| f.as_str()),
                report.first_bad_seq.unwrap_or_default(),
                report.reason.as_deref().unwrap_or("unknown")
            );
            ExitCode::from(EX_TAMPERED)
        }
    }
}

fn run_async(fut: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(fut),
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            ExitCode::from(EX_SOFTWARE)
        }
    }
}

fn print_line(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
}
