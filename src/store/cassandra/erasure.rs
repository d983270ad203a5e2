//! The erasure's steps after `UserErased` ([`ErasureStore`](crate::store::ErasureStore)).

use super::rows::EventRow;
use super::{CassandraStore, classify, internal};
use crate::store::{ErasureStore, StoreError};
use async_trait::async_trait;
use chrono::Utc;
use scylla::value::CqlTimeuuid;
use uuid::Uuid;

#[async_trait]
impl ErasureStore for CassandraStore {
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
