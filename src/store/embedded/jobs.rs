//! The projection jobs' side of the embedded store: prefix-range scans, projection into
//! any table, deletes, checkpoints.

use super::EmbeddedStore;
use super::rows::*;
use crate::domain::columns::Column;
use crate::domain::events::EventEnvelope;
use crate::domain::user::UserRow;
use crate::store::schema::{sqlite_terms_table, sqlite_users_table, validate_table_name};
use crate::store::{
    EventStream, FinishedRange, ProjectionStore, RowStream, ScanRange, StoreError, USERS_TABLE,
};
use async_trait::async_trait;
use chrono::Utc;
use futures::StreamExt;
use futures::stream::BoxStream;
use rusqlite::{Connection, params};
use uuid::Uuid;

/// Rows read per page when a job scans.
pub(super) const SCAN_PAGE_ROWS: i64 = 1000;

/// User ids are stored as lowercase hyphenated text, so the first two hex digits split
/// them into 256 buckets; a range is a run of buckets, `[start, end)`.
pub(super) fn bucket_bound(bucket: i64) -> String {
    if bucket >= 256 {
        "g".into() // sorts after every hex digit
    } else {
        format!("{bucket:02x}")
    }
}

pub(super) fn checked_table(table: &str) -> Result<(), StoreError> {
    if table == USERS_TABLE {
        return Ok(());
    }
    validate_table_name(table)
        .map_err(|accepts| StoreError::internal(format!("invalid table `{table}`: {accepts}")))
}

/// Pages through a range with keyset pagination, one blocking query per page, so memory
/// stays at one page whatever the size of the table. `fetch` returns up to
/// SCAN_PAGE_ROWS items after the cursor, each with its cursor key; a short page is the
/// last one.
pub(super) fn paged<T, F>(
    store: EmbeddedStore,
    fetch: F,
) -> BoxStream<'static, Result<T, StoreError>>
where
    T: Send + 'static,
    F: Fn(&Connection, Option<String>) -> Result<Vec<(String, T)>, StoreError>
        + Send
        + Sync
        + Clone
        + 'static,
{
    let pages = futures::stream::unfold(Some(None::<String>), move |cursor| {
        let store = store.clone();
        let fetch = fetch.clone();
        async move {
            let after = cursor?;
            match store.with_reader(move |c| fetch(c, after)).await {
                Ok(mut keyed) => {
                    let next = if keyed.len() as i64 == SCAN_PAGE_ROWS {
                        keyed.last_mut().map(|(key, _)| Some(std::mem::take(key)))
                    } else {
                        None
                    };
                    let items: Vec<T> = keyed.into_iter().map(|(_, item)| item).collect();
                    Some((Ok(items), next))
                }
                Err(err) => Some((Err(err), None)),
            }
        }
    });
    pages
        .map(|page| match page {
            Ok(items) => futures::stream::iter(items.into_iter().map(Ok)).boxed(),
            Err(err) => futures::stream::once(async move { Err(err) }).boxed(),
        })
        .flatten()
        .boxed()
}

#[async_trait]
impl ProjectionStore for EmbeddedStore {
    fn scan_ranges(&self, splits: usize) -> Vec<ScanRange> {
        let splits = splits.clamp(1, 256) as i64;
        (0..splits)
            .map(|i| ScanRange {
                start: i * 256 / splits,
                end: (i + 1) * 256 / splits,
            })
            .collect()
    }

