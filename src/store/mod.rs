//! Storage: the port the rest of the service talks to, and its two backends.
//!
//! - [`embedded`]: SQLite in one file under the data directory; the default.
//! - [`cassandra`]: Apache Cassandra 5.0 (or ScyllaDB, Astra) through the scylla driver.
//!
//! Both store the same things (the event log, the `users` projection with its search
//! terms, the credentials, the login budgets, leases and job checkpoints) and honour
//! the same contract, which `tests/` checks against each. Their files mirror each
//! other: `mod.rs` (the port), `rows.rs` (row codecs), `versioned.rs` (the `If-Match`
//! append), `login.rs` (the login budgets), `jobs.rs` (the jobs' port) and
//! `migrate.rs` (the schema), plus what each needs of its own: SQLite's writing thread
//! and checkpointer, Cassandra's statements and session.
//!
//! Shared by both: [`codec`] (where an event becomes bytes) and [`schema`] (the users
//! table's columns, and the identifier rule).

pub mod cassandra;
pub mod codec;
pub mod embedded;
pub mod keys;
pub mod schema;
pub mod sealing;

use crate::domain::login::{GuessDecision, GuessOutcome};
use crate::domain::projection::Column;
use crate::domain::{EventEnvelope, UserRow};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
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

/// What caused a store error: the driver's or SQLite's error, kept whole.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// Why a storage call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness claim or a precondition did not hold (an LWT that did not apply).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database cannot be reached or did not answer in time.
    #[error("store unavailable: {context}")]
    Unavailable {
        /// What was being done.
        context: String,
        /// The driver's (or SQLite's) error.
        #[source]
        cause: Option<Cause>,
    },
    /// The schema is missing or older than this build.
    #[error("schema not ready: {0}")]
    SchemaMissing(String),
    /// The configured key-encryption keys cannot open this store's data keys: a wrong
    /// `KILLRVIDEO_KEY_ENCRYPTION_KEY`, refused at start-up (exit 2).
    #[error("{0}")]
    WrongKey(String),
    /// Anything else: a bug, or data that does not decode.
    #[error("store failure: {context}")]
    Internal {
        /// What was being done.
        context: String,
        /// The error underneath, if any.
        #[source]
        cause: Option<Cause>,
    },
}

impl StoreError {
    /// The database cannot be reached; no error underneath.
    pub fn unavailable(context: impl Into<String>) -> Self {
        StoreError::Unavailable {
            context: context.into(),
            cause: None,
        }
    }

    /// The database cannot be reached, because of `cause`.
    pub fn unavailable_from(
        context: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Unavailable {
            context: context.into(),
            cause: Some(Arc::new(cause)),
        }
    }

    /// A fault; no error underneath.
    pub fn internal(context: impl Into<String>) -> Self {
        StoreError::Internal {
            context: context.into(),
            cause: None,
        }
    }

    /// A fault, because of `cause`.
    pub fn internal_from(
        context: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Internal {
            context: context.into(),
            cause: Some(Arc::new(cause)),
        }
    }

    /// The error and every cause under it, for a log line.
    pub fn report(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }
}

/// The storage port. Every method is one short round of I/O on the request path; none
/// of them reads, modifies and rewrites the event log.
/// How many database nodes a store sees: for `/readyz` and the logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct NodeCount {
    /// Nodes the driver holds an open connection to.
    pub up: usize,
    /// Nodes the driver knows of, from the cluster's own metadata.
    pub known: usize,
}

