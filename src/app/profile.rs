//! The PUT path's use case: a validated partial update of the caller's names, recorded
//! as a `ProfileUpdated` event and answered with the row as stored after it (the
//! refetch). `http::users::put_me` parses the request and calls [`update_profile`].

use super::turns::Turns;
use crate::clock::EventClock;
use crate::domain::events::{Actor, EventEnvelope};
use crate::domain::profile::ProfileChanges;
use crate::domain::{UserRow, decide};
use crate::store::{EventLog, Precondition, StoreError};

/// Why an update was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// `If-Match` named a version that is not the user's latest: nothing was written,
    /// and this is the user as stored now.
    #[error("the user has changed since that version")]
    Stale(Box<UserRow>),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Records `changes` on `current` (the caller's row, as the auth read returned it) and
/// returns the row as stored after the write. `{}` records nothing and returns
/// `current`. With [`Precondition::LatestEvent`] the write is version-checked: a stale
/// version is [`UpdateError::Stale`], with the current row, and leaves no event.
///
/// Version-checked writes take the user's turn first (`turns`): the lightweight
/// transaction decides among rivals from any instance, but rivals in one process
/// would only contend for it. Twenty `If-Match` PUTs with one ETag on a 3-node
/// cluster spent Paxos rounds against each other until eight of them timed out (503);
/// in turn, the first one writes and the others, finding the row moved on while they
/// waited, are refused without a round.
pub async fn update_profile(
    store: &dyn EventLog,
    clock: &EventClock,
    turns: &Turns,
    current: UserRow,
    changes: ProfileChanges,
    precondition: Precondition,
    request_id: Option<String>,
) -> Result<UserRow, UpdateError> {
    let mut current = current;
    let _turn = match precondition {
        Precondition::None => None,
        Precondition::LatestEvent(expected) => {
            let turn = turns.take(&current.user_id).await;
            if turn.waited {
                current = store
                    .find_user(current.user_id)
                    .await?
                    .ok_or_else(|| vanished(current.user_id))?;
                if current.version() != Some(expected) {
                    return Err(UpdateError::Stale(Box::new(current)));
                }
            }
            Some(turn)
        }
    };
    let Some(event) = decide::update_profile(&current, changes) else {
        return Ok(current);
    };
    let user_id = current.user_id;
    let updated = EventEnvelope::new(
        user_id,
        clock.next_event_id(),
        Actor::User(user_id),
        request_id,
        event,
    );
    match store.append_and_refetch(&updated, precondition).await {
        Ok(Some(row)) => Ok(row),
        Ok(None) => Err(vanished(user_id).into()),
        Err(StoreError::Conflict(_)) => {
            let now = store
                .find_user(user_id)
                .await?
                .ok_or_else(|| vanished(user_id))?;
            Err(UpdateError::Stale(Box::new(now)))
        }
        Err(other) => Err(other.into()),
    }
}

/// A user who was there for the write and is not for the refetch: a fault.
pub fn vanished(user_id: uuid::Uuid) -> StoreError {
    StoreError::internal(format!("user {user_id} vanished after a write"))
}
