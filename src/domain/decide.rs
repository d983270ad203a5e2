//! Decisions: given the current state and a validated command, which event to record.
//! These hold the business rules; applying the event (the projection) holds none.

use super::events::{
    AccountStatusChanged, FieldChange, ProfileUpdated, UserEvent, UserLoggedIn, UserRegistered,
};
use super::profile::ProfileChanges;
use super::registration::Registration;
use super::role::AccountStatus;
use super::user::UserRow;
use chrono::{DateTime, Utc};

/// The status every self-registered account starts with.
pub const INITIAL_ACCOUNT_STATUS: AccountStatus = AccountStatus::Viewer;

/// A registration becomes `UserRegistered` with the initial status.
pub fn register(registration: &Registration) -> UserEvent {
    UserEvent::UserRegistered(UserRegistered {
        email: registration.email.as_str().to_owned(),
        firstname: registration.firstname.as_str().to_owned(),
        lastname: registration.lastname.as_str().to_owned(),
        account_status: INITIAL_ACCOUNT_STATUS,
    })
}

/// A profile update records every field the request gave, with the value the caller's
/// request saw before it. `{}` records nothing. A field set to its current value is
/// still recorded: under last-write-wins the write matters even when the value is the
/// same, because it outranks older concurrent writes.
pub fn update_profile(current: &UserRow, changes: ProfileChanges) -> Option<UserEvent> {
    if changes.is_empty() {
        return None;
    }
    let change = |before: Option<&str>, to: super::names::PersonName| FieldChange {
        from: before.map(str::to_owned),
        to: to.into_string(),
    };
    Some(UserEvent::ProfileUpdated(ProfileUpdated {
        firstname: changes
            .firstname
            .map(|name| change(current.firstname(), name)),
        lastname: changes
            .lastname
            .map(|name| change(current.lastname(), name)),
    }))
}

/// A successful login records its time (truncated to the millisecond, as stored).
pub fn record_login(current: &UserRow, at: DateTime<Utc>) -> UserEvent {
    UserEvent::UserLoggedIn(UserLoggedIn {
        last_login_date: FieldChange {
            from: current.last_login_date.as_ref().map(|c| c.value),
            to: super::projection::truncate_to_millis(at),
        },
    })
}

/// An operator's status change; `None` when the account already has that status.
pub fn change_account_status(current: &UserRow, to: AccountStatus) -> Option<UserEvent> {
    let from = current.status();
    if from == Some(&to) {
        return None;
    }
    Some(UserEvent::AccountStatusChanged(AccountStatusChanged {
        account_status: FieldChange {
            from: from.cloned(),
            to,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::names::PersonName;
    use crate::domain::user::Cell;
    use uuid::Uuid;

    fn jane() -> UserRow {
        let mut row = UserRow::empty(Uuid::new_v4());
        row.firstname = Some(Cell {
            value: "Jane".into(),
            written_at: 1,
        });
        row.account_status = Some(Cell {
            value: "viewer".into(),
            written_at: 1,
        });
        row
    }

    #[test]
    fn empty_update_decides_nothing() {
        assert_eq!(update_profile(&jane(), ProfileChanges::default()), None);
    }

    #[test]
    fn update_records_only_given_fields_with_their_previous_values() {
        let changes = ProfileChanges {
            firstname: None,
            lastname: Some(PersonName::parse("Smith").unwrap()),
        };
        let Some(UserEvent::ProfileUpdated(event)) = update_profile(&jane(), changes) else {
            panic!("expected ProfileUpdated");
        };
        assert_eq!(event.firstname, None);
        assert_eq!(
            event.lastname,
            Some(FieldChange {
                from: None,
                to: "Smith".into()
            })
        );
    }

    #[test]
    fn status_change_to_the_same_status_is_a_no_op() {
        assert_eq!(change_account_status(&jane(), AccountStatus::Viewer), None);
        assert!(change_account_status(&jane(), AccountStatus::Moderator).is_some());
    }
}
