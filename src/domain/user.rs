//! A row of the `users` projection, cell by cell, as both backends store it.

use super::columns::{CellValue, Column};
use super::role::AccountStatus;
use chrono::{DateTime, Utc};
use std::collections::BTreeSet;
use uuid::Uuid;

/// One column value with the write time (microseconds) of the event that wrote it, as
/// Cassandra keeps per cell. Last write wins: the higher write time, then, on a tie, the
/// larger value, which is Cassandra's own rule, so both backends converge alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell<T> {
    /// The value.
    pub value: T,
    /// Write time in microseconds since the epoch (`WRITETIME(col)` on Cassandra).
    pub written_at: i64,
}

/// Values that can decide a write-time tie the way Cassandra does: by their serialised
/// bytes.
pub trait TieBreak {
    /// True when `self` wins a tie against `other`.
    fn beats(&self, other: &Self) -> bool;
}

impl TieBreak for String {
    fn beats(&self, other: &Self) -> bool {
        self.as_bytes() > other.as_bytes()
    }
}

impl TieBreak for AccountStatus {
    fn beats(&self, other: &Self) -> bool {
        self.as_str().as_bytes() > other.as_str().as_bytes()
    }
}

impl TieBreak for DateTime<Utc> {
    fn beats(&self, other: &Self) -> bool {
        self > other
    }
}

impl TieBreak for Uuid {
    fn beats(&self, other: &Self) -> bool {
        self.as_bytes() > other.as_bytes()
    }
}

impl<T: TieBreak> Cell<T> {
    /// Merges a write into a cell that may not exist yet.
    pub fn merge(slot: &mut Option<Cell<T>>, incoming: Cell<T>) {
        let wins = match slot {
            None => true,
            Some(current) => {
                incoming.written_at > current.written_at
                    || (incoming.written_at == current.written_at
                        && incoming.value.beats(&current.value))
            }
        };
        if wins {
            *slot = Some(incoming);
        }
    }
}

impl Cell<BTreeSet<String>> {
    /// Merges a write of a set of terms, as Cassandra merges a `set<text>` overwritten
    /// `USING TIMESTAMP`: the overwrite deletes what is older (its tombstone is one
    /// microsecond earlier than its elements), so the later write wins whole; on a
    /// write-time tie neither deletes the other and the elements of both remain.
    pub fn merge_terms(slot: &mut Option<Self>, incoming: Self) {
        match slot {
            Some(current) if current.written_at > incoming.written_at => {}
            Some(current) if current.written_at == incoming.written_at => {
                current.value.extend(incoming.value);
            }
            _ => *slot = Some(incoming),
        }
    }
}

/// A users row. Every column except the key is optional, as in Cassandra, where a row
/// is just the cells written to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    /// Partition key.
    pub user_id: Uuid,
    /// Login address (protected).
    pub email: Option<Cell<String>>,
    /// First name.
    pub firstname: Option<Cell<String>>,
    /// Last name.
    pub lastname: Option<Cell<String>>,
    /// Doubles as the role.
    pub account_status: Option<Cell<AccountStatus>>,
    /// When the account was registered.
    pub created_date: Option<Cell<DateTime<Utc>>>,
    /// When the user last logged in.
    pub last_login_date: Option<Cell<DateTime<Utc>>>,
    /// The id of the newest event applied; the ETag is derived from it.
    pub last_event_id: Option<Cell<Uuid>>,
    /// The terms `email` is found by. Read by the jobs, not by the request path.
    pub email_search: Option<Cell<BTreeSet<String>>>,
    /// The terms `firstname` is found by.
    pub firstname_search: Option<Cell<BTreeSet<String>>>,
    /// The terms `lastname` is found by.
    pub lastname_search: Option<Cell<BTreeSet<String>>>,
}

impl UserRow {
    /// A row with no cells.
    pub fn empty(user_id: Uuid) -> Self {
        Self {
            user_id,
            email: None,
            firstname: None,
            lastname: None,
            account_status: None,
            created_date: None,
            last_login_date: None,
            last_event_id: None,
            email_search: None,
            firstname_search: None,
            lastname_search: None,
        }
    }

