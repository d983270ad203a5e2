//! The row codecs of the Cassandra store: users rows with their write times, the search
//! candidates, event rows, and the bound values of a projection.

use super::internal;
use crate::domain::columns::{CellValue, Column};
use crate::domain::events::EventEnvelope;
use crate::domain::projection::project;
use crate::domain::role::AccountStatus;
use crate::domain::user::{Cell, UserRow};
use crate::store::StoreError;
use crate::store::codec::StoredEvent;
use chrono::{DateTime, Utc};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlTimestamp, CqlTimeuuid, CqlValue};
use std::collections::{BTreeSet, HashMap};
use uuid::Uuid;

pub(super) fn time_value(at: DateTime<Utc>) -> CqlValue {
    CqlValue::Timestamp(CqlTimestamp(at.timestamp_millis()))
}

/// Bind values of a projection statement, in the order its text names them.
/// Bind values; `None` binds CQL null.
pub(super) type BoundValues = Vec<Option<CqlValue>>;

pub(super) fn cell_value(value: &CellValue) -> CqlValue {
    match value {
        CellValue::Text(text) => CqlValue::Text(text.clone()),
        CellValue::Time(at) => time_value(*at),
        // Bound whole, so the set is overwritten: its tombstone, one microsecond before
        // the statement's timestamp, removes the terms of any older write.
        CellValue::Terms(terms) => {
            CqlValue::Set(terms.iter().cloned().map(CqlValue::Text).collect())
        }
    }
}

/// Prepared projection statements of one table, keyed by column set.
pub(super) type ProjectionStatements = HashMap<Vec<Column>, PreparedStatement>;

/// The statements and bound values that write an event's projection: one statement
/// when its column set is prepared (every set the live path produces), otherwise one
/// single-column statement per column (a repair's arbitrary set), to be sent as one
/// batch on one partition.
pub(super) fn projection_writes<'a>(
    statements: &'a ProjectionStatements,
    envelope: &EventEnvelope,
) -> Result<Vec<(&'a PreparedStatement, BoundValues)>, StoreError> {
    let projection = project(envelope);
    let bind = |writes: &[(Column, CellValue)]| -> BoundValues {
        let mut values = Vec::with_capacity(writes.len() + 3);
        values.push(Some(CqlValue::BigInt(projection.write_time)));
        values.extend(writes.iter().map(|(_, value)| Some(cell_value(value))));
        values.push(Some(CqlValue::Timeuuid(CqlTimeuuid::from(
            projection.event_id,
        ))));
        values.push(Some(CqlValue::Uuid(projection.user_id)));
        values
    };
    let lookup = |columns: &[Column]| {
        statements
            .get(columns)
            .ok_or_else(|| internal(format!("no prepared projection for {columns:?}")))
    };
    if let Some(statement) = statements.get(&projection.columns()) {
        return Ok(vec![(statement, bind(&projection.writes))]);
    }
    projection
        .writes
        .iter()
        .map(|write| Ok((lookup(&[write.0])?, bind(std::slice::from_ref(write)))))
        .collect()
}

pub(super) fn projection_cql(table: &str, columns: &[Column]) -> String {
    let assignments: Vec<String> = columns
        .iter()
        .map(|c| format!("{} = ?", c.name()))
        .chain(std::iter::once("last_event_id = ?".to_owned()))
        .collect();
    format!(
        "UPDATE {table} USING TIMESTAMP ? SET {} WHERE userid = ?",
        assignments.join(", ")
    )
}

/// The `users` columns with their write times, as `find_user` and the jobs read them.
pub(super) const USER_CELLS: &str = "userid, email, WRITETIME(email), firstname, WRITETIME(firstname), \
     lastname, WRITETIME(lastname), account_status, WRITETIME(account_status), \
     created_date, WRITETIME(created_date), last_login_date, WRITETIME(last_login_date), \
     last_event_id, WRITETIME(last_event_id)";

/// The search columns with their write times, read after [`USER_CELLS`] by the jobs.
/// A set's cells (its elements) all carry the time of the write that survived, so
/// `MAXWRITETIME` is that write's time.
pub(super) const SEARCH_CELLS: &str = "email_search, MAXWRITETIME(email_search), \
     firstname_search, MAXWRITETIME(firstname_search), \
     lastname_search, MAXWRITETIME(lastname_search)";

pub(super) fn cell<T>(value: Option<T>, written_at: Option<i64>) -> Option<Cell<T>> {
    value
        .zip(written_at)
        .map(|(value, written_at)| Cell { value, written_at })
}