#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// `embedded` or `cassandra`, for logs and `/readyz`.
    fn backend(&self) -> &'static str;

    /// Answers when the database can serve a request: on Cassandra, a read at
    /// `LOCAL_QUORUM` of a replicated table, which fails without a quorum of replicas.
    async fn ping(&self) -> Result<(), StoreError>;

    /// The database nodes the store sees up, of those it knows; `None` for a store
    /// without nodes (the embedded one).
    fn nodes(&self) -> Option<NodeCount> {
        None
    }

    /// The users row as the request path reads it, registered or not: every cell with
    /// its write time, but not the search terms (which only the search and the jobs
    /// read). [`UserStore::find_user`] is the same filtered to registered users.
    async fn raw_row(&self, user_id: Uuid) -> Result<Option<UserRow>, StoreError>;

    /// The users row, or `None` when there is none or it is not a registered user.
    async fn find_user(&self, user_id: Uuid) -> Result<Option<UserRow>, StoreError> {
        Ok(self.raw_row(user_id).await?.filter(UserRow::is_registered))
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

    /// [`append`](Self::append), then the refetch: the user's row as stored after the
    /// write (`None` if it is not a registered user). Backends that can read the row
    /// back inside the write's own transaction do so, saving a round trip; the default
    /// is the two calls.
    async fn append_and_refetch(
        &self,
        event: &EventEnvelope,
        precondition: Precondition,
    ) -> Result<Option<UserRow>, StoreError> {
        self.append(event, precondition).await?;
        self.find_user(event.user_id).await
    }

    /// A page of the user's events, newest first.
    async fn events(
        &self,
        user_id: Uuid,
        page: EventPage,
    ) -> Result<Vec<EventEnvelope>, StoreError>;

    /// Reserves one password guess for `email_key` from `client` (an address) in both
    /// of its budgets (`domain::login`), as one atomic step per budget, or says which
    /// is spent. Only a reserved guess may be evaluated.
    async fn reserve_guess(
        &self,
        key: GuessKey<'_>,
        now: DateTime<Utc>,
    ) -> Result<GuessDecision, StoreError>;

    /// Settles a reserved guess in both budgets (`Budget::settle_client`,
    /// `Budget::settle_account`).
    async fn settle_guess(
        &self,
        key: GuessKey<'_>,
        outcome: GuessOutcome,
    ) -> Result<(), StoreError>;

    /// Every guess budget held for `email_key`, in scope order (`*` for the account,
    /// else a client address), spent or not: what the data export lists.
    async fn guess_budgets(&self, email_key: &str) -> Result<Vec<HeldBudget>, StoreError>;

    /// The candidates of a search ([`CandidateQuery`]), in [`SearchKey`] order, read
    /// through an index (never a scan of the table). Rows are as the request path
    /// reads them, registered users only.
    async fn search_candidates(
        &self,
        query: &CandidateQuery<'_>,
    ) -> Result<Vec<(SearchKey, UserRow)>, StoreError>;

    /// Ids of users whose stored `account_status` is `status`, at most `limit`.
    async fn users_with_status(&self, status: &str, limit: usize) -> Result<Vec<Uuid>, StoreError>;

    /// Erasure, step 2 (`app::erasure`): deletes the user's data key, from this
    /// process's cache too. What it sealed can no longer be opened.
    async fn delete_data_key(&self, user_id: Uuid) -> Result<(), StoreError>;

    /// Erasure, step 3: deletes the credentials of `email_key` if they are this user's,
    /// the guess budgets of `email_key`, then the users row with its search terms
    /// (last, since its email is what finds the rest after a crash).
    async fn delete_account(
        &self,
        user_id: Uuid,
        email_key: Option<&str>,
    ) -> Result<(), StoreError>;

    /// Erasure, step 4: overwrites the personal values that the user's events hold in
    /// plain text (schema version 1, written before sealing) with `[erased]`, the one
    /// exception to the log's immutability. Returns how many events it overwrote.
    async fn overwrite_plain_values(&self, user_id: Uuid) -> Result<u64, StoreError>;

    /// Takes the lease `name` for `owner` unless another owner holds it; a lease not
    /// released lapses after `ttl`. `true` when `owner` holds it now.
    async fn acquire_lease(
        &self,
        name: &str,
        owner: Uuid,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError>;

    /// Gives the lease back, if `owner` still holds it.
    async fn release_lease(&self, name: &str, owner: Uuid) -> Result<(), StoreError>;
}

/// A guess budget as the store holds it, with its scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldBudget {
    /// `*` (every address) or the client address it counts.
    pub scope: String,
    /// The budget.
    pub budget: crate::domain::login::Budget,
}

/// Whose guess budgets a login attempt uses: the email key's, for all addresses and
/// for the client's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuessKey<'a> {
    /// The email as its uniqueness key (whether or not an account has it).
    pub email_key: &'a str,
    /// The client's address.
    pub client: &'a str,
}

/// Which users a search asks the store for.
#[derive(Debug, Clone, Copy)]
pub struct CandidateQuery<'a> {
    /// The search column (`Column::FirstnameSearch`, ...).
    pub field: Column,
    /// Every one of these terms must be in the column's set.
    pub terms: &'a [String],
    /// Only users strictly after this key.
    pub after: Option<SearchKey>,
    /// At most this many.
    pub limit: usize,
}

