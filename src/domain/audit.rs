//! The audit view of the log: what each event changed, whether each of its writes is
//! the one that currently wins in the projection, and the profile as of any instant.

use super::columns::{CellValue, Column};
use super::events::{EventEnvelope, micros_to_datetime};
use super::projection::{expected_row, field_changes};
use super::user::UserRow;
use chrono::{DateTime, Utc};

/// One field written by an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldAudit {
    /// The column.
    pub column: Column,
    /// The value the writer saw before (`None` when unset or not recorded).
    pub from: Option<CellValue>,
    /// The value written.
    pub to: CellValue,
    /// True when this write is the one the projection holds now: same write time and
    /// same value as the current cell. False means a later write (or, on a write-time
    /// tie, a larger value) overwrote it under last-write-wins.
    pub winning: bool,
}

/// What an event wrote, judged against the current projection.
pub fn audit_event(envelope: &EventEnvelope, current: &UserRow) -> Vec<FieldAudit> {
    field_changes(envelope)
        .into_iter()
        .map(|(column, from, to)| {
            let winning = current.cell(column).is_some_and(|(value, written_at)| {
                written_at == envelope.write_time && value == to
            });
            FieldAudit {
                column,
                from,
                to,
                winning,
            }
        })
        .collect()
}

/// The user as of `instant`: every event that occurred at or before it, replayed.
/// `None` when the user was not registered yet.
pub fn state_as_of<'a>(
    user_id: uuid::Uuid,
    events: impl IntoIterator<Item = &'a EventEnvelope>,
    instant: DateTime<Utc>,
) -> Option<UserRow> {
    let cutoff = instant.timestamp_micros();
    let events: Vec<EventEnvelope> = events
        .into_iter()
        .filter(|e| e.occurred_micros() <= cutoff)
        .cloned()
        .collect();
    // An erased user has no profile as of any instant: its values are gone.
    expected_row(user_id, &events)
}

/// The write time as an instant, for display.
pub fn written_at(envelope: &EventEnvelope) -> DateTime<Utc> {
    micros_to_datetime(envelope.write_time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::events::{
        Actor, FieldChange, ProfileUpdated, UserEvent, UserRegistered, event_id_at,
    };
    use crate::domain::projection::replay;
    use uuid::Uuid;

    fn at(user: Uuid, micros: i64, event: UserEvent) -> EventEnvelope {
        EventEnvelope::new(
            user,
            event_id_at(micros, 0, [1; 6]),
            Actor::User(user),
            None,
            event,
        )
    }

    fn rename(first: &str) -> UserEvent {
        UserEvent::ProfileUpdated(ProfileUpdated {
            firstname: Some(FieldChange {
                from: None,
                to: first.into(),
            }),
            lastname: None,
        })
    }

    #[test]
    fn only_the_latest_write_of_a_column_is_winning() {
        let user = Uuid::new_v4();
        let events = vec![
            at(
                user,
                1_000,
                UserEvent::UserRegistered(UserRegistered {
                    email: "a@b.io".into(),
                    firstname: "A".into(),
                    lastname: "L".into(),
                    account_status: "viewer".into(),
                }),
            ),
            at(user, 3_000, rename("Late")),
            // Applied after the later write, but older: it loses.
            at(user, 2_000, rename("Early")),
        ];
        let row = replay(user, &events);
        assert_eq!(row.firstname(), Some("Late"));
        let winning = |e: &EventEnvelope| {
            audit_event(e, &row)
                .iter()
                .find(|f| f.column == Column::Firstname)
                .unwrap()
                .winning
        };
        assert!(!winning(&events[0]));
        assert!(winning(&events[1]));
        assert!(!winning(&events[2]));
        assert!(
            audit_event(&events[0], &row)
                .iter()
                .find(|f| f.column == Column::Lastname)
                .unwrap()
                .winning
        );
    }

    #[test]
    fn as_of_replays_only_the_past() {
        let user = Uuid::new_v4();
        let events = vec![
            at(
                user,
                1_000_000,
                UserEvent::UserRegistered(UserRegistered {
                    email: "a@b.io".into(),
                    firstname: "A".into(),
                    lastname: "L".into(),
                    account_status: "viewer".into(),
                }),
            ),
            at(user, 2_000_000, rename("B")),
        ];
        let t = |micros| micros_to_datetime(micros);
        assert_eq!(state_as_of(user, &events, t(999_999)), None);
        assert_eq!(
            state_as_of(user, &events, t(1_000_000))
                .unwrap()
                .firstname(),
            Some("A")
        );
        assert_eq!(
            state_as_of(user, &events, t(1_999_999))
                .unwrap()
                .firstname(),
            Some("A")
        );
        assert_eq!(
            state_as_of(user, &events, t(2_000_000))
                .unwrap()
                .firstname(),
            Some("B")
        );
    }
}
