//! The Cassandra backend: Apache Cassandra 5.0 and compatible servers (ScyllaDB, Astra)
//! through the scylla driver.
//!
//! Every statement is prepared once, in [`CassandraStore::connect`]. The write protocol
//! (docs/consistency.md):
//! - plain append: one LOGGED batch holding the event insert and the projection update,
//!   both `USING TIMESTAMP` the event's time: last write wins per column, no Paxos. Both
//!   are on the user's partition key, so Cassandra merges them into one mutation,
//!   applied all or nothing without the batchlog; `LOGGED` only matters should the
//!   tables ever stop sharing that key;
//! - version-checked append: the event is appended by a lightweight transaction on the
//!   user's log partition (`IF head = ?`), then projected `USING TIMESTAMP`; an LWT
//!   cannot carry a timestamp, nor span tables, hence two steps (`versioned.rs`).
//!
//! - `mod.rs`: the store, how it connects, the plain write;
//! - one file per port (`crate::store::ports`): `health.rs`, `event_log.rs`,
//!   `credentials.rs`, `login_budgets.rs`, `search.rs`, `erasure.rs`, `leases.rs`,
//!   and `jobs.rs` (the projection jobs' port);
//! - `rows.rs`: the row codecs and a projection's bound values;
//! - `statements.rs`: every statement, prepared at start-up;
//! - `versioned.rs`: the version-checked append;
//! - `keys.rs`: the users' data keys;
//! - `migrate.rs`: the schema;
//! - `session.rs`: the driver session and its supervisor.

mod credentials;
mod erasure;
mod event_log;
mod health;
mod jobs;
mod keys;
mod leases;
mod login_budgets;
pub mod migrate;
mod rows;
mod search;
mod session;
mod statements;
mod versioned;

use rows::{BoundValues, ProjectionStatements, projection_writes};
use statements::Statements;

pub use session::{node_count, open_session};

use super::StoreError;
use crate::domain::events::EventEnvelope;
use arc_swap::ArcSwap;
use scylla::client::session::Session;
use scylla::errors::{ExecutionError, RequestAttemptError};
use scylla::response::query_result::QueryResult;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How to reach the cluster.
#[derive(Debug, Clone)]
pub struct CassandraOptions {
    /// `host:port` contact points.
    pub contact_points: Vec<String>,
    /// Keyspace holding the tables; validated as a plain identifier.
    pub keyspace: String,
    /// Preferred datacenter for routing, if any.
    pub local_dc: Option<String>,
    /// CQL replication map used when `migrate` creates the keyspace.
    pub replication: String,
    /// Per-request deadline; a slower database is reported unavailable.
    pub request_timeout: Duration,
    /// How long an idempotent statement waits before it is also sent to the next replica.
    pub speculative_delay: Duration,
    /// The key-encryption keys of the users' data keys.
    pub kek: crate::store::keys::KekSettings,
}

/// The Cassandra store.
#[derive(Clone)]
pub struct CassandraStore {
    /// The driver session. Swappable: when the cluster has been unreachable long enough
    /// for the driver's reconnection backoff to grow (up to 10 s), the supervisor
    /// replaces the session as soon as a new one can connect (see `supervise`).
    session: Arc<ArcSwap<Session>>,
    statements: Arc<Statements>,
    /// Statements of the projection jobs, per target table, prepared when a job starts
    /// (`ProjectionStore::prepare_table`), never on the request path.
    job_statements: Arc<std::sync::RwLock<HashMap<String, Arc<jobs::TableStatements>>>>,
    /// The keyspace, for the jobs' DDL.
    keyspace: String,
    /// The KEKs and the cache of data keys.
    keys: Arc<crate::store::keys::DataKeys>,
    /// Whether this process has recorded its KEK in `key_encryption_keys`.
    kek_registered: Arc<std::sync::atomic::AtomicBool>,
}

