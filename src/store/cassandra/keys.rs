//! The Cassandra store's `user_keys` and `key_encryption_keys` tables, the sealing of
//! events on their way in and their opening on the way out (the rules are
//! `store::keys`'; the sealing itself is the codec's).

use super::rows::EventRow;
use super::{CassandraStore, LwtAnswer, classify, internal};
use crate::domain::events::EventEnvelope;
use crate::store::StoreError;
use crate::store::codec::{StoredEvent, needs_data_key};
use crate::store::keys::WrappedKey;
use crate::store::sealing::DataKey;
use scylla::client::session::Session;
use scylla::value::CqlValue;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use uuid::Uuid;

impl CassandraStore {
    /// The user's data key: from the cache unless `fresh`, else from `user_keys` (at
    /// LOCAL_QUORUM, so a key deleted by an erasure on another instance is not found).
    /// `None` when the user has none.
    pub(super) async fn data_key(
        &self,
        user_id: Uuid,
        fresh: bool,
    ) -> Result<Option<Arc<DataKey>>, StoreError> {
        if !fresh && let Some(key) = self.keys.cached(user_id) {
            return Ok(Some(key));
        }
        let result = self
            .session()
            .execute_unpaged(&self.statements.select_data_key, (user_id,))
            .await
            .map_err(classify)?;
        let row: Option<(String, Vec<u8>)> = result
            .into_rows_result()
            .map_err(internal)?
            .maybe_first_row()
            .map_err(internal)?;
        match row {
            Some((kek_id, wrapped)) => self
                .keys
                .unwrap(user_id, &WrappedKey { kek_id, wrapped })
                .map(Some),
            None => {
                self.keys.forget(user_id);
                Ok(None)
            }
        }
    }

    /// A new user's data key, stored before their first event (registration: the user
    /// id is new, so a plain insert cannot meet another key).
    pub(super) async fn create_data_key(&self, user_id: Uuid) -> Result<Arc<DataKey>, StoreError> {
        let (key, wrapped) = self.keys.create(user_id);
        self.register_kek(&wrapped.kek_id).await?;
        self.session()
            .execute_unpaged(
                &self.statements.insert_data_key,
                (user_id, &wrapped.kek_id, &wrapped.wrapped),
            )
            .await
            .map_err(classify)?;
        Ok(self.keys.remember(user_id, key))
    }

    /// The user's data key for a write, made now for a user registered before keys
    /// existed. Two instances may make one at once, so the insert is a lightweight
    /// transaction and the loser takes the winner's key.
    async fn data_key_for_write(&self, user_id: Uuid) -> Result<Arc<DataKey>, StoreError> {
        if let Some(key) = self.data_key(user_id, false).await? {
            return Ok(key);
        }
        let (key, wrapped) = self.keys.create(user_id);
        self.register_kek(&wrapped.kek_id).await?;
        let answer = self
            .session()
            .execute_unpaged(
                &self.statements.insert_data_key_if_absent,
                (user_id, &wrapped.kek_id, &wrapped.wrapped),
            )
            .await
            .map_err(classify)?;
        let answer = LwtAnswer::read(answer)?;
        if answer.applied {
            return Ok(self.keys.remember(user_id, key));
        }
        match (answer.current("kek_id"), answer.current("wrapped")) {
            (Some(CqlValue::Text(kek_id)), Some(CqlValue::Blob(wrapped))) => self.keys.unwrap(
                user_id,
                &WrappedKey {
                    kek_id: kek_id.clone(),
                    wrapped: wrapped.clone(),
                },
            ),
            _ => Err(internal(
                "a data key insert that did not apply named no key",
            )),
        }
    }

    /// Records, once per process, that the current KEK wraps keys in this keyspace.
    async fn register_kek(&self, kek_id: &str) -> Result<(), StoreError> {
        if self.kek_registered.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.session()
            .execute_unpaged(&self.statements.register_kek, (kek_id,))
            .await
            .map_err(classify)?;
        self.kek_registered.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Deletes the user's data key (erasure, step 2), here and in the cache.
    pub(super) async fn remove_data_key(&self, user_id: Uuid) -> Result<(), StoreError> {
        self.keys.forget(user_id);
        self.session()
            .execute_unpaged(&self.statements.delete_data_key, (user_id,))
            .await
            .map_err(classify)?;
        self.keys.forget(user_id);
        Ok(())
    }

    /// The event as the log stores it, sealed with the user's key when it carries
    /// personal values.
    pub(super) async fn seal(&self, envelope: &EventEnvelope) -> Result<StoredEvent, StoreError> {
        let key = match needs_data_key(envelope) {
            true => Some(self.data_key_for_write(envelope.user_id).await?),
            false => None,
        };
        StoredEvent::seal(envelope, key.as_deref())
            .map_err(|err| StoreError::internal_from("cannot seal the event", err))
    }

    /// Opens one event row with its user's key (cached unless `fresh`).
    pub(super) async fn open_row(
        &self,
        row: EventRow,
        fresh: bool,
    ) -> Result<EventEnvelope, StoreError> {
        let key = self.data_key(row.userid, fresh).await?;
        open(row, key.as_deref())
    }

    /// Opens rows of one user's log with one key read.
    pub(super) async fn open_user_rows(
        &self,
        user_id: Uuid,
        rows: Vec<EventRow>,
        fresh: bool,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.data_key(user_id, fresh).await?;
        rows.into_iter()
            .map(|row| open(row, key.as_deref()))
            .collect()
    }
}

/// Opens a stored event; one that does not decode fails the read that met it.
fn open(row: EventRow, key: Option<&DataKey>) -> Result<EventEnvelope, StoreError> {
    let event_id = Uuid::from(row.event_id);
    StoredEvent::from(row)
        .open(key)
        .map_err(|err| StoreError::internal_from(format!("event {event_id} does not decode"), err))
}

/// Every KEK that has wrapped a key in the keyspace: read at start-up, for the check.
pub(super) async fn registered_keks(
    session: &Session,
    keyspace: &str,
) -> Result<Vec<String>, StoreError> {
    let result = session
        .query_unpaged(
            format!("SELECT kek_id FROM {keyspace}.key_encryption_keys"),
            (),
        )
        .await
        .map_err(classify)?;
    let rows = result.into_rows_result().map_err(internal)?;
    rows.rows::<(String,)>()
        .map_err(internal)?
        .map(|row| row.map(|(id,)| id).map_err(internal))
        .collect()
}
