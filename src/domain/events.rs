//! The events that make up a user's history: the source of truth from which the users
//! table is derived. Events are named in the past tense, versioned, and never changed
//! once written.

use super::role::AccountStatus;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The payload schema version written with every event. Bump it (and teach
/// [`UserEvent::decode`] the old shape) when a payload changes incompatibly.
///
/// Version 2: the personal values ([`UserEvent::personal_values`]) are sealed with the
/// user's data key (`store::sealing`). Version 1, written before, has the same JSON
/// shape with those values in plain text; it is read as it is.
pub const SCHEMA_VERSION: i32 = 2;

/// The schema version of events written before personal values were sealed.
pub const PLAIN_SCHEMA_VERSION: i32 = 1;

/// What a personal value reads as once it can no longer be read: its user was erased
/// (the data key is gone), or a plain value was overwritten at erasure.
pub const ERASED: &str = "[erased]";

/// 100 ns ticks between the Gregorian epoch of v1 UUIDs (1582-10-15) and the Unix epoch.
const GREGORIAN_TO_UNIX_TICKS: u64 = 0x01B2_1DD2_1381_4000;

/// An event's id: a v1 time UUID (Cassandra's `timeuuid`), whose timestamp is when the
/// event occurred. Only a time UUID can become one, so every event has a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(Uuid);

impl EventId {
    /// `None` for a UUID that is not a time UUID.
    pub fn new(uuid: Uuid) -> Option<Self> {
        event_micros(uuid).map(|_| Self(uuid))
    }

    /// The UUID.
    pub fn uuid(self) -> Uuid {
        self.0
    }

    /// When the event occurred, microseconds since the Unix epoch.
    pub fn micros(self) -> i64 {
        // A time UUID by construction.
        event_micros(self.0).unwrap_or(i64::MIN)
    }
}

/// A time-ordered event id for an event that occurred `micros` after the Unix epoch.
/// `node` makes ids from different processes distinct; `counter` those from one process
/// in the same microsecond.
pub fn event_id_at(micros: i64, counter: u16, node: [u8; 6]) -> EventId {
    let ticks = (micros.max(0) as u64) * 10 + GREGORIAN_TO_UNIX_TICKS;
    EventId(uuid::Builder::from_gregorian_timestamp(ticks, counter & 0x3FFF, &node).into_uuid())
}

/// When the event with this id occurred, in microseconds since the Unix epoch; `None`
/// for an id that is not a time UUID.
pub fn event_micros(event_id: Uuid) -> Option<i64> {
    let (ticks, _) = event_id.get_timestamp()?.to_gregorian();
    Some(((ticks.checked_sub(GREGORIAN_TO_UNIX_TICKS)?) / 10) as i64)
}

/// Converts microseconds since the epoch to a UTC instant.
pub fn micros_to_datetime(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The user themself, through the API.
    User(Uuid),
    /// An operator, through the CLI; the string names them (their login, or `cli`).
    Operator(String),
}

impl Actor {
    /// Stored form: `user:<uuid>` or `operator:<name>`.
    pub fn encode(&self) -> String {
        match self {
            Actor::User(id) => format!("user:{id}"),
            Actor::Operator(name) => format!("operator:{name}"),
        }
    }

    /// Reads the stored form back; anything unrecognised is kept as an operator string
    /// rather than failing a whole history read.
    pub fn decode(raw: &str) -> Self {
        match raw.split_once(':') {
            Some(("user", id)) => match Uuid::parse_str(id) {
                Ok(id) => Actor::User(id),
                Err(_) => Actor::Operator(raw.to_owned()),
            },
            Some(("operator", name)) => Actor::Operator(name.to_owned()),
            _ => Actor::Operator(raw.to_owned()),
        }
    }
}

/// A changed field: its value before the event (`None` when it had none) and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange<T> {
    /// The value the writer saw before the change.
    pub from: Option<T>,
    /// The value written.
    pub to: T,
}

