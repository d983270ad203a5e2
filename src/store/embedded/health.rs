//! The store's health: its name, `ping` and the nodes it sees ([`StoreHealth`](crate::store::StoreHealth)).

use super::EmbeddedStore;
use crate::store::{StoreError, StoreHealth};
use async_trait::async_trait;

#[async_trait]
impl StoreHealth for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.with_reader(|c| {
            c.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }
}
