//! Credentials by email key ([`CredentialStore`](crate::store::CredentialStore)).

use super::EmbeddedStore;
use crate::store::{CredentialStore, Credentials, StoreError};
use async_trait::async_trait;
use rusqlite::OptionalExtension;
use uuid::Uuid;

#[async_trait]
impl CredentialStore for EmbeddedStore {
    async fn find_credentials(&self, email_key: &str) -> Result<Option<Credentials>, StoreError> {
        let email_key = email_key.to_owned();
        self.with_reader(move |c| {
            let found = c
                .prepare_cached(
                    "SELECT password, userid, account_locked FROM user_credentials WHERE email = ?1",
                )?
                .query_row([&email_key], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, bool>(2)?))
                })
                .optional()?;
            found
                .map(|(password_hash, user_id, account_locked)| {
                    Ok(Credentials {
                        email_key: email_key.clone(),
                        password_hash,
                        user_id: Uuid::parse_str(&user_id).map_err(|e| StoreError::internal(e.to_string()))?,
                        account_locked,
                    })
                })
                .transpose()
        })
        .await
    }
}
