//! Where an event becomes bytes, and bytes an event: the one place. Both backends store
//! and load only [`StoredEvent`], a flat record of text and numbers; what the payload
//! holds and how it is encoded is decided here, once (`domain::events` gives the
//! payload's JSON), and so is the sealing of its personal values with the user's data
//! key (docs/adr/0002-crypto-shredding.md). The codec is pure: the stores hand it the
//! key.

use super::sealing::{DataKey, is_sealed};
use crate::domain::events::{
    Actor, ERASED, EventDecodeError, EventEnvelope, EventId, SCHEMA_VERSION, UserEvent,
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

/// An event with personal values was to be stored without its user's data key: a bug
/// in a store, refused rather than written in clear.
#[derive(Debug, thiserror::Error)]
#[error("event {0} carries personal data and was given no data key to seal it with")]
pub struct NoDataKey(pub Uuid);

/// Whether storing the event takes its user's data key: it carries personal values.
/// Logins, status changes and erasures do not, so they never look a key up.
pub fn needs_data_key(envelope: &EventEnvelope) -> bool {
    !envelope.event.personal_values().is_empty()
}

impl StoredEvent {
    /// The event as stored: its personal values sealed with the user's data key, each
    /// under the event id and its own name, so that a sealed value moved to another
    /// event or field does not open. The projection is made from the envelope, in
    /// clear; only the log holds this form.
    ///
    /// `key` may be `None` only for an event without personal values
    /// ([`needs_data_key`]), which the stores then do not look a key up for.
    pub fn seal(envelope: &EventEnvelope, key: Option<&DataKey>) -> Result<Self, NoDataKey> {
        let mut event = envelope.event.clone();
        for (field, value) in event.personal_values_mut() {
            let key = key.ok_or(NoDataKey(envelope.event_id))?;
            *value = key.seal(envelope.event_id, field, value);
        }
        Ok(Self {
            user_id: envelope.user_id,
            event_id: envelope.event_id,
            event_type: event.event_type().to_owned(),
            schema_version: SCHEMA_VERSION,
            payload: event.payload_json(),
            actor: envelope.actor.encode(),
            request_id: envelope.request_id.clone(),
            written_at: None,
        })
    }

    /// Reads the event back, opening its sealed values with `key`, the user's data key.
    /// Without a key (the user was erased) every sealed value reads [`ERASED`] and the
    /// envelope is marked [`EventEnvelope::shredded`]. Values written in plain text
    /// before sealing existed (schema version 1) are read as they are: the upcaster
    /// from version 1 is the identity.
    pub fn open(self, key: Option<&DataKey>) -> Result<EventEnvelope, EventDecodeError> {
        let event_id =
            EventId::new(self.event_id).ok_or(EventDecodeError::NotATimeUuid(self.event_id))?;
        let mut event = UserEvent::decode(&self.event_type, self.schema_version, &self.payload)?;
        let mut shredded = false;
        for (field, value) in event.personal_values_mut() {
            if !is_sealed(value) {
                continue;
            }
            *value = match key {
                Some(key) => key
                    .open(self.event_id, field, value)
                    .map_err(|_| EventDecodeError::DoesNotOpen(field))?,
                None => {
                    shredded = true;
                    ERASED.to_owned()
                }
            };
        }
        let mut envelope = EventEnvelope::new(
            self.user_id,
            event_id,
            Actor::decode(&self.actor),
            self.request_id,
            event,
        );
        envelope.shredded = shredded;
        if let Some(written_at) = self.written_at {
            envelope.write_time = written_at;
        }
        Ok(envelope)
    }

    /// For an event whose personal values are in plain text (schema version 1), its
    /// payload with each of them overwritten by [`ERASED`]: what erasure writes over
    /// it, the one exception to the log's immutability. `None` when there is nothing
    /// in plain text to overwrite (sealed values die with the key).
    pub fn plain_values_erased(&self) -> Result<Option<String>, EventDecodeError> {
        let mut event = UserEvent::decode(&self.event_type, self.schema_version, &self.payload)?;
        let mut overwritten = false;
        for (_, value) in event.personal_values_mut() {
            if !is_sealed(value) && value != ERASED {
                *value = ERASED.to_owned();
                overwritten = true;
            }
        }
        Ok(overwritten.then(|| event.payload_json()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::events::{
        FieldChange, PLAIN_SCHEMA_VERSION, ProfileUpdated, UserRegistered, event_id_at,
    };

    fn registered(user: Uuid) -> EventEnvelope {
        EventEnvelope::new(
            user,
            event_id_at(1_000_000, 1, [3; 6]),
            Actor::User(user),
            Some("req-1".into()),
            UserEvent::UserRegistered(UserRegistered {
                email: "Zoe.Quux@example.org".into(),
                firstname: "Zoë".into(),
                lastname: "Quuxley".into(),
                account_status: "viewer".into(),
            }),
        )
    }

    #[test]
    fn events_round_trip_sealed_and_bad_ids_are_errors() {
        let user = Uuid::new_v4();
        let key = DataKey::random();
        let envelope = registered(user);
        let stored = StoredEvent::seal(&envelope, Some(&key)).unwrap();
        assert_eq!(stored.event_type, "UserRegistered");
        assert_eq!(stored.schema_version, SCHEMA_VERSION);
        for plain in ["Zoe.Quux", "Zo", "Quuxley", "example.org"] {
            assert!(
                !stored.payload.contains(plain),
                "{plain} in {}",
                stored.payload
            );
        }
        assert!(stored.payload.contains(r#""account_status":"viewer""#));
        assert_eq!(stored.clone().open(Some(&key)).unwrap(), envelope);
        let mut ballot = stored.clone();
        ballot.written_at = Some(2_000_000);
        assert_eq!(ballot.open(Some(&key)).unwrap().write_time, 2_000_000);
        let mut random = stored;
        random.event_id = Uuid::new_v4();
        assert!(matches!(
            random.open(Some(&key)),
            Err(EventDecodeError::NotATimeUuid(_))
        ));
    }

    #[test]
    fn without_the_key_values_read_erased_and_another_key_is_an_error() {
        let user = Uuid::new_v4();
        let key = DataKey::random();
        let stored = StoredEvent::seal(&registered(user), Some(&key)).unwrap();
        let shredded = stored.clone().open(None).unwrap();
        assert!(shredded.shredded);
        let UserEvent::UserRegistered(payload) = &shredded.event else {
            panic!("type kept");
        };
        assert_eq!(
            (
                payload.email.as_str(),
                payload.firstname.as_str(),
                payload.account_status.as_str()
            ),
            (ERASED, ERASED, "viewer")
        );
        assert!(matches!(
            stored.clone().open(Some(&DataKey::random())),
            Err(EventDecodeError::DoesNotOpen("email"))
        ));
        // A sealed value moved into another event does not open there.
        let mut moved = StoredEvent::seal(&registered(user), Some(&key)).unwrap();
        moved.event_id = event_id_at(9_000_000, 1, [3; 6]).uuid();
        assert!(moved.open(Some(&key)).is_err());
    }

    #[test]
    fn plain_events_are_read_as_they_are_and_overwritten_at_erasure() {
        let user = Uuid::new_v4();
        let envelope = EventEnvelope::new(
            user,
            event_id_at(2_000_000, 1, [3; 6]),
            Actor::User(user),
            None,
            UserEvent::ProfileUpdated(ProfileUpdated {
                firstname: Some(FieldChange {
                    from: Some("Ann".into()),
                    to: "Anna".into(),
                }),
                lastname: None,
            }),
        );
        let plain = StoredEvent {
            user_id: user,
            event_id: envelope.event_id,
            event_type: "ProfileUpdated".into(),
            schema_version: PLAIN_SCHEMA_VERSION,
            payload: envelope.event.payload_json(),
            actor: envelope.actor.encode(),
            request_id: None,
            written_at: None,
        };
        assert_eq!(plain.clone().open(None).unwrap(), envelope);
        let overwritten = plain.plain_values_erased().unwrap().expect("plain values");
        assert_eq!(
            overwritten,
            r#"{"firstname":{"from":"[erased]","to":"[erased]"}}"#
        );
        let sealed = StoredEvent::seal(&envelope, Some(&DataKey::random())).unwrap();
        assert_eq!(sealed.plain_values_erased().unwrap(), None);
    }
}
