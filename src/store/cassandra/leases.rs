//! Named leases ([`Leases`](crate::store::Leases)).

use super::{CassandraStore, classify, lwt_applied};
use crate::store::{Leases, StoreError};
use async_trait::async_trait;
use std::time::Duration;
use uuid::Uuid;

#[async_trait]
impl Leases for CassandraStore {
    async fn acquire_lease(
        &self,
        name: &str,
        owner: Uuid,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let ttl = i32::try_from(ttl.as_secs().max(1)).unwrap_or(i32::MAX);
        let result = self
            .session()
            .execute_unpaged(&self.statements.acquire_lease, (name, owner, ttl))
            .await
            .map_err(classify)?;
        lwt_applied(result)
    }

    async fn release_lease(&self, name: &str, owner: Uuid) -> Result<(), StoreError> {
        self.session()
            .execute_unpaged(&self.statements.release_lease, (name, owner))
            .await
            .map_err(classify)?;
        Ok(())
    }
}