    /// A column's current value and write time. An empty set of terms reads as no cell:
    /// Cassandra cannot store an empty collection, so both backends treat them alike.
    pub fn cell(&self, column: Column) -> Option<(CellValue, i64)> {
        fn text(cell: &Option<Cell<String>>) -> Option<(CellValue, i64)> {
            cell.as_ref()
                .map(|c| (CellValue::Text(c.value.clone()), c.written_at))
        }
        fn time(cell: &Option<Cell<DateTime<Utc>>>) -> Option<(CellValue, i64)> {
            cell.as_ref()
                .map(|c| (CellValue::Time(c.value), c.written_at))
        }
        fn terms(cell: &Option<Cell<BTreeSet<String>>>) -> Option<(CellValue, i64)> {
            cell.as_ref()
                .filter(|c| !c.value.is_empty())
                .map(|c| (CellValue::Terms(c.value.clone()), c.written_at))
        }
        match column {
            Column::Email => text(&self.email),
            Column::Firstname => text(&self.firstname),
            Column::Lastname => text(&self.lastname),
            Column::AccountStatus => self
                .account_status
                .as_ref()
                .map(|c| (CellValue::Text(c.value.as_str().to_owned()), c.written_at)),
            Column::CreatedDate => time(&self.created_date),
            Column::LastLoginDate => time(&self.last_login_date),
            Column::EmailSearch => terms(&self.email_search),
            Column::FirstnameSearch => terms(&self.firstname_search),
            Column::LastnameSearch => terms(&self.lastname_search),
        }
    }

    /// Merges one write into the column's cell, last write wins. A value of the wrong
    /// kind for the column is ignored: the projection never produces one.
    pub fn merge_cell(&mut self, column: Column, value: CellValue, written_at: i64) {
        fn at<T>(value: T, written_at: i64) -> Cell<T> {
            Cell { value, written_at }
        }
        match (column, value) {
            (Column::Email, CellValue::Text(v)) => Cell::merge(&mut self.email, at(v, written_at)),
            (Column::Firstname, CellValue::Text(v)) => {
                Cell::merge(&mut self.firstname, at(v, written_at))
            }
            (Column::Lastname, CellValue::Text(v)) => {
                Cell::merge(&mut self.lastname, at(v, written_at))
            }
            (Column::AccountStatus, CellValue::Text(v)) => {
                Cell::merge(&mut self.account_status, at(v.into(), written_at))
            }
            (Column::CreatedDate, CellValue::Time(v)) => {
                Cell::merge(&mut self.created_date, at(v, written_at))
            }
            (Column::LastLoginDate, CellValue::Time(v)) => {
                Cell::merge(&mut self.last_login_date, at(v, written_at))
            }
            (Column::EmailSearch, CellValue::Terms(v)) => {
                Cell::merge_terms(&mut self.email_search, at(v, written_at))
            }
            (Column::FirstnameSearch, CellValue::Terms(v)) => {
                Cell::merge_terms(&mut self.firstname_search, at(v, written_at))
            }
            (Column::LastnameSearch, CellValue::Terms(v)) => {
                Cell::merge_terms(&mut self.lastname_search, at(v, written_at))
            }
            _ => {}
        }
    }

    /// A search column's cell as stored, an empty set included; `None` for any other
    /// column.
    pub fn terms_cell(&self, column: Column) -> Option<&Cell<BTreeSet<String>>> {
        match column {
            Column::EmailSearch => self.email_search.as_ref(),
            Column::FirstnameSearch => self.firstname_search.as_ref(),
            Column::LastnameSearch => self.lastname_search.as_ref(),
            _ => None,
        }
    }

    /// A search column's slot, for a backend filling it in; `None` for any other column.
    pub fn terms_slot(&mut self, column: Column) -> Option<&mut Option<Cell<BTreeSet<String>>>> {
        match column {
            Column::EmailSearch => Some(&mut self.email_search),
            Column::FirstnameSearch => Some(&mut self.firstname_search),
            Column::LastnameSearch => Some(&mut self.lastname_search),
            _ => None,
        }
    }

    /// The row as the request path reads it: without the search terms, which only the
    /// search and the jobs need.
    pub fn without_search(mut self) -> Self {
        self.email_search = None;
        self.firstname_search = None;
        self.lastname_search = None;
        self
    }

    /// A row is a user only once its registration has been projected. Cells written
    /// without it (a projection that raced ahead of its registration, or a stray upsert)
    /// do not make a user: such a row is treated as absent and reported by `verify`.
    pub fn is_registered(&self) -> bool {
        self.created_date.is_some() && self.email.is_some()
    }

    /// The current value of a text cell.
    fn text(cell: &Option<Cell<String>>) -> Option<&str> {
        cell.as_ref().map(|c| c.value.as_str())
    }

    /// Current first name.
    pub fn firstname(&self) -> Option<&str> {
        Self::text(&self.firstname)
    }

    /// Current last name.
    pub fn lastname(&self) -> Option<&str> {
        Self::text(&self.lastname)
    }

    /// Current e-mail address.
    pub fn email(&self) -> Option<&str> {
        Self::text(&self.email)
    }

    /// Current account status, as stored.
    pub fn account_status(&self) -> Option<&str> {
        self.status().map(AccountStatus::as_str)
    }

    /// Current account status.
    pub fn status(&self) -> Option<&AccountStatus> {
        self.account_status.as_ref().map(|c| &c.value)
    }

    /// The version: the newest event applied.
    pub fn version(&self) -> Option<Uuid> {
        self.last_event_id.as_ref().map(|c| c.value)
    }
}
