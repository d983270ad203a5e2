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
//! - `mod.rs`: the store and the port (`UserStore`), the plain write;
//! - `rows.rs`: the row codecs and a projection's bound values;
//! - `statements.rs`: every statement, prepared at start-up;
//! - `versioned.rs`: the version-checked append;
//! - `login_budgets.rs`: the login throttle's budgets;
//! - `jobs.rs`: the projection jobs' port (`ProjectionStore`);
//! - `migrate.rs`: the schema;
//! - `session.rs`: the driver session and its supervisor.

mod jobs;
mod keys;
mod login_budgets;
pub mod migrate;
mod rows;
mod session;
mod statements;
mod versioned;

use rows::{
    BoundValues, EventRow, ProjectionStatements, SearchCandidate, UserCells, projection_writes,
};
use statements::Statements;

pub use session::{node_count, open_session};

use super::{
    CandidateQuery, Credentials, EventPage, GuessKey, HeldBudget, Precondition, SearchKey,
    StoreError, UserStore,
};
use crate::domain::events::EventEnvelope;
use crate::domain::login::{self, Budget, GuessDecision, GuessOutcome};
use crate::domain::user::UserRow;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use scylla::client::session::Session;
use scylla::errors::{ExecutionError, RequestAttemptError};
use scylla::response::query_result::QueryResult;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlTimeuuid, CqlValue, Row};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

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

