//! The embedded store's `user_keys` and `key_encryption_keys` tables, and the opening
//! of stored events with the user's data key (the rules are `store::keys`').

use crate::domain::events::EventEnvelope;
use crate::store::StoreError;
use crate::store::codec::StoredEvent;
use crate::store::keys::{DataKeys, WrappedKey};
use crate::store::sealing::DataKey;
use rusqlite::{Connection, OptionalExtension, params};
use std::sync::Arc;
use uuid::Uuid;

/// The user's stored key, wrapped.
fn read_wrapped(c: &Connection, user_id: Uuid) -> Result<Option<WrappedKey>, StoreError> {
    Ok(
        c.prepare_cached("SELECT kek_id, wrapped FROM user_keys WHERE userid = ?1")?
            .query_row([user_id.to_string()], |row| {
                Ok(WrappedKey {
                    kek_id: row.get(0)?,
                    wrapped: row.get(1)?,
                })
            })
            .optional()?,
    )
}

/// The user's data key: from the cache unless `fresh`, else from the table. `None`
/// when the user has none (erased, or registered before keys existed).
pub(super) fn data_key(
    c: &Connection,
    keys: &DataKeys,
    user_id: Uuid,
    fresh: bool,
) -> Result<Option<Arc<DataKey>>, StoreError> {
    if !fresh && let Some(key) = keys.cached(user_id) {
        return Ok(Some(key));
    }
    match read_wrapped(c, user_id)? {
        Some(stored) => keys.unwrap(user_id, &stored).map(Some),
        None => {
            keys.forget(user_id);
            Ok(None)
        }
    }
}

/// Stores a new data key for the user, inside the caller's transaction, unless one is
/// there already (a user registered before keys existed gets one at their first write
/// that carries personal data); either way returns the user's key.
pub(super) fn data_key_for_write(
    tx: &Connection,
    keys: &DataKeys,
    user_id: Uuid,
) -> Result<Arc<DataKey>, StoreError> {
    if let Some(key) = data_key(tx, keys, user_id, false)? {
        return Ok(key);
    }
    let (key, wrapped) = keys.create(user_id);
    register_kek(tx, &wrapped.kek_id)?;
    tx.prepare_cached(
        "INSERT INTO user_keys (userid, kek_id, wrapped) VALUES (?1, ?2, ?3)
         ON CONFLICT (userid) DO NOTHING",
    )?
    .execute(params![
        user_id.to_string(),
        wrapped.kek_id,
        wrapped.wrapped
    ])?;
    // The writing thread is the only writer, so the row is ours. Not cached: the
    // transaction may still roll back, and a cached key that was never stored would
    // seal values nothing can open. The next write reads it back.
    Ok(Arc::new(key))
}

/// Records that `kek_id` wraps keys here.
fn register_kek(tx: &Connection, kek_id: &str) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO key_encryption_keys (kek_id, registered_at) VALUES (?1, ?2)
         ON CONFLICT (kek_id) DO NOTHING",
    )?
    .execute(params![kek_id, chrono::Utc::now().timestamp_micros()])?;
    Ok(())
}

/// Every KEK that has wrapped a key here.
pub(super) fn registered_keks(c: &Connection) -> Result<Vec<String>, StoreError> {
    let mut statement = c.prepare_cached("SELECT kek_id FROM key_encryption_keys")?;
    let ids = statement.query_map([], |row| row.get(0))?;
    Ok(ids.collect::<Result<Vec<String>, _>>()?)
}

/// Deletes the user's data key (erasure, step 2).
pub(super) fn delete_key(
    tx: &Connection,
    keys: &DataKeys,
    user_id: Uuid,
) -> Result<(), StoreError> {
    keys.forget(user_id);
    tx.prepare_cached("DELETE FROM user_keys WHERE userid = ?1")?
        .execute([user_id.to_string()])?;
    Ok(())
}

/// Runs an erasure's deletes and overwrites with `secure_delete` on: the content they
/// remove is zeroed in the pages they write, not left in free space, so an erased
/// user's key or values do not survive in the file (docs/security.md). Only for
/// erasure: every other write has nothing secret to zero, and need not pay for it.
pub(super) fn securely<T>(
    tx: &Connection,
    work: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    tx.pragma_update(None, "secure_delete", "ON")?;
    let outcome = work(tx);
    tx.pragma_update(None, "secure_delete", "OFF")?;
    outcome
}

/// Opens stored events, each with its user's key (from the cache unless `fresh`).
pub(super) fn open_events(
    c: &Connection,
    keys: &DataKeys,
    stored: Vec<StoredEvent>,
    fresh: bool,
) -> Result<Vec<EventEnvelope>, StoreError> {
    let mut current: Option<(Uuid, Option<Arc<DataKey>>)> = None;
    let mut events = Vec::with_capacity(stored.len());
    for event in stored {
        let key = match &current {
            Some((user, key)) if *user == event.user_id => key.clone(),
            _ => {
                let key = data_key(c, keys, event.user_id, fresh)?;
                current = Some((event.user_id, key.clone()));
                key
            }
        };
        events.push(open(event, key.as_deref())?);
    }
    Ok(events)
}

/// Opens one stored event; one that does not decode fails the read that met it.
pub(super) fn open(
    stored: StoredEvent,
    key: Option<&DataKey>,
) -> Result<EventEnvelope, StoreError> {
    let event_id = stored.event_id;
    stored
        .open(key)
        .map_err(|err| StoreError::internal_from(format!("event {event_id} does not decode"), err))
}
