//! The event log and the `users` projection on the request path ([`EventLog`](crate::store::EventLog)).

use super::rows::{EventRow, UserCells};
use super::{CassandraStore, LwtAnswer, classify, internal, outcome_unknown};
use crate::domain::events::EventEnvelope;
use crate::domain::user::UserRow;
use crate::store::{Credentials, EventLog, EventPage, Precondition, StoreError};
use async_trait::async_trait;
use scylla::value::{CqlTimeuuid, CqlValue};
use uuid::Uuid;

#[async_trait]
impl EventLog for CassandraStore {
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
}
