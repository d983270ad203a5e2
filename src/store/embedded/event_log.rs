//! The event log and the `users` projection on the request path ([`EventLog`](crate::store::EventLog)).

use super::rows::{append_in, load_row, stored_event};
use super::versioned::append_checked;
use super::{EmbeddedStore, keys};
use crate::domain::events::{EventEnvelope, event_micros};
use crate::domain::user::UserRow;
use crate::store::{Credentials, EventLog, EventPage, Precondition, StoreError};
use async_trait::async_trait;
use rusqlite::params;
use std::sync::Arc;
use uuid::Uuid;

#[async_trait]
impl EventLog for EmbeddedStore {
    async fn raw_row(&self, user_id: Uuid) -> Result<Option<UserRow>, StoreError> {
        self.database
            .read(move |c| Ok(load_row(c, user_id)?.map(UserRow::without_search)))
            .await
    }

    async fn register(
        &self,
        credentials: &Credentials,
        registered: &EventEnvelope,
    ) -> Result<(), StoreError> {
        let credentials = credentials.clone();
        let registered = registered.clone();
        let keys = Arc::clone(&self.keys);
        // One write of the database thread: atomic, and committed when it returns Ok.
        self.database
            .write(move |tx| {
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
                append_in(tx, &keys, &registered)
            })
            .await
    }

    async fn append(
        &self,
        event: &EventEnvelope,
        precondition: Precondition,
    ) -> Result<(), StoreError> {
        let event = event.clone();
        let keys = Arc::clone(&self.keys);
        self.database
            .write(move |tx| append_checked(tx, &keys, &event, precondition))
            .await
    }

    async fn append_and_refetch(
        &self,
        event: &EventEnvelope,
        precondition: Precondition,
    ) -> Result<Option<UserRow>, StoreError> {
        let event = event.clone();
        let keys = Arc::clone(&self.keys);
        // One write of the database thread: the refetch reads the row back inside the
        // write's own transaction, after its update, rather than in a later batch.
        self.database
            .write(move |tx| {
                append_checked(tx, &keys, &event, precondition)?;
                Ok(load_row(tx, event.user_id)?
                    .filter(UserRow::is_registered)
                    .map(UserRow::without_search))
            })
            .await
    }

    async fn events(
        &self,
        user_id: Uuid,
        page: EventPage,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let keys = Arc::clone(&self.keys);
        self.with_reader(move |c| {
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
            let stored = statement
                .query_map(
                    params![user_id.to_string(), before_time, before_id, limit],
                    stored_event,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            // The key as stored now, not as cached: a history read right after an
            // erasure must not open values with a key that was just deleted.
            keys::open_events(c, &keys, stored, true)
        })
        .await
    }
}
