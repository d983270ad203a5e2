//! The projection: how an event becomes column writes on the `users` table, and how
//! those writes fold into a row. This one function serves the live write path (both
//! backends), the audit replay (`as_of`) and the rebuild/verify jobs, so they cannot
//! disagree.

use super::columns::{CellValue, Column};
use super::events::{EventEnvelope, UserEvent};
use super::role::AccountStatus;
use super::user::{Cell, UserRow};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Everything one event writes to one users row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    /// The row.
    pub user_id: Uuid,
    /// Written into `last_event_id`.
    pub event_id: Uuid,
    /// The write time of every cell: the event's own time, so that replaying the log in
    /// any order converges to the same cells.
    pub write_time: i64,
    /// The column writes, in [`Column`] order.
    pub writes: Vec<(Column, CellValue)>,
}

impl Projection {
    /// The columns written, in order; backends use it to pick the prepared statement.
    pub fn columns(&self) -> Vec<Column> {
        self.writes.iter().map(|(column, _)| *column).collect()
    }
}

/// The fields an event wrote, with their previous values as the event recorded them.
pub fn field_changes(envelope: &EventEnvelope) -> Vec<(Column, Option<CellValue>, CellValue)> {
    let text = |s: &String| CellValue::Text(s.clone());
    let status = |s: &AccountStatus| CellValue::Text(s.as_str().to_owned());
    match &envelope.event {
        UserEvent::UserRegistered(e) => vec![
            (Column::Email, None, text(&e.email)),
            (Column::Firstname, None, text(&e.firstname)),
            (Column::Lastname, None, text(&e.lastname)),
            (Column::AccountStatus, None, status(&e.account_status)),
            (
                Column::CreatedDate,
                None,
                CellValue::Time(truncate_to_millis(envelope.occurred_at())),
            ),
        ],
        UserEvent::ProfileUpdated(e) => {
            let mut fields = Vec::new();
            if let Some(c) = &e.firstname {
                fields.push((Column::Firstname, c.from.as_ref().map(text), text(&c.to)));
            }
            if let Some(c) = &e.lastname {
                fields.push((Column::Lastname, c.from.as_ref().map(text), text(&c.to)));
            }
            fields
        }
        UserEvent::UserLoggedIn(e) => vec![(
            Column::LastLoginDate,
            e.last_login_date.from.map(CellValue::Time),
            CellValue::Time(e.last_login_date.to),
        )],
        UserEvent::AccountStatusChanged(e) => vec![(
            Column::AccountStatus,
            e.account_status.from.as_ref().map(status),
            status(&e.account_status.to),
        )],
        UserEvent::ProjectionRepaired(e) => {
            let time = |at: &DateTime<Utc>| CellValue::Time(*at);
            let mut fields = Vec::new();
            let texts = [
                (Column::Email, &e.email),
                (Column::Firstname, &e.firstname),
                (Column::Lastname, &e.lastname),
            ];
            for (column, change) in texts {
                if let Some(c) = change {
                    fields.push((column, c.from.as_ref().map(text), text(&c.to)));
                }
            }
            if let Some(c) = &e.account_status {
                fields.push((
                    Column::AccountStatus,
                    c.from.as_ref().map(status),
                    status(&c.to),
                ));
            }
            for (column, change) in [
                (Column::CreatedDate, &e.created_date),
                (Column::LastLoginDate, &e.last_login_date),
            ] {
                if let Some(c) = change {
                    fields.push((column, c.from.as_ref().map(time), time(&c.to)));
                }
            }
            fields
        }
        // Erasure writes no cell: the erasure deletes the row itself, once the
        // credentials its email names are gone (`app::erasure`).
        UserEvent::UserErased(_) => Vec::new(),
    }
}

/// The column writes an event implies: what it changed, without the previous values,
/// and for every name or email it wrote, that value's search terms.
pub fn project(envelope: &EventEnvelope) -> Projection {
    let mut writes: Vec<(Column, CellValue)> = field_changes(envelope)
        .into_iter()
        .map(|(column, _, to)| (column, to))
        .collect();
    let derived: Vec<(Column, CellValue)> = writes
        .iter()
        .filter_map(|(column, value)| match value {
            CellValue::Text(text) => column
                .search_column()
                .map(|search| (search, CellValue::Terms(super::search::terms(text)))),
            _ => None,
        })
        .collect();
    writes.extend(derived);
    writes.sort_by_key(|(column, _)| *column);
    Projection {
        user_id: envelope.user_id,
        event_id: envelope.event_id,
        write_time: envelope.write_time,
        writes,
    }
}

