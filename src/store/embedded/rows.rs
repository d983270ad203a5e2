//! The row codecs of the embedded store: how a users row, its search terms and the
//! events are laid out in SQLite, read back, and how a projection is written.

use crate::domain::columns::{CellValue, Column};
use crate::domain::events::EventEnvelope;
use crate::domain::projection::project;
use crate::domain::user::{Cell, UserRow};
use crate::store::codec::{StoredEvent, needs_data_key};
use crate::store::keys::DataKeys;
use crate::store::schema::{sqlite_terms_table, sqlite_users_columns};
use crate::store::{StoreError, USERS_TABLE};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::BTreeSet;
use uuid::Uuid;

/// The stored columns, comma-separated, as selected by every row read.
pub(super) static USER_COLUMNS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    sqlite_users_columns()
        .into_iter()
        .map(|(name, _)| name)
        .collect::<Vec<_>>()
        .join(", ")
});

pub(super) fn text_cell(
    row: &rusqlite::Row<'_>,
    at: usize,
) -> rusqlite::Result<Option<Cell<String>>> {
    let value: Option<String> = row.get(at)?;
    let written_at: Option<i64> = row.get(at + 1)?;
    Ok(value
        .zip(written_at)
        .map(|(value, written_at)| Cell { value, written_at }))
}

pub(super) fn time_cell(
    row: &rusqlite::Row<'_>,
    at: usize,
) -> rusqlite::Result<Option<Cell<DateTime<Utc>>>> {
    let millis: Option<i64> = row.get(at)?;
    let written_at: Option<i64> = row.get(at + 1)?;
    Ok(millis
        .and_then(DateTime::from_timestamp_millis)
        .zip(written_at)
        .map(|(value, written_at)| Cell { value, written_at }))
}

pub(super) fn uuid_cell(
    row: &rusqlite::Row<'_>,
    at: usize,
) -> rusqlite::Result<Option<Cell<Uuid>>> {
    let cell = text_cell(row, at)?;
    Ok(cell.and_then(|c| {
        Uuid::parse_str(&c.value).ok().map(|value| Cell {
            value,
            written_at: c.written_at,
        })
    }))
}

/// A user id column: a value that is not a UUID is an error, never the nil UUID.
pub(super) fn uuid_column(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Uuid> {
    let text: String = row.get(at)?;
    Uuid::parse_str(&text).map_err(|err| {
        rusqlite::Error::FromSqlConversionFailure(at, rusqlite::types::Type::Text, Box::new(err))
    })
}

/// A search column's write time, as a cell whose terms are not read yet (an empty set).
pub(super) fn terms_written_at(
    row: &rusqlite::Row<'_>,
    at: usize,
) -> rusqlite::Result<Option<Cell<BTreeSet<String>>>> {
    let written_at: Option<i64> = row.get(at)?;
    Ok(written_at.map(|written_at| Cell {
        value: BTreeSet::new(),
        written_at,
    }))
}

/// Reads the cells of a row selected with [`USER_COLUMNS`] starting at column `at`. The
/// search cells carry their write times only; [`read_terms`] fills their terms in.
pub(super) fn read_cells(
    row: &rusqlite::Row<'_>,
    user_id: Uuid,
    at: usize,
) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        user_id,
        email: text_cell(row, at)?,
        firstname: text_cell(row, at + 2)?,
        lastname: text_cell(row, at + 4)?,
        account_status: text_cell(row, at + 6)?.map(|cell| Cell {
            value: cell.value.into(),
            written_at: cell.written_at,
        }),
        created_date: time_cell(row, at + 8)?,
        last_login_date: time_cell(row, at + 10)?,
        email_search: terms_written_at(row, at + 12)?,
        firstname_search: terms_written_at(row, at + 13)?,
        lastname_search: terms_written_at(row, at + 14)?,
        last_event_id: uuid_cell(row, at + 15)?,
    })
}

