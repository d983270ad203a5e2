//! Storage: the ports the rest of the service talks to, and their two backends.
//!
//! - [`ports`]: one trait per responsibility ([`EventLog`], [`CredentialStore`],
//!   [`LoginBudgets`], [`UserSearch`], [`ErasureStore`], [`Leases`], [`StoreHealth`],
//!   and the jobs' [`ProjectionStore`]), bundled as [`UserStore`] (the request path)
//!   and [`Backend`] (everything). The coming change feed and mail outbox each add a
//!   port of their own there, with a file per backend.
//! - [`embedded`]: SQLite in one file under the data directory; the default.
//! - [`cassandra`]: Apache Cassandra 5.0 (or ScyllaDB, Astra) through the scylla driver.
//!
//! Both store the same things (the event log, the `users` projection with its search
//! terms, the credentials, the login budgets, leases and job checkpoints) and honour
//! the same contract, which `tests/` checks against each. Their files mirror each
//! other: `mod.rs` (the store), one file per port (`health.rs`, `event_log.rs`,
//! `credentials.rs`, `login_budgets.rs`, `search.rs`, `erasure.rs`, `leases.rs`,
//! `jobs.rs`), `rows.rs` (row codecs), `versioned.rs` (the `If-Match` append),
//! `keys.rs` (the users' data keys) and `migrate.rs` (the schema), plus what each
//! needs of its own: SQLite's writing thread and checkpointer, Cassandra's statements
//! and session.
//!
//! Shared by both: [`codec`] (where an event becomes bytes) and [`schema`] (the users
//! table's columns, and the identifier rule).

pub mod cassandra;
pub mod codec;
pub mod embedded;
pub mod keys;
pub mod ports;
pub mod schema;
pub mod sealing;

pub use ports::{
    Backend, CredentialStore, ErasureStore, EventLog, Leases, LoginBudgets, ProjectionStore,
    SharedBackend, SharedProjectionStore, SharedStore, StoreHealth, UserSearch, UserStore,
};

use crate::domain::columns::Column;
use crate::domain::{EventEnvelope, UserRow};
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

/// How many database nodes a store sees: for `/readyz` and the logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct NodeCount {
    /// Nodes the driver holds an open connection to.
    pub up: usize,
    /// Nodes the driver knows of, from the cluster's own metadata.
    pub known: usize,
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
