//! The users row's shape, in one place: its writable columns ([`Column`]), how each is
//! stored ([`ColumnKind`]), the values written into them ([`CellValue`]), and the column
//! sets the projection writes together ([`COLUMN_SETS`]). The row model
//! ([`super::user`]), the projection ([`super::projection`]) and both backends' schemas
//! (`store::schema`, the `rows.rs` codecs) read it from here.

use chrono::{DateTime, Utc};
use std::collections::BTreeSet;

/// A writable column of `users`. `last_event_id` is not listed: every projection writes
/// it.
///
/// The last three are derived: the search terms of `email`, `firstname` and `lastname`
/// ([`super::search::terms`]). The projection writes each one together with its
/// source column, with the same write time, so under last-write-wins a column and its
/// terms always come from the same event, whatever the order events are applied in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Column {
    /// `email`
    Email,
    /// `firstname`
    Firstname,
    /// `lastname`
    Lastname,
    /// `account_status`
    AccountStatus,
    /// `created_date`
    CreatedDate,
    /// `last_login_date`
    LastLoginDate,
    /// `email_search`: the terms `email` is found by.
    EmailSearch,
    /// `firstname_search`: the terms `firstname` is found by.
    FirstnameSearch,
    /// `lastname_search`: the terms `lastname` is found by.
    LastnameSearch,
}

impl Column {
    /// Every column, in table order.
    pub const ALL: [Column; 9] = [
        Column::Email,
        Column::Firstname,
        Column::Lastname,
        Column::AccountStatus,
        Column::CreatedDate,
        Column::LastLoginDate,
        Column::EmailSearch,
        Column::FirstnameSearch,
        Column::LastnameSearch,
    ];

    /// The search columns, each with the column it is derived from.
    pub const SEARCH: [(Column, Column); 3] = [
        (Column::EmailSearch, Column::Email),
        (Column::FirstnameSearch, Column::Firstname),
        (Column::LastnameSearch, Column::Lastname),
    ];

    /// The CQL/SQL column name.
    pub fn name(self) -> &'static str {
        match self {
            Column::Email => "email",
            Column::Firstname => "firstname",
            Column::Lastname => "lastname",
            Column::AccountStatus => "account_status",
            Column::CreatedDate => "created_date",
            Column::LastLoginDate => "last_login_date",
            Column::EmailSearch => "email_search",
            Column::FirstnameSearch => "firstname_search",
            Column::LastnameSearch => "lastname_search",
        }
    }

    /// The search column derived from this one, if any.
    pub fn search_column(self) -> Option<Column> {
        Column::SEARCH
            .iter()
            .find(|(_, source)| *source == self)
            .map(|(search, _)| *search)
    }

    /// For a search column, the column it is derived from.
    pub fn search_source(self) -> Option<Column> {
        Column::SEARCH
            .iter()
            .find(|(search, _)| *search == self)
            .map(|(_, source)| *source)
    }
}

/// A value to write into a column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CellValue {
    /// For text columns.
    Text(String),
    /// For timestamp columns (millisecond precision, as CQL `timestamp`).
    Time(DateTime<Utc>),
    /// For search columns: a set of terms (CQL `set<text>`).
    Terms(BTreeSet<String>),
}

/// How a column is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// A string.
    Text,
    /// An instant, to the millisecond.
    Timestamp,
    /// A set of search terms.
    Terms,
}

impl Column {
    /// How this column is stored; both backends' schemas read it.
    pub fn kind(self) -> ColumnKind {
        match self {
            Column::Email | Column::Firstname | Column::Lastname | Column::AccountStatus => {
                ColumnKind::Text
            }
            Column::CreatedDate | Column::LastLoginDate => ColumnKind::Timestamp,
            Column::EmailSearch | Column::FirstnameSearch | Column::LastnameSearch => {
                ColumnKind::Terms
            }
        }
    }
}

/// The column sets backends prepare a statement for, at start-up: one per set the
/// live path produces, plus every single column, so that any other set (a repair's)
/// can be written as single-column writes of one partition. A unit test keeps this in
/// step with [`project`](super::projection::project).
pub const COLUMN_SETS: [&[Column]; 14] = [
    &[
        Column::Email,
        Column::Firstname,
        Column::Lastname,
        Column::AccountStatus,
        Column::CreatedDate,
        Column::EmailSearch,
        Column::FirstnameSearch,
        Column::LastnameSearch,
    ],
    &[
        Column::Firstname,
        Column::Lastname,
        Column::FirstnameSearch,
        Column::LastnameSearch,
    ],
    &[Column::Email, Column::EmailSearch],
    &[Column::Firstname, Column::FirstnameSearch],
    &[Column::Lastname, Column::LastnameSearch],
    &[Column::Email],
    &[Column::Firstname],
    &[Column::Lastname],
    &[Column::AccountStatus],
    &[Column::CreatedDate],
    &[Column::LastLoginDate],
    &[Column::EmailSearch],
    &[Column::FirstnameSearch],
    &[Column::LastnameSearch],
];
