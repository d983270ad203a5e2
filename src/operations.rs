//! Operator actions that change users: the library side of CLI commands.

use crate::clock::EventClock;
use crate::domain::decide;
use crate::domain::events::{Actor, EventEnvelope};
use crate::domain::role::AccountStatus;
use crate::store::{Precondition, StoreError, UserStore};
use uuid::Uuid;

/// What `set-role` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetRoleOutcome {
    /// An `AccountStatusChanged` event was recorded.
    Changed {
        /// The previous status.
        from: Option<String>,
        /// The event.
        event_id: Uuid,
    },
    /// The account already had that status; nothing was recorded.
    Unchanged,
    /// No such user.
    NoSuchUser,
}

/// Records an `AccountStatusChanged` event: the only way `account_status` changes. The
/// append is version-checked against the row just read, and retried a few times if a
/// concurrent write got in between, so the recorded `from` is always true.
pub async fn set_role(
    store: &dyn UserStore,
    user_id: Uuid,
    status: AccountStatus,
    operator: &str,
) -> Result<SetRoleOutcome, StoreError> {
    let clock = EventClock::new();
    for _ in 0..5 {
        let Some(current) = store.find_user(user_id).await? else {
            return Ok(SetRoleOutcome::NoSuchUser);
        };
        let Some(event) = decide::change_account_status(&current, status) else {
            return Ok(SetRoleOutcome::Unchanged);
        };
        let envelope = EventEnvelope::new(
            user_id,
            clock.next_event_id(),
            Actor::Operator(operator.to_owned()),
            None,
            event,
        );
        let precondition = current
            .version()
            .map_or(Precondition::None, Precondition::LatestEvent);
        match store.append(&envelope, precondition).await {
            Ok(()) => {
                return Ok(SetRoleOutcome::Changed {
                    from: current.account_status().map(str::to_owned),
                    event_id: envelope.event_id,
                });
            }
            Err(StoreError::Conflict(_)) => continue,
            Err(other) => return Err(other),
        }
    }
    Err(StoreError::Conflict(
        "the user kept changing; try again".into(),
    ))
}
