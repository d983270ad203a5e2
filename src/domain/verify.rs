//! Drift between the `users` table and the state the event log implies, and what
//! repairing it takes. Pure: the jobs feed it the replayed row and the stored row.

use super::columns::{CellValue, Column};
use super::events::{FieldChange, ProjectionRepaired, UserEvent};
use super::role::AccountStatus;
use super::user::UserRow;
use std::fmt;
use uuid::Uuid;

/// What kind of disagreement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DriftKind {
    /// The log has a user, the table has no row for it.
    MissingRow,
    /// The table has a row, the log has no user for it.
    OrphanRow,
    /// Same write time as its event, different value.
    WrongValue,
    /// The cell, or the version, is older than the log says: an event was not projected.
    Behind,
    /// The version names an event the log does not have.
    Ahead,
    /// A cell written later than any event that wrote its column, or a cell no event
    /// wrote at all: a change without an event.
    OrphanChange,
    /// The table has a row for a user the log says was erased.
    ErasedRow,
    /// The log says the user was erased, but some of their personal values can still
    /// be read: the data key is still there, or plain values were not overwritten.
    ErasureUnfinished,
}

impl fmt::Display for DriftKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DriftKind::MissingRow => "missing row",
            DriftKind::OrphanRow => "orphan row (no events)",
            DriftKind::WrongValue => "wrong value",
            DriftKind::Behind => "projection behind the log",
            DriftKind::Ahead => "projection ahead of the log",
            DriftKind::OrphanChange => "orphan change (no event)",
            DriftKind::ErasedRow => "row of an erased user",
            DriftKind::ErasureUnfinished => "erased user's personal data still readable",
        })
    }
}

/// One disagreement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// The user.
    pub user_id: Uuid,
    /// The column, or `None` for the whole row; `last_event_id` for the version.
    pub column: Option<&'static str>,
    /// The kind.
    pub kind: DriftKind,
    /// What the log implies (value and write time), if anything.
    pub expected: Option<String>,
    /// What the table holds, if anything.
    pub actual: Option<String>,
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "user {}: {}", self.user_id, self.kind)?;
        if let Some(column) = self.column {
            write!(f, " in {column}")?;
        }
        write!(
            f,
            ": log implies {}, table has {}",
            self.expected.as_deref().unwrap_or("nothing"),
            self.actual.as_deref().unwrap_or("nothing")
        )
    }
}

fn show(value: &CellValue, written_at: i64) -> String {
    match value {
        CellValue::Text(text) => format!("{text:?} @{written_at}"),
        CellValue::Time(at) => format!("{} @{written_at}", at.to_rfc3339()),
        CellValue::Terms(terms) => format!("{} terms @{written_at}", terms.len()),
    }
}

/// What is left of an erased user that should not be: a row, readable personal values.
pub fn erasure_drift(
    user_id: Uuid,
    events: &[super::events::EventEnvelope],
    actual: Option<&UserRow>,
) -> Vec<Drift> {
    let mut drifts = Vec::new();
    if actual.is_some() {
        drifts.push(Drift {
            user_id,
            column: None,
            kind: DriftKind::ErasedRow,
            expected: None,
            actual: Some("a row".into()),
        });
    }
    if !super::events::personal_data_gone(events) {
        drifts.push(Drift {
            user_id,
            column: None,
            kind: DriftKind::ErasureUnfinished,
            expected: Some(format!("every personal value {}", super::events::ERASED)),
            actual: Some("readable values in the log".into()),
        });
    }
    drifts
}

