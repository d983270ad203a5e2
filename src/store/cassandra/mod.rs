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
//!   cannot carry a timestamp, nor span tables, hence two steps.

mod jobs;
pub mod migrate;

use super::{Credentials, EventPage, Precondition, SearchKey, StoreError, USERS_TABLE, UserStore};
use crate::domain::events::{Actor, EventEnvelope, SCHEMA_VERSION, UserEvent};
use crate::domain::login::{self, Budget, GuessDecision, GuessOutcome};
use crate::domain::projection::{COLUMN_SETS, CellValue, Column, project};
use crate::domain::search::MAX_PROBE_TERMS;
use crate::domain::user::{Cell, UserRow};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{ExecutionError, RequestAttemptError};
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::response::query_result::QueryResult;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};
use scylla::value::{CqlTimestamp, CqlTimeuuid, CqlValue, Row};
use std::collections::{BTreeSet, HashMap};
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
}

/// Statements of the request path and the jobs, prepared once at start-up.
struct Statements {
    ping: PreparedStatement,
    select_user: PreparedStatement,
    select_credentials: PreparedStatement,
    claim_credentials: PreparedStatement,
    insert_event: PreparedStatement,
    append_event_if_head: PreparedStatement,
    /// One `UPDATE users USING TIMESTAMP ...` per column set the projection can produce.
    project: HashMap<Vec<Column>, PreparedStatement>,
    select_events_newest: PreparedStatement,
    select_events_before: PreparedStatement,
    /// The events from a version on, inclusive: what a version-checked append
    /// re-projects after its Paxos round.
    select_events_since: PreparedStatement,
    /// The write time of one event row at SERIAL consistency: settles an LWT whose
    /// outcome timed out.
    select_event_write_time_serial: PreparedStatement,
    /// The two guess budgets of a login attempt, read at LOCAL_QUORUM: a first guess at
    /// what the lightweight transactions below then check.
    select_budgets: PreparedStatement,
    insert_budget_if_absent: PreparedStatement,
    update_budget_if_unchanged: PreparedStatement,
    /// Per search column and number of terms (1 to `MAX_PROBE_TERMS`): the candidates
    /// whose terms contain them all, in token order from a token on, through the SAI.
    search: HashMap<(Column, usize), PreparedStatement>,
    select_users_with_status: PreparedStatement,
    acquire_lease: PreparedStatement,
    release_lease: PreparedStatement,
}

/// The Cassandra store.
#[derive(Clone)]
pub struct CassandraStore {
    /// The driver session. Swappable: when the cluster has been unreachable long enough
    /// for the driver's reconnection backoff to grow (up to 10 s), the supervisor
    /// replaces the session as soon as a new one can connect (see `supervise`).
    session: Arc<std::sync::RwLock<Arc<Session>>>,
    statements: Arc<Statements>,
    /// Statements of the projection jobs, per target table, prepared when a job starts
    /// (`ProjectionStore::prepare_table`), never on the request path.
    job_statements: Arc<std::sync::RwLock<HashMap<String, Arc<jobs::TableStatements>>>>,
    /// The keyspace, for the jobs' DDL.
    keyspace: String,
}

/// Opens a session. Used by `serve`, `migrate` and the jobs alike.
pub async fn open_session(options: &CassandraOptions) -> Result<Session, StoreError> {
    let mut policy = DefaultPolicy::builder().token_aware(true);
    if let Some(dc) = &options.local_dc {
        policy = policy
            .prefer_datacenter(dc.clone())
            .permit_dc_failover(false);
    }
    let profile = ExecutionProfile::builder()
        .consistency(Consistency::LocalQuorum)
        .serial_consistency(Some(SerialConsistency::LocalSerial))
        .request_timeout(Some(options.request_timeout))
        .load_balancing_policy(policy.build())
        .build();
    SessionBuilder::new()
        .known_nodes(&options.contact_points)
        .connection_timeout(options.request_timeout)
        .default_execution_profile_handle(profile.into_handle())
        .build()
        .await
        .map_err(|err| {
            StoreError::Unavailable(format!(
                "cannot connect to Cassandra at {}: {err}",
                options.contact_points.join(",")
            ))
        })
}

/// How often the supervisor checks that the session can reach the cluster.
const SUPERVISION_PERIOD: Duration = Duration::from_secs(1);

