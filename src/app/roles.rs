//! Changing a user's role: the operator's `set-role`, and the moderators' assign and
//! revoke of the moderation API. Every change is an `AccountStatusChanged` event, the
//! only way `account_status` changes. The moderation API's rules are decided in
//! `domain::role`; this module reads what they need and records what they allow,
//! under the moderators' lease for a revocation.

use crate::clock::EventClock;
use crate::domain::UserRow;
use crate::domain::decide;
use crate::domain::events::{Actor, EventEnvelope};
use crate::domain::role::{self, AccountStatus, ModeratorRuleBroken};
use crate::store::{EventLog, Precondition, StoreError, UserStore};
use std::time::Duration;
use uuid::Uuid;

/// What `set-role` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetRoleOutcome {
    /// An `AccountStatusChanged` event was recorded.
    Changed {
        /// The previous status.
        from: Option<AccountStatus>,
        /// The event.
        event_id: Uuid,
    },
    /// The account already had that status; nothing was recorded.
    Unchanged,
    /// No such user.
    NoSuchUser,
}

/// Who changes a role, and in answer to which request.
#[derive(Debug, Clone)]
pub struct RoleChanger<'a> {
    /// Source of the event's id.
    pub clock: &'a EventClock,
    /// Recorded as the event's actor: the operator, or the moderator.
    pub actor: Actor,
    /// The HTTP request, if any.
    pub request_id: Option<String>,
}

/// Records an `AccountStatusChanged` event. The append is version-checked against the
/// row just read, and retried a few times if a concurrent write got in between, so the
/// recorded `from` is always true.
pub async fn set_role(
    store: &dyn EventLog,
    changer: &RoleChanger<'_>,
    user_id: Uuid,
    status: AccountStatus,
) -> Result<SetRoleOutcome, StoreError> {
    for _ in 0..5 {
        let Some(current) = store.find_user(user_id).await? else {
            return Ok(SetRoleOutcome::NoSuchUser);
        };
        let Some(event) = decide::change_account_status(&current, status.clone()) else {
            return Ok(SetRoleOutcome::Unchanged);
        };
        let envelope = EventEnvelope::new(
            user_id,
            changer.clock.next_event_id(),
            changer.actor.clone(),
            changer.request_id.clone(),
            event,
        );
        let precondition = current
            .version()
            .map_or(Precondition::None, Precondition::LatestEvent);
        match store.append(&envelope, precondition).await {
            Ok(()) => {
                return Ok(SetRoleOutcome::Changed {
                    from: current.status().cloned(),
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

/// Why a moderator's role change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ModerationError {
    /// No such user.
    #[error("no user {0}")]
    NoSuchUser(Uuid),
    /// A rule of the moderation API refused it: not eligible, or the last moderator.
    #[error(transparent)]
    Refused(#[from] ModeratorRuleBroken),
    /// Another revocation holds the moderators' lease for longer than we wait.
    #[error("another role change is in progress; retry shortly")]
    Busy,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The lease every revocation of a moderator holds while it checks that another
/// moderator remains, so that two revocations can never both see the other.
const MODERATORS_LEASE: &str = "moderators";
/// How long the lease lives if its holder dies: longer than a revocation takes.
const LEASE_TTL: Duration = Duration::from_secs(10);
/// How long a revocation waits for the lease before answering 503.
const LEASE_WAIT: Duration = Duration::from_secs(3);
/// Pause between two attempts at the lease.
const LEASE_RETRY: Duration = Duration::from_millis(25);

/// The user after a role change, as stored.
async fn refetch(store: &dyn EventLog, user_id: Uuid) -> Result<UserRow, ModerationError> {
    store
        .find_user(user_id)
        .await?
        .ok_or(ModerationError::NoSuchUser(user_id))
}

/// A moderator's change to another account's role, through the moderation API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeratorChange {
    /// Makes a user a moderator; a moderator already is one, and nothing is recorded.
    Assign,
    /// Makes a moderator a viewer again, unless no other moderator would remain;
    /// someone who is not a moderator is left as they are, and nothing is recorded. A
    /// moderator may revoke their own role while another moderator remains.
    Revoke,
}

/// Applies a moderator's `change` to `user_id`'s role, under `domain::role`'s rules,
/// and answers the user as stored afterwards.
pub async fn change_moderator(
    store: &dyn UserStore,
    changer: &RoleChanger<'_>,
    user_id: Uuid,
    change: ModeratorChange,
) -> Result<UserRow, ModerationError> {
    let current = refetch(store, user_id).await?;
    match change {
        ModeratorChange::Assign => {
            role::may_assign_moderator(current.status())?;
            record(store, changer, user_id, AccountStatus::Moderator).await?;
        }
        ModeratorChange::Revoke if !role::holds_moderator_role(current.status()) => {
            return Ok(current);
        }
        ModeratorChange::Revoke => revoke_under_the_lease(store, changer, user_id).await?,
    }
    refetch(store, user_id).await
}

/// Records the status change; a user gone in between is not found.
async fn record(
    store: &dyn EventLog,
    changer: &RoleChanger<'_>,
    user_id: Uuid,
    status: AccountStatus,
) -> Result<(), ModerationError> {
    match set_role(store, changer, user_id, status).await? {
        SetRoleOutcome::NoSuchUser => Err(ModerationError::NoSuchUser(user_id)),
        SetRoleOutcome::Changed { .. } | SetRoleOutcome::Unchanged => Ok(()),
    }
}

/// Revokes while holding the moderators' lease, so that two revocations can never both
/// count the other as the moderator who remains.
async fn revoke_under_the_lease(
    store: &dyn UserStore,
    changer: &RoleChanger<'_>,
    user_id: Uuid,
) -> Result<(), ModerationError> {
    let owner = Uuid::new_v4();
    let deadline = tokio::time::Instant::now() + LEASE_WAIT;
    while !store
        .acquire_lease(MODERATORS_LEASE, owner, LEASE_TTL)
        .await?
    {
        if tokio::time::Instant::now() >= deadline {
            return Err(ModerationError::Busy);
        }
        tokio::time::sleep(LEASE_RETRY).await;
    }
    let outcome = revoke_holding_the_lease(store, changer, user_id).await;
    if let Err(err) = store.release_lease(MODERATORS_LEASE, owner).await {
        tracing::warn!(error = %err, "could not release the moderators' lease; it lapses by itself");
    }
    outcome
}

async fn revoke_holding_the_lease(
    store: &dyn UserStore,
    changer: &RoleChanger<'_>,
    user_id: Uuid,
) -> Result<(), ModerationError> {
    let moderators = store
        .users_with_status(&AccountStatus::Moderator, 2)
        .await?;
    role::may_revoke_moderator(user_id, &moderators)?;
    record(store, changer, user_id, AccountStatus::Viewer).await
}