/// Reads the row's search terms from the terms table of `table` into its search cells:
/// what a search finds the user by, so the jobs compare exactly that with the log.
pub(super) fn read_terms(
    connection: &Connection,
    table: &str,
    row: &mut UserRow,
) -> Result<(), StoreError> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT field, term FROM {} WHERE userid = ?1",
        sqlite_terms_table(table)
    ))?;
    let terms = statement.query_map([row.user_id.to_string()], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    for entry in terms {
        let (field, term) = entry?;
        let column = Column::SEARCH
            .iter()
            .map(|(search, _)| *search)
            .find(|c| c.name() == field);
        if let Some(Some(cell)) = column.and_then(|c| row.terms_slot(c)) {
            cell.value.insert(term);
        }
    }
    Ok(())
}

/// Reads the raw row of the live table, registered or not, as the request path needs
/// it: the search cells carry their write times only.
pub(super) fn load_row(
    connection: &Connection,
    user_id: Uuid,
) -> Result<Option<UserRow>, StoreError> {
    load_row_from(connection, USERS_TABLE, user_id)
}

/// Reads the raw row of `table` (validated by the caller), search terms not read.
pub(super) fn load_row_from(
    connection: &Connection,
    table: &str,
    user_id: Uuid,
) -> Result<Option<UserRow>, StoreError> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {} FROM {table} WHERE userid = ?1",
        *USER_COLUMNS
    ))?;
    let row = statement
        .query_row([user_id.to_string()], |row| read_cells(row, user_id, 0))
        .optional()?;
    Ok(row)
}

/// Reads the whole row of `table`, search terms included: what the jobs compare.
pub(super) fn load_full_row(
    connection: &Connection,
    table: &str,
    user_id: Uuid,
) -> Result<Option<UserRow>, StoreError> {
    let Some(mut row) = load_row_from(connection, table, user_id)? else {
        return Ok(None);
    };
    read_terms(connection, table, &mut row)?;
    Ok(Some(row))
}

/// One column's value and write time as SQLite parameters (not for search columns,
/// whose terms are rows of their own).
pub(super) fn column_values(
    row: &UserRow,
    column: Column,
) -> (rusqlite::types::Value, Option<i64>) {
    use rusqlite::types::Value;
    match row.cell(column) {
        Some((CellValue::Text(text), at)) => (Value::Text(text), Some(at)),
        Some((CellValue::Time(time), at)) => (Value::Integer(time.timestamp_millis()), Some(at)),
        Some((CellValue::Terms(_), at)) => (Value::Null, Some(at)),
        None => (Value::Null, None),
    }
}

/// Inserts the event, its personal values sealed with the user's data key, and
/// projects it in clear, inside the caller's transaction.
pub(super) fn append_in(
    tx: &Connection,
    keys: &DataKeys,
    envelope: &EventEnvelope,
) -> Result<(), StoreError> {
    let key = match needs_data_key(envelope) {
        true => Some(super::keys::data_key_for_write(tx, keys, envelope.user_id)?),
        false => None,
    };
    let stored = StoredEvent::seal(envelope, key.as_deref())
        .map_err(|err| StoreError::internal_from("cannot seal the event", err))?;
    tx.prepare_cached(
        "INSERT INTO user_events (userid, event_time, event_id, event_type, schema_version, payload, actor, request_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        stored.user_id.to_string(),
        envelope.occurred_micros(),
        stored.event_id.to_string(),
        stored.event_type,
        stored.schema_version,
        stored.payload,
        stored.actor,
        stored.request_id,
    ])?;
    apply_projection(tx, USERS_TABLE, envelope)
}

/// How a projection's set of terms lands on what the terms table holds, decided by
/// write time as Cassandra decides it for a `set<text>` ([`Cell::merge_terms`]).
pub(super) enum TermsWrite {
    /// Newer than the stored set (or there is none): it replaces it.
    Replace,
    /// The same write time: the sets are merged.
    Union,
}

