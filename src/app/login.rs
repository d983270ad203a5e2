//! Logging in: the order of the steps is the security of it.
//!
//! 1. Reserve a guess in the account's budgets (`domain::login`); a spent budget
//!    refuses without checking the password.
//! 2. Check the password against the stored hash, or against the decoy when there is
//!    no such account, so that both cost the same.
//! 3. Settle the guess: a failure stays counted; a success is given back and forgives
//!    the address's checked failures. Then record the login and answer with the user
//!    as stored after it.
//!
//! Every refusal looks the same to the client (401 "Incorrect email or password"):
//! unknown email, wrong password, locked account and spent budget alike.

use super::turns::Turns;
use crate::auth::password::{HashError, Passwords};
use crate::clock::EventClock;
use crate::domain::events::{Actor, EventEnvelope};
use crate::domain::login::{GuessDecision, GuessOutcome};
use crate::domain::registration::LoginAttempt;
use crate::domain::{UserRow, decide};
use crate::store::{Credentials, GuessKey, Precondition, StoreError, UserStore};
use std::time::Duration;

/// Why a login was refused, for the logs and the metrics; the client is told none of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No account with that email, or the wrong password.
    WrongPassword,
    /// KillrVideo's `account_locked` flag.
    Locked,
    /// A guess budget is spent: not checked at all.
    Throttled(Duration),
}

impl Refusal {
    /// The reason's label in metrics.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::WrongPassword => "wrong_password",
            Refusal::Locked => "locked",
            Refusal::Throttled(_) => "throttled",
        }
    }
}

/// Why a login did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Refused: 401.
    #[error("login refused ({})", .0.label())]
    Refused(Refusal),
    /// Password hashing is at capacity: 503, nothing counted.
    #[error("password hashing is at capacity")]
    Busy,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Hashing failed.
    #[error("{0}")]
    Internal(String),
}

/// What a login needs.
pub struct LoginContext<'a> {
    /// The store.
    pub store: &'a dyn UserStore,
    /// Bounded argon2 work.
    pub passwords: &'a Passwords,
    /// Source of the login event's id.
    pub clock: &'a EventClock,
    /// One reservation per email at a time in this process: the store's reservation
    /// is atomic on its own (across instances too); this keeps one burst of guesses from
    /// contending for the same lightweight transaction.
    pub turns: &'a Turns,
}

/// Logs `attempt` in from `client` (the caller's address); returns the user as stored
/// after the login was recorded.
pub async fn login(
    context: &LoginContext<'_>,
    attempt: LoginAttempt,
    client: &str,
    request_id: Option<String>,
) -> Result<UserRow, LoginError> {
    let store = context.store;
    let credentials = check_password(context, attempt, client).await?;
    let current = store
        .find_user(credentials.user_id)
        .await?
        .ok_or(LoginError::Refused(Refusal::WrongPassword))?;
    let logged_in = EventEnvelope::new(
        current.user_id,
        context.clock.next_event_id(),
        Actor::User(current.user_id),
        request_id,
        decide::record_login(&current, chrono::Utc::now()),
    );
    store
        .append_and_refetch(&logged_in, Precondition::None)
        .await?
        .ok_or_else(|| {
            LoginError::Internal(format!("user {} vanished after a write", current.user_id))
        })
}

/// Steps 1 to 3: the guess reserved, the password checked, the guess settled. Returns
/// the credentials the password opened. Whatever asks for a password (a login, an
/// account deletion) asks through here, so every guess counts in the same budgets.
pub async fn check_password(
    context: &LoginContext<'_>,
    attempt: LoginAttempt,
    client: &str,
) -> Result<Credentials, LoginError> {
    let store = context.store;
    let email_key = attempt.email_key();
    let key = GuessKey {
        email_key: &email_key,
        client,
    };
    let decision = {
        let _turn = context.turns.take(&email_key).await;
        store.reserve_guess(key, chrono::Utc::now()).await?
    };
    if let GuessDecision::Throttled(wait) = decision {
        return Err(LoginError::Refused(Refusal::Throttled(wait)));
    }
    let credentials = store.find_credentials(&email_key).await?;
    let stored_hash = credentials.as_ref().map(|c| c.password_hash.clone());
    let matched = match context
        .passwords
        .verify(attempt.password, stored_hash)
        .await
    {
        Ok(matched) => matched,
        Err(HashError::Busy) => {
            // Nothing was checked: the guess goes back.
            store.settle_guess(key, GuessOutcome::NotChecked).await?;
            return Err(LoginError::Busy);
        }
        Err(HashError::Failed(cause)) => return Err(LoginError::Internal(cause)),
    };
    let refusal = match &credentials {
        Some(c) if matched && !c.account_locked => None,
        Some(_) if matched => Some(Refusal::Locked),
        _ => Some(Refusal::WrongPassword),
    };
    let outcome = match refusal {
        None => GuessOutcome::Succeeded,
        Some(_) => GuessOutcome::Failed,
    };
    store.settle_guess(key, outcome).await?;
    if let Some(refusal) = refusal {
        return Err(LoginError::Refused(refusal));
    }
    credentials.ok_or(LoginError::Refused(Refusal::WrongPassword))
}