/// Payload of `UserRegistered`: the whole initial profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRegistered {
    /// The address as registered (domain lowercased).
    pub email: String,
    /// First name.
    pub firstname: String,
    /// Last name.
    pub lastname: String,
    /// Initial status; `viewer` for self-registration.
    pub account_status: AccountStatus,
}

/// Payload of `ProfileUpdated`: only the fields the request gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileUpdated {
    /// Set when the request gave a first name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firstname: Option<FieldChange<String>>,
    /// Set when the request gave a last name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lastname: Option<FieldChange<String>>,
}

/// Payload of `UserLoggedIn`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserLoggedIn {
    /// The new last login time (the event's own time, to the millisecond).
    pub last_login_date: FieldChange<DateTime<Utc>>,
}

/// Payload of `AccountStatusChanged`, recorded by the `set-role` operator command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountStatusChanged {
    /// Old and new status.
    pub account_status: FieldChange<AccountStatus>,
}

/// Payload of `ProjectionRepaired`, recorded by `verify --repair` when re-projecting the
/// log cannot fix some cells because something outside the log wrote them with later
/// timestamps (or deleted the row). It restates just those columns with the values the
/// log implies, at a write time later than the damage, so the log again explains every
/// cell. `from` is what the table held.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectionRepaired {
    /// Restated email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<FieldChange<String>>,
    /// Restated first name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firstname: Option<FieldChange<String>>,
    /// Restated last name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lastname: Option<FieldChange<String>>,
    /// Restated status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_status: Option<FieldChange<AccountStatus>>,
    /// Restated registration time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_date: Option<FieldChange<DateTime<Utc>>>,
    /// Restated last login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_login_date: Option<FieldChange<DateTime<Utc>>>,
}

/// Payload of `UserErased`: the account was erased (GDPR art. 17). It carries no
/// personal data; who asked is the envelope's actor. After it the user has no row, no
/// credentials and no data key, and every personal value of their log reads
/// [`ERASED`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserErased {}

/// Everything that can happen to a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserEvent {
    /// The account was created.
    UserRegistered(UserRegistered),
    /// The user changed their names.
    ProfileUpdated(ProfileUpdated),
    /// The user logged in.
    UserLoggedIn(UserLoggedIn),
    /// An operator changed the account status (the role).
    AccountStatusChanged(AccountStatusChanged),
    /// `verify --repair` restated the projection.
    ProjectionRepaired(ProjectionRepaired),
    /// The account was erased.
    UserErased(UserErased),
}

/// A stored event that cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum EventDecodeError {
    /// The type name is not one this build knows.
    #[error("unknown event type `{0}`")]
    UnknownType(String),
    /// The payload's schema version is newer than this build.
    #[error("event schema version {0} is not supported")]
    UnsupportedVersion(i32),
    /// The stored id is not a time UUID, so the event has no time.
    #[error("event id {0} is not a time UUID")]
    NotATimeUuid(Uuid),
    /// A sealed value does not open with the user's data key: the key or the value
    /// was altered (a missing key is not this: its values read [`ERASED`]).
    #[error("the sealed value of `{0}` does not open with the user's data key")]
    DoesNotOpen(&'static str),
    /// The payload does not match its type.
    #[error("malformed {event_type} payload: {source}")]
    Payload {
        /// The stored type.
        event_type: String,
        /// The JSON error.
        source: serde_json::Error,
    },
}