/// Classifies a driver error: anything that means "could not get an answer" is
/// [`StoreError::Unavailable`] (503), the rest is a fault (500).
pub(crate) fn classify(err: ExecutionError) -> StoreError {
    use scylla::errors::DbError;
    let unavailable = match &err {
        ExecutionError::ConnectionPoolError(_)
        | ExecutionError::RequestTimeout(_)
        | ExecutionError::EmptyPlan
        | ExecutionError::SchemaAgreementError(_)
        | ExecutionError::MetadataError(_) => true,
        ExecutionError::LastAttemptError(attempt) => match attempt {
            RequestAttemptError::BrokenConnectionError(_)
            | RequestAttemptError::UnableToAllocStreamId => true,
            RequestAttemptError::DbError(db, _) => matches!(
                db,
                DbError::Unavailable { .. }
                    | DbError::Overloaded
                    | DbError::IsBootstrapping
                    | DbError::ReadTimeout { .. }
                    | DbError::WriteTimeout { .. }
                    | DbError::ReadFailure { .. }
                    | DbError::WriteFailure { .. }
                    | DbError::TruncateError
            ),
            _ => false,
        },
        _ => false,
    };
    if unavailable {
        StoreError::unavailable_from("Cassandra did not answer", err)
    } else {
        StoreError::internal_from("Cassandra refused a statement", err)
    }
}

/// A fault with only a message: what was expected and what came instead.
fn internal(err: impl std::fmt::Display) -> StoreError {
    StoreError::internal(err.to_string())
}

