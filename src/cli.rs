//! The command line: one binary, one subcommand per job. Each subcommand is a thin shim
//! over the library.

use crate::config::{ConfigError, ServeArgs, StoreArgs, StoreSettings, parse_log_format};
use crate::startup::{Application, shutdown_signal};
use crate::store::cassandra::migrate;
use crate::store::embedded::EmbeddedStore;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// killrvideo-users: the event-sourced users service of the KillrVideo reference app.
#[derive(Debug, Parser)]
#[command(name = "killrvideo-users", version, about)]
pub struct Cli {
    /// Log format: `json` or `pretty` (`RUST_LOG` filters).
    #[arg(
        long = "log-format",
        env = "KILLRVIDEO_LOG_FORMAT",
        default_value = "pretty",
        global = true
    )]
    pub log_format: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Create the keyspace and apply pending schema migrations (the embedded store
    /// migrates itself on open; this just opens it).
    Migrate(StoreArgs),
}

/// Exit code for a bad setting.
const EXIT_CONFIG: u8 = 2;
/// Exit code for a failure at run time.
const EXIT_FAILURE: u8 = 1;

fn config_failure(err: ConfigError) -> ExitCode {
    eprintln!("killrvideo-users: {err}");
    ExitCode::from(EXIT_CONFIG)
}

/// Parses the command line, runs the subcommand and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    // A bare `killrvideo-users` (so a bare `cargo run`) serves.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.len() == 1 {
        args.push("serve".into());
    }
    let cli = Cli::parse_from(args);
    let log_format = match parse_log_format(&cli.log_format) {
        Ok(format) => format,
        Err(err) => return config_failure(err),
    };
    crate::telemetry::init(log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("killrvideo-users: cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    runtime.block_on(run(cli.command))
}

async fn run(command: Command) -> ExitCode {
    match command {
        Command::Serve(args) => {
            let settings = match args.settings() {
                Ok(settings) => settings,
                Err(err) => return config_failure(err),
            };
            let application = match Application::build(settings).await {
                Ok(application) => application,
                Err(err) => {
                    tracing::error!(error = %err, "cannot start");
                    eprintln!("killrvideo-users: cannot start: {err}");
                    return ExitCode::from(EXIT_FAILURE);
                }
            };
            match application.run_until(shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("killrvideo-users: server failed: {err}");
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
        Command::Migrate(args) => {
            let settings = match args.settings() {
                Ok(settings) => settings,
                Err(err) => return config_failure(err),
            };
            let outcome = match settings {
                StoreSettings::Embedded { data_dir } => {
                    EmbeddedStore::open(&data_dir).map(|store| {
                        println!("embedded store at {} is migrated", store.path().display())
                    })
                }
                StoreSettings::Cassandra(options) => {
                    migrate::migrate(&options).await.map(|report| {
                        println!(
                            "keyspace {}: applied {:?}, already applied {:?}",
                            options.keyspace, report.applied, report.already_applied
                        )
                    })
                }
            };
            match outcome {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("killrvideo-users: migrate failed: {err}");
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
    }
}
