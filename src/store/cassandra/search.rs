//! Finding users other than by id ([`UserSearch`](crate::store::UserSearch)).

use super::rows::{BoundValues, SearchCandidate};
use super::{CassandraStore, classify, internal};
use crate::domain::role::AccountStatus;
use crate::domain::user::UserRow;
use crate::store::{CandidateQuery, SearchKey, StoreError, UserSearch};
use async_trait::async_trait;
use scylla::value::CqlValue;
use uuid::Uuid;

#[async_trait]
impl UserSearch for CassandraStore {
    async fn search_candidates(
        &self,
        query: &CandidateQuery<'_>,
    ) -> Result<Vec<(SearchKey, UserRow)>, StoreError> {
        let statement = self
            .statements
            .search
            .get(&(query.field, query.terms.len()))
            .ok_or_else(|| {
                internal(format!(
                    "no search by {:?} with {} terms",
                    query.field,
                    query.terms.len()
                ))
            })?;
        let mut values: BoundValues = query
            .terms
            .iter()
            .map(|term| Some(CqlValue::Text(term.clone())))
            .collect();
        // From the cursor's token on, inclusive: another user of the same token (a
        // collision, vanishingly rare) is not skipped; those up to the cursor are.
        values.push(Some(CqlValue::BigInt(
            query.after.map_or(i64::MIN, |key| key.token),
        )));
        // One more for each user at the cursor's token, which is dropped below.
        let fetch = query.limit.saturating_add(1);
        values.push(Some(CqlValue::Int(
            i32::try_from(fetch).unwrap_or(i32::MAX),
        )));
        let result = self
            .session()
            .execute_unpaged(statement, values)
            .await
            .map_err(classify)?;
        let rows = result.into_rows_result().map_err(internal)?;
        let mut found = Vec::new();
        for row in rows.rows::<SearchCandidate>().map_err(internal)? {
            let (row, token) = row.map_err(internal)?.into_parts();
            let key = SearchKey {
                token,
                user_id: row.user_id,
            };
            if query.after.is_some_and(|after| key <= after) || !row.is_registered() {
                continue;
            }
            found.push((key, row));
        }
        found.truncate(query.limit);
        Ok(found)
    }

    async fn users_with_status(
        &self,
        status: &AccountStatus,
        limit: usize,
    ) -> Result<Vec<Uuid>, StoreError> {
        let status = status.as_str();
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let result = self
            .session()
            .execute_unpaged(&self.statements.select_users_with_status, (status, limit))
            .await
            .map_err(classify)?;
        let rows = result.into_rows_result().map_err(internal)?;
        rows.rows::<(Uuid,)>()
            .map_err(internal)?
            .map(|row| row.map(|(id,)| id).map_err(internal))
            .collect()
    }
}