/// Prefixes the table after every `FROM`, `INTO` and `UPDATE` with the keyspace, so
/// prepared statements never depend on a session-wide `USE` (which Cassandra warns is
/// ambiguous). Statement texts here are single-spaced, which this relies on.
pub(crate) fn qualify(keyspace: &str, cql: &str) -> String {
    let mut previous = "";
    cql.split(' ')
        .map(|token| {
            let table_position = matches!(
                previous.to_ascii_uppercase().as_str(),
                "FROM" | "INTO" | "UPDATE"
            );
            previous = token;
            if table_position
                && !token.is_empty()
                && !token.contains('.')
                && !token.starts_with('(')
            {
                format!("{keyspace}.{token}")
            } else {
                token.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a lightweight transaction answered: whether it applied and, when it did not,
/// the current values of the columns it checked. Apache Cassandra returns only the
/// `[applied]` column when the LWT applied and adds the current values when it did not
/// (ScyllaDB always adds them), so the row is read untyped, by column name.
pub(super) struct LwtAnswer {
    pub(super) applied: bool,
    current: HashMap<String, CqlValue>,
}

impl LwtAnswer {
    pub(super) fn read(result: QueryResult) -> Result<Self, StoreError> {
        let rows = result.into_rows_result().map_err(internal)?;
        let names: Vec<String> = rows
            .column_specs()
            .iter()
            .map(|spec| spec.name().to_owned())
            .collect();
        let row: Row = rows.first_row().map_err(internal)?;
        let mut current = HashMap::new();
        let mut applied = None;
        for (name, value) in names.into_iter().zip(row.columns) {
            match (name.as_str(), value) {
                ("[applied]", Some(CqlValue::Boolean(flag))) => applied = Some(flag),
                (_, Some(value)) => {
                    current.insert(name, value);
                }
                (_, None) => {}
            }
        }
        let applied =
            applied.ok_or_else(|| internal("an LWT result without its [applied] column"))?;
        Ok(Self { applied, current })
    }

    /// The current value of a checked column, when the LWT did not apply.
    pub(super) fn current(&self, column: &str) -> Option<&CqlValue> {
        self.current.get(column)
    }

    /// Whether the LWT applied, or did not because the row already holds our own write:
    /// what a resent LWT finds when its first attempt applied after all.
    fn applied_or_already(&self, column: &str, ours: &CqlValue) -> bool {
        self.applied || self.current(column) == Some(ours)
    }
}

fn lwt_applied(result: QueryResult) -> Result<bool, StoreError> {
    Ok(LwtAnswer::read(result)?.applied)
}

/// Whether a failed statement may still have applied: the coordinator gave up waiting
/// for replicas (`WriteTimeout`, for an LWT in its Paxos or its commit phase), or no
/// answer came at all (the request timed out in the driver, or its connection broke),
/// so the coordinator may still be holding it, as a paused node does until it resumes.
pub(super) fn outcome_unknown(err: &ExecutionError) -> bool {
    use scylla::errors::DbError;
    matches!(
        err,
        ExecutionError::RequestTimeout(_)
            | ExecutionError::LastAttemptError(
                RequestAttemptError::BrokenConnectionError(_)
                    | RequestAttemptError::DbError(DbError::WriteTimeout { .. }, _)
            )
    )
}

impl CassandraStore {
    /// Connects, checks that every migration has been applied, and prepares every
    /// statement. Refuses to start on a schema that `migrate` has not brought up to date.
    pub async fn connect(options: &CassandraOptions) -> Result<Self, StoreError> {
        let session = open_session(options).await?;
        migrate::ensure_migrated(&session, &options.keyspace).await?;
        let keys = crate::store::keys::DataKeys::new(options.kek.ring()?);
        keys.check_registered(&keys::registered_keks(&session, &options.keyspace).await?)?;
        let statements = Statements::prepare(&session, &options.keyspace).await?;
        let store = Self {
            session: Arc::new(ArcSwap::from_pointee(session)),
            statements: Arc::new(statements),
            job_statements: Arc::default(),
            keyspace: options.keyspace.clone(),
            keys: Arc::new(keys),
            kek_registered: Arc::default(),
        };
        tokio::spawn(session::supervise(
            Arc::downgrade(&store.session),
            options.clone(),
        ));
        Ok(store)
    }

    /// The current driver session.
    pub fn session(&self) -> Arc<Session> {
        self.session.load_full()
    }

    async fn write_batch(
        &self,
        kind: BatchType,
        statements: Vec<(&PreparedStatement, BoundValues)>,
    ) -> Result<(), StoreError> {
        let mut batch = Batch::new(kind);
        // Every write of the request path and the jobs carries its event's timestamp
        // and fixed values (the event id is minted once, before the first attempt), so
        // sending a batch twice writes the same cells at the same write times: the
        // driver may retry it, or race it on another coordinator (speculative
        // execution, `session.rs`), without changing the outcome.
        batch.set_is_idempotent(true);
        let mut values = Vec::with_capacity(statements.len());
        for (statement, bound) in statements {
            batch.append_statement(statement.clone());
            values.push(bound);
        }
        self.session()
            .batch(&batch, values)
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// The plain write: event and projection in one logged batch (one mutation, as both
    /// are on the user's partition).
    async fn append_plain(&self, envelope: &EventEnvelope) -> Result<(), StoreError> {
        let stored = self.seal(envelope).await?;
        let mut writes = vec![(
            &self.statements.insert_event,
            rows::insert_event_values(stored, envelope),
        )];
        writes.extend(projection_writes(&self.statements.project, envelope)?);
        self.write_batch(BatchType::Logged, writes).await
    }

    /// Writes an event's projection with the given table's statements.
    async fn write_projection(
        &self,
        statements: &ProjectionStatements,
        envelope: &EventEnvelope,
    ) -> Result<(), StoreError> {
        self.write_single_partition(projection_writes(statements, envelope)?)
            .await
    }

    /// Sends writes of one partition: a single statement as it is, several as an
    /// unlogged batch, which on one partition is one mutation, applied atomically.
    async fn write_single_partition(
        &self,
        mut writes: Vec<(&PreparedStatement, BoundValues)>,
    ) -> Result<(), StoreError> {
        match writes.len() {
            0 => Ok(()),
            1 => {
                let (statement, values) = writes.remove(0);
                self.session()
                    .execute_unpaged(statement, values)
                    .await
                    .map_err(classify)?;
                Ok(())
            }
            _ => self.write_batch(BatchType::Unlogged, writes).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::qualify;

    #[test]
    fn statements_are_qualified_with_the_keyspace() {
        assert_eq!(
            qualify("ks", "SELECT a FROM users WHERE userid = ?"),
            "SELECT a FROM ks.users WHERE userid = ?"
        );
        assert_eq!(
            qualify(
                "ks",
                "INSERT INTO user_events (a, b) VALUES (?, ?) USING TIMESTAMP ?"
            ),
            "INSERT INTO ks.user_events (a, b) VALUES (?, ?) USING TIMESTAMP ?"
        );
        assert_eq!(
            qualify("ks", "UPDATE users USING TIMESTAMP ? SET a = ?"),
            "UPDATE ks.users USING TIMESTAMP ? SET a = ?"
        );
        assert_eq!(
            qualify("ks", "DELETE firstname FROM t WHERE userid = ?"),
            "DELETE firstname FROM ks.t WHERE userid = ?"
        );
        assert_eq!(
            qualify(
                "ks",
                "SELECT release_version FROM system.local WHERE key = 'local'"
            ),
            "SELECT release_version FROM system.local WHERE key = 'local'"
        );
    }
}
