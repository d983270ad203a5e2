//! The version-checked append (`If-Match`): the check and the append as one
//! lightweight transaction on the user's log partition, then the re-projection that
//! follows every Paxos round (docs/consistency.md).

use super::rows::{EventRow, projection_writes};
use super::{CassandraStore, LwtAnswer, classify, internal, outcome_unknown};
use crate::domain::events::EventEnvelope;
use crate::store::StoreError;
use scylla::value::{CqlTimeuuid, CqlValue};
use uuid::Uuid;

impl CassandraStore {
    /// The version-checked write. Step 1, the check and the append as one LWT on the
    /// user's log partition; step 2, re-project the events from the expected version on
    /// with the write times the log holds after the round (this includes the new event,
    /// whose write time is the Paxos ballot's). A crash after step 1 leaves the
    /// projection behind the log, which the next version-checked write on the user
    /// (and `verify --repair`) heals.
    pub(super) async fn append_if_latest(
        &self,
        envelope: &EventEnvelope,
        expected: Uuid,
    ) -> Result<(), StoreError> {
        let stored = self.seal(envelope).await?;
        let values = (
            stored.event_type.as_str(),
            stored.schema_version,
            stored.payload.as_str(),
            stored.actor.as_str(),
            stored.request_id.as_deref(),
            CqlTimeuuid::from(envelope.event_id),
            envelope.user_id,
            CqlTimeuuid::from(envelope.event_id),
            CqlTimeuuid::from(expected),
        );
        let ours = CqlValue::Timeuuid(CqlTimeuuid::from(envelope.event_id));
        let applied = match self
            .session()
            .execute_unpaged(&self.statements.append_event_if_head, values)
            .await
        {
            // A round that found our proposal accepted but uncommitted commits it and
            // then reports its own condition failed: `head` is then our event.
            Ok(answer) => LwtAnswer::read(answer)?.applied_or_already("head", &ours),
            // Unknown whether it applied, and a stalled coordinator may still apply it
            // later. Sending it again settles both: a second round cannot apply it
            // twice, and once any round has moved `head` past `expected`, a late first
            // attempt cannot apply either.
            Err(err) if outcome_unknown(&err) => {
                let answer = self
                    .session()
                    .execute_unpaged(&self.statements.append_event_if_head_again, values)
                    .await
                    .map_err(classify)?;
                let answer = LwtAnswer::read(answer)?;
                // Not applied, with `head` another event: either the first attempt
                // applied and a later write followed it, or it never applied. Our
                // event's row tells which.
                answer.applied_or_already("head", &ours)
                    || self.event_exists_serial(envelope).await?
            }
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
        let rows = rows
            .rows::<EventRow>()
            .map_err(internal)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(internal)?;
        let head = rows.last().and_then(|row| row.head).map(Uuid::from);
        // The writer's own key, cached: only an authenticated user's writes get here.
        let events = self.open_user_rows(user_id, rows, false).await?;
        Ok((events, head))
    }
}
