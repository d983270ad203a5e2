//! The store's health: its name, `ping` and the nodes it sees ([`StoreHealth`](crate::store::StoreHealth)).

use super::{CassandraStore, classify, node_count};
use crate::store::{NodeCount, StoreError, StoreHealth};
use async_trait::async_trait;

#[async_trait]
impl StoreHealth for CassandraStore {
    fn backend(&self) -> &'static str {
        "cassandra"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.session()
            .execute_unpaged(&self.statements.ping, ())
            .await
            .map_err(classify)?;
        Ok(())
    }

    fn nodes(&self) -> Option<NodeCount> {
        Some(node_count(&self.session()))
    }
}