    async fn scan_events(&self, range: ScanRange) -> Result<EventStream<'_>, StoreError> {
        let (low, high) = (bucket_bound(range.start), bucket_bound(range.end));
        let keys = std::sync::Arc::clone(&self.keys);
        Ok(paged(self.clone(), move |c, after| {
            // Keyset cursor: "userid|event_time|event_id" of the last row of the page.
            let (user, time, id) = match after
                .as_deref()
                .map(|a| a.splitn(3, '|').collect::<Vec<_>>())
            {
                Some(parts) if parts.len() == 3 => (
                    parts[0].to_owned(),
                    parts[1].parse::<i64>().unwrap_or(i64::MIN),
                    parts[2].to_owned(),
                ),
                _ => (low.clone(), i64::MIN, String::new()),
            };
            let mut statement = c.prepare_cached(
                "SELECT userid, event_id, event_type, schema_version, payload, actor, request_id, event_time
                 FROM user_events
                 WHERE (userid, event_time, event_id) > (?1, ?2, ?3) AND userid >= ?4 AND userid < ?5
                 ORDER BY userid, event_time, event_id LIMIT ?6",
            )?;
            let rows =
                statement.query_map(params![user, time, id, low, high, SCAN_PAGE_ROWS], |row| {
                    let key = format!(
                        "{}|{}|{}",
                        row.get::<_, String>(0)?,
                        row.get::<_, i64>(7)?,
                        row.get::<_, String>(1)?
                    );
                    Ok((key, stored_event(row)?))
                })?;
            let (cursors, stored): (Vec<String>, Vec<_>) =
                rows.collect::<Result<Vec<_>, _>>()?.into_iter().unzip();
            // Cached keys: a job reads many users, each once.
            let events = super::keys::open_events(c, &keys, stored, false)?;
            Ok(cursors.into_iter().zip(events).collect())
        }))
    }

    async fn scan_rows(&self, table: &str, range: ScanRange) -> Result<RowStream<'_>, StoreError> {
        checked_table(table)?;
        let (low, high) = (bucket_bound(range.start), bucket_bound(range.end));
        let sql = format!(
            "SELECT userid, {} FROM {table}
             WHERE userid > ?1 AND userid >= ?2 AND userid < ?3 ORDER BY userid LIMIT ?4",
            *USER_COLUMNS
        );
        let table = table.to_owned();
        Ok(paged(self.clone(), move |c, after| {
            let mut statement = c.prepare_cached(&sql)?;
            let rows = statement.query_map(
                params![after.unwrap_or_default(), low, high, SCAN_PAGE_ROWS],
                |row| {
                    let id: String = row.get(0)?;
                    Ok((id, read_cells(row, uuid_column(row, 0)?, 1)?))
                },
            )?;
            let mut page = Vec::new();
            for row in rows {
                let (id, mut row) = row?;
                read_terms(c, &table, &mut row)?;
                page.push((id, row));
            }
            Ok(page)
        }))
    }

    async fn prepare_table(&self, table: &str) -> Result<(), StoreError> {
        checked_table(table)?;
        if table == USERS_TABLE {
            return Ok(());
        }
        let ddl = sqlite_users_table(table);
        // DDL: with the connection to itself, between batches.
        self.database
            .exclusive(move |c| {
                c.execute_batch(&ddl)?;
                Ok(())
            })
            .await
    }

    async fn table_row(&self, table: &str, user_id: Uuid) -> Result<Option<UserRow>, StoreError> {
        checked_table(table)?;
        let table = table.to_owned();
        self.with_reader(move |c| load_full_row(c, &table, user_id))
            .await
    }

    async fn project_into(&self, table: &str, event: &EventEnvelope) -> Result<(), StoreError> {
        checked_table(table)?;
        let (table, event) = (table.to_owned(), event.clone());
        // A group-committed write: a rebuild's parallel ranges share commits.
        self.database
            .write(move |c| apply_projection(c, &table, &event))
            .await
    }

    async fn delete_row(&self, table: &str, user_id: Uuid, _at: i64) -> Result<(), StoreError> {
        checked_table(table)?;
        let delete_row = format!("DELETE FROM {table} WHERE userid = ?1");
        let delete_terms = format!(
            "DELETE FROM {} WHERE userid = ?1",
            sqlite_terms_table(table)
        );
        self.database
            .write(move |c| {
                c.execute(&delete_row, [user_id.to_string()])?;
                c.execute(&delete_terms, [user_id.to_string()])?;
                Ok(())
            })
            .await
    }

    async fn delete_cell(
        &self,
        table: &str,
        user_id: Uuid,
        column: Column,
        _at: i64,
    ) -> Result<(), StoreError> {
        checked_table(table)?;
        let (clear, delete_terms) = if column.search_source().is_some() {
            (
                format!(
                    "UPDATE {table} SET {0}_wt = NULL WHERE userid = ?1",
                    column.name()
                ),
                Some(format!(
                    "DELETE FROM {} WHERE userid = ?1 AND field = '{}'",
                    sqlite_terms_table(table),
                    column.name()
                )),
            )
        } else {
            (
                format!(
                    "UPDATE {table} SET {0} = NULL, {0}_wt = NULL WHERE userid = ?1",
                    column.name()
                ),
                None,
            )
        };
        self.database
            .write(move |c| {
                c.execute(&clear, [user_id.to_string()])?;
                if let Some(sql) = &delete_terms {
                    c.execute(sql, [user_id.to_string()])?;
                }
                Ok(())
            })
            .await
    }

    async fn finished_ranges(&self, job: &str) -> Result<Vec<i64>, StoreError> {
        let job = job.to_owned();
        self.database
            .read(move |c| {
                let mut statement = c.prepare_cached(
                    "SELECT range_start FROM projection_checkpoints WHERE job = ?1",
                )?;
                let starts = statement.query_map([job], |row| row.get::<_, i64>(0))?;
                Ok(starts.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn finish_range(&self, job: &str, done: FinishedRange) -> Result<(), StoreError> {
        let FinishedRange { range, events } = done;
        let job = job.to_owned();
        self.database.write(move |c| {
            c.prepare_cached(
                "INSERT OR REPLACE INTO projection_checkpoints (job, range_start, range_end, events, finished_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![job, range.start, range.end, events as i64, Utc::now().to_rfc3339()])?;
            Ok(())
        })
        .await
    }

    async fn reset_checkpoints(&self, job: &str) -> Result<(), StoreError> {
        let job = job.to_owned();
        self.database
            .write(move |c| {
                c.execute("DELETE FROM projection_checkpoints WHERE job = ?1", [job])?;
                Ok(())
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::EventClock;
    use crate::domain::events::{Actor, FieldChange, ProfileUpdated, UserEvent};
    use crate::store::{EventLog, Precondition};
    use futures::TryStreamExt;

    fn renamed(user_id: Uuid, clock: &EventClock, to: String) -> EventEnvelope {
        EventEnvelope::new(
            user_id,
            clock.next_event_id(),
            Actor::User(user_id),
            None,
            UserEvent::ProfileUpdated(ProfileUpdated {
                firstname: Some(FieldChange { from: None, to }),
                lastname: None,
            }),
        )
    }

    /// A side table built from the one DDL has exactly the columns the migrations gave
    /// `users`, and its terms table those of `users_search_terms`.
    #[test]
    fn side_tables_match_the_migrated_users_table() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        let connection = Connection::open(store.path()).expect("connection");
        connection
            .execute_batch(&sqlite_users_table("users_side"))
            .expect("side table");
        let columns = |table: &str| -> Vec<(String, String)> {
            let mut statement = connection
                .prepare(&format!("PRAGMA table_info({table})"))
                .expect("pragma");
            let mut columns: Vec<(String, String)> = statement
                .query_map([], |row| Ok((row.get(1)?, row.get(2)?)))
                .expect("columns")
                .collect::<Result<_, _>>()
                .expect("rows");
            columns.sort();
            columns
        };
        assert_eq!(columns("users_side"), columns("users"));
        assert_eq!(
            columns("users_side_search_terms"),
            columns("users_search_terms")
        );
    }

    /// The scans page with a keyset cursor; more rows than one page must come back
    /// exactly once each, in key order.
    #[tokio::test]
    async fn scans_cross_page_boundaries() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        let clock = EventClock::new();
        let users = SCAN_PAGE_ROWS as usize + 7;
        let events_of_first = SCAN_PAGE_ROWS as usize + 3;
        let user_ids: Vec<Uuid> = (0..users).map(|_| Uuid::new_v4()).collect();
        for (n, user_id) in user_ids.iter().enumerate() {
            let count = if n == 0 { events_of_first } else { 1 };
            for i in 0..count {
                store
                    .append(
                        &renamed(*user_id, &clock, format!("N{i}")),
                        Precondition::None,
                    )
                    .await
                    .expect("append");
            }
        }
        let everything = store.scan_ranges(1)[0];

        let events: Vec<EventEnvelope> = store
            .scan_events(everything)
            .await
            .expect("scan events")
            .try_collect()
            .await
            .expect("events");
        assert_eq!(events.len(), events_of_first + users - 1);
        let mut ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), events.len(), "an event came back twice");
        let first_user = events.iter().filter(|e| e.user_id == user_ids[0]).count();
        assert_eq!(first_user, events_of_first);

        let rows: Vec<UserRow> = store
            .scan_rows(USERS_TABLE, everything)
            .await
            .expect("scan rows")
            .try_collect()
            .await
            .expect("rows");
        let mut scanned: Vec<Uuid> = rows.iter().map(|row| row.user_id).collect();
        let mut expected = user_ids.clone();
        expected.sort_by_key(|id| id.to_string());
        assert_eq!(scanned, expected, "rows in key order, each once");
        scanned.dedup();
        assert_eq!(scanned.len(), users);
        let first = rows
            .iter()
            .find(|row| row.user_id == user_ids[0])
            .expect("first user");
        assert_eq!(
            first.firstname(),
            Some(format!("N{}", events_of_first - 1).as_str())
        );
    }
}