/// Compares the row the log implies (`None`: no registered user) with the stored row.
/// `known_events` answers whether an event id is in the log.
pub fn compare(
    user_id: Uuid,
    expected: Option<&UserRow>,
    actual: Option<&UserRow>,
    known_event: impl Fn(Uuid) -> bool,
) -> Vec<Drift> {
    let drift = |column, kind, expected, actual| Drift {
        user_id,
        column,
        kind,
        expected,
        actual,
    };
    let (expected, actual) = match (expected, actual) {
        (None, None) => return vec![],
        (Some(_), None) => {
            return vec![drift(
                None,
                DriftKind::MissingRow,
                Some("a registered user".into()),
                None,
            )];
        }
        (None, Some(row)) => {
            return vec![drift(
                None,
                DriftKind::OrphanRow,
                None,
                Some(format!(
                    "{} cells",
                    Column::ALL
                        .iter()
                        .filter(|c| row.cell(**c).is_some())
                        .count()
                )),
            )];
        }
        (Some(expected), Some(actual)) => (expected, actual),
    };
    let mut drifts = Vec::new();
    for column in Column::ALL {
        let (want, have) = (expected.cell(column), actual.cell(column));
        let kind = match (&want, &have) {
            (None, None) => continue,
            (Some(_), None) => DriftKind::Behind,
            (None, Some(_)) => DriftKind::OrphanChange,
            (Some((w, wt)), Some((h, ht))) => {
                if ht < wt {
                    DriftKind::Behind
                } else if ht > wt {
                    DriftKind::OrphanChange
                } else if w != h {
                    DriftKind::WrongValue
                } else {
                    continue;
                }
            }
        };
        drifts.push(drift(
            Some(column.name()),
            kind,
            want.map(|(v, t)| show(&v, t)),
            have.map(|(v, t)| show(&v, t)),
        ));
    }
    let version = |row: &UserRow| row.last_event_id.as_ref().map(|c| (c.value, c.written_at));
    match (version(expected), version(actual)) {
        (Some(want), Some(have)) if want != have => {
            let kind = if !known_event(have.0) {
                DriftKind::Ahead
            } else if have.1 < want.1 {
                DriftKind::Behind
            } else {
                DriftKind::OrphanChange
            };
            drifts.push(drift(
                Some("last_event_id"),
                kind,
                Some(format!("{} @{}", want.0, want.1)),
                Some(format!("{} @{}", have.0, have.1)),
            ));
        }
        (Some(want), None) => drifts.push(drift(
            Some("last_event_id"),
            DriftKind::Behind,
            Some(format!("{} @{}", want.0, want.1)),
            None,
        )),
        _ => {}
    }
    drifts
}

/// The event that restates, over a damaged `actual` row, the columns that still
/// disagree with `expected` after re-projection: cells carrying later write times than
/// their events (or shadowed by a later row tombstone), which re-projecting at the
/// events' own times cannot beat. `None` when nothing needs restating.
pub fn restatement(expected: &UserRow, actual: Option<&UserRow>) -> Option<UserEvent> {
    let cell_differs =
        |column: Column| expected.cell(column) != actual.and_then(|row| row.cell(column));
    // A damaged search column is healed by restating the column it is derived from:
    // the projection writes the terms with it.
    let differs =
        |column: Column| cell_differs(column) || column.search_column().is_some_and(cell_differs);
    let text_change = |column: Column| -> Option<FieldChange<String>> {
        if !differs(column) {
            return None;
        }
        let to = match expected.cell(column)? {
            (CellValue::Text(v), _) => v,
            _ => return None,
        };
        let from = match actual.and_then(|row| row.cell(column)) {
            Some((CellValue::Text(v), _)) => Some(v),
            _ => None,
        };
        Some(FieldChange { from, to })
    };
    let time_change = |column: Column| -> Option<FieldChange<chrono::DateTime<chrono::Utc>>> {
        if !differs(column) {
            return None;
        }
        let to = match expected.cell(column)? {
            (CellValue::Time(v), _) => v,
            _ => return None,
        };
        let from = match actual.and_then(|row| row.cell(column)) {
            Some((CellValue::Time(v), _)) => Some(v),
            _ => None,
        };
        Some(FieldChange { from, to })
    };
    let repair = ProjectionRepaired {
        email: text_change(Column::Email),
        firstname: text_change(Column::Firstname),
        lastname: text_change(Column::Lastname),
        account_status: text_change(Column::AccountStatus).map(|change| FieldChange {
            from: change.from.map(AccountStatus::from),
            to: change.to.into(),
        }),
        created_date: time_change(Column::CreatedDate),
        last_login_date: time_change(Column::LastLoginDate),
    };
    (repair != ProjectionRepaired::default()).then_some(UserEvent::ProjectionRepaired(repair))
}