impl UserEvent {
    /// The type name stored in the log.
    pub fn event_type(&self) -> &'static str {
        match self {
            UserEvent::UserRegistered(_) => "UserRegistered",
            UserEvent::ProfileUpdated(_) => "ProfileUpdated",
            UserEvent::UserLoggedIn(_) => "UserLoggedIn",
            UserEvent::AccountStatusChanged(_) => "AccountStatusChanged",
            UserEvent::ProjectionRepaired(_) => "ProjectionRepaired",
            UserEvent::UserErased(_) => "UserErased",
        }
    }

    /// The payload as stored: compact JSON.
    pub fn payload_json(&self) -> String {
        let encoded = match self {
            UserEvent::UserRegistered(p) => serde_json::to_string(p),
            UserEvent::ProfileUpdated(p) => serde_json::to_string(p),
            UserEvent::UserLoggedIn(p) => serde_json::to_string(p),
            UserEvent::AccountStatusChanged(p) => serde_json::to_string(p),
            UserEvent::ProjectionRepaired(p) => serde_json::to_string(p),
            UserEvent::UserErased(p) => serde_json::to_string(p),
        };
        // Serialising these plain structs of strings and timestamps cannot fail.
        encoded.unwrap_or_default()
    }

    /// Reads a stored event back.
    pub fn decode(
        event_type: &str,
        schema_version: i32,
        payload: &str,
    ) -> Result<Self, EventDecodeError> {
        if schema_version != SCHEMA_VERSION && schema_version != PLAIN_SCHEMA_VERSION {
            return Err(EventDecodeError::UnsupportedVersion(schema_version));
        }
        let wrap = |source| EventDecodeError::Payload {
            event_type: event_type.to_owned(),
            source,
        };
        Ok(match event_type {
            "UserRegistered" => {
                UserEvent::UserRegistered(serde_json::from_str(payload).map_err(wrap)?)
            }
            "ProfileUpdated" => {
                UserEvent::ProfileUpdated(serde_json::from_str(payload).map_err(wrap)?)
            }
            "UserLoggedIn" => UserEvent::UserLoggedIn(serde_json::from_str(payload).map_err(wrap)?),
            "AccountStatusChanged" => {
                UserEvent::AccountStatusChanged(serde_json::from_str(payload).map_err(wrap)?)
            }
            "ProjectionRepaired" => {
                UserEvent::ProjectionRepaired(serde_json::from_str(payload).map_err(wrap)?)
            }
            "UserErased" => UserEvent::UserErased(serde_json::from_str(payload).map_err(wrap)?),
            other => return Err(EventDecodeError::UnknownType(other.to_owned())),
        })
    }
}

impl UserEvent {
    /// The personal values the event carries, each with the name it is sealed under
    /// (`email`, `firstname.to`, `lastname.from`, ...): what the store seals, what
    /// erasure makes unreadable and what the history shows as [`ERASED`] afterwards.
    /// Everything else (type, times, status, which fields changed) stays in clear.
    pub fn personal_values_mut(&mut self) -> Vec<(&'static str, &mut String)> {
        fn change<'a>(
            values: &mut Vec<(&'static str, &'a mut String)>,
            names: (&'static str, &'static str),
            change: &'a mut Option<FieldChange<String>>,
        ) {
            if let Some(change) = change {
                if let Some(from) = &mut change.from {
                    values.push((names.0, from));
                }
                values.push((names.1, &mut change.to));
            }
        }
        const FIRSTNAME: (&str, &str) = ("firstname.from", "firstname.to");
        const LASTNAME: (&str, &str) = ("lastname.from", "lastname.to");
        let mut values = Vec::new();
        match self {
            UserEvent::UserRegistered(e) => {
                values.push(("email", &mut e.email));
                values.push(("firstname", &mut e.firstname));
                values.push(("lastname", &mut e.lastname));
            }
            UserEvent::ProfileUpdated(e) => {
                change(&mut values, FIRSTNAME, &mut e.firstname);
                change(&mut values, LASTNAME, &mut e.lastname);
            }
            UserEvent::ProjectionRepaired(e) => {
                change(&mut values, ("email.from", "email.to"), &mut e.email);
                change(&mut values, FIRSTNAME, &mut e.firstname);
                change(&mut values, LASTNAME, &mut e.lastname);
            }
            UserEvent::UserLoggedIn(_)
            | UserEvent::AccountStatusChanged(_)
            | UserEvent::UserErased(_) => {}
        }
        values
    }

    /// [`UserEvent::personal_values_mut`], read only.
    pub fn personal_values(&self) -> Vec<(&'static str, String)> {
        let mut copy = self.clone();
        copy.personal_values_mut()
            .into_iter()
            .map(|(name, value)| (name, value.clone()))
            .collect()
    }
}

