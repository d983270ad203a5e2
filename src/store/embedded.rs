//! The embedded backend: SQLite, in one crash-safe file under the data directory.
//!
//! Why SQLite and how it is configured: docs/adr/0001-embedded-store.md. Every write is
//! one transaction covering the event, its projection and (for registration) the
//! credentials, so there is no window in which the log and the table disagree.

use super::{Credentials, EventPage, Precondition, StoreError, UserStore};
use crate::domain::events::{Actor, EventEnvelope, SCHEMA_VERSION, UserEvent, event_micros};
use crate::domain::projection::{Column, project};
use crate::domain::user::{Cell, UserRow};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Numbered migrations, applied in order and recorded in `schema_migrations`.
const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("../../migrations/sqlite/0001_init.sql"))];

/// File name of the database inside the data directory.
pub const DATABASE_FILE: &str = "killrvideo-users.db";

/// SQLite behind a mutex: one connection serialises writers, which SQLite does anyway,
/// and keeps statement caching simple.
#[derive(Clone)]
pub struct EmbeddedStore {
    connection: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        match err.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError::Unavailable(err.to_string())
            }
            _ => StoreError::Internal(err.to_string()),
        }
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) the database in `data_dir` and migrates it.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|err| {
            StoreError::Unavailable(format!(
                "cannot create data directory {}: {err}",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join(DATABASE_FILE);
        let mut connection = Connection::open(&path)?;
        // WAL + synchronous=NORMAL: a crash (of the process or the machine) never corrupts
        // the file or tears a transaction; a power loss may drop the last commits.
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        connection.set_prepared_statement_cache_capacity(64);
        migrate(&mut connection)?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
            path,
        })
    }

    /// Where the database file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` on the connection off the async threads.
    async fn with_connection<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let connection = Arc::clone(&self.connection);
        tokio::task::spawn_blocking(move || {
            let mut guard = connection
                .lock()
                .map_err(|_| StoreError::Internal("sqlite connection mutex poisoned".into()))?;
            work(&mut guard)
        })
        .await
        .map_err(|err| StoreError::Internal(format!("sqlite task failed: {err}")))?
    }
}

fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    connection.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
    )?;
    let tx = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for (version, sql) in MIGRATIONS {
        let applied: bool = tx
            .query_row(
                "SELECT 1 FROM schema_migrations WHERE version = ?1",
                [version],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if !applied {
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                params![version, Utc::now().to_rfc3339()],
            )?;
        }
    }
    tx.commit()?;
    Ok(())
}

const USER_COLUMNS: &str = "email, email_wt, firstname, firstname_wt, lastname, lastname_wt, \
     account_status, account_status_wt, created_date, created_date_wt, \
     last_login_date, last_login_date_wt, last_event_id, last_event_id_wt";

fn text_cell(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Option<Cell<String>>> {
    let value: Option<String> = row.get(at)?;
    let written_at: Option<i64> = row.get(at + 1)?;
    Ok(value
        .zip(written_at)
        .map(|(value, written_at)| Cell { value, written_at }))
}

fn time_cell(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Option<Cell<DateTime<Utc>>>> {
    let millis: Option<i64> = row.get(at)?;
    let written_at: Option<i64> = row.get(at + 1)?;
    Ok(millis
        .and_then(DateTime::from_timestamp_millis)
        .zip(written_at)
        .map(|(value, written_at)| Cell { value, written_at }))
}

fn uuid_cell(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Option<Cell<Uuid>>> {
    let cell = text_cell(row, at)?;
    Ok(cell.and_then(|c| {
        Uuid::parse_str(&c.value).ok().map(|value| Cell {
            value,
            written_at: c.written_at,
        })
    }))
}

/// Reads the raw row, registered or not.
fn load_row(connection: &Connection, user_id: Uuid) -> Result<Option<UserRow>, StoreError> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE userid = ?1"
    ))?;
    let row = statement
        .query_row([user_id.to_string()], |row| {
            Ok(UserRow {
                user_id,
                email: text_cell(row, 0)?,
                firstname: text_cell(row, 2)?,
                lastname: text_cell(row, 4)?,
                account_status: text_cell(row, 6)?,
                created_date: time_cell(row, 8)?,
                last_login_date: time_cell(row, 10)?,
                last_event_id: uuid_cell(row, 12)?,
            })
        })
        .optional()?;
    Ok(row)
}

