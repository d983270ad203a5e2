//! Where an event becomes bytes, and bytes an event: the one place. Both backends store
//! and load only [`StoredEvent`], a flat record of text and numbers; what the payload
//! holds and how it is encoded is decided here, once (`domain::events` gives the
//! payload's JSON).

use crate::domain::events::{
    Actor, EventDecodeError, EventEnvelope, EventId, SCHEMA_VERSION, UserEvent,
};
use uuid::Uuid;

/// An event as both backends store it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// The user: the log's partition key.
    pub user_id: Uuid,
    /// The event's id, a time UUID.
    pub event_id: Uuid,
    /// `UserRegistered`, `ProfileUpdated`, ...
    pub event_type: String,
    /// The payload's schema version.
    pub schema_version: i32,
    /// The payload.
    pub payload: String,
    /// `user:<id>` or `operator:<name>`.
    pub actor: String,
    /// The `x-request-id` of the request that caused it.
    pub request_id: Option<String>,
    /// The write time of the event's row when the backend keeps one apart from the
    /// event's time (Cassandra's `WRITETIME`, which a version-checked append sets to
    /// its Paxos ballot's time); `None` means the event's own time.
    pub written_at: Option<i64>,
}

impl From<&EventEnvelope> for StoredEvent {
    fn from(envelope: &EventEnvelope) -> Self {
        Self {
            user_id: envelope.user_id,
            event_id: envelope.event_id,
            event_type: envelope.event.event_type().to_owned(),
            schema_version: SCHEMA_VERSION,
            payload: envelope.event.payload_json(),
            actor: envelope.actor.encode(),
            request_id: envelope.request_id.clone(),
            written_at: None,
        }
    }
}

impl TryFrom<StoredEvent> for EventEnvelope {
    type Error = EventDecodeError;

    fn try_from(stored: StoredEvent) -> Result<Self, EventDecodeError> {
        let event_id =
            EventId::new(stored.event_id).ok_or(EventDecodeError::NotATimeUuid(stored.event_id))?;
        let event = UserEvent::decode(&stored.event_type, stored.schema_version, &stored.payload)?;
        let mut envelope = EventEnvelope::new(
            stored.user_id,
            event_id,
            Actor::decode(&stored.actor),
            stored.request_id,
            event,
        );
        if let Some(written_at) = stored.written_at {
            envelope.write_time = written_at;
        }
        Ok(envelope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::events::{FieldChange, ProfileUpdated, event_id_at};

    #[test]
    fn events_round_trip_and_bad_ids_are_errors() {
        let user = Uuid::new_v4();
        let envelope = EventEnvelope::new(
            user,
            event_id_at(1_000_000, 1, [3; 6]),
            Actor::User(user),
            Some("req-1".into()),
            UserEvent::ProfileUpdated(ProfileUpdated {
                firstname: Some(FieldChange {
                    from: None,
                    to: "Ann".into(),
                }),
                lastname: None,
            }),
        );
        let stored = StoredEvent::from(&envelope);
        assert_eq!(stored.event_type, "ProfileUpdated");
        assert_eq!(EventEnvelope::try_from(stored.clone()).unwrap(), envelope);
        let mut ballot = stored.clone();
        ballot.written_at = Some(2_000_000);
        assert_eq!(
            EventEnvelope::try_from(ballot).unwrap().write_time,
            2_000_000
        );
        let mut random = stored;
        random.event_id = Uuid::new_v4();
        assert!(matches!(
            EventEnvelope::try_from(random),
            Err(EventDecodeError::NotATimeUuid(_))
        ));
    }
}