/// Keeps the service's session usable after an outage. The driver reconnects by itself,
/// but with an exponential backoff that reaches 10 s, so after a long outage it can
/// take that long to notice the cluster is back. Every second, if a cheap query fails,
/// the supervisor tries to open a fresh session and swaps it in; prepared statements
/// carry their text, so the driver re-prepares them on the new connections. Ends when
/// the store is dropped.
async fn supervise(
    session: std::sync::Weak<std::sync::RwLock<Arc<Session>>>,
    options: CassandraOptions,
) {
    let mut ticks = tokio::time::interval(SUPERVISION_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(slot) = session.upgrade() else {
            return;
        };
        let current = match slot.read() {
            Ok(current) => Arc::clone(&current),
            Err(_) => return,
        };
        drop(slot);
        let probe = current.query_unpaged(
            "SELECT release_version FROM system.local WHERE key = 'local'",
            (),
        );
        let reachable = matches!(
            tokio::time::timeout(options.request_timeout, probe).await,
            Ok(Ok(_))
        );
        crate::telemetry::cassandra_session(reachable, nodes_up(&current));
        if reachable {
            continue;
        }
        // The cluster does not answer on this session. A new one either connects (the
        // cluster is back: swap) or fails fast (still down: try again next tick).
        if let Ok(Ok(fresh)) =
            tokio::time::timeout(options.request_timeout, open_session(&options)).await
        {
            let Some(slot) = session.upgrade() else {
                return;
            };
            if let Ok(mut guard) = slot.write() {
                *guard = Arc::new(fresh);
                crate::telemetry::cassandra_session_replaced();
                tracing::info!("Cassandra reachable again; replaced the driver session");
            }
        }
    }
}

/// The nodes the driver holds a connection to.
pub fn nodes_up(session: &Session) -> usize {
    session
        .get_cluster_state()
        .get_nodes_info()
        .iter()
        .filter(|node| node.is_connected())
        .count()
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
        StoreError::Unavailable(err.to_string())
    } else {
        StoreError::Internal(err.to_string())
    }
}

fn internal(err: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(err.to_string())
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

/// Reads the `[applied]` flag of an LWT result. Apache Cassandra returns only that
/// column when the LWT applied and adds the current values when it did not (ScyllaDB
/// always adds them), so the row is read untyped.
fn lwt_applied(result: QueryResult) -> Result<bool, StoreError> {
    let rows = result.into_rows_result().map_err(internal)?;
    let row: Row = rows.first_row().map_err(internal)?;
    match row.columns.first() {
        Some(Some(CqlValue::Boolean(applied))) => Ok(*applied),
        other => Err(internal(format!("unexpected LWT result column: {other:?}"))),
    }
}

fn time_value(at: DateTime<Utc>) -> CqlValue {
    CqlValue::Timestamp(CqlTimestamp(at.timestamp_millis()))
}

/// Bind values of a projection statement, in the order its text names them.
/// Bind values; `None` binds CQL null.
type BoundValues = Vec<Option<CqlValue>>;

fn cell_value(value: &CellValue) -> CqlValue {
    match value {
        CellValue::Text(text) => CqlValue::Text(text.clone()),
        CellValue::Time(at) => time_value(*at),
        // Bound whole, so the set is overwritten: its tombstone, one microsecond before
        // the statement's timestamp, removes the terms of any older write.
        CellValue::Terms(terms) => {
            CqlValue::Set(terms.iter().cloned().map(CqlValue::Text).collect())
        }
    }
}

/// Prepared projection statements of one table, keyed by column set.
type ProjectionStatements = HashMap<Vec<Column>, PreparedStatement>;

/// The statements and bound values that write an event's projection: one statement
/// when its column set is prepared (every set the live path produces), otherwise one
/// single-column statement per column (a repair's arbitrary set), to be sent as one
/// batch on one partition.
fn projection_writes<'a>(
    statements: &'a ProjectionStatements,
    envelope: &EventEnvelope,
) -> Result<Vec<(&'a PreparedStatement, BoundValues)>, StoreError> {
    let projection = project(envelope);
    let bind = |writes: &[(Column, CellValue)]| -> BoundValues {
        let mut values = Vec::with_capacity(writes.len() + 3);
        values.push(Some(CqlValue::BigInt(projection.write_time)));
        values.extend(writes.iter().map(|(_, value)| Some(cell_value(value))));
        values.push(Some(CqlValue::Timeuuid(CqlTimeuuid::from(
            projection.event_id,
        ))));
        values.push(Some(CqlValue::Uuid(projection.user_id)));
        values
    };
    let lookup = |columns: &[Column]| {
        statements
            .get(columns)
            .ok_or_else(|| internal(format!("no prepared projection for {columns:?}")))
    };
    if let Some(statement) = statements.get(&projection.columns()) {
        return Ok(vec![(statement, bind(&projection.writes))]);
    }
    projection
        .writes
        .iter()
        .map(|write| Ok((lookup(&[write.0])?, bind(std::slice::from_ref(write)))))
        .collect()
}