/// One column's value and write time as SQLite parameters.
fn column_values(row: &UserRow, column: Column) -> (rusqlite::types::Value, Option<i64>) {
    use rusqlite::types::Value;
    let text = |cell: &Option<Cell<String>>| {
        (
            cell.as_ref()
                .map_or(Value::Null, |c| Value::Text(c.value.clone())),
            cell.as_ref().map(|c| c.written_at),
        )
    };
    let time = |cell: &Option<Cell<DateTime<Utc>>>| {
        (
            cell.as_ref()
                .map_or(Value::Null, |c| Value::Integer(c.value.timestamp_millis())),
            cell.as_ref().map(|c| c.written_at),
        )
    };
    match column {
        Column::Email => text(&row.email),
        Column::Firstname => text(&row.firstname),
        Column::Lastname => text(&row.lastname),
        Column::AccountStatus => text(&row.account_status),
        Column::CreatedDate => time(&row.created_date),
        Column::LastLoginDate => time(&row.last_login_date),
    }
}

/// Inserts the event and projects it, inside the caller's transaction.
fn append_in(tx: &Transaction<'_>, envelope: &EventEnvelope) -> Result<(), StoreError> {
    let event_time = event_micros(envelope.event_id)
        .ok_or_else(|| StoreError::Internal("event id is not a time UUID".into()))?;
    tx.prepare_cached(
        "INSERT INTO user_events (userid, event_time, event_id, event_type, schema_version, payload, actor, request_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        envelope.user_id.to_string(),
        event_time,
        envelope.event_id.to_string(),
        envelope.event.event_type(),
        SCHEMA_VERSION,
        envelope.event.payload_json(),
        envelope.actor.encode(),
        envelope.request_id,
    ])?;
    apply_projection(tx, envelope)
}

/// Folds the event's projection into the row with the shared last-write-wins merge and
/// writes back only the cells that changed.
pub(crate) fn apply_projection(
    tx: &Connection,
    envelope: &EventEnvelope,
) -> Result<(), StoreError> {
    let projection = project(envelope);
    let existing = load_row(tx, envelope.user_id)?;
    let before = existing
        .clone()
        .unwrap_or_else(|| UserRow::empty(envelope.user_id));
    let mut after = before.clone();
    after.apply(&projection);

    let mut assignments = Vec::new();
    let mut values: Vec<rusqlite::types::Value> = Vec::new();
    for column in Column::ALL {
        let new = column_values(&after, column);
        if new != column_values(&before, column) {
            assignments.push(format!("{0} = ?, {0}_wt = ?", column.name()));
            values.push(new.0);
            values.push(new.1.map_or(
                rusqlite::types::Value::Null,
                rusqlite::types::Value::Integer,
            ));
        }
    }
    if after.last_event_id != before.last_event_id {
        assignments.push("last_event_id = ?, last_event_id_wt = ?".into());
        let cell = after.last_event_id.as_ref();
        values.push(cell.map_or(rusqlite::types::Value::Null, |c| {
            rusqlite::types::Value::Text(c.value.to_string())
        }));
        values.push(cell.map_or(rusqlite::types::Value::Null, |c| {
            rusqlite::types::Value::Integer(c.written_at)
        }));
    }
    if assignments.is_empty() {
        return Ok(());
    }
    if existing.is_none() {
        tx.prepare_cached("INSERT INTO users (userid) VALUES (?1)")?
            .execute([envelope.user_id.to_string()])?;
    }
    values.push(rusqlite::types::Value::Text(envelope.user_id.to_string()));
    // Column names come from the fixed Column enum, never from input.
    let sql = format!(
        "UPDATE users SET {} WHERE userid = ?",
        assignments.join(", ")
    );
    tx.prepare_cached(&sql)?
        .execute(rusqlite::params_from_iter(values))?;
    Ok(())
}