/// An event with everything the log records about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventEnvelope {
    /// The user the event belongs to (the log's partition key).
    pub user_id: Uuid,
    /// Time-ordered and unique; its timestamp is when the event occurred and is the write
    /// time of every cell the event projects.
    pub event_id: Uuid,
    /// Who caused it.
    pub actor: Actor,
    /// The `x-request-id` of the HTTP request that caused it, if any.
    pub request_id: Option<String>,
    /// What happened.
    pub event: UserEvent,
    /// The write time (microseconds) of the event's row in the log, and so of every cell
    /// it projects. Equal to the occurrence time, except for events appended by a
    /// lightweight transaction on Cassandra, which cannot carry a timestamp: there it is
    /// the Paxos ballot's time, read back after the append (docs/consistency.md).
    pub write_time: i64,
    /// True when the event was read back without its user's data key, so that its
    /// sealed personal values read [`ERASED`]: the user was erased (or the erasure is
    /// under way).
    pub shredded: bool,
}

impl EventEnvelope {
    /// A new event whose write time is its occurrence time.
    pub fn new(
        user_id: Uuid,
        event_id: EventId,
        actor: Actor,
        request_id: Option<String>,
        event: UserEvent,
    ) -> Self {
        Self {
            user_id,
            event_id: event_id.uuid(),
            actor,
            request_id,
            event,
            write_time: event_id.micros(),
            shredded: false,
        }
    }

    /// When the event occurred, in microseconds since the epoch (from its id; every
    /// constructor checks that it is a time UUID).
    pub fn occurred_micros(&self) -> i64 {
        event_micros(self.event_id).unwrap_or(self.write_time)
    }

    /// When the event occurred.
    pub fn occurred_at(&self) -> DateTime<Utc> {
        micros_to_datetime(self.occurred_micros())
    }
}

/// Whether a user's log says the user was erased: it holds a `UserErased`, or events
/// whose data key is gone. Such a user has no row, whatever else the log holds.
pub fn is_erased(events: &[EventEnvelope]) -> bool {
    events
        .iter()
        .any(|e| e.shredded || matches!(e.event, UserEvent::UserErased(_)))
}

/// Whether every personal value of the log reads [`ERASED`]: what a finished erasure
/// leaves (no data key to open the sealed values, the plain ones overwritten).
pub fn personal_data_gone(events: &[EventEnvelope]) -> bool {
    events.iter().all(|e| {
        e.event
            .personal_values()
            .iter()
            .all(|(_, value)| value == ERASED)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_round_trip_their_time_and_sort_by_it() {
        let micros = 1_795_000_000_123_456;
        let id = event_id_at(micros, 7, [1, 2, 3, 4, 5, 6]).uuid();
        assert_eq!(id.get_version_num(), 1);
        assert_eq!(event_micros(id), Some(micros));
        let later = event_id_at(micros + 1, 0, [0; 6]).uuid();
        assert!(event_micros(later) > event_micros(id));
        assert_eq!(EventId::new(id).map(EventId::micros), Some(micros));
        assert_eq!(
            EventId::new(Uuid::new_v4()),
            None,
            "a random UUID has no time"
        );
    }

    #[test]
    fn payloads_round_trip() {
        let event = UserEvent::ProfileUpdated(ProfileUpdated {
            firstname: Some(FieldChange {
                from: Some("John".into()),
                to: "Jane".into(),
            }),
            lastname: None,
        });
        let json = event.payload_json();
        assert_eq!(json, r#"{"firstname":{"from":"John","to":"Jane"}}"#);
        assert_eq!(
            UserEvent::decode("ProfileUpdated", SCHEMA_VERSION, &json).unwrap(),
            event
        );
        assert!(UserEvent::decode("ProfileUpdated", 99, &json).is_err());
        assert!(UserEvent::decode("Nope", SCHEMA_VERSION, "{}").is_err());
    }

    #[test]
    fn actors_round_trip() {
        let id = Uuid::new_v4();
        assert_eq!(Actor::decode(&Actor::User(id).encode()), Actor::User(id));
        assert_eq!(
            Actor::decode(&Actor::Operator("ops".into()).encode()),
            Actor::Operator("ops".into())
        );
    }
}
