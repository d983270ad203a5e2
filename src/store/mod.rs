//! Storage: the port the rest of the service talks to, and its two backends.
//!
//! - [`embedded`]: SQLite in one file under the data directory; the default.
//! - [`cassandra`]: Apache Cassandra 5.0 (or ScyllaDB, Astra) through the scylla driver.
//!
//! Both store the same three things, the event log, the `users` projection and the
//! credentials, and honour the same contract, which `tests/` checks against each.

pub mod cassandra;
pub mod embedded;

use crate::domain::{EventEnvelope, UserRow};
use async_trait::async_trait;
use std::sync::Arc;
use uuid::Uuid;

/// A user's login secret as stored in `user_credentials`.
#[derive(Clone)]
pub struct Credentials {
    /// The uniqueness key: the address lowercased.
    pub email_key: String,
    /// The argon2id PHC string.
    pub password_hash: String,
    /// The account it unlocks.
    pub user_id: Uuid,
    /// KillrVideo's lock flag; a locked account cannot log in.
    pub account_locked: bool,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("email_key", &self.email_key)
            .field("user_id", &self.user_id)
            .field("account_locked", &self.account_locked)
            .finish_non_exhaustive()
    }
}

/// What must hold for an append to go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Last write wins: no check, no Paxos round.
    None,
    /// The user's newest event must still be this one (`If-Match`). Checked with a
    /// lightweight transaction on Cassandra and inside the transaction on SQLite.
    LatestEvent(Uuid),
}

/// A page of a user's history, newest first.
#[derive(Debug, Clone, Copy)]
pub struct EventPage {
    /// Only events strictly older than this id; `None` starts at the newest.
    pub before: Option<Uuid>,
    /// At most this many events.
    pub limit: usize,
}

/// Why a storage call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness claim or a precondition did not hold (an LWT that did not apply).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database cannot be reached or did not answer in time.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The schema is missing or older than this build.
    #[error("schema not ready: {0}")]
    SchemaMissing(String),
    /// Anything else: a bug, or data that does not decode.
    #[error("store failure: {0}")]
    Internal(String),
}

/// The storage port. Every method is one short round of I/O on the request path; none
/// of them reads, modifies and rewrites the event log.
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// `embedded` or `cassandra`, for logs and `/readyz`.
    fn backend(&self) -> &'static str;

    /// Answers when the database is reachable.
    async fn ping(&self) -> Result<(), StoreError>;

    /// The raw users row, registered or not: what the table holds, for the jobs and
    /// the tests.
    async fn load_row(&self, user_id: Uuid) -> Result<Option<UserRow>, StoreError>;

    /// The users row, or `None` when there is none or it is not a registered user.
    async fn find_user(&self, user_id: Uuid) -> Result<Option<UserRow>, StoreError> {
        Ok(self.load_row(user_id).await?.filter(UserRow::is_registered))
    }

    /// Credentials by uniqueness key.
    async fn find_credentials(&self, email_key: &str) -> Result<Option<Credentials>, StoreError>;

    /// Claims the email (first claim wins, [`StoreError::Conflict`] for the others) and
    /// records `registered` with its projection.
    async fn register(
        &self,
        credentials: &Credentials,
        registered: &EventEnvelope,
    ) -> Result<(), StoreError>;

    /// Records the event in the log and projects it onto `users`. With
    /// [`Precondition::LatestEvent`], a stale version gets [`StoreError::Conflict`] and
    /// leaves no trace in the log.
    async fn append(
        &self,
        event: &EventEnvelope,
        precondition: Precondition,
    ) -> Result<(), StoreError>;

    /// A page of the user's events, newest first.
    async fn events(
        &self,
        user_id: Uuid,
        page: EventPage,
    ) -> Result<Vec<EventEnvelope>, StoreError>;
}

/// The store as the application holds it.
pub type SharedStore = Arc<dyn UserStore>;