fn decode_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<EventEnvelope, StoreError>> {
    let user_id: String = row.get(0)?;
    let event_id: String = row.get(1)?;
    let event_type: String = row.get(2)?;
    let schema_version: i32 = row.get(3)?;
    let payload: String = row.get(4)?;
    let actor: String = row.get(5)?;
    let request_id: Option<String> = row.get(6)?;
    Ok((|| {
        let internal = |e: uuid::Error| StoreError::Internal(e.to_string());
        Ok(EventEnvelope::new(
            Uuid::parse_str(&user_id).map_err(internal)?,
            Uuid::parse_str(&event_id).map_err(internal)?,
            Actor::decode(&actor),
            request_id,
            UserEvent::decode(&event_type, schema_version, &payload)
                .map_err(|e| StoreError::Internal(e.to_string()))?,
        ))
    })())
}

#[async_trait]
impl UserStore for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.with_connection(|c| {
            c.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    async fn load_row(&self, user_id: Uuid) -> Result<Option<UserRow>, StoreError> {
        self.with_connection(move |c| load_row(c, user_id)).await
    }

    async fn find_credentials(&self, email_key: &str) -> Result<Option<Credentials>, StoreError> {
        let email_key = email_key.to_owned();
        self.with_connection(move |c| {
            let found = c
                .prepare_cached(
                    "SELECT password, userid, account_locked FROM user_credentials WHERE email = ?1",
                )?
                .query_row([&email_key], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, bool>(2)?))
                })
                .optional()?;
            found
                .map(|(password_hash, user_id, account_locked)| {
                    Ok(Credentials {
                        email_key: email_key.clone(),
                        password_hash,
                        user_id: Uuid::parse_str(&user_id).map_err(|e| StoreError::Internal(e.to_string()))?,
                        account_locked,
                    })
                })
                .transpose()
        })
        .await
    }

    async fn register(
        &self,
        credentials: &Credentials,
        registered: &EventEnvelope,
    ) -> Result<(), StoreError> {
        let credentials = credentials.clone();
        let registered = registered.clone();
        self.with_connection(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let claimed = tx
                .prepare_cached(
                    "INSERT INTO user_credentials (email, password, userid, account_locked)
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (email) DO NOTHING",
                )?
                .execute(params![
                    credentials.email_key,
                    credentials.password_hash,
                    credentials.user_id.to_string(),
                    credentials.account_locked
                ])?;
            if claimed == 0 {
                return Err(StoreError::Conflict("email already registered".into()));
            }
            append_in(&tx, &registered)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn append(
        &self,
        event: &EventEnvelope,
        precondition: Precondition,
    ) -> Result<(), StoreError> {
        let event = event.clone();
        self.with_connection(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            if let Precondition::LatestEvent(expected) = precondition {
                let current = load_row(&tx, event.user_id)?.and_then(|row| row.version());
                if current != Some(expected) {
                    return Err(StoreError::Conflict(
                        "the user has changed since that version".into(),
                    ));
                }
            }
            append_in(&tx, &event)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn events(
        &self,
        user_id: Uuid,
        page: EventPage,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        self.with_connection(move |c| {
            let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
            let (before_time, before_id) = match page.before {
                Some(id) => (event_micros(id).unwrap_or(i64::MAX), id.to_string()),
                None => (i64::MAX, String::new()),
            };
            let mut statement = c.prepare_cached(
                "SELECT userid, event_id, event_type, schema_version, payload, actor, request_id
                 FROM user_events
                 WHERE userid = ?1 AND (event_time, event_id) < (?2, ?3)
                 ORDER BY event_time DESC, event_id DESC LIMIT ?4",
            )?;
            let rows = statement.query_map(
                params![user_id.to_string(), before_time, before_id, limit],
                decode_event,
            )?;
            let mut events = Vec::new();
            for row in rows {
                events.push(row??);
            }
            Ok(events)
        })
        .await
    }
}
