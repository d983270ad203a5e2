//! The version-checked append (`If-Match`): the check and the append as one write of
//! the database thread, which has seen every write queued before it.

use super::rows::{append_in, load_row};
use crate::domain::events::EventEnvelope;
use crate::store::keys::DataKeys;
use crate::store::{Precondition, StoreError};
use rusqlite::Connection;

/// The precondition check and the append, as one write of the database thread: writes
/// queued before this one are already visible to the check.
pub(super) fn append_checked(
    tx: &Connection,
    keys: &DataKeys,
    event: &EventEnvelope,
    precondition: Precondition,
) -> Result<(), StoreError> {
    if let Precondition::LatestEvent(expected) = precondition {
        let current = load_row(tx, event.user_id)?.and_then(|row| row.version());
        if current != Some(expected) {
            return Err(StoreError::Conflict(
                "the user has changed since that version".into(),
            ));
        }
    }
    append_in(tx, keys, event)
}
