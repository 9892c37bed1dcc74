//! The `llm-audit-proxy` binary: parse the command line, set up tracing,
//! run the command, map failures to exit codes.

use std::process::ExitCode;

use clap::Parser;
use llm_audit_proxy::app;
use llm_audit_proxy::cli::{Cli, Command};
use llm_audit_proxy::config::{self, ProcessEnv};
use llm_audit_proxy::telemetry;

/// Bad configuration or usage (sysexits EX_USAGE).
const EX_USAGE: u8 = 64;
/// A runtime failure such as a port already in use.
const EX_SOFTWARE: u8 = 70;

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
            let config =
                match config::load(args.config.as_deref(), &ProcessEnv, &args.flag_values()) {
                    Ok(c) => c,
                    Err(errors) => {
                        eprintln!("invalid configuration:\n{errors}");
                        return ExitCode::from(EX_USAGE);
                    }
                };
            telemetry::init(config.log.format);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(error) => {
                    eprintln!("cannot start the async runtime: {error}");
                    return ExitCode::from(EX_SOFTWARE);
                }
            };
            match runtime.block_on(app::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(%error, "Audit proxy failed to start.");
                    eprintln!("{error}");
                    ExitCode::from(EX_SOFTWARE)
                }
            }
        }
    }
}
