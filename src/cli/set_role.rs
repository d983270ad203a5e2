//! `set-role`: an operator changes a user's account status.

use super::{CliError, open_for_operator, operator, parse_user_id};
use crate::app::roles::{RoleChanger, SetRoleOutcome, set_role};
use crate::clock::EventClock;
use crate::config::StoreArgs;
use crate::domain::events::Actor;
use crate::domain::role::AccountStatus;
use clap::Args;

/// Arguments of `set-role`.
#[derive(Debug, Args)]
pub struct SetRoleArgs {
    /// The user id.
    pub user_id: String,
    /// viewer, creator, moderator or suspended.
    pub status: String,
    /// Where the store is.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Records an `AccountStatusChanged` event, unless the user already has the status.
pub async fn run(args: SetRoleArgs) -> Result<(), CliError> {
    let user_id = parse_user_id(&args.user_id)?;
    let status = AccountStatus::parse(&args.status).ok_or_else(|| {
        CliError::Usage(format!(
            "invalid status {:?}: expected viewer, creator, moderator or suspended",
            args.status
        ))
    })?;
    let store = open_for_operator(&args.store).await?;
    let changer = RoleChanger {
        clock: &EventClock::new(),
        actor: Actor::Operator(operator()),
        request_id: None,
    };
    match set_role(store.as_ref(), &changer, user_id, status.clone()).await {
        Ok(SetRoleOutcome::Changed { from, event_id }) => {
            println!(
                "user {user_id}: account_status {} -> {status} (event {event_id})",
                from.as_ref().map_or("(none)", AccountStatus::as_str)
            );
            Ok(())
        }
        Ok(SetRoleOutcome::Unchanged) => {
            println!("user {user_id}: account_status is already {status}; nothing recorded");
            Ok(())
        }
        Ok(SetRoleOutcome::NoSuchUser) => Err(CliError::Failed(format!("no user {user_id}"))),
        Err(err) => Err(CliError::Failed(format!(
            "set-role failed: {}",
            err.report()
        ))),
    }
}
