//! The erasure's steps after `UserErased` ([`ErasureStore`](crate::store::ErasureStore)).

use super::rows::stored_event;
use super::{EmbeddedStore, keys};
use crate::store::{ErasureStore, StoreError};
use async_trait::async_trait;
use rusqlite::params;
use std::sync::Arc;
use uuid::Uuid;

#[async_trait]
impl ErasureStore for EmbeddedStore {
    async fn delete_data_key(&self, user_id: Uuid) -> Result<(), StoreError> {
        let keys = Arc::clone(&self.keys);
        self.database
            .write(move |tx| keys::securely(tx, |tx| keys::delete_key(tx, &keys, user_id)))
            .await?;
        // `secure_delete` zeroed the key in the page the delete wrote; the page as it
        // was is still in the database file (until a checkpoint copies the new one over
        // it) and perhaps in older frames of the WAL. A truncating checkpoint does both
        // now: erasures are rare, and this one waits for no reader.
        let busy = self
            .database
            .exclusive(|c| {
                Ok(c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                    row.get::<_, i64>(0)
                })?)
            })
            .await?;
        if busy != 0 {
            tracing::warn!(
                %user_id,
                "a reader held the WAL: the erased data key stays in the WAL file until the \
                 next checkpoint that catches up (within seconds)"
            );
        }
        Ok(())
    }

    async fn delete_account(
        &self,
        user_id: Uuid,
        email_key: Option<&str>,
    ) -> Result<(), StoreError> {
        let email_key = email_key.map(str::to_owned);
        self.database
            .write(move |tx| {
                keys::securely(tx, |tx| {
                    let user = user_id.to_string();
                    if let Some(email_key) = &email_key {
                        tx.prepare_cached(
                            "DELETE FROM user_credentials WHERE email = ?1 AND userid = ?2",
                        )?
                        .execute(params![email_key, user])?;
                        tx.prepare_cached("DELETE FROM login_budgets WHERE email = ?1")?
                            .execute([email_key])?;
                    }
                    tx.prepare_cached("DELETE FROM users_search_terms WHERE userid = ?1")?
                        .execute([&user])?;
                    tx.prepare_cached("DELETE FROM users WHERE userid = ?1")?
                        .execute([&user])?;
                    Ok(())
                })
            })
            .await
    }

    async fn overwrite_plain_values(&self, user_id: Uuid) -> Result<u64, StoreError> {
        self.database
            .write(move |tx| keys::securely(tx, |tx| {
                let stored = tx
                    .prepare_cached(
                        "SELECT userid, event_id, event_type, schema_version, payload, actor, request_id
                         FROM user_events WHERE userid = ?1 AND schema_version = ?2",
                    )?
                    .query_map(
                        params![user_id.to_string(), crate::domain::events::PLAIN_SCHEMA_VERSION],
                        stored_event,
                    )?
                    .collect::<Result<Vec<_>, _>>()?;
                let mut overwritten = 0;
                for event in stored {
                    let payload = event.plain_values_erased().map_err(|err| {
                        StoreError::internal_from(format!("event {} does not decode", event.event_id), err)
                    })?;
                    if let Some(payload) = payload {
                        tx.prepare_cached(
                            "UPDATE user_events SET payload = ?1 WHERE userid = ?2 AND event_id = ?3",
                        )?
                        .execute(params![payload, user_id.to_string(), event.event_id.to_string()])?;
                        overwritten += 1;
                    }
                }
                Ok(overwritten)
            }))
            .await
    }
}