/// A struct for one row of [`USER_CELLS`] read by position, followed by `extra`
/// columns, with `into_parts` giving the [`UserRow`] of the base cells and the extras.
/// The request path and the jobs read the same cells and then different ones.
macro_rules! user_cells_struct {
    ($(#[$meta:meta])* $name:ident { $($extra:ident: $extra_type:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(scylla::DeserializeRow)]
        #[scylla(flavor = "enforce_order", skip_name_checks)]
        pub(super) struct $name {
            userid: Uuid,
            email: Option<String>,
            email_wt: Option<i64>,
            firstname: Option<String>,
            firstname_wt: Option<i64>,
            lastname: Option<String>,
            lastname_wt: Option<i64>,
            account_status: Option<String>,
            account_status_wt: Option<i64>,
            created_date: Option<DateTime<Utc>>,
            created_date_wt: Option<i64>,
            last_login_date: Option<DateTime<Utc>>,
            last_login_date_wt: Option<i64>,
            last_event_id: Option<CqlTimeuuid>,
            last_event_id_wt: Option<i64>,
            $($extra: $extra_type,)*
        }

        impl $name {
            #[allow(unused_parens)]
            pub(super) fn into_parts(self) -> (UserRow, ($($extra_type),*)) {
                let mut row = UserRow::empty(self.userid);
                row.email = cell(self.email, self.email_wt);
                row.firstname = cell(self.firstname, self.firstname_wt);
                row.lastname = cell(self.lastname, self.lastname_wt);
                row.account_status = cell(self.account_status.map(AccountStatus::from), self.account_status_wt);
                row.created_date = cell(self.created_date, self.created_date_wt);
                row.last_login_date = cell(self.last_login_date, self.last_login_date_wt);
                row.last_event_id = cell(self.last_event_id.map(Uuid::from), self.last_event_id_wt);
                (row, ($(self.$extra),*))
            }
        }
    };
}

user_cells_struct!(
    /// One row of [`USER_CELLS`]: what the request path reads.
    UserCells {}
);

impl From<UserCells> for UserRow {
    fn from(cells: UserCells) -> Self {
        cells.into_parts().0
    }
}

user_cells_struct!(
    /// One row of [`USER_CELLS`] then [`SEARCH_CELLS`]: the whole row, as the jobs read it.
    FullUserCells {
        email_search: Option<BTreeSet<String>>,
        email_search_wt: Option<i64>,
        firstname_search: Option<BTreeSet<String>>,
        firstname_search_wt: Option<i64>,
        lastname_search: Option<BTreeSet<String>>,
        lastname_search_wt: Option<i64>,
    }
);

impl From<FullUserCells> for UserRow {
    fn from(cells: FullUserCells) -> Self {
        let (mut row, (email, email_wt, first, first_wt, last, last_wt)) = cells.into_parts();
        row.email_search = cell(email, email_wt);
        row.firstname_search = cell(first, first_wt);
        row.lastname_search = cell(last, last_wt);
        row
    }
}

user_cells_struct!(
    /// One row of a search: [`USER_CELLS`], then the candidate's `token(userid)`.
    SearchCandidate { token: i64 }
);

/// One row of the event log, read by position ([`EVENT_COLUMNS`]).
#[derive(scylla::DeserializeRow)]
#[scylla(flavor = "enforce_order", skip_name_checks)]
pub(super) struct EventRow {
    pub(super) userid: Uuid,
    pub(super) event_id: CqlTimeuuid,
    pub(super) event_type: String,
    pub(super) schema_version: i32,
    pub(super) payload: String,
    pub(super) actor: String,
    pub(super) request_id: Option<String>,
    pub(super) written_at: i64,
    /// The partition's `head` (static): the event with the highest write time.
    pub(super) head: Option<CqlTimeuuid>,
}

impl From<EventRow> for StoredEvent {
    fn from(row: EventRow) -> Self {
        StoredEvent {
            user_id: row.userid,
            event_id: row.event_id.into(),
            event_type: row.event_type,
            schema_version: row.schema_version,
            payload: row.payload,
            actor: row.actor,
            request_id: row.request_id,
            // The row's own write time: the event's time for plain appends, the Paxos
            // ballot's for version-checked ones.
            written_at: Some(row.written_at),
        }
    }
}

/// The bound values of an event's insert ([`EVENT_INSERT_COLUMNS`], then `head` and the
/// write time).
pub(super) fn insert_event_values(stored: StoredEvent, envelope: &EventEnvelope) -> BoundValues {
    vec![
        Some(CqlValue::Uuid(stored.user_id)),
        Some(CqlValue::Timeuuid(stored.event_id.into())),
        Some(CqlValue::Text(stored.event_type)),
        Some(CqlValue::Int(stored.schema_version)),
        Some(CqlValue::Text(stored.payload)),
        Some(CqlValue::Text(stored.actor)),
        stored.request_id.map(CqlValue::Text),
        Some(CqlValue::Timeuuid(stored.event_id.into())),
        Some(CqlValue::BigInt(envelope.occurred_micros())),
    ]
}

/// The event columns as read back, then the payload's write time and the log's head.
pub(super) const EVENT_COLUMNS: &str = "userid, event_id, event_type, schema_version, payload, actor, \
     request_id, WRITETIME(payload), head";
/// The event columns as written.
pub(super) const EVENT_INSERT_COLUMNS: &str =
    "userid, event_id, event_type, schema_version, payload, actor, request_id";
