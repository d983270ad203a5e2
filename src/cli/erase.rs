//! `erase`: an operator erases a user (GDPR art. 17), for a request that came by
//! another channel than `DELETE /api/v1/users/me`.

use super::{CliError, open_for_operator, operator, parse_user_id};
use crate::app::erasure::{EraseError, Erasure};
use crate::clock::EventClock;
use crate::config::StoreArgs;
use crate::domain::events::Actor;
use clap::Args;

/// Arguments of `erase`.
#[derive(Debug, Args)]
pub struct EraseArgs {
    /// The user id.
    pub user_id: String,
    /// Where the store is.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Runs every erasure step (finishing an interrupted erasure if there was one).
pub async fn run(args: EraseArgs) -> Result<(), CliError> {
    let user_id = parse_user_id(&args.user_id)?;
    let store = open_for_operator(&args.store).await?;
    let erasure = Erasure::of(store.as_ref(), user_id).await?;
    match erasure
        .run(&EventClock::new(), Actor::Operator(operator()), None)
        .await
    {
        Ok(erased) => {
            let how = if erased.recorded {
                "UserErased recorded"
            } else {
                "an earlier erasure finished"
            };
            println!(
                "user {user_id}: erased ({how}; data key, credentials and row deleted; \
                 {} plain events overwritten)",
                erased.overwritten
            );
            Ok(())
        }
        Err(EraseError::NotFound(_)) => Err(CliError::Failed(format!("no user {user_id}"))),
        Err(err) => Err(CliError::Failed(format!("erase failed: {err}"))),
    }
}