/// Truncates to what a CQL `timestamp` keeps, so both backends store the same instant.
pub fn truncate_to_millis(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or(at)
}

impl UserRow {
    /// Folds a projection into the row, cell by cell, last write wins. A projection
    /// without writes (an erasure's) leaves the row as it is, version included.
    pub fn apply(&mut self, projection: &Projection) {
        if projection.writes.is_empty() {
            return;
        }
        for (column, value) in &projection.writes {
            self.merge_cell(*column, value.clone(), projection.write_time);
        }
        Cell::merge(
            &mut self.last_event_id,
            Cell {
                value: projection.event_id,
                written_at: projection.write_time,
            },
        );
    }
}

/// The row the given events imply, in whatever order they come.
pub fn replay<'a>(user_id: Uuid, events: impl IntoIterator<Item = &'a EventEnvelope>) -> UserRow {
    let mut row = UserRow::empty(user_id);
    for envelope in events {
        row.apply(&project(envelope));
    }
    row
}

/// The row a user's log implies, if any: `None` for an erased user
/// ([`super::events::is_erased`]) and for a log without a registration, whatever the
/// order the events come in. What `rebuild` writes and `verify` expects.
pub fn expected_row(user_id: Uuid, events: &[EventEnvelope]) -> Option<UserRow> {
    if super::events::is_erased(events) {
        return None;
    }
    Some(replay(user_id, events)).filter(UserRow::is_registered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::columns::COLUMN_SETS;
    use crate::domain::events::{
        AccountStatusChanged, Actor, FieldChange, ProfileUpdated, UserLoggedIn, UserRegistered,
        event_id_at,
    };

    fn envelope(user_id: Uuid, micros: i64, event: UserEvent) -> EventEnvelope {
        EventEnvelope::new(
            user_id,
            event_id_at(micros, 0, [9; 6]),
            Actor::User(user_id),
            None,
            event,
        )
    }

    fn rename(first: Option<&str>, last: Option<&str>) -> UserEvent {
        let change = |to: &str| FieldChange {
            from: None,
            to: to.to_owned(),
        };
        UserEvent::ProfileUpdated(ProfileUpdated {
            firstname: first.map(change),
            lastname: last.map(change),
        })
    }

    fn history(user: Uuid) -> Vec<EventEnvelope> {
        vec![
            envelope(
                user,
                1_000_000,
                UserEvent::UserRegistered(UserRegistered {
                    email: "a@b.io".into(),
                    firstname: "Ann".into(),
                    lastname: "Lee".into(),
                    account_status: "viewer".into(),
                }),
            ),
            envelope(user, 2_000_000, rename(Some("Anna"), None)),
            envelope(user, 3_000_000, rename(None, Some("Li"))),
            envelope(user, 4_000_000, rename(Some("Annie"), Some("Lo"))),
            envelope(
                user,
                5_000_000,
                UserEvent::UserLoggedIn(UserLoggedIn {
                    last_login_date: FieldChange {
                        from: None,
                        to: DateTime::from_timestamp_millis(5_000).unwrap(),
                    },
                }),
            ),
            envelope(
                user,
                6_000_000,
                UserEvent::AccountStatusChanged(AccountStatusChanged {
                    account_status: FieldChange {
                        from: Some("viewer".into()),
                        to: "moderator".into(),
                    },
                }),
            ),
        ]
    }

    #[test]
    fn given_a_history_when_replayed_then_each_column_holds_its_latest_write() {
        let user = Uuid::new_v4();
        let events = history(user);
        let row = replay(user, &events);
        assert!(row.is_registered());
        assert_eq!(row.firstname(), Some("Annie"));
        assert_eq!(row.lastname(), Some("Lo"));
        assert_eq!(row.account_status(), Some("moderator"));
        assert_eq!(row.firstname.as_ref().unwrap().written_at, 4_000_000);
        assert_eq!(row.email.as_ref().unwrap().written_at, 1_000_000);
        assert_eq!(row.version(), Some(events[5].event_id));
        assert_eq!(
            row.created_date.as_ref().unwrap().value,
            DateTime::from_timestamp_millis(1_000).unwrap()
        );
    }

    #[test]
    fn replay_order_does_not_matter() {
        let user = Uuid::new_v4();
        let events = history(user);
        let forward = replay(user, &events);
        let backward = replay(user, events.iter().rev());
        let mut shuffled: Vec<&EventEnvelope> = events.iter().collect();
        shuffled.swap(0, 3);
        shuffled.swap(1, 5);
        assert_eq!(forward, backward);
        assert_eq!(forward, replay(user, shuffled));
    }

    #[test]
    fn ties_go_to_the_larger_value_like_cassandra() {
        let user = Uuid::new_v4();
        let a = envelope(user, 10, rename(Some("Abe"), None));
        let mut b = envelope(user, 10, rename(Some("Zed"), None));
        b.event_id = a.event_id;
        b.write_time = a.write_time;
        assert_eq!(replay(user, [&a, &b]).firstname(), Some("Zed"));
        assert_eq!(replay(user, [&b, &a]).firstname(), Some("Zed"));
    }

    #[test]
    fn every_live_projection_uses_a_prepared_column_set_and_every_column_has_its_own() {
        let user = Uuid::new_v4();
        let mut events = history(user);
        events.push(envelope(user, 7, rename(None, Some("x"))));
        for event in &events {
            let columns = project(event).columns();
            assert!(
                COLUMN_SETS.contains(&columns.as_slice()),
                "{columns:?} is not in COLUMN_SETS"
            );
        }
        for column in Column::ALL {
            assert!(
                COLUMN_SETS.contains(&[column].as_slice()),
                "{column:?} alone"
            );
        }
    }

    mod any_order {
        use super::*;
        use crate::domain::events::{ERASED, UserErased};
        use proptest::prelude::*;

        /// One event of a random history: what it is, and when.
        fn event(user: Uuid) -> impl Strategy<Value = EventEnvelope> {
            let name = prop::sample::select(vec!["Ann", "Bo", "Cy", ERASED]);
            let kind = prop_oneof![
                (name.clone(), name.clone()).prop_map(|(first, last)| UserEvent::UserRegistered(
                    UserRegistered {
                        email: format!("{first}@x.io"),
                        firstname: first.into(),
                        lastname: last.into(),
                        account_status: "viewer".into(),
                    }
                )),
                (prop::option::of(name.clone()), prop::option::of(name))
                    .prop_map(|(first, last)| rename(first, last)),
                Just(UserEvent::AccountStatusChanged(AccountStatusChanged {
                    account_status: FieldChange {
                        from: None,
                        to: "moderator".into(),
                    },
                })),
                Just(UserEvent::UserErased(UserErased {})),
            ];
            (kind, 1i64..50, any::<bool>()).prop_map(move |(kind, second, shredded)| {
                let mut envelope = envelope(user, second * 1_000_000, kind);
                // An event read without its key (the erasure's step 2 done).
                envelope.shredded = shredded && second % 7 == 0;
                envelope
            })
        }

        proptest! {
            /// For any history, with erasures or without: whatever the order the
            /// events come in, the row is the same; and a history with an erasure (or
            /// a lost key) has none.
            #[test]
            fn any_order_gives_the_same_row_and_erased_users_have_none(
                (events, order) in prop::collection::vec(event(Uuid::from_u128(7)), 1..12)
                    .prop_flat_map(|events| {
                        let n = events.len();
                        (Just(events), Just((0..n).collect::<Vec<_>>()).prop_shuffle())
                    })
            ) {
                let user = Uuid::from_u128(7);
                let shuffled: Vec<EventEnvelope> =
                    order.iter().map(|&i| events[i].clone()).collect();
                let row = expected_row(user, &events);
                prop_assert_eq!(&row, &expected_row(user, &shuffled));
                let erased = events.iter().any(|e| {
                    e.shredded || matches!(e.event, UserEvent::UserErased(_))
                });
                if erased {
                    prop_assert_eq!(row, None);
                }
            }
        }
    }
}
