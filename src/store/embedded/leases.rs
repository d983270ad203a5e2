//! Named leases ([`Leases`](crate::store::Leases)).

use super::EmbeddedStore;
use crate::store::{Leases, StoreError};
use async_trait::async_trait;
use chrono::Utc;
use rusqlite::params;
use uuid::Uuid;

#[async_trait]
impl Leases for EmbeddedStore {
    async fn acquire_lease(
        &self,
        name: &str,
        owner: Uuid,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let name = name.to_owned();
        let now = Utc::now().timestamp_micros();
        let expires_at = now.saturating_add(i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX));
        self.database
            .write(move |c| {
                // Taken if free, lapsed, or already ours.
                let taken = c
                    .prepare_cached(
                        "INSERT INTO leases (name, owner, expires_at) VALUES (?1, ?2, ?3)
                         ON CONFLICT (name) DO UPDATE SET owner = excluded.owner,
                             expires_at = excluded.expires_at
                         WHERE leases.expires_at < ?4 OR leases.owner = excluded.owner",
                    )?
                    .execute(params![name, owner.to_string(), expires_at, now])?;
                Ok(taken == 1)
            })
            .await
    }

    async fn release_lease(&self, name: &str, owner: Uuid) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.database
            .write(move |c| {
                c.prepare_cached("DELETE FROM leases WHERE name = ?1 AND owner = ?2")?
                    .execute(params![name, owner.to_string()])?;
                Ok(())
            })
            .await
    }
}