/// Where a user stands in the order search candidates come in: the partition token
/// then the id on Cassandra, the id alone on SQLite (whose token is always 0). A page
/// of search results ends at a key, and the next starts after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SearchKey {
    /// Cassandra's `token(userid)`; 0 on SQLite.
    pub token: i64,
    /// The user.
    pub user_id: Uuid,
}

/// The store as the application holds it.
pub type SharedStore = Arc<dyn UserStore>;

/// The name of the live projection table.
pub const USERS_TABLE: &str = "users";

/// A slice of the log (and of a users table) that a job scans and checkpoints as one
/// unit: a token range `(start, end]` on Cassandra, a range of user-id prefixes on
/// SQLite. Every user falls in exactly one range, in the log and in the table alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ScanRange {
    /// Lower bound (its meaning is the backend's).
    pub start: i64,
    /// Upper bound.
    pub end: i64,
}

/// A range a job has finished, as its checkpoint records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinishedRange {
    /// The range.
    pub range: ScanRange,
    /// Events the job read from it.
    pub events: u64,
}

/// Events streamed out of a range.
pub type EventStream<'a> = BoxStream<'a, Result<EventEnvelope, StoreError>>;
/// Rows streamed out of a range.
pub type RowStream<'a> = BoxStream<'a, Result<UserRow, StoreError>>;

/// What the projection jobs (rebuild, verify, repair) need beyond the request path.
/// `table` is `users` or a side table built by `rebuild --into`.
#[async_trait]
pub trait ProjectionStore: UserStore {
    /// Splits the key space into about `splits` ranges.
    fn scan_ranges(&self, splits: usize) -> Vec<ScanRange>;

    /// Streams every event of the users in `range`, grouped by user, in pages.
    async fn scan_events(&self, range: ScanRange) -> Result<EventStream<'_>, StoreError>;

    /// Streams every row of `table` whose user is in `range`, in pages.
    async fn scan_rows(&self, table: &str, range: ScanRange) -> Result<RowStream<'_>, StoreError>;

    /// Creates `table` with the users schema if needed and prepares its statements.
    async fn prepare_table(&self, table: &str) -> Result<(), StoreError>;

    /// One row of `table` as it is stored, registered or not, search terms and all:
    /// what the jobs compare with the log.
    async fn table_row(&self, table: &str, user_id: Uuid) -> Result<Option<UserRow>, StoreError>;

    /// Projects an already logged event into `table`, cells at the event's write time.
    async fn project_into(&self, table: &str, event: &EventEnvelope) -> Result<(), StoreError>;

    /// Deletes a whole row with a tombstone at write time `at`.
    async fn delete_row(&self, table: &str, user_id: Uuid, at: i64) -> Result<(), StoreError>;

    /// Deletes one cell with a tombstone at write time `at`.
    async fn delete_cell(
        &self,
        table: &str,
        user_id: Uuid,
        column: Column,
        at: i64,
    ) -> Result<(), StoreError>;

    /// Ranges already finished by `job` (their starts).
    async fn finished_ranges(&self, job: &str) -> Result<Vec<i64>, StoreError>;

    /// Records that `job` finished a range.
    async fn finish_range(&self, job: &str, done: FinishedRange) -> Result<(), StoreError>;

    /// Forgets every checkpoint of `job`.
    async fn reset_checkpoints(&self, job: &str) -> Result<(), StoreError>;
}

/// The store as the jobs hold it.
pub type SharedProjectionStore = Arc<dyn ProjectionStore>;

/// Splits `[i64::MIN, i64::MAX]` into `splits` contiguous `(start, end]` ranges.
pub fn split_token_ring(splits: usize) -> Vec<ScanRange> {
    let splits = splits.clamp(1, 65_536) as i128;
    let (min, max) = (i64::MIN as i128, i64::MAX as i128);
    let width = (max - min) / splits;
    (0..splits)
        .map(|i| {
            let start = min + i * width;
            let end = if i == splits - 1 {
                max
            } else {
                min + (i + 1) * width
            };
            ScanRange {
                start: start as i64,
                end: end as i64,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ranges_cover_the_ring_without_gaps() {
        for splits in [1, 2, 7, 256] {
            let ranges = split_token_ring(splits);
            assert_eq!(ranges.len(), splits);
            assert_eq!(ranges[0].start, i64::MIN);
            assert_eq!(ranges.last().unwrap().end, i64::MAX);
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].end, pair[1].start);
                assert!(pair[0].start < pair[0].end);
            }
        }
    }
}
