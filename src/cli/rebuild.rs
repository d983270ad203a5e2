//! `rebuild`: the log replayed into `users` or a side table.

use super::{CliError, open_for_operator, parse_user_id};
use crate::app::jobs::{self, RebuildOptions};
use crate::config::StoreArgs;
use crate::store::schema::validate_table_name;
use clap::Args;

/// Arguments of `rebuild`.
#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// Only this user.
    #[arg(long)]
    pub user: Option<String>,
    /// Build this table instead of `users` (blue/green), created if needed.
    #[arg(long)]
    pub into: Option<String>,
    /// Key-space ranges scanned at once.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Continue a previous run of the same job, skipping finished ranges.
    #[arg(long)]
    pub resume: bool,
    /// Scan and count; write nothing.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// Stop after this many ranges, as a crash would (to exercise --resume).
    #[arg(long = "stop-after-ranges", hide = true)]
    pub stop_after_ranges: Option<usize>,
    /// Where the store is.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Replays the log through the shared projection and reports the rate.
pub async fn run(args: RebuildArgs) -> Result<(), CliError> {
    let into = args
        .into
        .map(|table| {
            validate_table_name(&table)
                .map(|()| table.clone())
                .map_err(|accepts| {
                    CliError::Usage(format!("invalid --into {table:?}: expected {accepts}"))
                })
        })
        .transpose()?;
    let options = RebuildOptions {
        user: args.user.as_deref().map(parse_user_id).transpose()?,
        into,
        parallel: args.parallel,
        resume: args.resume,
        dry_run: args.dry_run,
        splits: jobs::DEFAULT_SPLITS,
        stop_after_ranges: args.stop_after_ranges,
    };
    let store = open_for_operator(&args.store).await?;
    let report = jobs::rebuild_observed(store.as_ref(), &options, super::progress::observer())
        .await
        .map_err(|err| {
            CliError::Failed(format!(
                "rebuild failed: {}; finished ranges are checkpointed, rerun with --resume",
                err.report()
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
        return Err(CliError::Failed(
            "stopped before the end (--stop-after-ranges); rerun with --resume".into(),
        ));
    }
    Ok(())
}
