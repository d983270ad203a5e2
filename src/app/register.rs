//! Registering: hash the password (bounded work), claim the email, record
//! `UserRegistered` with its projection, and answer with the stored row.

use crate::app::profile::vanished;
use crate::app::turns::Turns;
use crate::auth::password::{HashError, Passwords};
use crate::clock::EventClock;
use crate::domain::UserRow;
use crate::domain::decide;
use crate::domain::events::{Actor, EventEnvelope};
use crate::domain::registration::Registration;
use crate::store::{Credentials, EventLog, StoreError};
use uuid::Uuid;

/// Why a registration did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The email (case-insensitively) already has an account.
    #[error("This email is already registered")]
    EmailTaken,
    /// Password hashing is at capacity.
    #[error("password hashing is at capacity")]
    Busy,
    /// Hashing failed.
    #[error("{0}")]
    Hashing(String),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

/// Registers a validated `registration`. The password is hashed before the email is
/// claimed, so the timing of a duplicate adds nothing to what its 409 says. The claim
/// takes the email's turn (`turns`): rival registrations in one process then claim one
/// after another instead of contending for the claim's lightweight transaction, which
/// on a 3-node cluster with a node down turned one of ten rivals into a 503.
pub async fn register(
    store: &dyn EventLog,
    passwords: &Passwords,
    clock: &EventClock,
    turns: &Turns,
    registration: &Registration,
    request_id: Option<String>,
) -> Result<UserRow, RegisterError> {
    let user_id = Uuid::new_v4();
    let password_hash = passwords
        .hash(registration.password.expose().to_owned())
        .await
        .map_err(|err| match err {
            HashError::Busy => RegisterError::Busy,
            HashError::Failed(cause) => RegisterError::Hashing(cause),
        })?;
    let credentials = Credentials {
        email_key: registration.email.key(),
        password_hash,
        user_id,
        account_locked: false,
    };
    let registered = EventEnvelope::new(
        user_id,
        clock.next_event_id(),
        Actor::User(user_id),
        request_id,
        decide::register(registration),
    );
    let claimed = {
        let _turn = turns.take(&credentials.email_key).await;
        store.register(&credentials, &registered).await
    };
    claimed.map_err(|err| match err {
        StoreError::Conflict(_) => RegisterError::EmailTaken,
        other => RegisterError::Store(other),
    })?;
    store
        .find_user(user_id)
        .await
        .map_err(RegisterError::Store)?
        .ok_or_else(|| RegisterError::Store(vanished(user_id)))
}
