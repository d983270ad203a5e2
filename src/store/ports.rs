//! The storage ports: one trait per responsibility, each implemented by both backends
//! in a file of its own (`embedded/<port>.rs`, `cassandra/<port>.rs`).
//!
//! | port | what | backend file |
//! |---|---|---|
//! | [`StoreHealth`] | the backend's name, `ping`, the nodes it sees | `health.rs` |
//! | [`EventLog`] | the log and its projection: rows, appends, history pages | `event_log.rs` |
//! | [`CredentialStore`] | credentials by email key | `credentials.rs` |
//! | [`LoginBudgets`] | the login throttle's guess budgets | `login_budgets.rs` |
//! | [`UserSearch`] | search candidates, users by status | `search.rs` |
//! | [`ErasureStore`] | the erasure's steps: data key, account, plain values | `erasure.rs` |
//! | [`Leases`] | named leases with a time to live | `leases.rs` |
//! | [`ProjectionStore`] | the jobs' scans, side tables and checkpoints | `jobs.rs` |
//!
//! The users' data keys have no port of their own: a backend reads and makes them
//! inside the writes and reads that seal and open values (`keys.rs` in each backend),
//! and the one thing the application does with a key, deleting it at an erasure, is
//! a step of [`ErasureStore`].
//!
//! [`UserStore`] bundles the request path's ports, and [`Backend`] adds the jobs' port:
//! both have a blanket implementation, so a backend implements the focused ports and
//! nothing else. Application functions take the narrowest port they need
//! (`&dyn EventLog`, `&dyn UserSearch`, ...); a `&dyn UserStore` upcasts to any of them.
//!
//! Coming ports get a trait, a file per backend and a place in [`UserStore`] (or a
//! bundle of their own) here, rather than methods on an existing port: the change feed
//! (reading the log in order, from a position) and the mail outbox (messages recorded
//! with the event that causes them, sent and marked afterwards).

use super::{
    CandidateQuery, Credentials, EventPage, EventStream, FinishedRange, GuessKey, HeldBudget,
    NodeCount, Precondition, RowStream, ScanRange, SearchKey, StoreError,
};
use crate::domain::columns::Column;
use crate::domain::login::{GuessDecision, GuessOutcome};
use crate::domain::role::AccountStatus;
use crate::domain::{EventEnvelope, UserRow};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use uuid::Uuid;

/// Which backend this is, and whether it can serve: for `/readyz` and the logs.
#[async_trait]
pub trait StoreHealth: Send + Sync + 'static {
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
}

/// The event log and the `users` projection it feeds, as the request path uses them.
/// Every method is one short round of I/O; none reads, modifies and rewrites the log.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// The users row as the request path reads it, registered or not: every cell with
    /// its write time, but not the search terms (which only the search and the jobs
    /// read). [`EventLog::find_user`] is the same filtered to registered users.
    async fn raw_row(&self, user_id: Uuid) -> Result<Option<UserRow>, StoreError>;

    /// The users row, or `None` when there is none or it is not a registered user.
    async fn find_user(&self, user_id: Uuid) -> Result<Option<UserRow>, StoreError> {
        Ok(self.raw_row(user_id).await?.filter(UserRow::is_registered))
    }

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
}

/// The login secrets in `user_credentials` (claimed by [`EventLog::register`], deleted
/// by [`ErasureStore::delete_account`]).
#[async_trait]
pub trait CredentialStore: Send + Sync + 'static {
    /// Credentials by uniqueness key.
    async fn find_credentials(&self, email_key: &str) -> Result<Option<Credentials>, StoreError>;
}

/// The login throttle's guess budgets (`domain::login`).
#[async_trait]
pub trait LoginBudgets: Send + Sync + 'static {
    /// Reserves one password guess for `email_key` from `client` (an address) in both
    /// of its budgets, as one atomic step per budget, or says which is spent. Only a
    /// reserved guess may be evaluated.
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
}

/// Finding users other than by id.
#[async_trait]
pub trait UserSearch: Send + Sync + 'static {
    /// The candidates of a search ([`CandidateQuery`]), in [`SearchKey`] order, read
    /// through an index (never a scan of the table). Rows are as the request path
    /// reads them, registered users only.
    async fn search_candidates(
        &self,
        query: &CandidateQuery<'_>,
    ) -> Result<Vec<(SearchKey, UserRow)>, StoreError>;

    /// Ids of users whose stored `account_status` is `status`, at most `limit`.
    async fn users_with_status(
        &self,
        status: &AccountStatus,
        limit: usize,
    ) -> Result<Vec<Uuid>, StoreError>;
}

/// The steps of an account's erasure after `UserErased` is in the log (`app::erasure`,
/// docs/adr/0002-crypto-shredding.md). An erasure records that event first, hence the
/// log as a supertrait.
#[async_trait]
pub trait ErasureStore: EventLog {
    /// Step 2: deletes the user's data key, from this process's cache too. What it
    /// sealed can no longer be opened.
    async fn delete_data_key(&self, user_id: Uuid) -> Result<(), StoreError>;

    /// Step 3: deletes the credentials of `email_key` if they are this user's, the
    /// guess budgets of `email_key`, then the users row with its search terms (last,
    /// since its email is what finds the rest after a crash).
    async fn delete_account(
        &self,
        user_id: Uuid,
        email_key: Option<&str>,
    ) -> Result<(), StoreError>;

    /// Step 4: overwrites the personal values that the user's events hold in plain
    /// text (schema version 1, written before sealing) with `[erased]`, the one
    /// exception to the log's immutability. Returns how many events it overwrote.
    async fn overwrite_plain_values(&self, user_id: Uuid) -> Result<u64, StoreError>;
}

/// Named leases: one holder at a time, lapsing if not released.
#[async_trait]
pub trait Leases: Send + Sync + 'static {
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

/// Every port of the request path: what the HTTP edge holds ([`SharedStore`]). Not
/// implemented by hand: any type with the focused ports has it.
pub trait UserStore:
    StoreHealth + EventLog + CredentialStore + LoginBudgets + UserSearch + ErasureStore + Leases
{
}

impl<T> UserStore for T where
    T: StoreHealth + EventLog + CredentialStore + LoginBudgets + UserSearch + ErasureStore + Leases
{
}

/// The store as the application holds it.
pub type SharedStore = Arc<dyn UserStore>;

/// What the projection jobs (rebuild, verify, repair) need beyond the log: scans, side
/// tables and checkpoints. `table` is `users` or a side table built by `rebuild
/// --into`. A repair may finish an interrupted erasure, hence [`ErasureStore`] (and
/// with it [`EventLog`]) as the supertrait.
#[async_trait]
pub trait ProjectionStore: ErasureStore {
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

/// A whole backend: the request path's ports and the jobs'. What `startup::open_store`
/// returns; an `Arc<dyn Backend>` upcasts to a [`SharedStore`] or a
/// [`SharedProjectionStore`].
pub trait Backend: UserStore + ProjectionStore {}

impl<T: UserStore + ProjectionStore> Backend for T {}

/// An opened backend, before it is handed out as the ports its holders need.
pub type SharedBackend = Arc<dyn Backend>;
