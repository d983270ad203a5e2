//! A row of the `users` projection, cell by cell, as both backends store it.

use chrono::{DateTime, Utc};
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
    pub account_status: Option<Cell<String>>,
    /// When the account was registered.
    pub created_date: Option<Cell<DateTime<Utc>>>,
    /// When the user last logged in.
    pub last_login_date: Option<Cell<DateTime<Utc>>>,
    /// The id of the newest event applied; the ETag is derived from it.
    pub last_event_id: Option<Cell<Uuid>>,
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
        }
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

    /// Current account status.
    pub fn account_status(&self) -> Option<&str> {
        Self::text(&self.account_status)
    }

    /// The version: the newest event applied.
    pub fn version(&self) -> Option<Uuid> {
        self.last_event_id.as_ref().map(|c| c.value)
    }
}
