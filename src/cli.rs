//! The command line: one binary, one subcommand per job. Each subcommand is a thin shim
//! over the library.

use crate::app::roles::{RoleChanger, SetRoleOutcome, set_role};
use crate::clock::EventClock;
use crate::config::{ConfigError, ServeArgs, StoreArgs, StoreSettings, parse_log_format};
use crate::domain::events::Actor;
use crate::domain::role::AccountStatus;
use crate::history;
use crate::http::representation::UserResponse;
use crate::jobs;
use crate::startup::{Application, open_store, shutdown_signal};
use crate::store::cassandra::migrate;
use crate::store::embedded::EmbeddedStore;
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
    /// event: the only way account_status changes.
    SetRole {
        /// The user id.
        user_id: String,
        /// viewer, creator, moderator or suspended.
        status: String,
        /// Where the store is.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Replay the event log into the users table (or a side table) through the same
    /// projection as the live path.
    Rebuild {
        /// Only this user.
        #[arg(long)]
        user: Option<String>,
        /// Build this table instead of `users` (blue/green), created if needed.
        #[arg(long)]
        into: Option<String>,
        /// Key-space ranges scanned at once.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// Continue a previous run of the same job, skipping finished ranges.
        #[arg(long)]
        resume: bool,
        /// Scan and count; write nothing.
        #[arg(long = "dry-run")]
        dry_run: bool,
        /// Stop after this many ranges, as a crash would (to exercise --resume).
        #[arg(long = "stop-after-ranges", hide = true)]
        stop_after_ranges: Option<usize>,
        /// Where the store is.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Compare the users table with the state the event log implies; exit 0 only when
    /// clean. With --repair, heal the drift by re-projecting from the log.
    Verify {
        /// Only this user.
        #[arg(long)]
        user: Option<String>,
        /// Heal what is found.
        #[arg(long)]
        repair: bool,
        /// Key-space ranges scanned at once.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// Where the store is.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Print a user's audit history, newest first, or their profile as of an instant.
    History {
        /// The user id.
        user_id: String,
        /// RFC 3339 instant: print the profile as it was then instead.
        #[arg(long = "as-of")]
        as_of: Option<String>,
        /// Print JSON (the API's representation) instead of text.
        #[arg(long)]
        json: bool,
        /// Where the store is.
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Exit code for a bad setting.
const EXIT_CONFIG: u8 = 2;
/// Exit code for a failure at run time.
const EXIT_FAILURE: u8 = 1;

fn config_failure(err: ConfigError) -> ExitCode {
    eprintln!("killrvideo-users: {err}");
    ExitCode::from(EXIT_CONFIG)
}

fn usage_failure(message: &str) -> ExitCode {
    eprintln!("killrvideo-users: {message}");
    ExitCode::from(EXIT_CONFIG)
}

fn failure(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("killrvideo-users: {message}");
    ExitCode::from(EXIT_FAILURE)
}

/// Opens the store for an operator command.
async fn open_for_operator(
    args: &StoreArgs,
) -> Result<crate::store::SharedProjectionStore, ExitCode> {
    let settings = args.settings().map_err(config_failure)?;
    open_store(&settings)
        .await
        .map_err(|err| failure(format!("cannot open the store: {err}")))
}

fn parse_user_id(raw: &str) -> Result<Uuid, ExitCode> {
    Uuid::parse_str(raw)
        .map_err(|_| usage_failure(&format!("invalid user id {raw:?}: expected a UUID")))
}

async fn rebuild_command(
    options: jobs::RebuildOptions,
    store: &StoreArgs,
) -> Result<ExitCode, ExitCode> {
    let store = open_for_operator(store).await?;
    let report = jobs::rebuild(store.as_ref(), &options)
        .await
        .map_err(|err| {
            failure(format!(
                "rebuild failed: {err}; finished ranges are checkpointed, rerun with --resume"
            ))
        })?;
    println!(
        "rebuild into {}{}: {} events from {} ranges in {:.1}s ({:.0} events/s); {} of {} ranges skipped as already done",
        report.target,
        if options.dry_run {
            " (dry run, nothing written)"
        } else {
            ""
        },
        report.events,
        report.ranges_done,
        report.elapsed.as_secs_f64(),
        report.rate(),
        report.ranges_skipped,
        report.ranges_total,
    );
    if report.interrupted {
        return Err(failure(
            "stopped before the end (--stop-after-ranges); rerun with --resume",
        ));
    }
    Ok(ExitCode::SUCCESS)
}

async fn verify_command(
    options: jobs::VerifyOptions,
    store: &StoreArgs,
) -> Result<ExitCode, ExitCode> {
    let store = open_for_operator(store).await?;
    let report = jobs::verify(store.as_ref(), &options)
        .await
        .map_err(|err| failure(format!("verify failed: {err}")))?;
    for drift in &report.drifts {
        println!("{drift}");
    }
    let drifting: std::collections::HashSet<_> = report.drifts.iter().map(|d| d.user_id).collect();
    println!(
        "checked {} users and {} events: {} drifting users, {} drifts",
        report.users_checked,
        report.events_read,
        drifting.len(),
        report.drifts.len()
    );
    if options.repair {
        for drift in &report.remaining {
            println!("still drifting after repair: {drift}");
        }
        println!(
            "repaired {} users; {} drifts remain",
            report.repaired.len(),
            report.remaining.len()
        );
    }
    if report.clean(options.repair) {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(EXIT_FAILURE))
    }
}

async fn set_role_command(
    user_id: &str,
    status: &str,
    store: &StoreArgs,
) -> Result<ExitCode, ExitCode> {
    let user_id = parse_user_id(user_id)?;
    let status = AccountStatus::parse(status).ok_or_else(|| {
        usage_failure(&format!(
            "invalid status {status:?}: expected viewer, creator, moderator or suspended"
        ))
    })?;
    let store = open_for_operator(store).await?;
    let operator = std::env::var("USER").unwrap_or_else(|_| "cli".into());
    let changer = RoleChanger {
        clock: &EventClock::new(),
        actor: Actor::Operator(operator),
        request_id: None,
    };
    match set_role(store.as_ref(), &changer, user_id, status).await {
        Ok(SetRoleOutcome::Changed { from, event_id }) => {
            println!(
                "user {user_id}: account_status {} -> {status} (event {event_id})",
                from.as_deref().unwrap_or("(none)")
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(SetRoleOutcome::Unchanged) => {
            println!("user {user_id}: account_status is already {status}; nothing recorded");
            Ok(ExitCode::SUCCESS)
        }
        Ok(SetRoleOutcome::NoSuchUser) => Err(failure(format!("no user {user_id}"))),
        Err(err) => Err(failure(format!("set-role failed: {err}"))),
    }
}

async fn history_command(
    user_id: &str,
    as_of: Option<&str>,
    json: bool,
    store: &StoreArgs,
) -> Result<ExitCode, ExitCode> {
    let user_id = parse_user_id(user_id)?;
    let as_of = as_of
        .map(|raw| {
            chrono::DateTime::parse_from_rfc3339(raw)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|_| {
                    usage_failure(&format!(
                        "invalid --as-of {raw:?}: expected an RFC 3339 timestamp"
                    ))
                })
        })
        .transpose()?;
    let store = open_for_operator(store).await?;
    if let Some(instant) = as_of {
        let row = history::profile_as_of(store.as_ref(), user_id, instant)
            .await
            .map_err(failure)?
            .ok_or_else(|| failure(format!("user {user_id} did not exist at {instant}")))?;
        let user = UserResponse::from(&row);
        if json {
            let etag = crate::http::representation::etag(&row);
            println!(
                "{}",
                serde_json::json!({"as_of": instant, "user": user, "etag": etag})
            );
        } else {
            println!("user {user_id} as of {instant}:");
            println!(
                "{}",
                serde_json::to_string_pretty(&user).unwrap_or_default()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Some(current) = store.find_user(user_id).await.map_err(failure)? else {
        return Err(failure(format!("no user {user_id}")));
    };
    let events = history::all_events(store.as_ref(), user_id)
        .await
        .map_err(failure)?;
    let audited: Vec<history::AuditedEvent> = events
        .iter()
        .map(|e| history::AuditedEvent::new(e, &current))
        .collect();
    if json {
        println!(
            "{}",
            serde_json::json!({"userId": user_id, "events": audited})
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "history of user {user_id}, newest first ({} events)",
        audited.len()
    );
    for event in &audited {
        println!(
            "{}  {:<20} by {}  request {}  event {}",
            event
                .occurred_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            event.event_type,
            event.actor,
            event.request_id.as_deref().unwrap_or("-"),
            event.event_id,
        );
        for (field, change) in &event.fields {
            let winning = change["winning"].as_bool().unwrap_or(false);
            println!(
                "    {field:<16} {} -> {}   {}",
                change["from"],
                change["to"],
                if winning {
                    "(current)"
                } else {
                    "(overwritten)"
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
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
        Command::Rebuild {
            user,
            into,
            parallel,
            resume,
            dry_run,
            stop_after_ranges,
            store,
        } => {
            let options = (|| {
                Ok::<_, ExitCode>(jobs::RebuildOptions {
                    user: user.as_deref().map(parse_user_id).transpose()?,
                    into: into
                        .map(|table| match crate::store::validate_table_name(&table) {
                            Ok(()) => Ok(table),
                            Err(accepts) => Err(usage_failure(&format!(
                                "invalid --into {table:?}: expected {accepts}"
                            ))),
                        })
                        .transpose()?,
                    parallel,
                    resume,
                    dry_run,
                    splits: jobs::DEFAULT_SPLITS,
                    stop_after_ranges,
                })
            })();
            match options {
                Ok(options) => rebuild_command(options, &store)
                    .await
                    .unwrap_or_else(|code| code),
                Err(code) => code,
            }
        }
        Command::Verify {
            user,
            repair,
            parallel,
            store,
        } => {
            let user = match user.as_deref().map(parse_user_id).transpose() {
                Ok(user) => user,
                Err(code) => return code,
            };
            let options = jobs::VerifyOptions {
                user,
                repair,
                parallel,
                splits: jobs::DEFAULT_SPLITS,
                operator: std::env::var("USER").unwrap_or_else(|_| "cli".into()),
            };
            verify_command(options, &store)
                .await
                .unwrap_or_else(|code| code)
        }
        Command::SetRole {
            user_id,
            status,
            store,
        } => set_role_command(&user_id, &status, &store)
            .await
            .unwrap_or_else(|code| code),
        Command::History {
            user_id,
            as_of,
            json,
            store,
        } => history_command(&user_id, as_of.as_deref(), json, &store)
            .await
            .unwrap_or_else(|code| code),
        Command::Migrate(args) => {
            let settings = match args.settings() {
                Ok(settings) => settings,
                Err(err) => return config_failure(err),
            };
            let outcome = match settings {
                StoreSettings::Embedded { data_dir, sync } => {
                    EmbeddedStore::open_with(&data_dir, sync).map(|store| {
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
