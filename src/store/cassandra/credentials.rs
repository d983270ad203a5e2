//! Credentials by email key ([`CredentialStore`](crate::store::CredentialStore)).

use super::{CassandraStore, classify, internal};
use crate::store::{CredentialStore, Credentials, StoreError};
use async_trait::async_trait;
use uuid::Uuid;

#[async_trait]
impl CredentialStore for CassandraStore {
    async fn find_credentials(&self, email_key: &str) -> Result<Option<Credentials>, StoreError> {
        let result = self
            .session()
            .execute_unpaged(&self.statements.select_credentials, (email_key,))
            .await
            .map_err(classify)?;
        let rows = result.into_rows_result().map_err(internal)?;
        let row: Option<(Option<String>, Option<Uuid>, Option<bool>)> =
            rows.maybe_first_row().map_err(internal)?;
        Ok(match row {
            Some((Some(password_hash), Some(user_id), locked)) => Some(Credentials {
                email_key: email_key.to_owned(),
                password_hash,
                user_id,
                account_locked: locked.unwrap_or(false),
            }),
            _ => None,
        })
    }
}