fn projection_cql(table: &str, columns: &[Column]) -> String {
    let assignments: Vec<String> = columns
        .iter()
        .map(|c| format!("{} = ?", c.name()))
        .chain(std::iter::once("last_event_id = ?".to_owned()))
        .collect();
    format!(
        "UPDATE {table} USING TIMESTAMP ? SET {} WHERE userid = ?",
        assignments.join(", ")
    )
}

/// The `users` columns with their write times, as `find_user` and the jobs read them.
const USER_CELLS: &str = "userid, email, WRITETIME(email), firstname, WRITETIME(firstname), \
     lastname, WRITETIME(lastname), account_status, WRITETIME(account_status), \
     created_date, WRITETIME(created_date), last_login_date, WRITETIME(last_login_date), \
     last_event_id, WRITETIME(last_event_id)";

/// The search columns with their write times, read after [`USER_CELLS`] by the jobs.
/// A set's cells (its elements) all carry the time of the write that survived, so
/// `MAXWRITETIME` is that write's time.
const SEARCH_CELLS: &str = "email_search, MAXWRITETIME(email_search), \
     firstname_search, MAXWRITETIME(firstname_search), \
     lastname_search, MAXWRITETIME(lastname_search)";

fn cell<T>(value: Option<T>, written_at: Option<i64>) -> Option<Cell<T>> {
    value
        .zip(written_at)
        .map(|(value, written_at)| Cell { value, written_at })
}