/// Columns holding a cell that no event ever wrote: a restatement cannot remove them
/// (it writes values, not absences), so repair deletes them at their own write time.
pub fn cells_without_events(expected: &UserRow, actual: &UserRow) -> Vec<(Column, i64)> {
    Column::ALL
        .into_iter()
        .filter(|c| expected.cell(*c).is_none())
        .filter_map(|c| actual.cell(c).map(|(_, written_at)| (c, written_at)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::events::{Actor, EventEnvelope, UserRegistered, event_id_at};
    use crate::domain::projection::replay;
    use crate::domain::user::Cell;

    fn registered(user: Uuid) -> EventEnvelope {
        EventEnvelope::new(
            user,
            event_id_at(1_000_000, 0, [2; 6]),
            Actor::User(user),
            None,
            UserEvent::UserRegistered(UserRegistered {
                email: "a@b.io".into(),
                firstname: "Ann".into(),
                lastname: "Lee".into(),
                account_status: "viewer".into(),
            }),
        )
    }

    #[test]
    fn clean_rows_have_no_drift() {
        let user = Uuid::new_v4();
        let row = replay(user, [&registered(user)]);
        assert!(compare(user, Some(&row), Some(&row), |_| true).is_empty());
    }

    #[test]
    fn each_kind_of_damage_is_named() {
        let user = Uuid::new_v4();
        let event = registered(user);
        let expected = replay(user, [&event]);
        assert_eq!(
            compare(user, Some(&expected), None, |_| true)[0].kind,
            DriftKind::MissingRow
        );
        assert_eq!(
            compare(user, None, Some(&expected), |_| true)[0].kind,
            DriftKind::OrphanRow
        );

        let mut hacked = expected.clone();
        hacked.firstname = Some(Cell {
            value: "Hacked".into(),
            written_at: 9_000_000,
        });
        let drifts = compare(user, Some(&expected), Some(&hacked), |_| true);
        assert_eq!(drifts.len(), 1);
        assert_eq!(
            (drifts[0].column, drifts[0].kind),
            (Some("firstname"), DriftKind::OrphanChange)
        );

        let mut same_time = expected.clone();
        same_time.firstname.as_mut().unwrap().value = "Other".into();
        assert_eq!(
            compare(user, Some(&expected), Some(&same_time), |_| true)[0].kind,
            DriftKind::WrongValue
        );

        let mut stale_version = expected.clone();
        stale_version.last_event_id = Some(Cell {
            value: Uuid::new_v4(),
            written_at: 5,
        });
        let drifts = compare(user, Some(&expected), Some(&stale_version), |_| false);
        assert_eq!(drifts[0].kind, DriftKind::Ahead);
    }

    #[test]
    fn a_restatement_covers_exactly_the_damaged_columns() {
        let user = Uuid::new_v4();
        let expected = replay(user, [&registered(user)]);
        let Some(UserEvent::ProjectionRepaired(all)) = restatement(&expected, None) else {
            panic!("a lost row is restated whole")
        };
        assert_eq!(all.firstname.as_ref().unwrap().to, "Ann");
        assert_eq!(all.firstname.as_ref().unwrap().from, None);
        assert!(all.email.is_some() && all.created_date.is_some());
        assert_eq!(all.last_login_date, None);

        let mut hacked = expected.clone();
        hacked.firstname = Some(Cell {
            value: "Hacked".into(),
            written_at: 9_000_000,
        });
        let Some(UserEvent::ProjectionRepaired(one)) = restatement(&expected, Some(&hacked)) else {
            panic!("one column is restated")
        };
        assert_eq!(
            one.firstname.as_ref().unwrap().from.as_deref(),
            Some("Hacked")
        );
        assert_eq!(
            (one.email, one.lastname, one.created_date),
            (None, None, None)
        );
        assert_eq!(restatement(&expected, Some(&expected)), None);
    }
}