#[async_trait]
impl UserStore for CassandraStore {
    fn backend(&self) -> &'static str {
        "cassandra"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.session()
            .execute_unpaged(&self.statements.ping, ())
            .await
            .map_err(classify)?;
        Ok(())
    }

    fn nodes(&self) -> Option<crate::store::NodeCount> {
        Some(node_count(&self.session()))
    }

    async fn raw_row(&self, user_id: Uuid) -> Result<Option<UserRow>, StoreError> {
        let result = self
            .session()
            .execute_unpaged(&self.statements.select_user, (user_id,))
            .await
            .map_err(classify)?;
        let rows = result.into_rows_result().map_err(internal)?;
        let row: Option<UserCells> = rows.maybe_first_row().map_err(internal)?;
        Ok(row.map(UserRow::from))
    }

    async fn find_credentials(&self, email_key: &str) -> Result<Option<Credentials>, StoreError> {
        let result = self
            .session()
            .execute_unpaged(&self.statements.select_credentials, (email_key,))
            .await
            .map_err(classify)?;
        let rows = result.into_rows_result().map_err(internal)?;
        let row: Option<(Option<String>, Option<Uuid>, Option<bool>)> =
            rows.maybe_first_row().map_err(internal)?;
        Ok(match row {
            Some((Some(password_hash), Some(user_id), locked)) => Some(Credentials {
                email_key: email_key.to_owned(),
                password_hash,
                user_id,
                account_locked: locked.unwrap_or(false),
            }),
            _ => None,
        })
    }

    async fn register(
        &self,
        credentials: &Credentials,
        registered: &EventEnvelope,
    ) -> Result<(), StoreError> {
        let values = (
            &credentials.email_key,
            &credentials.password_hash,
            credentials.user_id,
            credentials.account_locked,
        );
        let claimed = match self
            .session()
            .execute_unpaged(&self.statements.claim_credentials, values)
            .await
        {
            Ok(answer) => LwtAnswer::read(answer)?.applied,
            // Unknown whether the claim applied, and a stalled coordinator may still
            // apply it later. Sending the same claim again settles it either way: it
            // cannot apply twice, and it finds our own user id if the first did apply.
            Err(err) if outcome_unknown(&err) => {
                let answer = self
                    .session()
                    .execute_unpaged(&self.statements.claim_credentials_again, values)
                    .await
                    .map_err(classify)?;
                LwtAnswer::read(answer)?
                    .applied_or_already("userid", &CqlValue::Uuid(credentials.user_id))
            }
            Err(err) => return Err(classify(err)),
        };
        if !claimed {
            return Err(StoreError::Conflict("email already registered".into()));
        }
        // The key before the first event it seals. A crash in between leaves a key
        // for a user with no events, which nothing reads.
        self.create_data_key(registered.user_id).await?;
        self.append_plain(registered).await
    }

    async fn append(
        &self,
        envelope: &EventEnvelope,
        precondition: Precondition,
    ) -> Result<(), StoreError> {
        match precondition {
            Precondition::None => self.append_plain(envelope).await,
            Precondition::LatestEvent(expected) => self.append_if_latest(envelope, expected).await,
        }
    }

    async fn guess_budgets(&self, email_key: &str) -> Result<Vec<HeldBudget>, StoreError> {
        self.read_all_budgets(email_key).await
    }

    async fn reserve_guess(
        &self,
        key: GuessKey<'_>,
        now: DateTime<Utc>,
    ) -> Result<GuessDecision, StoreError> {
        let GuessKey { email_key, client } = key;
        let now = now.timestamp_micros();
        let (client_budget, account_budget) = self.read_budgets(email_key, client).await?;
        // The address first: an address whose own budget is spent must not be able to
        // spend the account's, which would lock its owner out everywhere.
        let scopes = [
            (client, client_budget, login::MAX_FAILURES),
            (
                login::ACCOUNT_SCOPE,
                account_budget,
                login::MAX_GUESSES_PER_ACCOUNT,
            ),
        ];
        for (scope, budget, limit) in scopes {
            let change = |current: Option<Budget>| Budget::reserve(current, limit, now);
            if let Err(wait) = self.change_budget(email_key, scope, budget, change).await? {
                return Ok(GuessDecision::Throttled(wait));
            }
        }
        Ok(GuessDecision::Evaluate)
    }

    async fn settle_guess(
        &self,
        key: GuessKey<'_>,
        outcome: GuessOutcome,
    ) -> Result<(), StoreError> {
        let GuessKey { email_key, client } = key;
        let (client_budget, account_budget) = self.read_budgets(email_key, client).await?;
        // An absent budget (expired) has nothing to settle: `Err` leaves it absent.
        let settle_client = |current: Option<Budget>| {
            current
                .map(|budget| budget.settle_client(outcome))
                .ok_or(Duration::ZERO)
        };
        let _ = self
            .change_budget(email_key, client, client_budget, settle_client)
            .await?;
        if outcome != GuessOutcome::Failed {
            let settle_account = |current: Option<Budget>| {
                current
                    .and_then(|budget| budget.settle_account(outcome))
                    .ok_or(Duration::ZERO)
            };
            let _ = self
                .change_budget(
                    email_key,
                    login::ACCOUNT_SCOPE,
                    account_budget,
                    settle_account,
                )
                .await?;
        }
        Ok(())
    }

    async fn search_candidates(
        &self,
        query: &CandidateQuery<'_>,
    ) -> Result<Vec<(SearchKey, UserRow)>, StoreError> {
        let statement = self
            .statements
            .search
            .get(&(query.field, query.terms.len()))
            .ok_or_else(|| {
                internal(format!(
                    "no search by {:?} with {} terms",
                    query.field,
                    query.terms.len()
                ))
            })?;
        let mut values: BoundValues = query
            .terms
            .iter()
            .map(|term| Some(CqlValue::Text(term.clone())))
            .collect();
        // From the cursor's token on, inclusive: another user of the same token (a
        // collision, vanishingly rare) is not skipped; those up to the cursor are.
        values.push(Some(CqlValue::BigInt(
            query.after.map_or(i64::MIN, |key| key.token),
        )));
        // One more for each user at the cursor's token, which is dropped below.
        let fetch = query.limit.saturating_add(1);
        values.push(Some(CqlValue::Int(
            i32::try_from(fetch).unwrap_or(i32::MAX),
        )));
        let result = self
            .session()
            .execute_unpaged(statement, values)
            .await
            .map_err(classify)?;
        let rows = result.into_rows_result().map_err(internal)?;
        let mut found = Vec::new();
        for row in rows.rows::<SearchCandidate>().map_err(internal)? {
            let (row, token) = row.map_err(internal)?.into_parts();
            let key = SearchKey {
                token,
                user_id: row.user_id,
            };
            if query.after.is_some_and(|after| key <= after) || !row.is_registered() {
                continue;
            }
            found.push((key, row));
        }
        found.truncate(query.limit);
        Ok(found)
    }

    async fn users_with_status(&self, status: &str, limit: usize) -> Result<Vec<Uuid>, StoreError> {
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let result = self
            .session()
            .execute_unpaged(&self.statements.select_users_with_status, (status, limit))
            .await
            .map_err(classify)?;
        let rows = result.into_rows_result().map_err(internal)?;
        rows.rows::<(Uuid,)>()
            .map_err(internal)?
            .map(|row| row.map(|(id,)| id).map_err(internal))
            .collect()
    }

    async fn acquire_lease(
        &self,
        name: &str,
        owner: Uuid,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let ttl = i32::try_from(ttl.as_secs().max(1)).unwrap_or(i32::MAX);
        let result = self
            .session()
            .execute_unpaged(&self.statements.acquire_lease, (name, owner, ttl))
            .await
            .map_err(classify)?;
        lwt_applied(result)
    }

    async fn release_lease(&self, name: &str, owner: Uuid) -> Result<(), StoreError> {
        self.session()
            .execute_unpaged(&self.statements.release_lease, (name, owner))
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn events(
        &self,
        user_id: Uuid,
        page: EventPage,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let limit = i32::try_from(page.limit).unwrap_or(i32::MAX);
        let result = match page.before {
            None => {
                self.session()
                    .execute_unpaged(&self.statements.select_events_newest, (user_id, limit))
                    .await
            }
            Some(before) => {
                self.session()
                    .execute_unpaged(
                        &self.statements.select_events_before,
                        (user_id, CqlTimeuuid::from(before), limit),
                    )
                    .await
            }
        }
        .map_err(classify)?;
        let rows = result.into_rows_result().map_err(internal)?;
        let rows = rows
            .rows::<EventRow>()
            .map_err(internal)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(internal)?;
        // The key as stored now, not as cached: a history read right after an erasure
        // (on any instance) must not open values with a key that was just deleted.
        self.open_user_rows(user_id, rows, true).await
    }

    async fn delete_data_key(&self, user_id: Uuid) -> Result<(), StoreError> {
        self.remove_data_key(user_id).await
    }

    async fn delete_account(
        &self,
        user_id: Uuid,
        email_key: Option<&str>,
    ) -> Result<(), StoreError> {
        let session = self.session();
        if let Some(email_key) = email_key {
            session
                .execute_unpaged(&self.statements.delete_credentials_of, (email_key, user_id))
                .await
                .map_err(classify)?;
            session
                .execute_unpaged(&self.statements.delete_budgets, (email_key,))
                .await
                .map_err(classify)?;
        }
        // Later than every cell: the row's cells carry their events' times, which are
        // all before now (erasure follows them).
        let at = Utc::now().timestamp_micros();
        session
            .execute_unpaged(&self.statements.delete_user_row, (at, user_id))
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn overwrite_plain_values(&self, user_id: Uuid) -> Result<u64, StoreError> {
        let session = self.session();
        let result = session
            .execute_unpaged(&self.statements.select_all_events, (user_id,))
            .await
            .map_err(classify)?;
        let rows = result.into_rows_result().map_err(internal)?;
        let mut overwritten = 0;
        for row in rows.rows::<EventRow>().map_err(internal)? {
            let stored = crate::store::codec::StoredEvent::from(row.map_err(internal)?);
            let written_at = stored.written_at.unwrap_or_default();
            let payload = stored.plain_values_erased().map_err(|err| {
                StoreError::internal_from(format!("event {} does not decode", stored.event_id), err)
            })?;
            if let Some(payload) = payload {
                // One microsecond after the payload's own write time, so that it wins
                // over the plain value whatever the clocks: the event's write time
                // reads one microsecond later afterwards (docs/consistency.md).
                session
                    .execute_unpaged(
                        &self.statements.overwrite_payload,
                        (
                            written_at + 1,
                            payload,
                            user_id,
                            CqlTimeuuid::from(stored.event_id),
                        ),
                    )
                    .await
                    .map_err(classify)?;
                overwritten += 1;
            }
        }
        Ok(overwritten)
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