/// A struct for one row of [`USER_CELLS`] read by position, followed by `extra`
/// columns, with `into_parts` giving the [`UserRow`] of the base cells and the extras.
/// The request path and the jobs read the same cells and then different ones.
macro_rules! user_cells_struct {
    ($(#[$meta:meta])* $name:ident { $($extra:ident: $extra_type:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(scylla::DeserializeRow)]
        #[scylla(flavor = "enforce_order", skip_name_checks)]
        struct $name {
            userid: Uuid,
            email: Option<String>,
            email_wt: Option<i64>,
            firstname: Option<String>,
            firstname_wt: Option<i64>,
            lastname: Option<String>,
            lastname_wt: Option<i64>,
            account_status: Option<String>,
            account_status_wt: Option<i64>,
            created_date: Option<DateTime<Utc>>,
            created_date_wt: Option<i64>,
            last_login_date: Option<DateTime<Utc>>,
            last_login_date_wt: Option<i64>,
            last_event_id: Option<CqlTimeuuid>,
            last_event_id_wt: Option<i64>,
            $($extra: $extra_type,)*
        }

        impl $name {
            #[allow(unused_parens)]
            fn into_parts(self) -> (UserRow, ($($extra_type),*)) {
                let mut row = UserRow::empty(self.userid);
                row.email = cell(self.email, self.email_wt);
                row.firstname = cell(self.firstname, self.firstname_wt);
                row.lastname = cell(self.lastname, self.lastname_wt);
                row.account_status = cell(self.account_status, self.account_status_wt);
                row.created_date = cell(self.created_date, self.created_date_wt);
                row.last_login_date = cell(self.last_login_date, self.last_login_date_wt);
                row.last_event_id = cell(self.last_event_id.map(Uuid::from), self.last_event_id_wt);
                (row, ($(self.$extra),*))
            }
        }
    };
}

user_cells_struct!(
    /// One row of [`USER_CELLS`]: what the request path reads.
    UserCells {}
);

impl From<UserCells> for UserRow {
    fn from(cells: UserCells) -> Self {
        cells.into_parts().0
    }
}

user_cells_struct!(
    /// One row of [`USER_CELLS`] then [`SEARCH_CELLS`]: the whole row, as the jobs read it.
    FullUserCells {
        email_search: Option<BTreeSet<String>>,
        email_search_wt: Option<i64>,
        firstname_search: Option<BTreeSet<String>>,
        firstname_search_wt: Option<i64>,
        lastname_search: Option<BTreeSet<String>>,
        lastname_search_wt: Option<i64>,
    }
);

impl From<FullUserCells> for UserRow {
    fn from(cells: FullUserCells) -> Self {
        let (mut row, (email, email_wt, first, first_wt, last, last_wt)) = cells.into_parts();
        row.email_search = cell(email, email_wt);
        row.firstname_search = cell(first, first_wt);
        row.lastname_search = cell(last, last_wt);
        row
    }
}

user_cells_struct!(
    /// One row of a search: [`USER_CELLS`], then the candidate's `token(userid)`.
    SearchCandidate { token: i64 }
);

/// One row of the event log, read by position ([`EVENT_COLUMNS`]).
#[derive(scylla::DeserializeRow)]
#[scylla(flavor = "enforce_order", skip_name_checks)]
struct EventRow {
    userid: Uuid,
    event_id: CqlTimeuuid,
    event_type: String,
    schema_version: i32,
    payload: String,
    actor: String,
    request_id: Option<String>,
    written_at: i64,
    /// The partition's `head` (static): the event with the highest write time.
    head: Option<CqlTimeuuid>,
}

impl TryFrom<EventRow> for EventEnvelope {
    type Error = StoreError;
    fn try_from(row: EventRow) -> Result<Self, StoreError> {
        let mut envelope = EventEnvelope::new(
            row.userid,
            row.event_id.into(),
            Actor::decode(&row.actor),
            row.request_id,
            UserEvent::decode(&row.event_type, row.schema_version, &row.payload)
                .map_err(internal)?,
        );
        // The row's own write time: the event's time for plain appends, the Paxos
        // ballot's for version-checked ones.
        envelope.write_time = row.written_at;
        Ok(envelope)
    }
}

/// The event columns as read back, then the payload's write time and the log's head.
const EVENT_COLUMNS: &str = "userid, event_id, event_type, schema_version, payload, actor, \
     request_id, WRITETIME(payload), head";
/// The event columns as written.
const EVENT_INSERT_COLUMNS: &str =
    "userid, event_id, event_type, schema_version, payload, actor, request_id";

impl CassandraStore {
    /// Connects, checks that every migration has been applied, and prepares every
    /// statement. Refuses to start on a schema that `migrate` has not brought up to date.
    pub async fn connect(options: &CassandraOptions) -> Result<Self, StoreError> {
        let session = open_session(options).await?;
        migrate::ensure_migrated(&session, &options.keyspace).await?;
        let statements = Statements::prepare(&session, &options.keyspace).await?;
        let store = Self {
            session: Arc::new(std::sync::RwLock::new(Arc::new(session))),
            statements: Arc::new(statements),
            job_statements: Arc::default(),
            keyspace: options.keyspace.clone(),
        };
        tokio::spawn(supervise(Arc::downgrade(&store.session), options.clone()));
        Ok(store)
    }

    /// The current driver session.
    pub fn session(&self) -> Arc<Session> {
        match self.session.read() {
            Ok(session) => Arc::clone(&session),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    async fn write_batch(
        &self,
        kind: BatchType,
        statements: Vec<(&PreparedStatement, BoundValues)>,
    ) -> Result<(), StoreError> {
        let mut batch = Batch::new(kind);
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

    fn insert_event_values(envelope: &EventEnvelope) -> BoundValues {
        vec![
            Some(CqlValue::Uuid(envelope.user_id)),
            Some(CqlValue::Timeuuid(envelope.event_id.into())),
            Some(CqlValue::Text(envelope.event.event_type().to_owned())),
            Some(CqlValue::Int(SCHEMA_VERSION)),
            Some(CqlValue::Text(envelope.event.payload_json())),
            Some(CqlValue::Text(envelope.actor.encode())),
            envelope.request_id.clone().map(CqlValue::Text),
            Some(CqlValue::Timeuuid(envelope.event_id.into())),
            Some(CqlValue::BigInt(envelope.occurred_micros())),
        ]
    }

    /// The plain write: event and projection in one logged batch (one mutation, as both
    /// are on the user's partition).
    async fn append_plain(&self, envelope: &EventEnvelope) -> Result<(), StoreError> {
        let mut writes = vec![(
            &self.statements.insert_event,
            Self::insert_event_values(envelope),
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

/// Attempts at a guess budget's lightweight transaction before giving up: each lost
/// round returns the values that beat it, so attempts are only lost to a writer that
/// changed the budget in between.
const BUDGET_ATTEMPTS: usize = 16;

impl CassandraStore {
    /// A login attempt's two budgets: the client's, then the account's.
    async fn read_budgets(
        &self,
        email_key: &str,
        client: &str,
    ) -> Result<(Option<Budget>, Option<Budget>), StoreError> {
        let result = self
            .session()
            .execute_unpaged(
                &self.statements.select_budgets,
                (email_key, client, login::ACCOUNT_SCOPE),
            )
            .await
            .map_err(classify)?;
        let rows = result.into_rows_result().map_err(internal)?;
        let (mut client_budget, mut account_budget) = (None, None);
        for row in rows
            .rows::<(String, i32, Option<i32>, i64)>()
            .map_err(internal)?
        {
            let (scope, used, pending, window_start) = row.map_err(internal)?;
            let budget = Some(Budget {
                used: u32::try_from(used).unwrap_or(0),
                pending: u32::try_from(pending.unwrap_or(0)).unwrap_or(0),
                window_start,
            });
            if scope == client {
                client_budget = budget;
            } else {
                account_budget = budget;
            }
        }
        Ok((client_budget, account_budget))
    }

    /// Applies `change` to one guess budget with a lightweight transaction that checks
    /// the budget is still `current`; a lost round retries with the values that won.
    /// `change` returning `Err` leaves the budget as it is, and that is the answer.
    async fn change_budget(
        &self,
        email_key: &str,
        scope: &str,
        mut current: Option<Budget>,
        change: impl Fn(Option<Budget>) -> Result<Budget, Duration>,
    ) -> Result<Result<Budget, Duration>, StoreError> {
        let ttl = i32::try_from(login::LOCKOUT_WINDOW.as_secs()).unwrap_or(i32::MAX);
        for _ in 0..BUDGET_ATTEMPTS {
            let next = match change(current) {
                Ok(next) => next,
                Err(wait) => return Ok(Err(wait)),
            };
            let count = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
            let result = match current {
                None => {
                    self.session()
                        .execute_unpaged(
                            &self.statements.insert_budget_if_absent,
                            (
                                email_key,
                                scope,
                                count(next.used),
                                count(next.pending),
                                next.window_start,
                                ttl,
                            ),
                        )
                        .await
                }
                Some(seen) => {
                    self.session()
                        .execute_unpaged(
                            &self.statements.update_budget_if_unchanged,
                            (
                                ttl,
                                count(next.used),
                                count(next.pending),
                                next.window_start,
                                email_key,
                                scope,
                                count(seen.used),
                                count(seen.pending),
                                seen.window_start,
                            ),
                        )
                        .await
                }
            }
            .map_err(classify)?;
            match lwt_outcome_budget(result)? {
                LwtBudget::Applied => return Ok(Ok(next)),
                LwtBudget::Lost(now_there) => current = now_there,
            }
        }
        Err(StoreError::Unavailable(format!(
            "the login budget of one account kept changing ({BUDGET_ATTEMPTS} rounds lost)"
        )))
    }
}

/// The outcome of a budget's lightweight transaction.
enum LwtBudget {
    /// It applied.
    Applied,
    /// Another writer changed the budget first; this is what it holds now.
    Lost(Option<Budget>),
}

/// Reads a budget LWT's result. Apache Cassandra answers `[applied]` alone when it
/// applied, and otherwise adds the current values of the columns it checked (the whole
/// row for `IF NOT EXISTS`), or nulls when the row is gone; so the row is read by
/// column name.
fn lwt_outcome_budget(result: QueryResult) -> Result<LwtBudget, StoreError> {
    let rows = result.into_rows_result().map_err(internal)?;
    let names: Vec<String> = rows
        .column_specs()
        .iter()
        .map(|spec| spec.name().to_owned())
        .collect();
    let row: Row = rows.first_row().map_err(internal)?;
    let column = |name: &str| {
        names
            .iter()
            .position(|n| n == name)
            .and_then(|i| row.columns.get(i).cloned().flatten())
    };
    match column("[applied]") {
        Some(CqlValue::Boolean(true)) => return Ok(LwtBudget::Applied),
        Some(CqlValue::Boolean(false)) => {}
        other => return Err(internal(format!("unexpected LWT result column: {other:?}"))),
    }
    let budget = match (column("used"), column("pending"), column("window_start")) {
        (Some(CqlValue::Int(used)), pending, Some(CqlValue::BigInt(window_start))) => {
            let pending = match pending {
                Some(CqlValue::Int(pending)) => pending,
                _ => 0,
            };
            Some(Budget {
                used: u32::try_from(used).unwrap_or(0),
                pending: u32::try_from(pending).unwrap_or(0),
                window_start,
            })
        }
        _ => None,
    };
    Ok(LwtBudget::Lost(budget))
}

impl CassandraStore {
    /// The version-checked write. Step 1, the check and the append as one LWT on the
    /// user's log partition; step 2, re-project the events from the expected version on
    /// with the write times the log holds after the round (this includes the new event,
    /// whose write time is the Paxos ballot's). A crash after step 1 leaves the
    /// projection behind the log, which the next version-checked write on the user
    /// (and `verify --repair`) heals.
    async fn append_if_latest(
        &self,
        envelope: &EventEnvelope,
        expected: Uuid,
    ) -> Result<(), StoreError> {
        let outcome = self
            .session()
            .execute_unpaged(
                &self.statements.append_event_if_head,
                (
                    envelope.event.event_type(),
                    SCHEMA_VERSION,
                    envelope.event.payload_json(),
                    envelope.actor.encode(),
                    envelope.request_id.as_deref(),
                    CqlTimeuuid::from(envelope.event_id),
                    envelope.user_id,
                    CqlTimeuuid::from(envelope.event_id),
                    CqlTimeuuid::from(expected),
                ),
            )
            .await;
        let applied = match outcome {
            Ok(result) => lwt_applied(result)?,
            // The LWT timed out with its outcome unknown: a SERIAL read settles it.
            Err(err) if is_cas_timeout(&err) => self.event_exists_serial(envelope).await?,
            Err(err) => return Err(classify(err)),
        };
        // Applied or not, the round may have completed another writer's unfinished
        // proposal, and Paxos (v1) commits such a proposal under the completing round's
        // ballot: that event's write time in the log moves later than the one its own
        // writer read and projected. So every round is followed by re-projecting what
        // the log now holds from the expected version on (or from the head, when a
        // completed proposal has made an older event the head). A loser's
        // re-projection also heals a winner that crashed before projecting, so the 412
        // carries the version the log really has.
        let reprojected = self.reproject_since(envelope.user_id, expected).await?;
        if !applied {
            return Err(StoreError::Conflict(
                "the user has changed since that version".into(),
            ));
        }
        if !reprojected.contains(&envelope.event_id) {
            return Err(internal("an applied LWT left no event row"));
        }
        Ok(())
    }

    /// Whether an event's row exists, read at SERIAL consistency (which completes any
    /// Paxos round in progress on the partition first).
    async fn event_exists_serial(&self, envelope: &EventEnvelope) -> Result<bool, StoreError> {
        let result = self
            .session()
            .execute_unpaged(
                &self.statements.select_event_write_time_serial,
                (envelope.user_id, CqlTimeuuid::from(envelope.event_id)),
            )
            .await
            .map_err(classify)?;
        let rows = result.into_rows_result().map_err(internal)?;
        let row: Option<(Option<i64>,)> = rows.maybe_first_row().map_err(internal)?;
        Ok(row.is_some_and(|(written,)| written.is_some()))
    }

    /// Projects every event of the user from `expected` on (inclusive), each with the
    /// write time its log row has now, as one mutation of the user's row. Idempotent:
    /// cells keep the higher write time, so re-projecting what already landed changes
    /// nothing. Returns the ids of the events projected.
    async fn reproject_since(
        &self,
        user_id: Uuid,
        expected: Uuid,
    ) -> Result<Vec<Uuid>, StoreError> {
        let (mut events, head) = self.events_since(user_id, expected).await?;
        // `head` names the event with the highest write time. If it is not among the
        // events from `expected` on, it is an older one that a round has just completed
        // under a new ballot (its writer died between the accept and the commit, say):
        // re-project from there.
        if let Some(head) = head.filter(|head| events.iter().all(|e| e.event_id != *head)) {
            tracing::warn!(
                %user_id,
                %head,
                "the log's head is older than the expected version; re-projecting from it"
            );
            events = self.events_since(user_id, head).await?.0;
        }
        let mut writes = Vec::new();
        for event in &events {
            writes.extend(projection_writes(&self.statements.project, event)?);
        }
        self.write_single_partition(writes).await?;
        Ok(events.iter().map(|event| event.event_id).collect())
    }

    /// The user's events from `since` on (inclusive), and the log's head.
    async fn events_since(
        &self,
        user_id: Uuid,
        since: Uuid,
    ) -> Result<(Vec<EventEnvelope>, Option<Uuid>), StoreError> {
        let result = self
            .session()
            .execute_unpaged(
                &self.statements.select_events_since,
                (user_id, CqlTimeuuid::from(since)),
            )
            .await
            .map_err(classify)?;
        let rows = result.into_rows_result().map_err(internal)?;
        let (mut events, mut head) = (Vec::new(), None);
        for row in rows.rows::<EventRow>().map_err(internal)? {
            let row = row.map_err(internal)?;
            head = row.head.map(Uuid::from);
            events.push(EventEnvelope::try_from(row)?);
        }
        Ok((events, head))
    }
}

/// An LWT that timed out in its Paxos phase: applied or not, nobody knows yet.
fn is_cas_timeout(err: &ExecutionError) -> bool {
    use scylla::errors::{DbError, WriteType};
    matches!(
        err,
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(
            DbError::WriteTimeout {
                write_type: WriteType::Cas,
                ..
            },
            _
        ))
    )
}

impl Statements {
    async fn prepare(session: &Session, keyspace: &str) -> Result<Self, StoreError> {
        let prepare = |cql: String, idempotent: bool| async move {
            let cql = qualify(keyspace, &cql);
            let mut statement = session
                .prepare(cql.clone())
                .await
                .map_err(|err| match err {
                    scylla::errors::PrepareError::ConnectionPoolError(_) => {
                        StoreError::Unavailable(err.to_string())
                    }
                    _ => StoreError::SchemaMissing(format!("cannot prepare `{cql}`: {err}")),
                })?;
            statement.set_is_idempotent(idempotent);
            Ok::<_, StoreError>(statement)
        };
        // A read of named columns: what its result holds is fixed by its text, so the
        // driver decodes it with the metadata it received when preparing, and Cassandra
        // is asked not to encode the column specifications into every result again
        // (`SKIP_METADATA`: 15 specs for a users row, on the auth read and the
        // refetch of every PUT). Never an LWT, whose result has other columns when it
        // does not apply, and never `SELECT *`, whose columns follow the table's.
        let prepare_read = |cql: String| async move {
            let mut statement = prepare(cql, true).await?;
            statement.set_use_cached_result_metadata(true);
            Ok::<_, StoreError>(statement)
        };
        let mut project = HashMap::new();
        for columns in COLUMN_SETS {
            // Writes with an explicit timestamp are idempotent: a retry rewrites the same
            // cells with the same timestamp.
            project.insert(
                columns.to_vec(),
                prepare(projection_cql(USERS_TABLE, columns), true).await?,
            );
        }
        let mut search = HashMap::new();
        for (column, _) in Column::SEARCH {
            for count in 1..=MAX_PROBE_TERMS {
                let contains = vec![format!("{} CONTAINS ?", column.name()); count].join(" AND ");
                search.insert(
                    (column, count),
                    prepare_read(format!(
                        "SELECT {USER_CELLS}, token(userid) FROM users WHERE {contains} \
                         AND token(userid) >= ? LIMIT ?"
                    ))
                    .await?,
                );
            }
        }
        Ok(Self {
            ping: prepare_read("SELECT release_version FROM system.local WHERE key = 'local'".into()).await?,
            select_user: prepare_read(format!("SELECT {USER_CELLS} FROM users WHERE userid = ?")).await?,
            select_credentials: prepare_read(
                "SELECT password, userid, account_locked FROM user_credentials WHERE email = ?".into(),
            )
            .await?,
            claim_credentials: prepare(
                "INSERT INTO user_credentials (email, password, userid, account_locked) \
                 VALUES (?, ?, ?, ?) IF NOT EXISTS"
                    .into(),
                false,
            )
            .await?,
            insert_event: prepare(
                format!("INSERT INTO user_events ({EVENT_INSERT_COLUMNS}, head) VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"),
                true,
            )
            .await?,
            append_event_if_head: prepare(
                "UPDATE user_events SET event_type = ?, schema_version = ?, payload = ?, actor = ?, \
                 request_id = ?, head = ? WHERE userid = ? AND event_id = ? IF head = ?"
                    .into(),
                false,
            )
            .await?,
            project,
            select_events_newest: prepare_read(
                format!("SELECT {EVENT_COLUMNS} FROM user_events WHERE userid = ? LIMIT ?"),
            )
            .await?,
            select_events_before: prepare_read(
                format!("SELECT {EVENT_COLUMNS} FROM user_events WHERE userid = ? AND event_id < ? LIMIT ?"),
            )
            .await?,
            select_events_since: prepare_read(
                format!("SELECT {EVENT_COLUMNS} FROM user_events WHERE userid = ? AND event_id >= ?"),
            )
            .await?,
            select_event_write_time_serial: {
                let mut statement = prepare_read(
                    "SELECT WRITETIME(payload) FROM user_events WHERE userid = ? AND event_id = ?".into(),
                )
                .await?;
                statement.set_consistency(Consistency::LocalSerial);
                statement
            },
            select_budgets: prepare_read(
                "SELECT scope, used, pending, window_start FROM login_budgets WHERE email = ? AND scope IN (?, ?)"
                    .into(),
            )
            .await?,
            insert_budget_if_absent: prepare(
                "INSERT INTO login_budgets (email, scope, used, pending, window_start) \
                 VALUES (?, ?, ?, ?, ?) IF NOT EXISTS USING TTL ?"
                    .into(),
                false,
            )
            .await?,
            update_budget_if_unchanged: prepare(
                "UPDATE login_budgets USING TTL ? SET used = ?, pending = ?, window_start = ? \
                 WHERE email = ? AND scope = ? IF used = ? AND pending = ? AND window_start = ?"
                    .into(),
                false,
            )
            .await?,
            search,
            select_users_with_status: prepare_read(
                "SELECT userid FROM users WHERE account_status = ? LIMIT ?".into(),
            )
            .await?,
            acquire_lease: prepare(
                "INSERT INTO leases (name, owner) VALUES (?, ?) IF NOT EXISTS USING TTL ?".into(),
                false,
            )
            .await?,
            release_lease: prepare("DELETE FROM leases WHERE name = ? IF owner = ?".into(), false)
                .await?,
        })
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

    async fn load_row(&self, user_id: Uuid) -> Result<Option<UserRow>, StoreError> {
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
        let claim = self
            .session()
            .execute_unpaged(
                &self.statements.claim_credentials,
                (
                    &credentials.email_key,
                    &credentials.password_hash,
                    credentials.user_id,
                    credentials.account_locked,
                ),
            )
            .await
            .map_err(classify)?;
        if !lwt_applied(claim)? {
            return Err(StoreError::Conflict("email already registered".into()));
        }
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

    async fn reserve_guess(
        &self,
        email_key: &str,
        client: &str,
        now: DateTime<Utc>,
    ) -> Result<GuessDecision, StoreError> {
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
        email_key: &str,
        client: &str,
        outcome: GuessOutcome,
    ) -> Result<(), StoreError> {
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
        field: Column,
        terms: &[String],
        after: Option<SearchKey>,
        limit: usize,
    ) -> Result<Vec<(SearchKey, UserRow)>, StoreError> {
        let statement = self
            .statements
            .search
            .get(&(field, terms.len()))
            .ok_or_else(|| {
                internal(format!("no search by {field:?} with {} terms", terms.len()))
            })?;
        let mut values: BoundValues = terms
            .iter()
            .map(|term| Some(CqlValue::Text(term.clone())))
            .collect();
        // From the cursor's token on, inclusive: another user of the same token (a
        // collision, vanishingly rare) is not skipped; those up to the cursor are.
        values.push(Some(CqlValue::BigInt(
            after.map_or(i64::MIN, |key| key.token),
        )));
        // One more for each user at the cursor's token, which is dropped below.
        let fetch = limit.saturating_add(1);
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
            if after.is_some_and(|after| key <= after) || !row.is_registered() {
                continue;
            }
            found.push((key, row));
        }
        found.truncate(limit);
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
        let mut events = Vec::new();
        for row in rows.rows::<EventRow>().map_err(internal)? {
            events.push(EventEnvelope::try_from(row.map_err(internal)?)?);
        }
        Ok(events)
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
