//! `verify [--repair]`: the table compared with the log, and healed.

use super::{CliError, open_for_operator, operator, parse_user_id};
use crate::app::jobs::{self, VerifyOptions};
use crate::config::StoreArgs;
use clap::Args;

/// Arguments of `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Only this user.
    #[arg(long)]
    pub user: Option<String>,
    /// Heal what is found.
    #[arg(long)]
    pub repair: bool,
    /// Key-space ranges scanned at once.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Where the store is.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Prints every drift; succeeds only when the table agrees with the log (after the
/// repair, with `--repair`).
pub async fn run(args: VerifyArgs) -> Result<(), CliError> {
    let options = VerifyOptions {
        user: args.user.as_deref().map(parse_user_id).transpose()?,
        repair: args.repair,
        parallel: args.parallel,
        splits: jobs::DEFAULT_SPLITS,
        operator: operator(),
    };
    let store = open_for_operator(&args.store).await?;
    let report = jobs::verify_observed(store.as_ref(), &options, super::progress::observer())
        .await
        .map_err(|err| CliError::Failed(format!("verify failed: {}", err.report())))?;
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
        Ok(())
    } else {
        Err(CliError::Found)
    }
}
