//! Finding users other than by id ([`UserSearch`](crate::store::UserSearch)).

use super::EmbeddedStore;
use super::rows::{USER_COLUMNS, read_cells, uuid_column};
use crate::domain::role::AccountStatus;
use crate::domain::user::UserRow;
use crate::store::{CandidateQuery, SearchKey, StoreError, UserSearch};
use async_trait::async_trait;
use rusqlite::params;
use uuid::Uuid;

#[async_trait]
impl UserSearch for EmbeddedStore {
    async fn search_candidates(
        &self,
        query: &CandidateQuery<'_>,
    ) -> Result<Vec<(SearchKey, UserRow)>, StoreError> {
        if query.field.search_source().is_none() || query.terms.is_empty() {
            return Err(StoreError::internal(format!(
                "search by {:?} with {} terms",
                query.field,
                query.terms.len()
            )));
        }
        // Driven by the first term's rows, which the primary key keeps in user order
        // (so `LIMIT` stops the walk early); each further term is one key lookup.
        let further: String = (1..query.terms.len())
            .map(|i| {
                format!(
                    " AND EXISTS (SELECT 1 FROM users_search_terms t{i} WHERE t{i}.field = ?1 \
                     AND t{i}.term = ?{} AND t{i}.userid = t0.userid)",
                    i + 4
                )
            })
            .collect();
        let sql = format!(
            "SELECT t0.userid, {} FROM users_search_terms t0 JOIN users u ON u.userid = t0.userid \
             WHERE t0.field = ?1 AND t0.term = ?2 AND t0.userid > ?3{further} \
             ORDER BY t0.userid LIMIT ?4",
            USER_COLUMNS
                .split(", ")
                .map(|c| format!("u.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut values: Vec<rusqlite::types::Value> = vec![
            query.field.name().to_owned().into(),
            query.terms[0].clone().into(),
            query
                .after
                .map(|key| key.user_id.to_string())
                .unwrap_or_default()
                .into(),
            i64::try_from(query.limit).unwrap_or(i64::MAX).into(),
        ];
        values.extend(
            query.terms[1..]
                .iter()
                .cloned()
                .map(rusqlite::types::Value::from),
        );
        self.with_reader(move |c| {
            let mut statement = c.prepare_cached(&sql)?;
            let rows = statement.query_map(rusqlite::params_from_iter(values), |row| {
                let user_id = uuid_column(row, 0)?;
                Ok((
                    SearchKey { token: 0, user_id },
                    read_cells(row, user_id, 1)?,
                ))
            })?;
            let mut found = Vec::new();
            for row in rows {
                let (key, row) = row?;
                if row.is_registered() {
                    found.push((key, row.without_search()));
                }
            }
            Ok(found)
        })
        .await
    }

    async fn users_with_status(
        &self,
        status: &AccountStatus,
        limit: usize,
    ) -> Result<Vec<Uuid>, StoreError> {
        let status = status.as_str().to_owned();
        // The database thread: a status just changed by a write is already visible.
        self.database
            .read(move |c| {
                let mut statement = c.prepare_cached(
                    "SELECT userid FROM users WHERE account_status = ?1 LIMIT ?2",
                )?;
                let ids = statement.query_map(
                    params![status, i64::try_from(limit).unwrap_or(i64::MAX)],
                    |row| uuid_column(row, 0),
                )?;
                Ok(ids.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }
}
