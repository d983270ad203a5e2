//! The audit trail as the API and the `history` command present it: pages of events
//! with last-write-wins provenance, and the profile as of an instant. Shared by
//! `GET .../history` (`http::audit_trail`) and `killrvideo-users history`, so both say
//! the same; what is judged is `domain::audit`'s.

use crate::domain::audit::{FieldAudit, audit_event, state_as_of, written_at};
use crate::domain::columns::CellValue;
use crate::domain::{EventEnvelope, UserRow};
use crate::store::{EventLog, EventPage, StoreError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;
use uuid::Uuid;

/// Largest page a client may ask for.
pub const MAX_PAGE: usize = 100;
/// Page size when none is asked for.
pub const DEFAULT_PAGE: usize = 20;
/// Page size used when reading a whole history.
const SCAN_PAGE: usize = 500;

/// One event as an auditor sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditedEvent {
    /// Time-ordered event id.
    pub event_id: Uuid,
    /// `UserRegistered`, `ProfileUpdated`, `UserLoggedIn`, `AccountStatusChanged`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When it occurred.
    pub occurred_at: DateTime<Utc>,
    /// Its write time in the store, which decides last-write-wins (equal to
    /// `occurred_at` except for version-checked writes on Cassandra).
    pub written_at: DateTime<Utc>,
    /// `user:<id>` or `operator:<name>`.
    pub actor: String,
    /// The `x-request-id` of the request that caused it.
    pub request_id: Option<String>,
    /// Per field the event wrote, by column name.
    pub fields: BTreeMap<String, FieldView>,
}

/// One field an event wrote, as the history shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldView {
    /// The value the writer saw before (`null` when unset or not recorded).
    #[schema(value_type = Option<String>)]
    pub from: Option<FieldValue>,
    /// The value written: text, or for `created_date` and `last_login_date` an RFC 3339
    /// instant.
    // One `string` in the schema: as a `oneOf` of text and date-time, every instant
    // would match both branches, which `oneOf` forbids.
    #[schema(value_type = String)]
    pub to: FieldValue,
    /// True when this write is the one the projection holds now; false when a later
    /// write overwrote it under last-write-wins.
    pub winning: bool,
}

/// A field's value: text, or an RFC 3339 instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum FieldValue {
    /// A name, an email, a status.
    Text(String),
    /// `created_date`, `last_login_date`.
    Time(DateTime<Utc>),
}

impl FieldValue {
    fn of(value: &CellValue) -> Option<Self> {
        match value {
            CellValue::Text(text) => Some(FieldValue::Text(text.clone())),
            CellValue::Time(at) => Some(FieldValue::Time(*at)),
            // Search terms are derived, never an event's field.
            CellValue::Terms(_) => None,
        }
    }
}

impl std::fmt::Display for FieldValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldValue::Text(text) => write!(f, "{text:?}"),
            FieldValue::Time(at) => write!(
                f,
                "{}",
                at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ),
        }
    }
}

fn field_views(fields: &[FieldAudit]) -> BTreeMap<String, FieldView> {
    fields
        .iter()
        .filter_map(|field| {
            let view = FieldView {
                from: field.from.as_ref().and_then(FieldValue::of),
                to: FieldValue::of(&field.to)?,
                winning: field.winning,
            };
            Some((field.column.name().to_owned(), view))
        })
        .collect()
}

impl AuditedEvent {
    /// Audits one event against the current row.
    pub fn new(envelope: &EventEnvelope, current: &UserRow) -> Self {
        Self {
            event_id: envelope.event_id,
            event_type: envelope.event.event_type().to_owned(),
            occurred_at: envelope.occurred_at(),
            written_at: written_at(envelope),
            actor: envelope.actor.encode(),
            request_id: envelope.request_id.clone(),
            fields: field_views(&audit_event(envelope, current)),
        }
    }
}

/// A page of history, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HistoryPage {
    /// The user.
    #[serde(rename = "userId")]
    pub user_id: Uuid,
    /// The events of this page.
    pub events: Vec<AuditedEvent>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Encodes a page cursor: the last event id of the page, opaque to clients.
pub fn encode_cursor(event_id: Uuid) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(event_id.as_bytes())
}

/// Decodes a cursor; `None` if it is not one of ours (cursors are event ids: time UUIDs).
pub fn decode_cursor(cursor: &str) -> Option<Uuid> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    Uuid::from_slice(&bytes)
        .ok()
        .filter(|id| id.get_version_num() == 1)
}

/// One page of a user's history; `None` when there is no such user. An erased user
/// (no row, but a log) still has a history: every event with its type, times, actor
/// and fields, each value `[erased]`.
pub async fn history_page(
    store: &dyn EventLog,
    user_id: Uuid,
    before: Option<Uuid>,
    limit: usize,
) -> Result<Option<HistoryPage>, StoreError> {
    let current = store.find_user(user_id).await?;
    // One more than asked tells whether another page follows.
    let mut events = store
        .events(
            user_id,
            EventPage {
                before,
                limit: limit + 1,
            },
        )
        .await?;
    let current = match current {
        Some(current) => current,
        None if !events.is_empty() => UserRow::empty(user_id),
        None => return Ok(None),
    };
    let has_more = events.len() > limit;
    events.truncate(limit);
    let next_cursor = has_more
        .then(|| events.last().map(|e| encode_cursor(e.event_id)))
        .flatten();
    Ok(Some(HistoryPage {
        user_id,
        events: events
            .iter()
            .map(|e| AuditedEvent::new(e, &current))
            .collect(),
        next_cursor,
    }))
}

/// Every event of a user, newest first, read page by page.
pub async fn all_events(
    store: &dyn EventLog,
    user_id: Uuid,
) -> Result<Vec<EventEnvelope>, StoreError> {
    let mut events = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .events(
                user_id,
                EventPage {
                    before,
                    limit: SCAN_PAGE,
                },
            )
            .await?;
        let done = page.len() < SCAN_PAGE;
        before = page.last().map(|e| e.event_id);
        events.extend(page);
        if done {
            return Ok(events);
        }
    }
}

/// The profile as it was at `instant`, replayed from the log; `None` if the user did
/// not exist then (or does not exist at all).
pub async fn profile_as_of(
    store: &dyn EventLog,
    user_id: Uuid,
    instant: DateTime<Utc>,
) -> Result<Option<UserRow>, StoreError> {
    let events = all_events(store, user_id).await?;
    Ok(state_as_of(user_id, &events, instant))
}
