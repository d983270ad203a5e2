//! The command line: one binary, one subcommand per job, one file per subcommand, each
//! a `run(args) -> Result<(), CliError>` over the library. This module parses, runs
//! and turns the outcome into an exit code.

mod erase;
mod history;
mod migrate;
mod progress;
mod rebuild;
mod serve;
mod set_role;
mod verify;

use crate::config::{ConfigError, ServeArgs, StoreArgs, parse_log_format};
use crate::startup::open_store;
use clap::{Parser, Subcommand};
use std::process::ExitCode;
use uuid::Uuid;

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
    /// Change a user's account status (the role) by recording an AccountStatusChanged
    /// event.
    SetRole(set_role::SetRoleArgs),
    /// Replay the event log into the users table (or a side table) through the same
    /// projection as the live path.
    Rebuild(rebuild::RebuildArgs),
    /// Compare the users table with the state the event log implies; exit 0 only when
    /// clean. With --repair, heal the drift by re-projecting from the log.
    Verify(verify::VerifyArgs),
    /// Print a user's audit history, newest first, or their profile as of an instant.
    History(history::HistoryArgs),
    /// Erase a user (GDPR art. 17): record UserErased, delete the data key, the
    /// credentials and the row. The history keeps its shape, with `[erased]` values.
    Erase(erase::EraseArgs),
}

/// Why a command did not succeed, and so its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A setting that does not parse: exit 2.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An argument that does not parse: exit 2.
    #[error("{0}")]
    Usage(String),
    /// The command ran and failed: exit 1.
    #[error("{0}")]
    Failed(String),
    /// The command ran and found what it exists to find (`verify`'s drift): exit 1,
    /// having said so on stdout.
    #[error("")]
    Found,
}

impl CliError {
    fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Config(_) | CliError::Usage(_) => ExitCode::from(2),
            CliError::Failed(_) | CliError::Found => ExitCode::from(1),
        }
    }
}

/// A store error as a command reports it: the whole chain of causes.
impl From<crate::store::StoreError> for CliError {
    fn from(err: crate::store::StoreError) -> Self {
        match err {
            // A wrong KEK is a setting, like any other that does not parse: exit 2.
            crate::store::StoreError::WrongKey(line) => CliError::Usage(line),
            err => CliError::Failed(err.report()),
        }
    }
}

/// Opens the store for an operator command.
async fn open_for_operator(args: &StoreArgs) -> Result<crate::store::SharedBackend, CliError> {
    let settings = args.settings()?;
    open_store(&settings).await.map_err(|err| match err {
        crate::store::StoreError::WrongKey(_) => CliError::from(err),
        err => CliError::Failed(format!("cannot open the store: {}", err.report())),
    })
}

fn parse_user_id(raw: &str) -> Result<Uuid, CliError> {
    Uuid::parse_str(raw)
        .map_err(|_| CliError::Usage(format!("invalid user id {raw:?}: expected a UUID")))
}

/// The operator a command acts for, recorded as the actor of its events.
fn operator() -> String {
    std::env::var("USER").unwrap_or_else(|_| "cli".into())
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
        Err(err) => return report(CliError::Config(err)),
    };
    crate::telemetry::init(log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            return report(CliError::Failed(format!(
                "cannot start the async runtime: {err}"
            )));
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => report(err),
    }
}

fn report(err: CliError) -> ExitCode {
    if !matches!(err, CliError::Found) {
        eprintln!("killrvideo-users: {err}");
    }
    err.exit_code()
}

async fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Serve(args) => serve::run(args).await,
        Command::Migrate(args) => migrate::run(args).await,
        Command::SetRole(args) => set_role::run(args).await,
        Command::Rebuild(args) => rebuild::run(args).await,
        Command::Verify(args) => verify::run(args).await,
        Command::History(args) => history::run(args).await,
        Command::Erase(args) => erase::run(args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap's own consistency checks (duplicate flags, bad defaults, ...) as a test, so
    /// a mistake in the definitions fails here rather than at an operator's prompt.
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