/// Folds the event's projection into the row with the shared last-write-wins merge and
/// writes back only the cells that changed. Search terms follow the same rule by
/// their write time: a newer set replaces the stored rows, one of the same time adds
/// to them, an older one changes nothing.
pub(super) fn apply_projection(
    tx: &Connection,
    table: &str,
    envelope: &EventEnvelope,
) -> Result<(), StoreError> {
    use rusqlite::types::Value;
    let projection = project(envelope);
    let existing = load_row_from(tx, table, envelope.user_id)?;
    let before = existing
        .clone()
        .unwrap_or_else(|| UserRow::empty(envelope.user_id));
    let mut after = before.clone();
    after.apply(&projection);

    let mut assignments = Vec::new();
    let mut values: Vec<Value> = Vec::new();
    for column in Column::ALL {
        if column.search_source().is_some() {
            continue;
        }
        let new = column_values(&after, column);
        if new != column_values(&before, column) {
            assignments.push(format!("{0} = ?, {0}_wt = ?", column.name()));
            values.push(new.0);
            values.push(new.1.map_or(Value::Null, Value::Integer));
        }
    }
    let mut terms_writes = Vec::new();
    for (column, value) in &projection.writes {
        let CellValue::Terms(terms) = value else {
            continue;
        };
        let stored = before.terms_cell(*column).map(|cell| cell.written_at);
        let write = match stored {
            Some(at) if at > projection.write_time => continue,
            Some(at) if at == projection.write_time => TermsWrite::Union,
            _ => {
                assignments.push(format!("{}_wt = ?", column.name()));
                values.push(Value::Integer(projection.write_time));
                TermsWrite::Replace
            }
        };
        terms_writes.push((*column, terms, write));
    }
    if after.last_event_id != before.last_event_id {
        assignments.push("last_event_id = ?, last_event_id_wt = ?".into());
        let cell = after.last_event_id.as_ref();
        values.push(cell.map_or(Value::Null, |c| Value::Text(c.value.to_string())));
        values.push(cell.map_or(Value::Null, |c| Value::Integer(c.written_at)));
    }
    if assignments.is_empty() && terms_writes.is_empty() {
        return Ok(());
    }
    let user_id = envelope.user_id.to_string();
    if existing.is_none() {
        tx.prepare_cached(&format!("INSERT INTO {table} (userid) VALUES (?1)"))?
            .execute([&user_id])?;
    }
    if !assignments.is_empty() {
        values.push(Value::Text(user_id.clone()));
        // Column names come from the fixed Column enum, never from input.
        let sql = format!(
            "UPDATE {table} SET {} WHERE userid = ?",
            assignments.join(", ")
        );
        tx.prepare_cached(&sql)?
            .execute(rusqlite::params_from_iter(values))?;
    }
    let terms_table = sqlite_terms_table(table);
    for (column, terms, write) in terms_writes {
        if let TermsWrite::Replace = write {
            tx.prepare_cached(&format!(
                "DELETE FROM {terms_table} WHERE userid = ?1 AND field = ?2"
            ))?
            .execute(params![user_id, column.name()])?;
        }
        let mut insert = tx.prepare_cached(&format!(
            "INSERT OR IGNORE INTO {terms_table} (field, term, userid) VALUES (?1, ?2, ?3)"
        ))?;
        for term in terms {
            insert.execute(params![column.name(), term, user_id])?;
        }
    }
    Ok(())
}

/// Reads an event row selected as `userid, event_id, event_type, schema_version,
/// payload, actor, request_id` (from column 0).
pub(super) fn stored_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEvent> {
    Ok(StoredEvent {
        user_id: uuid_column(row, 0)?,
        event_id: uuid_column(row, 1)?,
        event_type: row.get(2)?,
        schema_version: row.get(3)?,
        payload: row.get(4)?,
        actor: row.get(5)?,
        request_id: row.get(6)?,
        written_at: None,
    })
}
