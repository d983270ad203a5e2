//! The right to erasure (GDPR art. 17) in an immutable log, by crypto-shredding
//! (docs/adr/0002-crypto-shredding.md). `DELETE /api/v1/users/me` (with the password)
//! and `killrvideo-users erase <user-id>` both come here.
//!
//! The steps, in this order, each one idempotent:
//!
//! 1. record `UserErased` (actor, request id, nothing personal);
//! 2. delete the data key: every sealed value of the log is unreadable from now on;
//! 3. delete the credentials, the login budgets, then the users row with its search
//!    terms (the row last: its email is what finds the rest if a crash interrupts);
//! 4. overwrite the values that events from before sealing hold in plain text.
//!
//! A crash between two steps leaves a user whose log holds `UserErased`: `verify`
//! reports what is left as drift and `verify --repair` calls [`Erasure::finish`]
//! (docs/consistency.md, "Erasure's crash points").

use super::audit_trail::all_events;
use super::login::{LoginContext, LoginError, check_password};
use crate::clock::EventClock;
use crate::domain::UserRow;
use crate::domain::email::Email;
use crate::domain::events::{Actor, EventEnvelope, UserErased, UserEvent};
use crate::domain::registration::LoginAttempt;
use crate::store::{ErasureStore, Precondition, StoreError};
use uuid::Uuid;

/// One user's erasure, step by step.
pub struct Erasure<'a> {
    store: &'a dyn ErasureStore,
    user_id: Uuid,
    /// The credentials' key, from the row's email while there is a row.
    email_key: Option<String>,
}

/// What an erasure did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Erased {
    /// Whether this call recorded `UserErased` (false: an earlier, unfinished one had).
    pub recorded: bool,
    /// Events from before sealing whose plain values were overwritten.
    pub overwritten: u64,
}

/// Why an erasure did not happen.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    /// No such user, in the table or the log.
    #[error("no user {0}")]
    NotFound(Uuid),
    /// The password check refused (or could not run).
    #[error(transparent)]
    Password(LoginError),
    /// The store failed; the steps already done stay done, and the next attempt (or
    /// `verify --repair`) finishes the rest.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl<'a> Erasure<'a> {
    /// The erasure of `user_id`, whose row (if it still has one) names the email.
    pub async fn of(store: &'a dyn ErasureStore, user_id: Uuid) -> Result<Self, StoreError> {
        let row = store.raw_row(user_id).await?;
        Ok(Self::with_row(store, user_id, row.as_ref()))
    }

    /// The erasure of the user whose row is `row` (`None`: the row is gone already).
    pub fn with_row(store: &'a dyn ErasureStore, user_id: Uuid, row: Option<&UserRow>) -> Self {
        let email_key = row
            .and_then(UserRow::email)
            .and_then(|email| Email::parse(email).ok())
            .map(|email| email.key());
        Self {
            store,
            user_id,
            email_key,
        }
    }

    /// Step 1: records `UserErased`.
    pub async fn record(
        &self,
        clock: &EventClock,
        actor: Actor,
        request_id: Option<String>,
    ) -> Result<(), StoreError> {
        let erased = EventEnvelope::new(
            self.user_id,
            clock.next_event_id(),
            actor,
            request_id,
            UserEvent::UserErased(UserErased {}),
        );
        self.store.append(&erased, Precondition::None).await
    }

    /// Step 2: deletes the data key.
    pub async fn delete_key(&self) -> Result<(), StoreError> {
        self.store.delete_data_key(self.user_id).await
    }

    /// Step 3: deletes the credentials, the login budgets and the row.
    pub async fn delete_account(&self) -> Result<(), StoreError> {
        self.store
            .delete_account(self.user_id, self.email_key.as_deref())
            .await
    }

    /// Step 4: overwrites plain values written before sealing.
    pub async fn overwrite_plain_values(&self) -> Result<u64, StoreError> {
        self.store.overwrite_plain_values(self.user_id).await
    }

    /// Steps 2 to 4: what follows a recorded `UserErased`, and what `verify --repair`
    /// runs for an erasure a crash interrupted.
    pub async fn finish(&self) -> Result<u64, StoreError> {
        self.delete_key().await?;
        self.delete_account().await?;
        self.overwrite_plain_values().await
    }

    /// Every step, skipping the record when an earlier attempt made it.
    pub async fn run(
        &self,
        clock: &EventClock,
        actor: Actor,
        request_id: Option<String>,
    ) -> Result<Erased, EraseError> {
        let log = all_events(self.store, self.user_id).await?;
        if log.is_empty() && self.email_key.is_none() {
            return Err(EraseError::NotFound(self.user_id));
        }
        let recorded = !log
            .iter()
            .any(|e| matches!(e.event, UserEvent::UserErased(_)));
        if recorded {
            self.record(clock, actor, request_id).await?;
        }
        let overwritten = self.finish().await?;
        Ok(Erased {
            recorded,
            overwritten,
        })
    }
}

/// `DELETE /api/v1/users/me`: the caller erases their own account, with their current
/// password, checked (and counted) as a login's is: a stolen token alone erases
/// nothing.
pub async fn erase_own_account(
    context: &LoginContext<'_>,
    current: &UserRow,
    password: String,
    client: &str,
    request_id: Option<String>,
) -> Result<Erased, EraseError> {
    let email = current
        .email()
        .ok_or(EraseError::NotFound(current.user_id))?
        .to_owned();
    let credentials = check_password(context, LoginAttempt { email, password }, client)
        .await
        .map_err(EraseError::Password)?;
    if credentials.user_id != current.user_id {
        return Err(EraseError::Password(LoginError::Refused(
            super::login::Refusal::WrongPassword,
        )));
    }
    Erasure::with_row(context.store, current.user_id, Some(current))
        .run(context.clock, Actor::User(current.user_id), request_id)
        .await
}
