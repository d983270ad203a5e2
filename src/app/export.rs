//! The right of access (GDPR art. 15): everything the service holds about a user, as
//! one document. `GET /api/v1/users/me/export` (`http::export`) serves it.
//!
//! "Everything held" is: the users row; every event of the log, oldest first, with
//! each field's values as `history` shows them; the credentials row without the
//! password hash (a one-way hash is not the user's data in any readable sense, and
//! handing it out would help an offline guesser); and every login budget kept for the
//! email, per client address. The search index holds the names and email split into
//! terms, derived from the row and dropped with it; it is not listed again.

use crate::app::audit_trail::{AuditedEvent, all_events};
use crate::domain::UserRow;
use crate::domain::email::Email;
use crate::store::{HeldBudget, StoreError, UserStore};

/// What the service holds about one user.
#[derive(Debug, Clone)]
pub struct Export {
    /// The profile, as stored.
    pub user: UserRow,
    /// Every event, oldest first.
    pub events: Vec<AuditedEvent>,
    /// The credentials row, if there is one: its email key and whether it is locked.
    pub credentials: Option<(String, bool)>,
    /// Every login budget kept for the email.
    pub guess_budgets: Vec<HeldBudget>,
}

/// Gathers what is held about `user` (its current row).
pub async fn export(store: &dyn UserStore, user: UserRow) -> Result<Export, StoreError> {
    let mut log = all_events(store, user.user_id).await?;
    log.reverse();
    let events = log
        .iter()
        .map(|envelope| AuditedEvent::new(envelope, &user))
        .collect();
    let email_key = user
        .email()
        .and_then(|email| Email::parse(email).ok())
        .map(|email| email.key());
    let (credentials, guess_budgets) = match &email_key {
        Some(key) => {
            let credentials = store
                .find_credentials(key)
                .await?
                // Only this user's: an email key is claimed by one user at a time.
                .filter(|c| c.user_id == user.user_id)
                .map(|c| (c.email_key, c.account_locked));
            (credentials, store.guess_budgets(key).await?)
        }
        None => (None, Vec::new()),
    };
    Ok(Export {
        user,
        events,
        credentials,
        guess_budgets,
    })
}
